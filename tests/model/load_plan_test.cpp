#include "model/load_plan.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "kernels/api/dtype.hpp"
#include "model/error.hpp"
#include "tests/support/expect_error.hpp"

namespace longcat::model {
namespace {

using kernels::dtype;
using json = nlohmann::json;

const char* kConfig560b = LONGCAT_SOURCE_DIR "/model/configs/longcat-flash-chat-560b.json";

// §8 shapes of the 560B model, written out here independently of the plan code.
constexpr uint64_t kHidden = 6144, kVocab = 131072, kFfn = 12288, kExpertFfn = 2048;
constexpr uint64_t kBf16 = 2, kF32 = 4;
constexpr uint64_t kMlaParams =
    1536 * kHidden + 1536 + 12288 * 1536 + 576 * kHidden + 512 + 16384 * 512 + kHidden * 8192;
constexpr uint64_t kDenseParams = 3 * kFfn * kHidden;
constexpr uint64_t kExpertParams = 3 * kExpertFfn * kHidden;
constexpr uint64_t kNormBytes = kHidden * kBf16;
constexpr uint64_t kEmbedBytes = kVocab * kHidden * kBf16;
constexpr uint64_t kRouterBytes = 768 * kHidden * kBf16 + 768 * kF32;

const model_config& config_560b() {
    static const model_config cfg = load_model_config(kConfig560b);
    return cfg;
}

const checkpoint_layout& layout_560b() {
    static const checkpoint_layout layout = checkpoint_layout::synthesize(config_560b());
    return layout;
}

template <class Fn>
void expect_error(Fn fn, const std::vector<std::string>& needles) {
    longcat::testing::expect_model_error(fn, needles);
}

std::vector<std::string> mla_names(const std::string& prefix) {
    std::vector<std::string> names;
    for (const char* n : {"q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa",
                          "kv_a_layernorm", "kv_b_proj", "o_proj"}) {
        names.push_back(prefix + n + ".weight");
    }
    return names;
}

std::vector<std::string> ffn_names(const std::string& prefix) {
    return {prefix + "gate_proj.weight", prefix + "up_proj.weight", prefix + "down_proj.weight"};
}

bool is_dense_ffn(const std::string& name) {
    return name.find(".mlps.") != std::string::npos ||
           name.find(".transformer_layer.mlp.") != std::string::npos;
}

// The attention worker's tensors of §8, listed by hand.
std::set<std::string> expected_attention_names(int64_t num_layers) {
    std::set<std::string> names = {"model.embed_tokens.weight", "model.norm.weight",
                                   "lm_head.weight"};
    auto add = [&](const std::vector<std::string>& list) {
        names.insert(list.begin(), list.end());
    };
    for (int64_t l = 0; l < num_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        for (int i = 0; i < 2; ++i) {
            const std::string s = std::to_string(i);
            names.insert(p + "input_layernorm." + s + ".weight");
            names.insert(p + "post_attention_layernorm." + s + ".weight");
            add(mla_names(p + "self_attn." + s + "."));
            add(ffn_names(p + "mlps." + s + "."));
        }
        names.insert(p + "mlp.router.classifier.weight");
        names.insert(p + "mlp.router.e_score_correction_bias");
    }
    const std::string m = "model.mtp.layers.0.";
    for (const char* n :
         {"eh_proj", "enorm.m", "hnorm.m", "input_layernorm", "post_attention_layernorm"}) {
        names.insert(m + n + ".weight");
    }
    names.insert("model.mtp.embed_tokens.weight");
    names.insert("model.mtp.norm.weight");
    add(mla_names(m + "self_attn."));
    add(ffn_names(m + "transformer_layer.mlp."));
    return names;
}

std::set<std::string> as_set(const std::vector<std::string>& names) {
    return {names.begin(), names.end()};
}

// -- layouts --------------------------------------------------------------------------------------

TEST(checkpoint_layout, synthesised_560b) {
    const checkpoint_layout& layout = layout_560b();
    // 3 globals + 28 × (4 norms + 14 MLA + 6 dense + 2 gate + 512 × 3 experts) + 17 MTP.
    EXPECT_EQ(layout.tensors().size(), 3u + 28u * (4 + 14 + 6 + 2 + 512 * 3) + 17u);
    EXPECT_EQ(layout.file_names(), std::vector<std::string>{"model.safetensors"});
    const tensor_info& kv_b = layout.at("model.layers.5.self_attn.1.kv_b_proj.weight");
    EXPECT_EQ(kv_b.shape, (std::vector<int64_t>{16384, 512}));
    EXPECT_EQ(kv_b.type, dtype::bf16);
    EXPECT_EQ(layout.at("model.layers.0.mlp.router.e_score_correction_bias").type, dtype::f32);
    EXPECT_EQ(layout.at("model.mtp.layers.0.eh_proj.weight").shape,
              (std::vector<int64_t>{6144, 12288}));
    EXPECT_FALSE(layout.has("model.layers.0.mlp.experts.512.gate_proj.weight"));

    layout_options sharded;
    sharded.max_shard_bytes = uint64_t{5} << 30;
    const checkpoint_layout shards = checkpoint_layout::synthesize(config_560b(), sharded);
    EXPECT_GT(shards.file_names().size(), 200u);
    EXPECT_EQ(shards.file_names().front(),
              "model-00001-of-00" + std::to_string(shards.file_names().size()) + ".safetensors");
    EXPECT_EQ(shards.tensors().size(), layout.tensors().size());
    EXPECT_EQ(shards.total_bytes(), layout.total_bytes());
}

TEST(checkpoint_layout, synthesised_560b_fp8) {
    layout_options fp8;
    fp8.fp8 = true;
    const checkpoint_layout layout = checkpoint_layout::synthesize(config_560b(), fp8);
    const tensor_info& w = layout.at("model.layers.0.mlps.0.down_proj.weight");
    EXPECT_EQ(w.type, dtype::f8_e4m3);
    const tensor_info& s = layout.at("model.layers.0.mlps.0.down_proj.weight_scale_inv");
    EXPECT_EQ(s.type, dtype::f32);
    EXPECT_EQ(s.shape, (std::vector<int64_t>{48, 96}));
    EXPECT_EQ(layout.at("model.layers.0.self_attn.0.kv_a_proj_with_mqa.weight_scale_inv").shape,
              (std::vector<int64_t>{5, 48}));  // 576 rows: a partial block of 64
    EXPECT_TRUE(layout.has("model.layers.3.mlp.experts.7.up_proj.weight_scale_inv"));
    EXPECT_TRUE(layout.has("model.mtp.layers.0.eh_proj.weight_scale_inv"));
    EXPECT_EQ(layout.at("model.embed_tokens.weight").type, dtype::bf16);
    EXPECT_EQ(layout.at("model.layers.0.mlp.router.classifier.weight").type, dtype::bf16);
    EXPECT_FALSE(layout.has("model.layers.0.mlp.router.classifier.weight_scale_inv"));
    EXPECT_FALSE(layout.has("model.layers.0.self_attn.0.q_a_layernorm.weight_scale_inv"));
}

// -- 560B plans -----------------------------------------------------------------------------------

TEST(load_plan_560b, attention_worker_tp1) {
    const load_plan plan = plan_attention_worker(layout_560b(), config_560b(), 0, 1);
    EXPECT_EQ(as_set(plan.names()), expected_attention_names(28));
    EXPECT_EQ(plan.entries().size(), 748u);
    const uint64_t per_layer =
        4 * kNormBytes + 2 * kMlaParams * kBf16 + kRouterBytes + 2 * kDenseParams * kBf16;
    const uint64_t mtp = kEmbedBytes + kHidden * 2 * kHidden * kBf16 + 4 * kNormBytes +
                         kMlaParams * kBf16 + kNormBytes + kDenseParams * kBf16;
    EXPECT_EQ(plan.total_bytes(), 2 * kEmbedBytes + kNormBytes + 28 * per_layer + mtp);
    for (const plan_entry& e : plan.entries()) {
        ASSERT_EQ(e.ranges.size(), 1u) << e.name;  // unsharded: every tensor is one range
        EXPECT_EQ(e.num_bytes, layout_560b().at(e.name).num_bytes());
        EXPECT_EQ(e.loaded_shape, e.shape);
    }
}

TEST(load_plan_560b, attention_worker_tp8) {
    const int64_t tp = 8;
    const uint64_t width = kFfn / tp;
    const load_plan full = plan_attention_worker(layout_560b(), config_560b(), 0, 1);
    uint64_t full_dense = 0;
    for (const plan_entry& e : full.entries()) {
        if (is_dense_ffn(e.name)) full_dense += e.num_bytes;
    }
    EXPECT_EQ(full_dense, 57 * kDenseParams * kBf16);

    uint64_t dense_sum = 0;
    // down_proj of layer 3, mlps.1: the ranks' ranges must tile the tensor exactly.
    const std::string down = "model.layers.3.mlps.1.down_proj.weight";
    std::vector<byte_range> down_ranges;
    for (int64_t rank = 0; rank < tp; ++rank) {
        const load_plan plan = plan_attention_worker(layout_560b(), config_560b(), rank, tp);
        EXPECT_EQ(as_set(plan.names()), expected_attention_names(28));
        const uint64_t per_layer =
            4 * kNormBytes + 2 * kMlaParams * kBf16 + kRouterBytes + 2 * kDenseParams * kBf16 / tp;
        const uint64_t mtp = kEmbedBytes + kHidden * 2 * kHidden * kBf16 + 4 * kNormBytes +
                             kMlaParams * kBf16 + kNormBytes + kDenseParams * kBf16 / tp;
        EXPECT_EQ(plan.total_bytes(), 2 * kEmbedBytes + kNormBytes + 28 * per_layer + mtp);
        for (const plan_entry& e : plan.entries()) {
            if (!is_dense_ffn(e.name)) {
                EXPECT_EQ(*full.find(e.name), e) << e.name;  // everything else is whole
                continue;
            }
            dense_sum += e.num_bytes;
            const tensor_info& info = layout_560b().at(e.name);
            if (e.name.ends_with("down_proj.weight")) {
                // [6144, 12288] columns [r·1536, (r+1)·1536): one range per row.
                ASSERT_EQ(e.ranges.size(), kHidden) << e.name;
                EXPECT_EQ(e.ranges[0].begin, info.begin + rank * width * kBf16);
                EXPECT_EQ(e.ranges[1].begin, info.begin + (kFfn + rank * width) * kBf16);
                EXPECT_EQ(e.loaded_shape, (std::vector<int64_t>{6144, 1536}));
            } else {
                ASSERT_EQ(e.ranges.size(), 1u) << e.name;
                EXPECT_EQ(e.ranges[0].begin, info.begin + rank * width * kHidden * kBf16);
                EXPECT_EQ(e.ranges[0].size(), width * kHidden * kBf16);
                EXPECT_EQ(e.loaded_shape, (std::vector<int64_t>{1536, 6144}));
            }
        }
        const auto& ranges = plan.find(down)->ranges;
        down_ranges.insert(down_ranges.end(), ranges.begin(), ranges.end());
    }
    EXPECT_EQ(dense_sum, full_dense);
    std::sort(down_ranges.begin(), down_ranges.end(),
              [](const byte_range& a, const byte_range& b) { return a.begin < b.begin; });
    const tensor_info& down_info = layout_560b().at(down);
    EXPECT_EQ(down_ranges.front().begin, down_info.begin);
    EXPECT_EQ(down_ranges.back().end, down_info.end);
    for (size_t i = 1; i < down_ranges.size(); ++i) {
        ASSERT_EQ(down_ranges[i - 1].end, down_ranges[i].begin);
    }
}

TEST(load_plan_560b, expert_group) {
    std::map<int64_t, std::vector<int64_t>> placement;
    for (int64_t layer = 0; layer < 28; ++layer) placement[layer] = {511, 3, 100};
    const load_plan plan = plan_expert_group(layout_560b(), config_560b(), placement);
    std::set<std::string> expected;
    for (int64_t layer = 0; layer < 28; ++layer) {
        for (int64_t e : {3, 100, 511}) {
            for (const std::string& n : ffn_names("model.layers." + std::to_string(layer) +
                                                  ".mlp.experts." + std::to_string(e) + ".")) {
                expected.insert(n);
            }
        }
    }
    EXPECT_EQ(as_set(plan.names()), expected);
    EXPECT_EQ(plan.entries().size(), 252u);
    EXPECT_EQ(plan.total_bytes(), 28 * 3 * kExpertParams * kBf16);
    for (const plan_entry& e : plan.entries()) {
        EXPECT_EQ(e.num_bytes, kExpertFfn * kHidden * kBf16);
        EXPECT_FALSE(e.slice.has_value());
    }
}

TEST(load_plan_560b, fp8_scales_follow_their_slices) {
    layout_options fp8;
    fp8.fp8 = true;
    const checkpoint_layout layout = checkpoint_layout::synthesize(config_560b(), fp8);
    const load_plan plan = plan_attention_worker(layout, config_560b(), 2, 8);
    // 12288 / 8 = 1536 = 12 blocks: aligned.
    const plan_entry* gate_scale = plan.find("model.layers.0.mlps.0.gate_proj.weight_scale_inv");
    ASSERT_NE(gate_scale, nullptr);
    EXPECT_EQ(gate_scale->slice, tensor_slice(24, 36, 0, 48));
    EXPECT_EQ(gate_scale->num_bytes, 12 * 48 * kF32);
    const plan_entry* down_scale = plan.find("model.layers.0.mlps.0.down_proj.weight_scale_inv");
    ASSERT_NE(down_scale, nullptr);
    EXPECT_EQ(down_scale->loaded_shape, (std::vector<int64_t>{48, 12}));
    EXPECT_EQ(down_scale->ranges.size(), 48u);
    EXPECT_EQ(down_scale->num_bytes, 48 * 12 * kF32);
    EXPECT_EQ(plan.find("model.layers.0.mlps.0.gate_proj.weight")->num_bytes, 1536 * kHidden);
    EXPECT_NE(plan.find("model.mtp.layers.0.self_attn.o_proj.weight_scale_inv"), nullptr);

    // 12288 / 64 = 192 rows: rank 1 covers rows [192, 384), i.e. scale rows 1 (partial) and 2.
    const load_plan narrow = plan_attention_worker(layout, config_560b(), 1, 64);
    EXPECT_EQ(narrow.find("model.layers.0.mlps.1.up_proj.weight_scale_inv")->slice,
              tensor_slice(1, 3, 0, 48));
    EXPECT_EQ(narrow.find("model.layers.0.mlps.1.down_proj.weight_scale_inv")->slice,
              tensor_slice(0, 48, 1, 3));

    std::map<int64_t, std::vector<int64_t>> placement = {{4, {9}}};
    const load_plan experts = plan_expert_group(layout, config_560b(), placement);
    EXPECT_EQ(experts.entries().size(), 6u);
    EXPECT_EQ(experts.total_bytes(),
              kExpertParams + 2 * 16 * 48 * kF32 + 48 * 16 * kF32);  // fp8 + three scales
}

TEST(load_plan_errors, ffn_not_divisible_by_tp) {
    expect_error([] { plan_attention_worker(layout_560b(), config_560b(), 0, 5); },
                 {"ffn_hidden_size", "12288", "5"});
    expect_error([] { plan_attention_worker(layout_560b(), config_560b(), 8, 8); },
                 {"rank 8", "[0, 8)"});
    expect_error([] { plan_attention_worker(layout_560b(), config_560b(), 0, 0); }, {"TP size"});
}

TEST(load_plan_errors, bad_expert_placements) {
    const auto& layout = layout_560b();
    const auto& cfg = config_560b();
    expect_error(
        [&] {
            plan_expert_group(layout, cfg, {{0, {512}}});
        },
        {"expert 512", "zero expert", "n_routed_experts"});
    expect_error([&] { plan_expert_group(layout, cfg, {{0, {767}}}); }, {"zero expert"});
    expect_error(
        [&] {
            plan_expert_group(layout, cfg, {{0, {768}}});
        },
        {"expert 768", "out of range"});
    expect_error([&] { plan_expert_group(layout, cfg, {{0, {-1}}}); }, {"out of range"});
    expect_error([&] { plan_expert_group(layout, cfg, {{28, {0}}}); }, {"layer 28", "num_layers"});
    expect_error([&] { plan_expert_group(layout, cfg, {{-1, {0}}}); }, {"layer -1"});
    expect_error([&] { plan_expert_group(layout, cfg, {{2, {5, 5}}}); }, {"expert 5", "twice"});
}

TEST(load_plan_errors, layout_disagrees_with_config) {
    std::vector<tensor_info> tensors = layout_560b().tensors();
    std::erase_if(tensors, [](const tensor_info& t) {
        return t.name == "model.layers.7.self_attn.1.kv_b_proj.weight";
    });
    const checkpoint_layout missing(tensors, "ckpt-dir");
    expect_error([&] { plan_attention_worker(missing, config_560b(), 0, 1); },
                 {"ckpt-dir", "`model.layers.7.self_attn.1.kv_b_proj.weight`", "missing"});

    model_config other = config_560b();
    other.kv_lora_rank = 256;
    expect_error([&] { plan_attention_worker(layout_560b(), other, 0, 1); },
                 {"model.safetensors", "kv_a_proj_with_mqa.weight`", "[576, 6144]", "[320, 6144]"});
}

// -- tiny checkpoints on disk ---------------------------------------------------------------------

class tiny_checkpoint_test : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        std::random_device rd;
        dir_ = std::filesystem::temp_directory_path() /
               (std::string("longcat_plan_") + info->name() + "_" + std::to_string(rd()));
        std::filesystem::create_directories(dir_);
        json cfg = json::parse(std::ifstream(kConfig560b));
        // hidden 320 and a TP-2 width of 192 leave partial 128-blocks everywhere.
        cfg.merge_patch({{"vocab_size", 512},
                         {"hidden_size", 320},
                         {"num_layers", 2},
                         {"num_attention_heads", 2},
                         {"q_lora_rank", 192},
                         {"kv_lora_rank", 160},
                         {"qk_nope_head_dim", 32},
                         {"qk_rope_head_dim", 16},
                         {"v_head_dim", 32},
                         {"ffn_hidden_size", 384},
                         {"expert_ffn_hidden_size", 200},
                         {"n_routed_experts", 4},
                         {"zero_expert_num", 2},
                         {"moe_topk", 2},
                         {"max_position_embeddings", 4096}});
        cfg_ = parse_model_config(cfg.dump(), "tiny");
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }

