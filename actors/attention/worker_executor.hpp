// worker_executor: the compute core of one attention worker (ARCHITECTURE.md §1, §3–§5).
// Owns: every weight except the routed experts (embeddings, both MLA blocks per layer, dense
//   FFNs or this rank's shard, gate, final norm, lm_head) and its own paged KV cache.
// Sends: per (step, layer, micro-batch) one dispatch frame to every expert group of the
//   placement map (0 tokens when none of its tokens go there; zero-expert slots never leave).
// Receives: one combine frame per dispatch frame (layouts: actors/cluster/moe_frames.hpp).
//
// One layer, per micro-batch (SBO, overlap on; the default):
//   front (+ gate) → dispatch sent to every group → mid → back → wait combines → join
// With m micro-batches the stages interleave per layer:
//   front+dispatch mb0 … mb(m−1), mid+back mb0 … mb(m−1), join mb0 … mb(m−1)
// so every micro-batch's join precedes its next layer's front. With overlap off, each
// micro-batch runs front → dispatch → wait combines → mid → back → join before the next one.
// Combines are summed into act.moe_out in group-id order, whatever order they arrive in, so the
// result is deterministic: with one expert group and m = 1 it equals model::forward bit for bit
// (same kernels on the same rows, each row's experts summed from 0 in ascending order); with
// more groups or micro-batches it differs only by float rounding (partial sums per group, and
// kernels whose per-row result depends on how many rows they see).
//
// Micro-batches split the batch's sequences (never one sequence) into m contiguous runs of
// similar token counts; a run may be empty (fewer sequences than m, or an empty batch): an empty
// micro-batch still sends its 0-token dispatch frames and waits for its combines, because every
// paired expert group waits for one frame per unit from every worker.
// Not thread-safe: one step at a time, from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/cluster/cluster_error.hpp"
#include "actors/cluster/moe_frames.hpp"
#include "actors/cluster/placement.hpp"
#include "actors/transport/transport.hpp"
#include "model/engine.hpp"
#include "model/forward.hpp"
#include "model/kv_cache.hpp"
#include "model/weights.hpp"

