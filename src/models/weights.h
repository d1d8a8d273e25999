#pragma once
// Loads named tensors from an HF checkpoint directory into libtorch tensors, checking every
// shape against what the config implies, so a mismatched config/weights pair fails with the
// file, the key and both shapes instead of a cryptic matmul error later.
#include <torch/types.h>

#include <functional>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "image/clip_processor.h"

namespace p2dpo::io {
class Checkpoint;
struct TensorView;
}

namespace p2dpo::models {

// An owned tensor copy of a safetensors view (same dtype and shape).
torch::Tensor tensor_from_view(const io::TensorView& view);

// A processed image's [3, H, W] float32 pixel tensor (owned copy).
torch::Tensor pixels_to_tensor(const image::ProcessedImage& processed);

class WeightStore {
 public:
  // `canonical` maps a key as stored in the file to the name the model asks for (for example the
  // newer transformers layout back to the hub layout); keys it maps to "" are ignored.
  WeightStore(const std::string& dir, std::function<std::string(const std::string&)> canonical,
              torch::Dtype dtype, torch::Device device);
  ~WeightStore();

  bool contains(const std::string& name) const;
  // Loads `name`, converts to the store's dtype/device and checks the shape. `config_field` names
  // the config.json field the shape comes from, for the error message.
  torch::Tensor get(const std::string& name, const std::vector<int64_t>& expected_shape,
                    const std::string& config_field = "");
  // Same, but returns an undefined tensor when absent (optional biases).
  torch::Tensor get_optional(const std::string& name, const std::vector<int64_t>& expected_shape,
                             const std::string& config_field = "");
  // Names in the checkpoint that no get() asked for (after canonicalisation).
  std::vector<std::string> unused() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::unique_ptr<io::Checkpoint> checkpoint_;
  std::unordered_map<std::string, std::string> canonical_to_file_key_;
  std::set<std::string> used_;
  torch::Dtype dtype_;
  torch::Device device_;
};

}  // namespace p2dpo::models
