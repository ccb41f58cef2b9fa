// ops/bench/sbo — how much of the MoE round trip Single Batch Overlap hides (issue #4 (b)).
//   longcat_bench_sbo [--model DIR] [--batch 16] [--prompt 64] [--warmup 5] [--steps 20]
//                     [--multiples 0,0.5,1,2] [--micro-batches 1,2] [--json bench-sbo.json]
// One process: an attention worker (worker_executor, on a thread pinned to CPU 0) and one expert
// group (expert_group::serve, on a thread pinned to CPU 1), one compute thread each
// (kernels::set_num_threads(1)), each over its own inproc_data_plane on one fabric, each wrapped
// in a faulty_data_plane whose link_delay is L: every dispatch and every combine arrives L after
// it was sent, without blocking the sender. The wrappers' delivery threads are started from the
// unpinned main thread, so they may run on either CPU. Model: a generated `demo` checkpoint
// (bf16, seed 5) unless --model is given; the group holds every routed expert.
// Workload, per configuration (a "lane": m, overlap on/off, L): B sequences of a P-token prompt
// prefilled in one step, then decode steps of one teacher-forced token per sequence (fixed
// tokens: only timing matters); W warm-up steps, then N timed steps. Each lane has its own
// executor and KV cache, so every lane sees the same context lengths. All lanes run in one
// pass, their steps interleaved round-robin (each lane's L set just before its step), so that
// the drifting load of a shared machine hits every configuration alike.
//
// Definitions (all per layer: step wall times and stage sums ÷ num_layers; medians over the
// timed steps unless said otherwise):
//   unit     = t_mid + t_back of a preliminary run (first m, L = 0, overlap on, 2N steps);
//   L        = k × unit for k in --multiples (the same L for every m);
//   t_mb(m)  = t_mid + t_back = worker_step_stats::mid_back_seconds ÷ num_layers, i.e. the sum
//              over the m micro-batches of one layer's mid+back;
//   t_exp(m) = the group's expert compute (expert_group_stats::compute_seconds: its
//              stage_experts calls) during a step ÷ num_layers, mean over the timed steps, i.e.
//              per unit × m: the sum over the m micro-batches of one layer's expert GEMMs;
//   both taken from the lane (m, L = 0, overlap on) of the interleaved pass (its calibration).
//   step_on, step_off = median step time ÷ num_layers with overlap on / off, the same m and L.
//   hidden = (step_off − step_on) ÷ min(2·m·L + t_exp(m), t_mb(m)).
//   For m = 1 this is the (step_off − step_on) ÷ min(2L + t_experts, t_mid + t_back).
//   For m = 2 each term is the per-micro-batch quantity summed over the micro-batches of a layer:
//   with overlap off every micro-batch exposes its own dispatch + experts + combine
//   (2L + t_exp per micro-batch); the denominator is that sum or the worker's mid+back compute
//   in the layer, whichever is smaller. NOTES: for m ≥ 2 it is not an upper bound of what
//   overlap saves: with overlap on the m round trips of a layer are in flight together, so the
//   saving grows with about (m − 1)·2L and hidden can exceed 1 once L > 0.
//   Target: hidden ≥ 0.7 for L ≤ 1 × unit.
// Prints a table, writes JSON (machine, model dims, calibration, every row).
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "actors/attention/worker_executor.hpp"
#include "actors/cluster/placement.hpp"
#include "actors/experts/expert_group.hpp"
#include "actors/transport/faulty_data_plane.hpp"
#include "actors/transport/inproc_data_plane.hpp"
#include "kernels/api/ops.hpp"
#include "kernels/api/threads.hpp"
#include "model/engine.hpp"
#include "model/mkmodel.hpp"
#include "model/weights.hpp"
#include "ops/bench/bench_args.hpp"
#include "ops/bench/cross_core.hpp"

