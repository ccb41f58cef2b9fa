// metrics: the process's one Prometheus registry and the HTTP server that exposes it
// (ARCHITECTURE.md §11).
// Owns: the prometheus-cpp Registry (metrics_registry) and a civetweb server (metrics_server).
// Serves: GET /metrics (text exposition 0.0.4), /healthz (200 "ok"), /readyz (200 "ready", or
// 503 with the reason the service gave).
//
// Usage: at start-up a service resolves every metric it records into a handle (counter, gauge,
// histogram, a stage_histogram's per-stage histograms) and keeps the handles; the hot path then
// touches one pre-resolved metric object, never a map or a label lookup.
//
// NOTES:
// - Names start with `longcat_`; counter names end with `_total`. Labels are for small, fixed
//   sets (outcome, stage, wait kind, expert group). Per-request and per-expert labels are
//   refused (request_id, expert, expert_idx, ...): they would grow the series without bound.
// - Registering the same name twice with the same type and labels returns the same metric, so
//   two components may both ask for `longcat_preemptions_total`.
// - Constant labels (the registry's) come first in the exposition, then the family's labels.
// - Handles are small values (one pointer), cheap to copy, valid as long as the registry is. A
//   default-constructed handle records nothing.
// - Cost of one observation (prometheus-cpp 1.0.1): counter/gauge, one atomic CAS loop on a
//   double; histogram, one mutex lock plus a linear scan of the buckets. A stage_timer adds two
//   steady_clock reads. Fine per stage per layer; do not put one in a per-token inner loop.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

struct mg_context;
struct mg_connection;

namespace longcat::metrics {

// The one exception type of this library: a bad metric name or label, an address that cannot
// be bound. Thrown at set-up only, never by a handle or a timer.
class metrics_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

using labels = std::map<std::string, std::string>;

// -- bucket presets ---------------------------------------------------------------------------

// Latency in seconds, 50 µs .. 60 s in 1-2.5-5 steps: the bottom covers one stage of one layer,
// the top a long end-to-end request.
std::vector<double> latency_seconds_buckets();
// Sizes in bytes, 256 B .. 4 GiB, ×4 per bucket (a header-only frame .. a KV transfer).
std::vector<double> bytes_buckets();
// num_buckets bounds start, start + width, ... (small counts, e.g. real experts per token).
std::vector<double> linear_buckets(double start, double width, int num_buckets);
// num_buckets bounds start, start·factor, start·factor², ...
std::vector<double> exponential_buckets(double start, double factor, int num_buckets);

// -- handles ----------------------------------------------------------------------------------

// A monotonically increasing value. inc() ignores negative amounts (Prometheus semantics).
class counter {
public:
    counter() = default;
    void inc(double amount = 1.0);
    double value() const;  // 0 for a default-constructed handle

private:
    friend class metrics_registry;
    template <typename>
    friend class family;
    explicit counter(prometheus::Counter* metric) : metric_(metric) {}
    prometheus::Counter* metric_ = nullptr;
};

// A value that goes up and down (queue depth, pages free, placement version).
class gauge {
public:
    gauge() = default;
    void set(double value);
    void inc(double amount = 1.0);
    void dec(double amount = 1.0);
    double value() const;

private:
    friend class metrics_registry;
    template <typename>
    friend class family;
    explicit gauge(prometheus::Gauge* metric) : metric_(metric) {}
    prometheus::Gauge* metric_ = nullptr;
};

// A distribution over fixed buckets; exposed as _bucket{le=...}, _sum and _count.
class histogram {
public:
    histogram() = default;
    void observe(double value);

private:
    friend class metrics_registry;
    template <typename>
    friend class family;
    explicit histogram(prometheus::Histogram* metric) : metric_(metric) {}
    prometheus::Histogram* metric_ = nullptr;
};

namespace detail {
template <typename handle_type>
struct metric_of;
template <>
struct metric_of<counter> {
    using type = prometheus::Counter;
};
template <>
struct metric_of<gauge> {
    using type = prometheus::Gauge;
};
template <>
struct metric_of<histogram> {
    using type = prometheus::Histogram;
};
}  // namespace detail

// A metric name with labels: resolve each label set once with with(), keep the handle.
// handle_type is counter, gauge or histogram.
template <typename handle_type>
class family {
    using metric_family = prometheus::Family<typename detail::metric_of<handle_type>::type>;

public:
    family() = default;
    // Same labels → same metric. Throws metrics_error for a refused label name (see NOTES).
    handle_type with(const labels& label_set) const;

private:
    friend class metrics_registry;
    family(metric_family* metrics, std::vector<double> buckets)
        : family_(metrics), buckets_(std::move(buckets)) {}
    metric_family* family_ = nullptr;
    std::vector<double> buckets_;  // histograms only
};

using counter_family = family<counter>;
using gauge_family = family<gauge>;
using histogram_family = family<histogram>;

// One histogram per stage of a fixed stage list, all in one metric with one label (`stage` by
// default). stage(idx) is an index into a vector of pre-resolved histograms.
class stage_histogram {
public:
    stage_histogram() = default;
    std::size_t num_stages() const { return stages_.size(); }
    // stage_idx < num_stages(); out of range gives a default handle (records nothing).
    histogram stage(std::size_t stage_idx) const {
        return stage_idx < stages_.size() ? stages_[stage_idx] : histogram{};
    }
    template <typename stage_enum>
        requires std::is_enum_v<stage_enum>
    histogram stage(stage_enum value) const {
        return stage(static_cast<std::size_t>(value));
    }

private:
    friend class metrics_registry;
    explicit stage_histogram(std::vector<histogram> stages) : stages_(std::move(stages)) {}
    std::vector<histogram> stages_;
};

// Measures wall time from construction to stop() (or destruction) and observes it, in seconds,
// on one histogram. stop() observes once and returns the seconds; cancel() observes nothing.
class stage_timer {
public:
    using clock = std::chrono::steady_clock;

