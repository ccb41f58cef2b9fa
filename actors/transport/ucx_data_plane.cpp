#include "actors/transport/ucx_data_plane.hpp"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <new>
#include <regex>
#include <set>
#include <thread>
#include <unordered_map>

#include "actors/transport/frame_inbox.hpp"

namespace longcat::transport {

namespace {

constexpr unsigned kFrameAmId = 7;  // every frame travels as this AM id
// Eager payloads from this size up stay in UCX's buffer where it allows (handle_am).
constexpr size_t kKeepInPlaceMinBytes = 4096;
// How long the progress thread polls while ucp_worker_arm refuses to arm (run()).
constexpr std::chrono::milliseconds kBusyArmPoll{2};
constexpr std::string_view kScheme = "ucx://";

// An API call waiting for the progress thread.
struct op_state {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    std::optional<transport_failure> failure;
    peer_id peer;
    std::vector<std::string> strings;  // transports()

    void finish(std::optional<transport_failure> result, peer_id id = {}) {
        {
            std::lock_guard lock(mutex);
            if (done) return;
            done = true;
            failure = std::move(result);
            peer = id;
        }
        cv.notify_all();
    }
    bool wait_until(deadline until) {
        std::unique_lock lock(mutex);
        return cv.wait_until(lock, until, [&] { return done; });
    }
};

std::optional<sockaddr_in> parse_ipv4(std::string_view host, uint16_t port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    const std::string text = host == "localhost" ? "127.0.0.1" : std::string(host);
    if (inet_pton(AF_INET, text.c_str(), &addr.sin_addr) != 1) return std::nullopt;
    return addr;
}

// "ucx://127.0.0.1:4100" → sockaddr.
std::optional<sockaddr_in> parse_address(std::string_view address) {
    if (!address.starts_with(kScheme)) return std::nullopt;
    address.remove_prefix(kScheme.size());
    const size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::string_view port_text = address.substr(colon + 1);
    if (port_text.empty() || port_text.size() > 5) return std::nullopt;
    uint32_t port = 0;
    for (char c : port_text) {
        if (c < '0' || c > '9') return std::nullopt;
        port = port * 10 + static_cast<uint32_t>(c - '0');
    }
    if (port == 0 || port > 65535) return std::nullopt;
    return parse_ipv4(address.substr(0, colon), static_cast<uint16_t>(port));
}

std::string ucs_text(ucs_status_t status) { return ucs_status_string(status); }

}  // namespace

std::string_view to_string(ucx_error_mode mode) {
    switch (mode) {
        case ucx_error_mode::peer: return "peer";
        case ucx_error_mode::none: return "none";
    }
    return "unknown";
}

std::string_view to_string(ucx_progress_mode mode) {
    switch (mode) {
        case ucx_progress_mode::wakeup: return "wakeup";
        case ucx_progress_mode::busy_poll: return "busy_poll";
    }
    return "unknown";
}

std::optional<std::string> ucx_data_plane_config::validate() const {
    if (name.empty()) return "name is empty";
    if (name.size() > proto::kMaxHandshakeStringBytes) return "name is too long";
    if (!parse_ipv4(listen_host, listen_port)) {
        return "listen_host '" + listen_host + "' is not an IPv4 address";
    }
    if (limits.max_payload_bytes == 0) return "limits.max_payload_bytes is 0";
    if (handshake_timeout.count() <= 0) return "handshake_timeout must be > 0";
    if (teardown_grace.count() <= 0) return "teardown_grace must be > 0";
    if (poll_while_sending.count() < 0) return "poll_while_sending must be >= 0";
    return std::nullopt;
}

// -- impl --------------------------------------------------------------------------------------

struct ucx_data_plane::impl : std::enable_shared_from_this<ucx_data_plane::impl> {
    enum class peer_state : uint8_t { connecting, awaiting_hello, ready, refused, failed };

    struct peer_record {
        peer_id id;
        ucp_ep_h ep = nullptr;
        peer_state state = peer_state::connecting;
        peer_info info;
        std::shared_ptr<op_state> connect_op;  // client side, until the handshake answer
        clock::time_point accepted_at;  // server side: for handshake_timeout; refused: since when
        std::string dialed;                    // client side: the address we dialed
        // Every lane after wire-up is shared memory: read at the first data frame sent.
        std::optional<bool> shared_memory_lanes;
    };

    // One outstanding ucp_am_send_nbx; owns the AM header bytes until UCX is done.
    struct send_context {
        impl* owner = nullptr;
        uint64_t id = 0;
        peer_id peer;
        proto::frame_header_bytes header{};
        size_t header_bytes = proto::kFrameHeaderBytes;
        uint64_t payload_bytes = 0;
        bool rendezvous = false;               // sent with UCP_AM_SEND_FLAG_RNDV
        std::vector<std::byte> owned_payload;  // handshake payloads live here
        std::shared_ptr<op_state> op;          // null for internal sends (handshake)
        std::function<void(bool ok)> after;    // internal follow-up, e.g. close after refusal
    };

    struct recv_context {
        impl* owner = nullptr;
        uint64_t id = 0;
        peer_id peer;
        frame_inbox::slot_id slot = 0;
        byte_buffer buffer;
    };

    struct closing_endpoint {
        void* request = nullptr;
        ucp_ep_h ep = nullptr;
        peer_id peer;
        clock::time_point started;
    };

    ucx_data_plane_config config;
    proto::wire_versions versions;
    std::string address;
    frame_inbox inbox;

    // UCX objects: touched only by the progress thread once it runs.
    ucp_context_h context = nullptr;
    ucp_worker_h worker = nullptr;
    ucp_listener_h listener = nullptr;
    int worker_fd = -1;
    int event_fd = -1;
    int epoll_fd = -1;
    std::thread progress_thread;

    // Commands from API threads.
    std::mutex commands_mutex;
    std::deque<std::function<void()>> commands;
    std::atomic<bool> has_commands{false};
    bool accepting_commands = true;  // under commands_mutex

    // Progress-thread state.
    std::map<peer_id, peer_record> peers;
    std::unordered_map<ucp_ep_h, peer_id> by_ep;
    std::unordered_map<uint64_t, std::unique_ptr<send_context>> sends;
    std::unordered_map<uint64_t, std::unique_ptr<recv_context>> recvs;
    std::vector<closing_endpoint> closing;
    std::vector<std::function<void()>> deferred;  // filled by UCX callbacks
    uint64_t next_peer = 1;
    uint64_t next_context = 1;
    bool stopping = false;
    bool destroying = false;  // ucp_worker_destroy runs: callbacks only release their waiters
    clock::time_point stop_deadline;

