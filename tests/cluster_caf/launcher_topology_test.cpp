// `longcat cluster up` with malformed topologies: each is refused before any process starts,
// with an error naming the field; and `cluster down` stops only the processes the state file
// names — not another process that now has one of their pids and runs the same binary.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>

#include "actors/control/launcher.hpp"
#include "tests/support/temp_dir.hpp"

namespace longcat::control {
namespace {

using json = nlohmann::json;

json valid_topology() {
    return json::parse(R"({
        "name": "t", "host": "127.0.0.1", "threads_per_service": 1, "max_batch": 8,
        "attention": [{"name": "attention-0", "tp_group": "tp-0", "tp_rank": 0, "tp_size": 1}],
        "expert_groups": [{"name": "experts-0", "share": 1}],
        "gateway": {"queue-bound": 8}
    })");
}

// cluster_up on `topology` (the 560B config.json as the model: only its expert count is read
// before anything starts); expects a failure containing `needle`, no state file, no child.
void expect_refused(const json& topology, const std::string& needle) {
    testing::temp_dir dir;
    const auto model_dir = dir.path() / "model";
    std::filesystem::create_directories(model_dir);
    std::filesystem::copy_file(LONGCAT_SOURCE_DIR "/model/configs/longcat-flash-chat-560b.json",
                               model_dir / "config.json");
    std::ofstream(dir.path() / "topology.json") << topology.dump();
    cluster_up_options opts;
    opts.topology = dir.path() / "topology.json";
    opts.model_dir = model_dir;
    opts.state_file = dir.path() / "state" / "state.json";
    opts.bin_dir = dir.path() / "no-binaries-here";
    opts.ready_timeout = std::chrono::seconds(5);
    const auto result = cluster_up(opts);
    ASSERT_FALSE(result.has_value()) << "accepted: " << topology.dump();
    EXPECT_NE(result.error().find(needle), std::string::npos)
        << "missing `" << needle << "` in: " << result.error();
    EXPECT_FALSE(std::filesystem::exists(opts.state_file));
    errno = 0;
    EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1) << "a child was started";
    EXPECT_EQ(errno, ECHILD);
}

TEST(LauncherTopology, MalformedFieldsAreRefusedByNameBeforeAnythingStarts) {
    const std::pair<json, std::string> cases[] = {
        {json::array(), "must be a JSON object"},
        {{{"coordinator_port", 70000}}, "topology coordinator_port must be 0..65535, got 70000"},
        {{{"coordinator_port", -1}}, "topology coordinator_port must be 0..65535, got -1"},
        {{{"coordinator_port", "7000"}},
         "topology coordinator_port must be an integer, got \"7000\""},
        {{{"gateway", {{"port", 65536}}}}, "topology gateway.port must be 0..65535, got 65536"},
        {{{"gateway", 5}}, "topology gateway must be an object of gateway options, got 5"},
        {{{"gateway", {{"host", "0.0.0.0"}}}}, "topology gateway.host is set by the launcher"},
        {{{"gateway", {{"metrics-address", "127.0.0.1:9"}}}},
         "topology gateway.metrics-address is set by the launcher"},
        {{{"host", ""}}, "topology host must name an address"},
        {{{"threads_per_service", 0}}, "topology threads_per_service must be 1..1024, got 0"},
        {{{"micro_batches", 5}}, "topology micro_batches must be 1..4, got 5"},
        {{{"peer_timeout_ms", 500}},
         "topology peer_timeout_ms must be 0 (off) or >= 2000 (4 heartbeats of 500 ms), got 500"},
        {{{"peer_timeout_ms", -1}}, "topology peer_timeout_ms must be 0..2147483648, got -1"},
        {{{"step_timeout_ms", 0}}, "topology step_timeout_ms must be 1..2147483648, got 0"},
        {{{"kv_pages", 1.5}}, "topology kv_pages must be an integer, got 1.5"},
        {{{"expert_groups", {{{"name", "experts-0"}, {"share", 2000000000}}}}},
         "topology expert_groups[0].share must be 1..1000000, got 2000000000"},
        {{{"expert_groups", {{{"name", 3}}}}},
         "topology expert_groups[0].name must be a string, got 3"},
        {{{"expert_groups", {5}}}, "topology expert_groups[0] must be an object, got 5"},
        {{{"expert_groups", json::array()}}, "topology has no expert_groups"},
        {{{"attention", {{{"name", "a"}, {"tp_size", 2}, {"tp_rank", 2}}}}},
         "topology attention[0].tp_rank must be 0..1, got 2"},
        {{{"attention", {{{"name", "a"}, {"role", "both"}}}}},
         "topology attention[0].role must be \"prefill\" or \"decode\", got \"both\""},
        {{{"attention", {{{"role", "decode"}}}}},
         "topology attention[0].name must be a non-empty string"},
        {{{"attention", "a"}}, "topology attention must be an array of objects"},
    };
    for (const auto& [patch, needle] : cases) {
        SCOPED_TRACE(patch.dump());
        json topology = valid_topology();
        if (patch.is_object())
            topology.merge_patch(patch);
        else
            topology = patch;
        expect_refused(topology, needle);
    }
}

