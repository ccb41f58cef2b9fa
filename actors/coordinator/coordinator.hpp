// coordinator: the cluster's control-plane actor (ARCHITECTURE.md §1, §4, §7).
// Owns: a coordinator_state (membership, versioned placement map, request table, step loop).
// Receives: register_member, member_ready (members); generate_request, status_query (clients);
//   CAF down messages of every member it monitors.
// Sends: placement_update to every member at step boundaries; one step_plan per attention
//   worker per step (step N+1 planned while step N runs); generate_reply when a request ends.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "actors/control/interfaces.hpp"
#include "actors/coordinator/coordinator_state.hpp"

namespace caf {
class actor_system;
}

namespace longcat::coordinator {

// Observers the service hooks metrics and readiness onto; called on the actor's thread.
struct coordinator_hooks {
    std::function<void(const proto::cluster_status&)> on_status_change;
    std::function<void(const std::string& outcome)> on_request_end;  // "length"|"stop"|"error"
    std::function<void(double seconds)> on_step;
    // The coordinator thread's CPU time (CLOCK_THREAD_CPUTIME_ID) spent on one step: admissions,
    // results, planning and sending since the previous step completed.
    std::function<void(double cpu_seconds)> on_step_cpu;
    std::function<void(const std::string& line)> log;
};

control::coordinator_actor spawn_coordinator(caf::actor_system& system,
                                             std::unique_ptr<coordinator_state> state,
                                             coordinator_hooks hooks = {});

}  // namespace longcat::coordinator
