#pragma once
// Small building blocks shared by the CLIP, LLaMA and LLaVA files. Plain tensors, no nn::Module:
// the model files read like the HF modeling files they mirror, and autograd still works.
#include <torch/types.h>

#include <string>
#include <vector>

namespace p2dpo::models {

class WeightStore;

// Low-rank adapter on a linear layer (PEFT's LoRA): y += dropout(x) A^T B^T * (alpha / r).
struct LoraWeights {
  torch::Tensor A;  // [r, in]
  torch::Tensor B;  // [out, r]
  double scaling = 1.0;
  double dropout = 0.0;
  bool enabled = true;
  // false: the adapter's path runs in fp32 (PEFT's own forward: input cast up, output cast back).
  // true: it runs in the input's dtype, A and B cast down per call from their fp32 masters, as under
  // torch.autocast (HF Trainer's bf16=True) or DeepSpeed bf16 (the paper's released code). Same
  // values in fp32; in bf16 it saves two activation-sized casts per module and runs tensor cores.
  bool autocast = false;
};

// LoRA dropout is active while autograd records (training). A layer recomputed for gradient
// checkpointing runs its first pass without autograd; this scope keeps dropout on there so both
// passes draw the same masks (from the same generator state).
class ForceLoraDropout {
 public:
  ForceLoraDropout();
  ~ForceLoraDropout();
  ForceLoraDropout(const ForceLoraDropout&) = delete;
  ForceLoraDropout& operator=(const ForceLoraDropout&) = delete;
  static bool active();
};

struct Linear {
  torch::Tensor weight;  // [out, in]
  torch::Tensor bias;    // [out] or undefined
  std::shared_ptr<LoraWeights> lora;
  torch::Tensor operator()(const torch::Tensor& x) const;
  static Linear load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out,
                     bool bias, const std::string& config_field);
};

struct LayerNorm {
  torch::Tensor weight, bias;
  double eps = 1e-5;
  torch::Tensor operator()(const torch::Tensor& x) const;
  static LayerNorm load(WeightStore& w, const std::string& prefix, int64_t dim, double eps,
                        const std::string& config_field);
};

// LLaMA RMSNorm: normalise in fp32, cast back to the input dtype, then multiply by the weight.
struct RMSNorm {
  torch::Tensor weight;
  double eps = 1e-6;
  torch::Tensor operator()(const torch::Tensor& x) const;
};

// Activation by HF name: "gelu" (erf), "quick_gelu", "silu", "gelu_pytorch_tanh"/"gelu_new", "relu".
torch::Tensor activation(const std::string& name, const torch::Tensor& x);
void check_activation_supported(const std::string& name, const std::string& file,
                                const std::string& field);

// Smallest finite value of a floating dtype (HF's additive mask value).
double dtype_min(torch::Dtype dtype);

}  // namespace p2dpo::models
