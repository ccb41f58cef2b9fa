// longcat-gateway: wiring only (logic: actors/gateway). Reads its config (file → command line →
// environment), prints it, loads the tokenizer and the model facts of model_dir, connects to the
// cluster's coordinators (one cluster_backend each, CAF) behind the router, serves the OpenAI
// API and, on its own
// port, /metrics /healthz /readyz (ready = the router has a ready backend and not draining).
// SIGTERM/SIGINT: stop admitting (503), let requests in flight finish within drain_grace_ms,
// cancel what is left, exit 0.
#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>

#include "actors/gateway/cluster_backend.hpp"
#include "actors/gateway/gateway_config.hpp"
#include "actors/gateway/gateway_metrics.hpp"
#include "actors/gateway/http_server.hpp"
#include "actors/gateway/router.hpp"
#include "actors/metrics/metrics.hpp"
#include "kernels/api/threads.hpp"
#include "model/chat_template.hpp"
#include "model/config.hpp"
#include "model/tokenizer.hpp"

using namespace longcat;

namespace {

void log_line(std::string_view line) {
    static std::mutex mutex;
    std::lock_guard lock(mutex);
    std::fprintf(stderr, "longcat-gateway: %.*s\n", static_cast<int>(line.size()), line.data());
}

// Waits up to `timeout` for SIGTERM/SIGINT (blocked in every thread, so only this wait sees it).
int wait_for_signal(const sigset_t& signals, std::chrono::milliseconds timeout) {
    timespec wait{static_cast<time_t>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000) * 1'000'000};
    const int signal_number = sigtimedwait(&signals, nullptr, &wait);
    return signal_number > 0 ? signal_number : 0;
}

}  // namespace

int main(int argc, char** argv) {
    kernels::ensure_passive_openmp(argv);
    // Before any thread starts: SIGTERM/SIGINT are taken by sigtimedwait in main only.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    gateway::gateway_config config;
    std::vector<std::string> api_keys;
    {
        gateway::gateway_options options(config);
        auto parsed = options.parse(std::vector<std::string>(argv + 1, argv + argc));
        if (!parsed) {
            std::fprintf(stderr, "longcat-gateway: config error: %s\n", parsed.error().c_str());
            return 2;
        }
        if (!*parsed) {
            std::fputs(options.usage().c_str(), stdout);
            return 0;
        }
        if (auto invalid = config.validate()) {
            std::fprintf(stderr, "longcat-gateway: config error: %s\n", invalid->c_str());
            return 2;
        }
        auto keys = config.load_api_keys();
        if (!keys) {
            std::fprintf(stderr, "longcat-gateway: config error: %s\n", keys.error().c_str());
            return 2;
        }
        api_keys = std::move(*keys);
        std::fputs(options.print().c_str(), stdout);
        std::fflush(stdout);
    }
    int exit_code = 0;
    try {
        const std::filesystem::path model_dir = config.model_dir;
        const model::model_config model = model::load_model_config(model_dir / "config.json");
        if (config.max_model_len > model.max_position_embeddings) {
            std::fprintf(stderr, "longcat-gateway: config error: max-model-len %lld exceeds %s max_position_embeddings %lld\n",
                         static_cast<long long>(config.max_model_len), (model_dir / "config.json").c_str(),
                         static_cast<long long>(model.max_position_embeddings));
            return 2;
        }
        const int64_t context_length = config.max_model_len > 0 ? config.max_model_len : model.max_position_embeddings;
        auto tokenizer = std::make_shared<const model::tokenizer>(model::tokenizer::load_dir(model_dir));
        model::log_jinja_template_ignored(*tokenizer);
        const std::string served_name =
            !config.served_model_name.empty() ? config.served_model_name
                                              : std::filesystem::absolute(model_dir).lexically_normal().filename().string();

        auto& registry = metrics::process_registry();
        metrics::metrics_server metrics_server(registry, {config.metrics_address});
        metrics_server.set_not_ready("starting");

        // The backends: one per coordinator (a streaming CAF session each), behind the router.
        std::vector<std::shared_ptr<gateway::generation_backend>> backends;
        for (const std::string& coordinator : config.coordinator_list()) {
            log_line("connecting to coordinator " + coordinator);
            gateway::cluster_backend_options backend_opts;
            backend_opts.coordinator = coordinator;
            backend_opts.connect_timeout = std::chrono::milliseconds(config.connect_timeout_ms);
            backends.push_back(std::make_shared<gateway::cluster_backend>(backend_opts));
        }
        auto router = std::make_shared<gateway::router>(
            backends,
            gateway::router_config{config.max_running_per_backend, config.queue_bound},
            gateway::make_router_metrics(registry));

        gateway::http_server_options server_opts;
        server_opts.host = config.host;
        server_opts.port = static_cast<uint16_t>(config.port);
        server_opts.io_threads = static_cast<int>(config.io_threads);
        server_opts.max_body_bytes = config.max_body_bytes;
        server_opts.header_deadline = std::chrono::milliseconds(config.header_deadline_ms);
        server_opts.body_deadline = std::chrono::milliseconds(config.body_deadline_ms);
        server_opts.request_deadline = std::chrono::milliseconds(config.request_deadline_ms);
        server_opts.api_keys = api_keys;
        server_opts.retry_after_s = config.retry_after_s;
        server_opts.served_model_name = served_name;
        server_opts.prompt = {model.model_type, context_length, model.vocab_size, config.max_tokens_limit};
        server_opts.model_created = static_cast<int64_t>(std::time(nullptr));
        gateway::http_server server(server_opts, router, tokenizer, gateway::make_gateway_metrics(registry), log_line);

        std::printf("longcat-gateway: serving '%s' (context %lld tokens) on %s, metrics on %s, %zu API key(s)\n",
                    served_name.c_str(), static_cast<long long>(context_length), server.url().c_str(),
                    metrics_server.url().c_str(), api_keys.size());
        std::fflush(stdout);
        if (!config.port_file.empty()) {
            std::ofstream(config.port_file + ".tmp") << server.port() << "\n";
            std::filesystem::rename(config.port_file + ".tmp", config.port_file);
        }

        int signal_number = 0;
        while ((signal_number = wait_for_signal(signals, std::chrono::milliseconds(200))) == 0) {
            const gateway::backend_readiness readiness = router->readiness();
            if (readiness.ready) metrics_server.set_ready();
            else metrics_server.set_not_ready(readiness.reason);
        }
        log_line(std::string("stopping (") + (signal_number == SIGTERM ? "SIGTERM" : "SIGINT") + "): draining " +
                 std::to_string(server.in_flight()) + " request(s) within " + std::to_string(config.drain_grace_ms) +
                 " ms");
        server.start_draining();
        metrics_server.set_not_ready("draining");
        if (server.wait_drained(gateway::clock::now() + std::chrono::milliseconds(config.drain_grace_ms))) {
            log_line("drained");
        } else {
            log_line("drain grace ended with " + std::to_string(server.in_flight()) + " request(s) in flight: cancelling");
            server.cancel_all();
            if (!server.wait_drained(gateway::clock::now() + std::chrono::seconds(5)))
                log_line(std::to_string(server.in_flight()) + " request(s) did not end after the cancel");
        }
        server.stop();
        metrics_server.stop();
    } catch (const std::exception& e) {
        log_line(std::string("fatal: ") + e.what());
        exit_code = 1;
    }
    // The router and the backends are let go of; an event still being delivered keeps the
    // router's state (and with it the backends) until it ends (router::await_released).
    if (!gateway::router::await_released(std::chrono::seconds(10)))
        log_line("a backend was still closing 10 s after the router stopped");
    return exit_code;
}
