#include "actors/transport/faulty_data_plane.hpp"

namespace longcat::transport {

namespace {

// The delivery thread's longest sleep while its queue is empty.
constexpr auto kIdleWait = std::chrono::milliseconds(100);

std::string describe(data_plane& plane, peer_id peer) {
    if (auto info = plane.peer(peer)) return describe_peer(*info);
    return to_string(peer);
}

}  // namespace

faulty_data_plane::faulty_data_plane(std::shared_ptr<data_plane> inner, fault_config faults)
    : inner_(std::move(inner)), faults_(std::move(faults)), rng_(faults_.seed) {
    std::lock_guard lock(mutex_);
    if (faults_.link_delay > clock::duration::zero()) start_delivery_locked();
}

faulty_data_plane::~faulty_data_plane() { stop_delivery(); }

void faulty_data_plane::set_faults(fault_config faults) {
    std::lock_guard lock(mutex_);
    faults_ = std::move(faults);
    rng_.seed(faults_.seed);
    if (faults_.link_delay > clock::duration::zero()) start_delivery_locked();
}

fault_stats faulty_data_plane::fault_counts() const {
    std::lock_guard lock(mutex_);
    return counts_;
}

void faulty_data_plane::close() {
    stop_delivery();
    inner_->close();
}

transport_status faulty_data_plane::send(peer_id peer, const proto::frame_header& header,
                                         payload_view payload, deadline until) {
    clock::duration delay{0};
    clock::duration link{0};
    bool drop = false;
    {
        std::lock_guard lock(mutex_);
        ++counts_.sends;
        if (auto it = link_failures_.find(peer); it != link_failures_.end()) {
            return proto::unexpected(it->second);
        }
        if (faults_.fail_after_sends && passed_ >= *faults_.fail_after_sends) {
            ++counts_.failed;
            return make_failure(transport_error::peer_failed,
                                describe(*inner_, peer) + ": injected failure after " +
                                    std::to_string(*faults_.fail_after_sends) + " sends");
        }
        if (faults_.drop_probability > 0.0) {
            drop =
                std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < faults_.drop_probability;
        }
        if (!drop && faults_.drop_if) drop = faults_.drop_if(peer, header);
        delay = faults_.send_delay;
        link = faults_.link_delay;
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
            return make_failure(transport_error::timeout, "send to " + describe(*inner_, peer) +
                                                              ": injected delay past the deadline");
        }
        std::this_thread::sleep_until(wake);
    }
    if (drop) return {};
    return enqueue(peer, header, payload, until, link);
}

transport_status faulty_data_plane::enqueue(peer_id peer, const proto::frame_header& header,
                                            payload_view payload, deadline until,
                                            clock::duration link_delay) {
    const auto sent_at = clock::now();
    bool direct = false;
    {
        // No link delay and nothing on the link: straight through (a frame never overtakes).
        std::lock_guard lock(mutex_);
        direct = link_delay <= clock::duration::zero() && queue_.empty() && !delivering_;
    }
    if (direct) return inner_->send(peer, header, payload, until);
    // What the inner send would refuse at once is refused here, not after the delay.
    if (payload.memory != memory_type::host) {
        return make_failure(
            transport_error::unsupported_memory,
            "link_delay copies host payloads only, not " + std::string(to_string(payload.memory)));
    }
    if (auto size = proto::check_payload_size(header, payload.bytes.size())) {
        return make_failure(transport_error::bad_frame, "outgoing frame: " + size->message);
    }
    const std::optional<peer_info> info = inner_->peer(peer);
    if (!info) return make_failure(transport_error::unknown_peer, to_string(peer));
    if (info->failure) return proto::unexpected(*info->failure);
    queued_frame frame{sent_at + link_delay, peer, header, byte_buffer::copy_of(payload.bytes),
                       until + link_delay};
    {
        std::lock_guard lock(mutex_);
        if (stopping_) return make_failure(transport_error::closed, inner_->name() + " is closed");
        if (auto it = link_failures_.find(peer); it != link_failures_.end()) {
            return proto::unexpected(it->second);
        }
        start_delivery_locked();
        ++counts_.link_delayed;
        queue_.push_back(std::move(frame));
    }
    queue_changed_.notify_all();
    return {};
}

void faulty_data_plane::start_delivery_locked() {
    if (stopping_ || delivery_.joinable()) return;
    delivery_ = std::thread([this] { deliver_loop(); });
}

void faulty_data_plane::deliver_loop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        if (queue_.empty()) {
            queue_changed_.wait_for(lock, kIdleWait);
            continue;
        }
        if (const auto due = queue_.front().due; clock::now() < due) {
            queue_changed_.wait_until(lock, due);
            continue;
        }
        queued_frame frame = std::move(queue_.front());
        queue_.pop_front();
        if (link_failures_.contains(frame.peer)) {
            ++counts_.link_undelivered;
            continue;
        }
        delivering_ = true;
        lock.unlock();
        auto sent = inner_->send(frame.peer, frame.header, {frame.payload.span()}, frame.until);
        std::optional<transport_failure> failure;
        if (!sent) {
            failure = make_failure(transport_error::peer_failed,
                                   describe(*inner_, frame.peer) +
                                       ": delayed send failed: " + sent.error().message)
                          .error();
        }
        lock.lock();
        delivering_ = false;
        if (failure) {
            ++counts_.link_failed;
            link_failures_.emplace(frame.peer, std::move(*failure));
        }
    }
    counts_.link_undelivered += queue_.size();
    queue_.clear();
}

void faulty_data_plane::stop_delivery() {
    std::thread delivery;
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        delivery = std::move(delivery_);
    }
    queue_changed_.notify_all();
    if (delivery.joinable()) delivery.join();
}

}  // namespace longcat::transport
