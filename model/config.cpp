#include "model/config.hpp"

#include <cmath>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string_view>

#include "model/error.hpp"

namespace longcat::model {

namespace {

using json = nlohmann::json;

// Sizes beyond this are rejected so that every tensor size computed from the config fits int64.
constexpr int64_t kMaxDim = int64_t{1} << 24;
constexpr int64_t kMaxPositions = int64_t{1} << 31;
// Counts that size per-layer and per-expert tables before any tensor is read (the loader's
// layers and expert views, the load plan's tensor names, the KV pools): far above any
// LongCat-Flash checkpoint (28 layers, 512 + 256 experts), and low enough that a config asking
// for more is refused instead of allocating gigabytes of empty tables.
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxExperts = 65536;                  // routed + zero
constexpr int64_t kMaxLayerExperts = int64_t{1} << 20;  // num_layers x n_routed_experts
constexpr int64_t kFp8BlockSize = 128;

std::string type_name(const json& value) {
    if (value.is_number_integer()) return "an integer";
    if (value.is_number_float()) return "a floating-point number";
    return std::string("a ") + value.type_name();
}

// Reads the fields of one config.json object; every error names the file and the field.
class field_reader {
  public:
    field_reader(const json& root, const std::string& origin) : root_(root), origin_(origin) {}

    [[noreturn]] void fail(std::string_view field, const std::string& what) const {
        throw model_error(origin_ + ": config field `" + std::string(field) + "` " + what);
    }

    // The value of `name`, or of one of its aliases; nullptr when none is present. A JSON null is
    // returned as such (and then fails the type check), except through find_nullable.
    // Two spellings present with different values is an error naming both.
    const json* find(std::string_view name, std::initializer_list<std::string_view> aliases = {},
                     std::string* used = nullptr) const {
        const json* found = nullptr;
        std::string found_name;
        auto consider = [&](std::string_view key) {
            auto it = root_.find(std::string(key));
            if (it == root_.end()) return;
            if (found != nullptr && *found != *it) {
                fail(found_name, "conflicts with its alias `" + std::string(key) + "` (" +
                                     found->dump() + " vs " + it->dump() + ")");
            }
            if (found == nullptr) {
                found = &*it;
                found_name = std::string(key);
            }
        };
        consider(name);
        for (std::string_view alias : aliases) consider(alias);
        if (used != nullptr) *used = found != nullptr ? found_name : std::string(name);
        return found;
    }

    // For fields HF allows to be None: null reads as absent.
    const json* find_nullable(std::string_view name) const {
        const json* value = find(name);
        return value != nullptr && value->is_null() ? nullptr : value;
    }

    int64_t to_int(std::string_view field, const json& value) const {
        if (!value.is_number_integer()) fail(field, "must be an integer, got " + type_name(value));
        if (value.is_number_unsigned() &&
            value.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            fail(field, "is out of range: " + value.dump());
        }
        return value.get<int64_t>();
    }

    void read_int(std::string_view name, int64_t& out,
                  std::initializer_list<std::string_view> aliases = {}) const {
        std::string used;
        if (const json* value = find(name, aliases, &used)) out = to_int(used, *value);
    }

    void read_number(std::string_view name, double& out) const {
        if (const json* value = find(name)) {
            if (!value->is_number()) fail(name, "must be a number, got " + type_name(*value));
            out = value->get<double>();
            if (!std::isfinite(out)) fail(name, "must be finite");
        }
    }

    void read_bool(std::string_view name, bool& out) const {
        if (const json* value = find(name)) {
            if (!value->is_boolean()) fail(name, "must be a boolean, got " + type_name(*value));
            out = value->get<bool>();
        }
    }

    void read_string(std::string_view name, std::string& out) const {
        if (const json* value = find(name)) {
            if (!value->is_string()) fail(name, "must be a string, got " + type_name(*value));
            out = value->get<std::string>();
        }
    }

    void require_range(std::string_view name, int64_t value, int64_t lo, int64_t hi) const {
        if (value < lo || value > hi) {
            fail(name, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                           std::to_string(value));
        }
    }

    const std::string& origin() const { return origin_; }

