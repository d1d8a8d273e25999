#!/bin/bash
# Reads a failed ninja log (build_cuda.sh) and prints the CMake options that turn off the CUDA-only
# parts whose objects or links failed; prints nothing when a failure is not theirs.
#   bash bench/gpu/cuda_parts_to_turn_off.sh NINJA_LOG
set -u
log=${1:?usage: cuda_parts_to_turn_off.sh NINJA_LOG}
off=()
grep -q '^FAILED: .*src/infer/decode_graph\.cpp\.o' "$log" && off+=(-DP2DPO_CUDA_GRAPHS=OFF)
grep -q '^FAILED: .*src/models/device_memory\.cpp\.o' "$log" && off+=(-DP2DPO_CUDA_MEMORY_STATS=OFF)
# NCCL: its object, or a link that cannot resolve NCCL's or ProcessGroupNCCL's symbols.
if grep -q '^FAILED: .*src/train/distributed\.cpp\.o' "$log" || grep -qi 'undefined reference to .*nccl' "$log"; then
  off+=(-DP2DPO_NCCL=OFF)
fi
# Another failed object means the failure is not (only) theirs: say nothing, the caller turns all off.
if grep '^FAILED: ' "$log" | grep -v -e 'decode_graph\.cpp\.o' -e 'device_memory\.cpp\.o' -e 'distributed\.cpp\.o' \
   | grep -q '\.o\b'; then
  exit 0
fi
echo "${off[@]:-}"
