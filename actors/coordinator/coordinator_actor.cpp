#include <time.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include <caf/all.hpp>

#include "actors/coordinator/coordinator.hpp"

namespace longcat::coordinator {

namespace {

struct actor_state {
    std::unique_ptr<coordinator_state> core;
    coordinator_hooks hooks;
    std::map<uint64_t, caf::strong_actor_ptr> handles;  // member id → its actor
    std::map<caf::actor_addr, uint64_t> by_addr;        // for down messages
    std::map<uint64_t, caf::typed_response_promise<proto::generate_reply>> clients;
    std::map<uint64_t, caf::actor> streams;  // streaming requests → their requester
    uint64_t next_request_id = 1;
    // The step loops, one per lane (coordinator_state.hpp): the steps sent and not yet emitted,
    // oldest first (per lane at most steps_in_flight(): config.pipeline_depth, one more while
    // the lane's steps are short; step N+1 is sent while N runs).
    struct step_in_flight {
        std::string lane;
        std::set<uint64_t> pending;  // workers that have not answered yet
        std::vector<proto::step_result> results;
        clock::time_point start;
        // Some worker runs sequences in it: its compute time counts for the lane's depth (not
        // a step that only frees pages or moves KV, which would look short).
        bool timed = false;
    };
    std::map<uint64_t, step_in_flight> steps;
    std::map<std::string, uint64_t> last_sent_step;  // per lane
    // Per lane: the workers' compute seconds per step (the slowest worker of each step),
    // averaged over recent steps; steps_in_flight() reads it.
    std::map<std::string, double> step_seconds;
    std::string continuing_lane;  // while `continuing`: the lane whose step completed
    size_t acks_pending = 0;
    std::string last_reason = "starting";
    std::vector<caf::typed_response_promise<proto::cluster_status>> drain_waiters;
    double cpu_since_step = 0.0;  // coordinator CPU seconds since the last step completed
    bool continuing = false;      // drive() runs in answer to a completed step
    bool wake_pending = false;    // a wake-up (cancel_request for id 0) is on its way
    std::set<uint64_t> probing;   // expert groups with a liveness probe out
    uint64_t next_probe_tick = 1;  // the sequence of the timer's next tick
};

using self_ptr = control::coordinator_actor::stateful_pointer<actor_state>;

double thread_cpu_seconds() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Adds the CPU time this handler spends on its thread to the coordinator's step-loop total
// (reported per step through hooks.on_step_cpu).
class cpu_meter {
  public:
    explicit cpu_meter(self_ptr self) : self_(self), start_(thread_cpu_seconds()) {}
    ~cpu_meter() { self_->state.cpu_since_step += thread_cpu_seconds() - start_; }
    cpu_meter(const cpu_meter&) = delete;
    cpu_meter& operator=(const cpu_meter&) = delete;

