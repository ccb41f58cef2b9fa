// The two member actors (attention_member.hpp, expert_member.hpp) and what they share.
#include "actors/control/attention_member.hpp"
#include "actors/control/expert_member.hpp"

#include <map>
#include <optional>
#include <set>

#include <caf/all.hpp>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/mailbox_peek.hpp"
#include "actors/control/stop_signal.hpp"

namespace longcat::control {

int run_member_until_stopped(const member_status& status,
                             const std::function<void(bool ready, const std::string& detail)>& report,
                             const std::function<void(const std::string&)>& log) {
    bool was_ready = false;
    while (!wait_for_stop(std::chrono::milliseconds(100))) {
        if (auto failure = status.failure()) {
            log("stopping: " + *failure);
            return 1;
        }
        if (status.ready() && !was_ready) {
            was_ready = true;
            report(true, "ready");
        } else if (!was_ready) {
            report(false, status.detail());
        }
    }
    log("stopping");
    return 0;
}

void stop_member(caf::actor_system& system, const caf::actor& member,
                 std::chrono::milliseconds timeout, const std::function<void()>& stop_compute,
                 const std::function<void(const std::string&)>& log) {
    bool gone = false;
    {
        caf::scoped_actor self{system};
        self->monitor(member);  // already gone: the down message comes at once
        self->send_exit(member, caf::exit_reason::user_shutdown);
        self->receive([&](const caf::down_msg&) { gone = true; }, caf::after(timeout) >> [] {});
    }
    if (gone)
        stop_compute();
    else
        log("the member was still busy " + std::to_string(timeout.count()) +
            " ms after the exit; its compute stops with the actor system");
}

void member_status::fail(std::string reason) {
    std::lock_guard lock(mutex_);
    if (!failure_) failure_ = std::move(reason);
}
std::optional<std::string> member_status::failure() const {
    std::lock_guard lock(mutex_);
    return failure_;
}
void member_status::set_detail(std::string detail) {
    std::lock_guard lock(mutex_);
    detail_ = std::move(detail);
}
std::string member_status::detail() const {
    std::lock_guard lock(mutex_);
    return detail_;
}

proto::expected<member_placement, std::string> to_member_placement(const proto::placement_map& map) {
    std::vector<cluster::expert_group_assignment> groups;
    for (const auto& group : map.groups)
        groups.push_back({group.name, group.data_plane_address, group.experts_by_layer});
    auto experts = cluster::placement_map::create(map.version, map.num_layers,
                                                  map.num_routed_experts, std::move(groups));
    if (!experts) return proto::unexpected<std::string>(experts.error().message);
    member_placement out;
    out.experts = std::move(*experts);
    for (const auto& worker : map.workers)
        out.workers.push_back({worker.name, worker.data_plane_address, worker.tp_group,
                               worker.tp_rank, worker.tp_size});
    return out;
}

namespace {

template <class Self>
void log_line(Self* self, const member_options& opts, const std::string& line) {
    if (opts.log) opts.log(line);
}

// The coordinator lets a member go that it found silent (a group answering no liveness probe,
// a worker answering no step by its deadline: stopped, say, and resumed since) with an exit,
// which stops this service with an error: "the coordinator let this <what> go" (a supervisor
// restarts it and it registers again). The service's own stop (user_shutdown) stays a clean one.
template <class Self>
void stop_when_let_go(Self* self, const member_options& opts,
                      const std::shared_ptr<member_status>& status, const std::string& what) {
    self->set_exit_handler([=](caf::exit_msg& message) {
        if (message.reason != caf::exit_reason::user_shutdown) {
            const std::string why = "the coordinator let this " + what +
                                    " go: " + self->system().render(message.reason);
            log_line(self, opts, why);
            status->fail(why);
        }
        self->quit(std::move(message.reason));
    });
}

proto::register_member make_registration(const member_options& opts) {
    proto::register_member message;
    message.greeting = opts.greeting;
    message.tp_group = opts.tp_group;
    message.tp_rank = opts.tp_rank;
    message.tp_size = opts.tp_size;
    message.kv_pages = opts.kv_pages;
    message.kv_page_size = opts.kv_page_size;
    message.pool = opts.pool;
    return message;
}

// Shared start-up: register, monitor the coordinator, then `on_accepted(reply)` (loads weights,
// on the member's own thread), then member_ready.
template <class Self, class OnAccepted>
void register_with(Self* self, coordinator_actor coordinator, const member_options& opts,
                   std::shared_ptr<member_status> status, OnAccepted on_accepted) {
    self->monitor(coordinator);
    self->set_down_handler([self, status, opts](caf::down_msg& down) {
        if (down.reason == caf::exit_reason::user_shutdown) {
            // The coordinator stopped cleanly (SIGTERM, drained): this member stops cleanly too.
            log_line(self, opts, "coordinator stopped; stopping");
            request_stop();
        } else {
            const std::string why = "coordinator is down: " + self->system().render(down.reason);
            log_line(self, opts, why);
            status->fail(why);
        }
        self->quit();
    });
    status->set_detail("registering with the coordinator");
    self->request(coordinator, opts.register_timeout, make_registration(opts))
        .then(
            [=](proto::register_reply& reply) {
                if (!reply.accepted) {
                    log_line(self, opts, reply.error);
                    status->fail(reply.error);
                    self->quit();
                    return;
                }
                status->set_detail("registered as member " + std::to_string(reply.member_id) +
                                   ", loading weights");
                log_line(self, opts, "registered with " + reply.coordinator.name + " as member " +
                                         std::to_string(reply.member_id));
                if (auto error = on_accepted(reply)) {
                    log_line(self, opts, "load failed: " + *error);
                    status->fail("load failed: " + *error);
                    self->quit();
                    return;
                }
                status->set_detail("ready");
                status->set_ready();
                self->send(coordinator, proto::member_ready{reply.member_id, opts.greeting.name});
            },
            [=](caf::error& error) {
                const std::string why = "registration failed: " + self->system().render(error);
                log_line(self, opts, why);
                status->fail(why);
                self->quit();
            });
}

}  // namespace

// See `deferred` in spawn_attention_member.
struct deferred_step_reply {
    caf::typed_response_promise<proto::step_result> promise;
    proto::step_result result;
};

attention_member_actor spawn_attention_member(caf::actor_system& system,
                                              coordinator_actor coordinator, member_options opts,
                                              std::shared_ptr<attention_compute> compute,
                                              std::shared_ptr<member_status> status) {
    // NOTES: opts travels as a spawn argument, not a capture: CAF 0.17's init_fun_factory
    // dereferences a null tuple pointer for argument-less spawns (UBSan flags it).
    auto behavior = [=](attention_member_actor::pointer self,
                        member_options opts) -> attention_member_actor::behavior_type {
        // This thread runs the steps (and starts OpenMP's threads).
        if (!use_compute_scheduling()) log_line(self, opts, "could not leave SCHED_BATCH for the compute thread");
        register_with(self, coordinator, opts, status,
                      [compute](const proto::register_reply&) { return compute->load(); });
        // The last step run and when its result left: boundary idle = the gap until the plan
        // that follows it (step_plan::follows_step) arrives.
        auto last_step = std::make_shared<std::pair<uint64_t, std::chrono::steady_clock::time_point>>();
        // The token this worker sampled last for each of its requests (pipelined plans decode it).
        auto last_sampled = std::make_shared<std::map<uint64_t, int32_t>>();
        // A step's reply held back because the next plan was already in the mailbox when the
        // step ended: it goes out at the next step's first combine wait, where this thread would
        // only block, so that the send (a wake-up of the middleman thread, most of what a
        // boundary cost) leaves the boundary. Delivered before anything else this actor answers,
        // and before a plan's KV imports (which may wait for their transfers).
        auto deferred = std::make_shared<std::optional<deferred_step_reply>>();
        auto flush = [deferred] {
            if (!deferred->has_value()) return;
            deferred_step_reply reply = std::move(**deferred);
            deferred->reset();
            reply.promise.deliver(std::move(reply.result));
        };
        self->attach_functor([flush] { flush(); });  // an exit came before the queued plan
        // Let go of after a step missed its deadline: restarted, it registers with empty caches.
        stop_when_let_go(self, opts, status, "worker");
        auto run_plan = [=](proto::step_plan& plan, double boundary_idle) -> proto::step_result {
            if (!plan.imports.empty()) flush();
            proto::step_result result;
            result.step_id = plan.step_id;
            result.worker = opts.greeting.name;
            for (uint64_t released : plan.released) last_sampled->erase(released);
            compute->release(plan.released);
            for (const proto::kv_release& r : plan.released_kv) compute->release_kv(r.request_id, r.attempt);
            // Prefill/decode disaggregation, decode side: pages for KV about to stream in,
            // then the KV of requests whose prefill is done; a request whose import failed is
            // left out of this step.
            for (const proto::kv_import& e : plan.expects) {
                if (auto error = compute->expect_kv(e.request_id, e.attempt, e.num_tokens)) {
                    log_line(self, opts, "step " + std::to_string(plan.step_id) + ": " + *error);
                    result.failed_requests.push_back(e.request_id);
                    result.failed_reasons.push_back(opts.greeting.name + ": " + *error);
                }
            }
            std::set<uint64_t> failed_imports;
            std::map<uint64_t, uint64_t> imported_counter;  // request → the sampler's counter
            for (const proto::kv_import& i : plan.imports) {
                const auto import_start = std::chrono::steady_clock::now();
                auto received = compute->receive_kv(i.request_id, i.from_name, i.num_tokens, i.attempt,
                                                    std::chrono::milliseconds(i.timeout_ms));
                if (!received) {
                    log_line(self, opts, "step " + std::to_string(plan.step_id) + ": " + received.error());
                    result.failed_requests.push_back(i.request_id);
                    result.failed_reasons.push_back(opts.greeting.name + ": " + received.error());
                    failed_imports.insert(i.request_id);
                } else {
                    // prefill_done: the first token is this worker's to decode next.
                    (*last_sampled)[i.request_id] = received->done.first_token;
                    imported_counter[i.request_id] = received->done.tokens_generated;
                    if (opts.on_kv_import)
                        opts.on_kv_import(received->bytes, std::chrono::duration<double>(
                                                               std::chrono::steady_clock::now() - import_start).count());
                }
            }
            std::vector<compute_sequence> sequences;
            for (auto& seq : plan.sequences) {
                if (failed_imports.count(seq.request_id) != 0) continue;
                if (auto it = imported_counter.find(seq.request_id);
                    it != imported_counter.end() && it->second != seq.token_index) {
                    // The plan and the prefill worker disagree on the sampler's state.
                    const std::string error = "request " + std::to_string(seq.request_id) + ": prefill_done says " +
                                              std::to_string(it->second) + " tokens generated, the plan " +
                                              std::to_string(seq.token_index);
                    log_line(self, opts, "step " + std::to_string(plan.step_id) + ": " + error);
                    result.failed_requests.push_back(seq.request_id);
                    result.failed_reasons.push_back(opts.greeting.name + ": " + error);
                    compute->release({seq.request_id});
                    continue;
                }
                if (const int64_t held = compute->cached_tokens(seq.request_id);
                    held != seq.cached_tokens) {
                    // Another count than the plan's (a request this worker never saw, or one
                    // whose step it lost): running it would start or extend the wrong sequence.
                    const std::string error = "request " + std::to_string(seq.request_id) +
                                              ": this worker holds " + std::to_string(held) +
                                              " cached tokens of it, the plan expects " +
                                              std::to_string(seq.cached_tokens);
                    log_line(self, opts, "step " + std::to_string(plan.step_id) + ": " + error);
                    result.failed_requests.push_back(seq.request_id);
                    result.failed_reasons.push_back(opts.greeting.name + ": " + error);
                    compute->release({seq.request_id});
                    last_sampled->erase(seq.request_id);
                    continue;
                }
                compute_sequence s;
                s.request_id = seq.request_id;
                s.new_tokens = std::move(seq.new_tokens);
                if (seq.decode_last_sampled) {
                    auto it = last_sampled->find(seq.request_id);
                    if (it == last_sampled->end()) {
                        result.error = opts.greeting.name + ": step " + std::to_string(plan.step_id) +
                                       ": request " + std::to_string(seq.request_id) +
                                       " has no sampled token to decode";
                        log_line(self, opts, result.error);
                        return result;
                    }
                    s.new_tokens = {it->second};
                }
                s.token_index = seq.token_index;
                s.sampling.temperature = seq.temperature;
                s.sampling.top_p = seq.top_p;
                s.sampling.top_k = seq.top_k;
                s.sampling.seed = seq.seed;
                sequences.push_back(std::move(s));
            }
            const auto start = std::chrono::steady_clock::now();
            auto output = compute->run_step(plan.step_id, sequences, flush);
            result.step_seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            if (!output) {
                result.error = opts.greeting.name + ": step " + std::to_string(plan.step_id) +
                               " failed: " + output.error();
                log_line(self, opts, result.error);
                return result;
            }
            for (size_t idx = 0; idx < sequences.size(); ++idx) {
                result.tokens.push_back({sequences[idx].request_id, output->tokens[idx]});
                (*last_sampled)[sequences[idx].request_id] = output->tokens[idx];
            }
            // Prefill side: the KV rows this step's prefill chunks computed go out now (a
            // failed send is reported at once: the coordinator retries without the decode
            // side waiting for its transfer deadline).
            for (const proto::kv_transfer& t : plan.transfers) {
                // The last chunk ends with prefill_done: the token sampled here, and the
                // sampler's counter after it.
                std::optional<proto::prefill_done_row> done;
                if (t.last)
                    for (size_t idx = 0; idx < sequences.size(); ++idx)
                        if (sequences[idx].request_id == t.request_id)
                            done = proto::prefill_done_row{output->tokens[idx], sequences[idx].token_index + 1};
                if (t.last && !done) {
                    result.failed_requests.push_back(t.request_id);
                    result.failed_reasons.push_back(opts.greeting.name + ": request " + std::to_string(t.request_id) +
                                                    ": a last KV chunk without its prefill in the plan");
                    compute->release({t.request_id});
                    continue;
                }
                if (auto error = compute->send_kv(t.request_id, t.to_name, t.to_address, t.first_token,
                                                  t.num_tokens, t.attempt, done)) {
                    log_line(self, opts, "step " + std::to_string(plan.step_id) + ": " + *error);
                    result.failed_requests.push_back(t.request_id);
                    result.failed_reasons.push_back(opts.greeting.name + ": " + *error);
                }
                if (t.last) last_sampled->erase(t.request_id);
            }
            result.kv_pages_used = output->kv_pages_used;
            result.kv_pages_free = output->kv_pages_free;
            if (opts.on_step) opts.on_step(*output, result.step_seconds, boundary_idle);
            return result;
        };
        return {
            [=](proto::step_plan& plan) -> caf::result<proto::step_result> {
                double boundary_idle = -1.0;
                if (plan.follows_step != 0 && plan.follows_step == last_step->first)
                    boundary_idle = std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                                                  last_step->second).count();
                proto::step_result result = run_plan(plan, boundary_idle);
                const auto end = std::chrono::steady_clock::now();
                flush();  // the previous step's reply, when no combine wait sent it
                if (!result.error.empty()) return result;
                *last_step = {plan.step_id, end};
                if (!next_message_is_step_plan(self)) return result;
                auto promise = self->make_response_promise<proto::step_result>();
                deferred->emplace(deferred_step_reply{promise, std::move(result)});
                return promise;
            },
            [=](proto::placement_update& update) -> proto::placement_ack {
                flush();
                proto::placement_ack ack{update.map.version, opts.greeting.name, ""};
                auto placement = to_member_placement(update.map);
                if (!placement) ack.error = placement.error();
                else if (auto error = compute->apply_placement(*placement)) ack.error = *error;
                log_line(self, opts, "placement v" + std::to_string(update.map.version) +
                                         (ack.error.empty() ? ": paired" : ": " + ack.error));
                return ack;
            },
        };
    };
    return system.spawn<caf::detached>(behavior, std::move(opts));
}

