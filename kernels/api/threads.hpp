// The compute-thread budget of a process (ARCHITECTURE.md §9).  Several services may share a
// host, so each takes cores ÷ services (at least 1) unless told otherwise; OpenMP and OpenBLAS
// wait passively (OMP_WAIT_POLICY=passive, OPENBLAS_THREAD_TIMEOUT=4) so idle compute threads
// do not spin.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace longcat::kernels {

// OMP_NUM_THREADS when set, else max(1, online cores / services_on_host).
int default_compute_threads(int services_on_host = 1);

// The settings that make idle compute threads sleep and that are unset in this process's
// environment, as (variable, value): OMP_WAIT_POLICY=passive (libgomp) and
// OPENBLAS_THREAD_TIMEOUT=4 (OpenBLAS's pthreads server otherwise spins about 2^28 cycles, some
// 100 ms of a core, after every call). A variable the user set is left as it is.
std::vector<std::pair<std::string, std::string>> missing_passive_wait_settings();

// libgomp and OpenBLAS read those variables once, when they are loaded, before main runs. When
// any is unset, this sets it and re-executes the program (/proc/self/exe) with the same
// arguments; it returns only when no re-execution was needed or possible.
void ensure_passive_openmp(char** argv);

}  // namespace longcat::kernels
