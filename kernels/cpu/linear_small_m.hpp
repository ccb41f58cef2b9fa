// The ISA-independent half of the small-M linear kernels (linear_avx512.cpp, linear_avx2.cpp):
// software prefetch along row streams, row tiles over token groups, OpenMP chunks of row blocks,
// and several products in one parallel loop. Each ISA file supplies a traits struct (see
// `small_m_isa` below) with its tiles and activation packing, and includes this header after
// its `#pragma GCC target`: everything here sits in an anonymous namespace, so each ISA gets
// its own copy compiled for it (an inline function shared by the two files could leave the
// linker keeping the AVX-512 copy for a machine that has only AVX2).
//
// Prefetch: with one token group (memory-bound) each of a tile's R rows is followed as one
// stream that continues into the same row of the next blocks (row r of block b, then row r of
// block b + 1, ...), which is what the following tiles read; the prefetches run
// prefetch_ahead(row_bytes) ahead along that stream, so that more DRAM reads are in flight than
// the hardware prefetchers start on their own, and stop at the end of the chunk of blocks this
// thread took (the next chunk may be another thread's). With several groups the first reads the
// block from DRAM (or L2) and the later ones from L2; those later groups share the next block's
// rows among them (group g takes rows g-1, g-1+later, ...), so that its DRAM reads overlap their
// FMAs and are spread evenly over them.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/isa.hpp"

