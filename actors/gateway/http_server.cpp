#include "actors/gateway/http_server.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "actors/gateway/output_stream.hpp"

namespace longcat::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

constexpr size_t kHeaderLimit = 16 * 1024;     // request line + headers
constexpr size_t kPipelineLimit = 64 * 1024;   // bytes buffered after a request while it runs
constexpr size_t kWatchReadSize = 4096;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr auto kStopWait = std::chrono::seconds(2);  // stop(): io threads finishing on their own

std::string str(beast::string_view view) { return std::string(view.data(), view.size()); }

int64_t unix_seconds() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

uint64_t random_u64() {
    // On the heap: a thread_local engine object (2.5 KB) would be static TLS carved out of every
    // thread's stack in the process, civetweb's 100 KiB metrics workers included, which OpenBLAS's
    // 60 KiB of TLS already shrinks; under ASan their /healthz then overflowed the stack.
    thread_local std::unique_ptr<std::mt19937_64> generator;
    if (!generator) generator = std::make_unique<std::mt19937_64>(std::random_device{}());
    return (*generator)();
}

double seconds_between(clock::time_point from, clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
}

// Compares without an early exit, so the time does not tell how much of a key matched.
bool same_key(std::string_view given, std::string_view key) {
    if (given.size() != key.size()) return false;
    unsigned char diff = 0;
    for (size_t pos = 0; pos < key.size(); ++pos)
        diff |= static_cast<unsigned char>(given[pos] ^ key[pos]);
    return diff == 0;
}

// The metrics label of a path (known before the body is read, so a 413 counts on its route).
metric_route route_of(std::string_view target) {
    const std::string_view path = target.substr(0, target.find('?'));
    if (path == "/v1/chat/completions") return metric_route::chat_completions;
    if (path == "/v1/completions") return metric_route::completions;
    if (path == "/v1/models") return metric_route::models;
    if (path == "/health") return metric_route::health;
    if (path == "/ready") return metric_route::ready;
    return metric_route::other;
}

}  // namespace

std::string generate_request_id() {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string id;
    const uint64_t words[2] = {random_u64(), random_u64()};
    for (int digit = 0; digit < 24; ++digit) id += kHex[(words[digit / 16] >> (4 * (digit % 16))) & 0xF];
    return id;
}

bool valid_request_id(std::string_view id) {
    if (id.empty() || id.size() > 128) return false;
    for (const char c : id)
        if (c < 0x21 || c > 0x7E) return false;
    return true;
}

class connection;
struct request_link;

// -- server_core: what connections share ------------------------------------------------------

struct server_core {
    http_server_options opts;
    std::shared_ptr<generation_backend> backend;
    std::shared_ptr<const model::tokenizer> tokenizer;
    gateway_metrics metrics;
    log_function log;
    protocol_limits protocol;
    std::atomic<bool> draining{false};

    std::mutex mutex;
    std::condition_variable drained;
    bool stopped = false;
    // Generation requests in flight; a link leaves when its response is done and its backend
    // request finished.
    std::unordered_map<request_link*, std::shared_ptr<request_link>> in_flight;
    std::vector<std::weak_ptr<connection>> connections;

    void add(const std::shared_ptr<request_link>& link);
    void release(request_link* link);
    void write_log(const std::string& line) const {
        if (log) log(line);
    }
};

// -- request_link: one generation request between a connection and the backend --------------
// The backend's callback holds it; it posts events onto the connection's strand until the
// response is done (or the server stops), and tells the core when the request is over.

struct request_link : std::enable_shared_from_this<request_link> {
    request_link(std::shared_ptr<server_core> core_in, std::weak_ptr<connection> conn_in)
        : core(std::move(core_in)), conn(std::move(conn_in)) {}

    std::shared_ptr<server_core> core;
    std::weak_ptr<connection> conn;

    std::mutex mutex;
    bool closed = false;         // events are not posted any more
    bool backend_done = false;   // the finished event arrived
    bool response_done = false;  // the connection is finished with this request
    bool released = false;       // left core->in_flight
    bool cancel_requested = false;
    std::shared_ptr<generation_handle> handle;

    void on_event(generation_event event);  // any thread
    void set_handle(std::shared_ptr<generation_handle> new_handle);
    void cancel();
    void response_finished();
    void close() {
        std::lock_guard lock(mutex);
        closed = true;
    }
};

void server_core::add(const std::shared_ptr<request_link>& link) {
    std::lock_guard lock(mutex);
    if (stopped) {
        link->close();
        return;
    }
    in_flight.emplace(link.get(), link);
    metrics.in_flight.set(static_cast<double>(in_flight.size()));
}

// NOTES: a backend may deliver a request's last event after stop() (it outlives the server);
// the metrics registry may be gone by then, so a stopped core touches no metric.
void server_core::release(request_link* link) {
    {
        std::lock_guard lock(mutex);
        if (stopped) return;
        in_flight.erase(link);
        metrics.in_flight.set(static_cast<double>(in_flight.size()));
    }
    drained.notify_all();
}

