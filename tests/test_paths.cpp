#include "test_paths.h"

#include <filesystem>

namespace p2dpo::test {
std::string data_path(const std::string& relative) {
  return std::string(P2DPO_TEST_DATA) + "/" + relative;
}
std::string scratch_dir(const std::string& name) {
  namespace fs = std::filesystem;
  fs::path dir = fs::path(P2DPO_BINARY_DIR) / "test-scratch" / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}
}  // namespace p2dpo::test
