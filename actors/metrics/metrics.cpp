#include "actors/metrics/metrics.hpp"

#include <civetweb.h>
#include <netdb.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <string_view>
#include <thread>

namespace longcat::metrics {

namespace {

// Label names that would give one series per request or per expert (ARCHITECTURE.md §11).
constexpr std::array<std::string_view, 8> kRefusedLabelNames{
    "request_id", "request", "req_id", "expert", "expert_idx", "expert_id", "token", "token_idx"};

bool is_name_char(char c, bool first, bool allow_colon) {
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (alpha || (allow_colon && c == ':')) return true;
    return !first && c >= '0' && c <= '9';
}

bool is_valid_name(std::string_view name, bool allow_colon) {
    if (name.empty()) return false;
    for (std::size_t pos = 0; pos < name.size(); ++pos) {
        if (!is_name_char(name[pos], pos == 0, allow_colon)) return false;
    }
    return true;
}

void check_metric_name(const std::string& name) {
    if (!name.starts_with("longcat_") || !is_valid_name(name, true)) {
        throw metrics_error("metric name '" + name +
                            "': must start with longcat_ and match [a-zA-Z_:][a-zA-Z0-9_:]*");
    }
}

void check_label_names(const labels& label_set, bool is_histogram) {
    for (const auto& [key, value] : label_set) {
        if (!is_valid_name(key, false) || key.starts_with("__") || (is_histogram && key == "le")) {
            throw metrics_error("label name '" + key + "' is not a valid Prometheus label name");
        }
        if (std::find(kRefusedLabelNames.begin(), kRefusedLabelNames.end(), key) !=
            kRefusedLabelNames.end()) {
            throw metrics_error("label '" + key +
                                "': per-request and per-expert labels are not allowed");
        }
    }
}

void check_buckets(const std::string& name, const std::vector<double>& buckets) {
    bool ok = !buckets.empty();
    for (std::size_t pos = 0; ok && pos < buckets.size(); ++pos) {
        ok = std::isfinite(buckets[pos]) && (pos == 0 || buckets[pos - 1] < buckets[pos]);
    }
    if (!ok) {
        throw metrics_error("histogram '" + name +
                            "': buckets must be finite, strictly increasing and not empty");
    }
}

template <typename metric_type>
prometheus::Family<metric_type>& register_family(prometheus::detail::Builder<metric_type> builder,
                                                 prometheus::Registry& registry,
                                                 const std::string& name, const std::string& help,
                                                 const labels& const_labels) {
    try {
        return builder.Name(name).Help(help).Labels(const_labels).Register(registry);
    } catch (const std::exception& e) {
        throw metrics_error("metric '" + name + "': " + e.what());
    }
}

template <typename metric_type, typename... args_type>
metric_type& add_metric(prometheus::Family<metric_type>& metrics, const labels& label_set,
                        args_type&&... args) {
    try {
        return metrics.Add(label_set, std::forward<args_type>(args)...);
    } catch (const std::exception& e) {
        throw metrics_error("metric '" + metrics.GetName() + "': " + e.what());
    }
}

}  // namespace

// -- bucket presets ---------------------------------------------------------------------------

std::vector<double> latency_seconds_buckets() {
    return {50e-6,  100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
            100e-3, 250e-3, 500e-3, 1.0,    2.5,  5.0,    10.0, 30.0,  60.0};
}

std::vector<double> bytes_buckets() { return exponential_buckets(256.0, 4.0, 13); }

std::vector<double> linear_buckets(double start, double width, int num_buckets) {
    std::vector<double> bounds;
    for (int bucket_idx = 0; bucket_idx < num_buckets; ++bucket_idx) {
        bounds.push_back(start + width * bucket_idx);
    }
    return bounds;
}

std::vector<double> exponential_buckets(double start, double factor, int num_buckets) {
    std::vector<double> bounds;
    double bound = start;
    for (int bucket_idx = 0; bucket_idx < num_buckets; ++bucket_idx, bound *= factor) {
        bounds.push_back(bound);
    }
    return bounds;
}

// -- handles ----------------------------------------------------------------------------------

void counter::inc(double amount) {
    if (metric_) metric_->Increment(amount);
}
double counter::value() const { return metric_ ? metric_->Value() : 0.0; }

void gauge::set(double value) {
    if (metric_) metric_->Set(value);
}
void gauge::inc(double amount) {
    if (metric_) metric_->Increment(amount);
}
void gauge::dec(double amount) {
    if (metric_) metric_->Decrement(amount);
}
double gauge::value() const { return metric_ ? metric_->Value() : 0.0; }

void histogram::observe(double value) {
    if (metric_) metric_->Observe(value);
}

template <typename handle_type>
handle_type family<handle_type>::with(const labels& label_set) const {
    if (!family_) return handle_type{};
    check_label_names(label_set, std::is_same_v<handle_type, histogram>);
    if constexpr (std::is_same_v<handle_type, histogram>) {
        return handle_type{&add_metric(*family_, label_set, buckets_)};
    } else {
        return handle_type{&add_metric(*family_, label_set)};
    }
}

template class family<counter>;
template class family<gauge>;
template class family<histogram>;

// -- registry ---------------------------------------------------------------------------------

metrics_registry::metrics_registry(labels const_labels)
    : const_labels_(std::move(const_labels)), registry_(std::make_shared<prometheus::Registry>()) {
    check_label_names(const_labels_, true);
}

metrics_registry::~metrics_registry() = default;

counter_family metrics_registry::add_counter_family(const std::string& name,
                                                    const std::string& help) {
    check_metric_name(name);
    if (!name.ends_with("_total")) {
        throw metrics_error("counter '" + name + "': counter names end with _total");
    }
    return counter_family{
        &register_family(prometheus::BuildCounter(), *registry_, name, help, const_labels_), {}};
}

counter metrics_registry::add_counter(const std::string& name, const std::string& help) {
    return add_counter_family(name, help).with({});
}

gauge_family metrics_registry::add_gauge_family(const std::string& name, const std::string& help) {
    check_metric_name(name);
    return gauge_family{
        &register_family(prometheus::BuildGauge(), *registry_, name, help, const_labels_), {}};
}

gauge metrics_registry::add_gauge(const std::string& name, const std::string& help) {
    return add_gauge_family(name, help).with({});
}

histogram_family metrics_registry::add_histogram_family(const std::string& name,
                                                        const std::string& help,
                                                        std::vector<double> buckets) {
    check_metric_name(name);
    check_buckets(name, buckets);
    return histogram_family{
        &register_family(prometheus::BuildHistogram(), *registry_, name, help, const_labels_),
        std::move(buckets)};
}

histogram metrics_registry::add_histogram(const std::string& name, const std::string& help,
                                          std::vector<double> buckets) {
    return add_histogram_family(name, help, std::move(buckets)).with({});
}

stage_histogram metrics_registry::add_stage_histogram(const std::string& name,
                                                      const std::string& help,
                                                      std::span<const std::string_view> stage_names,
                                                      const std::string& label_name,
                                                      std::vector<double> buckets) {
    const histogram_family metrics = add_histogram_family(name, help, std::move(buckets));
    std::vector<histogram> stages;
    stages.reserve(stage_names.size());
    for (const std::string_view stage_name : stage_names) {
        stages.push_back(metrics.with({{label_name, std::string(stage_name)}}));
    }
    return stage_histogram{std::move(stages)};
}

std::string metrics_registry::expose() const {
    return prometheus::TextSerializer{}.Serialize(registry_->Collect());
}

metrics_registry& process_registry() {
    static metrics_registry registry;
    return registry;
}

// -- server -----------------------------------------------------------------------------------

namespace {

// civetweb's one-time global set-up; mg_start would do it implicitly, but not thread-safely.
void init_civetweb_once() {
    static std::once_flag once;
    std::call_once(once, [] { mg_init_library(0); });
}

// The header is formatted here and written with mg_write: civetweb's header functions go
// through printf, whose positional path (libquadmath, loaded with OpenBLAS, registers printf
// handlers) needs more stack than civetweb's fixed 100 KiB worker stacks leave once OpenBLAS's
// 60 KiB of thread-local storage is carved out of them (a stack overflow under ASan).
int send_response(mg_connection* conn, int status, const char* content_type,
                  std::string_view body) {
    std::string header = "HTTP/1.1 " + std::to_string(status) + " " +
                         mg_get_response_code_text(conn, status) + "\r\nContent-Type: " + content_type +
                         "\r\nContent-Length: " + std::to_string(body.size()) +
                         "\r\nCache-Control: no-store\r\nConnection: close\r\n";
    if (status == 405) header += "Allow: GET, HEAD\r\n";
    header += "\r\n";
    mg_write(conn, header.data(), header.size());
    const mg_request_info* info = mg_get_request_info(conn);
    if (std::strcmp(info->request_method, "HEAD") != 0) mg_write(conn, body.data(), body.size());
    return status;
}

// The request's path is exactly `path` and the method GET or HEAD; otherwise answers 404/405
// and returns that status, else 0.
int reject_unless(mg_connection* conn, const char* path) {
    const mg_request_info* info = mg_get_request_info(conn);
    if (std::strcmp(info->local_uri, path) != 0) {
        return send_response(conn, 404, "text/plain; charset=utf-8", "not found\n");
    }
    if (std::strcmp(info->request_method, "GET") != 0 &&
        std::strcmp(info->request_method, "HEAD") != 0) {
        return send_response(conn, 405, "text/plain; charset=utf-8", "method not allowed\n");
    }
    return 0;
}

// Connects to host:port and closes at once (see metrics_server::stop()).
void poke(const std::string& host, int port) {
    const std::string name = host == "0.0.0.0" ? "127.0.0.1" : host;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (::getaddrinfo(name.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return;
    const int sock = ::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock >= 0) {
        ::connect(sock, found->ai_addr, found->ai_addrlen);
        ::close(sock);
    }
    ::freeaddrinfo(found);
}

// The host of "host:port"; empty for a bare port (refused by the constructor: civetweb would
// take it for every interface, and a service binds only the address it is given).
std::string host_of(const std::string& listen_address) {
    const std::size_t colon = listen_address.rfind(':');
    if (colon == std::string::npos || colon == 0) return "";
    return listen_address.substr(0, colon);
}

}  // namespace

metrics_server::metrics_server(const metrics_registry& registry, const metrics_server_options& opts)
    : registry_(registry), host_(host_of(opts.listen_address)) {
    if (host_.empty() || opts.listen_address.find(',') != std::string::npos) {
        throw metrics_error("metrics_server: listen_address '" + opts.listen_address +
                            "' must be one host:port (e.g. 127.0.0.1:9464; 0.0.0.0:9464 for every "
                            "interface)");
    }
    if (opts.num_threads < 1) throw metrics_error("metrics_server: num_threads must be >= 1");
    init_civetweb_once();

    const std::string num_threads = std::to_string(opts.num_threads);
    const char* options[] = {"listening_ports",
                             opts.listen_address.c_str(),
                             "num_threads",
                             num_threads.c_str(),
                             "enable_keep_alive",
                             "no",
                             "request_timeout_ms",
                             "10000",
                             nullptr};
    // Every request goes to handle_any through begin_request, which is part of the start-up
    // configuration: a handler registered after mg_start2 (mg_set_request_handler) leaves a window
    // in which a request — the launcher polls /readyz from the moment it spawns us — reaches
    // civetweb's own "not found" page, whose printf overflows civetweb's small worker stacks
    // under AddressSanitizer (seen in CI). Only requests civetweb cannot parse (malformed,
    // oversized, a bad HTTP version) still get its own 400/413/505 pages, before any callback.
    mg_callbacks callbacks{};
    callbacks.begin_request = [](mg_connection* conn) -> int {
        return handle_any(conn, mg_get_user_data(mg_get_context(conn)));
    };
    mg_init_data init{&callbacks, this, options};
    char error_text[256] = {};
    unsigned error_code = 0;
    mg_error_data error{&error_code, error_text, sizeof(error_text)};
    ctx_ = mg_start2(&init, &error);
    if (!ctx_) {
        throw metrics_error("metrics_server: cannot serve on " + opts.listen_address + ": " +
                            (error_text[0] ? error_text : "civetweb failed to start"));
    }
    mg_server_port ports[4] = {};
    const int num_ports = mg_get_server_ports(ctx_, 4, ports);
    if (num_ports < 1 || ports[0].port <= 0) {
        stop();
        throw metrics_error("metrics_server: no listening port for " + opts.listen_address);
    }
    port_ = ports[0].port;
}

metrics_server::~metrics_server() { stop(); }

std::string metrics_server::url() const {
    const std::string host = host_ == "0.0.0.0" ? "127.0.0.1" : host_;
    return "http://" + host + ":" + std::to_string(port_);
}

void metrics_server::set_ready() { ready_.store(true, std::memory_order_release); }

void metrics_server::set_not_ready(std::string reason) {
    {
        std::lock_guard lock(reason_mutex_);
        reason_ = std::move(reason);
    }
    ready_.store(false, std::memory_order_release);
}

std::string metrics_server::not_ready_reason() const {
    std::lock_guard lock(reason_mutex_);
    return reason_;
}

void metrics_server::stop() {
    if (!ctx_) return;
    // NOTES: civetweb's accept loop polls with a 2 s timeout and sees mg_stop's flag only when
    // the poll returns; connecting to our own port makes it return now (stop: ~10 ms, not 2 s).
    std::atomic<bool> stopped{false};
    std::thread waker([this, &stopped] {
        while (!stopped.load(std::memory_order_acquire)) {
            poke(host_, port_);
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    });
    mg_stop(ctx_);
    stopped.store(true, std::memory_order_release);
    waker.join();
    ctx_ = nullptr;
}

int metrics_server::handle_any(mg_connection* conn, void* self) {
    const char* uri = mg_get_request_info(conn)->local_uri;
    if (std::strcmp(uri, "/metrics") == 0) return handle_metrics(conn, self);
    if (std::strcmp(uri, "/healthz") == 0) return handle_healthz(conn, self);
    if (std::strcmp(uri, "/readyz") == 0) return handle_readyz(conn, self);
    return send_response(conn, 404, "text/plain; charset=utf-8", "not found\n");
}

int metrics_server::handle_metrics(mg_connection* conn, void* self) {
    if (const int status = reject_unless(conn, "/metrics")) return status;
    try {
        const std::string text = static_cast<metrics_server*>(self)->registry_.expose();
        return send_response(conn, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    } catch (const std::exception& e) {
        return send_response(conn, 500, "text/plain; charset=utf-8", e.what());
    }
}

int metrics_server::handle_healthz(mg_connection* conn, void* self) {
    if (const int status = reject_unless(conn, "/healthz")) return status;
    return send_response(conn, 200, "text/plain; charset=utf-8", "ok\n");
}

int metrics_server::handle_readyz(mg_connection* conn, void* self) {
    if (const int status = reject_unless(conn, "/readyz")) return status;
    const auto* server = static_cast<metrics_server*>(self);
    if (server->ready()) return send_response(conn, 200, "text/plain; charset=utf-8", "ready\n");
    try {
        return send_response(conn, 503, "text/plain; charset=utf-8",
                             server->not_ready_reason() + "\n");
    } catch (const std::exception& e) {
        return send_response(conn, 500, "text/plain; charset=utf-8", e.what());
    }
}

}  // namespace longcat::metrics
