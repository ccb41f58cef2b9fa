#include "proto/messages.hpp"

#include <caf/actor_system_config.hpp>

namespace longcat::proto {

hello make_hello(node_role role, std::string name, std::string data_plane_address) {
    const ucx_version ucx = linked_ucx_version();
    hello message;
    message.protocol_version = kProtocolVersion;
    message.ucx_major = ucx.major;
    message.ucx_minor = ucx.minor;
    message.ucx_release = ucx.release;
    message.role = role;
    message.name = std::move(name);
    message.data_plane_address = std::move(data_plane_address);
    return message;
}

wire_versions versions_of(const hello& message) {
    return {message.protocol_version, {message.ucx_major, message.ucx_minor, message.ucx_release}};
}

std::optional<std::string> check_hello(const hello& local, const hello& remote) {
    auto label = [](const hello& message) {
        return message.name + " (" + std::string(to_string(message.role)) + ")";
    };
    return describe_version_mismatch(label(local), versions_of(local), label(remote),
                                     versions_of(remote));
}

void register_message_types(caf::actor_system_config& config) {
    config.add_message_types<caf::id_block::longcat>();
}

}  // namespace longcat::proto