  private:
    const json& root_;
    const std::string& origin_;
};

void read_rope(const field_reader& reader, model_config& cfg) {
    if (const json* scaling = reader.find_nullable("rope_scaling")) {
        reader.fail("rope_scaling", "is not supported (LongCat-Flash-Chat uses plain RoPE); got " +
                                        scaling->dump());
    }
    bool theta_seen = reader.find("rope_theta") != nullptr;
    reader.read_number("rope_theta", cfg.rope_theta);
    // Newer transformers write `rope_parameters` ({"rope_type": "default", "rope_theta": ...}).
    const json* params = reader.find_nullable("rope_parameters");
    if (params == nullptr) return;
    if (!params->is_object()) {
        reader.fail("rope_parameters", "must be an object, got " + type_name(*params));
    }
    for (const char* key : {"rope_type", "type"}) {
        auto it = params->find(key);
        if (it != params->end() && !(it->is_string() && it->get<std::string>() == "default")) {
            reader.fail(std::string("rope_parameters.") + key,
                        "is not supported (only \"default\" RoPE); got " + it->dump());
        }
    }
    auto theta = params->find("rope_theta");
    if (theta != params->end()) {
        if (!theta->is_number()) {
            reader.fail("rope_parameters.rope_theta", "must be a number, got " + type_name(*theta));
        }
        const double value = theta->get<double>();
        if (theta_seen && value != cfg.rope_theta) {
            reader.fail("rope_theta", "conflicts with `rope_parameters.rope_theta` (" +
                                          json(cfg.rope_theta).dump() + " vs " + theta->dump() +
                                          ")");
        }
        cfg.rope_theta = value;
    }
}

void read_quantization(const field_reader& reader, model_config& cfg) {
    const json* quant = reader.find_nullable("quantization_config");
    if (quant == nullptr) return;
    if (!quant->is_object()) {
        reader.fail("quantization_config", "must be an object, got " + type_name(*quant));
    }
    auto method = quant->find("quant_method");
    if (method == quant->end() || !method->is_string() || method->get<std::string>() != "fp8") {
        reader.fail("quantization_config.quant_method",
                    "must be \"fp8\" (block FP8 is the only supported quantization), got " +
                        (method == quant->end() ? std::string("nothing") : method->dump()));
    }
    auto fmt = quant->find("fmt");
    if (fmt != quant->end() && !(fmt->is_string() && fmt->get<std::string>() == "e4m3")) {
        reader.fail("quantization_config.fmt", "must be \"e4m3\", got " + fmt->dump());
    }
    auto block = quant->find("weight_block_size");
    const json expected = json::array({kFp8BlockSize, kFp8BlockSize});
    if (block == quant->end() || *block != expected) {
        reader.fail("quantization_config.weight_block_size",
                    "must be [128, 128], got " +
                        (block == quant->end() ? std::string("nothing") : block->dump()));
    }
    cfg.weight_block_size = {kFp8BlockSize, kFp8BlockSize};
}

void validate(const field_reader& reader, const model_config& cfg) {
    const std::pair<const char*, int64_t> sizes[] = {
        {"vocab_size", cfg.vocab_size},
        {"hidden_size", cfg.hidden_size},
        {"num_layers", cfg.num_layers},
        {"num_attention_heads", cfg.num_attention_heads},
        {"num_key_value_heads", cfg.num_key_value_heads},
        {"q_lora_rank", cfg.q_lora_rank},
        {"kv_lora_rank", cfg.kv_lora_rank},
        {"qk_nope_head_dim", cfg.qk_nope_head_dim},
        {"qk_rope_head_dim", cfg.qk_rope_head_dim},
        {"v_head_dim", cfg.v_head_dim},
        {"ffn_hidden_size", cfg.ffn_hidden_size},
        {"expert_ffn_hidden_size", cfg.expert_ffn_hidden_size},
        {"n_routed_experts", cfg.n_routed_experts},
        {"moe_topk", cfg.moe_topk},
    };
    for (const auto& [name, value] : sizes) reader.require_range(name, value, 1, kMaxDim);
    reader.require_range("zero_expert_num", cfg.zero_expert_num, 0, kMaxDim);
    reader.require_range("num_layers", cfg.num_layers, 1, kMaxLayers);
    if (cfg.num_experts_total() > kMaxExperts) {
        reader.fail("n_routed_experts", "n_routed_experts + zero_expert_num must be at most " +
                                            std::to_string(kMaxExperts) + ", got " +
                                            std::to_string(cfg.num_experts_total()));
    }
    if (cfg.num_layers * cfg.n_routed_experts > kMaxLayerExperts) {
        reader.fail("n_routed_experts", "num_layers x n_routed_experts must be at most " +
                                            std::to_string(kMaxLayerExperts) + ", got " +
                                            std::to_string(cfg.num_layers) + " x " +
                                            std::to_string(cfg.n_routed_experts));
    }
    reader.require_range("max_position_embeddings", cfg.max_position_embeddings, 1, kMaxPositions);
    reader.require_range("num_nextn_layers", cfg.num_nextn_layers, 0, 1);
    reader.require_range("bos_token_id", cfg.bos_token_id, 0, cfg.vocab_size - 1);
    reader.require_range("eos_token_id", cfg.eos_token_id, 0, cfg.vocab_size - 1);

    if (cfg.qk_rope_head_dim % 2 != 0) {
        reader.fail("qk_rope_head_dim", "must be even (RoPE rotates pairs), got " +
                                            std::to_string(cfg.qk_rope_head_dim));
    }
    if (cfg.num_attention_heads % cfg.num_key_value_heads != 0) {
        reader.fail("num_key_value_heads", "must divide num_attention_heads (" +
                                               std::to_string(cfg.num_attention_heads) + "), got " +
                                               std::to_string(cfg.num_key_value_heads));
    }
    if (cfg.moe_topk > cfg.num_experts_total()) {
        reader.fail("moe_topk", "must be at most n_routed_experts + zero_expert_num (" +
                                    std::to_string(cfg.num_experts_total()) + "), got " +
                                    std::to_string(cfg.moe_topk));
    }
    if (!(cfg.routed_scaling_factor > 0.0)) {
        reader.fail("routed_scaling_factor", "must be positive");
    }
    if (!(cfg.rope_theta > 0.0)) reader.fail("rope_theta", "must be positive");
    if (!(cfg.rms_norm_eps > 0.0)) reader.fail("rms_norm_eps", "must be positive");
    if (!(cfg.attention_dropout >= 0.0 && cfg.attention_dropout < 1.0)) {
        reader.fail("attention_dropout", "must be in [0, 1)");
    }
    if (cfg.model_type != "longcat_flash") {
        reader.fail("model_type", "must be \"longcat_flash\", got \"" + cfg.model_type + "\"");
    }
    if (cfg.attention_method != "MLA") {
        reader.fail("attention_method", "must be \"MLA\", got \"" + cfg.attention_method + "\"");
    }
    if (cfg.zero_expert_type != "identity") {
        reader.fail("zero_expert_type",
                    "must be \"identity\", got \"" + cfg.zero_expert_type + "\"");
    }
    if (cfg.hidden_act != "silu") {
        reader.fail("hidden_act", "must be \"silu\", got \"" + cfg.hidden_act + "\"");
    }
    // HF multiplies by both scales unconditionally; a checkpoint asking otherwise cannot be
    // served faithfully.
    if (!cfg.mla_scale_q_lora) {
        reader.fail("mla_scale_q_lora", "must be true (HF applies the q LoRA scale always)");
    }
    if (!cfg.mla_scale_kv_lora) {
        reader.fail("mla_scale_kv_lora", "must be true (HF applies the kv LoRA scale always)");
    }
    if (cfg.attention_bias) {
        reader.fail("attention_bias",
                    "must be false (LongCat-Flash checkpoints have no attention biases)");
    }
}

}  // namespace

model_config parse_model_config(const std::string& json_text, const std::string& origin) {
    json root;
    try {
        root = json::parse(json_text);
    } catch (const json::exception& e) {  // parse_error, out_of_range (a number past a double's)
        throw model_error(origin + ": malformed config JSON: " + e.what());
    }
    if (!root.is_object()) {
        throw model_error(origin + ": config JSON must be an object, got " + type_name(root));
    }
    const field_reader reader(root, origin);
    model_config cfg;

    reader.read_string("model_type", cfg.model_type);
    if (const json* archs = reader.find_nullable("architectures")) {
        if (!archs->is_array() || archs->empty()) {
            reader.fail("architectures", "must be a non-empty array of strings");
        }
        cfg.architectures.clear();
        for (const json& arch : *archs) {
            if (!arch.is_string()) reader.fail("architectures", "must hold strings only");
            cfg.architectures.push_back(arch.get<std::string>());
        }
    }
    reader.read_string("attention_method", cfg.attention_method);

    reader.read_int("vocab_size", cfg.vocab_size);
    reader.read_int("hidden_size", cfg.hidden_size);
    reader.read_int("num_layers", cfg.num_layers);
    reader.read_int("num_attention_heads", cfg.num_attention_heads);
    cfg.num_key_value_heads = cfg.num_attention_heads;  // HF: None → num_attention_heads
    if (reader.find_nullable("num_key_value_heads") != nullptr) {
        reader.read_int("num_key_value_heads", cfg.num_key_value_heads);
    }
    reader.read_int("q_lora_rank", cfg.q_lora_rank);
    reader.read_int("kv_lora_rank", cfg.kv_lora_rank);
    reader.read_int("qk_nope_head_dim", cfg.qk_nope_head_dim);
    reader.read_int("qk_rope_head_dim", cfg.qk_rope_head_dim);
    reader.read_int("v_head_dim", cfg.v_head_dim);
    reader.read_int("ffn_hidden_size", cfg.ffn_hidden_size, {"intermediate_size"});
    reader.read_int("expert_ffn_hidden_size", cfg.expert_ffn_hidden_size,
                    {"moe_intermediate_size"});
    reader.read_int("n_routed_experts", cfg.n_routed_experts, {"num_local_experts"});
    reader.read_int("zero_expert_num", cfg.zero_expert_num);
    reader.read_string("zero_expert_type", cfg.zero_expert_type);
    reader.read_int("moe_topk", cfg.moe_topk, {"num_experts_per_tok"});
    reader.read_number("routed_scaling_factor", cfg.routed_scaling_factor);
    reader.read_bool("mla_scale_q_lora", cfg.mla_scale_q_lora);
    reader.read_bool("mla_scale_kv_lora", cfg.mla_scale_kv_lora);
    read_rope(reader, cfg);
    reader.read_int("max_position_embeddings", cfg.max_position_embeddings);
    reader.read_number("rms_norm_eps", cfg.rms_norm_eps);
    reader.read_bool("attention_bias", cfg.attention_bias);
    reader.read_number("attention_dropout", cfg.attention_dropout);
    reader.read_int("bos_token_id", cfg.bos_token_id);
    // HF allows a list of end ids; the first one is the model's EOS.
    if (const json* eos = reader.find("eos_token_id"); eos != nullptr && eos->is_array()) {
        if (eos->empty()) reader.fail("eos_token_id", "must not be an empty list");
        cfg.eos_token_id = reader.to_int("eos_token_id", eos->front());
        for (const json& id : *eos) reader.to_int("eos_token_id", id);
    } else {
        reader.read_int("eos_token_id", cfg.eos_token_id);
    }
    reader.read_bool("tie_word_embeddings", cfg.tie_word_embeddings);
    reader.read_string("hidden_act", cfg.hidden_act);
    reader.read_bool("router_bias", cfg.router_bias);
    reader.read_bool("norm_topk_prob", cfg.norm_topk_prob);
    reader.read_int("num_nextn_layers", cfg.num_nextn_layers);
    read_quantization(reader, cfg);

    validate(reader, cfg);

    // Cross-checks of redundant fields HF accepts.
    if (const json* head_dim = reader.find_nullable("head_dim")) {
        const int64_t value = reader.to_int("head_dim", *head_dim);
        if (value != cfg.qk_rope_head_dim) {
            reader.fail("head_dim", "must equal qk_rope_head_dim (" +
                                        std::to_string(cfg.qk_rope_head_dim) + "), got " +
                                        std::to_string(value));
        }
    }
    if (const json* qk_head_dim = reader.find_nullable("qk_head_dim")) {
        const int64_t value = reader.to_int("qk_head_dim", *qk_head_dim);
        if (value != cfg.qk_head_dim()) {
            reader.fail("qk_head_dim", "must equal qk_nope_head_dim + qk_rope_head_dim (" +
                                           std::to_string(cfg.qk_head_dim()) + "), got " +
                                           std::to_string(value));
        }
    }
    // HF counts attention blocks (2 per layer); SGLang and vLLM count ScMoE layers.
    if (const json* hidden_layers = reader.find_nullable("num_hidden_layers")) {
        const int64_t value = reader.to_int("num_hidden_layers", *hidden_layers);
        if (value != cfg.num_layers && value != 2 * cfg.num_layers) {
            reader.fail("num_hidden_layers", "must equal num_layers (" +
                                                 std::to_string(cfg.num_layers) +
                                                 ") or twice it, got " + std::to_string(value));
        }
    }
    return cfg;
}

model_config load_model_config(const std::filesystem::path& config_json) {
    std::ifstream in(config_json, std::ios::binary);
    if (!in) throw model_error(config_json.string() + ": cannot open config file");
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) throw model_error(config_json.string() + ": cannot read config file");
    return parse_model_config(text.str(), config_json.string());
}

