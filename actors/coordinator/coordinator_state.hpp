// coordinator_state: the coordinator's logic without CAF — membership, the versioned placement
// map and the continuous-batching step loop as named steps (STYLE.md §3). The actor
// (coordinator_actor.cpp) owns one, feeds it events and sends what it returns.
// Owns: members (attention workers by TP group and rank, expert groups), the placement map and
//   its version, the request table (queued, running), KV-page reservations per worker, the step
//   counter.
// Receives (as calls): register/ready/down of members, placement acks, client requests and
//   cancels, step results. Returns: replies, placement updates to send, step plans to send,
//   token deltas of streaming requests, finished requests.
//
// Step loop: apply_placement → (acks) → plan_step N → plan_step N+1 → [results of N]
//   emit_tokens(N) → plan_step N+2 → [results of N+1] emit_tokens(N+1) → ...
// Pipelined planning: a step is planned from the state the steps in flight will leave (their
//   prefill chunks done, their samples taken), so the actor sends step N+1 while N runs and a
//   worker starts N+1 as soon as N ends. A decode whose previous token is still in flight says
//   decode_last_sampled (the worker sampled it). A request that ends by EOS in step N has run
//   one more step by then: that token is dropped and its pages released in the next plan.
//   Requests that reach max_tokens are known in advance and are not planned past it.
// Continuous batching: requests join the running batch at any step boundary (admit_queued) and
//   leave it when they end; a joining request's prefill runs in the same step as the others'
//   decodes, in chunks of config.prefill_chunk tokens (its sampled token counts only after the
//   last chunk).
// KV pages (workers announce pool and page size when they register): the coordinator reserves
//   for each running request the pages its tokens will occupy after the next step, exactly as
//   the worker's paged cache allocates them (ceil(tokens / page_size)). Policy when pages run
//   out: queue first — a queued request is admitted only when its whole prefill + 1 token fits
//   beside the running ones' reservations (FIFO: the head waits, nothing overtakes it); then
//   preempt and recompute — when the running requests' next step would not fit, the most
//   recently admitted one on that worker is preempted: its pages are freed, and it goes back to
//   the front of the queue to prefill prompt + generated tokens again, keeping its stream and
//   its token index (the sampler's counter), so its output is the same. A request that cannot
//   fit even alone is refused at admission (or ended with an error naming the pool).
// Prefill/decode disaggregation (ARCHITECTURE.md §6), when both prefill and decode workers are
//   ready: a request is admitted to a prefill worker (its prompt must fit there) with pages
//   reserved on a decode worker at the same time (the decode worker's next plan: expects); each
//   prefill chunk's plan has the prefill worker send that chunk's KV after its forward
//   (kv_transfer); once the last chunk's result (the first token) is in, the decode worker's
//   next plan imports it (kv_import: every row landed) and decodes it in the same step. An import that
//   misses its deadline is retried once from a prefill step on another prefill worker (the
//   request is requeued with prompt + its tokens, keeping its stream), then the request fails
//   with a named error. A preempted request goes back through prefill the same way.
// NOTES: a new map takes effect only at a step boundary: the actor calls apply_placement only
//   when no step is in flight; running requests keep their KV on their workers across maps.
//   Every ready worker of a lane gets a plan every step of that lane (possibly empty), so expert
//   groups receive a frame from every paired worker for every (step, layer, micro-batch).
// Expert pools and lanes: expert groups register with a pool — "" (shared by every attention
//   worker) or "prefill" / "decode" (only the workers of that role). When every group is in a
//   pool, each pool is a lane: its own step loop (step ids stay unique across lanes), its own
//   view of the placement map (placement_for), so decode steps never wait for a prefill step.
//   Every pool must hold every expert. The KV streams out with each prefill chunk's step (in
//   the prefill lane); once the last chunk's result is in, the decode lane's next plan imports
//   it. With shared groups there is one lane "".
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/coordinator/coordinator_config.hpp"
#include "proto/messages.hpp"

