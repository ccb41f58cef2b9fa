// Small-M linear with AVX2 + FMA (8 lanes): the same blocking as linear_avx512.cpp; bf16
// weights widened exactly to fp32; the column tail (cols % 8) is finished in scalar code.
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/isa.hpp"

namespace longcat::kernels::cpu {
namespace {

inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }

inline __m256 load8(const bf16_t* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline float widen(float v) { return v; }
inline float widen(bf16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline float hsum(__m256 v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

template <class W, int kRows, int kToks>
inline void block(const W* w, int64_t cols, const float* x, float* y, int64_t y_stride) {
    __m256 acc[kToks][kRows];
    for (int t = 0; t < kToks; ++t)
        for (int r = 0; r < kRows; ++r) acc[t][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= cols; k += 8) {
        __m256 wv[kRows];
        for (int r = 0; r < kRows; ++r) wv[r] = load8(w + r * cols + k);
        for (int t = 0; t < kToks; ++t) {
            const __m256 xv = _mm256_loadu_ps(x + t * cols + k);
            for (int r = 0; r < kRows; ++r) acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]);
        }
    }
    for (int t = 0; t < kToks; ++t)
        for (int r = 0; r < kRows; ++r) {
            float s = hsum(acc[t][r]);
            for (int64_t c = k; c < cols; ++c) s += widen(w[r * cols + c]) * x[t * cols + c];
            y[t * y_stride + r] = s;
        }
}

template <class W, int kRows>
inline void rows_block(const W* w, int64_t rows, int64_t cols, const float* x, int64_t m, float* y) {
    int64_t t = 0;
    for (; t + 3 <= m; t += 3) block<W, kRows, 3>(w, cols, x + t * cols, y + t * rows, rows);
    switch (m - t) {
        case 2: block<W, kRows, 2>(w, cols, x + t * cols, y + t * rows, rows); break;
        case 1: block<W, kRows, 1>(w, cols, x + t * cols, y + t * rows, rows); break;
        default: break;
    }
}

template <class W>
void run(const W* w, int64_t rows, int64_t cols, const float* x, int64_t m, float* y) {
    const int64_t num_blocks = (rows + 3) / 4;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < num_blocks; ++b) {
        const int64_t r0 = b * 4;
        if (r0 + 4 <= rows) {
            rows_block<W, 4>(w + r0 * cols, rows, cols, x, m, y + r0);
        } else {
            for (int64_t r = r0; r < rows; ++r) rows_block<W, 1>(w + r * cols, rows, cols, x, m, y + r);
        }
    }
}

}  // namespace

void linear_small_m_avx2(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                         int64_t m, float* y) {
    if (type == dtype::bf16)
        run(static_cast<const bf16_t*>(w), rows, cols, x, m, y);
    else
        run(static_cast<const float*>(w), rows, cols, x, m, y);
}

}  // namespace longcat::kernels::cpu