void request_link::set_handle(std::shared_ptr<generation_handle> new_handle) {
    bool cancel_now = false;
    {
        std::lock_guard lock(mutex);
        if (!backend_done) handle = new_handle;  // a finished request keeps no handle (no cycle)
        cancel_now = cancel_requested;
    }
    if (cancel_now && new_handle) new_handle->cancel();
}

void request_link::cancel() {
    std::shared_ptr<generation_handle> to_cancel;
    {
        std::lock_guard lock(mutex);
        cancel_requested = true;
        to_cancel = handle;
    }
    if (to_cancel) to_cancel->cancel();
}

void request_link::response_finished() {
    bool release = false;
    {
        std::lock_guard lock(mutex);
        closed = true;
        response_done = true;
        if (backend_done && !released) released = release = true;
    }
    if (release) core->release(this);
}

// -- connection -------------------------------------------------------------------------------

class connection : public std::enable_shared_from_this<connection> {
public:
    connection(tcp::socket socket, std::shared_ptr<server_core> core)
        : core_(std::move(core)),
          socket_(std::move(socket)),
          read_timer_(socket_.get_executor()),
          write_timer_(socket_.get_executor()),
          request_timer_(socket_.get_executor()) {}

    void start() {
        net::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->read_header(); });
    }
    // Any thread: an event for `link` (dropped when it is not the current request any more).
    void post_event(std::shared_ptr<request_link> link, generation_event event) {
        net::post(socket_.get_executor(), [self = shared_from_this(), link = std::move(link),
                                           event = std::move(event)]() mutable {
            self->on_backend_event(link, std::move(event));
        });
    }
    void post_close() {
        net::post(socket_.get_executor(), [self = shared_from_this()] { self->close(); });
    }
    // The drain grace period ended: the request in flight ends with 503 "draining".
    void post_server_cancel() {
        net::post(socket_.get_executor(), [self = shared_from_this()] {
            if (!self->gen_ || self->gen_->done) return;
            self->link_->cancel();
            self->fail_generation({api_error_kind::draining,
                                   "the gateway is shutting down and its drain grace period ended", ""});
        });
    }

