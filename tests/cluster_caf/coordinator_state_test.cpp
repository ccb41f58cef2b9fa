// coordinator_state: the coordinator's named steps one by one, deterministically, before the
// processes run them concurrently (cluster_caf_test.cpp).
#include "actors/coordinator/coordinator_state.hpp"

#include <gtest/gtest.h>

namespace longcat::coordinator {
namespace {

constexpr int32_t kLayers = 2;
constexpr int32_t kExperts = 8;
constexpr int64_t kEos = 2;

proto::register_member worker(const std::string& name) {
    proto::register_member m;
    m.greeting = proto::make_hello(proto::node_role::attention_decode, name, "ucx://127.0.0.1:1");
    m.tp_group = "tp-0";
    return m;
}

proto::register_member group(const std::string& name) {
    proto::register_member m;
    m.greeting = proto::make_hello(proto::node_role::expert_group, name, "ucx://127.0.0.1:2");
    return m;
}

struct fixture {
    coordinator_config config;
    std::unique_ptr<coordinator_state> state;
    uint64_t worker_id = 0, group_a = 0, group_b = 0;

    fixture() {
        config.model = "unused";
        config.expert_placement = "experts-a=0-2;experts-b=3-7";
        state = std::make_unique<coordinator_state>(config, kLayers, kExperts, kEos);
        worker_id = state->register_member(worker("attention-0")).member_id;
        group_a = state->register_member(group("experts-a")).member_id;
        group_b = state->register_member(group("experts-b")).member_id;
        for (uint64_t id : {worker_id, group_a, group_b}) state->member_ready(id);
        auto map = state->apply_placement();
        EXPECT_TRUE(map.has_value());
        for (uint64_t id : {worker_id, group_a, group_b}) state->placement_acked({map->version, "", ""}, id);
    }

    proto::step_result result(const step_batch& batch, int32_t token) {
        proto::step_result r;
        r.step_id = batch.step_id;
        for (const auto& seq : batch.plans.at(worker_id).sequences) r.tokens.push_back({seq.request_id, token});
        return r;
    }
};

TEST(PlacementSpec, ParsesAndFormatsExpertLists) {
    EXPECT_EQ(parse_expert_list("0-3,7,5"), (std::vector<int32_t>{0, 1, 2, 3, 5, 7}));
    EXPECT_EQ(format_expert_list({0, 1, 2, 3, 5, 7}), "0-3,5,7");
    const auto spec = parse_placement_spec("a=0-1;b=2-5");
    EXPECT_EQ(spec.at("b"), (std::vector<int32_t>{2, 3, 4, 5}));
    EXPECT_THROW(parse_placement_spec("nonsense"), std::invalid_argument);
}

TEST(CoordinatorState, ServesOnlyOnceEveryMemberIsReadyAndPaired) {
    coordinator_config config;
    config.model = "unused";
    coordinator_state state(config, kLayers, kExperts, kEos);
    EXPECT_NE(state.not_serving_reason().find("waiting for attention workers"), std::string::npos);
    const auto w = state.register_member(worker("attention-0"));
    const auto g = state.register_member(group("experts-0"));
    ASSERT_TRUE(w.accepted && g.accepted);
    ASSERT_EQ(g.experts_by_layer.size(), static_cast<size_t>(kLayers));
    EXPECT_EQ(g.experts_by_layer[0].size(), static_cast<size_t>(kExperts));  // even split of 1
    EXPECT_FALSE(state.apply_placement().has_value());  // not ready yet
    state.member_ready(w.member_id);
    state.member_ready(g.member_id);
    auto map = state.apply_placement();
    ASSERT_TRUE(map.has_value());
    EXPECT_EQ(map->version, 1u);
    EXPECT_NE(state.not_serving_reason().find("to pair with placement v1"), std::string::npos);
    state.placement_acked({1, "attention-0", ""}, w.member_id);
    state.placement_acked({1, "experts-0", ""}, g.member_id);
    EXPECT_TRUE(state.serving()) << state.not_serving_reason();
}

TEST(CoordinatorState, RefusesAnotherProtocolVersionNamingBothSides) {
    fixture f;
    auto m = group("experts-x");
    m.greeting.protocol_version = proto::kProtocolVersion + 1;
    const auto reply = f.state->register_member(m);
    EXPECT_FALSE(reply.accepted);
    EXPECT_NE(reply.error.find("coordinator (coordinator) speaks protocol"), std::string::npos) << reply.error;
    EXPECT_NE(reply.error.find("experts-x (expert_group) speaks protocol " +
                               std::to_string(proto::kProtocolVersion + 1)),
              std::string::npos)
        << reply.error;
    EXPECT_TRUE(f.state->serving());
}

TEST(CoordinatorState, StepLoopPrefillsThenDecodesAndPlansTheNextStepAhead) {
    fixture f;
    proto::generate_request request;
    request.prompt = {5, 6, 7};
    request.max_tokens = 3;
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    f.state->admit_queued();
    step_batch step1 = f.state->plan_step();
    ASSERT_EQ(step1.plans.at(f.worker_id).sequences.size(), 1u);
    EXPECT_EQ(step1.plans.at(f.worker_id).sequences[0].new_tokens, request.prompt);
    // Step 2 is planned while step 1 runs; its decode token is filled after step 1's results.
    step_batch step2 = f.state->plan_step();
    EXPECT_TRUE(f.state->emit_tokens(step1.step_id, {f.result(step1, 40)}).empty());
    ASSERT_TRUE(f.state->finalize_plan(step2));
    EXPECT_EQ(step2.plans.at(f.worker_id).sequences[0].new_tokens, std::vector<int32_t>{40});
    EXPECT_EQ(step2.plans.at(f.worker_id).sequences[0].token_index, 1u);
    step_batch step3 = f.state->plan_step();
    EXPECT_TRUE(f.state->emit_tokens(step2.step_id, {f.result(step2, 41)}).empty());
    ASSERT_TRUE(f.state->finalize_plan(step3));
    const auto done = f.state->emit_tokens(step3.step_id, {f.result(step3, 42)});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].reply.tokens, (std::vector<int32_t>{40, 41, 42}));
    EXPECT_EQ(done[0].reply.finish_reason, "length");
    // The next step frees its pages on the worker.
    step_batch step4 = f.state->plan_step();
    EXPECT_EQ(step4.plans.at(f.worker_id).released, std::vector<uint64_t>{1});
}

