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
// Software prefetch into L2 (row_tile), bf16 and f32 weights alike, so that DRAM streams while
// the FMAs run: with one token group (m <= 4, or 5-6) each row is prefetched 4 KiB ahead (~3-5 %
// more decode tokens/s at batch 1 on the bench preset) along its stream (the same row of the
// following blocks; see prefetch_ahead); with several groups (m >= 7) the later
// groups prefetch the next block, which its first group would otherwise wait for. Until
// 2026-11-29 only bf16 tiles of 1-2 tokens prefetched (4 KiB ahead, also as the last group of a
// larger m); the change measured with a driver running a bench-preset batch-16 step's dense FFNs
// and experts, both variants alternating in one process, best of 16: 6-15 % less time per step.
// Until 2026-11-30 "4 KiB ahead" was 4 KiB further in memory: with rows of 4-8 KiB (cols = 3072,
// most of the bench preset's bytes) that landed mostly in the next row of the same block, which
// the tile was already reading, and left the first 4 KiB of the block's other rows to the
// hardware prefetchers. Following the streams, ops/bench/gemv (old and new alternating, five
// runs each, the runs whose sweeps read 26-36 GB/s) gave dense gate/up 0.89-0.93 -> 0.93-1.00 of
// the read sweep, lm_head 0.92-0.95 -> 0.95-0.98, expert gate/up 0.70-0.75 -> 0.78-0.79; rows of
// 16 KiB and rows under 4 KiB (whose prefetch addresses did not change) the same.
//
// Measured on the development VM (Zen 4, 2 threads, OMP_PROC_BIND=close, bf16 8192x3072 /
// 3072x8192 / 12288x3072, best of 3, a standalone driver against a double-precision reference):
// m = 16 90-94 G multiply-adds/s (the previous 4 rows x 4 tokens tile with vpmovzxwd widening,
// same run: 38-39); m = 4 58-72 (33-35); m = 1 39-52 GB/s (32-36).
#pragma GCC target("avx512f,avx512bw,avx512vl,fma")
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/isa.hpp"

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

constexpr int kPrefetchBytes = 4096;

// How far ahead a single token group prefetches: each of the tile's R rows is followed as one
// stream that continues into the same row of the next blocks (row r of block b, then row r of
// block b + 1, ...), which is what the following tiles read; the prefetches run this many bytes
// ahead along that stream: kPrefetchBytes, or two rows when rows are shorter than that.
inline int64_t prefetch_ahead(int64_t row_bytes) {
    return row_bytes >= kPrefetchBytes ? kPrefetchBytes : 2 * row_bytes;
}

// What a tile prefetches: each k-step, the 64 bytes at base + i * stride + offset for i < rows
// (a k-step of bf16 or f32 weights is 64 bytes of a row), then offset moves on by 64; once it
// passes row_bytes it wraps and base moves on by jump (a stream reaching the end of a row goes
// on in the same row of the next block). Nothing when rows is 0, nothing at or past limit. An
// address as an integer: "ahead" reaches past the end of a matrix's last rows, where pointer
// arithmetic would be undefined; a prefetch of any address is harmless.
struct prefetch_rows {
    uintptr_t base = 0;
    int64_t stride = 0;  // bytes from one prefetched row to the next
    int rows = 0;
    int64_t offset = 0;               // bytes into each prefetched row at this k-step
    int64_t row_bytes = 0;            // past this offset the prefetches move on to ...
    int64_t jump = 0;                 // ... base + jump, offset - row_bytes
    uintptr_t limit = ~uintptr_t{0};  // nothing at or past this address
};

inline void prefetch_step(prefetch_rows& pf) {
    for (int i = 0; i < pf.rows; ++i) {
        const uintptr_t a = pf.base + static_cast<uintptr_t>(i * pf.stride + pf.offset);
        if (a < pf.limit) _mm_prefetch(reinterpret_cast<const char*>(a), _MM_HINT_T1);
    }
    pf.offset += 64;
    if (pf.offset >= pf.row_bytes) {
        pf.offset -= pf.row_bytes;
        pf.base += static_cast<uintptr_t>(pf.jump);
    }
}

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

