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
// Tiles (until 2026-12-01, see below): 4 rows x 1 token for one token; 3 rows x 3 tokens
// otherwise: 9 accumulators, 3 widened weight vectors and one activation vector fit the 16
// registers (4 x 3, the tile before 2026-11-30, needed 17 and spilled). At 16 tokens on the
// bench preset's shapes (ops/bench/gemv --tokens 16, Zen 3, one run each, in this order, so only
// indicative on a VM whose speed drifts by 15 %) dense gate/up took 8.4 ms with 3 x 3, 9.6 with
// 3 x 4, 11.1 with 2 x 4, 10.0 with 4 x 3, 10.4 with 2 x 6, then 8.4 with 3 x 3 again. One token:
// 8 x 1 (AVX-512's tile) with the stream prefetch read dense down (rows of 16 KiB) at 0.88-0.90
// of the read sweep, 4 x 1 at 1.07-1.11, the other shapes alike within the drift (--tokens 1,
// 8 x 1 and 4 x 1 alternating, two runs each).
// Since 2026-12-01, by token count below the panel paths: 4 x 1 for one token, 3 x 3 for 2-3,
// 3 x 4 for 4 (12 accumulators, 3 weight vectors, the mask; the activations straight from
// memory into the FMAs; GCC 12 keeps one accumulator on the stack), 2 x 6 for 5-9 (12
// accumulators, no spills). In one process, 3 x 3 and
// the others in turns of 0.2 s (12 turns each, 2 threads, weights from DRAM, medians of the
// per-turn ratios against 3 x 3), 8192 x 3072: 4 tokens 3 x 4 1.27x / 2 x 6 1.17x, 5 tokens 2 x 6
// 1.06x (3 x 4 0.88x), 7 tokens 1.07x / 1.08x, 8 tokens 2 x 6 1.29x, 9 tokens 1.28x, 2-3 tokens
// 2 rows slower (0.85-0.89x); 4 tokens on 3072 x 8192 3 x 4 1.35x, expert 512 x 3072 1.34x,
// 3072 x 512 1.23x; 6 tokens 2 x 6 1.11-1.14x on expert and attention shapes. Each output is
// still one accumulator summed over k in the same order, whatever the tile.
//
// From outer_min (10) tokens on, the outer-product path of linear_small_m.hpp instead: panels of
// 16 rows x 128 columns transposed to fp32 (8 x 8 transposes of 32-bit words, then the shift and
// the mask split bf16 pairs), 16 rows x 6 tokens in registers (12 accumulators, 2 weight vectors,
// one broadcast activation), no horizontal sums. Its FMA loop runs near the FMA pipes' peak from
// L1 (one core, standalone loops: 16 x 6 5.2-6.3 FMA/ns over several runs, independent FMAs
// 5.9-6.1, the 3 x 3 tile 2.6-3.3); the transposes take about a fifth of the path's time (perf).
// ops/bench/gemv, 2 threads, three runs alternating with this path off: 16 tokens, dense gate/up
// 5.8-6.4 ms against 7.4-7.5, dense down 6.0-6.3 against 8.0-8.2, lm_head 22 against 25-28,
// attention and expert gate/up alike, expert down (512 columns: 4 panels a block) slower, 0.52
// against 0.43; 12 tokens, dense 4.5 against 5.7; 8 tokens, the row tiles faster on all but the
// dense matrices (hence outer_min). Each output of the row tiles is one accumulator summed over k
// in the same order whatever the batch, and so is the outer path's (see run_block_panels): a
// token's result does not depend on the other tokens of the call, only on which side of
// outer_min the call's count lies.
//
// From bcast_min (13; 14 until 2026-12-01) tokens on, the broadcast path (run_block_panels): blocks
// of 6 rows, each panel only widened (unpacking against zero, no transpose) into a row-major
// scratch, one broadcast weight per row and k against two vectors of all 16 token slots (12
// accumulators, zero slots past m). It sums each output exactly as the outer path does (the panel's
// columns in the unpack's slot order, which the outer path's transposes follow too), so crossing
// bcast_min changes no bit. One process, best of 8 matrices x 8 rounds alternating with the outer
// path (2 threads, weights from DRAM, 2026-11-30): 16 tokens, 8192 x 3072 5.2-5.6 ms against
// 5.5-5.8 (1.04-1.05x), 3072 x 8192 1.07-1.11x, 512 x 3072 1.09x, 32000 x 3072 (lm_head) 1.00x;
// 15 tokens 1.02-1.17x, 14 tokens 0.99-1.08x, 13 tokens no better (then, with widen; since
// 2026-12-01 full panels skip the scratch, below, and 13 tokens gain). Tried and not kept: 12 or 24
// rows a block sharing each panel's activations from L1 (slower), prefetching 4-5 panels ahead
// (slower), the k loop unrolled by 4 (slower), widening the next panel from inside the k loop
// (0.83-0.86x).
//
// Since 2026-12-01 a full bf16 panel of a full block skips the scratch (bcast_bf16): each
// weight comes from its row by a 16-bit broadcast load (vpbroadcastw) and one mask, the same
// products in the same order (the mask's register makes 16 with bcast's 15: GCC 12 keeps two
// accumulators on the stack, and it still measured faster). On this Zen 3 VM the kernel's speed
// flips between two levels within one process (about 40 and 65 G FLOP/s a thread at 16 tokens, 0.2
// s windows, while an FMA loop on the other core holds 90), so old and new ran in turns of 0.2 s in
// one process (a copy of both loops), 25 turns each, 2 threads, medians of the per-turn ratios:
// lm_head 1.14x, 8192 x 3072 1.08x, 3072 x 8192 1.11x, 768 x 3072 1.09x. Tried in the same way and
// not kept: the same with the 4 prefetches a row spread one every fourth k as bcast does
// (0.99-1.06x); 32-bit broadcasts of column pairs, shift for the even and mask for the odd column,
// 4 or 5 rows (0.83-1.22x: 5 rows spill); a 32-bit broadcast from 2 bytes before an odd column
// (0.80-0.82x). With it, bcast_min went from 14 to 13: in turns against the outer path (10 turns
// each, 2 threads), 13 tokens 1.15x on 8192 x 3072 (twice 1.14-1.15x), 1.18x on 3072 x 8192, 1.14x
// on 768 x 3072, 1.08x on 512 x 3072; at 10-12 tokens the two paths were even (0.94-1.10x), so the
// outer path keeps those. On a Zen 4 (2026-12-01, this kernel forced with LONGCAT_CPU_ISA=avx2, 24
// turns of 0.1 s each, 2 threads, weights from DRAM) the outer path is the faster one there: at
// 10 / 11 / 12 tokens it took 0.75 / 0.79 / 0.83 of the broadcast path's time on 8192 x 3072,
// 0.79-0.85 on 3072 x 4096, 0.80-0.87 on 1024 x 3072, 0.86 on 3072 x 512. So folding 10-12 tokens
// into the broadcast path, which would remove the outer path, would cost speed.
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include <algorithm>
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

