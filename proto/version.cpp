#include "proto/version.hpp"

#include <ucp/api/ucp.h>

namespace longcat::proto {

ucx_version linked_ucx_version() {
    unsigned major = 0;
    unsigned minor = 0;
    unsigned release = 0;
    ucp_get_version(&major, &minor, &release);
    return {major, minor, release};
}

std::string linked_ucx_version_string() { return ucp_get_version_string(); }

std::string to_string(const ucx_version& version) {
    return std::to_string(version.major) + "." + std::to_string(version.minor) + "." +
           std::to_string(version.release);
}

wire_versions local_wire_versions() { return {kProtocolVersion, linked_ucx_version()}; }

std::optional<std::string> describe_version_mismatch(std::string_view local_name,
                                                     const wire_versions& local,
                                                     std::string_view remote_name,
                                                     const wire_versions& remote) {
    const bool same_protocol = local.protocol == remote.protocol;
    const bool same_ucx =
        local.ucx.major == remote.ucx.major && local.ucx.minor == remote.ucx.minor;
    if (same_protocol && same_ucx) return std::nullopt;
    auto side = [](std::string_view name, const wire_versions& v) {
        return std::string(name) + " speaks protocol " + std::to_string(v.protocol) + " with UCX " +
               to_string(v.ucx);
    };
    std::string what = !same_protocol && !same_ucx ? "protocol and UCX version mismatch"
                       : !same_protocol            ? "protocol version mismatch"
                                                   : "UCX version mismatch";
    return what + ": " + side(local_name, local) + ", " + side(remote_name, remote);
}

}  // namespace longcat::proto
