// ops/bench/decode — CPU decode against the memory-bandwidth roofline.
//   longcat_bench_decode --model DIR [--json OUT] [--bandwidth-gib 4] [--steps 6] [--runs 9]
// Measures, in one run with the same threads (OMP_NUM_THREADS, OMP_PROC_BIND/OMP_PLACES):
//   - memory read bandwidth: best of 5 read-only sweeps over a ≥ 4 GiB buffer (and STREAM triad),
//     at the start and again right before each timed decode run (the same buffer);
//   - decode tokens/s at batch 1, 4, 16 and prefill tokens/s for 512-token prompts
//   (--prefill-tokens);
//   - the bytes a decode step touches (counted by the engine), roofline = bandwidth ÷ bytes per
//     token, and achieved ÷ roofline: once against the bandwidth at the start (median tokens/s),
//     and per run against the bandwidth measured just before it ("paired": median, min..max);
//   - the post-gate expert stage for a token routed only to zero experts vs only to real
//     experts (routing forced through e_score_correction_bias).
// Prints a table, writes JSON.  Figures are medians over --runs with their min..max spread. Runs
// go run-major (run i of every batch size, then run i + 1), and batch b ÷ batch 1 is also given
// run by run, so that the VM's bandwidth drift falls on both sides of that ratio alike.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "kernels/api/threads.hpp"
#include "kernels/cpu/isa.hpp"
#include "model/engine.hpp"
#include "model/forward.hpp"
#include "ops/bench/bench_args.hpp"
#include "ops/bench/read_probe.hpp"

namespace {

using namespace longcat;
using namespace longcat::model;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}

struct stats {
    double median = 0, min = 0, max = 0;
};

stats summarize(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return {v[v.size() / 2], v.front(), v.back()};
}

nlohmann::json to_json(const stats& s) { return {{"median", s.median}, {"min", s.min}, {"max", s.max}}; }

// -- memory bandwidth ---------------------------------------------------------------------

using longcat::bench::read_probe;

// Best STREAM triad over three arrays of bytes/8 each (STREAM byte counting).
double measure_triad(size_t bytes, int sweeps) {
    double best = 0;
    const size_t m = bytes / 8 / sizeof(double);
    double* a = static_cast<double*>(std::aligned_alloc(64, m * sizeof(double)));
    double* b = static_cast<double*>(std::aligned_alloc(64, m * sizeof(double)));
    double* c = static_cast<double*>(std::aligned_alloc(64, m * sizeof(double)));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < m; ++i) {
        a[i] = 0;
        b[i] = 1.0 + static_cast<double>(i % 7);
        c[i] = 2.0;
    }
    for (int s = 0; s < sweeps; ++s) {
        const auto t0 = clock_type::now();
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < m; ++i) a[i] = b[i] + 3.0 * c[i];
        const double sec = seconds_since(t0);
        best = std::max(best, 3.0 * static_cast<double>(m * sizeof(double)) / sec / 1e9);
    }
    if (a[m / 2] == 42.0) std::printf(" ");
    std::free(a);
    std::free(b);
    std::free(c);
    return best;
}

// -- decode -----------------------------------------------------------------------------

std::vector<int32_t> prompt_tokens(int64_t n, int salt, int64_t vocab) {
    std::vector<int32_t> t;
    for (int64_t i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 131 + salt * 977 + 11) % (vocab - 8) + 4));
    return t;
}

struct decode_result {
    int batch = 0;
    stats tokens_per_s;
    std::vector<double> run_tokens_per_s;  // each run, in order
    std::vector<double> run_read_gbs;      // best of 5 sweeps right before each run's timed steps
    std::vector<double> run_cross_copy_gbs;  // right after those sweeps: the vCPUs' placement
    double bytes_per_step = 0;  // engine-counted, averaged over the timed steps
    double bytes_counted = 0;
    int64_t steps_counted = 0;
    step_traffic traffic;       // of the last timed step
};

