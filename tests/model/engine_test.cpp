// Engine invariants on a generated checkpoint: prefill-then-decode equals token-by-token
// decode, a request alone equals the same request inside a batch of 16, and a fragmented
// page pool gives bitwise the logits of a fresh one.
#include "model/engine.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "model/error.hpp"
#include "model/mkmodel.hpp"
#include "tests/support/temp_dir.hpp"

namespace longcat::model {
namespace {

double rel_err(const float* a, const float* b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
        num += double(a[i] - b[i]) * double(a[i] - b[i]);
        den += double(b[i]) * double(b[i]);
    }
    return std::sqrt(num / den);
}

class EngineTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new longcat::testing::temp_dir();
        make_model({"tiny-b", dir_->path(), 3, checkpoint_dtype::bf16});
        weights_ = std::make_shared<model_weights>(load_model_weights(dir_->path()));
    }
    static void TearDownTestSuite() {
        weights_.reset();
        delete dir_;
    }
    static engine make_engine(int64_t num_pages = 256) {
        engine_options o;
        o.kv.page_size = 4;
        o.kv.num_pages = num_pages;
        return engine(weights_, o);
    }
    static std::vector<int32_t> tokens(int64_t n, int32_t salt) {
        std::vector<int32_t> t;
        for (int64_t i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 37 + salt * 101 + 5) % 1400 + 4));
        return t;
    }
    static inline longcat::testing::temp_dir* dir_ = nullptr;
    static inline std::shared_ptr<model_weights> weights_;
};

TEST_F(EngineTest, PrefillThenDecodeEqualsTokenByToken) {
    const int64_t V = weights_->config.vocab_size;
    const auto toks = tokens(23, 1);
    engine a = make_engine(), b = make_engine();
    sequence sa, sb;
    forward_options all;
    all.all_logits = true;
    // a: 17-token prefill then 6 single-token decode steps.
    std::vector<float> la = a.step({&sa}, {{toks.begin(), toks.begin() + 17}}, all).logits;
    for (size_t i = 17; i < toks.size(); ++i) {
        auto l = a.step({&sa}, {{toks[i]}}).logits;
        la.insert(la.end(), l.begin(), l.end());
    }
    // b: every token alone.
    std::vector<float> lb;
    for (int32_t t : toks) {
        auto l = b.step({&sb}, {{t}}).logits;
        lb.insert(lb.end(), l.begin(), l.end());
    }
    ASSERT_EQ(la.size(), lb.size());
    for (size_t p = 0; p < toks.size(); ++p)
        EXPECT_LT(rel_err(la.data() + p * V, lb.data() + p * V, V), 1e-5) << "position " << p;
}

// tie_word_embeddings (HF ties lm_head to embed_tokens: one parameter): the output projection
// is the embedding matrix itself, so the logits change and no lm_head.weight is asked for.
TEST_F(EngineTest, TiedWordEmbeddingsProjectThroughTheEmbeddingMatrix) {
    longcat::testing::temp_dir dir;
    make_model({"tiny-b", dir.path(), 3, checkpoint_dtype::bf16});
    const auto config_path = dir.path() / "config.json";
    std::ifstream in(config_path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    in.close();
    model_config cfg = parse_model_config(text, config_path.string());
    ASSERT_FALSE(cfg.tie_word_embeddings);
    cfg.tie_word_embeddings = true;
    std::ofstream(config_path) << model_config_to_json(cfg);
    auto tied = std::make_shared<model_weights>(load_model_weights(dir.path()));
    EXPECT_EQ(tied->lm_head.data, tied->embed_tokens.data);
    EXPECT_EQ(tied->lm_head.rows, tied->embed_tokens.rows);
    EXPECT_EQ(tied->lm_head.cols, tied->embed_tokens.cols);
    EXPECT_NE(weights_->lm_head.data, weights_->embed_tokens.data);
    engine_options o;
    o.kv.page_size = 4;
    o.kv.num_pages = 64;
    engine a(tied, o), b = make_engine(64);
    sequence sa, sb;
    const auto toks = tokens(9, 4);
    const auto la = a.step({&sa}, {toks}).logits;
    const auto lb = b.step({&sb}, {toks}).logits;
    ASSERT_EQ(la.size(), lb.size());
    for (float v : la) ASSERT_TRUE(std::isfinite(v));
    EXPECT_GT(rel_err(la.data(), lb.data(), static_cast<int64_t>(la.size())), 0.1);
}

TEST_F(EngineTest, AloneEqualsInsideBatchOf16) {
    const int64_t V = weights_->config.vocab_size;
    constexpr int kBatch = 16, kDecode = 3;
    engine batched = make_engine(1024);
    std::vector<sequence> seqs(kBatch);
    std::vector<sequence*> ptrs;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < kBatch; ++i) {
        ptrs.push_back(&seqs[i]);
        prompts.push_back(tokens(3 + 2 * i, i));
    }
    std::vector<std::vector<float>> got(kBatch);
    auto out = batched.step(ptrs, prompts).logits;
    for (int i = 0; i < kBatch; ++i) got[i].assign(out.begin() + i * V, out.begin() + (i + 1) * V);
    for (int d = 0; d < kDecode; ++d) {
        std::vector<std::vector<int32_t>> next;
        for (int i = 0; i < kBatch; ++i) next.push_back({static_cast<int32_t>(10 + d + i)});
        out = batched.step(ptrs, next).logits;
        for (int i = 0; i < kBatch; ++i) got[i].insert(got[i].end(), out.begin() + i * V, out.begin() + (i + 1) * V);
    }
    for (int i = 0; i < kBatch; i += 5) {  // a few requests alone, each in a fresh engine
        engine alone = make_engine();
        sequence s;
        std::vector<float> ref = alone.step({&s}, {prompts[i]}).logits;
        for (int d = 0; d < kDecode; ++d) {
            auto l = alone.step({&s}, {{static_cast<int32_t>(10 + d + i)}}).logits;
            ref.insert(ref.end(), l.begin(), l.end());
        }
        for (int d = 0; d <= kDecode; ++d)
            EXPECT_LT(rel_err(got[i].data() + d * V, ref.data() + d * V, V), 1e-5)
                << "request " << i << " step " << d;
    }
}

