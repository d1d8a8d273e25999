#include "models/attention_backend.h"

#include <ATen/Context.h>
#include <torch/version.h>

#include "io/errors.h"

namespace p2dpo::models {

CudnnAttention parse_cudnn_attention(const std::string& text, const std::string& where) {
  if (text == "auto") return CudnnAttention::kAuto;
  if (text == "on") return CudnnAttention::kOn;
  if (text == "off") return CudnnAttention::kOff;
  throw InputError(where, "is '" + text + "', expected auto, on or off");
}

std::string to_string(CudnnAttention choice) {
  switch (choice) {
    case CudnnAttention::kOn: return "on";
    case CudnnAttention::kOff: return "off";
    case CudnnAttention::kAuto: break;
  }
  return "auto";
}

bool set_cudnn_attention(bool allowed) {
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
  at::globalContext().setSDPUseCuDNN(allowed);
  return true;
#else
  (void)allowed;
  return false;
#endif
}

std::optional<bool> cudnn_attention_allowed() {
#if defined(TORCH_VERSION_MAJOR) && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))
  return at::globalContext().userEnabledCuDNNSDP();
#else
  return std::nullopt;
#endif
}

std::optional<bool> apply_cudnn_attention(CudnnAttention choice, bool on_cuda) {
  if (!on_cuda) return std::nullopt;
  const bool allowed = choice == CudnnAttention::kOn;
  if (!set_cudnn_attention(allowed)) return std::nullopt;
  return allowed;
}

}  // namespace p2dpo::models
