// expert_group_peer: one expert group as its own process, for the multi-process cluster tests.
// Loads the group's experts from the checkpoint, listens on a ucx_data_plane named after the
// group, and serves units until its stdin closes (the test's end), SIGTERM, or --lifetime-ms.
// stdout, one line per event:
//   ADDRESS <ucx://...>   listening and loaded (always first on success)
//   FAILED <message>      a unit failed (named error)
//   ERROR <message>       start-up failed; exit code 1
//   DONE                  stopped serving
// Options: --model-dir=DIR --placement=FILE (placement_to_json text) --group=ID
//          --workers=NAME[,NAME...] --tls=TLS --err-mode=peer|none --unit-timeout-ms=N
//          --lifetime-ms=N
#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>

#include "actors/experts/expert_group.hpp"
#include "actors/transport/ucx_data_plane.hpp"

using namespace longcat;

namespace {

std::atomic<bool> g_terminate{false};

void say(const std::string& line) {
    std::string one = line;
    for (char& c : one) {
        if (c == '\n') c = ' ';
    }
    std::fputs((one + "\n").c_str(), stdout);
    std::fflush(stdout);
}

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, sep);) {
        if (!item.empty()) out.push_back(item);
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    std::signal(SIGTERM, [](int) { g_terminate = true; });
    std::string model_dir, placement_file, tls = "tcp", err_mode = "peer";
    experts::expert_group_config config;
    long lifetime_ms = 120'000;
    for (int arg_idx = 1; arg_idx < argc; ++arg_idx) {
        const std::string_view arg = argv[arg_idx];
        auto value = [&](std::string_view key) -> std::optional<std::string> {
            if (!arg.starts_with(key)) return std::nullopt;
            return std::string(arg.substr(key.size()));
        };
        if (auto v = value("--model-dir=")) {
            model_dir = *v;
        } else if (auto v = value("--placement=")) {
            placement_file = *v;
        } else if (auto v = value("--group=")) {
            config.group_id = std::stoi(*v);
        } else if (auto v = value("--workers=")) {
            config.worker_names = split(*v, ',');
        } else if (auto v = value("--tls=")) {
            tls = *v;
        } else if (auto v = value("--err-mode=")) {
            err_mode = *v;
        } else if (auto v = value("--unit-timeout-ms=")) {
            config.unit_timeout = std::chrono::milliseconds(std::stol(*v));
        } else if (auto v = value("--lifetime-ms=")) {
            lifetime_ms = std::stol(*v);
        } else {
            say("ERROR unknown argument " + std::string(arg));
            return 1;
        }
    }
    std::ifstream file(placement_file);
    std::stringstream text;
    text << file.rdbuf();
    auto map = cluster::placement_from_json(text.str());
    if (!map) {
        say("ERROR placement " + placement_file + ": " + map.error().message);
        return 1;
    }
    if (config.group_id < 0 || config.group_id >= map->num_groups()) {
        say("ERROR --group=" + std::to_string(config.group_id) + " is not in the map");
        return 1;
    }
    transport::ucx_data_plane_config plane_config;
    plane_config.name = map->group(config.group_id).name;
    plane_config.error_mode =
        err_mode == "none" ? transport::ucx_error_mode::none : transport::ucx_error_mode::peer;
    plane_config.ucx_options = {{"TLS", tls}};
    auto plane = transport::ucx_data_plane::create(plane_config);
    if (!plane) {
        say("ERROR " + plane.error().message);
        return 1;
    }
    config.on_failure = [](const cluster::cluster_failure& failure) {
        say("FAILED " + failure.message);
    };
    auto group = experts::expert_group::load(model_dir, *map, **plane, config);
    if (!group) {
        say("ERROR " + group.error().message);
        return 1;
    }
    say("ADDRESS " + (*plane)->address());
    {
        std::jthread server([g = group->get()](std::stop_token stop) { g->serve(stop); });
        const auto end = transport::deadline_after(std::chrono::milliseconds(lifetime_ms));
        // Until stdin closes (or reads anything), SIGTERM, or the lifetime is over.
        while (!g_terminate && transport::clock::now() < end) {
            pollfd pfd{STDIN_FILENO, POLLIN, 0};
            if (::poll(&pfd, 1, 100) > 0) break;
        }
    }
    say("DONE");
    (*plane)->close();
    return 0;
}
