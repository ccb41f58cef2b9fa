// Tests for actors/metrics: registry rules and exposition text, the HTTP server read with a real
// client (libcurl), readiness, clean stop, and a real Prometheus server scraping it.
#include "actors/metrics/metrics.hpp"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/temp_dir.hpp"

extern char** environ;

namespace longcat::metrics {
namespace {

using namespace std::chrono_literals;

// -- a tiny HTTP client -----------------------------------------------------------------------

struct http_response {
    CURLcode code = CURLE_OK;  // transport result; status/body are valid when CURLE_OK
    long status = 0;
    std::string body;
    std::string content_type;
};

size_t append_body(char* data, size_t size, size_t count, void* out) {
    static_cast<std::string*>(out)->append(data, size * count);
    return size * count;
}

http_response http_request(const std::string& url, const char* method = "GET") {
    http_response response;
    CURL* curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &append_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
    if (std::string_view(method) == "HEAD") {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (std::string_view(method) == "POST") {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    }
    response.code = curl_easy_perform(curl);
    if (response.code == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
        const char* content_type = nullptr;
        curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &content_type);
        if (content_type) response.content_type = content_type;
    }
    curl_easy_cleanup(curl);
    return response;
}

std::string url_encode(const std::string& text) {
    char* escaped = curl_easy_escape(nullptr, text.c_str(), static_cast<int>(text.size()));
    std::string out(escaped);
    curl_free(escaped);
    return out;
}

bool has_line(const std::string& text, const std::string& line) {
    std::istringstream lines(text);
    for (std::string current; std::getline(lines, current);) {
        if (current == line) return true;
    }
    return false;
}

#define EXPECT_LINE(text, line) \
    EXPECT_TRUE(has_line(text, line)) << "missing line: " << (line) << "\nin:\n" << (text)

// A port that was free a moment ago (bind to :0, read it, close).
int free_port() {
    const int sock = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    int port = 0;
    if (::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(sock, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        port = ntohs(addr.sin_port);
    }
    ::close(sock);
    return port;
}

// -- registry ---------------------------------------------------------------------------------

TEST(metrics_registry, counter_gauge_histogram_exposition) {
    metrics_registry registry;
    counter requests = registry.add_counter("longcat_test_requests_total", "Requests.");
    gauge depth = registry.add_gauge("longcat_test_queue_depth", "Queue depth.");
    histogram latency =
        registry.add_histogram("longcat_test_latency_seconds", "Latency.", {0.5, 1.0, 2.0});

    for (int call_idx = 0; call_idx < 3; ++call_idx) requests.inc();
    depth.set(7);
    depth.inc(2);
    depth.dec();
    latency.observe(0.25);
    latency.observe(0.75);
    latency.observe(4.0);

    EXPECT_EQ(requests.value(), 3.0);
    EXPECT_EQ(depth.value(), 8.0);
    const std::string text = registry.expose();
    EXPECT_LINE(text, "# TYPE longcat_test_requests_total counter");
    EXPECT_LINE(text, "longcat_test_requests_total 3");
    EXPECT_LINE(text, "# TYPE longcat_test_queue_depth gauge");
    EXPECT_LINE(text, "longcat_test_queue_depth 8");
    EXPECT_LINE(text, "# TYPE longcat_test_latency_seconds histogram");
    EXPECT_LINE(text, "longcat_test_latency_seconds_count 3");
    EXPECT_LINE(text, "longcat_test_latency_seconds_sum 5");
    EXPECT_LINE(text, "longcat_test_latency_seconds_bucket{le=\"0.5\"} 1");
    EXPECT_LINE(text, "longcat_test_latency_seconds_bucket{le=\"1\"} 2");
    EXPECT_LINE(text, "longcat_test_latency_seconds_bucket{le=\"2\"} 2");
    EXPECT_LINE(text, "longcat_test_latency_seconds_bucket{le=\"+Inf\"} 3");
}

TEST(metrics_registry, families_const_labels_and_reregistration) {
    metrics_registry registry(labels{{"service", "test"}});
    const counter_family outcomes =
        registry.add_counter_family("longcat_test_outcomes_total", "Requests by outcome.");
    counter ok = outcomes.with({{"outcome", "ok"}});
    counter error = outcomes.with({{"outcome", "error"}});
    ok.inc();
    ok.inc();
    error.inc(5);
    error.inc(-1);  // ignored: counters only go up

    // Same name, type and help: the same metric.
    counter again =
        registry.add_counter_family("longcat_test_outcomes_total", "Requests by outcome.")
            .with({{"outcome", "ok"}});
    again.inc();
    EXPECT_EQ(ok.value(), 3.0);

    const std::string text = registry.expose();
    EXPECT_LINE(text, "longcat_test_outcomes_total{service=\"test\",outcome=\"ok\"} 3");
    EXPECT_LINE(text, "longcat_test_outcomes_total{service=\"test\",outcome=\"error\"} 5");
}

TEST(metrics_registry, refuses_bad_names_and_unbounded_labels) {
    metrics_registry registry;
    EXPECT_THROW(registry.add_counter("requests_total", "no prefix"), metrics_error);
    EXPECT_THROW(registry.add_counter("longcat_requests", "no _total"), metrics_error);
    EXPECT_THROW(registry.add_gauge("longcat_bad-name", "dash"), metrics_error);
    EXPECT_THROW(registry.add_histogram("longcat_h_seconds", "unsorted", {1.0, 0.5}),
                 metrics_error);
    EXPECT_THROW(registry.add_histogram("longcat_h_seconds", "empty", {}), metrics_error);

    registry.add_gauge("longcat_taken", "a gauge");
    EXPECT_THROW(registry.add_counter_family("longcat_taken", "now a counter"), metrics_error);
    EXPECT_NO_THROW(registry.add_gauge("longcat_taken", "other help"));  // the first help stays

    const gauge_family load = registry.add_gauge_family("longcat_test_load", "Load.");
    EXPECT_NO_THROW(load.with({{"expert_group", "3"}}));
    EXPECT_THROW(load.with({{"request_id", "r-1"}}), metrics_error);
    EXPECT_THROW(load.with({{"expert_idx", "17"}}), metrics_error);
    EXPECT_THROW(load.with({{"__reserved", "x"}}), metrics_error);
    const histogram_family hist =
        registry.add_histogram_family("longcat_test_h_seconds", "H.", {1.0});
    EXPECT_THROW(hist.with({{"le", "1"}}), metrics_error);
}

TEST(metrics_registry, default_handles_record_nothing) {
    counter c;
    gauge g;
    histogram h;
    c.inc();
    g.set(3);
    h.observe(1);
    EXPECT_EQ(c.value(), 0.0);
    EXPECT_EQ(g.value(), 0.0);
    const stage_histogram stages;
    stage_timer timer(stages, layer_stage::join);  // out of range: records nothing, no crash
}

TEST(metrics_registry, bucket_presets) {
    const std::vector<double> latency = latency_seconds_buckets();
    EXPECT_EQ(latency.front(), 50e-6);
    EXPECT_EQ(latency.back(), 60.0);
    EXPECT_TRUE(std::is_sorted(latency.begin(), latency.end()));
    const std::vector<double> bytes = bytes_buckets();
    EXPECT_EQ(bytes.front(), 256.0);
    EXPECT_EQ(bytes.back(), 4.0 * 1024 * 1024 * 1024);
    EXPECT_EQ(linear_buckets(0, 1, 4), (std::vector<double>{0, 1, 2, 3}));
    EXPECT_EQ(exponential_buckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
}

TEST(metrics_registry, process_registry_is_one_instance) {
    EXPECT_EQ(&process_registry(), &process_registry());
}

// -- stage histograms and timers ----------------------------------------------------------------

TEST(stage_timer, observes_each_stage_once) {
    metrics_registry registry;
    const stage_histogram stages = registry.add_stage_histogram(
        "longcat_test_stage_seconds", "Per-stage time.", kLayerStageNames);
    ASSERT_EQ(stages.num_stages(), 5u);
    {
        stage_timer timer(stages, layer_stage::mid);
        std::this_thread::sleep_for(2ms);
    }
    {
        stage_timer timer(stages.stage(layer_stage::join));
        const double seconds = timer.stop();
        EXPECT_GE(seconds, 0.0);
        EXPECT_EQ(timer.stop(), 0.0);  // already stopped: no second observation
    }
    {
        stage_timer timer(stages, layer_stage::back);
        timer.cancel();
    }
    const std::string text = registry.expose();
    EXPECT_LINE(text, "longcat_test_stage_seconds_count{stage=\"mid\"} 1");
    EXPECT_LINE(text, "longcat_test_stage_seconds_count{stage=\"join\"} 1");
    EXPECT_LINE(text, "longcat_test_stage_seconds_count{stage=\"back\"} 0");
    EXPECT_LINE(text, "longcat_test_stage_seconds_count{stage=\"front\"} 0");
    EXPECT_LINE(text, "longcat_test_stage_seconds_count{stage=\"experts\"} 0");
    // 2 ms sleep lands above the 1 ms bound and at or below 60 s.
    EXPECT_LINE(text, "longcat_test_stage_seconds_bucket{stage=\"mid\",le=\"0.001\"} 0");
    EXPECT_LINE(text, "longcat_test_stage_seconds_bucket{stage=\"mid\",le=\"60\"} 1");
}

TEST(stage_timer, wait_kinds_use_their_own_label) {
    metrics_registry registry;
    const stage_histogram waits = registry.add_stage_histogram(
        "longcat_test_wait_seconds", "Exposed communication.", kWaitKindNames, "wait");
    { stage_timer timer(waits, wait_kind::combine); }
    const std::string text = registry.expose();
    EXPECT_LINE(text, "longcat_test_wait_seconds_count{wait=\"combine\"} 1");
    EXPECT_LINE(text, "longcat_test_wait_seconds_count{wait=\"dispatch\"} 0");
}

// -- server -----------------------------------------------------------------------------------

TEST(metrics_server, serves_metrics_over_http) {
    metrics_registry registry;
    counter requests = registry.add_counter("longcat_test_requests_total", "Requests.");
    histogram sizes =
        registry.add_histogram("longcat_test_frame_bytes", "Frame sizes.", {1024.0, 4096.0});
    requests.inc();
    requests.inc();
    requests.inc();
    sizes.observe(512);
    sizes.observe(2048);

    metrics_server server(registry);
    ASSERT_GT(server.port(), 0);
    EXPECT_EQ(server.url(), "http://127.0.0.1:" + std::to_string(server.port()));

    const http_response response = http_request(server.url() + "/metrics");
    ASSERT_EQ(response.code, CURLE_OK) << curl_easy_strerror(response.code);
    EXPECT_EQ(response.status, 200);
    EXPECT_EQ(response.content_type, "text/plain; version=0.0.4; charset=utf-8");
    EXPECT_EQ(response.body, registry.expose());
    EXPECT_LINE(response.body, "longcat_test_requests_total 3");
    EXPECT_LINE(response.body, "longcat_test_frame_bytes_count 2");
    EXPECT_LINE(response.body, "longcat_test_frame_bytes_sum 2560");
    EXPECT_LINE(response.body, "longcat_test_frame_bytes_bucket{le=\"1024\"} 1");
    EXPECT_LINE(response.body, "longcat_test_frame_bytes_bucket{le=\"4096\"} 2");
    EXPECT_LINE(response.body, "longcat_test_frame_bytes_bucket{le=\"+Inf\"} 2");

    // Later increments show up in the next scrape.
    requests.inc();
    EXPECT_LINE(http_request(server.url() + "/metrics").body, "longcat_test_requests_total 4");
}

TEST(metrics_server, healthz_readyz_and_unknown_paths) {
    metrics_registry registry;
    metrics_server server(registry, {.listen_address = "127.0.0.1:0"});
    const std::string base = server.url();

    http_response health = http_request(base + "/healthz");
    ASSERT_EQ(health.code, CURLE_OK) << curl_easy_strerror(health.code);
    EXPECT_EQ(health.status, 200);
    EXPECT_EQ(health.body, "ok\n");

    EXPECT_FALSE(server.ready());
    http_response ready = http_request(base + "/readyz");
    EXPECT_EQ(ready.status, 503);
    EXPECT_EQ(ready.body, "starting\n");

    server.set_not_ready("loading weights");
    ready = http_request(base + "/readyz");
    EXPECT_EQ(ready.status, 503);
    EXPECT_EQ(ready.body, "loading weights\n");

    server.set_ready();
    EXPECT_TRUE(server.ready());
    ready = http_request(base + "/readyz");
    EXPECT_EQ(ready.status, 200);
    EXPECT_EQ(ready.body, "ready\n");

    server.set_not_ready("draining");
    ready = http_request(base + "/readyz");
    EXPECT_EQ(ready.status, 503);
    EXPECT_EQ(ready.body, "draining\n");

    EXPECT_EQ(http_request(base + "/healthz", "HEAD").status, 200);
    EXPECT_EQ(http_request(base + "/metrics", "POST").status, 405);
    EXPECT_EQ(http_request(base + "/metrics/extra").status, 404);
    EXPECT_EQ(http_request(base + "/").status, 404);
    EXPECT_EQ(http_request(base + "/nothing").status, 404);
    EXPECT_EQ(http_request(base + "/metrics?name=x").status, 200);
}

TEST(metrics_server, stop_releases_the_port) {
    metrics_registry registry;
    registry.add_counter("longcat_test_requests_total", "Requests.").inc();
    auto server = std::make_unique<metrics_server>(registry);
    const int port = server->port();
    const std::string url = server->url() + "/healthz";
    ASSERT_EQ(http_request(url).status, 200);

    const auto stop_start = std::chrono::steady_clock::now();
    server->stop();
    EXPECT_LT(std::chrono::steady_clock::now() - stop_start, 1s);  // not civetweb's 2 s poll
    server->stop();                                                // idempotent
    EXPECT_EQ(http_request(url).code, CURLE_COULDNT_CONNECT);
    server.reset();

    // The same port can be bound again at once.
    const std::string address = "127.0.0.1:" + std::to_string(port);
    metrics_server again(registry, {.listen_address = address});
    EXPECT_EQ(again.port(), port);
    EXPECT_EQ(http_request(url).status, 200);
}

TEST(metrics_server, port_in_use_is_an_error) {
    metrics_registry registry;
    metrics_server first(registry);
    const std::string address = "127.0.0.1:" + std::to_string(first.port());
    EXPECT_THROW((void)metrics_server(registry, {.listen_address = address}), metrics_error);
    EXPECT_THROW((void)metrics_server(registry, {.listen_address = "127.0.0.1:0,127.0.0.1:0"}),
                 metrics_error);
    // A bare port would be every interface: refused, the address must be said.
    for (const std::string bare : {"9464", ":9464", ""}) {
        try {
            (void)metrics_server(registry, {.listen_address = bare});
            ADD_FAILURE() << "'" << bare << "' accepted";
        } catch (const metrics_error& e) {
            EXPECT_NE(std::string(e.what()).find("'" + bare + "' must be one host:port"),
                      std::string::npos)
                << e.what();
        }
    }
    EXPECT_THROW(
        (void)metrics_server(registry, {.listen_address = "127.0.0.1:0", .num_threads = 0}),
        metrics_error);
    // The first server is unaffected.
    EXPECT_EQ(http_request(first.url() + "/healthz").status, 200);
}

TEST(metrics_server, scrapes_while_recording_from_threads) {
    metrics_registry registry;
    counter hits = registry.add_counter("longcat_test_hits_total", "Hits.");
    const stage_histogram stages = registry.add_stage_histogram(
        "longcat_test_stage_seconds", "Per-stage time.", kLayerStageNames);
    metrics_server server(registry);
    constexpr int kNumThreads = 4;
    constexpr int kNumPerThread = 5000;
    std::vector<std::thread> threads;
    for (int thread_idx = 0; thread_idx < kNumThreads; ++thread_idx) {
        threads.emplace_back([&] {
            for (int call_idx = 0; call_idx < kNumPerThread; ++call_idx) {
                hits.inc();
                stage_timer timer(stages, layer_stage::experts);
            }
        });
    }
    for (int scrape_idx = 0; scrape_idx < 20; ++scrape_idx) {
        EXPECT_EQ(http_request(server.url() + "/metrics").status, 200);
    }
    for (std::thread& thread : threads) thread.join();
    const std::string body = http_request(server.url() + "/metrics").body;
    const std::string total = std::to_string(kNumThreads * kNumPerThread);
    EXPECT_LINE(body, "longcat_test_hits_total " + total);
    EXPECT_LINE(body, "longcat_test_stage_seconds_count{stage=\"experts\"} " + total);
}

// -- a real Prometheus server -------------------------------------------------------------------

// A child process, stopped with SIGTERM (then SIGKILL after 10 s) when the owner goes.
class child_process {
public:
    child_process(const std::vector<std::string>& argv, const std::filesystem::path& log_path) {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
        std::vector<char*> args;
        for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
        args.push_back(nullptr);
        if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ) != 0) pid_ = -1;
        posix_spawn_file_actions_destroy(&actions);
    }
    ~child_process() { stop(); }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    bool started() const { return pid_ > 0; }
    bool running() {
        if (pid_ <= 0) return false;
        if (::waitpid(pid_, &status_, WNOHANG) == pid_) pid_ = -1;
        return pid_ > 0;
    }
    // SIGTERM, wait up to 10 s, then SIGKILL. Returns the wait status (or of the earlier exit).
    int stop() {
        if (!running()) return status_;
        ::kill(pid_, SIGTERM);
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (std::chrono::steady_clock::now() < deadline) {
            if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
                pid_ = -1;
                return status_;
            }
            std::this_thread::sleep_for(20ms);
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status_, 0);
        pid_ = -1;
        return status_;
    }

private:
    pid_t pid_ = -1;
    int status_ = 0;
};

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

std::string prometheus_binary() {
    if (const char* env = std::getenv("LONGCAT_PROMETHEUS")) return env;
    return "/usr/bin/prometheus";
}

TEST(metrics_server, prometheus_scrapes_it) {
    const std::string binary = prometheus_binary();
    if (!std::filesystem::exists(binary)) {
        GTEST_SKIP() << binary << " not found (Debian package `prometheus`; set LONGCAT_PROMETHEUS"
                     << " to use another binary)";
    }
    metrics_registry registry;
    counter scraped = registry.add_counter("longcat_test_scraped_total", "Scrape test counter.");
    scraped.inc();
    scraped.inc();
    scraped.inc();
    metrics_server server(registry);

    const testing::temp_dir dir;
    const std::filesystem::path config = dir.path() / "prometheus.yml";
    std::ofstream(config) << "global:\n"
                          << "  scrape_interval: 1s\n"
                          << "  evaluation_interval: 1s\n"
                          << "scrape_configs:\n"
                          << "  - job_name: longcat_metrics_test\n"
                          << "    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << server.port() << "']\n";

    // The port is picked by binding :0 and closing; another process could take it in between,
    // so a Prometheus that exits at once is retried on a new port.
    std::unique_ptr<child_process> prometheus;
    std::string prometheus_url;
    const std::filesystem::path log = dir.path() / "prometheus.log";
    for (int attempt_idx = 0; attempt_idx < 3 && !prometheus; ++attempt_idx) {
        const int port = free_port();
        ASSERT_GT(port, 0);
        prometheus_url = "http://127.0.0.1:" + std::to_string(port);
        auto child = std::make_unique<child_process>(
            std::vector<std::string>{binary, "--config.file=" + config.string(),
                                     "--storage.tsdb.path=" + (dir.path() / "tsdb").string(),
                                     "--web.listen-address=127.0.0.1:" + std::to_string(port)},
            log);
        ASSERT_TRUE(child->started()) << "cannot start " << binary;
        const auto ready_deadline = std::chrono::steady_clock::now() + 10s;
        while (child->running() && std::chrono::steady_clock::now() < ready_deadline) {
            if (http_request(prometheus_url + "/-/ready").status == 200) break;
            std::this_thread::sleep_for(50ms);
        }
        if (child->running()) prometheus = std::move(child);
    }
    ASSERT_TRUE(prometheus) << "prometheus did not start:\n" << read_file(log);

    // The first sample lands ~5.4 s after start (deps.md §3): poll, do not sleep.
    const std::string query =
        prometheus_url + "/api/v1/query?query=" + url_encode("longcat_test_scraped_total");
    std::string value;
    std::string last_body;
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (value.empty() && std::chrono::steady_clock::now() < deadline && prometheus->running()) {
        const http_response response = http_request(query);
        last_body = response.body;
        if (response.status == 200) {
            const nlohmann::json reply = nlohmann::json::parse(response.body, nullptr, false);
            if (!reply.is_discarded() && reply.value("status", "") == "success" &&
                !reply["data"]["result"].empty()) {
                const nlohmann::json& sample = reply["data"]["result"][0];
                EXPECT_EQ(sample["metric"]["job"], "longcat_metrics_test");
                value = sample["value"][1].get<std::string>();
            }
        }
        if (value.empty()) std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(value, "3") << "last reply: " << last_body << "\nprometheus log:\n" << read_file(log);

    const int status = prometheus->stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "prometheus did not exit cleanly on SIGTERM:\n"
        << read_file(log);
    EXPECT_NE(http_request(prometheus_url + "/-/ready").code, CURLE_OK);
}

}  // namespace
}  // namespace longcat::metrics
