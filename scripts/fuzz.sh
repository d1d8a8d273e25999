#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for FUZZ_SECONDS on a copy of
# its seed corpus. A crash fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
cmake -S . -B build-fuzz -G Ninja -DP2DPO_FUZZ=ON -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ >/dev/null
cmake --build build-fuzz -j "$(nproc)"
for src in fuzz/*.cpp; do
  name=$(basename "$src" .cpp)
  work=build-fuzz/corpus-work/$name
  rm -rf "$work" && mkdir -p "$work"
  [ -d "fuzz/corpus/$name" ] && cp -r "fuzz/corpus/$name/." "$work/"
  echo "fuzz: $name for ${FUZZ_SECONDS}s"
  "build-fuzz/$name" -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 "$work" 2>&1 | tail -n 2
done
echo "fuzz: all targets ran without a crash"
