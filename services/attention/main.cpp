// longcat-attention: wiring only (logic: actors/control/member_actors, actors/attention). One
// attention worker (one TP rank): config (file → command line → environment), printed; its UCX
// data plane; registration with the coordinator; /metrics /healthz /readyz (ready once
// registered and weights loaded); exit 0 on SIGTERM, 1 when refused or the coordinator is lost.
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <cstdio>
#include <iostream>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/compute_adapters.hpp"
#include "actors/control/attention_member.hpp"
#include "actors/control/service_options.hpp"
#include "actors/control/stop_signal.hpp"
#include "actors/metrics/metrics.hpp"
#include "kernels/api/ops.hpp"
#include "kernels/api/threads.hpp"

using namespace longcat;

namespace {

struct attention_service_config {
    std::string name = "attention-0";
    std::string role = "attention_decode";  // attention_decode | attention_prefill
    std::string model = "";
    std::string coordinator = "127.0.0.1:7000";  // the coordinator's CAF endpoint
    std::string listen_host = "127.0.0.1";       // data plane binds only this address
    uint16_t data_plane_port = 0;
    std::string data_plane_error_mode = "peer";
    int64_t data_plane_poll_us = control::data_plane_options{}.poll_while_sending_us;
    std::string metrics_address = "127.0.0.1:0";
    std::string tp_group = "tp-0";
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
    int32_t threads = 0;  // compute threads; 0 = cores ÷ services
    int64_t kv_pages = 1024;
    int64_t page_size = 16;
    int32_t micro_batches = 1;
    int64_t combine_timeout_ms = 5000;
    int64_t connect_timeout_ms = 30000;
    int64_t peer_timeout_ms = control::kDefaultPeerTimeoutMs;
    int32_t protocol_version = proto::kProtocolVersion;  // announced in hello (tests only)

    void declare(control::service_options& o) {
        o.add("name", &name, "member name (also the data plane's name)");
        o.add("role", &role, "attention_decode | attention_prefill");
        o.add("model", &model, "model directory");
        o.add("coordinator", &coordinator, "HOST:PORT of the coordinator");
        o.add("listen-host", &listen_host, "address the data plane binds");
        o.add("data-plane-port", &data_plane_port, "UCX listener port; 0 lets the OS pick");
        o.add("data-plane-error-mode", &data_plane_error_mode, "peer | none");
        o.add("data-plane-poll-us", &data_plane_poll_us,
              "while a send is in flight, poll this long (us) after the last progress before "
              "sleeping; 0: never");
        o.add("metrics-address", &metrics_address, "HOST:PORT of /metrics, /healthz, /readyz");
        o.add("tp-group", &tp_group, "TP group name");
        o.add("tp-rank", &tp_rank, "rank in the TP group");
        o.add("tp-size", &tp_size, "ranks in the TP group");
        o.add("threads", &threads, "compute threads (0: cores / services)");
        o.add("kv-pages", &kv_pages, "KV cache pages");
        o.add("page-size", &page_size, "tokens per KV page");
        o.add("micro-batches", &micro_batches, "micro-batches per step (1..4)");
        o.add("combine-timeout-ms", &combine_timeout_ms, "deadline of a layer's combines");
        o.add("connect-timeout-ms", &connect_timeout_ms, "how long to try reaching the coordinator");
        o.add("peer-timeout-ms", &peer_timeout_ms,
              "a coordinator silent this long (ms) is down; 0: never");
        o.add("protocol-version", &protocol_version, "protocol version announced (tests)");
    }
    std::optional<std::string> validate() const {
        if (model.empty()) return "model: a model directory is required";
        if (auto bad = control::check_peer_timeout(peer_timeout_ms, "peer-timeout-ms")) return bad;
        if (data_plane_poll_us < 0) return "data-plane-poll-us must be >= 0";
        if (!proto::parse_node_role(role) || (role != "attention_decode" && role != "attention_prefill"))
            return "role must be attention_decode or attention_prefill";
        if (tp_size < 1 || tp_rank < 0 || tp_rank >= tp_size) return "tp-rank must be in [0, tp-size)";
        if (kv_pages < 1 || page_size < 1) return "kv-pages and page-size must be >= 1";
        if (micro_batches < 1 || micro_batches > 4) return "micro-batches must be 1..4";
        return std::nullopt;
    }
};

}  // namespace

