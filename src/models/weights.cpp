#include "models/weights.h"

#include <torch/types.h>
#include <torch/utils.h>

#include <sstream>

#include "io/errors.h"
#include "io/safetensors.h"

namespace p2dpo::models {

namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

torch::Dtype torch_dtype(io::DType d) {
  switch (d) {
    case io::DType::F64: return torch::kFloat64;
    case io::DType::F32: return torch::kFloat32;
    case io::DType::F16: return torch::kFloat16;
    case io::DType::BF16: return torch::kBFloat16;
    case io::DType::I64: return torch::kInt64;
    case io::DType::I32: return torch::kInt32;
    case io::DType::I16: return torch::kInt16;
    case io::DType::I8: return torch::kInt8;
    case io::DType::U8: return torch::kUInt8;
    case io::DType::BOOL: return torch::kBool;
  }
  throw std::invalid_argument("unknown safetensors dtype");
}
}  // namespace

torch::Tensor tensor_from_view(const io::TensorView& view) {
  // from_blob does not own the mmapped bytes: clone into owned memory.
  return torch::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                          torch::TensorOptions().dtype(torch_dtype(view.dtype)))
      .clone();
}

torch::Tensor pixels_to_tensor(const image::ProcessedImage& p) {
  return torch::from_blob(const_cast<float*>(p.chw.data()), {3, p.height, p.width}, torch::kFloat32).clone();
}

WeightStore::WeightStore(const std::string& dir,
                         std::function<std::string(const std::string&)> canonical,
                         torch::Dtype dtype, torch::Device device)
    : dir_(dir),
      checkpoint_(std::make_unique<io::Checkpoint>(io::Checkpoint::open_dir(dir))),
      dtype_(dtype),
      device_(device) {
  for (const auto& key : checkpoint_->names()) {
    std::string name = canonical ? canonical(key) : key;
    if (name.empty()) continue;
    canonical_to_file_key_[name] = key;
  }
}

WeightStore::~WeightStore() = default;

bool WeightStore::contains(const std::string& name) const {
  return canonical_to_file_key_.count(name) > 0;
}

torch::Tensor WeightStore::get_optional(const std::string& name,
                                        const std::vector<int64_t>& expected_shape,
                                        const std::string& config_field) {
  if (!contains(name)) return {};
  return get(name, expected_shape, config_field);
}

torch::Tensor WeightStore::get(const std::string& name, const std::vector<int64_t>& expected_shape,
                               const std::string& config_field) {
  auto it = canonical_to_file_key_.find(name);
  if (it == canonical_to_file_key_.end()) {
    throw InputError(dir_, "missing tensor '" + name + "' in the checkpoint");
  }
  const std::string& key = it->second;
  io::TensorView view = checkpoint_->tensor(key);
  const std::string file = checkpoint_->file_of(key);
  if (view.shape != expected_shape) {
    std::string msg = "tensor '" + key + "' has shape " + shape_str(view.shape) + " but config.json" +
                      (config_field.empty() ? "" : " (" + config_field + ")") + " implies " +
                      shape_str(expected_shape);
    throw InputError(file, msg);
  }
  used_.insert(name);
  // from_blob does not own the mmapped bytes: copy into owned memory while converting.
  torch::Tensor t = torch::from_blob(const_cast<uint8_t*>(view.data), view.shape,
                                     torch::TensorOptions().dtype(torch_dtype(view.dtype)));
  return t.to(device_, dtype_, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

std::vector<std::string> WeightStore::unused() const {
  std::vector<std::string> out;
  for (const auto& [name, key] : canonical_to_file_key_) {
    if (!used_.count(name)) out.push_back(name);
  }
  return out;
}

}  // namespace p2dpo::models
