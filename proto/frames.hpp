// UCX data-plane frames: the fixed 64-byte header that precedes every payload, its encoder and
// its validating decoder, and the handshake payload (hello) exchanged when a data-plane
// connection opens. Plain C++ only: no CAF, no UCX (cheap to include anywhere).
//
// Wire form of the header (64 bytes, little-endian, no padding; `frame_header` has exactly this
// layout in memory too, checked by static_asserts in frames.cpp):
//   off  size  field             meaning
//     0     4  magic             kFrameMagic: the bytes "LCAT"
//     4     2  protocol_version  kProtocolVersion of the sender
//     6     1  kind              frame_kind
//     7     1  dtype             wire_dtype of the row values (none for handshake)
//     8     8  step_id           coordinator step the frame belongs to
//    16     8  request_id        kv, prefill_done: the request whose KV this is; 0 otherwise
//    24     4  layer             dispatch/combine: layer index; kv: KV pool index
//    28     2  micro_batch       micro-batch index inside the step
//    30     2  flags             kFrameFlag* bits; unknown bits are rejected (row kinds)
//    32     4  num_tokens        token rows in the payload (0 is valid: "no tokens for you")
//    36     4  row_elems         values of `dtype` at the start of each row (e.g. hidden)
//    40     4  row_bytes         bytes per row: row_elems·size(dtype) + per-row metadata
//    44     4  first_position    kv: sequence position of the first row; 0 otherwise
//    48     4  sequence          kv, prefill_done: the transfer's attempt (+1 per retry)
//    52     4  reserved          0 (row kinds; a handshake's is not checked)
//    56     8  payload_bytes     row kinds: num_tokens·row_bytes; handshake: hello size
//
// Payload of the row kinds (dispatch, combine, kv, collective, prefill_done): num_tokens rows,
// token-major, each row_elems values of dtype plus meta = row_bytes − row_elems·size(dtype) bytes
// of metadata, in two blocks (since protocol 3; protocol 2 interleaved them row by row):
//   [ values:   num_tokens × row_elems values of dtype   (one contiguous [num_tokens, row_elems])
//   | metadata: num_tokens × meta bytes                    (row r's at values size + r·meta) ]
// so a receiver computes on the values, or sends them on, where they landed. (Kinds without
// metadata are plain rows; prefill_done: one row, dtype none, row_bytes 16, the prefill_done_row
// below.) The metadata (e.g. a dispatch row's expert slots and gate weights) is defined by the
// sender/receiver pair of that kind. Payload of a handshake frame: the hello layout below.
//
// NOTES: the header layout, the hello layout and the handshake kind code are frozen across
// protocol versions (a newer version may only give meaning to `reserved` and new flag bits), so
// that two versions can always read each other's hello and refuse each other by name.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "proto/expected.hpp"
#include "proto/version.hpp"

namespace longcat::proto {

inline constexpr uint32_t kFrameMagic = 0x5441434Cu;  // "LCAT" as a little-endian u32
inline constexpr size_t kFrameHeaderBytes = 64;
inline constexpr uint64_t kDefaultMaxPayloadBytes = uint64_t{1} << 30;  // 1 GiB
inline constexpr uint64_t kMaxHandshakePayloadBytes = 4096;
inline constexpr size_t kMaxHandshakeStringBytes = 1024;  // name, address, reason: each

// Wire codes are fixed; never renumber.
enum class frame_kind : uint8_t {
    handshake = 1,   // hello request / accepted / refused (frozen)
    dispatch = 2,    // attention worker → expert group: token rows for one (step, layer, mb)
    combine = 3,     // expert group → attention worker: weighted partial sums
    kv = 4,          // prefill → decode worker: KV rows of one (request, chunk, pool)
    collective = 5,  // TP collective over UCX (the CPU build's all-gather / reduce-scatter)
    prefill_done = 6,  // prefill → decode worker, after a request's last KV frame: one row,
                       // prefill_done_row (the first token and the sampler's counter)
};

enum class wire_dtype : uint8_t {
    none = 0,
    f32 = 1,
    bf16 = 2,
    f16 = 3,
    f8_e4m3 = 4,
    i32 = 5,
    i64 = 6,
    u8 = 7,
};

// flags
inline constexpr uint16_t kFrameFlagLast = 1u << 0;  // last frame of a multi-frame transfer (kv)
inline constexpr uint16_t kKnownFrameFlags = kFrameFlagLast;

std::string_view to_string(frame_kind kind);
std::string_view to_string(wire_dtype dtype);
size_t wire_dtype_size(wire_dtype dtype);  // bytes per value; 0 for none
bool is_row_kind(frame_kind kind);         // every kind except handshake

// The header in memory; same field order, sizes and offsets as the wire form above.
struct frame_header {
    uint32_t magic = kFrameMagic;
    uint16_t protocol_version = kProtocolVersion;
    frame_kind kind = frame_kind::dispatch;
    wire_dtype dtype = wire_dtype::none;
    uint64_t step_id = 0;
    uint64_t request_id = 0;
    uint32_t layer = 0;
    uint16_t micro_batch = 0;
    uint16_t flags = 0;
    uint32_t num_tokens = 0;
    uint32_t row_elems = 0;
    uint32_t row_bytes = 0;
    uint32_t first_position = 0;
    uint32_t sequence = 0;
    uint32_t reserved = 0;
    uint64_t payload_bytes = 0;