// One timed run of `batch` (run number `run`, which salts the prompts), appended to r.
void bench_decode_run(const std::shared_ptr<const model_weights>& w, int batch, int64_t prompt_len,
                      int steps, int run, read_probe& probe, decode_result& r) {
    r.batch = batch;
    engine_options eo;
    eo.kv.page_size = 16;
    eo.kv.num_pages = batch * ((prompt_len + steps + 16) / 16 + 1);
    engine eng(w, eo);
    std::vector<sequence> seqs(static_cast<size_t>(batch));
    std::vector<sequence*> ptrs;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < batch; ++i) {
        ptrs.push_back(&seqs[i]);
        prompts.push_back(prompt_tokens(prompt_len, i + run * 100, w->config.vocab_size));
    }
    forward_output out = eng.step(ptrs, prompts);  // prefill, untimed
    // The VM's bandwidth drifts by up to 2x within minutes: measure it beside each run.
    r.run_read_gbs.push_back(probe.best_of(5));
    r.run_cross_copy_gbs.push_back(longcat::bench::openmp_threads_cross_copy_gbs());
    const auto t0 = clock_type::now();
    for (int s = 0; s < steps; ++s) {
        std::vector<std::vector<int32_t>> next;
        for (int i = 0; i < batch; ++i)
            next.push_back({argmax(out.logits.data() + i * w->config.vocab_size, w->config.vocab_size)});
        out = eng.step(ptrs, next);
        r.bytes_counted += static_cast<double>(out.traffic.total());
        ++r.steps_counted;
    }
    r.run_tokens_per_s.push_back(static_cast<double>(batch) * steps / seconds_since(t0));
    r.traffic = out.traffic;
    r.tokens_per_s = summarize(r.run_tokens_per_s);
    r.bytes_per_step = r.bytes_counted / static_cast<double>(r.steps_counted);
}

stats bench_prefill(const std::shared_ptr<const model_weights>& w, int64_t prompt_len, int runs) {
    std::vector<double> tps;
    for (int run = 0; run < runs; ++run) {
        engine_options eo;
        eo.kv.num_pages = prompt_len / 16 + 2;
        engine eng(w, eo);
        sequence s;
        const auto t0 = clock_type::now();
        eng.step({&s}, {prompt_tokens(prompt_len, 50 + run, w->config.vocab_size)});
        tps.push_back(static_cast<double>(prompt_len) / seconds_since(t0));
    }
    return summarize(tps);
}

// -- zero experts ----------------------------------------------------------------------

// Time of the post-gate expert stage (zero-expert sum + dispatch + grouped experts) for one
// token with routing forced to zero experts only or real experts only, summed over layers.
stats bench_post_gate(const model_weights& base, bool zero_only, int runs) {
    model_weights w = base;  // views and shared storage; only the gate biases are changed
    const model_config& c = w.config;
    for (layer_weights& lw : w.layers)
        for (int64_t e = 0; e < c.num_experts_total(); ++e)
            lw.gate_bias[e] += ((e >= c.n_routed_experts) == zero_only) ? 1e3f : 0.0f;
    std::vector<float> h(static_cast<size_t>(c.hidden_size));
    for (int64_t i = 0; i < c.hidden_size; ++i) h[i] = 0.01f * static_cast<float>((i * 7) % 13) - 0.06f;
    std::vector<layer_activations> acts(static_cast<size_t>(c.num_layers));
    for (int64_t l = 0; l < c.num_layers; ++l) {
        layer_activations& a = acts[l];
        a.h = h;
        a.topk_idx.resize(static_cast<size_t>(c.moe_topk));
        a.topk_w.resize(static_cast<size_t>(c.moe_topk));
        kernels::moe_gate(a.h.data(), w.layers[l].gate_weight.data(), w.layers[l].gate_bias.data(), 1,
                          c.hidden_size, c.num_experts_total(), c.moe_topk,
                          static_cast<float>(c.routed_scaling_factor), a.topk_idx.data(), a.topk_w.data());
        for (int32_t e : a.topk_idx)
            if ((e >= c.n_routed_experts) != zero_only) {
                std::fprintf(stderr, "bench: forced routing failed (layer %ld)\n", static_cast<long>(l));
                std::exit(1);
            }
    }
    std::vector<double> times;
    for (int run = 0; run < runs + 1; ++run) {
        const auto t0 = clock_type::now();
        for (int64_t l = 0; l < c.num_layers; ++l) {
            layer_activations& a = acts[l];
            route_after_gate(c, 1, a);
            a.moe_out.assign(static_cast<size_t>(c.hidden_size), 0.0f);
            stage_experts(w, l, a.h.data(), 1, a.dispatch, a.moe_out.data());
        }
        if (run > 0) times.push_back(seconds_since(t0));  // the first run warms caches equally
    }
    return summarize(times);
}

