#include "proto/frames.hpp"

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <type_traits>

namespace longcat::proto {

static_assert(std::is_trivially_copyable_v<frame_header>);
static_assert(sizeof(frame_header) == kFrameHeaderBytes);
static_assert(offsetof(frame_header, protocol_version) == 4);
static_assert(offsetof(frame_header, kind) == 6);
static_assert(offsetof(frame_header, dtype) == 7);
static_assert(offsetof(frame_header, step_id) == 8);
static_assert(offsetof(frame_header, request_id) == 16);
static_assert(offsetof(frame_header, layer) == 24);
static_assert(offsetof(frame_header, micro_batch) == 28);
static_assert(offsetof(frame_header, flags) == 30);
static_assert(offsetof(frame_header, num_tokens) == 32);
static_assert(offsetof(frame_header, row_elems) == 36);
static_assert(offsetof(frame_header, row_bytes) == 40);
static_assert(offsetof(frame_header, first_position) == 44);
static_assert(offsetof(frame_header, sequence) == 48);
static_assert(offsetof(frame_header, reserved) == 52);
static_assert(offsetof(frame_header, payload_bytes) == 56);

namespace {

template <class T>
void store_le(std::byte* out, T value) {
    static_assert(std::is_unsigned_v<T>);
    for (size_t byte_idx = 0; byte_idx < sizeof(T); ++byte_idx) {
        out[byte_idx] = static_cast<std::byte>((value >> (8 * byte_idx)) & 0xffu);
    }
}

template <class T>
T load_le(const std::byte* in) {
    static_assert(std::is_unsigned_v<T>);
    T value = 0;
    for (size_t byte_idx = 0; byte_idx < sizeof(T); ++byte_idx) {
        value |= static_cast<T>(std::to_integer<uint8_t>(in[byte_idx])) << (8 * byte_idx);
    }
    return value;
}

frame_failure fail(frame_error code, std::string detail) {
    return {code, std::string(to_string(code)) + ": " + detail};
}

bool known_kind(uint8_t code) {
    return code >= static_cast<uint8_t>(frame_kind::handshake) &&
           code <= static_cast<uint8_t>(frame_kind::prefill_done);
}

bool known_dtype(uint8_t code) { return code <= static_cast<uint8_t>(wire_dtype::u8); }

}  // namespace

std::string_view to_string(frame_kind kind) {
    switch (kind) {
        case frame_kind::handshake: return "handshake";
        case frame_kind::dispatch: return "dispatch";
        case frame_kind::combine: return "combine";
        case frame_kind::kv: return "kv";
        case frame_kind::collective: return "collective";
        case frame_kind::prefill_done: return "prefill_done";
    }
    return "unknown";
}

std::string_view to_string(wire_dtype dtype) {
    switch (dtype) {
        case wire_dtype::none: return "none";
        case wire_dtype::f32: return "f32";
        case wire_dtype::bf16: return "bf16";
        case wire_dtype::f16: return "f16";
        case wire_dtype::f8_e4m3: return "f8_e4m3";
        case wire_dtype::i32: return "i32";
        case wire_dtype::i64: return "i64";
        case wire_dtype::u8: return "u8";
    }
    return "unknown";
}

size_t wire_dtype_size(wire_dtype dtype) {
    switch (dtype) {
        case wire_dtype::none: return 0;
        case wire_dtype::f32: return 4;
        case wire_dtype::bf16: return 2;
        case wire_dtype::f16: return 2;
        case wire_dtype::f8_e4m3: return 1;
        case wire_dtype::i32: return 4;
        case wire_dtype::i64: return 8;
        case wire_dtype::u8: return 1;
    }
    return 0;
}

bool is_row_kind(frame_kind kind) {
    switch (kind) {
        case frame_kind::handshake: return false;
        case frame_kind::dispatch:
        case frame_kind::combine:
        case frame_kind::kv:
        case frame_kind::collective:
        case frame_kind::prefill_done: return true;
    }
    return false;
}

std::string_view to_string(frame_error error) {
    switch (error) {
        case frame_error::truncated: return "truncated";
        case frame_error::header_too_long: return "header_too_long";
        case frame_error::bad_magic: return "bad_magic";
        case frame_error::version_mismatch: return "version_mismatch";
        case frame_error::unknown_kind: return "unknown_kind";
        case frame_error::unknown_dtype: return "unknown_dtype";
        case frame_error::unknown_flags: return "unknown_flags";
        case frame_error::nonzero_reserved: return "nonzero_reserved";
        case frame_error::oversized: return "oversized";
        case frame_error::bad_row_layout: return "bad_row_layout";
        case frame_error::length_mismatch: return "length_mismatch";
        case frame_error::payload_size_mismatch: return "payload_size_mismatch";
        case frame_error::bad_handshake: return "bad_handshake";
    }
    return "unknown";
}

std::string_view to_string(handshake_status status) {
    switch (status) {
        case handshake_status::request: return "request";
        case handshake_status::accepted: return "accepted";
        case handshake_status::refused: return "refused";
    }
    return "unknown";
}

frame_header make_row_header(frame_kind kind, wire_dtype dtype, uint32_t num_tokens,
                             uint32_t row_elems, uint32_t row_meta_bytes) {
    frame_header header;
    header.kind = kind;
    header.dtype = dtype;
    header.num_tokens = num_tokens;
    header.row_elems = row_elems;
    header.row_bytes = static_cast<uint32_t>(row_elems * wire_dtype_size(dtype) + row_meta_bytes);
    header.payload_bytes = uint64_t{num_tokens} * header.row_bytes;
    return header;
}

frame_header_bytes encode_frame_header(const frame_header& header) {
    frame_header_bytes out{};
    std::byte* p = out.data();
    store_le<uint32_t>(p + 0, header.magic);
    store_le<uint16_t>(p + 4, header.protocol_version);
    store_le<uint8_t>(p + 6, static_cast<uint8_t>(header.kind));
    store_le<uint8_t>(p + 7, static_cast<uint8_t>(header.dtype));
    store_le<uint64_t>(p + 8, header.step_id);
    store_le<uint64_t>(p + 16, header.request_id);
    store_le<uint32_t>(p + 24, header.layer);
    store_le<uint16_t>(p + 28, header.micro_batch);
    store_le<uint16_t>(p + 30, header.flags);
    store_le<uint32_t>(p + 32, header.num_tokens);
    store_le<uint32_t>(p + 36, header.row_elems);
    store_le<uint32_t>(p + 40, header.row_bytes);
    store_le<uint32_t>(p + 44, header.first_position);
    store_le<uint32_t>(p + 48, header.sequence);
    store_le<uint32_t>(p + 52, header.reserved);
    store_le<uint64_t>(p + 56, header.payload_bytes);
    return out;
}

std::optional<frame_failure> validate_frame_header(const frame_header& header,
                                                   const frame_limits& limits) {
    if (header.magic != kFrameMagic) {
        char text[64];
        std::snprintf(text, sizeof(text), "magic 0x%08x is not 0x%08x (\"LCAT\")", header.magic,
                      kFrameMagic);
        return fail(frame_error::bad_magic, text);
    }
    const auto kind_code = static_cast<uint8_t>(header.kind);
    const bool handshake = kind_code == static_cast<uint8_t>(frame_kind::handshake);
    if (!handshake && header.protocol_version != limits.protocol_version) {
        return fail(frame_error::version_mismatch,
                    "frame speaks protocol " + std::to_string(header.protocol_version) +
                        ", this side speaks " + std::to_string(limits.protocol_version));
    }
    if (!known_kind(kind_code)) {
        return fail(frame_error::unknown_kind, "kind code " + std::to_string(kind_code));
    }
    const auto dtype_code = static_cast<uint8_t>(header.dtype);
    if (!known_dtype(dtype_code)) {
        return fail(frame_error::unknown_dtype, "dtype code " + std::to_string(dtype_code));
    }
    // A newer protocol may give meaning to `reserved` and new flag bits (frames.hpp): a hello
    // carrying them is still read, so that the versions refuse each other by name.
    if (!handshake && (header.flags & ~kKnownFrameFlags) != 0) {
        return fail(frame_error::unknown_flags, "flags " + std::to_string(header.flags));
    }
    if (!handshake && header.reserved != 0) {
        return fail(frame_error::nonzero_reserved, "reserved " + std::to_string(header.reserved));
    }
    if (handshake) {
        if (header.payload_bytes > kMaxHandshakePayloadBytes) {
            return fail(frame_error::oversized, "handshake payload_bytes " +
                                                    std::to_string(header.payload_bytes) + " > " +
                                                    std::to_string(kMaxHandshakePayloadBytes));
        }
        if (header.dtype != wire_dtype::none || header.num_tokens != 0 || header.row_elems != 0 ||
            header.row_bytes != 0) {
            return fail(frame_error::bad_row_layout, "handshake frame with token rows");
        }
        return std::nullopt;
    }
    if (header.payload_bytes > limits.max_payload_bytes) {
        return fail(frame_error::oversized, "payload_bytes " +
                                                std::to_string(header.payload_bytes) + " > max " +
                                                std::to_string(limits.max_payload_bytes));
    }
    const uint64_t value_bytes = uint64_t{header.row_elems} * wire_dtype_size(header.dtype);
    if (value_bytes > header.row_bytes ||
        (header.dtype == wire_dtype::none && header.row_elems != 0)) {
        return fail(frame_error::bad_row_layout, "row_elems " + std::to_string(header.row_elems) +
                                                     " of " + std::string(to_string(header.dtype)) +
                                                     " do not fit row_bytes " +
                                                     std::to_string(header.row_bytes));
    }
    // u32 × u32 fits in u64: no overflow.
    const uint64_t rows_bytes = uint64_t{header.num_tokens} * header.row_bytes;
    if (rows_bytes != header.payload_bytes) {
        return fail(frame_error::length_mismatch,
                    "payload_bytes " + std::to_string(header.payload_bytes) + " != num_tokens " +
                        std::to_string(header.num_tokens) + " × row_bytes " +
                        std::to_string(header.row_bytes));
    }
    return std::nullopt;
}

expected<frame_header, frame_failure> decode_frame_header(std::span<const std::byte> bytes,
                                                          const frame_limits& limits) {
    if (bytes.size() < kFrameHeaderBytes) {
        return unexpected(fail(frame_error::truncated, "header of " + std::to_string(bytes.size()) +
                                                           " bytes < " +
                                                           std::to_string(kFrameHeaderBytes)));
    }
    if (bytes.size() > kFrameHeaderBytes) {
        return unexpected(fail(frame_error::header_too_long,
                               "header of " + std::to_string(bytes.size()) + " bytes > " +
                                   std::to_string(kFrameHeaderBytes)));
    }
    const std::byte* p = bytes.data();
    frame_header header;
    header.magic = load_le<uint32_t>(p + 0);
    header.protocol_version = load_le<uint16_t>(p + 4);
    header.kind = static_cast<frame_kind>(load_le<uint8_t>(p + 6));
    header.dtype = static_cast<wire_dtype>(load_le<uint8_t>(p + 7));
    header.step_id = load_le<uint64_t>(p + 8);
    header.request_id = load_le<uint64_t>(p + 16);
    header.layer = load_le<uint32_t>(p + 24);
    header.micro_batch = load_le<uint16_t>(p + 28);
    header.flags = load_le<uint16_t>(p + 30);
    header.num_tokens = load_le<uint32_t>(p + 32);
    header.row_elems = load_le<uint32_t>(p + 36);
    header.row_bytes = load_le<uint32_t>(p + 40);
    header.first_position = load_le<uint32_t>(p + 44);
    header.sequence = load_le<uint32_t>(p + 48);
    header.reserved = load_le<uint32_t>(p + 52);
    header.payload_bytes = load_le<uint64_t>(p + 56);
    if (auto failure = validate_frame_header(header, limits)) return unexpected(*failure);
    return header;
}

std::optional<frame_failure> check_payload_size(const frame_header& header, uint64_t actual_bytes) {
    if (actual_bytes == header.payload_bytes) return std::nullopt;
    return fail(frame_error::payload_size_mismatch,
                "header says " + std::to_string(header.payload_bytes) + " payload bytes, " +
                    std::to_string(actual_bytes) + " arrived");
}

// -- handshake ---------------------------------------------------------------------------------

std::vector<std::byte> encode_handshake(const handshake_hello& hello) {
    auto clip = [](const std::string& text) {
        return std::string_view(text).substr(0, kMaxHandshakeStringBytes);
    };
    const std::string_view name = clip(hello.name);
    const std::string_view address = clip(hello.address);
    const std::string_view reason = clip(hello.reason);
    std::vector<std::byte> out(kHandshakeFixedBytes + name.size() + address.size() + reason.size());
    std::byte* p = out.data();
    store_le<uint16_t>(p + 0, hello.versions.protocol);
    store_le<uint16_t>(p + 2, 0);
    store_le<uint32_t>(p + 4, hello.versions.ucx.major);
    store_le<uint32_t>(p + 8, hello.versions.ucx.minor);
    store_le<uint32_t>(p + 12, hello.versions.ucx.release);
    store_le<uint8_t>(p + 16, static_cast<uint8_t>(hello.status));
    store_le<uint8_t>(p + 17, 0);
    store_le<uint16_t>(p + 18, static_cast<uint16_t>(name.size()));
    store_le<uint16_t>(p + 20, static_cast<uint16_t>(address.size()));
    store_le<uint16_t>(p + 22, static_cast<uint16_t>(reason.size()));
    size_t offset = kHandshakeFixedBytes;
    for (std::string_view text : {name, address, reason}) {
        if (!text.empty()) std::memcpy(p + offset, text.data(), text.size());
        offset += text.size();
    }
    return out;
}

expected<handshake_hello, frame_failure> decode_handshake(std::span<const std::byte> payload) {
    if (payload.size() < kHandshakeFixedBytes) {
        return unexpected(fail(frame_error::bad_handshake,
                               "hello of " + std::to_string(payload.size()) + " bytes < " +
                                   std::to_string(kHandshakeFixedBytes)));
    }
    const std::byte* p = payload.data();
    handshake_hello hello;
    hello.versions.protocol = load_le<uint16_t>(p + 0);
    hello.versions.ucx.major = load_le<uint32_t>(p + 4);
    hello.versions.ucx.minor = load_le<uint32_t>(p + 8);
    hello.versions.ucx.release = load_le<uint32_t>(p + 12);
    const uint8_t status = load_le<uint8_t>(p + 16);
    if (status > static_cast<uint8_t>(handshake_status::refused)) {
        return unexpected(
            fail(frame_error::bad_handshake, "hello status code " + std::to_string(status)));
    }
    hello.status = static_cast<handshake_status>(status);
    const size_t name_bytes = load_le<uint16_t>(p + 18);
    const size_t address_bytes = load_le<uint16_t>(p + 20);
    const size_t reason_bytes = load_le<uint16_t>(p + 22);
    if (name_bytes > kMaxHandshakeStringBytes || address_bytes > kMaxHandshakeStringBytes ||
        reason_bytes > kMaxHandshakeStringBytes) {
        return unexpected(
            fail(frame_error::bad_handshake,
                 "hello string longer than " + std::to_string(kMaxHandshakeStringBytes)));
    }
    const size_t total = kHandshakeFixedBytes + name_bytes + address_bytes + reason_bytes;
    if (total != payload.size()) {
        return unexpected(fail(frame_error::bad_handshake,
                               "hello of " + std::to_string(payload.size()) +
                                   " bytes, its lengths add up to " + std::to_string(total)));
    }
    const char* text = reinterpret_cast<const char*>(p + kHandshakeFixedBytes);
    hello.name.assign(text, name_bytes);
    hello.address.assign(text + name_bytes, address_bytes);
    hello.reason.assign(text + name_bytes + address_bytes, reason_bytes);
    return hello;
}

frame_header make_handshake_header(uint16_t protocol_version, uint64_t payload_bytes) {
    frame_header header;
    header.protocol_version = protocol_version;
    header.kind = frame_kind::handshake;
    header.payload_bytes = payload_bytes;
    return header;
}

std::array<std::byte, kPrefillDoneRowBytes> encode_prefill_done(const prefill_done_row& row) {
    std::array<std::byte, kPrefillDoneRowBytes> out{};
    const uint32_t token = static_cast<uint32_t>(row.first_token);
    for (int idx = 0; idx < 4; ++idx) out[idx] = static_cast<std::byte>((token >> (8 * idx)) & 0xffu);
    for (int idx = 0; idx < 8; ++idx)
        out[8 + idx] = static_cast<std::byte>((row.tokens_generated >> (8 * idx)) & 0xffu);
    return out;
}

std::optional<prefill_done_row> decode_prefill_done(std::span<const std::byte> bytes) {
    if (bytes.size() != kPrefillDoneRowBytes) return std::nullopt;
    uint32_t token = 0;
    uint64_t generated = 0;
    for (int idx = 0; idx < 4; ++idx) token |= uint32_t{std::to_integer<uint8_t>(bytes[idx])} << (8 * idx);
    for (int idx = 0; idx < 8; ++idx)
        generated |= uint64_t{std::to_integer<uint8_t>(bytes[8 + idx])} << (8 * idx);
    return prefill_done_row{static_cast<int32_t>(token), generated};
}

}  // namespace longcat::proto
