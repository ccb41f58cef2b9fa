// Data-parallel attention with a tensor-parallel dense FFN (ARCHITECTURE.md §3): two attention
// workers form a TP group of 2 ranks (each loads its shard of the dense FFNs), each owns its own
// sequences, and both share three uneven expert groups over the inproc fabric. Every rank's
// logits must equal the single-process engine's for its sequences within 1e-5, for m = 1, 2
// and 4 — with m = 4 one rank has fewer sequences than micro-batches, so it runs empty
// micro-batches that must still take their part in the group's collectives.
#include <future>

#include "actors/collective/collective.hpp"
#include "tests/cluster/cluster_fixture.hpp"

namespace longcat::testing {
namespace {

using attention::worker_executor_config;
using transport::inproc_fabric;

class TensorParallelGroup : public ::testing::TestWithParam<int32_t> {};

TEST_P(TensorParallelGroup, EachRankMatchesTheEngineForItsOwnSequences) {
    const tiny_model& model = shared_tiny_model();
    const auto& c = model.config();
    const int32_t m = GetParam();
    auto map = cluster::make_uneven_placement(3, static_cast<int32_t>(c.num_layers),
                                              static_cast<int32_t>(c.n_routed_experts), 1);
    ASSERT_TRUE(map.has_value());
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_groups groups(fabric, model, *map, {"attention-0.0", "attention-0.1"});
    ASSERT_TRUE(groups.ok());

    // Each rank: its own plane, its TP shard of the weights, a collective to the other rank.
    const auto shards = tp_shards(model, 2);
    const std::vector<std::string> names{"attention-0.0", "attention-0.1"};
    std::vector<std::unique_ptr<transport::inproc_data_plane>> planes;
    for (const auto& name : names)
        planes.push_back(std::make_unique<transport::inproc_data_plane>(
            fabric, transport::inproc_data_plane_config{name}));
    // Rank 0 connects to rank 1; rank 1 learns rank 0's peer id when its hello arrives.
    auto to_rank1 = planes[0]->connect(planes[1]->address(), transport::deadline_after(5s));
    ASSERT_TRUE(to_rank1.has_value()) << to_rank1.error().message;
    auto to_rank0 = planes[1]->connect(planes[0]->address(), transport::deadline_after(5s));
    ASSERT_TRUE(to_rank0.has_value()) << to_rank0.error().message;
    collective::data_plane_collective c0(*planes[0], 0, {transport::peer_id{}, *to_rank1}, 42);
    collective::data_plane_collective c1(*planes[1], 1, {*to_rank0, transport::peer_id{}}, 42);
    collective::collective* collectives[2] = {&c0, &c1};

    std::vector<std::unique_ptr<attention::worker_executor>> executors;
    for (int r = 0; r < 2; ++r) {
        worker_executor_config config;
        config.worker_index = r;
        config.num_micro_batches = m;
        config.kv = test_kv();
        config.dense_ffn = collective::tp_dense_ffn(*collectives[r], c.hidden_size, 5000ms);
        auto executor = attention::worker_executor::create(shards[static_cast<size_t>(r)], *map,
                                                           *planes[static_cast<size_t>(r)], config);
        ASSERT_TRUE(executor.has_value()) << executor.error().message;
        auto connected = (*executor)->connect_groups(transport::deadline_after(5s));
        ASSERT_TRUE(connected.has_value()) << connected.error().message;
        executors.push_back(std::move(*executor));
    }

    // Rank 0 owns three sequences, rank 1 two: m = 4 leaves empty micro-batches on both.
    const reference_run ref0 = run_engine(model.full, {5, 1, 7}, 3, /*seed=*/21);
    const reference_run ref1 = run_engine(model.full, {3, 8}, 3, /*seed=*/22);
    auto run1 = std::async(std::launch::async, [&] { return run_worker(*executors[1], ref1.plan); });
    const auto got0 = run_worker(*executors[0], ref0.plan);
    const auto got1 = run1.get();
    expect_matches(ref0, got0, /*bitwise=*/false);
    expect_matches(ref1, got1, /*bitwise=*/false);
    for (size_t g = 0; g < groups.size(); ++g) EXPECT_TRUE(groups.group(g).failures().empty());
}

INSTANTIATE_TEST_SUITE_P(MicroBatches, TensorParallelGroup, ::testing::Values(1, 2, 4),
                         [](const auto& info) { return "m" + std::to_string(info.param); });

}  // namespace
}  // namespace longcat::testing