    // Mirrors for API threads.
    mutable std::mutex info_mutex;
    std::map<peer_id, peer_info> infos;
    data_plane_stats counters;

    std::once_flag close_once;

    // Eager payloads handed out in UCX's own buffer (byte_buffer::adopt, no copy). Each holds a
    // reference to this impl; UCX gets the buffer back (ucp_am_data_release) from the progress
    // thread while it runs, after that from the thread that lets go of it. The worker (and so
    // the buffers' memory) is destroyed only once every held buffer is back.
    std::mutex held_mutex;
    std::vector<void*> held_released;    // let go of, not yet given back to UCX
    std::atomic<bool> any_released{false};  // held_released is not empty (read without the lock)
    size_t held_count = 0;               // adopted and not yet given back
    bool progress_owns_worker = true;    // false once the progress thread has stopped
    bool destroy_when_released = false;  // close() left the teardown to the last held buffer

    // -- setup ---------------------------------------------------------------------------------

    std::optional<transport_failure> start() {
        auto fail = [](const std::string& what, ucs_status_t status) {
            return make_failure(transport_error::setup_failed, what + ": " + ucs_text(status))
                .error();
        };
        ucp_config_t* ucx_config = nullptr;
        ucs_status_t status = ucp_config_read(nullptr, nullptr, &ucx_config);
        if (status != UCS_OK) return fail("ucp_config_read", status);
        for (const auto& [key, value] : config.ucx_options) {
            status = ucp_config_modify(ucx_config, key.c_str(), value.c_str());
            if (status != UCS_OK) {
                ucp_config_release(ucx_config);
                return fail("UCX option " + key + "=" + value, status);
            }
        }
        ucp_params_t params{};
        params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME;
        params.features = UCP_FEATURE_AM;
        if (config.progress_mode == ucx_progress_mode::wakeup) {
            params.features |= UCP_FEATURE_WAKEUP;
        }
        params.name = config.name.c_str();
        status = ucp_init(&params, ucx_config, &context);
        ucp_config_release(ucx_config);
        if (status != UCS_OK) return fail("ucp_init", status);

        ucp_worker_params_t worker_params{};
        worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
        worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread
        status = ucp_worker_create(context, &worker_params, &worker);
        if (status != UCS_OK) return fail("ucp_worker_create", status);

        ucp_am_handler_param_t handler{};
        handler.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                             UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
        handler.id = kFrameAmId;
        handler.cb = &impl::on_am;
        handler.arg = this;
        handler.flags = UCP_AM_FLAG_WHOLE_MSG;
        status = ucp_worker_set_am_recv_handler(worker, &handler);
        if (status != UCS_OK) return fail("ucp_worker_set_am_recv_handler", status);

        const sockaddr_in listen_addr = *parse_ipv4(config.listen_host, config.listen_port);
        ucp_listener_params_t listener_params{};
        listener_params.field_mask =
            UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
        listener_params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&listen_addr);
        listener_params.sockaddr.addrlen = sizeof(listen_addr);
        listener_params.conn_handler.cb = &impl::on_conn_request;
        listener_params.conn_handler.arg = this;
        status = ucp_listener_create(worker, &listener_params, &listener);
        if (status != UCS_OK) {
            return fail(
                "listen on " + config.listen_host + ":" + std::to_string(config.listen_port),
                status);
        }
        ucp_listener_attr_t listener_attr{};
        listener_attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
        status = ucp_listener_query(listener, &listener_attr);
        if (status != UCS_OK) return fail("ucp_listener_query", status);
        const auto* bound = reinterpret_cast<const sockaddr_in*>(&listener_attr.sockaddr);
        address = std::string(kScheme) + config.listen_host + ":" +
                  std::to_string(ntohs(bound->sin_port));

        event_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (event_fd < 0) return fail("eventfd", UCS_ERR_IO_ERROR);
        if (config.progress_mode == ucx_progress_mode::wakeup) {
            status = ucp_worker_get_efd(worker, &worker_fd);
            if (status != UCS_OK) return fail("ucp_worker_get_efd", status);
            epoll_fd = ::epoll_create1(EPOLL_CLOEXEC);
            if (epoll_fd < 0) return fail("epoll_create1", UCS_ERR_IO_ERROR);
            for (int fd : {worker_fd, event_fd}) {
                epoll_event event{};
                event.events = EPOLLIN;
                event.data.fd = fd;
                if (::epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) {
                    return fail("epoll_ctl", UCS_ERR_IO_ERROR);
                }
            }
        }
        progress_thread = std::thread([this] { run(); });
        return std::nullopt;
    }

    // After the progress thread stopped (or never started).
    void destroy() {
        // Requests UCX never completed are released with the worker; their contexts after it.
        destroying = true;
        if (listener != nullptr) ucp_listener_destroy(listener);
        listener = nullptr;
        // Closes still pending at the stop deadline (a stalled peer): released, so that the
        // worker frees them (UCX 1.13 asserts that every request it purges was released).
        for (closing_endpoint& entry : closing) ucp_request_free(entry.request);
        closing.clear();
        if (worker != nullptr) ucp_worker_destroy(worker);
        worker = nullptr;
        if (context != nullptr) ucp_cleanup(context);
        context = nullptr;
        for (auto& [id, send] : sends) {
            if (send->op) {
                send->op->finish(
                    make_failure(transport_error::closed, config.name + " closed").error());
            }
        }
        sends.clear();
        recvs.clear();
        for (auto& [id, record] : peers) {
            if (record.connect_op) {
                record.connect_op->finish(
                    make_failure(transport_error::closed, config.name + " closed").error());
            }
        }
        if (epoll_fd >= 0) ::close(epoll_fd);
        if (event_fd >= 0) ::close(event_fd);
        epoll_fd = event_fd = -1;
    }

    // -- commands ------------------------------------------------------------------------------

    // Runs `command` on the progress thread; false once closed.
    bool post(std::function<void()> command) {
        {
            std::lock_guard lock(commands_mutex);
            if (!accepting_commands) return false;
            commands.push_back(std::move(command));
            has_commands.store(true, std::memory_order_release);
        }
        if (config.progress_mode == ucx_progress_mode::wakeup) {
            const uint64_t one = 1;
            [[maybe_unused]] ssize_t written = ::write(event_fd, &one, sizeof(one));
        }
        return true;
    }

