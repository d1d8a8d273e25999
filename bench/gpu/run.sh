#!/bin/bash
# The GPU check of the engine, as one script (bench/gpu/README.md). On the GPU machine, from the
# repository root, with .gpudeps carried (bench/gpu/pack_deps.sh made it):
#   bash bench/gpu/run.sh OUTDIR
# 1. builds p2dpo against the machine's PyTorch (CUDA) with the carried Debian libraries,
# 2. runs the parity suites in fp32 on the GPU (P2DPO_TEST_DEVICE=cuda),
# 3. runs bench/gpu/run_gpu_bench.py: p2dpo vs HF transformers on a random LLaVA-1.5-7B in bf16.
set -u
OUTDIR=${1:?usage: run.sh OUTDIR}
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/run.log") 2>&1
SECONDS=0
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
for t in g++ c++ cmake ninja nvcc pkg-config; do printf '%s: ' $t; command -v $t || echo "not found"; done
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null; then
  gxx=$(ls /usr/bin/g++-* 2>/dev/null | head -1); [ -n "$gxx" ] && export CXX=$gxx CC=${gxx/g++/gcc}
fi
DEPS=${P2DPO_GPUDEPS:-$PWD/.gpudeps}/usr
ARCH=$DEPS/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$ARCH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export TORCH_CUDA_ARCH_LIST=9.0
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "== configure ($SECONDS s)"
cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DP2DPO_STAGE_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS" -DCMAKE_LIBRARY_ARCHITECTURE=x86_64-linux-gnu \
  -Dnlohmann_json_DIR=$DEPS/share/cmake/nlohmann_json -DCLI11_DIR=$DEPS/share/cmake/CLI11 \
  -Dfmt_DIR=$ARCH/cmake/fmt -DGTest_DIR=$ARCH/cmake/GTest \
  -DPCRE2_INCLUDE=$DEPS/include -DPCRE2_LIB=$ARCH/libpcre2-8.a \
  -DPNG_PNG_INCLUDE_DIR=$DEPS/include -DPNG_LIBRARY=$ARCH/libpng16.a \
  -DJPEG_INCLUDE_DIR=$DEPS/include -DJPEG_LIBRARY=$ARCH/libjpeg.a \
  -DZLIB_INCLUDE_DIR=$DEPS/include -DZLIB_LIBRARY=$ARCH/libz.a || exit 1
echo "== build ($SECONDS s)"
ninja -C build-cuda -j16 p2dpo_tests bench_decode || exit 1
echo "== parity on the GPU, fp32 ($SECONDS s)"
P2DPO_TEST_DEVICE=cuda build-cuda/p2dpo_tests --gtest_filter='*LlavaParity*:*ClipParity*:*LlavaMultiImage*:TinyLlava.*' \
  --gtest_output=json:"$OUTDIR/parity_cuda.json"
echo "parity exit status $?"
echo "== benchmark ($SECONDS s)"
PYTHONUNBUFFERED=1 python3 bench/gpu/run_gpu_bench.py --bench build-cuda/bench_decode --out "$OUTDIR/gpu_bench.json"
echo "benchmark exit status $? ($SECONDS s)"
