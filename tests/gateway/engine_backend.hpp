// engine_backend (tests only): a generation_backend over the single-process engine
// (model/engine.hpp), so that the gateway's HTTP layer is tested against real tokens without a
// cluster. longcat-gateway itself serves only through the cluster (cluster_backend).
// Owns: one model::engine (its KV cache) and the thread that drives it. Each loop turn takes
// new requests, drops cancelled ones and ones past their deadline (freeing their KV pages),
// prefills admitted requests (in chunks), then decodes one token for every running request in
// one batched step; sampling is model::sample_token keyed by (seed, token index), so a request
// gives the same tokens alone or in a batch.
// Sends: one event per generated token, the last one finished ("stop" at EOS unless
// ignore_eos, "length" at max_tokens); on_event runs on the engine thread, no lock held.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "actors/gateway/backend.hpp"
#include "model/engine.hpp"

namespace longcat::gateway {

struct engine_backend_options {
    int64_t max_running = 8;    // requests decoded together in one step
    int64_t max_queued = 256;   // requests waiting for a slot; beyond → overloaded
    int64_t prefill_chunk = 512;  // prompt tokens per prefill forward
    // Wait added before each step that has work (0 in production; tests use it to observe a
    // request while it is queued, in prefill or decoding).
    std::chrono::milliseconds step_delay{0};
};

struct engine_request;

class engine_backend final : public generation_backend {
public:
    // The engine is used only by this backend's thread from now on. Throws
    // std::invalid_argument for a null engine or options out of range.
    engine_backend(std::shared_ptr<model::engine> engine, engine_backend_options opts);
    // Stops the thread; requests not finished get a finished event (error cancelled).
    ~engine_backend() override;
    engine_backend(const engine_backend&) = delete;
    engine_backend& operator=(const engine_backend&) = delete;

    std::shared_ptr<generation_handle> submit(generation_request request,
                                              std::function<void(generation_event)> on_event) override;
    backend_readiness readiness() const override;
    backend_load load() const override;

    // -- observation and control (tests, the service's logs) ----------------------------------
    struct stats {
        int64_t submitted = 0;
        int64_t finished = 0;          // finished events delivered (any outcome)
        int64_t cancelled = 0;         // of which ended by cancel()
        int64_t live_sequences = 0;    // requests holding KV pages now
        int64_t free_pages = 0;        // the engine's KV pool
        int64_t total_pages = 0;
    };
    stats statistics() const;
    // Readiness as reported (starts ready). A not-ready backend still serves what it accepted.
    void set_readiness(bool ready, std::string reason);
    // pause(): the thread takes no step (no prefill, no decode) until resume(); cancels and
    // deadlines are still honoured.
    void pause();
    void resume();

private:
    friend struct engine_request;
    struct state;
    std::shared_ptr<state> state_;
    std::thread thread_;
};

}  // namespace longcat::gateway
