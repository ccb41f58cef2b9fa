// caf_runtime: the one way a process builds its CAF actor system (deps.md §1): the middleman
// (CAF over TCP), the message catalogue registered, the `sharing` scheduler with a small
// thread budget (ARCHITECTURE.md §9: threads are a budget; compute has its own threads).
// NOTES: includes CAF; include only in .cpp files that define or talk to actors.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "actors/control/interfaces.hpp"

namespace longcat::control {

struct caf_runtime_options {
    size_t scheduler_threads = 2;  // scheduler.max-threads (policy `sharing`)
    size_t middleman_workers = 0;  // middleman.workers (0: the middleman's own thread only)
    // Every thread CAF starts (scheduler, middleman, clock, detached actors) runs under
    // SCHED_BATCH: woken by a message, it never preempts a running compute or data-plane thread
    // on its core, and takes a free core or the next slice instead.  For the processes that
    // compute (attention worker, expert group): without it, a worker's step result woke its
    // middleman thread onto the worker's own core and the step loop stood 20-90 us at every
    // boundary.  Not for the coordinator, whose CAF threads are its critical path.  SCHED_BATCH
    // needs no privilege.
    bool batch_scheduling = false;
};

// Puts the calling thread back under SCHED_OTHER (wake-up preemption as usual).  Called first
// by the member actors, whose threads compute (the attention worker's steps) or start the
// threads that do (the expert group's serving thread; OpenMP's pool), which inherit the policy
// of the thread that creates them.  (The UCX progress thread is started from main().)  Returns
// false if the kernel refused.
bool use_compute_scheduling();

// A config with the middleman loaded, register_message_types() applied and the scheduler set.
// Reads no file and no command line (services have their own config layers).
std::unique_ptr<caf::actor_system_config> make_caf_config(const caf_runtime_options& opts = {});

// The middleman as an unqualified pointer for the control layer's publish/remote_actor helpers.
// "127.0.0.1:port" → (host, port); throws std::invalid_argument naming the text.
struct host_port {
    std::string host;
    uint16_t port = 0;
};
host_port parse_host_port(const std::string& text);

// Publishes the coordinator on host:port (port 0: the OS picks) with its typed interface;
// returns the bound port or throws std::runtime_error naming the address.
uint16_t publish_coordinator(caf::actor_system& system, const coordinator_actor& coordinator,
                             const std::string& host, uint16_t port);
// The coordinator at host:port, one attempt bounded by `timeout` (CAF's remote_actor waits
// without limit for a peer that accepts the TCP connection and never answers the handshake,
// e.g. a stopped process). Throws std::runtime_error naming the address and what went wrong.
coordinator_actor remote_coordinator(caf::actor_system& system, const host_port& where,
                                     std::chrono::milliseconds timeout);

// remote_coordinator to "HOST:PORT", retried every 100 ms until `timeout` (the coordinator may
// start after its members); every attempt ends by the deadline. Throws std::runtime_error with
// the last error.
coordinator_actor connect_coordinator(caf::actor_system& system, const std::string& address,
                                      std::chrono::milliseconds timeout);

}  // namespace longcat::control