namespace longcat::coordinator {

using clock = std::chrono::steady_clock;

struct member_record {
    uint64_t id = 0;
    proto::hello greeting;
    std::string tp_group;
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
    int64_t kv_pages = 0;                                // attention workers: pool (0: unknown)
    int64_t kv_page_size = 0;
    bool ready = false;                                  // weights loaded
    uint64_t acked_version = 0;                          // last placement it connected for
    std::vector<std::vector<int32_t>> experts_by_layer;  // expert groups: what it holds
    std::string pool;                                    // expert groups: "", prefill, decode
    bool is_worker() const {
        return greeting.role == proto::node_role::attention_decode ||
               greeting.role == proto::node_role::attention_prefill;
    }
    bool is_prefill() const { return greeting.role == proto::node_role::attention_prefill; }
};

struct request_record {
    uint64_t id = 0;
    proto::generate_request request;
    uint64_t worker_id = 0;          // owner (data-parallel attention)
    std::vector<int32_t> generated;  // sampled so far (results received)
    // What the owner must prefill: the prompt, or prompt + generated after a preemption.
    std::vector<int32_t> prefill;
    size_t prefill_done = 0;   // of `prefill`, in the owner's cache (results received)
    int64_t cached = 0;        // tokens in the owner's KV cache after the last completed step
    // What the steps in flight (sent, results not yet received) add.
    size_t inflight_prefill = 0;
    int64_t inflight_tokens = 0;
    int64_t inflight_samples = 0;
    uint32_t epoch = 0;        // +1 per preemption: older in-flight runs no longer count
    uint64_t admit_order = 0;  // larger = admitted later (the preemption victim)
    int32_t preemptions = 0;
    // Prefill/decode disaggregation: while on_prefill, worker_id is its prefill worker and
    // decode_worker the worker whose pages are reserved for it. Each prefill chunk's step also
    // sends that chunk's KV there (kv_transfer); once the last chunk's result is in (kv_sent()),
    // the next plan of the decode worker imports it (kv_import) and worker_id follows.
    bool on_prefill = false;
    uint64_t decode_worker = 0;
    uint64_t transfer_from = 0;    // the prefill worker of the last transfer
    bool expect_planned = false;   // the decode worker was told to reserve its pages
    uint64_t stream_step = 0;      // the latest step sending its KV (0: none yet)
    bool stream_last_planned = false;  // the last chunk's send is planned (its pages go then)
    // The step that imports its KV on the decode worker: until its result is in, no further step
    // decodes it (its first decode's sample does not exist if the import fails).
    uint64_t import_step = 0;
    int32_t transfer_failures = 0;
    clock::time_point deadline;

    // The state once the steps in flight are done.
    size_t planned_prefill_done() const { return prefill_done + inflight_prefill; }
    int64_t planned_cached() const { return cached + inflight_tokens; }
    int64_t planned_generated() const { return static_cast<int64_t>(generated.size()) + inflight_samples; }
    bool prefilled() const { return prefill_done >= prefill.size(); }
};

// One request's part in a step that was sent: what its result will add.
struct planned_run {
    int64_t tokens = 0;   // new tokens in the cache
    int64_t prefill = 0;  // of them, prefill tokens
    int64_t samples = 0;  // 1 when the step's sample counts (decode, or the last prefill chunk)
    uint32_t epoch = 0;
};

// Tokens a streaming request produced in one step (the actor sends them as a token_chunk).
struct token_delta {
    uint64_t id = 0;
    std::vector<int32_t> tokens;
};

// A request the coordinator does not take, and why.
struct refusal {
    proto::request_error kind = proto::request_error::invalid_request;
    std::string message;
};

// A request that ended: the reply to send to its client.
struct finished_request {
    uint64_t id = 0;
    proto::generate_reply reply;
};

// Plans for one step of one lane: one per ready worker of the lane.
struct step_batch {
    uint64_t step_id = 0;
    std::string lane;
    std::map<uint64_t, proto::step_plan> plans;  // worker member id → plan
    bool empty() const;  // no sequence, KV transfer, expect or import in any plan
};

class coordinator_state {
public:
    // num_layers and num_routed_experts come from the model's config.json.
    coordinator_state(coordinator_config config, int32_t num_layers, int32_t num_routed_experts,
                      int64_t eos_token_id);

    // -- membership -------------------------------------------------------------------------
    // check_hello against the coordinator's own hello, a duplicate live name, and for expert
    // groups an assignment (from the spec, else the experts no live group holds).
    proto::register_reply register_member(const proto::register_member& message);
    void member_ready(uint64_t member_id);
    // A member died (CAF down). Returns the requests that fail because of it, each with an error
    // naming the member (an expert group: with its experts).
    std::vector<finished_request> member_down(uint64_t member_id);
    void placement_acked(const proto::placement_ack& ack, uint64_t member_id);
    const member_record* member(uint64_t member_id) const;
    std::vector<uint64_t> member_ids() const;
    // -- lanes (expert pools) ---------------------------------------------------------------
    // True when every live expert group is in a pool (then each pool is a lane).
    bool pooled() const;
    // A member's lane: "" without pools; else a group's pool, a worker's role (prefill|decode).
    std::string lane_of(const member_record& member) const;
    // The lanes of the ready workers ({""} without pools).
    std::vector<std::string> lanes() const;
    // The map member `member_id` is sent: its lane's groups and workers (the whole map without
    // pools), under the current version.
    proto::placement_map placement_for(uint64_t member_id) const;

