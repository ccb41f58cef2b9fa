// coordinator_state: the coordinator's named steps one by one, deterministically, before the
// processes run them concurrently (cluster_caf_test.cpp).
#include "actors/coordinator/coordinator_state.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <set>
#include <thread>
#include <utility>
#include <vector>

namespace longcat::coordinator {
namespace {

using namespace std::chrono_literals;

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

proto::generate_request request_of(std::vector<int32_t> prompt, int64_t max_tokens) {
    proto::generate_request r;
    r.prompt = std::move(prompt);
    r.max_tokens = max_tokens;
    return r;
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

// One more step in flight exactly while the averaged step is shorter than the setting; a depth
// of 1 stays unpipelined; 0 or an unknown step time changes nothing.
TEST(StepsInFlight, OneMoreOnlyForShortStepsOfAPipelinedLoop) {
    EXPECT_EQ(steps_in_flight(3, 2000, 0.00085), 4);
    EXPECT_EQ(steps_in_flight(3, 2000, 0.001999), 4);
    EXPECT_EQ(steps_in_flight(3, 2000, 0.002), 3);
    EXPECT_EQ(steps_in_flight(3, 2000, 0.0113), 3);
    EXPECT_EQ(steps_in_flight(3, 2000, 0.0), 3);   // no step timed yet
    EXPECT_EQ(steps_in_flight(3, 0, 0.00085), 3);  // off
    EXPECT_EQ(steps_in_flight(2, 2000, 0.0005), 3);
    EXPECT_EQ(steps_in_flight(4, 2000, 0.0005), 5);
    EXPECT_EQ(steps_in_flight(1, 2000, 0.0005), 1);
}

// Bad lists are refused with the reason, and ids are bounded before a range is expanded (a range
// to 2e9 allocated gigabytes, and one to INT_MAX overflowed the loop counter).
TEST(PlacementSpec, RefusesBadListsBeforeExpandingThem) {
    const std::pair<std::string, std::string> cases[] = {
        {"0-2000000000", "expert id 2000000000 outside 0..65535"},
        {"0-2147483647", "outside 0..65535"},
        {"0-99999999999999999999", "is not an expert id"},
        {"3abc", "\"3abc\" is not an expert id"},
        {"-3", "\"\" is not an expert id"},
        {"7-5", "range 7-5 runs backwards"},
        {"1,,x", "\"x\" is not an expert id"},
    };
    for (const auto& [text, why] : cases) {
        try {
            parse_expert_list(text);
            ADD_FAILURE() << text << " accepted";
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find(why), std::string::npos)
                << text << ": " << e.what();
            EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
        }
    }
    EXPECT_EQ(parse_expert_list("65535").size(), 1u);
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
    proto::generate_request request = request_of({5, 6, 7}, 3);
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    step_batch step1 = f.state->plan_step();
    ASSERT_EQ(step1.plans.at(f.worker_id).sequences.size(), 1u);
    EXPECT_EQ(step1.plans.at(f.worker_id).sequences[0].new_tokens, request.prompt);
    // Step 2 is planned and sent while step 1 runs: the worker decodes the token it samples in
    // step 1 (the coordinator does not know it yet).
    step_batch step2 = f.state->plan_step();
    ASSERT_EQ(step2.plans.at(f.worker_id).sequences.size(), 1u);
    EXPECT_TRUE(step2.plans.at(f.worker_id).sequences[0].decode_last_sampled);
    EXPECT_TRUE(step2.plans.at(f.worker_id).sequences[0].new_tokens.empty());
    EXPECT_EQ(step2.plans.at(f.worker_id).sequences[0].token_index, 1u);
    // What the worker holds before each step: nothing, then the prompt, then one more.
    EXPECT_EQ(step1.plans.at(f.worker_id).sequences[0].cached_tokens, 0);
    EXPECT_EQ(step2.plans.at(f.worker_id).sequences[0].cached_tokens, 3);
    EXPECT_EQ(f.state->steps_in_flight(), 2u);
    EXPECT_TRUE(f.state->emit_tokens(step1.step_id, {f.result(step1, 40)}).empty());
    step_batch step3 = f.state->plan_step();
    EXPECT_EQ(step3.plans.at(f.worker_id).sequences[0].token_index, 2u);
    EXPECT_EQ(step3.plans.at(f.worker_id).sequences[0].cached_tokens, 4);
    // max_tokens 3 is reached in step 3: no step 4 for it.
    EXPECT_TRUE(f.state->emit_tokens(step2.step_id, {f.result(step2, 41)}).empty());
    step_batch step4 = f.state->plan_step();
    EXPECT_TRUE(step4.empty());
    f.state->discard_plan(step4);
    const auto done = f.state->emit_tokens(step3.step_id, {f.result(step3, 42)});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].reply.tokens, (std::vector<int32_t>{40, 41, 42}));
    EXPECT_EQ(done[0].reply.finish_reason, "length");
    // The next step frees its pages on the worker.
    step_batch step5 = f.state->plan_step();
    EXPECT_EQ(step5.plans.at(f.worker_id).released, std::vector<uint64_t>{1});
}

// A worker that does not hold a request as the plan says (step_sequence::cached_tokens) fails
// it by name in its result. The coordinator recomputes it once from a prefill; the same failure
// reported again by the step planned before that (pipelined) does not count a second time; a
// second real failure ends it naming the worker's reason.
TEST(CoordinatorState, RequestAWorkerDoesNotHoldIsRecomputedOnceThenFailsByName) {
    fixture f;
    ASSERT_FALSE(f.state->admit(1, request_of({5, 6, 7}, 10)).has_value());
    const step_batch s1 = f.state->plan_step();
    const step_batch s2 = f.state->plan_step();  // pipelined: decodes what s1 samples
    ASSERT_EQ(s2.plans.at(f.worker_id).sequences.size(), 1u);
    EXPECT_EQ(s2.plans.at(f.worker_id).sequences[0].cached_tokens, 3);
    auto lost = [&](const step_batch& b) {
        proto::step_result r;
        r.step_id = b.step_id;
        r.failed_requests = {1};
        r.failed_reasons = {
            "attention-0: request 1: this worker holds 0 cached tokens of it, the plan expects 3"};
        return r;
    };
    EXPECT_TRUE(f.state->emit_tokens(s1.step_id, {lost(s1)}).empty());
    EXPECT_TRUE(f.state->emit_tokens(s2.step_id, {lost(s2)}).empty());  // the same failure
    // Recomputed from the prompt: the worker frees what it held, the prefill starts at 0.
    const step_batch s3 = f.state->plan_step();
    ASSERT_EQ(s3.plans.at(f.worker_id).sequences.size(), 1u);
    EXPECT_EQ(s3.plans.at(f.worker_id).released, std::vector<uint64_t>{1});
    EXPECT_EQ(s3.plans.at(f.worker_id).sequences[0].new_tokens, (std::vector<int32_t>{5, 6, 7}));
    EXPECT_EQ(s3.plans.at(f.worker_id).sequences[0].cached_tokens, 0);
    const auto done = f.state->emit_tokens(s3.step_id, {lost(s3)});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].reply.finish_reason, "error");
    EXPECT_NE(done[0].reply.error.find(
                  "request 1: its worker failed twice: attention-0: request 1: this worker "
                  "holds 0 cached tokens"),
              std::string::npos)
        << done[0].reply.error;
}

