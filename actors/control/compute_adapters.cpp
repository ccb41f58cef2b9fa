#include "actors/control/compute_adapters.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <span>
#include <stdexcept>
#include <thread>

#include "actors/attention/worker_executor.hpp"
#include "actors/collective/collective.hpp"
#include "actors/experts/expert_group.hpp"
#include "actors/transport/ucx_data_plane.hpp"
#include "kernels/api/dtype.hpp"
#include "model/sampling.hpp"
#include "model/weights.hpp"

namespace longcat::control {

namespace {

std::unique_ptr<transport::ucx_data_plane> make_plane(const std::string& name,
                                                      const data_plane_options& opts) {
    transport::ucx_data_plane_config config;
    config.name = name;
    config.listen_host = opts.listen_host;
    config.listen_port = opts.port;
    if (opts.error_mode == "none") config.error_mode = transport::ucx_error_mode::none;
    else if (opts.error_mode == "peer") config.error_mode = transport::ucx_error_mode::peer;
    else throw std::runtime_error("data-plane error mode must be peer or none, got " + opts.error_mode);
    config.poll_while_sending = std::chrono::microseconds(opts.poll_while_sending_us);
    auto plane = transport::ucx_data_plane::create(std::move(config));
    if (!plane) throw std::runtime_error("data plane of " + name + ": " + plane.error().message);
    return std::move(*plane);
}

// -- attention ------------------------------------------------------------------------------------

class worker_attention_compute final : public attention_compute {
public:
    explicit worker_attention_compute(attention_compute_options opts)
        : opts_(std::move(opts)), plane_(make_plane(opts_.name, opts_.data_plane)) {}
    ~worker_attention_compute() override { stop(); }

    std::string data_plane_address() const override { return plane_->address(); }

