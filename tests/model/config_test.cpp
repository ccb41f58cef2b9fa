#include "model/config.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "model/error.hpp"
#include "model/load_plan.hpp"

namespace longcat::model {
namespace {

using json = nlohmann::json;

const char* kConfig560b = LONGCAT_SOURCE_DIR "/model/configs/longcat-flash-chat-560b.json";

json base_config() {
    std::ifstream in(kConfig560b);
    return json::parse(in);
}

// Parses `patch` merged over the 560B config; expects a model_error whose message names the
// origin and every string of `needles`.
void expect_config_error(const json& patch, const std::vector<std::string>& needles) {
    json cfg = base_config();
    cfg.merge_patch(patch);
    const std::string origin = "ckpt/config.json";
    try {
        parse_model_config(cfg.dump(), origin);
        FAIL() << "no error for " << patch.dump();
    } catch (const model_error& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find(origin), std::string::npos) << msg;
        for (const std::string& needle : needles) {
            EXPECT_NE(msg.find(needle), std::string::npos)
                << "missing `" << needle << "` in: " << msg;
        }
    }
}

class temp_dir {
  public:
    temp_dir() {
        std::random_device rd;
        path_ = std::filesystem::temp_directory_path() /
                ("longcat_config_test_" + std::to_string(rd()) + std::to_string(rd()));
        std::filesystem::create_directories(path_);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }

  private:
    std::filesystem::path path_;
};

TEST(model_config, parses_560b_config) {
    const model_config cfg = load_model_config(kConfig560b);
    EXPECT_EQ(cfg.model_type, "longcat_flash");
    EXPECT_EQ(cfg.architectures, std::vector<std::string>{"LongcatFlashForCausalLM"});
    EXPECT_EQ(cfg.attention_method, "MLA");
    EXPECT_EQ(cfg.vocab_size, 131072);
    EXPECT_EQ(cfg.hidden_size, 6144);
    EXPECT_EQ(cfg.num_layers, 28);
    EXPECT_EQ(cfg.num_attention_heads, 64);
    EXPECT_EQ(cfg.num_key_value_heads, 64);
    EXPECT_EQ(cfg.q_lora_rank, 1536);
    EXPECT_EQ(cfg.kv_lora_rank, 512);
    EXPECT_EQ(cfg.qk_nope_head_dim, 128);
    EXPECT_EQ(cfg.qk_rope_head_dim, 64);
    EXPECT_EQ(cfg.v_head_dim, 128);
    EXPECT_EQ(cfg.qk_head_dim(), 192);
    EXPECT_EQ(cfg.ffn_hidden_size, 12288);
    EXPECT_EQ(cfg.expert_ffn_hidden_size, 2048);
    EXPECT_EQ(cfg.n_routed_experts, 512);
    EXPECT_EQ(cfg.zero_expert_num, 256);
    EXPECT_EQ(cfg.num_experts_total(), 768);
    EXPECT_EQ(cfg.zero_expert_type, "identity");
    EXPECT_EQ(cfg.moe_topk, 12);
    EXPECT_DOUBLE_EQ(cfg.routed_scaling_factor, 6.0);
    EXPECT_TRUE(cfg.mla_scale_q_lora);
    EXPECT_TRUE(cfg.mla_scale_kv_lora);
    EXPECT_DOUBLE_EQ(cfg.rope_theta, 1e7);
    EXPECT_EQ(cfg.max_position_embeddings, 131072);
    EXPECT_DOUBLE_EQ(cfg.rms_norm_eps, 1e-5);
    EXPECT_FALSE(cfg.attention_bias);
    EXPECT_DOUBLE_EQ(cfg.attention_dropout, 0.0);
    EXPECT_EQ(cfg.bos_token_id, 1);
    EXPECT_EQ(cfg.eos_token_id, 2);
    EXPECT_FALSE(cfg.tie_word_embeddings);
    EXPECT_EQ(cfg.hidden_act, "silu");
    EXPECT_FALSE(cfg.router_bias);
    EXPECT_FALSE(cfg.norm_topk_prob);
    EXPECT_EQ(cfg.num_nextn_layers, 1);
    EXPECT_TRUE(cfg.weight_block_size.empty());
    EXPECT_EQ(cfg.num_attention_blocks(), 56);
}

TEST(model_config, comment_says_reconstructed) {
    const json cfg = base_config();
    ASSERT_TRUE(cfg.contains("_comment"));
    EXPECT_NE(cfg["_comment"].get<std::string>().find("not downloaded"), std::string::npos);
    std::ifstream in(kConfig560b);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text.substr(text.find('"'), 10), "\"_comment\"");  // the leading field
}

