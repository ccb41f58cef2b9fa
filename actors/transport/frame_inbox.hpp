// frame_inbox: the receive side every data plane shares. A FIFO of arrived frames and error
// entries, each tagged with the peer it came from; per-peer failure state; a blocking receive
// with a frame_filter and a deadline. Thread-safe.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "actors/transport/transport.hpp"

namespace longcat::transport {

class frame_inbox {
  public:
    using slot_id = uint64_t;

    // A frame whose header arrived but whose payload is still landing (UCX rendezvous). It keeps
    // its place in the FIFO: receive() returns neither it nor any later frame of the same peer
    // that the same filter matches until complete() or abort() is called for it.
    slot_id reserve(peer_id from, const proto::frame_header& header);
    void complete(slot_id slot, byte_buffer payload);
    void abort(slot_id slot, transport_failure failure);  // the slot becomes an error entry

    // offer_to_sink false: the caller already offered it (offer()).
    void push_frame(peer_id from, const proto::frame_header& header, byte_buffer payload,
                    bool offer_to_sink = true);
    // An error entry (bad frame, refused handshake, ...); `from` may be peer_id{} (no peer yet).
    void push_error(peer_id from, transport_failure failure);

    // From now on a receive naming `peer` that finds nothing queued for it returns `failure` (a
    // frame of it still landing does not hold that back);
    // also queues one error entry (so a receive naming no peer hears of it once). Only the first
    // call per peer counts. Returns whether this call was the first.
    bool fail_peer(peer_id peer, transport_failure failure);
    std::optional<transport_failure> peer_failure(peer_id peer) const;

    // Every receive, waiting or later, returns `reason` (code closed); queued frames are dropped.
    void close(transport_failure reason);

    // `waiting_for` names what the caller waits on in the timeout message ("from experts-3").
    // NOTES: filter.predicate runs under the inbox lock: keep it cheap, never call the data plane.
    transport_result<received_frame> receive(deadline until, const frame_filter& filter,
                                             std::string_view waiting_for = {});

    // Drops the complete frames matching `filter` (never error entries) and marks the matching
    // incomplete ones to be dropped when they complete or abort. Returns how many.
    size_t discard(const frame_filter& filter);

    // data_plane::set_frame_sink: push_frame, complete and offer hand frames of `kind` to it.
    void set_sink(proto::frame_kind kind, data_plane::frame_sink sink);
    // A complete frame whose payload is still the transport's (UCX eager data): true when the
    // sink took it; else the caller queues it with push_frame.
    bool offer(peer_id from, const proto::frame_header& header, std::span<const std::byte> payload);

    size_t size() const;

  private:
    struct entry {
        slot_id slot = 0;
        peer_id from;
        proto::frame_header header;
        byte_buffer payload;
        bool complete = true;
        std::optional<transport_failure> error;
        bool discard = false;  // dropped once complete (frame_inbox::discard)
    };

    mutable std::mutex sink_mutex_;
    std::map<proto::frame_kind, std::shared_ptr<data_plane::frame_sink>> sinks_;
    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<entry> entries_;
    std::map<peer_id, transport_failure> failed_peers_;
    std::optional<transport_failure> closed_;
    slot_id next_slot_ = 1;
};

}  // namespace longcat::transport
