#include "actors/experts/expert_group.hpp"

#include <algorithm>
#include <exception>

#include "model/forward.hpp"

namespace longcat::experts {

using cluster::cluster_error;
using cluster::cluster_failure;
using cluster::cluster_result;
using cluster::make_cluster_failure;
using cluster::unit_key;
using transport::received_frame;

namespace {

constexpr size_t kMaxRememberedFailedUnits = 4096;

double seconds_since(transport::clock::time_point start) {
    return std::chrono::duration<double>(transport::clock::now() - start).count();
}

}  // namespace

std::optional<std::string> expert_group_config::validate() const {
    if (group_id < 0) return "group_id " + std::to_string(group_id) + " is negative";
    if (worker_names.empty()) return "worker_names is empty: a group needs ≥ 1 paired worker";
    std::set<std::string> seen;
    for (const std::string& name : worker_names) {
        if (name.empty()) return "worker_names has an empty name";
        if (!seen.insert(name).second) return "worker_names lists " + name + " twice";
    }
    if (unit_timeout.count() <= 0) return "unit_timeout must be positive";
    if (send_timeout.count() <= 0) return "send_timeout must be positive";
    if (poll_interval.count() <= 0) return "poll_interval must be positive";
    return std::nullopt;
}

expert_group::expert_group(std::shared_ptr<const model::model_weights> weights,
                           cluster::placement_map map, transport::data_plane& plane,
                           expert_group_config config)
    : weights_(std::move(weights)),
      map_(std::move(map)),
      plane_(plane),
      config_(std::move(config)),
      peer_of_worker_(config_.worker_names.size()),
      worker_failed_(config_.worker_names.size(), false) {
    const int32_t num_experts = weights_->config.n_routed_experts;
    held_.assign(static_cast<size_t>(map_.num_layers()) * static_cast<size_t>(num_experts), 0);
    const cluster::expert_group_assignment& mine = map_.group(config_.group_id);
    for (int32_t layer_idx = 0; layer_idx < map_.num_layers(); ++layer_idx)
        for (int32_t expert_idx : mine.experts_by_layer[layer_idx])
            held_[static_cast<size_t>(layer_idx) * num_experts + expert_idx] = 1;
}

cluster_result<std::unique_ptr<expert_group>> expert_group::create(
    std::shared_ptr<const model::model_weights> weights, cluster::placement_map map,
    transport::data_plane& plane, expert_group_config config) {
    if (auto problem = config.validate()) {
        return make_cluster_failure(cluster_error::bad_config, "expert group: " + *problem);
    }
    if (!weights)
        return make_cluster_failure(cluster_error::bad_config, "expert group: no weights");
    if (auto fits = map.check_model(weights->config); !fits) {
        return make_cluster_failure(cluster_error::bad_placement, fits.error().message);
    }
    if (config.group_id >= map.num_groups()) {
        return make_cluster_failure(cluster_error::bad_placement,
                                    "group_id " + std::to_string(config.group_id) +
                                        " is not in map version " + std::to_string(map.version()) +
                                        " (" + std::to_string(map.num_groups()) + " groups)");
    }
    const cluster::expert_group_assignment& mine = map.group(config.group_id);
    for (int32_t layer_idx = 0; layer_idx < map.num_layers(); ++layer_idx) {
        for (int32_t expert_idx : mine.experts_by_layer[layer_idx]) {
            if (!weights->holds_expert(layer_idx, expert_idx)) {
                return make_cluster_failure(cluster_error::bad_placement,
                                            mine.name + ": layer " + std::to_string(layer_idx) +
                                                " expert " + std::to_string(expert_idx) +
                                                " is placed here but its weights are not "
                                                "loaded");
            }
        }
    }
    return std::unique_ptr<expert_group>(
        new expert_group(std::move(weights), std::move(map), plane, std::move(config)));
}

cluster_result<std::unique_ptr<expert_group>> expert_group::load(
    const std::filesystem::path& model_dir, cluster::placement_map map,
    transport::data_plane& plane, expert_group_config config) {
    if (config.group_id < 0 || config.group_id >= map.num_groups()) {
        return make_cluster_failure(cluster_error::bad_placement,
                                    "group_id " + std::to_string(config.group_id) +
                                        " is not in map version " + std::to_string(map.version()));
    }
    std::shared_ptr<const model::model_weights> weights;
    try {
        weights = std::make_shared<const model::model_weights>(
            model::load_model_weights(model_dir, map.weight_selection_for(config.group_id)));
    } catch (const std::exception& e) {
        return make_cluster_failure(cluster_error::model_failure,
                                    map.group(config.group_id).name + ": " + e.what());
    }
    return create(std::move(weights), std::move(map), plane, std::move(config));
}

std::string expert_group::name() const { return map_.group(config_.group_id).name; }

std::vector<cluster_failure> expert_group::failures() const {
    std::lock_guard lock(mutex_);
    return failures_;
}

expert_group_stats expert_group::stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
}

