// The one catalogue of CAF control-plane messages (CAF 0.17). Every type that crosses a process
// through CAF's middleman is declared here with its `inspect`, gets a type id in the `longcat`
// id block below, and is registered by register_message_types(), which every process calls on
// its actor_system_config before starting the actor system (a type missing on one node makes
// remote_actor fail with unexpected_actor_messaging_interface).
// NOTES: this is the only proto/ header that includes CAF; include it only where actors are
// defined. Changing a message's fields means bumping kProtocolVersion.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/meta/type_name.hpp>
#include <caf/type_id.hpp>

#include "proto/node_role.hpp"
#include "proto/request_error.hpp"
#include "proto/version.hpp"

namespace caf {
class actor_system_config;
}  // namespace caf

namespace longcat::proto {

// -- handshake --------------------------------------------------------------------------------

// First message on every control-plane connection, answered with the responder's own hello.
// Both sides call check_hello(own, received) and refuse (exit/down) on a mismatch.
struct hello {
    uint16_t protocol_version = kProtocolVersion;
    uint32_t ucx_major = 0;  // linked_ucx_version() of the sender
    uint32_t ucx_minor = 0;
    uint32_t ucx_release = 0;
    node_role role = node_role::coordinator;
    std::string name;                // e.g. "attention-0"; appears in every error about it
    std::string data_plane_address;  // data_plane::address(), e.g. "ucx://127.0.0.1:41234"

