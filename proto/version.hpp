// Wire versions: the protocol version of proto/ (frames and CAF messages) and the UCX library
// version, both exchanged in every handshake (UCX frame handshake and the CAF `hello`).
// Rule: peers must speak the same protocol version and run UCX of the same major.minor (UCX only
// promises wire compatibility within a minor series); the UCX release number may differ.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace longcat::proto {

// Bump on any change to a frame layout, the hello payload or a CAF message's fields.
// 3: a row-kind payload carries all rows' values, then all rows' metadata (was row by row).
// 4: step_sequence carries cached_tokens.
// 5: liveness_probe (the coordinator probes its expert groups).
inline constexpr uint16_t kProtocolVersion = 5;

struct ucx_version {
    uint32_t major = 0;
    uint32_t minor = 0;
    uint32_t release = 0;
    bool operator==(const ucx_version&) const = default;
};

// The UCX library this process runs (ucp_get_version), not the headers it was built with.
ucx_version linked_ucx_version();
// ucp_get_version_string(), e.g. "1.13.1".
std::string linked_ucx_version_string();
std::string to_string(const ucx_version& version);  // "1.13.1"

// What a side announces in a handshake.
struct wire_versions {
    uint16_t protocol = kProtocolVersion;
    ucx_version ucx;
    bool operator==(const wire_versions&) const = default;
};

// This process: kProtocolVersion and linked_ucx_version().
wire_versions local_wire_versions();

// Empty when `local` and `remote` may talk; otherwise a message naming both sides, e.g.
// "version mismatch: attention-0 (ucx://127.0.0.1:4100) speaks protocol 1 with UCX 1.13.1,
//  experts-3 (ucx://127.0.0.1:4200) speaks protocol 2 with UCX 1.13.1".
std::optional<std::string> describe_version_mismatch(std::string_view local_name,
                                                     const wire_versions& local,
                                                     std::string_view remote_name,
                                                     const wire_versions& remote);

}  // namespace longcat::proto