private:
    struct generation_state {
        generation_state(const model::tokenizer& tokenizer, std::vector<std::string> stop)
            : output(tokenizer, std::move(stop)) {}
        response_meta meta;
        bool stream = false;
        bool include_usage = false;
        output_stream output;
        std::string text;  // the whole text of a non-streaming response
        int64_t prompt_tokens = 0;
        int64_t max_tokens = 0;
        clock::time_point last_token_at;
        bool got_token = false;
        bool done = false;  // completed, failed or the client left
    };

    // -- reading --------------------------------------------------------------------------------

    // Deadline for the pending read: when it passes, the read is cancelled with
    // read_timed_out_ set. The sequence number voids a timer that fired while being disarmed.
    void arm_read_timer(std::chrono::milliseconds after) {
        read_timed_out_ = false;
        const uint64_t seq = ++read_timer_seq_;
        read_timer_.expires_after(after);
        read_timer_.async_wait([self = shared_from_this(), seq](beast::error_code ec) {
            if (ec || self->closed_ || seq != self->read_timer_seq_) return;
            self->read_timed_out_ = true;
            beast::error_code ignored;
            self->socket_.cancel(ignored);
        });
    }
    void disarm_read_timer() {
        ++read_timer_seq_;
        read_timer_.cancel();
    }

    void read_header() {
        if (closed_) return;
        parser_.emplace();
        parser_->header_limit(kHeaderLimit);
        parser_->body_limit(static_cast<uint64_t>(core_->opts.max_body_bytes));
        arm_read_timer(core_->opts.header_deadline);
        reading_ = true;
        http::async_read_header(socket_, buffer_, *parser_,
                                [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
    }

    void on_header(beast::error_code ec) {
        reading_ = false;
        disarm_read_timer();
        if (closed_) return;
        request_id_.clear();
        route_ = metric_route::other;
        method_path_ = "(request)";
        if (ec) {
            if (read_timed_out_ && buffer_.size() == 0) return close();  // an idle keep-alive
            if (!parser_->get().target().empty()) {  // e.g. a Content-Length over the limit
                route_ = route_of(str(parser_->get().target()));
                method_path_ = str(parser_->get().method_string()) + " " + str(parser_->get().target());
            }
            request_id_ = generate_request_id();
            response_in_progress_ = true;
            keep_alive_ = false;
            if (read_timed_out_)
                return respond_error({api_error_kind::body_timeout,
                                      "request header not complete within " +
                                          std::to_string(core_->opts.header_deadline.count()) + " ms",
                                      ""});
            if (ec == http::error::end_of_stream || ec == net::error::eof ||
                ec == net::error::connection_reset || ec == http::error::partial_message)
                return close();
            if (ec == http::error::header_limit)
                return respond_error({api_error_kind::payload_too_large,
                                      "request header larger than " + std::to_string(kHeaderLimit) + " bytes",
                                      ""});
            if (ec == http::error::body_limit)  // a Content-Length over the limit
                return respond_error({api_error_kind::payload_too_large,
                                      "request body larger than the limit of " +
                                          std::to_string(core_->opts.max_body_bytes) + " bytes",
                                      ""});
            return respond_error({api_error_kind::invalid_value, "malformed HTTP request: " + ec.message(), ""});
        }
        response_in_progress_ = true;
        accepted_at_ = clock::now();
        const auto& request = parser_->get();
        keep_alive_ = request.keep_alive();
        route_ = route_of(str(request.target()));
        method_path_ = str(request.method_string()) + " " + str(request.target());
        const std::string client_id = str(request["X-Request-Id"]);
        request_id_ = client_id.empty() ? generate_request_id() : client_id;
        if (!client_id.empty() && !valid_request_id(client_id)) {
            request_id_ = generate_request_id();
            keep_alive_ = false;  // the body is not read
            return respond_error({api_error_kind::invalid_header,
                                  "X-Request-Id must be 1 to 128 printable ASCII characters without spaces",
                                  "X-Request-Id"});
        }
        const auto content_length = parser_->content_length();
        if (content_length && *content_length > static_cast<uint64_t>(core_->opts.max_body_bytes)) {
            keep_alive_ = false;
            return respond_error({api_error_kind::payload_too_large,
                                  "request body of " + std::to_string(*content_length) +
                                      " bytes is larger than the limit of " +
                                      std::to_string(core_->opts.max_body_bytes) + " bytes",
                                  ""});
        }
        if (beast::iequals(request[http::field::expect], "100-continue")) {
            net::async_write(socket_, net::buffer(kContinue.data(), kContinue.size()),
                             [self = shared_from_this()](beast::error_code write_ec, size_t) {
                                 if (self->closed_) return;
                                 if (write_ec) return self->close();
                                 self->read_body();
                             });
            return;
        }
        read_body();
    }

    void read_body() {
        arm_read_timer(core_->opts.body_deadline);
        reading_ = true;
        http::async_read(socket_, buffer_, *parser_,
                         [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
    }

    void on_body(beast::error_code ec) {
        reading_ = false;
        disarm_read_timer();
        if (closed_) return;
        if (ec) {
            keep_alive_ = false;
            if (read_timed_out_)
                return respond_error({api_error_kind::body_timeout,
                                      "request body not complete within " +
                                          std::to_string(core_->opts.body_deadline.count()) + " ms",
                                      ""});
            if (ec == http::error::body_limit)
                return respond_error({api_error_kind::payload_too_large,
                                      "request body larger than the limit of " +
                                          std::to_string(core_->opts.max_body_bytes) + " bytes",
                                      ""});
            if (ec == http::error::end_of_stream || ec == net::error::eof ||
                ec == net::error::connection_reset || ec == http::error::partial_message)
                return close();
            return respond_error({api_error_kind::invalid_value, "malformed HTTP request body: " + ec.message(), ""});
        }
        handle_request(parser_->release());
    }

    // A read kept pending while a request runs (and while idle between requests): it notices a
    // client that leaves; bytes that arrive are the next request, kept in buffer_.
    void watch() {
        if (closed_ || reading_) return;
        reading_ = true;
        socket_.async_read_some(buffer_.prepare(kWatchReadSize),
                                [self = shared_from_this()](beast::error_code ec, size_t bytes) {
                                    self->on_watch(ec, bytes);
                                });
    }

    void on_watch(beast::error_code ec, size_t bytes) {
        reading_ = false;
        if (closed_) return;
        if (resume_after_watch_) {  // after_response() cancelled this read: a request is buffered
            resume_after_watch_ = false;
            if (!ec) buffer_.commit(bytes);
            if (!ec || ec == net::error::operation_aborted) return read_header();
        }
        if (ec) {
            if (response_in_progress_) return client_gone(ec == net::error::eof ? "closed the connection" : ec.message());
            disarm_read_timer();
            if (read_timed_out_ && buffer_.size() > 0) {
                request_id_ = generate_request_id();
                response_in_progress_ = true;
                keep_alive_ = false;
                return respond_error({api_error_kind::body_timeout,
                                      "request header not complete within " +
                                          std::to_string(core_->opts.header_deadline.count()) + " ms",
                                      ""});
            }
            return close();
        }
        buffer_.commit(bytes);
        if (!response_in_progress_) {
            disarm_read_timer();
            return read_header();
        }
        if (discarding_) {
            buffer_.consume(buffer_.size());
            return watch();
        }
        if (buffer_.size() < kPipelineLimit) return watch();
        // More than the limit pipelined behind a running request. Reading stays on (a client
        // that leaves is seen by the read whatever it had queued; with reading stopped, its FIN
        // would wait behind the bytes the full receive window holds back), but what it reads is
        // dropped, and the connection closes after this response: the pipelined requests are
        // not served (HTTP/1.1 lets a server close with pipelined requests unanswered).
        log("more than " + std::to_string(kPipelineLimit) +
            " bytes pipelined behind a running request: they are dropped and the connection "
            "closes after its response");
        buffer_.consume(buffer_.size());
        keep_alive_ = false;
        discarding_ = true;
        watch();
    }

    // -- requests -------------------------------------------------------------------------------

    bool authorized(const http::request<http::string_body>& request) const {
        if (core_->opts.api_keys.empty()) return true;
        const std::string header = str(request[http::field::authorization]);
        constexpr std::string_view kBearer = "Bearer ";
        if (header.size() <= kBearer.size() || !beast::iequals(header.substr(0, kBearer.size()), kBearer))
            return false;
        const std::string_view given = std::string_view(header).substr(kBearer.size());
        bool match = false;
        for (const std::string& key : core_->opts.api_keys) match |= same_key(given, key);
        return match;
    }

    void handle_request(http::request<http::string_body> request) {
        if (core_->draining) keep_alive_ = false;
        const std::string target = str(request.target());
        const std::string path = target.substr(0, target.find('?'));
        const http::verb method = request.method();
        method_path_ = str(request.method_string()) + " " + path;
        auto not_allowed = [&](const char* allow) {
            allow_ = allow;
            respond_error({api_error_kind::method_not_allowed,
                           "method " + str(request.method_string()) + " is not allowed on " + path + " (allowed: " +
                               allow + ")",
                           ""});
        };
        const bool is_v1 = path.starts_with("/v1/");
        if (is_v1 && !authorized(request)) {
            return respond_error({api_error_kind::unauthorized,
                                  "missing or invalid API key (send Authorization: Bearer KEY)", ""});
        }
        if (path == "/health") {
            route_ = metric_route::health;
            if (method != http::verb::get) return not_allowed("GET");
            return respond(200, R"({"status":"ok"})");
        }
        if (path == "/ready") {
            route_ = metric_route::ready;
            if (method != http::verb::get) return not_allowed("GET");
            if (core_->draining) return respond(503, R"({"status":"not_ready","reason":"draining"})");
            const backend_readiness readiness = core_->backend->readiness();
            if (readiness.ready) return respond(200, R"({"status":"ready"})");
            return respond(503, nlohmann::json{{"status", "not_ready"}, {"reason", readiness.reason}}.dump(
                                    -1, ' ', false, nlohmann::json::error_handler_t::replace));
        }
        if (path == "/v1/models") {
            route_ = metric_route::models;
            if (method != http::verb::get) return not_allowed("GET");
            return respond(200, models_body(core_->opts.served_model_name, core_->opts.model_created,
                                            core_->opts.prompt.context_length));
        }
        if (path == "/v1/chat/completions" || path == "/v1/completions") {
            const bool chat = path == "/v1/chat/completions";
            route_ = chat ? metric_route::chat_completions : metric_route::completions;
            if (method != http::verb::post) return not_allowed("POST");
            return handle_generation(chat ? api_route::chat_completions : api_route::completions, request.body());
        }
        return respond_error({api_error_kind::route_not_found, "no route " + method_path_, ""});
    }

    void handle_generation(api_route route, const std::string& body) {
        if (core_->draining)
            return respond_error({api_error_kind::draining, "the gateway is shutting down (draining)", ""});
        auto parsed = parse_request(route, body, core_->protocol);
        if (!parsed) return respond_error(parsed.error());
        auto prompt = build_prompt(*parsed, *core_->tokenizer, core_->opts.prompt);
        if (!prompt) return respond_error(prompt.error());

        gen_ = std::make_unique<generation_state>(*core_->tokenizer, parsed->stop);
        gen_->meta = {route, response_id(route, request_id_), unix_seconds(), core_->opts.served_model_name};
        gen_->stream = parsed->stream;
        gen_->include_usage = parsed->include_usage;
        gen_->prompt_tokens = static_cast<int64_t>(prompt->ids.size());
        gen_->max_tokens = prompt->max_tokens;

        generation_request request;
        request.request_id = request_id_;
        request.prompt = std::move(prompt->ids);
        request.max_tokens = gen_->max_tokens;
        request.temperature = parsed->temperature;
        request.top_p = parsed->top_p;
        request.top_k = parsed->top_k;
        request.seed = parsed->seed ? *parsed->seed : random_u64();
        request.ignore_eos = parsed->ignore_eos;
        request.deadline = accepted_at_ + core_->opts.request_deadline;

        link_ = std::make_shared<request_link>(core_, weak_from_this());
        core_->add(link_);
        core_->metrics.prompt_tokens.inc(static_cast<double>(gen_->prompt_tokens));
        const uint64_t seq = ++request_timer_seq_;
        request_timer_.expires_at(request.deadline);
        request_timer_.async_wait([self = shared_from_this(), seq](beast::error_code ec) {
            if (ec || self->closed_ || seq != self->request_timer_seq_) return;
            if (!self->gen_ || self->gen_->done) return;
            self->link_->cancel();
            self->fail_generation({api_error_kind::timeout,
                                   "request deadline of " +
                                       std::to_string(self->core_->opts.request_deadline.count()) + " ms passed",
                                   ""});
        });
        std::shared_ptr<generation_handle> handle;
        try {
            handle = core_->backend->submit(std::move(request), [link = link_](generation_event event) {
                link->on_event(std::move(event));
            });
        } catch (const std::exception& e) {
            link_->close();
            link_->on_event(make_error_event(backend_error::internal, e.what()));  // backend_done
            return fail_generation({api_error_kind::internal, std::string("backend submit failed: ") + e.what(), ""});
        }
        link_->set_handle(std::move(handle));
        watch();
    }

    void on_backend_event(const std::shared_ptr<request_link>& link, generation_event event) {
        if (closed_ || link != link_ || !gen_ || gen_->done) return;
        if (event.error) {
            std::string message = event.error_message.empty() ? std::string(to_string(*event.error))
                                                              : event.error_message;
            return fail_generation({map_backend_error(*event.error), "backend: " + message, ""});
        }
        const clock::time_point now = clock::now();
        if (!event.tokens.empty()) {
            if (!gen_->got_token) {
                core_->metrics.time_to_first_token.observe(seconds_between(accepted_at_, now));
                gen_->got_token = true;
            } else {
                const double per_token = seconds_between(gen_->last_token_at, now) / double(event.tokens.size());
                for (size_t token_idx = 0; token_idx < event.tokens.size(); ++token_idx)
                    core_->metrics.inter_token.observe(per_token);
            }
            gen_->last_token_at = now;
        }
        if (gen_->stream) start_stream();
        const output_stream::piece piece = gen_->output.push(event.tokens);
        emit_text(piece.text);
        if (piece.stop_matched) {
            link_->cancel();
            return complete_generation("stop");
        }
        if (event.finished) {
            const output_stream::piece tail = gen_->output.finish();
            emit_text(tail.text);
            const std::string reason = tail.stop_matched || event.finish_reason.empty() ? "stop" : event.finish_reason;
            complete_generation(reason);
        }
    }

    void emit_text(const std::string& text) {
        if (text.empty()) return;
        if (gen_->stream) queue_sse(sse_text_chunk(gen_->meta, text, gen_->include_usage));
        else gen_->text += text;
    }

    void start_stream() {
        if (stream_started_) return;
        stream_started_ = true;
        stream_header_ = std::make_unique<http::response<http::empty_body>>(http::status::ok, 11);
        stream_header_->set(http::field::server, "longcat-gateway");
        stream_header_->set(http::field::content_type, "text/event-stream");
        stream_header_->set(http::field::cache_control, "no-cache");
        stream_header_->set("X-Request-Id", request_id_);
        stream_header_->keep_alive(keep_alive_);
        stream_header_->chunked(true);
        stream_serializer_ = std::make_unique<http::response_serializer<http::empty_body>>(*stream_header_);
        queue_sse(sse_first_chunk(gen_->meta, gen_->include_usage));
    }

    void complete_generation(std::string_view finish_reason) {
        gen_->done = true;
        ++request_timer_seq_;
        request_timer_.cancel();
        link_->close();  // no more events; in flight until the last byte is written
        const usage_counts usage{gen_->prompt_tokens, gen_->output.num_tokens()};
        core_->metrics.generated_tokens.inc(static_cast<double>(usage.completion_tokens));
        core_->metrics.request_seconds.observe(seconds_between(accepted_at_, clock::now()));
        log(method_path_ + " 200 finish_reason=" + std::string(finish_reason) + " prompt_tokens=" +
            std::to_string(usage.prompt_tokens) + " completion_tokens=" + std::to_string(usage.completion_tokens) +
            (gen_->stream ? " stream" : "") + " in " + std::to_string(seconds_between(accepted_at_, clock::now())) +
            " s");
        if (!gen_->stream)
            return respond(200, completion_body(gen_->meta, gen_->text, finish_reason, usage), /*log_it=*/false);
        core_->metrics.count(route_, 200);
        queue_sse(sse_finish_chunk(gen_->meta, finish_reason, gen_->include_usage));
        if (gen_->include_usage) queue_sse(sse_usage_chunk(gen_->meta, usage));
        queue_sse(sse_done());
        stream_end_queued_ = true;
        pump_writes();
    }

    void fail_generation(api_error error) {
        gen_->done = true;
        ++request_timer_seq_;
        request_timer_.cancel();
        link_->close();
        if (!stream_started_) return respond_error(std::move(error));
        error.message = with_id(error.message);
        log(method_path_ + " stream ended by error: " + error.message);
        core_->metrics.count(route_, map_error(error.kind).status);
        queue_sse(sse_error_event(error));
        queue_sse(sse_done());
        stream_end_queued_ = true;
        pump_writes();
    }

    void client_gone(std::string_view why) {
        if (gen_ && !gen_->done) {
            gen_->done = true;
            link_->cancel();
            core_->metrics.count(route_, metric_outcome::disconnect);
            log(method_path_ + " client gone (" + std::string(why) + ") after " +
                std::to_string(gen_->output.num_tokens()) + " tokens; backend request cancelled");
        }
        close();
    }

    // -- writing --------------------------------------------------------------------------------

    void arm_write_timer() {
        const uint64_t seq = ++write_timer_seq_;
        write_timer_.expires_after(core_->opts.body_deadline);
        write_timer_.async_wait([self = shared_from_this(), seq](beast::error_code ec) {
            if (ec || self->closed_ || seq != self->write_timer_seq_) return;
            self->client_gone("a write did not complete within " +
                              std::to_string(self->core_->opts.body_deadline.count()) + " ms");
        });
    }
    void disarm_write_timer() {
        ++write_timer_seq_;
        write_timer_.cancel();
    }

    void respond(int status, std::string body, bool log_it = true) {
        auto response = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(status), 11);
        response->set(http::field::server, "longcat-gateway");
        response->set(http::field::content_type, "application/json");
        response->set(http::field::cache_control, "no-store");
        response->set("X-Request-Id", request_id_);
        if (status == 429) response->set(http::field::retry_after, std::to_string(core_->opts.retry_after_s));
        if (status == 405) response->set(http::field::allow, allow_);
        response->keep_alive(keep_alive_ && !core_->draining);
        response->body() = std::move(body);
        response->prepare_payload();
        core_->metrics.count(route_, status);
        if (log_it && status >= 400) log(method_path_ + " " + std::to_string(status) + ": " + response->body());
        writing_ = true;
        arm_write_timer();
        http::async_write(socket_, *response, [self = shared_from_this(), response](beast::error_code ec, size_t) {
            self->writing_ = false;
            self->disarm_write_timer();
            if (self->closed_) return;
            if (ec) return self->close();
            self->after_response();
        });
    }

    void respond_error(api_error error) {
        error.message = with_id(error.message);
        const int status = map_error(error.kind).status;
        respond(status, error_body(error));
    }

    void queue_sse(std::string event) {
        out_pending_ += event;
        pump_writes();
    }

    void pump_writes() {
        if (writing_ || closed_ || !stream_started_) return;
        auto done = [self = shared_from_this()](beast::error_code ec, size_t) {
            self->writing_ = false;
            self->disarm_write_timer();
            if (self->closed_) return;
            if (ec) return self->client_gone("write failed: " + ec.message());
            self->pump_writes();
        };
        if (!stream_header_written_) {
            stream_header_written_ = true;
            writing_ = true;
            arm_write_timer();
            return http::async_write_header(socket_, *stream_serializer_, std::move(done));
        }
        if (!out_pending_.empty()) {
            out_inflight_.swap(out_pending_);
            out_pending_.clear();
            writing_ = true;
            arm_write_timer();
            return net::async_write(socket_, http::make_chunk(net::buffer(out_inflight_)), std::move(done));
        }
        if (stream_end_queued_ && !stream_end_written_) {
            stream_end_written_ = true;
            writing_ = true;
            arm_write_timer();
            net::async_write(socket_, http::make_chunk_last(),
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                                 self->writing_ = false;
                                 self->disarm_write_timer();
                                 if (self->closed_) return;
                                 if (ec) return self->close();
                                 self->after_response();
                             });
        }
    }

    // The response is on the wire: the next request, or close.
    void after_response() {
        response_in_progress_ = false;
        if (link_) link_->response_finished();  // the whole response is on the wire (drain counts it)
        gen_.reset();
        link_.reset();
        stream_started_ = stream_header_written_ = stream_end_queued_ = stream_end_written_ = false;
        stream_serializer_.reset();
        stream_header_.reset();
        out_pending_.clear();
        out_inflight_.clear();
        allow_.clear();
        if (!keep_alive_ || core_->draining) return close();
        if (buffer_.size() > 0) {  // a pipelined request is already here
            if (!reading_) return read_header();
            resume_after_watch_ = true;  // the watch read ends with operation_aborted, then read_header()
            beast::error_code ignored;
            socket_.cancel(ignored);
            return;
        }
        arm_read_timer(core_->opts.header_deadline);  // idle keep-alive: the next header's deadline
        watch();
    }

    void close() {
        if (closed_) return;
        closed_ = true;
        if (gen_ && !gen_->done) {  // client gone or server stop: the backend request must not outlive us
            gen_->done = true;
            link_->cancel();
        }
        if (link_) link_->response_finished();
        ++read_timer_seq_;
        ++write_timer_seq_;
        ++request_timer_seq_;
        read_timer_.cancel();
        write_timer_.cancel();
        request_timer_.cancel();
        beast::error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_both, ignored);
        socket_.close(ignored);
    }

    std::string with_id(const std::string& message) const { return message + " (request id " + request_id_ + ")"; }

    void log(const std::string& what) const {
        core_->write_log("request " + (request_id_.empty() ? std::string("-") : request_id_) + ": " + what);
    }

    std::shared_ptr<server_core> core_;
    tcp::socket socket_;  // its executor is this connection's strand
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    net::steady_timer read_timer_, write_timer_, request_timer_;
    uint64_t read_timer_seq_ = 0, write_timer_seq_ = 0, request_timer_seq_ = 0;
    bool reading_ = false;  // a read is pending on socket_
    bool read_timed_out_ = false;
    bool writing_ = false;
    bool closed_ = false;
    bool keep_alive_ = true;
    bool response_in_progress_ = false;  // a request was read and its response is not yet written
    bool resume_after_watch_ = false;    // the pending watch read was cancelled to read a request
    bool discarding_ = false;            // past kPipelineLimit: reads are dropped until close

    std::string request_id_;
    std::string method_path_;  // "POST /v1/completions" for log lines
    std::string allow_;        // Allow header of a 405
    metric_route route_ = metric_route::other;
    clock::time_point accepted_at_;

    std::unique_ptr<generation_state> gen_;
    std::shared_ptr<request_link> link_;

    std::unique_ptr<http::response<http::empty_body>> stream_header_;
    std::unique_ptr<http::response_serializer<http::empty_body>> stream_serializer_;
    bool stream_started_ = false, stream_header_written_ = false;
    bool stream_end_queued_ = false, stream_end_written_ = false;
    std::string out_pending_, out_inflight_;

    friend struct request_link;
};

