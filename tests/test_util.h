#pragma once
// Small helpers shared by the test files.
#include <gtest/gtest.h>

#include <string>

#include "io/errors.h"

namespace p2dpo::test {

// Runs fn, expecting an InputError; returns its message ("" and a test failure otherwise).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an InputError";
  return "";
}

}  // namespace p2dpo::test
