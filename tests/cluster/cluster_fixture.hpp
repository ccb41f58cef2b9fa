// Shared pieces of the cluster tests: one tiny-b bf16 checkpoint per test process, its full and
// attention-only weights, expert groups serving on threads over an inproc fabric, a scripted
// workload (prefill of three sequences, then greedy decode steps chosen by the engine) and the
// comparison helpers.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <stop_token>
#include <thread>
#include <vector>

#include "actors/attention/worker_executor.hpp"
#include "actors/cluster/placement.hpp"
#include "actors/collective/collective.hpp"
#include "actors/experts/expert_group.hpp"
#include "actors/transport/inproc_data_plane.hpp"
#include "model/engine.hpp"
#include "model/mkmodel.hpp"
#include "model/sampling.hpp"
#include "model/weights.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/temp_dir.hpp"

namespace longcat::testing {

using namespace std::chrono_literals;

// For runs outside ctest (ctest sets these through the launcher, before UCX and OpenMP load).
inline const bool kClusterEnvironmentReady = [] {
    ::setenv("UCX_NET_DEVICES", "lo", 0);
    ::setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
    ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 0);
    return true;
}();

struct tiny_model {
    temp_dir dir;
    std::filesystem::path path;
    std::shared_ptr<const model::model_weights> full;       // everything: the engine's
    std::shared_ptr<const model::model_weights> attention;  // an attention worker's share
    const model::model_config& config() const { return full->config; }
};

// tiny-b, bf16, seed 7; made once per process.
inline const tiny_model& shared_tiny_model() {
    static const tiny_model* model = [] {
        auto* m = new tiny_model;
        m->path = m->dir.path() / "tiny-b";
        model::make_model({"tiny-b", m->path, 7, model::checkpoint_dtype::bf16});
        m->full = std::make_shared<const model::model_weights>(model::load_model_weights(m->path));
        model::weight_selection sel;
        sel.all_experts = false;
        m->attention =
            std::make_shared<const model::model_weights>(model::load_model_weights(m->path, sel));
        return m;
    }();
    return *model;
}

// A copy of `w` whose gate prefers zero experts by `boost` (added to their correction bias).
inline std::shared_ptr<const model::model_weights> with_zero_expert_boost(
    const model::model_weights& w, float boost) {
    auto copy = std::make_shared<model::model_weights>(w);
    for (model::layer_weights& lw : copy->layers) {
        for (size_t e = static_cast<size_t>(copy->config.n_routed_experts); e < lw.gate_bias.size();
             ++e) {
            lw.gate_bias[e] += boost;
        }
    }
    return copy;
}

inline model::kv_cache_options test_kv() {
    model::kv_cache_options kv;
    kv.page_size = 4;  // several pages per sequence
    kv.num_pages = 128;
    return kv;
}

// max |a − b| / max |b|; +inf on a size mismatch.
inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return INFINITY;
    double diff = 0.0, scale = 1e-30;
    for (size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
        scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
    }
    return diff / scale;
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// -- the scripted workload -------------------------------------------------------------------

// plan[step][seq]: the tokens each sequence appends in that step.
using step_plan = std::vector<std::vector<std::vector<int32_t>>>;

struct reference_run {
    step_plan plan;
    std::vector<model::forward_output> outputs;  // per step
};

// Prompts of `lengths` tokens (seeded), then `num_decode` greedy steps, on a fresh engine.
inline reference_run run_engine(std::shared_ptr<const model::model_weights> weights,
                                const std::vector<int64_t>& lengths, int64_t num_decode,
                                uint64_t seed = 1) {
    model::engine_options opts;
    opts.kv = test_kv();
    model::engine engine(weights, opts);
    const int64_t vocab = weights->config.vocab_size;
    std::vector<model::sequence> seqs(lengths.size());
    std::vector<model::sequence*> ptrs;
    for (auto& s : seqs) ptrs.push_back(&s);
    reference_run run;
    std::vector<std::vector<int32_t>> tokens;
    for (size_t i = 0; i < lengths.size(); ++i) {
        std::vector<int32_t> prompt;
        for (int64_t t = 0; t < lengths[i]; ++t)
            prompt.push_back(static_cast<int32_t>((seed * 7919 + i * 131 + t * 37) % vocab));
        tokens.push_back(prompt);
    }
    for (int64_t step = 0; step <= num_decode; ++step) {
        run.plan.push_back(tokens);
        run.outputs.push_back(engine.step(ptrs, tokens));
        for (size_t i = 0; i < seqs.size(); ++i)
            tokens[i] = {model::argmax(run.outputs.back().logits.data() + i * vocab, vocab)};
    }
    return run;
}