    explicit stage_timer(histogram target) : target_(target), start_(clock::now()) {}
    template <typename stage_enum>
        requires std::is_enum_v<stage_enum>
    stage_timer(const stage_histogram& stages, stage_enum value)
        : stage_timer(stages.stage(value)) {}
    ~stage_timer() { stop(); }
    stage_timer(const stage_timer&) = delete;
    stage_timer& operator=(const stage_timer&) = delete;

    double stop() {
        if (!running_) return 0.0;
        running_ = false;
        const double seconds = std::chrono::duration<double>(clock::now() - start_).count();
        target_.observe(seconds);
        return seconds;
    }
    void cancel() { running_ = false; }

private:
    histogram target_;
    clock::time_point start_;
    bool running_ = true;
};

// -- the stage lists the services use -----------------------------------------------------------

// The stages of one layer on an attention worker (ARCHITECTURE.md §4) plus the expert group's
// compute; label `stage`.
enum class layer_stage { front, experts, mid, back, join };
inline constexpr std::array<std::string_view, 5> kLayerStageNames{"front", "experts", "mid", "back",
                                                                  "join"};
// The data-plane waits that count as exposed communication (ARCHITECTURE.md §4); label `wait`.
enum class wait_kind { dispatch, tp_collective, combine };
inline constexpr std::array<std::string_view, 3> kWaitKindNames{"dispatch", "tp_collective",
                                                                "combine"};

// -- registry ---------------------------------------------------------------------------------

class metrics_registry {
public:
    // const_labels go on every series of this registry (e.g. {{"service", "experts"}}).
    explicit metrics_registry(labels const_labels = {});
    ~metrics_registry();
    metrics_registry(const metrics_registry&) = delete;
    metrics_registry& operator=(const metrics_registry&) = delete;

