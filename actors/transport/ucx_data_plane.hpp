// ucx_data_plane: the data_plane of every process (ARCHITECTURE.md §2), on UCX 1.13's UCP API.
// One UCP context + worker per process, owned by one progress thread that makes every UCX call;
// a sockaddr listener (tcp connection manager) that peers connect to; one endpoint per peer; a
// frame travels as one active message (AM header = the 64-byte frame header, AM data = the
// payload), eager up to rndv_threshold_bytes (128 KiB) and rendezvous above it (zero-copy over
// shm/cma, or the receiver pulls it over tcp).
//
// Progress: `wakeup` (default) sleeps in epoll on the worker's wakeup fd (ucp_worker_get_efd /
// ucp_worker_arm) and on an eventfd that API calls ring, but polls on while a send of its own is
// in flight (poll_while_sending); `busy_poll` spins on ucp_worker_progress (one core per
// process: for GPU nodes).
//
// Error-handling mode (see README.md beside this file for the measured difference):
//   peer: UCP_ERR_HANDLING_MODE_PEER. UCX reports a dead peer (its sockets close) at once, and
//         failed endpoints are closed with UCP_EP_CLOSE_FLAG_FORCE, which cancels their
//         requests. In UCX 1.13 this excludes the shared-memory transports: tcp only.
//   none: UCP_ERR_HANDLING_MODE_NONE. Allows shm (sysv/posix) and cma after wire-up, ~10× lower
//         latency on one host, but UCX reports no peer failures: a dead peer shows as a deadline
//         miss here and as a CAF down message in the owning actor, which then disconnect()s it.
//         Endpoints are closed without FORCE (FORCE needs PEER mode on both sides).
// NOTES: in `none` mode, a send that missed its deadline to a peer that is alive but stalled
//   mid-rendezvous may still have its payload read by UCX after send() returned timeout (UCX
//   1.13 cannot cancel a send request without FORCE). Keep payloads of failed steps alive until
//   the peer is disconnected, or use `peer` mode.
//   Tests set UCX_NET_DEVICES=lo and UCX_TCP_CM_REUSEADDR=y; under ASan also
//   UCX_MEM_MALLOC_HOOKS=n and UCX_MEM_EVENTS=n (in the environment before the process starts).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "actors/transport/transport.hpp"