std::string model_config_to_json(const model_config& cfg) {
    nlohmann::ordered_json out;
    out["architectures"] = cfg.architectures;
    out["model_type"] = cfg.model_type;
    out["attention_method"] = cfg.attention_method;
    out["vocab_size"] = cfg.vocab_size;
    out["hidden_size"] = cfg.hidden_size;
    out["num_layers"] = cfg.num_layers;
    out["num_attention_heads"] = cfg.num_attention_heads;
    out["num_key_value_heads"] = cfg.num_key_value_heads;
    out["q_lora_rank"] = cfg.q_lora_rank;
    out["kv_lora_rank"] = cfg.kv_lora_rank;
    out["qk_nope_head_dim"] = cfg.qk_nope_head_dim;
    out["qk_rope_head_dim"] = cfg.qk_rope_head_dim;
    out["head_dim"] = cfg.qk_rope_head_dim;
    out["v_head_dim"] = cfg.v_head_dim;
    out["ffn_hidden_size"] = cfg.ffn_hidden_size;
    out["expert_ffn_hidden_size"] = cfg.expert_ffn_hidden_size;
    out["n_routed_experts"] = cfg.n_routed_experts;
    out["zero_expert_num"] = cfg.zero_expert_num;
    out["zero_expert_type"] = cfg.zero_expert_type;
    out["moe_topk"] = cfg.moe_topk;
    out["routed_scaling_factor"] = cfg.routed_scaling_factor;
    out["mla_scale_q_lora"] = cfg.mla_scale_q_lora;
    out["mla_scale_kv_lora"] = cfg.mla_scale_kv_lora;
    out["rope_theta"] = cfg.rope_theta;
    out["max_position_embeddings"] = cfg.max_position_embeddings;
    out["rms_norm_eps"] = cfg.rms_norm_eps;
    out["attention_bias"] = cfg.attention_bias;
    out["attention_dropout"] = cfg.attention_dropout;
    out["bos_token_id"] = cfg.bos_token_id;
    out["eos_token_id"] = cfg.eos_token_id;
    out["tie_word_embeddings"] = cfg.tie_word_embeddings;
    out["hidden_act"] = cfg.hidden_act;
    out["router_bias"] = cfg.router_bias;
    out["norm_topk_prob"] = cfg.norm_topk_prob;
    out["num_nextn_layers"] = cfg.num_nextn_layers;
    out["use_cache"] = true;
    if (!cfg.weight_block_size.empty()) {
        out["quantization_config"] = {{"quant_method", "fp8"},
                                      {"fmt", "e4m3"},
                                      {"activation_scheme", "dynamic"},
                                      {"weight_block_size", cfg.weight_block_size}};
    }
    return out.dump(2) + "\n";
}

}  // namespace longcat::model