    // Writes random tensors at exactly the layout's places (shards + index when several files).
    static void write_checkpoint(const checkpoint_layout& layout,
                                 const std::filesystem::path& dir) {
        std::mt19937 rng(1234);
        std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
        std::uniform_real_distribution<float> scales(0.001f, 0.01f);
        std::map<std::string, std::vector<tensor_data>> by_file;
        for (const tensor_info& t : layout.tensors()) {
            tensor_data d{t.name, t.type, t.shape, std::vector<uint8_t>(t.num_bytes())};
            const bool is_scale = t.name.ends_with("_scale_inv");
            for (size_t i = 0; i < d.bytes.size(); i += kernels::dtype_size(t.type)) {
                if (t.type == dtype::f32) {
                    const float v = is_scale ? scales(rng) : uniform(rng);
                    std::memcpy(&d.bytes[i], &v, 4);
                } else if (t.type == dtype::bf16) {
                    const uint16_t v = kernels::f32_to_bf16(uniform(rng));
                    std::memcpy(&d.bytes[i], &v, 2);
                } else if (t.type == dtype::f8_e4m3) {
                    uint8_t code;
                    do code = static_cast<uint8_t>(rng());
                    while ((code & 0x7f) == 0x7f);
                    d.bytes[i] = code;
                }
            }
            by_file[t.file.filename().string()].push_back(std::move(d));
        }
        for (auto& [file, tensors] : by_file) {
            write_safetensors(dir / file, std::move(tensors), {{"format", "pt"}});
        }
        if (by_file.size() > 1) {
            write_safetensors_index(dir / "model.safetensors.index.json", layout.weight_map(),
                                    layout.total_bytes());
        }
    }

