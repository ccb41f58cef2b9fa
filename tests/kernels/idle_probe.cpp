// Test helper for ThreadBudget.ComputeThreadsSleepWhenIdle (kernels_test): does what a service
// does at start (ensure_passive_openmp, then 2 compute threads), runs one OpenBLAS-sized linear
// (kBlasM tokens and more go to OpenBLAS), then sleeps 300 ms and prints
//   OPENBLAS_THREAD_TIMEOUT=<value or unset> openblas_parallel=<0 serial, 1 pthreads, 2 OpenMP>
//   idle_cpu_ms=<process CPU time during the sleep>
// A compute thread that spins while idle shows up as CPU time during the sleep.
#include <cblas.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "kernels/api/ops.hpp"
#include "kernels/api/threads.hpp"

namespace {
double process_cpu_ms() {
    rusage r{};
    ::getrusage(RUSAGE_SELF, &r);
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e3 + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e3;
}
}  // namespace

int main(int, char** argv) {
    longcat::kernels::ensure_passive_openmp(argv);
    longcat::kernels::set_num_threads(2);
    const int64_t rows = 1024, cols = 1024, tokens = 256;
    std::vector<float> w(static_cast<size_t>(rows * cols), 0.5f), x(static_cast<size_t>(tokens * cols), 0.25f),
        y(static_cast<size_t>(tokens * rows));
    longcat::kernels::matrix_view view;
    view.data = w.data();
    view.rows = rows;
    view.cols = cols;
    longcat::kernels::linear(view, x.data(), tokens, y.data());
    const double before = process_cpu_ms();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const double idle = process_cpu_ms() - before;
    const char* timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
    std::printf("OPENBLAS_THREAD_TIMEOUT=%s openblas_parallel=%d idle_cpu_ms=%.1f check=%.1f\n",
                timeout ? timeout : "unset", openblas_get_parallel(), idle, y[0]);
    return 0;
}
