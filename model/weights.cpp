#include "model/weights.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include "model/error.hpp"
#include "model/safetensors.hpp"

namespace longcat::model {
namespace {

// Brings a zero-copy view's pages into memory now (read-ahead, then one read per page), so the
// first forward step does not pay for page faults and the load time reported is the real one.
void prefault(const void* data, uint64_t bytes) {
    if (bytes == 0) return;
    const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    const auto begin = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
    const auto end = reinterpret_cast<uintptr_t>(data) + bytes;
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_WILLNEED);
    const auto* p = static_cast<const volatile uint8_t*>(data);
    const int64_t num_pages = static_cast<int64_t>((bytes + page - 1) / page);
    uint8_t sink = 0;
#pragma omp parallel for schedule(static) reduction(^ : sink) if (num_pages > 1024)
    for (int64_t i = 0; i < num_pages; ++i) sink ^= p[static_cast<uint64_t>(i) * page];
    (void)sink;
}

class weight_loader {
public:
    weight_loader(const checkpoint& ckpt, model_weights& w) : ckpt_(ckpt), w_(w) {}

    kernels::matrix_view matrix(const std::string& name, int64_t rows, int64_t cols,
                                const std::optional<tensor_slice>& slice = std::nullopt) {
        loaded_tensor t = ckpt_.load(name, {rows, cols}, slice);
        if (t.type() != kernels::dtype::f32 && t.type() != kernels::dtype::bf16)
            throw model_error(ckpt_.path().string() + ": " + name + ": dtype " +
                              std::string(kernels::dtype_name(t.type())) +
                              " cannot be used as a matrix");
        kernels::matrix_view v{t.data(), t.type(), t.shape()[0], t.shape()[1]};
        if (t.is_view()) prefault(t.data(), t.num_bytes());
        done_ += t.num_bytes();
        keep(std::move(t));
        return v;
    }

    std::vector<float> vec(const std::string& name, std::vector<int64_t> shape) {
        std::vector<float> v = ckpt_.load_f32(name, shape);
        done_ += v.size() * sizeof(float);
        return v;
    }

    uint64_t done() const { return done_; }

private:
    void keep(loaded_tensor t) {
        auto holder = std::make_shared<loaded_tensor>(std::move(t));
        w_.storage.push_back(std::shared_ptr<const void>(holder, holder.get()));
    }

    const checkpoint& ckpt_;
    model_weights& w_;
    uint64_t done_ = 0;
};

attention_block_weights load_attention(weight_loader& ld, const model_config& c, const std::string& p) {
    const int64_t H = c.num_attention_heads;
    attention_block_weights a;
    a.q_a_proj = ld.matrix(p + "q_a_proj.weight", c.q_lora_rank, c.hidden_size);
    a.q_a_layernorm = ld.vec(p + "q_a_layernorm.weight", {c.q_lora_rank});
    a.q_b_proj = ld.matrix(p + "q_b_proj.weight", H * c.qk_head_dim(), c.q_lora_rank);
    a.kv_a_proj_with_mqa = ld.matrix(p + "kv_a_proj_with_mqa.weight",
                                     c.kv_lora_rank + c.qk_rope_head_dim, c.hidden_size);
    a.kv_a_layernorm = ld.vec(p + "kv_a_layernorm.weight", {c.kv_lora_rank});
    a.kv_b_proj = ld.matrix(p + "kv_b_proj.weight", H * (c.qk_nope_head_dim + c.v_head_dim),
                            c.kv_lora_rank);
    a.o_proj = ld.matrix(p + "o_proj.weight", c.hidden_size, H * c.v_head_dim);
    return a;
}

// gate/up rows and down columns [rank·F/R, (rank+1)·F/R) of a dense FFN of width F.
dense_ffn_weights load_dense(weight_loader& ld, const model_config& c, const std::string& p,
                             int64_t rank, int64_t size) {
    const int64_t F = c.ffn_hidden_size, H = c.hidden_size;
    const int64_t b = rank * F / size, e = (rank + 1) * F / size;
    const bool sharded = size > 1;
    dense_ffn_weights d;
    d.gate = ld.matrix(p + "gate_proj.weight", F, H,
                       sharded ? std::optional(tensor_slice::rows(b, e)) : std::nullopt);
    d.up = ld.matrix(p + "up_proj.weight", F, H,
                     sharded ? std::optional(tensor_slice::rows(b, e)) : std::nullopt);
    d.down = ld.matrix(p + "down_proj.weight", H, F,
                       sharded ? std::optional(tensor_slice::cols(b, e)) : std::nullopt);
    return d;
}

dense_ffn_weights load_expert_as_dense(weight_loader& ld, const model_config& c, const std::string& p) {
    dense_ffn_weights d;
    d.gate = ld.matrix(p + "gate_proj.weight", c.expert_ffn_hidden_size, c.hidden_size);
    d.up = ld.matrix(p + "up_proj.weight", c.expert_ffn_hidden_size, c.hidden_size);
    d.down = ld.matrix(p + "down_proj.weight", c.hidden_size, c.expert_ffn_hidden_size);
    return d;
}

}  // namespace