    // The plan's loaded tensor equals the slice of the fully loaded tensor, bit for bit.
    static void expect_matches_full_load(const checkpoint& ckpt, const plan_entry& e,
                                         const loaded_tensor& t) {
        const loaded_tensor full = ckpt.load(e.name, e.shape);
        ASSERT_EQ(t.type(), full.type()) << e.name;
        ASSERT_EQ(t.shape(), e.loaded_shape) << e.name;
        const tensor_slice s = e.slice.value_or(tensor_slice{});
        const int64_t rows = e.shape.empty() ? 1 : e.shape[0];
        const int64_t row_elems = full.num_elements() / std::max<int64_t>(rows, 1);
        const int64_t c0 = s.col_begin;
        const int64_t c1 = s.col_end == -1 ? row_elems : s.col_end;
        const int64_t r1 = s.row_end == -1 ? rows : s.row_end;
        const size_t esize = kernels::dtype_size(t.type());
        const auto* src = static_cast<const uint8_t*>(full.data());
        const auto* dst = static_cast<const uint8_t*>(t.data());
        for (int64_t r = s.row_begin; r < r1; ++r) {
            ASSERT_EQ(std::memcmp(dst + (r - s.row_begin) * (c1 - c0) * esize,
                                  src + (r * row_elems + c0) * esize, (c1 - c0) * esize),
                      0)
                << e.name << " row " << r;
        }
    }

