// CPU backend: fp32 activations, fp32/bf16 weights, fp32 accumulation.
// NOTES: OpenBLAS is only called outside OpenMP parallel regions (its pthread build keeps its
// own pool); small-M products use the hand-written loops below, large-M ones OpenBLAS.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

#include "kernels/api/ops.hpp"
#include "kernels/cpu/isa.hpp"

namespace longcat::kernels {
namespace {

constexpr int64_t kSmallM = cpu::kMaxSmallM;  // tokens per pass of the weight-streaming kernels
// Elementwise loops take the compute threads from this many elements on (a region's wake-up
// costs tens of microseconds; 16 K scalar expf about 120).
constexpr int64_t kParallelElementwise = 16384;
constexpr int64_t kBlasM = 128;   // from this many tokens on, OpenBLAS (widening bf16 blocks)

void require_cpu(const matrix_view& w, const char* op) {
    if (w.device != device_kind::cpu)
        throw std::invalid_argument(std::string(op) + ": CUDA backend not built into this binary");
    if (w.type != dtype::f32 && w.type != dtype::bf16)
        throw std::invalid_argument(std::string(op) + ": weight dtype " +
                                    std::string(dtype_name(w.type)) + " not supported");
}

// A weight as fp32: bf16 widens exactly (its bits are the high half of the fp32's).
[[gnu::always_inline]] inline float widen(float v) { return v; }
[[gnu::always_inline]] inline float widen(bf16_t v) {
    const uint32_t bits = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline void bf16_row_to_f32(const bf16_t* src, int64_t n, float* dst) {
    for (int64_t i = 0; i < n; ++i) dst[i] = widen(src[i]);
}

inline float dot(const float* a, const float* b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
    float s = 0;
    for (; i < n; ++i) s += a[i] * b[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Decode attention's inner loops (mla_attention_decode): short rows (kv_lora_rank, head dims)
// per head and sequence. Cloned for AVX-512 and AVX2 (picked at load by the CPU, outside
// LONGCAT_CPU_ISA: their sums keep a fixed lane order per clone) — compiled for baseline x86-64
// they ran 2-4 lanes wide and took 7 % of a batch-16 decode step on the bench preset.
#define LC_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

// The bodies, inlined into each clone below (so that each is compiled for the clone's target).
// Σ widen(w[i])·x[i] in 16 lane sums, reduced pairwise.
template <class W>
[[gnu::always_inline]] inline float lane_dot_body(const W* w, const float* x, int64_t n) {
    float acc[16] = {};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; ++k) acc[k] += widen(w[i + k]) * x[i + k];
    for (; i < n; ++i) acc[i % 16] += widen(w[i]) * x[i];
    for (int width = 8; width > 0; width /= 2)
        for (int k = 0; k < width; ++k) acc[k] += acc[k + width];
    return acc[0];
}

// y[i] += a·widen(w[i]).
template <class W>
[[gnu::always_inline]] inline void lane_axpy_body(float* y, float a, const W* w, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * widen(w[i]);
}

LC_VECTOR_CLONES float lane_dot(const float* a, const float* b, int64_t n) { return lane_dot_body(a, b, n); }
LC_VECTOR_CLONES float lane_dot_bf16(const bf16_t* w, const float* x, int64_t n) { return lane_dot_body(w, x, n); }
LC_VECTOR_CLONES void lane_axpy(float* y, float a, const float* x, int64_t n) { lane_axpy_body(y, a, x, n); }
LC_VECTOR_CLONES void lane_axpy_bf16(float* y, float a, const bf16_t* w, int64_t n) { lane_axpy_body(y, a, w, n); }

// Small M: stream each weight row once, dot it with every token.
void linear_small_m(const matrix_view& w, const float* x, int64_t m, float* y) {
    const int64_t rows = w.rows, cols = w.cols;
    if (w.type == dtype::f32) {
        const float* wd = static_cast<const float*>(w.data);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t t = 0; t < m; ++t) y[t * rows + r] = dot(wd + r * cols, x + t * cols, cols);
        return;
    }
    const bf16_t* wd = static_cast<const bf16_t*>(w.data);
#pragma omp parallel
    {
        std::vector<float> row(static_cast<size_t>(cols));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            bf16_row_to_f32(wd + r * cols, cols, row.data());
            for (int64_t t = 0; t < m; ++t) y[t * rows + r] = dot(row.data(), x + t * cols, cols);
        }
    }
}

void linear_large_m(const matrix_view& w, const float* x, int64_t m, float* y) {
    const int64_t rows = w.rows, cols = w.cols;
    if (w.type == dtype::f32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                    static_cast<int>(rows), static_cast<int>(cols), 1.0f, x,
                    static_cast<int>(cols), static_cast<const float*>(w.data),
                    static_cast<int>(cols), 0.0f, y, static_cast<int>(rows));
        return;
    }
    // bf16: widen a block of rows at a time (≤ 4 MiB), then one sgemm per block.
    const bf16_t* wd = static_cast<const bf16_t*>(w.data);
    const int64_t block =
        std::max<int64_t>(1, std::min<int64_t>(rows, (1 << 20) / std::max<int64_t>(1, cols)));
    std::vector<float> wf(static_cast<size_t>(block * cols));
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
        const int64_t nr = std::min(block, rows - r0);
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < nr; ++r) bf16_row_to_f32(wd + (r0 + r) * cols, cols, wf.data() + r * cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m),
                    static_cast<int>(nr), static_cast<int>(cols), 1.0f, x, static_cast<int>(cols),
                    wf.data(), static_cast<int>(cols), 0.0f, y + r0, static_cast<int>(rows));
    }
}

