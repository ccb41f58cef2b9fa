// The read bandwidth the CPU benchmarks divide by, and the placement label beside it: what
// ops/bench/decode (its roofline) and ops/bench/machine (the same figure second by second) share.
// Header-only; needs OpenMP. The threads are the process's OpenMP threads (OMP_NUM_THREADS,
// OMP_PROC_BIND / OMP_PLACES), the same ones the engine computes with.
#pragma once

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ops/bench/cross_core.hpp"

namespace longcat::bench {

// A buffer of `bytes` (≥ 4 GiB for the figures the README quotes), first-touched by the readers
// and kept: each sweep reads all of it once with every OpenMP thread (static schedule).
class read_probe {
  public:
    explicit read_probe(size_t bytes) : n_(bytes / sizeof(uint64_t)) {
        buf_ = static_cast<uint64_t*>(std::aligned_alloc(64, n_ * sizeof(uint64_t)));
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n_; ++i) buf_[i] = i * 0x9e3779b97f4a7c15ull;
    }
    ~read_probe() { std::free(buf_); }
    read_probe(const read_probe&) = delete;
    read_probe& operator=(const read_probe&) = delete;

    // GB/s (1e9 bytes/s) of each of `count` read-only sweeps.
    std::vector<double> sweeps(int count) {
        std::vector<double> out;
        for (int s = 0; s < count; ++s) {
            const auto t0 = std::chrono::steady_clock::now();
            uint64_t acc = 0;
#pragma omp parallel for schedule(static) reduction(^ : acc)
            for (size_t i = 0; i < n_; ++i) acc ^= buf_[i];
            const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            sink_ ^= acc;
            out.push_back(static_cast<double>(n_ * sizeof(uint64_t)) / sec / 1e9);
        }
        if (sink_ == 42) std::printf(" ");  // keeps the sweeps observable
        return out;
    }
    double best_of(int count) {
        const std::vector<double> v = sweeps(count);
        return *std::max_element(v.begin(), v.end());
    }
    size_t bytes() const { return n_ * sizeof(uint64_t); }

  private:
    size_t n_;
    uint64_t* buf_ = nullptr;
    uint64_t sink_ = 0;
};

// cross_core_copy_gbs between the CPUs of OpenMP threads 0 and 1, called from thread 0's; 0 with
// fewer than 2 threads or threads that are not pinned apart. Not a roofline: a label for the
// placement of the vCPUs that sweeps beside it met.
inline double openmp_threads_cross_copy_gbs() {
    if (omp_get_max_threads() < 2) return 0;
    int cpu[2] = {-1, -1};
#pragma omp parallel num_threads(2)
    cpu[omp_get_thread_num()] = sched_getcpu();
    if (cpu[0] < 0 || cpu[1] < 0 || cpu[0] == cpu[1] || sched_getcpu() != cpu[0]) return 0;
    return cross_core_copy_gbs(cpu[1]);
}

}  // namespace longcat::bench
