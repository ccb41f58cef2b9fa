// Attention workers and expert groups in one process over inproc_data_plane (groups serve on
// their own threads), checked against the single-process engine on the same batches:
// bitwise with one group and m = 1, within 1e-5 relative otherwise; uneven splits, replicas,
// two workers sharing a pool, every m with overlap on and off, zero-expert-only batches, greedy
// decoding vs teacher forcing, the stage order, and dropped frames failing by name.
#include <gtest/gtest.h>

#include <future>

#include "actors/transport/faulty_data_plane.hpp"
#include "tests/cluster/cluster_fixture.hpp"

namespace longcat::testing {
namespace {

using attention::stage_event;
using attention::stage_event_kind;
using attention::worker_executor_config;
using transport::inproc_fabric;

// -- equality with the engine, over groups × m × overlap ----------------------------------------

struct layout_case {
    int32_t num_groups;
    int32_t num_micro_batches;
    bool overlap;
};

void PrintTo(const layout_case& c, std::ostream* os) {
    *os << c.num_groups << " groups, m " << c.num_micro_batches
        << (c.overlap ? ", overlap on" : ", overlap off");
}

std::string layout_name(const ::testing::TestParamInfo<layout_case>& info) {
    return std::to_string(info.param.num_groups) + "groups_m" +
           std::to_string(info.param.num_micro_batches) + (info.param.overlap ? "_sbo" : "_serial");
}

class ClusterEqualsEngine : public ::testing::TestWithParam<layout_case> {};

TEST_P(ClusterEqualsEngine, PrefillThenDecode) {
    const layout_case& p = GetParam();
    const tiny_model& model = shared_tiny_model();
    auto map =
        p.num_groups == 1 ? single_group_map(model.config()) : three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, map, {"attention-0"});
    ASSERT_TRUE(groups.ok());
    worker_executor_config config;
    config.num_micro_batches = p.num_micro_batches;
    config.overlap = p.overlap;
    inproc_worker worker = make_inproc_worker(fabric, model.attention, map, "attention-0", config);
    ASSERT_TRUE(worker.executor);

