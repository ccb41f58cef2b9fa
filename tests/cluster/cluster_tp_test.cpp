// Data-parallel attention with a tensor-parallel dense FFN (ARCHITECTURE.md §3): two attention
// workers form a TP group of 2 ranks (each loads its shard of the dense FFNs), each owns its own
// sequences, and both share three uneven expert groups over the inproc fabric. Every rank's
// logits must equal the single-process engine's for its sequences within 1e-5, for m = 1, 2
// and 4 — with m = 4 one rank has fewer sequences than micro-batches, so it runs empty
// micro-batches that must still take their part in the group's collectives.
#include "tests/cluster/cluster_fixture.hpp"

namespace longcat::testing {
namespace {

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

    std::vector<std::unique_ptr<transport::inproc_data_plane>> planes;
    for (const char* name : {"attention-0.0", "attention-0.1"})
        planes.push_back(std::make_unique<transport::inproc_data_plane>(
            fabric, transport::inproc_data_plane_config{name}));
    expect_tp_pair_matches_engine(model, *map, *planes[0], *planes[1], m);
    for (size_t g = 0; g < groups.size(); ++g) EXPECT_TRUE(groups.group(g).failures().empty());
}

INSTANTIATE_TEST_SUITE_P(MicroBatches, TensorParallelGroup, ::testing::Values(1, 2, 4),
                         [](const auto& info) { return "m" + std::to_string(info.param); });

}  // namespace
}  // namespace longcat::testing