  private:
    self_ptr self_;
    double start_;
};

void log(self_ptr self, const std::string& line) {
    if (self->state.hooks.log) self->state.hooks.log(line);
}

void notify(self_ptr self) {
    auto& s = self->state;
    const proto::cluster_status status = s.core->status();
    if (status.reason != s.last_reason) {
        log(self, status.serving ? "serving (placement v" + std::to_string(status.map.version) + ")"
                                 : "not serving: " + status.reason);
        s.last_reason = status.reason;
    }
    if (s.hooks.on_status_change) s.hooks.on_status_change(status);
}

void reply_finished(self_ptr self, std::vector<finished_request> finished) {
    auto& s = self->state;
    for (finished_request& f : finished) {
        if (!f.reply.error.empty()) log(self, "request " + std::to_string(f.id) + " failed: " + f.reply.error);
        if (s.hooks.on_request_end) s.hooks.on_request_end(f.reply.finish_reason);
        s.streams.erase(f.id);
        if (auto it = s.clients.find(f.id); it != s.clients.end()) {
            it->second.deliver(std::move(f.reply));
            s.clients.erase(it);
        }
    }
}

void drive(self_ptr self);
void member_lost(self_ptr self, uint64_t member_id, const std::string& why);

using step_iterator = std::map<uint64_t, actor_state::step_in_flight>::iterator;

// The oldest step in flight of `lane` (steps.end() when none).
step_iterator oldest_of(actor_state& s, const std::string& lane) {
    for (auto it = s.steps.begin(); it != s.steps.end(); ++it)
        if (it->second.lane == lane) return it;
    return s.steps.end();
}

size_t steps_of(const actor_state& s, const std::string& lane) {
    size_t count = 0;
    for (const auto& [step_id, step] : s.steps) count += step.lane == lane ? 1 : 0;
    return count;
}

// -- named steps of the loop --------------------------------------------------------------------

// apply_placement: at a step boundary, send a new map to every member; the loop waits for acks.
bool apply_placement(self_ptr self) {
    auto& s = self->state;
    auto map = s.core->apply_placement();
    if (!map) return false;
    log(self, "placement v" + std::to_string(map->version) + ": " + std::to_string(map->groups.size()) +
                  " expert groups, " + std::to_string(map->workers.size()) + " attention workers");
    const auto timeout = std::chrono::milliseconds(s.core->config().step_timeout_ms);
    for (uint64_t member_id : s.core->member_ids()) {
        auto handle = s.handles.find(member_id);
        if (handle == s.handles.end()) continue;
        ++s.acks_pending;
        auto member = caf::actor_cast<control::expert_member_actor>(handle->second);
        self->request(member, timeout, proto::placement_update{s.core->placement_for(member_id)})
            .then(
                [=](proto::placement_ack& ack) {
                    if (!ack.error.empty()) {
                        log(self, "placement ack from " + ack.name + ": " + ack.error);
                        reply_finished(self,
                                       self->state.core->placement_failed(member_id, ack.error));
                    }
                    self->state.core->placement_acked(ack, member_id);
                    --self->state.acks_pending;
                    notify(self);
                    drive(self);
                },
                [=](caf::error& error) {
                    const std::string why = self->system().render(error);
                    log(self, "placement update to member " + std::to_string(member_id) +
                                  " failed: " + why);
                    reply_finished(self, self->state.core->placement_failed(member_id, why));
                    --self->state.acks_pending;
                    notify(self);
                    drive(self);
                });
    }
    return true;
}

// Emits its lane's oldest step once every worker answered it (a lane's steps are emitted in
// order: a later step that completes first waits for the older one; lanes are independent).
void on_step_result(self_ptr self, uint64_t step_id, uint64_t worker_id, proto::step_result result) {
    auto& s = self->state;
    auto step = s.steps.find(step_id);
    if (step == s.steps.end() || step->second.pending.erase(worker_id) == 0) return;
    step->second.results.push_back(std::move(result));
    const std::string lane = step->second.lane;
    bool emitted = false;
    for (auto oldest = oldest_of(s, lane); oldest != s.steps.end() && oldest->second.pending.empty();
         oldest = oldest_of(s, lane)) {
        const uint64_t done_id = oldest->first;
        auto done = std::move(oldest->second);
        s.steps.erase(oldest);
        const double seconds = std::chrono::duration<double>(clock::now() - done.start).count();
        if (s.hooks.on_step) s.hooks.on_step(seconds);
        double compute = 0.0;
        for (const proto::step_result& r : done.results)
            if (r.error.empty()) compute = std::max(compute, r.step_seconds);
        if (compute > 0.0 && done.timed) {
            double& average = s.step_seconds[lane];
            average = average > 0.0 ? 0.75 * average + 0.25 * compute : compute;
        }
        // emit_tokens: sampled tokens to the request table; streams get theirs; ended requests
        // answered (after their last chunk: one sender, so the requester sees them in order).
        auto finished = s.core->emit_tokens(done_id, done.results);
        std::map<caf::actor, proto::token_batch> batches;  // one message per requester per step
        for (token_delta& delta : s.core->take_deltas()) {
            auto it = s.streams.find(delta.id);
            if (it == s.streams.end()) continue;
            const request_record* record = s.core->request(delta.id);
            batches[it->second].chunks.push_back(
                {delta.id, record ? record->request.client_request_id : "", std::move(delta.tokens)});
        }
        for (auto& [requester, batch] : batches) caf::anon_send(requester, std::move(batch));
        reply_finished(self, std::move(finished));
        emitted = true;
    }
    if (!emitted) return;
    notify(self);
    s.continuing = true;
    s.continuing_lane = lane;
    drive(self);
    s.continuing = false;
}

// Sends one step's plans.
void run_step(self_ptr self, step_batch batch) {
    auto& s = self->state;
    const uint64_t step_id = batch.step_id;
    auto& step = s.steps[step_id];
    step.lane = batch.lane;
    for (const auto& [worker_id, plan] : batch.plans) {
        step.pending.insert(worker_id);
        step.timed = step.timed || !plan.sequences.empty();
    }
    step.start = clock::now();
    // The worker times the gap since the step of its lane this one follows (0: it starts after
    // idling).  A release-only step (no sequences anywhere: it only frees finished requests'
    // pages once the batch has drained) follows nothing: the worker had no work left, so the
    // wait for it is not a boundary of the step loop.
    const bool follows_one = !batch.empty() &&
                             ((s.continuing && s.continuing_lane == batch.lane) || steps_of(s, batch.lane) > 1);
    const uint64_t follows = follows_one ? s.last_sent_step[batch.lane] : 0;
    s.last_sent_step[batch.lane] = step_id;
    const auto timeout = std::chrono::milliseconds(s.core->config().step_timeout_ms);
    for (auto& [planned_worker, plan] : batch.plans) {
        plan.follows_step = follows;
        const uint64_t worker_id = planned_worker;
        const member_record* worker = s.core->member(worker_id);
        const std::string name = worker ? worker->greeting.name : std::to_string(worker_id);
        auto worker_actor = caf::actor_cast<control::attention_member_actor>(s.handles[worker_id]);
        self->request(worker_actor, timeout, std::move(plan))
            .then(
                [=](proto::step_result& result) {
                    auto it = self->state.steps.find(step_id);
                    const bool completes = it != self->state.steps.end() &&
                                           it->second.pending.size() == 1 &&
                                           it == oldest_of(self->state, it->second.lane);
                    {
                        cpu_meter meter(self);
                        on_step_result(self, step_id, worker_id, std::move(result));
                    }
                    // One step's coordinator CPU: everything since the previous step completed
                    // (admissions, results, planning and sending the next step).
                    if (completes && self->state.hooks.on_step_cpu) {
                        self->state.hooks.on_step_cpu(self->state.cpu_since_step);
                        self->state.cpu_since_step = 0.0;
                    }
                },
                [=](caf::error& error) {
                    // A worker that answers no step for step-timeout-ms (stopped, hung, or cut
                    // off without its connection closing) is let go of, like a group silent to
                    // the probes: its requests fail naming it, and an exit stops it when it
                    // runs again (attention member's exit handler).
                    auto& st = self->state;
                    if (error == caf::sec::request_timeout) {
                        if (auto handle = st.handles.find(worker_id); handle != st.handles.end()) {
                            self->send_exit(caf::actor_cast<caf::actor>(handle->second),
                                            caf::exit_reason::unreachable);
                            member_lost(self, worker_id,
                                        "answered no step for " + std::to_string(timeout.count()) +
                                            " ms (step " + std::to_string(step_id) + ")");
                            return;
                        }
                    }
                    proto::step_result failed;
                    failed.step_id = step_id;
                    failed.worker = name;
                    failed.error = "attention worker " + name + ": " + self->system().render(error);
                    on_step_result(self, step_id, worker_id, std::move(failed));
                });
    }
}

void answer_drain_waiters(self_ptr self) {
    auto& s = self->state;
    if (s.drain_waiters.empty() || !s.core->drained()) return;
    for (auto& waiter : s.drain_waiters) waiter.deliver(s.core->status());
    s.drain_waiters.clear();
}

// The loop has no timer of its own: drive() runs on messages. When it must act later (a map to
// send again after a failed one, deadlines of requests waiting while not serving), it sends
// itself a wake-up: a cancel_request for request 0, which no request has.
void wake_at(self_ptr self, clock::time_point when) {
    auto& s = self->state;
    if (s.wake_pending) return;
    s.wake_pending = true;
    const auto delay = std::max(clock::duration::zero(), when - clock::now());
    self->delayed_send(self, delay, proto::cancel_request{0, "wake-up"});
}

void drive(self_ptr self) {
    answer_drain_waiters(self);
    auto& s = self->state;
    if (s.acks_pending > 0) return;
    if (s.core->placement_pending()) {
        if (!s.steps.empty()) return;  // a new map waits for the steps in flight
        if (clock::now() < s.core->placement_retry_at()) {  // after a failed map: back off
            wake_at(self, s.core->placement_retry_at());
            return;
        }
        if (apply_placement(self)) return;
    }
    if (!s.core->serving()) {
        // Requests waiting meanwhile still end by their deadlines.
        if (s.core->queued_requests() + s.core->running_requests() > 0)
            wake_at(self, clock::now() + std::chrono::seconds(1));
        return;
    }
    const auto& config = s.core->config();
    for (const std::string& lane : s.core->lanes()) {
        const auto average = s.step_seconds.find(lane);
        const auto depth = static_cast<size_t>(
            steps_in_flight(config.pipeline_depth, config.short_step_us,
                            average == s.step_seconds.end() ? 0.0 : average->second));
        while (steps_of(s, lane) < depth) {
            step_batch batch = s.core->plan_step(lane);
            reply_finished(self, s.core->take_finished());
            bool releases = false;
            for (const auto& [worker_id, plan] : batch.plans)
                releases = releases || !plan.released.empty() || !plan.released_kv.empty();
            // Nothing to run: send nothing, unless pages wait to be freed (an empty step frees them).
            if (batch.empty() && (!releases || steps_of(s, lane) != 0)) {
                s.core->discard_plan(batch);
                break;
            }
            const bool release_only = batch.empty();
            run_step(self, std::move(batch));
            if (release_only) break;
        }
    }
}

// A member died (its down message) or went silent (no answer to a liveness probe): it leaves the
// membership, the requests and steps that needed it fail naming it, and requests are refused
// until it (or a replacement) registers again.
void member_lost(self_ptr self, uint64_t member_id, const std::string& why) {
    auto& s = self->state;
    if (auto handle = s.handles.find(member_id); handle != s.handles.end()) {
        s.by_addr.erase(caf::actor_cast<caf::actor_addr>(handle->second));
        s.handles.erase(handle);
    }
    s.probing.erase(member_id);
    const member_record* member = s.core->member(member_id);
    const std::string name = member ? member->greeting.name : std::to_string(member_id);
    log(self, "member " + name + " is down: " + why);
    reply_finished(self, s.core->member_down(member_id));
    // A worker of the steps in flight that died answers nothing: its share of them failed.
    std::vector<uint64_t> waiting;
    for (const auto& [step_id, step] : s.steps)
        if (step.pending.count(member_id) != 0) waiting.push_back(step_id);
    for (uint64_t step_id : waiting) {
        proto::step_result failed;
        failed.step_id = step_id;
        failed.worker = name;
        failed.error = "attention worker " + name + " is down: " + why;
        on_step_result(self, step_id, member_id, std::move(failed));
    }
    notify(self);
    drive(self);
}

// peer-timeout-ms ÷ 4 (0: no probes).
std::chrono::milliseconds probe_interval(self_ptr self) {
    return std::chrono::milliseconds(self->state.core->config().peer_timeout_ms / 4);
}

// One liveness probe to every ready expert group that has none out. A group that lets one go
// unanswered for peer-timeout-ms is let go of: member_lost, and an exit it finds when it runs
// again (it then stops with an error; expert_member's exit handler). A group that died is left
// to its down message. Groups loading their weights are not probed (the loading thread is the
// one that answers). Attention workers are not probed: the thread that would answer runs their
// steps; a worker that answers no step by step-timeout-ms is let go of instead (run_step).
void probe_expert_groups(self_ptr self, uint64_t sequence) {
    auto& s = self->state;
    const auto timeout = std::chrono::milliseconds(s.core->config().peer_timeout_ms);
    for (const auto& [member_id, handle] : s.handles) {
        const member_record* member = s.core->member(member_id);
        if (!member || member->greeting.role != proto::node_role::expert_group || !member->ready)
            continue;
        if (!s.probing.insert(member_id).second) continue;  // the last one is still out
        self->request(caf::actor_cast<control::expert_member_actor>(handle), timeout,
                      proto::liveness_probe{sequence})
            .then([self, id = member_id](proto::liveness_probe&) { self->state.probing.erase(id); },
                  [self, id = member_id, timeout](caf::error& error) {
                      auto& st = self->state;
                      st.probing.erase(id);
                      if (error != caf::sec::request_timeout) return;  // died: its down message
                      auto handle = st.handles.find(id);
                      if (handle == st.handles.end()) return;  // gone meanwhile
                      self->send_exit(caf::actor_cast<caf::actor>(handle->second),
                                      caf::exit_reason::unreachable);
                      member_lost(self, id,
                                  "answered no liveness probe for " +
                                      std::to_string(timeout.count()) + " ms");
                  });
    }
}

control::coordinator_actor::behavior_type coordinator_behavior(self_ptr self,
                                                               std::unique_ptr<coordinator_state> core,
                                                               coordinator_hooks hooks) {
    self->state.core = std::move(core);
    self->state.hooks = std::move(hooks);
    self->set_down_handler([self](caf::down_msg& down) {
        auto& s = self->state;
        auto it = s.by_addr.find(down.source);
        if (it == s.by_addr.end()) return;
        member_lost(self, it->second, self->system().render(down.reason));
    });
    if (const auto interval = probe_interval(self); interval.count() > 0)
        self->delayed_send(self, interval, proto::liveness_probe{1});
    notify(self);
    return {
        [self](proto::liveness_probe& tick) {  // the probe timer
            // Only the timer's own tick: one sent by anyone else starts no second timer (and,
            // with the probes off, no probe with a zero timeout).
            auto& s = self->state;
            if (probe_interval(self).count() == 0 || tick.sequence != s.next_probe_tick) return;
            ++s.next_probe_tick;
            probe_expert_groups(self, tick.sequence);
            self->delayed_send(self, probe_interval(self),
                               proto::liveness_probe{s.next_probe_tick});
        },
        [self](proto::register_member& message) -> proto::register_reply {
            auto& s = self->state;
            proto::register_reply reply = s.core->register_member(message);
            if (!reply.accepted) {
                log(self, reply.error);
                return reply;
            }
            auto sender = self->current_sender();
            s.handles[reply.member_id] = sender;
            s.by_addr[caf::actor_cast<caf::actor_addr>(sender)] = reply.member_id;
            self->monitor(sender);
            std::string what = message.greeting.name + " (" +
                               std::string(proto::to_string(message.greeting.role)) + ") at " +
                               message.greeting.data_plane_address;
            if (!reply.experts_by_layer.empty())
                what += ", assigned experts " + format_expert_list(reply.experts_by_layer[0]);
            log(self, "registered " + what);
            notify(self);
            return reply;
        },
        [self](proto::member_ready& ready) {
            log(self, ready.name + " is ready");
            self->state.core->member_ready(ready.member_id);
            notify(self);
            drive(self);
        },
        [self](proto::generate_request& request) {
            cpu_meter meter(self);
            auto& s = self->state;
            // Before make_response_promise: the promise takes the sender out of the message.
            auto requester = caf::actor_cast<caf::actor>(self->current_sender());
            auto promise = self->make_response_promise<proto::generate_reply>();
            const uint64_t request_id = s.next_request_id++;
            if (auto refused = s.core->admit(request_id, request)) {
                proto::generate_reply reply;
                reply.request_id = request_id;
                reply.finish_reason = "error";
                reply.error = refused->message;
                reply.error_kind = refused->kind;
                if (s.hooks.on_request_end) s.hooks.on_request_end("refused");
                promise.deliver(std::move(reply));
                return promise;
            }
            s.clients.emplace(request_id, promise);
            if (request.stream) {
                // The requester learns the request id (for cancel_request) before any token.
                if (requester) {
                    s.streams.emplace(request_id, requester);
                    caf::anon_send(requester, proto::token_chunk{request_id, request.client_request_id, {}});
                }
            }
            drive(self);
            return promise;
        },
        [self](proto::cancel_request& cancel) {
            cpu_meter meter(self);
            auto& s = self->state;
            if (cancel.request_id == 0) {  // wake_at()
                s.wake_pending = false;
                if (s.steps.empty()) reply_finished(self, s.core->expire_deadlines());
                notify(self);
                drive(self);
                return;
            }
            if (!s.core->cancel(cancel.request_id)) return;
            log(self, "request " + std::to_string(cancel.request_id) + " cancelled" +
                          (cancel.reason.empty() ? "" : ": " + cancel.reason));
            reply_finished(self, s.core->take_finished());
            notify(self);
            drive(self);
        },
        [self](proto::status_query&) -> proto::cluster_status { return self->state.core->status(); },
        [self](proto::drain_request& request) {
            auto& s = self->state;
            log(self, "draining: refusing new requests, " + std::to_string(s.core->running_requests()) +
                          " running, " + std::to_string(s.core->queued_requests()) + " queued");
            s.core->start_draining();
            auto promise = self->make_response_promise<proto::cluster_status>();
            s.drain_waiters.push_back(promise);
            answer_drain_waiters(self);
            return promise;
        },
    };
}

}  // namespace

control::coordinator_actor spawn_coordinator(caf::actor_system& system,
                                             std::unique_ptr<coordinator_state> state,
                                             coordinator_hooks hooks) {
    return system.spawn(coordinator_behavior, std::move(state), std::move(hooks));
}

}  // namespace longcat::coordinator