namespace longcat::kernels::cpu {
namespace {

// A traits struct `Isa` provides:
//   template <class W> static constexpr int step;  columns per k-step of W (bf16_t or float)
//   template <class F> static void with_shape(int64_t m, F&& f);
//       calls f.template operator()<R, TM>() with R rows per block and TM tokens per group
//       for m tokens (block_rows below reads R from it)
//   template <int R, int T> static void tile(const W* w, int64_t cols, const float* xp,
//       int64_t xs, float* y, int64_t ys, prefetch_rows pf);
//       R rows x T tokens: y[t * ys + r] for the rows at w (stride cols) and the packed
//       activations at xp (k-step s of token t at xp + s * xs + t * step<W>); calls
//       prefetch_step(pf) once per 64 bytes of a row
//   static void pack_x(const float* x, int64_t m, int64_t cols, bool bf16, float* xp);
//       x [m, cols] into k-steps: for step s and token t, xp[(s * m + t) * step + j], zero past
//       cols (the order of columns within a step is the ISA's)
// and may provide an outer-product path for m >= outer_min tokens (see run_block_panels):
//   static constexpr int64_t outer_min;  fewest tokens that take it
//   static constexpr int outer_rows, outer_cols, outer_tokens;  rows per block (16), columns
//       per panel, tokens per register tile
//   static int slot(int k, int kc);  where column k of a bf16 panel of kc columns sits in the
//       panel's k order (a permutation of [0, kc): the order the widening instructions leave;
//       f32 panels keep the columns' order)
//   static void pack_xt(const float* x, int64_t m, int64_t cols, bool bf16, float* xt);
//       x [m, cols] transposed: xt[(c0 + slot_of<W>(k, kc)) * kMaxSmallM + t] = x[t, c0 + k] for
//       the panel at column c0 (kc = min(outer_cols, cols - c0); slot_of is slot for bf16, k for
//       f32), zero for t >= m
//   template <class W> static void transpose(const W* w, int64_t ld, int n, int kc, float* s);
//       rows [0, n) x columns [0, kc) of W (row stride ld) into
//       s[slot_of<W>(k, kc) * outer_rows + i] as exact fp32, zero for the rows from n on
//       (n <= outer_rows, kc <= outer_cols)
//   template <int T> static void outer(const float* s, int kc, const float* xt, float* acc,
//       const char* pf, int64_t pf_stride, int pf_rows);
//       acc[t * outer_rows + i] += Σ_{p < kc} s[p * outer_rows + i] · xt[p * kMaxSmallM + t],
//       t < T, summed over p in order from zero, then added; meanwhile prefetches the 4 lines at
//       pf + r * pf_stride for r < pf_rows (a full panel of bf16 rows, kc = outer_cols = 128)
// and, with it, a broadcast path for m >= bcast_min (see run_block_panels):
//   static constexpr int64_t bcast_min;  static constexpr int bcast_rows;
//   template <class W> static void widen(const W* w, int64_t ld, int n, int kc, float* s);
//       rows [0, n) x columns [0, kc) into s[i * outer_cols + slot_of<W>(k, kc)] as exact fp32,
//       zero for the rows from n on (n <= bcast_rows)
//   static void bcast(const float* s, int kc, const float* xt, float* acc, const char* pf,
//       int64_t pf_stride, int pf_rows);
//       acc[i * kMaxSmallM + t] += Σ_{p < kc} s[i * outer_cols + p] · xt[p * kMaxSmallM + t]
//       for all kMaxSmallM tokens, summed over p in order from zero, then added: the same
//       arithmetic for each output as outer's; prefetches as outer does (4 lines a row)
// and may provide, for bf16 weights:
//   static void bcast_bf16(const bf16_t* w, int64_t ld, const float* xt, float* acc,
//       const char* pf, int64_t pf_stride, int pf_rows);
//       widen then bcast on a full panel (kc = outer_cols) of a full block (bcast_rows rows of
//       stride ld at w), bit for bit, reading the weights from the rows without the scratch: xt
//       is the panel's slice of the transposed activations, the panel's sums are added into acc
//       as bcast adds them, and pf_rows rows at pf (stride pf_stride) get their first 4 lines
//       prefetched

constexpr int kPrefetchBytes = 4096;

// How far ahead a single token group prefetches along each row's stream: kPrefetchBytes, or
// two rows when rows are shorter than that.
inline int64_t prefetch_ahead(int64_t row_bytes) {
    return row_bytes >= kPrefetchBytes ? kPrefetchBytes : 2 * row_bytes;
}

// What a tile prefetches: each call of prefetch_step, the 64 bytes at base + i * stride + offset
// for i < rows, then offset moves on by 64; once it passes row_bytes it wraps and base moves on
// by jump (a stream reaching the end of a row goes on in the same row of the next block).
// Nothing when rows is 0, nothing at or past limit. An address as an integer: "ahead" reaches
// past the end of a matrix's last rows, where pointer arithmetic would be undefined; a prefetch
// of any address is harmless.
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

// Calls f.template operator()<n>() for the run-time n in [1, N].
template <int N, class F>
inline void with_tokens(int64_t n, F&& f) {
    if constexpr (N > 0) {
        if (n == N)
            f.template operator()<N>();
        else
            with_tokens<N - 1>(n, f);
    }
}

// R rows against all m tokens, TM tokens at a time (the last group may be smaller). `next` is
// the next block (the R rows after these) when the caller has one, else null; nothing is
// prefetched at or past `limit`.
template <class Isa, class W, int R, int TM>
inline void row_tile(const W* w, int64_t rows, int64_t cols, const float* xp, int64_t m, float* y,
                     const W* next, uintptr_t limit) {
    constexpr int step = Isa::template step<W>;
    const int64_t xs = m * step;
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
        with_tokens<TM>(std::min<int64_t>(TM, m - t), [&]<int T>() {
            Isa::template tile<R, T>(w, cols, xp + t * step, xs, y + t * rows, rows, pf);
        });
    }
}

// Block b (rows [b·R, b·R + R)) of one product; a last partial block runs row by row. The
// calling thread's chunk of blocks ends before block b_end.
template <class Isa, class W, int R, int TM>
inline void run_block(const W* w, int64_t rows, int64_t cols, const float* xp, int64_t m, float* y,
                      int64_t b, int64_t b_end) {
    const int64_t r0 = b * R;
    const uintptr_t limit = reinterpret_cast<uintptr_t>(w + std::min(rows, b_end * R) * cols);
    if (r0 + R <= rows) {
        const W* next = r0 + 2 * R <= rows ? w + (r0 + R) * cols : nullptr;
        row_tile<Isa, W, R, TM>(w + r0 * cols, rows, cols, xp, m, y + r0, next, limit);
    } else {
        for (int64_t r = r0; r < rows; ++r)
            row_tile<Isa, W, 1, TM>(w + r * cols, rows, cols, xp, m, y + r, nullptr, limit);
    }
}

template <class Isa>
constexpr bool uses_outer(int64_t m) {
    if constexpr (requires { Isa::outer_min; })
        return m >= Isa::outer_min;
    else
        return false;
}

template <class Isa>
constexpr bool uses_bcast(int64_t m) {
    if constexpr (requires { Isa::bcast_min; }) {
        // The broadcast path reads the outer path's packed activations (pack_for).
        static_assert(Isa::bcast_min >= Isa::outer_min);
        return m >= Isa::bcast_min;
    } else
        return false;
}

// Rows per block for m tokens: the R that Isa::with_shape picks, or the outer or broadcast
// path's.
template <class Isa>
inline int64_t block_rows(int64_t m) {
    if constexpr (requires { Isa::outer_min; }) {
        if (uses_bcast<Isa>(m)) return Isa::bcast_rows;
        if (uses_outer<Isa>(m)) return Isa::outer_rows;
    }
    int64_t rows = 0;
    Isa::with_shape(m, [&]<int R, int TM>() { rows = R; });
    return rows;
}

// The panel paths (several tokens: compute-bound, where the row tiles' loads and horizontal
// sums cost more than their FMAs). Column panels of outer_cols columns of a block's rows are made
// exact fp32 in an L1 scratch (or, with bcast_bf16, read from the rows as they are used), then
// multiplied against xt (x transposed, kMaxSmallM token slots per column, a panel's columns in
// the ISA's slot order):
// - the outer-product path (Bcast false, m >= outer_min): blocks of outer_rows rows; each panel
//   is transposed (k-major: one k is a vector over the rows), and each group of outer_tokens
//   tokens runs over it with one broadcast activation per k and token;
// - the broadcast path (Bcast true, m >= bcast_min): blocks of bcast_rows rows; each panel is
//   only widened (row-major; or read from the rows themselves by bcast_bf16), and the k loop
//   broadcasts one weight per row and k against the activations of all kMaxSmallM slots (zero
//   from m on, their sums dropped). Widening costs far less than transposing, and from about 13
//   tokens on that outweighs the padding.
// Either way each output is summed over the panel's slots in order with the same products, the
// panel sums added in column order: the same arithmetic whatever m, whichever thread and
// whichever of the two paths, so a token's result does not depend on the other tokens of the
// call as long as m >= outer_min.
template <class Isa, class W, bool Bcast>
inline void run_block_panels(const W* w, int64_t rows, int64_t cols, const float* xt, int64_t m,
                             float* y, int64_t b) {
    constexpr int KP = Isa::outer_cols;
    constexpr int R = [] {
        if constexpr (Bcast)
            return Isa::bcast_rows;
        else
            return Isa::outer_rows;
    }();
    constexpr bool kDirect = Bcast && sizeof(W) == 2 && requires { &Isa::bcast_bf16; };
    const int64_t r0 = b * R;
    const int n = static_cast<int>(std::min<int64_t>(R, rows - r0));
    alignas(64) float s[KP * R];
    alignas(64) float acc[kMaxSmallM * R] = {};
    const W* wb = w + r0 * cols;
    // Panels go to L1 two ahead of their turn (one ahead measured slower on the outer path, four
    // alike; on the broadcast path four or five ahead slower: ops/bench/gemv --tokens 16 and
    // standalone loops). A full panel's lines are prefetched from inside the k loop (the outer
    // path's first token group's, the broadcast path's only one), a few at a time: all at once (64
    // lines for 16 rows of 256 bytes) they queue behind the L1's few outstanding misses and stall
    // the loads (about 10 % slower on dense gate/up and lm_head, three runs alternating). At the
    // start of a block and near the end of its rows, all at once here. (bcast_bf16, which reads
    // the rows themselves and not a scratch, prefetches a row's 4 lines at once: it measured
    // faster that way.)
    const auto prefetch_panel = [&](int64_t c) {
        const int64_t bytes = std::min<int64_t>(KP, cols - c) * static_cast<int64_t>(sizeof(W));
        for (int i = 0; i < n; ++i)
            for (int64_t off = 0; off < bytes; off += 64)
                _mm_prefetch(reinterpret_cast<const char*>(wb + i * cols + c) + off, _MM_HINT_T0);
    };
    prefetch_panel(KP);
    for (int64_t c0 = 0; c0 < cols; c0 += KP) {
        const int kc = static_cast<int>(std::min<int64_t>(KP, cols - c0));
        // A full bf16 panel of a full block goes straight from the rows where the ISA can.
        const bool direct = kDirect && kc == KP && n == R;
        if constexpr (Bcast) {
            if (!direct) Isa::widen(wb + c0, cols, n, kc, s);
        } else {
            Isa::transpose(wb + c0, cols, n, kc, s);
        }
        const int64_t ahead = c0 + 2 * KP;
        const bool spread = sizeof(W) == 2 && ahead + KP <= cols && kc == KP;
        if (!spread) prefetch_panel(ahead);
        const char* pf = reinterpret_cast<const char*>(wb + std::min(ahead, cols));
        const int64_t pf_stride = cols * static_cast<int64_t>(sizeof(W));
        if constexpr (Bcast) {
            if constexpr (kDirect) {
                if (direct) {
                    Isa::bcast_bf16(wb + c0, cols, xt + c0 * kMaxSmallM, acc, pf, pf_stride,
                                    spread ? n : 0);
                    continue;
                }
            }
            Isa::bcast(s, kc, xt + c0 * kMaxSmallM, acc, pf, pf_stride, spread ? n : 0);
        } else {
            constexpr int TM = Isa::outer_tokens;
            for (int64_t t0 = 0; t0 < m; t0 += TM)
                with_tokens<TM>(std::min<int64_t>(TM, m - t0), [&]<int T>() {
                    Isa::template outer<T>(s, kc, xt + c0 * kMaxSmallM + t0, acc + t0 * R, pf,
                                           pf_stride, spread && t0 == 0 ? n : 0);
                });
        }
    }
    for (int64_t t = 0; t < m; ++t)
        for (int i = 0; i < n; ++i)
            y[t * rows + r0 + i] = Bcast ? acc[i * kMaxSmallM + t] : acc[t * R + i];
}

template <class Isa, class W>
inline void run_block(const W* w, int64_t rows, int64_t cols, const float* xp, int64_t m, float* y,
                      int64_t b, int64_t b_end) {
    if constexpr (requires { Isa::outer_min; }) {
        if (uses_bcast<Isa>(m)) {
            run_block_panels<Isa, W, true>(w, rows, cols, xp, m, y, b);
            return;
        }
        if (uses_outer<Isa>(m)) {
            run_block_panels<Isa, W, false>(w, rows, cols, xp, m, y, b);
            return;
        }
    }
    Isa::with_shape(
        m, [&]<int R, int TM>() { run_block<Isa, W, R, TM>(w, rows, cols, xp, m, y, b, b_end); });
}

// Packs x for the path m takes.
template <class Isa>
inline void pack_for(const float* x, int64_t m, int64_t cols, bool bf16, float* xp) {
    if constexpr (requires { Isa::outer_min; })
        if (uses_outer<Isa>(m)) {
            Isa::pack_xt(x, m, cols, bf16, xp);
            return;
        }
    Isa::pack_x(x, m, cols, bf16, xp);
}

// Blocks per OpenMP chunk: about 256 KiB of weights (a few microseconds of streaming). The
// loops hand out chunks dynamically: with passive waiting, the other threads take tens of
// microseconds to wake up for each parallel region, and the thread that starts the region works
// through the chunks meanwhile instead of waiting for its static share to be taken.
inline int64_t chunk_blocks(int64_t block_bytes) {
    return std::max<int64_t>(1, (int64_t{256} << 10) / std::max<int64_t>(1, block_bytes));
}

// Floats of packed activations for m tokens of `cols` columns of `type`.
template <class Isa>
inline size_t packed_floats(dtype type, int64_t cols, int64_t m) {
    if (uses_outer<Isa>(m)) return static_cast<size_t>(kMaxSmallM * cols);
    const int64_t step =
        type == dtype::bf16 ? Isa::template step<bf16_t> : Isa::template step<float>;
    return static_cast<size_t>(m * ((cols + step - 1) / step) * step);
}

// y[t, r] = Σ_c x[t, c]·W[r, c]: the packed copy of x lives in a thread_local buffer of the
// calling thread that only grows.
template <class Isa>
void linear_small_m(const void* w, dtype type, int64_t rows, int64_t cols, const float* x,
                    int64_t m, float* y) {
    if (m > kMaxSmallM) throw std::invalid_argument("linear_small_m: more than 16 tokens");
    const bool bf16 = type == dtype::bf16;
    thread_local std::vector<float> buf;
    const size_t need = packed_floats<Isa>(type, cols, m);
    if (buf.size() < need) buf.resize(need);
    pack_for<Isa>(x, m, cols, bf16, buf.data());
    const float* xp = buf.data();
    const int64_t num_blocks = (rows + block_rows<Isa>(m) - 1) / block_rows<Isa>(m);
    const int64_t chunk =
        chunk_blocks(block_rows<Isa>(m) * cols * static_cast<int64_t>(dtype_size(type)));
#pragma omp parallel for schedule(dynamic, chunk)
    for (int64_t b = 0; b < num_blocks; ++b) {
        const int64_t b_end = std::min(num_blocks, (b / chunk + 1) * chunk);
        if (bf16)
            run_block<Isa>(static_cast<const bf16_t*>(w), rows, cols, xp, m, y, b, b_end);
        else
            run_block<Isa>(static_cast<const float*>(w), rows, cols, xp, m, y, b, b_end);
    }
}

// Every product's activations are packed before any output is written, so one product's y may
// alias another's x. The blocks of all products form one OpenMP loop (chunks sized by the first
// product): a block computes exactly what it computes in linear_small_m on its product alone
// (same tile, same packed x), whichever thread takes it.
template <class Isa>
void linear_small_m_group(const small_m_product* products, int64_t count) {
    std::vector<int64_t> first_block(static_cast<size_t>(count + 1), 0);
    std::vector<size_t> x_offset(static_cast<size_t>(count), 0);
    size_t need = 0;
    for (int64_t i = 0; i < count; ++i) {
        const small_m_product& p = products[i];
        if (p.m > kMaxSmallM)
            throw std::invalid_argument("linear_small_m_group: a product of more than 16 tokens");
        x_offset[i] = need;
        need += packed_floats<Isa>(p.type, p.cols, p.m);
        first_block[i + 1] =
            first_block[i] + (p.rows + block_rows<Isa>(p.m) - 1) / block_rows<Isa>(p.m);
    }
    thread_local std::vector<float> buf;
    if (buf.size() < need) buf.resize(need);
    for (int64_t i = 0; i < count; ++i) {
        const small_m_product& p = products[i];
        pack_for<Isa>(p.x, p.m, p.cols, p.type == dtype::bf16, buf.data() + x_offset[i]);
    }
    const float* packed = buf.data();
    const int64_t total = first_block[count];
    const int64_t chunk = count == 0
                              ? 1
                              : chunk_blocks(block_rows<Isa>(products[0].m) * products[0].cols *
                                             static_cast<int64_t>(dtype_size(products[0].type)));
#pragma omp parallel for schedule(dynamic, chunk)
    for (int64_t b = 0; b < total; ++b) {
        const auto i = static_cast<int64_t>(
            std::upper_bound(first_block.begin(), first_block.end(), b) - first_block.begin() - 1);
        const small_m_product& p = products[i];
        const float* xp = packed + x_offset[i];
        const int64_t end = std::min(first_block[i + 1], (b / chunk + 1) * chunk) - first_block[i];
        if (p.type == dtype::bf16)
            run_block<Isa>(static_cast<const bf16_t*>(p.w), p.rows, p.cols, xp, p.m, p.y,
                           b - first_block[i], end);
        else
            run_block<Isa>(static_cast<const float*>(p.w), p.rows, p.cols, xp, p.m, p.y,
                           b - first_block[i], end);
    }
}

}  // namespace
}  // namespace longcat::kernels::cpu
