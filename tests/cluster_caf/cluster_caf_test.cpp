// The local cluster as real processes on 127.0.0.1 (deploy/local/minimal.json): `longcat cluster
// up`, generations through the coordinator (CAF) with MoE traffic over UCX, failures, `down`.
// Every test stops what it started (cluster down in a guard, extra processes by pid).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/cluster_client.hpp"
#include "actors/control/launcher.hpp"
#include "model/engine.hpp"
#include "model/mkmodel.hpp"
#include "model/tokenizer.hpp"
#include "proto/version.hpp"
#include "tests/cluster_caf/local_cluster.hpp"
#include "tests/support/temp_dir.hpp"

namespace longcat::control {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

struct process_result {
    int exit_code = -1;
    std::string output;  // stdout + stderr
};

// Runs a command to completion, capturing its output (killed after `timeout`).
process_result run_process(const std::vector<std::string>& args, std::chrono::seconds timeout = 120s) {
    int pipe_fds[2];
    EXPECT_EQ(::pipe(pipe_fds), 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(pipe_fds[1], STDOUT_FILENO);
        ::dup2(pipe_fds[1], STDERR_FILENO);
        ::close(pipe_fds[0]);
        std::vector<char*> argv;
        for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
        argv.push_back(nullptr);
        ::execv(argv[0], argv.data());
        ::_exit(127);
    }
    ::close(pipe_fds[1]);
    ::fcntl(pipe_fds[0], F_SETFL, O_NONBLOCK);
    process_result result;
    const auto until = clock_type::now() + timeout;
    int status = 0;
    bool done = false;
    while (!done) {
        char buffer[4096];
        ssize_t got;
        while ((got = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) result.output.append(buffer, got);
        if (::waitpid(pid, &status, WNOHANG) == pid) {
            done = true;
            while ((got = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0) result.output.append(buffer, got);
        } else if (clock_type::now() > until) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            result.output += "\n[test: killed after timeout]";
            done = true;
        } else {
            std::this_thread::sleep_for(20ms);
        }
    }
    ::close(pipe_fds[0]);
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

// Each thread of a process as /proc reports it: name, scheduling policy (SCHED_OTHER 0,
// SCHED_BATCH 3) and CPU time in clock ticks.
struct thread_stat {
    std::string name;
    int policy = -1;
    long ticks = 0;
};
std::vector<thread_stat> threads_of(int pid) {
    std::vector<thread_stat> out;
    std::error_code ec;
    for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
        std::ifstream in(task.path() / "stat");
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const auto open = text.find('('), close = text.rfind(')');
        if (open == std::string::npos || close == std::string::npos) continue;
        thread_stat t;
        t.name = text.substr(open + 1, close - open - 1);
        std::istringstream fields(text.substr(close + 2));  // from field 3 (state) on
        std::vector<std::string> f((std::istream_iterator<std::string>(fields)), std::istream_iterator<std::string>());
        if (f.size() < 39) continue;
        t.ticks = std::stol(f[11]) + std::stol(f[12]);  // utime (14), stime (15)
        t.policy = std::stoi(f[38]);                     // policy (41)
        out.push_back(t);
    }
    return out;
}

// The value of an unlabelled series in a Prometheus text body; -1 when absent.
double series_value(const std::string& body, const std::string& name) {
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);)
        if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    return -1.0;
}

bool alive(const launched_process& p) {
    char buffer[4096];
    const ssize_t len = ::readlink(("/proc/" + std::to_string(p.pid) + "/exe").c_str(), buffer, sizeof buffer - 1);
    if (len <= 0) return false;
    std::string exe(buffer, static_cast<size_t>(len));
    return exe.rfind(p.binary, 0) == 0;
}

const launched_process& find(const cluster_state& state, const std::string& name) {
    for (const auto& p : state.processes)
        if (p.name == name) return p;
    throw std::runtime_error("no process " + name);
}

std::string slurp_file(const fs::path& file) {
    std::ifstream in(file);
    std::stringstream out;
    out << in.rdbuf();
    return out.str();
}

class ClusterCaf : public ::testing::Test {
protected:
    void SetUp() override {
        local_cluster::use_loopback_ucx();
        model_dir_ = local_cluster::make_tiny_b(dir_.path() / "model");
        state_file_ = dir_.path() / "cluster" / "state.json";
    }
    void TearDown() override {
        for (int pid : extra_pids_) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
        if (fs::exists(state_file_)) run_process({LONGCAT_CLI_PATH, "cluster", "down", "--state", state_file_});
    }

    // Starts deploy/local/<topology>.json, with `overrides` (e.g. {"transport":"shm"}) merged into
    // a copy of it when given.
    cluster_state up(const std::string& topology = "minimal", const nlohmann::json& overrides = {}) {
        fs::path file = std::string(LONGCAT_SOURCE_DIR) + "/deploy/local/" + topology + ".json";
        if (!overrides.is_null()) {
            nlohmann::json topo = nlohmann::json::parse(slurp_file(file));
            topo.update(overrides);
            file = dir_.path() / (topology + "-variant.json");
            std::ofstream(file) << topo.dump(2);
        }
        const auto result = run_process({LONGCAT_CLI_PATH, "cluster", "up", "--topology", file,
                                         "--model", model_dir_, "--state", state_file_, "--timeout-s", "90"});
        EXPECT_EQ(result.exit_code, 0) << result.output;
        auto state = read_cluster_state(state_file_);
        if (!state) throw std::runtime_error(state.error() + "\n" + result.output);
        return *state;
    }

    std::vector<int32_t> prompt() const {
        const auto tok = model::tokenizer::load_dir(model_dir_);
        return tok.encode("The quick brown fox jumps over the lazy dog", true);
    }

