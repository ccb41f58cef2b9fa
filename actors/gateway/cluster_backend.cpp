#include "actors/gateway/cluster_backend.hpp"

#include <condition_variable>
#include <mutex>
#include <stdexcept>

#include "actors/control/cluster_session.hpp"

namespace longcat::gateway {

namespace {

class session_handle final : public generation_handle {
public:
    session_handle(std::weak_ptr<control::cluster_session> session, control::cluster_session::handle id)
        : session_(std::move(session)), id_(id) {}
    void cancel() override {
        if (auto session = session_.lock()) session->cancel(id_, "cancelled by the gateway");
    }

private:
    std::weak_ptr<control::cluster_session> session_;
    control::cluster_session::handle id_;
};

}  // namespace

struct cluster_backend::readiness_cache {
    std::mutex mutex;
    clock::time_point asked{};
    backend_readiness last{false, "not asked yet"};
    bool refreshing = false;  // one caller asks the coordinator; the others take `last` ...
    bool answered = false;    // ... once there is one (before the first answer they wait for it)
    std::condition_variable changed;
};

backend_error error_for(proto::request_error kind) {
    switch (kind) {
        case proto::request_error::not_serving:
        case proto::request_error::unreachable: return backend_error::not_ready;
        case proto::request_error::invalid_request: return backend_error::invalid_request;
        case proto::request_error::deadline: return backend_error::timeout;
        case proto::request_error::none:
        case proto::request_error::failed: return backend_error::internal;
    }
    return backend_error::internal;
}

cluster_backend::cluster_backend(cluster_backend_options opts)
    : opts_(std::move(opts)), cache_(std::make_unique<readiness_cache>()) {
    auto session = control::cluster_session::connect(opts_.coordinator, opts_.connect_timeout);
    if (!session) throw std::runtime_error(session.error());
    session_ = std::shared_ptr<control::cluster_session>(std::move(*session));
}

cluster_backend::~cluster_backend() = default;

std::shared_ptr<generation_handle> cluster_backend::submit(generation_request request,
                                                           std::function<void(generation_event)> on_event) {
    control::cluster_generate_options opts;
    opts.prompt = std::move(request.prompt);
    opts.max_tokens = request.max_tokens;
    opts.temperature = request.temperature;
    opts.top_p = request.top_p;
    opts.top_k = request.top_k;
    opts.seed = request.seed;
    opts.ignore_eos = request.ignore_eos;
    opts.client_request_id = request.request_id;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(request.deadline - clock::now());
    if (left.count() <= 0) {
        on_event(make_error_event(backend_error::timeout,
                                  "request " + request.request_id + " reached its deadline before it started"));
        return std::make_shared<finished_handle>();
    }
    opts.timeout = left;
    const auto id = session_->submit(opts, [on_event = std::move(on_event)](control::session_event event) {
        generation_event out;
        out.tokens = std::move(event.tokens);
        out.finished = event.finished;
        if (event.finished) {
            out.prompt_tokens = event.prompt_tokens;
            if (event.finish_reason == "length" || event.finish_reason == "stop") {
                out.finish_reason = event.finish_reason;
            } else if (event.finish_reason == "cancelled") {
                out.error = backend_error::cancelled;
                out.error_message = "cancelled";
            } else {
                out.error = error_for(event.error_kind);
                out.error_message = event.error;
            }
        }
        on_event(std::move(out));
    });
    return std::make_shared<session_handle>(session_, id);
}

// The status call may take up to status_timeout (a coordinator that is connected but stuck): it
// runs outside the lock, by one caller at a time, and every other caller (the router on each
// submit and poll, /ready) takes the last answer instead of queueing behind it.
backend_readiness cluster_backend::readiness() const {
    {
        std::unique_lock lock(cache_->mutex);
        cache_->changed.wait(lock, [&] { return cache_->answered || !cache_->refreshing; });
        const auto now = clock::now();
        if (now - cache_->asked < opts_.status_cache || cache_->refreshing) return cache_->last;
        cache_->asked = now;
        cache_->refreshing = true;
    }
    backend_readiness fresh;
    try {
        if (!session_->connected()) {
            fresh = {false, "coordinator " + opts_.coordinator + " is gone"};
        } else {
            auto status = session_->status(opts_.status_timeout);
            if (!status)
                fresh = {false, status.error()};
            else if (!status->serving)
                fresh = {false, "coordinator " + opts_.coordinator + ": " + status->reason};
            else
                fresh = {true, ""};
        }
    } catch (const std::exception& e) {  // never leave `refreshing` set: the waiters below
        fresh = {false, "coordinator " + opts_.coordinator + ": " + e.what()};
    }
    {
        std::lock_guard lock(cache_->mutex);
        cache_->refreshing = false;
        cache_->answered = true;
        cache_->last = fresh;
    }
    cache_->changed.notify_all();
    return fresh;
}

backend_load cluster_backend::load() const {
    const control::session_load load = session_->load();
    return {load.in_flight, 0};
}

}  // namespace longcat::gateway