model_weights load_model_weights(const std::filesystem::path& model_dir, const weight_selection& sel,
                                 const std::function<void(uint64_t, uint64_t)>& on_progress) {
    model_weights w;
    w.config = load_model_config(model_dir / "config.json");
    const model_config& c = w.config;
    if (sel.tp_size < 1 || sel.tp_rank < 0 || sel.tp_rank >= sel.tp_size)
        throw model_error("weights: tp_rank " + std::to_string(sel.tp_rank) + " of tp_size " +
                          std::to_string(sel.tp_size) + " is invalid");
    if (c.ffn_hidden_size % sel.tp_size != 0)
        throw model_error("weights: ffn_hidden_size " + std::to_string(c.ffn_hidden_size) +
                          " is not divisible by tp_size " + std::to_string(sel.tp_size));
    w.tp_rank = sel.tp_rank;
    w.tp_size = sel.tp_size;
    const checkpoint ckpt = checkpoint::open(model_dir);
    uint64_t total = 0;
    for (const tensor_info& t : ckpt.tensors()) total += t.num_bytes();
    weight_loader ld(ckpt, w);
    auto progress = [&] {
        if (on_progress) on_progress(ld.done(), total);
    };
    const int64_t H = c.hidden_size, E = c.num_experts_total();
    if (sel.attention) {
        w.embed_tokens = ld.matrix("model.embed_tokens.weight", c.vocab_size, H);
        // Tied (HF's tie_word_embeddings): the output projection is the embedding matrix itself,
        // and a checkpoint need not carry lm_head.weight.
        w.lm_head =
            c.tie_word_embeddings ? w.embed_tokens : ld.matrix("lm_head.weight", c.vocab_size, H);
        w.final_norm = ld.vec("model.norm.weight", {H});
    }
    w.layers.resize(static_cast<size_t>(c.num_layers));
    w.experts.assign(static_cast<size_t>(c.num_layers),
                     std::vector<kernels::expert_weights_view>(static_cast<size_t>(c.n_routed_experts)));
    for (int64_t l = 0; l < c.num_layers; ++l) {
        const std::string lp = "model.layers." + std::to_string(l) + ".";
        layer_weights& lw = w.layers[l];
        if (sel.attention) {
            for (int i = 0; i < 2; ++i) {
                const std::string is = std::to_string(i);
                lw.input_layernorm[i] = ld.vec(lp + "input_layernorm." + is + ".weight", {H});
                lw.post_attention_layernorm[i] = ld.vec(lp + "post_attention_layernorm." + is + ".weight", {H});
                lw.attn[i] = load_attention(ld, c, lp + "self_attn." + is + ".");
                lw.mlps[i] = load_dense(ld, c, lp + "mlps." + is + ".", sel.tp_rank, sel.tp_size);
            }
            lw.gate_weight = ld.vec(lp + "mlp.router.classifier.weight", {E, H});
            lw.gate_bias = ld.vec(lp + "mlp.router.e_score_correction_bias", {E});
        }
        std::vector<int32_t> ids;
        if (sel.all_experts) {
            for (int64_t e = 0; e < c.n_routed_experts; ++e) ids.push_back(static_cast<int32_t>(e));
        } else if (l < static_cast<int64_t>(sel.experts_by_layer.size())) {
            ids = sel.experts_by_layer[l];
        }
        for (int32_t e : ids) {
            if (e < 0 || e >= c.n_routed_experts)
                throw model_error("weights: layer " + std::to_string(l) + " expert " + std::to_string(e) +
                                  " is not a routed expert (0.." + std::to_string(c.n_routed_experts - 1) + ")");
            dense_ffn_weights d = load_expert_as_dense(ld, c, lp + "mlp.experts." + std::to_string(e) + ".");
            w.experts[l][e] = kernels::expert_weights_view{d.gate, d.up, d.down};
        }
        progress();
    }
    if (sel.attention && c.num_nextn_layers > 0 && ckpt.has("model.mtp.embed_tokens.weight")) {
        const std::string mp = "model.mtp.layers.0.";
        mtp_weights m;
        m.embed_tokens = ld.matrix("model.mtp.embed_tokens.weight", c.vocab_size, H);
        m.eh_proj = ld.matrix(mp + "eh_proj.weight", H, 2 * H);
        m.enorm = ld.vec(mp + "enorm.m.weight", {H});
        m.hnorm = ld.vec(mp + "hnorm.m.weight", {H});
        m.input_layernorm = ld.vec(mp + "input_layernorm.weight", {H});
        m.post_attention_layernorm = ld.vec(mp + "post_attention_layernorm.weight", {H});
        m.attn = load_attention(ld, c, mp + "self_attn.");
        m.mlp = load_dense(ld, c, mp + "transformer_layer.mlp.", sel.tp_rank, sel.tp_size);
        m.final_norm = ld.vec("model.mtp.norm.weight", {H});
        w.mtp = std::move(m);
    }
    progress();
    return w;
}

}  // namespace longcat::model
