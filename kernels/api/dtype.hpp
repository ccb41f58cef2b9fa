// Element types, devices and conversions shared by every kernel backend.
// bf16 is stored as its raw 16 bits; conversions round to nearest even (as torch does).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace longcat::kernels {

enum class dtype : uint8_t { f32, bf16, f16, f8_e4m3, i32, i64, u8 };
enum class device_kind : uint8_t { cpu, cuda };

constexpr size_t dtype_size(dtype t) {
    switch (t) {
        case dtype::f32: return 4;
        case dtype::bf16: return 2;
        case dtype::f16: return 2;
        case dtype::f8_e4m3: return 1;
        case dtype::i32: return 4;
        case dtype::i64: return 8;
        case dtype::u8: return 1;
    }
    return 0;
}

constexpr std::string_view dtype_name(dtype t) {
    switch (t) {
        case dtype::f32: return "f32";
        case dtype::bf16: return "bf16";
        case dtype::f16: return "f16";
        case dtype::f8_e4m3: return "f8_e4m3";
        case dtype::i32: return "i32";
        case dtype::i64: return "i64";
        case dtype::u8: return "u8";
    }
    return "?";
}

using bf16_t = uint16_t;

inline float bf16_to_f32(bf16_t v) {
    uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline bf16_t f32_to_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((bits >> 16) | 0x40);  // NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<bf16_t>(bits >> 16);
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = (h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal
            exp = 127 - 15 + 1;
            while ((man & 0x400u) == 0) {
                man <<= 1;
                --exp;
            }
            man &= 0x3ffu;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (man << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// float8_e4m3fn (OCP FP8): 1 sign, 4 exponent (bias 7), 3 mantissa; no infinities,
// 0x7f/0xff are NaN; max finite 448.
inline float f8_e4m3_to_f32(uint8_t v) {
    const float sign = (v & 0x80u) ? -1.0f : 1.0f;
    const int exp = (v >> 3) & 0xf;
    const int man = v & 0x7;
    if (exp == 0xf && man == 0x7) return std::nanf("");
    if (exp == 0) return sign * std::ldexp(static_cast<float>(man), -9);  // subnormal: man/8 * 2^-6
    return sign * std::ldexp(1.0f + static_cast<float>(man) / 8.0f, exp - 7);
}

// Round-to-nearest-even quantisation to e4m3fn with saturation to ±448 (what torch does for
// values in range; used by mkmodel to write FP8 checkpoints).
uint8_t f32_to_f8_e4m3(float f);

}  // namespace longcat::kernels
