// cluster_session: a long-lived client of a running cluster's coordinator (the gateway's
// backend, benchmarks): one CAF actor system and one connection for any number of concurrent
// generations. Every generation streams: the coordinator sends the tokens of each step as they
// are sampled (proto::token_chunk), then its reply ends the request. cancel() ends one early
// (client gone, stop string matched) and its KV pages are freed at the next step.
// Callers include no CAF header; the actor system lives inside the session.
// Thread-safety: every method may be called from any thread. Events of one generation are
// delivered in order, never concurrently, from the session's client actor.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/control/cluster_client.hpp"
#include "proto/expected.hpp"
#include "proto/request_error.hpp"

namespace longcat::control {

struct session_event {
    std::vector<int32_t> tokens;  // new tokens since the last event
    bool finished = false;        // the last event of the generation
    // On the last event: "length" | "stop" (EOS) | "cancelled" | "error".
    std::string finish_reason;
    std::string error;            // set when finish_reason is "error": what failed, by name
    proto::request_error error_kind = proto::request_error::none;  // set with `error`
    int64_t prompt_tokens = 0;    // on the last event
    int32_t preemptions = 0;      // on the last event: times it was preempted and recomputed
};

struct session_load {
    int64_t in_flight = 0;  // generations submitted through this session, not yet finished
    int64_t running = 0;    // the coordinator's last status: running and queued requests
    int64_t queued = 0;
};

class cluster_session {
  public:
    // Connects to the coordinator at "HOST:PORT", retrying until `timeout`.
    static proto::expected<std::unique_ptr<cluster_session>, std::string> connect(
        const std::string& coordinator, std::chrono::milliseconds timeout);
    ~cluster_session();
    cluster_session(const cluster_session&) = delete;
    cluster_session& operator=(const cluster_session&) = delete;

    using handle = uint64_t;
    // Starts a generation (opts.timeout is its deadline). `on_event` gets the tokens as the
    // steps produce them and exactly one finished event (a refusal, a failure or a lost
    // coordinator also end with one, naming what happened).
    handle submit(const cluster_generate_options& opts, std::function<void(session_event)> on_event);
    // Ends a generation early; its finished event follows (finish_reason "cancelled", or what it
    // ended with if that came first). Idempotent; unknown handles are ignored.
    void cancel(handle generation, const std::string& reason);

    // The coordinator's status (serving, why not), asked with a deadline.
    proto::expected<cluster_status_summary, std::string> status(std::chrono::milliseconds timeout);
    // False once the coordinator is gone (its actor down or its connection lost).
    bool connected() const;
    session_load load() const;
    const std::string& coordinator() const;

    struct impl;  // opaque: the actor system, the client actor, the generations

  private:
    explicit cluster_session(std::unique_ptr<impl> state);
    std::unique_ptr<impl> impl_;
};

}  // namespace longcat::control
