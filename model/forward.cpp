#include "model/forward.hpp"

#include <cmath>
#include <cstring>

#include "model/error.hpp"

namespace longcat::model {
namespace {

using kernels::matrix_view;

kernels::mla_dims dims_of(const model_config& c) {
    return kernels::mla_dims{c.num_attention_heads, c.qk_nope_head_dim, c.qk_rope_head_dim,
                             c.v_head_dim, c.kv_lora_rank,
                             static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.qk_head_dim())))};
}

void add_into(std::vector<float>& x, const std::vector<float>& y) {
    const size_t n = x.size();
    for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

// MLA projections of one attention block: q (scaled, rotated) into q_out, and the cache rows
// [c_kv | k_rope] of the batch tokens written into the block's pool.
void mla_project(const model_config& c, const attention_block_weights& a, kernels::kv_pool_view pool,
                 const forward_batch& batch, const float* hn, std::vector<float>& q_out) {
    const int64_t T = batch.num_tokens(), H = c.num_attention_heads, qk = c.qk_head_dim();
    const int64_t lora = c.kv_lora_rank, rope = c.qk_rope_head_dim, row_dim = lora + rope;
    std::vector<float> cq(static_cast<size_t>(T * c.q_lora_rank)), ckv(static_cast<size_t>(T * row_dim));
    // q_a and kv_a read the same input: one pass for both (kernels::linear_group).
    const kernels::linear_job down_projections[] = {{a.q_a_proj, hn, T, cq.data()},
                                                    {a.kv_a_proj_with_mqa, hn, T, ckv.data()}};
    kernels::linear_group(down_projections, 2);
    kernels::rms_norm(cq.data(), a.q_a_layernorm.data(), T, c.q_lora_rank,
                      static_cast<float>(model_config::kLoraNormEps), cq.data());
    q_out.resize(static_cast<size_t>(T * H * qk));
    kernels::linear(a.q_b_proj, cq.data(), T, q_out.data());
    // mla_scale_q_lora: q ×= sqrt(hidden / q_lora_rank) (validated always on, as HF).
    const float alpha_q = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size) /
                                                       static_cast<double>(c.q_lora_rank)));
    for (float& v : q_out) v *= alpha_q;
    const float theta = static_cast<float>(c.rope_theta);
    kernels::rope_interleaved(q_out.data() + c.qk_nope_head_dim, T, H, qk, rope,
                              batch.positions.data(), theta);

    const float alpha_kv = static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size) /
                                                        static_cast<double>(lora)));
    for (int64_t t = 0; t < T; ++t) {
        float* row = ckv.data() + t * row_dim;
        kernels::rms_norm(row, a.kv_a_layernorm.data(), 1, lora,
                          static_cast<float>(model_config::kLoraNormEps), row);
        for (int64_t i = 0; i < lora; ++i) row[i] *= alpha_kv;
    }
    kernels::rope_interleaved(ckv.data() + lora, T, 1, row_dim, rope, batch.positions.data(), theta);
    for (const sequence_slice& s : batch.seqs)
        kernels::kv_write(pool, s.page_table, s.first_pos, s.num_tokens,
                          ckv.data() + s.token_begin * row_dim);
}

// Core attention over the cache and o_proj; x += o_proj(attn).
void mla_core(const model_config& c, const attention_block_weights& a, kernels::kv_pool_view pool,
              const forward_batch& batch, const std::vector<float>& q, std::vector<float>& x) {
    const int64_t T = batch.num_tokens(), H = c.num_attention_heads, qk = c.qk_head_dim(),
                  vd = c.v_head_dim;
    const kernels::mla_dims d = dims_of(c);
    std::vector<float> attn(static_cast<size_t>(T * H * vd));
    // The one-token sequences together (one parallel region), the others one by one.
    std::vector<kernels::mla_decode_seq> decode;
    for (const sequence_slice& s : batch.seqs) {
        const float* qs = q.data() + s.token_begin * H * qk;
        float* os = attn.data() + s.token_begin * H * vd;
        if (s.num_tokens == 1)
            decode.push_back({s.page_table, s.first_pos, qs, os});
        else
            kernels::mla_attention_prefill(d, pool, s.page_table, s.first_pos, s.num_tokens, qs,
                                           a.kv_b_proj, os);
    }
    kernels::mla_attention_decode_batch(d, pool, decode.data(), static_cast<int64_t>(decode.size()),
                                        a.kv_b_proj);
    std::vector<float> o(static_cast<size_t>(T * c.hidden_size));
    kernels::linear(a.o_proj, attn.data(), T, o.data());
    add_into(x, o);
}