// The last token group, of n < N tokens.
template <class W, int R, int N>
inline void last_group(int64_t n, const W* w, int64_t rows, int64_t cols, const float* xp,
                       int64_t xs, float* y, const prefetch_rows& pf) {
    if constexpr (N > 0) {
        if (n == N)
            tile<R, N>(w, cols, xp, xs, y, rows, pf);
        else
            last_group<W, R, N - 1>(n, w, rows, cols, xp, xs, y, pf);
    }
}

// R rows against all m tokens, TM tokens at a time (the last group may be smaller). `next` is
// the next block (the R rows after these) when the caller has one, else null.
// Prefetch: one group (memory-bound) prefetches each row's stream prefetch_ahead bytes ahead,
// so that more DRAM reads are in flight than the hardware prefetchers start on their own, and
// nothing at or past `limit` (the end of the chunk of blocks this thread took: the next chunk
// may be another thread's). With several groups the
// first reads the block from DRAM (or L2) and the later ones from L2; those later groups share
// the next block's rows among them (group g takes rows g-1, g-1+later, ...), so that its DRAM
// reads overlap their FMAs and are spread evenly over them.
template <class W, int R, int TM>
inline void row_tile(const W* w, int64_t rows, int64_t cols, const float* xp, int64_t m, float* y,
                     const W* next, uintptr_t limit) {
    const int64_t xs = m * kStep<W>;
    const int64_t groups = (m + TM - 1) / TM;
    const int64_t later = groups - 1;
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t t = g * TM;
        prefetch_rows pf;
        const int64_t row_bytes = cols * static_cast<int64_t>(sizeof(W));
        if (groups == 1 && row_bytes > 0) {  // no columns: nothing to read (nor to divide by)
            const int64_t ahead = prefetch_ahead(row_bytes);
            const int64_t wraps = ahead / row_bytes;
            pf = {reinterpret_cast<uintptr_t>(w) + static_cast<uintptr_t>(wraps * R * row_bytes),
                  row_bytes,
                  R,
                  ahead - wraps * row_bytes,
                  row_bytes,
                  R * row_bytes,
                  limit};
        } else if (g > 0 && next && g - 1 < R) {
            pf = {reinterpret_cast<uintptr_t>(next + (g - 1) * cols),
                  later * row_bytes,
                  static_cast<int>((R - (g - 1) + later - 1) / later),
                  0,
                  std::numeric_limits<int64_t>::max(),
                  0};
        }
        if (t + TM <= m)
            tile<R, TM>(w, cols, xp + t * kStep<W>, xs, y + t * rows, rows, pf);
        else
            last_group<W, R, TM - 1>(m - t, w, rows, cols, xp + t * kStep<W>, xs, y + t * rows, pf);
    }
}

// Block b (rows [b·R, b·R + R)) of one product; a last partial block runs row by row. The
// calling thread's chunk of blocks ends before block b_end.
template <class W, int R, int TM>
inline void run_block(const W* w, int64_t rows, int64_t cols, const float* xp, int64_t m, float* y,
                      int64_t b, int64_t b_end) {
    const int64_t r0 = b * R;
    const uintptr_t limit = reinterpret_cast<uintptr_t>(w + std::min(rows, b_end * R) * cols);
    if (r0 + R <= rows) {
        const W* next = r0 + 2 * R <= rows ? w + (r0 + R) * cols : nullptr;
        row_tile<W, R, TM>(w + r0 * cols, rows, cols, xp, m, y + r0, next, limit);
    } else {
        for (int64_t r = r0; r < rows; ++r)
            row_tile<W, 1, TM>(w + r * cols, rows, cols, xp, m, y + r, nullptr, limit);
    }
}

// Tile shapes, measured on Zen 4 (32 zmm registers): 6 rows x 4 tokens (24 accumulators)
// for most batches; 4 x 6 when 5 or 6 tokens fit one group; 8 x 1 for a single token, where
// only memory bandwidth matters and more rows in flight help.
constexpr int64_t block_rows(int64_t m) { return m == 1 ? 8 : (m == 5 || m == 6) ? 4 : 6; }

template <class W>
inline void run_block(const W* w, int64_t rows, int64_t cols, const float* xp, int64_t m, float* y,
                      int64_t b, int64_t b_end) {
    if (m == 1)
        run_block<W, 8, 1>(w, rows, cols, xp, m, y, b, b_end);
    else if (m == 5 || m == 6)
        run_block<W, 4, 6>(w, rows, cols, xp, m, y, b, b_end);
    else
        run_block<W, 6, 4>(w, rows, cols, xp, m, y, b, b_end);
}

