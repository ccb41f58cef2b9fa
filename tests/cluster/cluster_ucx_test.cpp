// The cluster over ucx_data_plane between real processes on 127.0.0.1: this test process is the
// attention worker, each expert group is an expert_group_peer process (fork + exec; checkpoint
// dir, placement file and group id on argv; its address on stdout). Over UCX_TLS=tcp (error mode
// peer) and UCX_TLS=sm,self,tcp (error mode none). Results must equal the engine as over inproc.
// Every process started is stopped at the end of its test (stdin closed, then SIGKILL).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <future>

#include "actors/collective/collective.hpp"
#include "actors/transport/ucx_data_plane.hpp"
#include "tests/cluster/cluster_fixture.hpp"

namespace longcat::testing {
namespace {

using transport::clock;
using transport::deadline;
using transport::deadline_after;

// expert_group_peer as a child process: stdin is a pipe (closing it stops the child), stdout
// is read line by line.
class group_process {
  public:
    explicit group_process(std::vector<std::string> args) {
        args.insert(args.begin(), LONGCAT_EXPERT_GROUP_PEER);
        std::vector<char*> argv;
        for (auto& arg : args) argv.push_back(arg.data());
        argv.push_back(nullptr);
        int out[2], in[2];
        if (::pipe(out) != 0) return;
        if (::pipe(in) != 0) {
            ::close(out[0]);
            ::close(out[1]);
            return;
        }
        pid_ = ::fork();
        if (pid_ == 0) {
            ::dup2(out[1], STDOUT_FILENO);
            ::dup2(in[0], STDIN_FILENO);
            ::close(out[0]);
            ::close(out[1]);
            ::close(in[0]);
            ::close(in[1]);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(out[1]);
        ::close(in[0]);
        out_fd_ = out[0];
        in_fd_ = in[1];
        ::fcntl(in_fd_, F_SETFD, FD_CLOEXEC);  // later children must not hold it open
        ::fcntl(out_fd_, F_SETFD, FD_CLOEXEC);
    }
    ~group_process() {
        stop();
        if (out_fd_ >= 0) ::close(out_fd_);
    }
    group_process(const group_process&) = delete;
    group_process& operator=(const group_process&) = delete;

    std::optional<std::string> read_line(deadline until) {
        for (;;) {
            if (auto newline = buffer_.find('\n'); newline != std::string::npos) {
                std::string line = buffer_.substr(0, newline);
                buffer_.erase(0, newline + 1);
                seen_ += line + "\n";
                return line;
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now());
            if (left.count() <= 0 || out_fd_ < 0) return std::nullopt;
            pollfd pfd{out_fd_, POLLIN, 0};
            if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
            char chunk[4096];
            const ssize_t got = ::read(out_fd_, chunk, sizeof(chunk));
            if (got <= 0) return std::nullopt;
            buffer_.append(chunk, static_cast<size_t>(got));
        }
    }

    std::optional<std::string> expect(std::string_view prefix, deadline until) {
        while (auto line = read_line(until)) {
            if (line->starts_with(prefix)) return line->substr(prefix.size());
        }
        return std::nullopt;
    }
    const std::string& seen() const { return seen_; }

    // Closes stdin (the child stops serving and exits), waits up to 2 s, then SIGKILL.
    void stop() {
        if (in_fd_ >= 0) {
            ::close(in_fd_);
            in_fd_ = -1;
        }
        if (pid_ <= 0) return;
        const deadline until = deadline_after(std::chrono::seconds(2));
        while (clock::now() < until) {
            if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;
                return;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

  private:
    pid_t pid_ = -1;
    int out_fd_ = -1;
    int in_fd_ = -1;
    std::string buffer_;
    std::string seen_;
};

struct ucx_case {
    std::string label;
    std::string tls;
    transport::ucx_error_mode error_mode;
};

void PrintTo(const ucx_case& c, std::ostream* os) {
    *os << "UCX_TLS=" << c.tls << ", error mode " << transport::to_string(c.error_mode);
}

class ClusterOverUcx : public ::testing::TestWithParam<ucx_case> {
  protected:
    // Starts one expert_group_peer per group of `map`, fills in their addresses.
    void start_groups(cluster::placement_map& map, const std::string& workers = "attention-0") {
        const tiny_model& model = shared_tiny_model();
        const std::filesystem::path file = dir_.path() / "placement.json";
        std::ofstream(file) << cluster::placement_to_json(map);
        for (int32_t group_id = 0; group_id < map.num_groups(); ++group_id) {
            groups_.push_back(std::make_unique<group_process>(std::vector<std::string>{
                "--model-dir=" + model.path.string(), "--placement=" + file.string(),
                "--group=" + std::to_string(group_id), "--workers=" + workers,
                "--tls=" + GetParam().tls,
                "--err-mode=" + std::string(transport::to_string(GetParam().error_mode))}));
        }
        for (int32_t group_id = 0; group_id < map.num_groups(); ++group_id) {
            auto address = groups_[group_id]->expect("ADDRESS ", deadline_after(30s));
            ASSERT_TRUE(address.has_value()) << groups_[group_id]->seen();
            map.set_address(group_id, *address);
        }
    }

    std::unique_ptr<transport::ucx_data_plane> make_plane(const std::string& name = "attention-0") {
        transport::ucx_data_plane_config config;
        config.name = name;
        config.error_mode = GetParam().error_mode;
        config.ucx_options = {{"TLS", GetParam().tls}};
        auto plane = transport::ucx_data_plane::create(config);
        EXPECT_TRUE(plane.has_value()) << plane.error().message;
        return plane ? std::move(*plane) : nullptr;
    }

    // A data plane and a worker executor over `map`'s groups (m micro-batches, combine deadline
    // 3 s), connected to every group; fails the test if any of that fails.
    void start_worker(std::shared_ptr<const model::model_weights> weights,
                      const cluster::placement_map& map, int micro_batches) {
        plane_ = make_plane();
        ASSERT_TRUE(plane_);
        attention::worker_executor_config config;
        config.kv = test_kv();
        config.num_micro_batches = micro_batches;
        config.combine_timeout = 3s;
        auto exec = attention::worker_executor::create(std::move(weights), map, *plane_, config);
        ASSERT_TRUE(exec.has_value()) << exec.error().message;
        exec_ = std::move(*exec);
        auto connected = exec_->connect_groups(deadline_after(10s));
        ASSERT_TRUE(connected.has_value()) << connected.error().message;
    }

    void TearDown() override {
        exec_.reset();
        if (plane_) plane_->close();
        groups_.clear();  // stops every child
    }

    temp_dir dir_;
    std::vector<std::unique_ptr<group_process>> groups_;
    std::unique_ptr<transport::ucx_data_plane> plane_;
    std::unique_ptr<attention::worker_executor> exec_;
};

// One group, m = 1: bitwise equal to the engine across process boundaries.
TEST_P(ClusterOverUcx, OneGroupBitwiseEqualsEngine) {
    const tiny_model& model = shared_tiny_model();
    auto map = single_group_map(model.config());
    ASSERT_NO_FATAL_FAILURE(start_groups(map));
    auto plane = make_plane();
    ASSERT_TRUE(plane);
    attention::worker_executor_config config;
    config.kv = test_kv();
    auto exec = attention::worker_executor::create(model.attention, map, *plane, config);
    ASSERT_TRUE(exec.has_value()) << exec.error().message;
    auto connected = (*exec)->connect_groups(deadline_after(10s));
    ASSERT_TRUE(connected.has_value()) << connected.error().message;
    const reference_run ref = run_engine(model.full, {5, 3, 7}, 3);
    const auto got = run_worker(**exec, ref.plan);
    ASSERT_EQ(got.size(), ref.outputs.size());
    for (size_t step = 0; step < got.size(); ++step) {
        EXPECT_TRUE(bitwise_equal(got[step].forward.logits, ref.outputs[step].logits))
            << "step " << step;
    }
    // The worker's only peer is the group (peer ids count from 1).
    auto transports = plane->transports(transport::peer_id{1}, deadline_after(5s));
    ASSERT_TRUE(transports.has_value()) << transports.error().message;
    std::string joined;
    for (const auto& t : *transports) joined += t + " ";
    std::printf("[ %s ] transports in use: %s\n", GetParam().label.c_str(), joined.c_str());
    plane->close();
}

// Three groups (uneven), m = 2 with SBO: within 1e-5 of the engine.
TEST_P(ClusterOverUcx, ThreeGroupsTwoMicroBatchesEqualEngine) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    ASSERT_NO_FATAL_FAILURE(start_groups(map));
    ASSERT_NO_FATAL_FAILURE(start_worker(model.attention, map, 2));
    const reference_run ref = run_engine(model.full, {5, 3, 7}, 3);
    const auto got = run_worker(*exec_, ref.plan);
    expect_matches(ref, got, /*bitwise=*/false);
    if (GetParam().error_mode == transport::ucx_error_mode::peer) {
        // A stopped group fails the next step by name, by the deadline.
        groups_[1].reset();
        std::vector<model::sequence> seqs(1);
        std::vector<model::sequence*> ptrs = {&seqs[0]};
        const auto start = clock::now();
        auto failed = exec_->step(ptrs, {{1, 2, 3}}, 100);
        ASSERT_FALSE(failed.has_value());
        EXPECT_NE(failed.error().message.find("experts-1"), std::string::npos)
            << failed.error().message;
        std::printf("[ %s ] stopped group: %s\n", GetParam().label.c_str(),
                    failed.error().message.c_str());
        EXPECT_LT(clock::now() - start, 3s + 2s);
    }
    plane_->close();
}

// Three uneven groups, m = 2: greedy decoding through the processes gives the engine's greedy
// tokens, and teacher-forced, each token is its row's argmax.
TEST_P(ClusterOverUcx, GreedyTokensEqualTeacherForced) {
    const tiny_model& model = shared_tiny_model();
    auto map = three_group_map(model.config());
    ASSERT_NO_FATAL_FAILURE(start_groups(map));
    ASSERT_NO_FATAL_FAILURE(start_worker(model.attention, map, 2));
    expect_greedy_matches_engine(*exec_, model);
    plane_->close();
}

// A batch routed to zero experts only (through e_score_correction_bias), three groups, m = 2:
// header-only frames cross the processes, no group or worker waits for a deadline (3 s), and
// the logits equal the engine's bit for bit (moe_out is exactly 0; 9 tokens keep the dense
// layers below the AVX2 kernel's 10-token switch, as in the in-process test).
TEST_P(ClusterOverUcx, ZeroExpertOnlyBatchCompletesWithoutWaitingForADeadline) {
    const tiny_model& model = shared_tiny_model();
    const auto full = with_zero_expert_boost(*model.full, 1e4f);
    const auto attn = with_zero_expert_boost(*model.attention, 1e4f);
    auto map = three_group_map(model.config());
    ASSERT_NO_FATAL_FAILURE(start_groups(map));
    ASSERT_NO_FATAL_FAILURE(start_worker(attn, map, 2));
    const reference_run ref = run_engine(full, {3, 2, 4}, 2);
    for (const auto& out : ref.outputs) ASSERT_EQ(out.num_real_slots, 0);
    const auto start = clock::now();
    const auto got = run_worker(*exec_, ref.plan);
    const auto elapsed = clock::now() - start;
    EXPECT_LT(elapsed, 1500ms);  // three steps; one wait for a deadline alone would be 3 s
    expect_matches(ref, got, /*bitwise=*/true);
    for (const auto& out : got) EXPECT_EQ(out.stats.dispatched_rows, 0);
    plane_->close();
    // No group reported a failed unit (each prints FAILED <message> for one).
    for (auto& group : groups_) {
        group->stop();
        while (auto line = group->read_line(deadline_after(1s)))
            EXPECT_FALSE(line->starts_with("FAILED")) << *line;
    }
}

// Data-parallel attention with a TP=2 dense FFN (ARCHITECTURE.md §3) over UCX: two ranks, each
// with its own data plane (in this process, a thread each) and its shard of the dense FFNs,
// all-gathering and reduce-scattering over UCX, both sharing three uneven expert groups that run
// as processes. Each rank's logits are within 1e-5 of the engine's for its own sequences, for
// m = 1, 2 and 4 (with 4, both ranks run empty micro-batches that still join the collectives).
TEST_P(ClusterOverUcx, TensorParallelPairSharingThreeGroupsEqualsEngine) {
    const tiny_model& model = shared_tiny_model();
    const auto& c = model.config();
    const std::vector<std::string> names{"attention-0.0", "attention-0.1"};
    for (const int32_t m : {1, 2, 4}) {
        SCOPED_TRACE("m " + std::to_string(m));
        groups_.clear();  // fresh groups: each pair of executors counts its steps from 0
        auto map = three_group_map(c);
        ASSERT_NO_FATAL_FAILURE(start_groups(map, names[0] + "," + names[1]));
        std::vector<std::unique_ptr<transport::ucx_data_plane>> planes;
        for (const auto& name : names) {
            planes.push_back(make_plane(name));
            ASSERT_TRUE(planes.back());
        }
        expect_tp_pair_matches_engine(model, map, *planes[0], *planes[1], m);
        for (auto& plane : planes) plane->close();
        for (auto& group : groups_) {
            group->stop();
            while (auto line = group->read_line(deadline_after(1s)))
                EXPECT_FALSE(line->starts_with("FAILED")) << *line;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(
    Transports, ClusterOverUcx,
    ::testing::Values(ucx_case{"tcp", "tcp", transport::ucx_error_mode::peer},
                      ucx_case{"shm", "sm,self,tcp", transport::ucx_error_mode::none}),
    [](const ::testing::TestParamInfo<ucx_case>& info) { return info.param.label; });

}  // namespace
}  // namespace longcat::testing