// A member that cannot apply a map (its ack carries an error, or the update times out): the
// running requests end naming it and the reason, queued ones wait, and the map is sent again
// after a back-off that doubles while the failures go on. Before, the error ack was dropped: the
// cluster stayed "waiting for attention-0 to pair" for good and every request hung.
TEST(CoordinatorState, FailedPlacementEndsRunningRequestsByNameAndIsRetriedAfterABackOff) {
    fixture f;
    ASSERT_FALSE(f.state->admit(1, request_of({5, 6, 7}, 50)).has_value());
    const step_batch s1 = f.state->plan_step();
    EXPECT_TRUE(f.state->emit_tokens(s1.step_id, {f.result(s1, 40)}).empty());
    const uint64_t spare = f.state->register_member(group("experts-c")).member_id;
    f.state->member_ready(spare);
    const auto v2 = f.state->apply_placement();
    ASSERT_TRUE(v2.has_value());
    ASSERT_FALSE(f.state->admit(2, request_of({8, 9}, 5)).has_value());  // queued meanwhile
    auto start = clock::now();
    const auto failed = f.state->placement_failed(f.worker_id, "cannot reach experts-c");
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].id, 1u);
    EXPECT_EQ(failed[0].reply.finish_reason, "error");
    EXPECT_NE(failed[0].reply.error.find(
                  "attention-0 could not apply placement v2: cannot reach experts-c"),
              std::string::npos)
        << failed[0].reply.error;
    for (uint64_t id : {f.group_a, f.group_b, spare})
        f.state->placement_acked({v2->version, "", ""}, id);
    EXPECT_TRUE(f.state->placement_pending());
    EXPECT_EQ(f.state->not_serving_reason(), "placement update pending");
    EXPECT_GE(f.state->placement_retry_at() - start, 500ms);
    EXPECT_LT(f.state->placement_retry_at() - start, 1500ms);
    EXPECT_EQ(f.state->queued_requests(), 1u);
    // Failing again doubles the back-off.
    const auto v3 = f.state->apply_placement();
    ASSERT_TRUE(v3.has_value());
    start = clock::now();
    EXPECT_TRUE(f.state->placement_failed(f.worker_id, "request timed out").empty());  // none runs
    EXPECT_GE(f.state->placement_retry_at() - start, 1000ms);
    // The next map is acked by everyone: serving again, and the queued request runs.
    const auto v4 = f.state->apply_placement();
    ASSERT_TRUE(v4.has_value());
    for (uint64_t id : {f.worker_id, f.group_a, f.group_b, spare})
        f.state->placement_acked({v4->version, "", ""}, id);
    EXPECT_TRUE(f.state->serving()) << f.state->not_serving_reason();
    const step_batch s2 = f.state->plan_step();
    ASSERT_EQ(s2.plans.at(f.worker_id).sequences.size(), 1u);
    EXPECT_EQ(s2.plans.at(f.worker_id).sequences[0].request_id, 2u);
}

// Deadlines end waiting requests also while the cluster is not serving (no step is planned
// then; the actor calls expire_deadlines on a timer).
TEST(CoordinatorState, DeadlinesEndRequestsWhileNotServing) {
    fixture f;
    const uint64_t spare = f.state->register_member(group("experts-c")).member_id;  // a map pends
    (void)spare;
    ASSERT_FALSE(f.state->serving());
    proto::generate_request request = request_of({5, 6}, 4);
    request.deadline_ms = 1;
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    std::this_thread::sleep_for(5ms);
    const auto ended = f.state->expire_deadlines();
    ASSERT_EQ(ended.size(), 1u);
    EXPECT_EQ(ended[0].reply.error_kind, proto::request_error::deadline);
    EXPECT_NE(ended[0].reply.error.find("request 1 missed its deadline while queued"),
              std::string::npos);
    EXPECT_EQ(f.state->queued_requests(), 0u);
}

TEST(CoordinatorState, RequestEndingByEosInAPipelinedStepDropsTheExtraToken) {
    fixture f;
    proto::generate_request request = request_of({5}, 10);
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    step_batch step1 = f.state->plan_step();
    step_batch step2 = f.state->plan_step();  // sent before step 1's EOS is known
    const auto done = f.state->emit_tokens(step1.step_id, {f.result(step1, static_cast<int32_t>(kEos))});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].reply.finish_reason, "stop");
    EXPECT_EQ(done[0].reply.tokens, std::vector<int32_t>{static_cast<int32_t>(kEos)});
    EXPECT_TRUE(f.state->emit_tokens(step2.step_id, {f.result(step2, 77)}).empty());  // dropped
    step_batch step3 = f.state->plan_step();
    EXPECT_EQ(step3.plans.at(f.worker_id).released, std::vector<uint64_t>{1});
    EXPECT_TRUE(f.state->drained());
}