int main(int argc, char** argv) {
    kernels::ensure_passive_openmp(argv);
    control::install_stop_signal_handlers();
    attention_service_config config;
    try {
        control::service_options options("attention");
        config.declare(options);
        if (!options.parse(argc, argv)) return 0;
        if (auto invalid = config.validate()) throw control::config_error(*invalid);
        std::cout << options.print() << std::flush;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "longcat-attention: config error: %s\n", e.what());
        return 2;
    }
    auto log = [&](const std::string& line) { std::fprintf(stderr, "[%s] %s\n", config.name.c_str(), line.c_str()); };
    int exit_code = 0;
    try {
        kernels::set_num_threads(config.threads > 0 ? config.threads : kernels::default_compute_threads());
        auto& registry = metrics::process_registry();
        metrics::metrics_server server(registry, {config.metrics_address});
        server.set_not_ready("registering");
        auto ready_gauge = registry.add_gauge("longcat_member_ready", "1 once registered and weights loaded");

        control::attention_compute_options compute_opts;
        compute_opts.name = config.name;
        compute_opts.model_dir = config.model;
        compute_opts.tp_rank = config.tp_rank;
        compute_opts.tp_size = config.tp_size;
        compute_opts.kv_pages = config.kv_pages;
        compute_opts.page_size = config.page_size;
        compute_opts.micro_batches = config.micro_batches;
        compute_opts.combine_timeout = std::chrono::milliseconds(config.combine_timeout_ms);
        compute_opts.data_plane = {config.listen_host, config.data_plane_port,
                                   config.data_plane_error_mode, config.data_plane_poll_us};
        auto compute = control::make_attention_compute(compute_opts);

        control::caf_runtime_options runtime;
        runtime.batch_scheduling = true;  // CAF's threads never preempt this process's compute
        runtime.heartbeats = true;
        runtime.peer_timeout = std::chrono::milliseconds(config.peer_timeout_ms);
        auto caf_config = control::make_caf_config(runtime);
        caf::actor_system system{*caf_config};
        auto coordinator = control::connect_coordinator(system, config.coordinator,
                                                        std::chrono::milliseconds(config.connect_timeout_ms));
        control::member_options member;
        member.greeting = proto::make_hello(*proto::parse_node_role(config.role), config.name,
                                            compute->data_plane_address());
        member.greeting.protocol_version = static_cast<uint16_t>(config.protocol_version);
        member.tp_group = config.tp_group;
        member.tp_rank = config.tp_rank;
        member.tp_size = config.tp_size;
        member.kv_pages = config.kv_pages;
        member.kv_page_size = config.page_size;
        member.log = log;
        auto step_seconds = registry.add_histogram("longcat_step_seconds", "one step on this worker",
                                                   metrics::latency_seconds_buckets());
        auto exposed = registry.add_counter_family("longcat_exposed_communication_seconds_total",
                                                   "compute thread blocked in data-plane waits");
        auto exposed_dispatch = exposed.with({{"wait", "dispatch"}});
        auto exposed_combine = exposed.with({{"wait", "combine"}});
        auto dispatch_bytes = registry.add_counter("longcat_dispatch_bytes_total", "dispatch payload bytes sent");
        auto combine_bytes = registry.add_counter("longcat_combine_bytes_total", "combine payload bytes received");
        auto tokens = registry.add_counter("longcat_step_tokens_total", "token rows run (prompt + decode)");
        auto kv_used = registry.add_gauge("longcat_kv_pages_used", "KV pages in use");
        auto kv_free = registry.add_gauge("longcat_kv_pages_free", "KV pages free");
        auto busy = registry.add_counter("longcat_worker_step_busy_seconds_total",
                                         "time running steps that follow another step directly");
        auto idle = registry.add_counter("longcat_worker_boundary_idle_seconds_total",
                                         "time between a step's result and the next step's plan");
        auto boundaries = registry.add_counter("longcat_worker_boundaries_total",
                                               "step boundaries timed (steps that follow another step directly)");
        member.on_step = [=](const control::compute_step_output& out, double seconds,
                             double boundary_idle) mutable {
            step_seconds.observe(seconds);
            if (boundary_idle >= 0.0) {
                idle.inc(boundary_idle);
                busy.inc(seconds);
                boundaries.inc();
            }
            exposed_dispatch.inc(out.dispatch_seconds);
            exposed_combine.inc(out.combine_wait_seconds);
            dispatch_bytes.inc(static_cast<double>(out.dispatch_bytes));
            combine_bytes.inc(static_cast<double>(out.combine_bytes));
            tokens.inc(static_cast<double>(out.num_tokens));
            kv_used.set(static_cast<double>(out.kv_pages_used));
            kv_free.set(static_cast<double>(out.kv_pages_free));
        };
        auto kv_bytes = registry.add_counter("longcat_kv_transfer_bytes_total",
                                             "KV bytes received from prefill workers (disaggregation)");
        auto kv_seconds = registry.add_histogram("longcat_kv_transfer_seconds",
                                                 "wait for one request's KV frames", metrics::latency_seconds_buckets());
        auto kv_frames = registry.add_counter_family(
            "longcat_kv_frames_total",
            "KV frames written into reserved pages: path=landed as they arrived, queued when they came first");
        auto landed = kv_frames.with({{"path", "landed"}});
        auto queued = kv_frames.with({{"path", "queued"}});
        member.on_kv_import = [=, counted = control::attention_compute::kv_frame_counts{}](int64_t bytes,
                                                                                         double seconds) mutable {
            kv_bytes.inc(static_cast<double>(bytes));
            kv_seconds.observe(seconds);
            const auto now = compute->kv_frames();
            landed.inc(static_cast<double>(now.landed - counted.landed));
            queued.inc(static_cast<double>(now.queued - counted.queued));
            counted = now;
        };
        auto status = std::make_shared<control::member_status>();
        auto actor = control::spawn_attention_member(system, coordinator, member, compute, status);
        std::printf("longcat-attention %s: data plane %s, metrics on %s, coordinator %s\n",
                    config.name.c_str(), compute->data_plane_address().c_str(), server.url().c_str(),
                    config.coordinator.c_str());
        std::fflush(stdout);
        exit_code = control::run_member_until_stopped(
            *status,
            [&](bool ready, const std::string& detail) {
                if (!ready) return server.set_not_ready(detail);
                ready_gauge.set(1);
                server.set_ready();
            },
            log);
        server.set_not_ready("stopping");
        // The member may be inside a step (or a placement change) on its own thread.
        control::stop_member(
            system, caf::actor_cast<caf::actor>(actor), std::chrono::seconds(5),
            [&] { compute->stop(); }, log);
        server.stop();
        log("stopped");
    } catch (const std::exception& e) {
        log(std::string("fatal: ") + e.what());
        return 1;
    }
    return exit_code;
}