void attention_block(const model_config& c, const attention_block_weights& a,
                     const std::vector<float>& norm_w, kernels::kv_pool_view pool,
                     const forward_batch& batch, std::vector<float>& x) {
    const int64_t T = batch.num_tokens();
    std::vector<float> hn(x.size()), q;
    kernels::rms_norm(x.data(), norm_w.data(), T, c.hidden_size, static_cast<float>(c.rms_norm_eps),
                      hn.data());
    mla_project(c, a, pool, batch, hn.data(), q);
    mla_core(c, a, pool, batch, q, x);
}

}  // namespace

void embed(const matrix_view& table, const std::vector<int32_t>& token_ids, std::vector<float>& x) {
    const int64_t T = static_cast<int64_t>(token_ids.size()), H = table.cols;
    x.resize(static_cast<size_t>(T * H));
    for (int64_t t = 0; t < T; ++t) {
        const int32_t id = token_ids[t];
        if (id < 0 || id >= table.rows)
            throw model_error("embed: token id " + std::to_string(id) + " outside the vocabulary of " +
                              std::to_string(table.rows));
        float* dst = x.data() + t * H;
        if (table.type == kernels::dtype::f32) {
            std::memcpy(dst, static_cast<const float*>(table.data) + id * H, sizeof(float) * H);
        } else {
            const auto* src = static_cast<const kernels::bf16_t*>(table.data) + id * H;
            for (int64_t i = 0; i < H; ++i) dst[i] = kernels::bf16_to_f32(src[i]);
        }
    }
}

void dense_ffn(const dense_ffn_weights& w, const float* h, int64_t num_tokens, int64_t hidden,
               float* out) {
    const int64_t inter = w.gate.rows;
    std::vector<float> g(static_cast<size_t>(num_tokens * inter)), u(g.size()),
        y(static_cast<size_t>(num_tokens * hidden));
    const kernels::linear_job gate_up[] = {{w.gate, h, num_tokens, g.data()}, {w.up, h, num_tokens, u.data()}};
    kernels::linear_group(gate_up, 2);
    kernels::silu_mul(g.data(), u.data(), num_tokens * inter, g.data());
    kernels::linear(w.down, g.data(), num_tokens, y.data());
    for (int64_t i = 0; i < num_tokens * hidden; ++i) out[i] += y[i];
}

void stage_front(const model_weights& w, int64_t layer_idx, const forward_batch& batch,
                 kv_cache& kv, std::vector<float>& x, layer_activations& act) {
    const model_config& c = w.config;
    const layer_weights& lw = w.layers[layer_idx];
    const int64_t T = batch.num_tokens(), H = c.hidden_size, K = c.moe_topk;
    attention_block(c, lw.attn[0], lw.input_layernorm[0], kv.pool(2 * layer_idx), batch, x);
    act.h.resize(x.size());
    kernels::rms_norm(x.data(), lw.post_attention_layernorm[0].data(), T, H,
                      static_cast<float>(c.rms_norm_eps), act.h.data());
    act.topk_idx.resize(static_cast<size_t>(T * K));
    act.topk_w.resize(static_cast<size_t>(T * K));
    kernels::moe_gate(act.h.data(), lw.gate_weight.data(), lw.gate_bias.data(), T, H,
                      c.num_experts_total(), K, static_cast<float>(c.routed_scaling_factor),
                      act.topk_idx.data(), act.topk_w.data());
    route_after_gate(c, T, act);
}

void route_after_gate(const model_config& c, int64_t T, layer_activations& act) {
    const int64_t H = c.hidden_size, K = c.moe_topk;
    // Zero (identity) experts: w·h, computed here and never sent anywhere.
    act.zero_out.assign(static_cast<size_t>(T * H), 0.0f);
    act.dispatch.clear();
    for (int64_t t = 0; t < T; ++t) {
        for (int64_t k = 0; k < K; ++k) {
            const int32_t e = act.topk_idx[t * K + k];
            const float wt = act.topk_w[t * K + k];
            if (e >= c.n_routed_experts) {
                const float* hr = act.h.data() + t * H;
                float* zr = act.zero_out.data() + t * H;
                for (int64_t i = 0; i < H; ++i) zr[i] += wt * hr[i];
            } else {
                act.dispatch.token.push_back(static_cast<int32_t>(t));
                act.dispatch.expert.push_back(e);
                act.dispatch.weight.push_back(wt);
            }
        }
    }
    act.num_real_slots = static_cast<int64_t>(act.dispatch.token.size());
}