TEST_F(EngineTest, FragmentedPoolIsBitwiseEqualToFresh) {
    const auto prompt = tokens(30, 7);
    engine fresh = make_engine(), frag = make_engine();
    // Fragment: take pages, give back every other one, so the sequence gets scattered pages.
    std::vector<int32_t> taken = frag.cache().take_pages(40);
    std::vector<int32_t> back;
    for (size_t i = 0; i < taken.size(); i += 2) back.push_back(taken[i]);
    frag.cache().release(back);
    sequence a, b;
    forward_options all;
    all.all_logits = true;
    auto la = fresh.step({&a}, {prompt}, all).logits;
    auto lb = frag.step({&b}, {prompt}, all).logits;
    EXPECT_NE(a.page_table, b.page_table);
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
    for (int i = 0; i < 3; ++i) {
        la = fresh.step({&a}, {{static_cast<int32_t>(40 + i)}}).logits;
        lb = frag.step({&b}, {{static_cast<int32_t>(40 + i)}}).logits;
        EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float))) << "decode " << i;
    }
}

// Prefill/decode disaggregation's KV move (ARCHITECTURE.md §6): a prompt prefilled on one
// engine, its KV rows exported per (chunk, pool) and imported into another engine's fragmented
// pool, decodes bitwise like the engine that prefilled it — fp32 and bf16 caches.
TEST_F(EngineTest, KvRowsMovedToAnotherCacheDecodeBitwiseAlike) {
    for (kernels::dtype type : {kernels::dtype::f32, kernels::dtype::bf16}) {
        engine_options o;
        o.kv.page_size = 4;
        o.kv.num_pages = 256;
        o.kv.type = type;
        engine prefill(weights_, o), decode(weights_, o);
        std::vector<int32_t> taken = decode.cache().take_pages(30);
        std::vector<int32_t> back;
        for (size_t i = 0; i < taken.size(); i += 3) back.push_back(taken[i]);
        decode.cache().release(back);
        const auto prompt = tokens(23, 11);
        sequence a;
        prefill.step({&a}, {prompt});
        sequence b;
        b.tokens = prompt;
        ASSERT_TRUE(decode.cache().reserve(b.page_table, static_cast<int64_t>(prompt.size())));
        EXPECT_NE(a.page_table, b.page_table);
        const int64_t chunk = 8, n = static_cast<int64_t>(prompt.size());
        const kv_cache& from = prefill.cache();
        std::vector<uint8_t> rows;
        for (int64_t begin = 0; begin < n; begin += chunk) {
            const int64_t count = std::min(chunk, n - begin);
            for (int64_t pool = 0; pool < from.num_pools(); ++pool) {
                rows.assign(static_cast<size_t>(count * from.row_bytes()), 0);
                from.export_rows(a.page_table, pool, begin, count, rows.data());
                decode.cache().import_rows(b.page_table, pool, begin, count, rows.data());
            }
        }
        for (int i = 0; i < 3; ++i) {
            const auto la = prefill.step({&a}, {{static_cast<int32_t>(50 + i)}}).logits;
            const auto lb = decode.step({&b}, {{static_cast<int32_t>(50 + i)}}).logits;
            ASSERT_EQ(la.size(), lb.size());
            EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)))
                << kernels::dtype_name(type) << " decode " << i;
        }
        // Rows outside the table or a pool that does not exist are refused by name.
        rows.assign(static_cast<size_t>(from.row_bytes()), 0);
        try {
            decode.cache().import_rows(b.page_table, 0, static_cast<int64_t>(b.page_table.size()) * 4, 1, rows.data());
            ADD_FAILURE() << "a row past the table was accepted";
        } catch (const model_error& e) {
            EXPECT_NE(std::string(e.what()).find("outside the page table"), std::string::npos) << e.what();
        }
        try {
            from.export_rows(a.page_table, from.num_pools(), 0, 1, rows.data());
            ADD_FAILURE() << "a pool that does not exist was accepted";
        } catch (const model_error& e) {
            EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
        }
    }
}

