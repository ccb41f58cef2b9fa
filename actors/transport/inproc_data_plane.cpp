#include "actors/transport/inproc_data_plane.hpp"

#include <map>

#include "actors/transport/frame_inbox.hpp"

namespace longcat::transport {

namespace {
constexpr std::string_view kScheme = "inproc://";
}  // namespace

struct inproc_link {
    std::weak_ptr<inproc_endpoint> remote;
    peer_id remote_id;  // how the remote endpoint calls us
    peer_info info;
};

struct inproc_endpoint {
    std::string name;
    std::string address;
    proto::frame_limits limits;
    proto::wire_versions versions;
    frame_inbox inbox;

    mutable std::mutex mutex;
    std::map<peer_id, inproc_link> links;
    data_plane_stats stats;
    uint64_t next_peer = 1;
    bool closed = false;

    // The receiving half of a send: the checks the wire would make, then the inbox.
    void deliver(peer_id from, std::span<const std::byte> header_bytes,
                 std::span<const std::byte> payload) {
        std::string who;
        {
            std::lock_guard lock(mutex);
            if (closed) return;
            auto it = links.find(from);
            who = it != links.end() ? describe_peer(it->second.info) : to_string(from);
        }
        auto header = proto::decode_frame_header(header_bytes, limits);
        std::optional<proto::frame_failure> problem;
        if (!header) {
            problem = header.error();
        } else if (auto size = proto::check_payload_size(*header, payload.size())) {
            problem = size;
        } else if (header->kind == proto::frame_kind::handshake) {
            problem = proto::frame_failure{proto::frame_error::bad_handshake,
                                           "bad_handshake: handshake frame after the handshake"};
        }
        std::lock_guard lock(mutex);
        if (problem) {
            ++stats.bad_frames;
            inbox.push_error(from, make_failure(transport_error::bad_frame,
                                                "from " + who + ": " + problem->message)
                                       .error());
            return;
        }
        ++stats.frames_received;
        stats.bytes_received += payload.size();
        inbox.push_frame(from, *header, byte_buffer::copy_of(payload));
    }