// Reads one cache row as fp32.
inline void kv_read_row(const kv_pool_view& pool, const int32_t* page_table, int64_t pos, float* dst) {
    const int64_t slot = static_cast<int64_t>(page_table[pos / pool.page_size]) * pool.page_size +
                         pos % pool.page_size;
    if (pool.type == dtype::f32) {
        std::memcpy(dst, static_cast<const float*>(pool.data) + slot * pool.row_dim,
                    sizeof(float) * pool.row_dim);
    } else {
        bf16_row_to_f32(static_cast<const bf16_t*>(pool.data) + slot * pool.row_dim, pool.row_dim, dst);
    }
}

void softmax_inplace(float* s, int64_t n) {
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) mx = std::max(mx, s[i]);
    float sum = 0;
    for (int64_t i = 0; i < n; ++i) {
        s[i] = std::exp(s[i] - mx);
        sum += s[i];
    }
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; ++i) s[i] *= inv;
}

}  // namespace

matrix_view matrix_view::row_slice(int64_t begin, int64_t count) const {
    matrix_view v = *this;
    v.data = static_cast<const uint8_t*>(data) + begin * row_bytes();
    v.rows = count;
    return v;
}

namespace {

void linear_small_m_dispatch(const matrix_view& w, const float* x, int64_t m, float* y) {
    switch (active_cpu_isa()) {
        case cpu_isa::avx512bf16:
            cpu::linear_small_m_avx512bf16(w.data, w.type, w.rows, w.cols, x, m, y);
            break;
        case cpu_isa::avx512:
            cpu::linear_small_m_avx512(w.data, w.type, w.rows, w.cols, x, m, y);
            break;
        case cpu_isa::avx2:
            cpu::linear_small_m_avx2(w.data, w.type, w.rows, w.cols, x, m, y);
            break;
        case cpu_isa::scalar:
            linear_small_m(w, x, m, y);
            break;
    }
}

}  // namespace

void linear(const matrix_view& w, const float* x, int64_t num_tokens, float* y) {
    require_cpu(w, "linear");
    if (num_tokens <= 0) return;
    if (w.cols == 0) {  // the empty sum (BLAS would refuse a leading dimension of 0)
        std::fill(y, y + num_tokens * w.rows, 0.0f);
        return;
    }
    if (num_tokens >= kBlasM) {
        linear_large_m(w, x, num_tokens, y);
        return;
    }
    // Up to kBlasM tokens, passes of kSmallM tokens over the weights beat widening them for
    // BLAS (measured on the bench preset: ~2.4x at 32 tokens); the weights are re-read once per
    // pass, which stays below the compute time at these sizes.
    if (num_tokens <= kSmallM) {
        linear_small_m_dispatch(w, x, num_tokens, y);
        return;
    }
    std::vector<float> part(static_cast<size_t>(kSmallM * w.rows));
    for (int64_t t0 = 0; t0 < num_tokens; t0 += kSmallM) {
        const int64_t m = std::min(kSmallM, num_tokens - t0);
        linear_small_m_dispatch(w, x + t0 * w.cols, m, part.data());
        std::memcpy(y + t0 * w.rows, part.data(), sizeof(float) * static_cast<size_t>(m * w.rows));
    }
}

