// The role a process plays in the cluster (ARCHITECTURE.md §1), as announced in `hello`.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace longcat::proto {

// Wire codes are fixed; never renumber.
enum class node_role : uint8_t {
    gateway = 1,
    coordinator = 2,
    attention_prefill = 3,
    attention_decode = 4,
    expert_group = 5,
};

constexpr std::string_view to_string(node_role role) {
    switch (role) {
        case node_role::gateway: return "gateway";
        case node_role::coordinator: return "coordinator";
        case node_role::attention_prefill: return "attention_prefill";
        case node_role::attention_decode: return "attention_decode";
        case node_role::expert_group: return "expert_group";
    }
    return "unknown";
}

constexpr std::optional<node_role> parse_node_role(std::string_view text) {
    for (node_role role : {node_role::gateway, node_role::coordinator, node_role::attention_prefill,
                           node_role::attention_decode, node_role::expert_group}) {
        if (to_string(role) == text) return role;
    }
    return std::nullopt;
}

}  // namespace longcat::proto