std::optional<size_t> expert_group::worker_of(transport::peer_id peer) {
    if (auto it = worker_by_peer_.find(peer); it != worker_by_peer_.end()) return it->second;
    const std::optional<transport::peer_info> info = plane_.peer(peer);
    if (!info) return std::nullopt;
    const auto& names = config_.worker_names;
    const auto it = std::find(names.begin(), names.end(), info->name);
    if (it == names.end()) return std::nullopt;
    const auto worker_idx = static_cast<size_t>(it - names.begin());
    worker_by_peer_[peer] = worker_idx;
    peer_of_worker_[worker_idx] = peer;  // a reconnect replaces the failed peer
    worker_failed_[worker_idx] = false;
    return worker_idx;
}

void expert_group::refresh_failed_workers() {
    for (size_t worker_idx = 0; worker_idx < peer_of_worker_.size(); ++worker_idx) {
        if (!peer_of_worker_[worker_idx]) continue;
        const auto info = plane_.peer(*peer_of_worker_[worker_idx]);
        if (info && info->failure) worker_failed_[worker_idx] = true;
    }
}

std::string expert_group::missing_workers(const std::vector<std::optional<received_frame>>& frames,
                                          bool failed_only) const {
    std::string out;
    for (size_t worker_idx = 0; worker_idx < frames.size(); ++worker_idx) {
        if (frames[worker_idx] || (failed_only && !worker_failed_[worker_idx])) continue;
        out += (out.empty() ? "" : ", ") + config_.worker_names[worker_idx];
    }
    return out;
}

void expert_group::record_failure(const unit_key& key, const cluster_failure& failure,
                                  bool unit_fails) {
    if (unit_fails) {
        failed_units_.insert(key);
        while (failed_units_.size() > kMaxRememberedFailedUnits)
            failed_units_.erase(failed_units_.begin());
    }
    {
        std::lock_guard lock(mutex_);
        failures_.push_back(failure);
        ++stats_.units_failed;
    }
    if (config_.on_failure) config_.on_failure(failure);
}

