#include "test_paths.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

namespace p2dpo::test {
std::string data_path(const std::string& relative) {
  return std::string(P2DPO_TEST_DATA) + "/" + relative;
}
std::string scratch_dir(const std::string& name) {
  namespace fs = std::filesystem;
  // ctest runs tests in parallel processes: key the directory by test and process so two tests
  // that pick the same name never share files.
  std::string unique = name;
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    unique += std::string("-") + info->test_suite_name() + "." + info->name();
  }
  unique += "-" + std::to_string(::getpid());
  for (auto& c : unique) if (c == '/') c = '_';
  fs::path dir = fs::path(P2DPO_BINARY_DIR) / "test-scratch" / unique;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}
}  // namespace p2dpo::test