    // Three sequences: m = 4 leaves a micro-batch empty in the prefill and in every decode step.
    const reference_run ref = run_engine(model.full, {5, 3, 7}, 3);
    const auto got = run_worker(*worker.executor, ref.plan);
    // One group and m = 1 run the same kernels on the same rows in the same order as forward().
    expect_matches(ref, got, p.num_groups == 1 && p.num_micro_batches == 1);
    ASSERT_FALSE(got.empty());
    EXPECT_GT(got[0].stats.dispatched_rows, 0);
    EXPECT_EQ(
        got[0].stats.dispatch_frames,
        static_cast<uint64_t>(p.num_groups * p.num_micro_batches * model.config().num_layers));
    EXPECT_EQ(got[0].stats.combine_frames, got[0].stats.dispatch_frames);
    for (size_t g = 0; g < groups.size(); ++g) EXPECT_TRUE(groups.group(g).failures().empty());
}

INSTANTIATE_TEST_SUITE_P(Layouts, ClusterEqualsEngine,
                         ::testing::Values(layout_case{1, 1, true}, layout_case{1, 1, false},
                                           layout_case{1, 2, true}, layout_case{1, 4, true},
                                           layout_case{3, 1, true}, layout_case{3, 1, false},
                                           layout_case{3, 2, true}, layout_case{3, 2, false},
                                           layout_case{3, 3, true}, layout_case{3, 3, false},
                                           layout_case{3, 4, true}, layout_case{3, 4, false}),
                         layout_name);

TEST(Cluster, UnevenSplitReallyIsUneven) {
    const tiny_model& model = shared_tiny_model();
    const auto map = three_group_map(model.config());
    for (int32_t layer_idx = 0; layer_idx < map.num_layers(); ++layer_idx) {
        EXPECT_LT(map.group(0).experts_by_layer[layer_idx].size(),
                  map.group(2).experts_by_layer[layer_idx].size());
    }
    // Each group loads only its own experts.
    auto sel = map.weight_selection_for(0);
    const model::model_weights w = model::load_model_weights(model.path, sel);
    int64_t held = 0;
    for (int32_t e = 0; e < model.config().n_routed_experts; ++e) held += w.holds_expert(0, e);
    EXPECT_EQ(held, static_cast<int64_t>(map.group(0).experts_by_layer[0].size()));
    EXPECT_EQ(w.embed_tokens.data, nullptr);
}

// -- two workers, one pool ---------------------------------------------------------------------

TEST(Cluster, TwoWorkersShareOnePoolWithReplicas) {
    const tiny_model& model = shared_tiny_model();
    const auto& c = model.config();
    // Uneven split plus a replica on group 2 of every expert group 0 holds: worker 0 uses the
    // first replica (group 0), worker 1 the second (group 2).
    auto base = three_group_map(c);
    std::vector<cluster::expert_group_assignment> assignments = base.groups();
    for (int32_t layer_idx = 0; layer_idx < base.num_layers(); ++layer_idx) {
        auto& mine = assignments[2].experts_by_layer[layer_idx];
        for (int32_t e : assignments[0].experts_by_layer[layer_idx]) mine.push_back(e);
    }
    auto map =
        cluster::placement_map::create(2, static_cast<int32_t>(c.num_layers),
                                       static_cast<int32_t>(c.n_routed_experts), assignments);
    ASSERT_TRUE(map.has_value()) << map.error().message;
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, *map, {"attention-0", "attention-1"});
    ASSERT_TRUE(groups.ok());
    worker_executor_config config0, config1;
    config0.worker_index = 0;
    config0.num_micro_batches = 2;
    config1.worker_index = 1;
    config1.num_micro_batches = 2;
    config1.overlap = false;  // the pair need not run the same stage plan, only the same units
    inproc_worker w0 = make_inproc_worker(fabric, model.attention, *map, "attention-0", config0);
    inproc_worker w1 = make_inproc_worker(fabric, model.attention, *map, "attention-1", config1);
    ASSERT_TRUE(w0.executor && w1.executor);

    const reference_run ref0 = run_engine(model.full, {6, 2}, 3, /*seed=*/11);
    const reference_run ref1 = run_engine(model.full, {1, 4, 9}, 3, /*seed=*/12);
    auto run1 = std::async(std::launch::async, [&] { return run_worker(*w1.executor, ref1.plan); });
    const auto got0 = run_worker(*w0.executor, ref0.plan);
    const auto got1 = run1.get();
    expect_matches(ref0, got0, false);
    expect_matches(ref1, got1, false);
    // Group 0 served only worker 0 (its experts' other replica is worker 1's), yet it answered
    // every unit of both; group 2 got rows from both.
    // A group counts a unit once its answers are sent: the worker may hold the last answer first.
    EXPECT_TRUE(eventually(
        [&] {
            return groups.group(0).stats().units_served ==
                   static_cast<uint64_t>(4 * c.num_layers * 2);
        },
        5s))
        << groups.group(0).stats().units_served;
    EXPECT_GT(groups.group(2).stats().rows, 0u);
    for (size_t g = 0; g < groups.size(); ++g) EXPECT_TRUE(groups.group(g).failures().empty());
}

// -- zero experts only -------------------------------------------------------------------------