// Element counts of every tensor whose name starts with `prefix`, from the synthesised layout.
int64_t params_with_prefix(const checkpoint_layout& layout, const std::string& prefix) {
    int64_t total = 0;
    for (const tensor_info& t : layout.tensors()) {
        if (t.name.starts_with(prefix)) total += t.num_elements();
    }
    return total;
}

TEST(model_config, parameter_counts_match_the_design_doc) {
    const model_config cfg = load_model_config(kConfig560b);
    const checkpoint_layout layout = checkpoint_layout::synthesize(cfg);
    const std::string l0 = "model.layers.0.";
    // longcat-flash.md §1.1, from shapes rather than from the closed forms.
    EXPECT_EQ(params_with_prefix(layout, l0 + "self_attn.0."), 90'572'800);
    EXPECT_EQ(params_with_prefix(layout, l0 + "self_attn.1."), 90'572'800);
    EXPECT_EQ(params_with_prefix(layout, l0 + "mlps.0."), 226'492'416);
    EXPECT_EQ(params_with_prefix(layout, l0 + "mlp.experts.0."), 37'748'736);
    EXPECT_EQ(params_with_prefix(layout, "model.layers.27.mlp.experts.511."), 37'748'736);
    EXPECT_EQ(params_with_prefix(layout, l0 + "mlp.router."), 4'719'360);
    const int64_t layer = params_with_prefix(layout, l0);
    const int64_t experts = params_with_prefix(layout, l0 + "mlp.experts.");
    EXPECT_EQ(experts, 512 * int64_t{37'748'736});
    EXPECT_EQ(layer - experts, 638'874'368);  // non-expert part per layer
    EXPECT_EQ(params_with_prefix(layout, "model.embed_tokens."), 805'306'368);
    EXPECT_EQ(params_with_prefix(layout, "lm_head."), 805'306'368);

    int64_t main_model = 0;
    for (const tensor_info& t : layout.tensors()) {
        if (!t.name.starts_with("model.mtp.")) main_model += t.num_elements();
    }
    EXPECT_EQ(main_model, 28 * int64_t{638'874'368} + 28 * 512 * int64_t{37'748'736} +
                              2 * int64_t{805'306'368} + 6144);
    EXPECT_NEAR(static_cast<double>(main_model) / 1e9, 560.66, 0.005);

    const int64_t mtp = params_with_prefix(layout, "model.mtp.");
    const int64_t mtp_embed = params_with_prefix(layout, "model.mtp.embed_tokens.");
    EXPECT_NEAR(static_cast<double>(mtp - mtp_embed) / 1e9, 0.393, 0.0005);
    EXPECT_NEAR(static_cast<double>(mtp) / 1e9, 1.198, 0.0005);

    // Activated: (non-expert − router) per layer + lm_head + k experts per layer.
    const int64_t router = params_with_prefix(layout, l0 + "mlp.router.");
    auto activated = [&](int64_t k) {
        return 28 * (layer - experts - router) + 805'306'368 + k * 28 * int64_t{37'748'736};
    };
    EXPECT_NEAR(static_cast<double>(activated(0)) / 1e9, 18.56, 0.005);
    EXPECT_NEAR(static_cast<double>(activated(8)) / 1e9, 27.02, 0.005);
    EXPECT_NEAR(static_cast<double>(activated(12)) / 1e9, 31.25, 0.005);
}

TEST(model_config, defaults_for_an_empty_object) {
    const model_config cfg = parse_model_config("{}", "empty.json");
    const model_config defaults;
    EXPECT_EQ(cfg.model_type, "longcat_flash");
    EXPECT_EQ(cfg.hidden_size, defaults.hidden_size);
    EXPECT_EQ(cfg.num_nextn_layers, 1);
    EXPECT_EQ(cfg.num_key_value_heads, cfg.num_attention_heads);
}

TEST(model_config, model_type_absent_is_accepted) {
    json cfg = base_config();
    cfg.erase("model_type");
    EXPECT_EQ(parse_model_config(cfg.dump(), "x.json").model_type, "longcat_flash");
}

TEST(model_config, aliases) {
    json cfg = base_config();
    for (const char* key :
         {"ffn_hidden_size", "expert_ffn_hidden_size", "n_routed_experts", "moe_topk"}) {
        cfg.erase(key);
    }
    cfg["intermediate_size"] = 4096;
    cfg["moe_intermediate_size"] = 1024;
    cfg["num_local_experts"] = 64;
    cfg["num_experts_per_tok"] = 6;
    model_config parsed = parse_model_config(cfg.dump(), "alias.json");
    EXPECT_EQ(parsed.ffn_hidden_size, 4096);
    EXPECT_EQ(parsed.expert_ffn_hidden_size, 1024);
    EXPECT_EQ(parsed.n_routed_experts, 64);
    EXPECT_EQ(parsed.moe_topk, 6);
    // Both spellings with the same value are fine.
    cfg["ffn_hidden_size"] = 4096;
    cfg["n_routed_experts"] = 64;
    parsed = parse_model_config(cfg.dump(), "alias.json");
    EXPECT_EQ(parsed.ffn_hidden_size, 4096);
}

