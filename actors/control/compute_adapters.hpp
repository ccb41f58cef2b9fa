// compute_adapters: member_compute over the compute core — attention::worker_executor for an
// attention worker, experts::expert_group for an expert group — each on its own UCX data plane
// (named after the member, so groups know their paired workers by name). CAF-free.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "actors/control/member_compute.hpp"

namespace longcat::control {

struct data_plane_options {
    std::string listen_host = "127.0.0.1";  // the UCX listener binds only this address
    uint16_t port = 0;                      // 0: the OS picks
    std::string error_mode = "peer";        // peer | none (ucx_data_plane.hpp)
    // While a send is in flight, poll this long after the last progress before sleeping
    // (ucx_data_plane_config::poll_while_sending); 0: sleep after every idle round.
    int64_t poll_while_sending_us = 1000;
};

struct attention_compute_options {
    std::string name = "attention-0";  // data-plane name = member name
    std::filesystem::path model_dir;
    int32_t tp_rank = 0;
    int32_t tp_size = 1;
    int64_t kv_pages = 1024;  // KV pages of the worker's cache
    int64_t page_size = 16;
    int32_t micro_batches = 1;
    std::chrono::milliseconds combine_timeout{5'000};
    std::chrono::milliseconds connect_timeout{10'000};
    data_plane_options data_plane;
};

struct expert_compute_options {
    std::string name = "experts-0";
    std::filesystem::path model_dir;
    std::chrono::milliseconds unit_timeout{5'000};
    data_plane_options data_plane;
};

// Both create their data plane at once (so the address can go into the hello); throw
// std::runtime_error when it cannot be set up.
std::shared_ptr<attention_compute> make_attention_compute(const attention_compute_options& opts);
std::shared_ptr<expert_compute> make_expert_compute(const expert_compute_options& opts);

}  // namespace longcat::control
