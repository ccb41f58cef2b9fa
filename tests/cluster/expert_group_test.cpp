// The dispatch/combine row layouts and one expert group driven unit by unit (serve_one_unit),
// with hand-made dispatch frames from two paired workers: before anything runs concurrently.
#include "actors/experts/expert_group.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "tests/cluster/cluster_fixture.hpp"

namespace longcat::experts {
namespace {

using namespace std::chrono_literals;
using cluster::unit_key;
using testing::shared_tiny_model;

// Rows for tokens 0..num_tokens−1 of a micro-batch: token t picks experts (t + k) mod E.
model::layer_activations make_activations(int64_t num_tokens, int64_t hidden, int32_t num_experts,
                                          int32_t slots) {
    model::layer_activations act;
    act.h.resize(static_cast<size_t>(num_tokens * hidden));
    for (size_t i = 0; i < act.h.size(); ++i) act.h[i] = 0.01f * static_cast<float>(i % 97) - 0.4f;
    for (int64_t t = 0; t < num_tokens; ++t) {
        for (int32_t k = 0; k < slots; ++k) {
            act.dispatch.token.push_back(static_cast<int32_t>(t));
            act.dispatch.expert.push_back(static_cast<int32_t>((t + 3 * k) % num_experts));
            act.dispatch.weight.push_back(0.5f + 0.25f * static_cast<float>(k));
        }
    }
    return act;
}

TEST(MoeFrames, DispatchRoundTripAndZeroTokenFrames) {
    const auto& c = shared_tiny_model().config();
    auto map = testing::three_group_map(c);
    const int64_t hidden = c.hidden_size;
    const model::layer_activations act =
        make_activations(5, hidden, static_cast<int32_t>(c.n_routed_experts), 3);
    std::vector<cluster::dispatch_rows> per_group;
    cluster::split_dispatch(map, 1, 0, act, hidden, per_group);
    ASSERT_EQ(per_group.size(), 3u);
    int64_t slots = 0;
    for (int32_t group_id = 0; group_id < 3; ++group_id) {
        const cluster::dispatch_rows& rows = per_group[group_id];
        slots += rows.num_slots();
        EXPECT_TRUE(std::is_sorted(rows.token.begin(), rows.token.end()));
        for (int32_t e : rows.expert) EXPECT_TRUE(map.holds(group_id, 1, e));
        const unit_key key{4, 1, 2};
        const cluster::encoded_frame f = cluster::encode_dispatch(key, rows);
        EXPECT_EQ(f.header.kind, proto::frame_kind::dispatch);
        EXPECT_EQ(cluster::unit_of(f.header), key);
        EXPECT_EQ(f.header.num_tokens, rows.num_rows());
        EXPECT_EQ(f.header.row_bytes, 4 * hidden + 4 + 8 * rows.max_slots());
        auto back = cluster::decode_dispatch(f.header, f.payload, hidden, c.n_routed_experts);
        ASSERT_TRUE(back.has_value()) << back.error();
        EXPECT_EQ(back->h, rows.h);
        EXPECT_EQ(back->slot_begin, rows.slot_begin);
        EXPECT_EQ(back->expert, rows.expert);
        EXPECT_EQ(back->weight, rows.weight);
        // The view the group computes from: the same slots, the hidden rows read in place.
        auto view = cluster::decode_dispatch_view(f.header, f.payload, hidden, c.n_routed_experts);
        ASSERT_TRUE(view.has_value()) << view.error();
        EXPECT_TRUE(view->rows.h.empty());
        EXPECT_EQ(view->rows.slot_begin, rows.slot_begin);
        EXPECT_EQ(view->rows.expert, rows.expert);
        EXPECT_EQ(view->rows.weight, rows.weight);
        for (int64_t r = 0; r < rows.num_rows(); ++r)
            EXPECT_TRUE(std::equal(rows.h.begin() + r * hidden, rows.h.begin() + (r + 1) * hidden,
                                   view->hidden_row(r)))
                << "row " << r;
    }
    EXPECT_EQ(slots, 15);
    // No slots at all: every group still gets a (0-token) frame.
    model::layer_activations none;
    cluster::split_dispatch(map, 0, 0, none, hidden, per_group);
    for (const auto& rows : per_group) {
        const cluster::encoded_frame f = cluster::encode_dispatch({1, 0, 0}, rows);
        EXPECT_EQ(f.header.num_tokens, 0u);
        EXPECT_EQ(f.header.payload_bytes, 0u);
        auto back = cluster::decode_dispatch(f.header, f.payload, hidden, c.n_routed_experts);
        ASSERT_TRUE(back.has_value()) << back.error();
        EXPECT_EQ(back->num_rows(), 0);
    }
    // A wrong hidden size and an out-of-range expert are named.
    cluster::split_dispatch(map, 1, 0, act, hidden, per_group);
    const cluster::encoded_frame full = cluster::encode_dispatch({1, 1, 0}, per_group[2]);
    auto wrong =
        cluster::decode_dispatch(full.header, full.payload, hidden + 1, c.n_routed_experts);
    ASSERT_FALSE(wrong.has_value());
    EXPECT_NE(wrong.error().find("row_elems"), std::string::npos) << wrong.error();
    auto out_of_range = cluster::decode_dispatch(full.header, full.payload, hidden, 1);
    ASSERT_FALSE(out_of_range.has_value());
    EXPECT_NE(out_of_range.error().find("not a routed expert"), std::string::npos);
}

// The wire layout, written out by hand from moe_frames.hpp: all hidden rows, then each row's
// slot count and max_slots (expert, weight) pairs, padded with (−1, 0).
TEST(MoeFrames, DispatchPayloadIsTheHiddenRowsThenEachRowsSlots) {
    cluster::dispatch_rows rows;
    rows.reset(3);
    rows.h = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
    rows.token = {0, 5};
    rows.expert = {7, 2, 9};
    rows.weight = {0.5f, 0.25f, 2.0f};
    rows.slot_begin = {0, 2, 3};
    const cluster::encoded_frame f = cluster::encode_dispatch({1, 2, 0}, rows);
    EXPECT_EQ(f.header.row_elems, 3u);
    EXPECT_EQ(f.header.row_bytes, 3u * 4 + 4 + 2 * 8);
    std::vector<std::byte> expected;
    auto put = [&](auto v) {
        const auto* b = reinterpret_cast<const std::byte*>(&v);
        expected.insert(expected.end(), b, b + sizeof(v));
    };
    for (float v : {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}) put(v);
    put(int32_t{2}), put(int32_t{7}), put(0.5f), put(int32_t{2}), put(0.25f);
    put(int32_t{1}), put(int32_t{9}), put(2.0f), put(int32_t{-1}), put(0.0f);
    EXPECT_EQ(f.payload, expected);
    // A row whose count exceeds max_slots is refused by row.
    cluster::encoded_frame bad = f;
    const int32_t too_many = 3;
    std::memcpy(bad.payload.data() + 6 * 4 + 20, &too_many, sizeof(too_many));
    auto refused = cluster::decode_dispatch(bad.header, bad.payload, 3, 16);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().find("row 1 has 3 slots"), std::string::npos) << refused.error();
}

// One group (all experts), two paired workers, frames crafted by hand.
class ExpertGroupUnit : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto& model = shared_tiny_model();
        map_ = testing::three_group_map(model.config());
        group_plane_ = std::make_unique<transport::inproc_data_plane>(
            fabric_, transport::inproc_data_plane_config{"experts-1"});
        map_.set_address(1, group_plane_->address());
        for (const char* name : {"attention-0", "attention-1"}) {
            worker_planes_.push_back(std::make_unique<transport::inproc_data_plane>(
                fabric_, transport::inproc_data_plane_config{name}));
            auto peer = worker_planes_.back()->connect(group_plane_->address(),
                                                       transport::deadline_after(2s));
            ASSERT_TRUE(peer.has_value());
            peers_.push_back(*peer);
        }
    }

    std::unique_ptr<expert_group> make_group(bool identity = false) {
        expert_group_config config;
        config.group_id = 1;
        config.worker_names = {"attention-0", "attention-1"};
        config.identity_experts = identity;
        auto group = expert_group::load(shared_tiny_model().path, map_, *group_plane_, config);
        EXPECT_TRUE(group.has_value()) << group.error().message;
        return group ? std::move(*group) : nullptr;
    }

    // Worker `worker_idx` sends its share of `act` for group 1 as unit `key`.
    cluster::dispatch_rows send(size_t worker_idx, const unit_key& key,
                                const model::layer_activations& act) {
        std::vector<cluster::dispatch_rows> per_group;
        cluster::split_dispatch(map_, static_cast<int32_t>(key.layer), 0, act,
                                shared_tiny_model().config().hidden_size, per_group);
        const cluster::encoded_frame f = cluster::encode_dispatch(key, per_group[1]);
        auto sent = worker_planes_[worker_idx]->send(peers_[worker_idx], f.header, {f.payload},
                                                     transport::deadline_after(2s));
        EXPECT_TRUE(sent.has_value());
        return per_group[1];
    }

    std::shared_ptr<transport::inproc_fabric> fabric_ =
        std::make_shared<transport::inproc_fabric>();
    cluster::placement_map map_;
    std::unique_ptr<transport::inproc_data_plane> group_plane_;
    std::vector<std::unique_ptr<transport::inproc_data_plane>> worker_planes_;
    std::vector<transport::peer_id> peers_;
};