    std::optional<std::string> load() override {
        try {
            model::weight_selection sel;
            sel.attention = true;
            sel.tp_rank = opts_.tp_rank;
            sel.tp_size = opts_.tp_size;
            sel.all_experts = false;
            weights_ = std::make_shared<model::model_weights>(
                model::load_model_weights(opts_.model_dir, sel));
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
        return std::nullopt;
    }

    std::optional<std::string> apply_placement(const member_placement& placement) override {
        if (!weights_) return "weights are not loaded";
        if (executor_ && executor_->placement().version() == placement.experts.version())
            return std::nullopt;
        int32_t worker_index = 0;
        for (size_t idx = 0; idx < placement.workers.size(); ++idx)
            if (placement.workers[idx].name == opts_.name) worker_index = static_cast<int32_t>(idx);
        // TP peers: this rank connects to every other rank of its group (once per address); a new
        // collective per map version, tagged with it, so a step that failed half-way on one rank
        // cannot leave stale frames that match the next map's operations.
        // The executor (and its KV cache with every running request's pages) stays; only its
        // map, its pairings and its dense-FFN runner change. The old collective is destroyed
        // once the executor no longer refers to it.
        std::unique_ptr<collective::data_plane_collective> next_collective;
        if (opts_.tp_size > 1) {
            std::vector<transport::peer_id> peers(static_cast<size_t>(opts_.tp_size));
            std::string tp_group;
            for (const worker_entry& w : placement.workers)
                if (w.name == opts_.name) tp_group = w.tp_group;
            int32_t found = 1;
            for (const worker_entry& w : placement.workers) {
                if (w.tp_group != tp_group || w.name == opts_.name) continue;
                if (w.tp_rank < 0 || w.tp_rank >= opts_.tp_size || w.tp_size != opts_.tp_size)
                    return "TP peer " + w.name + " has rank " + std::to_string(w.tp_rank) + " of " +
                           std::to_string(w.tp_size) + ", this rank expects " + std::to_string(opts_.tp_size);
                auto known = tp_peers_.find(w.address);
                if (known == tp_peers_.end()) {
                    auto peer = plane_->connect(w.address, transport::deadline_after(opts_.connect_timeout));
                    if (!peer) return "TP peer " + w.name + ": " + peer.error().message;
                    known = tp_peers_.emplace(w.address, *peer).first;
                }
                peers[static_cast<size_t>(w.tp_rank)] = known->second;
                ++found;
            }
            if (found != opts_.tp_size)
                return "TP group " + tp_group + " has " + std::to_string(found) + " of " +
                       std::to_string(opts_.tp_size) + " ranks in placement v" +
                       std::to_string(placement.experts.version());
            const uint64_t tag = (std::hash<std::string>{}(tp_group) & 0xFFFFFFFFFFull) ^
                                 (placement.experts.version() << 40);
            next_collective = std::make_unique<collective::data_plane_collective>(
                *plane_, opts_.tp_rank, std::move(peers), tag);
        }
        model::dense_ffn_runner dense_ffn;
        if (next_collective)
            dense_ffn = collective::tp_dense_ffn(*next_collective, weights_->config.hidden_size,
                                                 opts_.combine_timeout);
        if (executor_) {
            if (auto replaced = executor_->replace_placement(placement.experts, worker_index, dense_ffn);
                !replaced)
                return replaced.error().message;
            collective_ = std::move(next_collective);
            return connect_and_report(placement);
        }
        collective_ = std::move(next_collective);
        attention::worker_executor_config config;
        config.dense_ffn = std::move(dense_ffn);
        config.worker_index = worker_index;
        config.num_micro_batches = opts_.micro_batches;
        config.combine_timeout = opts_.combine_timeout;
        config.send_timeout = opts_.combine_timeout;
        config.kv.num_pages = opts_.kv_pages;
        config.kv.page_size = opts_.page_size;
        auto executor = attention::worker_executor::create(weights_, placement.experts, *plane_, config);
        if (!executor) return executor.error().message;
        executor_ = std::move(*executor);
        install_landing();
        return connect_and_report(placement);
    }

    std::optional<std::string> connect_and_report(const member_placement& placement) {
        if (auto connected = executor_->connect_groups(transport::deadline_after(opts_.connect_timeout));
            !connected) {
            std::string error = connected.error().message;
            forget_landings();
            executor_.reset();
            sequences_.clear();  // their pages were in the executor's cache
            return error;
        }
        // Say which UCX transports carry each group's frames (tcp, or sysv/cma shared memory).
        const auto& groups = placement.experts.groups();
        for (size_t gid = 0; gid < executor_->group_peers().size() && gid < groups.size(); ++gid) {
            auto used = plane_->transports(executor_->group_peers()[gid],
                                           transport::deadline_after(std::chrono::seconds(2)));
            std::string line;
            for (const std::string& t : used ? *used : std::vector<std::string>{"unknown"})
                line += (line.empty() ? "" : ", ") + t;
            std::fprintf(stderr, "[%s] data plane to %s: %s\n", opts_.name.c_str(), groups[gid].name.c_str(),
                         line.c_str());
        }
        return std::nullopt;
    }

    proto::expected<compute_step_output, std::string> run_step(
        uint64_t step_id, const std::vector<compute_sequence>& sequences,
        std::function<void()> first_wait) override {
        using failure = proto::unexpected<std::string>;
        if (!executor_) return failure("no placement applied yet");
        if (collective_) collective_->begin_step(step_id);  // nothing of a failed step is taken
        executor_->set_wait_task(std::move(first_wait));
        struct clear_task {
            attention::worker_executor& executor;
            ~clear_task() { executor.set_wait_task({}); }
        } clear{*executor_};
        compute_step_output out;
        const int64_t vocab = executor_->model_config().vocab_size;
        if (sequences.empty()) {
            // Still one (empty) forward: the expert groups wait for this worker's frames, and a
            // TP rank's executor takes its part in the group's dense FFNs with 0 rows of its own.
            model::forward_batch empty;
            auto result = executor_->forward(empty, step_id);
            if (!result) return failure(result.error().message);
        } else {
            std::vector<model::sequence*> seqs;
            std::vector<std::vector<int32_t>> new_tokens;
            for (const compute_sequence& seq : sequences) {
                seqs.push_back(&sequences_[seq.request_id]);
                new_tokens.push_back(seq.new_tokens);
            }
            auto result = executor_->step(seqs, new_tokens, step_id);
            if (!result) return failure(result.error().message);
            out.dispatch_seconds = result->stats.dispatch_seconds;
            out.combine_wait_seconds = result->stats.combine_wait_seconds;
            out.dispatch_bytes = result->stats.dispatch_bytes;
            out.combine_bytes = result->stats.combine_bytes;
            for (const auto& tokens : new_tokens) out.num_tokens += static_cast<int64_t>(tokens.size());
            const auto& logits = result->forward.logits;
            for (size_t idx = 0; idx < sequences.size(); ++idx)
                out.tokens.push_back(model::sample_token(logits.data() + static_cast<int64_t>(idx) * vocab,
                                                         vocab, sequences[idx].sampling,
                                                         sequences[idx].token_index));
        }
        out.kv_pages_free = executor_->cache().num_free_pages();
        out.kv_pages_used = executor_->cache().num_pages() - out.kv_pages_free;
        return out;
    }

    int64_t cached_tokens(uint64_t request_id) const override {
        auto it = sequences_.find(request_id);
        return it == sequences_.end() ? 0 : it->second.num_cached();
    }

    void release(const std::vector<uint64_t>& request_ids) override {
        if (!executor_) return;
        for (uint64_t request_id : request_ids) {
            if (auto it = sequences_.find(request_id); it != sequences_.end()) {
                executor_->release(it->second);
                sequences_.erase(it);
            }
        }
    }

    void release_kv(uint64_t request_id, uint32_t attempt) override {
        {
            std::lock_guard lock(landing_mutex_);
            auto it = landing_.find(request_id);
            if (it != landing_.end() && it->second.attempt <= attempt) {
                if (landing_cache_) landing_cache_->release(it->second.page_table);
                landing_.erase(it);
            }
            // Frames of these attempts that arrive from now on are dropped by the sink.
            uint32_t& released = released_attempts_[request_id];
            released = std::max(released, attempt + 1);
            if (released_attempts_.size() > kReleasedAttemptsKept) released_attempts_.erase(released_attempts_.begin());
        }
        transport::frame_filter filter;
        filter.request_id = request_id;
        filter.predicate = [attempt](transport::peer_id, const proto::frame_header& h) {
            return is_kv_kind(h.kind) && h.sequence <= attempt;
        };
        plane_->discard(filter);
    }

    std::optional<std::string> send_kv(uint64_t request_id, const std::string& to_name,
                                       const std::string& to_address, int64_t first_token,
                                       int64_t num_tokens, uint32_t attempt,
                                       std::optional<proto::prefill_done_row> done) override {
        const bool last = done.has_value();
        if (!executor_) return "no placement applied yet";
        auto seq = sequences_.find(request_id);
        if (seq == sequences_.end() || seq->second.num_cached() < num_tokens || first_token < 0 ||
            first_token > num_tokens)
            return "request " + std::to_string(request_id) + " has no cached tokens [" +
                   std::to_string(first_token) + ", " + std::to_string(num_tokens) + ") on " + opts_.name;
        // With the last chunk the pages are freed whatever happens: the decode worker has them,
        // or the request will be prefilled again (the coordinator's retry).
        auto free_pages = [&] {
            if (!last) return;
            executor_->release(seq->second);
            sequences_.erase(seq);
        };
        auto known = kv_peers_.find(to_address);
        if (known == kv_peers_.end()) {
            auto peer = plane_->connect(to_address, transport::deadline_after(opts_.connect_timeout));
            if (!peer) {
                free_pages();
                return "KV transfer to " + to_name + ": " + peer.error().message;
            }
            known = kv_peers_.emplace(to_address, *peer).first;
        }
        const model::kv_cache& cache = executor_->cache();
        const proto::wire_dtype dtype =
            cache.type() == kernels::dtype::bf16 ? proto::wire_dtype::bf16 : proto::wire_dtype::f32;
        const auto row_elems = static_cast<uint32_t>(cache.row_bytes() / static_cast<int64_t>(kernels::dtype_size(cache.type())));
        std::optional<std::string> error;
        std::vector<std::byte> rows;
        for (int64_t begin = first_token; begin < num_tokens && !error; begin += kKvChunkTokens) {
            const int64_t count = std::min(kKvChunkTokens, num_tokens - begin);
            rows.resize(static_cast<size_t>(count * cache.row_bytes()));
            for (int64_t pool = 0; pool < cache.num_pools() && !error; ++pool) {
                cache.export_rows(seq->second.page_table, pool, begin, count, rows.data());
                proto::frame_header header =
                    proto::make_row_header(proto::frame_kind::kv, dtype, static_cast<uint32_t>(count), row_elems);
                header.request_id = request_id;
                header.layer = static_cast<uint32_t>(pool);
                header.first_position = static_cast<uint32_t>(begin);
                header.sequence = attempt;
                if (begin + count == num_tokens && pool + 1 == cache.num_pools()) header.flags |= proto::kFrameFlagLast;
                auto sent = plane_->send(known->second, header, {rows},
                                         transport::deadline_after(opts_.combine_timeout));
                if (!sent) {
                    error = "KV transfer to " + to_name + ": " + sent.error().message;
                    if (sent.error().payload_held)
                        transport::retain_payload_buffer(std::move(rows));
                }
            }
        }
        if (!error && done) {
            const auto row = std::make_shared<const decltype(proto::encode_prefill_done(*done))>(
                proto::encode_prefill_done(*done));
            proto::frame_header header = proto::make_row_header(proto::frame_kind::prefill_done, proto::wire_dtype::none,
                                                                1, 0, proto::kPrefillDoneRowBytes);
            header.request_id = request_id;
            header.sequence = attempt;
            auto sent = plane_->send(known->second, header, {std::span<const std::byte>(*row)},
                                     transport::deadline_after(opts_.combine_timeout));
            if (!sent) {
                error = "prefill_done to " + to_name + ": " + sent.error().message;
                if (sent.error().payload_held) transport::retain_payload(row, row->size());
            }
        }
        free_pages();
        return error;
    }

    std::optional<std::string> expect_kv(uint64_t request_id, uint32_t attempt, int64_t num_tokens) override {
        if (!executor_) return "no placement applied yet";
        drop_landing(request_id);  // an earlier attempt's
        kv_landing landing;
        landing.attempt = attempt;
        landing.num_tokens = num_tokens;
        model::kv_cache& cache = executor_->cache();
        if (!cache.reserve(landing.page_table, num_tokens))
            return "no KV pages for request " + std::to_string(request_id) + " (" + std::to_string(num_tokens) +
                   " tokens) on " + opts_.name;
        landing.have.assign(static_cast<size_t>(cache.num_pools()),
                            std::vector<bool>(static_cast<size_t>(num_tokens), false));
        {
            std::lock_guard lock(landing_mutex_);
            landing_[request_id] = std::move(landing);
        }
        take_queued_kv(request_id, attempt);
        return std::nullopt;
    }

    proto::expected<kv_received, std::string> receive_kv(uint64_t request_id, const std::string& from_name,
                                                         int64_t num_tokens, uint32_t attempt,
                                                         std::chrono::milliseconds timeout) override {
        using failure = proto::unexpected<std::string>;
        if (!executor_) return failure("no placement applied yet");
        bool expected_here = false;
        {
            std::lock_guard lock(landing_mutex_);
            auto it = landing_.find(request_id);
            expected_here = it != landing_.end() && it->second.attempt == attempt && it->second.num_tokens == num_tokens;
        }
        if (!expected_here)
            if (auto error = expect_kv(request_id, attempt, num_tokens)) return failure(*error);
        take_queued_kv(request_id, attempt);  // frames queued before the pages were reserved
        const int64_t expected = num_tokens * executor_->cache().num_pools();
        const auto until = std::chrono::steady_clock::now() + timeout;
        std::unique_lock lock(landing_mutex_);
        kv_landing& landing = landing_.at(request_id);
        auto complete = [&] { return (landing.got == expected && landing.done) || !landing.error.empty(); };
        // In slices: a frame the sink could not take yet (it raced the reservation) is queued,
        // and taken from the queue here.
        while (!complete() && std::chrono::steady_clock::now() < until) {
            landing_cv_.wait_until(lock, std::min(until, std::chrono::steady_clock::now() + std::chrono::milliseconds(20)),
                                   complete);
            if (complete()) break;
            lock.unlock();
            take_queued_kv(request_id, attempt);
            lock.lock();
        }
        if (!complete() || !landing.error.empty()) {
            const std::string error =
                "KV of request " + std::to_string(request_id) + " from " + from_name + ": " +
                (landing.error.empty() ? std::to_string(landing.got) + " of " + std::to_string(expected) +
                                             " rows" + (landing.done ? "" : " and no prefill_done") + " by the " +
                                             std::to_string(timeout.count()) + " ms transfer deadline"
                                       : landing.error);
            executor_->cache().release(landing.page_table);
            landing_.erase(request_id);
            return failure(error);
        }
        model::sequence seq;
        // The decode side needs the count of cached tokens (positions), not their ids.
        seq.tokens.assign(static_cast<size_t>(num_tokens), 0);
        seq.page_table = std::move(landing.page_table);
        const kv_received received{landing.bytes, *landing.done};
        landing_.erase(request_id);
        lock.unlock();
        if (auto old = sequences_.find(request_id); old != sequences_.end()) executor_->release(old->second);
        sequences_[request_id] = std::move(seq);
        return received;
    }

    kv_frame_counts kv_frames() const override { return {frames_landed_.load(), frames_queued_.load()}; }

    void stop() override {
        forget_landings();
        executor_.reset();
        collective_.reset();
        if (plane_) plane_->close();
    }

private:
    // KV frames of a request whose prefill runs on another worker land straight in pages
    // reserved for it (expect_kv), on the data plane's progress thread (the frame sink).
    struct kv_landing {
        uint32_t attempt = 0;
        int64_t num_tokens = 0;
        std::vector<int32_t> page_table;
        std::vector<std::vector<bool>> have;  // [pool][row]: landed
        int64_t got = 0;                      // rows landed, over every pool
        int64_t bytes = 0;
        std::optional<proto::prefill_done_row> done;  // the prefill_done frame, once in
        std::string error;                    // a bad or repeated frame: the import fails with it
    };

    // The frame sink (progress thread) and take_queued_kv (worker thread): writes one KV frame
    // into its request's reserved pages. False: no pages reserved for it (the frame is queued).
    bool land_kv(const proto::frame_header& h, std::span<const std::byte> payload, bool from_queue) {
        std::lock_guard lock(landing_mutex_);
        // A released attempt, or one older than the pages reserved now: dropped.
        if (auto released = released_attempts_.find(h.request_id);
            released != released_attempts_.end() && h.sequence < released->second)
            return true;
        auto it = landing_.find(h.request_id);
        if (it != landing_.end() && h.sequence < it->second.attempt) return true;
        if (it == landing_.end() || it->second.attempt != h.sequence || !landing_cache_) return false;
        kv_landing& landing = it->second;
        if (!landing.error.empty()) return true;  // the import reports the first error
        if (h.kind == proto::frame_kind::prefill_done) {
            auto row = proto::decode_prefill_done(payload);
            if (!row || landing.done) landing.error = "bad prefill_done frame for request " + std::to_string(h.request_id);
            else landing.done = *row;
            landing_cv_.notify_all();
            return true;
        }
        const model::kv_cache& cache = *landing_cache_;
        const int64_t pool = h.layer, begin = h.first_position, count = h.num_tokens;
        bool repeated = false;
        const bool in_range = pool < cache.num_pools() && begin + count <= landing.num_tokens;
        if (in_range)
            for (int64_t row = begin; row < begin + count; ++row) repeated = repeated || landing.have[pool][row];
        if (!in_range || repeated || h.row_bytes != static_cast<uint64_t>(cache.row_bytes()) ||
            payload.size() != static_cast<size_t>(count * cache.row_bytes())) {
            landing.error = "bad KV frame for request " + std::to_string(h.request_id) + ": pool " +
                            std::to_string(pool) + ", rows [" + std::to_string(begin) + ", " +
                            std::to_string(begin + count) + "), row bytes " + std::to_string(h.row_bytes) +
                            " (this cache: " + std::to_string(cache.row_bytes()) + ")" +
                            (repeated ? ", rows already received" : "");
        } else {
            landing_cache_->import_rows(landing.page_table, pool, begin, count, payload.data());
            for (int64_t row = begin; row < begin + count; ++row) landing.have[pool][row] = true;
            landing.got += count;
            landing.bytes += static_cast<int64_t>(payload.size());
            ++(from_queue ? frames_queued_ : frames_landed_);
        }
        landing_cv_.notify_all();
        return true;
    }

    // Frames of `attempt` that were queued before its pages were reserved go in now; older
    // attempts' frames are dropped (newer ones wait for their own reservation).
    void take_queued_kv(uint64_t request_id, uint32_t attempt) {
        transport::frame_filter mine;
        mine.request_id = request_id;
        mine.frames_only = true;
        mine.predicate = [attempt](transport::peer_id, const proto::frame_header& h) {
            return is_kv_kind(h.kind) && h.sequence == attempt;
        };
        while (auto frame = plane_->receive(transport::clock::now(), mine))
            if (!land_kv(frame->header, frame->payload.span(), true)) break;
        transport::frame_filter stale = mine;
        stale.predicate = [attempt](transport::peer_id, const proto::frame_header& h) {
            return is_kv_kind(h.kind) && h.sequence < attempt;
        };
        plane_->discard(stale);
    }

    void drop_landing(uint64_t request_id) {
        std::lock_guard lock(landing_mutex_);
        auto it = landing_.find(request_id);
        if (it == landing_.end()) return;
        if (landing_cache_) landing_cache_->release(it->second.page_table);
        landing_.erase(it);
    }

    // Before the cache goes (stop, a failed placement): no frame may land any more.
    void forget_landings() {
        if (plane_)
            for (proto::frame_kind kind : {proto::frame_kind::kv, proto::frame_kind::prefill_done})
                plane_->set_frame_sink(kind, nullptr);
        std::lock_guard lock(landing_mutex_);
        landing_.clear();
        landing_cache_ = nullptr;
    }

    void install_landing() {
        {
            std::lock_guard lock(landing_mutex_);
            landing_cache_ = &executor_->cache();
        }
        for (proto::frame_kind kind : {proto::frame_kind::kv, proto::frame_kind::prefill_done})
            plane_->set_frame_sink(kind, [this](transport::peer_id, const proto::frame_header& h,
                                                std::span<const std::byte> payload) { return land_kv(h, payload, false); });
    }

    static bool is_kv_kind(proto::frame_kind kind) {
        return kind == proto::frame_kind::kv || kind == proto::frame_kind::prefill_done;
    }

    static constexpr int64_t kKvChunkTokens = 256;  // rows per kv frame (one frame per chunk and pool)
    attention_compute_options opts_;
    std::unique_ptr<transport::ucx_data_plane> plane_;
    std::shared_ptr<const model::model_weights> weights_;
    std::unique_ptr<attention::worker_executor> executor_;
    std::map<uint64_t, model::sequence> sequences_;
    std::map<std::string, transport::peer_id> tp_peers_;  // by address
    std::map<std::string, transport::peer_id> kv_peers_;  // decode workers, by address
    std::mutex landing_mutex_;  // landing_, landing_cache_ (the sink runs on the progress thread)
    std::condition_variable landing_cv_;
    std::map<uint64_t, kv_landing> landing_;  // by request
    // Per request: attempts below this were released (their late frames are dropped). Bounded:
    // the oldest request ids go first (request ids only grow).
    static constexpr size_t kReleasedAttemptsKept = 4096;
    std::map<uint64_t, uint32_t> released_attempts_;
    model::kv_cache* landing_cache_ = nullptr;
    std::atomic<int64_t> frames_landed_{0};
    std::atomic<int64_t> frames_queued_{0};
    std::unique_ptr<collective::collective> collective_;
};

// -- experts --------------------------------------------------------------------------------------

class group_expert_compute final : public expert_compute {
public:
    explicit group_expert_compute(expert_compute_options opts)
        : opts_(std::move(opts)), plane_(make_plane(opts_.name, opts_.data_plane)) {}
    ~group_expert_compute() override { stop(); }