cluster_result<unit_report> expert_group::compute_and_reply(
    const unit_key& key, std::vector<std::optional<received_frame>>& frames) {
    const model::model_config& c = weights_->config;
    const int64_t hidden = c.hidden_size;
    const std::string where = name() + " " + cluster::to_string(key);
    if (key.layer >= static_cast<uint32_t>(map_.num_layers())) {
        return make_cluster_failure(
            cluster_error::bad_dispatch,
            where + ": the model has " + std::to_string(map_.num_layers()) + " layers");
    }
    const auto layer_idx = static_cast<int32_t>(key.layer);
    // Decode every worker's rows, in worker order, into one batch. The hidden rows stay in the
    // received payloads (gathered below into reused memory only when several workers sent).
    std::vector<cluster::dispatch_view> views(frames.size());
    unit_report report;
    report.key = key;
    int64_t total_rows = 0;
    for (size_t worker_idx = 0; worker_idx < frames.size(); ++worker_idx) {
        const received_frame& f = *frames[worker_idx];
        auto decoded =
            cluster::decode_dispatch_view(f.header, f.payload.span(), hidden, c.n_routed_experts);
        if (!decoded) {
            return make_cluster_failure(cluster_error::bad_dispatch,
                                        where + ": dispatch from " +
                                            config_.worker_names[worker_idx] + ": " +
                                            decoded.error());
        }
        // decode_dispatch_view checked 0 <= expert < n_routed_experts.
        const uint8_t* held = held_.data() + static_cast<size_t>(layer_idx) * c.n_routed_experts;
        for (int32_t expert_idx : decoded->rows.expert) {
            if (!held[expert_idx]) {
                return make_cluster_failure(
                    cluster_error::bad_dispatch,
                    where + ": " + config_.worker_names[worker_idx] + " sent tokens for expert " +
                        std::to_string(expert_idx) + ", which placement version " +
                        std::to_string(map_.version()) + " does not give this group");
            }
        }
        views[worker_idx] = std::move(*decoded);
        report.rows_by_worker.push_back(views[worker_idx].rows.num_rows());
        total_rows += views[worker_idx].rows.num_rows();
    }
    // Each worker's answer, [its rows, hidden] f32: sent from where it is (send() returns once
    // the transport is done with the bytes).
    std::vector<const float*> answer(frames.size());
    const auto compute_start = transport::clock::now();
    if (config_.identity_experts) {
        // Σ_slots w·h = (Σ_slots w)·h, scaled in place in each worker's dispatch payload, whose
        // first block is exactly the answer's layout ([rows, hidden] f32): one pass over memory
        // the group already holds, no batch, no second buffer (the bench measures the data plane
        // around these experts).
        for (size_t worker_idx = 0; worker_idx < frames.size(); ++worker_idx) {
            const cluster::dispatch_rows& r = views[worker_idx].rows;
            report.num_assignments += r.num_slots();
            auto* rows_out = reinterpret_cast<float*>(frames[worker_idx]->payload.data());
            for (int64_t row = 0; row < r.num_rows(); ++row) {
                float w = 0.0f;
                for (int32_t s = r.slot_begin[row]; s < r.slot_begin[row + 1]; ++s)
                    w += r.weight[s];
                float* h = rows_out + row * hidden;
                for (int64_t i = 0; i < hidden; ++i) h[i] *= w;
            }
            answer[worker_idx] = rows_out;
        }
    } else {
        model::expert_dispatch dispatch;
        int64_t num_slots = 0;
        for (const cluster::dispatch_view& v : views) num_slots += v.rows.num_slots();
        dispatch.token.reserve(static_cast<size_t>(num_slots));
        dispatch.expert.reserve(static_cast<size_t>(num_slots));
        dispatch.weight.reserve(static_cast<size_t>(num_slots));
        const size_t batch_floats = static_cast<size_t>(total_rows * hidden);
        // Grown, never shrunk: a unit of the usual size neither allocates nor zero-fills.
        if (out_.size() < batch_floats) out_.resize(batch_floats);
        // One worker's rows are the batch as they landed; several workers' are gathered.
        const float* h = views.size() == 1 ? views[0].h : nullptr;
        if (!h && h_.size() < batch_floats) h_.resize(batch_floats);
        int64_t row_base = 0;
        for (size_t worker_idx = 0; worker_idx < frames.size(); ++worker_idx) {
            const cluster::dispatch_view& v = views[worker_idx];
            const cluster::dispatch_rows& r = v.rows;
            for (int64_t row = 0; row < r.num_rows(); ++row) {
                for (int32_t s = r.slot_begin[row]; s < r.slot_begin[row + 1]; ++s) {
                    dispatch.token.push_back(static_cast<int32_t>(row_base + row));
                    dispatch.expert.push_back(r.expert[s]);
                    dispatch.weight.push_back(r.weight[s]);
                }
            }
            if (!h) v.copy_hidden(h_.data() + row_base * hidden);
            answer[worker_idx] = out_.data() + row_base * hidden;
            row_base += r.num_rows();
        }
        if (!h) h = h_.data();
        report.num_assignments = static_cast<int64_t>(dispatch.token.size());
        // Each row summed from 0 in ascending expert order, as grouped_experts does in forward().
        std::fill_n(out_.data(), batch_floats, 0.0f);
        if (!dispatch.token.empty()) {
            try {
                model::stage_experts(*weights_, layer_idx, h, total_rows, dispatch, out_.data());
            } catch (const std::exception& e) {
                return make_cluster_failure(cluster_error::model_failure, where + ": " + e.what());
            }
        }
    }
    report.compute_seconds = seconds_since(compute_start);
    // Answer every worker, even after one send fails; report the first failure.
    std::optional<cluster_failure> send_failure;
    for (size_t worker_idx = 0; worker_idx < frames.size(); ++worker_idx) {
        const int64_t num_rows = views[worker_idx].rows.num_rows();
        const proto::frame_header reply = cluster::combine_header(key, num_rows, hidden);
        const std::span<const std::byte> payload{
            reinterpret_cast<const std::byte*>(answer[worker_idx]),
            static_cast<size_t>(num_rows * hidden) * sizeof(float)};
        auto sent = plane_.send(frames[worker_idx]->peer, reply, {payload},
                                transport::deadline_after(config_.send_timeout));
        if (!sent && sent.error().payload_held) {
            // UCX may still read the answer: its buffer is never reused or freed.
            if (config_.identity_experts) {
                transport::byte_buffer& held = frames[worker_idx]->payload;
                const size_t held_bytes = held.size();
                transport::retain_payload(std::make_shared<transport::byte_buffer>(std::move(held)),
                                          held_bytes);
            } else if (!out_.empty()) {
                transport::retain_payload_buffer(std::move(out_));  // the other answers stay valid
                out_ = {};
            }
        }
        if (!sent && !send_failure) {
            send_failure =
                make_cluster_failure(cluster_error::send_failed,
                                     where + ": combine to " + config_.worker_names[worker_idx] +
                                         ": " + sent.error().message)
                    .error();
        }
    }
    if (send_failure) return proto::unexpected(*send_failure);
    std::lock_guard lock(mutex_);
    ++stats_.units_served;
    stats_.rows += static_cast<uint64_t>(total_rows);
    stats_.assignments += static_cast<uint64_t>(report.num_assignments);
    stats_.compute_seconds += report.compute_seconds;
    return report;
}

