#include <omp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "kernels/api/threads.hpp"

namespace longcat::kernels {

int default_compute_threads(int services_on_host) {
    if (const char* env = std::getenv("OMP_NUM_THREADS")) {
        const int n = std::atoi(env);
        if (n > 0) return n;
    }
    const long online = ::sysconf(_SC_NPROCESSORS_ONLN);
    const int cores = online > 0 ? static_cast<int>(online) : static_cast<int>(std::thread::hardware_concurrency());
    return std::max(1, cores / std::max(1, services_on_host));
}

std::vector<std::pair<std::string, std::string>> missing_passive_wait_settings() {
    std::vector<std::pair<std::string, std::string>> missing;
    if (std::getenv("OMP_WAIT_POLICY") == nullptr) missing.emplace_back("OMP_WAIT_POLICY", "passive");
    // OpenBLAS (pthreads build) busy-waits with sched_yield for 2^timeout cycles after every
    // call, 2^28 by default: ~100 ms of a core after each prefill GEMM. 4 is its minimum.
    if (std::getenv("OPENBLAS_THREAD_TIMEOUT") == nullptr) missing.emplace_back("OPENBLAS_THREAD_TIMEOUT", "4");
    return missing;
}

void ensure_passive_openmp(char** argv) {
    const auto missing = missing_passive_wait_settings();
    if (missing.empty()) return;
    for (const auto& [name, value] : missing) ::setenv(name.c_str(), value.c_str(), 1);
    // With OMP_PROC_BIND or OMP_PLACES set, libgomp has already bound this, the initial thread,
    // to the first place; the new image would inherit that one-place mask and see one CPU (a
    // 2-core run of the decode benchmark ran on 1 thread). Give it back the union of the places,
    // which libgomp built from the mask the process started with.
    if (const int places = omp_get_num_places(); places > 0) {
        std::vector<int> cpus;
        for (int place = 0; place < places; ++place) {
            std::vector<int> ids(static_cast<size_t>(omp_get_place_num_procs(place)));
            omp_get_place_proc_ids(place, ids.data());
            for (const int id : ids)
                if (id >= 0) cpus.push_back(id);
        }
        if (!cpus.empty()) {
            // A dynamic set: machines with more than CPU_SETSIZE (1024) CPUs exist.
            const int count = *std::max_element(cpus.begin(), cpus.end()) + 1;
            cpu_set_t* set = CPU_ALLOC(count);
            const size_t size = CPU_ALLOC_SIZE(count);
            CPU_ZERO_S(size, set);
            for (const int id : cpus) CPU_SET_S(id, size, set);
            ::sched_setaffinity(0, size, set);
            CPU_FREE(set);
        }
    }
    ::execv("/proc/self/exe", argv);
    // execv failed: carry on with the policy libgomp already chose.
}

}  // namespace longcat::kernels
