// interfaces: the typed CAF interfaces of the cluster's control plane (STYLE.md §2) — the set
// of them is the control-plane architecture on one page. Messages are in proto/messages.hpp.
//
//   coordinator_actor       ← members: register_member, member_ready; ← clients: generate_request
//                             (→ token_chunk to a streaming requester), cancel_request,
//                             status_query; ← its service: drain_request (SIGTERM).
//                             → members: placement_update, step_plan.
//   attention_member_actor  ← coordinator: step_plan (→ step_result), placement_update (→ ack).
//   expert_member_actor     ← coordinator: placement_update (→ ack).
// Per-layer tensors never travel here: dispatch/combine/KV/collective frames go over UCX.
// NOTES: includes CAF; include only from actor sources.
#pragma once

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "proto/messages.hpp"

namespace longcat::control {

using coordinator_actor = caf::typed_actor<
    caf::replies_to<proto::register_member>::with<proto::register_reply>,
    caf::reacts_to<proto::member_ready>,
    caf::replies_to<proto::generate_request>::with<proto::generate_reply>,
    caf::reacts_to<proto::cancel_request>,
    caf::replies_to<proto::status_query>::with<proto::cluster_status>,
    caf::replies_to<proto::drain_request>::with<proto::cluster_status>,
    caf::reacts_to<proto::liveness_probe>>;  // its own probe timer

using attention_member_actor = caf::typed_actor<
    caf::replies_to<proto::step_plan>::with<proto::step_result>,
    caf::replies_to<proto::placement_update>::with<proto::placement_ack>>;

using expert_member_actor =
    caf::typed_actor<caf::replies_to<proto::placement_update>::with<proto::placement_ack>,
                     caf::replies_to<proto::liveness_probe>::with<proto::liveness_probe>>;

}  // namespace longcat::control