uint64_t start_time_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(in, stat);
    std::istringstream fields(stat.substr(stat.rfind(')') + 1));
    std::string field;
    for (int idx = 3; idx <= 22; ++idx) fields >> field;
    return std::stoull(field);
}

bool alive(pid_t pid) {
    return ::waitpid(pid, nullptr, WNOHANG) == 0;  // our child, not exited
}

// A state file whose entry has the pid and binary of a running process but another start time
// (the process it named is gone and the pid went to another of the same binary): `down` leaves
// that process alone. With the right start time it stops it.
TEST(LauncherState, DownLeavesAProcessWithAReusedPidAlone) {
    testing::temp_dir dir;
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        ::execl("/bin/sleep", "sleep", "30", static_cast<char*>(nullptr));
        ::_exit(127);
    }
    // exec'd once /proc names sleep (a fork of this sanitized test process can take a while).
    const auto exec_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (std::error_code ec; !std::filesystem::equivalent(
             std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/exe", ec),
             "/bin/sleep", ec);)
        if (std::chrono::steady_clock::now() > exec_deadline) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
            FAIL() << "the child did not exec /bin/sleep within 10 s";
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
    const uint64_t started = start_time_of(pid);
    ASSERT_GT(started, 0u);
    const auto state_file = dir.path() / "state.json";
    const auto write_state = [&](uint64_t start_time) {
        json process = {{"name", "experts-0"},     {"role", "experts"},       {"pid", pid},
                        {"binary", "/bin/sleep"},  {"metrics_port", 1},       {"control_port", 0},
                        {"log_file", "/dev/null"}, {"start_time", start_time}};
        std::ofstream(state_file) << json{
            {"topology", "t"},
            {"model_dir", "/nonexistent"},
            {"host", "127.0.0.1"},
            {"coordinator", "127.0.0.1:1"},
            {"processes",
             json::array({process})}}.dump();
    };
    write_state(started + 1);
    auto report = cluster_down(state_file, std::chrono::milliseconds(500));
    ASSERT_TRUE(report.has_value()) << report.error();
    ASSERT_EQ(report->size(), 1u);
    EXPECT_NE(report->front().find("already stopped"), std::string::npos) << report->front();
    EXPECT_TRUE(alive(pid));

    write_state(started);
    report = cluster_down(state_file, std::chrono::milliseconds(2000));
    ASSERT_TRUE(report.has_value()) << report.error();
    EXPECT_NE(report->front().find("SIGTERM"), std::string::npos) << report->front();
    if (alive(pid)) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        FAIL() << "down did not stop the process it named";
    }
}

}  // namespace
}  // namespace longcat::control
