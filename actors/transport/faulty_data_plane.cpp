#include "actors/transport/faulty_data_plane.hpp"

#include <thread>

namespace longcat::transport {

faulty_data_plane::faulty_data_plane(std::shared_ptr<data_plane> inner, fault_config faults)
    : inner_(std::move(inner)), faults_(std::move(faults)), rng_(faults_.seed) {}

void faulty_data_plane::set_faults(fault_config faults) {
    std::lock_guard lock(mutex_);
    faults_ = std::move(faults);
    rng_.seed(faults_.seed);
}

fault_stats faulty_data_plane::fault_counts() const {
    std::lock_guard lock(mutex_);
    return counts_;
}

transport_status faulty_data_plane::send(peer_id peer, const proto::frame_header& header,
                                         payload_view payload, deadline until) {
    clock::duration delay{0};
    bool drop = false;
    {
        std::lock_guard lock(mutex_);
        ++counts_.sends;
        if (faults_.fail_after_sends && passed_ >= *faults_.fail_after_sends) {
            ++counts_.failed;
            std::string who = to_string(peer);
            if (auto info = inner_->peer(peer)) who = describe_peer(*info);
            return make_failure(transport_error::peer_failed,
                                who + ": injected failure after " +
                                    std::to_string(*faults_.fail_after_sends) + " sends");
        }
        if (faults_.drop_probability > 0.0) {
            drop =
                std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < faults_.drop_probability;
        }
        if (!drop && faults_.drop_if) drop = faults_.drop_if(peer, header);
        delay = faults_.send_delay;
        if (delay > clock::duration::zero()) ++counts_.delayed;
        if (drop) {
            ++counts_.dropped;
        } else {
            ++passed_;
        }
    }
    if (delay > clock::duration::zero()) {
        const auto wake = clock::now() + delay;
        if (wake > until) {
            std::this_thread::sleep_until(until);
            return make_failure(transport_error::timeout, "send to " + to_string(peer) +
                                                              ": injected delay past the deadline");
        }
        std::this_thread::sleep_until(wake);
    }
    if (drop) return {};
    return inner_->send(peer, header, payload, until);
}

}  // namespace longcat::transport