expert_member_actor spawn_expert_member(caf::actor_system& system, coordinator_actor coordinator,
                                        member_options opts, std::shared_ptr<expert_compute> compute,
                                        std::shared_ptr<member_status> status) {
    auto behavior = [=](expert_member_actor::pointer self,
                        member_options opts) -> expert_member_actor::behavior_type {
        // The serving thread (and its OpenMP pool) starts from here.
        if (!use_compute_scheduling()) log_line(self, opts, "could not leave SCHED_BATCH for the compute threads");
        register_with(self, coordinator, opts, status, [compute](const proto::register_reply& reply) {
            return compute->load(reply.experts_by_layer);
        });
        // Let go of after it answered no liveness probe for the peer timeout.
        stop_when_let_go(self, opts, status, "group");
        return {
            [](proto::liveness_probe& probe) -> proto::liveness_probe { return probe; },
            [=](proto::placement_update& update) -> proto::placement_ack {
                proto::placement_ack ack{update.map.version, opts.greeting.name, ""};
                auto placement = to_member_placement(update.map);
                if (!placement) ack.error = placement.error();
                else if (auto error = compute->apply_placement(*placement)) ack.error = *error;
                std::string workers;
                for (const auto& worker : update.map.workers) workers += (workers.empty() ? "" : ", ") + worker.name;
                log_line(self, opts, "placement v" + std::to_string(update.map.version) +
                                         (ack.error.empty() ? ": serving attention workers " + workers
                                                            : ": " + ack.error));
                return ack;
            },
        };
    };
    return system.spawn<caf::detached>(behavior, std::move(opts));
}

}  // namespace longcat::control