TEST(CoordinatorState, DeadGroupFailsRequestsByNameAndRefusesUntilItReRegisters) {
    fixture f;
    proto::generate_request request = request_of({5}, 10);
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
    EXPECT_NE(refused->message.find("experts-a (experts 0-2 of every layer) is down"), std::string::npos)
        << refused->message;
    EXPECT_EQ(refused->kind, proto::request_error::not_serving);
    EXPECT_EQ(failed[0].reply.error_kind, proto::request_error::failed);
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
    proto::generate_request request = request_of({5}, 10);
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

// -- continuous batching, chunked prefill, KV reservations, preemption, cancel -----------------
namespace longcat::coordinator {
namespace {

// A worker simulated exactly as far as the coordinator can see it: a paged KV pool that
// allocates ceil(tokens / page_size) pages per sequence (as model::kv_cache does), frees the
// released sequences before the step, and fails the step when a sequence would not fit. Its
// sampled token is a pure function of (prompt, token index), like a seeded sampler, so any
// schedule must give every request the same tokens as running it alone.
struct simulated_worker {
    int64_t pages = 0, page_size = 0;
    std::map<uint64_t, int64_t> tokens;  // request → tokens in cache
    int64_t peak_pages = 0;

    int64_t used() const {
        int64_t n = 0;
        for (const auto& [id, t] : tokens) n += (t + page_size - 1) / page_size;
        return n;
    }
    static int32_t token_for(const std::vector<int32_t>& prompt, uint64_t index) {
        uint64_t h = 1469598103934665603ull;
        for (int32_t t : prompt) h = (h ^ static_cast<uint64_t>(t)) * 1099511628211ull;
        return static_cast<int32_t>(10 + (h ^ (index * 0x9E3779B97F4A7C15ull)) % 1000);
    }
    std::map<uint64_t, int32_t> last;  // the last token sampled per request

    // The prompt of each request, as the test knows it (the plan carries only new tokens).
    proto::step_result run(const proto::step_plan& plan, uint64_t worker,
                           const std::map<uint64_t, std::vector<int32_t>>& prompts) {
        (void)worker;
        proto::step_result r;
        r.step_id = plan.step_id;
        for (uint64_t id : plan.released) {
            tokens.erase(id);
            last.erase(id);
        }
        for (const auto& seq : plan.sequences) {
            // The plan states what the worker holds of the request (as the real one checks).
            const auto held = tokens.find(seq.request_id);
            if ((held == tokens.end() ? 0 : held->second) != seq.cached_tokens) {
                r.error = "request " + std::to_string(seq.request_id) + ": holds " +
                          std::to_string(held == tokens.end() ? 0 : held->second) +
                          ", plan expects " + std::to_string(seq.cached_tokens);
                return r;
            }
            if (seq.decode_last_sampled && last.count(seq.request_id) == 0) {
                r.error = "no sampled token for request " + std::to_string(seq.request_id);
                return r;
            }
            tokens[seq.request_id] += seq.decode_last_sampled ? 1 : static_cast<int64_t>(seq.new_tokens.size());
        }
        peak_pages = std::max(peak_pages, used());
        if (used() > pages) {
            r.error = "out of KV pages: " + std::to_string(used()) + " > " + std::to_string(pages);
            return r;
        }
        for (const auto& seq : plan.sequences) {
            r.tokens.push_back({seq.request_id, token_for(prompts.at(seq.request_id), seq.token_index)});
            last[seq.request_id] = r.tokens.back().token;
        }
        return r;
    }
};

struct batching_fixture {
    coordinator_config config;
    std::unique_ptr<coordinator_state> state;
    uint64_t worker_id = 0;
    simulated_worker sim;
    std::map<uint64_t, std::vector<int32_t>> prompts;
    std::map<uint64_t, finished_request> done;
    std::vector<size_t> sequences_per_step;
    std::map<uint64_t, std::vector<int32_t>> streamed;

    batching_fixture(int64_t pages, int64_t page_size, int32_t max_batch, int64_t chunk) {
        config.model = "unused";
        config.max_batch = max_batch;
        config.prefill_chunk = chunk;
        state = std::make_unique<coordinator_state>(config, kLayers, kExperts, kEos);
        auto w = worker("attention-0");
        w.kv_pages = pages;
        w.kv_page_size = page_size;
        worker_id = state->register_member(w).member_id;
        const uint64_t g = state->register_member(group("experts-0")).member_id;
        for (uint64_t id : {worker_id, g}) state->member_ready(id);
        auto map = state->apply_placement();
        for (uint64_t id : {worker_id, g}) state->placement_acked({map->version, "", ""}, id);
        sim.pages = pages;
        sim.page_size = page_size;
    }
    std::optional<refusal> submit(uint64_t id, std::vector<int32_t> prompt, int64_t max_tokens) {
        proto::generate_request r = request_of(prompt, max_tokens);
        r.ignore_eos = true;
        r.stream = true;
        prompts[id] = prompt;
        return state->admit(id, r);
    }
    std::deque<step_batch> in_flight;

    // As the actor does it: keep two steps planned and sent, then run and emit the oldest.
    // False when nothing is left to run.
    bool step() {
        while (in_flight.size() < 2) {
            step_batch batch = state->plan_step();
            for (auto& f : state->take_finished()) done[f.id] = f;
            const bool releases = !batch.plans.at(worker_id).released.empty();
            if (batch.empty() && (!releases || !in_flight.empty())) {
                state->discard_plan(batch);
                break;
            }
            const bool release_only = batch.empty();
            in_flight.push_back(std::move(batch));
            if (release_only) break;
        }
        if (in_flight.empty()) return false;
        step_batch batch = std::move(in_flight.front());
        in_flight.pop_front();
        sequences_per_step.push_back(batch.plans.at(worker_id).sequences.size());
        auto result = sim.run(batch.plans.at(worker_id), worker_id, prompts);
        EXPECT_TRUE(result.error.empty()) << result.error;
        for (auto& f : state->emit_tokens(batch.step_id, {result})) done[f.id] = f;
        for (auto& d : state->take_deltas())
            streamed[d.id].insert(streamed[d.id].end(), d.tokens.begin(), d.tokens.end());
        return true;
    }
    std::vector<int32_t> alone(uint64_t id, int64_t max_tokens) const {
        std::vector<int32_t> out;
        for (int64_t i = 0; i < max_tokens; ++i)
            out.push_back(simulated_worker::token_for(prompts.at(id), static_cast<uint64_t>(i)));
        return out;
    }
};

std::vector<int32_t> prompt_of(int32_t seed, size_t length) {
    std::vector<int32_t> p;
    for (size_t i = 0; i < length; ++i) p.push_back(static_cast<int32_t>(100 + seed * 31 + i));
    return p;
}

TEST(ContinuousBatching, ARequestJoinsEightDecodingOnesAtTheNextStepBoundary) {
    batching_fixture f(1024, 16, 16, 256);
    for (uint64_t id = 1; id <= 8; ++id) ASSERT_FALSE(f.submit(id, prompt_of(int32_t(id), 5), 50));
    ASSERT_TRUE(f.step());  // the 8 prefill together
    ASSERT_TRUE(f.step());  // and decode
    EXPECT_EQ(f.sequences_per_step.back(), 8u);
    ASSERT_EQ(f.streamed[1].size(), 2u);
    // A 9th arrives while they decode (one step is in flight, planned before it came): the next
    // step planned carries its prefill beside 8 decodes and yields its first token — within its
    // prefill plus one step — and the step after holds 9 decodes.
    ASSERT_FALSE(f.submit(9, prompt_of(9, 7), 50));
    ASSERT_TRUE(f.step());  // the step that was in flight
    EXPECT_EQ(f.sequences_per_step.back(), 8u);
    EXPECT_TRUE(f.streamed[9].empty());
    ASSERT_TRUE(f.step());  // its prefill
    EXPECT_EQ(f.sequences_per_step.back(), 9u);
    EXPECT_EQ(f.streamed[9].size(), 1u);
    ASSERT_TRUE(f.step());
    EXPECT_EQ(f.sequences_per_step.back(), 9u);
    EXPECT_EQ(f.streamed[9].size(), 2u);
    EXPECT_EQ(f.streamed[9], f.alone(9, 2));
}

TEST(ContinuousBatching, ChunkedPrefillRunsInChunksAndDropsTheirSamples) {
    batching_fixture f(1024, 4, 8, 4);
    ASSERT_FALSE(f.submit(1, prompt_of(1, 10), 3));
    ASSERT_TRUE(f.step());  // 4
    ASSERT_TRUE(f.step());  // 8
    EXPECT_TRUE(f.streamed[1].empty());
    EXPECT_EQ(f.sim.tokens[1], 8);
    ASSERT_TRUE(f.step());  // 10: the first token
    EXPECT_EQ(f.streamed[1], f.alone(1, 1));
    while (f.step()) {
    }
    ASSERT_EQ(f.done.count(1), 1u);
    EXPECT_EQ(f.done[1].reply.tokens, f.alone(1, 3));
    EXPECT_EQ(f.done[1].reply.finish_reason, "length");
}

TEST(ContinuousBatching, PoolOfOneAndAHalfRequestsPreemptsAndRecomputesWithTheSameOutput) {
    // One request: 12 prompt + 40 generated = 52 tokens = 13 pages of 4; the pool holds 20
    // (1.5 requests). Four at once must all finish, with the tokens they get alone.
    batching_fixture f(20, 4, 8, 8);
    for (uint64_t id = 1; id <= 4; ++id) ASSERT_FALSE(f.submit(id, prompt_of(int32_t(id), 12), 40));
    int steps = 0;
    while (f.step()) ASSERT_LT(++steps, 2000);
    ASSERT_EQ(f.done.size(), 4u);
    for (uint64_t id = 1; id <= 4; ++id) {
        EXPECT_EQ(f.done[id].reply.finish_reason, "length") << f.done[id].reply.error;
        EXPECT_EQ(f.done[id].reply.tokens, f.alone(id, 40)) << "request " << id;
        EXPECT_EQ(f.streamed[id], f.alone(id, 40)) << "request " << id;  // the stream kept going
    }
    EXPECT_GT(f.state->preemptions(), 0u);
    EXPECT_LE(f.sim.peak_pages, 20);
    // Every page is free once they ended (the last releases go out with the next plan).
    step_batch last = f.state->plan_step();
    for (uint64_t id : last.plans.at(f.worker_id).released) f.sim.tokens.erase(id);
    EXPECT_EQ(f.sim.used(), 0);
    EXPECT_EQ(f.state->status().kv_pages_reserved, 0);
}

TEST(ContinuousBatching, RequestThatCannotFitAloneIsRefusedNamingThePool) {
    batching_fixture f(8, 4, 8, 0);
    const auto refused = f.submit(1, prompt_of(1, 20), 20);  // 40 tokens = 10 pages > 8
    ASSERT_TRUE(refused.has_value());
    EXPECT_NE(refused->message.find("need 10 KV pages of 4 tokens"), std::string::npos) << refused->message;
    EXPECT_NE(refused->message.find("attention-0) has 8"), std::string::npos) << refused->message;
    EXPECT_EQ(refused->kind, proto::request_error::invalid_request);
}

TEST(ContinuousBatching, CancelEndsQueuedAndRunningRequestsAndFreesTheirPages) {
    batching_fixture f(1024, 4, 1, 0);  // max_batch 1: the second request stays queued
    ASSERT_FALSE(f.submit(1, prompt_of(1, 6), 100));
    ASSERT_FALSE(f.submit(2, prompt_of(2, 6), 100));
    ASSERT_TRUE(f.step());
    EXPECT_EQ(f.state->queued_requests(), 1u);
    EXPECT_TRUE(f.state->cancel(2));  // queued
    EXPECT_TRUE(f.state->cancel(1));  // running
    EXPECT_FALSE(f.state->cancel(1));
    const auto ended = f.state->take_finished();
    ASSERT_EQ(ended.size(), 2u);
    for (const auto& e : ended) EXPECT_EQ(e.reply.finish_reason, "cancelled");
    step_batch next = f.state->plan_step();
    EXPECT_EQ(next.plans.at(f.worker_id).released, std::vector<uint64_t>{1});
    EXPECT_TRUE(f.state->drained());
}

}  // namespace
}  // namespace longcat::coordinator

// -- prefill/decode disaggregation -----------------------------------------------------------
namespace longcat::coordinator {
namespace {

struct pd_fixture {
    coordinator_config config;
    std::unique_ptr<coordinator_state> state;
    uint64_t prefill_a = 0, prefill_b = 0, decode = 0;

    explicit pd_fixture(int64_t prefill_chunk = 256, int64_t prefill_pages = 64,
                        int64_t decode_pages = 64) {
        config.model = "unused";
        config.prefill_chunk = prefill_chunk;
        config.expected_attention_workers = 3;
        state = std::make_unique<coordinator_state>(config, kLayers, kExperts, kEos);
        auto pw = [prefill_pages](const std::string& name) {
            auto m = worker(name);
            m.greeting.role = proto::node_role::attention_prefill;
            m.kv_pages = prefill_pages;
            m.kv_page_size = 4;
            return m;
        };
        auto dw = worker("decode-0");
        dw.kv_pages = decode_pages;
        dw.kv_page_size = 4;
        prefill_a = state->register_member(pw("prefill-a")).member_id;
        prefill_b = state->register_member(pw("prefill-b")).member_id;
        decode = state->register_member(dw).member_id;
        const uint64_t g = state->register_member(group("experts-0")).member_id;
        for (uint64_t id : {prefill_a, prefill_b, decode, g}) state->member_ready(id);
        auto map = state->apply_placement();
        EXPECT_TRUE(map.has_value());
        for (uint64_t id : {prefill_a, prefill_b, decode, g}) state->placement_acked({map->version, "", ""}, id);
    }
    static proto::step_result result_for(const step_batch& batch, uint64_t worker, int32_t token) {
        proto::step_result r;
        r.step_id = batch.step_id;
        for (const auto& seq : batch.plans.at(worker).sequences) r.tokens.push_back({seq.request_id, token});
        return r;
    }
};

// A prompt that fits the decode pool but no prefill pool is refused at admission, naming the
// prefill pool; before, it was queued, could never be placed, and held up every request behind
// it at the head of the FIFO queue.
TEST(Disaggregation, PromptThatFitsNoPrefillPoolIsRefusedAndHoldsUpNothing) {
    pd_fixture f(256, /*prefill_pages=*/8, /*decode_pages=*/64);  // 32 and 256 tokens
    std::vector<int32_t> long_prompt(40, 5);
    const auto refused = f.state->admit(1, request_of(long_prompt, 10));
    ASSERT_TRUE(refused.has_value()) << "a prompt of 11 pages admitted beside prefill pools of 8";
    EXPECT_EQ(refused->kind, proto::request_error::invalid_request);
    EXPECT_NE(
        refused->message.find("prompt (40 tokens) + its first token need 11 KV pages of 4 tokens"),
        std::string::npos)
        << refused->message;
    EXPECT_NE(refused->message.find("largest prefill attention worker pool (prefill-"),
              std::string::npos)
        << refused->message;
    // Too long for the decode pool: named as such.
    const auto too_long = f.state->admit(2, request_of({5, 6, 7}, 300));
    ASSERT_TRUE(too_long.has_value());
    EXPECT_NE(too_long->message.find("largest decode attention worker pool (decode-0) has 64"),
              std::string::npos)
        << too_long->message;
    // A request that fits is placed at the next step.
    ASSERT_FALSE(f.state->admit(3, request_of({5, 6, 7, 8}, 3)).has_value());
    const step_batch s1 = f.state->plan_step();
    EXPECT_EQ(s1.plans.at(f.prefill_a).sequences.size() + s1.plans.at(f.prefill_b).sequences.size(),
              1u);
}

TEST(Disaggregation, PrefillStreamsItsKvThenTheDecodeWorkerImportsAndDecodes) {
    pd_fixture f;
    proto::generate_request request = request_of({5, 6, 7, 8, 9}, 3);
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    step_batch s1 = f.state->plan_step();
    // The prompt goes to a prefill worker, which sends its KV to decode-0 after the forward; the
    // decode worker runs nothing yet but has its pages reserved (prompt + 1 token = 2 pages of 4).
    const uint64_t prefill = s1.plans.at(f.prefill_a).sequences.empty() ? f.prefill_b : f.prefill_a;
    ASSERT_EQ(s1.plans.at(prefill).sequences.size(), 1u);
    EXPECT_EQ(s1.plans.at(prefill).sequences[0].new_tokens, request.prompt);
    ASSERT_EQ(s1.plans.at(prefill).transfers.size(), 1u);
    const proto::kv_transfer& sent = s1.plans.at(prefill).transfers[0];
    EXPECT_EQ(sent.to_name, "decode-0");
    EXPECT_EQ(sent.first_token, 0);
    EXPECT_EQ(sent.num_tokens, 5);
    EXPECT_TRUE(sent.last);
    EXPECT_TRUE(s1.plans.at(f.decode).sequences.empty());
    // ... and decode-0 reserves its pages now: the frames land in them as they come.
    ASSERT_EQ(s1.plans.at(f.decode).expects.size(), 1u);
    EXPECT_EQ(s1.plans.at(f.decode).expects[0].request_id, 1u);
    EXPECT_EQ(s1.plans.at(f.decode).expects[0].num_tokens, 5);
    EXPECT_EQ(s1.plans.at(f.decode).expects[0].attempt, sent.attempt);
    EXPECT_EQ(f.state->reserved_pages(f.decode), 2);
    EXPECT_EQ(f.state->reserved_pages(prefill), 0);  // it frees them when it has sent them
    // Planned while step 1 runs: nothing to import yet (nor to reserve again).
    step_batch s2 = f.state->plan_step();
    EXPECT_TRUE(s2.plans.at(f.decode).imports.empty());
    EXPECT_TRUE(s2.plans.at(f.decode).expects.empty());
    EXPECT_TRUE(s2.plans.at(prefill).sequences.empty());
    EXPECT_TRUE(f.state->emit_tokens(s1.step_id, {pd_fixture::result_for(s1, prefill, 40)}).empty());
    EXPECT_TRUE(f.state->emit_tokens(s2.step_id, {}).empty());
    // The decode worker imports and decodes 40.
    step_batch s3 = f.state->plan_step();
    EXPECT_TRUE(s3.plans.at(prefill).transfers.empty());
    ASSERT_EQ(s3.plans.at(f.decode).imports.size(), 1u);
    EXPECT_EQ(s3.plans.at(f.decode).imports[0].num_tokens, 5);
    EXPECT_EQ(s3.plans.at(f.decode).imports[0].attempt, sent.attempt);
    ASSERT_EQ(s3.plans.at(f.decode).sequences.size(), 1u);
    // Its input is the first token the prefill worker sampled, which decode-0 has from the
    // prefill_done frame (the sampler's counter there must match token_index).
    EXPECT_TRUE(s3.plans.at(f.decode).sequences[0].decode_last_sampled);
    EXPECT_EQ(s3.plans.at(f.decode).sequences[0].token_index, 1u);
    EXPECT_EQ(s3.plans.at(f.decode).sequences[0].cached_tokens, 5);  // the imported prompt
    EXPECT_EQ(s1.plans.at(prefill).sequences[0].cached_tokens, 0);
    // Planned while the import runs: no decode yet (if the import fails, that decode's input
    // would not exist and the whole step would fail).
    step_batch s4 = f.state->plan_step();
    EXPECT_TRUE(s4.plans.at(f.decode).sequences.empty());
    EXPECT_TRUE(f.state->emit_tokens(s3.step_id, {pd_fixture::result_for(s3, f.decode, 41)}).empty());
    f.state->discard_plan(s4);
    step_batch s5 = f.state->plan_step();  // the decode continues there
    ASSERT_EQ(s5.plans.at(f.decode).sequences.size(), 1u);
    EXPECT_EQ(s5.plans.at(f.decode).sequences[0].new_tokens, std::vector<int32_t>{41});
    const auto done = f.state->emit_tokens(s5.step_id, {pd_fixture::result_for(s5, f.decode, 42)});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].reply.tokens, (std::vector<int32_t>{40, 41, 42}));
    // Its pages are released on the decode worker (the prefill worker freed its own on send).
    step_batch s6 = f.state->plan_step();
    EXPECT_EQ(s6.plans.at(f.decode).released, std::vector<uint64_t>{1});
    EXPECT_TRUE(s6.plans.at(prefill).released.empty());
}

TEST(Disaggregation, ChunkedPrefillSendsEachChunksKvAsItRuns) {
    pd_fixture f(/*prefill_chunk=*/3);
    proto::generate_request request = request_of({5, 6, 7, 8, 9, 10, 11}, 2);
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    std::vector<std::pair<int64_t, int64_t>> ranges;
    std::vector<bool> lasts;
    for (int guard = 0; guard < 10 && lasts.size() < 3; ++guard) {
        step_batch b = f.state->plan_step();
        std::vector<proto::step_result> results;
        for (uint64_t w : {f.prefill_a, f.prefill_b}) {
            for (const auto& t : b.plans.at(w).transfers) {
                ranges.push_back({t.first_token, t.num_tokens});
                lasts.push_back(t.last);
            }
            results.push_back(pd_fixture::result_for(b, w, 40));
        }
        EXPECT_TRUE(b.plans.at(f.decode).imports.empty()) << "imported before the last chunk was sent";
        EXPECT_TRUE(f.state->emit_tokens(b.step_id, results).empty());
    }
    EXPECT_EQ(ranges, (std::vector<std::pair<int64_t, int64_t>>{{0, 3}, {3, 6}, {6, 7}}));
    EXPECT_EQ(lasts, (std::vector<bool>{false, false, true}));
    step_batch next = f.state->plan_step();
    ASSERT_EQ(next.plans.at(f.decode).imports.size(), 1u);
    EXPECT_EQ(next.plans.at(f.decode).imports[0].num_tokens, 7);
}

TEST(Disaggregation, FailedImportIsRetriedOnAnotherPrefillWorkerThenFailsByName) {
    pd_fixture f;
    proto::generate_request request = request_of({5, 6, 7}, 8);
    request.stream = true;
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    // Runs steps until the decode worker imports; `prefill_worker` is the one that sent the KV.
    auto run_until_import = [&](uint64_t& prefill_worker) -> step_batch {
        for (int guard = 0; guard < 10; ++guard) {
            step_batch b = f.state->plan_step();
            if (!b.plans.at(f.decode).imports.empty()) return b;
            std::vector<proto::step_result> results;
            for (uint64_t w : {f.prefill_a, f.prefill_b}) {
                if (!b.plans.at(w).transfers.empty()) prefill_worker = w;
                results.push_back(pd_fixture::result_for(b, w, 40));
            }
            EXPECT_TRUE(f.state->emit_tokens(b.step_id, results).empty());
        }
        ADD_FAILURE() << "no import was planned";
        return {};
    };
    uint64_t first = 0, second = 0;
    step_batch t1 = run_until_import(first);
    EXPECT_EQ(t1.plans.at(f.decode).imports[0].attempt, 0u);
    proto::step_result failed;
    failed.step_id = t1.step_id;
    failed.failed_requests = {1};
    failed.failed_reasons = {"decode-0: KV of request 1 from prefill: 3 of 6 rows by the 5000 ms transfer deadline"};
    EXPECT_TRUE(f.state->emit_tokens(t1.step_id, {failed}).empty());  // retried, not failed
    EXPECT_EQ(f.state->take_deltas().front().tokens, std::vector<int32_t>{40});  // its stream kept the token
    // The next plan tells decode-0 to drop attempt 0 (pages, frames) and to reserve for attempt
    // 1, which its release must not touch.
    step_batch r = f.state->plan_step();
    ASSERT_EQ(r.plans.at(f.decode).released_kv.size(), 1u);
    EXPECT_EQ(r.plans.at(f.decode).released_kv[0].attempt, 0u);
    ASSERT_EQ(r.plans.at(f.decode).expects.size(), 1u);
    EXPECT_EQ(r.plans.at(f.decode).expects[0].attempt, 1u);
    std::vector<proto::step_result> r_results;
    for (uint64_t w : {f.prefill_a, f.prefill_b}) {
        if (!r.plans.at(w).transfers.empty()) second = w;
        r_results.push_back(pd_fixture::result_for(r, w, 40));
    }
    EXPECT_TRUE(f.state->emit_tokens(r.step_id, r_results).empty());
    step_batch t2 = run_until_import(second);
    EXPECT_NE(second, first) << "the retry must prefill on the other prefill worker";
    EXPECT_EQ(t2.plans.at(f.decode).imports[0].attempt, 1u);  // only the new attempt's frames count
    // The recompute prefilled prompt + the token it already had.
    EXPECT_EQ(t2.plans.at(f.decode).imports[0].num_tokens, 4);
    failed.step_id = t2.step_id;
    const auto done = f.state->emit_tokens(t2.step_id, {failed});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].reply.finish_reason, "error");
    EXPECT_NE(done[0].reply.error.find("KV transfer from prefill-"), std::string::npos) << done[0].reply.error;
    EXPECT_NE(done[0].reply.error.find("failed twice"), std::string::npos) << done[0].reply.error;
    EXPECT_NE(done[0].reply.error.find("transfer deadline"), std::string::npos) << done[0].reply.error;
}

