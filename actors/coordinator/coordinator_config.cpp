#include "actors/coordinator/coordinator_config.hpp"

#include "actors/control/service_options.hpp"

namespace longcat::coordinator {

void coordinator_config::declare(control::service_options& o) {
    o.add("name", &name, "this member's name in logs and errors");
    o.add("model", &model, "model directory (HF layout); the coordinator reads config.json");
    o.add("listen-host", &listen_host, "address the CAF endpoint binds (IPv4 literal)");
    o.add("port", &port, "CAF port; 0 lets the OS pick");
    o.add("metrics-address", &metrics_address, "HOST:PORT of /metrics, /healthz, /readyz");
    o.add("expected-attention-workers", &expected_attention_workers,
          "attention workers (all TP ranks) the cluster waits for");
    o.add("expert-placement", &expert_placement,
          "GROUP=EXPERTS;... with EXPERTS like 0-5,9 (empty: even split)");
    o.add("expected-expert-groups", &expected_expert_groups,
          "expert groups to wait for when expert-placement is empty");
    o.add("max-batch", &max_batch, "running requests at once (continuous batching)");
    o.add("prefill-chunk", &prefill_chunk, "prompt tokens per request per step (0: whole prompt)");
    o.add("pipeline-depth", &pipeline_depth, "steps in flight (3: N+1 and N+2 are planned and sent while N runs)");
    o.add("short-step-us", &short_step_us,
          "a lane whose steps take less than this keeps one more step in flight (0: off)");
    o.add("kv-transfer-timeout-ms", &kv_transfer_timeout_ms, "disaggregation: deadline of a KV transfer");
    o.add("step-timeout-ms", &step_timeout_ms, "deadline of one step's results");
    o.add("request-deadline-ms", &request_deadline_ms, "default deadline of a request");
    o.add("scheduler-threads", &scheduler_threads, "CAF scheduler threads");
    o.add("port-file", &port_file, "write the bound CAF port to this file");
    o.add("drain-grace-ms", &drain_grace_ms, "on SIGTERM: how long running requests may finish");
    o.add("peer-timeout-ms", &peer_timeout_ms,
          "an expert group silent this long (ms) to liveness probes is down; 0: no probes");
}

std::optional<std::string> coordinator_config::validate() const {
    if (model.empty()) return "model: a model directory is required";
    if (listen_host.empty())
        return "listen-host must be an IPv4 address (empty would bind every interface)";
    if (expected_attention_workers < 1) return "expected-attention-workers must be >= 1";
    if (expert_placement.empty() && expected_expert_groups < 1)
        return "expected-expert-groups must be >= 1";
    if (max_batch < 1) return "max-batch must be >= 1";
    if (prefill_chunk < 0) return "prefill-chunk must be >= 0";
    if (pipeline_depth < 1 || pipeline_depth > 4) return "pipeline-depth must be 1..4";
    if (short_step_us < 0 || short_step_us > 1000000) return "short-step-us must be 0..1000000";
    if (kv_transfer_timeout_ms < 1) return "kv-transfer-timeout-ms must be >= 1";
    if (step_timeout_ms < 1) return "step-timeout-ms must be >= 1";
    if (request_deadline_ms < 1) return "request-deadline-ms must be >= 1";
    if (scheduler_threads < 1) return "scheduler-threads must be >= 1";
    if (drain_grace_ms < 0) return "drain-grace-ms must be >= 0";
    if (auto bad = control::check_peer_timeout(peer_timeout_ms, "peer-timeout-ms")) return bad;
    return std::nullopt;
}

}  // namespace longcat::coordinator
