#pragma once
// Whether a model on CUDA uses fused ops where HF's op order dispatches several: q, k and v
// projected by one GEMM (LlamaDecoder, decided at load) and RMSNorm as PyTorch's rms_norm
// (PyTorch >= 2.4). Fewer ops for the host to launch (GPU decoding steps are host-bound); values
// equal to HF's to float rounding, not bit for bit. Off: HF's op order, as the CPU always runs it,
// for checking parity on a GPU or ruling the fused ops out. A process-wide switch, on by default
// (`--cuda-fused-ops on|off`). Torch-free header.
namespace p2dpo::models {

void set_cuda_fused_ops(bool on);
bool cuda_fused_ops();

}  // namespace p2dpo::models
