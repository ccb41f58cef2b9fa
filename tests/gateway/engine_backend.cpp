#include "tests/gateway/engine_backend.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <stdexcept>

#include "model/sampling.hpp"

namespace longcat::gateway {

namespace {

// How long the idle loop sleeps between checks of cancels and deadlines (a cancel also wakes it).
constexpr std::chrono::milliseconds kIdlePoll{20};

}  // namespace

struct engine_request final : generation_handle {
    std::weak_ptr<engine_backend::state> owner;
    generation_request request;
    std::function<void(generation_event)> on_event;
    std::atomic<bool> cancel_flag{false};
    // Engine thread only.
    model::sequence seq;
    int64_t generated = 0;
    int32_t last_token = -1;
    int64_t reserved_pages = 0;
    bool done = false;

    void cancel() override;
};

struct engine_backend::state {
    std::shared_ptr<model::engine> engine;
    engine_backend_options opts;

    mutable std::mutex mutex;
    std::condition_variable wake;
    std::deque<std::shared_ptr<engine_request>> inbox;  // submitted, not yet seen by the thread
    bool stopping = false;
    bool paused = false;
    bool poked = false;  // a cancel() since the last wake-up
    backend_readiness readiness{true, ""};

    std::atomic<int64_t> submitted{0}, finished{0}, cancelled{0}, live{0}, free_pages{0};
    std::atomic<int64_t> num_running{0}, num_waiting{0};

    // Engine thread only.
    std::deque<std::shared_ptr<engine_request>> waiting;
    std::vector<std::shared_ptr<engine_request>> running;
    int64_t reserved_pages = 0;  // Σ over running requests of pages for prompt + max_tokens

