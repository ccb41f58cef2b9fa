// Small-M linear (decode GEMV / small GEMM) with AVX-512.  bf16 weights are widened exactly
// to fp32 and multiplied with fp32 activations by FMA, so results equal the fp32 math up to
// summation order (no bf16 rounding of activations, unlike vdpbf16ps).
//
// Widening: one 64-byte load takes 32 bf16 weights; a 16-bit left shift of each 32-bit lane
// gives the 16 even columns as exact fp32, masking off the low half gives the 16 odd ones.
// That is one integer op per 16 weights (no vpmovzxwd shuffle), at the price of a column
// permutation that the activations undergo too: before the parallel loop, x is packed once
// per call (pack_x) into k-steps of 32 columns, even columns then odd ones, zero-padded past
// `cols`; fp32 weights use k-steps of 16 columns in natural order.  Within a k-step the m
// tokens' slices are adjacent, so a tile walks one activation pointer.
//
// Blocking: a tile is R weight rows x T tokens of zmm accumulators (6 x 4 for most batches,
// 4 x 6 for 5-6 tokens, 8 x 1 for one token); per k-step it loads R weight vectors (widened
// in registers) and T activation vectors for R*T FMAs.  The OpenMP loop runs over blocks of R
// rows; all token groups of a block run back to back, so the block's weights (R*cols*2 bytes)
// come from memory once per call and from L1/L2 for the later groups.  Every output is one
// accumulator summed over k in the same order whatever the batch, then reduced across lanes,
// so a token's result does not depend on the other tokens in the batch (bitwise).
// The packed copy of x (m * cols floats, rounded up to the k-step) lives in a thread_local
// buffer of the calling thread that only grows.
//
// The tiles and packing are here; row blocks, OpenMP chunks, grouped products and the prefetch
// streams are the ISA-independent driver in linear_small_m.hpp (shared with linear_avx2.cpp
// since 2026-11-30). Software prefetch into L2 (row_tile), bf16 and f32 weights alike, so that DRAM
// streams while the FMAs run: with one token group (m <= 4, or 5-6) each row is prefetched 4 KiB
// ahead (~3-5 % more decode tokens/s at batch 1 on the bench preset) along its stream (the same row
// of the following blocks; see prefetch_ahead); with several groups (m >= 7) the later groups
// prefetch the next block, which its first group would otherwise wait for. Until 2026-11-29 only
// bf16 tiles of 1-2 tokens prefetched (4 KiB ahead, also as the last group of a larger m); the
// change measured with a driver running a bench-preset batch-16 step's dense FFNs and experts, both
// variants alternating in one process, best of 16: 6-15 % less time per step. Until 2026-11-30 "4
// KiB ahead" was 4 KiB further in memory: with rows of 4-8 KiB (cols = 3072, most of the bench
// preset's bytes) that landed mostly in the next row of the same block, which the tile was already
// reading, and left the first 4 KiB of the block's other rows to the hardware prefetchers.
// Following the streams, ops/bench/gemv (old and new alternating, five runs each, the runs whose
// sweeps read 26-36 GB/s) gave dense gate/up 0.89-0.93 -> 0.93-1.00 of the read sweep, lm_head
// 0.92-0.95 -> 0.95-0.98, expert gate/up 0.70-0.75 -> 0.78-0.79; rows of 16 KiB and rows under 4
// KiB (whose prefetch addresses did not change) the same.
//
// Measured on the development VM (Zen 4, 2 threads, OMP_PROC_BIND=close, bf16 8192x3072 /
// 3072x8192 / 12288x3072, best of 3, a standalone driver against a double-precision reference):
// m = 16 90-94 G multiply-adds/s (the previous 4 rows x 4 tokens tile with vpmovzxwd widening,
// same run: 38-39); m = 4 58-72 (33-35); m = 1 39-52 GB/s (32-36).
#pragma GCC target("avx512f,avx512bw,avx512vl,fma")
#include <immintrin.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cpu/isa.hpp"
#include "kernels/cpu/linear_small_m.hpp"

namespace longcat::kernels::cpu {
namespace {

// Columns per k-step: 32 for bf16 (one 64-byte load = two fp32 vectors), 16 for f32.
template <class W>
constexpr int kStep = std::is_same_v<W, bf16_t> ? 32 : 16;

// Packed activations: for k-step s and token t, xp[(s * m + t) * kStep + j].  For bf16 the
// 32 columns of a step are stored even columns first, then odd ones, matching the order in
// which one 64-byte load of 32 bf16 weights widens into two fp32 vectors (shift / mask).
// Columns past `cols` are zero.
//
// The k-step body is a macro, used for the full steps and the masked last one: through a
// lambda (capturing acc by reference) GCC 12 kept the accumulators on the stack.

template <int R, int T>
inline void tile(const bf16_t* w, int64_t cols, const float* xp, int64_t xs, float* y, int64_t ys,
                 prefetch_rows pf) {
    __m512 acc[T][R];
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < R; ++r) acc[t][r] = _mm512_setzero_ps();
    const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
#define LC_STEP(LOADW)                                                                     \
    {                                                                                      \
        __m512 wv[R];                                                                      \
        for (int r = 0; r < R; ++r)                                                        \
            wv[r] = _mm512_castsi512_ps(_mm512_slli_epi32(LOADW(w + r * cols + k), 16));   \
        for (int t = 0; t < T; ++t) {                                                      \
            const __m512 xv = _mm512_loadu_ps(xp + t * 32);                                \
            for (int r = 0; r < R; ++r) acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]); \
        }                                                                                  \
        for (int r = 0; r < R; ++r)                                                        \
            wv[r] = _mm512_castsi512_ps(_mm512_and_si512(LOADW(w + r * cols + k), hi));    \
        for (int t = 0; t < T; ++t) {                                                      \
            const __m512 xv = _mm512_loadu_ps(xp + t * 32 + 16);                           \
            for (int r = 0; r < R; ++r) acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]); \
        }                                                                                  \
    }
    int64_t k = 0;
    for (; k + 32 <= cols; k += 32, xp += xs) {
        prefetch_step(pf);
#define LC_LOAD_FULL(p) _mm512_loadu_si512(p)
        LC_STEP(LC_LOAD_FULL)
#undef LC_LOAD_FULL
    }
    if (k < cols) {
        const __mmask32 mask = static_cast<__mmask32>((1ull << (cols - k)) - 1);
#define LC_LOAD_MASK(p) _mm512_maskz_loadu_epi16(mask, p)
        LC_STEP(LC_LOAD_MASK)
#undef LC_LOAD_MASK
    }