    std::filesystem::path dir_;
    model_config cfg_;
};

TEST_F(tiny_checkpoint_test, synthesised_layout_matches_written_shards) {
    layout_options options;
    options.fp8 = true;
    options.max_shard_bytes = 300'000;
    const checkpoint_layout layout = checkpoint_layout::synthesize(cfg_, options);
    ASSERT_GT(layout.file_names().size(), 2u);
    write_checkpoint(layout, dir_);
    const checkpoint ckpt = checkpoint::open(dir_);
    const checkpoint_layout read = checkpoint_layout::from_checkpoint(ckpt);
    ASSERT_EQ(read.tensors().size(), layout.tensors().size());
    for (size_t i = 0; i < layout.tensors().size(); ++i) {
        const tensor_info& a = layout.tensors()[i];
        const tensor_info& b = read.tensors()[i];
        EXPECT_EQ(a.name, b.name);
        EXPECT_EQ(a.type, b.type) << a.name;
        EXPECT_EQ(a.shape, b.shape) << a.name;
        EXPECT_EQ(a.file.filename(), b.file.filename()) << a.name;
        EXPECT_EQ(a.begin, b.begin) << a.name;
        EXPECT_EQ(a.end, b.end) << a.name;
    }
}

TEST_F(tiny_checkpoint_test, fp8_plans_load_only_their_slices) {
    layout_options options;
    options.fp8 = true;
    options.max_shard_bytes = 300'000;
    const checkpoint_layout layout = checkpoint_layout::synthesize(cfg_, options);
    write_checkpoint(layout, dir_);
    const checkpoint ckpt = checkpoint::open(dir_);
    const checkpoint_layout read = checkpoint_layout::from_checkpoint(ckpt);

    for (int64_t rank = 0; rank < 2; ++rank) {
        const load_plan plan = plan_attention_worker(read, cfg_, rank, 2);
        // 384 / 2 = 192: the boundary cuts scale block 1, which both ranks read.
        const plan_entry* gate_scale =
            plan.find("model.layers.1.mlps.0.gate_proj.weight_scale_inv");
        ASSERT_NE(gate_scale, nullptr);
        EXPECT_EQ(gate_scale->slice,
                  rank == 0 ? tensor_slice(0, 2, 0, 3) : tensor_slice(1, 3, 0, 3));
        const plan_entry* down_scale =
            plan.find("model.mtp.layers.0.transformer_layer.mlp.down_proj.weight_scale_inv");
        ASSERT_NE(down_scale, nullptr);
        EXPECT_EQ(down_scale->slice,
                  rank == 0 ? tensor_slice(0, 3, 0, 2) : tensor_slice(0, 3, 1, 3));

        const auto loaded = load_planned_tensors(ckpt, plan);
        size_t weights = 0;
        for (const plan_entry& e : plan.entries()) {
            if (e.name.ends_with("_scale_inv")) {
                EXPECT_FALSE(loaded.contains(e.name)) << e.name;  // consumed by dequantisation
                continue;
            }
            ++weights;
            ASSERT_TRUE(loaded.contains(e.name)) << e.name;
            const loaded_tensor& t = loaded.at(e.name);
            if (e.type == dtype::f8_e4m3) {
                EXPECT_EQ(t.type(), dtype::bf16) << e.name;
            }
            expect_matches_full_load(ckpt, e, t);
        }
        EXPECT_EQ(loaded.size(), weights);
        const loaded_tensor& down = loaded.at("model.layers.0.mlps.1.down_proj.weight");
        EXPECT_EQ(down.shape(), (std::vector<int64_t>{320, 192}));
    }

    // Clobber every byte no plan of rank 1 names: its tensors must come out the same.
    const load_plan plan = plan_attention_worker(read, cfg_, 1, 2);
    std::map<std::string, loaded_tensor> before = load_planned_tensors(ckpt, plan);
    std::map<std::string, std::vector<uint8_t>> before_bytes;
    for (const auto& [name, t] : before) {
        before_bytes[name].assign(t.bytes().begin(), t.bytes().end());
    }
    before.clear();
    const auto copy_dir = dir_ / "clobbered";
    std::filesystem::create_directories(copy_dir);
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
        if (entry.is_regular_file()) {
            std::filesystem::copy_file(entry.path(), copy_dir / entry.path().filename());
        }
    }
    std::map<std::string, std::vector<byte_range>> keep;  // file → planned ranges
    for (const plan_entry& e : plan.entries()) {
        auto& ranges = keep[e.file.filename().string()];
        ranges.insert(ranges.end(), e.ranges.begin(), e.ranges.end());
    }
    for (const tensor_info& t : read.tensors()) {
        std::fstream f(copy_dir / t.file.filename(),
                       std::ios::in | std::ios::out | std::ios::binary);
        std::vector<char> is_kept(t.num_bytes(), 0);
        for (const byte_range& r : keep[t.file.filename().string()]) {
            for (uint64_t b = std::max(r.begin, t.begin); b < std::min(r.end, t.end); ++b) {
                is_kept[b - t.begin] = 1;
            }
        }
        for (uint64_t b = 0; b < t.num_bytes();) {
            if (is_kept[b]) {
                ++b;
                continue;
            }
            uint64_t run_end = b;
            while (run_end < t.num_bytes() && !is_kept[run_end]) ++run_end;
            const std::string junk(run_end - b, static_cast<char>(0x7f));
            f.seekp(static_cast<std::streamoff>(t.begin + b));
            f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
            b = run_end;
        }
    }
    const checkpoint clobbered = checkpoint::open(copy_dir);
    const auto after = load_planned_tensors(clobbered, plan);
    ASSERT_EQ(after.size(), before_bytes.size());
    for (const auto& [name, t] : after) {
        const auto bytes = t.bytes();
        EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), before_bytes[name].begin(),
                               before_bytes[name].end()))
            << name;
    }
}

