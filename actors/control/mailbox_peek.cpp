// Compiled with -fno-sanitize=vptr when LONGCAT_SANITIZE is on (actors/control/CMakeLists.txt):
// CAF 0.17's intrusive queues static_cast their sentinel nodes to mailbox_element (an empty
// task_queue's back() in lifo_append, run by fetch_more), as CAF's own compiled code does;
// instantiated in a file under UBSan's vptr check, that cast aborts the process. Only the head
// of the queue is read here: CAF's peek_all also casts the end sentinel.
#include "actors/control/mailbox_peek.hpp"

#include <tuple>

#include <caf/mailbox_element.hpp>
#include <caf/scheduled_actor.hpp>

#include "proto/messages.hpp"

namespace longcat::control {

bool next_message_is_step_plan(caf::scheduled_actor* self) {
    auto& mailbox = self->mailbox();
    mailbox.fetch_more();
    const caf::mailbox_element* next =
        std::get<caf::scheduled_actor::normal_queue_index>(mailbox.queue().queues()).peek();
    return next != nullptr && next->content().match_elements<proto::step_plan>();
}

}  // namespace longcat::control
