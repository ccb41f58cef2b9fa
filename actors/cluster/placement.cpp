#include "actors/cluster/placement.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

namespace longcat::cluster {
namespace {

proto::unexpected<placement_failure> fail(placement_error code, const std::string& message) {
    return proto::unexpected(
        placement_failure{code, std::string(to_string(code)) + ": " + message});
}

}  // namespace

std::string_view to_string(placement_error error) {
    switch (error) {
        case placement_error::bad_version:
            return "bad_version";
        case placement_error::bad_shape:
            return "bad_shape";
        case placement_error::no_groups:
            return "no_groups";
        case placement_error::duplicate_group:
            return "duplicate_group";
        case placement_error::not_routed_expert:
            return "not_routed_expert";
        case placement_error::duplicate_expert:
            return "duplicate_expert";
        case placement_error::missing_replica:
            return "missing_replica";
        case placement_error::model_mismatch:
            return "model_mismatch";
        case placement_error::bad_text:
            return "bad_text";
    }
    return "unknown";
}

placement_result<placement_map> placement_map::create(uint64_t version, int32_t num_layers,
                                                      int32_t num_routed_experts,
                                                      std::vector<expert_group_assignment> groups) {
    if (version == 0) return fail(placement_error::bad_version, "version 0 means no map");
    if (num_layers < 1 || num_routed_experts < 1) {
        return fail(placement_error::bad_shape,
                    "num_layers " + std::to_string(num_layers) + ", num_routed_experts " +
                        std::to_string(num_routed_experts) + " (both must be ≥ 1)");
    }
    if (groups.empty()) return fail(placement_error::no_groups, "the map has no expert group");
    std::set<std::string> names;
    for (const expert_group_assignment& g : groups) {
        if (g.name.empty()) return fail(placement_error::duplicate_group, "a group has no name");
        if (!names.insert(g.name).second) {
            return fail(placement_error::duplicate_group, "two groups are named " + g.name);
        }
    }
    placement_map map;
    map.version_ = version;
    map.num_layers_ = num_layers;
    map.num_routed_experts_ = num_routed_experts;
    map.replicas_.assign(
        static_cast<size_t>(num_layers),
        std::vector<std::vector<int32_t>>(static_cast<size_t>(num_routed_experts)));
    for (size_t group_id = 0; group_id < groups.size(); ++group_id) {
        expert_group_assignment& g = groups[group_id];
        if (static_cast<int32_t>(g.experts_by_layer.size()) != num_layers) {
            return fail(placement_error::bad_shape,
                        g.name + " lists experts for " + std::to_string(g.experts_by_layer.size()) +
                            " layers, the map has " + std::to_string(num_layers));
        }
        for (int32_t layer_idx = 0; layer_idx < num_layers; ++layer_idx) {
            std::vector<int32_t>& experts = g.experts_by_layer[layer_idx];
            std::sort(experts.begin(), experts.end());
            for (size_t k = 0; k < experts.size(); ++k) {
                const int32_t expert_idx = experts[k];
                const std::string where = g.name + " layer " + std::to_string(layer_idx) +
                                          " expert " + std::to_string(expert_idx);
                if (expert_idx < 0 || expert_idx >= num_routed_experts) {
                    return fail(placement_error::not_routed_expert,
                                where + " is not a routed expert (0.." +
                                    std::to_string(num_routed_experts - 1) +
                                    "); zero experts are never placed");
                }
                if (k > 0 && experts[k - 1] == expert_idx) {
                    return fail(placement_error::duplicate_expert, where + " is listed twice");
                }
                map.replicas_[layer_idx][expert_idx].push_back(static_cast<int32_t>(group_id));
            }
        }
    }
    for (int32_t layer_idx = 0; layer_idx < num_layers; ++layer_idx) {
        for (int32_t expert_idx = 0; expert_idx < num_routed_experts; ++expert_idx) {
            if (map.replicas_[layer_idx][expert_idx].empty()) {
                return fail(placement_error::missing_replica,
                            "layer " + std::to_string(layer_idx) + " expert " +
                                std::to_string(expert_idx) + " has no replica in map version " +
                                std::to_string(version));
            }
        }
    }
    map.groups_ = std::move(groups);
    return map;
}

std::optional<int32_t> placement_map::find_group(std::string_view name) const {
    for (size_t group_id = 0; group_id < groups_.size(); ++group_id) {
        if (groups_[group_id].name == name) return static_cast<int32_t>(group_id);
    }
    return std::nullopt;
}

std::span<const int32_t> placement_map::replicas(int32_t layer_idx, int32_t expert_idx) const {
    return replicas_[layer_idx][expert_idx];
}

int32_t placement_map::replica_for(int32_t layer_idx, int32_t expert_idx,
                                   int32_t worker_index) const {
    const std::vector<int32_t>& r = replicas_[layer_idx][expert_idx];
    const auto count = static_cast<int32_t>(r.size());
    return r[static_cast<size_t>(((worker_index % count) + count) % count)];
}

bool placement_map::holds(int32_t group_id, int32_t layer_idx, int32_t expert_idx) const {
    if (layer_idx < 0 || layer_idx >= num_layers_ || expert_idx < 0 ||
        expert_idx >= num_routed_experts_) {
        return false;
    }
    const std::vector<int32_t>& r = replicas_[layer_idx][expert_idx];
    return std::binary_search(r.begin(), r.end(), group_id);
}

model::weight_selection placement_map::weight_selection_for(int32_t group_id) const {
    model::weight_selection sel;
    sel.attention = false;
    sel.all_experts = false;
    sel.experts_by_layer = groups_[group_id].experts_by_layer;
    return sel;
}

placement_status placement_map::check_model(const model::model_config& config) const {
    if (num_layers_ != config.num_layers || num_routed_experts_ != config.n_routed_experts) {
        return fail(placement_error::model_mismatch,
                    "map version " + std::to_string(version_) + " has " +
                        std::to_string(num_layers_) + " layers × " +
                        std::to_string(num_routed_experts_) + " routed experts, the model " +
                        std::to_string(config.num_layers) + " × " +
                        std::to_string(config.n_routed_experts));
    }
    return {};
}

void placement_map::set_address(int32_t group_id, std::string address) {
    groups_[group_id].address = std::move(address);
}

// -- building maps ----------------------------------------------------------------------------

std::vector<std::vector<std::vector<int32_t>>> split_experts(int32_t num_layers,
                                                             int32_t num_routed_experts,
                                                             const std::vector<int32_t>& shares) {
    const auto num_groups = static_cast<int64_t>(shares.size());
    const int64_t total_share = std::accumulate(shares.begin(), shares.end(), int64_t{0});
    // Largest remainder: floor(E·s/S) each, the leftover to the largest fractional parts
    // (lower group id first on ties).
    std::vector<int64_t> count(static_cast<size_t>(num_groups));
    std::vector<std::pair<int64_t, int64_t>> remainders;  // (−remainder, group)
    int64_t given = 0;
    for (int64_t g = 0; g < num_groups; ++g) {
        const int64_t scaled = static_cast<int64_t>(num_routed_experts) * shares[g];
        count[g] = total_share > 0 ? scaled / total_share : 0;
        given += count[g];
        remainders.emplace_back(total_share > 0 ? -(scaled % total_share) : 0, g);
    }
    std::sort(remainders.begin(), remainders.end());
    for (int64_t k = 0; given < num_routed_experts && k < num_groups; ++k, ++given) {
        ++count[remainders[k].second];
    }
    std::vector<std::vector<std::vector<int32_t>>> out(
        static_cast<size_t>(num_groups),
        std::vector<std::vector<int32_t>>(static_cast<size_t>(num_layers)));
    for (int32_t layer_idx = 0; layer_idx < num_layers; ++layer_idx) {
        // Rotate by a layer-dependent offset (coprime-ish stride) so runs differ per layer.
        const int64_t offset = (static_cast<int64_t>(layer_idx) * 5) % num_routed_experts;
        int64_t pos = 0;
        for (int64_t g = 0; g < num_groups; ++g) {
            for (int64_t k = 0; k < count[g]; ++k, ++pos) {
                out[g][layer_idx].push_back(
                    static_cast<int32_t>((pos + offset) % num_routed_experts));
            }
            std::sort(out[g][layer_idx].begin(), out[g][layer_idx].end());
        }
    }
    return out;
}

placement_result<placement_map> make_uneven_placement(uint64_t version, int32_t num_layers,
                                                      int32_t num_routed_experts,
                                                      int32_t num_groups) {
    std::vector<int32_t> shares(static_cast<size_t>(std::max(num_groups, 0)));
    std::iota(shares.begin(), shares.end(), 1);
    auto split = split_experts(num_layers, num_routed_experts, shares);
    std::vector<expert_group_assignment> groups;
    for (int32_t group_id = 0; group_id < num_groups; ++group_id) {
        groups.push_back({"experts-" + std::to_string(group_id), "", std::move(split[group_id])});
    }
    return placement_map::create(version, num_layers, num_routed_experts, std::move(groups));
}

// -- text form --------------------------------------------------------------------------------

std::string placement_to_json(const placement_map& map) {
    nlohmann::ordered_json j;
    j["version"] = map.version();
    j["num_layers"] = map.num_layers();
    j["num_routed_experts"] = map.num_routed_experts();
    j["groups"] = nlohmann::ordered_json::array();
    for (const expert_group_assignment& g : map.groups()) {
        nlohmann::ordered_json entry;
        entry["name"] = g.name;
        entry["address"] = g.address;
        entry["experts_by_layer"] = g.experts_by_layer;
        j["groups"].push_back(std::move(entry));
    }
    return j.dump();
}

placement_result<placement_map> placement_from_json(std::string_view text) {
    uint64_t version = 0;
    int32_t num_layers = 0, num_routed_experts = 0;
    std::vector<expert_group_assignment> groups;
    try {
        const nlohmann::json j = nlohmann::json::parse(text);
        version = j.at("version").get<uint64_t>();
        num_layers = j.at("num_layers").get<int32_t>();
        num_routed_experts = j.at("num_routed_experts").get<int32_t>();
        for (const nlohmann::json& entry : j.at("groups")) {
            groups.push_back(
                {entry.at("name").get<std::string>(), entry.value("address", std::string()),
                 entry.at("experts_by_layer").get<std::vector<std::vector<int32_t>>>()});
        }
    } catch (const nlohmann::json::exception& e) {
        return fail(placement_error::bad_text, e.what());
    }
    return placement_map::create(version, num_layers, num_routed_experts, std::move(groups));
}

}  // namespace longcat::cluster