// The same plan on a worker executor, as steps first_step_id, first_step_id + 1, ...
inline std::vector<attention::worker_step_output> run_worker(attention::worker_executor& worker,
                                                             const step_plan& plan,
                                                             uint64_t first_step_id = 1) {
    std::vector<model::sequence> seqs(plan.front().size());
    std::vector<model::sequence*> ptrs;
    for (auto& s : seqs) ptrs.push_back(&s);
    std::vector<attention::worker_step_output> outputs;
    for (size_t step = 0; step < plan.size(); ++step) {
        auto out = worker.step(ptrs, plan[step], first_step_id + step);
        EXPECT_TRUE(out.has_value()) << out.error().message;
        if (!out) break;
        outputs.push_back(std::move(*out));
    }
    for (auto& s : seqs) worker.release(s);
    return outputs;
}

// -- expert groups on threads over an inproc fabric -------------------------------------------

class inproc_groups {
  public:
    // Starts one expert group per group of `map` (each its own plane named after the group and
    // its own weights, loaded from the checkpoint), paired with `worker_names`; fills in the
    // groups' addresses in `map`.
    inproc_groups(std::shared_ptr<transport::inproc_fabric> fabric, const tiny_model& model,
                  cluster::placement_map& map, std::vector<std::string> worker_names,
                  experts::expert_group_config base = {}) {
        for (int32_t group_id = 0; group_id < map.num_groups(); ++group_id) {
            planes_.push_back(std::make_unique<transport::inproc_data_plane>(
                fabric, transport::inproc_data_plane_config{map.group(group_id).name}));
            map.set_address(group_id, planes_.back()->address());
        }
        for (int32_t group_id = 0; group_id < map.num_groups(); ++group_id) {
            experts::expert_group_config config = base;
            config.group_id = group_id;
            config.worker_names = worker_names;
            auto group = experts::expert_group::load(model.path, map, *planes_[group_id], config);
            EXPECT_TRUE(group.has_value()) << group.error().message;
            if (!group) return;
            groups_.push_back(std::move(*group));
        }
        for (auto& group : groups_) {
            threads_.emplace_back([g = group.get()](std::stop_token stop) { g->serve(stop); });
        }
    }
    ~inproc_groups() {
        for (auto& t : threads_) t.request_stop();
        threads_.clear();  // joins
        for (auto& p : planes_) p->close();
    }

    experts::expert_group& group(size_t group_id) { return *groups_[group_id]; }
    transport::inproc_data_plane& plane(size_t group_id) { return *planes_[group_id]; }
    size_t size() const { return groups_.size(); }
    bool ok() const { return groups_.size() == planes_.size(); }

  private:
    std::vector<std::unique_ptr<transport::inproc_data_plane>> planes_;
    std::vector<std::unique_ptr<experts::expert_group>> groups_;
    std::vector<std::jthread> threads_;
};

// A worker executor on its own inproc plane, connected to the groups of `map`.
struct inproc_worker {
    std::unique_ptr<transport::inproc_data_plane> plane;
    std::unique_ptr<attention::worker_executor> executor;
};

