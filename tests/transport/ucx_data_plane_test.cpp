// ucx_data_plane between two real processes on 127.0.0.1: this test process and transport_peer
// (fork + exec), over UCX_TLS=tcp with error mode peer and over UCX_TLS=sm,self,tcp with error
// mode none. Payload contents are checked both ways; refusals, malformed frames and killed peers
// must end in named errors by their deadlines, never in a hang or a crash.
#include "actors/transport/ucx_data_plane.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <thread>

#include "tests/transport/test_frames.hpp"

namespace longcat::transport {
namespace {

using namespace std::chrono_literals;
using testing::check_pattern;
using testing::kEchoVerified;
using testing::kStopStep;
using testing::make_pattern;
using testing::make_test_header;

// For runs outside ctest (ctest sets these through the launcher, before UCX loads).
const bool kEnvironmentReady = [] {
    ::setenv("UCX_NET_DEVICES", "lo", 0);
    ::setenv("UCX_TCP_CM_REUSEADDR", "y", 0);
    return true;
}();

// transport_peer as a child process; its stdout is read line by line.
class peer_process {
  public:
    explicit peer_process(std::vector<std::string> args) {
        args.insert(args.begin(), LONGCAT_TRANSPORT_PEER);
        std::vector<char*> argv;
        for (auto& arg : args) argv.push_back(arg.data());
        argv.push_back(nullptr);
        int fds[2];
        if (::pipe(fds) != 0) return;
        pid_ = ::fork();
        if (pid_ == 0) {
            ::dup2(fds[1], STDOUT_FILENO);
            ::close(fds[0]);
            ::close(fds[1]);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(fds[1]);
        fd_ = fds[0];
    }
    ~peer_process() {
        kill();
        if (fd_ >= 0) ::close(fd_);
    }
    peer_process(const peer_process&) = delete;
    peer_process& operator=(const peer_process&) = delete;

    // The next stdout line, or nullopt at the deadline / end of output.
    std::optional<std::string> read_line(deadline until) {
        for (;;) {
            if (auto newline = buffer_.find('\n'); newline != std::string::npos) {
                std::string line = buffer_.substr(0, newline);
                buffer_.erase(0, newline + 1);
                return line;
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(until - clock::now());
            if (left.count() <= 0 || fd_ < 0) return std::nullopt;
            pollfd pfd{fd_, POLLIN, 0};
            if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
            char chunk[4096];
            const ssize_t got = ::read(fd_, chunk, sizeof(chunk));
            if (got <= 0) return std::nullopt;
            buffer_.append(chunk, static_cast<size_t>(got));
        }
    }

    // Skips lines until one starts with `prefix`; returns the rest of it.
    std::optional<std::string> expect(std::string_view prefix, deadline until) {
        while (auto line = read_line(until)) {
            seen_ += *line + "\n";
            if (line->starts_with(prefix)) return line->substr(prefix.size());
        }
        return std::nullopt;
    }
    const std::string& seen() const { return seen_; }

    void signal(int signo) {
        if (pid_ > 0) ::kill(pid_, signo);
    }

    void kill() {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    // Exit status, or nullopt if still running at the deadline.
    std::optional<int> wait_exit(deadline until) {
        while (pid_ > 0) {
            int status = 0;
            const pid_t done = ::waitpid(pid_, &status, WNOHANG);
            if (done == pid_) {
                pid_ = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            }
            if (clock::now() >= until) return std::nullopt;
            std::this_thread::sleep_for(10ms);
        }
        return std::nullopt;
    }

  private:
    pid_t pid_ = -1;
    int fd_ = -1;
    std::string buffer_;
    std::string seen_;
};

struct ucx_case {
    std::string label;
    std::string tls;
    ucx_error_mode error_mode;
    ucx_progress_mode progress_mode;
};

// Keeps ctest's test names readable (gtest would print the struct's bytes).
void PrintTo(const ucx_case& c, std::ostream* out) { *out << c.label; }

std::string case_name(const ::testing::TestParamInfo<ucx_case>& info) { return info.param.label; }

std::vector<std::string> peer_args(const ucx_case& c, std::vector<std::string> extra) {
    std::vector<std::string> args = {
        "--tls=" + c.tls, "--err-mode=" + std::string(to_string(c.error_mode)),
        "--progress=" + std::string(to_string(c.progress_mode)), "--lifetime-ms=60000"};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
}

ucx_data_plane_config parent_config(const ucx_case& c) {
    ucx_data_plane_config config;
    config.name = "test-parent";
    config.error_mode = c.error_mode;
    config.progress_mode = c.progress_mode;
    config.ucx_options = {{"TLS", c.tls}};
    return config;
}

std::unique_ptr<ucx_data_plane> make_plane(ucx_data_plane_config config) {
    auto plane = ucx_data_plane::create(std::move(config));
    EXPECT_TRUE(plane.has_value()) << plane.error().message;
    return plane ? std::move(*plane) : nullptr;
}

double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

// CPU time of this process so far (every thread), in seconds.
double process_cpu_seconds() {
    timespec t{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// Sends a frame with step_id kStopStep: an echoing transport_peer exits.
void stop_echo(ucx_data_plane& plane, peer_id peer) {
    (void)plane.send(peer, make_test_header(kStopStep, 0), {}, deadline_after(2s));
}

// A transport_peer child named `name` and a plane (`config`) connected to it.
struct connected_peer {
    std::optional<peer_process> child;
    ucx_data_plane_config config;
    std::unique_ptr<ucx_data_plane> plane;
    std::string address;  // the child's
    peer_id peer;
};

void connect_to_a_peer(const ucx_case& c, const std::string& name, ucx_data_plane_config config,
                       connected_peer& s, std::vector<std::string> child_args = {}) {
    child_args.push_back("--name=" + name);
    s.child.emplace(peer_args(c, std::move(child_args)));
    auto address = s.child->expect("ADDRESS ", deadline_after(20s));
    ASSERT_TRUE(address.has_value()) << s.child->seen();
    s.address = *address;
    s.config = std::move(config);
    s.plane = make_plane(s.config);
    ASSERT_TRUE(s.plane);
    auto peer = s.plane->connect(*address, deadline_after(10s));
    ASSERT_TRUE(peer.has_value()) << peer.error().message;
    s.peer = *peer;
}

// A peer named `name`, started with `version_args`, is refused by version both ways: when we
// connect to it and when it connects to us. `check` runs on all four messages (ours and its,
// each way); each side names the mismatch as version_mismatch.
void expect_refused_both_ways(ucx_data_plane& plane, const ucx_case& c, const std::string& name,
                              const std::vector<std::string>& version_args,
                              const std::function<void(const std::string&)>& check) {
    std::vector<std::string> args = {"--name=" + name};
    args.insert(args.end(), version_args.begin(), version_args.end());
    {  // we connect to it
        peer_process child(peer_args(c, args));
        auto address = child.expect("ADDRESS ", deadline_after(20s));
        ASSERT_TRUE(address.has_value()) << child.seen();
        auto peer = plane.connect(*address, deadline_after(10s));
        ASSERT_FALSE(peer.has_value());
        EXPECT_EQ(peer.error().code, transport_error::version_mismatch);
        check(peer.error().message);
        auto seen = child.expect("ERROR version_mismatch", deadline_after(10s));
        ASSERT_TRUE(seen.has_value()) << child.seen();
        check(*seen);
    }
    {  // it connects to us
        args.push_back("--connect=" + plane.address());
        peer_process child(peer_args(c, args));
        auto refused = child.expect("ERROR version_mismatch", deadline_after(20s));
        ASSERT_TRUE(refused.has_value()) << child.seen();
        check(*refused);
        auto event = plane.receive(deadline_after(10s));
        ASSERT_FALSE(event.has_value());
        EXPECT_EQ(event.error().code, transport_error::version_mismatch);
        check(event.error().message);
        EXPECT_EQ(child.wait_exit(deadline_after(10s)), 1);
    }
}

class UcxTwoProcess : public ::testing::TestWithParam<ucx_case> {};

TEST_P(UcxTwoProcess, RoundTripBothWaysWithContents) {
    // The shared-memory threshold set apart from the tcp one (both are 128 KiB by default), so
    // that the rendezvous count below tells whether this side found its peer's lanes to be
    // shared memory and applied that threshold to them alone.
    ucx_data_plane_config config = parent_config(GetParam());
    config.shm_rndv_threshold_bytes = uint64_t{4} << 20;
    connected_peer s;
    ASSERT_NO_FATAL_FAILURE(connect_to_a_peer(GetParam(), "echo-peer", std::move(config), s));
    auto& plane = s.plane;
    auto info = plane->peer(s.peer);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->name, "echo-peer");
    EXPECT_EQ(info->address, s.address);
    EXPECT_EQ(info->versions, proto::local_wire_versions());

    for (uint64_t size : {uint64_t{0}, uint64_t{1024}, uint64_t{4} << 20}) {
        const proto::frame_header header = make_test_header(size + 7, size);
        const std::vector<std::byte> payload = make_pattern(header);
        auto sent = plane->send(s.peer, header, {payload}, deadline_after(10s));
        ASSERT_TRUE(sent.has_value()) << sent.error().message;
        auto reply = plane->receive(deadline_after(10s), {.peer = s.peer});
        ASSERT_TRUE(reply.has_value()) << reply.error().message;
        EXPECT_EQ(reply->header.kind, proto::frame_kind::combine);
        EXPECT_EQ(reply->header.step_id, header.step_id);
        EXPECT_EQ(reply->header.payload_bytes, size);
        EXPECT_EQ(reply->header.request_id, kEchoVerified) << "the peer saw a corrupt payload";
        EXPECT_TRUE(check_pattern(reply->header, reply->payload.span())) << size << " bytes";
    }
    auto transports = plane->transports(s.peer, deadline_after(5s));
    ASSERT_TRUE(transports.has_value());
    std::string joined;
    for (const auto& t : *transports) joined += t + " ";
    std::printf("[ %s ] transports in use: %s\n", GetParam().label.c_str(), joined.c_str());
    EXPECT_FALSE(transports->empty());
    const data_plane_stats stats = plane->stats();
    EXPECT_EQ(stats.frames_sent, 3u);
    EXPECT_EQ(stats.frames_received, 3u);
    EXPECT_EQ(stats.bytes_received, 1024u + (4u << 20));
    // 4 MiB: rendezvous over tcp (above the default rndv_threshold_bytes), eager over
    // shared-memory lanes (up to the 4 MiB set above); 1 KiB: eager on both.
    const bool shm = GetParam().tls.starts_with("sm");
    ASSERT_EQ(plane->config().rndv_threshold_bytes, uint64_t{128} << 10);
    EXPECT_EQ(stats.frames_sent_rendezvous, shm ? 0u : 1u) << joined;
    stop_echo(*plane, s.peer);
    EXPECT_TRUE(s.child->expect("DONE", deadline_after(10s)).has_value()) << s.child->seen();
    EXPECT_EQ(s.child->wait_exit(deadline_after(10s)), 0);
    plane->close();
}

// Eager payloads stay in UCX's own receive buffers (no copy) where UCX lets them: on tcp the
// multi-fragment ones (UCX reassembles them into a buffer of their own), on shared memory all.
// Such a payload stays valid after the plane is closed and destroyed (the worker's teardown waits
// for the last one; under ASan a read of freed memory or a leaked worker fails this test), and
// frames still queued at close are let go of with it.
TEST_P(UcxTwoProcess, EagerPayloadsKeptInUcxBuffersOutliveThePlane) {
    // Both sides send frames up to 1 MiB eager (the defaults send 256 KiB by rendezvous).
    ucx_data_plane_config config = parent_config(GetParam());
    config.rndv_threshold_bytes = config.shm_rndv_threshold_bytes = uint64_t{1} << 20;
    connected_peer s;
    ASSERT_NO_FATAL_FAILURE(connect_to_a_peer(GetParam(), "echo-peer", std::move(config), s,
                                              {"--rndv-threshold=1048576"}));
    auto& plane = s.plane;
    ASSERT_GE(plane->config().rndv_threshold_bytes, uint64_t{256} << 10) << "eager frames wanted";
    // 256 KiB: several fragments on either transport, reassembled by UCX into a buffer of its
    // own; 6 KiB: one fragment (kept only on shared memory, in the receive FIFO's descriptor,
    // which the worker's teardown frees; tcp hands such frames over in a buffer it reuses).
    const bool shm = GetParam().tls.starts_with("sm");
    std::vector<received_frame> kept;
    for (uint64_t step = 1; step <= 4; ++step) {
        const uint64_t size = step == 1 ? 6 << 10 : uint64_t{256} << 10;
        const proto::frame_header header = make_test_header(step, size);
        const std::vector<std::byte> payload = make_pattern(header);
        auto sent = plane->send(s.peer, header, {payload}, deadline_after(10s));
        ASSERT_TRUE(sent.has_value()) << sent.error().message;
        if (step == 4) break;  // its answer stays queued
        auto reply = plane->receive(deadline_after(10s), {.peer = s.peer, .step_id = step});
        ASSERT_TRUE(reply.has_value()) << reply.error().message;
        EXPECT_EQ(reply->header.request_id, kEchoVerified) << "the peer saw a corrupt payload";
        kept.push_back(std::move(*reply));
    }
    const clock::time_point until = clock::now() + 10s;
    while (plane->stats().frames_received < 4 && clock::now() < until)
        std::this_thread::sleep_for(1ms);
    const data_plane_stats stats = plane->stats();
    EXPECT_EQ(stats.frames_received, 4u);
    EXPECT_EQ(stats.frames_received_in_place, shm ? 4u : 3u)
        << "eager frames were copied out of UCX's buffers";
    stop_echo(*plane, s.peer);
    EXPECT_TRUE(s.child->expect("DONE", deadline_after(10s)).has_value()) << s.child->seen();
    EXPECT_EQ(s.child->wait_exit(deadline_after(10s)), 0);
    plane->close();
    plane.reset();
    for (const received_frame& frame : kept) {
        EXPECT_EQ(
            reinterpret_cast<uintptr_t>(frame.payload.data()) % byte_buffer::kAdoptedAlignment, 0u);
        EXPECT_TRUE(check_pattern(frame.header, frame.payload.span()))
            << "step " << frame.header.step_id;
    }
    kept.clear();  // the last one tears the UCX worker down
}

TEST_P(UcxTwoProcess, PeerWithAnotherProtocolVersionIsRefusedNamingBoth) {
    const std::string other = std::to_string(proto::kProtocolVersion + 1);
    auto plane = make_plane(parent_config(GetParam()));
    ASSERT_TRUE(plane);
    auto names_both = [&](const std::string& message) {
        EXPECT_NE(message.find("test-parent"), std::string::npos) << message;
        EXPECT_NE(message.find("old-peer"), std::string::npos) << message;
        EXPECT_NE(message.find("protocol " + std::to_string(proto::kProtocolVersion)),
                  std::string::npos)
            << message;
        EXPECT_NE(message.find("protocol " + other), std::string::npos) << message;
    };
    ASSERT_NO_FATAL_FAILURE(expect_refused_both_ways(*plane, GetParam(), "old-peer",
                                                     {"--protocol-version=" + other}, names_both));
    EXPECT_EQ(plane->stats().refused_handshakes, 2u);
}

// A peer that announces UCX of another minor series (UCX promises wire compatibility only within
// one): refused both ways, naming both sides and both versions; this side stays up.
TEST_P(UcxTwoProcess, PeerWithAnotherUcxVersionIsRefusedNamingBoth) {
    const proto::ucx_version ours = proto::linked_ucx_version();
    const std::string other =
        std::to_string(ours.major) + "." + std::to_string(ours.minor + 1) + ".0";
    auto plane = make_plane(parent_config(GetParam()));
    ASSERT_TRUE(plane);
    auto names_both = [&](const std::string& message) {
        EXPECT_NE(message.find("UCX version mismatch"), std::string::npos) << message;
        EXPECT_NE(message.find("test-parent"), std::string::npos) << message;
        EXPECT_NE(message.find("other-ucx"), std::string::npos) << message;
        EXPECT_NE(message.find("UCX " + proto::to_string(ours)), std::string::npos) << message;
        EXPECT_NE(message.find("UCX " + other), std::string::npos) << message;
    };
    const std::string ucx_arg =
        "--ucx-version=" + std::to_string(ours.major) + "." + std::to_string(ours.minor + 1);
    ASSERT_NO_FATAL_FAILURE(
        expect_refused_both_ways(*plane, GetParam(), "other-ucx", {ucx_arg}, names_both));
    EXPECT_EQ(plane->stats().refused_handshakes, 2u);
    // Still up: a peer of the same versions connects and echoes a frame.
    peer_process good(peer_args(GetParam(), {"--name=same-ucx"}));
    auto address = good.expect("ADDRESS ", deadline_after(20s));
    ASSERT_TRUE(address.has_value()) << good.seen();
    auto peer = plane->connect(*address, deadline_after(10s));
    ASSERT_TRUE(peer.has_value()) << peer.error().message;
    const proto::frame_header header = make_test_header(5, 1024);
    ASSERT_TRUE(plane->send(*peer, header, {make_pattern(header)}, deadline_after(10s)));
    auto reply = plane->receive(deadline_after(10s), {.peer = *peer});
    ASSERT_TRUE(reply.has_value()) << reply.error().message;
    EXPECT_EQ(reply->header.request_id, kEchoVerified);
    stop_echo(*plane, *peer);
}

TEST_P(UcxTwoProcess, MalformedFramesAreNamedErrorsAndTheNextGoodFrameArrives) {
    ucx_data_plane_config config = parent_config(GetParam());
    config.limits.max_payload_bytes = 1 << 20;  // the peer's 2 MiB frame is oversized here
    auto plane = make_plane(config);
    ASSERT_TRUE(plane);
    peer_process child(peer_args(
        GetParam(), {"--name=bad-peer", "--script=bad-frames", "--connect=" + plane->address()}));
    ASSERT_TRUE(child.expect("CONNECTED", deadline_after(20s)).has_value()) << child.seen();
    std::vector<std::string> errors;
    std::optional<received_frame> good;
    const deadline until = deadline_after(20s);
    while ((errors.size() < 4 || !good) && clock::now() < until) {
        auto got = plane->receive(until);
        if (got) {
            good = std::move(*got);
        } else {
            ASSERT_EQ(got.error().code, transport_error::bad_frame) << got.error().message;
            EXPECT_NE(got.error().message.find("bad-peer"), std::string::npos)
                << got.error().message;
            errors.push_back(got.error().message);
        }
    }
    ASSERT_EQ(errors.size(), 4u);
    auto has = [&](std::string_view what) {
        return std::any_of(errors.begin(), errors.end(),
                           [&](const std::string& e) { return e.find(what) != std::string::npos; });
    };
    EXPECT_TRUE(has("truncated"));
    EXPECT_TRUE(has("oversized"));
    EXPECT_TRUE(has("bad_magic"));
    EXPECT_TRUE(has("unknown_kind"));
    ASSERT_TRUE(good.has_value());
    EXPECT_EQ(good->header.step_id, 77u);
    EXPECT_TRUE(check_pattern(good->header, good->payload.span()));
    EXPECT_EQ(plane->stats().bad_frames, 4u);
    // Still up both ways: the peer answers a frame of ours.
    const proto::frame_header header = make_test_header(5, 1024);
    ASSERT_TRUE(plane->send(good->peer, header, {make_pattern(header)}, deadline_after(10s)));
    auto reply = plane->receive(deadline_after(10s), {.peer = good->peer});
    ASSERT_TRUE(reply.has_value()) << reply.error().message;
    EXPECT_EQ(reply->header.request_id, kEchoVerified);
    stop_echo(*plane, good->peer);
    EXPECT_EQ(child.wait_exit(deadline_after(10s)), 0);
}

TEST_P(UcxTwoProcess, KilledPeerGivesAnErrorByTheDeadlineNoHang) {
    connected_peer s;
    ASSERT_NO_FATAL_FAILURE(
        connect_to_a_peer(GetParam(), "doomed-peer", parent_config(GetParam()), s));
    auto& plane = s.plane;
    const proto::frame_header header = make_test_header(1, 1024);
    ASSERT_TRUE(plane->send(s.peer, header, {make_pattern(header)}, deadline_after(10s)));
    ASSERT_TRUE(plane->receive(deadline_after(10s), {.peer = s.peer}).has_value());

    // A receive is waiting on the peer when it dies.
    const bool peer_mode = GetParam().error_mode == ucx_error_mode::peer;
    constexpr auto kDeadline = 2s;
    const auto start = clock::now();
    std::optional<transport_result<received_frame>> waited;
    std::thread waiter([&] { waited = plane->receive(start + kDeadline, {.peer = s.peer}); });
    std::this_thread::sleep_for(200ms);
    s.child->kill();
    waiter.join();
    const auto elapsed = clock::now() - start;
    ASSERT_TRUE(waited.has_value());
    ASSERT_FALSE(waited->has_value());
    std::printf("[ %s ] receive on a killed peer: %s after %.3f s\n", GetParam().label.c_str(),
                waited->error().message.c_str(), seconds(elapsed));
    if (peer_mode) {
        EXPECT_EQ(waited->error().code, transport_error::peer_failed) << waited->error().message;
        EXPECT_NE(waited->error().message.find("doomed-peer"), std::string::npos);
        EXPECT_LT(elapsed, kDeadline + 1s);
    } else {
        // No peer-failure detection is promised in none mode: the deadline is the bound. (UCX
        // 1.13 still reports the tcp connection manager's disconnect of a client-server
        // endpoint, so the error usually comes early, as peer_failed.)
        if (waited->error().code == transport_error::timeout) {
            EXPECT_GE(elapsed, kDeadline - 10ms);
        } else {
            EXPECT_EQ(waited->error().code, transport_error::peer_failed)
                << waited->error().message;
        }
        EXPECT_LT(elapsed, 5s);
    }

    // A rendezvous-sized send to the dead peer fails by its deadline (+ teardown grace).
    const proto::frame_header big = make_test_header(2, 4 << 20);
    const std::vector<std::byte> big_payload = make_pattern(big);
    const auto send_start = clock::now();
    auto sent = plane->send(s.peer, big, {big_payload}, deadline_after(kDeadline));
    const auto send_elapsed = clock::now() - send_start;
    ASSERT_FALSE(sent.has_value());
    std::printf("[ %s ] 4 MiB send to a killed peer: %s after %.3f s\n", GetParam().label.c_str(),
                sent.error().message.c_str(), seconds(send_elapsed));
    EXPECT_TRUE(sent.error().code == transport_error::peer_failed ||
                sent.error().code == transport_error::timeout)
        << sent.error().message;
    EXPECT_LT(send_elapsed, 5s);

    // The peer is failed for good now; tearing down does not hang.
    auto again = plane->send(s.peer, header, {make_pattern(header)}, deadline_after(kDeadline));
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code, transport_error::peer_failed) << again.error().message;
    ASSERT_TRUE(plane->disconnect(s.peer, deadline_after(2s)).has_value());
    const auto close_start = clock::now();
    plane->close();
    EXPECT_LT(clock::now() - close_start, 5s);
}

// A connected peer that echoed one frame and was then stopped (SIGSTOP): alive, but answering
// nothing. The plane's teardown_grace is 500 ms.
void stall_a_peer(const ucx_case& c, connected_peer& s) {
    ucx_data_plane_config config = parent_config(c);
    config.teardown_grace = 500ms;
    // 1 MiB frames eager; 4 MiB by rendezvous over tcp and eager over shared memory, where a
    // stalled peer's full FIFO leaves sends queued that UCX cannot wake us for (the case the
    // stalled-peer tests were written for).
    config.rndv_threshold_bytes = uint64_t{1} << 20;
    config.shm_rndv_threshold_bytes = uint64_t{4} << 20;
    ASSERT_NO_FATAL_FAILURE(connect_to_a_peer(c, "stalled-peer", std::move(config), s));
    const proto::frame_header header = make_test_header(1, 1024);
    ASSERT_TRUE(s.plane->send(s.peer, header, {make_pattern(header)}, deadline_after(10s)));
    ASSERT_TRUE(s.plane->receive(deadline_after(10s), {.peer = s.peer}).has_value());
    s.child->signal(SIGSTOP);
}

TEST_P(UcxTwoProcess, StalledPeerTimesOutBySendDeadlinePlusGrace) {
    connected_peer s;
    ASSERT_NO_FATAL_FAILURE(stall_a_peer(GetParam(), s));
    auto& plane = s.plane;
    const ucx_data_plane_config& config = s.config;
    constexpr auto kDeadline = 1s;
    const proto::frame_header big = make_test_header(2, 4 << 20);
    const std::vector<std::byte> big_payload = make_pattern(big);  // outlives the plane
    const double cpu_start = process_cpu_seconds();
    const auto start = clock::now();
    auto sent = plane->send(s.peer, big, {big_payload}, deadline_after(kDeadline));
    const auto elapsed = clock::now() - start;
    const double cpu = process_cpu_seconds() - cpu_start;
    ASSERT_FALSE(sent.has_value());
    std::printf("[ %s ] 4 MiB send to a stalled peer: %s after %.3f s, %.3f CPU s\n",
                GetParam().label.c_str(), sent.error().message.c_str(), seconds(elapsed), cpu);
    // The progress thread polls while a send is in flight only for poll_while_sending (1 ms)
    // after its last progress, then sleeps: waiting on a stalled peer costs no core. (Polling
    // for the whole wait would cost about a CPU second here; busy_poll does, by design. Over
    // shared memory it did until 2026-12-01 whatever the setting: UCX refuses to arm the
    // worker while sends wait for room in the peer's FIFO, and the thread polled on.)
    if (GetParam().progress_mode == ucx_progress_mode::wakeup) {
        EXPECT_LT(cpu, 0.5 * seconds(kDeadline)) << "the progress thread spun while it waited";
    }
    EXPECT_EQ(sent.error().code, transport_error::timeout) << sent.error().message;
    // Peer mode force-closes the endpoint, which cancels the rendezvous: the payload is free.
    // Error mode none cannot: UCX keeps the request (and may read the payload if the peer
    // wakes up), and says so, so that the caller keeps the bytes for good.
    const bool none_mode = GetParam().error_mode == ucx_error_mode::none;
    EXPECT_EQ(sent.error().payload_held, none_mode) << sent.error().message;
    EXPECT_EQ(sent.error().message.find("it stays held") != std::string::npos, none_mode)
        << sent.error().message;
    EXPECT_GE(elapsed, kDeadline - 10ms);
    EXPECT_LT(elapsed, kDeadline + config.teardown_grace + 1s);
    // The timeout failed the peer: a receive naming it fails at once.
    const auto receive_start = clock::now();
    auto got = plane->receive(deadline_after(5s), {.peer = s.peer});
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, transport_error::peer_failed) << got.error().message;
    EXPECT_LT(clock::now() - receive_start, 1s);
    s.child->kill();
    const auto close_start = clock::now();
    plane->close();
    EXPECT_LT(clock::now() - close_start, 5s);
}

// Eager frames (1 MiB, below rndv_threshold_bytes) to a stopped peer: once the transport's
// buffers are full a send misses its deadline; the peer is then killed, and closing the plane,
// with the endpoint's close still pending, neither hangs nor aborts (UCX 1.13 asserts in
// ucp_worker_destroy on a request that was not released to it: it did, over shared memory,
// until the plane released abandoned closes).
TEST_P(UcxTwoProcess, EagerSendsToAStalledPeerTimeOutAndClosingDoesNotAbort) {
    connected_peer s;
    ASSERT_NO_FATAL_FAILURE(stall_a_peer(GetParam(), s));
    ASSERT_LE(uint64_t{1} << 20, s.config.rndv_threshold_bytes) << "eager frames wanted";
    auto& plane = s.plane;
    const proto::frame_header frame = make_test_header(2, 1 << 20);
    const std::vector<std::byte> payload = make_pattern(frame);  // outlives the plane
    std::optional<transport_failure> failure;
    const auto start = clock::now();
    for (int sent = 0; sent < 256 && !failure; ++sent) {  // 256 MiB: far past any buffer
        auto done = plane->send(s.peer, frame, {payload}, deadline_after(500ms));
        if (!done) failure = done.error();
    }
    ASSERT_TRUE(failure.has_value()) << "256 eager MiB to a stopped peer all completed";
    EXPECT_EQ(failure->code, transport_error::timeout) << failure->message;
    EXPECT_LT(clock::now() - start, 30s);
    s.child->kill();  // the stopped peer dies with the frames it never took
    const auto close_start = clock::now();
    plane->close();
    EXPECT_LT(clock::now() - close_start, 5s);
    plane.reset();  // destroys the UCX worker with the endpoint's close still pending
}

TEST(UcxDataPlaneConfig, ANegativePollWhileSendingIsRefusedByName) {
    ucx_data_plane_config config;
    config.poll_while_sending = std::chrono::microseconds(-1);
    auto plane = ucx_data_plane::create(config);
    ASSERT_FALSE(plane.has_value());
    EXPECT_EQ(plane.error().code, transport_error::setup_failed);
    EXPECT_NE(plane.error().message.find("poll_while_sending must be >= 0"), std::string::npos)
        << plane.error().message;
    config.poll_while_sending = std::chrono::microseconds(0);  // 0: off, accepted
    EXPECT_TRUE(ucx_data_plane::create(config).has_value());
}

TEST_P(UcxTwoProcess, ConnectToNobodyFailsByTheDeadline) {
    auto plane = make_plane(parent_config(GetParam()));
    ASSERT_TRUE(plane);
    // A port held by a socket that is bound but never listens: nobody answers there, and no
    // test running beside this one can take the port (a plane's port closed just before could
    // be taken by another test's listener under ctest -j, and the connect then succeeded).
    const int holder = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(holder, 0);
    sockaddr_in bound{};
    bound.sin_family = AF_INET;
    bound.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t bound_len = sizeof(bound);
    ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&bound), sizeof(bound)), 0);
    ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&bound), &bound_len), 0);
    struct close_holder {
        int fd;
        ~close_holder() { ::close(fd); }
    } close_it{holder};
    const std::string dead_address = "ucx://127.0.0.1:" + std::to_string(ntohs(bound.sin_port));
    const auto start = clock::now();
    auto peer = plane->connect(dead_address, deadline_after(2s));
    ASSERT_FALSE(peer.has_value());
    EXPECT_TRUE(peer.error().code == transport_error::peer_failed ||
                peer.error().code == transport_error::timeout)
        << peer.error().message;
    EXPECT_LT(clock::now() - start, 5s);
    auto bad = plane->connect("ucx://not-an-ip:1", deadline_after(1s));
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code, transport_error::bad_address);
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxTwoProcess,
                         ::testing::Values(ucx_case{"tcp_peer", "tcp", ucx_error_mode::peer,
                                                    ucx_progress_mode::wakeup},
                                           ucx_case{"shm_none", "sm,self,tcp", ucx_error_mode::none,
                                                    ucx_progress_mode::wakeup}),
                         case_name);

