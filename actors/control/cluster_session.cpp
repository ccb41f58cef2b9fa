#include "actors/control/cluster_session.hpp"

#include <atomic>
#include <optional>
#include <map>
#include <mutex>

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/generate_request.hpp"
#include "actors/control/interfaces.hpp"

namespace longcat::control {

namespace {

// One generation as the session tracks it.
struct generation {
    std::function<void(session_event)> on_event;
    std::string client_request_id;  // "<caller's id>#<handle>": how chunks find it
    uint64_t request_id = 0;        // the coordinator's, from the first chunk
    bool cancel_pending = false;    // cancelled before the coordinator's id was known
    std::string cancel_reason;
    size_t streamed = 0;  // tokens delivered so far
};

// "<id>#<handle>" → handle (0: not ours).
uint64_t handle_of(const std::string& client_request_id) {
    const auto hash = client_request_id.rfind('#');
    if (hash == std::string::npos) return 0;
    uint64_t value = 0;
    for (size_t i = hash + 1; i < client_request_id.size(); ++i) {
        const char c = client_request_id[i];
        if (c < '0' || c > '9') return 0;
        value = value * 10 + static_cast<uint64_t>(c - '0');
    }
    return value;
}

}  // namespace

struct cluster_session::impl {
    std::string address;
    std::unique_ptr<caf::actor_system_config> config;
    std::unique_ptr<caf::actor_system> system;
    coordinator_actor coordinator;
    caf::actor client;
    std::atomic<bool> connected{true};
    std::atomic<uint64_t> next_handle{1};
    std::atomic<int64_t> running{0}, queued{0};
    mutable std::mutex mutex;
    std::map<uint64_t, generation> generations;

    // Removes a generation and returns its callback (called by the caller without the lock).
    std::function<void(session_event)> take(uint64_t handle, size_t* streamed = nullptr) {
        std::lock_guard lock(mutex);
        auto it = generations.find(handle);
        if (it == generations.end()) return {};
        auto callback = std::move(it->second.on_event);
        if (streamed) *streamed = it->second.streamed;
        generations.erase(it);
        return callback;
    }