cluster_result<unit_report> expert_group::serve_one_unit(const unit_key& key,
                                                         transport::deadline until) {
    auto served = collect_and_compute(key, until);
    if (!served) {
        std::lock_guard lock(mutex_);
        ++stats_.units_failed;
    }
    return served;
}

cluster_result<unit_report> expert_group::collect_and_compute(const unit_key& key,
                                                              transport::deadline until) {
    const size_t num_workers = config_.worker_names.size();
    std::vector<std::optional<received_frame>> frames(num_workers);
    size_t have = 0;
    transport::frame_filter filter;
    filter.kind = proto::frame_kind::dispatch;
    filter.step_id = key.step_id;
    filter.layer = key.layer;
    filter.micro_batch = key.micro_batch;
    const std::string where = name() + " " + cluster::to_string(key);
    while (have < num_workers) {
        auto got = plane_.receive(until, filter);
        if (!got) {
            switch (got.error().code) {
                case transport::transport_error::timeout:
                    return make_cluster_failure(cluster_error::dispatch_timeout,
                                                where + ": no dispatch from " +
                                                    missing_workers(frames, false) +
                                                    " by the deadline");
                case transport::transport_error::closed:
                    return make_cluster_failure(cluster_error::closed,
                                                where + ": " + got.error().message);
                case transport::transport_error::peer_failed:
                case transport::transport_error::version_mismatch:
                case transport::transport_error::bad_frame:
                case transport::transport_error::unknown_peer:
                case transport::transport_error::bad_address:
                case transport::transport_error::unsupported_memory:
                case transport::transport_error::setup_failed:
                    break;
            }
            refresh_failed_workers();
            if (std::string failed = missing_workers(frames, true); !failed.empty()) {
                return make_cluster_failure(
                    cluster_error::worker_failed,
                    where + ": " + failed + " failed before sending (" + got.error().message + ")");
            }
            continue;
        }
        const std::optional<size_t> worker_idx = worker_of(got->peer);
        if (!worker_idx || frames[*worker_idx]) {
            std::lock_guard lock(mutex_);
            ++stats_.frames_dropped;
            continue;
        }
        frames[*worker_idx] = std::move(*got);
        ++have;
    }
    return compute_and_reply(key, frames);
}

