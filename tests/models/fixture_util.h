#pragma once
// Reads reference tensors written by HF transformers (tests/data/<fixture>/reference.safetensors).
#include <torch/types.h>

#include <memory>
#include <string>

namespace p2dpo::io {
class SafetensorsFile;
}

namespace p2dpo::test {

class Reference {
 public:
  explicit Reference(const std::string& fixture);  // e.g. "llava-tiny-s0"
  torch::Tensor get(const std::string& key) const;
  bool has(const std::string& key) const;
  std::string dir() const;

 private:
  std::string fixture_;
  std::shared_ptr<io::SafetensorsFile> file_;
};

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace p2dpo::test