TEST(Cluster, ZeroExpertOnlyBatchCompletesWithoutWaitingForADeadline) {
    const tiny_model& model = shared_tiny_model();
    const auto full = with_zero_expert_boost(*model.full, 1e4f);
    const auto attn = with_zero_expert_boost(*model.attention, 1e4f);
    auto map = three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    experts::expert_group_config group_config;
    group_config.unit_timeout = 3s;
    inproc_groups groups(fabric, model, map, {"attention-0"}, group_config);
    ASSERT_TRUE(groups.ok());
    worker_executor_config config;
    config.combine_timeout = 3s;
    config.num_micro_batches = 2;
    inproc_worker worker = make_inproc_worker(fabric, attn, map, "attention-0", config);
    ASSERT_TRUE(worker.executor);

    // 9 prompt tokens: the engine's whole batch and the worker's micro-batches all stay below
    // the 10 tokens from which the AVX2 kernel sums in another order (linear_avx2.cpp), so the
    // dense layers agree bitwise as well.
    const reference_run ref = run_engine(full, {3, 2, 4}, 2);
    for (const auto& out : ref.outputs) ASSERT_EQ(out.num_real_slots, 0);
    const auto start = transport::clock::now();
    const auto got = run_worker(*worker.executor, ref.plan);
    const auto elapsed = transport::clock::now() - start;
    // No group waited for a deadline: the three steps together take far less than one.
    EXPECT_LT(elapsed, 1500ms);
    // moe_out is exactly 0 everywhere, so even three groups and m = 2 are bitwise equal.
    expect_matches(ref, got, true);
    for (const auto& out : got) EXPECT_EQ(out.stats.dispatched_rows, 0);
    for (size_t g = 0; g < groups.size(); ++g) {
        EXPECT_EQ(groups.group(g).stats().rows, 0u);
        // Counted once the group's answers are sent: the worker may hold the last answer first.
        EXPECT_TRUE(eventually(
            [&] {
                return groups.group(g).stats().units_served ==
                       static_cast<uint64_t>(3 * model.config().num_layers * 2);
            },
            5s))
            << groups.group(g).stats().units_served;
        EXPECT_TRUE(groups.group(g).failures().empty());
    }
}

// -- greedy vs teacher forcing -----------------------------------------------------------------

TEST(Cluster, GreedyTokensEqualTeacherForced) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, map, {"attention-0"});
    ASSERT_TRUE(groups.ok());
    worker_executor_config config;
    config.num_micro_batches = 2;
    inproc_worker worker = make_inproc_worker(fabric, model.attention, map, "attention-0", config);
    ASSERT_TRUE(worker.executor);
    auto& exec = *worker.executor;

    expect_greedy_matches_engine(exec, model);
}

// -- stage order -------------------------------------------------------------------------------

size_t index_of(const std::vector<stage_event>& log, stage_event_kind kind, int32_t layer,
                int32_t mb) {
    const auto it = std::find(log.begin(), log.end(), stage_event{kind, layer, mb});
    EXPECT_NE(it, log.end()) << to_string(stage_event{kind, layer, mb}) << " missing";
    return static_cast<size_t>(it - log.begin());
}

