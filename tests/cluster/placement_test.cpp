// placement_map: validation with named errors, the uneven split, replica choice, text form.
#include "actors/cluster/placement.hpp"

#include <gtest/gtest.h>

#include <set>

namespace longcat::cluster {
namespace {

std::vector<expert_group_assignment> two_groups() {
    // 2 layers × 4 experts; expert 1 of layer 0 has two replicas.
    return {{"experts-0", "", {{0, 1}, {0, 1, 2}}}, {"experts-1", "", {{1, 2, 3}, {3}}}};
}

TEST(Placement, ValidMapIndexesReplicas) {
    auto map = placement_map::create(5, 2, 4, two_groups());
    ASSERT_TRUE(map.has_value()) << map.error().message;
    EXPECT_EQ(map->version(), 5u);
    EXPECT_EQ(map->num_groups(), 2);
    EXPECT_EQ(std::vector<int32_t>(map->replicas(0, 1).begin(), map->replicas(0, 1).end()),
              (std::vector<int32_t>{0, 1}));
    EXPECT_EQ(map->replica_for(0, 1, 0), 0);
    EXPECT_EQ(map->replica_for(0, 1, 1), 1);
    EXPECT_EQ(map->replica_for(0, 1, 2), 0);
    EXPECT_EQ(map->replica_for(1, 3, 1), 1);  // a single replica serves every worker
    EXPECT_TRUE(map->holds(1, 0, 2));
    EXPECT_FALSE(map->holds(0, 0, 2));
    EXPECT_EQ(map->find_group("experts-1"), 1);
    EXPECT_FALSE(map->find_group("experts-9").has_value());
    const model::weight_selection sel = map->weight_selection_for(1);
    EXPECT_FALSE(sel.attention);
    EXPECT_FALSE(sel.all_experts);
    EXPECT_EQ(sel.experts_by_layer, (std::vector<std::vector<int32_t>>{{1, 2, 3}, {3}}));
}

TEST(Placement, NamedErrors) {
    auto expect_error = [](placement_result<placement_map> r, placement_error code,
                           std::string_view mention) {
        ASSERT_FALSE(r.has_value());
        EXPECT_EQ(r.error().code, code) << r.error().message;
        EXPECT_NE(r.error().message.find(to_string(code)), std::string::npos) << r.error().message;
        EXPECT_NE(r.error().message.find(mention), std::string::npos) << r.error().message;
    };
    expect_error(placement_map::create(0, 2, 4, two_groups()), placement_error::bad_version, "0");
    expect_error(placement_map::create(1, 0, 4, two_groups()), placement_error::bad_shape,
                 "num_layers 0");
    expect_error(placement_map::create(1, 2, 4, {}), placement_error::no_groups, "no expert group");
    auto dup = two_groups();
    dup[1].name = "experts-0";
    expect_error(placement_map::create(1, 2, 4, dup), placement_error::duplicate_group,
                 "experts-0");
    auto short_layers = two_groups();
    short_layers[1].experts_by_layer.pop_back();
    expect_error(placement_map::create(1, 2, 4, short_layers), placement_error::bad_shape,
                 "experts-1");
    auto zero = two_groups();
    zero[0].experts_by_layer[1].push_back(5);  // a zero expert (≥ num_routed_experts)
    expect_error(placement_map::create(1, 2, 4, zero), placement_error::not_routed_expert,
                 "experts-0 layer 1 expert 5");
    auto twice = two_groups();
    twice[1].experts_by_layer[0].push_back(3);
    expect_error(placement_map::create(1, 2, 4, twice), placement_error::duplicate_expert,
                 "experts-1 layer 0 expert 3");
    auto missing = two_groups();
    missing[0].experts_by_layer[0] = {1};
    expect_error(placement_map::create(1, 2, 4, missing), placement_error::missing_replica,
                 "layer 0 expert 0");

    auto map = placement_map::create(1, 2, 4, two_groups());
    ASSERT_TRUE(map.has_value());
    model::model_config c;
    c.num_layers = 3;
    c.n_routed_experts = 4;
    auto fits = map->check_model(c);
    ASSERT_FALSE(fits.has_value());
    EXPECT_EQ(fits.error().code, placement_error::model_mismatch);
    expect_error(placement_from_json("{not json"), placement_error::bad_text, "bad_text");
}

TEST(Placement, UnevenSplitCoversEveryExpertOnce) {
    const auto split = split_experts(4, 12, {1, 2, 3});
    ASSERT_EQ(split.size(), 3u);
    for (int32_t layer_idx = 0; layer_idx < 4; ++layer_idx) {
        EXPECT_EQ(split[0][layer_idx].size(), 2u);
        EXPECT_EQ(split[1][layer_idx].size(), 4u);
        EXPECT_EQ(split[2][layer_idx].size(), 6u);
        std::set<int32_t> all;
        for (const auto& g : split) all.insert(g[layer_idx].begin(), g[layer_idx].end());
        EXPECT_EQ(all.size(), 12u);
    }
    EXPECT_NE(split[0][0], split[0][1]) << "groups should hold different experts per layer";
    // Rounding: 7 experts over shares 1:1:1 → 3, 2, 2 (largest remainder, lower id first).
    const auto odd = split_experts(1, 7, {1, 1, 1});
    EXPECT_EQ(odd[0][0].size() + odd[1][0].size() + odd[2][0].size(), 7u);
    auto map = make_uneven_placement(3, 3, 12, 3);
    ASSERT_TRUE(map.has_value()) << map.error().message;
    EXPECT_EQ(map->group(2).name, "experts-2");
}

TEST(Placement, JsonRoundTrip) {
    auto map = placement_map::create(9, 2, 4, two_groups());
    ASSERT_TRUE(map.has_value());
    map->set_address(1, "ucx://127.0.0.1:4200");
    const std::string text = placement_to_json(*map);
    auto back = placement_from_json(text);
    ASSERT_TRUE(back.has_value()) << back.error().message;
    EXPECT_EQ(*back, *map);
    EXPECT_EQ(back->group(1).address, "ucx://127.0.0.1:4200");
}

}  // namespace
}  // namespace longcat::cluster