namespace {

using namespace longcat;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

constexpr const char* kWorkerName = "attention-0";
constexpr int kWorkerCpu = 0;
constexpr int kGroupCpu = 1;

using longcat::bench::arg;

template <class T>
std::vector<T> parse_list(const std::string& text) {
    std::vector<T> out;
    std::stringstream list(text);
    for (std::string item; std::getline(list, item, ',');)
        out.push_back(static_cast<T>(std::stod(item)));
    return out;
}

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    }
    return "unknown";
}

std::string load_average() {
    std::ifstream f("/proc/loadavg");
    std::string one, five, fifteen;
    f >> one >> five >> fifteen;
    return one + " " + five + " " + fifteen;
}

double median(std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const size_t mid = v.size() / 2;
    return v.size() % 2 ? v[mid] : 0.5 * (v[mid - 1] + v[mid]);
}

double us(double seconds) { return seconds * 1e6; }

struct workload {
    int64_t batch = 16;
    int64_t prompt = 64;
    int warmup = 5;
    int steps = 20;
};

// One configuration: an executor with m micro-batches, overlap on or off, behind links of
// one-way delay L.
struct lane_spec {
    int32_t num_micro_batches = 1;
    bool overlap = true;
    double link_delay = 0.0;  // seconds
};

// One configuration's measurement; every time is per layer, in seconds.
struct run_result {
    bool ok = false;
    std::string error;
    double step = 0.0;          // median step wall time ÷ num_layers
    double mid_back = 0.0;      // median mid_back_seconds ÷ num_layers
    double front = 0.0;         // median front_seconds ÷ num_layers
    double join = 0.0;          // median join_seconds ÷ num_layers
    double combine_wait = 0.0;  // median combine_wait_seconds ÷ num_layers (exposed)
    double dispatch = 0.0;      // median dispatch_seconds ÷ num_layers
    double experts = 0.0;       // mean group compute per step ÷ num_layers (= per unit × m)
    std::vector<double> steps;  // every timed step's wall time, whole step
};

class sbo_bench {
  public:
    sbo_bench(const std::filesystem::path& model_dir, workload load)
        : model_dir_(model_dir), load_(load) {}

    std::optional<std::string> start() {
        model::weight_selection sel;
        sel.all_experts = false;
        try {
            attention_ = std::make_shared<const model::model_weights>(
                model::load_model_weights(model_dir_, sel));
        } catch (const std::exception& e) {
            return std::string("attention weights: ") + e.what();
        }
        const model::model_config& c = attention_->config;
        auto map = cluster::make_uneven_placement(1, static_cast<int32_t>(c.num_layers),
                                                  static_cast<int32_t>(c.n_routed_experts), 1);
        if (!map) return "placement: " + map.error().message;
        map_ = std::move(*map);
        fabric_ = std::make_shared<transport::inproc_fabric>();
        transport::inproc_data_plane_config group_pc;
        group_pc.name = map_.group(0).name;
        group_inner_ = std::make_shared<transport::inproc_data_plane>(fabric_, group_pc);
        map_.set_address(0, group_inner_->address());
        group_plane_ =
            std::make_unique<transport::faulty_data_plane>(group_inner_, transport::fault_config{});
        transport::inproc_data_plane_config worker_pc;
        worker_pc.name = kWorkerName;
        worker_inner_ = std::make_shared<transport::inproc_data_plane>(fabric_, worker_pc);
        worker_plane_ = std::make_unique<transport::faulty_data_plane>(worker_inner_,
                                                                       transport::fault_config{});
        experts::expert_group_config gc;
        gc.group_id = 0;
        gc.worker_names = {kWorkerName};
        gc.on_failure = [this](const cluster::cluster_failure& f) {
            std::fprintf(stderr, "bench: group: %s\n", f.message.c_str());
            group_failed_ = true;
        };
        auto group = experts::expert_group::load(model_dir_, map_, *group_plane_, gc);
        if (!group) return "expert group: " + group.error().message;
        group_ = std::move(*group);
        auto peer = worker_plane_->connect(group_inner_->address(), transport::deadline_after(5s));
        if (!peer) return "connect: " + peer.error().message;
        group_peer_ = *peer;
        server_ = std::jthread([g = group_.get()](std::stop_token stop) {
            if (!longcat::bench::pin_this_thread(kGroupCpu))
                std::fprintf(stderr, "bench: could not pin the group to CPU %d\n", kGroupCpu);
            kernels::set_num_threads(1);
            g->serve(stop);
        });
        return std::nullopt;
    }