TEST(Cluster, StageOrderWithSboAndTwoMicroBatches) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, map, {"attention-0"});
    ASSERT_TRUE(groups.ok());
    worker_executor_config config;
    config.num_micro_batches = 2;
    config.record_stage_log = true;
    inproc_worker worker = make_inproc_worker(fabric, model.attention, map, "attention-0", config);
    ASSERT_TRUE(worker.executor);
    const reference_run ref = run_engine(model.full, {4, 4}, 0);
    // The wait task (the member actor's deferred reply) runs once, at the first combine wait.
    int task_runs = 0;
    size_t log_size_at_task = 0;
    worker.executor->set_wait_task([&] {
        ++task_runs;
        log_size_at_task = worker.executor->stage_log().size();
    });
    ASSERT_EQ(run_worker(*worker.executor, ref.plan).size(), 1u);
    const std::vector<stage_event>& log = worker.executor->stage_log();
    const auto L = static_cast<int32_t>(model.config().num_layers);
    ASSERT_EQ(log.size(), static_cast<size_t>(L * 2 * 7));
    EXPECT_EQ(task_runs, 1);
    EXPECT_EQ(log_size_at_task, index_of(log, stage_event_kind::combine_wait_start, 0, 0) + 1);
    for (int32_t layer = 0; layer < L; ++layer) {
        for (int32_t mb = 0; mb < 2; ++mb) {
            // SBO: dispatch leaves before mid starts; the combine wait starts after back.
            EXPECT_LT(index_of(log, stage_event_kind::dispatch_sent, layer, mb),
                      index_of(log, stage_event_kind::mid_start, layer, mb));
            EXPECT_GT(index_of(log, stage_event_kind::combine_wait_start, layer, mb),
                      index_of(log, stage_event_kind::back_end, layer, mb));
            EXPECT_LT(index_of(log, stage_event_kind::combine_received, layer, mb),
                      index_of(log, stage_event_kind::join_end, layer, mb));
            if (layer + 1 < L) {
                EXPECT_LT(index_of(log, stage_event_kind::join_end, layer, mb),
                          index_of(log, stage_event_kind::front_start, layer + 1, mb));
            }
        }
        // Micro-batches alternate: both dispatch before either mid, both backs before either
        // combine wait, and mb0 leads at every stage.
        EXPECT_LT(index_of(log, stage_event_kind::dispatch_sent, layer, 1),
                  index_of(log, stage_event_kind::mid_start, layer, 0));
        EXPECT_LT(index_of(log, stage_event_kind::back_end, layer, 1),
                  index_of(log, stage_event_kind::combine_wait_start, layer, 0));
        for (auto kind : {stage_event_kind::front_start, stage_event_kind::dispatch_sent,
                          stage_event_kind::mid_start, stage_event_kind::back_end,
                          stage_event_kind::combine_wait_start, stage_event_kind::join_end}) {
            EXPECT_LT(index_of(log, kind, layer, 0), index_of(log, kind, layer, 1));
        }
    }
    // The exact plan of one layer.
    const std::vector<stage_event> layer0(log.begin(), log.begin() + 14);
    const std::vector<stage_event> want = {
        {stage_event_kind::front_start, 0, 0},        {stage_event_kind::dispatch_sent, 0, 0},
        {stage_event_kind::front_start, 0, 1},        {stage_event_kind::dispatch_sent, 0, 1},
        {stage_event_kind::mid_start, 0, 0},          {stage_event_kind::back_end, 0, 0},
        {stage_event_kind::mid_start, 0, 1},          {stage_event_kind::back_end, 0, 1},
        {stage_event_kind::combine_wait_start, 0, 0}, {stage_event_kind::combine_received, 0, 0},
        {stage_event_kind::join_end, 0, 0},           {stage_event_kind::combine_wait_start, 0, 1},
        {stage_event_kind::combine_received, 0, 1},   {stage_event_kind::join_end, 0, 1}};
    EXPECT_EQ(layer0, want);
}

TEST(Cluster, StageOrderWithOverlapOff) {
    const tiny_model& model = shared_tiny_model();
    auto map = single_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, map, {"attention-0"});
    ASSERT_TRUE(groups.ok());
    worker_executor_config config;
    config.overlap = false;
    config.record_stage_log = true;
    inproc_worker worker = make_inproc_worker(fabric, model.attention, map, "attention-0", config);
    ASSERT_TRUE(worker.executor);
    const reference_run ref = run_engine(model.full, {3}, 0);
    ASSERT_EQ(run_worker(*worker.executor, ref.plan).size(), 1u);
    const auto& log = worker.executor->stage_log();
    for (int32_t layer = 0; layer < model.config().num_layers; ++layer) {
        EXPECT_LT(index_of(log, stage_event_kind::combine_received, layer, 0),
                  index_of(log, stage_event_kind::mid_start, layer, 0));
    }
}

// -- faults ------------------------------------------------------------------------------------

