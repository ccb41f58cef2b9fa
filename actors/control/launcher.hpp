// launcher: `longcat cluster up|down` — the local cluster on 127.0.0.1 (ARCHITECTURE.md §12).
// up: reads a topology file (deploy/local/*.json), starts the coordinator, the expert groups and
//   the attention workers as separate processes (the same binaries and transports as a fleet),
//   waits until every /readyz answers 200 (deadline), writes a state file (JSON: coordinator
//   address, each process's name, role, pid, ports, metrics URL, log file) and prints it all.
// down: stops exactly the processes the state file names (a pid is only signalled while its
//   /proc/PID/exe is still the binary that was started): SIGTERM, then SIGKILL after a grace.
// No CAF here (readiness is polled over HTTP).
//
// Topology file:
//   {"name": "minimal", "host": "127.0.0.1", "threads_per_service": 1, "max_batch": 8,
//    "attention": [{"name": "attention-0", "tp_group": "tp-0", "tp_rank": 0, "tp_size": 1}],
//    "expert_groups": [{"name": "experts-0", "share": 1}]}
// Each expert group takes a contiguous run of the routed experts in proportion to its `share`
// (or exactly `experts`, e.g. "0-3,7").
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "proto/expected.hpp"

namespace longcat::control {

struct launched_process {
    std::string name;
    std::string role;  // coordinator | attention | experts | gateway
    int pid = 0;
    std::string binary;
    uint16_t metrics_port = 0;
    uint16_t control_port = 0;  // coordinator: its CAF port
    std::string log_file;
    uint64_t start_time = 0;  // /proc/PID/stat's start time: tells a reused pid apart; 0 unknown
    std::string metrics_url() const;
};

struct cluster_state {
    std::string topology;
    std::string model_dir;
    std::string host = "127.0.0.1";
    std::string coordinator;  // "127.0.0.1:PORT"
    std::string gateway_url;  // "http://127.0.0.1:PORT" when the topology has a gateway
    std::vector<launched_process> processes;
};

struct cluster_up_options {
    std::filesystem::path topology;
    std::filesystem::path model_dir;
    std::filesystem::path state_file = ".longcat-cluster/state.json";  // logs go beside it
    std::filesystem::path bin_dir;  // empty: beside the running `longcat` binary (or build tree)
    std::chrono::milliseconds ready_timeout{120'000};
    std::vector<std::string> extra_env;  // "NAME=value" for every process
};

// Starts the cluster; on any failure (a process exits, the deadline passes) stops what it
// started and returns the error (with the failing process's log tail).
proto::expected<cluster_state, std::string> cluster_up(const cluster_up_options& opts);

// Stops the processes of the state file; returns what it did, one line per process.
proto::expected<std::vector<std::string>, std::string> cluster_down(
    const std::filesystem::path& state_file, std::chrono::milliseconds grace = std::chrono::seconds(10));

proto::expected<cluster_state, std::string> read_cluster_state(const std::filesystem::path& state_file);
std::string describe_cluster(const cluster_state& state);

// GET http://127.0.0.1:port/path → status code (0 when unreachable).
int http_get_status(const std::string& host, uint16_t port, const std::string& path,
                    std::chrono::milliseconds timeout, std::string* body = nullptr);

// A free TCP port on `host` (bound then released; the caller uses it right away): random, below
// the kernel's ephemeral range, so that no port the kernel hands out meanwhile can take it.
uint16_t pick_free_port(const std::string& host);

}  // namespace longcat::control