void expert_group::serve(std::stop_token stop) {
    struct pending_unit {
        transport::deadline until;
        std::vector<std::optional<received_frame>> frames;
        size_t have = 0;
    };
    const size_t num_workers = config_.worker_names.size();
    std::map<unit_key, pending_unit> pending;
    transport::frame_filter filter;
    filter.kind = proto::frame_kind::dispatch;
    auto fail_unit = [&](std::map<unit_key, pending_unit>::iterator it, cluster_error code,
                         const std::string& why) {
        record_failure(
            it->first,
            make_cluster_failure(code, name() + " " + cluster::to_string(it->first) + ": " + why)
                .error());
        return pending.erase(it);
    };
    // Units missing a failed worker fail now; units past their deadline fail.
    auto sweep = [&] {
        const auto now = transport::clock::now();
        for (auto it = pending.begin(); it != pending.end();) {
            if (std::string failed = missing_workers(it->second.frames, true); !failed.empty()) {
                it = fail_unit(it, cluster_error::worker_failed, failed + " failed before sending");
            } else if (it->second.until <= now) {
                it = fail_unit(it, cluster_error::dispatch_timeout,
                               "no dispatch from " + missing_workers(it->second.frames, false) +
                                   " within " + std::to_string(config_.unit_timeout.count()) +
                                   " ms of the unit's first frame");
            } else {
                ++it;
            }
        }
    };
    while (!stop.stop_requested()) {
        transport::deadline until = transport::deadline_after(config_.poll_interval);
        for (const auto& [key, unit] : pending) until = std::min(until, unit.until);
        auto got = plane_.receive(until, filter);
        if (!got) {
            if (got.error().code == transport::transport_error::closed) return;
            if (got.error().code != transport::transport_error::timeout) refresh_failed_workers();
            sweep();
            continue;
        }
        const unit_key key = cluster::unit_of(got->header);
        const std::optional<size_t> worker_idx = worker_of(got->peer);
        if (!worker_idx || failed_units_.contains(key)) {
            if (!worker_idx) {
                const auto info = plane_.peer(got->peer);
                record_failure(key,
                               make_cluster_failure(cluster_error::unpaired_peer,
                                                    name() + " " + cluster::to_string(key) +
                                                        ": dispatch from " +
                                                        (info ? transport::describe_peer(*info)
                                                              : transport::to_string(got->peer)) +
                                                        ", which is not a paired worker")
                                   .error(),
                               /*unit_fails=*/false);
            }
            std::lock_guard lock(mutex_);
            ++stats_.frames_dropped;
            continue;
        }
        auto [it, fresh] = pending.try_emplace(key);
        if (fresh) {
            it->second.until = transport::deadline_after(config_.unit_timeout);
            it->second.frames.resize(num_workers);
        }
        pending_unit& unit = it->second;
        if (unit.frames[*worker_idx]) {
            std::lock_guard lock(mutex_);
            ++stats_.frames_dropped;
            continue;
        }
        unit.frames[*worker_idx] = std::move(*got);
        if (++unit.have == num_workers) {
            auto done = compute_and_reply(key, unit.frames);
            if (!done) record_failure(key, done.error());
            pending.erase(it);
        }
        sweep();
    }
}

}  // namespace longcat::experts