    // Both return whether they ran anything.
    bool run_commands() {
        if (!has_commands.load(std::memory_order_acquire)) return false;
        std::deque<std::function<void()>> batch;
        {
            std::lock_guard lock(commands_mutex);
            batch.swap(commands);
            has_commands.store(false, std::memory_order_relaxed);
        }
        for (auto& command : batch) command();
        return !batch.empty();
    }

    bool run_deferred() {
        bool ran = false;
        while (!deferred.empty()) {
            std::vector<std::function<void()>> batch;
            batch.swap(deferred);
            for (auto& action : batch) action();
            ran = true;
        }
        return ran;
    }

    // -- the progress thread -------------------------------------------------------------------

    void run() {
        epoll_event events[4];
        clock::time_point last_progress = clock::now();
        for (;;) {
            bool worked = run_commands();
            while (ucp_worker_progress(worker) != 0) worked = true;
            worked = run_deferred() || worked;
            give_back_released();
            reap_closing();
            check_handshake_timeouts();
            if (stopping && (closing.empty() || clock::now() >= stop_deadline)) break;
            if (config.progress_mode == ucx_progress_mode::busy_poll) continue;
            // Sleep only after a round that did nothing: actions (closing an endpoint) may
            // leave completions that only the next ucp_worker_progress delivers.
            if (worked || has_commands.load(std::memory_order_acquire)) {
                last_progress = clock::now();
                continue;
            }
            // A send in flight: poll on for a while (config.poll_while_sending), yielding the
            // core to any other thread that wants it (a compute thread pinned beside us).
            if (!sends.empty() && clock::now() - last_progress < config.poll_while_sending) {
                ::sched_yield();
                continue;
            }
            // Timers (handshake timeouts, teardown) need a tick; frames and commands wake us.
            int timeout_ms = stopping || !closing.empty() ? 5 : 200;
            if (ucp_worker_arm(worker) == UCS_ERR_BUSY) {
                // UCX has work it cannot wake us for: sends queued behind a shared-memory FIFO
                // that is full, whose reader we only see draining it by polling. Poll while that
                // is recent; after kBusyArmPoll without progress the reader has stopped (a
                // stalled peer), and rounds 1 ms apart cost no core while the deadline runs.
                if (clock::now() - last_progress < kBusyArmPoll) {
                    ::sched_yield();
                    continue;
                }
                timeout_ms = 1;
            }
            const int ready = ::epoll_wait(epoll_fd, events, 4, timeout_ms);
            for (int event_idx = 0; event_idx < ready; ++event_idx) {
                if (events[event_idx].data.fd == event_fd) {
                    uint64_t count = 0;
                    [[maybe_unused]] ssize_t got = ::read(event_fd, &count, sizeof(count));
                }
            }
        }
    }

    // -- peers ---------------------------------------------------------------------------------

    peer_record* find_peer(peer_id id) {
        auto it = peers.find(id);
        return it == peers.end() ? nullptr : &it->second;
    }

    peer_record* find_by_ep(ucp_ep_h ep) {
        auto it = by_ep.find(ep);
        return it == by_ep.end() ? nullptr : find_peer(it->second);
    }

    std::string describe(const peer_record& record) const {
        if (!record.info.name.empty()) return describe_peer(record.info);
        if (!record.dialed.empty()) return record.dialed;
        return to_string(record.id) + " (handshake pending)";
    }

    void publish(const peer_record& record) {
        std::lock_guard lock(info_mutex);
        infos[record.id] = record.info;
    }

    template <class F>
    void count(F&& update) {
        std::lock_guard lock(info_mutex);
        update(counters);
    }

    std::string local_label() const { return config.name + " (" + address + ")"; }

    ucp_ep_params_t endpoint_params() {
        ucp_ep_params_t params{};
        params.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
        params.err_mode = config.error_mode == ucx_error_mode::peer ? UCP_ERR_HANDLING_MODE_PEER
                                                                    : UCP_ERR_HANDLING_MODE_NONE;
        params.err_handler.cb = &impl::on_ep_error;
        params.err_handler.arg = this;
        return params;
    }

    // Marks `record` failed: waiting connect fails, receives naming it fail (if it was ever
    // handed out), its endpoint is torn down (FORCE in peer mode cancels its requests).
    void fail_peer(peer_record& record, transport_failure failure, bool graceful = false) {
        if (record.state == peer_state::failed) return;
        const bool visible = record.state == peer_state::ready;
        record.state = peer_state::failed;
        record.info.failure = failure;
        publish(record);
        if (record.connect_op) {
            record.connect_op->finish(failure);
            record.connect_op.reset();
        }
        if (visible) {
            count([](data_plane_stats& s) { ++s.peer_failures; });
            inbox.fail_peer(record.id, failure);
        }
        // Never from inside a UCX callback: closing (FORCE) completes requests synchronously.
        deferred.push_back([this, id = record.id, graceful] {
            if (peer_record* r = find_peer(id)) close_endpoint(*r, graceful);
        });
    }

