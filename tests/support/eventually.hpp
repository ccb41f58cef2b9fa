// Waiting for a condition that another thread makes true, with a deadline the test sets.
#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace longcat::testing {

// Polls `condition` every 5 ms until it holds or `timeout` passes; returns whether it held.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return condition();
}

}  // namespace longcat::testing
