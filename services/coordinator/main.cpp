// longcat-coordinator: wiring only (logic: actors/coordinator). Reads its config (file →
// command line → environment), prints it, serves /metrics /healthz /readyz (ready = the cluster
// is serving), publishes the coordinator actor on listen-host:port, stops on SIGTERM (exit 0).
#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include <chrono>
#include <cstdio>
#include <memory>
#include <fstream>
#include <iostream>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/service_options.hpp"
#include "actors/control/stop_signal.hpp"
#include "actors/coordinator/coordinator.hpp"
#include "actors/metrics/metrics.hpp"
#include "model/config.hpp"

using namespace longcat;

int main(int argc, char** argv) {
    control::install_stop_signal_handlers();
    coordinator::coordinator_config config;
    try {
        control::service_options options("coordinator");
        config.declare(options);
        if (!options.parse(argc, argv)) return 0;
        if (auto invalid = config.validate()) throw control::config_error(*invalid);
        std::cout << options.print() << std::flush;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "longcat-coordinator: config error: %s\n", e.what());
        return 2;
    }
    auto log = [&](const std::string& line) {
        std::fprintf(stderr, "[%s] %s\n", config.name.c_str(), line.c_str());
    };
    try {
        const model::model_config model = model::load_model_config(std::filesystem::path(config.model) / "config.json");
        auto state = std::make_unique<coordinator::coordinator_state>(
            config, static_cast<int32_t>(model.num_layers), static_cast<int32_t>(model.n_routed_experts),
            model.eos_token_id);

        auto& registry = metrics::process_registry();
        metrics::metrics_server server(registry, {config.metrics_address});
        server.set_not_ready("starting");
        auto requests = registry.add_counter_family("longcat_requests_total", "requests by outcome");
        auto steps = registry.add_histogram("longcat_step_seconds", "coordinator step time",
                                            metrics::latency_seconds_buckets());
        auto placement_version = registry.add_gauge("longcat_placement_version", "current placement map version");
        auto members = registry.add_gauge("longcat_cluster_members", "registered members");
        auto running = registry.add_gauge("longcat_running_requests", "requests in the running batch");
        auto queued = registry.add_gauge("longcat_queue_depth", "requests waiting for a batch");

        coordinator::coordinator_hooks hooks;
        hooks.log = log;
        hooks.on_step = [steps](double seconds) mutable { steps.observe(seconds); };
        auto step_cpu = registry.add_histogram("longcat_coordinator_step_cpu_seconds",
                                               "coordinator thread CPU time per step",
                                               metrics::latency_seconds_buckets());
        hooks.on_step_cpu = [step_cpu](double seconds) mutable { step_cpu.observe(seconds); };
        hooks.on_request_end = [requests](const std::string& outcome) { requests.with({{"outcome", outcome}}).inc(); };
        auto preemptions = registry.add_counter("longcat_preemptions_total",
                                                "running requests preempted for KV pages (recomputed later)");
        auto kv_total = registry.add_gauge("longcat_kv_pages_total", "KV pages of the attention workers");
        auto kv_reserved = registry.add_gauge("longcat_kv_pages_reserved",
                                              "KV pages the running requests hold after their next step");
        auto preemptions_seen = std::make_shared<uint64_t>(0);
        hooks.on_status_change = [&server, placement_version, members, running, queued, preemptions,
                                  preemptions_seen, kv_total, kv_reserved](
                                     const proto::cluster_status& status) mutable {
            if (status.preemptions > *preemptions_seen) {
                preemptions.inc(static_cast<double>(status.preemptions - *preemptions_seen));
                *preemptions_seen = status.preemptions;
            }
            kv_total.set(static_cast<double>(status.kv_pages_total));
            kv_reserved.set(static_cast<double>(status.kv_pages_reserved));
            placement_version.set(static_cast<double>(status.map.version));
            members.set(static_cast<double>(status.members.size()));
            running.set(static_cast<double>(status.running_requests));
            queued.set(static_cast<double>(status.queued_requests));
            if (status.serving) server.set_ready();
            else server.set_not_ready(status.reason);
        };

        control::caf_runtime_options runtime;
        runtime.scheduler_threads = static_cast<size_t>(config.scheduler_threads);
        runtime.heartbeats = true;  // for the members' peer timeout; it drops no peer itself
        auto caf_config = control::make_caf_config(runtime);
        caf::actor_system system{*caf_config};
        auto actor = coordinator::spawn_coordinator(system, std::move(state), hooks);
        const uint16_t port = control::publish_coordinator(system, actor, config.listen_host, config.port);
        std::printf("longcat-coordinator: control plane on %s:%u, metrics on %s\n",
                    config.listen_host.c_str(), port, server.url().c_str());
        std::fflush(stdout);
        if (!config.port_file.empty()) {
            std::ofstream(config.port_file + ".tmp") << port << "\n";
            std::filesystem::rename(config.port_file + ".tmp", config.port_file);
        }
        while (!control::wait_for_stop(std::chrono::milliseconds(500))) {
        }
        log("stopping (signal): draining within " + std::to_string(config.drain_grace_ms) + " ms");
        server.set_not_ready("stopping");
        {
            caf::scoped_actor self{system};
            self->request(actor, std::chrono::milliseconds(config.drain_grace_ms),
                          proto::drain_request{config.drain_grace_ms})
                .receive([&](proto::cluster_status&) { log("drained"); },
                         [&](caf::error& error) { log("drain incomplete: " + system.render(error)); });
        }
        caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
        server.stop();
    } catch (const std::exception& e) {
        log(std::string("fatal: ") + e.what());
        return 1;
    }
    return 0;
}