void request_link::on_event(generation_event event) {
    bool release = false;
    std::shared_ptr<generation_handle> finished_handle;  // dropped after the lock is released
    {
        std::lock_guard lock(mutex);
        if (event.finished) {
            backend_done = true;
            finished_handle = std::move(handle);
            if (response_done && !released) released = release = true;
        }
        // Posted under the lock: stop() closes every link before the io_context goes away.
        if (!closed) {
            if (const std::shared_ptr<connection> target = conn.lock())
                target->post_event(shared_from_this(), std::move(event));
        }
    }
    if (release) core->release(this);
}

// -- http_server ------------------------------------------------------------------------------

struct http_server::impl {
    net::io_context ioc;  // first: destroyed last
    net::executor_work_guard<net::io_context::executor_type> work{ioc.get_executor()};
    tcp::acceptor acceptor{net::make_strand(ioc)};
    net::steady_timer accept_retry{acceptor.get_executor()};
    std::shared_ptr<server_core> core = std::make_shared<server_core>();
    std::vector<std::thread> threads;
    std::mutex threads_mutex;
    std::condition_variable threads_done;
    int threads_running = 0;
    uint16_t port = 0;
    bool stopped = false;

    void accept() {
        acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
            if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
            if (ec) {  // e.g. out of file descriptors: wait a little, keep serving
                core->write_log("accept failed: " + ec.message());
                accept_retry.expires_after(std::chrono::milliseconds(50));
                accept_retry.async_wait([this](beast::error_code wait_ec) {
                    if (!wait_ec) accept();
                });
                return;
            }
            beast::error_code ignored;
            socket.set_option(tcp::no_delay(true), ignored);
            auto conn = std::make_shared<connection>(std::move(socket), core);
            {
                std::lock_guard lock(core->mutex);
                std::erase_if(core->connections, [](const auto& weak) { return weak.expired(); });
                core->connections.push_back(conn);
            }
            conn->start();
            accept();
        });
    }
};