TEST_F(ExpertGroupUnit, ComputesOnceEveryWorkerSentAndAnswersEach) {
    auto group = make_group();
    ASSERT_TRUE(group);
    const auto& model = shared_tiny_model();
    const int64_t hidden = model.config().hidden_size;
    const unit_key key{3, 2, 1};
    const model::layer_activations act =
        make_activations(6, hidden, static_cast<int32_t>(model.config().n_routed_experts), 4);
    const cluster::dispatch_rows rows = send(0, key, act);
    ASSERT_GT(rows.num_rows(), 0);
    send(1, key, model::layer_activations{});  // 0 tokens from worker 1
    auto report = group->serve_one_unit(key, transport::deadline_after(2s));
    ASSERT_TRUE(report.has_value()) << report.error().message;
    EXPECT_EQ(report->rows_by_worker, (std::vector<int64_t>{rows.num_rows(), 0}));
    EXPECT_EQ(report->num_assignments, rows.num_slots());

    // Worker 0's combine equals stage_experts on the full model for the same rows.
    auto combine = worker_planes_[0]->receive(transport::deadline_after(2s), {.peer = peers_[0]});
    ASSERT_TRUE(combine.has_value()) << combine.error().message;
    EXPECT_EQ(cluster::unit_of(combine->header), key);
    ASSERT_FALSE(cluster::check_combine(combine->header, hidden, rows.num_rows()).has_value());
    model::expert_dispatch d;
    for (int64_t r = 0; r < rows.num_rows(); ++r) {
        for (int32_t s = rows.slot_begin[r]; s < rows.slot_begin[r + 1]; ++s) {
            d.token.push_back(static_cast<int32_t>(r));
            d.expert.push_back(rows.expert[s]);
            d.weight.push_back(rows.weight[s]);
        }
    }
    std::vector<float> expected(rows.h.size(), 0.0f);
    model::stage_experts(*model.full, key.layer, rows.h.data(), rows.num_rows(), d,
                         expected.data());
    std::vector<float> got(expected.size());
    std::memcpy(got.data(), combine->payload.data(), combine->payload.size());
    EXPECT_TRUE(testing::bitwise_equal(got, expected));

    auto empty = worker_planes_[1]->receive(transport::deadline_after(2s), {.peer = peers_[1]});
    ASSERT_TRUE(empty.has_value()) << empty.error().message;
    EXPECT_EQ(empty->header.num_tokens, 0u);
    EXPECT_EQ(cluster::unit_of(empty->header), key);
}