TEST_F(EngineTest, StepTrafficCountsWhatTheStepReads) {
    // Closed forms from the config (bf16 checkpoint, fp32 KV, fp32 gate and norms).
    const model_config& c = weights_->config;
    engine e = make_engine();
    sequence s;
    e.step({&s}, {tokens(9, 4)});
    forward_output out = e.step({&s}, {{77}});
    const step_traffic& t = out.traffic;
    const uint64_t H = c.hidden_size, L = c.num_layers, heads = c.num_attention_heads;
    EXPECT_EQ(t.embedding, H * 2);
    EXPECT_EQ(t.lm_head, static_cast<uint64_t>(c.vocab_size) * H * 2);
    const uint64_t attn = H * c.q_lora_rank + c.q_lora_rank * heads * c.qk_head_dim() +
                          H * (c.kv_lora_rank + c.qk_rope_head_dim) +
                          c.kv_lora_rank * heads * (c.qk_nope_head_dim + c.v_head_dim) +
                          heads * c.v_head_dim * H;
    EXPECT_EQ(t.attention, L * 2 * attn * 2);
    EXPECT_EQ(t.dense_ffn, L * 2 * 3 * H * c.ffn_hidden_size * 2);
    EXPECT_EQ(t.gate, L * (c.num_experts_total() * H + c.num_experts_total()) * 4);
    EXPECT_EQ(t.kv_read, L * 2 * 10 * (c.kv_lora_rank + c.qk_rope_head_dim) * 4);
    EXPECT_EQ(t.experts, static_cast<uint64_t>(out.num_distinct_experts) * 3 * H * c.expert_ffn_hidden_size * 2);
    // One token: every real slot is a distinct expert within its layer.
    EXPECT_EQ(out.num_distinct_experts, out.num_real_slots);
}

TEST_F(EngineTest, OutOfPagesIsAnErrorAndChangesNothing) {
    engine e = make_engine(4);  // 16 tokens
    sequence s;
    EXPECT_THROW(e.step({&s}, {tokens(17, 2)}), model_error);
    EXPECT_TRUE(s.page_table.empty());
    EXPECT_EQ(e.cache().num_free_pages(), 4);
    EXPECT_NO_THROW(e.step({&s}, {tokens(16, 2)}));
}

// A token id outside the vocabulary is refused before any page is taken (it used to be refused
// in the forward pass, after the pages were reserved, leaving them in the sequence's table).
TEST_F(EngineTest, BadTokenIdIsAnErrorAndChangesNothing) {
    engine e = make_engine(4);
    const int64_t vocab = e.config().vocab_size;
    for (const int32_t bad : {static_cast<int32_t>(vocab), -1}) {
        sequence s;
        std::vector<int32_t> ids = tokens(5, 3);
        ids[2] = bad;
        try {
            e.step({&s}, {ids});
            ADD_FAILURE() << "id " << bad << " accepted";
        } catch (const model_error& err) {
            EXPECT_NE(std::string(err.what()).find("token id " + std::to_string(bad)),
                      std::string::npos)
                << err.what();
        }
        EXPECT_TRUE(s.page_table.empty());
        EXPECT_TRUE(s.tokens.empty());
        EXPECT_EQ(e.cache().num_free_pages(), 4);
    }
}

// The same sequence twice in one step would write the same KV positions from two slices and
// append its tokens twice: refused, nothing changed.
TEST_F(EngineTest, SameSequenceTwiceInAStepIsRefused) {
    engine e = make_engine(16);
    sequence s;
    try {
        e.step({&s, &s}, {tokens(3, 1), tokens(2, 2)});
        ADD_FAILURE() << "the same sequence twice accepted";
    } catch (const model_error& err) {
        EXPECT_NE(
            std::string(err.what()).find("sequences 0 and 1 of the step are the same sequence"),
            std::string::npos)
            << err.what();
    }
    EXPECT_TRUE(s.page_table.empty());
    EXPECT_TRUE(s.tokens.empty());
    EXPECT_EQ(e.cache().num_free_pages(), 16);
}

TEST_F(EngineTest, GenerateRefusesMaxTokensBelowOne) {
    engine e = make_engine();
    for (const int64_t max_tokens : {int64_t{0}, int64_t{-5}}) {
        try {
            e.generate(tokens(4, 1), max_tokens, sampling_params{});
            ADD_FAILURE() << "max_tokens " << max_tokens << " accepted";
        } catch (const model_error& err) {
            EXPECT_NE(std::string(err.what())
                          .find("max_tokens must be at least 1, got " + std::to_string(max_tokens)),
                      std::string::npos)
                << err.what();
        }
    }
    EXPECT_EQ(e.cache().num_free_pages(), 256);
    EXPECT_EQ(e.generate(tokens(4, 1), 1, sampling_params{}).size(), 1u);
}

}  // namespace
}  // namespace longcat::model
