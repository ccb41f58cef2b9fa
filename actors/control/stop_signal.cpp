#include "actors/control/stop_signal.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <mutex>

namespace longcat::control {

namespace {

std::atomic<bool> g_stop{false};
int g_pipe[2] = {-1, -1};

void on_signal(int) {
    g_stop.store(true);
    const char byte = 1;
    [[maybe_unused]] auto written = ::write(g_pipe[1], &byte, 1);
}

}  // namespace

void install_stop_signal_handlers() {
    static std::once_flag once;
    std::call_once(once, [] {
        if (::pipe2(g_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return;
        struct sigaction action {};
        action.sa_handler = on_signal;
        sigemptyset(&action.sa_mask);
        ::sigaction(SIGTERM, &action, nullptr);
        ::sigaction(SIGINT, &action, nullptr);
        std::signal(SIGPIPE, SIG_IGN);
    });
}

bool stop_requested() { return g_stop.load(); }

void request_stop() {
    if (g_pipe[1] >= 0)
        on_signal(0);
    else
        g_stop.store(true);
}

bool wait_for_stop(std::chrono::milliseconds timeout) {
    if (g_stop.load() || g_pipe[0] < 0) return g_stop.load();
    pollfd pfd{g_pipe[0], POLLIN, 0};
    ::poll(&pfd, 1, static_cast<int>(timeout.count()));
    return g_stop.load();
}

}  // namespace longcat::control