    void fail_all(const std::string& error) {
        std::map<uint64_t, generation> lost;
        {
            std::lock_guard lock(mutex);
            lost.swap(generations);
        }
        for (auto& [handle, g] : lost) {
            session_event event;
            event.finished = true;
            event.finish_reason = "error";
            event.error = error;
            event.error_kind = proto::request_error::unreachable;
            if (g.on_event) g.on_event(std::move(event));
        }
    }
};

namespace {

void on_chunk(cluster_session::impl* session, proto::token_chunk& chunk);

// The client actor: sends generate requests, receives token chunks and replies, watches the
// coordinator.
caf::behavior client_behavior(caf::event_based_actor* self, cluster_session::impl* session) {
    self->monitor(session->coordinator);
    self->set_down_handler([self, session](caf::down_msg& down) {
        session->connected = false;
        session->fail_all("the coordinator at " + session->address + " is gone: " +
                          self->system().render(down.reason));
    });
    return {
        [self, session](proto::generate_request& request, int64_t timeout_ms) {
            const uint64_t handle = handle_of(request.client_request_id);
            self->request(session->coordinator, std::chrono::milliseconds(timeout_ms), std::move(request))
                .then(
                    [session, handle](proto::generate_reply& reply) {
                        size_t streamed = 0;
                        auto callback = session->take(handle, &streamed);
                        if (!callback) return;
                        session_event event;
                        event.finished = true;
                        event.finish_reason = reply.finish_reason;
                        event.error = reply.error;
                        event.error_kind = reply.error_kind;
                        event.prompt_tokens = reply.prompt_tokens;
                        event.preemptions = reply.preemptions;
                        // The reply holds every token: whatever the chunks did not deliver.
                        if (reply.tokens.size() > streamed)
                            event.tokens.assign(reply.tokens.begin() + static_cast<std::ptrdiff_t>(streamed),
                                                reply.tokens.end());
                        callback(std::move(event));
                    },
                    [self, session, handle](caf::error& error) {
                        auto callback = session->take(handle);
                        if (!callback) return;
                        session_event event;
                        event.finished = true;
                        event.finish_reason = "error";
                        event.error = "coordinator at " + session->address + ": " + self->system().render(error);
                        // The session's request timeout is the request's own deadline.
                        event.error_kind = error == caf::sec::request_timeout ? proto::request_error::deadline
                                                                              : proto::request_error::unreachable;
                        callback(std::move(event));
                    });
        },
        [session](proto::token_batch& batch) {
            for (proto::token_chunk& chunk : batch.chunks) on_chunk(session, chunk);
        },
        [session](proto::token_chunk& chunk) { on_chunk(session, chunk); },
    };
}

void on_chunk(cluster_session::impl* session, proto::token_chunk& chunk) {
    const uint64_t handle = handle_of(chunk.client_request_id);
    std::function<void(session_event)>* callback = nullptr;
    std::optional<proto::cancel_request> cancel;
    {
        std::lock_guard lock(session->mutex);
        auto it = session->generations.find(handle);
        if (it == session->generations.end()) return;
        generation& g = it->second;
        if (g.request_id == 0) {
            g.request_id = chunk.request_id;
            if (g.cancel_pending) cancel = proto::cancel_request{chunk.request_id, g.cancel_reason};
        }
        g.streamed += chunk.tokens.size();
        callback = &g.on_event;
    }
    if (cancel) caf::anon_send(session->coordinator, *cancel);
    if (chunk.tokens.empty()) return;
    session_event event;
    event.tokens = std::move(chunk.tokens);
    // Safe without the lock: only this actor erases generations (take() runs here too).
    (*callback)(std::move(event));
}

}  // namespace

cluster_session::cluster_session(std::unique_ptr<impl> state) : impl_(std::move(state)) {}

proto::expected<std::unique_ptr<cluster_session>, std::string> cluster_session::connect(
    const std::string& coordinator, std::chrono::milliseconds timeout) {
    using failure = proto::unexpected<std::string>;
    auto state = std::make_unique<impl>();
    state->address = coordinator;
    caf_runtime_options runtime;
    runtime.scheduler_threads = 2;
    state->config = make_caf_config(runtime);
    state->system = std::make_unique<caf::actor_system>(*state->config);
    try {
        state->coordinator = connect_coordinator(*state->system, coordinator, timeout);
    } catch (const std::exception& e) {
        return failure("cannot reach the coordinator at " + coordinator + ": " + e.what());
    }
    state->client = state->system->spawn(client_behavior, state.get());
    return std::unique_ptr<cluster_session>(new cluster_session(std::move(state)));
}

cluster_session::~cluster_session() {
    caf::anon_send_exit(impl_->client, caf::exit_reason::user_shutdown);
    impl_->fail_all("the session to " + impl_->address + " closed");
    impl_->client = nullptr;
    impl_->coordinator = nullptr;
    impl_->system.reset();  // waits for the actors
}

cluster_session::handle cluster_session::submit(const cluster_generate_options& opts,
                                                std::function<void(session_event)> on_event) {
    const handle id = impl_->next_handle++;
    proto::generate_request request = to_generate_request(opts);
    request.client_request_id = opts.client_request_id + "#" + std::to_string(id);
    request.stream = true;
    if (!impl_->connected) {
        session_event event;
        event.finished = true;
        event.finish_reason = "error";
        event.error = "the coordinator at " + impl_->address + " is gone";
        event.error_kind = proto::request_error::unreachable;
        on_event(std::move(event));
        return id;
    }
    {
        std::lock_guard lock(impl_->mutex);
        generation& g = impl_->generations[id];
        g.on_event = std::move(on_event);
        g.client_request_id = request.client_request_id;
    }
    // The reply may take the whole deadline, plus the coordinator's own margin.
    caf::anon_send(impl_->client, std::move(request), static_cast<int64_t>(opts.timeout.count() + 5000));
    return id;
}

void cluster_session::cancel(handle generation_handle, const std::string& reason) {
    std::optional<proto::cancel_request> cancel;
    {
        std::lock_guard lock(impl_->mutex);
        auto it = impl_->generations.find(generation_handle);
        if (it == impl_->generations.end()) return;
        if (it->second.request_id == 0) {
            it->second.cancel_pending = true;  // sent once the coordinator's id arrives
            it->second.cancel_reason = reason;
            return;
        }
        cancel = proto::cancel_request{it->second.request_id, reason};
    }
    caf::anon_send(impl_->coordinator, *cancel);
}

proto::expected<cluster_status_summary, std::string> cluster_session::status(std::chrono::milliseconds timeout) {
    using failure = proto::unexpected<std::string>;
    if (!impl_->connected) return failure("the coordinator at " + impl_->address + " is gone");
    proto::expected<cluster_status_summary, std::string> out = failure("no answer");
    caf::scoped_actor self{*impl_->system};
    self->request(impl_->coordinator, timeout, proto::status_query{})
        .receive(
            [&](proto::cluster_status& status) {
                cluster_status_summary summary;
                summary.serving = status.serving;
                summary.reason = status.reason;
                summary.placement_version = status.map.version;
                summary.members = status.members;
                impl_->running = static_cast<int64_t>(status.running_requests);
                impl_->queued = static_cast<int64_t>(status.queued_requests);
                out = std::move(summary);
            },
            [&](caf::error& error) {
                out = failure("coordinator at " + impl_->address + ": " + impl_->system->render(error));
            });
    return out;
}

bool cluster_session::connected() const { return impl_->connected; }

session_load cluster_session::load() const {
    session_load out;
    {
        std::lock_guard lock(impl_->mutex);
        out.in_flight = static_cast<int64_t>(impl_->generations.size());
    }
    out.running = impl_->running;
    out.queued = impl_->queued;
    return out;
}

const std::string& cluster_session::coordinator() const { return impl_->address; }

}  // namespace longcat::control
