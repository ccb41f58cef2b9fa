// Small-M linear (decode GEMV / small GEMM) with AVX-512.  bf16 weights are widened exactly
// to fp32 (a 16-bit shift) and multiplied with fp32 activations by FMA, so results equal the
// fp32 math up to summation order (no bf16 rounding of activations, unlike vdpbf16ps).
// Blocking: 4 weight rows × up to 4 tokens of accumulators; a 4-row block (4·cols·2 bytes)
// stays in L1/L2 while the token groups pass over it, so memory sees each row once per call.
#pragma GCC target("avx512f,avx512bw,avx512vl,fma")
#include <immintrin.h>

#include "kernels/cpu/isa.hpp"

namespace longcat::kernels::cpu {
namespace {

template <class W>
inline __m512 load16(const W* p, int64_t k, __mmask16 mask);

template <>
inline __m512 load16<float>(const float* p, int64_t k, __mmask16 mask) {
    return _mm512_maskz_loadu_ps(mask, p + k);
}

template <>
inline __m512 load16<bf16_t>(const bf16_t* p, int64_t k, __mmask16 mask) {
    const __m256i h = _mm256_maskz_loadu_epi16(mask, p + k);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <class W, int kRows, int kToks>
inline void block(const W* w, int64_t cols, const float* x, float* y, int64_t y_stride) {
    __m512 acc[kToks][kRows];
    for (int t = 0; t < kToks; ++t)
        for (int r = 0; r < kRows; ++r) acc[t][r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= cols; k += 16) {
        __m512 wv[kRows];
        for (int r = 0; r < kRows; ++r) wv[r] = load16<W>(w + r * cols, k, 0xffff);
        for (int t = 0; t < kToks; ++t) {
            const __m512 xv = _mm512_loadu_ps(x + t * cols + k);
            for (int r = 0; r < kRows; ++r) acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]);
        }
    }
    if (k < cols) {
        const __mmask16 mask = static_cast<__mmask16>((1u << (cols - k)) - 1u);
        __m512 wv[kRows];
        for (int r = 0; r < kRows; ++r) wv[r] = load16<W>(w + r * cols, k, mask);
        for (int t = 0; t < kToks; ++t) {
            const __m512 xv = _mm512_maskz_loadu_ps(mask, x + t * cols + k);
            for (int r = 0; r < kRows; ++r) acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]);
        }
    }
    for (int t = 0; t < kToks; ++t)
        for (int r = 0; r < kRows; ++r) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[t][r]);
}

template <class W, int kRows>
inline void rows_block(const W* w, int64_t rows, int64_t cols, const float* x, int64_t m, float* y) {
    int64_t t = 0;
    for (; t + 4 <= m; t += 4) block<W, kRows, 4>(w, cols, x + t * cols, y + t * rows, rows);
    switch (m - t) {
        case 3: block<W, kRows, 3>(w, cols, x + t * cols, y + t * rows, rows); break;
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

void linear_small_m_avx512(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                           int64_t m, float* y) {
    if (type == dtype::bf16)
        run(static_cast<const bf16_t*>(w), rows, cols, x, m, y);
    else
        run(static_cast<const float*>(w), rows, cols, x, m, y);
}

}  // namespace longcat::kernels::cpu
