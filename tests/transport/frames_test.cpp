// proto/frames: header round trip, the exact wire bytes, every malformed case (a named error,
// never a crash), and the hello payload.
#include "proto/frames.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>

#include "proto/version.hpp"

namespace longcat::proto {
namespace {

frame_header sample_header() {
    frame_header header = make_row_header(frame_kind::dispatch, wire_dtype::bf16, 3, 7168, 16);
    header.step_id = 0x0102030405060708ull;
    header.request_id = 0x1112131415161718ull;
    header.layer = 27;
    header.micro_batch = 2;
    header.flags = kFrameFlagLast;
    header.first_position = 4096;
    header.sequence = 99;
    return header;
}

frame_error decode_error(std::span<const std::byte> bytes, const frame_limits& limits = {}) {
    auto decoded = decode_frame_header(bytes, limits);
    EXPECT_FALSE(decoded.has_value());
    if (decoded.has_value()) return frame_error::truncated;
    EXPECT_NE(decoded.error().message.find(to_string(decoded.error().code)), std::string::npos)
        << decoded.error().message;
    return decoded.error().code;
}

frame_error decode_error(const frame_header& header, const frame_limits& limits = {}) {
    const frame_header_bytes bytes = encode_frame_header(header);
    return decode_error(std::span<const std::byte>(bytes), limits);
}

TEST(Frames, RowHeaderArithmetic) {
    const frame_header header =
        make_row_header(frame_kind::dispatch, wire_dtype::bf16, 3, 7168, 16);
    EXPECT_EQ(header.row_bytes, 7168u * 2 + 16);
    EXPECT_EQ(header.payload_bytes, 3ull * (7168 * 2 + 16));
    EXPECT_EQ(header.magic, kFrameMagic);
    EXPECT_EQ(header.protocol_version, kProtocolVersion);
}

TEST(Frames, RoundTrip) {
    const frame_header header = sample_header();
    const frame_header_bytes bytes = encode_frame_header(header);
    auto decoded = decode_frame_header(bytes, {});
    ASSERT_TRUE(decoded.has_value()) << decoded.error().message;
    EXPECT_EQ(*decoded, header);
}

TEST(Frames, RoundTripEveryKindAndDtype) {
    for (frame_kind kind :
         {frame_kind::dispatch, frame_kind::combine, frame_kind::kv, frame_kind::collective}) {
        for (wire_dtype dtype :
             {wire_dtype::none, wire_dtype::f32, wire_dtype::bf16, wire_dtype::f16,
              wire_dtype::f8_e4m3, wire_dtype::i32, wire_dtype::i64, wire_dtype::u8}) {
            const uint32_t elems = dtype == wire_dtype::none ? 0 : 5;
            frame_header header = make_row_header(kind, dtype, 4, elems, 8);
            header.step_id = 12;
            auto decoded = decode_frame_header(encode_frame_header(header), {});
            ASSERT_TRUE(decoded.has_value())
                << to_string(kind) << "/" << to_string(dtype) << ": " << decoded.error().message;
            EXPECT_EQ(*decoded, header);
        }
    }
}

TEST(Frames, ZeroTokenFrameIsValid) {
    frame_header header = make_row_header(frame_kind::combine, wire_dtype::f32, 0, 7168);
    EXPECT_EQ(header.payload_bytes, 0u);
    EXPECT_TRUE(decode_frame_header(encode_frame_header(header), {}).has_value());
}

TEST(Frames, WireBytesAreLittleEndianAtTheDocumentedOffsets) {
    const frame_header header = sample_header();
    const frame_header_bytes bytes = encode_frame_header(header);
    auto byte_at = [&](size_t offset) { return std::to_integer<unsigned>(bytes[offset]); };
    EXPECT_EQ(std::memcmp(bytes.data(), "LCAT", 4), 0);
    EXPECT_EQ(byte_at(4), kProtocolVersion & 0xffu);
    EXPECT_EQ(byte_at(6), static_cast<unsigned>(frame_kind::dispatch));
    EXPECT_EQ(byte_at(7), static_cast<unsigned>(wire_dtype::bf16));
    EXPECT_EQ(byte_at(8), 0x08u);  // step_id, least significant byte first
    EXPECT_EQ(byte_at(15), 0x01u);
    EXPECT_EQ(byte_at(16), 0x18u);  // request_id
    EXPECT_EQ(byte_at(24), 27u);    // layer
    EXPECT_EQ(byte_at(28), 2u);     // micro_batch
    EXPECT_EQ(byte_at(30), kFrameFlagLast);
    EXPECT_EQ(byte_at(32), 3u);                        // num_tokens
    EXPECT_EQ(byte_at(44) | byte_at(45) << 8, 4096u);  // first_position
    EXPECT_EQ(byte_at(48), 99u);                       // sequence
    const uint64_t payload = header.payload_bytes;
    EXPECT_EQ(byte_at(56), payload & 0xffu);
    EXPECT_EQ(byte_at(57), (payload >> 8) & 0xffu);
    // The in-memory struct has the same layout on this (little-endian) host.
    EXPECT_EQ(std::memcmp(bytes.data(), &header, kFrameHeaderBytes), 0);
}

TEST(Frames, Truncated) {
    const frame_header_bytes bytes = encode_frame_header(sample_header());
    for (size_t size : {size_t{0}, size_t{1}, size_t{8}, kFrameHeaderBytes - 1}) {
        EXPECT_EQ(decode_error(std::span<const std::byte>(bytes).first(size)),
                  frame_error::truncated)
            << size;
    }
}

TEST(Frames, HeaderTooLong) {
    std::vector<std::byte> bytes(kFrameHeaderBytes + 1);
    const frame_header_bytes encoded = encode_frame_header(sample_header());
    std::memcpy(bytes.data(), encoded.data(), encoded.size());
    EXPECT_EQ(decode_error(bytes), frame_error::header_too_long);
}

TEST(Frames, BadMagic) {
    frame_header header = sample_header();
    header.magic = 0x12345678;
    EXPECT_EQ(decode_error(header), frame_error::bad_magic);
}

TEST(Frames, UnknownVersion) {
    frame_header header = sample_header();
    header.protocol_version = kProtocolVersion + 1;
    EXPECT_EQ(decode_error(header), frame_error::version_mismatch);
    auto decoded = decode_frame_header(encode_frame_header(header), {});
    ASSERT_FALSE(decoded.has_value());
    EXPECT_NE(decoded.error().message.find(std::to_string(kProtocolVersion + 1)),
              std::string::npos);
}

TEST(Frames, HandshakeAcceptedInAnyVersion) {
    frame_header header = make_handshake_header(kProtocolVersion + 5, 40);
    auto decoded = decode_frame_header(encode_frame_header(header), {});
    ASSERT_TRUE(decoded.has_value()) << decoded.error().message;
    EXPECT_EQ(decoded->protocol_version, kProtocolVersion + 5);
}

TEST(Frames, PrefillDoneRowRoundTripsLittleEndian) {
    const prefill_done_row row{-3, (uint64_t{1} << 40) + 5};
    const auto bytes = encode_prefill_done(row);
    EXPECT_EQ(std::to_integer<int>(bytes[0]), 0xfd);  // -3 as a little-endian i32
    EXPECT_EQ(std::to_integer<int>(bytes[3]), 0xff);
    EXPECT_EQ(std::to_integer<int>(bytes[8]), 5);
    EXPECT_EQ(std::to_integer<int>(bytes[13]), 1);  // bit 40
    auto back = decode_prefill_done(bytes);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->first_token, -3);
    EXPECT_EQ(back->tokens_generated, (uint64_t{1} << 40) + 5);
    EXPECT_FALSE(decode_prefill_done(std::span<const std::byte>(bytes).first(15)).has_value());
    // As a frame: one row of dtype none passes the row-kind checks.
    frame_header header = make_row_header(frame_kind::prefill_done, wire_dtype::none, 1, 0, kPrefillDoneRowBytes);
    EXPECT_FALSE(validate_frame_header(header, {}).has_value());
}

TEST(Frames, UnknownKind) {
    for (uint8_t code : {uint8_t{0}, uint8_t{7}, uint8_t{200}, uint8_t{255}}) {
        frame_header header = sample_header();
        header.kind = static_cast<frame_kind>(code);
        EXPECT_EQ(decode_error(header), frame_error::unknown_kind) << int{code};
    }
}

TEST(Frames, UnknownDtype) {
    frame_header header = sample_header();
    header.dtype = static_cast<wire_dtype>(99);
    EXPECT_EQ(decode_error(header), frame_error::unknown_dtype);
}

TEST(Frames, UnknownFlags) {
    frame_header header = sample_header();
    header.flags = 0x8000;
    EXPECT_EQ(decode_error(header), frame_error::unknown_flags);
}

TEST(Frames, NonzeroReserved) {
    frame_header header = sample_header();
    header.reserved = 1;
    EXPECT_EQ(decode_error(header), frame_error::nonzero_reserved);
}

TEST(Frames, OversizedBeyondConfiguredMax) {
    const frame_header header = make_row_header(frame_kind::dispatch, wire_dtype::u8, 2048, 1024);
    frame_limits limits;
    limits.max_payload_bytes = 1 << 20;
    EXPECT_EQ(decode_error(header, limits), frame_error::oversized);
    limits.max_payload_bytes = 2 << 20;
    EXPECT_TRUE(decode_frame_header(encode_frame_header(header), limits).has_value());
}

TEST(Frames, OversizedHandshake) {
    EXPECT_EQ(decode_error(make_handshake_header(kProtocolVersion, kMaxHandshakePayloadBytes + 1)),
              frame_error::oversized);
}

TEST(Frames, LengthInconsistentWithTokensTimesRowBytes) {
    frame_header header = sample_header();
    header.payload_bytes += 1;
    EXPECT_EQ(decode_error(header), frame_error::length_mismatch);
    header = sample_header();
    header.num_tokens = 0xffffffffu;  // u32 × u32 never overflows u64: plain mismatch
    header.row_bytes = 0xffffffffu;
    header.row_elems = 0;
    EXPECT_EQ(decode_error(header), frame_error::length_mismatch);
}

TEST(Frames, RowValuesMustFitTheRow) {
    frame_header header = sample_header();
    header.row_elems = header.row_bytes;  // bf16: twice as many bytes as the row has
    EXPECT_EQ(decode_error(header), frame_error::bad_row_layout);
    header = make_row_header(frame_kind::dispatch, wire_dtype::none, 1, 0, 8);
    header.row_elems = 1;
    EXPECT_EQ(decode_error(header), frame_error::bad_row_layout);
    header = make_handshake_header(kProtocolVersion, 30);
    header.num_tokens = 1;
    EXPECT_EQ(decode_error(header), frame_error::bad_row_layout);
}

TEST(Frames, PayloadSizeCheck) {
    const frame_header header = sample_header();
    EXPECT_FALSE(check_payload_size(header, header.payload_bytes).has_value());
    auto failure = check_payload_size(header, header.payload_bytes - 1);
    ASSERT_TRUE(failure.has_value());
    EXPECT_EQ(failure->code, frame_error::payload_size_mismatch);
}

// Random headers: a named error or a header equal to the bytes, never a crash. Half the rounds
// get past magic, version, kind, dtype, flags and reserved, so that the layout and length checks
// are reached; a quarter are made consistent (payload_bytes = num_tokens × row_bytes, values that
// fit their rows) and must be accepted, equal to what was sent.
TEST(Frames, RandomHeadersAreRefusedByNameOrDecodedExactly) {
    std::mt19937_64 rng(7);
    const frame_kind row_kinds[] = {frame_kind::dispatch, frame_kind::combine, frame_kind::kv,
                                    frame_kind::collective, frame_kind::prefill_done};
    std::map<frame_error, int> refused;
    int accepted = 0, consistent = 0;
    for (int round = 0; round < 20000; ++round) {
        frame_header header;
        frame_header_bytes bytes{};
        for (auto& b : bytes) b = static_cast<std::byte>(rng());
        std::memcpy(&header, bytes.data(), sizeof header);  // same layout (frames.cpp asserts it)
        if (round % 2 == 0) {
            header.magic = kFrameMagic;
            header.protocol_version = kProtocolVersion;
            header.kind = row_kinds[rng() % 5];
            header.dtype = static_cast<wire_dtype>(rng() % 8);
            header.flags = static_cast<uint16_t>(rng() & kKnownFrameFlags);
            header.reserved = 0;
            header.row_elems %= 4096;
            header.row_bytes %= 65536;
            header.num_tokens %= 256;
            header.payload_bytes %= uint64_t{1} << 24;
        }
        if (round % 4 == 0) {
            header.row_elems = header.dtype == wire_dtype::none ? 0 : header.row_elems;
            header.row_bytes = static_cast<uint32_t>(
                header.row_elems * wire_dtype_size(header.dtype) + rng() % 32);
            header.payload_bytes = uint64_t{header.num_tokens} * header.row_bytes;
            ++consistent;
        }
        bytes = encode_frame_header(header);
        auto decoded = decode_frame_header(bytes, {});
        if (decoded) {
            ++accepted;
            EXPECT_EQ(*decoded, header);
        } else {
            ++refused[decoded.error().code];
            EXPECT_EQ(decoded.error().message.rfind(to_string(decoded.error().code), 0), 0u)
                << decoded.error().message;
            EXPECT_NE(round % 4, 0) << "a consistent header refused: " << decoded.error().message;
        }
    }
    EXPECT_EQ(accepted, consistent);  // the random ones are all refused
    for (const frame_error code :
         {frame_error::bad_magic, frame_error::bad_row_layout, frame_error::length_mismatch})
        EXPECT_GT(refused[code], 100) << to_string(code);
}

// Every single-bit corruption of a valid dispatch header: the field it lands in decides the
// outcome. Identity fields (step, request, layer, micro-batch, position, sequence) decode to
// the corrupted value; the checked ones are refused with their error (or, where the new value
// is valid too, decode to it).
TEST(Frames, EverySingleBitCorruptionIsRefusedByItsFieldsError) {
    const frame_header good_header = sample_header();
    const frame_header_bytes good = encode_frame_header(good_header);
    using set = std::vector<frame_error>;
    for (size_t offset = 0; offset < kFrameHeaderBytes; ++offset) {
        bool may_decode = false;
        set allowed;
        if (offset < 4) {
            allowed = {frame_error::bad_magic};
        } else if (offset < 6) {
            allowed = {frame_error::version_mismatch};
        } else if (offset == 6) {
            allowed = {frame_error::unknown_kind};
            may_decode = true;  // → another row kind (no single bit makes it a handshake)
        } else if (offset == 7) {
            allowed = {frame_error::unknown_dtype, frame_error::bad_row_layout};
            may_decode = true;  // → a dtype of the same size
        } else if (offset < 30 || (offset >= 44 && offset < 52)) {
            may_decode = true;  // identity fields: anything goes
        } else if (offset < 32) {
            allowed = {frame_error::unknown_flags};
            may_decode = true;  // clearing the known bit
        } else if (offset < 36) {
            allowed = {frame_error::length_mismatch};
        } else if (offset < 40) {
            allowed = {frame_error::bad_row_layout};
            may_decode = true;  // fewer values still fit the row
        } else if (offset < 44) {
            allowed = {frame_error::bad_row_layout, frame_error::length_mismatch};
        } else if (offset < 56) {
            allowed = {frame_error::nonzero_reserved};
        } else {
            allowed = {frame_error::length_mismatch, frame_error::oversized};
        }
        for (int bit = 0; bit < 8; ++bit) {
            frame_header_bytes bytes = good;
            bytes[offset] ^= static_cast<std::byte>(1 << bit);
            frame_header corrupted;
            std::memcpy(&corrupted, bytes.data(), sizeof corrupted);
            auto decoded = decode_frame_header(bytes, {});
            SCOPED_TRACE("offset " + std::to_string(offset) + " bit " + std::to_string(bit));
            if (decoded) {
                EXPECT_TRUE(may_decode) << "accepted";
                EXPECT_EQ(*decoded, corrupted);
            } else {
                EXPECT_NE(std::find(allowed.begin(), allowed.end(), decoded.error().code),
                          allowed.end())
                    << decoded.error().message;
            }
        }
    }
}

// A hello of a newer protocol may carry flags and a reserved field this side does not know
// (frames.hpp: only those may change): its header is still read, so that the versions can refuse
// each other by name. Row kinds with them are refused.
TEST(Frames, HandshakeHeaderWithNewFlagsAndReservedIsRead) {
    frame_header header = make_handshake_header(kProtocolVersion + 1, 100);
    header.flags = 0x8001;
    header.reserved = 7;
    auto decoded = decode_frame_header(encode_frame_header(header), {});
    ASSERT_TRUE(decoded.has_value()) << decoded.error().message;
    EXPECT_EQ(decoded->protocol_version, kProtocolVersion + 1);
    frame_header row = sample_header();
    row.reserved = 7;
    EXPECT_EQ(decode_error(row), frame_error::nonzero_reserved);
}

// -- handshake ---------------------------------------------------------------------------------

TEST(Handshake, RoundTrip) {
    handshake_hello hello;
    hello.status = handshake_status::refused;
    hello.versions = {3, {1, 13, 1}};
    hello.name = "experts-3";
    hello.address = "ucx://127.0.0.1:4200";
    hello.reason = "protocol version mismatch";
    const std::vector<std::byte> bytes = encode_handshake(hello);
    EXPECT_EQ(bytes.size(), kHandshakeFixedBytes + hello.name.size() + hello.address.size() +
                                hello.reason.size());
    auto decoded = decode_handshake(bytes);
    ASSERT_TRUE(decoded.has_value()) << decoded.error().message;
    EXPECT_EQ(*decoded, hello);
}

TEST(Handshake, LongStringsAreCut) {
    handshake_hello hello;
    hello.name = std::string(5000, 'n');
    auto decoded = decode_handshake(encode_handshake(hello));
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(decoded->name.size(), kMaxHandshakeStringBytes);
    EXPECT_LE(encode_handshake(hello).size(), kMaxHandshakePayloadBytes);
}

TEST(Handshake, Malformed) {
    handshake_hello hello;
    hello.name = "a";
    std::vector<std::byte> bytes = encode_handshake(hello);
    auto expect_bad = [](std::span<const std::byte> b) {
        auto decoded = decode_handshake(b);
        ASSERT_FALSE(decoded.has_value());
        EXPECT_EQ(decoded.error().code, frame_error::bad_handshake);
    };
    expect_bad(std::span<const std::byte>(bytes).first(kHandshakeFixedBytes - 1));
    expect_bad(std::span<const std::byte>(bytes).first(bytes.size() - 1));  // lengths disagree
    std::vector<std::byte> longer = bytes;
    longer.push_back(std::byte{0});
    expect_bad(longer);
    std::vector<std::byte> bad_status = bytes;
    bad_status[16] = std::byte{9};
    expect_bad(bad_status);
    std::vector<std::byte> huge_name = bytes;
    huge_name[18] = std::byte{0xff};
    huge_name[19] = std::byte{0xff};
    expect_bad(huge_name);
}

// -- versions ----------------------------------------------------------------------------------

TEST(Versions, LinkedUcxIsReported) {
    const ucx_version ucx = linked_ucx_version();
    EXPECT_GE(ucx.major, 1u);
    EXPECT_EQ(to_string(ucx), linked_ucx_version_string().substr(0, to_string(ucx).size()));
}

TEST(Versions, MismatchNamesBothSides) {
    const wire_versions ours{1, {1, 13, 1}};
    EXPECT_FALSE(describe_version_mismatch("a", ours, "b", ours).has_value());
    EXPECT_FALSE(describe_version_mismatch("a", ours, "b", {1, {1, 13, 0}}).has_value());
    auto protocol = describe_version_mismatch("attention-0", ours, "experts-3", {2, {1, 13, 1}});
    ASSERT_TRUE(protocol.has_value());
    EXPECT_NE(protocol->find("attention-0 speaks protocol 1 with UCX 1.13.1"), std::string::npos)
        << *protocol;
    EXPECT_NE(protocol->find("experts-3 speaks protocol 2 with UCX 1.13.1"), std::string::npos)
        << *protocol;
    auto ucx = describe_version_mismatch("a", ours, "b", {1, {1, 14, 0}});
    ASSERT_TRUE(ucx.has_value());
    EXPECT_NE(ucx->find("UCX version mismatch"), std::string::npos);
    EXPECT_NE(ucx->find("1.14.0"), std::string::npos);
}

}  // namespace
}  // namespace longcat::proto