    void close_endpoint(peer_record& record, bool graceful) {
        if (record.ep == nullptr || destroying) return;
        ucp_ep_h ep = std::exchange(record.ep, nullptr);
        const bool force = config.error_mode == ucx_error_mode::peer && !graceful;
        ucp_request_param_t params{};
        params.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        params.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
        ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &params);
        if (request != nullptr && !UCS_PTR_IS_ERR(request)) {
            closing.push_back({request, ep, record.id, clock::now()});
        } else {
            by_ep.erase(ep);
        }
    }

    void reap_closing() {
        const auto now = clock::now();
        for (size_t idx = 0; idx < closing.size();) {
            closing_endpoint& entry = closing[idx];
            const ucs_status_t status = ucp_request_check_status(entry.request);
            const bool done = status != UCS_INPROGRESS;
            // Abandoned after the grace: released to UCX, which frees it when the close
            // completes or with the worker (an unreleased request aborts ucp_worker_destroy).
            const bool abandoned =
                !done && !stopping && now - entry.started > config.teardown_grace;
            if (done || abandoned) {
                ucp_request_free(entry.request);
                // A new endpoint may already live at the same address: only drop our mapping.
                auto mapped = by_ep.find(entry.ep);
                if (mapped != by_ep.end() && mapped->second == entry.peer) by_ep.erase(mapped);
                closing.erase(closing.begin() + static_cast<ptrdiff_t>(idx));
                continue;
            }
            ++idx;
        }
    }

    void check_handshake_timeouts() {
        const auto now = clock::now();
        for (auto& [id, record] : peers) {
            if (record.state == peer_state::refused &&
                now - record.accepted_at > config.teardown_grace) {
                fail_peer(record,
                          make_failure(transport_error::version_mismatch,
                                       describe(record) + ": refused, did not hang up")
                              .error(),
                          /*graceful=*/true);
                continue;
            }
            if (record.state == peer_state::awaiting_hello &&
                now - record.accepted_at > config.handshake_timeout) {
                fail_peer(record,
                          make_failure(transport_error::timeout,
                                       describe(record) + ": no hello within " +
                                           std::to_string(config.handshake_timeout.count()) + " ms")
                              .error());
            }
        }
    }

    // -- UCX callbacks (progress thread) -------------------------------------------------------

    static void on_conn_request(ucp_conn_request_h request, void* arg) {
        auto* self = static_cast<impl*>(arg);
        self->deferred.push_back([self, request] { self->accept(request); });
    }

    static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
        auto* self = static_cast<impl*>(arg);
        self->deferred.push_back([self, ep, status] {
            peer_record* record = self->find_by_ep(ep);
            if (record == nullptr || record->ep != ep) return;
            std::string what = record->state == peer_state::connecting
                                   ? "connect to " + self->describe(*record) + " failed: "
                                   : self->describe(*record) + ": ";
            self->fail_peer(
                *record,
                make_failure(transport_error::peer_failed, what + ucs_text(status)).error());
        });
    }

    static void on_send_done(void* request, ucs_status_t status, void* user_data) {
        auto* context = static_cast<send_context*>(user_data);
        ucp_request_free(request);
        context->owner->finish_send(context->id, status);
    }

    static void on_recv_done(void* request, ucs_status_t status, size_t length, void* user_data) {
        auto* context = static_cast<recv_context*>(user_data);
        ucp_request_free(request);
        context->owner->finish_recv(context->id, status, length);
    }

    static ucs_status_t on_am(void* arg, const void* header, size_t header_length, void* data,
                              size_t length, const ucp_am_recv_param_t* param) {
        return static_cast<impl*>(arg)->handle_am(header, header_length, data, length, param);
    }

    // -- connections ---------------------------------------------------------------------------

    void accept(ucp_conn_request_h request) {
        if (stopping) {
            if (listener != nullptr) ucp_listener_reject(listener, request);
            return;
        }
        ucp_ep_params_t params = endpoint_params();
        params.field_mask |= UCP_EP_PARAM_FIELD_CONN_REQUEST;
        params.conn_request = request;
        ucp_ep_h ep = nullptr;
        const ucs_status_t status = ucp_ep_create(worker, &params, &ep);
        if (status != UCS_OK) {
            inbox.push_error(peer_id{},
                             make_failure(transport_error::peer_failed,
                                          "accepting a connection failed: " + ucs_text(status))
                                 .error());
            return;
        }
        const peer_id id{next_peer++};
        peer_record& record = peers[id];
        record.id = id;
        record.ep = ep;
        record.state = peer_state::awaiting_hello;
        record.accepted_at = clock::now();
        record.info.id = id;
        record.info.connected_by_us = false;
        by_ep[ep] = id;
    }

    void start_connect(const std::string& address_text, sockaddr_in target,
                       std::shared_ptr<op_state> op) {
        if (stopping) {
            op->finish(make_failure(transport_error::closed, config.name + " is closing").error());
            return;
        }
        ucp_ep_params_t params = endpoint_params();
        params.field_mask |= UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
        params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&target);
        params.sockaddr.addrlen = sizeof(target);
        ucp_ep_h ep = nullptr;
        const ucs_status_t status = ucp_ep_create(worker, &params, &ep);
        if (status != UCS_OK) {
            op->finish(make_failure(transport_error::bad_address,
                                    "connect to " + address_text + ": " + ucs_text(status))
                           .error());
            return;
        }
        const peer_id id{next_peer++};
        peer_record& record = peers[id];
        record.id = id;
        record.ep = ep;
        record.state = peer_state::connecting;
        record.connect_op = std::move(op);
        record.dialed = address_text;
        record.info.id = id;
        record.info.connected_by_us = true;
        by_ep[ep] = id;
        send_hello(record, proto::handshake_status::request, "", nullptr);
    }

    void abort_connect(const std::shared_ptr<op_state>& op) {
        for (auto& [id, record] : peers) {
            if (record.connect_op == op) {
                fail_peer(record, make_failure(transport_error::timeout,
                                               "connect to " + record.dialed +
                                                   ": no handshake answer by the deadline")
                                      .error());
                return;
            }
        }
    }

    void send_hello(peer_record& record, proto::handshake_status status, const std::string& reason,
                    std::function<void(bool)> after) {
        proto::handshake_hello hello;
        hello.status = status;
        hello.versions = versions;
        hello.name = config.name;
        hello.address = address;
        hello.reason = reason;
        auto context = std::make_unique<send_context>();
        context->owned_payload = proto::encode_handshake(hello);
        context->header = proto::encode_frame_header(
            proto::make_handshake_header(versions.protocol, context->owned_payload.size()));
        context->after = std::move(after);
        const std::span<const std::byte> payload(context->owned_payload);
        start_send(record, std::move(context), payload, /*eager=*/true);
    }

    // A hello (request or answer) arrived from `id`.
    void on_hello(peer_id id, const proto::handshake_hello& hello) {
        peer_record* record = find_peer(id);
        if (record == nullptr || record->state == peer_state::failed) return;
        record->info.name = hello.name;
        record->info.address = hello.address;
        record->info.versions = hello.versions;
        const std::string remote_label =
            (hello.name.empty() ? std::string("?") : hello.name) + " (" + hello.address + ")";
        const auto mismatch =
            proto::describe_version_mismatch(local_label(), versions, remote_label, hello.versions);
        if (record->state == peer_state::awaiting_hello &&
            hello.status == proto::handshake_status::request) {
            if (mismatch) {
                record->state = peer_state::refused;
                publish(*record);
                count([](data_plane_stats& s) { ++s.refused_handshakes; });
                inbox.push_error(peer_id{},
                                 make_failure(transport_error::version_mismatch,
                                              "refused " + remote_label + ": " + *mismatch)
                                     .error());
                // Answer and let the refused side hang up first: closing here could overtake
                // the answer (in `none` mode it travels over shm, the disconnect over tcp).
                // check_handshake_timeouts closes it after teardown_grace otherwise.
                record->accepted_at = clock::now();
                send_hello(*record, proto::handshake_status::refused, *mismatch, nullptr);
                return;
            }
            record->state = peer_state::ready;
            publish(*record);
            send_hello(*record, proto::handshake_status::accepted, "", nullptr);
            return;
        }
        if (record->state == peer_state::connecting &&
            hello.status != proto::handshake_status::request) {
            if (hello.status == proto::handshake_status::refused || mismatch) {
                count([](data_plane_stats& s) { ++s.refused_handshakes; });
                const std::string why = mismatch ? *mismatch : hello.reason;
                fail_peer(*record, make_failure(transport_error::version_mismatch,
                                                why + " (refused by " + remote_label + ")")
                                       .error());
                return;
            }
            record->state = peer_state::ready;
            publish(*record);
            if (record->connect_op) {
                record->connect_op->finish(std::nullopt, id);
                record->connect_op.reset();
            }
            return;
        }
        bad_frame(*record, "unexpected handshake (" + std::string(to_string(hello.status)) +
                               ") after the handshake");
    }

    void bad_frame(peer_record& record, const std::string& message) {
        count([](data_plane_stats& s) { ++s.bad_frames; });
        const bool visible = record.state == peer_state::ready;
        inbox.push_error(
            visible ? record.id : peer_id{},
            make_failure(transport_error::bad_frame, "from " + describe(record) + ": " + message)
                .error());
    }

    // -- sending -------------------------------------------------------------------------------

    // The largest payload sent eager to this peer: shm_rndv_threshold_bytes once its lanes are
    // known to be all shared memory, else rndv_threshold_bytes. The lanes settle during the
    // handshake (whose frames go eager regardless), so they are read at the first data frame.
    uint64_t eager_limit(peer_record& record) {
        if (!record.shared_memory_lanes && record.state == peer_state::ready) {
            const std::vector<std::string> lanes = endpoint_transports(record.ep);
            record.shared_memory_lanes =
                !lanes.empty() && std::all_of(lanes.begin(), lanes.end(), [](const std::string& l) {
                    for (const char* shm : {"sysv/", "posix/", "cma/", "xpmem/", "knem/", "self/"})
                        if (l.starts_with(shm)) return true;
                    return false;
                });
        }
        return record.shared_memory_lanes.value_or(false) ? config.shm_rndv_threshold_bytes
                                                          : config.rndv_threshold_bytes;
    }

    void start_send(peer_record& record, std::unique_ptr<send_context> context,
                    std::span<const std::byte> payload, bool eager) {
        context->owner = this;
        context->id = next_context++;
        context->peer = record.id;
        context->payload_bytes = payload.size();
        if (record.ep == nullptr || record.state == peer_state::failed) {
            finish_context(*context, UCS_ERR_CONNECTION_RESET);
            return;
        }
        ucp_request_param_t params{};
        params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                              UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_DATATYPE |
                              UCP_OP_ATTR_FIELD_MEMORY_TYPE;
        params.cb.send = &impl::on_send_done;
        params.user_data = context.get();
        params.flags = UCP_AM_SEND_FLAG_REPLY;
        const bool rendezvous = !eager && payload.size() > eager_limit(record);
        params.flags |= rendezvous ? UCP_AM_SEND_FLAG_RNDV : UCP_AM_SEND_FLAG_EAGER;
        context->rendezvous = rendezvous;
        params.datatype = ucp_dt_make_contig(1);
        params.memory_type = UCS_MEMORY_TYPE_HOST;
        ucs_status_ptr_t request =
            ucp_am_send_nbx(record.ep, kFrameAmId, context->header.data(), context->header_bytes,
                            payload.data(), payload.size(), &params);
        if (request == nullptr) {
            finish_context(*context, UCS_OK);
        } else if (UCS_PTR_IS_ERR(request)) {
            finish_context(*context, UCS_PTR_STATUS(request));
        } else {
            const uint64_t id = context->id;
            sends.emplace(id, std::move(context));
        }
    }

    void finish_send(uint64_t id, ucs_status_t status) {
        auto it = sends.find(id);
        if (it == sends.end()) return;
        std::unique_ptr<send_context> context = std::move(it->second);
        sends.erase(it);
        if (destroying) {
            if (context->op) {
                context->op->finish(
                    make_failure(transport_error::closed, config.name + " closed").error());
            }
            return;
        }
        finish_context(*context, status);
    }

    void finish_context(send_context& context, ucs_status_t status) {
        peer_record* record = find_peer(context.peer);
        if (status == UCS_OK) {
            if (context.op) {
                count([&](data_plane_stats& s) {
                    ++s.frames_sent;
                    s.bytes_sent += context.payload_bytes;
                    if (context.rendezvous) ++s.frames_sent_rendezvous;
                });
                context.op->finish(std::nullopt);
            }
        } else {
            transport_failure failure =
                record != nullptr && record->info.failure
                    ? *record->info.failure
                    : make_failure(
                          transport_error::peer_failed,
                          (record != nullptr ? describe(*record) : to_string(context.peer)) +
                              ": send failed: " + ucs_text(status))
                          .error();
            if (context.op) context.op->finish(failure);
            if (record != nullptr && status != UCS_ERR_CANCELED) fail_peer(*record, failure);
        }
        if (context.after) {
            auto after = std::move(context.after);
            deferred.push_back([after = std::move(after), ok = status == UCS_OK] { after(ok); });
        }
    }

    void send_frame(peer_id id, proto::frame_header_bytes header, size_t header_bytes,
                    std::span<const std::byte> payload, std::shared_ptr<op_state> op) {
        peer_record* record = find_peer(id);
        if (record == nullptr || record->state == peer_state::awaiting_hello ||
            record->state == peer_state::connecting) {
            op->finish(make_failure(transport_error::unknown_peer, to_string(id)).error());
            return;
        }
        if (record->state != peer_state::ready) {
            op->finish(record->info.failure
                           ? *record->info.failure
                           : make_failure(transport_error::peer_failed, describe(*record)).error());
            return;
        }
        auto context = std::make_unique<send_context>();
        context->header = header;
        context->header_bytes = header_bytes;
        context->op = std::move(op);
        start_send(*record, std::move(context), payload, /*eager=*/false);
    }

    // -- receiving -----------------------------------------------------------------------------

    ucs_status_t handle_am(const void* header, size_t header_length, void* data, size_t length,
                           const ucp_am_recv_param_t* param) {
        const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
        ucp_ep_h ep =
            (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0 ? param->reply_ep : nullptr;
        peer_record* record = ep != nullptr ? find_by_ep(ep) : nullptr;
        if (record == nullptr) {
            count([](data_plane_stats& s) { ++s.bad_frames; });
            inbox.push_error(
                peer_id{},
                make_failure(transport_error::bad_frame, "frame from an unknown endpoint").error());
            return UCS_OK;  // a dropped rendezvous completes the sender
        }
        if (record->state == peer_state::failed || record->state == peer_state::refused) {
            return UCS_OK;
        }
        const std::span<const std::byte> header_span(static_cast<const std::byte*>(header),
                                                     header_length);
        auto decoded = proto::decode_frame_header(header_span, config.limits);
        if (!decoded) {
            bad_frame(*record, decoded.error().message);
            // Before the handshake is done nothing of this peer can be read: refuse it now, by
            // name, rather than leave connect() to its deadline.
            if (record->state != peer_state::ready)
                fail_peer(*record, make_failure(transport_error::bad_frame,
                                                describe(*record) + ": " + decoded.error().message)
                                       .error());
            return UCS_OK;
        }
        if (auto size = proto::check_payload_size(*decoded, length)) {
            bad_frame(*record, size->message);
            return UCS_OK;
        }
        if (decoded->kind == proto::frame_kind::handshake) {
            if (rndv) {
                bad_frame(*record, "handshake sent by rendezvous");
                return UCS_OK;
            }
            auto hello = proto::decode_handshake(
                std::span<const std::byte>(static_cast<const std::byte*>(data), length));
            if (!hello) {
                bad_frame(*record, hello.error().message);
                if (record->state != peer_state::ready) {
                    fail_peer(*record,
                              make_failure(transport_error::bad_frame,
                                           describe(*record) + ": " + hello.error().message)
                                  .error());
                }
                return UCS_OK;
            }
            deferred.push_back([this, id = record->id, h = std::move(*hello)] { on_hello(id, h); });
            return UCS_OK;
        }
        if (record->state != peer_state::ready) {
            bad_frame(*record, "data frame before the handshake");
            return UCS_OK;
        }
        if (!rndv) {
            count([&](data_plane_stats& s) {
                ++s.frames_received;
                s.bytes_received += length;
            });
            const std::span<const std::byte> payload(static_cast<const std::byte*>(data), length);
            if (inbox.offer(record->id, *decoded, payload)) return UCS_OK;  // a sink took it
            // Keep UCX's buffer where UCX lets us (FLAG_DATA: multi-fragment messages, which it
            // reassembles into a buffer of their own, and shared memory's receive descriptors)
            // instead of copying the payload out. Small payloads are copied: that costs well
            // under a microsecond, and keeping them would tie up receive descriptors (shared-
            // memory FIFO slots) for as long as their frames stay queued.
            const bool keep =
                (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) != 0 &&
                length >= kKeepInPlaceMinBytes &&
                reinterpret_cast<uintptr_t>(data) % byte_buffer::kAdoptedAlignment == 0;
            if (!keep) {
                try {
                    inbox.push_frame(record->id, *decoded, byte_buffer::copy_of(payload), false);
                } catch (const std::bad_alloc&) {  // never through UCX's C frames
                    inbox.push_error(
                        record->id, make_failure(transport_error::bad_frame,
                                                 "cannot allocate " + std::to_string(length) +
                                                     " bytes for a frame from " + describe(*record))
                                        .error());
                }
                return UCS_OK;
            }
            count([](data_plane_stats& s) { ++s.frames_received_in_place; });
            inbox.push_frame(record->id, *decoded, adopt_received(data, length), false);
            return UCS_INPROGRESS;  // ours until ucp_am_data_release
        }
        // Rendezvous: keep the FIFO position now, pull the data after this callback.
        const frame_inbox::slot_id slot = inbox.reserve(record->id, *decoded);
        deferred.push_back(
            [this, id = record->id, slot, data, length] { start_recv(id, slot, data, length); });
        return UCS_INPROGRESS;
    }

    // -- payloads kept in UCX's buffers -------------------------------------------------------

    byte_buffer adopt_received(void* data, size_t length) {
        {
            std::lock_guard lock(held_mutex);
            ++held_count;
        }
        std::shared_ptr<void> owner(
            data, [self = shared_from_this()](void* bytes) { self->let_go_of_received(bytes); });
        return byte_buffer::adopt({static_cast<std::byte*>(data), length}, std::move(owner));
    }

    // Any thread: a held buffer's last byte_buffer let go of it.
    void let_go_of_received(void* data) {
        std::unique_lock lock(held_mutex);
        if (progress_owns_worker) {
            held_released.push_back(data);  // the progress thread gives it back
            any_released.store(true, std::memory_order_release);
            return;
        }
        ucp_am_data_release(worker, data);  // nobody progresses the worker any more
        if (--held_count == 0 && destroy_when_released) {
            destroy_when_released = false;
            lock.unlock();
            destroy();
        }
    }

    // Progress thread (or close(), once that thread has stopped).
    void give_back_released() {
        if (!any_released.load(std::memory_order_acquire)) return;  // the common case: no lock
        std::vector<void*> batch;
        {
            std::lock_guard lock(held_mutex);
            batch.swap(held_released);
            any_released.store(false, std::memory_order_relaxed);
            held_count -= batch.size();
        }
        for (void* data : batch) ucp_am_data_release(worker, data);
    }

    void start_recv(peer_id id, frame_inbox::slot_id slot, void* descriptor, size_t length) {
        auto context = std::make_unique<recv_context>();
        context->owner = this;
        context->id = next_context++;
        context->peer = id;
        context->slot = slot;
        try {
            context->buffer = byte_buffer(length);
        } catch (const std::bad_alloc&) {
            // A frame this process cannot hold (memory limit, strict overcommit): the frame is an
            // error entry, UCX gets its descriptor back, the plane and the peer carry on.
            ucp_am_data_release(worker, descriptor);
            peer_record* record = find_peer(id);
            inbox.abort(slot,
                        make_failure(transport_error::bad_frame,
                                     "cannot allocate " + std::to_string(length) +
                                         " bytes for a frame from " +
                                         (record != nullptr ? describe(*record) : to_string(id)))
                            .error());
            return;
        }
        ucp_request_param_t params{};
        params.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                              UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_MEMORY_TYPE;
        params.cb.recv_am = &impl::on_recv_done;
        params.user_data = context.get();
        params.datatype = ucp_dt_make_contig(1);
        params.memory_type = UCS_MEMORY_TYPE_HOST;
        ucs_status_ptr_t request =
            ucp_am_recv_data_nbx(worker, descriptor, context->buffer.data(), length, &params);
        if (request == nullptr) {
            complete_recv(*context, UCS_OK);
        } else if (UCS_PTR_IS_ERR(request)) {
            complete_recv(*context, UCS_PTR_STATUS(request));
        } else {
            const uint64_t key = context->id;
            recvs.emplace(key, std::move(context));
        }
    }

    void finish_recv(uint64_t id, ucs_status_t status, size_t) {
        auto it = recvs.find(id);
        if (it == recvs.end()) return;
        std::unique_ptr<recv_context> context = std::move(it->second);
        recvs.erase(it);
        if (destroying) return;
        complete_recv(*context, status);
    }

    void complete_recv(recv_context& context, ucs_status_t status) {
        peer_record* record = find_peer(context.peer);
        if (status == UCS_OK) {
            count([&](data_plane_stats& s) {
                ++s.frames_received;
                s.bytes_received += context.buffer.size();
            });
            inbox.complete(context.slot, std::move(context.buffer));
            return;
        }
        const std::string who = record != nullptr ? describe(*record) : to_string(context.peer);
        auto failure = make_failure(transport_error::peer_failed,
                                    who + ": rendezvous receive failed: " + ucs_text(status))
                           .error();
        inbox.abort(context.slot, failure);
        if (record != nullptr) fail_peer(*record, failure);
    }

    // -- shutdown ------------------------------------------------------------------------------

    void begin_stop() {
        stopping = true;
        stop_deadline = clock::now() + config.teardown_grace;
        if (listener != nullptr) {
            ucp_listener_destroy(listener);
            listener = nullptr;
        }
        for (auto& [id, record] : peers) {
            if (record.connect_op) {
                record.connect_op->finish(
                    make_failure(transport_error::closed, config.name + " closed").error());
                record.connect_op.reset();
            }
            if (record.state != peer_state::failed) {
                record.state = peer_state::failed;
                record.info.failure =
                    make_failure(transport_error::closed, config.name + " closed").error();
                publish(record);
            }
            close_endpoint(record, /*graceful=*/false);
        }
    }

    // ucp_ep_print_info → "tcp/lo", "sysv/memory", ...
    std::vector<std::string> endpoint_transports(ucp_ep_h ep) {
        char* text = nullptr;
        size_t size = 0;
        FILE* stream = ::open_memstream(&text, &size);
        if (stream == nullptr) return {};
        ucp_ep_print_info(ep, stream);
        std::fclose(stream);
        std::string info(text, size);
        std::free(text);
        std::set<std::string> found;
        static const std::regex lane(R"(lane\[\d+\]:\s*\d+:([A-Za-z0-9_]+)/([A-Za-z0-9_.:-]+))");
        for (std::sregex_iterator it(info.begin(), info.end(), lane), end; it != end; ++it) {
            std::string device = (*it)[2].str();
            if (const size_t dot = device.find('.'); dot != std::string::npos) {
                device.resize(dot);
            }
            found.insert((*it)[1].str() + "/" + device);
        }
        return {found.begin(), found.end()};
    }
};

