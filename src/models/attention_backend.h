#pragma once
// Whether PyTorch's scaled_dot_product_attention may pick cuDNN's kernels (a process-wide switch,
// as torch.backends.cuda.enable_cudnn_sdp in Python). On sm90, PyTorch 2.x routes masked bf16
// attention to cuDNN, which builds and caches an execution plan per new shape: GPU run 6's profiles
// (bench/README.md) show about 1 ms of host time per call where shapes change from call to call
// (reference scoring, training), against 0.1 ms of GPU work. Torch-free header.
#include <optional>
#include <string>

namespace p2dpo::models {

enum class CudnnAttention {
  kAuto,  // off on CUDA devices (the memory-efficient kernels take the masks instead); nothing on the CPU
  kOn,    // PyTorch's own choice of backend
  kOff,
};

// "auto", "on" or "off"; anything else is an InputError naming `where`.
CudnnAttention parse_cudnn_attention(const std::string& text, const std::string& where);
std::string to_string(CudnnAttention choice);

// Applies the choice for a model on a CUDA device (on_cuda) or not. Returns whether cuDNN attention
// may now be picked, or nullopt where there is nothing to switch: a CPU model, or a PyTorch before
// 2.4 (no switch; Debian's 1.13 has no cuDNN attention at all).
std::optional<bool> apply_cudnn_attention(CudnnAttention choice, bool on_cuda);

// The switch itself (true: PyTorch may pick cuDNN); false where this PyTorch has no switch.
bool set_cudnn_attention(bool allowed);
// The switch's state now; nullopt where this PyTorch has none.
std::optional<bool> cudnn_attention_allowed();

}  // namespace p2dpo::models
