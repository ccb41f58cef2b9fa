// http_server: the OpenAI-compatible HTTP/1.1 front of the gateway (ARCHITECTURE.md §1), on
// Boost.Beast (kept inside http_server.cpp).
// Owns: the listening socket, the io threads, every client connection (one strand each) and
// the requests in flight. Receives: HTTP requests; events from the generation_backend (posted
// onto the connection's strand). Sends: JSON responses and SSE streams.
//
// Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models (these three need an
// API key when any is configured: `Authorization: Bearer KEY`), GET /health (alive: 200),
// GET /ready (200 when the backend is ready and the server not draining, else 503 + reason).
// Every response carries X-Request-Id (the client's, when printable ASCII of ≤ 128 characters,
// else a 400; generated when absent); every error message and log line names it.
//
// Limits and deadlines: a request header must arrive within header_deadline (an idle
// keep-alive connection is closed then; a partial header gets 408), its body within
// body_deadline (else 408), bodies over max_body_bytes get 413, the whole request must end by
// request_deadline (else 504, or an error event in a stream). A write that does not complete
// within body_deadline is a client gone.
//
// Client gone: while a request waits for its result or streams, a read stays pending on the
// socket, so a client that disconnects is noticed in any state (queued, prefill, decode) and
// the backend handle is cancelled. A stop string that matches cancels the handle too and the
// response ends with finish_reason "stop".
//
// Streaming responses start (200, text/event-stream, chunked) with the first backend event, so
// a request refused at once (429, 503) still gets a plain JSON error with its status.
//
// NOTES: a client that half-closes its socket (shutdown(SHUT_WR)) after sending the request is
// treated as gone, like vLLM does; no common HTTP client does that. Pipelined requests are
// buffered (up to 64 KiB) and served after the current one; past 64 KiB behind a running
// request they are dropped (the socket is still read, so a client that leaves is still seen) and
// the connection closes after the current response.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "actors/gateway/backend.hpp"
#include "actors/gateway/gateway_metrics.hpp"
#include "actors/gateway/prompt_builder.hpp"
#include "model/tokenizer.hpp"

namespace longcat::gateway {

// The one exception of this component: the address cannot be bound, options out of range.
// Thrown by the constructor only.
class http_server_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct http_server_options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;  // 0 = ephemeral; read the bound one with port()
    int io_threads = 2;
    int64_t max_body_bytes = 1 << 20;
    std::chrono::milliseconds header_deadline{10'000};
    std::chrono::milliseconds body_deadline{30'000};
    std::chrono::milliseconds request_deadline{600'000};
    std::vector<std::string> api_keys;  // empty = no authentication
    int64_t retry_after_s = 1;          // Retry-After of a 429
    std::string served_model_name;      // the one `model` accepted and listed
    prompt_limits prompt;               // context length, vocabulary, max_tokens limit, format
    int64_t model_created = 0;          // unix seconds shown by /v1/models
};

// One log line (already naming the request id when there is one).
using log_function = std::function<void(std::string_view line)>;

class http_server {
public:
    // Binds host:port and starts io_threads threads. The tokenizer is shared read-only.
    // Throws http_server_error when the address cannot be bound or an option is out of range.
    http_server(http_server_options opts, std::shared_ptr<generation_backend> backend,
                std::shared_ptr<const model::tokenizer> tokenizer, gateway_metrics metrics = {},
                log_function log = {});
    ~http_server();  // stop()
    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;

    uint16_t port() const;    // the bound port
    std::string url() const;  // "http://host:port"

    // From now on new generation requests get 503 (code "draining"), /ready answers 503 and
    // responses close their connection; requests in flight continue. Idempotent.
    void start_draining();
    bool draining() const;
    // Waits until no generation request is in flight (its response written to the socket, or
    // its client gone, and its backend request finished) or the deadline passes; true when
    // drained.
    bool wait_drained(clock::time_point deadline);
    int64_t in_flight() const;
    // Ends every request in flight (after a drain that timed out): cancels its backend handle
    // and answers 503 "draining" (or an error event when it was streaming).
    void cancel_all();

    // Closes the listener and every connection, cancels what is in flight, joins the io
    // threads. Idempotent; events the backend delivers later are dropped.
    void stop();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// A fresh request id: 24 lowercase hex characters.
std::string generate_request_id();
// X-Request-Id acceptance: 1..128 characters, each printable ASCII other than space.
bool valid_request_id(std::string_view id);

}  // namespace longcat::gateway