    bool operator==(const frame_header&) const = default;
};

// A row-kind header with row_bytes = row_elems·size(dtype) + row_meta_bytes and payload_bytes =
// num_tokens·row_bytes; the caller fills step_id, layer, micro_batch, ... .
frame_header make_row_header(frame_kind kind, wire_dtype dtype, uint32_t num_tokens,
                             uint32_t row_elems, uint32_t row_meta_bytes = 0);

// What a receiver accepts.
struct frame_limits {
    uint64_t max_payload_bytes = kDefaultMaxPayloadBytes;
    uint16_t protocol_version = kProtocolVersion;  // row kinds must carry exactly this
};

enum class frame_error : uint8_t {
    truncated,              // fewer than kFrameHeaderBytes header bytes
    header_too_long,        // more than kFrameHeaderBytes header bytes
    bad_magic,              // not "LCAT"
    version_mismatch,       // a row-kind frame of another protocol version
    unknown_kind,           // kind code not in frame_kind
    unknown_dtype,          // dtype code not in wire_dtype
    unknown_flags,          // a row-kind frame with flag bits outside kKnownFrameFlags
    nonzero_reserved,       // a row-kind frame whose reserved field is not 0
    oversized,              // payload_bytes above frame_limits::max_payload_bytes
    bad_row_layout,         // row_elems·size(dtype) > row_bytes, or handshake fields not 0
    length_mismatch,        // payload_bytes ≠ num_tokens·row_bytes (or overflow)
    payload_size_mismatch,  // the payload that arrived is not payload_bytes long
    bad_handshake,          // malformed hello payload
};
std::string_view to_string(frame_error error);

// A frame error with a message saying what was found, e.g.
// "length_mismatch: payload_bytes 100 != num_tokens 3 × row_bytes 32".
struct frame_failure {
    frame_error code = frame_error::truncated;
    std::string message;
};

using frame_header_bytes = std::array<std::byte, kFrameHeaderBytes>;

// Writes `header` as it is, valid or not (tests craft malformed frames with it); senders call
// validate_frame_header first.
frame_header_bytes encode_frame_header(const frame_header& header);

// Every check decode_frame_header makes after parsing; nullopt when valid.
std::optional<frame_failure> validate_frame_header(const frame_header& header,
                                                   const frame_limits& limits);

// Parses and validates `bytes` (must be exactly kFrameHeaderBytes). Never reads past the span.
// Handshake frames are accepted in any protocol version (the handshake itself compares them).
expected<frame_header, frame_failure> decode_frame_header(std::span<const std::byte> bytes,
                                                          const frame_limits& limits);

// The payload that arrived for `header` must be exactly payload_bytes long.
std::optional<frame_failure> check_payload_size(const frame_header& header, uint64_t actual_bytes);

// -- handshake -------------------------------------------------------------------------------

enum class handshake_status : uint8_t { request = 0, accepted = 1, refused = 2 };
std::string_view to_string(handshake_status status);

// The hello a connecting side sends (status request) and the answer (accepted or refused).
// Payload layout (little-endian, frozen):
//   off  size  field
//     0     2  protocol_version
//     2     2  reserved (0)
//     4     4  ucx_major
//     8     4  ucx_minor
//    12     4  ucx_release
//    16     1  status            handshake_status
//    17     1  reserved (0)
//    18     2  name_bytes        N ≤ kMaxHandshakeStringBytes
//    20     2  address_bytes     A ≤ kMaxHandshakeStringBytes
//    22     2  reason_bytes      R ≤ kMaxHandshakeStringBytes
//    24     N  name              UTF-8, not terminated
//  24+N     A  address           the sender's own data-plane address
//  24+N+A   R  reason            refused: the mismatch, naming both sides; else empty
inline constexpr size_t kHandshakeFixedBytes = 24;

struct handshake_hello {
    handshake_status status = handshake_status::request;
    wire_versions versions;
    std::string name;
    std::string address;
    std::string reason;
    bool operator==(const handshake_hello&) const = default;
};

// Strings longer than kMaxHandshakeStringBytes are cut to that length.
std::vector<std::byte> encode_handshake(const handshake_hello& hello);
expected<handshake_hello, frame_failure> decode_handshake(std::span<const std::byte> payload);

// The header of a handshake frame carrying `payload_bytes` of hello.
frame_header make_handshake_header(uint16_t protocol_version, uint64_t payload_bytes);

// prefill_done (ARCHITECTURE.md §6): sent by the prefill worker after a request's last KV frame
// (same request_id, and the transfer's attempt in `sequence`). 16 bytes, little-endian:
//   off 0: i32 first_token (sampled by the prefill worker), off 4: u32 0,
//   off 8: u64 tokens_generated (the sampler's counter: the next token's index).
struct prefill_done_row {
    int32_t first_token = 0;
    uint64_t tokens_generated = 0;
};
inline constexpr uint32_t kPrefillDoneRowBytes = 16;
std::array<std::byte, kPrefillDoneRowBytes> encode_prefill_done(const prefill_done_row& row);
// nullopt unless `bytes` is exactly one row.
std::optional<prefill_done_row> decode_prefill_done(std::span<const std::byte> bytes);

}  // namespace longcat::proto