inline inproc_worker make_inproc_worker(std::shared_ptr<transport::inproc_fabric> fabric,
                                        std::shared_ptr<const model::model_weights> weights,
                                        const cluster::placement_map& map, const std::string& name,
                                        attention::worker_executor_config config) {
    inproc_worker w;
    w.plane = std::make_unique<transport::inproc_data_plane>(
        fabric, transport::inproc_data_plane_config{name});
    config.kv = test_kv();
    auto executor = attention::worker_executor::create(std::move(weights), map, *w.plane, config);
    EXPECT_TRUE(executor.has_value()) << executor.error().message;
    if (!executor) return w;
    w.executor = std::move(*executor);
    auto connected = w.executor->connect_groups(transport::deadline_after(5s));
    EXPECT_TRUE(connected.has_value()) << connected.error().message;
    return w;
}

// The cluster against the engine, step by step: the same real-slot counts, and logits and final
// norms bit for bit (one group, m = 1, no TP) or within kTolerance relative (otherwise: other
// summation orders).
constexpr double kTolerance = 1e-5;

inline void expect_matches(const reference_run& ref,
                           const std::vector<attention::worker_step_output>& got, bool bitwise) {
    ASSERT_EQ(got.size(), ref.outputs.size());
    for (size_t step = 0; step < got.size(); ++step) {
        const model::forward_output& want = ref.outputs[step];
        const model::forward_output& have = got[step].forward;
        EXPECT_EQ(have.num_real_slots, want.num_real_slots) << "step " << step;
        if (bitwise) {
            EXPECT_TRUE(bitwise_equal(have.logits, want.logits)) << "step " << step;
            EXPECT_TRUE(bitwise_equal(have.final_norm, want.final_norm)) << "step " << step;
        } else {
            EXPECT_LE(relative_error(have.logits, want.logits), kTolerance) << "step " << step;
            EXPECT_LE(relative_error(have.final_norm, want.final_norm), kTolerance)
                << "step " << step;
        }
    }
}

// Greedy decoding of a 6-token prompt through `exec` (8 steps, from step id 1) gives the engine's
// greedy tokens, and one teacher-forced step over the prompt and those tokens (all logits) gives
// each of them as its row's argmax.
inline void expect_greedy_matches_engine(attention::worker_executor& exec,
                                         const tiny_model& model) {
    const int64_t vocab = model.config().vocab_size;
    const std::vector<int32_t> prompt = {17, 400, 9, 1203, 55, 8};
    constexpr int kNumGenerated = 8;
    uint64_t step_id = 1;
    model::sequence greedy_seq;
    std::vector<int32_t> generated;
    std::vector<int32_t> next = prompt;
    for (int k = 0; k < kNumGenerated; ++k) {
        auto out = exec.step({&greedy_seq}, {next}, step_id++);
        ASSERT_TRUE(out.has_value()) << out.error().message;
        generated.push_back(model::argmax(out->forward.logits.data(), vocab));
        next = {generated.back()};
    }
    // The engine decodes the same tokens.
    model::engine_options eopts;
    eopts.kv = test_kv();
    model::engine engine(model.full, eopts);
    model::sampling_params greedy;
    greedy.temperature = 0.0f;
    EXPECT_EQ(engine.generate(prompt, kNumGenerated, greedy), generated);

    // Teacher-forced: prompt + generated[0..n−2] in one step, logits for every row.
    model::sequence forced_seq;
    std::vector<int32_t> forced = prompt;
    forced.insert(forced.end(), generated.begin(), generated.end() - 1);
    model::forward_options all;
    all.all_logits = true;
    auto out = exec.step({&forced_seq}, {forced}, step_id++, all);
    ASSERT_TRUE(out.has_value()) << out.error().message;
    for (int k = 0; k < kNumGenerated; ++k) {
        const int64_t row = static_cast<int64_t>(prompt.size()) - 1 + k;
        EXPECT_EQ(model::argmax(out->forward.logits.data() + row * vocab, vocab), generated[k])
            << "token " << k;
    }
    exec.release(greedy_seq);
    exec.release(forced_seq);
}