// -- ucx_data_plane ----------------------------------------------------------------------------

ucx_data_plane::ucx_data_plane(std::shared_ptr<impl> state) : impl_(std::move(state)) {}

void keep_freed_frame_memory() {
    static std::once_flag once;
    std::call_once(once, [] {
        // Frames (and the buffers computed from them) are large and short-lived. With glibc's
        // defaults each freed one goes back to the kernel (munmap above the mmap threshold,
        // madvise/trim of the heap top), so the next frame page-faults 256 times per MiB and
        // zero-fills every page: 36 % of a dispatch/combine loop's CPU time in ops/bench/transport
        // before this. Keep blocks up to 64 MiB in the heap and trim only past 512 MiB free.
        // (Receive buffers from 1 MiB on have their own cache of huge-page extents, byte_buffer;
        // this covers the rest: UCX's reassembly buffers, encoded frames, the experts' batches.)
        ::mallopt(M_MMAP_THRESHOLD, 64 << 20);
        ::mallopt(M_TRIM_THRESHOLD, 512 << 20);
    });
}

transport_result<std::unique_ptr<ucx_data_plane>> ucx_data_plane::create(
    ucx_data_plane_config config) {
    keep_freed_frame_memory();
    if (auto problem = config.validate()) {
        return make_failure(transport_error::setup_failed, "ucx_data_plane config: " + *problem);
    }
    auto state = std::make_shared<impl>();
    state->versions = config.advertised_versions.value_or(proto::local_wire_versions());
    state->config = std::move(config);
    state->config.limits.protocol_version = state->versions.protocol;
    if (auto failure = state->start()) {
        state->destroy();
        return proto::unexpected(std::move(*failure));
    }
    return std::unique_ptr<ucx_data_plane>(new ucx_data_plane(std::move(state)));
}