// Blocks per OpenMP chunk: about 256 KiB of weights (a few microseconds of streaming). The
// loops hand out chunks dynamically: with passive waiting, the other threads take tens of
// microseconds to wake up for each parallel region, and the thread that starts the region works
// through the chunks meanwhile instead of waiting for its static share to be taken.
int64_t chunk_blocks(int64_t block_bytes) {
    return std::max<int64_t>(1, (int64_t{256} << 10) / std::max<int64_t>(1, block_bytes));
}

template <class W>
void run(const W* w, int64_t rows, int64_t cols, const float* xp, int64_t m, float* y) {
    const int64_t num_blocks = (rows + block_rows(m) - 1) / block_rows(m);
    const int64_t chunk = chunk_blocks(block_rows(m) * cols * static_cast<int64_t>(sizeof(W)));
#pragma omp parallel for schedule(dynamic, chunk)
    for (int64_t b = 0; b < num_blocks; ++b)
        run_block(w, rows, cols, xp, m, y, b, std::min(num_blocks, (b / chunk + 1) * chunk));
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

}  // namespace

void linear_small_m_group_avx512(const small_m_product* products, int64_t count) {
    // Every product's activations are packed before any output is written, so one product's y
    // may alias another's x. The blocks of all products form one OpenMP loop (chunks sized by
    // the first product): a block computes exactly what it computes in linear_small_m_avx512
    // (same tile, same packed x), whichever thread takes it.
    std::vector<int64_t> first_block(static_cast<size_t>(count + 1), 0);
    std::vector<size_t> x_offset(static_cast<size_t>(count), 0);
    size_t need = 0;
    for (int64_t i = 0; i < count; ++i) {
        const small_m_product& p = products[i];
        const int64_t step = p.type == dtype::bf16 ? 32 : 16;
        x_offset[i] = need;
        need += static_cast<size_t>(p.m * ((p.cols + step - 1) / step) * step);
        first_block[i + 1] = first_block[i] + (p.rows + block_rows(p.m) - 1) / block_rows(p.m);
    }
    thread_local std::vector<float> buf;
    if (buf.size() < need) buf.resize(need);
    for (int64_t i = 0; i < count; ++i) {
        const small_m_product& p = products[i];
        pack_x(p.x, p.m, p.cols, p.type == dtype::bf16, buf.data() + x_offset[i]);
    }
    const float* packed = buf.data();
    const int64_t total = first_block[count];
    const int64_t chunk = count == 0
                              ? 1
                              : chunk_blocks(block_rows(products[0].m) * products[0].cols *
                                             static_cast<int64_t>(dtype_size(products[0].type)));
#pragma omp parallel for schedule(dynamic, chunk)
    for (int64_t b = 0; b < total; ++b) {
        const auto i = static_cast<int64_t>(
            std::upper_bound(first_block.begin(), first_block.end(), b) - first_block.begin() - 1);
        const small_m_product& p = products[i];
        const float* xp = packed + x_offset[i];
        const int64_t end = std::min(first_block[i + 1], (b / chunk + 1) * chunk) - first_block[i];
        if (p.type == dtype::bf16)
            run_block(static_cast<const bf16_t*>(p.w), p.rows, p.cols, xp, p.m, p.y,
                      b - first_block[i], end);
        else
            run_block(static_cast<const float*>(p.w), p.rows, p.cols, xp, p.m, p.y,
                      b - first_block[i], end);
    }
}

void linear_small_m_avx512(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                           int64_t m, float* y) {
    const bool bf16 = type == dtype::bf16;
    const int64_t step = bf16 ? 32 : 16;
    const size_t need = static_cast<size_t>(m * ((cols + step - 1) / step) * step);
    thread_local std::vector<float> buf;
    if (buf.size() < need) buf.resize(need);
    pack_x(x, m, cols, bf16, buf.data());
    if (bf16)
        run(static_cast<const bf16_t*>(w), rows, cols, buf.data(), m, y);
    else
        run(static_cast<const float*>(w), rows, cols, buf.data(), m, y);
}

}  // namespace longcat::kernels::cpu