TEST_F(ExpertGroupUnit, MissingWorkerFailsTheUnitByNameAndTheGroupStaysUp) {
    auto group = make_group();
    ASSERT_TRUE(group);
    const int64_t hidden = shared_tiny_model().config().hidden_size;
    const model::layer_activations act = make_activations(
        3, hidden, static_cast<int32_t>(shared_tiny_model().config().n_routed_experts), 2);
    send(0, {1, 0, 0}, act);
    const auto start = transport::clock::now();
    auto failed = group->serve_one_unit({1, 0, 0}, transport::deadline_after(200ms));
    const auto waited = transport::clock::now() - start;
    ASSERT_FALSE(failed.has_value());
    EXPECT_EQ(failed.error().code, cluster::cluster_error::dispatch_timeout);
    EXPECT_NE(failed.error().message.find("attention-1"), std::string::npos)
        << failed.error().message;
    EXPECT_EQ(failed.error().message.find("attention-0"), std::string::npos)
        << failed.error().message;
    EXPECT_NE(failed.error().message.find("layer 0"), std::string::npos);
    EXPECT_GE(waited, 200ms);
    EXPECT_LT(waited, 2s);
    // The next unit is served.
    send(0, {2, 0, 0}, act);
    send(1, {2, 0, 0}, act);
    auto served = group->serve_one_unit({2, 0, 0}, transport::deadline_after(2s));
    ASSERT_TRUE(served.has_value()) << served.error().message;
    EXPECT_EQ(group->stats().units_failed, 1u);
    EXPECT_EQ(group->stats().units_served, 1u);
}

