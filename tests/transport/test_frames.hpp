// Helpers shared by the transport tests and the transport_peer helper binary: deterministic
// payload contents derived from a frame header, and the helper's reply conventions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "proto/frames.hpp"

namespace longcat::testing {

// step_id that tells an echoing transport_peer to exit.
inline constexpr uint64_t kStopStep = ~uint64_t{0};
// request_id of an echo reply: whether the request's payload matched fill_pattern.
inline constexpr uint64_t kEchoVerified = 1;
inline constexpr uint64_t kEchoCorrupt = 2;

inline uint8_t pattern_seed(const proto::frame_header& header) {
    return static_cast<uint8_t>(header.step_id * 31 + header.layer * 7 +
                                static_cast<uint8_t>(header.kind) * 3 + header.micro_batch);
}

// byte[i] = seed + i·7 + (i >> 9), mod 256: changes in every position and every 512-byte block.
inline void fill_pattern(const proto::frame_header& header, std::span<std::byte> bytes) {
    const uint8_t seed = pattern_seed(header);
    for (size_t byte_idx = 0; byte_idx < bytes.size(); ++byte_idx) {
        bytes[byte_idx] = static_cast<std::byte>(seed + byte_idx * 7 + (byte_idx >> 9));
    }
}

inline std::vector<std::byte> make_pattern(const proto::frame_header& header) {
    std::vector<std::byte> bytes(header.payload_bytes);
    fill_pattern(header, bytes);
    return bytes;
}

inline bool check_pattern(const proto::frame_header& header, std::span<const std::byte> bytes) {
    if (bytes.size() != header.payload_bytes) return false;
    const uint8_t seed = pattern_seed(header);
    for (size_t byte_idx = 0; byte_idx < bytes.size(); ++byte_idx) {
        if (bytes[byte_idx] != static_cast<std::byte>(seed + byte_idx * 7 + (byte_idx >> 9))) {
            return false;
        }
    }
    return true;
}

// A dispatch frame of `payload_bytes` as u8 rows of 1 KiB (or one row when smaller).
inline proto::frame_header make_test_header(uint64_t step_id, uint64_t payload_bytes) {
    const uint32_t row_bytes = payload_bytes >= 1024 ? 1024 : static_cast<uint32_t>(payload_bytes);
    const uint32_t num_tokens =
        row_bytes == 0 ? 0 : static_cast<uint32_t>(payload_bytes / row_bytes);
    proto::frame_header header = proto::make_row_header(
        proto::frame_kind::dispatch, proto::wire_dtype::u8, num_tokens, row_bytes);
    header.step_id = step_id;
    header.layer = 3;
    header.micro_batch = 1;
    return header;
}

}  // namespace longcat::testing
