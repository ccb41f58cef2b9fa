#!/usr/bin/env bash
# Builds the gateway's request-parser fuzzer with clang (libFuzzer + ASan + UBSan) and runs it.
# The project builds with g++, which has no libFuzzer, so this compiles the parser's sources
# (actors/gateway/openai_protocol.cpp: nlohmann/json only, no CAF/Beast/UCX/tokenizer) and the
# target directly. Needs Debian's clang and libclang-rt-14-dev (ops/scripts/install-deps.sh).
#   FUZZ_SECONDS   run time (default 60)
#   FUZZ_BUILD_DIR binary and the corpus it grows (default build/fuzz); the seeds in
#                  tests/gateway/fuzz_corpus/ are read, never written.
#   CLANGXX        the compiler (default clang++)
# Exits non-zero on a build failure or any crash, sanitizer report or broken invariant; the
# reproducer is left in FUZZ_BUILD_DIR (crash-*).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${FUZZ_BUILD_DIR:-$root/build/fuzz}
seconds=${FUZZ_SECONDS:-60}
clangxx=${CLANGXX:-clang++}
command -v "$clangxx" >/dev/null || { echo "run_fuzz: $clangxx not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 1; }
mkdir -p "$out/corpus"
sources=("$root/actors/gateway/openai_protocol.cpp" "$root/tests/gateway/fuzz_request_parser.cpp")
binary=$out/fuzz_request_parser
rebuild=0
[[ -x $binary ]] || rebuild=1
for f in "${sources[@]}" "$root/actors/gateway/openai_protocol.hpp" "$root/actors/gateway/backend.hpp" \
         "$root/proto/expected.hpp" "$0"; do
  [[ $f -nt $binary ]] && rebuild=1
done
if ((rebuild)); then
  echo "run_fuzz: building $binary" >&2
  "$clangxx" -std=c++20 -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -Wall -Wextra -I"$root" "${sources[@]}" -o "$binary.tmp"
  mv "$binary.tmp" "$binary"
fi
cd "$out"
exec "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
  "$out/corpus" "$root/tests/gateway/fuzz_corpus"