void linear_group(const linear_job* jobs, int64_t num_jobs) {
    const cpu_isa isa = active_cpu_isa();
    const bool fuse = isa == cpu_isa::avx512 || isa == cpu_isa::avx2;
    std::vector<cpu::small_m_product> fused;
    std::vector<const linear_job*> alone;
    for (int64_t i = 0; i < num_jobs; ++i) {
        const linear_job& j = jobs[i];
        require_cpu(j.w, "linear_group");
        if (j.num_tokens <= 0) continue;
        if (fuse && j.num_tokens <= kSmallM)
            fused.push_back({j.w.data, j.w.type, j.w.rows, j.w.cols, j.x, j.num_tokens, j.y});
        else
            alone.push_back(&j);
    }
    if (fused.size() == 1) {
        const cpu::small_m_product& p = fused[0];
        (isa == cpu_isa::avx512 ? cpu::linear_small_m_avx512 : cpu::linear_small_m_avx2)(
            p.w, p.type, p.rows, p.cols, p.x, p.m, p.y);
    } else if (!fused.empty()) {
        (isa == cpu_isa::avx512
             ? cpu::linear_small_m_group_avx512
             : cpu::linear_small_m_group_avx2)(fused.data(), static_cast<int64_t>(fused.size()));
    }
    for (const linear_job* j : alone) linear(j->w, j->x, j->num_tokens, j->y);
}

void rms_norm(const float* x, const float* w, int64_t num_rows, int64_t dim, float eps, float* y) {
#pragma omp parallel for schedule(static) if (num_rows > 16)
    for (int64_t r = 0; r < num_rows; ++r) {
        const float* xr = x + r * dim;
        float* yr = y + r * dim;
        float ss = 0;
        for (int64_t i = 0; i < dim; ++i) ss += xr[i] * xr[i];
        const float inv = 1.0f / std::sqrt(ss / static_cast<float>(dim) + eps);
        for (int64_t i = 0; i < dim; ++i) yr[i] = w[i] * (xr[i] * inv);
    }
}