using longcat::bench::arg;

std::string cpu_model() {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
    return "unknown";
}

}  // namespace

int main(int argc, char** argv) {
    kernels::ensure_passive_openmp(argv);
    const std::string model_dir = arg(argc, argv, "--model", "");
    if (model_dir.empty()) {
        std::fprintf(stderr,
                     "usage: longcat_bench_decode --model DIR [--json OUT] [--bandwidth-gib 4] "
                     "[--steps 6] [--runs 9] [--batches 1,4,16] [--prefill-tokens 512] "
                     "[--prefill-runs RUNS]\n");
        return 2;
    }
    const std::string json_out = arg(argc, argv, "--json", "bench-decode.json");
    const double gib = std::stod(arg(argc, argv, "--bandwidth-gib", "4"));
    const int steps = std::stoi(arg(argc, argv, "--steps", "6"));
    // 9 runs by default: the spread printed is the runs' min..max, and with 5 runs a repeat's
    // median falls outside it one time in six even on a machine that does not change (the top
    // 3 of the 10 values all the repeat's: 1/12, the bottom 3: 1/12); with 9 runs one time in
    // 34 (the top or bottom 5 of 18: 2 · 126/8568).
    const int runs = std::stoi(arg(argc, argv, "--runs", "9"));
    const int64_t prefill_tokens = std::stoll(arg(argc, argv, "--prefill-tokens", "512"));
    const int prefill_runs = std::stoi(arg(argc, argv, "--prefill-runs", std::to_string(runs)));
    if (steps < 1 || runs < 1 || prefill_tokens < 1 || prefill_runs < 1) {
        std::fprintf(stderr,
                     "--steps, --runs, --prefill-tokens and --prefill-runs must be at least 1\n");
        return 2;
    }
    std::vector<int> batches;
    {
        const std::string list = arg(argc, argv, "--batches", "1,4,16");
        size_t pos = 0;
        while (pos < list.size()) {
            const size_t comma = list.find(',', pos);
            batches.push_back(std::stoi(list.substr(pos, comma - pos)));
            pos = comma == std::string::npos ? list.size() : comma + 1;
        }
        // Ascending, each once: batch 1 (the reference of the speed-ups) comes first.
        std::sort(batches.begin(), batches.end());
        batches.erase(std::unique(batches.begin(), batches.end()), batches.end());
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    const int threads = omp_get_max_threads();
    std::printf("machine: %s, %d compute threads, ISA %s, OPENBLAS_CORETYPE=%s, OMP_PROC_BIND=%s\n",
                cpu_model().c_str(), threads, std::string(kernels::cpu_isa_name(kernels::active_cpu_isa())).c_str(),
                std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "(unset)",
                std::getenv("OMP_PROC_BIND") ? std::getenv("OMP_PROC_BIND") : "(unset)");

    read_probe probe(static_cast<size_t>(gib * (1ull << 30)));
    const std::vector<double> start_runs = probe.sweeps(5);
    const double start_gbs = *std::max_element(start_runs.begin(), start_runs.end());
    const double start_copy_gbs = longcat::bench::openmp_threads_cross_copy_gbs();
    const double triad_gbs = measure_triad(static_cast<size_t>(gib * (1ull << 30)), 5);
    std::printf("memory read bandwidth at the start: %.2f GB/s (best of 5 read-only sweeps over %.1f GiB; runs",
                start_gbs, gib);
    for (double v : start_runs) std::printf(" %.2f", v);
    std::printf("), triad %.2f GB/s; cross-core copy right after the sweeps %.1f GB/s\n", triad_gbs,
                start_copy_gbs);

    auto t0 = clock_type::now();
    auto weights = std::make_shared<model_weights>(load_model_weights(model_dir));
    std::printf("model: %s loaded in %.1f s (%ld layers, hidden %ld, %ld+%ld experts, top-%ld)\n",
                model_dir.c_str(), seconds_since(t0), static_cast<long>(weights->config.num_layers),
                static_cast<long>(weights->config.hidden_size),
                static_cast<long>(weights->config.n_routed_experts),
                static_cast<long>(weights->config.zero_expert_num), static_cast<long>(weights->config.moe_topk));

    nlohmann::json j;
    j["machine"] = {{"cpu", cpu_model()}, {"threads", threads},
                    {"isa", std::string(kernels::cpu_isa_name(kernels::active_cpu_isa()))}};
    j["bandwidth"] = {{"read_gbs", start_gbs},
                      {"read_runs_gbs", start_runs},
                      {"triad_gbs", triad_gbs},
                      {"buffer_gib", gib},
                      {"cross_core_copy_gbs", start_copy_gbs}};
    j["model"] = model_dir;

    // Two rooflines: from the bandwidth at the start (one figure for the whole run), and per
    // run from the best of 5 sweeps taken right before that run's timed steps ("paired").
    std::printf("\n%-6s %9s %16s %9s %9s %7s %10s %7s %18s\n", "batch", "tokens/s", "(min..max)", "MB/step",
                "start t/s", "ratio", "paired GB/s", "ratio", "(min..max)");
    // Run-major: run i of every batch size before run i + 1 of any, so that the VM's drift in
    // bandwidth (up to 2x within minutes here) falls on all batch sizes alike; the speed-ups
    // below are also given per run (batch b's run i ÷ batch 1's run i).
    std::map<int, decode_result> results;
    for (int run = 0; run < runs; ++run)
        for (int batch : batches) bench_decode_run(weights, batch, 64, steps, run, probe, results[batch]);
    double tps1 = 0;
    for (int batch : batches) {
        const decode_result& r = results[batch];
        const double bytes_per_token = r.bytes_per_step / batch;
        const double roofline = start_gbs * 1e9 / bytes_per_token;
        std::vector<double> paired;
        for (size_t i = 0; i < r.run_tokens_per_s.size(); ++i)
            paired.push_back(r.run_tokens_per_s[i] / (r.run_read_gbs[i] * 1e9 / bytes_per_token));
        const stats paired_ratio = summarize(paired);
        const stats paired_gbs = summarize(r.run_read_gbs);
        if (batch == 1) tps1 = r.tokens_per_s.median;
        std::printf("%-6d %9.2f %7.2f..%-7.2f %9.1f %9.2f %7.3f %10.1f %7.3f %8.3f..%-8.3f\n", batch,
                    r.tokens_per_s.median, r.tokens_per_s.min, r.tokens_per_s.max, r.bytes_per_step / 1e6,
                    roofline, r.tokens_per_s.median / roofline, paired_gbs.median, paired_ratio.median,
                    paired_ratio.min, paired_ratio.max);
        const step_traffic& t = r.traffic;
        j["decode"].push_back({{"batch", batch},
                               {"tokens_per_s", to_json(r.tokens_per_s)},
                               {"bytes_per_step", r.bytes_per_step},
                               {"bytes_per_token", bytes_per_token},
                               {"roofline_tokens_per_s", roofline},
                               {"ratio_to_roofline", r.tokens_per_s.median / roofline},
                               {"runs",
                                {{"tokens_per_s", r.run_tokens_per_s},
                                 {"read_gbs", r.run_read_gbs},
                                 {"cross_core_copy_gbs", r.run_cross_copy_gbs},
                                 {"ratio_to_roofline", paired}}},
                               {"paired_ratio_to_roofline", to_json(paired_ratio)},
                               {"speedup_vs_batch1", r.tokens_per_s.median / tps1},
                               {"traffic_last_step",
                                {{"embedding", t.embedding},
                                 {"norms", t.norms},
                                 {"gate", t.gate},
                                 {"attention", t.attention},
                                 {"dense_ffn", t.dense_ffn},
                                 {"experts", t.experts},
                                 {"lm_head", t.lm_head},
                                 {"kv_read", t.kv_read}}}});
        if (batch == 1) {
            std::printf("         bytes/step (batch 1): embedding %.3f MB, norms %.3f, gate %.2f, attention %.1f, "
                        "dense FFN %.1f, experts %.1f, lm_head %.1f, KV %.3f\n",
                        t.embedding / 1e6, t.norms / 1e6, t.gate / 1e6, t.attention / 1e6,
                        t.dense_ffn / 1e6, t.experts / 1e6, t.lm_head / 1e6, t.kv_read / 1e6);
            // Run by run: the sweeps' placement (cross-core copy) beside what the run reached.
            std::printf(
                "         batch 1 run by run, tokens/s (paired read GB/s, cross-core copy GB/s):");
            for (size_t i = 0; i < r.run_tokens_per_s.size(); ++i)
                std::printf(" %.2f (%.1f, %.0f)", r.run_tokens_per_s[i], r.run_read_gbs[i],
                            r.run_cross_copy_gbs[i]);
            std::printf("\n");
        }
    }
    // Says so when the start sweeps met another bandwidth than the runs' own sweeps (on a VM
    // whose host moves the vCPUs between core complexes): a label, no figure changes.
    std::vector<double> all_paired_gbs;
    for (int batch : batches)
        all_paired_gbs.insert(all_paired_gbs.end(), results[batch].run_read_gbs.begin(),
                              results[batch].run_read_gbs.end());
    if (!all_paired_gbs.empty()) {
        const stats sweeps = summarize(all_paired_gbs);
        const double start_over_paired = start_gbs / sweeps.median;
        j["bandwidth"]["paired_read_gbs"] = to_json(sweeps);
        j["bandwidth"]["start_over_paired_median"] = start_over_paired;
        if (start_over_paired > 1.2 || start_over_paired < 1 / 1.2)
            std::printf(
                "note: the start sweeps read %.1f GB/s, the runs' paired sweeps %.1f GB/s "
                "(median; %.1f..%.1f): the read bandwidth changed in between, so the ratios "
                "to the start roofline compare decode with another moment's bandwidth; the "
                "paired ratios compare each run with its own\n",
                start_gbs, sweeps.median, sweeps.min, sweeps.max);
    }
    for (auto& d : j["decode"]) {
        const int batch = d["batch"].get<int>();
        if (batch == 1 || !results.count(1)) continue;
        std::vector<double> per_run;
        for (size_t i = 0; i < results[batch].run_tokens_per_s.size(); ++i)
            per_run.push_back(results[batch].run_tokens_per_s[i] / results[1].run_tokens_per_s[i]);
        const stats s = summarize(per_run);
        d["speedup_vs_batch1_per_run"] = {{"runs", per_run}, {"stats", to_json(s)}};
        std::printf("batch %d / batch 1 tokens/s: %.2fx (medians); run by run %.2fx (%.2f..%.2f)\n", batch,
                    d["speedup_vs_batch1"].get<double>(), s.median, s.min, s.max);
    }

    const stats pf = bench_prefill(weights, prefill_tokens, prefill_runs);
    std::printf("prefill (%ld-token prompt): %.1f tokens/s (%.1f..%.1f)\n",
                static_cast<long>(prefill_tokens), pf.median, pf.min, pf.max);
    j["prefill"] = {{"prompt_tokens", prefill_tokens}, {"tokens_per_s", to_json(pf)}};

    const stats zero = bench_post_gate(*weights, true, 20);
    const stats real = bench_post_gate(*weights, false, 20);
    std::printf("post-gate expert stage, one token, all layers: zero-only %.1f us, real-only %.1f us, "
                "ratio %.4f\n", zero.median * 1e6, real.median * 1e6, zero.median / real.median);
    j["zero_experts"] = {{"zero_only_s", to_json(zero)}, {"real_only_s", to_json(real)},
                         {"ratio", zero.median / real.median}};

    std::ofstream(json_out) << j.dump(2) << "\n";
    std::printf("wrote %s\n", json_out.c_str());
    return 0;
}
