// ops/bench/gemv — the small-M kernel on the weight shapes of a model preset, against the read
// bandwidth of the same memory measured in the same run.
//   longcat_bench_gemv [--preset bench] [--tokens 1] [--gib 1] [--rounds 5] [--json OUT]
// For each weight shape of the preset (dense FFN, attention, expert, lm_head matrices), bf16:
//   - enough copies of the matrix to fill --gib (at least 2), so that every call reads DRAM;
//   - kernels::linear over all copies, --tokens tokens each (the public entry: run-time ISA,
//     one OpenMP parallel region per call, as decode calls it): GB/s of weights read;
//   - a read-only sweep over the same copies in one parallel region, same threads: GB/s;
//   - ratio = linear ÷ sweep, and microseconds per call.
// Best of --rounds each, alternating linear and sweep round by round so that the machine's
// bandwidth drift falls on both. What a call costs beyond streaming its bytes (waking the
// OpenMP team, the lead of the prefetches) shows in the small shapes' ratios.
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

#include "kernels/api/ops.hpp"
#include "kernels/api/threads.hpp"
#include "kernels/cpu/isa.hpp"
#include "model/mkmodel.hpp"
#include "ops/bench/bench_args.hpp"

namespace {

using namespace longcat;

using longcat::bench::arg;

double seconds_now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

struct shape {
    std::string name;
    int64_t rows = 0, cols = 0;
};

// The matrices a decode step multiplies, from the preset's config (MLA, dense FFN, experts).
std::vector<shape> shapes_of(const model::model_config& c) {
    const int64_t h = c.hidden_size, heads = c.num_attention_heads;
    const int64_t qk = c.qk_nope_head_dim + c.qk_rope_head_dim;
    return {
        {"dense gate/up", c.ffn_hidden_size, h},
        {"dense down", h, c.ffn_hidden_size},
        {"attn q_a", c.q_lora_rank, h},
        {"attn q_b", heads * qk, c.q_lora_rank},
        {"attn kv_a", c.kv_lora_rank + c.qk_rope_head_dim, h},
        {"attn kv_b", heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank},
        {"attn o", h, heads * c.v_head_dim},
        {"expert gate/up", c.expert_ffn_hidden_size, h},
        {"expert down", h, c.expert_ffn_hidden_size},
        {"lm_head", c.vocab_size, h},
    };
}

// GB/s of one read-only sweep over every copy (the loop of ops/bench/decode's read probe), in
// one parallel region.
double sweep(const std::vector<std::vector<uint64_t>>& copies, uint64_t& sink) {
    const double t0 = seconds_now();
    uint64_t acc = 0;
    size_t bytes = 0;
#pragma omp parallel reduction(^ : acc)
    for (const auto& m : copies) {
        const uint64_t* p = m.data();
        const auto n = static_cast<int64_t>(m.size());
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < n; ++i) acc ^= p[i];
    }
    for (const auto& m : copies) bytes += m.size() * sizeof(uint64_t);
    sink ^= acc;
    return static_cast<double>(bytes) / (seconds_now() - t0) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    kernels::ensure_passive_openmp(argv);
    const std::string preset = arg(argc, argv, "--preset", "bench");
    const int64_t tokens = std::stoll(arg(argc, argv, "--tokens", "1"));
    const double gib = std::stod(arg(argc, argv, "--gib", "1"));
    const int rounds = std::max(1, std::stoi(arg(argc, argv, "--rounds", "5")));
    const std::string json_out = arg(argc, argv, "--json", "bench-gemv.json");
    if (tokens < 1 || tokens > 16) {
        std::fprintf(stderr, "longcat_bench_gemv: --tokens must be 1..16 (the small-M kernel)\n");
        return 2;
    }
    const model::model_config cfg = model::find_mkmodel_preset(preset).config;
    const int threads = omp_get_max_threads();
    std::printf("preset %s, %ld token(s), %d compute threads, ISA %s, OMP_WAIT_POLICY=%s\n",
                preset.c_str(), static_cast<long>(tokens), threads,
                std::string(kernels::cpu_isa_name(kernels::active_cpu_isa())).c_str(),
                std::getenv("OMP_WAIT_POLICY") ? std::getenv("OMP_WAIT_POLICY") : "(unset)");
    std::printf("%-16s %13s %9s %6s %10s %10s %7s %10s\n", "matrix", "shape", "MB", "copies",
                "linear GB/s", "sweep GB/s", "ratio", "us/call");
    nlohmann::json j;
    j["preset"] = preset;
    j["tokens"] = tokens;
    j["threads"] = threads;
    j["isa"] = std::string(kernels::cpu_isa_name(kernels::active_cpu_isa()));
    uint64_t sink = 0;
    for (const shape& s : shapes_of(cfg)) {
        const size_t elems = static_cast<size_t>(s.rows * s.cols);
        const double mb = static_cast<double>(elems * sizeof(uint16_t)) / 1e6;
        const int copies = std::max(2, static_cast<int>(gib * 1073.741824 / mb));
        // bf16 values in [1, 2): the arithmetic is real, the numbers do not matter. Held in
        // uint64 words (the sweep's type; 4 bf16 each, the last word zero-padded).
        std::vector<uint16_t> pattern(elems);
        for (size_t e = 0; e < elems; ++e)
            pattern[e] = static_cast<uint16_t>(0x3f80 + (e * 7) % 127);
        std::vector<std::vector<uint64_t>> w(static_cast<size_t>(copies));
        for (auto& m : w) {
            m.resize((elems + 3) / 4);
            std::memcpy(m.data(), pattern.data(), elems * sizeof(uint16_t));
        }
        std::vector<float> x(static_cast<size_t>(tokens * s.cols), 0.01f);
        std::vector<float> y(static_cast<size_t>(tokens * s.rows));
        double best_linear = 0, best_sweep = 0;
        for (int r = 0; r < rounds; ++r) {
            const double t0 = seconds_now();
            for (const auto& m : w) {
                const kernels::matrix_view view{m.data(), kernels::dtype::bf16, s.rows, s.cols};
                kernels::linear(view, x.data(), tokens, y.data());
            }
            best_linear = std::max(best_linear, mb * copies / 1e3 / (seconds_now() - t0));
            best_sweep = std::max(best_sweep, sweep(w, sink));
        }
        const double ratio = best_linear / best_sweep;
        const double us = mb / 1e3 / best_linear * 1e6;
        const std::string dims = std::to_string(s.rows) + "x" + std::to_string(s.cols);
        std::printf("%-16s %13s %9.2f %6d %10.1f %10.1f %7.3f %10.1f\n", s.name.c_str(),
                    dims.c_str(), mb, copies, best_linear, best_sweep, ratio, us);
        std::fflush(stdout);
        j["shapes"].push_back({{"matrix", s.name},
                               {"rows", s.rows},
                               {"cols", s.cols},
                               {"mb", mb},
                               {"copies", copies},
                               {"linear_gbs", best_linear},
                               {"sweep_gbs", best_sweep},
                               {"ratio", ratio},
                               {"us_per_call", us}});
    }
    if (sink == 42) std::printf(" \n");
    std::ofstream(json_out) << j.dump(2) << "\n";
    std::printf("wrote %s\n", json_out.c_str());
    return 0;
}