// Element by element, so splitting the range over threads changes no bit. One scalar expf per
// element (7-9 ns an element on one thread here, 2026-12-01): a batch-16 decode step makes about
// 1.8 M of them on the bench preset (from its shapes), a 512-token prefill about 58 M, hence the
// threads (131072 elements: 1160 us on one thread, 457 on two).
void silu_mul(const float* gate, const float* up, int64_t count, float* out) {
#pragma omp parallel for schedule(static) if (count >= kParallelElementwise)
    for (int64_t i = 0; i < count; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void rope_interleaved(float* x, int64_t num_tokens, int64_t rows_per_token, int64_t row_stride,
                      int64_t dim, const int32_t* positions, float theta) {
    const int64_t half = dim / 2;
    std::vector<float> inv_freq(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j)
        inv_freq[j] = 1.0f / std::pow(theta, static_cast<float>(2 * j) / static_cast<float>(dim));
    std::vector<float> cs(static_cast<size_t>(2 * half)), tmp(static_cast<size_t>(dim));
    for (int64_t t = 0; t < num_tokens; ++t) {
        for (int64_t j = 0; j < half; ++j) {
            const float angle = static_cast<float>(positions[t]) * inv_freq[j];
            cs[j] = std::cos(angle);
            cs[half + j] = std::sin(angle);
        }
        for (int64_t r = 0; r < rows_per_token; ++r) {
            float* v = x + (t * rows_per_token + r) * row_stride;
            for (int64_t j = 0; j < half; ++j) {
                const float e = v[2 * j], o = v[2 * j + 1];
                tmp[j] = e * cs[j] - o * cs[half + j];
                tmp[half + j] = o * cs[j] + e * cs[half + j];
            }
            std::memcpy(v, tmp.data(), sizeof(float) * dim);
        }
    }
}

void moe_gate(const float* h, const float* gate_w, const float* bias, int64_t num_tokens,
              int64_t hidden, int64_t num_experts, int64_t top_k, float scale, int32_t* topk_idx,
              float* topk_w) {
    if (top_k < 1 || top_k > num_experts)
        throw std::invalid_argument("moe_gate: top_k " + std::to_string(top_k) + " outside 1.." +
                                    std::to_string(num_experts) + " experts");
    std::vector<float> probs(static_cast<size_t>(num_tokens * num_experts));
    linear(matrix_view{gate_w, dtype::f32, num_experts, hidden}, h, num_tokens, probs.data());
#pragma omp parallel if (num_tokens > 8)
    {
    std::vector<int32_t> order(static_cast<size_t>(num_experts));  // one per thread
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
        float* p = probs.data() + t * num_experts;
        softmax_inplace(p, num_experts);
        for (int64_t e = 0; e < num_experts; ++e) order[e] = static_cast<int32_t>(e);
        auto biased = [&](int32_t e) { return p[e] + (bias ? bias[e] : 0.0f); };
        std::partial_sort(order.begin(), order.begin() + top_k, order.end(),
                          [&](int32_t a, int32_t b) {
                              const float va = biased(a), vb = biased(b);
                              return va > vb || (va == vb && a < b);
                          });
        for (int64_t k = 0; k < top_k; ++k) {
            topk_idx[t * top_k + k] = order[k];
            topk_w[t * top_k + k] = p[order[k]] * scale;
        }
    }
    }
}

void grouped_experts(const expert_weights_view* experts, int64_t num_experts, const float* h,
                     int64_t hidden, int64_t num_assignments, const int32_t* assign_token,
                     const int32_t* assign_expert, const float* assign_weight, float* out) {
    if (num_assignments == 0) return;
    // Counting sort of the assignments by expert (stable: keeps the caller's order inside).
    std::vector<int64_t> start(static_cast<size_t>(num_experts + 1), 0);
    for (int64_t a = 0; a < num_assignments; ++a) {
        if (assign_expert[a] < 0 || assign_expert[a] >= num_experts)
            throw std::out_of_range("grouped_experts: expert index out of range");
        ++start[assign_expert[a] + 1];
    }
    for (int64_t e = 0; e < num_experts; ++e) start[e + 1] += start[e];
    std::vector<int64_t> order(static_cast<size_t>(num_assignments));
    {
        std::vector<int64_t> fill(start.begin(), start.end() - 1);
        for (int64_t a = 0; a < num_assignments; ++a) order[fill[assign_expert[a]]++] = a;
    }
    // Experts are computed in ascending order and added into `out` in that order. Consecutive
    // experts with at most kSmallM tokens are batched: their gate/up products run as one
    // linear_group, their down products as another (two fork/joins instead of three per expert:
    // decode routes one token to ~top-k experts). An expert with more tokens runs alone.
    struct pending {
        int64_t expert, m;
        size_t x_at, inter_at;
    };
    std::vector<pending> batch;
    size_t x_next = 0, inter_next = 0;  // the batch's sizes so far in x/y and in g/u
    std::vector<float> x, g, u, y;
    std::vector<linear_job> jobs;
    auto flush = [&] {
        if (batch.empty()) return;
        x.resize(x_next);
        y.resize(x_next);
        g.resize(inter_next);
        u.resize(inter_next);
        for (const pending& p : batch)
            for (int64_t i = 0; i < p.m; ++i)
                std::memcpy(x.data() + p.x_at + i * hidden, h + assign_token[order[start[p.expert] + i]] * hidden,
                            sizeof(float) * hidden);
        jobs.clear();
        for (const pending& p : batch) {
            const expert_weights_view& ew = experts[p.expert];
            jobs.push_back({ew.gate, x.data() + p.x_at, p.m, g.data() + p.inter_at});
            jobs.push_back({ew.up, x.data() + p.x_at, p.m, u.data() + p.inter_at});
        }
        linear_group(jobs.data(), static_cast<int64_t>(jobs.size()));
        silu_mul(g.data(), u.data(), static_cast<int64_t>(inter_next), g.data());
        jobs.clear();
        for (const pending& p : batch)
            jobs.push_back({experts[p.expert].down, g.data() + p.inter_at, p.m, y.data() + p.x_at});
        linear_group(jobs.data(), static_cast<int64_t>(jobs.size()));
        // Each expert's rows of y, weighted, into out: experts ascending, assignments in order.
        for (const pending& p : batch)
            for (int64_t i = 0; i < p.m; ++i) {
                const int64_t a = order[start[p.expert] + i];
                float* o = out + assign_token[a] * hidden;
                const float w = assign_weight[a];
                const float* yr = y.data() + p.x_at + i * hidden;
                for (int64_t c = 0; c < hidden; ++c) o[c] += w * yr[c];
            }
        batch.clear();
        x_next = inter_next = 0;
    };
    for (int64_t e = 0; e < num_experts; ++e) {
        const int64_t m = start[e + 1] - start[e];
        if (m == 0) continue;
        // An expert with more tokens is a batch of its own (linear_group runs it through linear).
        if (m > kSmallM) flush();
        batch.push_back({e, m, x_next, inter_next});
        x_next += static_cast<size_t>(m * hidden);
        inter_next += static_cast<size_t>(m * experts[e].gate.rows);
        if (m > kSmallM) flush();
    }
    flush();
}

void kv_write(const kv_pool_view& pool, const int32_t* page_table, int64_t first_pos,
              int64_t num_tokens, const float* src) {
    for (int64_t t = 0; t < num_tokens; ++t) {
        const int64_t pos = first_pos + t;
        const int64_t slot = static_cast<int64_t>(page_table[pos / pool.page_size]) * pool.page_size +
                             pos % pool.page_size;
        const float* s = src + t * pool.row_dim;
        if (pool.type == dtype::f32) {
            std::memcpy(static_cast<float*>(pool.data) + slot * pool.row_dim, s,
                        sizeof(float) * pool.row_dim);
        } else {
            bf16_t* d = static_cast<bf16_t*>(pool.data) + slot * pool.row_dim;
            for (int64_t i = 0; i < pool.row_dim; ++i) d[i] = f32_to_bf16(s[i]);
        }
    }
}

// Tokens per score tile of mla_attention_prefill: large enough that OpenBLAS threads its
// sgemms, small enough that the masked half of the tile on the diagonal stays a small share.
constexpr int64_t kPrefillTokenTile = 256;

void mla_attention_prefill(const mla_dims& d, const kv_pool_view& pool, const int32_t* page_table,
                           int64_t first_pos, int64_t num_tokens, const float* q,
                           const matrix_view& kv_b_proj, float* out, int64_t block_bytes) {
    const int64_t ctx = first_pos + num_tokens;
    const int64_t H = d.num_heads, nope = d.qk_nope_head_dim, rope = d.qk_rope_head_dim,
                  vd = d.v_head_dim, lora = d.kv_lora_rank;
    const int64_t qk = nope + rope, kvw = nope + vd;
    if (num_tokens <= 0) return;
    // The context runs in blocks of positions whose expanded keys and values fit block_bytes
    // (at 64 heads, 1024 positions in 64 MiB; expanding all of a 128k context at once took 8 GiB),
    // with an online softmax across the blocks: per (token, head) a running max and sum, and the
    // output accumulated unnormalised, rescaled when the max grows, divided by the sum at the end.
    const int64_t per_position =
        (H * kvw + pool.row_dim + lora) * static_cast<int64_t>(sizeof(float));
    const int64_t block = std::clamp<int64_t>(block_bytes / per_position, 1, ctx);
    std::vector<float> rows(static_cast<size_t>(block * pool.row_dim));
    std::vector<float> ckv(static_cast<size_t>(block * lora));
    std::vector<float> kv(static_cast<size_t>(block * H * kvw));  // [block, H, nope | v]
    std::vector<float> scores(static_cast<size_t>(std::min(kPrefillTokenTile, num_tokens) * block));
    const int64_t jobs = num_tokens * H;
    std::vector<float> run_max(static_cast<size_t>(jobs), -std::numeric_limits<float>::infinity());
    std::vector<float> run_sum(static_cast<size_t>(jobs), 0.0f);
    std::fill(out, out + jobs * vd, 0.0f);
    for (int64_t b0 = 0; b0 < ctx; b0 += block) {
        const int64_t n = std::min(block, ctx - b0);
        // c_kv rows are strided inside the cache rows: compact them for the expansion GEMM.
#pragma omp parallel for schedule(static) if (n > 64)
        for (int64_t p = 0; p < n; ++p) {
            kv_read_row(pool, page_table, b0 + p, rows.data() + p * pool.row_dim);
            std::memcpy(ckv.data() + p * lora, rows.data() + p * pool.row_dim,
                        sizeof(float) * lora);
        }
        linear(kv_b_proj, ckv.data(), n, kv.data());
        // Tokens before this block see none of it (causal). Per head and tile of up to
        // kPrefillTokenTile tokens, the scores are two sgemms (nope and rope parts, the scale as
        // alpha) over the block's positions the tile's last token sees; each row is masked past
        // its own position, folded into the online softmax (its output row rescaled when the max
        // grows), and the probabilities times the head's values are added into the output by a
        // third sgemm. Only the tile on the diagonal computes scores it then masks.
        const int64_t first_t = std::max<int64_t>(0, b0 - first_pos);
        for (int64_t hd = 0; hd < H; ++hd) {
            for (int64_t t0 = first_t; t0 < num_tokens; t0 += kPrefillTokenTile) {
                const int64_t nt = std::min(kPrefillTokenTile, num_tokens - t0);
                const int64_t ncols = std::min(n, first_pos + t0 + nt - b0);
                float* sc = scores.data();
                const float* qh = q + (t0 * H + hd) * qk;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nt),
                            static_cast<int>(ncols), static_cast<int>(nope), d.softmax_scale, qh,
                            static_cast<int>(H * qk), kv.data() + hd * kvw,
                            static_cast<int>(H * kvw), 0.0f, sc, static_cast<int>(ncols));
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nt),
                            static_cast<int>(ncols), static_cast<int>(rope), d.softmax_scale,
                            qh + nope, static_cast<int>(H * qk), rows.data() + lora,
                            static_cast<int>(pool.row_dim), 1.0f, sc, static_cast<int>(ncols));
#pragma omp parallel for schedule(static) if (nt * ncols >= kParallelElementwise)
                for (int64_t i = 0; i < nt; ++i) {
                    const int64_t t = t0 + i, job = t * H + hd;
                    const int64_t m = std::min(ncols, first_pos + t + 1 - b0);  // positions it sees
                    float* row = sc + i * ncols;
                    float block_max = -std::numeric_limits<float>::infinity();
                    for (int64_t s = 0; s < m; ++s) block_max = std::max(block_max, row[s]);
                    float* o = out + job * vd;
                    const float new_max = std::max(run_max[job], block_max);
                    const float rescale = std::exp(run_max[job] - new_max);  // 0 on the first block
                    if (rescale != 1.0f) {
                        for (int64_t j = 0; j < vd; ++j) o[j] *= rescale;
                        run_sum[job] *= rescale;
                    }
                    run_max[job] = new_max;
                    float sum = 0.0f;
                    for (int64_t s = 0; s < m; ++s) sum += (row[s] = std::exp(row[s] - new_max));
                    std::fill(row + m, row + ncols, 0.0f);
                    run_sum[job] += sum;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nt),
                            static_cast<int>(vd), static_cast<int>(ncols), 1.0f, sc,
                            static_cast<int>(ncols), kv.data() + hd * kvw + nope,
                            static_cast<int>(H * kvw), 1.0f, out + (t0 * H + hd) * vd,
                            static_cast<int>(H * vd));
            }
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t job = 0; job < jobs; ++job) {
        const float inv = 1.0f / run_sum[job];
        float* o = out + job * vd;
        for (int64_t j = 0; j < vd; ++j) o[j] *= inv;
    }
}

