// attention_member: the CAF actor of one attention worker (one TP rank).
// Owns: an attention_compute (weights, KV cache, data plane to the expert groups and TP peers).
// Receives: step_plan → step_result; placement_update → placement_ack (between steps).
// Sends: register_member, member_ready to the coordinator; monitors it.
#pragma once

#include <memory>

#include "actors/control/interfaces.hpp"
#include "actors/control/member_common.hpp"

namespace caf {
class actor_system;
}

namespace longcat::control {

attention_member_actor spawn_attention_member(caf::actor_system& system,
                                              coordinator_actor coordinator, member_options opts,
                                              std::shared_ptr<attention_compute> compute,
                                              std::shared_ptr<member_status> status);

}  // namespace longcat::control
