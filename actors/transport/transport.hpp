// data_plane: a process's endpoint for tensor bytes (ARCHITECTURE.md §2). Peers connect by
// address (learned over CAF), exchange a handshake that compares protocol and UCX versions, then
// move frames: a proto::frame_header plus a payload of header.payload_bytes bytes.
// Implementations: ucx_data_plane (the real one, every process), inproc_data_plane (unit tests),
// faulty_data_plane (wraps any of them and injects drops, delays and failures).
//
// Contract shared by every implementation:
//  - Every call that waits takes a deadline and returns by it (plus a bounded teardown grace
//    where a failed endpoint must be torn down); errors are values (transport_failure), never
//    exceptions, and their message names the peer ("experts-3 (ucx://127.0.0.1:4200)").
//  - All methods are thread-safe; any number of threads may send and receive at once.
//  - A peer that fails (its process died, it closed, a send to it missed its deadline, a
//    transport error) stays failed: every later send to it and every receive that names it
//    returns peer_failed. Connect again for a new peer_id.
//  - Frames from one peer are received in the order they were sent, for any one filter.
//  - Each buffer states its memory type. Host memory works everywhere; cuda needs a transport
//    that supports() it (a CUDA-enabled UCX, or a host-staging path: not built yet).
#pragma once

#include <chrono>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "proto/expected.hpp"
#include "proto/frames.hpp"
#include "proto/version.hpp"

namespace longcat::transport {

using clock = std::chrono::steady_clock;
using deadline = clock::time_point;

inline deadline deadline_after(clock::duration timeout) { return clock::now() + timeout; }

// -- errors ----------------------------------------------------------------------------------

enum class transport_error : uint8_t {
    timeout,             // the deadline passed first
    peer_failed,         // the peer died, closed, or was failed by an earlier error or timeout
    version_mismatch,    // handshake refused: protocol or UCX versions differ (both sides named)
    bad_frame,           // a malformed frame arrived (receive) or was offered (send)
    closed,              // this data plane is closed
    unknown_peer,        // a peer_id this data plane never handed out
    bad_address,         // an address this transport cannot parse or reach at all
    unsupported_memory,  // a payload memory type this data plane cannot move
    setup_failed,        // the transport could not be created (UCX context, worker, listener)
};
std::string_view to_string(transport_error error);

struct transport_failure {
    transport_error code = transport_error::timeout;
    std::string message;  // "<code>: <what happened>, naming the peer"
    // send() only: the transport may still read the payload after send() returned (a send that
    // missed its deadline which UCX had not released by the teardown grace: error mode none,
    // where a stalled peer's endpoint cannot be force-closed). The caller must keep those bytes
    // alive and unchanged for the life of the process: hand their owner to retain_payload().
    bool payload_held = false;
};

template <class T>
using transport_result = proto::expected<T, transport_failure>;
using transport_status = transport_result<void>;

// unexpected{code, "<to_string(code)>: <message>"}.
proto::unexpected<transport_failure> make_failure(transport_error code, std::string_view message);

// -- buffers ---------------------------------------------------------------------------------

enum class memory_type : uint8_t { host, cuda };
std::string_view to_string(memory_type memory);

// Keeps the owner of a payload that send() reported as held (transport_failure::payload_held)
// until the process exits, so that a stalled peer that wakes up later cannot make UCX read freed
// or reused memory. Counted in retained_payloads().
void retain_payload(std::shared_ptr<const void> owner, size_t num_bytes);
struct retained_payload_stats {
    uint64_t payloads = 0;
    uint64_t bytes = 0;
};
retained_payload_stats retained_payloads();
// retain_payload() of a buffer moved in (its heap storage stays where UCX saw it).
template <class Buffer>
void retain_payload_buffer(Buffer&& buffer) {
    const size_t num_bytes = buffer.size() * sizeof(typename std::decay_t<Buffer>::value_type);
    retain_payload(std::make_shared<std::decay_t<Buffer>>(std::forward<Buffer>(buffer)), num_bytes);
}

// Bytes to send; the caller keeps them alive and unchanged until send() returns (or, when it
// fails with payload_held, for good: retain_payload).
struct payload_view {
    std::span<const std::byte> bytes;
    memory_type memory = memory_type::host;
};

// Host bytes, not zero-filled; move-only. Received payloads land here. Allocated by
// byte_buffer(n) / copy_of: 64-byte aligned. Adopted from a transport (adopt(): a payload kept in
// the transport's own receive buffer instead of copied out): at least kAdoptedAlignment.
// From kLargeBytes on, a buffer is whole 2 MiB-aligned huge-page extents (madvise(MADV_HUGEPAGE):
// the kernel backs them with transparent huge pages where it has them), taken from and given back
// to a process-wide cache of such extents (the smallest cached one that holds the request and is
// at most twice its size; up to 512 MiB kept), so that a frame of the usual size neither faults
// nor zero-fills, and the copies into and out of it (the kernel's, UCX's, the experts') walk 512
// times fewer pages.
class byte_buffer {
  public:
    static constexpr size_t kAlignment = 64;
    static constexpr size_t kAdoptedAlignment = 8;
    static constexpr size_t kLargeBytes = size_t{1} << 20;
    static constexpr size_t kHugePageBytes = size_t{2} << 20;

