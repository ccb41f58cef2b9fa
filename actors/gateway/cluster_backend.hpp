// cluster_backend: a generation_backend over one coordinator of a running cluster — the
// gateway's production backend (ARCHITECTURE.md §1, §5). The router holds one per coordinator.
// Owns: a control::cluster_session (one CAF connection; every generation streams token chunks
// as the coordinator's steps produce them). cancel() sends cancel_request, so the request's KV
// pages are freed at the next step boundary, in any state (queued, prefill, decode).
// Errors: the kind the coordinator (or the session) gives every failed request
// (proto::request_error), mapped by error_for() — refused while not serving or draining, or the
// coordinator unreachable → not_ready; a request that cannot fit the KV pools → invalid_request;
// a missed deadline → timeout; a cancel → cancelled; a failure while running (an expert group,
// a KV transfer) → internal — with the coordinator's message naming what failed.
// No CAF in this header (the session hides it).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "actors/gateway/backend.hpp"
#include "proto/request_error.hpp"

namespace longcat::control {
class cluster_session;
}

namespace longcat::gateway {

struct cluster_backend_options {
    std::string coordinator;                           // "HOST:PORT" of its CAF endpoint
    std::chrono::milliseconds connect_timeout{30'000};  // retried until then
    std::chrono::milliseconds status_timeout{1'000};   // readiness asks the coordinator
    std::chrono::milliseconds status_cache{250};       // readiness answers are reused this long
};

class cluster_backend final : public generation_backend {
public:
    // Connects (retrying until connect_timeout); throws std::runtime_error naming the
    // coordinator when it cannot be reached.
    explicit cluster_backend(cluster_backend_options opts);
    ~cluster_backend() override;

    std::shared_ptr<generation_handle> submit(generation_request request,
                                              std::function<void(generation_event)> on_event) override;
    backend_readiness readiness() const override;
    backend_load load() const override;
    const std::string& coordinator() const { return opts_.coordinator; }

private:
    struct readiness_cache;
    cluster_backend_options opts_;
    std::shared_ptr<control::cluster_session> session_;
    std::unique_ptr<readiness_cache> cache_;
};

// The kind of a failed request → the gateway's error kind (see the header comment).
backend_error error_for(proto::request_error kind);

}  // namespace longcat::gateway