    // -- step functions -----------------------------------------------------------------------
    // At a step boundary: when membership changed since the last map, every live member is
    // ready and no batch is running (static batching: a batch ends under its map), a new map
    // (version + 1) to send to every member. nullopt: nothing to apply.
    std::optional<proto::placement_map> apply_placement();
    // Why the cluster is not serving ("" when it is): waiting for members, an expert without a
    // replica (names the dead group and its experts), members not yet paired.
    std::string not_serving_reason() const;
    bool serving() const { return not_serving_reason().empty(); }
    // The part of not_serving_reason() that refuses new requests (a dead group's experts without
    // a replica, attention workers missing); "" while requests are only queued (members loading
    // or pairing with a new map).
    std::string refusal_reason() const;

    // A client request: queued, or refused (then nothing is kept): refusal_reason(), an empty
    // prompt, or a prompt + max_tokens whose pages exceed every worker's pool.
    // kind: not_serving (refusal_reason(), draining) or invalid_request (the request itself).
    std::optional<refusal> admit(uint64_t request_id, const proto::generate_request& request);
    // Ends a queued or running request with finish_reason "cancelled" (its pages are released
    // at the next step). False when it is not known (already ended).
    bool cancel(uint64_t request_id);
    // At a step boundary: preempts running requests whose next step would not fit their
    // worker's pool, then moves queued requests into the running batch while fewer than
    // max_batch run and their prefill fits (owner: the ready worker with most free pages).
    void admit_queued();
    // The next step, to be sent now: requests past their deadline end (take_finished()),
    // admit_queued() runs (preemptions, admissions), and every running request that is not
    // known to end before it gets its sequence, planned from the state the steps in flight
    // will leave. Empty when nothing runs: then discard_plan() it. Only `lane`'s workers get a
    // plan (the lane "" holds every worker when there are no pools).
    step_batch plan_step(const std::string& lane = "");
    // Step results: advances prefills, appends sampled tokens (a token sampled after a
    // non-final prefill chunk is dropped), ends requests at max_tokens/EOS (unless ignore_eos)
    // or on a step error. Returns the requests that ended; take_deltas() the new tokens.
    std::vector<finished_request> emit_tokens(uint64_t step_id,
                                              const std::vector<proto::step_result>& results);
    // Tokens appended since the last call, per request (streaming requests are sent them).
    std::vector<token_delta> take_deltas();
    // A step that did not complete (timeout, a worker died): its lane's requests end with
    // `error` (without pools: every running request).
    std::vector<finished_request> fail_step(uint64_t step_id, const std::string& error);
    std::vector<finished_request> take_finished();
    // SIGTERM: new requests are refused from now on; drained() once none runs or waits.
    void start_draining() { draining_ = true; }
    bool drained() const { return running_.empty() && queue_.empty(); }
    // A planned step that will not be sent (empty, or a member died): its releases are kept
    // for the next plan and its runs no longer count as in flight.
    void discard_plan(step_batch& batch);
    // Steps planned and not yet emitted or failed.
    size_t steps_in_flight() const { return planned_.size(); }
    // True when membership changed since the last map (the actor stops planning, lets the steps
    // in flight finish, then applies a new map).
    bool placement_pending() const { return membership_changed_; }
    // A member could not apply the current map (its ack carried an error, or the update timed
    // out): the running requests end with `why`, naming the member (a worker that failed to
    // re-pair may have dropped its KV; every running request needs every member), queued ones
    // stay queued, and the map is sent again from placement_retry_at() on (0.5 s, doubling up to
    // 10 s while the failures go on; reset once every member acks a map).
    std::vector<finished_request> placement_failed(uint64_t member_id, const std::string& why);
    clock::time_point placement_retry_at() const { return placement_retry_at_; }
    // Ends the queued and running requests past their deadline (plan_step does it too; the actor
    // calls this while no step runs, e.g. while the cluster is not serving).
    std::vector<finished_request> expire_deadlines();

    proto::cluster_status status() const;
    const proto::placement_map& placement() const { return map_; }
    const proto::hello& own_hello() const { return hello_; }
    const coordinator_config& config() const { return config_; }
    uint64_t steps_done() const { return steps_done_; }
    size_t running_requests() const { return running_.size(); }
    size_t queued_requests() const { return queue_.size(); }
    uint64_t preemptions() const { return preemptions_; }
    // Pages worker `member_id`'s running requests hold after their next step; its pool size.
    int64_t reserved_pages(uint64_t member_id) const;
    const request_record* request(uint64_t request_id) const;

