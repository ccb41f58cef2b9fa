// router: the request router of the gateway process (ARCHITECTURE.md §1): a
// generation_backend over N backends (the coordinators).
// Owns: admission control — at most max_running requests in flight per backend and a FIFO
// queue of queue_bound waiting requests; beyond that a request fails at once with
// backend_error::overloaded (the gateway answers 429 with Retry-After). Picks the ready
// backend with the least load (its running + queued, or the router's own count when higher),
// starts queued requests as others finish, and drops a queued request that is cancelled (it
// gets its finished event) or whose deadline passes (error timeout).
// Receives: submit() from the HTTP server; events from the backends. Sends: the events on.
// Readiness: ready when any backend is ready.
#pragma once

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "actors/gateway/backend.hpp"
#include "actors/metrics/metrics.hpp"

namespace longcat::gateway {

struct router_config {
    int64_t max_running_per_backend = 16;  // requests in flight on one backend
    int64_t queue_bound = 64;              // requests waiting for a slot, all backends together
    // How often queued requests are re-examined (a backend became ready; deadlines). Also the
    // bound on how late a queued request's deadline is noticed.
    std::chrono::milliseconds poll_interval{50};
};

// Optional: gauges the router keeps up to date (default handles record nothing).
struct router_metrics {
    metrics::gauge queue_depth;  // longcat_router_queue_depth
    metrics::gauge running;      // longcat_router_running_requests
};
// Registers the two gauges in `registry`.
router_metrics make_router_metrics(metrics::metrics_registry& registry);

struct routed_request;

class router final : public generation_backend {
public:
    // Throws std::invalid_argument for no backends, a null backend or a bound < 0 / max < 1.
    router(std::vector<std::shared_ptr<generation_backend>> backends, router_config config,
           router_metrics metrics = {});
    // Queued requests get a finished event (error cancelled, "router stopped"); requests on a
    // backend keep running there and report through it.
    ~router() override;
    router(const router&) = delete;
    router& operator=(const router&) = delete;

    std::shared_ptr<generation_handle> submit(generation_request request,
                                              std::function<void(generation_event)> on_event) override;
    backend_readiness readiness() const override;
    backend_load load() const override;  // running = in flight on backends, queued = the queue

    const router_config& config() const { return config_; }

    // Waits until the state of every router is gone. A router's state, which holds the
    // backends, lives on while a backend's event is being delivered to it, and if that event
    // holds its last reference, a thread of its own deletes it (a backend's destructor may wait
    // for the thread the event came on, e.g. cluster_backend for its CAF threads). A process
    // calls this after destroying its routers and backends, before it exits. False if some
    // state is still there after `timeout`.
    static bool await_released(std::chrono::milliseconds timeout);

private:
    friend struct routed_request;
    struct state;
    router_config config_;
    std::shared_ptr<state> state_;
    std::thread poller_;
};

}  // namespace longcat::gateway