void stage_experts(const model_weights& w, int64_t layer_idx, const float* h, int64_t num_rows,
                   const expert_dispatch& dispatch, float* out) {
    const auto& experts = w.experts[layer_idx];
    for (int32_t e : dispatch.expert)
        if (!w.holds_expert(layer_idx, e))
            throw model_error("experts: layer " + std::to_string(layer_idx) + " expert " +
                              std::to_string(e) + " is not held by this process");
    (void)num_rows;
    kernels::grouped_experts(experts.data(), static_cast<int64_t>(experts.size()), h,
                             w.config.hidden_size, static_cast<int64_t>(dispatch.token.size()),
                             dispatch.token.data(), dispatch.expert.data(), dispatch.weight.data(),
                             out);
}

void stage_mid(const model_weights& w, int64_t layer_idx, const forward_batch& batch,
               kv_cache& kv, std::vector<float>& x, layer_activations& act,
               const dense_ffn_runner& ffn) {
    const model_config& c = w.config;
    const layer_weights& lw = w.layers[layer_idx];
    const int64_t T = batch.num_tokens(), H = c.hidden_size;
    if (ffn)
        ffn(lw.mlps[0], act.h.data(), T, x.data());
    else
        dense_ffn(lw.mlps[0], act.h.data(), T, H, x.data());
    std::vector<float> h1(x.size());
    kernels::rms_norm(x.data(), lw.input_layernorm[1].data(), T, H,
                      static_cast<float>(c.rms_norm_eps), h1.data());
    mla_project(c, lw.attn[1], kv.pool(2 * layer_idx + 1), batch, h1.data(), act.q);
}

void stage_back(const model_weights& w, int64_t layer_idx, const forward_batch& batch,
                kv_cache& kv, std::vector<float>& x, layer_activations& act,
                const dense_ffn_runner& ffn) {
    const model_config& c = w.config;
    const layer_weights& lw = w.layers[layer_idx];
    const int64_t T = batch.num_tokens(), H = c.hidden_size;
    mla_core(c, lw.attn[1], kv.pool(2 * layer_idx + 1), batch, act.q, x);
    std::vector<float> h2(x.size());
    kernels::rms_norm(x.data(), lw.post_attention_layernorm[1].data(), T, H,
                      static_cast<float>(c.rms_norm_eps), h2.data());
    if (ffn)
        ffn(lw.mlps[1], h2.data(), T, x.data());
    else
        dense_ffn(lw.mlps[1], h2.data(), T, H, x.data());
}

void stage_join(const model_weights& w, int64_t layer_idx, std::vector<float>& x,
                layer_activations& act) {
    (void)w;
    (void)layer_idx;
    const size_t n = x.size();
    for (size_t i = 0; i < n; ++i) x[i] += act.moe_out[i] + act.zero_out[i];
}

namespace {

uint64_t bytes_of(const kernels::matrix_view& m) {
    return static_cast<uint64_t>(m.rows * m.cols) * kernels::dtype_size(m.type);
}

uint64_t bytes_of(const attention_block_weights& a) {
    return bytes_of(a.q_a_proj) + bytes_of(a.q_b_proj) + bytes_of(a.kv_a_proj_with_mqa) +
           bytes_of(a.kv_b_proj) + bytes_of(a.o_proj);
}

uint64_t bytes_of(const dense_ffn_weights& d) {
    return bytes_of(d.gate) + bytes_of(d.up) + bytes_of(d.down);
}

// Weight and KV bytes of one layer's attention worker stages for this batch (experts apart).
void count_layer(const model_weights& w, int64_t layer_idx, const forward_batch& batch,
                 kernels::dtype kv_type, step_traffic& t) {
    const model_config& c = w.config;
    const layer_weights& lw = w.layers[layer_idx];
    const uint64_t f = sizeof(float);
    t.norms += f * static_cast<uint64_t>(4 * c.hidden_size + 2 * (c.q_lora_rank + c.kv_lora_rank));
    t.gate += f * static_cast<uint64_t>(lw.gate_weight.size() + lw.gate_bias.size());
    t.attention += bytes_of(lw.attn[0]) + bytes_of(lw.attn[1]);
    t.dense_ffn += bytes_of(lw.mlps[0]) + bytes_of(lw.mlps[1]);
    uint64_t rows = 0;
    for (const sequence_slice& s : batch.seqs) rows += static_cast<uint64_t>(s.first_pos + s.num_tokens);
    t.kv_read += 2 * rows * static_cast<uint64_t>(c.kv_lora_rank + c.qk_rope_head_dim) *
                 kernels::dtype_size(kv_type);
}

}  // namespace

