// mailbox_peek: what the next message in a CAF actor's mailbox is, for the attention member's
// deferred step reply (member_actors.cpp). Call it only from the actor's own thread.
// NOTES: a file of its own because it is compiled without UBSan's vptr check (see the .cpp).
#pragma once

namespace caf {
class scheduled_actor;
}

namespace longcat::control {

// Whether the next message the actor handles is a proto::step_plan: the head of its normal
// queue, after moving what arrived in its lock-free inbox into the queues.
bool next_message_is_step_plan(caf::scheduled_actor* self);

}  // namespace longcat::control
