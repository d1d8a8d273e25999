#include "models/device_memory.h"

#ifdef P2DPO_WITH_CUDA_MEMORY_STATS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace p2dpo::models {

#ifdef P2DPO_WITH_CUDA_MEMORY_STATS

bool device_memory_stats_available() { return true; }

std::optional<DeviceMemoryPeak> take_device_memory_peak(int index) {
  const auto device = static_cast<c10::DeviceIndex>(index);
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
  DeviceMemoryPeak peak;
  // Entry 0 of each StatArray is the aggregate over the small and large pools (its enum's name and
  // namespace moved between PyTorch versions; its value did not).
  peak.allocated_bytes = stats.allocated_bytes[0].peak;
  peak.reserved_bytes = stats.reserved_bytes[0].peak;
  c10::cuda::CUDACachingAllocator::resetPeakStats(device);
  return peak;
}

#else

bool device_memory_stats_available() { return false; }

std::optional<DeviceMemoryPeak> take_device_memory_peak(int) { return std::nullopt; }

#endif

}  // namespace p2dpo::models