    std::string data_plane_address() const override { return plane_->address(); }

    std::optional<std::string> load(const std::vector<std::vector<int32_t>>& experts_by_layer) override {
        try {
            model::weight_selection sel;
            sel.attention = false;
            sel.all_experts = false;
            sel.experts_by_layer = experts_by_layer;
            weights_ = std::make_shared<model::model_weights>(model::load_model_weights(opts_.model_dir, sel));
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
        return std::nullopt;
    }

    std::optional<std::string> apply_placement(const member_placement& placement) override {
        if (!weights_) return "weights are not loaded";
        auto group_id = placement.experts.find_group(opts_.name);
        stop_serving();
        if (!group_id) return std::nullopt;  // holds nothing in this map: idle
        experts::expert_group_config config;
        config.group_id = *group_id;
        for (const worker_entry& worker : placement.workers) config.worker_names.push_back(worker.name);
        config.unit_timeout = opts_.unit_timeout;
        config.send_timeout = opts_.unit_timeout;
        auto group = experts::expert_group::create(weights_, placement.experts, *plane_, config);
        if (!group) return group.error().message;
        group_ = std::move(*group);
        serving_ = std::jthread([group = group_.get()](std::stop_token stop) { group->serve(stop); });
        return std::nullopt;
    }

    void stop() override {
        stop_serving();
        if (plane_) plane_->close();
    }

private:
    void stop_serving() {
        if (serving_.joinable()) {
            serving_.request_stop();
            serving_.join();
        }
        group_.reset();
    }

    expert_compute_options opts_;
    std::unique_ptr<transport::ucx_data_plane> plane_;
    std::shared_ptr<const model::model_weights> weights_;
    std::unique_ptr<experts::expert_group> group_;
    std::jthread serving_;
};

}  // namespace

std::shared_ptr<attention_compute> make_attention_compute(const attention_compute_options& opts) {
    return std::make_shared<worker_attention_compute>(opts);
}

std::shared_ptr<expert_compute> make_expert_compute(const expert_compute_options& opts) {
    return std::make_shared<group_expert_compute>(opts);
}

}  // namespace longcat::control