    void run();
    void reap();
    void admit();
    void decode();
    bool emit(engine_request& request, int32_t token);
    // Frees the request's pages and delivers its finished event (with `tokens`, the last ones).
    void finish(engine_request& request, std::optional<backend_error> error, std::string message,
                std::string finish_reason = "", std::vector<int32_t> tokens = {});
    std::optional<std::string> validate(const generation_request& request) const;
    void publish_counts();
};

void engine_request::cancel() {
    if (cancel_flag.exchange(true)) return;
    if (const auto st = owner.lock()) {
        {
            std::lock_guard lock(st->mutex);
            st->poked = true;
        }
        st->wake.notify_all();
    }
}

void engine_backend::state::publish_counts() {
    num_running.store(static_cast<int64_t>(running.size()));
    num_waiting.store(static_cast<int64_t>(waiting.size()));
    free_pages.store(engine->cache().num_free_pages());
}

void engine_backend::state::finish(engine_request& request, std::optional<backend_error> error,
                                   std::string message, std::string finish_reason,
                                   std::vector<int32_t> tokens) {
    if (request.done) return;
    request.done = true;
    if (!request.seq.page_table.empty()) engine->release(request.seq);
    if (request.reserved_pages > 0) {
        reserved_pages -= request.reserved_pages;
        request.reserved_pages = 0;
        live.fetch_sub(1);
    }
    generation_event event;
    event.tokens = std::move(tokens);
    event.finished = true;
    event.error = error;
    event.error_message = std::move(message);
    event.finish_reason = std::move(finish_reason);
    event.prompt_tokens = static_cast<int64_t>(request.request.prompt.size());
    if (error == backend_error::cancelled) cancelled.fetch_add(1);
    finished.fetch_add(1);
    publish_counts();
    auto on_event = std::move(request.on_event);
    request.on_event = nullptr;
    if (on_event) on_event(std::move(event));
}

std::optional<std::string> engine_backend::state::validate(const generation_request& request) const {
    const model::model_config& config = engine->config();
    if (request.prompt.empty()) return "empty prompt";
    if (request.max_tokens < 1) return "max_tokens must be >= 1, got " + std::to_string(request.max_tokens);
    for (size_t token_idx = 0; token_idx < request.prompt.size(); ++token_idx) {
        const int32_t id = request.prompt[token_idx];
        if (id < 0 || id >= config.vocab_size)
            return "prompt[" + std::to_string(token_idx) + "] = " + std::to_string(id) +
                   " is not a token id below the vocabulary size " + std::to_string(config.vocab_size);
    }
    const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
    if (total > config.max_position_embeddings)
        return "prompt (" + std::to_string(request.prompt.size()) + " tokens) + max_tokens (" +
               std::to_string(request.max_tokens) + ") exceeds max_position_embeddings " +
               std::to_string(config.max_position_embeddings);
    const int64_t pages = engine->cache().pages_for_tokens(total);
    if (pages > engine->cache().num_pages())
        return "needs " + std::to_string(pages) + " KV pages, the cache has " +
               std::to_string(engine->cache().num_pages());
    try {
        model::validate_sampling_params({request.temperature, request.top_p, request.top_k, request.seed});
    } catch (const std::exception& e) {
        return e.what();
    }
    return std::nullopt;
}

// Drops cancelled requests and those past their deadline, waiting or running.
void engine_backend::state::reap() {
    const clock::time_point now = clock::now();
    auto check = [&](const std::shared_ptr<engine_request>& request) {
        if (request->cancel_flag.load()) {
            finish(*request, backend_error::cancelled, "request " + request->request.request_id + " cancelled");
        } else if (request->request.deadline <= now) {
            finish(*request, backend_error::timeout,
                   "request " + request->request.request_id + ": deadline passed after " +
                       std::to_string(request->generated) + " generated tokens");
        }
        return request->done;
    };
    std::erase_if(waiting, check);
    std::erase_if(running, check);
    publish_counts();
}

bool engine_backend::state::emit(engine_request& request, int32_t token) {
    if (request.cancel_flag.load()) {  // no token event after cancel(): only the finished one
        finish(request, backend_error::cancelled, "request " + request.request.request_id + " cancelled");
        return false;
    }
    ++request.generated;
    const bool eos = token == engine->config().eos_token_id && !request.request.ignore_eos;
    const bool length = request.generated >= request.request.max_tokens;
    if (eos || length) {  // the last token rides on the finished event
        finish(request, std::nullopt, "", eos ? "stop" : "length", {token});
        return false;
    }
    request.last_token = token;
    generation_event event;
    event.tokens = {token};
    request.on_event(std::move(event));
    return true;
}

void engine_backend::state::admit() {
    const int64_t total_pages = engine->cache().num_pages();
    while (static_cast<int64_t>(running.size()) < opts.max_running && !waiting.empty()) {
        const std::shared_ptr<engine_request> request = waiting.front();
        if (auto invalid = validate(request->request)) {
            waiting.pop_front();
            finish(*request, backend_error::invalid_request, "request " + request->request.request_id + ": " + *invalid);
            continue;
        }
        const int64_t pages = engine->cache().pages_for_tokens(
            static_cast<int64_t>(request->request.prompt.size()) + request->request.max_tokens);
        if (reserved_pages + pages > total_pages) break;  // waits for running requests to free pages
        waiting.pop_front();
        reserved_pages += pages;
        request->reserved_pages = pages;
        live.fetch_add(1);
        const std::vector<int32_t>& prompt = request->request.prompt;
        model::forward_output out;
        try {
            for (size_t begin = 0; begin < prompt.size(); begin += static_cast<size_t>(opts.prefill_chunk)) {
                const size_t end = std::min(prompt.size(), begin + static_cast<size_t>(opts.prefill_chunk));
                out = engine->step({&request->seq},
                                   {std::vector<int32_t>(prompt.begin() + static_cast<int64_t>(begin),
                                                         prompt.begin() + static_cast<int64_t>(end))});
            }
        } catch (const std::exception& e) {
            finish(*request, backend_error::internal,
                   "request " + request->request.request_id + ": prefill failed: " + e.what());
            continue;
        }
        const generation_request& r = request->request;
        const int32_t token = model::sample_token(out.logits.data(), engine->config().vocab_size,
                                                  {r.temperature, r.top_p, r.top_k, r.seed}, 0);
        if (emit(*request, token)) running.push_back(request);
    }
    publish_counts();
}

void engine_backend::state::decode() {
    if (running.empty()) return;
    std::vector<model::sequence*> seqs;
    std::vector<std::vector<int32_t>> tokens;
    for (const auto& request : running) {
        seqs.push_back(&request->seq);
        tokens.push_back({request->last_token});
    }
    model::forward_output out;
    try {
        out = engine->step(seqs, tokens);
    } catch (const std::exception& e) {
        for (const auto& request : running)
            finish(*request, backend_error::internal,
                   "request " + request->request.request_id + ": decode step failed: " + e.what());
        running.clear();
        publish_counts();
        return;
    }
    const int64_t vocab = engine->config().vocab_size;
    for (size_t row = 0; row < running.size(); ++row) {
        engine_request& request = *running[row];
        const generation_request& r = request.request;
        const int32_t token = model::sample_token(out.logits.data() + static_cast<int64_t>(row) * vocab, vocab,
                                                  {r.temperature, r.top_p, r.top_k, r.seed},
                                                  static_cast<uint64_t>(request.generated));
        emit(request, token);
    }
    std::erase_if(running, [](const auto& request) { return request->done; });
    publish_counts();
}

void engine_backend::state::run() {
    for (;;) {
        bool paused_now = false;
        {
            std::unique_lock lock(mutex);
            wake.wait_for(lock, kIdlePoll, [&] {
                return stopping || poked || !inbox.empty() || (!paused && (!waiting.empty() || !running.empty()));
            });
            if (stopping) break;
            poked = false;
            while (!inbox.empty()) {
                waiting.push_back(std::move(inbox.front()));
                inbox.pop_front();
            }
            // Counted in the same critical section: submit() reads inbox + num_waiting under this
            // lock, and a request between the two must not be missed by the max_queued bound.
            num_waiting.store(static_cast<int64_t>(waiting.size()));
            paused_now = paused;
        }
        reap();
        if (paused_now || (waiting.empty() && running.empty())) continue;
        if (opts.step_delay.count() > 0) {
            std::unique_lock lock(mutex);
            wake.wait_for(lock, opts.step_delay, [&] { return stopping; });
            if (stopping) break;
            lock.unlock();
            reap();
        }
        admit();
        decode();
    }
    // Stopping: everything not finished gets its finished event.
    {
        std::lock_guard lock(mutex);
        while (!inbox.empty()) {
            waiting.push_back(std::move(inbox.front()));
            inbox.pop_front();
        }
    }
    for (const auto& request : waiting)
        finish(*request, backend_error::cancelled, "request " + request->request.request_id + ": backend stopped");
    for (const auto& request : running)
        finish(*request, backend_error::cancelled, "request " + request->request.request_id + ": backend stopped");
    waiting.clear();
    running.clear();
    publish_counts();
}

// -- engine_backend ---------------------------------------------------------------------------

engine_backend::engine_backend(std::shared_ptr<model::engine> engine, engine_backend_options opts)
    : state_(std::make_shared<state>()) {
    if (!engine) throw std::invalid_argument("engine_backend: engine is null");
    if (opts.max_running < 1) throw std::invalid_argument("engine_backend: max_running must be >= 1");
    if (opts.max_queued < 0) throw std::invalid_argument("engine_backend: max_queued must be >= 0");
    if (opts.prefill_chunk < 1) throw std::invalid_argument("engine_backend: prefill_chunk must be >= 1");
    if (opts.step_delay.count() < 0) throw std::invalid_argument("engine_backend: step_delay must be >= 0");
    state_->engine = std::move(engine);
    state_->opts = opts;
    state_->free_pages.store(state_->engine->cache().num_free_pages());
    thread_ = std::thread([st = state_] { st->run(); });
}

engine_backend::~engine_backend() {
    {
        std::lock_guard lock(state_->mutex);
        state_->stopping = true;
    }
    state_->wake.notify_all();
    // The last reference may be dropped inside an event this thread delivers: never join oneself
    // (the thread holds the state, sees `stopping` and ends on its own).
    if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
    else thread_.join();
}

std::shared_ptr<generation_handle> engine_backend::submit(generation_request request,
                                                          std::function<void(generation_event)> on_event) {
    auto handle = std::make_shared<engine_request>();
    handle->owner = state_;
    handle->request = std::move(request);
    handle->on_event = std::move(on_event);
    state_->submitted.fetch_add(1);
    bool accepted = false;
    int64_t queued = 0;
    {
        std::lock_guard lock(state_->mutex);
        queued = static_cast<int64_t>(state_->inbox.size()) + state_->num_waiting.load();
        if (!state_->stopping && queued < state_->opts.max_queued) {
            state_->inbox.push_back(handle);
            accepted = true;
        }
    }
    if (accepted) {
        state_->wake.notify_all();
        return handle;
    }
    state_->finished.fetch_add(1);
    auto deliver = std::move(handle->on_event);
    handle->on_event = nullptr;
    handle->done = true;
    deliver(make_error_event(backend_error::overloaded,
                             "request " + handle->request.request_id + ": engine backend has " +
                                 std::to_string(queued) + " requests waiting (max_queued " +
                                 std::to_string(state_->opts.max_queued) + ")"));
    return handle;
}

backend_readiness engine_backend::readiness() const {
    std::lock_guard lock(state_->mutex);
    return state_->readiness;
}

backend_load engine_backend::load() const {
    std::lock_guard lock(state_->mutex);
    return {state_->num_running.load(),
            state_->num_waiting.load() + static_cast<int64_t>(state_->inbox.size())};
}

engine_backend::stats engine_backend::statistics() const {
    stats out;
    out.submitted = state_->submitted.load();
    out.finished = state_->finished.load();
    out.cancelled = state_->cancelled.load();
    out.live_sequences = state_->live.load();
    out.free_pages = state_->free_pages.load();
    out.total_pages = state_->engine->cache().num_pages();
    return out;
}

void engine_backend::set_readiness(bool ready, std::string reason) {
    std::lock_guard lock(state_->mutex);
    state_->readiness = {ready, ready ? "" : std::move(reason)};
}

void engine_backend::pause() {
    std::lock_guard lock(state_->mutex);
    state_->paused = true;
}

void engine_backend::resume() {
    {
        std::lock_guard lock(state_->mutex);
        state_->paused = false;
    }
    state_->wake.notify_all();
}

}  // namespace longcat::gateway
