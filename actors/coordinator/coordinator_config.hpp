// coordinator_config: the one validated config of longcat-coordinator (STYLE.md §7). Every
// field's default is next to it; service_options reads file → command line → environment.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "actors/control/peer_liveness.hpp"

namespace longcat::control {
class service_options;
}

namespace longcat::coordinator {

struct coordinator_config {
    std::string name = "coordinator";
    std::string model = "";                  // model directory (config.json: layers, experts)
    std::string listen_host = "127.0.0.1";   // CAF publish address; nothing else is bound
    uint16_t port = 0;                       // CAF port; 0 = the OS picks (printed)
    std::string metrics_address = "127.0.0.1:0";  // /metrics /healthz /readyz
    // The members the cluster waits for before serving.
    int32_t expected_attention_workers = 1;
    // Placement spec: "GROUP=EXPERTS;GROUP=EXPERTS", EXPERTS = "a-b,c,..." (same ids in every
    // layer). Empty: the expected expert groups split the experts evenly in registration order.
    std::string expert_placement = "";
    int32_t expected_expert_groups = 1;  // used when expert_placement is empty
    int32_t max_batch = 8;               // running requests at once (continuous batching)
    int64_t prefill_chunk = 256;         // prompt tokens per request per step (0: all at once)
    // Steps in flight: 3 has N+1 and N+2 sent while N runs, so the next plan is already in a
    // worker's mailbox when a step ends even though the worker replies to N during N+1 (at its
    // first combine wait: ops/docs/cluster.md); 2 sends N+1 while N runs (the plan for N+2 then
    // often arrives after N+1 ends when steps are ~1 ms); 1 waits for N's results before
    // planning N+1.
    int32_t pipeline_depth = 3;
    // A lane whose steps are short (the workers' compute time per step, averaged, below this)
    // keeps one more step in flight than pipeline_depth (pipeline_depth >= 2 only): with ~1 ms
    // steps the reply to N plus the coordinator's turn plus the plan's way to the worker can
    // take longer than the two queued steps, and the worker idles (README (c)). Long steps
    // keep pipeline_depth: each extra step in flight is one more step a request that met EOS
    // is computed for, and one more a new request's prefill waits behind. 0: off.
    int64_t short_step_us = 2000;
    int64_t kv_transfer_timeout_ms = 5000;  // disaggregation: a decode worker's wait for KV frames
    int64_t step_timeout_ms = 30000;     // a step result later than this fails the step
    int64_t request_deadline_ms = 120000;  // default per-request deadline
    int32_t scheduler_threads = 2;       // CAF scheduler threads (policy sharing)
    std::string port_file = "";          // when set: the bound CAF port is written here
    int64_t drain_grace_ms = 10000;      // SIGTERM: how long running requests may finish
    // An expert group that answers no liveness probe (sent every ÷ 4) for this long is down;
    // 0: no probes.
    int64_t peer_timeout_ms = control::kDefaultPeerTimeoutMs;

    void declare(control::service_options& options);
    // Empty when usable; else what is wrong (names the field).
    std::optional<std::string> validate() const;
};

}  // namespace longcat::coordinator
