// Shared set-up of the tests that start a local cluster as processes: UCX on loopback and a
// tiny-b checkpoint in the test's temp dir.
#pragma once

#include <stdlib.h>

#include <filesystem>

#include "model/mkmodel.hpp"

namespace longcat::control::local_cluster {

// UCX on loopback, listeners reusable at once, no warnings about unused UCX_* variables.
inline void use_loopback_ucx() {
    ::setenv("UCX_NET_DEVICES", "lo", 1);
    ::setenv("UCX_TCP_CM_REUSEADDR", "y", 1);
    ::setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
}

// Writes the tiny-b preset (seed 0) into `dir`; returns `dir`.
inline std::filesystem::path make_tiny_b(const std::filesystem::path& dir) {
    model::mkmodel_options o;
    o.preset = "tiny-b";
    o.out_dir = dir;
    model::make_model(o);
    return dir;
}

}  // namespace longcat::control::local_cluster