std::vector<float> compute_logits(const model_weights& w, const std::vector<float>& normed,
                                  const forward_batch& batch, bool all_rows) {
    const int64_t H = w.config.hidden_size, V = w.lm_head.rows;
    std::vector<float> rows;
    int64_t num_rows;
    const float* src;
    if (all_rows) {
        num_rows = batch.num_tokens();
        src = normed.data();
    } else {
        num_rows = static_cast<int64_t>(batch.seqs.size());
        rows.resize(static_cast<size_t>(num_rows * H));
        for (int64_t s = 0; s < num_rows; ++s) {
            const sequence_slice& sl = batch.seqs[s];
            std::memcpy(rows.data() + s * H,
                        normed.data() + (sl.token_begin + sl.num_tokens - 1) * H, sizeof(float) * H);
        }
        src = rows.data();
    }
    std::vector<float> logits(static_cast<size_t>(num_rows * V));
    kernels::linear(w.lm_head, src, num_rows, logits.data());
    return logits;
}


forward_output forward(const model_weights& w, const forward_batch& batch, kv_cache& kv,
                       const forward_options& opts) {
    const model_config& c = w.config;
    const int64_t T = batch.num_tokens();
    std::vector<float> x;
    embed(w.embed_tokens, batch.token_ids, x);
    if (opts.on_hidden) opts.on_hidden(-1, x);
    forward_output out;
    layer_activations act;
    step_traffic& tr = out.traffic;
    tr.embedding = static_cast<uint64_t>(T * c.hidden_size) * kernels::dtype_size(w.embed_tokens.type);
    std::vector<uint8_t> used(static_cast<size_t>(c.n_routed_experts));
    for (int64_t l = 0; l < c.num_layers; ++l) {
        stage_front(w, l, batch, kv, x, act);
        count_layer(w, l, batch, kv.pool(0).type, tr);
        std::fill(used.begin(), used.end(), 0);
        for (int32_t e : act.dispatch.expert) {
            if (used[e]) continue;
            used[e] = 1;
            const kernels::expert_weights_view& ev = w.experts[l][e];
            tr.experts += bytes_of(ev.gate) + bytes_of(ev.up) + bytes_of(ev.down);
            ++out.num_distinct_experts;
        }
        act.moe_out.assign(x.size(), 0.0f);
        stage_experts(w, l, act.h.data(), T, act.dispatch, act.moe_out.data());
        stage_mid(w, l, batch, kv, x, act);
        stage_back(w, l, batch, kv, x, act);
        stage_join(w, l, x, act);
        out.num_real_slots += act.num_real_slots;
        if (opts.on_hidden) opts.on_hidden(l, x);
    }
    out.final_norm.resize(x.size());
    kernels::rms_norm(x.data(), w.final_norm.data(), T, c.hidden_size,
                      static_cast<float>(c.rms_norm_eps), out.final_norm.data());
    out.logits = compute_logits(w, out.final_norm, batch, opts.all_logits);
    tr.norms += sizeof(float) * static_cast<uint64_t>(c.hidden_size);
    tr.lm_head = bytes_of(w.lm_head);
    return out;
}

std::vector<float> forward_mtp(const model_weights& w, const forward_batch& batch, kv_cache& kv,
                               const float* h_final) {
    if (!w.mtp) throw model_error("forward_mtp: the checkpoint has no MTP layer");
    const model_config& c = w.config;
    const mtp_weights& m = *w.mtp;
    const int64_t T = batch.num_tokens(), H = c.hidden_size;
    const float eps = static_cast<float>(c.rms_norm_eps);
    std::vector<float> e;
    embed(m.embed_tokens, batch.token_ids, e);
    std::vector<float> cat(static_cast<size_t>(T * 2 * H));
    for (int64_t t = 0; t < T; ++t) {
        kernels::rms_norm(e.data() + t * H, m.enorm.data(), 1, H, eps, cat.data() + t * 2 * H);
        kernels::rms_norm(h_final + t * H, m.hnorm.data(), 1, H, eps, cat.data() + t * 2 * H + H);
    }
    std::vector<float> z(static_cast<size_t>(T * H));
    kernels::linear(m.eh_proj, cat.data(), T, z.data());
    attention_block(c, m.attn, m.input_layernorm, kv.pool(kv.mtp_pool()), batch, z);
    std::vector<float> hn(z.size());
    kernels::rms_norm(z.data(), m.post_attention_layernorm.data(), T, H, eps, hn.data());
    dense_ffn(m.mlp, hn.data(), T, H, z.data());
    kernels::rms_norm(z.data(), m.final_norm.data(), T, H, eps, hn.data());
    return compute_logits(w, hn, batch, true);
}

}  // namespace longcat::model
