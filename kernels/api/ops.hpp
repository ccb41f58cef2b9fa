// Backend-neutral kernel launchers. Plain pointers and sizes; activations are fp32,
// weights fp32 or bf16 (FP8 checkpoints are dequantized to bf16 at load), accumulation fp32.
// Each launcher dispatches on the device of its weights; the CPU backend is always built,
// a CUDA backend fills the same table when LONGCAT_ENABLE_CUDA is on.
#pragma once

#include <cstdint>

#include "kernels/api/dtype.hpp"

namespace longcat::kernels {

// A weight matrix, row-major [rows = out_features, cols = in_features].
struct matrix_view {
    const void* data = nullptr;
    dtype type = dtype::f32;  // f32 | bf16
    int64_t rows = 0;
    int64_t cols = 0;
    device_kind device = device_kind::cpu;

    int64_t row_bytes() const { return cols * static_cast<int64_t>(dtype_size(type)); }
    // Rows [begin, begin + count) as a view (contiguous, no copy).
    matrix_view row_slice(int64_t begin, int64_t count) const;
};

// y[t, r] = Σ_c x[t, c] · W[r, c]  for t < num_tokens.  x: [num_tokens, W.cols], y: [num_tokens, W.rows].
void linear(const matrix_view& w, const float* x, int64_t num_tokens, float* y);

// Several products at once: each job's y equals linear(job.w, job.x, job.num_tokens, job.y),
// bitwise. On the AVX-512 and AVX2 paths, jobs of up to 16 tokens on CPU weights run in one
// parallel loop over all their rows (one fork/join instead of one per matrix: decode's small expert
// and attention matrices); other jobs run one by one. No job's output may overlap another job's
// output or any job's input.
struct linear_job {
    matrix_view w;
    const float* x = nullptr;
    int64_t num_tokens = 0;
    float* y = nullptr;
};
void linear_group(const linear_job* jobs, int64_t num_jobs);

// y = w ⊙ x / sqrt(mean(x²) + eps), row by row (fp32 reduction, as HF).  y may alias x.
void rms_norm(const float* x, const float* w, int64_t num_rows, int64_t dim, float eps, float* y);

// out[i] = silu(gate[i]) · up[i] for i < count (SwiGLU).  out may alias gate or up.
void silu_mul(const float* gate, const float* up, int64_t count, float* out);

// Interleaved (GPT-J) RoPE on the first `dim` values of each row of x, rows of `row_stride`
// floats, `rows_per_token` rows sharing one position; the result is written in HF's
// de-interleaved order [rotated evens | rotated odds].  inv_freq[j] = theta^(-2j/dim), fp32.
void rope_interleaved(float* x, int64_t num_tokens, int64_t rows_per_token, int64_t row_stride,
                      int64_t dim, const int32_t* positions, float theta);

// -- MoE gate -------------------------------------------------------------------------------
// logits = h · Wgᵀ (fp32), p = softmax over all experts (real + zero), selection = top-k of
// p + bias, weights = p[sel] · scale (no renormalisation).  Ties keep the lower index.
// topk_idx/topk_w: [num_tokens, top_k], in descending order of p + bias.
void moe_gate(const float* h, const float* gate_w, const float* bias, int64_t num_tokens,
              int64_t hidden, int64_t num_experts, int64_t top_k, float scale, int32_t* topk_idx,
              float* topk_w);

// -- grouped SwiGLU experts -----------------------------------------------------------------
// One routed expert's weights: gate and up [inter, hidden], down [hidden, inter].
struct expert_weights_view {
    matrix_view gate;
    matrix_view up;
    matrix_view down;
};

// For each (token, slot) assignment a with expert e = assign_expert[a] and weight w:
// out[assign_token[a]] += w · down(silu(gate(x)) ⊙ up(x)), x = h[assign_token[a]].
// Assignments are grouped by expert internally: each expert's weights are read once per call,
// the tokens routed to it are gathered into one small-M GEMM; consecutive experts with up to 16
// tokens share two linear_group passes (gate/up, then down).  `experts[e]` must be valid for
// every referenced e.  out is accumulated into (not cleared), in a fixed order per token.
void grouped_experts(const expert_weights_view* experts, int64_t num_experts, const float* h,
                     int64_t hidden, int64_t num_assignments, const int32_t* assign_token,
                     const int32_t* assign_expert, const float* assign_weight, float* out);

// -- MLA attention over a paged latent cache ------------------------------------------------
// Cache row layout (per token, per attention block): [c_kv (kv_lora_rank) | k_rope (rope_dim)],
// c_kv after kv_a_layernorm and the ×sqrt(hidden/kv_lora_rank) scale, k_rope after RoPE in
// de-interleaved order.  Rows live in pages of page_size tokens; row(pos) is at
// pool + (page_table[pos / page_size] · page_size + pos % page_size) · row_dim.
struct kv_pool_view {
    void* data = nullptr;
    dtype type = dtype::f32;  // f32 | bf16
    int64_t page_size = 0;
    int64_t row_dim = 0;  // kv_lora_rank + rope_dim
};

struct mla_dims {
    int64_t num_heads;
    int64_t qk_nope_head_dim;
    int64_t qk_rope_head_dim;
    int64_t v_head_dim;
    int64_t kv_lora_rank;
    float softmax_scale;
};

// Writes rows for positions [first_pos, first_pos + num_tokens) from src rows [num_tokens, row_dim].
void kv_write(const kv_pool_view& pool, const int32_t* page_table, int64_t first_pos,
              int64_t num_tokens, const float* src);

// Prefill/extend form: keys and values are expanded per head through kv_b_proj for every cached
// position 0..first_pos+num_tokens-1, then causal softmax attention. The context is expanded a
// block of positions at a time, each block's gathered rows and expanded keys/values within
// `block_bytes` (at least one position), with an online softmax across blocks: the scratch stays
// bounded at any context length (plus a score tile of up to 256 tokens × the block's positions).
// Scores and the weighted values are sgemms per head and tile of query tokens.
//   q: [num_tokens, num_heads, nope + rope] (rope part already rotated); out: [num_tokens,
//   num_heads, v]
inline constexpr int64_t kMlaPrefillBlockBytes = int64_t{64} << 20;
void mla_attention_prefill(const mla_dims& d, const kv_pool_view& pool, const int32_t* page_table,
                           int64_t first_pos, int64_t num_tokens, const float* q,
                           const matrix_view& kv_b_proj, float* out,
                           int64_t block_bytes = kMlaPrefillBlockBytes);

// Weight-absorbed decode form for one new token per sequence at position pos (its own row is
// already written): q̃ = W_UKᵀ q_nope, scores over c_kv and k_rope, o = W_UV · Σ p·c_kv.
//   q: [num_heads, nope + rope]; out: [num_heads, v]
void mla_attention_decode(const mla_dims& d, const kv_pool_view& pool, const int32_t* page_table,
                          int64_t pos, const float* q, const matrix_view& kv_b_proj, float* out);

// One sequence of mla_attention_decode_batch: its page table, its new token's position, its
// query [num_heads, nope + rope] and where its output [num_heads, v] goes.
struct mla_decode_seq {
    const int32_t* page_table;
    int64_t pos;
    const float* q;
    float* out;
};

// The decode form for several sequences at once (one parallel loop over sequences and heads);
// each sequence's output is bitwise what mla_attention_decode gives for it alone. The cache rows
// of a loop's sequences are gathered as fp32 first, at most max_gather_bytes of them (a longer
// context runs alone): more sequences than fit take several loops.
void mla_attention_decode_batch(const mla_dims& d, const kv_pool_view& pool,
                                const mla_decode_seq* seqs, int64_t count,
                                const matrix_view& kv_b_proj,
                                int64_t max_gather_bytes = int64_t{64} << 20);

// -- threads --------------------------------------------------------------------------------
// The compute-thread budget of this process (OpenMP and OpenBLAS).  0 = leave the default.
void set_num_threads(int num_threads);
int num_threads();

}  // namespace longcat::kernels