ucx_data_plane::~ucx_data_plane() { close(); }

std::string ucx_data_plane::address() const { return impl_->address; }
std::string ucx_data_plane::name() const { return impl_->config.name; }
const ucx_data_plane_config& ucx_data_plane::config() const { return impl_->config; }

bool ucx_data_plane::supports(memory_type memory) const { return memory == memory_type::host; }

transport_result<peer_id> ucx_data_plane::connect(std::string_view address, deadline until) {
    const auto target = parse_address(address);
    if (!target) {
        return make_failure(transport_error::bad_address,
                            "'" + std::string(address) + "' is not ucx://<ipv4>:<port>");
    }
    auto op = std::make_shared<op_state>();
    std::string text(address);
    if (!impl_->post([state = impl_.get(), text, target = *target, op] {
            state->start_connect(text, target, op);
        })) {
        return make_failure(transport_error::closed, impl_->config.name + " is closed");
    }
    if (!op->wait_until(until)) {
        impl_->post([state = impl_.get(), op] { state->abort_connect(op); });
        if (!op->wait_until(clock::now() + impl_->config.teardown_grace)) {
            return make_failure(transport_error::timeout,
                                "connect to " + text + ": no handshake answer by the deadline");
        }
    }
    if (op->failure) return proto::unexpected(*op->failure);
    return op->peer;
}

