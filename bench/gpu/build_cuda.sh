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
configure() {
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DP2DPO_STAGE_TESTS=OFF \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu \
    -Dnlohmann_json_DIR=$DEPS/share/cmake/nlohmann_json -DCLI11_DIR=$DEPS/share/cmake/CLI11 \
    -Dfmt_DIR=$ARCH/cmake/fmt -DGTest_DIR=$ARCH/cmake/GTest \
    -DPCRE2_INCLUDE=$DEPS/include -DPCRE2_LIB=$ARCH/libpcre2-8.a \
    -DPNG_PNG_INCLUDE_DIR=$DEPS/include -DPNG_LIBRARY=$ARCH/libpng16.a \
    -DJPEG_INCLUDE_DIR=$DEPS/include -DJPEG_LIBRARY=$ARCH/libjpeg.a \
    -DZLIB_INCLUDE_DIR=$DEPS/include -DZLIB_LIBRARY=$ARCH/libz.a ${P2DPO_CMAKE_EXTRA:-} "$@"
}
# The three parts that need CUDA's own headers or NCCL (CUDA graphs, allocator statistics, NCCL)
# have only ever compiled on a GPU machine. When one of them breaks the build, only that part is
# turned off and the build goes on (ninja -k 0 names every failed object; the other objects are
# kept), so one broken part does not cost the others, nor a rerun of the GPU session.
ALL_OFF="-DP2DPO_CUDA_GRAPHS=OFF -DP2DPO_CUDA_MEMORY_STATS=OFF -DP2DPO_NCCL=OFF"
if ! configure; then
  echo "build_cuda: configure failed; again without CUDA graphs, allocator statistics and NCCL"
  for f in build-cuda/CMakeFiles/CMakeConfigureLog.yaml build-cuda/CMakeFiles/CMakeError.log; do
    [ -f "$f" ] && { echo "--- tail of $f"; tail -n 60 "$f"; }
  done
  configure $ALL_OFF || exit 1
fi
# A check that fails turns its part off without failing the configure: show why, for the next fix.
for check in P2DPO_HAVE_CUDA_GRAPH_API P2DPO_HAVE_CUDA_MEMORY_STATS P2DPO_HAVE_PROCESS_GROUP_NCCL; do
  if grep -q "^$check:INTERNAL=$" build-cuda/CMakeCache.txt 2>/dev/null; then
    echo "build_cuda: configure check $check failed; its first errors:"
    grep -A 400 "variable: \"$check\"" build-cuda/CMakeFiles/CMakeConfigureLog.yaml 2>/dev/null | grep -m 25 -i "error" || true
  fi
done
log=build-cuda/ninja-first.log
ninja -C build-cuda -j16 -k 0 "$@" 2>&1 | tee "$log"
[ "${PIPESTATUS[0]}" = 0 ] && exit 0
off=$(bash "$(dirname "$0")/cuda_parts_to_turn_off.sh" "$log")
echo "build_cuda: the first build failed; turning off: ${off:-(nothing attributable: all three parts)}"
configure ${off:-$ALL_OFF} || exit 1
ninja -C build-cuda -j16 "$@"