    bool operator==(const hello&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, hello& x) {
    return f(caf::meta::type_name("longcat.hello"), x.protocol_version, x.ucx_major, x.ucx_minor,
             x.ucx_release, x.role, x.name, x.data_plane_address);
}

// This process's hello: kProtocolVersion and the linked UCX version.
hello make_hello(node_role role, std::string name, std::string data_plane_address);
wire_versions versions_of(const hello& message);

// Empty when `remote` may talk to `local`; otherwise why not, naming both sides (their name,
// role and versions).
std::optional<std::string> check_hello(const hello& local, const hello& remote);

// -- membership (ARCHITECTURE.md §1, §7) -------------------------------------------------------
// Members (attention workers, expert groups) register with the coordinator, which monitors
// them; a dead member is a CAF down message there. Flow:
//   member → coordinator  register_member            → register_reply (refused: names both sides)
//   member → coordinator  member_ready                (weights loaded, data plane listening)
//   coordinator → member  placement_update           → placement_ack (peers connected)
// A member's data-plane address travels in its hello; per-layer traffic never touches CAF.

// Where one expert group sits in the placement map: its experts in every layer.
struct expert_group_placement {
    std::string name;                                  // e.g. "experts-1"
    std::string data_plane_address;                    // "ucx://127.0.0.1:41234"
    std::vector<std::vector<int32_t>> experts_by_layer;  // [num_layers][..] routed expert ids
    std::string pool;  // "" shared by every attention worker, else "prefill" or "decode"
    bool operator==(const expert_group_placement&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, expert_group_placement& x) {
    return f(caf::meta::type_name("longcat.expert_group_placement"), x.name,
             x.data_plane_address, x.experts_by_layer, x.pool);
}

// One attention worker (one TP rank) as its peers see it.
struct attention_worker_entry {
    std::string name;  // e.g. "attention-0.1"
    std::string data_plane_address;
    std::string tp_group;  // workers of one TP group run dense FFNs together
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
    std::string pool;  // the expert pool it is paired with ("" shared, "prefill", "decode")
    bool operator==(const attention_worker_entry&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, attention_worker_entry& x) {
    return f(caf::meta::type_name("longcat.attention_worker_entry"), x.name,
             x.data_plane_address, x.tp_group, x.tp_rank, x.tp_size, x.pool);
}

// The versioned placement map: every routed expert of every layer has ≥ 1 replica among
// `groups` (else the cluster is not serving). Members switch maps only at step boundaries.
// With expert pools (prefill/decode disaggregation, a pool per side) each member is sent its
// pool's view: the groups and workers of its pool only, under the one version; every pool must
// hold every expert. cluster_status carries the whole map.
struct placement_map {
    uint64_t version = 0;  // strictly increasing; 0 = none yet
    int32_t num_layers = 0;
    int32_t num_routed_experts = 0;
    std::vector<expert_group_placement> groups;
    std::vector<attention_worker_entry> workers;  // the workers every group pairs with
    bool operator==(const placement_map&) const = default;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, placement_map& x) {
    return f(caf::meta::type_name("longcat.placement_map"), x.version, x.num_layers,
             x.num_routed_experts, x.groups, x.workers);
}

// member → coordinator, answered with register_reply.
struct register_member {
    hello greeting;        // versions, role, name, data-plane address
    std::string tp_group;  // attention workers: their TP group; expert groups: empty
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
    int64_t kv_pages = 0;      // attention workers: their KV pool (0: not accounted)
    int64_t kv_page_size = 0;  // tokens per page
    // Expert groups: the pool they serve. "" (shared): every attention worker pairs with them;
    // "prefill" / "decode": only the workers of that role (prefill/decode disaggregation with a
    // pool per side). A cluster's groups are all shared or all in pools.
    std::string pool;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, register_member& x) {
    return f(caf::meta::type_name("longcat.register_member"), x.greeting, x.tp_group, x.tp_rank,
             x.tp_size, x.kv_pages, x.kv_page_size, x.pool);
}

struct register_reply {
    bool accepted = false;
    std::string error;  // refused: why (a version mismatch names both sides)
    hello coordinator;  // the coordinator's own hello
    uint64_t member_id = 0;
    // Expert groups: the experts to load, [num_layers][..]. Empty for attention workers.
    std::vector<std::vector<int32_t>> experts_by_layer;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, register_reply& x) {
    return f(caf::meta::type_name("longcat.register_reply"), x.accepted, x.error, x.coordinator,
             x.member_id, x.experts_by_layer);
}

// member → coordinator: weights loaded, serving (its /readyz turns ready too).
struct member_ready {
    uint64_t member_id = 0;
    std::string name;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, member_ready& x) {
    return f(caf::meta::type_name("longcat.member_ready"), x.member_id, x.name);
}

// coordinator → member: the map to use from the next step on; answered with placement_ack once
// the member's data plane is connected to the peers the map names.
struct placement_update {
    placement_map map;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, placement_update& x) {
    return f(caf::meta::type_name("longcat.placement_update"), x.map);
}

struct placement_ack {
    uint64_t version = 0;
    std::string name;
    std::string error;  // empty: connected; else which peer could not be reached
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, placement_ack& x) {
    return f(caf::meta::type_name("longcat.placement_ack"), x.version, x.name, x.error);
}

// -- steps (ARCHITECTURE.md §4) -----------------------------------------------------------------
// coordinator → attention worker, once per step, answered with step_result. Every worker of the
// placement gets a plan every step (possibly with no sequences: it still sends header-only
// dispatch frames, so expert groups never wait for a worker that has nothing to do).

struct step_sequence {
    uint64_t request_id = 0;
    std::vector<int32_t> new_tokens;  // prompt (first step) or the last sampled token
    uint64_t token_index = 0;         // request-local index of the token this step samples
    float temperature = 0.0f;         // sampling params (model::sampling_params)
    float top_p = 1.0f;
    int64_t top_k = 0;
    uint64_t seed = 0;
    // Planned before the previous step's result reached the coordinator: new_tokens is empty
    // and the worker decodes the token it sampled for this request in its previous step.
    bool decode_last_sampled = false;
    // Tokens of this request the worker must already hold in its KV cache (the position of the
    // first new token): 0 for a first prefill chunk, the chunks before it, the prompt and the
    // decoded tokens after. A worker that holds another count (it never saw the request, or it
    // lost a step) fails the request by name instead of starting an empty sequence.
    int64_t cached_tokens = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_sequence& x) {
    return f(caf::meta::type_name("longcat.step_sequence"), x.request_id, x.new_tokens,
             x.token_index, x.temperature, x.top_p, x.top_k, x.seed, x.decode_last_sampled,
             x.cached_tokens);
}

// Prefill/decode disaggregation (ARCHITECTURE.md §6), inside a step plan. A prefill worker
// streams a request's KV as its prefill runs: after the forward of each prefill chunk it sends
// that chunk's rows [first_token, num_tokens) of every pool (one kv frame per (256-row chunk,
// pool)) to the decode worker over the data plane, and after the last chunk frees the request's
// pages. The decode worker reserved the request's pages when the prefill started (a kv_import in
// step_plan::expects) and writes each frame into them as it lands; once the last chunk's result
// is in, a plan of the decode worker imports the request (before its forward: waits until every
// row of every pool is in) and decodes it in the same step. A failed send, reservation or import
// is reported per request (step_result::failed_requests).
struct kv_transfer {
    uint64_t request_id = 0;
    std::string to_name;     // the decode worker
    std::string to_address;  // its data-plane address
    int64_t first_token = 0;  // rows [first_token, num_tokens): this step's prefill chunk
    int64_t num_tokens = 0;
    uint32_t attempt = 0;    // tags its frames (frame_header::sequence); +1 per retry
    bool last = false;       // the prompt's last chunk: free the pages once sent
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_transfer& x) {
    return f(caf::meta::type_name("longcat.kv_transfer"), x.request_id, x.to_name, x.to_address,
             x.first_token, x.num_tokens, x.attempt, x.last);
}

// A decode worker drops what it holds of a request's KV transfer of attempts <= `attempt`: the
// pages it reserved, frames queued, frames still to come (the request ended or was requeued
// before its import).
struct kv_release {
    uint64_t request_id = 0;
    uint32_t attempt = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_release& x) {
    return f(caf::meta::type_name("longcat.kv_release"), x.request_id, x.attempt);
}

struct kv_import {
    uint64_t request_id = 0;
    std::string from_name;  // the prefill worker
    int64_t num_tokens = 0;
    int64_t timeout_ms = 5000;  // the transfer deadline
    uint32_t attempt = 0;       // only frames of this attempt count
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, kv_import& x) {
    return f(caf::meta::type_name("longcat.kv_import"), x.request_id, x.from_name, x.num_tokens,
             x.timeout_ms, x.attempt);
}

struct step_plan {
    uint64_t step_id = 0;
    uint64_t placement_version = 0;  // the map this step runs with
    std::vector<step_sequence> sequences;
    std::vector<uint64_t> released;  // requests whose KV pages the worker frees before the step
    // The step whose results this plan was sent in answer to (its requests continue), 0 when the
    // step starts after an idle loop. Workers time the gap since that step as boundary idle.
    uint64_t follows_step = 0;
    std::vector<kv_transfer> transfers;  // prefill workers: KV to send after the forward
    std::vector<kv_import> imports;      // decode workers: KV to take in before it
    // Decode workers: KV about to stream in (a prefill starts): reserve its pages now; arriving
    // frames are written straight into them.
    std::vector<kv_import> expects;
    std::vector<kv_release> released_kv;  // decode workers: transfers that will not be imported
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_plan& x) {
    return f(caf::meta::type_name("longcat.step_plan"), x.step_id, x.placement_version,
             x.sequences, x.released, x.follows_step, x.transfers, x.imports, x.expects, x.released_kv);
}

struct sampled_token {
    uint64_t request_id = 0;
    int32_t token = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, sampled_token& x) {
    return f(caf::meta::type_name("longcat.sampled_token"), x.request_id, x.token);
}

struct step_result {
    uint64_t step_id = 0;
    std::string worker;
    std::vector<sampled_token> tokens;  // one per planned sequence, in plan order
    int64_t kv_pages_used = 0;
    int64_t kv_pages_free = 0;
    double step_seconds = 0.0;
    std::string error;  // empty on success; else what failed (names the peer)
    // Requests this step could not run (a KV import that failed), each with why; the others ran.
    std::vector<uint64_t> failed_requests;
    std::vector<std::string> failed_reasons;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, step_result& x) {
    return f(caf::meta::type_name("longcat.step_result"), x.step_id, x.worker, x.tokens,
             x.kv_pages_used, x.kv_pages_free, x.step_seconds, x.error, x.failed_requests,
             x.failed_reasons);
}

// -- requests (client → coordinator) --------------------------------------------------------------

struct generate_request {
    std::string client_request_id;  // shown in logs and errors
    std::vector<int32_t> prompt;
    int64_t max_tokens = 16;
    float temperature = 0.0f;
    float top_p = 1.0f;
    int64_t top_k = 0;
    uint64_t seed = 0;
    int64_t deadline_ms = 0;  // 0: the coordinator's default request deadline
    bool ignore_eos = false;  // generate max_tokens whatever is sampled
    // Streaming: the coordinator sends the requester token_chunk messages (the first, empty, on
    // admission: it carries the request id that cancel_request names), then the reply.
    bool stream = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, generate_request& x) {
    return f(caf::meta::type_name("longcat.generate_request"), x.client_request_id, x.prompt,
             x.max_tokens, x.temperature, x.top_p, x.top_k, x.seed, x.deadline_ms, x.ignore_eos,
             x.stream);
}

// Coordinator → the requester of a streaming generate_request: the tokens one step produced
// (none in the first chunk, sent on admission). The generate_reply ends the stream.
struct token_chunk {
    uint64_t request_id = 0;
    std::string client_request_id;
    std::vector<int32_t> tokens;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_chunk& x) {
    return f(caf::meta::type_name("longcat.token_chunk"), x.request_id, x.client_request_id,
             x.tokens);
}

// The token_chunks of one step for one requester, in one message (a gateway's session streams
// hundreds of requests: one CAF message per step instead of one per request).
struct token_batch {
    std::vector<token_chunk> chunks;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, token_batch& x) {
    return f(caf::meta::type_name("longcat.token_batch"), x.chunks);
}

// Client → coordinator: end a request now (its client left, or a stop string matched). Queued:
// dropped; running: its KV pages are freed at the next step. Its reply says "cancelled".
struct cancel_request {
    uint64_t request_id = 0;
    std::string reason;  // for the log
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cancel_request& x) {
    return f(caf::meta::type_name("longcat.cancel_request"), x.request_id, x.reason);
}

// Coordinator → expert group, every peer-timeout-ms ÷ 4; the group answers with it. A group that
// answers none for peer-timeout-ms (stopped, its host lost, behind a partition: no connection
// closes) is declared down like one that died. The coordinator's timer for these probes is one
// it sends itself.
struct liveness_probe {
    uint64_t sequence = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, liveness_probe& x) {
    return f(caf::meta::type_name("longcat.liveness_probe"), x.sequence);
}

struct generate_reply {
    uint64_t request_id = 0;
    std::vector<int32_t> tokens;  // generated ids (EOS included when produced)
    std::string finish_reason;    // "length" | "stop" | "cancelled" | "error"
    std::string error;            // set when finish_reason is "error"
    request_error error_kind = request_error::none;  // set with `error`
    int64_t prompt_tokens = 0;
    int32_t preemptions = 0;      // times it was preempted and recomputed
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, generate_reply& x) {
    return f(caf::meta::type_name("longcat.generate_reply"), x.request_id, x.tokens,
             x.finish_reason, x.error, x.error_kind, x.prompt_tokens, x.preemptions);
}

// Anyone → coordinator: the cluster as the coordinator sees it (tests, the launcher).
struct status_query {
    bool verbose = false;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, status_query& x) {
    return f(caf::meta::type_name("longcat.status_query"), x.verbose);
}

struct cluster_status {
    bool serving = false;   // every expert placed, every member ready and paired
    std::string reason;     // why not serving
    placement_map map;
    std::vector<std::string> members;  // "name (role, state)"
    uint64_t steps = 0;
    uint64_t running_requests = 0;
    uint64_t queued_requests = 0;
    uint64_t preemptions = 0;     // requests preempted (pages ran out) since start
    int64_t kv_pages_total = 0;   // over the attention workers that report their pools
    int64_t kv_pages_reserved = 0;  // what the running requests hold after the next step
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, cluster_status& x) {
    return f(caf::meta::type_name("longcat.cluster_status"), x.serving, x.reason, x.map,
             x.members, x.steps, x.running_requests, x.queued_requests, x.preemptions,
             x.kv_pages_total, x.kv_pages_reserved);
}

// Service → its coordinator on SIGTERM: stop admitting (new requests are refused), answer once
// the running and queued requests have ended (the service then exits 0).
struct drain_request {
    int64_t grace_ms = 10000;  // the caller's grace; past it the coordinator answers anyway
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, drain_request& x) {
    return f(caf::meta::type_name("longcat.drain_request"), x.grace_ms);
}

// -- registration -----------------------------------------------------------------------------

// Registers every type above with `config` (call once per process, before actor_system).
void register_message_types(caf::actor_system_config& config);

}  // namespace longcat::proto

// Type ids, in declaration order; append only (ids are part of the protocol in CAF >= 0.18).
CAF_BEGIN_TYPE_ID_BLOCK(longcat, caf::first_custom_type_id)
CAF_ADD_TYPE_ID(longcat, (longcat::proto::hello))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::expert_group_placement))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::attention_worker_entry))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::placement_map))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::register_member))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::register_reply))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::member_ready))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::placement_update))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::placement_ack))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::step_sequence))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::step_plan))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::sampled_token))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::step_result))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::generate_request))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::generate_reply))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::status_query))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::cluster_status))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::drain_request))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::token_chunk))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::cancel_request))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::token_batch))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::kv_transfer))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::kv_import))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::kv_release))
CAF_ADD_TYPE_ID(longcat, (longcat::proto::liveness_probe))
CAF_END_TYPE_ID_BLOCK(longcat)