    byte_buffer() = default;
    explicit byte_buffer(size_t num_bytes);
    static byte_buffer copy_of(std::span<const std::byte> bytes);
    // `bytes` stay valid while `owner` lives; this buffer (and whatever it is moved to) holds
    // `owner` and drops it when it lets go of the bytes. `bytes` must be kAdoptedAlignment-aligned;
    // a null `owner` gives copy_of(bytes).
    static byte_buffer adopt(std::span<std::byte> bytes, std::shared_ptr<void> owner);
    ~byte_buffer();
    byte_buffer(byte_buffer&& other) noexcept;
    byte_buffer& operator=(byte_buffer&& other) noexcept;
    byte_buffer(const byte_buffer&) = delete;
    byte_buffer& operator=(const byte_buffer&) = delete;

    std::byte* data() { return data_; }
    const std::byte* data() const { return data_; }
    size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    std::span<std::byte> span() { return {data_, size_}; }
    std::span<const std::byte> span() const { return {data_, size_}; }
    memory_type memory() const { return memory_type::host; }

  private:
    void release();

    std::byte* data_ = nullptr;
    size_t size_ = 0;
    size_t extent_ = 0;            // > 0: data_ is a huge-page extent of this many bytes (>= size_)
    std::shared_ptr<void> owner_;  // set: adopted bytes; else data_ is ours (aligned new / extent)
};

// The process-wide cache of large buffers' extents (tests and benchmarks read it).
struct large_buffer_stats {
    uint64_t extents_mapped = 0;  // mmap calls so far
    uint64_t extents_reused = 0;  // buffers served from the cache
    uint64_t cached_bytes = 0;    // extents given back and kept for reuse now
};
large_buffer_stats large_buffer_cache_stats();

// -- peers and frames ------------------------------------------------------------------------

// Handed out by connect() and by accepting a connection; never reused inside one data plane.
struct peer_id {
    uint64_t value = 0;  // 0: no peer
    auto operator<=>(const peer_id&) const = default;
};
std::string to_string(peer_id peer);  // "peer#3"

struct peer_info {
    peer_id id;
    std::string name;     // from the peer's hello
    std::string address;  // the peer's own data-plane address, from its hello
    proto::wire_versions versions;
    bool connected_by_us = false;              // we called connect(); else it connected to us
    std::optional<transport_failure> failure;  // set once the peer has failed
};

// Which frames a receive() takes: every set field must match. Errors (bad frames, peer failures)
// match on the peer only: a receive naming a peer gets that peer's errors, a receive naming no
// peer gets every peer's errors — unless frames_only is set.
struct frame_filter {
    std::optional<peer_id> peer;
    std::optional<proto::frame_kind> kind;
    std::optional<uint64_t> step_id;
    std::optional<uint32_t> layer;
    std::optional<uint16_t> micro_batch;
    std::optional<uint64_t> request_id;
    std::function<bool(peer_id, const proto::frame_header&)> predicate;  // optional, extra test
    // Error entries never match (they stay for other receives), and a matching frame is returned
    // even when an earlier frame of its peer is still landing (no per-peer order).
    bool frames_only = false;

