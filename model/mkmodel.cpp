#include "model/mkmodel.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/counter_rng.hpp"
#include "model/error.hpp"
#include "model/safetensors.hpp"

namespace longcat::model {
namespace {

using kernels::dtype;

model_config make_config(int64_t layers, int64_t hidden, int64_t heads, int64_t q_lora,
                         int64_t kv_lora, int64_t nope, int64_t rope, int64_t v, int64_t ffn,
                         int64_t expert_ffn, int64_t real, int64_t zero, int64_t topk,
                         int64_t vocab, int64_t max_pos) {
    model_config c;
    c.num_layers = layers;
    c.hidden_size = hidden;
    c.num_attention_heads = heads;
    c.num_key_value_heads = heads;
    c.q_lora_rank = q_lora;
    c.kv_lora_rank = kv_lora;
    c.qk_nope_head_dim = nope;
    c.qk_rope_head_dim = rope;
    c.v_head_dim = v;
    c.ffn_hidden_size = ffn;
    c.expert_ffn_hidden_size = expert_ffn;
    c.n_routed_experts = real;
    c.zero_expert_num = zero;
    c.moe_topk = topk;
    c.vocab_size = vocab;
    c.max_position_embeddings = max_pos;
    return c;
}

uint64_t name_hash(const std::string& s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
    return h;
}

// Deterministic N(0, 1) values: Box–Muller over a counter-based generator keyed by
// (seed, tensor name, element index), so every tensor is reproducible on its own.
void fill_normal(std::vector<float>& v, uint64_t seed, const std::string& name, float mean,
                 float stddev) {
    const uint64_t key = splitmix64(seed ^ name_hash(name));
    const int64_t n = static_cast<int64_t>(v.size());
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
        const uint64_t a = splitmix64(key ^ (2 * static_cast<uint64_t>(i)));
        const uint64_t b = splitmix64(key ^ (2 * static_cast<uint64_t>(i) + 1));
        const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;
        const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;
        const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        v[i] = mean + stddev * static_cast<float>(z);
    }
}

struct writer_state {
    const mkmodel_options* opts;
    std::vector<tensor_data> tensors;
    int64_t num_params = 0;
};

std::vector<uint8_t> to_bytes(const std::vector<float>& v, dtype t) {
    std::vector<uint8_t> out(v.size() * kernels::dtype_size(t));
    if (t == dtype::f32) {
        std::memcpy(out.data(), v.data(), out.size());
    } else {
        auto* d = reinterpret_cast<kernels::bf16_t*>(out.data());
        for (size_t i = 0; i < v.size(); ++i) d[i] = kernels::f32_to_bf16(v[i]);
    }
    return out;
}

dtype float_dtype(const mkmodel_options& o) {
    return o.dtype == checkpoint_dtype::fp32 ? dtype::f32 : dtype::bf16;
}

void add_tensor(writer_state& st, const std::string& name, std::vector<int64_t> shape,
                std::vector<float> values, dtype t) {
    st.num_params += static_cast<int64_t>(values.size());
    st.tensors.push_back({name, t, std::move(shape), to_bytes(values, t)});
}

void add_norm(writer_state& st, const std::string& name, int64_t dim) {
    std::vector<float> v(static_cast<size_t>(dim));
    fill_normal(v, st.opts->seed, name, 1.0f, 0.1f);
    add_tensor(st, name, {dim}, std::move(v), float_dtype(*st.opts));
}

// Block FP8 (e4m3fn) with one fp32 scale_inv per 128×128 block: scale_inv = amax / 448.
void add_fp8_linear(writer_state& st, const std::string& name, int64_t rows, int64_t cols,
                    const std::vector<float>& w) {
    constexpr int64_t kBlock = 128;
    const int64_t br = (rows + kBlock - 1) / kBlock, bc = (cols + kBlock - 1) / kBlock;
    std::vector<float> scale(static_cast<size_t>(br * bc));
    std::vector<uint8_t> q(static_cast<size_t>(rows * cols));
    for (int64_t i = 0; i < br; ++i) {
        for (int64_t j = 0; j < bc; ++j) {
            float amax = 0;
            for (int64_t r = i * kBlock; r < std::min(rows, (i + 1) * kBlock); ++r)
                for (int64_t c = j * kBlock; c < std::min(cols, (j + 1) * kBlock); ++c)
                    amax = std::max(amax, std::fabs(w[r * cols + c]));
            const float s = amax > 0 ? amax / 448.0f : 1.0f;
            scale[i * bc + j] = s;
            for (int64_t r = i * kBlock; r < std::min(rows, (i + 1) * kBlock); ++r)
                for (int64_t c = j * kBlock; c < std::min(cols, (j + 1) * kBlock); ++c)
                    q[r * cols + c] = kernels::f32_to_f8_e4m3(w[r * cols + c] / s);
        }
    }
    st.num_params += rows * cols;
    st.tensors.push_back({name, dtype::f8_e4m3, {rows, cols}, std::move(q)});
    st.tensors.push_back(
        {name + "_scale_inv", dtype::f32, {br, bc}, to_bytes(scale, dtype::f32)});
}

// Linears kept in bf16 in fp8 checkpoints (the format allows any Linear without a scale).
bool kept_high_precision(const std::string& name) {
    return name == "model.layers.0.self_attn.1.o_proj.weight" ||
           name == "model.mtp.layers.0.eh_proj.weight";
}

void add_linear(writer_state& st, const std::string& name, int64_t rows, int64_t cols,
                float gain = 1.0f) {
    std::vector<float> w(static_cast<size_t>(rows * cols));
    fill_normal(w, st.opts->seed, name, 0.0f, gain / std::sqrt(static_cast<float>(cols)));
    if (st.opts->dtype == checkpoint_dtype::fp8 && !kept_high_precision(name))
        add_fp8_linear(st, name, rows, cols, w);
    else
        add_tensor(st, name, {rows, cols}, std::move(w), float_dtype(*st.opts));
}

void add_attention(writer_state& st, const model_config& c, const std::string& p) {
    const int64_t H = c.num_attention_heads;
    add_linear(st, p + "q_a_proj.weight", c.q_lora_rank, c.hidden_size);
    add_norm(st, p + "q_a_layernorm.weight", c.q_lora_rank);
    add_linear(st, p + "q_b_proj.weight", H * c.qk_head_dim(), c.q_lora_rank);
    add_linear(st, p + "kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim,
               c.hidden_size);
    add_norm(st, p + "kv_a_layernorm.weight", c.kv_lora_rank);
    add_linear(st, p + "kv_b_proj.weight", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    add_linear(st, p + "o_proj.weight", c.hidden_size, H * c.v_head_dim);
}

void add_swiglu(writer_state& st, const std::string& p, int64_t hidden, int64_t inter) {
    add_linear(st, p + "gate_proj.weight", inter, hidden);
    add_linear(st, p + "up_proj.weight", inter, hidden);
    add_linear(st, p + "down_proj.weight", hidden, inter);
}

void add_embedding(writer_state& st, const std::string& name, const model_config& c) {
    std::vector<float> v(static_cast<size_t>(c.vocab_size * c.hidden_size));
    fill_normal(v, st.opts->seed, name, 0.0f, 1.0f);
    add_tensor(st, name, {c.vocab_size, c.hidden_size}, std::move(v), float_dtype(*st.opts));
}

std::string tokenizer_config_json(const model_config& c) {
    // The LongCat chat format as Jinja, for HF tooling; longcat-serve renders it natively.
    const std::string chat_template =
        "{% set ns = namespace(round=0, text='') %}{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set ns.text = ns.text + 'SYSTEM:' + m['content'] %}"
        "{% elif m['role'] == 'user' %}{% if ns.text %}{% set ns.text = ns.text + ' ' %}{% endif %}"
        "{% set ns.text = ns.text + '[Round ' + ns.round|string + '] USER:' + m['content'] %}"
        "{% elif m['role'] == 'assistant' %}"
        "{% set ns.text = ns.text + ' ASSISTANT:' + m['content'] + '</longcat_s>' %}"
        "{% set ns.round = ns.round + 1 %}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{% set ns.text = ns.text + ' ASSISTANT:' %}{% endif %}"
        "{{ ns.text }}";
    nlohmann::ordered_json j;
    j["tokenizer_class"] = "PreTrainedTokenizerFast";
    j["bos_token"] = "<longcat_s>";
    j["eos_token"] = "</longcat_s>";
    j["pad_token"] = "<longcat_pad>";
    j["unk_token"] = "<longcat_unk>";
    j["add_bos_token"] = true;
    j["add_eos_token"] = false;
    j["clean_up_tokenization_spaces"] = false;
    j["model_max_length"] = c.max_position_embeddings;
    j["chat_template"] = chat_template;
    return j.dump(2) + "\n";
}

void write_text(const std::filesystem::path& p, std::string_view text) {
    std::ofstream f(p, std::ios::binary);
    f.write(text.data(), static_cast<std::streamsize>(text.size()));
    if (!f) throw model_error("mkmodel: cannot write " + p.string());
}

}  // namespace

const std::vector<mkmodel_preset>& mkmodel_presets() {
    //                       layers hidden heads q_lora kv_lora nope rope  v   ffn  e_ffn real zero k  vocab  max_pos
    static const std::vector<mkmodel_preset> presets = {
        {"tiny", "gpt2", make_config(2, 64, 4, 32, 16, 16, 8, 16, 96, 32, 8, 4, 3, 1024, 4096)},
        {"tiny-b", "llama3", make_config(3, 96, 6, 48, 24, 12, 16, 20, 160, 48, 12, 6, 4, 1536, 8192)},
        {"demo", "llama3", make_config(4, 512, 8, 256, 128, 32, 16, 32, 1024, 256, 16, 8, 4, 1536, 8192)},
        {"bench", "llama3", make_config(6, 3072, 24, 768, 256, 64, 32, 64, 8192, 512, 32, 16, 8, 32000, 8192)},
    };
    return presets;
}

const mkmodel_preset& find_mkmodel_preset(const std::string& name) {
    std::string known;
    for (const auto& p : mkmodel_presets()) {
        if (p.name == name) return p;
        known += (known.empty() ? "" : ", ") + p.name;
    }
    throw model_error("mkmodel: unknown preset \"" + name + "\" (known: " + known + ")");
}

checkpoint_dtype parse_checkpoint_dtype(const std::string& s) {
    if (s == "fp32") return checkpoint_dtype::fp32;
    if (s == "bf16") return checkpoint_dtype::bf16;
    if (s == "fp8") return checkpoint_dtype::fp8;
    throw model_error("mkmodel: --dtype must be fp32, bf16 or fp8, got \"" + s + "\"");
}

int64_t make_model(const mkmodel_options& opts) {
    const mkmodel_preset& preset = find_mkmodel_preset(opts.preset);
    model_config c = preset.config;
    if (opts.dtype == checkpoint_dtype::fp8) c.weight_block_size = {128, 128};
    std::filesystem::create_directories(opts.out_dir);

    writer_state st{&opts, {}, 0};
    add_embedding(st, "model.embed_tokens.weight", c);
    for (int64_t l = 0; l < c.num_layers; ++l) {
        const std::string lp = "model.layers." + std::to_string(l) + ".";
        for (int i = 0; i < 2; ++i) {
            const std::string is = std::to_string(i);
            add_norm(st, lp + "input_layernorm." + is + ".weight", c.hidden_size);
            add_norm(st, lp + "post_attention_layernorm." + is + ".weight", c.hidden_size);
            add_attention(st, c, lp + "self_attn." + is + ".");
            add_swiglu(st, lp + "mlps." + is + ".", c.hidden_size, c.ffn_hidden_size);
        }
        // The gate: fp32 in every checkpoint dtype (HF keeps it in fp32), and a correction bias
        // large enough to move selections.
        const int64_t E = c.num_experts_total();
        std::vector<float> gw(static_cast<size_t>(E * c.hidden_size)), gb(static_cast<size_t>(E));
        fill_normal(gw, opts.seed, lp + "mlp.router.classifier.weight", 0.0f,
                    2.0f / std::sqrt(static_cast<float>(c.hidden_size)));
        fill_normal(gb, opts.seed, lp + "mlp.router.e_score_correction_bias", 0.0f,
                    0.5f / static_cast<float>(E));
        add_tensor(st, lp + "mlp.router.classifier.weight", {E, c.hidden_size}, std::move(gw), dtype::f32);
        add_tensor(st, lp + "mlp.router.e_score_correction_bias", {E}, std::move(gb), dtype::f32);
        for (int64_t e = 0; e < c.n_routed_experts; ++e)
            add_swiglu(st, lp + "mlp.experts." + std::to_string(e) + ".", c.hidden_size,
                       c.expert_ffn_hidden_size);
    }
    add_norm(st, "model.norm.weight", c.hidden_size);
    {
        std::vector<float> v(static_cast<size_t>(c.vocab_size * c.hidden_size));
        fill_normal(v, opts.seed, "lm_head.weight", 0.0f, 2.0f / std::sqrt(static_cast<float>(c.hidden_size)));
        add_tensor(st, "lm_head.weight", {c.vocab_size, c.hidden_size}, std::move(v), float_dtype(opts));
    }
    // MTP: one dense layer with its own embedding copy (distinct values, so a loader that
    // wrongly shares the main embedding is caught).
    const std::string mp = "model.mtp.layers.0.";
    add_embedding(st, "model.mtp.embed_tokens.weight", c);
    add_linear(st, mp + "eh_proj.weight", c.hidden_size, 2 * c.hidden_size);
    add_norm(st, mp + "enorm.m.weight", c.hidden_size);
    add_norm(st, mp + "hnorm.m.weight", c.hidden_size);
    add_norm(st, mp + "input_layernorm.weight", c.hidden_size);
    add_norm(st, mp + "post_attention_layernorm.weight", c.hidden_size);
    add_attention(st, c, mp + "self_attn.");
    add_swiglu(st, mp + "transformer_layer.mlp.", c.hidden_size, c.ffn_hidden_size);
    add_norm(st, "model.mtp.norm.weight", c.hidden_size);

    write_safetensors(opts.out_dir / "model.safetensors", std::move(st.tensors), {{"format", "pt"}});

    nlohmann::ordered_json cj = nlohmann::ordered_json::parse(model_config_to_json(c));
    if (opts.dtype == checkpoint_dtype::fp8)
        cj["quantization_config"] = {{"quant_method", "fp8"}, {"fmt", "e4m3"},
                                     {"activation_scheme", "dynamic"},
                                     {"weight_block_size", {128, 128}}};
    cj["torch_dtype"] = opts.dtype == checkpoint_dtype::fp32 ? "float32" : "bfloat16";
    write_text(opts.out_dir / "config.json", cj.dump(2) + "\n");
    const std::string_view tok = embedded_tokenizer_json(preset.tokenizer);
    if (tok.empty()) throw model_error("mkmodel: tokenizer \"" + preset.tokenizer + "\" is not embedded");
    write_text(opts.out_dir / "tokenizer.json", tok);
    write_text(opts.out_dir / "tokenizer_config.json", tokenizer_config_json(c));
    return st.num_params;
}

}  // namespace longcat::model
