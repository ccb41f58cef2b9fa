// cluster_client: a short-lived CAF client of a running cluster's coordinator — one generation
// (`longcat generate --cluster`), or a status query (the launcher, tests). Connects with
// remote_actor, sends, waits with a deadline, disconnects. The CAF system lives inside the call,
// so callers include no CAF header.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "proto/expected.hpp"

namespace longcat::control {

struct cluster_generation {
    uint64_t request_id = 0;
    std::vector<int32_t> tokens;
    std::string finish_reason;  // "length" | "stop"
};

struct cluster_generate_options {
    std::vector<int32_t> prompt;
    int64_t max_tokens = 16;
    float temperature = 0.0f;
    float top_p = 1.0f;
    int64_t top_k = 0;
    uint64_t seed = 0;
    bool ignore_eos = false;
    std::string client_request_id;
    std::chrono::milliseconds timeout{120'000};
};

// `coordinator` is "HOST:PORT" (the coordinator's CAF endpoint). An error (connect failure,
// refusal, a failed request) is the text to show, naming what failed.
proto::expected<cluster_generation, std::string> cluster_generate(
    const std::string& coordinator, const cluster_generate_options& opts);

struct cluster_status_summary {
    bool serving = false;
    std::string reason;
    uint64_t placement_version = 0;
    std::vector<std::string> members;
};
proto::expected<cluster_status_summary, std::string> cluster_status_of(
    const std::string& coordinator, std::chrono::milliseconds timeout);

}  // namespace longcat::control
