#pragma once
#include <string>

// Where the repository's test data lives (tests/data) and a scratch dir under the build tree.
namespace p2dpo::test {
std::string data_path(const std::string& relative);
// A fresh, empty directory unique to the calling test and process (ctest runs tests in parallel).
std::string scratch_dir(const std::string& name);
}  // namespace p2dpo::test
