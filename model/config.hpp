// model_config: the facts of a LongCat-Flash checkpoint, read from its config.json.
// Model facts only; runtime knobs (threads, KV dtype, page size) live in engine_options.
// Every field is validated at parse time; an error names the file and the field.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace longcat::model {

struct model_config {
    std::string model_type = "longcat_flash";
    std::vector<std::string> architectures = {"LongcatFlashForCausalLM"};
    std::string attention_method = "MLA";

    int64_t vocab_size = 131072;
    int64_t hidden_size = 6144;
    int64_t num_layers = 28;           // ScMoE layers; each has 2 attention blocks
    int64_t num_attention_heads = 64;
    int64_t num_key_value_heads = 64;  // MHA semantics after MLA expansion
    int64_t q_lora_rank = 1536;
    int64_t kv_lora_rank = 512;
    int64_t qk_nope_head_dim = 128;
    int64_t qk_rope_head_dim = 64;     // the RoPE dimension; `head_dim` must equal it
    int64_t v_head_dim = 128;
    int64_t ffn_hidden_size = 12288;        // alias intermediate_size
    int64_t expert_ffn_hidden_size = 2048;  // alias moe_intermediate_size
    int64_t n_routed_experts = 512;         // alias num_local_experts
    int64_t zero_expert_num = 256;
    std::string zero_expert_type = "identity";
    int64_t moe_topk = 12;                  // alias num_experts_per_tok
    double routed_scaling_factor = 6.0;
    bool mla_scale_q_lora = true;
    bool mla_scale_kv_lora = true;
    double rope_theta = 1e7;
    int64_t max_position_embeddings = 131072;
    double rms_norm_eps = 1e-5;
    bool attention_bias = false;
    double attention_dropout = 0.0;
    int64_t bos_token_id = 1;
    int64_t eos_token_id = 2;
    bool tie_word_embeddings = false;
    std::string hidden_act = "silu";
    bool router_bias = false;
    bool norm_topk_prob = false;
    int64_t num_nextn_layers = 1;  // MTP layers present in the checkpoint (0 or 1)
    // Block FP8: [128, 128] when the checkpoint carries weight_scale_inv tensors.
    std::vector<int64_t> weight_block_size;

    // -- derived ----------------------------------------------------------------
    int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
    int64_t num_experts_total() const { return n_routed_experts + zero_expert_num; }
    int64_t num_attention_blocks() const { return 2 * num_layers; }
    // HF eps of q_a_layernorm / kv_a_layernorm (RMSNorm class default, not rms_norm_eps).
    static constexpr double kLoraNormEps = 1e-6;
};

// Parses and validates config.json text; `origin` names the file in error messages.
// Throws model_error on malformed JSON, wrong types, missing or invalid fields.
model_config parse_model_config(const std::string& json_text, const std::string& origin);
model_config load_model_config(const std::filesystem::path& config_json);
// Serialises a config to config.json text (the HF field names; `head_dim` = qk_rope_head_dim).
std::string model_config_to_json(const model_config& cfg);

}  // namespace longcat::model
