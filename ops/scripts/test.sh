#!/usr/bin/env bash
# Installs what is missing, builds once with ASan+UBSan (RelWithDebInfo) and runs every test.
# Ends with the line "N passed, N failed".  This is exactly what CI (.ci/run) runs.
set -uo pipefail
cd "$(dirname "$0")/../.."
source ops/scripts/env.sh
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
# UCX under ASan: its malloc hooks and memory events clash with the sanitizer (deps.md).
# Loopback only, listeners reusable right after a test stops.
export UCX_MEM_MALLOC_HOOKS=n UCX_MEM_EVENTS=n UCX_NET_DEVICES=lo UCX_TCP_CM_REUSEADDR=y \
       UCX_WARN_UNUSED_ENV_VARS=n

declare -a phases=()
t=$SECONDS
phase() { phases+=("$1: $((SECONDS - t)) s"); t=$SECONDS; }

bash ops/scripts/install-deps.sh || { echo "install failed"; echo "0 passed, 1 failed"; exit 1; }
bash ops/scripts/test-venv.sh || { echo "install failed (test venv)"; echo "0 passed, 1 failed"; exit 1; }
phase install
if ! { cmake --preset ci >/dev/null && cmake --build build/ci -j"$(nproc)"; }; then
  echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi
phase build
log=build/ci/ctest.log
ctest --test-dir build/ci -j"$(nproc)" --output-on-failure --timeout 900 2>&1 | tee "$log"
phase test

printf 'phase times: %s\n' "$(IFS=, ; echo "${phases[*]}")"
total=$(sed -nE 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\2/p' "$log" | tail -1)
failed=$(sed -nE 's/.*tests passed, ([0-9]+) tests failed out of ([0-9]+).*/\1/p' "$log" | tail -1)
if [[ -z $total ]]; then
  echo "ctest did not report a summary"; echo "0 passed, 1 failed"; exit 1
fi
echo "$((total - failed)) passed, $failed failed"
((failed == 0 && total > 0))
