#include "kernels/api/dtype.hpp"

#include <cmath>

namespace longcat::kernels {

uint8_t f32_to_f8_e4m3(float f) {
    if (std::isnan(f)) return 0x7f;
    const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
    const float a = std::fabs(f);
    // 448 is the largest finite value (0x7e); anything at or beyond it saturates, infinities too.
    if (a >= 448.0f) return sign | 0x7e;
    // Subnormals: multiples of 2^-9 below the smallest normal 2^-6. Rounding up to 8·2^-9 yields
    // code 0x08, which is exactly the smallest normal, so the encoding stays correct.
    if (a < 0.015625f) {
        const float q = std::nearbyint(a * 512.0f);  // exact scaling; nearbyint rounds half to even
        return sign | static_cast<uint8_t>(q);
    }
    int exp = 0;
    const float m = std::frexp(a, &exp);  // a = m · 2^exp, m in [0.5, 1)
    // a = (1 + man/8) · 2^(exp-1); the scaled mantissa fraction is exact in float.
    float man = std::nearbyint((m * 2.0f - 1.0f) * 8.0f);
    int e = exp - 1;
    if (man >= 8.0f) {
        man = 0.0f;
        ++e;
    }
    // e ≤ 8 here because a < 448; e + 7 ≥ 1 because a ≥ 2^-6.
    const int code = ((e + 7) << 3) | static_cast<int>(man);
    return sign | static_cast<uint8_t>(code > 0x7e ? 0x7e : code);
}

}  // namespace longcat::kernels