http_server::http_server(http_server_options opts, std::shared_ptr<generation_backend> backend,
                         std::shared_ptr<const model::tokenizer> tokenizer, gateway_metrics metrics,
                         log_function log)
    : impl_(std::make_unique<impl>()) {
    if (!backend) throw http_server_error("http_server: backend is null");
    if (!tokenizer) throw http_server_error("http_server: tokenizer is null");
    if (opts.io_threads < 1) throw http_server_error("http_server: io_threads must be >= 1");
    if (opts.max_body_bytes < 1) throw http_server_error("http_server: max_body_bytes must be >= 1");
    if (opts.header_deadline.count() < 1 || opts.body_deadline.count() < 1 || opts.request_deadline.count() < 1)
        throw http_server_error("http_server: header, body and request deadlines must be >= 1 ms");
    if (opts.served_model_name.empty()) throw http_server_error("http_server: served_model_name is empty");
    server_core& core = *impl_->core;
    core.protocol = {opts.served_model_name, opts.prompt.max_tokens_limit};
    core.opts = std::move(opts);
    core.backend = std::move(backend);
    core.tokenizer = std::move(tokenizer);
    core.metrics = metrics;
    core.log = std::move(log);

    beast::error_code ec;
    const auto address = net::ip::make_address(core.opts.host, ec);
    if (ec) throw http_server_error("http_server: host '" + core.opts.host + "' is not an IP address: " + ec.message());
    const tcp::endpoint endpoint(address, core.opts.port);
    auto check = [&](const char* what) {
        if (ec)
            throw http_server_error("http_server: cannot " + std::string(what) + " " + core.opts.host + ":" +
                                    std::to_string(core.opts.port) + ": " + ec.message());
    };
    impl_->acceptor.open(endpoint.protocol(), ec);
    check("open a socket for");
    impl_->acceptor.set_option(net::socket_base::reuse_address(true), ec);
    check("set SO_REUSEADDR on");
    impl_->acceptor.bind(endpoint, ec);
    check("bind");
    impl_->acceptor.listen(net::socket_base::max_listen_connections, ec);
    check("listen on");
    impl_->port = impl_->acceptor.local_endpoint().port();
    impl_->accept();
    for (int thread_idx = 0; thread_idx < core.opts.io_threads; ++thread_idx) {
        impl_->threads_running++;
        impl_->threads.emplace_back([this] {
            impl_->ioc.run();
            std::lock_guard lock(impl_->threads_mutex);
            --impl_->threads_running;
            impl_->threads_done.notify_all();
        });
    }
}