TEST(Disaggregation, FailedSendIsRetriedAtOnce) {
    pd_fixture f;
    proto::generate_request request = request_of({5, 6, 7}, 4);
    ASSERT_FALSE(f.state->admit(1, request).has_value());
    step_batch s1 = f.state->plan_step();
    const uint64_t prefill = s1.plans.at(f.prefill_a).transfers.empty() ? f.prefill_b : f.prefill_a;
    ASSERT_EQ(s1.plans.at(prefill).transfers.size(), 1u);
    proto::step_result result = pd_fixture::result_for(s1, prefill, 40);
    result.failed_requests = {1};
    result.failed_reasons = {"prefill-a: KV transfer to decode-0: peer_failed"};
    EXPECT_TRUE(f.state->emit_tokens(s1.step_id, {result}).empty());
    // Back through prefill on the other worker at the next step, attempt 1; nothing imported.
    step_batch s2 = f.state->plan_step();
    EXPECT_TRUE(s2.plans.at(f.decode).imports.empty());
    const uint64_t other = prefill == f.prefill_a ? f.prefill_b : f.prefill_a;
    ASSERT_EQ(s2.plans.at(other).transfers.size(), 1u);
    EXPECT_EQ(s2.plans.at(other).transfers[0].attempt, 1u);
}