    std::vector<int32_t> engine_greedy(const std::vector<int32_t>& ids, int64_t max_tokens) const {
        auto weights = std::make_shared<model::model_weights>(model::load_model_weights(model_dir_));
        model::engine_options eo;
        eo.num_threads = 1;
        model::engine eng(weights, eo);
        model::sampling_params sp;
        sp.temperature = 0.0f;
        return eng.generate(ids, max_tokens, sp);
    }

    // Every process of `state` runs, the coordinator reports serving within 5 s (a member that
    // left makes the others pair with a new placement first; requests wait in the queue
    // meanwhile), and a 4-token generation equals the engine's.
    void expect_still_serving(const cluster_state& state) const {
        for (const auto& p : state.processes) EXPECT_TRUE(alive(p)) << p.name;
        const auto until = clock_type::now() + 5s;
        auto status = cluster_status_of(state.coordinator, 5s);
        while (status && !status->serving && clock_type::now() < until) {
            std::this_thread::sleep_for(50ms);
            status = cluster_status_of(state.coordinator, 5s);
        }
        ASSERT_TRUE(status.has_value()) << status.error();
        EXPECT_TRUE(status->serving) << status->reason;
        cluster_generate_options o;
        o.prompt = prompt();
        o.max_tokens = 4;
        auto got = cluster_generate(state.coordinator, o);
        ASSERT_TRUE(got.has_value()) << got.error();
        EXPECT_EQ(got->tokens, engine_greedy(o.prompt, 4));
    }