#undef LC_STEP
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < R; ++r) y[t * ys + r] = _mm512_reduce_add_ps(acc[t][r]);
}

template <int R, int T>
inline void tile(const float* w, int64_t cols, const float* xp, int64_t xs, float* y, int64_t ys,
                 prefetch_rows pf) {
    __m512 acc[T][R];
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < R; ++r) acc[t][r] = _mm512_setzero_ps();
#define LC_STEP(LOADW)                                                                     \
    {                                                                                      \
        __m512 wv[R];                                                                      \
        for (int r = 0; r < R; ++r) wv[r] = LOADW(w + r * cols + k);                       \
        for (int t = 0; t < T; ++t) {                                                      \
            const __m512 xv = _mm512_loadu_ps(xp + t * 16);                                \
            for (int r = 0; r < R; ++r) acc[t][r] = _mm512_fmadd_ps(wv[r], xv, acc[t][r]); \
        }                                                                                  \
    }
    int64_t k = 0;
    for (; k + 16 <= cols; k += 16, xp += xs) {
        prefetch_step(pf);
#define LC_LOAD_FULL(p) _mm512_loadu_ps(p)
        LC_STEP(LC_LOAD_FULL)
#undef LC_LOAD_FULL
    }
    if (k < cols) {
        const __mmask16 mask = static_cast<__mmask16>((1u << (cols - k)) - 1u);
#define LC_LOAD_MASK(p) _mm512_maskz_loadu_ps(mask, p)
        LC_STEP(LC_LOAD_MASK)
#undef LC_LOAD_MASK
    }
#undef LC_STEP
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < R; ++r) y[t * ys + r] = _mm512_reduce_add_ps(acc[t][r]);
}

// Packs x [m, cols] into the layout described above.
void pack_x(const float* x, int64_t m, int64_t cols, bool bf16, float* xp) {
    const int step = bf16 ? 32 : 16;
    const int64_t steps = (cols + step - 1) / step;
    const __m512i even =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int64_t t = 0; t < m; ++t) {
        const float* xt = x + t * cols;
        for (int64_t s = 0; s < steps; ++s) {
            const int64_t k = s * step;
            const int64_t n = cols - k;
            float* d = xp + (s * m + t) * step;
            const __m512 a = _mm512_maskz_loadu_ps(
                n >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << n) - 1u), xt + k);
            if (!bf16) {
                _mm512_storeu_ps(d, a);
                continue;
            }
            const int64_t n2 = n - 16;
            const __mmask16 mb = n2 >= 16  ? __mmask16(0xffff)
                                 : n2 <= 0 ? __mmask16(0)
                                           : static_cast<__mmask16>((1u << n2) - 1u);
            const __m512 b = _mm512_maskz_loadu_ps(mb, xt + k + 16);
            _mm512_storeu_ps(d, _mm512_permutex2var_ps(a, even, b));
            _mm512_storeu_ps(d + 16, _mm512_permutex2var_ps(a, odd, b));
        }
    }
}

// Tile shapes, measured on Zen 4 (32 zmm registers): 6 rows x 4 tokens (24 accumulators)
// for most batches; 4 x 6 when 5 or 6 tokens fit one group; 8 x 1 for a single token, where
// only memory bandwidth matters and more rows in flight help.
struct avx512 {
    template <class W>
    static constexpr int step = kStep<W>;
    template <class F>
    static void with_shape(int64_t m, F&& f) {
        if (m == 1)
            f.template operator()<8, 1>();
        else if (m == 5 || m == 6)
            f.template operator()<4, 6>();
        else
            f.template operator()<6, 4>();
    }
    template <int R, int T, class W>
    static void tile(const W* w, int64_t cols, const float* xp, int64_t xs, float* y, int64_t ys,
                     prefetch_rows pf) {
        cpu::tile<R, T>(w, cols, xp, xs, y, ys, pf);
    }
    static void pack_x(const float* x, int64_t m, int64_t cols, bool bf16, float* xp) {
        cpu::pack_x(x, m, cols, bf16, xp);
    }
};

}  // namespace

void linear_small_m_group_avx512(const small_m_product* products, int64_t count) {
    linear_small_m_group<avx512>(products, count);
}

void linear_small_m_avx512(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                           int64_t m, float* y) {
    linear_small_m<avx512>(w, type, rows, cols, x, m, y);
}

}  // namespace longcat::kernels::cpu
