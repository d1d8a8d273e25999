#include "models/fixture_util.h"

#include <torch/torch.h>

#include "io/safetensors.h"
#include "test_paths.h"

namespace p2dpo::test {

Reference::Reference(const std::string& fixture)
    : fixture_(fixture), file_(io::SafetensorsFile::open(data_path(fixture + "/reference.safetensors"))) {}

std::string Reference::dir() const { return data_path(fixture_); }

bool Reference::has(const std::string& key) const { return file_->contains(key); }

torch::Tensor Reference::get(const std::string& key) const {
  io::TensorView v = file_->tensor(key);
  torch::Dtype dt = torch::kFloat32;
  switch (v.dtype) {
    case io::DType::F32: dt = torch::kFloat32; break;
    case io::DType::F64: dt = torch::kFloat64; break;
    case io::DType::I64: dt = torch::kInt64; break;
    case io::DType::U8: dt = torch::kUInt8; break;
    default: throw std::runtime_error("unexpected dtype in reference " + key);
  }
  return torch::from_blob(const_cast<uint8_t*>(v.data), v.shape, dt).clone();
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes(), "shape mismatch ", a.sizes(), " vs ", b.sizes());
  if (a.numel() == 0) return 0.0;
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace p2dpo::test