transport_status ucx_data_plane::send(peer_id peer, const proto::frame_header& header,
                                      payload_view payload, deadline until) {
    proto::frame_header stamped = header;
    stamped.magic = proto::kFrameMagic;
    stamped.protocol_version = impl_->versions.protocol;
    if (auto problem = proto::validate_frame_header(stamped, impl_->config.limits)) {
        return make_failure(transport_error::bad_frame, "outgoing frame: " + problem->message);
    }
    if (stamped.kind == proto::frame_kind::handshake) {
        return make_failure(transport_error::bad_frame,
                            "outgoing frame: handshake frames belong to connect()");
    }
    if (auto size = proto::check_payload_size(stamped, payload.bytes.size())) {
        return make_failure(transport_error::bad_frame, "outgoing frame: " + size->message);
    }
    const proto::frame_header_bytes bytes = proto::encode_frame_header(stamped);
    return send_raw(peer, bytes, payload, until);
}

transport_status ucx_data_plane::send_raw(peer_id peer, std::span<const std::byte> header_bytes,
                                          payload_view payload, deadline until) {
    if (!supports(payload.memory)) {
        return make_failure(transport_error::unsupported_memory,
                            std::string(to_string(payload.memory)) +
                                " payloads need a CUDA-enabled UCX (not built)");
    }
    proto::frame_header_bytes header{};
    const size_t header_size = std::min(header_bytes.size(), header.size());
    std::copy_n(header_bytes.begin(), header_size, header.begin());
    auto op = std::make_shared<op_state>();
    if (!impl_->post([state = impl_.get(), peer, header, header_size, bytes = payload.bytes, op] {
            state->send_frame(peer, header, header_size, bytes, op);
        })) {
        return make_failure(transport_error::closed, impl_->config.name + " is closed");
    }
    if (op->wait_until(until)) {
        if (op->failure) return proto::unexpected(*op->failure);
        return {};
    }
    // Deadline missed: the peer is failed and its endpoint torn down, which releases the request
    // (peer mode: FORCE cancels it). Wait a bounded time for that before returning.
    const std::string who = [&] {
        auto info = this->peer(peer);
        return info ? describe_peer(*info) : to_string(peer);
    }();
    auto failure = make_failure(transport_error::timeout,
                                "send to " + who + " not done by the deadline; peer failed")
                       .error();
    auto peer_failure =
        make_failure(transport_error::peer_failed, who + ": a send missed its deadline").error();
    impl_->post([state = impl_.get(), peer, peer_failure] {
        if (auto* record = state->find_peer(peer)) state->fail_peer(*record, peer_failure);
    });
    const bool released = op->wait_until(clock::now() + impl_->config.teardown_grace);
    if (released && !op->failure) return {};
    if (!released) {
        failure.message += " (UCX has not released the payload: it stays held)";
        failure.payload_held = true;
    }
    return proto::unexpected(std::move(failure));
}

