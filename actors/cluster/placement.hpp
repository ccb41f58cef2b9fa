// placement_map: which expert groups hold which routed experts, per layer (ARCHITECTURE.md §7).
// Versioned; every routed expert of every layer has ≥ 1 replica; zero (identity) experts are
// never placed (they hold no weights and their activations never leave the attention worker).
// Attention workers read it to pick the group each (token, slot) goes to; expert groups read it
// to know what to load. Group ids are indices into groups(), stable for one version.
//
// The runtime form of proto::placement_map (the CAF message); this header stays CAF-free.
// Text form (JSON, for command lines and files):
//   {"version": 3, "num_layers": 2, "num_routed_experts": 4,
//    "groups": [{"name": "experts-0", "address": "ucx://127.0.0.1:4200",
//                "experts_by_layer": [[0, 1], [2]]}, ...]}
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.hpp"
#include "model/weights.hpp"
#include "proto/expected.hpp"

namespace longcat::cluster {

enum class placement_error : uint8_t {
    bad_version,        // version 0 (0 means "no map yet")
    bad_shape,          // num_layers or num_routed_experts < 1, or a group's experts_by_layer
                        // is not num_layers long
    no_groups,          // no expert group at all
    duplicate_group,    // two groups with one name, or an empty name
    not_routed_expert,  // an index outside [0, num_routed_experts): zero experts are never placed
    duplicate_expert,   // one expert listed twice in one group's list of one layer
    missing_replica,    // a routed expert of some layer that no group holds
    model_mismatch,     // the map's layer or expert counts differ from the model's config
    bad_text,           // the JSON text form does not parse
};
std::string_view to_string(placement_error error);

struct placement_failure {
    placement_error code = placement_error::bad_shape;
    std::string message;  // "<code>: <what>", naming the group, layer and expert
};

template <class T>
using placement_result = proto::expected<T, placement_failure>;
using placement_status = placement_result<void>;

// One expert group's entry.
struct expert_group_assignment {
    std::string name;     // e.g. "experts-1"; unique in a map; its data plane's name
    std::string address;  // its data-plane address; may stay empty until the group listens
    std::vector<std::vector<int32_t>> experts_by_layer;  // [num_layers][..] routed expert ids
    bool operator==(const expert_group_assignment&) const = default;
};

class placement_map {
  public:
    placement_map() = default;  // empty: version 0, no groups; only assignable

    // Validates everything (see placement_error) and builds the replica index. Each group's
    // per-layer expert lists are kept sorted ascending.
    static placement_result<placement_map> create(uint64_t version, int32_t num_layers,
                                                  int32_t num_routed_experts,
                                                  std::vector<expert_group_assignment> groups);

    uint64_t version() const { return version_; }
    int32_t num_layers() const { return num_layers_; }
    int32_t num_routed_experts() const { return num_routed_experts_; }
    int32_t num_groups() const { return static_cast<int32_t>(groups_.size()); }
    const std::vector<expert_group_assignment>& groups() const { return groups_; }
    const expert_group_assignment& group(int32_t group_id) const { return groups_[group_id]; }
    std::optional<int32_t> find_group(std::string_view name) const;

    // The groups holding routed expert `expert_idx` of layer `layer_idx`, ascending (≥ 1).
    std::span<const int32_t> replicas(int32_t layer_idx, int32_t expert_idx) const;
    // The replica a worker sends this expert's tokens to: replicas[worker_index mod count].
    // Deterministic, so one worker always uses the same replica under one map, and workers of
    // different indices spread over the replicas of a hot expert.
    int32_t replica_for(int32_t layer_idx, int32_t expert_idx, int32_t worker_index) const;
    // Whether `group_id` holds the expert.
    bool holds(int32_t group_id, int32_t layer_idx, int32_t expert_idx) const;

    // What group `group_id` loads: no attention weights, exactly its experts.
    model::weight_selection weight_selection_for(int32_t group_id) const;

    // The map fits the model: same number of layers and routed experts.
    placement_status check_model(const model::model_config& config) const;

    // Fills in a group's address (known once it listens); the map stays valid.
    void set_address(int32_t group_id, std::string address);

    bool operator==(const placement_map& other) const {
        return version_ == other.version_ && num_layers_ == other.num_layers_ &&
               num_routed_experts_ == other.num_routed_experts_ && groups_ == other.groups_;
    }

  private:
    uint64_t version_ = 0;
    int32_t num_layers_ = 0;
    int32_t num_routed_experts_ = 0;
    std::vector<expert_group_assignment> groups_;
    // replicas_[layer_idx][expert_idx]: group ids holding the expert, ascending.
    std::vector<std::vector<std::vector<int32_t>>> replicas_;
};

// -- building maps ----------------------------------------------------------------------------

// Splits the routed experts of every layer over groups in proportion to `shares` (one entry per
// group, ≥ 0, not all 0; largest-remainder rounding), each group taking a contiguous run of a
// per-layer rotation of the expert ids (so a group holds different experts in different layers).
// Returns [group][layer][..]. Every routed expert lands in exactly one group.
std::vector<std::vector<std::vector<int32_t>>> split_experts(int32_t num_layers,
                                                             int32_t num_routed_experts,
                                                             const std::vector<int32_t>& shares);

// An uneven map over num_groups groups named "experts-<id>": group g gets a share of g + 1.
placement_result<placement_map> make_uneven_placement(uint64_t version, int32_t num_layers,
                                                      int32_t num_routed_experts,
                                                      int32_t num_groups);

// -- text form --------------------------------------------------------------------------------

std::string placement_to_json(const placement_map& map);
// Parses and validates (bad_text for malformed JSON, else the errors of create()).
placement_result<placement_map> placement_from_json(std::string_view text);

}  // namespace longcat::cluster
