// longcat-experts: wiring only (logic: actors/control/member_actors, actors/experts). One expert
// group: config (file → command line → environment), printed; its UCX data plane; registration
// (the coordinator assigns its experts, it loads exactly those); /metrics /healthz /readyz (ready
// once registered and weights loaded); exit 0 on SIGTERM, 1 when refused or the coordinator is lost.
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <cstdio>
#include <iostream>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/compute_adapters.hpp"
#include "actors/control/expert_member.hpp"
#include "actors/control/service_options.hpp"
#include "actors/control/stop_signal.hpp"
#include "actors/metrics/metrics.hpp"
#include "kernels/api/ops.hpp"
#include "kernels/api/threads.hpp"

using namespace longcat;

namespace {

struct experts_service_config {
    std::string name = "experts-0";
    std::string model = "";
    std::string coordinator = "127.0.0.1:7000";
    std::string listen_host = "127.0.0.1";
    uint16_t data_plane_port = 0;
    std::string data_plane_error_mode = "peer";
    int64_t data_plane_poll_us = control::data_plane_options{}.poll_while_sending_us;
    std::string pool = "";  // "" shared by every attention worker | prefill | decode
    std::string metrics_address = "127.0.0.1:0";
    int32_t threads = 0;
    int64_t unit_timeout_ms = 5000;
    int64_t connect_timeout_ms = 30000;
    int64_t peer_timeout_ms = control::kDefaultPeerTimeoutMs;
    int32_t protocol_version = proto::kProtocolVersion;  // announced in hello (tests only)

    void declare(control::service_options& o) {
        o.add("name", &name, "group name (also the data plane's name)");
        o.add("model", &model, "model directory");
        o.add("coordinator", &coordinator, "HOST:PORT of the coordinator");
        o.add("listen-host", &listen_host, "address the data plane binds");
        o.add("data-plane-port", &data_plane_port, "UCX listener port; 0 lets the OS pick");
        o.add("data-plane-error-mode", &data_plane_error_mode, "peer | none");
        o.add("data-plane-poll-us", &data_plane_poll_us,
              "while a send is in flight, poll this long (us) after the last progress before "
              "sleeping; 0: never");
        o.add("pool", &pool, "expert pool: empty (shared) | prefill | decode");
        o.add("metrics-address", &metrics_address, "HOST:PORT of /metrics, /healthz, /readyz");
        o.add("threads", &threads, "compute threads (0: cores / services)");
        o.add("unit-timeout-ms", &unit_timeout_ms, "deadline of one (step, layer, micro-batch)");
        o.add("connect-timeout-ms", &connect_timeout_ms, "how long to try reaching the coordinator");
        o.add("peer-timeout-ms", &peer_timeout_ms,
              "a coordinator silent this long (ms) is down; 0: never");
        o.add("protocol-version", &protocol_version, "protocol version announced (tests)");
    }
    std::optional<std::string> validate() const {
        if (model.empty()) return "model: a model directory is required";
        if (auto bad = control::check_peer_timeout(peer_timeout_ms, "peer-timeout-ms")) return bad;
        if (data_plane_poll_us < 0) return "data-plane-poll-us must be >= 0";
        if (unit_timeout_ms < 1) return "unit-timeout-ms must be >= 1";
        if (!pool.empty() && pool != "prefill" && pool != "decode")
            return "pool must be empty, prefill or decode, got \"" + pool + "\"";
        return std::nullopt;
    }
};

}  // namespace

int main(int argc, char** argv) {
    kernels::ensure_passive_openmp(argv);
    control::install_stop_signal_handlers();
    experts_service_config config;
    try {
        control::service_options options("experts");
        config.declare(options);
        if (!options.parse(argc, argv)) return 0;
        if (auto invalid = config.validate()) throw control::config_error(*invalid);
        std::cout << options.print() << std::flush;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "longcat-experts: config error: %s\n", e.what());
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

        control::expert_compute_options compute_opts;
        compute_opts.name = config.name;
        compute_opts.model_dir = config.model;
        compute_opts.unit_timeout = std::chrono::milliseconds(config.unit_timeout_ms);
        compute_opts.data_plane = {config.listen_host, config.data_plane_port,
                                   config.data_plane_error_mode, config.data_plane_poll_us};
        auto compute = control::make_expert_compute(compute_opts);

        control::caf_runtime_options runtime;
        runtime.batch_scheduling = true;  // CAF's threads never preempt this process's compute
        runtime.heartbeats = true;
        runtime.peer_timeout = std::chrono::milliseconds(config.peer_timeout_ms);
        auto caf_config = control::make_caf_config(runtime);
        caf::actor_system system{*caf_config};
        auto coordinator = control::connect_coordinator(system, config.coordinator,
                                                        std::chrono::milliseconds(config.connect_timeout_ms));
        control::member_options member;
        member.greeting = proto::make_hello(proto::node_role::expert_group, config.name,
                                            compute->data_plane_address());
        member.greeting.protocol_version = static_cast<uint16_t>(config.protocol_version);
        member.pool = config.pool;
        member.log = log;
        auto status = std::make_shared<control::member_status>();
        auto actor = control::spawn_expert_member(system, coordinator, member, compute, status);
        std::printf("longcat-experts %s: data plane %s, metrics on %s, coordinator %s\n",
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
