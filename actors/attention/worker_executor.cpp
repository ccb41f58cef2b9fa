#include "actors/attention/worker_executor.hpp"

#include <cstring>
#include <exception>

namespace longcat::attention {

using cluster::cluster_error;
using cluster::cluster_result;
using cluster::cluster_status;
using cluster::make_cluster_failure;
using cluster::unit_key;

namespace {

double seconds_since(transport::clock::time_point start) {
    return std::chrono::duration<double>(transport::clock::now() - start).count();
}

// Runs `stage` and adds its wall time to `total`.
template <class F>
void timed(double& total, F&& stage) {
    const auto start = transport::clock::now();
    stage();
    total += seconds_since(start);
}

}  // namespace

std::string_view to_string(stage_event_kind kind) {
    switch (kind) {
        case stage_event_kind::front_start:
            return "front_start";
        case stage_event_kind::dispatch_sent:
            return "dispatch_sent";
        case stage_event_kind::mid_start:
            return "mid_start";
        case stage_event_kind::back_end:
            return "back_end";
        case stage_event_kind::combine_wait_start:
            return "combine_wait_start";
        case stage_event_kind::combine_received:
            return "combine_received";
        case stage_event_kind::join_end:
            return "join_end";
    }
    return "unknown";
}

std::string to_string(const stage_event& event) {
    return std::string(to_string(event.kind)) + " L" + std::to_string(event.layer) + " mb" +
           std::to_string(event.micro_batch);
}

std::optional<std::string> worker_executor_config::validate() const {
    if (worker_index < 0) return "worker_index " + std::to_string(worker_index) + " is negative";
    if (num_micro_batches < 1 || num_micro_batches > kMaxMicroBatches) {
        return "num_micro_batches " + std::to_string(num_micro_batches) + " is not in 1.." +
               std::to_string(kMaxMicroBatches);
    }
    if (combine_timeout.count() <= 0) return "combine_timeout must be positive";
    if (send_timeout.count() <= 0) return "send_timeout must be positive";
    return std::nullopt;
}

std::vector<model::forward_batch> split_micro_batches(const model::forward_batch& batch,
                                                      int32_t num_micro_batches,
                                                      std::vector<int64_t>& token_offsets) {
    const int64_t total = batch.num_tokens();
    std::vector<model::forward_batch> out(static_cast<size_t>(num_micro_batches));
    token_offsets.assign(static_cast<size_t>(num_micro_batches), 0);
    // Sequence s goes to micro-batch ⌊m · (tokens before s) / total⌋: contiguous, balanced by
    // tokens, each micro-batch's rows a contiguous range of the batch's rows.
    std::vector<int64_t> begin(static_cast<size_t>(num_micro_batches), -1);
    for (const model::sequence_slice& s : batch.seqs) {
        const auto mb_idx = static_cast<size_t>(
            total > 0 ? std::min<int64_t>(num_micro_batches - 1,
                                          num_micro_batches * s.token_begin / total)
                      : 0);
        model::forward_batch& mb = out[mb_idx];
        if (begin[mb_idx] < 0) begin[mb_idx] = s.token_begin;
        model::sequence_slice rebased = s;
        rebased.token_begin = mb.num_tokens();
        mb.seqs.push_back(rebased);
        mb.token_ids.insert(mb.token_ids.end(), batch.token_ids.begin() + s.token_begin,
                            batch.token_ids.begin() + s.token_begin + s.num_tokens);
        mb.positions.insert(mb.positions.end(), batch.positions.begin() + s.token_begin,
                            batch.positions.begin() + s.token_begin + s.num_tokens);
    }
    // Empty micro-batches start where the previous one ended.
    int64_t next = 0;
    for (size_t mb_idx = 0; mb_idx < out.size(); ++mb_idx) {
        token_offsets[mb_idx] = begin[mb_idx] >= 0 ? begin[mb_idx] : next;
        next = token_offsets[mb_idx] + out[mb_idx].num_tokens();
    }
    return out;
}

worker_executor::worker_executor(std::shared_ptr<const model::model_weights> weights,
                                 cluster::placement_map map, transport::data_plane& plane,
                                 worker_executor_config config)
    : weights_(std::move(weights)),
      map_(std::move(map)),
      plane_(plane),
      config_(std::move(config)),
      kv_(weights_->config, config_.kv, weights_->mtp.has_value()) {}

cluster_result<std::unique_ptr<worker_executor>> worker_executor::create(
    std::shared_ptr<const model::model_weights> weights, cluster::placement_map map,
    transport::data_plane& plane, worker_executor_config config) {
    if (auto problem = config.validate()) {
        return make_cluster_failure(cluster_error::bad_config,
                                    plane.name() + ": worker executor: " + *problem);
    }
    if (!weights || weights->embed_tokens.data == nullptr) {
        return make_cluster_failure(cluster_error::bad_config,
                                    plane.name() + ": worker executor needs attention weights");
    }
    if (auto fits = map.check_model(weights->config); !fits) {
        return make_cluster_failure(cluster_error::bad_placement, fits.error().message);
    }
    try {
        return std::unique_ptr<worker_executor>(
            new worker_executor(std::move(weights), std::move(map), plane, std::move(config)));
    } catch (const std::exception& e) {
        return make_cluster_failure(cluster_error::model_failure, plane.name() + ": " + e.what());
    }
}

cluster_status worker_executor::replace_placement(cluster::placement_map map, int32_t worker_index,
                                                  model::dense_ffn_runner dense_ffn) {
    if (auto fits = map.check_model(weights_->config); !fits) {
        return make_cluster_failure(cluster_error::bad_placement, fits.error().message);
    }
    map_ = std::move(map);
    config_.worker_index = worker_index;
    config_.dense_ffn = std::move(dense_ffn);
    group_peers_.clear();
    mbs_.clear();  // dispatch rows are per map (group ids)
    return {};
}

std::string worker_executor::group_label(int32_t group_id) const {
    return map_.group(group_id).name + " (group " + std::to_string(group_id) + ")";
}

cluster_status worker_executor::connect_groups(transport::deadline until) {
    std::vector<transport::peer_id> peers;
    for (int32_t group_id = 0; group_id < map_.num_groups(); ++group_id) {
        const std::string& address = map_.group(group_id).address;
        if (address.empty()) {
            return make_cluster_failure(cluster_error::bad_placement,
                                        group_label(group_id) + " has no address in map version " +
                                            std::to_string(map_.version()));
        }
        auto peer = plane_.connect(address, until);
        if (!peer) {
            return make_cluster_failure(
                cluster_error::connect_failed,
                plane_.name() + " → " + group_label(group_id) + ": " + peer.error().message);
        }
        peers.push_back(*peer);
    }
    return use_group_peers(std::move(peers));
}

cluster_status worker_executor::use_group_peers(std::vector<transport::peer_id> peers) {
    if (static_cast<int32_t>(peers.size()) != map_.num_groups()) {
        return make_cluster_failure(cluster_error::bad_config,
                                    std::to_string(peers.size()) + " group peers for the " +
                                        std::to_string(map_.num_groups()) +
                                        " groups of map version " + std::to_string(map_.version()));
    }
    group_peers_ = std::move(peers);
    return {};
}

void worker_executor::log(stage_event_kind kind, int64_t layer_idx, size_t mb_idx) {
    if (!config_.record_stage_log) return;
    log_.push_back({kind, static_cast<int32_t>(layer_idx), static_cast<int32_t>(mb_idx)});
}

void worker_executor::run_front(int64_t layer_idx, size_t mb_idx) {
    log(stage_event_kind::front_start, layer_idx, mb_idx);
    micro_batch& mb = mbs_[mb_idx];
    if (mb.batch.num_tokens() == 0) {
        mb.act.dispatch.clear();
        mb.act.num_real_slots = 0;
        return;
    }
    model::stage_front(*weights_, layer_idx, mb.batch, kv_, mb.x, mb.act);
}

cluster_status worker_executor::send_dispatch(int64_t layer_idx, size_t mb_idx, uint64_t step_id,
                                              worker_step_stats& stats) {
    micro_batch& mb = mbs_[mb_idx];
    const int64_t hidden = weights_->config.hidden_size;
    cluster::split_dispatch(map_, static_cast<int32_t>(layer_idx), config_.worker_index, mb.act,
                            hidden, mb.rows);
    const unit_key key{step_id, static_cast<uint32_t>(layer_idx), static_cast<uint16_t>(mb_idx)};
    mb.dispatches.resize(mb.rows.size());
    const auto start = transport::clock::now();
    for (int32_t group_id = 0; group_id < map_.num_groups(); ++group_id) {
        cluster::encode_dispatch(key, mb.rows[group_id], mb.dispatches[group_id]);
        const cluster::encoded_frame& f = mb.dispatches[group_id];
        auto sent = plane_.send(group_peers_[group_id], f.header, {f.payload},
                                transport::deadline_after(config_.send_timeout));
        if (!sent) {
            // UCX may still read the payload: its buffer is never reused or freed.
            if (sent.error().payload_held)
                transport::retain_payload_buffer(std::move(mb.dispatches[group_id].payload));
            stats.dispatch_seconds += seconds_since(start);
            return make_cluster_failure(cluster_error::send_failed,
                                        plane_.name() + " " + cluster::to_string(key) +
                                            ": dispatch to " + group_label(group_id) + ": " +
                                            sent.error().message);
        }
        ++stats.dispatch_frames;
        stats.dispatch_bytes += f.payload.size();
        stats.dispatched_rows += mb.rows[group_id].num_rows();
    }
    stats.dispatch_seconds += seconds_since(start);
    log(stage_event_kind::dispatch_sent, layer_idx, mb_idx);
    return {};
}

void worker_executor::run_mid_back(int64_t layer_idx, size_t mb_idx) {
    micro_batch& mb = mbs_[mb_idx];
    log(stage_event_kind::mid_start, layer_idx, mb_idx);
    if (mb.batch.num_tokens() > 0) {
        model::stage_mid(*weights_, layer_idx, mb.batch, kv_, mb.x, mb.act, config_.dense_ffn);
        model::stage_back(*weights_, layer_idx, mb.batch, kv_, mb.x, mb.act, config_.dense_ffn);
    } else if (config_.dense_ffn) {
        // A TP rank's empty micro-batch still takes its part in the group's dense FFNs (0 rows
        // of its own, its shard for the other ranks' rows), in the order mid and back would:
        // every rank runs the same m × 2 collectives per layer, so they stay in lockstep.
        const auto& lw = weights_->layers[static_cast<size_t>(layer_idx)];
        config_.dense_ffn(lw.mlps[0], nullptr, 0, nullptr);
        config_.dense_ffn(lw.mlps[1], nullptr, 0, nullptr);
    }
    log(stage_event_kind::back_end, layer_idx, mb_idx);
}

cluster_status worker_executor::collect_combines(int64_t layer_idx, size_t mb_idx, uint64_t step_id,
                                                 worker_step_stats& stats) {
    micro_batch& mb = mbs_[mb_idx];
    const int64_t hidden = weights_->config.hidden_size;
    const unit_key key{step_id, static_cast<uint32_t>(layer_idx), static_cast<uint16_t>(mb_idx)};
    log(stage_event_kind::combine_wait_start, layer_idx, mb_idx);
    const auto start = transport::clock::now();
    const transport::deadline until = start + config_.combine_timeout;
    mb.act.moe_out.assign(mb.x.size(), 0.0f);
    if (wait_task_) {
        auto task = std::move(wait_task_);
        wait_task_ = nullptr;
        task();
    }
    // Group-id order: the sum is the same whatever order the combines arrive in.
    for (int32_t group_id = 0; group_id < map_.num_groups(); ++group_id) {
        transport::frame_filter filter;
        filter.peer = group_peers_[group_id];
        filter.kind = proto::frame_kind::combine;
        filter.step_id = key.step_id;
        filter.layer = key.layer;
        filter.micro_batch = key.micro_batch;
        auto got = plane_.receive(until, filter);
        if (!got) {
            stats.combine_wait_seconds += seconds_since(start);
            const std::string what =
                plane_.name() + " " + cluster::to_string(key) + ": " + group_label(group_id);
            switch (got.error().code) {
                case transport::transport_error::timeout:
                    return make_cluster_failure(
                        cluster_error::combine_timeout,
                        what + " sent no combine within " +
                            std::to_string(config_.combine_timeout.count()) + " ms");
                case transport::transport_error::closed:
                    return make_cluster_failure(cluster_error::closed,
                                                what + ": " + got.error().message);
                case transport::transport_error::peer_failed:
                case transport::transport_error::version_mismatch:
                case transport::transport_error::bad_frame:
                case transport::transport_error::unknown_peer:
                case transport::transport_error::bad_address:
                case transport::transport_error::unsupported_memory:
                case transport::transport_error::setup_failed:
                    return make_cluster_failure(cluster_error::group_failed,
                                                what + " failed: " + got.error().message);
            }
        }
        const cluster::dispatch_rows& rows = mb.rows[group_id];
        if (auto problem = cluster::check_combine(got->header, hidden, rows.num_rows())) {
            stats.combine_wait_seconds += seconds_since(start);
            return make_cluster_failure(cluster_error::bad_combine,
                                        plane_.name() + " " + cluster::to_string(key) +
                                            ": combine from " + group_label(group_id) + ": " +
                                            *problem);
        }
        ++stats.combine_frames;
        stats.combine_bytes += got->payload.size();
        // Summed straight from the received buffer (f32 rows, at least 8-byte aligned;
        // check_combine verified their count and width).
        const float* partial = reinterpret_cast<const float*>(got->payload.data());
        for (int64_t r = 0; r < rows.num_rows(); ++r) {
            float* dst = mb.act.moe_out.data() + static_cast<int64_t>(rows.token[r]) * hidden;
            const float* src = partial + r * hidden;
            for (int64_t i = 0; i < hidden; ++i) dst[i] += src[i];
        }
    }
    stats.combine_wait_seconds += seconds_since(start);
    log(stage_event_kind::combine_received, layer_idx, mb_idx);
    return {};
}

void worker_executor::run_join(int64_t layer_idx, size_t mb_idx) {
    micro_batch& mb = mbs_[mb_idx];
    if (mb.batch.num_tokens() > 0) model::stage_join(*weights_, layer_idx, mb.x, mb.act);
    log(stage_event_kind::join_end, layer_idx, mb_idx);
}

void worker_executor::drain_stale_combines(uint64_t step_id) {
    // Combines of an earlier step that failed part-way would otherwise stay queued forever.
    const transport::deadline now = transport::clock::now();
    for (const transport::peer_id peer : group_peers_) {
        transport::frame_filter filter;
        filter.peer = peer;
        filter.kind = proto::frame_kind::combine;
        filter.predicate = [step_id](transport::peer_id, const proto::frame_header& header) {
            return header.step_id != step_id;
        };
        while (plane_.receive(now, filter)) {
        }
    }
}

cluster_result<worker_step_output> worker_executor::forward(const model::forward_batch& batch,
                                                            uint64_t step_id,
                                                            const model::forward_options& opts) {
    if (static_cast<int32_t>(group_peers_.size()) != map_.num_groups()) {
        return make_cluster_failure(cluster_error::bad_config,
                                    plane_.name() + ": not connected to the expert groups");
    }
    if (batch.positions.size() != batch.token_ids.size()) {
        return make_cluster_failure(cluster_error::bad_batch,
                                    plane_.name() + ": batch has " +
                                        std::to_string(batch.token_ids.size()) + " tokens and " +
                                        std::to_string(batch.positions.size()) + " positions");
    }
    const model::model_config& c = weights_->config;
    const int64_t hidden = c.hidden_size;
    log_.clear();
    drain_stale_combines(step_id);
    worker_step_output result;
    worker_step_stats& stats = result.stats;
    try {
        std::vector<int64_t> offsets;
        std::vector<model::forward_batch> parts =
            split_micro_batches(batch, config_.num_micro_batches, offsets);
        mbs_.resize(parts.size());
        for (size_t mb_idx = 0; mb_idx < parts.size(); ++mb_idx) {
            micro_batch& mb = mbs_[mb_idx];
            mb.batch = std::move(parts[mb_idx]);
            mb.token_offset = offsets[mb_idx];
            model::embed(weights_->embed_tokens, mb.batch.token_ids, mb.x);
        }
        std::vector<float> x(static_cast<size_t>(batch.num_tokens() * hidden));
        auto gather_x = [&] {
            for (const micro_batch& mb : mbs_) {
                std::copy(mb.x.begin(), mb.x.end(), x.begin() + mb.token_offset * hidden);
            }
        };
        if (opts.on_hidden) {
            gather_x();
            opts.on_hidden(-1, x);
        }
        const size_t num_mbs = mbs_.size();
        for (int64_t layer_idx = 0; layer_idx < c.num_layers; ++layer_idx) {
            if (config_.overlap) {
                for (size_t mb_idx = 0; mb_idx < num_mbs; ++mb_idx) {
                    timed(stats.front_seconds, [&] { run_front(layer_idx, mb_idx); });
                    if (auto sent = send_dispatch(layer_idx, mb_idx, step_id, stats); !sent)
                        return proto::unexpected(sent.error());
                }
                for (size_t mb_idx = 0; mb_idx < num_mbs; ++mb_idx) {
                    timed(stats.mid_back_seconds, [&] { run_mid_back(layer_idx, mb_idx); });
                }
                for (size_t mb_idx = 0; mb_idx < num_mbs; ++mb_idx) {
                    if (auto got = collect_combines(layer_idx, mb_idx, step_id, stats); !got)
                        return proto::unexpected(got.error());
                    timed(stats.join_seconds, [&] { run_join(layer_idx, mb_idx); });
                }
            } else {
                for (size_t mb_idx = 0; mb_idx < num_mbs; ++mb_idx) {
                    timed(stats.front_seconds, [&] { run_front(layer_idx, mb_idx); });
                    if (auto sent = send_dispatch(layer_idx, mb_idx, step_id, stats); !sent)
                        return proto::unexpected(sent.error());
                    // Overlap off: the combines are awaited before mid, so nothing hides them.
                    if (auto got = collect_combines(layer_idx, mb_idx, step_id, stats); !got)
                        return proto::unexpected(got.error());
                    timed(stats.mid_back_seconds, [&] { run_mid_back(layer_idx, mb_idx); });
                    timed(stats.join_seconds, [&] { run_join(layer_idx, mb_idx); });
                }
            }
            for (const micro_batch& mb : mbs_)
                result.forward.num_real_slots += mb.act.num_real_slots;
            if (opts.on_hidden) {
                gather_x();
                opts.on_hidden(layer_idx, x);
            }
        }
        gather_x();
        result.forward.final_norm.resize(x.size());
        kernels::rms_norm(x.data(), weights_->final_norm.data(), batch.num_tokens(), hidden,
                          static_cast<float>(c.rms_norm_eps), result.forward.final_norm.data());
        if (batch.num_tokens() > 0) {
            result.forward.logits =
                model::compute_logits(*weights_, result.forward.final_norm, batch, opts.all_logits);
        }
    } catch (const std::exception& e) {
        return make_cluster_failure(
            cluster_error::model_failure,
            plane_.name() + " step " + std::to_string(step_id) + ": " + e.what());
    }
    return result;
}

cluster_result<worker_step_output> worker_executor::step(
    const std::vector<model::sequence*>& seqs, const std::vector<std::vector<int32_t>>& new_tokens,
    uint64_t step_id, const model::forward_options& opts) {
    if (seqs.size() != new_tokens.size()) {
        return make_cluster_failure(cluster_error::bad_batch,
                                    plane_.name() + ": step got " + std::to_string(seqs.size()) +
                                        " sequences and " + std::to_string(new_tokens.size()) +
                                        " token lists");
    }
    // The same sequence twice (a plan naming a request twice) would write the same KV positions
    // from two slices and append its tokens twice: refused before anything is reserved.
    for (size_t i = 0; i < seqs.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (seqs[i] == seqs[j])
                return make_cluster_failure(cluster_error::bad_batch,
                                            plane_.name() + ": sequences " + std::to_string(j) +
                                                " and " + std::to_string(i) +
                                                " of the step are the same sequence");
    std::vector<size_t> before(seqs.size());
    auto give_back = [&](size_t count) {
        for (size_t j = 0; j < count; ++j) {
            std::vector<int32_t> extra(
                seqs[j]->page_table.begin() + static_cast<int64_t>(before[j]),
                seqs[j]->page_table.end());
            seqs[j]->page_table.resize(before[j]);
            kv_.release(extra);
        }
    };
    for (size_t i = 0; i < seqs.size(); ++i) {
        before[i] = seqs[i]->page_table.size();
        const int64_t want = seqs[i]->num_cached() + static_cast<int64_t>(new_tokens[i].size());
        if (new_tokens[i].empty() || want > model_config().max_position_embeddings) {
            give_back(i);
            return make_cluster_failure(
                cluster_error::bad_batch,
                plane_.name() + ": sequence " + std::to_string(i) +
                    (new_tokens[i].empty() ? " has no new tokens"
                                           : " exceeds max_position_embeddings"));
        }
        if (!kv_.reserve(seqs[i]->page_table, want)) {
            give_back(i + 1);
            return make_cluster_failure(cluster_error::out_of_pages,
                                        plane_.name() + ": KV cache out of pages (" +
                                            std::to_string(kv_.num_free_pages()) + " free)");
        }
    }
    model::forward_batch batch;
    for (size_t i = 0; i < seqs.size(); ++i) {
        model::sequence_slice s;
        s.token_begin = batch.num_tokens();
        s.num_tokens = static_cast<int64_t>(new_tokens[i].size());
        s.first_pos = seqs[i]->num_cached();
        s.page_table = seqs[i]->page_table.data();
        for (int64_t t = 0; t < s.num_tokens; ++t) {
            batch.token_ids.push_back(new_tokens[i][t]);
            batch.positions.push_back(static_cast<int32_t>(s.first_pos + t));
        }
        batch.seqs.push_back(s);
    }
    auto out = forward(batch, step_id, opts);
    if (!out) {
        give_back(seqs.size());
        return out;
    }
    for (size_t i = 0; i < seqs.size(); ++i) {
        seqs[i]->tokens.insert(seqs[i]->tokens.end(), new_tokens[i].begin(), new_tokens[i].end());
    }
    return out;
}

}  // namespace longcat::attention