void mla_attention_decode(const mla_dims& d, const kv_pool_view& pool, const int32_t* page_table,
                          int64_t pos, const float* q, const matrix_view& kv_b_proj, float* out) {
    const mla_decode_seq one{page_table, pos, q, out};
    mla_attention_decode_batch(d, pool, &one, 1, kv_b_proj);
}

namespace {

// mla_attention_decode_batch for sequences whose gathered cache rows fit its cap: one region.
void decode_attention_region(const mla_dims& d, const kv_pool_view& pool,
                             const mla_decode_seq* seqs, int64_t count,
                             const matrix_view& kv_b_proj) {
    const int64_t H = d.num_heads, nope = d.qk_nope_head_dim, rope = d.qk_rope_head_dim,
                  vd = d.v_head_dim, lora = d.kv_lora_rank;
    const int64_t qk = nope + rope, kvw = nope + vd;
    const bool bf16 = kv_b_proj.type == dtype::bf16;
    const auto* wf = static_cast<const float*>(kv_b_proj.data);
    const auto* wb = static_cast<const bf16_t*>(kv_b_proj.data);
    // Every sequence's cache rows, gathered: sequence i's context (pos + 1 rows) from first[i].
    std::vector<int64_t> first(static_cast<size_t>(count + 1), 0);
    int64_t max_ctx = 0;
    for (int64_t i = 0; i < count; ++i) {
        const int64_t ctx = seqs[i].pos + 1;
        first[i + 1] = first[i] + ctx;
        max_ctx = std::max(max_ctx, ctx);
    }
    const auto rows = std::make_unique_for_overwrite<float[]>(
        static_cast<size_t>(first[count] * pool.row_dim));  // every row written below
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int64_t p = 0; p < first[count]; ++p) {
            const auto i = static_cast<int64_t>(std::upper_bound(first.begin(), first.end(), p) -
                                                first.begin() - 1);
            kv_read_row(pool, seqs[i].page_table, p - first[i], rows.get() + p * pool.row_dim);
        }
        std::vector<float> qt(static_cast<size_t>(lora)), olat(static_cast<size_t>(lora)),
            scores(static_cast<size_t>(max_ctx));
#pragma omp for schedule(static)
        for (int64_t job = 0; job < count * H; ++job) {
            const mla_decode_seq& sq = seqs[job / H];
            const int64_t hd = job % H, ctx = sq.pos + 1;
            const float* seq_rows = rows.get() + first[job / H] * pool.row_dim;
            const float* qh = sq.q + hd * qk;
            // q̃ = W_UK[h]ᵀ · q_nope[h]
            std::fill(qt.begin(), qt.end(), 0.0f);
            for (int64_t i = 0; i < nope; ++i) {
                const int64_t r = hd * kvw + i;
                if (bf16)
                    lane_axpy_bf16(qt.data(), qh[i], wb + r * lora, lora);
                else
                    lane_axpy(qt.data(), qh[i], wf + r * lora, lora);
            }
            for (int64_t s = 0; s < ctx; ++s) {
                const float* row = seq_rows + s * pool.row_dim;
                scores[s] = (lane_dot(qt.data(), row, lora) + lane_dot(qh + nope, row + lora, rope)) *
                            d.softmax_scale;
            }
            softmax_inplace(scores.data(), ctx);
            std::fill(olat.begin(), olat.end(), 0.0f);
            for (int64_t s = 0; s < ctx; ++s)
                lane_axpy(olat.data(), scores[s], seq_rows + s * pool.row_dim, lora);
            // o[h] = W_UV[h] · o_lat
            float* o = sq.out + hd * vd;
            for (int64_t j = 0; j < vd; ++j) {
                const int64_t r = hd * kvw + nope + j;
                o[j] = bf16 ? lane_dot_bf16(wb + r * lora, olat.data(), lora)
                            : lane_dot(wf + r * lora, olat.data(), lora);
            }
        }
    }
}

}  // namespace

