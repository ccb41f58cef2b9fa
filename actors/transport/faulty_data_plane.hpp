// faulty_data_plane: wraps any data_plane and injects faults into its sends, so that failure
// paths (lost frames, slow links, dying peers) are tested without real failures. Everything but
// send() and close() is passed through unchanged.
//   drop:  a dropped send reports success but the frame never leaves (the receiver times out)
//   delay: every send waits `send_delay` first, on the sending thread (a slow sender); a delay
//          past the send's deadline gives timeout
//   link:  `link_delay` is a one-way link latency: send() copies the payload and returns at
//          once; the wrapper's delivery thread passes the frame to the inner plane's send
//          `link_delay` after the send() call, in FIFO order (per wrapper, so per peer too),
//          with the send's deadline moved back by the same delay. A delayed frame whose inner
//          send fails marks its peer failed here: later sends to it return peer_failed naming
//          the peer and the original error; its frames still queued are dropped.
//   fail:  after `fail_after_sends` sends went through, every send returns peer_failed
// Order of the checks in send(): fail, drop, send_delay, link_delay.
//
// NOTES: the delivery thread starts when a link delay is first configured (constructor or
// set_faults) and inherits the CPU affinity of the thread doing so; start it from an unpinned
// thread when the sender and receiver are pinned. close() and the destructor stop it; frames not
// yet delivered are dropped. Lowering link_delay while frames are queued keeps FIFO order: a new
// frame never overtakes a queued one (it may then arrive later than its own delay). A delayed
// send checks at once only what the wrapper can (payload size, host memory, known and live
// peer); the inner plane's other header checks run at delivery, and failing them fails the peer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "actors/transport/transport.hpp"

namespace longcat::transport {

struct fault_config {
    double drop_probability = 0.0;  // each send dropped with this probability (0 = never)
    uint64_t seed = 1;              // for the drop decisions: runs are reproducible
    // Extra drop rule (e.g. only combine frames of layer 3); dropped when it returns true.
    std::function<bool(peer_id, const proto::frame_header&)> drop_if;
    clock::duration send_delay{0};             // added before every send, blocking the sender
    clock::duration link_delay{0};             // one-way latency; send() does not wait for it
    std::optional<uint64_t> fail_after_sends;  // sends passed on before the link "dies"
};

struct fault_stats {
    uint64_t sends = 0;             // send() calls seen
    uint64_t dropped = 0;           // reported success, never passed on
    uint64_t delayed = 0;           // waited send_delay
    uint64_t failed = 0;            // failed by fail_after_sends
    uint64_t link_delayed = 0;      // queued for the delivery thread
    uint64_t link_failed = 0;       // delayed frames whose inner send failed
    uint64_t link_undelivered = 0;  // queued frames dropped: peer failed, or closed first
};

class faulty_data_plane final : public data_plane {
  public:
    faulty_data_plane(std::shared_ptr<data_plane> inner, fault_config faults);
    ~faulty_data_plane() override;
    faulty_data_plane(const faulty_data_plane&) = delete;
    faulty_data_plane& operator=(const faulty_data_plane&) = delete;

    void set_faults(fault_config faults);  // takes effect for the next send
    fault_stats fault_counts() const;
    data_plane& inner() { return *inner_; }

    std::string address() const override { return inner_->address(); }
    std::string name() const override { return inner_->name(); }
    bool supports(memory_type memory) const override { return inner_->supports(memory); }
    transport_result<peer_id> connect(std::string_view address, deadline until) override {
        return inner_->connect(address, until);
    }
    transport_status send(peer_id peer, const proto::frame_header& header, payload_view payload,
                          deadline until) override;
    transport_result<received_frame> receive(deadline until,
                                             const frame_filter& filter = {}) override {
        return inner_->receive(until, filter);
    }
    size_t discard(const frame_filter& filter) override { return inner_->discard(filter); }
    void set_frame_sink(proto::frame_kind kind, frame_sink sink) override {
        inner_->set_frame_sink(kind, std::move(sink));
    }
    transport_status disconnect(peer_id peer, deadline until) override {
        return inner_->disconnect(peer, until);
    }
    std::optional<peer_info> peer(peer_id peer) const override { return inner_->peer(peer); }
    data_plane_stats stats() const override { return inner_->stats(); }
    // Stops the delivery thread (dropping undelivered frames), then closes the inner plane.
    void close() override;

  private:
    // A frame on the delayed link.
    struct queued_frame {
        clock::time_point due;  // send() time + link_delay
        peer_id peer;
        proto::frame_header header;
        byte_buffer payload;  // a copy: the caller's bytes are free once send() returns
        deadline until;       // the caller's deadline + link_delay
    };

    transport_status enqueue(peer_id peer, const proto::frame_header& header, payload_view payload,
                             deadline until, clock::duration link_delay);
    void start_delivery_locked();  // under mutex_
    void deliver_loop();
    void stop_delivery();

    std::shared_ptr<data_plane> inner_;
    mutable std::mutex mutex_;
    fault_config faults_;
    fault_stats counts_;
    uint64_t passed_ = 0;  // sends passed on to inner_
    std::mt19937_64 rng_;

    // -- the delayed link (guarded by mutex_) ---
    std::condition_variable queue_changed_;
    std::deque<queued_frame> queue_;
    std::map<peer_id, transport_failure> link_failures_;  // peers failed by a delayed send
    bool delivering_ = false;                             // the delivery thread is in an inner send
    bool stopping_ = false;
    std::thread delivery_;
};

}  // namespace longcat::transport
