#include "actors/control/caf_runtime.hpp"

#include <sched.h>

#include <algorithm>
#include <caf/atom.hpp>
#include <caf/io/all.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/thread_hook.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "proto/messages.hpp"

namespace longcat::control {
namespace {

// CAF calls thread_started() on each thread it starts, from that thread, before its loop.
struct batch_scheduling_hook : caf::thread_hook {
    void init(caf::actor_system&) override {}
    void thread_started() override {
        const sched_param param{};
        (void)::sched_setscheduler(0, SCHED_BATCH, &param);  // best effort: a refusal only costs latency
    }
    void thread_terminates() override {}
};

}  // namespace

bool use_compute_scheduling() {
    const sched_param param{};
    return ::sched_setscheduler(0, SCHED_OTHER, &param) == 0;
}

std::unique_ptr<caf::actor_system_config> make_caf_config(const caf_runtime_options& opts) {
    auto config = std::make_unique<caf::actor_system_config>();
    config->load<caf::io::middleman>();
    if (opts.batch_scheduling) config->add_thread_hook<batch_scheduling_hook>();
    proto::register_message_types(*config);
    config->set("scheduler.policy", caf::atom("sharing"));
    config->set("scheduler.max-threads", opts.scheduler_threads);
    config->set("middleman.workers", opts.middleman_workers);
    if (opts.heartbeats) {
        config->set("middleman.heartbeat-interval",
                    caf::timespan{std::chrono::milliseconds(kHeartbeatIntervalMs)});
        config->set("middleman.connection-timeout", caf::timespan{opts.peer_timeout});  // 0: off
    }
    return config;
}

host_port parse_host_port(const std::string& text) {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
        throw std::invalid_argument("expected HOST:PORT, got \"" + text + "\"");
    host_port out;
    out.host = text.substr(0, colon);
    try {
        const int port = std::stoi(text.substr(colon + 1));
        if (port <= 0 || port > 65535) throw std::out_of_range("port");
        out.port = static_cast<uint16_t>(port);
    } catch (const std::exception&) {
        throw std::invalid_argument("bad port in \"" + text + "\"");
    }
    return out;
}

uint16_t publish_coordinator(caf::actor_system& system, const coordinator_actor& coordinator,
                             const std::string& host, uint16_t port) {
    auto bound = system.middleman().publish(coordinator, port, host.c_str(), true);
    if (!bound)
        throw std::runtime_error("cannot publish on " + host + ":" + std::to_string(port) + ": " +
                                 system.render(bound.error()));
    return *bound;
}

coordinator_actor remote_coordinator(caf::actor_system& system, const host_port& where,
                                     std::chrono::milliseconds timeout) {
    // What middleman::remote_actor does, through the middleman actor's typed connect with a
    // request timeout instead of its unbounded function_view.
    const std::string address = where.host + ":" + std::to_string(where.port);
    const auto wanted = system.message_types(caf::detail::type_list<coordinator_actor>{});
    std::string error;
    coordinator_actor out;
    caf::scoped_actor self{system};
    self->request(system.middleman().actor_handle(), timeout, caf::connect_atom::value, where.host,
                  where.port)
        .receive(
            [&](const caf::node_id&, caf::strong_actor_ptr& ptr, const std::set<std::string>& got) {
                if (!ptr)
                    error = "no actor published at " + address;
                else if (!system.assignable(got, wanted))
                    error = "the actor at " + address + " is not a coordinator";
                else
                    out = caf::actor_cast<coordinator_actor>(std::move(ptr));
            },
            [&](caf::error& e) {
                // connection_timeout: with a peer timeout (caf_runtime_options::peer_timeout)
                // CAF 0.17.6 starts an outgoing connection's "last seen" at the epoch, so the
                // next heartbeat tick drops one whose handshake has not come yet (a silent
                // peer; connect_coordinator tries again until its deadline).
                error = e == caf::sec::request_timeout || e == caf::sec::connection_timeout
                            ? "no CAF handshake from " + address + " within " +
                                  std::to_string(timeout.count()) + " ms"
                            : system.render(e);
            });
    if (!out) throw std::runtime_error("cannot reach " + address + ": " + error);
    return out;
}

coordinator_actor connect_coordinator(caf::actor_system& system, const std::string& address,
                                      std::chrono::milliseconds timeout) {
    const host_port where = parse_host_port(address);
    const auto until = std::chrono::steady_clock::now() + timeout;
    std::string last_error;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            until - std::chrono::steady_clock::now());
        try {
            return remote_coordinator(system, where,
                                      std::max(left, std::chrono::milliseconds(100)));
        } catch (const std::runtime_error& e) {
            last_error = e.what();
        }
        if (std::chrono::steady_clock::now() >= until) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("cannot reach " + address + " within " + std::to_string(timeout.count()) +
                             " ms: " + last_error);
}

}  // namespace longcat::control
