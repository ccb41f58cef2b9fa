// expert_group: the compute core of one expert group (ARCHITECTURE.md §1, §4, §7).
// Owns: the routed experts the placement map gives it (its own model_weights, no attention).
// Receives: dispatch frames, one per (step, layer, micro-batch) unit from every paired attention
//   worker (0 tokens allowed), over its data plane.
// Sends: to each of those workers one combine frame per unit (0 tokens if it sent none), holding
//   the weighted partial sums of that worker's rows (layouts: actors/cluster/moe_frames.hpp).
//
// A unit is computed once a frame from EVERY paired worker is there; all rows of the unit go into
// one stage_experts call (workers' rows in the order of config.worker_names, so results do not
// depend on arrival order). Every wait has a deadline: a worker that never sends fails that unit
// with dispatch_timeout naming the worker, and the group keeps serving later units. No actor
// mailbox is on this path; a later step wraps the group in a CAF actor that drives serve().
//
// Paired workers are known by their data-plane name (peer_info::name from the handshake), so a
// worker may connect to the group at any time and reconnect under a new peer_id.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>
#include <string>
#include <vector>

#include "actors/cluster/cluster_error.hpp"
#include "actors/cluster/moe_frames.hpp"
#include "actors/cluster/placement.hpp"
#include "actors/transport/transport.hpp"
#include "model/weights.hpp"

namespace longcat::experts {

struct expert_group_config {
    int32_t group_id = 0;                   // its index in the placement map
    std::vector<std::string> worker_names;  // paired attention workers' data-plane names (≥ 1)
    // serve(): the longest a unit may wait, from its first frame, for the other workers' frames.
    std::chrono::milliseconds unit_timeout{5'000};
    std::chrono::milliseconds send_timeout{5'000};  // each combine send
    // serve(): how often an idle loop looks at its stop token and the units' deadlines.
    std::chrono::milliseconds poll_interval{20};
    // Bench only: each expert returns its input unchanged (partial = Σ weight · h, computed as
    // (Σ weight) · h in place), no GEMMs,
    // so a transport benchmark measures the data plane and not the experts.
    bool identity_experts = false;
    // serve(): called (on the serving thread) for every unit that fails.
    std::function<void(const cluster::cluster_failure&)> on_failure;

    std::optional<std::string> validate() const;  // empty when usable; else what is wrong
};

// What one served unit was.
struct unit_report {
    cluster::unit_key key;
    std::vector<int64_t> rows_by_worker;  // in config.worker_names order
    int64_t num_assignments = 0;          // (row, expert) pairs computed
    double compute_seconds = 0.0;         // the stage_experts call
};

struct expert_group_stats {
    uint64_t units_served = 0;
    uint64_t units_failed = 0;
    uint64_t rows = 0;
    uint64_t assignments = 0;
    uint64_t frames_dropped = 0;  // late frames of failed units, duplicates, unpaired senders
    double compute_seconds = 0.0;  // Σ unit_report::compute_seconds over the served units
};

class expert_group {
  public:
    // Checks the config and that `weights` fit the map and hold every expert the map gives
    // config.group_id. `plane` must outlive the group.
    static cluster::cluster_result<std::unique_ptr<expert_group>> create(
        std::shared_ptr<const model::model_weights> weights, cluster::placement_map map,
        transport::data_plane& plane, expert_group_config config);

    // Loads exactly the group's experts from the checkpoint (map.weight_selection_for), then
    // create(). A load error is model_failure.
    static cluster::cluster_result<std::unique_ptr<expert_group>> load(
        const std::filesystem::path& model_dir, cluster::placement_map map,
        transport::data_plane& plane, expert_group_config config);

    // Waits until `until` for the dispatch frames of `key` from every paired worker, computes
    // the unit and answers each worker. Frames of other units stay queued. Errors:
    // dispatch_timeout / worker_failed (naming the missing workers), bad_dispatch (naming the
    // worker), send_failed (naming the worker; the other workers were still answered), closed.
    cluster::cluster_result<unit_report> serve_one_unit(const cluster::unit_key& key,
                                                        transport::deadline until);

    // Serves units in the order they complete until `stop` is requested or the plane closes.
    // Each unit's deadline runs from its first frame (config.unit_timeout); failed units go to
    // failures() and config.on_failure, and their late frames are dropped. Run on one thread.
    void serve(std::stop_token stop);

    std::vector<cluster::cluster_failure> failures() const;  // oldest first; thread-safe
    expert_group_stats stats() const;                        // thread-safe

    const cluster::placement_map& placement() const { return map_; }
    const expert_group_config& config() const { return config_; }
    std::string name() const;  // the group's name in the map

  private:
    expert_group(std::shared_ptr<const model::model_weights> weights, cluster::placement_map map,
                 transport::data_plane& plane, expert_group_config config);

    // The paired worker a peer is (by its handshake name), learning new peer ids.
    std::optional<size_t> worker_of(transport::peer_id peer);
    // After an error entry: marks paired workers whose peer has failed.
    void refresh_failed_workers();
    std::string missing_workers(const std::vector<std::optional<transport::received_frame>>& frames,
                                bool failed_only) const;
    // serve_one_unit without the failure count.
    cluster::cluster_result<unit_report> collect_and_compute(const cluster::unit_key& key,
                                                             transport::deadline until);
    cluster::cluster_result<unit_report> compute_and_reply(
        const cluster::unit_key& key,
        std::vector<std::optional<transport::received_frame>>& frames);
    // A failure of unit `key`; unless `unit_fails` is false (a stray frame from a peer that is
    // not paired: the unit itself is fine), the unit's frames are dropped from then on.
    void record_failure(const cluster::unit_key& key, const cluster::cluster_failure& failure,
                        bool unit_fails = true);

    std::shared_ptr<const model::model_weights> weights_;
    cluster::placement_map map_;
    transport::data_plane& plane_;
    expert_group_config config_;

    std::map<transport::peer_id, size_t> worker_by_peer_;            // learned from frames
    std::vector<std::optional<transport::peer_id>> peer_of_worker_;  // the latest peer per worker
    std::vector<bool> worker_failed_;                                // its latest peer failed
    std::set<cluster::unit_key> failed_units_;  // recent, to drop their late frames

    // held_[layer · n_routed_experts + expert]: the map gives this group that expert (the map is
    // fixed for the group's life; checked for every dispatch slot).
    std::vector<uint8_t> held_;
    // compute_and_reply's batch (gathered hidden rows) and answer, reused unit after unit (the
    // group computes on one thread).
    std::vector<float> h_, out_;

    mutable std::mutex mutex_;  // guards failures_ and stats_
    std::vector<cluster::cluster_failure> failures_;
    expert_group_stats stats_;
};

}  // namespace longcat::experts