// -- expert pools: a pool (and a step loop) per side ---------------------------------------------

proto::register_member pooled_group(const std::string& name, const std::string& pool) {
    auto m = group(name);
    m.pool = pool;
    return m;
}

struct pools_fixture {
    coordinator_config config;
    std::unique_ptr<coordinator_state> state;
    uint64_t prefill = 0, decode = 0, experts_p = 0, experts_d0 = 0, experts_d1 = 0;

    pools_fixture() {
        config.model = "unused";
        config.expected_attention_workers = 2;
        config.expert_placement = "experts-p=0-7;experts-d0=0-3;experts-d1=4-7";
        state = std::make_unique<coordinator_state>(config, kLayers, kExperts, kEos);
        auto pw = worker("prefill-0");
        pw.greeting.role = proto::node_role::attention_prefill;
        auto dw = worker("decode-0");
        for (auto* w : {&pw, &dw}) w->kv_pages = 64, w->kv_page_size = 4;
        prefill = state->register_member(pw).member_id;
        decode = state->register_member(dw).member_id;
        experts_p = state->register_member(pooled_group("experts-p", "prefill")).member_id;
        experts_d0 = state->register_member(pooled_group("experts-d0", "decode")).member_id;
        for (uint64_t id : {prefill, decode, experts_p, experts_d0}) state->member_ready(id);
    }
    void complete() {
        experts_d1 = state->register_member(pooled_group("experts-d1", "decode")).member_id;
        state->member_ready(experts_d1);
        auto map = state->apply_placement();
        ASSERT_TRUE(map.has_value());
        for (uint64_t id : {prefill, decode, experts_p, experts_d0, experts_d1})
            state->placement_acked({map->version, "", ""}, id);
        ASSERT_TRUE(state->serving()) << state->not_serving_reason();
    }
    static std::set<uint64_t> keys(const step_batch& batch) {
        std::set<uint64_t> out;
        for (const auto& [id, plan] : batch.plans) out.insert(id);
        return out;
    }
    static proto::step_result result_for(const step_batch& batch, uint64_t worker, int32_t token) {
        return pd_fixture::result_for(batch, worker, token);
    }
};