http_server::~http_server() { stop(); }

uint16_t http_server::port() const { return impl_->port; }

std::string http_server::url() const {
    const std::string host = impl_->core->opts.host == "0.0.0.0" ? "127.0.0.1" : impl_->core->opts.host;
    return "http://" + host + ":" + std::to_string(impl_->port);
}

void http_server::start_draining() { impl_->core->draining = true; }

bool http_server::draining() const { return impl_->core->draining; }

bool http_server::wait_drained(clock::time_point deadline) {
    std::unique_lock lock(impl_->core->mutex);
    return impl_->core->drained.wait_until(lock, deadline, [&] { return impl_->core->in_flight.empty(); });
}

int64_t http_server::in_flight() const {
    std::lock_guard lock(impl_->core->mutex);
    return static_cast<int64_t>(impl_->core->in_flight.size());
}

void http_server::cancel_all() {
    std::vector<std::shared_ptr<request_link>> links;
    std::vector<std::shared_ptr<connection>> connections;
    {
        std::lock_guard lock(impl_->core->mutex);
        for (const auto& [key, link] : impl_->core->in_flight) links.push_back(link);
        for (const auto& weak : impl_->core->connections)
            if (auto conn = weak.lock()) connections.push_back(std::move(conn));
    }
    for (const auto& conn : connections) conn->post_server_cancel();
    for (const auto& link : links) link->cancel();  // also those whose client already left
}