// a[0, 16) += (lo, hi): a panel's sums into a block's accumulators.
inline void add16(float* a, __m256 lo, __m256 hi) {
    _mm256_storeu_ps(a, _mm256_add_ps(_mm256_loadu_ps(a), lo));
    _mm256_storeu_ps(a + 8, _mm256_add_ps(_mm256_loadu_ps(a + 8), hi));
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
        else if (m <= 3)
            f.template operator()<3, 3>();
        else if (m == 4)
            f.template operator()<3, 4>();
        else
            f.template operator()<2, 6>();
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

    // The outer-product path (linear_small_m.hpp, run_block_panels) from outer_min tokens on.
    static constexpr int64_t outer_min = 10;
    static constexpr int outer_rows = 16;
    static constexpr int outer_cols = 128;
    static constexpr int outer_tokens = 6;  // 12 accumulators, 2 weight vectors, 1 broadcast

    // 8 x 8 transpose of 32-bit lanes: o[j] lane i = r[i] lane j.
    static void transpose8(const __m256 (&r)[8], __m256 (&o)[8]) {
        __m256 t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
            u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
            u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
            u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
        }
        for (int j = 0; j < 4; ++j) {
            o[j] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
            o[j + 4] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x31);
        }
    }

    // Slots (see linear_small_m.hpp): a bf16 panel's full groups of 16 columns are widened by
    // unpacking each 128-bit half against zero (widen), which leaves columns 0-3, 8-11, 4-7,
    // 12-15: the middle quads swap; a last partial group keeps its order. An f32 panel keeps its
    // columns' order (slot_of).
    static int slot(int k, int kc) {
        const int q = k & 15;
        return (k | 15) < kc && q >= 4 && q < 12 ? k ^ 12 : k;
    }
    template <class W>
    static int slot_of(int k, int kc) {
        return sizeof(W) == 2 ? slot(k, kc) : k;
    }

    // 8 tokens x 8 columns at a time through transpose8 (token slots from m on take zeros), the
    // columns past a panel's last multiple of 8 one by one.
    static void pack_xt(const float* x, int64_t m, int64_t cols, bool bf16, float* xt) {
        static_assert(kMaxSmallM % 8 == 0);
        for (int64_t c0 = 0; c0 < cols; c0 += outer_cols) {
            const int kc = static_cast<int>(std::min<int64_t>(outer_cols, cols - c0));
            const int kv = kc / 8 * 8;
            for (int64_t t0 = 0; t0 < kMaxSmallM; t0 += 8) {
                for (int k = 0; k < kv; k += 8) {
                    __m256 r[8], o[8];
                    for (int i = 0; i < 8; ++i)
                        r[i] = t0 + i < m ? _mm256_loadu_ps(x + (t0 + i) * cols + c0 + k)
                                          : _mm256_setzero_ps();
                    transpose8(r, o);
                    for (int j = 0; j < 8; ++j) {
                        const int p = bf16 ? slot(k + j, kc) : k + j;
                        _mm256_storeu_ps(xt + (c0 + p) * kMaxSmallM + t0, o[j]);
                    }
                }
            }
            for (int k = kv; k < kc; ++k) {
                float* d = xt + (c0 + (bf16 ? slot(k, kc) : k)) * kMaxSmallM;
                for (int64_t t = 0; t < kMaxSmallM; ++t) d[t] = t < m ? x[t * cols + c0 + k] : 0.0f;
            }
        }
    }

    // Panel transpose (see linear_small_m.hpp). Full 16-row panels go 8 rows x 8 32-bit words
    // at a time: for bf16 a word is a pair of columns, split after the transpose by the shift
    // (even column) and the mask (odd column) and stored in the columns' slots; what is left
    // (fewer rows, a column tail) is scalar.
    template <class W>
    static void transpose(const W* w, int64_t ld, int n, int kc, float* s) {
        constexpr bool bf16 = sizeof(W) == 2;
        constexpr int cstep = bf16 ? 16 : 8;
        const int kv = n == outer_rows ? kc / cstep * cstep : 0;
        const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
        for (int g = 0; g < outer_rows; g += 8) {
            for (int c = 0; c < kv; c += cstep) {
                __m256 r[8], o[8];
                for (int i = 0; i < 8; ++i)
                    r[i] = _mm256_castsi256_ps(
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (g + i) * ld + c)));
                transpose8(r, o);
                for (int j = 0; j < 8; ++j) {
                    if constexpr (bf16) {
                        const __m256i v = _mm256_castps_si256(o[j]);
                        const int p = c + slot(2 * j, 16);  // slot(2j + 1) is p + 1
                        _mm256_store_ps(s + p * outer_rows + g,
                                        _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
                        _mm256_store_ps(s + (p + 1) * outer_rows + g,
                                        _mm256_castsi256_ps(_mm256_and_si256(v, hi)));
                    } else {
                        _mm256_store_ps(s + (c + j) * outer_rows + g, o[j]);
                    }
                }
            }
        }
        for (int k = kv; k < kc; ++k) {
            float* d = s + slot_of<W>(k, kc) * outer_rows;
            for (int i = 0; i < outer_rows; ++i) {
                float v = 0.0f;
                if (i < n) {
                    if constexpr (bf16)
                        v = bf16_to_f32(w[i * ld + k]);
                    else
                        v = w[i * ld + k];
                }
                d[i] = v;
            }
        }
    }

    template <int T>
    static void outer(const float* s, int kc, const float* xt, float* acc, const char* pf,
                      int64_t pf_stride, int pf_rows) {
        static_assert(outer_rows == 16 && outer_cols == 128, "the prefetch below assumes them");
        __m256 a0[T], a1[T];
        for (int t = 0; t < T; ++t) a0[t] = a1[t] = _mm256_setzero_ps();
        for (int k = 0; k < kc; ++k, s += outer_rows, xt += kMaxSmallM) {
            // 4 lines of row k / 8 at pf, one every other k: 16 rows of 256 bytes in 128 k.
            if ((k & 1) == 0 && (k >> 3) < pf_rows)
                _mm_prefetch(pf + (k >> 3) * pf_stride + ((k >> 1) & 3) * 64, _MM_HINT_T0);
            const __m256 w0 = _mm256_load_ps(s);
            const __m256 w1 = _mm256_load_ps(s + 8);
            for (int t = 0; t < T; ++t) {
                const __m256 xv = _mm256_broadcast_ss(xt + t);
                a0[t] = _mm256_fmadd_ps(w0, xv, a0[t]);
                a1[t] = _mm256_fmadd_ps(w1, xv, a1[t]);
            }
        }
        for (int t = 0; t < T; ++t) add16(acc + t * outer_rows, a0[t], a1[t]);
    }

    // The broadcast path (linear_small_m.hpp, run_block_panels) from bcast_min tokens on.
    static constexpr int64_t bcast_min = 13;
    static constexpr int bcast_rows = 6;  // 12 accumulators, 2 activation vectors, 1 broadcast

    template <class W>
    static void widen(const W* w, int64_t ld, int n, int kc, float* s) {
        const __m256i zero = _mm256_setzero_si256();
        for (int i = 0; i < bcast_rows; ++i) {
            float* d = s + i * outer_cols;
            if (i >= n) {
                std::memset(d, 0, sizeof(float) * static_cast<size_t>(kc));
                continue;
            }
            const W* r = w + i * ld;
            int k = 0;
            if constexpr (sizeof(W) == 2) {
                for (; k + 16 <= kc; k += 16) {
                    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + k));
                    _mm256_store_ps(d + k, _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v)));
                    _mm256_store_ps(d + k + 8, _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v)));
                }
                for (; k < kc; ++k) d[k] = bf16_to_f32(r[k]);
            } else {
                std::memcpy(d, r, sizeof(float) * static_cast<size_t>(kc));
            }
        }
    }

    static void bcast(const float* s, int kc, const float* xt, float* acc, const char* pf,
                      int64_t pf_stride, int pf_rows) {
        static_assert(kMaxSmallM == 16 && outer_cols == 128, "the loop below assumes them");
        constexpr int R = bcast_rows;
        __m256 a0[R], a1[R];
        for (int i = 0; i < R; ++i) a0[i] = a1[i] = _mm256_setzero_ps();
        for (int k = 0; k < kc; ++k, xt += kMaxSmallM) {
            // 4 lines of row k / 16 at pf, one every fourth k: up to 8 rows of 256 bytes.
            if ((k & 3) == 0 && (k >> 4) < pf_rows)
                _mm_prefetch(pf + (k >> 4) * pf_stride + ((k >> 2) & 3) * 64, _MM_HINT_T0);
            const __m256 x0 = _mm256_loadu_ps(xt);  // xt: a float's alignment
            const __m256 x1 = _mm256_loadu_ps(xt + 8);
            for (int i = 0; i < R; ++i) {
                const __m256 wv = _mm256_broadcast_ss(s + i * outer_cols + k);
                a0[i] = _mm256_fmadd_ps(wv, x0, a0[i]);
                a1[i] = _mm256_fmadd_ps(wv, x1, a1[i]);
            }
        }
        for (int i = 0; i < R; ++i) add16(acc + i * kMaxSmallM, a0[i], a1[i]);
    }

    // The broadcast path on a full panel (outer_cols columns) of a full block (bcast_rows rows)
    // of bf16 weights, read straight from the weight rows instead of widen's scratch: each
    // weight is broadcast from memory as 16 bits into every 16-bit half (vpbroadcastw) and the
    // low halves are masked off, which leaves its exact fp32 value in every lane. The columns go
    // in slot order (slot is its own inverse), so each output sums the same products in the same
    // order as widen + bcast, bit for bit. Prefetches as bcast, but the 4 lines of a row at once
    // at the start of each group of 16 columns (spread one every fourth k, as bcast does, this
    // path gained nothing: see the top of the file).
    static void bcast_bf16(const bf16_t* w, int64_t ld, const float* xt, float* acc, const char* pf,
                           int64_t pf_stride, int pf_rows) {
        static_assert(kMaxSmallM == 16 && outer_cols % 16 == 0, "the loop below assumes them");
        constexpr int R = bcast_rows;
        const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
        __m256 a0[R], a1[R];
        for (int i = 0; i < R; ++i) a0[i] = a1[i] = _mm256_setzero_ps();
        for (int g = 0; g < outer_cols; g += 16, xt += 16 * kMaxSmallM) {
            if ((g >> 4) < pf_rows)
                for (int line = 0; line < 4; ++line)
                    _mm_prefetch(pf + (g >> 4) * pf_stride + line * 64, _MM_HINT_T0);
#pragma GCC unroll 16
            for (int p = 0; p < 16; ++p) {
                const int c = g + slot(p, 16);
                const __m256 x0 = _mm256_loadu_ps(xt + p * kMaxSmallM);
                const __m256 x1 = _mm256_loadu_ps(xt + p * kMaxSmallM + 8);
                for (int i = 0; i < R; ++i) {
                    const auto bits = static_cast<short>(w[i * ld + c]);
                    const __m256 wv =
                        _mm256_castsi256_ps(_mm256_and_si256(_mm256_set1_epi16(bits), hi));
                    a0[i] = _mm256_fmadd_ps(wv, x0, a0[i]);
                    a1[i] = _mm256_fmadd_ps(wv, x1, a1[i]);
                }
            }
        }
        for (int i = 0; i < R; ++i) add16(acc + i * kMaxSmallM, a0[i], a1[i]);
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
