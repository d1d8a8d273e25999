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

// Compared on the host in float64, wherever the tensors live.
double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b);

// The device the parity suites run on: P2DPO_TEST_DEVICE (e.g. "cuda", "cuda:0"), default CPU.
// CI runs them on CPU; a GPU machine runs the same suites with P2DPO_TEST_DEVICE=cuda.
torch::Device test_device();
// t moved to test_device().
torch::Tensor on_test_device(const torch::Tensor& t);

}  // namespace p2dpo::test
