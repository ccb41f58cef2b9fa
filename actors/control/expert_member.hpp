// expert_member: the CAF actor of one expert group.
// Owns: an expert_compute (its experts, the serving thread on its data plane).
// Receives: placement_update → placement_ack (which workers to pair with from the next step).
// Sends: register_member, then loads the experts the reply assigns, then member_ready.
#pragma once

#include <memory>

#include "actors/control/interfaces.hpp"
#include "actors/control/member_common.hpp"

namespace caf {
class actor_system;
}

namespace longcat::control {

expert_member_actor spawn_expert_member(caf::actor_system& system, coordinator_actor coordinator,
                                        member_options opts, std::shared_ptr<expert_compute> compute,
                                        std::shared_ptr<member_status> status);

}  // namespace longcat::control
