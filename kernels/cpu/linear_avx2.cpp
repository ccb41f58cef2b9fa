// Small-M linear (decode GEMV / small GEMM) with AVX2 + FMA (8 lanes, 16 ymm registers): the
// scheme of linear_avx512.cpp at half the width, with the same ISA-independent driver
// (linear_small_m.hpp: stream prefetch, row blocks in dynamic OpenMP chunks, grouped products).
// bf16 weights are widened exactly to fp32 and multiplied with fp32 activations by FMA.
//
// Widening: one 32-byte load takes 16 bf16 weights; a 16-bit left shift of each 32-bit lane
// gives the 8 even columns as exact fp32, masking off the low half gives the 8 odd ones: one
// integer op per 8 weights and no cross-lane shuffle. The activations are packed once per call
// into k-steps of 16 columns (bf16: even columns, then odd ones; f32: natural order),
// zero past `cols`; the k-step past the last full one reads the weights from a zero-padded copy.
//
// Tiles: 4 rows x 1 token for one token; 3 rows x 3 tokens
// otherwise: 9 accumulators, 3 widened weight vectors and one activation vector fit the 16
// registers (4 x 3, the tile before 2026-11-30, needed 17 and spilled). At 16 tokens on the
// bench preset's shapes (ops/bench/gemv --tokens 16, Zen 3, one run each, in this order, so only
// indicative on a VM whose speed drifts by 15 %) dense gate/up took 8.4 ms with 3 x 3, 9.6 with
// 3 x 4, 11.1 with 2 x 4, 10.0 with 4 x 3, 10.4 with 2 x 6, then 8.4 with 3 x 3 again. One token:
// 8 x 1 (AVX-512's tile) with the stream prefetch read dense down (rows of 16 KiB) at 0.88-0.90
// of the read sweep, 4 x 1 at 1.07-1.11, the other shapes alike within the drift (--tokens 1,
// 8 x 1 and 4 x 1 alternating, two runs each). Every output is one accumulator summed over k in the
// same order whatever the batch, so a token's result does not depend on the other tokens in the
// batch (bitwise).
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/cpu/isa.hpp"
#include "kernels/cpu/linear_small_m.hpp"

namespace longcat::kernels::cpu {
namespace {

inline float hsum(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// The two halves of a k-step of 16 columns (see tile).
inline __m256 lo8(const bf16_t* p) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), 16));
}
inline __m256 hi8(const bf16_t* p, __m256i hi) {
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), hi));
}
inline __m256 lo8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 hi8(const float* p, __m256i) { return _mm256_loadu_ps(p + 8); }

struct avx2 {
    template <class W>
    static constexpr int step = 16;

    template <class F>
    static void with_shape(int64_t m, F&& f) {
        if (m == 1)
            f.template operator()<4, 1>();
        else
            f.template operator()<3, 3>();
    }

    // One k-step of 16 columns: for bf16, 32 bytes of each row, widened into the even (lo)
    // and odd (hi) columns; for f32, 64 bytes, columns 0-7 (lo) and 8-15 (hi). The body is a
    // macro over how row r's weights are addressed (LC_ROW(r)): through a lambda GCC 12 kept
    // the accumulators on the stack (as in linear_avx512.cpp). One prefetch_step per 64 bytes.
    template <int R, int T, class W>
    static void tile(const W* w, int64_t cols, const float* xp, int64_t xs, float* y, int64_t ys,
                     prefetch_rows pf) {
        __m256 acc[T][R];
        for (int t = 0; t < T; ++t)
            for (int r = 0; r < R; ++r) acc[t][r] = _mm256_setzero_ps();
        const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
#define LC_STEP                                                                            \
    {                                                                                      \
        __m256 wv[R];                                                                      \
        for (int r = 0; r < R; ++r) wv[r] = lo8(LC_ROW(r));                                \
        for (int t = 0; t < T; ++t) {                                                      \
            const __m256 xv = _mm256_loadu_ps(xp + t * 16);                                \
            for (int r = 0; r < R; ++r) acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]); \
        }                                                                                  \
        for (int r = 0; r < R; ++r) wv[r] = hi8(LC_ROW(r), hi);                            \
        for (int t = 0; t < T; ++t) {                                                      \
            const __m256 xv = _mm256_loadu_ps(xp + t * 16 + 8);                            \
            for (int r = 0; r < R; ++r) acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]); \
        }                                                                                  \
    }
        int64_t k = 0;
        for (int64_t s = 0; k + 16 <= cols; k += 16, xp += xs, ++s) {
            if (sizeof(W) == 4 || (s & 1) == 0) prefetch_step(pf);
#define LC_ROW(r) (w + (r)*cols + k)
            LC_STEP
#undef LC_ROW
        }
        if (k < cols) {
            W pad[R][16] = {};
            for (int r = 0; r < R; ++r)
                std::memcpy(pad[r], w + r * cols + k, sizeof(W) * static_cast<size_t>(cols - k));
#define LC_ROW(r) (pad[r])
            LC_STEP
#undef LC_ROW
        }
#undef LC_STEP
        for (int t = 0; t < T; ++t)
            for (int r = 0; r < R; ++r) y[t * ys + r] = hsum(acc[t][r]);
    }

    // x [m, cols] into k-steps (see the top of the file); the packed copy is m * cols floats
    // against rows * cols weights, so plain scalar code.
    static void pack_x(const float* x, int64_t m, int64_t cols, bool bf16, float* xp) {
        const int64_t s = 16;
        const int64_t steps = (cols + s - 1) / s;
        for (int64_t t = 0; t < m; ++t) {
            const float* xt = x + t * cols;
            for (int64_t j = 0; j < steps; ++j) {
                float* d = xp + (j * m + t) * s;
                for (int64_t i = 0; i < s; ++i) {
                    // bf16: slot i < 8 holds column 2i of the step, slot 8 + i column 2i + 1.
                    const int64_t c = j * s + (bf16 ? (i < 8 ? 2 * i : 2 * (i - 8) + 1) : i);
                    d[i] = c < cols ? xt[c] : 0.0f;
                }
            }
        }
    }
};

}  // namespace

void linear_small_m_group_avx2(const small_m_product* products, int64_t count) {
    linear_small_m_group<avx2>(products, count);
}

void linear_small_m_avx2(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                         int64_t m, float* y) {
    linear_small_m<avx2>(w, type, rows, cols, x, m, y);
}

}  // namespace longcat::kernels::cpu