    // "experts-0 (experts 0-3,7 of every layer)"
    std::string describe_group(const member_record& group) const;

private:
    std::vector<std::vector<int32_t>> assignment_for(const std::string& group_name,
                                                     const std::string& pool) const;
    // Layer 0 view (same ids in every layer): the experts no live group of `pool` holds.
    std::set<int32_t> unplaced_experts(const std::string& pool) const;
    // The pools that must hold every expert: {""} without pools; else the live groups' pools
    // and the lanes of the ready workers.
    std::set<std::string> needed_pools() const;
    // "" when every needed pool holds every expert, else what is missing.
    std::string unplaced_reason() const;
    // `kind` is recorded when `error` is set.
    finished_request end_request(uint64_t request_id, const std::string& finish_reason,
                                 const std::string& error,
                                 proto::request_error kind = proto::request_error::failed);
    std::vector<const member_record*> ready_workers() const;
    std::vector<const member_record*> ready_workers(const std::string& lane) const;
    int64_t next_step_tokens(const request_record& record) const;
    bool schedulable(const request_record& record) const;  // not known to end before the next step
    int64_t reservation(const member_record& worker, const request_record& record) const;
    bool pd_mode() const;  // ready prefill and decode workers both exist
    void requeue(uint64_t request_id, bool preemption);
    void plan_imports(step_batch& batch);
    int64_t pages_for(const member_record& worker, int64_t tokens) const;
    void preempt(uint64_t request_id);
    void release_transfer(const request_record& record);
    void preempt_to_fit();
    proto::step_sequence sequence_for(const request_record& record, planned_run& run) const;
    void fill_sequences(step_batch& batch);

    coordinator_config config_;
    int32_t num_layers_;
    int32_t num_routed_experts_;
    int64_t eos_token_id_;
    proto::hello hello_;
    std::map<std::string, std::vector<int32_t>> spec_;  // parsed expert_placement
    std::map<uint64_t, member_record> members_;
    uint64_t next_member_id_ = 1;
    bool membership_changed_ = false;
    int placement_failures_ = 0;  // in a row (placement_failed)
    clock::time_point placement_retry_at_{};
    bool draining_ = false;
    std::map<std::string, std::string> down_groups_;  // name → description while not replaced
    proto::placement_map map_;
    // Looked up for every running request at every step (hashed: a lookup is one probe, not a
    // walk down a tree); never iterated, so its order does not matter.
    std::unordered_map<uint64_t, request_record> requests_;
    std::vector<uint64_t> queue_;
    std::set<uint64_t> running_;
    std::vector<uint64_t> released_pending_;  // freed on their worker at the next step
    std::map<uint64_t, std::vector<uint64_t>> release_by_worker_;
    std::vector<finished_request> finished_;
    std::vector<token_delta> deltas_;
    // Per step in flight: what each request runs in it.
    std::map<uint64_t, std::map<uint64_t, planned_run>> planned_;
    std::map<uint64_t, std::string> step_lanes_;  // per step in flight: its lane
    // KV transfers that will not be imported, per decode worker: sent with its next plan.
    std::map<uint64_t, std::vector<proto::kv_release>> kv_release_by_worker_;
    // The last chunk's step is done (its result is in): the KV may be imported.
    bool kv_sent(const request_record& record) const;
    uint64_t next_step_id_ = 1;
    uint64_t steps_done_ = 0;
    uint64_t next_admit_order_ = 1;
    uint64_t preemptions_ = 0;
};

// "0-3,5" → {0,1,2,3,5}; throws std::invalid_argument naming the text.
std::vector<int32_t> parse_expert_list(const std::string& text);
// {0,1,2,3,5} → "0-3,5"
std::string format_expert_list(const std::vector<int32_t>& experts);
// "a=0-3;b=4-7" → {a:[0..3], b:[4..7]}
std::map<std::string, std::vector<int32_t>> parse_placement_spec(const std::string& text);

// Steps a lane keeps in flight: pipeline_depth, one more when its steps are short —
// step_seconds (the workers' compute time per step, averaged; <= 0 while unknown) below
// short_step_us — and pipeline_depth >= 2 (1 stays unpipelined); short_step_us 0: never.
int32_t steps_in_flight(int32_t pipeline_depth, int64_t short_step_us, double step_seconds);

}  // namespace longcat::coordinator
