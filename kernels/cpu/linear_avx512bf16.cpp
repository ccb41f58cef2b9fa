// Small-M linear on bf16 weights with AVX512_BF16 (vdpbf16ps), without rounding activations to
// bf16: each activation is split into x = hi + lo (both bf16; |x - hi - lo| ≤ 2^-17·|x|), and
// every weight pair meets both halves.  bf16·bf16 products are exact in fp32, so the result is
// the fp32 dot product up to summation order and that 2^-17 split error.  One vdpbf16ps does 32
// multiply-adds where an FMA does 16, and the weights need no widening: this is the kernel
// for compute-bound decode batches.  f32 weights use the AVX-512 FMA kernel.
// Blocking: 4 rows × 4 tokens of accumulators over k-steps of 32.
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,fma")
#include <immintrin.h>

#include <vector>

#include "kernels/cpu/isa.hpp"

namespace longcat::kernels::cpu {
namespace {

inline __m512bh load32(const bf16_t* p, __mmask32 mask) {
    return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, p));
}

template <int kRows, int kToks>
inline void block(const bf16_t* w, int64_t cols, const bf16_t* xh, const bf16_t* xl, float* y,
                  int64_t y_stride) {
    __m512 acc[kToks][kRows];
    for (int t = 0; t < kToks; ++t)
        for (int r = 0; r < kRows; ++r) acc[t][r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < cols; k += 32) {
        const __mmask32 mask = cols - k >= 32 ? ~__mmask32{0} : static_cast<__mmask32>((1ull << (cols - k)) - 1);
        __m512bh wv[kRows];
        for (int r = 0; r < kRows; ++r) wv[r] = load32(w + r * cols + k, mask);
        for (int t = 0; t < kToks; ++t) {
            const __m512bh h = load32(xh + t * cols + k, mask);
            const __m512bh l = load32(xl + t * cols + k, mask);
            for (int r = 0; r < kRows; ++r) {
                acc[t][r] = _mm512_dpbf16_ps(acc[t][r], wv[r], h);
                acc[t][r] = _mm512_dpbf16_ps(acc[t][r], wv[r], l);
            }
        }
    }
    for (int t = 0; t < kToks; ++t)
        for (int r = 0; r < kRows; ++r) y[t * y_stride + r] = _mm512_reduce_add_ps(acc[t][r]);
}

template <int kRows>
inline void rows_block(const bf16_t* w, int64_t rows, int64_t cols, const bf16_t* xh,
                       const bf16_t* xl, int64_t m, float* y) {
    int64_t t = 0;
    for (; t + 4 <= m; t += 4) block<kRows, 4>(w, cols, xh + t * cols, xl + t * cols, y + t * rows, rows);
    switch (m - t) {
        case 3: block<kRows, 3>(w, cols, xh + t * cols, xl + t * cols, y + t * rows, rows); break;
        case 2: block<kRows, 2>(w, cols, xh + t * cols, xl + t * cols, y + t * rows, rows); break;
        case 1: block<kRows, 1>(w, cols, xh + t * cols, xl + t * cols, y + t * rows, rows); break;
        default: break;
    }
}

}  // namespace

void linear_small_m_avx512bf16(const void* w, dtype type, int64_t rows, int64_t cols,
                               const float* x, int64_t m, float* y) {
    if (type != dtype::bf16) {
        linear_small_m_avx512(w, type, rows, cols, x, m, y);
        return;
    }
    // Split the activations once: x = hi + lo.  (Finite activations only; an inf or NaN
    // propagates through hi as it would through an fp32 product.)
    std::vector<bf16_t> xh(static_cast<size_t>(m * cols)), xl(xh.size());
    for (int64_t i = 0; i < m * cols; ++i) {
        xh[i] = f32_to_bf16(x[i]);
        xl[i] = f32_to_bf16(x[i] - bf16_to_f32(xh[i]));
    }
    const auto* wd = static_cast<const bf16_t*>(w);
    const int64_t num_blocks = (rows + 3) / 4;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < num_blocks; ++b) {
        const int64_t r0 = b * 4;
        if (r0 + 4 <= rows) {
            rows_block<4>(wd + r0 * cols, rows, cols, xh.data(), xl.data(), m, y + r0);
        } else {
            for (int64_t r = r0; r < rows; ++r)
                rows_block<1>(wd + r * cols, rows, cols, xh.data(), xl.data(), m, y + r);
        }
    }
}

}  // namespace longcat::kernels::cpu
