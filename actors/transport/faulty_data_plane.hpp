// faulty_data_plane: wraps any data_plane and injects faults into its sends, so that failure
// paths (lost frames, slow links, dying peers) are tested without real failures. Everything but
// send() is passed through unchanged.
//   drop:  a dropped send reports success but the frame never leaves (the receiver times out)
//   delay: every send waits `send_delay` first; a delay past the send's deadline gives timeout
//   fail:  after `fail_after_sends` sends went through, every send returns peer_failed
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>

#include "actors/transport/transport.hpp"

namespace longcat::transport {

struct fault_config {
    double drop_probability = 0.0;  // each send dropped with this probability (0 = never)
    uint64_t seed = 1;              // for the drop decisions: runs are reproducible
    // Extra drop rule (e.g. only combine frames of layer 3); dropped when it returns true.
    std::function<bool(peer_id, const proto::frame_header&)> drop_if;
    clock::duration send_delay{0};             // added before every send
    std::optional<uint64_t> fail_after_sends;  // sends passed on before the link "dies"
};

struct fault_stats {
    uint64_t sends = 0;    // send() calls seen
    uint64_t dropped = 0;  // reported success, never passed on
    uint64_t delayed = 0;
    uint64_t failed = 0;  // failed by fail_after_sends
};

class faulty_data_plane final : public data_plane {
  public:
    faulty_data_plane(std::shared_ptr<data_plane> inner, fault_config faults);

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
    transport_status disconnect(peer_id peer, deadline until) override {
        return inner_->disconnect(peer, until);
    }
    std::optional<peer_info> peer(peer_id peer) const override { return inner_->peer(peer); }
    data_plane_stats stats() const override { return inner_->stats(); }
    void close() override { inner_->close(); }

  private:
    std::shared_ptr<data_plane> inner_;
    mutable std::mutex mutex_;
    fault_config faults_;
    fault_stats counts_;
    uint64_t passed_ = 0;  // sends passed on to inner_
    std::mt19937_64 rng_;
};

}  // namespace longcat::transport