TEST_F(ExpertGroupUnit, IdentityExpertsReturnWeightedRows) {
    auto group = make_group(/*identity=*/true);
    ASSERT_TRUE(group);
    const int64_t hidden = shared_tiny_model().config().hidden_size;
    const auto num_experts = static_cast<int32_t>(shared_tiny_model().config().n_routed_experts);
    // Each worker's answer is scaled in place in its own dispatch payload (its first block).
    const model::layer_activations act0 = make_activations(64, hidden, num_experts, 3);
    const model::layer_activations act1 = make_activations(16, hidden, num_experts, 2);
    const cluster::dispatch_rows sent[] = {send(0, {5, 1, 0}, act0), send(1, {5, 1, 0}, act1)};
    auto served = group->serve_one_unit({5, 1, 0}, transport::deadline_after(2s));
    ASSERT_TRUE(served.has_value()) << served.error().message;
    EXPECT_EQ(served->num_assignments, sent[0].num_slots() + sent[1].num_slots());
    for (size_t w = 0; w < 2; ++w) {
        const cluster::dispatch_rows& rows = sent[w];
        ASSERT_GT(rows.num_rows(), w == 0 ? 16 : 0);
        auto combine =
            worker_planes_[w]->receive(transport::deadline_after(2s), {.peer = peers_[w]});
        ASSERT_TRUE(combine.has_value());
        ASSERT_FALSE(cluster::check_combine(combine->header, hidden, rows.num_rows()).has_value());
        std::vector<float> got(static_cast<size_t>(rows.num_rows() * hidden));
        ASSERT_EQ(combine->payload.size(), got.size() * sizeof(float));
        std::memcpy(got.data(), combine->payload.data(), combine->payload.size());
        for (int64_t r = 0; r < rows.num_rows(); ++r) {
            float sum = 0.0f;
            for (int32_t s = rows.slot_begin[r]; s < rows.slot_begin[r + 1]; ++s)
                sum += rows.weight[s];
            for (int64_t i = 0; i < hidden; ++i)
                ASSERT_EQ(got[r * hidden + i], sum * rows.h[r * hidden + i])
                    << "worker " << w << " row " << r << " element " << i;
        }
    }
}

