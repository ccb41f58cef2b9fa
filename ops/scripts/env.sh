# Sourced by the scripts: the runtime environment every run of longcat-serve gets here.
# OpenBLAS 0.3.21 does not recognise recent Xeons and falls back to SSE3 kernels (4–5× slow,
# shared/design/deps.md §8): force the core type it should use.
if [[ -z ${OPENBLAS_CORETYPE:-} ]]; then
  if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
  elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
  fi
fi
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
# OpenBLAS (pthreads) otherwise spins ~2^28 cycles after every call (kernels/api/threads.hpp).
export OPENBLAS_THREAD_TIMEOUT=${OPENBLAS_THREAD_TIMEOUT:-4}