    bool matches(peer_id from, const proto::frame_header& header) const;
};

struct received_frame {
    peer_id peer;
    proto::frame_header header;
    byte_buffer payload;  // header.payload_bytes bytes, host memory
};

struct data_plane_stats {
    uint64_t frames_sent = 0;
    uint64_t bytes_sent = 0;  // payload bytes
    uint64_t frames_received = 0;
    uint64_t bytes_received = 0;
    // Of frames_received: handed out in the transport's own receive buffer, not copied out.
    uint64_t frames_received_in_place = 0;
    uint64_t frames_sent_rendezvous = 0;  // of frames_sent: sent by rendezvous, not eager
    uint64_t bad_frames = 0;          // malformed frames that arrived
    uint64_t refused_handshakes = 0;  // both directions
    uint64_t peer_failures = 0;
};

// -- the interface ---------------------------------------------------------------------------

class data_plane {
  public:
    virtual ~data_plane() = default;

    // What peers pass to connect(), e.g. "ucx://127.0.0.1:41234"; travels over CAF.
    virtual std::string address() const = 0;
    // This side's name, shown to peers in the handshake and in their errors.
    virtual std::string name() const = 0;
    virtual bool supports(memory_type memory) const = 0;

    // Opens a connection and runs the handshake. version_mismatch names both sides; a peer that
    // does not answer by `until` gives timeout.
    virtual transport_result<peer_id> connect(std::string_view address, deadline until) = 0;

    // Sends one frame. header.payload_bytes must equal payload.bytes.size() and the header must
    // pass proto::validate_frame_header (else bad_frame, nothing sent). Returns once the transport
    // is done with `payload` (delivered, or buffered by the transport). Missing the deadline
    // fails the peer (its endpoint is torn down) and returns timeout.
    virtual transport_status send(peer_id peer, const proto::frame_header& header,
                                  payload_view payload, deadline until) = 0;

    // The oldest frame matching `filter` (or an error entry, see frame_filter), waiting until
    // `until`. Unmatched frames stay queued for other receives.
    virtual transport_result<received_frame> receive(deadline until,
                                                     const frame_filter& filter = {}) = 0;

    // Drops every queued frame matching `filter` (error entries stay); a matching frame whose
    // payload is still landing is dropped when it lands. Returns how many it dropped or marked.
    // For frames nobody will receive (a KV transfer whose request ended).
    virtual size_t discard(const frame_filter& filter) = 0;

    // A consumer for arriving frames of one kind, called on the thread that completes a frame
    // (UCX's progress thread) with its payload before it is queued: returns true when it took
    // the frame (then it is not queued), false to queue it as usual. For KV frames written
    // straight into pages reserved for them. nullptr removes it. Keep it short and never call
    // the data plane from it.
    using frame_sink = std::function<bool(peer_id, const proto::frame_header&, std::span<const std::byte>)>;
    virtual void set_frame_sink(proto::frame_kind kind, frame_sink sink) = 0;

    // Closes one peer's connection; later use of `peer` returns peer_failed.
    virtual transport_status disconnect(peer_id peer, deadline until) = 0;

    virtual std::optional<peer_info> peer(peer_id peer) const = 0;
    virtual data_plane_stats stats() const = 0;

    // Closes every connection and stops; waiting receives return closed. Idempotent; the
    // destructor calls it.
    virtual void close() = 0;
};

// "experts-3 (ucx://127.0.0.1:4200)"; falls back to the address or the id while unknown.
std::string describe_peer(const peer_info& info);

}  // namespace longcat::transport