std::vector<std::string> names_of_groups(const proto::placement_map& map) {
    std::vector<std::string> out;
    for (const auto& g : map.groups) out.push_back(g.name);
    return out;
}

std::vector<std::string> names_of_workers(const proto::placement_map& map) {
    std::vector<std::string> out;
    for (const auto& w : map.workers) out.push_back(w.name);
    return out;
}

TEST(ExpertPools, EveryPoolMustHoldEveryExpertAndEachMemberIsSentItsPoolsView) {
    pools_fixture f;
    // The decode pool lacks experts 4-7: not serving, and the reason names the pool.
    EXPECT_FALSE(f.state->apply_placement().has_value());
    EXPECT_NE(f.state->not_serving_reason().find("experts 4-7 have no replica in the decode pool"),
              std::string::npos)
        << f.state->not_serving_reason();
    // Groups are all shared or all in pools; a pool is prefill or decode.
    const auto shared = f.state->register_member(group("experts-x"));
    EXPECT_FALSE(shared.accepted);
    EXPECT_NE(shared.error.find("all shared"), std::string::npos) << shared.error;
    const auto odd = f.state->register_member(pooled_group("experts-y", "middle"));
    EXPECT_FALSE(odd.accepted);
    EXPECT_NE(odd.error.find("\"middle\""), std::string::npos) << odd.error;
    f.complete();
    EXPECT_EQ(f.state->lanes(), (std::vector<std::string>{"decode", "prefill"}));
    const auto decode_view = f.state->placement_for(f.decode);
    EXPECT_EQ(names_of_groups(decode_view), (std::vector<std::string>{"experts-d0", "experts-d1"}));
    EXPECT_EQ(names_of_workers(decode_view), std::vector<std::string>{"decode-0"});
    EXPECT_EQ(f.state->placement_for(f.experts_d1), decode_view);
    const auto prefill_view = f.state->placement_for(f.experts_p);
    EXPECT_EQ(names_of_groups(prefill_view), std::vector<std::string>{"experts-p"});
    EXPECT_EQ(names_of_workers(prefill_view), std::vector<std::string>{"prefill-0"});
    EXPECT_EQ(prefill_view.version, decode_view.version);
    // The whole map (status) has both pools.
    EXPECT_EQ(f.state->placement().groups.size(), 3u);
    EXPECT_EQ(f.state->placement().workers.size(), 2u);
}

