// ops/bench/machine — how the machine's memory behaves over time: the limits the decode and
// transport benchmarks divide by, second by second.
//   longcat_bench_machine [--seconds 60] [--gib 4] [--cpus 0,1] [--json OUT]
// Every interval of about one second it measures, on the two CPUs given (pinned threads):
//   - read: GB/s (1e9 B/s) of read-only sweeps over a ≥ 4 GiB buffer by both threads, as
//     ops/bench/decode measures its roofline's bandwidth (best and worst sweep of the interval);
//   - cross-core copy: GB/s of a memcpy of a 4 MiB buffer that the other CPU has just written,
//     the path every dispatch/combine byte takes between an attention worker and an expert group
//     pinned to two cores (ops/bench/transport);
//   - same-core copy: the same memcpy of a buffer this CPU has just written, as the reference.
// On a machine of its own the figures stay put; on a shared VM they show the regimes the other
// benchmarks run into (the host moves vCPUs and memory): a read roofline taken in a fast second
// and decode timed in a slow one, or a transport run whose cores stopped sharing a cache.
// Prints one line per interval and a summary (min / median / max of each figure), writes JSON.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "ops/bench/bench_args.hpp"
#include "ops/bench/cross_core.hpp"

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

// Two pinned threads that run jobs in lock step: the caller's thread is `a`, a helper is `b`.
class two_cpus {
  public:
    two_cpus(int cpu_a, int cpu_b) {
        pinned_ = longcat::bench::pin_this_thread(cpu_a);
        helper_ = std::thread([this, cpu_b] {
            pinned_b_ = longcat::bench::pin_this_thread(cpu_b);
            uint64_t seen = 0;
            for (;;) {
                uint64_t ticket;
                while ((ticket = go_.load(std::memory_order_acquire)) == seen)
                    std::this_thread::yield();
                seen = ticket;
                if (quit_) return;
                job_();
                done_.store(ticket, std::memory_order_release);
            }
        });
        on_b([] {});  // the helper runs (and is pinned, or not) before anything is measured
    }
    ~two_cpus() {
        quit_ = true;
        go_.fetch_add(1, std::memory_order_acq_rel);
        helper_.join();
    }
    two_cpus(const two_cpus&) = delete;
    two_cpus& operator=(const two_cpus&) = delete;

    // Runs `on_b` on the helper and waits for it.
    template <class F>
    void on_b(F on_b) {
        job_ = on_b;
        const uint64_t ticket = go_.fetch_add(1, std::memory_order_acq_rel) + 1;
        while (done_.load(std::memory_order_acquire) != ticket) std::this_thread::yield();
    }
    // Runs `f(part)` with part 0 here and part 1 on the helper, at the same time.
    template <class F>
    void both(F f) {
        job_ = [&f] { f(1); };
        const uint64_t ticket = go_.fetch_add(1, std::memory_order_acq_rel) + 1;
        f(0);
        while (done_.load(std::memory_order_acquire) != ticket) std::this_thread::yield();
    }
    bool pinned() const { return pinned_ && pinned_b_; }

  private:
    std::thread helper_;
    std::function<void()> job_;
    std::atomic<uint64_t> go_{0};
    std::atomic<uint64_t> done_{0};
    std::atomic<bool> quit_{false};
    bool pinned_ = false;
    bool pinned_b_ = false;  // written by the helper before its first job
};

}  // namespace

int main(int argc, char** argv) {
    const double seconds = std::stod(arg(argc, argv, "--seconds", "60"));
    const double gib = std::stod(arg(argc, argv, "--gib", "4"));
    const std::string cpus = arg(argc, argv, "--cpus", "0,1");
    const std::string json_path = arg(argc, argv, "--json", "bench-machine.json");
    const size_t comma = cpus.find(',');
    if (seconds <= 0 || gib < 0.25 || comma == std::string::npos) {
        std::fprintf(stderr, "usage: longcat_bench_machine [--seconds S > 0] [--gib G >= 0.25] [--cpus A,B] [--json OUT]\n");
        return 2;
    }
    const int cpu_a = std::stoi(cpus.substr(0, comma));
    const int cpu_b = std::stoi(cpus.substr(comma + 1));
    std::setvbuf(stdout, nullptr, _IOLBF, 0);

    two_cpus pair(cpu_a, cpu_b);
    if (!pair.pinned()) {
        std::fprintf(stderr, "cannot pin to CPUs %d and %d\n", cpu_a, cpu_b);
        return 2;
    }
    // The read buffer, first touched by the thread that reads each half.
    const size_t words = static_cast<size_t>(gib * (1ull << 30)) / sizeof(uint64_t) / 2 * 2;
    auto* buf = static_cast<uint64_t*>(std::aligned_alloc(64, words * sizeof(uint64_t)));
    pair.both([&](int part) {
        const size_t half = words / 2;
        for (size_t i = part * half; i < (part + 1) * half; ++i) buf[i] = i * 0x9e3779b97f4a7c15ull;
    });
    constexpr size_t kCopyBytes = size_t{4} << 20;
    auto* src = static_cast<std::byte*>(std::aligned_alloc(4096, kCopyBytes));
    auto* dst = static_cast<std::byte*>(std::aligned_alloc(4096, kCopyBytes));
    std::memset(src, 0, kCopyBytes);
    std::memset(dst, 0, kCopyBytes);
    std::atomic<uint64_t> sink{0};

    std::printf("CPUs %d and %d, read sweeps over %.1f GiB by both, copies of %zu MiB on CPU %d\n", cpu_a,
                cpu_b, gib, kCopyBytes >> 20, cpu_a);
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
            // One read sweep by both threads.
            const auto t0 = clock_type::now();
            pair.both([&](int part) {
                const size_t half = words / 2;
                uint64_t acc = 0;
                for (size_t i = part * half; i < (part + 1) * half; ++i) acc ^= buf[i];
                sink.fetch_xor(acc, std::memory_order_relaxed);
            });
            const double gbs = static_cast<double>(words * sizeof(uint64_t)) / seconds_since(t0) / 1e9;
            iv.read_best_gbs = std::max(iv.read_best_gbs, gbs);
            iv.read_worst_gbs = std::min(iv.read_worst_gbs, gbs);
            // The cross-core copy as the other benchmarks take it, and the same copy of bytes
            // this CPU has just written.
            cross_gbs_sum += longcat::bench::cross_core_copy_gbs(cpu_b);
            ++cross_probes;
            for (int k = 0; k < 8; ++k, ++fill) {
                std::memset(src, fill & 0xff, kCopyBytes);
                const auto t1 = clock_type::now();
                std::memcpy(dst, src, kCopyBytes);
                same_s += seconds_since(t1);
                ++copies;
                sink.fetch_xor(static_cast<uint64_t>(dst[fill % kCopyBytes]), std::memory_order_relaxed);
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
    j["cpus"] = {cpu_a, cpu_b};
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
    std::free(buf);
    std::free(src);
    std::free(dst);
    return 0;
}
