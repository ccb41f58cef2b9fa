// ops/bench/control — control-plane overhead of the continuous-batching step loop (issue #4 (c)).
//   longcat_bench_control [--model DIR] [--requests 16,64,256] [--max-tokens 48]
//                         [--prompt-tokens 16] [--json OUT] [--topology deploy/local/minimal.json]
//                         [--pipeline-depth D] [--short-step-us US]
// For each request count N: starts the topology (real processes: coordinator, attention
// worker, expert group; CAF control plane, UCX data plane) with max_batch = N and a KV pool
// large enough for all N, runs N concurrent generations of --max-tokens tokens through one
// cluster_session, and reads the processes' own metrics before and after:
//   - coordinator CPU per step: Δ longcat_coordinator_step_cpu_seconds_sum ÷ Δ _count — the
//     coordinator thread's CLOCK_THREAD_CPUTIME_ID over everything it did for a step
//     (admissions, results, planning and sending the next step); target ≤ 500 µs at N = 256;
//   - worker idle at step boundaries: Δ longcat_worker_boundary_idle_seconds_total ÷
//     (Δ idle + Δ longcat_worker_step_busy_seconds_total), over steps that directly follow
//     another step (the gap between a step's result leaving the worker and the next plan
//     arriving: coordinator work + two CAF hops); target ≤ 2 % of the step.  The release-only
//     step that frees the pages once a row's requests have all finished follows no step (the
//     worker had no work left), so its wait is not counted; Δ longcat_worker_boundaries_total
//     gives the idle per boundary.
// Model: `tiny` (generated into a temp dir unless --model). Prints a table, writes JSON.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "actors/control/cluster_session.hpp"
#include "actors/control/launcher.hpp"
#include "model/mkmodel.hpp"
#include "ops/bench/bench_args.hpp"

namespace {

using namespace longcat;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

using longcat::bench::arg;

// The value of an unlabelled series ("name value") in a Prometheus text body; -1 when absent.
double series(const std::string& body, const std::string& name) {
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);)
        if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    return -1.0;
}

std::string scrape(const control::launched_process& p) {
    std::string body;
    if (control::http_get_status("127.0.0.1", p.metrics_port, "/metrics", 5s, &body) != 200)
        throw std::runtime_error("cannot scrape " + p.metrics_url());
    return body;
}

struct sample {
    double cpu_sum = 0, cpu_count = 0, idle = 0, busy = 0, boundaries = 0;
};

