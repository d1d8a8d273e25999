#!/usr/bin/env bash
# The README's main command: installs the Debian packages, builds, then runs `p2dpo demo`: P2-DPO end
# to end on the embedded world with the shipped base model and CLIP. The model makes its own focus
# and robustness pairs from the world's unlabelled prompts, they are filtered and weighted, a LoRA
# adapter is trained with the P2-DPO objective, and base and trained model are evaluated (POPE
# splits and noise sweep, CHAIR, AFR/P-Acc, IPS) into demo-run/report.html and demo-run/results.json,
# with a before/after table on the terminal. About 8 minutes on 2 cores after the build.
# Extra arguments go to `p2dpo demo` (e.g. --size ci, --baseline vcd --baseline dpo, --ablate calib).
# Rerunning resumes: finished stages are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
./build/p2dpo demo --out "${OUT:-demo-run}" "$@"