    void stop() {
        server_.request_stop();
        if (server_.joinable()) server_.join();
        worker_plane_->close();
        group_plane_->close();
    }

    const model::model_config& config() const { return attention_->config; }

    // Both directions get the one-way delay L. The first call with L > 0 starts the wrappers'
    // delivery threads, which inherit the caller's affinity: make it from the unpinned main
    // thread; later calls (from the worker thread, between steps, with no frame in flight) only
    // change the delay.
    void set_link_delay(double seconds) {
        transport::fault_config faults;
        faults.link_delay = std::chrono::duration_cast<transport::clock::duration>(
            std::chrono::duration<double>(seconds));
        worker_plane_->set_faults(faults);
        group_plane_->set_faults(faults);
    }

    // Runs one executor per lane on a fresh thread pinned to CPU 0, their steps interleaved
    // round-robin (step k of every lane before step k + 1 of any; each lane's L is set just
    // before its step), so that a drift of the machine's load hits every configuration alike.
    // `steps` timed steps per lane after the prefill and the warm-up.
    std::vector<run_result> run(const std::vector<lane_spec>& specs, int steps) {
        std::vector<run_result> results;
        std::thread worker([&] {
            if (!longcat::bench::pin_this_thread(kWorkerCpu))
                std::fprintf(stderr, "bench: could not pin the worker to CPU %d\n", kWorkerCpu);
            kernels::set_num_threads(1);
            results = run_on_this_thread(specs, steps);
        });
        worker.join();
        return results;
    }

  private:
    // One executor and its sequences through a run.
    struct lane {
        std::unique_ptr<attention::worker_executor> worker;
        std::vector<model::sequence> seqs;
        std::vector<std::vector<int32_t>> tokens;
        std::vector<double> mid_back, front, join, combine_wait, dispatch, experts;
    };

    // Waits (up to 2 s) until the group has served `units` units; its stats are updated just
    // after its combine sends, so the worker may see the last combine first.
    experts::expert_group_stats group_stats_at(uint64_t units) {
        const auto until = clock_type::now() + 2s;
        experts::expert_group_stats s = group_->stats();
        while (s.units_served < units && clock_type::now() < until) {
            std::this_thread::sleep_for(50us);
            s = group_->stats();
        }
        return s;
    }