namespace longcat::transport {

enum class ucx_error_mode : uint8_t { peer, none };
enum class ucx_progress_mode : uint8_t { wakeup, busy_poll };
std::string_view to_string(ucx_error_mode mode);
std::string_view to_string(ucx_progress_mode mode);

struct ucx_data_plane_config {
    std::string name = "longcat";           // shown to peers and in their errors
    std::string listen_host = "127.0.0.1";  // IPv4 literal; the listener binds only this address
    uint16_t listen_port = 0;               // 0: the OS picks one; address() tells which
    ucx_error_mode error_mode = ucx_error_mode::peer;
    ucx_progress_mode progress_mode = ucx_progress_mode::wakeup;
    // `wakeup` mode: while a send of ours is in flight, the progress thread keeps polling
    // instead of sleeping, for up to this long after the last round that made progress; then it
    // sleeps as usual (a stalled peer costs at most this much spinning per wake-up). A sender
    // that sleeps leaves the rest of a large payload to be pushed out by the kernel when the
    // peer's acknowledgements arrive, on the peer's CPU: over tcp on one host that reorders the
    // stream and costs a wake-up per window (ops/bench/transport, README (a)). 0: sleep after
    // every idle round.
    std::chrono::microseconds poll_while_sending{1000};
    // Payloads up to this go eager (UCP_AM_SEND_FLAG_EAGER: streamed without a round trip, the
    // receiver copies them out of UCX's buffer), larger ones rendezvous (UCP_AM_SEND_FLAG_RNDV).
    // 128 KiB: over tcp, with poll_while_sending keeping both progress threads awake while
    // frames are out, rendezvous beat eager from 256 KiB on (1 MiB: 2.2x the MB/s at a third of
    // the CPU per byte; eager's many small pushes run the loopback's softirq inline in every
    // sendmsg) and eager won at 64 and 128 KiB (ops/docs/perf-log.md, 2026-12-02). It was 1 MiB
    // while the progress threads slept between frames and each rendezvous waited on a wake-up.
    uint64_t rndv_threshold_bytes = 128 * 1024;
    // The same for a peer whose lanes after wire-up are all shared memory (sysv/posix for
    // active messages, cma for rendezvous; read at the first data frame). 128 KiB as well: with
    // the threads polling, cma's single copy beat eager's two through the FIFO from 256 KiB on
    // (4 MiB: 1.4-1.8x the MB/s, 2026-12-02); eager and rendezvous tied at 64 and 128 KiB. It
    // was 4 MiB while the threads slept, when eager won at 2 and 4 MiB.
    uint64_t shm_rndv_threshold_bytes = 128 * 1024;
    proto::frame_limits limits;                 // what this side accepts (max payload)
    // An accepted connection must say hello within this, else it is dropped.
    std::chrono::milliseconds handshake_timeout{10'000};
    // How long tearing down a failed endpoint, or close(), may take before it is abandoned.
    std::chrono::milliseconds teardown_grace{1'000};
    // UCP settings applied with ucp_config_modify on top of the UCX_* environment,
    // e.g. {"TLS", "tcp"} or {"TLS", "sm,self,tcp"}.
    std::vector<std::pair<std::string, std::string>> ucx_options;
    // Announced in the handshake instead of kProtocolVersion + the linked UCX version; tests use
    // it to play a peer of another version. Frames still carry this protocol version.
    std::optional<proto::wire_versions> advertised_versions;

    // Empty when usable; else what is wrong.
    std::optional<std::string> validate() const;
};

// Tunes glibc malloc for frame traffic, once per process: freed blocks up to 64 MiB stay in the
// heap instead of going back to the kernel (each reuse would page-fault and zero-fill). Called by
// ucx_data_plane::create; a process-wide setting, as every process with a data plane moves frames.
void keep_freed_frame_memory();

class ucx_data_plane final : public data_plane {
  public:
    // Creates the UCP context, worker and listener and starts the progress thread (and calls
    // keep_freed_frame_memory()).
    static transport_result<std::unique_ptr<ucx_data_plane>> create(ucx_data_plane_config config);
    ~ucx_data_plane() override;
    ucx_data_plane(const ucx_data_plane&) = delete;
    ucx_data_plane& operator=(const ucx_data_plane&) = delete;

    std::string address() const override;  // "ucx://127.0.0.1:<port>"
    std::string name() const override;
    bool supports(memory_type memory) const override;  // host only (Debian's UCX has no CUDA)
    transport_result<peer_id> connect(std::string_view address, deadline until) override;
    transport_status send(peer_id peer, const proto::frame_header& header, payload_view payload,
                          deadline until) override;
    transport_result<received_frame> receive(deadline until,
                                             const frame_filter& filter = {}) override;
    size_t discard(const frame_filter& filter) override;
    void set_frame_sink(proto::frame_kind kind, frame_sink sink) override;
    transport_status disconnect(peer_id peer, deadline until) override;
    std::optional<peer_info> peer(peer_id peer) const override;
    data_plane_stats stats() const override;
    void close() override;

    const ucx_data_plane_config& config() const;

    // The UCX transports this peer's endpoint uses now, e.g. {"tcp/lo"} or {"sysv/memory",
    // "cma/memory"} (from ucp_ep_print_info; shm lanes appear once wire-up has finished).
    transport_result<std::vector<std::string>> transports(peer_id peer, deadline until);

    // Test hook: sends `header_bytes` as the AM header, unchecked (malformed-frame tests).
    transport_status send_raw(peer_id peer, std::span<const std::byte> header_bytes,
                              payload_view payload, deadline until);

  private:
    struct impl;
    explicit ucx_data_plane(std::shared_ptr<impl> state);
    // Shared with the received payloads still held in UCX's buffers (they outlive close()).
    std::shared_ptr<impl> impl_;
};

}  // namespace longcat::transport
