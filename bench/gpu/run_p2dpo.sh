#!/bin/bash
# The GPU checks of the pairs and trainer issues, as one script (bench/gpu/README.md). On the GPU
# machine, from the repository root, with .gpudeps carried (bench/gpu/pack_deps.sh made it):
#   bash bench/gpu/run_p2dpo.sh OUTDIR [BUDGET_S [STAGES]]   (STAGES: bench_p2dpo_gpu.py --stages; without
#   "parity" in it the tests are neither built nor run)
# 1. builds p2dpo and its tests against the machine's PyTorch (CUDA),
# 2. runs the parity suites in fp32 on the GPU (this build's slim PCH on PyTorch 2.x too),
# 3. runs bench/gpu/bench_p2dpo_gpu.py within BUDGET_S seconds: decoding with and without CUDA
#    graphs, pairs and training, p2dpo vs HF transformers + PEFT, with op profiles of both sides
#    (profiles.json); optional stages: the PEFT round trip of a p2dpo adapter (peft), a two-rank
#    torchrun training (ddp), the attention pass one sample at a time (pairs_attn1).
set -u
OUTDIR=${1:?usage: run_p2dpo.sh OUTDIR [BUDGET_S]}
BUDGET=${2:-520}
STAGES=${3:-parity,models,pairs,pairs_fast,hf_pairs,train,train_mb4,train_mb4_r26,decode}
mkdir -p "$OUTDIR"
exec > >(tee "$OUTDIR/run_p2dpo.log") 2>&1
SECONDS=0
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__, "peft", peft.__version__)'
export LD_LIBRARY_PATH=${P2DPO_GPUDEPS:-$PWD/.gpudeps}/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "== configure and build ($SECONDS s)"
case ",$STAGES," in *,parity,*) parity=1; targets="p2dpo p2dpo_tests bench_decode" ;; *) parity=0; targets="p2dpo bench_decode" ;; esac
if ! bash bench/gpu/build_cuda.sh $targets; then
  # build_cuda.sh already turned off what it could attribute; the last resort is all three parts.
  echo "== build failed: again without CUDA graphs, NCCL and allocator statistics ($SECONDS s)"
  P2DPO_CMAKE_EXTRA="-DP2DPO_CUDA_GRAPHS=OFF -DP2DPO_NCCL=OFF -DP2DPO_CUDA_MEMORY_STATS=OFF" bash bench/gpu/build_cuda.sh $targets || exit 1
fi
if [ "$parity" = 1 ]; then
  echo "== parity on the GPU, fp32 ($SECONDS s)"
  P2DPO_TEST_DEVICE=cuda build-cuda/p2dpo_tests --gtest_brief=1 \
    --gtest_filter='*LlavaParity*:*ClipParity*:*LlavaMultiImage*:TinyLlava.*:TinyLlavaLoad.*:RMSNorm.*:Linear.*:AttentionBackend.*:TrainP2Dpo.ActivationRecomputationTrainsIdentically:Distributed.*' --gtest_output=json:"$OUTDIR/parity_cuda.json"
  echo "parity exit status $? ($SECONDS s)"
fi
echo "== pairs and training, p2dpo vs HF + PEFT ($SECONDS s)"
PYTHONUNBUFFERED=1 python3 bench/gpu/bench_p2dpo_gpu.py --p2dpo build-cuda/p2dpo --bench-decode build-cuda/bench_decode \
  --out "$OUTDIR/p2dpo_gpu.json" \
  --budget-s $((BUDGET - SECONDS)) --stages "$STAGES"
echo "benchmark exit status $? ($SECONDS s)"