TEST(CoordinatorState, DeadGroupFailsRequestsByNameAndRefusesUntilItReRegisters) {
    fixture f;
    proto::generate_request request;
    request.prompt = {5};
    request.max_tokens = 10;
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    f.state->admit_queued();
    f.state->plan_step();
    const auto failed = f.state->member_down(f.group_a);
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].reply.finish_reason, "error");
    EXPECT_NE(failed[0].reply.error.find("experts-a (experts 0-2 of every layer) is down"), std::string::npos)
        << failed[0].reply.error;
    const auto refused = f.state->admit(2, request);
    ASSERT_TRUE(refused.has_value());
    EXPECT_NE(refused->find("experts-a (experts 0-2 of every layer) is down"), std::string::npos) << *refused;
    // The restarted group gets the same experts back; the next map includes it.
    const auto again = f.state->register_member(group("experts-a"));
    ASSERT_TRUE(again.accepted);
    EXPECT_EQ(again.experts_by_layer[0], (std::vector<int32_t>{0, 1, 2}));
    f.state->member_ready(again.member_id);
    auto map = f.state->apply_placement();
    ASSERT_TRUE(map.has_value());
    EXPECT_EQ(map->version, 2u);
    for (uint64_t id : f.state->member_ids()) f.state->placement_acked({2, "", ""}, id);
    EXPECT_TRUE(f.state->serving()) << f.state->not_serving_reason();
    EXPECT_FALSE(f.state->admit(3, request).has_value());
}

TEST(CoordinatorState, WorkerErrorMentioningAGroupNamesItsExperts) {
    fixture f;
    proto::generate_request request;
    request.prompt = {5};
    request.max_tokens = 10;
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    f.state->admit_queued();
    step_batch step = f.state->plan_step();
    proto::step_result r;
    r.step_id = step.step_id;
    r.error = "attention-0: step 1 failed: group_failed: experts-b (ucx://127.0.0.1:2) went away";
    const auto done = f.state->emit_tokens(step.step_id, {r});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_NE(done[0].reply.error.find("experts-b (experts 3-7 of every layer)"), std::string::npos)
        << done[0].reply.error;
}

}  // namespace
}  // namespace longcat::coordinator
