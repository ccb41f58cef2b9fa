// backend: what the gateway asks of whatever generates tokens (ARCHITECTURE.md §1, §6 step 1).
// Owns nothing; declares the generation_backend interface the HTTP server and the router talk
// to. Implementations: the router (a decorator over N backends), engine_backend (the
// single-process engine), and the cluster's coordinator client. No CAF, Beast or UCX here.
//
// Contract of one request:
// - submit() returns at once with a handle; every outcome (tokens, an error, a cancel) arrives
//   as events through on_event, in order, the last one with finished = true. Exactly one
//   finished event is delivered per submitted request, errors included (an error event is
//   always finished).
// - on_event may run on any thread (even inside submit()), never concurrently for one request.
//   It must not block: the gateway posts it onto the connection's strand.
// - The whole request must end by request.deadline; a backend that sees it pass delivers
//   error = timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace longcat::gateway {

using clock = std::chrono::steady_clock;

struct generation_request {
    std::string request_id;       // the gateway's request id (X-Request-Id)
    std::vector<int32_t> prompt;  // token ids
    int64_t max_tokens = 16;
    float temperature = 1.0f;  // 0 = greedy
    float top_p = 1.0f;        // (0, 1]
    int64_t top_k = 0;         // 0 = off
    uint64_t seed = 0;
    bool ignore_eos = false;
    clock::time_point deadline;  // the whole request must end by then
};

enum class backend_error : uint8_t { overloaded, not_ready, invalid_request, timeout, cancelled, internal };

// "overloaded", "not_ready", ... (for logs and error messages).
constexpr std::string_view to_string(backend_error error) {
    switch (error) {
        case backend_error::overloaded: return "overloaded";
        case backend_error::not_ready: return "not_ready";
        case backend_error::invalid_request: return "invalid_request";
        case backend_error::timeout: return "timeout";
        case backend_error::cancelled: return "cancelled";
        case backend_error::internal: return "internal";
    }
    return "unknown";
}

// Delivered in order; the last one has finished = true.
struct generation_event {
    std::vector<int32_t> tokens;  // newly generated tokens
    bool finished = false;
    std::string finish_reason;  // "stop" (EOS) | "length" (max_tokens) | "" with an error
    std::optional<backend_error> error;
    std::string error_message;  // names what failed
    int64_t prompt_tokens = 0;  // set on the final event
};

class generation_handle {
public:
    virtual ~generation_handle() = default;
    // Ends the request early (client left, or a stop string matched): the backend frees its
    // resources (KV pages) and delivers at most one more event, finished. Idempotent,
    // thread-safe.
    virtual void cancel() = 0;
};

struct backend_readiness {
    bool ready = false;
    std::string reason;  // why not ready ("" when ready)
};

struct backend_load {
    int64_t running = 0;  // requests generating
    int64_t queued = 0;   // requests accepted, waiting to start
};

class generation_backend {
public:
    virtual ~generation_backend() = default;
    // on_event may be called from any thread, never concurrently for one request.
    virtual std::shared_ptr<generation_handle> submit(generation_request request,
                                                      std::function<void(generation_event)> on_event) = 0;
    virtual backend_readiness readiness() const = 0;
    virtual backend_load load() const = 0;
};

// -- helpers for implementations ----------------------------------------------------------

// The finished event of a failed request.
inline generation_event make_error_event(backend_error error, std::string message) {
    generation_event event;
    event.finished = true;
    event.error = error;
    event.error_message = std::move(message);
    return event;
}

// A handle whose cancel() does nothing (a request that failed inside submit()).
class finished_handle final : public generation_handle {
public:
    void cancel() override {}
};

}  // namespace longcat::gateway
