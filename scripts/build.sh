#!/usr/bin/env bash
# Configures and builds p2dpo into build/ (Release-with-debug-info, Ninja, ccache).
# Extra CMake arguments pass through, e.g. scripts/build.sh -DP2DPO_SANITIZE=ON.
# For CUDA: CMAKE_PREFIX_PATH=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)') scripts/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS"
