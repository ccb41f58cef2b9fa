// member_compute: what the member actors (attention worker, expert group) need from the compute
// core, CAF-free. The CAF actors in attention_member / expert_member own one of these and call
// it between messages; the per-layer traffic stays inside (data plane only).
// Implementations adapt the compute core of actors/attention and actors/experts.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "actors/cluster/placement.hpp"
#include "model/sampling.hpp"
#include "proto/expected.hpp"
#include "proto/frames.hpp"

namespace longcat::control {

// One attention worker (TP rank) as the map lists it.
struct worker_entry {
    std::string name;
    std::string address;
    std::string tp_group;
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
};

// A placement as the members use it: the validated expert map plus the workers it pairs.
struct member_placement {
    cluster::placement_map experts;
    std::vector<worker_entry> workers;
};

struct compute_sequence {
    uint64_t request_id = 0;
    std::vector<int32_t> new_tokens;
    uint64_t token_index = 0;  // request-local index of the token sampled after this step
    model::sampling_params sampling;
};

struct compute_step_output {
    std::vector<int32_t> tokens;  // one per sequence, in order
    int64_t kv_pages_used = 0;
    int64_t kv_pages_free = 0;
    // Exposed communication (ARCHITECTURE.md §4): time the compute thread was blocked.
    double dispatch_seconds = 0.0;
    double combine_wait_seconds = 0.0;
    uint64_t dispatch_bytes = 0;
    uint64_t combine_bytes = 0;
    int64_t num_tokens = 0;  // rows run (prompt + decode tokens)
};

class attention_compute {
public:
    virtual ~attention_compute() = default;
    virtual std::string data_plane_address() const = 0;
    // Loads this rank's weights (long; called once, after registration).
    virtual std::optional<std::string> load() = 0;
    // Connects to the map's expert groups (and TP peers); between steps only.
    virtual std::optional<std::string> apply_placement(const member_placement& placement) = 0;
    // Frees these requests' pages. A plan's releases go first, before its KV moves and its
    // forward, so that both find the pages the coordinator counted on.
    virtual void release(const std::vector<uint64_t>& request_ids) = 0;
    // Tokens of this request in this worker's KV cache (0 for a request it does not hold).
    virtual int64_t cached_tokens(uint64_t request_id) const = 0;
    // One step: runs the sequences (each held as the plan says: the caller checked
    // cached_tokens()), samples one token each. An error names the peer (expert
    // group, TP peer) or what failed. `first_wait`, when set, runs on this thread at the step's
    // first combine wait, or not at all (the caller then runs it).
    virtual proto::expected<compute_step_output, std::string> run_step(
        uint64_t step_id, const std::vector<compute_sequence>& sequences,
        std::function<void()> first_wait) = 0;
    // Prefill/decode disaggregation (ARCHITECTURE.md §6). A prefill worker sends the request's
    // cached rows [first_token, num_tokens) of every KV pool to the decode worker at `to_address`
    // (one kv frame per (256-row chunk, pool), each tagged with `attempt`); with `done` (the last
    // chunk) it then sends the prefill_done frame and frees the request's pages (also when the
    // send failed). Errors name the decode worker.
    virtual std::optional<std::string> send_kv(uint64_t request_id, const std::string& to_name,
                                               const std::string& to_address, int64_t first_token,
                                               int64_t num_tokens, uint32_t attempt,
                                               std::optional<proto::prefill_done_row> done) = 0;
    // A decode worker reserves pages for a request whose prefill starts elsewhere: its KV frames
    // of `attempt` are written into them as they land (the data plane's frame sink). Errors: no
    // pages.
    virtual std::optional<std::string> expect_kv(uint64_t request_id, uint32_t attempt, int64_t num_tokens) = 0;
    // Drops what this worker holds of the request's transfers of attempts <= `attempt` (reserved
    // pages, queued frames) and every such frame that arrives later.
    virtual void release_kv(uint64_t request_id, uint32_t attempt) = 0;
    // KV frames written into reserved pages so far: as they landed (the frame sink), and taken
    // from the queue because they came before their pages were reserved.
    struct kv_frame_counts {
        int64_t landed = 0;
        int64_t queued = 0;
    };
    virtual kv_frame_counts kv_frames() const = 0;
    // A decode worker admits the request once the frames of `attempt` — rows [0, num_tokens) of
    // every pool, in any framing, and the prefill_done — are in its pages (frames of older
    // attempts are dropped): afterwards the request is a sequence of num_tokens cached tokens
    // here. On error (deadline, a bad frame, no pages) nothing is kept; the error names the
    // prefill worker.
    struct kv_received {
        int64_t bytes = 0;
        proto::prefill_done_row done;  // the first token and the sampler's counter
    };
    virtual proto::expected<kv_received, std::string> receive_kv(uint64_t request_id, const std::string& from_name,
                                                                 int64_t num_tokens, uint32_t attempt,
                                                                 std::chrono::milliseconds timeout) = 0;
    virtual void stop() = 0;
};

class expert_compute {
public:
    virtual ~expert_compute() = default;
    virtual std::string data_plane_address() const = 0;
    // Loads exactly these experts ([num_layers][..]) and starts serving dispatch frames.
    virtual std::optional<std::string> load(const std::vector<std::vector<int32_t>>& experts_by_layer) = 0;
    // The workers to pair with from the next step on.
    virtual std::optional<std::string> apply_placement(const member_placement& placement) = 0;
    virtual void stop() = 0;
};

}  // namespace longcat::control
