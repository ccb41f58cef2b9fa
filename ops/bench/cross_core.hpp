// What the benchmarks share to tell where the host runs their threads: pinning the calling thread
// and a cross-core copy figure. Header-only; each benchmark is one translation unit.
#pragma once

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <thread>
#include <vector>

namespace longcat::bench {

// Pins the calling thread to `cpu`; false if the kernel refuses.
inline bool pin_this_thread(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

// GB/s of a 4 MiB memcpy on the calling thread of bytes that a thread pinned to `other_cpu` has
// just written (8 copies, after an uncounted one): the path a byte takes from a process on one
// core to a process on another. A VM's host may run two vCPUs behind one shared cache (about
// 40 GB/s on the development VM) or on two core complexes (about 20), and move them at any time
// (ops/bench/machine follows it second by second); the figure says which placement a measurement
// beside it met. The writer stays on its CPU, yielding rather than sleeping, for the whole probe:
// a vCPU that goes idle may lose its caches to the host's other work, which is not what this
// measures.
inline double cross_core_copy_gbs(int other_cpu) {
    constexpr size_t kBytes = size_t{4} << 20;
    constexpr int kCopies = 8;
    static std::vector<std::byte> src(kBytes), dst(kBytes);
    std::atomic<int> written{0}, wanted{0};
    std::thread writer([&] {
        pin_this_thread(other_cpu);
        for (int k = 1; k <= kCopies + 1; ++k) {
            while (wanted.load(std::memory_order_acquire) < k) std::this_thread::yield();
            std::memset(src.data(), k, kBytes);
            written.store(k, std::memory_order_release);
        }
    });
    double seconds = 0;
    for (int k = 1; k <= kCopies + 1; ++k) {  // the first copy warms up, uncounted
        wanted.store(k, std::memory_order_release);
        while (written.load(std::memory_order_acquire) < k) std::this_thread::yield();
        const auto t0 = std::chrono::steady_clock::now();
        std::memcpy(dst.data(), src.data(), kBytes);
        if (k > 1) seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    writer.join();
    return kCopies * static_cast<double>(kBytes) / seconds / 1e9;
}

}  // namespace longcat::bench
