// The compute-thread budget of a process (ARCHITECTURE.md §9).  Several services may share a
// host, so each takes cores ÷ services (at least 1) unless told otherwise; OpenMP waits
// passively (OMP_WAIT_POLICY=passive) so idle compute threads never spin.
#pragma once

namespace longcat::kernels {

// OMP_NUM_THREADS when set, else max(1, online cores / services_on_host).
int default_compute_threads(int services_on_host = 1);

// libgomp reads OMP_WAIT_POLICY once, when it is loaded, before main runs.  When the variable
// is unset, this sets it to "passive" and re-executes the program (/proc/self/exe) with the
// same arguments; it returns only when no re-execution was needed or possible.
void ensure_passive_openmp(char** argv);

}  // namespace longcat::kernels
