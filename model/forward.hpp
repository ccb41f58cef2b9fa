// The LongCat-Flash forward pass as the stage functions of ARCHITECTURE.md §4.
// One ScMoE layer on an attention worker:
//   front:   x += MLA_0(in_norm_0(x)); h = post_norm_0(x); top-k = gate(h); z = Σ zero-slot w·h
//   experts: Σ_real-slots w·FFN_e(h)            (an expert group; in-process here)
//   mid:     x += MLP_0(h); h1 = in_norm_1(x); q, c_kv, k_rope = MLA_1.proj(h1); write KV
//   back:    x += o_proj(MLA_1.core(q, KV)); x += MLP_1(post_norm_1(x))
//   join:    x += combine + z
// The cluster runs `experts` in other processes; the single-process engine runs all five here.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/kv_cache.hpp"
#include "model/weights.hpp"

namespace longcat::model {

// One request's share of a batch: its new tokens are batch rows
// [token_begin, token_begin + num_tokens), at positions first_pos, first_pos + 1, ...
struct sequence_slice {
    int64_t token_begin = 0;
    int64_t num_tokens = 0;
    int64_t first_pos = 0;  // tokens already in the cache
    const int32_t* page_table = nullptr;
};

struct forward_batch {
    std::vector<int32_t> token_ids;  // [T]
    std::vector<int32_t> positions;  // [T]
    std::vector<sequence_slice> seqs;
    int64_t num_tokens() const { return static_cast<int64_t>(token_ids.size()); }
};

// The tokens an expert stage receives: assignment a sends row token[a] to expert expert[a]
// with gate weight weight[a] (real experts only).
struct expert_dispatch {
    std::vector<int32_t> token;
    std::vector<int32_t> expert;
    std::vector<float> weight;
    void clear() { token.clear(); expert.clear(); weight.clear(); }
};

// State carried between the stages of one layer for one (micro-)batch.
struct layer_activations {
    std::vector<float> h;          // [T, hidden] post_norm_0 output: MoE and MLP_0 input
    std::vector<int32_t> topk_idx; // [T, top_k]
    std::vector<float> topk_w;     // [T, top_k], ×routed_scaling_factor
    std::vector<float> zero_out;   // [T, hidden] Σ zero-slot w·h
    expert_dispatch dispatch;      // real-expert slots
    std::vector<float> q;          // [T, heads, nope+rope] MLA_1 query (mid → back)
    std::vector<float> moe_out;    // [T, hidden] combine result
    int64_t num_real_slots = 0;    // real-expert assignments (the zero-expert effect)
};

void stage_front(const model_weights& w, int64_t layer_idx, const forward_batch& batch,
                 kv_cache& kv, std::vector<float>& x, layer_activations& act);
// The post-gate part of `front`: from act.h and the gate's top-k, the zero-expert sum
// (act.zero_out) and the real-expert dispatch list.  Called by stage_front.
void route_after_gate(const model_config& c, int64_t num_tokens, layer_activations& act);
// h: [num_rows, hidden]; out is accumulated into.  Experts not held throw.
void stage_experts(const model_weights& w, int64_t layer_idx, const float* h, int64_t num_rows,
                   const expert_dispatch& dispatch, float* out);
// How mid/back run a dense FFN: out += FFN(h) over num_tokens rows.  Empty = `dense_ffn` on this
// process's weights; a TP group passes one that all-gathers, runs its shard and reduce-scatters.
using dense_ffn_runner =
    std::function<void(const dense_ffn_weights& w, const float* h, int64_t num_tokens, float* out)>;

void stage_mid(const model_weights& w, int64_t layer_idx, const forward_batch& batch,
               kv_cache& kv, std::vector<float>& x, layer_activations& act,
               const dense_ffn_runner& ffn = {});
void stage_back(const model_weights& w, int64_t layer_idx, const forward_batch& batch,
                kv_cache& kv, std::vector<float>& x, layer_activations& act,
                const dense_ffn_runner& ffn = {});
void stage_join(const model_weights& w, int64_t layer_idx, std::vector<float>& x,
                layer_activations& act);

// Embedding rows for the batch tokens: x [T, hidden].
void embed(const kernels::matrix_view& table, const std::vector<int32_t>& token_ids,
           std::vector<float>& x);

// A dense SwiGLU FFN (or this rank's shard of it, whose partial sum the caller reduces):
// out += down(silu(gate(h)) ⊙ up(h)).
void dense_ffn(const dense_ffn_weights& w, const float* h, int64_t num_tokens, int64_t hidden,
               float* out);

struct forward_options {
    bool all_logits = false;  // logits for every batch row, else only each sequence's last row
    // Called with (layer_idx, x) after every layer, and (-1, x) after the embedding.
    std::function<void(int64_t, const std::vector<float>&)> on_hidden;
};

// The bytes one forward step touches in memory, by kind, counted from the weights it reads
// and the batch (each weight matrix once per step: every kernel reads a weight once for all
// the batch's tokens; experts counted once per distinct expert routed to in a layer).
struct step_traffic {
    uint64_t embedding = 0;  // embedding rows of the batch tokens
    uint64_t norms = 0;      // RMSNorm weights (fp32)
    uint64_t gate = 0;       // the fp32 gate and its correction bias
    uint64_t attention = 0;  // q_a, q_b, kv_a, kv_b, o_proj of every attention block
    uint64_t dense_ffn = 0;  // both dense FFNs of every layer (this rank's shard)
    uint64_t experts = 0;    // gate/up/down of each distinct routed expert chosen
    uint64_t lm_head = 0;
    uint64_t kv_read = 0;    // cached latent rows read by attention
    uint64_t total() const {
        return embedding + norms + gate + attention + dense_ffn + experts + lm_head + kv_read;
    }
};

struct forward_output {
    std::vector<float> logits;      // [rows, vocab]: all rows or one per sequence
    std::vector<float> final_norm;  // [T, hidden] model.norm output (the MTP layer's input)
    int64_t num_real_slots = 0;     // real-expert assignments over all layers
    int64_t num_distinct_experts = 0;  // Σ over layers of distinct real experts routed to
    step_traffic traffic;
};

// lm_head over final-normed rows: every batch row, or each sequence's last row.
std::vector<float> compute_logits(const model_weights& w, const std::vector<float>& normed,
                                  const forward_batch& batch, bool all_rows);

// Runs every layer (all stages in this process), the final norm and lm_head.
forward_output forward(const model_weights& w, const forward_batch& batch, kv_cache& kv,
                       const forward_options& opts = {});

// The MTP layer (longcat-flash.md §5).  Row i takes the embedding of batch.token_ids[i] (the
// token after the one whose main-model final-normed hidden state is h_final[i]) and writes its
// own KV pool; returns the draft logits [T, vocab].
std::vector<float> forward_mtp(const model_weights& w, const forward_batch& batch, kv_cache& kv,
                               const float* h_final);

}  // namespace longcat::model