TEST_F(ExpertGroupUnit, ExpertNotHeldIsABadDispatchNamingTheWorker) {
    auto group = make_group();
    ASSERT_TRUE(group);
    const auto& c = shared_tiny_model().config();
    int32_t foreign = -1;
    for (int32_t e = 0; e < c.n_routed_experts && foreign < 0; ++e)
        if (!map_.holds(1, 0, e)) foreign = e;
    ASSERT_GE(foreign, 0);
    cluster::dispatch_rows rows;
    rows.reset(c.hidden_size);
    rows.token.push_back(0);
    rows.h.assign(static_cast<size_t>(c.hidden_size), 0.5f);
    rows.expert.push_back(foreign);
    rows.weight.push_back(1.0f);
    rows.slot_begin.push_back(1);
    const cluster::encoded_frame f = cluster::encode_dispatch({7, 0, 0}, rows);
    ASSERT_TRUE(worker_planes_[1]
                    ->send(peers_[1], f.header, {f.payload}, transport::deadline_after(2s))
                    .has_value());
    send(0, {7, 0, 0}, model::layer_activations{});
    auto served = group->serve_one_unit({7, 0, 0}, transport::deadline_after(2s));
    ASSERT_FALSE(served.has_value());
    EXPECT_EQ(served.error().code, cluster::cluster_error::bad_dispatch);
    EXPECT_NE(served.error().message.find("attention-1"), std::string::npos)
        << served.error().message;
    EXPECT_NE(served.error().message.find("expert " + std::to_string(foreign)), std::string::npos);
}

// A dispatch from a peer that is not paired (a stale worker, a stray process) is reported and
// dropped, and the unit it named is still served for the paired workers (the unit was marked
// failed before, and both workers' frames dropped: each waited for its combine deadline).
TEST_F(ExpertGroupUnit, StrayDispatchDoesNotFailThePairedWorkersUnit) {
    auto group = make_group();
    ASSERT_TRUE(group);
    const auto& model = shared_tiny_model();
    const int64_t hidden = model.config().hidden_size;
    const unit_key key{5, 1, 0};
    const model::layer_activations act =
        make_activations(4, hidden, static_cast<int32_t>(model.config().n_routed_experts), 6);
    auto stranger = std::make_unique<transport::inproc_data_plane>(
        fabric_, transport::inproc_data_plane_config{"stranger"});
    auto to_group = stranger->connect(group_plane_->address(), transport::deadline_after(2s));
    ASSERT_TRUE(to_group.has_value());
    std::vector<cluster::dispatch_rows> per_group;
    cluster::split_dispatch(map_, static_cast<int32_t>(key.layer), 0, act, hidden, per_group);
    const cluster::encoded_frame stray = cluster::encode_dispatch(key, per_group[1]);
    ASSERT_TRUE(
        stranger->send(*to_group, stray.header, {stray.payload}, transport::deadline_after(2s)));
    std::jthread serving([&](std::stop_token stop) { group->serve(stop); });
    const auto until = transport::clock::now() + 2s;
    while (group->stats().frames_dropped == 0 && transport::clock::now() < until)
        std::this_thread::sleep_for(5ms);
    ASSERT_EQ(group->stats().frames_dropped, 1u) << "the stray frame was not seen first";
    send(0, key, act);
    send(1, key, act);
    for (size_t worker_idx = 0; worker_idx < 2; ++worker_idx) {
        auto combine = worker_planes_[worker_idx]->receive(transport::deadline_after(2s),
                                                           {.peer = peers_[worker_idx]});
        ASSERT_TRUE(combine.has_value())
            << "worker " << worker_idx << ": " << combine.error().message;
        EXPECT_EQ(cluster::unit_of(combine->header), key);
    }
    serving.request_stop();
    serving.join();
    EXPECT_EQ(group->stats().units_served, 1u);
}

}  // namespace
}  // namespace longcat::experts
