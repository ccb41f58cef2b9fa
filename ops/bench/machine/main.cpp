// ops/bench/machine — how the machine's memory behaves over time: the limits the decode and
// transport benchmarks divide by, second by second.
//   OMP_PROC_BIND=close OMP_PLACES=cores longcat_bench_machine [--seconds 60] [--gib 4] [--json
//   OUT]
// Every interval of about one second it measures, with the process's OpenMP threads (as
// ops/bench/decode runs them; the re-execution with passive waiting included):
//   - read: GB/s (1e9 B/s) of read-only sweeps over a ≥ 4 GiB buffer by every thread — the same
//     probe as decode's roofline (ops/bench/read_probe.hpp) — best and worst of the interval;
//   - cross-core copy: GB/s of a memcpy on thread 0's CPU of 4 MiB that a thread on thread 1's
//     CPU has just written (ops/bench/cross_core.hpp, the label decode and transport print), the
//     path every dispatch/combine byte takes between an attention worker and an expert group
//     pinned to two cores;
//   - same-core copy: the same memcpy of bytes this CPU has just written, as the reference.
// On a machine of its own the figures stay put; on a shared VM they show the regimes the other
// benchmarks run into (the host moves vCPUs and memory): a read roofline taken in a fast second
// and decode timed in a slow one, or a transport run whose cores stopped sharing a cache.
// Prints one line per interval and a summary (min / median / max of each figure), writes JSON.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/api/threads.hpp"
#include "ops/bench/bench_args.hpp"
#include "ops/bench/read_probe.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using longcat::bench::arg;

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct interval {
    double at_s = 0;
    double read_best_gbs = 0;
    double read_worst_gbs = 0;
    double cross_copy_gbs = 0;
    double same_copy_gbs = 0;
};

struct stats {
    double min = 0, median = 0, max = 0;
};

stats summarize(std::vector<double> v) {
    if (v.empty()) return {};
    std::sort(v.begin(), v.end());
    return {v.front(), v[v.size() / 2], v.back()};
}

}  // namespace

int main(int argc, char** argv) {
    longcat::kernels::ensure_passive_openmp(argv);
    const double seconds = std::stod(arg(argc, argv, "--seconds", "60"));
    const double gib = std::stod(arg(argc, argv, "--gib", "4"));
    const std::string json_path = arg(argc, argv, "--json", "bench-machine.json");
    if (seconds <= 0 || gib < 0.25) {
        std::fprintf(
            stderr,
            "usage: longcat_bench_machine [--seconds S > 0] [--gib G >= 0.25] [--json OUT]\n");
        return 2;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (longcat::bench::openmp_threads_cross_copy_gbs() <= 0) {
        std::fprintf(stderr,
                     "longcat_bench_machine: needs two OpenMP threads pinned to different CPUs "
                     "(OMP_PROC_BIND=close OMP_PLACES=cores, at least 2 cores)\n");
        return 2;
    }
    longcat::bench::read_probe probe(static_cast<size_t>(gib * (1ull << 30)));
    constexpr size_t kCopyBytes = size_t{4} << 20;
    auto* src = static_cast<std::byte*>(std::aligned_alloc(4096, kCopyBytes));
    auto* dst = static_cast<std::byte*>(std::aligned_alloc(4096, kCopyBytes));
    std::memset(src, 0, kCopyBytes);
    std::memset(dst, 0, kCopyBytes);
    uint64_t sink = 0;

    std::printf(
        "%d OpenMP threads, read sweeps over %.1f GiB by all of them, copies of %zu MiB on thread "
        "0's CPU\n",
        omp_get_max_threads(), gib, kCopyBytes >> 20);
    std::printf("%8s %12s %12s %18s %17s\n", "at (s)", "read best", "read worst", "cross-core copy",
                "same-core copy");
    std::vector<interval> out;
    const auto start = clock_type::now();
    int fill = 1;
    while (seconds_since(start) < seconds) {
        interval iv;
        iv.at_s = seconds_since(start);
        iv.read_worst_gbs = 1e30;
        double same_s = 0, cross_gbs_sum = 0;
        int copies = 0, cross_probes = 0;
        const auto t_interval = clock_type::now();
        while (seconds_since(t_interval) < 1.0) {
            const double gbs = probe.sweeps(1).front();
            iv.read_best_gbs = std::max(iv.read_best_gbs, gbs);
            iv.read_worst_gbs = std::min(iv.read_worst_gbs, gbs);
            cross_gbs_sum += longcat::bench::openmp_threads_cross_copy_gbs();
            ++cross_probes;
            for (int k = 0; k < 8; ++k, ++fill) {
                std::memset(src, fill & 0xff, kCopyBytes);
                const auto t1 = clock_type::now();
                std::memcpy(dst, src, kCopyBytes);
                same_s += seconds_since(t1);
                ++copies;
                sink ^= static_cast<uint64_t>(dst[fill % kCopyBytes]);
            }
        }
        iv.cross_copy_gbs = cross_gbs_sum / cross_probes;
        iv.same_copy_gbs = copies * static_cast<double>(kCopyBytes) / same_s / 1e9;
        std::printf("%8.1f %8.1f GB/s %8.1f GB/s %13.1f GB/s %12.1f GB/s\n", iv.at_s, iv.read_best_gbs,
                    iv.read_worst_gbs, iv.cross_copy_gbs, iv.same_copy_gbs);
        out.push_back(iv);
    }
    std::vector<double> best, cross, same;
    for (const interval& iv : out) {
        best.push_back(iv.read_best_gbs);
        cross.push_back(iv.cross_copy_gbs);
        same.push_back(iv.same_copy_gbs);
    }
    const stats b = summarize(best), c = summarize(cross), s = summarize(same);
    std::printf("over %zu intervals (min / median / max): read best %.1f / %.1f / %.1f GB/s, cross-core copy "
                "%.1f / %.1f / %.1f GB/s, same-core copy %.1f / %.1f / %.1f GB/s\n",
                out.size(), b.min, b.median, b.max, c.min, c.median, c.max, s.min, s.median, s.max);
    std::printf("max / min: read %.2f, cross-core copy %.2f, same-core copy %.2f\n", b.max / b.min,
                c.max / c.min, s.max / s.min);

    nlohmann::json j;
    j["threads"] = omp_get_max_threads();
    j["read_buffer_gib"] = gib;
    j["copy_bytes"] = kCopyBytes;
    auto to_json = [](const stats& st) { return nlohmann::json{{"min", st.min}, {"median", st.median}, {"max", st.max}}; };
    j["read_best_gbs"] = to_json(b);
    j["cross_core_copy_gbs"] = to_json(c);
    j["same_core_copy_gbs"] = to_json(s);
    for (const interval& iv : out) {
        j["intervals"].push_back({{"at_s", iv.at_s},
                                  {"read_best_gbs", iv.read_best_gbs},
                                  {"read_worst_gbs", iv.read_worst_gbs},
                                  {"cross_core_copy_gbs", iv.cross_copy_gbs},
                                  {"same_core_copy_gbs", iv.same_copy_gbs}});
    }
    std::ofstream(json_path) << j.dump(2) << "\n";
    std::printf("wrote %s\n", json_path.c_str());
    std::free(src);
    std::free(dst);
    return sink == 42 ? 3 : 0;  // keeps the copies observable
}
