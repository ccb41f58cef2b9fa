// transport_peer: the other process in the two-process UCX tests. Runs one ucx_data_plane and a
// script, reporting on stdout one line per event:
//   ADDRESS <ucx://...>           listening (always first)
//   CONNECTED <peer>              --connect succeeded
//   ERROR <code> <message>        connect failed, or an error entry came out of receive()
//   DONE                          the script finished
// Scripts:
//   echo        answer every frame with a combine frame of the same shape whose payload is
//               fill_pattern(reply header) and whose request_id says whether the request's
//               payload matched its pattern; exit on a frame with step_id kStopStep
//   echo-raw    the same, but the reply carries the received bytes back unchecked (benchmarks)
//   bad-frames  (needs --connect) send a truncated header, an oversized frame (2 MiB), a frame
//               with a bad magic, a frame of an unknown kind (200), then one good frame (step
//               77, 1 KiB); then echo
// Options: --name= --connect=ADDR --tls= --err-mode=peer|none --progress=wakeup|busy_poll
//          --protocol-version=N --ucx-version=MAJOR.MINOR (announced in the handshake instead
//          of this process's) --max-payload=BYTES --script= --lifetime-ms=N
#include <sys/prctl.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "actors/transport/ucx_data_plane.hpp"
#include "tests/transport/test_frames.hpp"

using namespace longcat;
using namespace longcat::transport;

namespace {

void say(const std::string& line) {
    std::fputs((line + "\n").c_str(), stdout);
    std::fflush(stdout);
}

std::string one_line(std::string text) {
    for (char& c : text) {
        if (c == '\n') c = ' ';
    }
    return text;
}

// Echo loop on `only` (or any peer); returns when told to stop or when the lifetime is over.
void echo(ucx_data_plane& plane, std::optional<peer_id> only, bool raw, deadline end) {
    frame_filter filter;
    filter.peer = only;
    while (clock::now() < end) {
        auto frame =
            plane.receive(std::min(end, deadline_after(std::chrono::milliseconds(500))), filter);
        if (!frame) {
            if (frame.error().code == transport_error::timeout) continue;
            say("ERROR " + std::string(to_string(frame.error().code)) + " " +
                one_line(frame.error().message));
            if (frame.error().code == transport_error::closed) return;
            if (frame.error().code == transport_error::peer_failed && only) return;
            continue;
        }
        if (frame->header.step_id == testing::kStopStep) return;
        proto::frame_header reply = frame->header;
        reply.kind = proto::frame_kind::combine;
        if (raw) {
            (void)plane.send(frame->peer, reply, {frame->payload.span()},
                             deadline_after(std::chrono::seconds(10)));
            continue;
        }
        const bool verified = testing::check_pattern(frame->header, frame->payload.span());
        reply.request_id = verified ? testing::kEchoVerified : testing::kEchoCorrupt;
        const std::vector<std::byte> payload = testing::make_pattern(reply);
        auto sent =
            plane.send(frame->peer, reply, {payload}, deadline_after(std::chrono::seconds(10)));
        if (!sent) {
            say("ERROR " + std::string(to_string(sent.error().code)) + " " +
                one_line(sent.error().message));
        }
    }
}

void send_bad_frames(ucx_data_plane& plane, peer_id peer) {
    const auto until = [] { return deadline_after(std::chrono::seconds(10)); };
    // 1. truncated header: 32 of 64 bytes.
    proto::frame_header good = testing::make_test_header(70, 1024);
    const std::vector<std::byte> good_payload = testing::make_pattern(good);
    const proto::frame_header_bytes encoded = proto::encode_frame_header(good);
    (void)plane.send_raw(peer, std::span<const std::byte>(encoded).first(32), {good_payload},
                         until());
    // 2. oversized: a valid 2 MiB frame (the receiver accepts at most 1 MiB).
    proto::frame_header big = testing::make_test_header(71, 2 << 20);
    const std::vector<std::byte> big_payload = testing::make_pattern(big);
    (void)plane.send(peer, big, {big_payload}, until());
    // 3. bad magic.
    proto::frame_header_bytes bad_magic = encoded;
    bad_magic[0] = std::byte{'X'};
    (void)plane.send_raw(peer, bad_magic, {good_payload}, until());
    // 4. a message of a kind nobody knows.
    proto::frame_header unknown = good;
    unknown.kind = static_cast<proto::frame_kind>(200);
    (void)plane.send_raw(peer, proto::encode_frame_header(unknown), {good_payload}, until());
    // 5. the good frame.
    proto::frame_header last = testing::make_test_header(77, 1024);
    const std::vector<std::byte> last_payload = testing::make_pattern(last);
    auto sent = plane.send(peer, last, {last_payload}, until());
    if (!sent)
        say("ERROR " + std::string(to_string(sent.error().code)) + " " + sent.error().message);
}

}  // namespace