TEST(ExpertPools, DecodeStepsRunWhileAPrefillStepIsInFlightAndKvCrossesTheLanes) {
    pools_fixture f;
    f.complete();
    proto::generate_request a = request_of({5, 6, 7, 8, 9}, 3);
    a.ignore_eos = true;
    ASSERT_FALSE(f.state->admit(1, a).has_value());
    // The prefill lane's plan goes to the prefill worker only; it streams the KV to decode-0.
    step_batch p1 = f.state->plan_step("prefill");
    EXPECT_EQ(pools_fixture::keys(p1), std::set<uint64_t>{f.prefill});
    ASSERT_EQ(p1.plans.at(f.prefill).sequences.size(), 1u);
    ASSERT_EQ(p1.plans.at(f.prefill).transfers.size(), 1u);
    EXPECT_EQ(p1.plans.at(f.prefill).transfers[0].to_name, "decode-0");
    EXPECT_EQ(f.state->reserved_pages(f.decode), 2);  // prompt + 1 token, reserved at admission
    // The decode lane does not import before that step's result is in.
    step_batch d0 = f.state->plan_step("decode");
    EXPECT_EQ(pools_fixture::keys(d0), std::set<uint64_t>{f.decode});
    EXPECT_TRUE(d0.plans.at(f.decode).imports.empty()) << "imported before the KV was sent";
    ASSERT_EQ(d0.plans.at(f.decode).expects.size(), 1u);  // its pages are reserved now
    EXPECT_TRUE(f.state->emit_tokens(d0.step_id, {}).empty());
    EXPECT_TRUE(f.state->emit_tokens(p1.step_id, {pools_fixture::result_for(p1, f.prefill, 40)}).empty());
    // Then the decode lane imports and decodes the first token.
    step_batch d1 = f.state->plan_step("decode");
    ASSERT_EQ(d1.plans.at(f.decode).imports.size(), 1u);
    EXPECT_EQ(d1.plans.at(f.decode).imports[0].from_name, "prefill-0");
    EXPECT_EQ(d1.plans.at(f.decode).imports[0].num_tokens, 5);
    ASSERT_EQ(d1.plans.at(f.decode).sequences.size(), 1u);
    EXPECT_TRUE(d1.plans.at(f.decode).sequences[0].decode_last_sampled);  // from prefill_done
    // A second request prefills; while that prefill step is in flight, request 1 decodes to its
    // end in the decode lane (its next decode waits for the import's result).
    proto::generate_request b = a;
    b.prompt = {11, 12, 13};
    ASSERT_FALSE(f.state->admit(2, b).has_value());
    step_batch p2 = f.state->plan_step("prefill");
    ASSERT_EQ(p2.plans.at(f.prefill).sequences.size(), 1u);
    EXPECT_EQ(p2.plans.at(f.prefill).sequences[0].request_id, 2u);
    EXPECT_TRUE(f.state->emit_tokens(d1.step_id, {pools_fixture::result_for(d1, f.decode, 41)}).empty());
    step_batch d2 = f.state->plan_step("decode");
    ASSERT_EQ(d2.plans.at(f.decode).sequences.size(), 1u);
    EXPECT_EQ(d2.plans.at(f.decode).sequences[0].new_tokens, std::vector<int32_t>{41});
    const auto done = f.state->emit_tokens(d2.step_id, {pools_fixture::result_for(d2, f.decode, 42)});
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].reply.tokens, (std::vector<int32_t>{40, 41, 42}));
    EXPECT_EQ(f.state->running_requests(), 1u);  // request 2, still in its prefill step
    // Request 2 is cancelled while the step sending its KV is in flight: decode-0 is told at once
    // to drop that attempt — its pages, and its frames whenever they arrive.
    ASSERT_TRUE(f.state->cancel(2));
    const auto cancelled = f.state->take_finished();
    ASSERT_EQ(cancelled.size(), 1u);
    EXPECT_EQ(cancelled[0].reply.finish_reason, "cancelled");
    step_batch d3 = f.state->plan_step("decode");
    EXPECT_EQ(d3.plans.at(f.decode).released, std::vector<uint64_t>{1});  // request 1's pages
    ASSERT_EQ(d3.plans.at(f.decode).released_kv.size(), 1u);
    EXPECT_EQ(d3.plans.at(f.decode).released_kv[0].request_id, 2u);
    EXPECT_EQ(d3.plans.at(f.decode).released_kv[0].attempt, 0u);  // only that attempt's pages and frames
}

