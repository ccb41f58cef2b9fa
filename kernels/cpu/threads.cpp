#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

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

void ensure_passive_openmp(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
    ::setenv("OMP_WAIT_POLICY", "passive", 1);
    ::execv("/proc/self/exe", argv);
    // execv failed: carry on with the policy libgomp already chose.
}

}  // namespace longcat::kernels
