#!/bin/bash
# Configures and builds p2dpo against the GPU machine's PyTorch (CUDA) with the Debian libraries
# that bench/gpu/pack_deps.sh carried in .gpudeps/ (that image has no -dev packages and no network).
#   bash bench/gpu/build_cuda.sh TARGET...      (from the repository root; build folder build-cuda/)
set -u
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null; then
  gxx=$(ls /usr/bin/g++-* 2>/dev/null | head -1); [ -n "$gxx" ] && export CXX=$gxx CC=${gxx/g++/gcc}
fi
DEPS=${P2DPO_GPUDEPS:-$PWD/.gpudeps}/usr
ARCH=$DEPS/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$ARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TORCH_CUDA_ARCH_LIST=9.0
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DP2DPO_STAGE_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu \
  -Dnlohmann_json_DIR=$DEPS/share/cmake/nlohmann_json -DCLI11_DIR=$DEPS/share/cmake/CLI11 \
  -Dfmt_DIR=$ARCH/cmake/fmt -DGTest_DIR=$ARCH/cmake/GTest \
  -DPCRE2_INCLUDE=$DEPS/include -DPCRE2_LIB=$ARCH/libpcre2-8.a \
  -DPNG_PNG_INCLUDE_DIR=$DEPS/include -DPNG_LIBRARY=$ARCH/libpng16.a \
  -DJPEG_INCLUDE_DIR=$DEPS/include -DJPEG_LIBRARY=$ARCH/libjpeg.a \
  -DZLIB_INCLUDE_DIR=$DEPS/include -DZLIB_LIBRARY=$ARCH/libz.a ${P2DPO_CMAKE_EXTRA:-} || exit 1
ninja -C build-cuda -j16 "$@"
