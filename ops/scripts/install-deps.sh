#!/usr/bin/env bash
# Installs every Debian package the build and the tests need (Debian 12, as root).
# Idempotent: packages already present are skipped by apt. See ops/docs/dependencies.md.
set -euo pipefail
pkgs=(
  build-essential cmake ninja-build ccache pkg-config git curl python3 python3-venv
  # C++ libraries (shared/design/deps.md section 0)
  libcaf-dev libucx-dev ucx-utils prometheus-cpp-dev libboost-dev nlohmann-json3-dev
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev libomp-dev
  # the Prometheus server, started by the metrics tests on 127.0.0.1
  prometheus
  # tokenizer pre-tokenizer regexes: Oniguruma, the engine HF tokenizers uses
  libonig-dev
  # tokenizer NFC normalization and Unicode categories: utf8proc (small, as used by Julia)
  libutf8proc-dev
  # the gateway's request-parser fuzzer (tests/gateway/run_fuzz.sh): g++ has no libFuzzer, so it
  # is built with clang; libclang-rt-14-dev holds libFuzzer and the clang sanitizer runtimes
  clang libclang-rt-14-dev
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
