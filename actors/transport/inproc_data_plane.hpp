// inproc_data_plane: the data_plane contract inside one process, for unit tests of the actors
// that sit on the data plane. Endpoints live in an inproc_fabric (a namespace of addresses
// "inproc://<name>#<n>"); a send copies the payload straight into the receiver's inbox, after
// running the receiver's frame checks on the encoded header, as the wire would. Handshake,
// version refusal, peer failure on close/disconnect behave as in ucx_data_plane.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "actors/transport/transport.hpp"

namespace longcat::transport {

struct inproc_endpoint;

class inproc_fabric {
  public:
    // Registers `endpoint` under a fresh address derived from `name`.
    std::string add(const std::string& name, const std::shared_ptr<inproc_endpoint>& endpoint);
    void remove(const std::string& address);
    std::shared_ptr<inproc_endpoint> find(std::string_view address) const;

  private:
    mutable std::mutex mutex_;
    std::unordered_map<std::string, std::weak_ptr<inproc_endpoint>> endpoints_;
    uint64_t next_index_ = 1;
};

struct inproc_data_plane_config {
    std::string name = "inproc";
    proto::frame_limits limits;  // what this endpoint accepts
    // Announced in the handshake; tests override it to play a peer of another version.
    proto::wire_versions versions = proto::local_wire_versions();
};

class inproc_data_plane final : public data_plane {
  public:
    inproc_data_plane(std::shared_ptr<inproc_fabric> fabric, inproc_data_plane_config config);
    ~inproc_data_plane() override;

    std::string address() const override;
    std::string name() const override;
    bool supports(memory_type memory) const override;
    transport_result<peer_id> connect(std::string_view address, deadline until) override;
    transport_status send(peer_id peer, const proto::frame_header& header, payload_view payload,
                          deadline until) override;
    transport_result<received_frame> receive(deadline until,
                                             const frame_filter& filter = {}) override;
    size_t discard(const frame_filter& filter) override;
    void set_frame_sink(proto::frame_kind kind, frame_sink sink) override;
    transport_status disconnect(peer_id peer, deadline until) override;
    std::optional<peer_info> peer(peer_id peer) const override;
    data_plane_stats stats() const override;
    void close() override;

    // Test hook: delivers `header_bytes` as the frame header, unchecked (malformed-frame tests).
    transport_status send_raw(peer_id peer, std::span<const std::byte> header_bytes,
                              payload_view payload);

  private:
    std::shared_ptr<inproc_fabric> fabric_;
    std::shared_ptr<inproc_endpoint> self_;
};

}  // namespace longcat::transport
