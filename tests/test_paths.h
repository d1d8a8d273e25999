#pragma once
#include <string>

// Where the repository's test data lives (tests/data) and a scratch dir under the build tree.
namespace p2dpo::test {
std::string data_path(const std::string& relative);
std::string scratch_dir(const std::string& name);  // created fresh (emptied) on each call
}  // namespace p2dpo::test
