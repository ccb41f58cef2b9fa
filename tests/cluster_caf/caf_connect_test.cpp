// Reaching a coordinator has a deadline even when the peer accepts the TCP connection and never
// answers CAF's handshake (a stopped process, or something else on the port): CAF's own
// remote_actor waits for that without limit.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <caf/actor_system.hpp>
#include <chrono>
#include <stdexcept>
#include <string>

#include "actors/control/caf_runtime.hpp"
#include "actors/control/cluster_client.hpp"

namespace longcat::control {
namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

// A socket listening on 127.0.0.1 that never accepts: the kernel completes TCP handshakes into
// its backlog, and nothing ever answers.
class silent_listener {
  public:
    silent_listener() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof addr;
        if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
            ::listen(fd_, 16) != 0 ||
            ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
            throw std::runtime_error("silent_listener: cannot listen");
        port_ = ntohs(addr.sin_port);
    }
    ~silent_listener() { ::close(fd_); }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  private:
    int fd_ = -1;
    uint16_t port_ = 0;
};

TEST(CafConnect, SilentPeerFailsByTheDeadlineNamingTheAddress) {
    silent_listener peer;
    const auto start = clock_type::now();
    {
        caf_runtime_options runtime;
        runtime.scheduler_threads = 1;
        auto config = make_caf_config(runtime);
        caf::actor_system system{*config};
        try {
            connect_coordinator(system, peer.address(), 1s);
            ADD_FAILURE() << "connected to a silent peer";
        } catch (const std::runtime_error& e) {
            const std::string message = e.what();
            EXPECT_NE(message.find("cannot reach " + peer.address()), std::string::npos) << message;
            EXPECT_NE(message.find("no CAF handshake"), std::string::npos) << message;
        }
        EXPECT_LT(clock_type::now() - start, 5s);
    }  // the actor system shuts down with the attempt still open
    EXPECT_LT(clock_type::now() - start, 10s);
}

TEST(CafConnect, ClientCallsToASilentPeerEndByTheirDeadline) {
    silent_listener peer;
    const auto start = clock_type::now();
    auto status = cluster_status_of(peer.address(), 2s);
    ASSERT_FALSE(status.has_value());
    EXPECT_NE(status.error().find("no CAF handshake from " + peer.address()), std::string::npos)
        << status.error();
    EXPECT_LT(clock_type::now() - start, 10s);
}

}  // namespace
}  // namespace longcat::control