// A TP group's weights, rank by rank: each rank's shard of the dense FFNs, no experts.
inline std::vector<std::shared_ptr<const model::model_weights>> tp_shards(const tiny_model& model,
                                                                          int64_t tp_size) {
    std::vector<std::shared_ptr<const model::model_weights>> shards;
    for (int64_t r = 0; r < tp_size; ++r) {
        model::weight_selection sel;
        sel.tp_rank = r;
        sel.tp_size = tp_size;
        sel.all_experts = false;
        shards.push_back(std::make_shared<const model::model_weights>(
            model::load_model_weights(model.path, sel)));
    }
    return shards;
}

// A TP=2 pair of attention workers (ARCHITECTURE.md §3) over `planes` (rank r's plane, not yet
// connected to the other rank): the ranks connect to each other, each runs its shard of the dense
// FFNs through a collective to the other rank, and both use `map`'s groups (already serving).
// Rank 0 owns three sequences, rank 1 two (so m = 4 leaves empty micro-batches on both, which
// still join the collectives); both ranks step at once, and each rank's outputs must equal the
// engine's for its own sequences within kTolerance.
inline void expect_tp_pair_matches_engine(const tiny_model& model,
                                          const cluster::placement_map& map,
                                          transport::data_plane& plane0,
                                          transport::data_plane& plane1, int32_t m) {
    const auto shards = tp_shards(model, 2);
    transport::data_plane* planes[2] = {&plane0, &plane1};
    auto to_rank1 = plane0.connect(plane1.address(), transport::deadline_after(10s));
    ASSERT_TRUE(to_rank1.has_value()) << to_rank1.error().message;
    auto to_rank0 = plane1.connect(plane0.address(), transport::deadline_after(10s));
    ASSERT_TRUE(to_rank0.has_value()) << to_rank0.error().message;
    collective::data_plane_collective c0(plane0, 0, {transport::peer_id{}, *to_rank1}, 42);
    collective::data_plane_collective c1(plane1, 1, {*to_rank0, transport::peer_id{}}, 42);
    collective::collective* collectives[2] = {&c0, &c1};
    std::vector<std::unique_ptr<attention::worker_executor>> executors;
    for (size_t r = 0; r < 2; ++r) {
        attention::worker_executor_config config;
        config.worker_index = static_cast<int32_t>(r);
        config.num_micro_batches = m;
        config.kv = test_kv();
        config.dense_ffn =
            collective::tp_dense_ffn(*collectives[r], model.config().hidden_size, 5000ms);
        auto exec = attention::worker_executor::create(shards[r], map, *planes[r], config);
        ASSERT_TRUE(exec.has_value()) << exec.error().message;
        auto connected = (*exec)->connect_groups(transport::deadline_after(10s));
        ASSERT_TRUE(connected.has_value()) << connected.error().message;
        executors.push_back(std::move(*exec));
    }
    const reference_run ref0 = run_engine(model.full, {5, 1, 7}, 3, /*seed=*/21);
    const reference_run ref1 = run_engine(model.full, {3, 8}, 3, /*seed=*/22);
    auto run1 =
        std::async(std::launch::async, [&] { return run_worker(*executors[1], ref1.plan); });
    const auto got0 = run_worker(*executors[0], ref0.plan);
    const auto got1 = run1.get();
    expect_matches(ref0, got0, /*bitwise=*/false);
    expect_matches(ref1, got1, /*bitwise=*/false);
}

inline cluster::placement_map single_group_map(const model::model_config& c) {
    auto map = cluster::make_uneven_placement(1, static_cast<int32_t>(c.num_layers),
                                              static_cast<int32_t>(c.n_routed_experts), 1);
    EXPECT_TRUE(map.has_value());
    return *map;
}

inline cluster::placement_map three_group_map(const model::model_config& c) {
    auto map = cluster::make_uneven_placement(1, static_cast<int32_t>(c.num_layers),
                                              static_cast<int32_t>(c.n_routed_experts), 3);
    EXPECT_TRUE(map.has_value());
    return *map;
}

}  // namespace longcat::testing
