#include "actors/gateway/router.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

namespace longcat::gateway {

namespace {

struct backend_snapshot {
    bool ready = false;
    int64_t load = 0;  // running + queued as the backend reports it
};

enum class request_phase { queued, starting, running, done };

// > 0 while this thread runs a backend's event callback (see the state's deleter).
thread_local int backend_event_depth = 0;

struct backend_event_scope {
    backend_event_scope() { ++backend_event_depth; }
    ~backend_event_scope() { --backend_event_depth; }
    backend_event_scope(const backend_event_scope&) = delete;
    backend_event_scope& operator=(const backend_event_scope&) = delete;
};

// How many router states exist (router::await_released waits for none).
struct live_states {
    std::mutex mutex;
    std::condition_variable gone;
    int64_t count = 0;
};
live_states& states() {
    static auto* s = new live_states;  // never destroyed: a release may end after exit
    return *s;
}

// Deletes `object` here, or, inside a backend's event, from a new thread: the object holds the
// backends, and the last reference to a backend must not go on its own thread (its destructor
// waits for that thread: cluster_backend's for its CAF threads, where that hung the gateway).
template <class T>
void release(T* object) {
    auto deleted = [object] {
        delete object;
        {
            std::lock_guard lock(states().mutex);
            --states().count;
        }
        states().gone.notify_all();
    };
    if (backend_event_depth == 0) {
        deleted();
        return;
    }
    try {
        std::thread(deleted).detach();
    } catch (const std::system_error&) {  // no thread to be had: here, rather than terminate
        deleted();
    }
}

}  // namespace

// -- state ------------------------------------------------------------------------------------

struct routed_request;

struct router::state : std::enable_shared_from_this<router::state> {
    std::vector<std::shared_ptr<generation_backend>> backends;
    router_config config;
    router_metrics metrics;

    mutable std::mutex mutex;
    std::condition_variable wake;
    std::vector<int64_t> running;  // per backend, requests the router has in flight there
    std::deque<std::shared_ptr<routed_request>> queue;
    bool stopping = false;

    std::vector<backend_snapshot> snapshot() const;
    // The backend for the next request, or -1; mutex held.
    int choose(const std::vector<backend_snapshot>& snap) const;
    void start(const std::shared_ptr<routed_request>& request);
    void on_backend_event(const std::shared_ptr<routed_request>& request, generation_event event);
    void pump();
    void expire_deadlines();
    void update_gauges();  // mutex held
};

struct routed_request final : generation_handle {
    std::weak_ptr<router::state> owner;
    generation_request request;
    std::function<void(generation_event)> on_event;
    // Guarded by state::mutex.
    request_phase phase = request_phase::queued;
    int backend_idx = -1;
    std::shared_ptr<generation_handle> inner;
    bool cancel_requested = false;

