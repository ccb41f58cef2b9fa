#include "actors/transport/frame_inbox.hpp"

#include <algorithm>
#include <vector>

namespace longcat::transport {

frame_inbox::slot_id frame_inbox::reserve(peer_id from, const proto::frame_header& header) {
    std::lock_guard lock(mutex_);
    const slot_id slot = next_slot_++;
    entries_.push_back(entry{slot, from, header, byte_buffer{}, false, std::nullopt});
    return slot;
}

void frame_inbox::set_sink(proto::frame_kind kind, data_plane::frame_sink sink) {
    std::lock_guard lock(sink_mutex_);
    if (sink) sinks_[kind] = std::make_shared<data_plane::frame_sink>(std::move(sink));
    else sinks_.erase(kind);
}

bool frame_inbox::offer(peer_id from, const proto::frame_header& header, std::span<const std::byte> payload) {
    std::shared_ptr<data_plane::frame_sink> sink;
    {
        std::lock_guard lock(sink_mutex_);
        auto it = sinks_.find(header.kind);
        if (it == sinks_.end()) return false;
        sink = it->second;
    }
    return (*sink)(from, header, payload);
}

void frame_inbox::complete(slot_id slot, byte_buffer payload) {
    std::optional<std::pair<peer_id, proto::frame_header>> landed;
    {
        std::lock_guard lock(mutex_);
        auto it = std::find_if(entries_.begin(), entries_.end(),
                               [&](const entry& e) { return e.slot == slot; });
        if (it == entries_.end()) return;
        if (it->discard) {
            entries_.erase(it);
            return;
        }
        landed.emplace(it->from, it->header);
    }
    // Outside the lock: the sink may copy the payload where it belongs.
    const bool taken = offer(landed->first, landed->second, payload.span());
    {
        std::lock_guard lock(mutex_);
        auto it = std::find_if(entries_.begin(), entries_.end(),
                               [&](const entry& e) { return e.slot == slot; });
        if (it == entries_.end()) return;
        if (taken || it->discard) {
            entries_.erase(it);
            return;
        }
        it->payload = std::move(payload);
        it->complete = true;
    }
    changed_.notify_all();
}

void frame_inbox::abort(slot_id slot, transport_failure failure) {
    {
        std::lock_guard lock(mutex_);
        auto it = std::find_if(entries_.begin(), entries_.end(),
                               [&](const entry& e) { return e.slot == slot; });
        if (it == entries_.end()) return;
        if (it->discard) {
            entries_.erase(it);
            return;
        }
        it->payload = byte_buffer{};
        it->complete = true;
        it->error = std::move(failure);
    }
    changed_.notify_all();
}

void frame_inbox::push_frame(peer_id from, const proto::frame_header& header, byte_buffer payload,
                             bool offer_to_sink) {
    if (offer_to_sink && offer(from, header, payload.span())) return;
    {
        std::lock_guard lock(mutex_);
        if (closed_) return;  // nobody can receive it; `payload` is freed after the lock
        entries_.push_back(entry{next_slot_++, from, header, std::move(payload), true, {}});
    }
    changed_.notify_all();
}

void frame_inbox::push_error(peer_id from, transport_failure failure) {
    {
        std::lock_guard lock(mutex_);
        entries_.push_back(entry{next_slot_++, from, {}, byte_buffer{}, true, std::move(failure)});
    }
    changed_.notify_all();
}

bool frame_inbox::fail_peer(peer_id peer, transport_failure failure) {
    {
        std::lock_guard lock(mutex_);
        if (!failed_peers_.emplace(peer, failure).second) return false;
        entries_.push_back(entry{next_slot_++, peer, {}, byte_buffer{}, true, std::move(failure)});
    }
    changed_.notify_all();
    return true;
}

std::optional<transport_failure> frame_inbox::peer_failure(peer_id peer) const {
    std::lock_guard lock(mutex_);
    auto it = failed_peers_.find(peer);
    if (it == failed_peers_.end()) return std::nullopt;
    return it->second;
}

void frame_inbox::close(transport_failure reason) {
    std::deque<entry> dropped;  // nobody can receive them any more; freed outside the lock
    {
        std::lock_guard lock(mutex_);
        if (!closed_) closed_ = std::move(reason);
        dropped.swap(entries_);
    }
    changed_.notify_all();
}

transport_result<received_frame> frame_inbox::receive(deadline until, const frame_filter& filter,
                                                      std::string_view waiting_for) {
    std::unique_lock lock(mutex_);
    std::vector<peer_id> blocked;  // peers with an unfinished matching frame ahead in the FIFO
    for (;;) {
        if (closed_) return proto::unexpected(*closed_);
        blocked.clear();
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
            if (it->error) {
                if (filter.frames_only || (filter.peer && *filter.peer != it->from)) continue;
                transport_failure failure = std::move(*it->error);
                entries_.erase(it);
                return proto::unexpected(std::move(failure));
            }
            if (!filter.matches(it->from, it->header)) continue;
            if (!it->complete) {
                blocked.push_back(it->from);
                continue;
            }
            // frames_only receives (KV rows placed by position) need no per-peer order.
            if (!filter.frames_only && std::find(blocked.begin(), blocked.end(), it->from) != blocked.end())
                continue;
            received_frame frame{it->from, it->header, std::move(it->payload)};
            entries_.erase(it);
            return frame;
        }
        // A failed peer's frames that had arrived were returned above, in order; one still
        // landing does not hold its failure back (with error mode none UCX cannot cancel the
        // receive, and it may never complete).
        if (filter.peer && !filter.frames_only) {
            auto failed = failed_peers_.find(*filter.peer);
            if (failed != failed_peers_.end()) return proto::unexpected(failed->second);
        }
        if (clock::now() >= until) {
            std::string what = "no matching frame";
            if (!waiting_for.empty()) (what += " from ") += waiting_for;
            return make_failure(transport_error::timeout, what + " by the deadline");
        }
        changed_.wait_until(lock, until);
    }
}

size_t frame_inbox::discard(const frame_filter& filter) {
    std::lock_guard lock(mutex_);
    size_t count = 0;
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (it->error || it->discard || !filter.matches(it->from, it->header)) {
            ++it;
            continue;
        }
        ++count;
        if (it->complete) {
            it = entries_.erase(it);
        } else {
            it->discard = true;
            ++it;
        }
    }
    return count;
}

size_t frame_inbox::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace longcat::transport