TEST(Cluster, DroppedDispatchFailsTheStepByGroupAndLayerThenRecovers) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, map, {"attention-0"});
    ASSERT_TRUE(groups.ok());
    auto inner = std::make_shared<transport::inproc_data_plane>(
        fabric, transport::inproc_data_plane_config{"attention-0"});
    transport::faulty_data_plane plane(inner, {});
    worker_executor_config config;
    config.combine_timeout = 300ms;
    config.kv = test_kv();
    auto exec = attention::worker_executor::create(model.attention, map, plane, config);
    ASSERT_TRUE(exec.has_value()) << exec.error().message;
    ASSERT_TRUE((*exec)->connect_groups(transport::deadline_after(2s)).has_value());

    const reference_run ref = run_engine(model.full, {5, 2}, 2);
    std::vector<model::sequence> seqs(2);
    std::vector<model::sequence*> ptrs = {&seqs[0], &seqs[1]};
    auto first = (*exec)->step(ptrs, ref.plan[0], 1);
    ASSERT_TRUE(first.has_value()) << first.error().message;

    // Step 2: the dispatch frame to experts-1 of layer 1 is lost.
    transport::fault_config faults;
    faults.drop_if = [](transport::peer_id, const proto::frame_header& h) {
        return h.kind == proto::frame_kind::dispatch && h.step_id == 2 && h.layer == 1;
    };
    transport::fault_config only_group1 = faults;
    const auto group1 = transport::peer_id{2};  // connect order: experts-0, experts-1, experts-2
    ASSERT_EQ(plane.peer(group1)->name, "experts-1");
    only_group1.drop_if = [group1, drop = faults.drop_if](transport::peer_id p,
                                                          const proto::frame_header& h) {
        return p == group1 && drop(p, h);
    };
    plane.set_faults(only_group1);
    const size_t pages_before = seqs[0].page_table.size();
    const auto start = transport::clock::now();
    auto failed = (*exec)->step(ptrs, ref.plan[1], 2);
    const auto waited = transport::clock::now() - start;
    ASSERT_FALSE(failed.has_value());
    EXPECT_EQ(failed.error().code, cluster::cluster_error::combine_timeout);
    EXPECT_NE(failed.error().message.find("experts-1"), std::string::npos)
        << failed.error().message;
    EXPECT_NE(failed.error().message.find("layer 1"), std::string::npos) << failed.error().message;
    EXPECT_GE(waited, 300ms);
    EXPECT_LT(waited, 300ms + 2s);
    EXPECT_EQ(plane.fault_counts().dropped, 1u);
    EXPECT_EQ(seqs[0].page_table.size(), pages_before);  // the step's pages were given back
    EXPECT_EQ(seqs[0].num_cached(), 5);

    // The groups stay up: the same tokens as step 3 give the engine's step-2 result.
    plane.set_faults({});
    auto retried = (*exec)->step(ptrs, ref.plan[1], 3);
    ASSERT_TRUE(retried.has_value()) << retried.error().message;
    EXPECT_LE(relative_error(retried->forward.logits, ref.outputs[1].logits), kTolerance);
    auto last = (*exec)->step(ptrs, ref.plan[2], 4);
    ASSERT_TRUE(last.has_value()) << last.error().message;
    EXPECT_LE(relative_error(last->forward.logits, ref.outputs[2].logits), kTolerance);
    for (auto& s : seqs) (*exec)->release(s);
}