TEST_F(tiny_checkpoint_test, bf16_plans_are_zero_copy) {
    const checkpoint_layout layout = checkpoint_layout::synthesize(cfg_);
    write_checkpoint(layout, dir_);
    const checkpoint ckpt = checkpoint::open(dir_);
    const checkpoint_layout read = checkpoint_layout::from_checkpoint(ckpt);
    const load_plan plan = plan_attention_worker(read, cfg_, 0, 2);
    const auto loaded = load_planned_tensors(ckpt, plan);
    EXPECT_EQ(loaded.size(), plan.entries().size());
    for (const plan_entry& e : plan.entries()) {
        const loaded_tensor& t = loaded.at(e.name);
        // Column slices (down_proj) copy; everything else is a view into the mapping.
        const bool down = e.name.ends_with("down_proj.weight") && is_dense_ffn(e.name);
        EXPECT_EQ(t.is_view(), !down) << e.name;
        if (t.is_view()) {
            EXPECT_EQ(static_cast<const uint8_t*>(t.data()),
                      ckpt.raw_bytes(e.name).data() + (e.ranges[0].begin - read.at(e.name).begin));
        }
        expect_matches_full_load(ckpt, e, t);
    }

    std::map<int64_t, std::vector<int64_t>> placement = {{0, {1, 3}}, {1, {0}}};
    const load_plan experts = plan_expert_group(read, cfg_, placement);
    const auto expert_tensors = load_planned_tensors(ckpt, experts);
    EXPECT_EQ(expert_tensors.size(), 9u);
    EXPECT_EQ(expert_tensors.at("model.layers.0.mlp.experts.3.down_proj.weight").shape(),
              (std::vector<int64_t>{320, 200}));
    EXPECT_TRUE(expert_tensors.at("model.layers.1.mlp.experts.0.gate_proj.weight").is_view());

    // A plan made for another layout is refused, naming the tensor.
    layout_options fp8;
    fp8.fp8 = true;
    const load_plan foreign =
        plan_attention_worker(checkpoint_layout::synthesize(cfg_, fp8), cfg_, 0, 2);
    expect_error([&] { load_planned_tensors(ckpt, foreign); }, {"not where the load plan"});
}

}  // namespace
}  // namespace longcat::model