int main(int argc, char** argv) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test
    ucx_data_plane_config config;
    config.name = "transport-peer";
    std::string connect_to;
    std::string script = "echo";
    long lifetime_ms = 60'000;
    for (int arg_idx = 1; arg_idx < argc; ++arg_idx) {
        const std::string_view arg = argv[arg_idx];
        auto value = [&](std::string_view key) -> std::optional<std::string> {
            if (!arg.starts_with(key)) return std::nullopt;
            return std::string(arg.substr(key.size()));
        };
        if (auto v = value("--name=")) {
            config.name = *v;
        } else if (auto v = value("--connect=")) {
            connect_to = *v;
        } else if (auto v = value("--tls=")) {
            config.ucx_options.emplace_back("TLS", *v);
        } else if (auto v = value("--err-mode=")) {
            config.error_mode = *v == "none" ? ucx_error_mode::none : ucx_error_mode::peer;
        } else if (auto v = value("--progress=")) {
            config.progress_mode =
                *v == "busy_poll" ? ucx_progress_mode::busy_poll : ucx_progress_mode::wakeup;
        } else if (auto v = value("--protocol-version=")) {
            auto versions = config.advertised_versions.value_or(proto::local_wire_versions());
            versions.protocol = static_cast<uint16_t>(std::stoul(*v));
            config.advertised_versions = versions;
        } else if (auto v = value("--ucx-version=")) {
            auto versions = config.advertised_versions.value_or(proto::local_wire_versions());
            const size_t dot = v->find('.');
            versions.ucx.major = static_cast<uint32_t>(std::stoul(v->substr(0, dot)));
            versions.ucx.minor = static_cast<uint32_t>(std::stoul(v->substr(dot + 1)));
            versions.ucx.release = 0;
            config.advertised_versions = versions;
        } else if (auto v = value("--rndv-threshold=")) {
            config.rndv_threshold_bytes = config.shm_rndv_threshold_bytes = std::stoull(*v);
        } else if (auto v = value("--max-payload=")) {
            config.limits.max_payload_bytes = std::stoull(*v);
        } else if (auto v = value("--script=")) {
            script = *v;
        } else if (auto v = value("--lifetime-ms=")) {
            lifetime_ms = std::stol(*v);
        } else {
            std::fprintf(stderr, "transport_peer: unknown argument %s\n", argv[arg_idx]);
            return 2;
        }
    }
    const deadline end = deadline_after(std::chrono::milliseconds(lifetime_ms));
    auto plane = ucx_data_plane::create(config);
    if (!plane) {
        say("ERROR " + std::string(to_string(plane.error().code)) + " " + plane.error().message);
        return 1;
    }
    say("ADDRESS " + (*plane)->address());
    std::optional<peer_id> peer;
    if (!connect_to.empty()) {
        auto connected = (*plane)->connect(connect_to, deadline_after(std::chrono::seconds(10)));
        if (!connected) {
            say("ERROR " + std::string(to_string(connected.error().code)) + " " +
                one_line(connected.error().message));
            return 1;
        }
        peer = *connected;
        say("CONNECTED " + to_string(*peer));
    }
    if (script == "bad-frames" && peer) send_bad_frames(**plane, *peer);
    echo(**plane, peer, script == "echo-raw", end);
    say("DONE");
    (*plane)->close();
    return 0;
}