    // Each add_* throws metrics_error for a name without the `longcat_` prefix, an invalid
    // Prometheus name, a counter name without `_total`, or a name already used with another
    // type. A repeated name with the same type returns the first registration (its help text
    // stays).
    counter add_counter(const std::string& name, const std::string& help);
    counter_family add_counter_family(const std::string& name, const std::string& help);
    gauge add_gauge(const std::string& name, const std::string& help);
    gauge_family add_gauge_family(const std::string& name, const std::string& help);
    histogram add_histogram(const std::string& name, const std::string& help,
                            std::vector<double> buckets);
    histogram_family add_histogram_family(const std::string& name, const std::string& help,
                                          std::vector<double> buckets);
    // One histogram per name in stage_names, labelled label_name="<stage name>"; stage(i) is
    // stage_names[i], so an enum listed in the same order indexes it.
    stage_histogram add_stage_histogram(const std::string& name, const std::string& help,
                                        std::span<const std::string_view> stage_names,
                                        const std::string& label_name = "stage",
                                        std::vector<double> buckets = latency_seconds_buckets());

    // The text exposition of everything registered (what GET /metrics returns).
    std::string expose() const;
    // For code that needs prometheus-cpp directly (a push gateway, a custom Collectable).
    const std::shared_ptr<prometheus::Registry>& prometheus_registry() const { return registry_; }

private:
    labels const_labels_;
    std::shared_ptr<prometheus::Registry> registry_;
};

// The registry of this process; services register everything here so one /metrics shows it
// all. Tests may make their own metrics_registry instead.
metrics_registry& process_registry();

// -- server -----------------------------------------------------------------------------------

struct metrics_server_options {
    // IPv4 host:port ("127.0.0.1:0", "0.0.0.0:9464" for every interface; a bare port is
    // refused: the address is always said); port 0
    // lets the kernel pick a free port, read it back with port(). No IPv6: Debian's civetweb
    // 1.15 is built without it.
    std::string listen_address = "127.0.0.1:0";
    int num_threads = 2;  // civetweb worker threads; one request at a time per thread
};

// Serves /metrics, /healthz and /readyz from one civetweb server on one port. Starts in the
// constructor (throws metrics_error when the address cannot be bound) and stops in stop() or
// the destructor; when stop() returns the port is closed. The registry must outlive the server.
//
// NOTES: civetweb is used directly, not through prometheus::Exposer: Exposer 1.0.1 keeps its
// CivetServer private and its endpoints always answer 200 with exposition text, so /readyz
// could not answer 503 on the same port. Keep-alive stays off (civetweb's default): an idle
// keep-alive connection would hold one of the few worker threads.
class metrics_server {
public:
    explicit metrics_server(const metrics_registry& registry,
                            const metrics_server_options& opts = {});
    ~metrics_server();
    metrics_server(const metrics_server&) = delete;
    metrics_server& operator=(const metrics_server&) = delete;

    int port() const { return port_; }                 // the bound port (the chosen one for :0)
    const std::string& host() const { return host_; }  // host part of listen_address
    std::string url() const;                           // "http://host:port"

    // /readyz answers 200 "ready" after set_ready(), 503 "<reason>" after set_not_ready(reason).
    // Starts not ready with reason "starting".
    void set_ready();
    void set_not_ready(std::string reason);
    bool ready() const { return ready_.load(std::memory_order_acquire); }

    void stop();  // idempotent, one caller at a time; waits for requests in flight, ~10 ms

private:
    static int handle_any(mg_connection* conn, void* self);
    static int handle_metrics(mg_connection* conn, void* self);
    static int handle_healthz(mg_connection* conn, void* self);
    static int handle_readyz(mg_connection* conn, void* self);
    std::string not_ready_reason() const;

    const metrics_registry& registry_;
    mg_context* ctx_ = nullptr;
    std::string host_;
    int port_ = 0;
    std::atomic<bool> ready_{false};
    mutable std::mutex reason_mutex_;
    std::string reason_ = "starting";
};

}  // namespace longcat::metrics