void http_server::stop() {
    if (impl_->stopped) return;
    impl_->stopped = true;
    server_core& core = *impl_->core;
    core.draining = true;
    net::post(impl_->acceptor.get_executor(), [this] {
        beast::error_code ignored;
        impl_->acceptor.close(ignored);
        impl_->accept_retry.cancel();
    });
    std::vector<std::shared_ptr<request_link>> links;
    std::vector<std::shared_ptr<connection>> connections;
    {
        std::lock_guard lock(core.mutex);
        core.stopped = true;
        for (const auto& [key, link] : core.in_flight) links.push_back(link);
        for (const auto& weak : core.connections)
            if (auto conn = weak.lock()) connections.push_back(std::move(conn));
    }
    for (const auto& link : links) {
        link->close();
        link->cancel();
    }
    for (const auto& conn : connections) conn->post_close();
    connections.clear();
    impl_->work.reset();
    {
        std::unique_lock lock(impl_->threads_mutex);
        if (!impl_->threads_done.wait_for(lock, kStopWait, [&] { return impl_->threads_running == 0; }))
            impl_->ioc.stop();
    }
    for (std::thread& thread : impl_->threads) thread.join();
    impl_->threads.clear();
    {
        std::lock_guard lock(core.mutex);
        core.in_flight.clear();  // links still waiting for their backend: it may outlive us
        core.connections.clear();
    }
    core.drained.notify_all();
    // Links the backend still holds keep the core; they must not keep the backend too (it
    // would then be destroyed by one of its own threads). No io thread runs any more.
    core.backend.reset();
}

}  // namespace longcat::gateway
