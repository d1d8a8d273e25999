#include "models/layers.h"

#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <limits>

#include "io/errors.h"
#include "models/fused_ops.h"
#include "models/weights.h"

namespace p2dpo::models {

namespace {
thread_local int force_lora_dropout = 0;
}  // namespace

ForceLoraDropout::ForceLoraDropout() { ++force_lora_dropout; }
ForceLoraDropout::~ForceLoraDropout() { --force_lora_dropout; }
bool ForceLoraDropout::active() { return force_lora_dropout > 0; }

torch::Tensor Linear::operator()(const torch::Tensor& x) const {
  torch::Tensor y = torch::linear(x, weight, bias);
  if (lora && lora->enabled) {
    torch::Tensor h = x;
    if (lora->dropout > 0.0 && (torch::GradMode::is_enabled() || ForceLoraDropout::active())) {
      h = torch::dropout(h, lora->dropout, /*train=*/true);
    }
    if (lora->autocast) {
      const auto dtype = h.scalar_type();
      y = y + torch::linear(torch::linear(h, lora->A.to(dtype)), lora->B.to(dtype)).mul(lora->scaling);
    } else {
      y = y + torch::linear(torch::linear(h.to(lora->A.scalar_type()), lora->A), lora->B)
                      .mul(lora->scaling)
                      .to(y.scalar_type());
    }
  }
  return y;
}

Linear Linear::load(WeightStore& w, const std::string& prefix, int64_t in, int64_t out, bool bias,
                    const std::string& config_field) {
  Linear l;
  l.weight = w.get(prefix + ".weight", {out, in}, config_field);
  if (bias) l.bias = w.get(prefix + ".bias", {out}, config_field);
  return l;
}

torch::Tensor LayerNorm::operator()(const torch::Tensor& x) const {
  return torch::layer_norm(x, {x.size(-1)}, weight, bias, eps);
}

LayerNorm LayerNorm::load(WeightStore& w, const std::string& prefix, int64_t dim, double eps,
                          const std::string& config_field) {
  LayerNorm n;
  n.weight = w.get(prefix + ".weight", {dim}, config_field);
  n.bias = w.get(prefix + ".bias", {dim}, config_field);
  n.eps = eps;
  return n;
}

torch::Tensor RMSNorm::operator()(const torch::Tensor& x) const {
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
  // On CUDA, one op where the lines below dispatch eight (and, with PyTorch's fused kernel, one
  // kernel instead of eight memory passes, forward and backward): the host-bound stages of a GPU
  // run dispatch two norms per layer. The fused kernel multiplies by the weight before its single
  // rounding, where HF rounds the normalised value first: the same value to an ulp of the dtype
  // (TinyLlava's fp32 parity on the GPU, RMSNorm.OnCudaMatchesHfOrder). The CPU keeps HF's order exactly.
  if (x.is_cuda() && cuda_fused_ops() && weight.defined() && weight.scalar_type() == x.scalar_type())
    return at::rms_norm(x, {x.size(-1)}, weight, eps);
#endif
  auto dtype = x.scalar_type();
  torch::Tensor x32 = x.to(torch::kFloat32);
  torch::Tensor var = x32.pow(2).mean(-1, /*keepdim=*/true);
  torch::Tensor y = (x32 * torch::rsqrt(var + eps)).to(dtype);
  return weight * y;
}

torch::Tensor activation(const std::string& name, const torch::Tensor& x) {
  if (name == "gelu") return torch::gelu(x);
  if (name == "quick_gelu") return x * torch::sigmoid(1.702 * x);
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "gelu_pytorch_tanh" || name == "gelu_new") return torch::gelu(x, "tanh");
  if (name == "relu") return torch::relu(x);
  throw std::runtime_error("unsupported activation '" + name + "'");
}

void check_activation_supported(const std::string& name, const std::string& file,
                                const std::string& field) {
  static const char* known[] = {"gelu", "quick_gelu", "silu", "swish", "gelu_pytorch_tanh",
                                "gelu_new", "relu"};
  for (const char* k : known) {
    if (name == k) return;
  }
  throw InputError(file, "field '" + field + "': unsupported activation '" + name + "'");
}

double dtype_min(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat16: return -65504.0;
    case torch::kBFloat16: return -3.3895313892515355e38;
    case torch::kFloat64: return std::numeric_limits<double>::lowest();
    default: return static_cast<double>(std::numeric_limits<float>::lowest());
  }
}

}  // namespace p2dpo::models