// -- the comparison behind actors/transport/README.md ------------------------------------------

class UcxComparison : public ::testing::TestWithParam<ucx_case> {};

TEST_P(UcxComparison, LatencyAndBandwidth) {
    peer_process child(peer_args(GetParam(), {"--name=bench-peer", "--script=echo-raw"}));
    auto address = child.expect("ADDRESS ", deadline_after(20s));
    ASSERT_TRUE(address.has_value()) << child.seen();
    auto plane = make_plane(parent_config(GetParam()));
    ASSERT_TRUE(plane);
    auto peer = plane->connect(*address, deadline_after(10s));
    ASSERT_TRUE(peer.has_value()) << peer.error().message;

    auto round_trip = [&](const proto::frame_header& header, std::span<const std::byte> payload) {
        auto sent = plane->send(*peer, header, {payload}, deadline_after(10s));
        EXPECT_TRUE(sent.has_value());
        auto reply = plane->receive(deadline_after(10s), {.peer = *peer});
        EXPECT_TRUE(reply.has_value());
    };
    const proto::frame_header small = make_test_header(1, 64);
    const std::vector<std::byte> small_payload = make_pattern(small);
    for (int warm = 0; warm < 50; ++warm) round_trip(small, small_payload);
    std::vector<double> rtts;
    for (int iter = 0; iter < 300; ++iter) {
        const auto start = clock::now();
        round_trip(small, small_payload);
        rtts.push_back(seconds(clock::now() - start) * 1e6);
    }
    std::sort(rtts.begin(), rtts.end());
    const proto::frame_header big = make_test_header(2, 4 << 20);
    const std::vector<std::byte> big_payload = make_pattern(big);
    round_trip(big, big_payload);
    constexpr int kBigRounds = 20;
    const auto start = clock::now();
    for (int iter = 0; iter < kBigRounds; ++iter) round_trip(big, big_payload);
    const double big_seconds = seconds(clock::now() - start);
    const double gib_per_s = 2.0 * kBigRounds * (4 << 20) / big_seconds / (1 << 30);
    auto transports = plane->transports(*peer, deadline_after(5s));
    std::string joined;
    if (transports) {
        for (const auto& t : *transports) joined += t + " ";
    }
    std::printf("| %s | %s | %s | %s | %.1f | %.1f | %.2f | %.2f | %s|\n", GetParam().label.c_str(),
                GetParam().tls.c_str(), std::string(to_string(GetParam().error_mode)).c_str(),
                std::string(to_string(GetParam().progress_mode)).c_str(), rtts[rtts.size() / 2],
                rtts[rtts.size() * 99 / 100], big_seconds / kBigRounds * 1e3, gib_per_s,
                joined.c_str());
    stop_echo(*plane, *peer);
    EXPECT_EQ(child.wait_exit(deadline_after(10s)), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, UcxComparison,
    ::testing::Values(
        ucx_case{"tcp_peer_wakeup", "tcp", ucx_error_mode::peer, ucx_progress_mode::wakeup},
        ucx_case{"shm_peer_wakeup", "sm,self,tcp", ucx_error_mode::peer, ucx_progress_mode::wakeup},
        ucx_case{"shm_none_wakeup", "sm,self,tcp", ucx_error_mode::none, ucx_progress_mode::wakeup},
        ucx_case{"tcp_peer_busy", "tcp", ucx_error_mode::peer, ucx_progress_mode::busy_poll},
        ucx_case{"shm_none_busy", "sm,self,tcp", ucx_error_mode::none,
                 ucx_progress_mode::busy_poll}),
    case_name);

}  // namespace
}  // namespace longcat::transport