    void cancel() override {
        const std::shared_ptr<router::state> st = owner.lock();
        if (!st) return;
        std::shared_ptr<generation_handle> to_cancel;
        bool deliver = false;
        {
            std::lock_guard lock(st->mutex);
            switch (phase) {
                case request_phase::queued: {
                    auto it = std::find_if(st->queue.begin(), st->queue.end(),
                                           [this](const auto& queued) { return queued.get() == this; });
                    if (it != st->queue.end()) st->queue.erase(it);
                    phase = request_phase::done;
                    deliver = true;
                    st->update_gauges();
                    break;
                }
                case request_phase::starting: cancel_requested = true; break;
                case request_phase::running: to_cancel = inner; break;
                case request_phase::done: break;
            }
        }
        if (deliver) {
            on_event(make_error_event(backend_error::cancelled,
                                      "request " + request.request_id + " cancelled while queued in the router"));
            on_event = nullptr;
        }
        if (to_cancel) to_cancel->cancel();
    }
};

std::vector<backend_snapshot> router::state::snapshot() const {
    std::vector<backend_snapshot> snap(backends.size());
    for (size_t backend_idx = 0; backend_idx < backends.size(); ++backend_idx) {
        snap[backend_idx].ready = backends[backend_idx]->readiness().ready;
        const backend_load load = backends[backend_idx]->load();
        snap[backend_idx].load = load.running + load.queued;
    }
    return snap;
}

int router::state::choose(const std::vector<backend_snapshot>& snap) const {
    int best = -1;
    int64_t best_load = 0;
    for (size_t backend_idx = 0; backend_idx < backends.size(); ++backend_idx) {
        if (!snap[backend_idx].ready || running[backend_idx] >= config.max_running_per_backend) continue;
        const int64_t load = std::max(snap[backend_idx].load, running[backend_idx]);
        if (best < 0 || load < best_load ||
            (load == best_load && running[backend_idx] < running[static_cast<size_t>(best)])) {
            best = static_cast<int>(backend_idx);
            best_load = load;
        }
    }
    return best;
}

void router::state::update_gauges() {
    if (stopping) return;  // the router is gone: its metrics registry may be too
    int64_t total = 0;
    for (const int64_t count : running) total += count;
    metrics.running.set(static_cast<double>(total));
    metrics.queue_depth.set(static_cast<double>(queue.size()));
}

void router::state::start(const std::shared_ptr<routed_request>& request) {
    const auto backend = backends[static_cast<size_t>(request->backend_idx)];
    // The callback holds the state weakly: a backend must not keep the router (and so itself)
    // alive. Once the router is gone, events still reach the client, without bookkeeping.
    std::shared_ptr<generation_handle> inner;
    try {
        inner = backend->submit(request->request,
                                [weak = weak_from_this(), request](generation_event event) {
                                    // Declared first, so still set when `self` goes below.
                                    const backend_event_scope in_backend_event;
                                    if (const auto self = weak.lock()) {
                                        self->on_backend_event(request, std::move(event));
                                    } else if (request->on_event) {
                                        const bool finished = event.finished;
                                        request->on_event(std::move(event));
                                        if (finished) request->on_event = nullptr;
                                    }
                                });
    } catch (const std::exception& e) {
        // A backend that throws instead of answering with an error event: the request ends
        // with that error and its slot is given back (it was counted as running already, and
        // no finished event would ever have come to uncount it).
        on_backend_event(request,
                         make_error_event(backend_error::internal,
                                          std::string("backend submit failed: ") + e.what()));
        return;
    }
    bool cancel_now = false;
    {
        std::lock_guard lock(mutex);
        if (request->phase == request_phase::starting) {  // not finished inside submit()
            request->phase = request_phase::running;
            request->inner = inner;
        }
        cancel_now = request->cancel_requested;
    }
    if (cancel_now && inner) inner->cancel();
}

void router::state::on_backend_event(const std::shared_ptr<routed_request>& request,
                                     generation_event event) {
    if (!event.finished) {
        request->on_event(std::move(event));
        return;
    }
    {
        std::lock_guard lock(mutex);
        if (request->phase != request_phase::done) {
            request->phase = request_phase::done;
            --running[static_cast<size_t>(request->backend_idx)];
        }
        request->inner.reset();
        update_gauges();
    }
    pump();
    request->on_event(std::move(event));
    request->on_event = nullptr;
}

void router::state::pump() {
    for (;;) {
        const std::vector<backend_snapshot> snap = snapshot();
        std::shared_ptr<routed_request> next;
        {
            std::lock_guard lock(mutex);
            if (queue.empty() || stopping) return;
            const int backend_idx = choose(snap);
            if (backend_idx < 0) return;
            next = queue.front();
            queue.pop_front();
            next->phase = request_phase::starting;
            next->backend_idx = backend_idx;
            ++running[static_cast<size_t>(backend_idx)];
            update_gauges();
        }
        start(next);
    }
}

void router::state::expire_deadlines() {
    std::vector<std::shared_ptr<routed_request>> expired;
    {
        std::lock_guard lock(mutex);
        const clock::time_point now = clock::now();
        for (auto it = queue.begin(); it != queue.end();) {
            if ((*it)->request.deadline <= now) {
                (*it)->phase = request_phase::done;
                expired.push_back(*it);
                it = queue.erase(it);
            } else {
                ++it;
            }
        }
        if (!expired.empty()) update_gauges();
    }
    for (const auto& request : expired) {
        request->on_event(make_error_event(
            backend_error::timeout,
            "request " + request->request.request_id + ": deadline passed while queued in the router"));
        request->on_event = nullptr;
    }
}

// -- router -----------------------------------------------------------------------------------

router_metrics make_router_metrics(metrics::metrics_registry& registry) {
    router_metrics out;
    out.queue_depth = registry.add_gauge("longcat_router_queue_depth",
                                         "requests waiting in the gateway's router for a backend slot");
    out.running = registry.add_gauge("longcat_router_running_requests",
                                     "requests the gateway's router has in flight on backends");
    return out;
}

router::router(std::vector<std::shared_ptr<generation_backend>> backends, router_config config,
               router_metrics metrics)
    : config_(config), state_(new state(), [](state* s) { release(s); }) {
    {
        std::lock_guard lock(states().mutex);
        ++states().count;
    }
    if (backends.empty()) throw std::invalid_argument("router: needs at least one backend");
    for (const auto& backend : backends)
        if (!backend) throw std::invalid_argument("router: a backend is null");
    if (config.max_running_per_backend < 1)
        throw std::invalid_argument("router: max_running_per_backend must be >= 1, got " +
                                    std::to_string(config.max_running_per_backend));
    if (config.queue_bound < 0)
        throw std::invalid_argument("router: queue_bound must be >= 0, got " + std::to_string(config.queue_bound));
    if (config.poll_interval.count() < 1) throw std::invalid_argument("router: poll_interval must be >= 1 ms");
    state_->backends = std::move(backends);
    state_->config = config;
    state_->metrics = metrics;
    state_->running.assign(state_->backends.size(), 0);
    state_->update_gauges();
    poller_ = std::thread([st = state_] {
        std::unique_lock lock(st->mutex);
        while (!st->stopping) {
            st->wake.wait_for(lock, st->config.poll_interval);
            if (st->stopping) break;
            lock.unlock();
            st->expire_deadlines();
            st->pump();
            lock.lock();
        }
    });
}

bool router::await_released(std::chrono::milliseconds timeout) {
    std::unique_lock lock(states().mutex);
    return states().gone.wait_for(lock, timeout, [] { return states().count == 0; });
}

router::~router() {
    std::deque<std::shared_ptr<routed_request>> left;
    {
        std::lock_guard lock(state_->mutex);
        left.swap(state_->queue);
        for (const auto& request : left) request->phase = request_phase::done;
        state_->update_gauges();
        state_->stopping = true;
    }
    state_->wake.notify_all();
    // The last reference may be dropped by an event the poller delivers: never join oneself.
    if (poller_.get_id() == std::this_thread::get_id()) poller_.detach();
    else poller_.join();
    for (const auto& request : left) {
        request->on_event(make_error_event(backend_error::cancelled,
                                           "request " + request->request.request_id + ": router stopped"));
        request->on_event = nullptr;
    }
}

std::shared_ptr<generation_handle> router::submit(generation_request request,
                                                  std::function<void(generation_event)> on_event) {
    auto routed = std::make_shared<routed_request>();
    routed->owner = state_;
    routed->request = std::move(request);
    routed->on_event = std::move(on_event);
    const std::vector<backend_snapshot> snap = state_->snapshot();
    if (std::none_of(snap.begin(), snap.end(), [](const backend_snapshot& s) { return s.ready; })) {
        routed->phase = request_phase::done;
        routed->on_event(make_error_event(backend_error::not_ready,
                                          "request " + routed->request.request_id +
                                              ": no backend is ready (" + readiness().reason + ")"));
        routed->on_event = nullptr;
        return routed;
    }
    bool start_now = false, queued = false;
    size_t queue_size = 0;
    {
        std::lock_guard lock(state_->mutex);
        const int backend_idx = state_->queue.empty() ? state_->choose(snap) : -1;
        if (backend_idx >= 0) {
            routed->phase = request_phase::starting;
            routed->backend_idx = backend_idx;
            ++state_->running[static_cast<size_t>(backend_idx)];
            start_now = true;
        } else if (static_cast<int64_t>(state_->queue.size()) < config_.queue_bound) {
            routed->phase = request_phase::queued;
            state_->queue.push_back(routed);
            queued = true;
        }
        queue_size = state_->queue.size();
        state_->update_gauges();
    }
    if (start_now) {
        state_->start(routed);
    } else if (queued) {
        state_->pump();  // a slot may have freed between the snapshot and the lock
    } else {
        routed->phase = request_phase::done;
        routed->on_event(make_error_event(
            backend_error::overloaded,
            "request " + routed->request.request_id + ": overloaded: " + std::to_string(queue_size) +
                " requests already queued (queue_bound " + std::to_string(config_.queue_bound) +
                ") and every backend is at max_running_per_backend " +
                std::to_string(config_.max_running_per_backend)));
        routed->on_event = nullptr;
    }
    return routed;
}

backend_readiness router::readiness() const {
    std::string reasons;
    for (size_t backend_idx = 0; backend_idx < state_->backends.size(); ++backend_idx) {
        const backend_readiness one = state_->backends[backend_idx]->readiness();
        if (one.ready) return {true, ""};
        if (!reasons.empty()) reasons += "; ";
        reasons += "backend " + std::to_string(backend_idx) + ": " + one.reason;
    }
    return {false, reasons};
}

backend_load router::load() const {
    std::lock_guard lock(state_->mutex);
    backend_load out;
    for (const int64_t count : state_->running) out.running += count;
    out.queued = static_cast<int64_t>(state_->queue.size());
    return out;
}

}  // namespace longcat::gateway