namespace longcat::attention {

inline constexpr int32_t kMaxMicroBatches = 4;

struct worker_executor_config {
    // Picks the replica of a replicated expert (placement_map::replica_for).
    int32_t worker_index = 0;
    int32_t num_micro_batches = 1;  // m, 1..kMaxMicroBatches
    bool overlap = true;            // SBO: dispatch before mid, combine awaited in join
    std::chrono::milliseconds combine_timeout{5'000};  // a join's wait for all its combines
    std::chrono::milliseconds send_timeout{5'000};     // each dispatch send
    bool record_stage_log = false;                     // keep stage_log() for the last step
    model::kv_cache_options kv;                        // the worker's own KV cache
    model::dense_ffn_runner dense_ffn;  // TP: how mid/back run dense FFNs; empty = local

    std::optional<std::string> validate() const;  // empty when usable; else what is wrong
};

// The untimed stage log (event-order tests): one entry per stage boundary.
enum class stage_event_kind : uint8_t {
    front_start,         // stage_front begins
    dispatch_sent,       // every group's dispatch frame for the unit has been sent
    mid_start,           // stage_mid begins
    back_end,            // stage_back is done
    combine_wait_start,  // join starts waiting for the unit's combines
    combine_received,    // every group's combine for the unit is in
    join_end,            // stage_join is done: x holds the layer's output
};
std::string_view to_string(stage_event_kind kind);

struct stage_event {
    stage_event_kind kind = stage_event_kind::front_start;
    int32_t layer = 0;
    int32_t micro_batch = 0;
    bool operator==(const stage_event&) const = default;
};
std::string to_string(const stage_event& event);  // "dispatch_sent L1 mb0"

struct worker_step_stats {
    double dispatch_seconds = 0.0;      // blocked in dispatch sends
    double combine_wait_seconds = 0.0;  // blocked waiting for combines (exposed communication)
    uint64_t dispatch_frames = 0;
    uint64_t dispatch_bytes = 0;  // payload bytes
    uint64_t combine_frames = 0;
    uint64_t combine_bytes = 0;
    int64_t dispatched_rows = 0;  // rows sent, over all groups, layers and micro-batches
    // Wall time in each compute stage, summed over layers and micro-batches (benchmarks).
    double front_seconds = 0.0;     // run_front: stage_front (MLA_0, gate, zero experts)
    double mid_back_seconds = 0.0;  // run_mid_back: stage_mid + stage_back
    double join_seconds = 0.0;      // run_join: stage_join (after the combines are in)
};

struct worker_step_output {
    model::forward_output forward;  // logits, final_norm, num_real_slots (traffic not counted)
    worker_step_stats stats;
};

// Splits `batch` into `num_micro_batches` runs of whole sequences (see the header comment);
// token_offsets[mb] is where micro-batch mb's rows start in `batch`.
std::vector<model::forward_batch> split_micro_batches(const model::forward_batch& batch,
                                                      int32_t num_micro_batches,
                                                      std::vector<int64_t>& token_offsets);

class worker_executor {
  public:
    // `weights`: an attention worker's share (experts are not needed and not used); `map` must
    // fit the model; `plane` must outlive the executor. Its name is how groups know this worker.
    static cluster::cluster_result<std::unique_ptr<worker_executor>> create(
        std::shared_ptr<const model::model_weights> weights, cluster::placement_map map,
        transport::data_plane& plane, worker_executor_config config);

    // A new placement map (a step boundary; no forward runs): the map, this worker's index in it
    // and the dense-FFN runner (a TP group's collective is rebuilt per map) are replaced, the
    // group connections dropped (connect_groups() again); the KV cache and every sequence's
    // pages stay, so running requests carry on under the new map.
    cluster::cluster_status replace_placement(cluster::placement_map map, int32_t worker_index,
                                              model::dense_ffn_runner dense_ffn);

    // Connects to every group of the map at its address (the map's groups must have addresses).
    cluster::cluster_status connect_groups(transport::deadline until);
    // Or: the peers of already connected groups, indexed by group id.
    cluster::cluster_status use_group_peers(std::vector<transport::peer_id> peers);

    // One forward over `batch` (its page tables must cover every position) in this worker's
    // cache, as step `step_id` (the same id on every worker paired with the same groups).
    // Errors: combine_timeout / group_failed / bad_combine / send_failed naming the group, the
    // layer and the micro-batch; model_failure. On error the KV rows of the batch may be
    // partly written; nothing else changes.
    cluster::cluster_result<worker_step_output> forward(const model::forward_batch& batch,
                                                        uint64_t step_id,
                                                        const model::forward_options& opts = {});

    // engine::step over this worker's cache: reserves pages (out_of_pages, all or nothing),
    // runs forward(), and appends the tokens to each sequence only on success (on failure the
    // pages reserved for this step are given back).
    cluster::cluster_result<worker_step_output> step(
        const std::vector<model::sequence*>& seqs,
        const std::vector<std::vector<int32_t>>& new_tokens, uint64_t step_id,
        const model::forward_options& opts = {});
    void release(model::sequence& seq) { kv_.release(seq.page_table); }
    // Work for the compute thread's first combine wait of the next forward, where it would only
    // block (the member actor's reply to the previous step goes out there, off the step
    // boundary). Runs once; the caller clears what a forward that never waited left.
    void set_wait_task(std::function<void()> task) { wait_task_ = std::move(task); }

    model::kv_cache& cache() { return kv_; }
    const model::model_config& model_config() const { return weights_->config; }
    const cluster::placement_map& placement() const { return map_; }
    const worker_executor_config& config() const { return config_; }
    // The data-plane peer of each group, by group id (empty until connected).
    const std::vector<transport::peer_id>& group_peers() const { return group_peers_; }
    // The stage log of the last forward (empty unless config.record_stage_log).
    const std::vector<stage_event>& stage_log() const { return log_; }

  private:
    // One micro-batch's state through a layer; kept between steps so that dispatch payloads
    // outlive their sends (see ucx_data_plane's NOTES on error mode none).
    struct micro_batch {
        model::forward_batch batch;
        int64_t token_offset = 0;
        std::vector<float> x;  // [T, hidden] residual stream
        model::layer_activations act;
        std::vector<cluster::dispatch_rows> rows;        // [group] this layer's dispatch rows
        std::vector<cluster::encoded_frame> dispatches;  // [group]
    };

    worker_executor(std::shared_ptr<const model::model_weights> weights, cluster::placement_map map,
                    transport::data_plane& plane, worker_executor_config config);

    void log(stage_event_kind kind, int64_t layer_idx, size_t mb_idx);
    void run_front(int64_t layer_idx, size_t mb_idx);
    cluster::cluster_status send_dispatch(int64_t layer_idx, size_t mb_idx, uint64_t step_id,
                                          worker_step_stats& stats);
    void run_mid_back(int64_t layer_idx, size_t mb_idx);
    // Waits for every group's combine of the unit and sums them into act.moe_out.
    cluster::cluster_status collect_combines(int64_t layer_idx, size_t mb_idx, uint64_t step_id,
                                             worker_step_stats& stats);
    void run_join(int64_t layer_idx, size_t mb_idx);  // stage_join
    void drain_stale_combines(uint64_t step_id);
    std::string group_label(int32_t group_id) const;

    std::shared_ptr<const model::model_weights> weights_;
    cluster::placement_map map_;
    transport::data_plane& plane_;
    worker_executor_config config_;
    model::kv_cache kv_;
    std::vector<transport::peer_id> group_peers_;  // by group id; empty until connected
    std::vector<micro_batch> mbs_;
    std::vector<stage_event> log_;
    std::function<void()> wait_task_;
};

}  // namespace longcat::attention
