// member_common: what the two member actors (attention_member.hpp, expert_member.hpp) share:
// their options, the status the service's main thread reads, and the placement conversion.
// Both actors run detached (their own thread), so a step's compute or a weight load blocks only
// that member, never the CAF scheduler. Both register with the coordinator (register_member,
// then member_ready once loaded), monitor it, and stop cleanly when it stops cleanly.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "actors/control/interfaces.hpp"
#include "actors/control/member_compute.hpp"

namespace caf {
class actor;
class actor_system;
}

namespace longcat::control {

// What the service's main thread reads (readiness, refusal); written by the member actor.
class member_status {
public:
    void set_ready() { ready_.store(true); }
    bool ready() const { return ready_.load(); }
    // The member cannot go on (refused, coordinator lost, load failed): why.
    void fail(std::string reason);
    std::optional<std::string> failure() const;
    void set_detail(std::string detail);  // e.g. "registered as member 3, loading weights"
    std::string detail() const;

private:
    std::atomic<bool> ready_{false};
    mutable std::mutex mutex_;
    std::optional<std::string> failure_;
    std::string detail_ = "starting";
};

struct member_options {
    proto::hello greeting;  // role, name, data-plane address, versions (tests may alter them)
    std::string tp_group;   // attention workers
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
    int64_t kv_pages = 0;      // attention members: their KV pool, announced at registration
    int64_t kv_page_size = 0;  // so that the coordinator can reserve pages for its requests
    std::string pool;          // expert groups: "" (shared), "prefill" or "decode"
    std::chrono::milliseconds register_timeout{30'000};
    std::function<void(const std::string&)> log;
    // Attention members: called after every successful step (metrics), on the member's thread.
    // boundary_idle: seconds between the previous step's result and this step's plan when this
    // step follows it directly (step_plan::follows_step), else < 0.
    std::function<void(const compute_step_output&, double seconds, double boundary_idle)> on_step;
    // Decode workers: after each KV import (prefill/decode disaggregation), its bytes and the time
    // from the start of the wait until every frame was in.
    std::function<void(int64_t bytes, double seconds)> on_kv_import;
};

// A member service's main loop: until SIGTERM/SIGINT (stop_signal.hpp) or the member fails,
// reports readiness every 100 ms through `report(ready, detail)` (ready once, then stays).
// Returns the exit code: 0 on a stop signal, 1 when the member failed (logged with its reason).
int run_member_until_stopped(const member_status& status,
                             const std::function<void(bool ready, const std::string& detail)>& report,
                             const std::function<void(const std::string&)>& log);

// Sends the member actor an exit and waits, until `timeout`, for it to be gone; then runs
// stop_compute. The member's step or placement change runs on its own thread, so the compute
// behind it may be stopped only once the actor is gone; if it still runs at the deadline, this
// logs so and leaves the compute to the actor system's shutdown, which waits for the actor first.
void stop_member(caf::actor_system& system, const caf::actor& member,
                 std::chrono::milliseconds timeout, const std::function<void()>& stop_compute,
                 const std::function<void(const std::string&)>& log);

// proto::placement_map → the validated runtime form (cluster::placement_map + workers).
proto::expected<member_placement, std::string> to_member_placement(const proto::placement_map& map);

}  // namespace longcat::control