    // Starts another member like `like` (its binary: longcat-experts or longcat-attention) against
    // the running coordinator (killed in TearDown).
    int start_member(const cluster_state& state, const launched_process& like,
                     const std::string& name, const std::vector<std::string>& extra,
                     const fs::path& log,
                     const std::vector<std::pair<std::string, std::string>>& env = {}) {
        std::vector<std::string> args{like.binary, "--name", name, "--model", model_dir_, "--coordinator",
                                      state.coordinator, "--threads", "1"};
        args.insert(args.end(), extra.begin(), extra.end());
        const pid_t pid = ::fork();
        if (pid == 0) {
            for (const auto& [key, value] : env) ::setenv(key.c_str(), value.c_str(), 1);
            const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(fd, STDOUT_FILENO);
            ::dup2(fd, STDERR_FILENO);
            std::vector<char*> argv;
            for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        extra_pids_.push_back(pid);
        return pid;
    }

    // Restarts the member `like` under its name with the launcher's settings for `transport`
    // (error mode and UCX_TLS as `cluster up` sets them), waits until the cluster serves again
    // (at most 60 s), and checks that a generation through it equals the engine's.
    void restart_and_serve(const cluster_state& state, const launched_process& like,
                           const std::string& transport, const cluster_generate_options& o) {
        const bool shm = transport == "shm";
        start_member(
            state, like, like.name,
            {"--listen-host", "127.0.0.1", "--data-plane-error-mode", shm ? "none" : "peer"},
            dir_.path() / (like.name + "-restarted.log"),
            {{"UCX_TLS", shm ? "sm,self,tcp" : "tcp,self"}});
        const auto until = clock_type::now() + 60s;
        for (;;) {
            auto status = cluster_status_of(state.coordinator, 5s);
            ASSERT_TRUE(status.has_value()) << status.error();
            if (status->serving) {
                EXPECT_GE(status->placement_version, 2u);
                break;
            }
            ASSERT_LT(clock_type::now(), until) << status->reason;
            std::this_thread::sleep_for(100ms);
        }
        auto got = cluster_generate(state.coordinator, o);
        ASSERT_TRUE(got.has_value()) << got.error();
        EXPECT_EQ(got->tokens, engine_greedy(o.prompt, o.max_tokens));
    }

    void kill_group_and_recover(const std::string& transport);
    void default_topology(const nlohmann::json& overrides);

    testing::temp_dir dir_;
    fs::path model_dir_;
    fs::path state_file_;
    std::vector<int> extra_pids_;
};

std::string slurp(const fs::path& file) { return slurp_file(file); }

TEST_F(ClusterCaf, MinimalGreedyMatchesSingleProcessEngineAndDownLeavesNoProcess) {
    const cluster_state state = up("minimal");
    ASSERT_EQ(state.processes.size(), 3u);
    for (const auto& p : state.processes) {
        EXPECT_TRUE(alive(p)) << p.name;
        EXPECT_EQ(http_get_status("127.0.0.1", p.metrics_port, "/readyz", 2s), 200) << p.name;
        EXPECT_EQ(http_get_status("127.0.0.1", p.metrics_port, "/healthz", 2s), 200) << p.name;
    }
    const auto ids = prompt();
    const auto expected = engine_greedy(ids, 24);

    cluster_generate_options o;
    o.prompt = ids;
    o.max_tokens = 24;
    o.timeout = 60s;
    auto got = cluster_generate(state.coordinator, o);
    ASSERT_TRUE(got.has_value()) << got.error();
    EXPECT_EQ(got->tokens, expected);

    // The CLI through the state file prints the same ids as the single-process CLI.
    const auto via_cluster = run_process({LONGCAT_CLI_PATH, "generate", "--cluster", state_file_, "--prompt",
                                          "The quick brown fox jumps over the lazy dog", "--max-tokens", "16", "--ids"});
    const auto single = run_process({LONGCAT_CLI_PATH, "generate", "--model", model_dir_, "--prompt",
                                     "The quick brown fox jumps over the lazy dog", "--max-tokens", "16", "--ids",
                                     "--threads", "1"});
    ASSERT_EQ(via_cluster.exit_code, 0) << via_cluster.output;
    ASSERT_EQ(single.exit_code, 0) << single.output;
    auto ids_line = [](const std::string& out) {
        const auto at = out.find("ids:");
        return at == std::string::npos ? std::string("<none>") : out.substr(at, out.find('\n', at) - at);
    };
    EXPECT_EQ(ids_line(via_cluster.output), ids_line(single.output));

    // Over tcp (the default transport) the data plane says so.
    const std::string worker_log = slurp(find(state, "attention-0").log_file);
    EXPECT_NE(worker_log.find("data plane to experts-0: tcp"), std::string::npos) << worker_log;

    const std::string coordinator_metrics = [&] {
        std::string body;
        http_get_status("127.0.0.1", find(state, "coordinator").metrics_port, "/metrics", 2s, &body);
        return body;
    }();
    EXPECT_NE(coordinator_metrics.find("longcat_placement_version 1"), std::string::npos) << coordinator_metrics;
    EXPECT_NE(coordinator_metrics.find("longcat_requests_total{outcome=\"length\"} 2"), std::string::npos)
        << coordinator_metrics;
    std::string worker_metrics;
    http_get_status("127.0.0.1", find(state, "attention-0").metrics_port, "/metrics", 2s, &worker_metrics);
    EXPECT_NE(worker_metrics.find("longcat_exposed_communication_seconds_total{wait=\"combine\"}"),
              std::string::npos) << worker_metrics;
    EXPECT_NE(worker_metrics.find("longcat_step_tokens_total"), std::string::npos) << worker_metrics;

    // Step boundaries: a request of 12 tokens runs 12 steps (its prefill, then 11 decodes, each
    // planned while the one before ran), so 11 boundaries are timed; the release-only step that
    // frees its pages after it finished follows no step.  Idle = the worker's pages all free
    // (the release-only step ran) and the coordinator has completed every step the worker ran.
    const auto worker = find(state, "attention-0");
    auto scrape = [&](const launched_process& p, const std::string& name) {
        std::string body;
        http_get_status("127.0.0.1", p.metrics_port, "/metrics", 2s, &body);
        return series_value(body, name);
    };
    auto worker_series = [&](const std::string& name) { return scrape(worker, name); };
    auto idle = [&] {
        return worker_series("longcat_kv_pages_used") == 0.0 &&
               worker_series("longcat_step_seconds_count") ==
                   scrape(find(state, "coordinator"), "longcat_step_seconds_count");
    };
    auto wait_idle = [&] {
        const auto until = clock_type::now() + 5s;
        while (!idle() && clock_type::now() < until) std::this_thread::sleep_for(20ms);
        return idle();
    };
    ASSERT_TRUE(wait_idle());
    const double boundaries_before = worker_series("longcat_worker_boundaries_total");
    cluster_generate_options twelve;
    twelve.prompt = ids;
    twelve.max_tokens = 12;
    twelve.ignore_eos = true;
    twelve.timeout = 60s;
    auto twelve_got = cluster_generate(state.coordinator, twelve);
    ASSERT_TRUE(twelve_got.has_value()) << twelve_got.error();
    EXPECT_EQ(twelve_got->tokens.size(), 12u);
    ASSERT_TRUE(wait_idle());
    EXPECT_EQ(worker_series("longcat_worker_boundaries_total") - boundaries_before, 11.0);

    // Scheduling: the processes that compute run CAF's threads under SCHED_BATCH (a message never
    // preempts their compute), the thread that ran the steps (the busiest of the detached actors'
    // "caf.actor" threads: it loaded the weights too) under SCHED_OTHER; the coordinator, whose
    // CAF threads are its work, leaves every thread as it was started (as this test runs).
    const auto worker_threads = threads_of(worker.pid);
    int caf_threads = 0;
    const thread_stat* step_thread = nullptr;
    for (const auto& t : worker_threads) {
        if (t.name == "caf.multiplexer" || t.name == "caf.clock") {
            ++caf_threads;
            EXPECT_EQ(t.policy, SCHED_BATCH) << t.name;
        }
        if (t.name == "caf.actor" && (!step_thread || t.ticks > step_thread->ticks)) step_thread = &t;
    }
    EXPECT_GE(caf_threads, 2);
    ASSERT_NE(step_thread, nullptr);
    EXPECT_EQ(step_thread->policy, SCHED_OTHER) << "the caf.actor thread that ran the steps";
    int expert_caf_threads = 0;
    for (const auto& t : threads_of(find(state, "experts-0").pid)) {
        if (t.name == "caf.multiplexer") {
            ++expert_caf_threads;
            EXPECT_EQ(t.policy, SCHED_BATCH) << "experts-0 " << t.name;
        }
    }
    EXPECT_GE(expert_caf_threads, 1);
    for (const auto& t : threads_of(find(state, "coordinator").pid)) {
        EXPECT_EQ(t.policy, ::sched_getscheduler(0)) << "coordinator " << t.name;
    }

    const auto down = run_process({LONGCAT_CLI_PATH, "cluster", "down", "--state", state_file_});
    EXPECT_EQ(down.exit_code, 0) << down.output;
    for (const auto& p : state.processes) EXPECT_FALSE(alive(p)) << p.name << " still runs";
    EXPECT_FALSE(fs::exists(state_file_));
    // Each service stopped cleanly on SIGTERM (its log says so and shows no fatal error).
    for (const auto& p : state.processes) EXPECT_EQ(slurp(p.log_file).find("fatal"), std::string::npos) << p.name;
}

TEST_F(ClusterCaf, MemberWithAnotherProtocolVersionIsRefusedByName) {
    const cluster_state state = up("minimal");
    const auto& experts = find(state, "experts-0");
    const fs::path log = dir_.path() / "experts-x.log";
    const int pid = start_member(state, experts, "experts-x", {"--protocol-version", "99"}, log);
    int status = 0;
    const auto until = clock_type::now() + 30s;
    while (::waitpid(pid, &status, WNOHANG) != pid) {
        ASSERT_LT(clock_type::now(), until) << "the refused member did not exit\n" << slurp(log);
        std::this_thread::sleep_for(50ms);
    }
    extra_pids_.clear();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << slurp(log);
    const std::string text = slurp(log);
    EXPECT_NE(text.find("registration refused"), std::string::npos) << text;
    EXPECT_NE(text.find("coordinator (coordinator) speaks protocol " + std::to_string(proto::kProtocolVersion) + " with"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("experts-x (expert_group) speaks protocol 99"), std::string::npos) << text;
    EXPECT_NE(slurp(find(state, "coordinator").log_file).find("experts-x (expert_group) speaks protocol 99"),
              std::string::npos);
    // The coordinator stays up and serving.
    expect_still_serving(state);
}

// A CAF message the coordinator has no handler for (a plain string, sent by request) is
// answered with CAF's named error and dropped; the coordinator keeps serving.
TEST_F(ClusterCaf, UnknownMessageToTheCoordinatorIsRefusedByNameAndItKeepsServing) {
    const cluster_state state = up("minimal");
    {
        caf_runtime_options runtime;
        runtime.scheduler_threads = 1;
        auto config = make_caf_config(runtime);
        caf::actor_system system{*config};
        auto coordinator =
            caf::actor_cast<caf::actor>(connect_coordinator(system, state.coordinator, 5s));
        caf::scoped_actor self{system};
        std::optional<caf::error> refused;
        bool answered = false;
        self->request(coordinator, std::chrono::seconds(5), std::string("not a longcat message"))
            .receive([&](const std::string&) { answered = true; },
                     [&](caf::error& err) { refused = std::move(err); });
        EXPECT_FALSE(answered);
        ASSERT_TRUE(refused.has_value());
        EXPECT_EQ(*refused, caf::sec::unexpected_message) << system.render(*refused);
        std::printf("unknown message refused: %s\n", system.render(*refused).c_str());
    }
    expect_still_serving(state);
}

// SIGCONT to a process the test stopped, however the test ends.
struct resume_on_exit {
    explicit resume_on_exit(int stopped) : pid(stopped) {}
    resume_on_exit(const resume_on_exit&) = delete;
    resume_on_exit& operator=(const resume_on_exit&) = delete;
    ~resume_on_exit() { ::kill(pid, SIGCONT); }
    int pid;
};

// Waits up to `limit` for `p` to exit; the seconds since `since` when it had, or nullopt.
std::optional<double> exited_within(const launched_process& p, clock_type::time_point since,
                                    std::chrono::seconds limit) {
    while (alive(p)) {
        if (clock_type::now() > since + limit) return std::nullopt;
        std::this_thread::sleep_for(50ms);
    }
    return std::chrono::duration<double>(clock_type::now() - since).count();
}

// Resumes the member `p` the test stopped (SIGCONT) and checks that it then stops (within
// `limit`) because the coordinator let it go ("the coordinator let this <what> go" in its log)
// while the coordinator and the member `other` run on.
void expect_stops_when_resumed(std::optional<resume_on_exit>& resume, const cluster_state& state,
                               const launched_process& p, const std::string& what,
                               const std::string& other, std::chrono::seconds limit) {
    resume.reset();  // SIGCONT
    const auto stopped = exited_within(p, clock_type::now(), limit);
    ASSERT_TRUE(stopped.has_value()) << "the resumed " << what << " still runs\n"
                                     << slurp_file(p.log_file);
    EXPECT_NE(slurp_file(p.log_file).find("stopping: the coordinator let this " + what + " go"),
              std::string::npos)
        << slurp_file(p.log_file);
    EXPECT_TRUE(alive(find(state, "coordinator")));
    EXPECT_TRUE(alive(find(state, other)));
}

// An expert group whose host goes silent (SIGSTOP: no FIN and no RST, as after a power loss or
// behind a partition) answers no liveness probe: the coordinator declares it down after the
// topology's peer_timeout_ms, and requests are refused naming it. Resumed, the group finds that
// the coordinator let it go and stops with an error; a restarted one registers and serves.
TEST_F(ClusterCaf, SilentExpertGroupIsDeclaredDownAfterThePeerTimeout) {
    const cluster_state state = up("minimal", {{"peer_timeout_ms", 2000}});
    const auto& experts = find(state, "experts-0");
    ASSERT_EQ(::kill(experts.pid, SIGSTOP), 0);
    const auto stopped_at = clock_type::now();
    std::optional<resume_on_exit> resume;
    resume.emplace(experts.pid);
    std::optional<double> declared_after;
    std::string reason;
    while (!declared_after && clock_type::now() < stopped_at + 10s) {
        auto status = cluster_status_of(state.coordinator, 5s);
        ASSERT_TRUE(status.has_value()) << status.error();
        if (!status->serving) {
            declared_after = std::chrono::duration<double>(clock_type::now() - stopped_at).count();
            reason = status->reason;
        }
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_TRUE(declared_after.has_value()) << "still serving 10 s after the group went silent";
    std::printf("declared down %.2f s after the group went silent: %s\n", *declared_after,
                reason.c_str());
    // Not before the timeout less a probe interval (1.5 s), and within the 2 s timeout, a probe
    // interval (0.5 s) and 3 s.
    EXPECT_GE(*declared_after, 1.0);
    EXPECT_LE(*declared_after, 5.5);
    EXPECT_NE(reason.find("experts-0 (experts 0-11 of every layer) is down"), std::string::npos)
        << reason;
    EXPECT_NE(slurp_file(find(state, "coordinator").log_file)
                  .find("answered no liveness probe for 2000 ms"),
              std::string::npos);
    cluster_generate_options o;
    o.prompt = prompt();
    o.max_tokens = 4;
    o.timeout = 30s;
    auto refused = cluster_generate(state.coordinator, o);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().find("experts-0 (experts 0-11 of every layer) is down"),
              std::string::npos)
        << refused.error();
    ASSERT_NO_FATAL_FAILURE(
        expect_stops_when_resumed(resume, state, experts, "group", "attention-0", 10s));
    // A restarted group (the launcher's tcp settings) registers, and requests are served again.
    restart_and_serve(state, experts, "tcp", o);
}

// An attention worker that goes silent (SIGSTOP: its connections stay open) while a request
// generates answers no step: the coordinator lets it go once a step is unanswered for the
// topology's step_timeout_ms — the request fails naming the worker, new ones are refused — and
// the worker, resumed, finds that it was let go and stops with an error; a restarted one
// registers and serves.
TEST_F(ClusterCaf, SilentAttentionWorkerIsLetGoAfterTheStepTimeout) {
    const cluster_state state = up("minimal", {{"step_timeout_ms", 2000}});
    const auto& worker = find(state, "attention-0");
    cluster_generate_options long_request;
    long_request.prompt = prompt();
    long_request.max_tokens = 6000;
    long_request.timeout = 60s;
    auto running = std::async(std::launch::async, [&state, long_request] {
        return cluster_generate(state.coordinator, long_request);
    });
    std::this_thread::sleep_for(1500ms);
    ASSERT_EQ(running.wait_for(0s), std::future_status::timeout)
        << "the request ended before the worker went silent";
    ASSERT_EQ(::kill(worker.pid, SIGSTOP), 0);
    const auto stopped_at = clock_type::now();
    std::optional<resume_on_exit> resume;
    resume.emplace(worker.pid);
    // It fails within the step timeout (2 s) + 3 s; not much before the 2 s (the steps in flight
    // were sent at most a few decode steps before the stop).
    ASSERT_EQ(running.wait_until(stopped_at + 5s), std::future_status::ready)
        << "the request still runs 5 s after its worker went silent";
    const double failed_after =
        std::chrono::duration<double>(clock_type::now() - stopped_at).count();
    const auto failed = running.get();
    ASSERT_FALSE(failed.has_value()) << "the request completed on a stopped worker";
    std::printf("the request failed %.2f s after its worker went silent: %s\n", failed_after,
                failed.error().c_str());
    EXPECT_GE(failed_after, 1.0);
    EXPECT_NE(failed.error().find("attention worker attention-0 (TP group tp-0 rank 0) is down"),
              std::string::npos)
        << failed.error();
    EXPECT_NE(slurp_file(find(state, "coordinator").log_file)
                  .find("member attention-0 is down: answered no step for 2000 ms"),
              std::string::npos);
    cluster_generate_options o;
    o.prompt = prompt();
    o.max_tokens = 4;
    o.timeout = 30s;
    auto refused = cluster_generate(state.coordinator, o);
    ASSERT_FALSE(refused.has_value()) << "served with its only attention worker let go";
    EXPECT_NE(refused.error().find("waiting for attention workers: 0 of 1 ready"),
              std::string::npos)
        << refused.error();
    ASSERT_NO_FATAL_FAILURE(
        expect_stops_when_resumed(resume, state, worker, "worker", "experts-0", 15s));
    // A restarted worker (the launcher's tcp settings) registers, and requests are served again.
    restart_and_serve(state, worker, "tcp", o);
}

// A coordinator whose host goes silent (SIGSTOP: no FIN and no RST, as after a power loss or
// behind a partition): its members stop with an error once nothing came from it for the
// topology's peer_timeout_ms (CAF's heartbeats), instead of waiting for it for ever; their
// supervisor restarts them and they register again.
TEST_F(ClusterCaf, MembersOfASilentCoordinatorStopAfterThePeerTimeout) {
    const cluster_state state = up("minimal", {{"peer_timeout_ms", 2000}});
    const auto& coordinator = find(state, "coordinator");
    // An idle coordinator is not a silent one: its heartbeats keep the members for longer
    // than the timeout.
    std::this_thread::sleep_for(3s);
    for (const auto& p : state.processes)
        ASSERT_TRUE(alive(p)) << p.name << " stopped while its coordinator idled";
    ASSERT_EQ(::kill(coordinator.pid, SIGSTOP), 0);
    const auto stopped_at = clock_type::now();
    std::optional<resume_on_exit> resume;
    resume.emplace(coordinator.pid);
    for (const std::string name : {"attention-0", "experts-0"}) {
        const auto& member = find(state, name);
        const auto stopped = exited_within(member, stopped_at, 10s);
        ASSERT_TRUE(stopped.has_value())
            << name << " still runs 10 s after its coordinator went silent";
        std::printf("%s stopped %.2f s after its coordinator went silent\n", name.c_str(),
                    *stopped);
        EXPECT_GE(*stopped, 1.0) << name;
        EXPECT_LE(*stopped, 5.0) << name;
        const std::string log = slurp_file(member.log_file);
        EXPECT_NE(log.find("stopping: coordinator is down"), std::string::npos) << log;
    }
    resume.reset();  // SIGCONT
    EXPECT_TRUE(alive(coordinator));
}

// A peer timeout shorter than four heartbeats (or probe intervals) would declare live peers
// down: each service refuses it by name at start.
TEST_F(ClusterCaf, ServicesRefuseAPeerTimeoutShorterThanFourHeartbeats) {
    const fs::path services = fs::path(LONGCAT_CLI_PATH).parent_path().parent_path();
    for (const std::string service : {"coordinator", "attention", "experts"}) {
        const auto result =
            run_process({(services / service / ("longcat-" + service)).string(), "--model",
                         model_dir_.string(), "--peer-timeout-ms", "1999"},
                        30s);
        EXPECT_EQ(result.exit_code, 2) << service << ": " << result.output;
        EXPECT_NE(result.output.find(
                      "peer-timeout-ms must be 0 (off) or >= 2000 (4 heartbeats of 500 ms), "
                      "got 1999"),
                  std::string::npos)
            << service << ": " << result.output;
    }
}

// A negative data-plane poll time is refused by name by both services that own a data plane.
TEST_F(ClusterCaf, ServicesRefuseANegativeDataPlanePollTime) {
    const fs::path services = fs::path(LONGCAT_CLI_PATH).parent_path().parent_path();
    for (const std::string service : {"attention", "experts"}) {
        const auto result =
            run_process({(services / service / ("longcat-" + service)).string(), "--model",
                         model_dir_.string(), "--data-plane-poll-us", "-1"},
                        30s);
        EXPECT_EQ(result.exit_code, 2) << service << ": " << result.output;
        EXPECT_NE(result.output.find("data-plane-poll-us must be >= 0"), std::string::npos)
            << service << ": " << result.output;
    }
}

// Kills the only expert group while 4 requests generate; see the two tests below.
void ClusterCaf::kill_group_and_recover(const std::string& transport) {
    const cluster_state state = up("minimal", {{"transport", transport}});
    const auto& experts = find(state, "experts-0");
    const auto ids = prompt();
    // Four long requests (different prompts' lengths), all running when the group dies.
    std::vector<std::future<proto::expected<cluster_generation, std::string>>> running;
    for (size_t r = 0; r < 4; ++r) {
        cluster_generate_options long_request;
        long_request.prompt =
            std::vector<int32_t>(ids.begin(), ids.end() - static_cast<std::ptrdiff_t>(r));
        long_request.max_tokens = 6000;
        long_request.timeout = 120s;
        running.push_back(std::async(std::launch::async, [&state, long_request] {
            return cluster_generate(state.coordinator, long_request);
        }));
    }
    std::this_thread::sleep_for(1500ms);
    for (size_t r = 0; r < running.size(); ++r)
        ASSERT_EQ(running[r].wait_for(0s), std::future_status::timeout)
            << "request " << r << " ended before the kill";
    const auto killed_at = clock_type::now();
    ASSERT_EQ(::kill(experts.pid, SIGKILL), 0);
    // Each fails within the data-plane deadline (5 s) + 1 s, naming the group and its experts.
    for (size_t r = 0; r < running.size(); ++r) {
        ASSERT_EQ(running[r].wait_until(killed_at + 6s), std::future_status::ready)
            << "request " << r << " did not fail in time";
        const double seconds = std::chrono::duration<double>(clock_type::now() - killed_at).count();
        auto failed = running[r].get();
        ASSERT_FALSE(failed.has_value()) << "request " << r;
        EXPECT_NE(failed.error().find("experts-0"), std::string::npos) << failed.error();
        EXPECT_NE(failed.error().find("experts 0-11"), std::string::npos) << failed.error();
        std::printf("request %zu failed by %.2f s after the kill: %s\n", r, seconds,
                    failed.error().c_str());
    }
    // No other process exited.
    EXPECT_TRUE(alive(find(state, "coordinator")));
    EXPECT_TRUE(alive(find(state, "attention-0")));
    // New requests are refused with that error until the group re-registers.
    cluster_generate_options o;
    o.prompt = ids;
    o.max_tokens = 8;
    o.timeout = 30s;
    auto refused = cluster_generate(state.coordinator, o);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().find("experts-0 (experts 0-11 of every layer) is down"), std::string::npos)
        << refused.error();
    // Restart the group under the same name; once it is paired again, requests succeed.
    restart_and_serve(state, experts, transport, o);
    EXPECT_TRUE(alive(find(state, "coordinator")));
    EXPECT_TRUE(alive(find(state, "attention-0")));
}

TEST_F(ClusterCaf, KilledExpertGroupFailsItsRequestsByNameUntilItReRegistersOverTcp) {
    kill_group_and_recover("tcp");
}

// Shared memory: UCX peer error handling is off (it would keep UCX on tcp), so the group's death
// reaches the worker through the combine deadline and the coordinator through CAF's down message.
TEST_F(ClusterCaf, KilledExpertGroupFailsItsRequestsByNameUntilItReRegistersOverSharedMemory) {
    kill_group_and_recover("shm");
}

TEST_F(ClusterCaf, DownDrainsTheRunningRequestThenStopsEverything) {
    const cluster_state state = up("minimal");
    cluster_generate_options o;
    o.prompt = prompt();
    o.max_tokens = 400;  // ~0.7 s here, a few s under ASan: well inside the 8 s drain grace
    auto running = std::async(std::launch::async, [&] { return cluster_generate(state.coordinator, o); });
    std::this_thread::sleep_for(150ms);
    ASSERT_EQ(running.wait_for(0s), std::future_status::timeout) << "the request ended before down";
    const auto down = run_process({LONGCAT_CLI_PATH, "cluster", "down", "--state", state_file_});
    EXPECT_EQ(down.exit_code, 0) << down.output;
    auto got = running.get();
    ASSERT_TRUE(got.has_value()) << got.error();  // drained, not cut off
    EXPECT_EQ(got->tokens.size(), 400u);
    for (const auto& p : state.processes) EXPECT_FALSE(alive(p)) << p.name << " still runs";
    EXPECT_NE(slurp(find(state, "coordinator").log_file).find("drained"), std::string::npos);
    for (const char* member : {"experts-0", "attention-0"}) {
        const std::string log = slurp(find(state, member).log_file);
        EXPECT_NE(log.find("coordinator stopped; stopping"), std::string::npos) << log;
        EXPECT_EQ(log.find("fatal"), std::string::npos) << log;
    }
}

// A LONGCAT_<SERVICE>_<OPTION> in the caller's environment overrides a service's command line:
// it must not override what the launcher sets (here the worker's metrics address, where the
// launcher looks for its readiness, and the group's name). Before, up waited for a worker whose
// metrics were elsewhere until its deadline, and the group registered under another name.
TEST_F(ClusterCaf, EnvironmentCannotOverrideWhatTheLauncherSets) {
    struct scoped_env {
        std::vector<std::string> names;
        ~scoped_env() {
            for (const auto& n : names) ::unsetenv(n.c_str());
        }
    } env{{"LONGCAT_ATTENTION_METRICS_ADDRESS", "LONGCAT_EXPERTS_NAME"}};
    ::setenv("LONGCAT_ATTENTION_METRICS_ADDRESS", "127.0.0.1:1", 1);
    ::setenv("LONGCAT_EXPERTS_NAME", "someone-else", 1);
    const cluster_state state = up("minimal");
    auto status = cluster_status_of(state.coordinator, 5s);
    ASSERT_TRUE(status.has_value()) << status.error();
    EXPECT_TRUE(status->serving) << status->reason;
    std::string members;
    for (const auto& m : status->members) members += m + "\n";
    EXPECT_NE(members.find("experts-0 (expert_group"), std::string::npos) << members;
    EXPECT_EQ(members.find("someone-else"), std::string::npos) << members;
}

TEST_F(ClusterCaf, SpareGroupRegistersServesNothingAndExitsZeroOnSigterm) {
    const cluster_state state = up("minimal");
    const fs::path log = dir_.path() / "experts-spare.log";
    const int pid = start_member(state, find(state, "experts-0"), "experts-spare", {}, log);
    // It registers (no expert is left to assign: it holds none) and turns ready.
    const auto until = clock_type::now() + 30s;
    while (slurp(log).find("placement v2") == std::string::npos) {
        ASSERT_LT(clock_type::now(), until) << slurp(log);
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_NE(slurp(log).find("effective config"), std::string::npos);
    ASSERT_EQ(::kill(pid, SIGTERM), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    extra_pids_.clear();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status << "\n" << slurp(log);
    // Its leaving fails nothing: the cluster keeps serving.
    expect_still_serving(state);
}

// SIGTERM while a step runs on the member's own thread: the service waits for the member actor
// to be gone before it stops the compute under it (it reset the executor mid-step before), exits
// by itself with its last log line "stopped", and the request it served ends instead of hanging.
TEST_F(ClusterCaf, AttentionWorkerStopsCleanlyOnSigtermMidStep) {
    const cluster_state state = up("minimal");
    cluster_generate_options o;
    o.prompt = prompt();
    o.max_tokens = 400;
    auto running =
        std::async(std::launch::async, [&] { return cluster_generate(state.coordinator, o); });
    std::this_thread::sleep_for(150ms);
    ASSERT_EQ(running.wait_for(0s), std::future_status::timeout)
        << "the request ended before SIGTERM";
    const launched_process& worker = find(state, "attention-0");
    ASSERT_EQ(::kill(worker.pid, SIGTERM), 0);
    const auto until = clock_type::now() + 10s;
    while (alive(worker)) {
        ASSERT_LT(clock_type::now(), until) << "still running 10 s after SIGTERM";
        std::this_thread::sleep_for(50ms);
    }
    const std::string log = slurp(worker.log_file);
    EXPECT_NE(log.find("[attention-0] stopped\n"), std::string::npos) << log;
    EXPECT_EQ(log.find("fatal"), std::string::npos) << log;
    EXPECT_EQ(log.find("AddressSanitizer"), std::string::npos) << log;
    ASSERT_EQ(running.wait_for(60s), std::future_status::ready) << "the request hangs";
}

void ClusterCaf::default_topology(const nlohmann::json& overrides) {
    const cluster_state state = up("default", overrides);
    ASSERT_EQ(state.processes.size(), 7u);  // + the gateway
    auto status = cluster_status_of(state.coordinator, 5s);
    ASSERT_TRUE(status.has_value()) << status.error();
    EXPECT_TRUE(status->serving) << status->reason;
    std::string members;
    for (const auto& m : status->members) members += m + "\n";
    EXPECT_NE(members.find("experts-0 (expert_group, ready, placement v1"), std::string::npos) << members;
    EXPECT_NE(members.find("experts 0-1)"), std::string::npos) << members;   // shares 1:2:3 of 12
    EXPECT_NE(members.find("experts 2-5)"), std::string::npos) << members;
    EXPECT_NE(members.find("experts 6-11)"), std::string::npos) << members;
    // Several requests at once: both TP ranks own some; every one completes. Against the engine:
    // TP and three groups change float summation order, so only the first token (after prefill)
    // is required to match; the rest is reported.
    const auto tok = model::tokenizer::load_dir(model_dir_);
    std::vector<std::future<proto::expected<cluster_generation, std::string>>> running;
    std::vector<std::vector<int32_t>> prompts;
    for (int idx = 0; idx < 3; ++idx) {
        prompts.push_back(tok.encode("Request number " + std::to_string(idx) + " says hello", true));
        cluster_generate_options o;
        o.prompt = prompts.back();
        o.max_tokens = 12;
        running.push_back(std::async(std::launch::async, [&state, o] { return cluster_generate(state.coordinator, o); }));
    }
    for (size_t idx = 0; idx < running.size(); ++idx) {
        auto got = running[idx].get();
        ASSERT_TRUE(got.has_value()) << got.error();
        ASSERT_EQ(got->tokens.size(), 12u);
        const auto expected = engine_greedy(prompts[idx], 12);
        EXPECT_EQ(got->tokens.front(), expected.front());
        std::printf("request %zu: %s the engine's greedy tokens\n", idx,
                    got->tokens == expected ? "equals" : "differs (float order) from");
    }
    const auto down = run_process({LONGCAT_CLI_PATH, "cluster", "down", "--state", state_file_});
    EXPECT_EQ(down.exit_code, 0) << down.output;
    for (const auto& p : state.processes) EXPECT_FALSE(alive(p)) << p.name << " still runs";
}

TEST_F(ClusterCaf, DefaultTopologyTensorParallelPairAndThreeUnevenGroups) { default_topology({}); }

// TP = 2 with two micro-batches: a rank's empty micro-batch still runs its part of the dense-FFN
// collectives, so both ranks stay in lockstep whatever requests each owns.
TEST_F(ClusterCaf, DefaultTopologyWithTwoMicroBatchesOverTcp) { default_topology({{"micro_batches", 2}}); }

TEST_F(ClusterCaf, DefaultTopologyOverSharedMemory) { default_topology({{"transport", "shm"}}); }

TEST_F(ClusterCaf, MinimalOverSharedMemoryWithFourMicroBatchesMatchesEngine) {
    const cluster_state state = up("minimal", {{"transport", "shm"}, {"micro_batches", 4}});
    // The members' logs show the transports UCX chose: shared memory for the data plane.
    const auto ids = prompt();
    cluster_generate_options o;
    o.prompt = ids;
    o.max_tokens = 16;
    o.timeout = 60s;
    auto got = cluster_generate(state.coordinator, o);
    ASSERT_TRUE(got.has_value()) << got.error();
    EXPECT_EQ(got->tokens, engine_greedy(ids, 16));
    // The worker's log names the UCX transports of its data plane to the group: shared memory.
    const std::string log = slurp(find(state, "attention-0").log_file);
    const auto at = log.find("data plane to experts-0:");
    ASSERT_NE(at, std::string::npos) << log;
    const std::string line = log.substr(at, log.find('\n', at) - at);
    EXPECT_TRUE(line.find("sysv") != std::string::npos || line.find("posix") != std::string::npos ||
                line.find("cma") != std::string::npos) << line;
}

TEST_F(ClusterCaf, TopologyWithAnUnknownTransportIsRefusedByName) {
    nlohmann::json topo = nlohmann::json::parse(slurp_file(std::string(LONGCAT_SOURCE_DIR) + "/deploy/local/minimal.json"));
    topo["transport"] = "carrier-pigeon";
    const fs::path file = dir_.path() / "bad.json";
    std::ofstream(file) << topo.dump();
    const auto result = run_process({LONGCAT_CLI_PATH, "cluster", "up", "--topology", file, "--model", model_dir_,
                                     "--state", state_file_, "--timeout-s", "30"});
    EXPECT_NE(result.exit_code, 0);
    EXPECT_NE(result.output.find("transport must be \"tcp\" or \"shm\", got \"carrier-pigeon\""), std::string::npos)
        << result.output;
    EXPECT_FALSE(fs::exists(state_file_));
}

TEST_F(ClusterCaf, TopologyWithInconsistentExpertPoolsIsRefusedByName) {
    const nlohmann::json pd = nlohmann::json::parse(slurp_file(std::string(LONGCAT_SOURCE_DIR) + "/deploy/local/pd.json"));
    auto refused = [&](const nlohmann::json& topo) {
        const fs::path file = dir_.path() / "bad.json";
        std::ofstream(file) << topo.dump();
        const auto result = run_process({LONGCAT_CLI_PATH, "cluster", "up", "--topology", file, "--model",
                                         model_dir_, "--state", state_file_, "--timeout-s", "30"});
        EXPECT_NE(result.exit_code, 0);
        EXPECT_FALSE(fs::exists(state_file_));
        return result.output;
    };
    nlohmann::json mixed = pd;
    mixed["expert_groups"][2].erase("pool");
    EXPECT_NE(refused(mixed).find("expert groups experts-p0 and experts-d1: either every group names a pool or none does"),
              std::string::npos);
    nlohmann::json odd = pd;
    odd["expert_groups"][0]["pool"] = "middle";
    EXPECT_NE(refused(odd).find("expert group experts-p0: pool must be \"prefill\" or \"decode\", got \"middle\""),
              std::string::npos);
    nlohmann::json no_decode_pool = pd;
    no_decode_pool["expert_groups"] = nlohmann::json::array({pd["expert_groups"][0]});
    EXPECT_NE(refused(no_decode_pool).find("attention workers with role decode have no expert group in pool decode"),
              std::string::npos);
}

}  // namespace
}  // namespace longcat::control

// The launcher's ports lie below the kernel's ephemeral range (read here from /proc, the
// reference), so no port the kernel hands out to a listener or a connection in a cluster started
// alongside can take one between the pick and the child's bind; they are random, so two launchers
// rarely pick the same; each one was bindable when picked.
TEST(LauncherPorts, PicksBindablePortsBelowTheEphemeralRangeAtRandom) {
    std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
    int low = 0, high = 0;
    ASSERT_TRUE(range >> low >> high);
    if (low <= 1124) GTEST_SKIP() << "no room below this machine's ephemeral range (" << low << ")";
    std::set<uint16_t> seen;
    for (int i = 0; i < 50; ++i) {
        const uint16_t port = longcat::control::pick_free_port("127.0.0.1");
        ASSERT_NE(port, 0);
        EXPECT_LT(port, low);
        EXPECT_GE(port, 1024);
        seen.insert(port);
    }
    EXPECT_GE(seen.size(), 45u);  // 50 draws from thousands of ports
}