TEST(model_config, hf_extras) {
    json cfg = base_config();
    cfg["head_dim"] = 64;
    cfg["qk_head_dim"] = 192;
    cfg["num_hidden_layers"] = 56;
    cfg["eos_token_id"] = json::array({2, 5});
    cfg["rope_scaling"] = nullptr;
    cfg["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e7}};
    cfg["num_key_value_heads"] = nullptr;
    cfg["quantization_config"] = {{"quant_method", "fp8"},
                                  {"activation_scheme", "dynamic"},
                                  {"weight_block_size", {128, 128}}};
    cfg["some_unknown_field"] = {{"anything", 1}};
    const model_config parsed = parse_model_config(cfg.dump(), "extras.json");
    EXPECT_EQ(parsed.eos_token_id, 2);
    EXPECT_EQ(parsed.num_key_value_heads, 64);
    EXPECT_EQ(parsed.weight_block_size, (std::vector<int64_t>{128, 128}));
}

TEST(model_config, json_round_trip) {
    json patch = {
        {"num_layers", 3},
        {"hidden_size", 320},
        {"router_bias", true},
        {"norm_topk_prob", true},
        {"num_nextn_layers", 0},
        {"tie_word_embeddings", true},
        {"rms_norm_eps", 1e-6},
        {"quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {128, 128}}}}};
    json base = base_config();
    base.merge_patch(patch);
    const model_config a = parse_model_config(base.dump(), "a.json");
    const std::string text = model_config_to_json(a);
    const model_config b = parse_model_config(text, "b.json");
    EXPECT_EQ(json::parse(text)["head_dim"], 64);
    EXPECT_EQ(model_config_to_json(b), text);
    EXPECT_EQ(a.architectures, b.architectures);
    EXPECT_EQ(b.num_layers, 3);
    EXPECT_EQ(b.hidden_size, 320);
    EXPECT_TRUE(b.router_bias);
    EXPECT_TRUE(b.norm_topk_prob);
    EXPECT_TRUE(b.tie_word_embeddings);
    EXPECT_EQ(b.num_nextn_layers, 0);
    EXPECT_DOUBLE_EQ(b.rms_norm_eps, 1e-6);
    EXPECT_DOUBLE_EQ(b.rope_theta, a.rope_theta);
    EXPECT_EQ(b.weight_block_size, (std::vector<int64_t>{128, 128}));
}

// -- bad input ------------------------------------------------------------------------------------

TEST(model_config_errors, malformed_config_file) {
    temp_dir dir;
    const auto path = dir.path() / "config.json";
    std::ofstream(path) << "{\"hidden_size\": 6144,";
    try {
        load_model_config(path);
        FAIL();
    } catch (const model_error& e) {
        EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("malformed"), std::string::npos) << e.what();
    }
    EXPECT_THROW(load_model_config(dir.path() / "missing.json"), model_error);
    EXPECT_THROW(parse_model_config("[1, 2]", "array.json"), model_error);
}

TEST(model_config_errors, head_dim_differs_from_rope_dim) {
    expect_config_error({{"head_dim", 128}}, {"`head_dim`", "64", "128"});
}

TEST(model_config_errors, qk_head_dim_inconsistent) {
    expect_config_error({{"qk_head_dim", 128}}, {"`qk_head_dim`"});
}

TEST(model_config_errors, mla_scale_q_lora_false) {
    expect_config_error({{"mla_scale_q_lora", false}}, {"`mla_scale_q_lora`"});
}

TEST(model_config_errors, mla_scale_kv_lora_false) {
    expect_config_error({{"mla_scale_kv_lora", false}}, {"`mla_scale_kv_lora`"});
}

TEST(model_config_errors, wrong_types) {
    expect_config_error({{"hidden_size", "6144"}}, {"`hidden_size`", "integer"});
    expect_config_error({{"hidden_size", 6144.5}}, {"`hidden_size`", "integer"});
    expect_config_error({{"num_layers", true}}, {"`num_layers`", "integer"});
    expect_config_error({{"mla_scale_q_lora", 1}}, {"`mla_scale_q_lora`", "boolean"});
    expect_config_error({{"rope_theta", "1e7"}}, {"`rope_theta`", "number"});
    expect_config_error({{"hidden_act", 3}}, {"`hidden_act`", "string"});
    json nulls = json::object();
    nulls["hidden_size"] = nullptr;  // merge_patch would delete a null member
    json cfg = base_config();
    cfg.update(nulls);
    EXPECT_THROW(parse_model_config(cfg.dump(), "null.json"), model_error);
    try {
        parse_model_config(cfg.dump(), "null.json");
    } catch (const model_error& e) {
        EXPECT_NE(std::string(e.what()).find("`hidden_size`"), std::string::npos) << e.what();
    }
    expect_config_error({{"architectures", "LongcatFlashForCausalLM"}}, {"`architectures`"});
}

TEST(model_config_errors, negative_and_zero_values) {
    expect_config_error({{"num_layers", -1}}, {"`num_layers`", "-1"});
    expect_config_error({{"hidden_size", 0}}, {"`hidden_size`"});
    expect_config_error({{"zero_expert_num", -2}}, {"`zero_expert_num`"});
    expect_config_error({{"rms_norm_eps", -1e-5}}, {"`rms_norm_eps`"});
    expect_config_error({{"routed_scaling_factor", 0.0}}, {"`routed_scaling_factor`"});
    expect_config_error({{"eos_token_id", 131072}}, {"`eos_token_id`"});
}

// Counts that size tables before any tensor is read: a config asking for millions of layers or
// experts is refused by name instead of allocating gigabytes (the real model: 28 x 512 + 256).
TEST(model_config_errors, table_sizes_are_bounded) {
    expect_config_error({{"num_layers", 1025}}, {"`num_layers`", "1025"});
    expect_config_error({{"num_layers", 16777216}}, {"`num_layers`"});
    expect_config_error({{"n_routed_experts", 65536}}, {"`n_routed_experts`", "65792"});
    expect_config_error({{"num_layers", 1024}, {"n_routed_experts", 2048}},
                        {"`n_routed_experts`", "1024 x 2048"});
    // The largest allowed still parse.
    json cfg = base_config();
    cfg.merge_patch({{"num_layers", 1024}, {"n_routed_experts", 1024}});
    EXPECT_EQ(parse_model_config(cfg.dump(), "big.json").num_layers, 1024);
}

// A number past a double's range is malformed JSON, reported with the file (nlohmann throws
// out_of_range for it, not parse_error).
TEST(model_config_errors, number_overflowing_a_double) {
    try {
        parse_model_config(R"({"rms_norm_eps": 1e400})", "ckpt/config.json");
        FAIL();
    } catch (const model_error& e) {
        EXPECT_NE(std::string(e.what()).find("ckpt/config.json: malformed"), std::string::npos)
            << e.what();
    }
}

TEST(model_config_errors, alias_conflict) {
    expect_config_error({{"intermediate_size", 4096}},
                        {"`ffn_hidden_size`", "`intermediate_size`"});
    expect_config_error({{"num_local_experts", 256}},
                        {"`n_routed_experts`", "`num_local_experts`"});
    expect_config_error({{"num_experts_per_tok", 8}}, {"`moe_topk`", "`num_experts_per_tok`"});
    expect_config_error({{"moe_intermediate_size", 1024}},
                        {"`expert_ffn_hidden_size`", "`moe_intermediate_size`"});
}

TEST(model_config_errors, odd_rope_dim) {
    expect_config_error({{"qk_rope_head_dim", 63}, {"head_dim", nullptr}}, {"`qk_rope_head_dim`"});
}

TEST(model_config_errors, topk_exceeds_experts) {
    expect_config_error({{"moe_topk", 769}}, {"`moe_topk`", "768"});
}

TEST(model_config_errors, unsupported_values) {
    expect_config_error({{"zero_expert_type", "zero"}}, {"`zero_expert_type`"});
    expect_config_error({{"hidden_act", "gelu"}}, {"`hidden_act`"});
    expect_config_error({{"attention_method", "MHA"}}, {"`attention_method`"});
    expect_config_error({{"model_type", "deepseek_v3"}}, {"`model_type`"});
    expect_config_error({{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}}}},
                        {"`rope_scaling`"});
    expect_config_error({{"rope_parameters", {{"rope_type", "yarn"}}}}, {"rope_parameters"});
    expect_config_error({{"num_nextn_layers", 2}}, {"`num_nextn_layers`"});
    expect_config_error({{"num_hidden_layers", 30}}, {"`num_hidden_layers`"});
    expect_config_error({{"attention_bias", true}}, {"`attention_bias`"});
}

TEST(model_config_errors, quantization_config) {
    expect_config_error(
        {{"quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {64, 64}}}}},
        {"`quantization_config.weight_block_size`"});
    expect_config_error({{"quantization_config", {{"quant_method", "fp8"}}}},
                        {"`quantization_config.weight_block_size`"});
    expect_config_error(
        {{"quantization_config", {{"quant_method", "awq"}, {"weight_block_size", {128, 128}}}}},
        {"`quantization_config.quant_method`"});
}

}  // namespace
}  // namespace longcat::model