TEST(Cluster, WorkerThatNeverSendsFailsTheGroupUnitByName) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    experts::expert_group_config group_config;
    group_config.unit_timeout = 300ms;
    inproc_groups groups(fabric, model, map, {"attention-0", "attention-1"}, group_config);
    ASSERT_TRUE(groups.ok());
    worker_executor_config config;
    config.combine_timeout = 800ms;
    inproc_worker w0 = make_inproc_worker(fabric, model.attention, map, "attention-0", config);
    ASSERT_TRUE(w0.executor);
    // attention-1's dispatch frames to experts-0 in step 1 are lost.
    auto inner = std::make_shared<transport::inproc_data_plane>(
        fabric, transport::inproc_data_plane_config{"attention-1"});
    transport::fault_config faults;
    faults.drop_if = [](transport::peer_id p, const proto::frame_header& h) {
        return p == transport::peer_id{1} && h.step_id == 1;
    };
    transport::faulty_data_plane plane1(inner, faults);
    config.kv = test_kv();
    auto w1 = attention::worker_executor::create(model.attention, map, plane1, config);
    ASSERT_TRUE(w1.has_value());
    ASSERT_TRUE((*w1)->connect_groups(transport::deadline_after(2s)).has_value());
    ASSERT_EQ(plane1.peer(transport::peer_id{1})->name, "experts-0");

    const reference_run ref0 = run_engine(model.full, {4}, 1, 21);
    const reference_run ref1 = run_engine(model.full, {2, 3}, 1, 22);
    std::vector<model::sequence> s0(1), s1(2);
    std::vector<model::sequence*> p0 = {&s0[0]}, p1 = {&s1[0], &s1[1]};
    const auto start = transport::clock::now();
    auto r1 = std::async(std::launch::async, [&] { return (*w1)->step(p1, ref1.plan[0], 1); });
    auto r0 = w0.executor->step(p0, ref0.plan[0], 1);
    auto r1_done = r1.get();
    const auto waited = transport::clock::now() - start;
    EXPECT_LT(waited, 800ms + 2s);
    // Both workers fail by the group and layer that never answered.
    for (const auto* r : {&r0, &r1_done}) {
        ASSERT_FALSE(r->has_value());
        EXPECT_EQ(r->error().code, cluster::cluster_error::combine_timeout) << r->error().message;
        EXPECT_NE(r->error().message.find("experts-0"), std::string::npos) << r->error().message;
        EXPECT_NE(r->error().message.find("layer 0"), std::string::npos) << r->error().message;
    }
    // The group failed the unit naming the silent worker, by its unit deadline.
    const auto failures = groups.group(0).failures();
    ASSERT_FALSE(failures.empty());
    EXPECT_EQ(failures[0].code, cluster::cluster_error::dispatch_timeout);
    EXPECT_NE(failures[0].message.find("attention-1"), std::string::npos) << failures[0].message;
    EXPECT_EQ(failures[0].message.find("attention-0"), std::string::npos) << failures[0].message;
    EXPECT_TRUE(groups.group(1).failures().empty());

    // The pool keeps serving: step 2 (the same tokens) succeeds on both workers.
    auto again1 = std::async(std::launch::async, [&] { return (*w1)->step(p1, ref1.plan[0], 2); });
    auto again0 = w0.executor->step(p0, ref0.plan[0], 2);
    auto again1_done = again1.get();
    ASSERT_TRUE(again0.has_value()) << again0.error().message;
    ASSERT_TRUE(again1_done.has_value()) << again1_done.error().message;
    EXPECT_LE(relative_error(again0->forward.logits, ref0.outputs[0].logits), kTolerance);
    EXPECT_LE(relative_error(again1_done->forward.logits, ref1.outputs[0].logits), kTolerance);
    for (auto& s : s0) w0.executor->release(s);
    for (auto& s : s1) (*w1)->release(s);
}

TEST(Cluster, EmptyBatchStillSendsHeaderOnlyFrames) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, map, {"attention-0"});
    ASSERT_TRUE(groups.ok());
    inproc_worker worker = make_inproc_worker(fabric, model.attention, map, "attention-0", {});
    ASSERT_TRUE(worker.executor);
    auto out = worker.executor->forward(model::forward_batch{}, 1);
    ASSERT_TRUE(out.has_value()) << out.error().message;
    EXPECT_TRUE(out->forward.logits.empty());
    EXPECT_EQ(out->stats.dispatch_frames, 3u * model.config().num_layers);
    EXPECT_EQ(out->stats.combine_frames, out->stats.dispatch_frames);
}

// A plan naming a request twice reaches the executor as the same sequence twice: refused by
// name before any page is reserved (it wrote the same KV positions from two slices and appended
// the tokens twice).
TEST(Cluster, SameSequenceTwiceInAStepIsABadBatch) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, map, {"attention-0"});
    ASSERT_TRUE(groups.ok());
    inproc_worker worker = make_inproc_worker(fabric, model.attention, map, "attention-0", {});
    ASSERT_TRUE(worker.executor);
    const int64_t free_before = worker.executor->cache().num_free_pages();
    model::sequence s;
    auto out = worker.executor->step({&s, &s}, {{5, 6, 7}, {8}}, 1);
    ASSERT_FALSE(out.has_value());
    EXPECT_EQ(out.error().code, cluster::cluster_error::bad_batch);
    EXPECT_NE(out.error().message.find(
                  "attention-0: sequences 0 and 1 of the step are the same sequence"),
              std::string::npos)
        << out.error().message;
    EXPECT_TRUE(s.page_table.empty());
    EXPECT_EQ(worker.executor->cache().num_free_pages(), free_before);
}

}  // namespace
}  // namespace longcat::testing