// One parallel region for all sequences whose rows fit max_gather_bytes (a region per sequence
// cost a wake-up of the passive compute threads each: 16 sequences x 12 attention blocks = 192
// of a batch-16 bench step's ~270 regions). Each (sequence, head) pair is computed by one thread
// start to end, the same code whatever the batch, so a sequence's output does not depend on the
// others.
void mla_attention_decode_batch(const mla_dims& d, const kv_pool_view& pool,
                                const mla_decode_seq* seqs, int64_t count,
                                const matrix_view& kv_b_proj, int64_t max_gather_bytes) {
    require_cpu(kv_b_proj, "mla_attention_decode");
    const int64_t row_bytes = pool.row_dim * static_cast<int64_t>(sizeof(float));
    for (int64_t begin = 0; begin < count;) {
        int64_t end = begin + 1, bytes = (seqs[begin].pos + 1) * row_bytes;
        while (end < count && bytes + (seqs[end].pos + 1) * row_bytes <= max_gather_bytes)
            bytes += (seqs[end++].pos + 1) * row_bytes;
        decode_attention_region(d, pool, seqs + begin, end - begin, kv_b_proj);
        begin = end;
    }
}

void set_num_threads(int num_threads) {
    if (num_threads <= 0) return;
    omp_set_num_threads(num_threads);
    openblas_set_num_threads(num_threads);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace longcat::kernels
