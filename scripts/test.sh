#!/usr/bin/env bash
# The README's test command: installs dependencies (Debian 12), builds, runs every test with
# ctest, then builds the libFuzzer targets with clang and runs each for a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} ./scripts/fuzz.sh
