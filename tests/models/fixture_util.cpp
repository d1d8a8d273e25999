#include "models/fixture_util.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <cstdlib>

#include "io/safetensors.h"
#include "models/weights.h"
#include "test_paths.h"

namespace p2dpo::test {

Reference::Reference(const std::string& fixture)
    : fixture_(fixture), file_(io::SafetensorsFile::open(data_path(fixture + "/reference.safetensors"))) {}

std::string Reference::dir() const { return data_path(fixture_); }

bool Reference::has(const std::string& key) const { return file_->contains(key); }

torch::Tensor Reference::get(const std::string& key) const { return models::tensor_from_view(file_->tensor(key)); }

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes(), "shape mismatch ", a.sizes(), " vs ", b.sizes());
  if (a.numel() == 0) return 0.0;
  return (a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64)).abs().max().item<double>();
}

torch::Device test_device() {
  const char* env = std::getenv("P2DPO_TEST_DEVICE");
  return torch::Device(env && *env ? std::string(env) : std::string("cpu"));
}

torch::Tensor on_test_device(const torch::Tensor& t) { return t.to(test_device()); }

}  // namespace p2dpo::test