    std::vector<run_result> run_on_this_thread(const std::vector<lane_spec>& specs, int steps) {
        std::vector<run_result> results(specs.size());
        const model::model_config& c = attention_->config;
        const auto num_layers = static_cast<double>(c.num_layers);
        // Deterministic tokens: sequence s, position p.
        auto token = [&](size_t s, int64_t p) {
            return static_cast<int32_t>((7919 + s * 131 + static_cast<size_t>(p) * 37) %
                                        static_cast<size_t>(c.vocab_size));
        };
        auto fail = [&](const std::string& why) {
            for (run_result& r : results) r.error = why;
            return results;
        };
        std::vector<lane> lanes(specs.size());
        for (size_t i = 0; i < specs.size(); ++i) {
            attention::worker_executor_config wc;
            wc.num_micro_batches = specs[i].num_micro_batches;
            wc.overlap = specs[i].overlap;
            wc.kv.page_size = 16;
            const int64_t max_len = load_.prompt + load_.warmup + steps + 1;
            wc.kv.num_pages = load_.batch * ((max_len + wc.kv.page_size - 1) / wc.kv.page_size) + 4;
            auto created = attention::worker_executor::create(attention_, map_, *worker_plane_, wc);
            if (!created) return fail(created.error().message);
            lanes[i].worker = std::move(*created);
            if (auto used = lanes[i].worker->use_group_peers({group_peer_}); !used)
                return fail(used.error().message);
            lanes[i].seqs.resize(static_cast<size_t>(load_.batch));
            lanes[i].tokens.resize(lanes[i].seqs.size());
            for (size_t s = 0; s < lanes[i].seqs.size(); ++s) {
                for (int64_t p = 0; p < load_.prompt; ++p)
                    lanes[i].tokens[s].push_back(token(s, p));
            }
        }
        uint64_t units = group_->stats().units_served;
        std::optional<std::string> error;
        // Step 0 is the prefill, then the warm-up steps, then the timed ones.
        for (int step = 0; step <= load_.warmup + steps && !error; ++step) {
            for (size_t i = 0; i < lanes.size() && !error; ++i) {
                lane& l = lanes[i];
                set_link_delay(specs[i].link_delay);
                std::vector<model::sequence*> ptrs;
                for (auto& seq : l.seqs) ptrs.push_back(&seq);
                const double compute_before = group_stats_at(units).compute_seconds;
                const auto t0 = clock_type::now();
                auto out = l.worker->step(ptrs, l.tokens, next_step_id_++);
                const double seconds =
                    std::chrono::duration<double>(clock_type::now() - t0).count();
                if (!out) {
                    error = out.error().message;
                    break;
                }
                units += static_cast<uint64_t>(c.num_layers * specs[i].num_micro_batches);
                const experts::expert_group_stats after = group_stats_at(units);
                if (after.units_served != units || group_failed_) {
                    error = "the group served " + std::to_string(after.units_served) +
                            " units, expected " + std::to_string(units);
                    break;
                }
                for (size_t s = 0; s < l.seqs.size(); ++s)
                    l.tokens[s] = {token(s, l.seqs[s].num_cached())};
                if (step <= load_.warmup) continue;
                const attention::worker_step_stats& st = out->stats;
                results[i].steps.push_back(seconds);
                l.mid_back.push_back(st.mid_back_seconds / num_layers);
                l.front.push_back(st.front_seconds / num_layers);
                l.join.push_back(st.join_seconds / num_layers);
                l.combine_wait.push_back(st.combine_wait_seconds / num_layers);
                l.dispatch.push_back(st.dispatch_seconds / num_layers);
                l.experts.push_back((after.compute_seconds - compute_before) / num_layers);
            }
        }
        for (lane& l : lanes) {
            for (auto& seq : l.seqs) l.worker->release(seq);
        }
        if (error) return fail(*error);
        for (size_t i = 0; i < lanes.size(); ++i) {
            run_result& r = results[i];
            const lane& l = lanes[i];
            std::vector<double> per_layer_steps;
            for (double v : r.steps) per_layer_steps.push_back(v / num_layers);
            r.step = median(per_layer_steps);
            r.mid_back = median(l.mid_back);
            r.front = median(l.front);
            r.join = median(l.join);
            r.combine_wait = median(l.combine_wait);
            r.dispatch = median(l.dispatch);
            // Σ over the step's units ÷ num_layers = per unit × m.
            double sum = 0.0;
            for (double v : l.experts) sum += v;
            r.experts = sum / static_cast<double>(l.experts.size());
            r.ok = true;
        }
        return results;
    }

    std::filesystem::path model_dir_;
    workload load_;
    std::shared_ptr<const model::model_weights> attention_;
    cluster::placement_map map_;
    std::shared_ptr<transport::inproc_fabric> fabric_;
    std::shared_ptr<transport::inproc_data_plane> group_inner_, worker_inner_;
    std::unique_ptr<transport::faulty_data_plane> group_plane_, worker_plane_;
    std::unique_ptr<experts::expert_group> group_;
    transport::peer_id group_peer_;
    std::jthread server_;
    std::atomic<bool> group_failed_{false};
    uint64_t next_step_id_ = 1;
};

