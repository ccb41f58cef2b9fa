// peer_liveness: how long a peer may stay silent before it is declared down — a member's
// coordinator (CAF heartbeats, caf_runtime_options::peer_timeout) and the coordinator's expert
// groups (liveness probes, one every quarter of it); every service's `peer-timeout-ms`. No CAF
// here: the services' config structs validate the setting with it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace longcat::control {

inline constexpr int64_t kHeartbeatIntervalMs = 500;  // every node sends one this often
inline constexpr int64_t kDefaultPeerTimeoutMs = 10000;
inline constexpr int64_t kMinPeerTimeoutMs = 4 * kHeartbeatIntervalMs;

// nullopt when `peer_timeout_ms` is 0 (off) or at least kMinPeerTimeoutMs; else the error,
// naming `option`.
inline std::optional<std::string> check_peer_timeout(int64_t peer_timeout_ms,
                                                     const std::string& option) {
    if (peer_timeout_ms == 0 || peer_timeout_ms >= kMinPeerTimeoutMs) return std::nullopt;
    return option + " must be 0 (off) or >= " + std::to_string(kMinPeerTimeoutMs) +
           " (4 heartbeats of " + std::to_string(kHeartbeatIntervalMs) + " ms), got " +
           std::to_string(peer_timeout_ms);
}

}  // namespace longcat::control
