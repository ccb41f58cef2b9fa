#include "actors/control/cluster_client.hpp"

#include <caf/all.hpp>
#include <caf/io/all.hpp>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/generate_request.hpp"
#include "actors/control/interfaces.hpp"

namespace longcat::control {

namespace {

template <class Result, class Message>
proto::expected<Result, std::string> ask(const std::string& address, Message message,
                                         std::chrono::milliseconds timeout) {
    using failure = proto::unexpected<std::string>;
    host_port where;
    try {
        where = parse_host_port(address);
    } catch (const std::exception& e) {
        return failure(e.what());
    }
    caf_runtime_options runtime;
    runtime.scheduler_threads = 1;
    auto config = make_caf_config(runtime);
    caf::actor_system system{*config};
    coordinator_actor coordinator;
    try {
        coordinator =
            remote_coordinator(system, where, std::min(timeout, std::chrono::milliseconds(10'000)));
    } catch (const std::exception& e) {
        return failure(std::string("coordinator: ") +
                       e.what());  // "…: cannot reach HOST:PORT: why"
    }
    proto::expected<Result, std::string> out = failure("no answer");
    {
        caf::scoped_actor self{system};
        self->request(coordinator, timeout, std::move(message))
            .receive([&](Result& reply) { out = std::move(reply); },
                     [&](caf::error& error) {
                         out = failure("coordinator at " + address + ": " + system.render(error));
                     });
    }
    return out;
}

}  // namespace

proto::expected<cluster_generation, std::string> cluster_generate(
    const std::string& coordinator, const cluster_generate_options& opts) {
    const proto::generate_request request = to_generate_request(opts);
    auto reply = ask<proto::generate_reply>(coordinator, request,
                                            opts.timeout + std::chrono::seconds(5));
    if (!reply) return proto::unexpected<std::string>(reply.error());
    if (reply->finish_reason == "error")
        return proto::unexpected<std::string>("request " + std::to_string(reply->request_id) +
                                              " failed: " + reply->error);
    cluster_generation out;
    out.request_id = reply->request_id;
    out.tokens = std::move(reply->tokens);
    out.finish_reason = reply->finish_reason;
    return out;
}

proto::expected<cluster_status_summary, std::string> cluster_status_of(
    const std::string& coordinator, std::chrono::milliseconds timeout) {
    auto status = ask<proto::cluster_status>(coordinator, proto::status_query{}, timeout);
    if (!status) return proto::unexpected<std::string>(status.error());
    cluster_status_summary out;
    out.serving = status->serving;
    out.reason = status->reason;
    out.placement_version = status->map.version;
    out.members = status->members;
    return out;
}

}  // namespace longcat::control