    void fail_link(peer_id peer, const std::string& why) {
        std::lock_guard lock(mutex);
        auto it = links.find(peer);
        if (it == links.end() || it->second.info.failure) return;
        auto failure =
            make_failure(transport_error::peer_failed, describe_peer(it->second.info) + ": " + why)
                .error();
        it->second.info.failure = failure;
        ++stats.peer_failures;
        inbox.fail_peer(peer, std::move(failure));
    }
};

// -- inproc_fabric -----------------------------------------------------------------------------

std::string inproc_fabric::add(const std::string& name,
                               const std::shared_ptr<inproc_endpoint>& endpoint) {
    std::lock_guard lock(mutex_);
    std::string address = std::string(kScheme) + name + "#" + std::to_string(next_index_++);
    endpoints_[address] = endpoint;
    return address;
}

void inproc_fabric::remove(const std::string& address) {
    std::lock_guard lock(mutex_);
    endpoints_.erase(address);
}

std::shared_ptr<inproc_endpoint> inproc_fabric::find(std::string_view address) const {
    std::lock_guard lock(mutex_);
    auto it = endpoints_.find(std::string(address));
    return it == endpoints_.end() ? nullptr : it->second.lock();
}

// -- inproc_data_plane -------------------------------------------------------------------------

inproc_data_plane::inproc_data_plane(std::shared_ptr<inproc_fabric> fabric,
                                     inproc_data_plane_config config)
    : fabric_(std::move(fabric)), self_(std::make_shared<inproc_endpoint>()) {
    self_->name = std::move(config.name);
    self_->limits = config.limits;
    self_->limits.protocol_version = config.versions.protocol;
    self_->versions = config.versions;
    self_->address = fabric_->add(self_->name, self_);
}

inproc_data_plane::~inproc_data_plane() { close(); }

std::string inproc_data_plane::address() const { return self_->address; }
std::string inproc_data_plane::name() const { return self_->name; }
bool inproc_data_plane::supports(memory_type memory) const { return memory == memory_type::host; }

transport_result<peer_id> inproc_data_plane::connect(std::string_view address, deadline until) {
    if (!address.starts_with(kScheme)) {
        return make_failure(transport_error::bad_address,
                            "'" + std::string(address) + "' is not an inproc:// address");
    }
    {
        std::lock_guard lock(self_->mutex);
        if (self_->closed) return make_failure(transport_error::closed, self_->name + " is closed");
    }
    if (clock::now() > until) {
        return make_failure(transport_error::timeout,
                            "connect to " + std::string(address) + ": deadline already passed");
    }
    std::shared_ptr<inproc_endpoint> remote = fabric_->find(address);
    if (!remote) {
        return make_failure(transport_error::bad_address,
                            "no inproc endpoint at " + std::string(address));
    }
    const std::string local_label = self_->name + " (" + self_->address + ")";
    const std::string remote_label = remote->name + " (" + remote->address + ")";
    if (auto mismatch = proto::describe_version_mismatch(local_label, self_->versions, remote_label,
                                                         remote->versions)) {
        {
            std::lock_guard lock(remote->mutex);
            ++remote->stats.refused_handshakes;
            auto seen_remotely = proto::describe_version_mismatch(remote_label, remote->versions,
                                                                  local_label, self_->versions);
            remote->inbox.push_error(peer_id{},
                                     make_failure(transport_error::version_mismatch,
                                                  "refused " + local_label + ": " + *seen_remotely)
                                         .error());
        }
        std::lock_guard lock(self_->mutex);
        ++self_->stats.refused_handshakes;
        return make_failure(transport_error::version_mismatch, *mismatch);
    }
    peer_id local_id;
    {
        std::lock_guard lock(self_->mutex);
        local_id = peer_id{self_->next_peer++};
    }
    peer_id remote_id;
    {
        std::lock_guard lock(remote->mutex);
        if (remote->closed) {
            return make_failure(transport_error::peer_failed, remote_label + " is closed");
        }
        remote_id = peer_id{remote->next_peer++};
        remote->links[remote_id] = inproc_link{
            self_, local_id,
            peer_info{remote_id, self_->name, self_->address, self_->versions, false, {}}};
    }
    std::lock_guard lock(self_->mutex);
    self_->links[local_id] =
        inproc_link{remote, remote_id,
                    peer_info{local_id, remote->name, remote->address, remote->versions, true, {}}};
    return local_id;
}

transport_status inproc_data_plane::send(peer_id peer, const proto::frame_header& header,
                                         payload_view payload, deadline until) {
    proto::frame_header stamped = header;
    stamped.magic = proto::kFrameMagic;
    stamped.protocol_version = self_->versions.protocol;
    if (auto problem = proto::validate_frame_header(stamped, self_->limits)) {
        return make_failure(transport_error::bad_frame, "outgoing frame: " + problem->message);
    }
    if (auto size = proto::check_payload_size(stamped, payload.bytes.size())) {
        return make_failure(transport_error::bad_frame, "outgoing frame: " + size->message);
    }
    if (!supports(payload.memory)) {
        return make_failure(transport_error::unsupported_memory,
                            std::string(to_string(payload.memory)) + " payloads");
    }
    if (clock::now() > until) {
        self_->fail_link(peer, "send missed its deadline");
        const auto info = this->peer(peer);
        return make_failure(transport_error::timeout,
                            "send to " + (info ? describe_peer(*info) : to_string(peer)));
    }
    const proto::frame_header_bytes bytes = proto::encode_frame_header(stamped);
    return send_raw(peer, bytes, payload);
}

transport_status inproc_data_plane::send_raw(peer_id peer, std::span<const std::byte> header_bytes,
                                             payload_view payload) {
    std::shared_ptr<inproc_endpoint> remote;
    peer_id remote_id;
    {
        std::lock_guard lock(self_->mutex);
        if (self_->closed) return make_failure(transport_error::closed, self_->name + " is closed");
        auto it = self_->links.find(peer);
        if (it == self_->links.end()) {
            return make_failure(transport_error::unknown_peer, to_string(peer));
        }
        if (it->second.info.failure) return proto::unexpected(*it->second.info.failure);
        remote = it->second.remote.lock();
        remote_id = it->second.remote_id;
    }
    bool remote_closed = !remote;
    if (remote) {
        std::lock_guard lock(remote->mutex);
        remote_closed = remote->closed;
    }
    if (remote_closed) {
        self_->fail_link(peer, "peer closed");
        return proto::unexpected(*self_->inbox.peer_failure(peer));
    }
    remote->deliver(remote_id, header_bytes, payload.bytes);
    std::lock_guard lock(self_->mutex);
    ++self_->stats.frames_sent;
    self_->stats.bytes_sent += payload.bytes.size();
    return {};
}

size_t inproc_data_plane::discard(const frame_filter& filter) { return self_->inbox.discard(filter); }

void inproc_data_plane::set_frame_sink(proto::frame_kind kind, frame_sink sink) {
    self_->inbox.set_sink(kind, std::move(sink));
}

transport_result<received_frame> inproc_data_plane::receive(deadline until,
                                                            const frame_filter& filter) {
    std::string waiting_for;
    if (filter.peer) {
        auto info = peer(*filter.peer);
        waiting_for = info ? describe_peer(*info) : to_string(*filter.peer);
    }
    return self_->inbox.receive(until, filter, waiting_for);
}

transport_status inproc_data_plane::disconnect(peer_id peer, deadline until) {
    std::shared_ptr<inproc_endpoint> remote;
    peer_id remote_id;
    {
        std::lock_guard lock(self_->mutex);
        auto it = self_->links.find(peer);
        if (it == self_->links.end()) {
            return make_failure(transport_error::unknown_peer, to_string(peer));
        }
        remote = it->second.remote.lock();
        remote_id = it->second.remote_id;
    }
    self_->fail_link(peer, "disconnected by " + self_->name);
    if (remote) remote->fail_link(remote_id, "it disconnected");
    return {};
}

std::optional<peer_info> inproc_data_plane::peer(peer_id peer) const {
    std::lock_guard lock(self_->mutex);
    auto it = self_->links.find(peer);
    if (it == self_->links.end()) return std::nullopt;
    return it->second.info;
}

data_plane_stats inproc_data_plane::stats() const {
    std::lock_guard lock(self_->mutex);
    return self_->stats;
}

void inproc_data_plane::close() {
    std::map<peer_id, inproc_link> links;
    {
        std::lock_guard lock(self_->mutex);
        if (self_->closed) return;
        self_->closed = true;
        links = self_->links;
    }
    fabric_->remove(self_->address);
    for (auto& [id, link] : links) {
        if (auto remote = link.remote.lock()) remote->fail_link(link.remote_id, "it closed");
    }
    self_->inbox.close(make_failure(transport_error::closed, self_->name + " is closed").error());
}

}  // namespace longcat::transport
