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
export LD_LIBRARY_PATH=${P2DPO_GPUDEPS:-$PWD/.gpudeps}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "== configure and build ($SECONDS s)"
bash bench/gpu/build_cuda.sh p2dpo_tests bench_decode || exit 1
echo "== parity on the GPU, fp32 ($SECONDS s)"
P2DPO_TEST_DEVICE=cuda build-cuda/p2dpo_tests --gtest_filter='*LlavaParity*:*ClipParity*:*LlavaMultiImage*:TinyLlava.*' \
  --gtest_output=json:"$OUTDIR/parity_cuda.json"
echo "parity exit status $?"
echo "== benchmark ($SECONDS s)"
PYTHONUNBUFFERED=1 python3 bench/gpu/run_gpu_bench.py --bench build-cuda/bench_decode --out "$OUTDIR/gpu_bench.json"
echo "benchmark exit status $? ($SECONDS s)"
