#!/usr/bin/env bash
# Installs p2dpo's build and test dependencies from Debian 12 packages. Idempotent: packages
# already present are left alone, so it is cheap to run before every build.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread libgloo-dev      # tensor/autograd/distributed engine (CPU)
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev
  libsentencepiece-dev libpcre2-dev libjpeg62-turbo-dev libpng-dev zlib1g-dev
  sentencepiece                                      # spm_train, run as a process to train the world tokenizer
  libcurl4-openssl-dev                               # MMHal-Bench judge: OpenAI-compatible HTTPS client
  chromium fonts-dejavu-core                         # the report test renders report.html headless
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev                           # libFuzzer targets and sanitizers
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
