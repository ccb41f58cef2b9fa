// The thread budget's promise that idle compute threads sleep (ARCHITECTURE.md §9): a process
// that starts as the services do (ensure_passive_openmp) uses no CPU while it waits after an
// OpenBLAS call. Runs tests/kernels/idle_probe.cpp as a child, from an environment without the
// settings (as a user's shell would be), and with OpenBLAS's own default spin set explicitly
// (which ensure_passive_openmp must leave alone), to show that the measurement sees a spinner.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <regex>
#include <string>

#include "kernels/api/threads.hpp"

namespace {

std::string run(const std::string& cmd) {
    std::string out;
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(cmd.c_str(), "r"), ::pclose);
    if (!pipe) return out;
    char buf[256];
    while (std::fgets(buf, sizeof buf, pipe.get()) != nullptr) out += buf;
    return out;
}

double idle_cpu_ms(const std::string& out) {
    std::smatch m;
    if (!std::regex_search(out, m, std::regex("idle_cpu_ms=([0-9.]+)"))) return -1;
    return std::stod(m[1]);
}

TEST(ThreadBudget, ComputeThreadsSleepWhenIdle) {
    const std::string probe = LONGCAT_IDLE_PROBE;
    // As a user's shell: neither variable set. The probe re-executes itself with both.
    const std::string unset = run("env -u OMP_WAIT_POLICY -u OPENBLAS_THREAD_TIMEOUT " + probe);
    ASSERT_NE(unset.find("OPENBLAS_THREAD_TIMEOUT=4 "), std::string::npos) << unset;
    const double sleeping = idle_cpu_ms(unset);
    ASSERT_GE(sleeping, 0) << unset;
    EXPECT_LT(sleeping, 20.0) << unset;
    // OpenBLAS's own default (2^28 cycles), set by the user: kept, and its spin is visible
    // (about 100 ms of a core; at least 10 ms even with the other core's tests competing).
    const std::string spinning = run("env -u OMP_WAIT_POLICY OPENBLAS_THREAD_TIMEOUT=28 " + probe);
    ASSERT_NE(spinning.find("OPENBLAS_THREAD_TIMEOUT=28 "), std::string::npos) << spinning;
    EXPECT_GT(idle_cpu_ms(spinning), 10.0) << spinning;
}

TEST(ThreadBudget, MissingSettingsLeaveTheUsersValues) {
    ::setenv("OMP_WAIT_POLICY", "active", 1);
    ::unsetenv("OPENBLAS_THREAD_TIMEOUT");
    auto missing = longcat::kernels::missing_passive_wait_settings();
    ASSERT_EQ(missing.size(), 1u);
    EXPECT_EQ(missing[0].first, "OPENBLAS_THREAD_TIMEOUT");
    EXPECT_EQ(missing[0].second, "4");
    ::setenv("OPENBLAS_THREAD_TIMEOUT", "10", 1);
    EXPECT_TRUE(longcat::kernels::missing_passive_wait_settings().empty());
    ::unsetenv("OMP_WAIT_POLICY");
    missing = longcat::kernels::missing_passive_wait_settings();
    ASSERT_EQ(missing.size(), 1u);
    EXPECT_EQ(missing[0].first, "OMP_WAIT_POLICY");
    EXPECT_EQ(missing[0].second, "passive");
}

}  // namespace