nlohmann::json run_json(const run_result& r) {
    return {{"step_us", us(r.step)},         {"mid_back_us", us(r.mid_back)},
            {"front_us", us(r.front)},       {"join_us", us(r.join)},
            {"experts_us", us(r.experts)},   {"combine_wait_us", us(r.combine_wait)},
            {"dispatch_us", us(r.dispatch)}, {"step_seconds", r.steps}};
}

}  // namespace

int main(int argc, char** argv) {
    kernels::ensure_passive_openmp(argv);
    const std::string json_out = arg(argc, argv, "--json", "bench-sbo.json");
    std::string model_arg = arg(argc, argv, "--model", "");
    workload load;
    load.batch = std::stoll(arg(argc, argv, "--batch", "16"));
    load.prompt = std::stoll(arg(argc, argv, "--prompt", "64"));
    load.warmup = std::stoi(arg(argc, argv, "--warmup", "5"));
    load.steps = std::stoi(arg(argc, argv, "--steps", "20"));
    const std::vector<double> multiples =
        parse_list<double>(arg(argc, argv, "--multiples", "0,0.5,1,2"));
    const std::vector<int32_t> mbs = parse_list<int32_t>(arg(argc, argv, "--micro-batches", "1,2"));
    if (load.batch < 1 || load.prompt < 1 || load.warmup < 0 || load.steps < 1 ||
        multiples.empty() || mbs.empty()) {
        std::fprintf(stderr, "bench: --batch, --prompt, --steps must be ≥ 1, --warmup ≥ 0\n");
        return 2;
    }
    const unsigned num_cpus = std::thread::hardware_concurrency();
    if (num_cpus < 2)
        std::fprintf(stderr, "bench: %u CPU(s); worker and group share one\n", num_cpus);
    kernels::set_num_threads(1);

    std::filesystem::path temp;
    struct cleanup {
        std::filesystem::path* p;
        ~cleanup() {
            std::error_code ec;
            if (!p->empty()) std::filesystem::remove_all(*p, ec);
        }
    } cleanup_dir{&temp};
    std::string preset = "(given)";
    if (model_arg.empty()) {
        char tmpl[] = "/tmp/longcat-bench-sbo-XXXXXX";
        if (!::mkdtemp(tmpl)) {
            std::perror("mkdtemp");
            return 1;
        }
        temp = tmpl;
        model::mkmodel_options mo;
        mo.preset = "demo";
        mo.seed = 5;
        mo.dtype = model::checkpoint_dtype::bf16;
        mo.out_dir = temp / "demo";
        const auto t0 = clock_type::now();
        try {
            model::make_model(mo);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "bench: mkmodel: %s\n", e.what());
            return 1;
        }
        std::fprintf(stderr, "bench: wrote the demo checkpoint in %.1f s\n",
                     std::chrono::duration<double>(clock_type::now() - t0).count());
        model_arg = mo.out_dir.string();
        preset = "demo";
    }
    const std::string load_start = load_average();

    sbo_bench bench(model_arg, load);
    if (auto problem = bench.start()) {
        std::fprintf(stderr, "bench: %s\n", problem->c_str());
        return 1;
    }
    const model::model_config& c = bench.config();
    std::printf(
        "model %s: %ld layers, hidden %ld, dense FFN %ld, experts %ld+%ld zero (top-%ld, FFN %ld), "
        "bf16\n",
        preset.c_str(), static_cast<long>(c.num_layers), static_cast<long>(c.hidden_size),
        static_cast<long>(c.ffn_hidden_size), static_cast<long>(c.n_routed_experts),
        static_cast<long>(c.zero_expert_num), static_cast<long>(c.moe_topk),
        static_cast<long>(c.expert_ffn_hidden_size));
    std::printf(
        "batch %ld × prompt %ld, %d warm-up + %d timed decode steps per configuration; "
        "worker CPU %d, group CPU %d, 1 compute thread each; %u CPUs (%s); load %s\n",
        static_cast<long>(load.batch), static_cast<long>(load.prompt), load.warmup, load.steps,
        kWorkerCpu, kGroupCpu, num_cpus, cpu_model().c_str(), load_start.c_str());

    // 1. The unit of L: t_mid + t_back of the first m, L = 0, overlap on (2N steps).
    bench.set_link_delay(0.0);
    const run_result prelim = bench.run({{mbs.front(), true, 0.0}}, 2 * load.steps).front();
    if (!prelim.ok) {
        std::fprintf(stderr, "bench: preliminary run: %s\n", prelim.error.c_str());
        bench.stop();
        return 1;
    }
    const double unit = prelim.mid_back;
    std::printf("unit of L: t_mid+t_back = %.0f µs per layer (m=%d, L=0, overlap on, %d steps)\n",
                us(unit), mbs.front(), 2 * load.steps);

    // 2. Every (m, L, overlap) lane, interleaved; lane (m, L=0, on) is also m's calibration.
    std::vector<lane_spec> specs;
    std::vector<size_t> calib_lane(mbs.size());
    std::vector<std::vector<size_t>> on_lane(mbs.size()), off_lane(mbs.size());
    for (size_t i = 0; i < mbs.size(); ++i) {
        calib_lane[i] = specs.size();
        specs.push_back({mbs[i], true, 0.0});
        for (double k : multiples) {
            if (k == 0.0) {
                on_lane[i].push_back(calib_lane[i]);
            } else {
                on_lane[i].push_back(specs.size());
                specs.push_back({mbs[i], true, k * unit});
            }
            off_lane[i].push_back(specs.size());
            specs.push_back({mbs[i], false, k * unit});
        }
    }
    // Starts the delivery threads from this unpinned thread.
    bench.set_link_delay(*std::max_element(multiples.begin(), multiples.end()) * unit);
    const std::vector<run_result> results = bench.run(specs, load.steps);
    if (!results.front().ok) {
        std::fprintf(stderr, "bench: %s\n", results.front().error.c_str());
        bench.stop();
        return 1;
    }
    for (size_t i = 0; i < mbs.size(); ++i) {
        const run_result& r = results[calib_lane[i]];
        std::printf(
            "calibration m=%d (L=0, overlap on), per layer: t_mid+t_back %.0f µs, t_experts %.0f "
            "µs, "
            "front %.0f µs, join %.0f µs, step %.0f µs\n",
            mbs[i], us(r.mid_back), us(r.experts), us(r.front), us(r.join), us(r.step));
    }

    nlohmann::json j;
    j["machine"] = {{"nproc", num_cpus},           {"cpu_model", cpu_model()},
                    {"loadavg_start", load_start}, {"worker_cpu", kWorkerCpu},
                    {"group_cpu", kGroupCpu},      {"compute_threads", 1}};
    j["model"] = {{"preset", preset},
                  {"dir", model_arg},
                  {"dtype", "bf16"},
                  {"num_layers", c.num_layers},
                  {"hidden_size", c.hidden_size},
                  {"num_attention_heads", c.num_attention_heads},
                  {"q_lora_rank", c.q_lora_rank},
                  {"kv_lora_rank", c.kv_lora_rank},
                  {"ffn_hidden_size", c.ffn_hidden_size},
                  {"expert_ffn_hidden_size", c.expert_ffn_hidden_size},
                  {"n_routed_experts", c.n_routed_experts},
                  {"zero_expert_num", c.zero_expert_num},
                  {"moe_topk", c.moe_topk},
                  {"vocab_size", c.vocab_size}};
    j["workload"] = {{"batch", load.batch},          {"prompt", load.prompt},
                     {"warmup", load.warmup},        {"steps", load.steps},
                     {"unit_steps", 2 * load.steps}, {"lanes_interleaved", true}};
    j["definitions"] = {
        {"per_layer", "step wall time and stage sums ÷ num_layers; medians over the timed steps"},
        {"t_mid_back",
         "worker_step_stats::mid_back_seconds ÷ num_layers (summed over micro-batches)"},
        {"t_experts", "group stage_experts seconds per step ÷ num_layers, mean (= per unit × m)"},
        {"calibration", "t_mid_back(m), t_experts(m) from the lane (m, L = 0, overlap on)"},
        {"L",
         "multiple × unit; unit = t_mid_back of a preliminary run (first m, L = 0, overlap on)"},
        {"hidden", "(step_off − step_on) ÷ min(2·m·L + t_experts(m), t_mid_back(m))"},
        {"target", "hidden ≥ 0.7 for multiple ≤ 1"}};
    j["L_unit_us"] = us(unit);
    j["preliminary"] = run_json(prelim);
    j["preliminary"]["m"] = mbs.front();
    for (size_t i = 0; i < mbs.size(); ++i) {
        nlohmann::json cj = run_json(results[calib_lane[i]]);
        cj["m"] = mbs[i];
        j["calibration"].push_back(cj);
    }
    j["t_mid_back_us"] = us(results[calib_lane[0]].mid_back);
    j["t_experts_us"] = us(results[calib_lane[0]].experts);

    std::printf(
        "\nper layer, µs; hidden = (off − on) ÷ min(2·m·L + t_experts(m), t_mid+t_back(m)); "
        "off−off0 = off − off at L=0 (expect ≈ 2mL); wait = combine wait (exposed)\n");
    std::printf("%2s %6s %7s %8s %8s %7s %9s %9s %9s %9s %6s\n", "m", "L/unit", "L µs", "on µs",
                "off µs", "hidden", "off−off0", "2mL µs", "wait on", "wait off", "target");
    bool all_ok = true;
    for (size_t i = 0; i < mbs.size(); ++i) {
        const int32_t m = mbs[i];
        const double t_mb = results[calib_lane[i]].mid_back;
        const double t_exp = results[calib_lane[i]].experts;
        std::optional<double> off0;
        for (size_t k_idx = 0; k_idx < multiples.size(); ++k_idx) {
            const double k = multiples[k_idx];
            const double delay = k * unit;
            const run_result& on = results[on_lane[i][k_idx]];
            const run_result& off = results[off_lane[i][k_idx]];
            if (!off0 && k == 0.0) off0 = off.step;
            const double denominator = std::min(2.0 * m * delay + t_exp, t_mb);
            const double hidden = (off.step - on.step) / denominator;
            const bool gated = k <= 1.0;
            const char* verdict = !gated ? "-" : hidden >= 0.7 ? "ok" : "MISS";
            if (gated && hidden < 0.7) all_ok = false;
            std::printf(
                "%2d %6.2f %7.0f %8.0f %8.0f %7.2f %9s %9.0f %9.0f %9.0f %6s\n", m, k, us(delay),
                us(on.step), us(off.step), hidden,
                off0 ? std::to_string(static_cast<long>(us(off.step - *off0))).c_str() : "-",
                us(2.0 * m * delay), us(on.combine_wait), us(off.combine_wait), verdict);
            std::fflush(stdout);
            nlohmann::json row = {{"m", m},
                                  {"L_multiple", k},
                                  {"L_us", us(delay)},
                                  {"L_over_t_mid_back", delay / t_mb},
                                  {"step_on_us", us(on.step)},
                                  {"step_off_us", us(off.step)},
                                  {"denominator_us", us(denominator)},
                                  {"hidden", hidden},
                                  {"target", gated ? nlohmann::json(0.7) : nlohmann::json(nullptr)},
                                  {"verdict", verdict},
                                  {"on", run_json(on)},
                                  {"off", run_json(off)}};
            j["rows"].push_back(row);
        }
    }
    bench.set_link_delay(0.0);
    bench.stop();
    j["machine"]["loadavg_end"] = load_average();
    std::printf("load %s → %s\n", load_start.c_str(), load_average().c_str());
    std::ofstream(json_out) << j.dump(2) << "\n";
    std::printf("wrote %s\n", json_out.c_str());
    return all_ok ? 0 : 1;
}