TEST(ExpertPools, FailedPrefillStepEndsOnlyThePrefillLanesRequests) {
    pools_fixture f;
    f.complete();
    proto::generate_request a = request_of({5, 6, 7}, 4);
    a.ignore_eos = true;
    ASSERT_FALSE(f.state->admit(1, a).has_value());
    step_batch p1 = f.state->plan_step("prefill");
    EXPECT_TRUE(f.state->emit_tokens(p1.step_id, {pools_fixture::result_for(p1, f.prefill, 40)}).empty());
    step_batch p2 = f.state->plan_step("prefill");
    EXPECT_TRUE(f.state->emit_tokens(p2.step_id, {pools_fixture::result_for(p2, f.prefill, 0)}).empty());
    step_batch d1 = f.state->plan_step("decode");  // request 1 moves to decode-0
    ASSERT_EQ(d1.plans.at(f.decode).imports.size(), 1u);
    proto::generate_request b = a;
    b.prompt = {9, 9};
    ASSERT_FALSE(f.state->admit(2, b).has_value());
    step_batch p3 = f.state->plan_step("prefill");
    ASSERT_EQ(p3.plans.at(f.prefill).sequences.size(), 1u);
    const auto failed = f.state->fail_step(p3.step_id, "experts-p failed");
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].id, 2u);
    EXPECT_EQ(failed[0].reply.error_kind, proto::request_error::failed);
    EXPECT_EQ(f.state->running_requests(), 1u);
    EXPECT_TRUE(f.state->emit_tokens(d1.step_id, {pools_fixture::result_for(d1, f.decode, 41)}).empty());
}

}  // namespace
}  // namespace longcat::coordinator
