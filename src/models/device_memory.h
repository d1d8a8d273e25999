#pragma once
// The CUDA caching allocator's peak memory between two points of a run (what torch.cuda's
// max_memory_allocated / max_memory_reserved report in Python, so p2dpo's stages compare with the HF
// side's numbers). Torch-free header.
#include <cstdint>
#include <optional>

namespace p2dpo::models {

struct DeviceMemoryPeak {
  int64_t allocated_bytes = 0;  // tensors alive at the peak
  int64_t reserved_bytes = 0;   // the allocator's segments (what nvidia-smi sees, less the context)
};

// Whether this build reads the CUDA allocator's statistics (a CUDA build of PyTorch whose headers
// CMake could compile against).
bool device_memory_stats_available();

// The peaks on CUDA device `index` since the previous call (or the process start), and resets them;
// nullopt where unavailable.
std::optional<DeviceMemoryPeak> take_device_memory_peak(int index);

}  // namespace p2dpo::models