sample read_sample(const control::cluster_state& state) {
    sample s;
    for (const auto& p : state.processes) {
        if (p.role == "coordinator") {
            const std::string body = scrape(p);
            s.cpu_sum = series(body, "longcat_coordinator_step_cpu_seconds_sum");
            s.cpu_count = series(body, "longcat_coordinator_step_cpu_seconds_count");
        } else if (p.role == "attention") {
            const std::string body = scrape(p);
            s.idle += series(body, "longcat_worker_boundary_idle_seconds_total");
            s.busy += series(body, "longcat_worker_step_busy_seconds_total");
            s.boundaries += series(body, "longcat_worker_boundaries_total");
        }
    }
    return s;
}

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
    const std::string json_out = arg(argc, argv, "--json", "bench-control.json");
    const int64_t max_tokens = std::stoll(arg(argc, argv, "--max-tokens", "48"));
    const int64_t prompt_tokens = std::stoll(arg(argc, argv, "--prompt-tokens", "16"));
    const int pipeline_depth = std::stoi(arg(argc, argv, "--pipeline-depth", "0"));  // 0: the topology's
    const int64_t short_step_us =
        std::stoll(arg(argc, argv, "--short-step-us", "-1"));  // -1: the topology's
    std::vector<int> counts;
    {
        std::stringstream list(arg(argc, argv, "--requests", "16,64,256"));
        for (std::string item; std::getline(list, item, ',');) counts.push_back(std::stoi(item));
    }
    const fs::path work = fs::temp_directory_path() / ("longcat-bench-control-" + std::to_string(::getpid()));
    fs::create_directories(work);
    fs::path model_dir = arg(argc, argv, "--model", "");
    if (model_dir.empty()) {
        model_dir = work / "tiny";
        model::mkmodel_options o;
        o.preset = "tiny";
        o.out_dir = model_dir;
        model::make_model(o);
    }
    const fs::path topology_file = arg(argc, argv, "--topology", std::string(LONGCAT_SOURCE_DIR) + "/deploy/local/minimal.json");
    const fs::path bin_dir = fs::read_symlink("/proc/self/exe").parent_path().parent_path().parent_path() / "services";

    nlohmann::json out;
    out["machine"] = {{"nproc", std::thread::hardware_concurrency()}, {"cpu", cpu_model()}};
    out["model"] = model_dir.string();
    out["max_tokens"] = max_tokens;
    out["prompt_tokens"] = prompt_tokens;
    std::printf("model %s, %ld prompt + %ld generated tokens per request, topology %s\n\n",
                model_dir.c_str(), static_cast<long>(prompt_tokens), static_cast<long>(max_tokens),
                topology_file.filename().c_str());
    std::printf("%9s %7s %10s %14s %8s %12s %8s %16s\n", "requests", "steps", "step ms", "coord µs/step", "target",
                "worker idle", "target", "idle µs/boundary");
    int exit_code = 0;
    for (int n : counts) {
        std::ifstream in(topology_file);
        nlohmann::json topo = nlohmann::json::parse(in);
        topo["max_batch"] = n;
        if (pipeline_depth > 0) topo["pipeline_depth"] = pipeline_depth;
        if (short_step_us >= 0) topo["short_step_us"] = short_step_us;
        const int64_t page_size = 16;
        topo["page_size"] = page_size;
        topo["kv_pages"] = static_cast<int64_t>(n) * ((prompt_tokens + max_tokens + page_size) / page_size + 1) + 16;
        const fs::path file = work / ("topology-" + std::to_string(n) + ".json");
        std::ofstream(file) << topo.dump(2);
        control::cluster_up_options up;
        up.topology = file;
        up.model_dir = model_dir;
        up.state_file = work / ("cluster-" + std::to_string(n)) / "state.json";
        up.bin_dir = bin_dir;
        auto state = control::cluster_up(up);
        if (!state) {
            std::fprintf(stderr, "cluster up failed: %s\n", state.error().c_str());
            return 1;
        }
        nlohmann::json row;
        try {
            auto session = control::cluster_session::connect(state->coordinator, 30s);
            if (!session) throw std::runtime_error(session.error());
            auto run = [&](int count) {
                std::mutex mutex;
                std::condition_variable cv;
                int left = count;
                std::string failure;
                for (int i = 0; i < count; ++i) {
                    control::cluster_generate_options o;
                    for (int64_t t = 0; t < prompt_tokens; ++t) o.prompt.push_back(static_cast<int32_t>(3 + (i * 7 + t * 13) % 250));
                    o.max_tokens = max_tokens;
                    o.ignore_eos = true;
                    o.timeout = 300s;
                    (*session)->submit(o, [&](control::session_event e) {
                        if (!e.finished) return;
                        std::lock_guard lock(mutex);
                        if (e.finish_reason != "length" && failure.empty()) failure = e.finish_reason + ": " + e.error;
                        if (--left == 0) cv.notify_all();
                    });
                }
                std::unique_lock lock(mutex);
                if (!cv.wait_for(lock, 600s, [&] { return left == 0; })) throw std::runtime_error("requests did not finish in 600 s");
                if (!failure.empty()) throw std::runtime_error("a request failed: " + failure);
            };
            run(std::min(n, 4));  // warm-up
            const sample before = read_sample(*state);
            const auto t0 = std::chrono::steady_clock::now();
            run(n);
            const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const sample after = read_sample(*state);
            const double steps = after.cpu_count - before.cpu_count;
            const double cpu_us = steps > 0 ? (after.cpu_sum - before.cpu_sum) / steps * 1e6 : 0.0;
            const double idle = after.idle - before.idle, busy = after.busy - before.busy;
            const double idle_fraction = idle + busy > 0 ? idle / (idle + busy) : 0.0;
            const double boundaries = after.boundaries - before.boundaries;
            const double idle_per_boundary_us = boundaries > 0 ? idle / boundaries * 1e6 : 0.0;
            const bool cpu_ok = n < 256 || cpu_us <= 500.0;
            const bool idle_ok = idle_fraction <= 0.02;
            if (!cpu_ok || !idle_ok) exit_code = 3;
            std::printf("%9d %7.0f %10.2f %14.1f %8s %11.2f%% %8s %16.1f\n", n, steps,
                        steps > 0 ? seconds / steps * 1e3 : 0.0, cpu_us, n < 256 ? "-" : (cpu_ok ? "ok" : "MISS"),
                        idle_fraction * 100.0, idle_ok ? "ok" : "MISS", idle_per_boundary_us);
            std::fflush(stdout);
            row = {{"requests", n}, {"steps", steps}, {"seconds", seconds}, {"step_ms", steps > 0 ? seconds / steps * 1e3 : 0.0},
                   {"coordinator_cpu_us_per_step", cpu_us}, {"worker_idle_seconds", idle}, {"worker_busy_seconds", busy},
                   {"worker_idle_fraction", idle_fraction}, {"worker_boundaries", boundaries},
                   {"worker_idle_us_per_boundary", idle_per_boundary_us}, {"coordinator_target_us", 500},
                   {"idle_target", 0.02}};
        } catch (const std::exception& e) {
            std::fprintf(stderr, "N=%d: %s\n", n, e.what());
            row = {{"requests", n}, {"error", e.what()}};
            exit_code = 1;
        }
        out["results"].push_back(row);
        (void)control::cluster_down(up.state_file);
    }
    std::ofstream(json_out) << out.dump(2) << "\n";
    std::printf("\nwrote %s\n", json_out.c_str());
    fs::remove_all(work);
    return exit_code;
}
