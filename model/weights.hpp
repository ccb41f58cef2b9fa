// model_weights: the in-memory weights of one role (a full engine, an attention worker's
// TP shard, or an expert group), as kernel views over mmapped or owned storage.
// Norm weights, the gate and its bias are fp32 copies; matrices are fp32 or bf16 views.
#pragma once

#include <array>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/api/ops.hpp"
#include "model/config.hpp"

namespace longcat::model {

class checkpoint;

struct attention_block_weights {
    kernels::matrix_view q_a_proj;            // [q_lora_rank, hidden]
    std::vector<float> q_a_layernorm;         // [q_lora_rank]
    kernels::matrix_view q_b_proj;            // [heads·(nope+rope), q_lora_rank]
    kernels::matrix_view kv_a_proj_with_mqa;  // [kv_lora_rank + rope, hidden]
    std::vector<float> kv_a_layernorm;        // [kv_lora_rank]
    kernels::matrix_view kv_b_proj;           // [heads·(nope+v), kv_lora_rank]
    kernels::matrix_view o_proj;              // [hidden, heads·v]
};

// A dense SwiGLU FFN, or this rank's shard of it: gate/up rows and down columns
// [shard_begin, shard_begin + shard_size) of the intermediate dimension.
struct dense_ffn_weights {
    kernels::matrix_view gate;  // [shard, hidden]
    kernels::matrix_view up;    // [shard, hidden]
    kernels::matrix_view down;  // [hidden, shard]
};

struct layer_weights {
    std::array<std::vector<float>, 2> input_layernorm;
    std::array<std::vector<float>, 2> post_attention_layernorm;
    std::array<attention_block_weights, 2> attn;
    std::array<dense_ffn_weights, 2> mlps;
    std::vector<float> gate_weight;  // [real + zero experts, hidden], fp32
    std::vector<float> gate_bias;    // e_score_correction_bias [real + zero experts]
};

struct mtp_weights {
    kernels::matrix_view embed_tokens;  // [vocab, hidden] (the MTP layer's own copy)
    std::vector<float> enorm, hnorm;    // [hidden]
    kernels::matrix_view eh_proj;       // [hidden, 2·hidden], input order [embedding | hidden]
    std::vector<float> input_layernorm, post_attention_layernorm, final_norm;
    attention_block_weights attn;
    dense_ffn_weights mlp;
};

struct model_weights {
    model_config config;
    kernels::matrix_view embed_tokens;  // [vocab, hidden]
    kernels::matrix_view lm_head;       // [vocab, hidden]
    std::vector<float> final_norm;      // model.norm
    std::vector<layer_weights> layers;
    // experts[layer][expert_idx]: views for the routed experts this role holds; experts not
    // held have null data.  Zero experts hold nothing.
    std::vector<std::vector<kernels::expert_weights_view>> experts;
    std::optional<mtp_weights> mtp;
    int64_t tp_rank = 0, tp_size = 1;
    // Keeps mmaps and owned buffers alive.
    std::vector<std::shared_ptr<const void>> storage;

    bool holds_expert(int64_t layer_idx, int64_t expert_idx) const {
        return experts[layer_idx][expert_idx].gate.data != nullptr;
    }
};

// What one process loads (ARCHITECTURE.md §10).
struct weight_selection {
    bool attention = true;  // embeddings, attention blocks, norms, gate, dense FFN shard, MTP
    int64_t tp_rank = 0;
    int64_t tp_size = 1;
    bool all_experts = true;
    std::vector<std::vector<int32_t>> experts_by_layer;  // used when !all_experts
};

// Loads a model directory's config and the selected weights; `on_progress(done, total)` is
// called as tensors load (bytes).
model_weights load_model_weights(const std::filesystem::path& model_dir,
                                 const weight_selection& sel = {},
                                 const std::function<void(uint64_t, uint64_t)>& on_progress = {});

}  // namespace longcat::model
