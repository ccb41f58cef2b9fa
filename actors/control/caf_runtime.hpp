// caf_runtime: the one way a process builds its CAF actor system (deps.md §1): the middleman
// (CAF over TCP), the message catalogue registered, the `sharing` scheduler with a small
// thread budget (ARCHITECTURE.md §9: threads are a budget; compute has its own threads).
// NOTES: includes CAF; include only in .cpp files that define or talk to actors.
#pragma once

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "actors/control/interfaces.hpp"
#include "actors/control/peer_liveness.hpp"

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
    // CAF's node liveness (BASP heartbeats), for the services only. With `heartbeats` this node
    // sends each peer node a heartbeat every kHeartbeatIntervalMs; with a peer_timeout as well
    // it declares a peer node down (every monitor of its actors gets a down message) once
    // nothing came from it for that long. Without it a peer whose host lost power or sits
    // behind a partition sends no FIN and stays "up" until TCP gives up (minutes or never):
    // a member would wait on a silent coordinator for ever.
    //   - The coordinator sends heartbeats and keeps every peer (peer_timeout 0): clients (the
    //     CLI, the gateway, tests) send none and may wait on it silently for long.
    //   - The members (attention workers, expert groups) send heartbeats and drop a coordinator
    //     silent for peer_timeout (`peer-timeout-ms`; their down handler then stops them with
    //     an error, for their supervisor to restart them).
    //   - Clients neither: CAF 0.17.6 leaks a short-lived actor system now and then when it
    //     shuts down with heartbeats running (LeakSanitizer sees it in the tests).
    // A silent expert group is found by the coordinator's liveness probes instead
    // (proto::liveness_probe); a silent attention worker by its steps' deadlines.
    bool heartbeats = false;
    std::chrono::milliseconds peer_timeout{0};
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