size_t ucx_data_plane::discard(const frame_filter& filter) { return impl_->inbox.discard(filter); }

void ucx_data_plane::set_frame_sink(proto::frame_kind kind, frame_sink sink) {
    impl_->inbox.set_sink(kind, std::move(sink));
}

transport_result<received_frame> ucx_data_plane::receive(deadline until,
                                                         const frame_filter& filter) {
    std::string waiting_for;
    if (filter.peer) {
        auto info = peer(*filter.peer);
        waiting_for = info ? describe_peer(*info) : to_string(*filter.peer);
    }
    return impl_->inbox.receive(until, filter, waiting_for);
}

transport_status ucx_data_plane::disconnect(peer_id peer, deadline until) {
    auto op = std::make_shared<op_state>();
    if (!impl_->post([state = impl_.get(), peer, op] {
            auto* record = state->find_peer(peer);
            if (record == nullptr) {
                op->finish(make_failure(transport_error::unknown_peer, to_string(peer)).error());
                return;
            }
            state->fail_peer(
                *record,
                make_failure(transport_error::peer_failed,
                             state->describe(*record) + ": disconnected by " + state->config.name)
                    .error(),
                /*graceful=*/true);
            op->finish(std::nullopt);
        })) {
        return make_failure(transport_error::closed, impl_->config.name + " is closed");
    }
    if (!op->wait_until(until)) {
        return make_failure(transport_error::timeout, "disconnect " + to_string(peer));
    }
    if (op->failure) return proto::unexpected(*op->failure);
    return {};
}

std::optional<peer_info> ucx_data_plane::peer(peer_id peer) const {
    std::lock_guard lock(impl_->info_mutex);
    auto it = impl_->infos.find(peer);
    if (it == impl_->infos.end()) return std::nullopt;
    return it->second;
}

data_plane_stats ucx_data_plane::stats() const {
    std::lock_guard lock(impl_->info_mutex);
    return impl_->counters;
}

transport_result<std::vector<std::string>> ucx_data_plane::transports(peer_id peer,
                                                                      deadline until) {
    auto op = std::make_shared<op_state>();
    if (!impl_->post([state = impl_.get(), peer, op] {
            auto* record = state->find_peer(peer);
            if (record == nullptr || record->ep == nullptr) {
                op->finish(make_failure(transport_error::unknown_peer, to_string(peer)).error());
                return;
            }
            {
                std::lock_guard lock(op->mutex);
                op->strings = state->endpoint_transports(record->ep);
            }
            op->finish(std::nullopt);
        })) {
        return make_failure(transport_error::closed, impl_->config.name + " is closed");
    }
    if (!op->wait_until(until)) return make_failure(transport_error::timeout, "transports");
    if (op->failure) return proto::unexpected(*op->failure);
    std::lock_guard lock(op->mutex);
    return op->strings;
}

void ucx_data_plane::close() {
    std::call_once(impl_->close_once, [state = impl_.get()] {
        state->post([state] { state->begin_stop(); });
        {
            std::lock_guard lock(state->commands_mutex);
            state->accepting_commands = false;
        }
        if (state->progress_thread.joinable()) state->progress_thread.join();
        // Drops the frames nobody can receive any more (some may hold UCX buffers).
        state->inbox.close(
            make_failure(transport_error::closed, state->config.name + " is closed").error());
        {
            std::lock_guard lock(state->held_mutex);
            state->progress_owns_worker = false;
            for (void* data : state->held_released) ucp_am_data_release(state->worker, data);
            state->held_count -= state->held_released.size();
            state->held_released.clear();
            state->any_released.store(false, std::memory_order_relaxed);
            if (state->held_count > 0) {
                // Payloads handed out still live in the worker's memory: the last one to go
                // tears down (let_go_of_received), and this impl lives until then.
                state->destroy_when_released = true;
                return;
            }
        }
        state->destroy();
    });
}

}  // namespace longcat::transport
