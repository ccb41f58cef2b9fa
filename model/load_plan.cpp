#include "model/load_plan.hpp"

#include <algorithm>
#include <cstdio>

#include "model/error.hpp"

namespace longcat::model {

namespace {

using kernels::dtype;

std::string ticked(std::string_view name) { return "`" + std::string(name) + "`"; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

constexpr std::string_view kScaleSuffix = "_scale_inv";

const std::map<std::string, std::string> kFormatMetadata = {{"format", "pt"}};

// Appends the §8 tensors of a config, in checkpoint order.
class spec_builder {
  public:
    spec_builder(const model_config& cfg, const layout_options& options)
        : cfg_(cfg), options_(options) {}

    void add(std::string name, dtype type, std::vector<int64_t> shape) {
        specs_.push_back({std::move(name), type, std::move(shape)});
    }
    void norm(const std::string& name, int64_t dim) { add(name, dtype::bf16, {dim}); }
    void linear(const std::string& name, int64_t out, int64_t in, bool quantized) {
        if (!quantized) {
            add(name, dtype::bf16, {out, in});
            return;
        }
        add(name, dtype::f8_e4m3, {out, in});
        add(name + std::string(kScaleSuffix), dtype::f32,
            {ceil_div(out, kFp8BlockSize), ceil_div(in, kFp8BlockSize)});
    }
    void mla(const std::string& prefix) {
        const int64_t hidden = cfg_.hidden_size;
        const int64_t heads = cfg_.num_attention_heads;
        const bool q = options_.fp8;
        linear(prefix + "q_a_proj.weight", cfg_.q_lora_rank, hidden, q);
        norm(prefix + "q_a_layernorm.weight", cfg_.q_lora_rank);
        linear(prefix + "q_b_proj.weight", heads * cfg_.qk_head_dim(), cfg_.q_lora_rank, q);
        linear(prefix + "kv_a_proj_with_mqa.weight", cfg_.kv_lora_rank + cfg_.qk_rope_head_dim,
               hidden, q);
        norm(prefix + "kv_a_layernorm.weight", cfg_.kv_lora_rank);
        linear(prefix + "kv_b_proj.weight", heads * (cfg_.qk_nope_head_dim + cfg_.v_head_dim),
               cfg_.kv_lora_rank, q);
        linear(prefix + "o_proj.weight", hidden, heads * cfg_.v_head_dim, q);
    }
    void ffn(const std::string& prefix, int64_t width, bool quantized) {
        linear(prefix + "gate_proj.weight", width, cfg_.hidden_size, quantized);
        linear(prefix + "up_proj.weight", width, cfg_.hidden_size, quantized);
        linear(prefix + "down_proj.weight", cfg_.hidden_size, width, quantized);
    }

    std::vector<tensor_spec> build() {
        const int64_t hidden = cfg_.hidden_size;
        add("model.embed_tokens.weight", dtype::bf16, {cfg_.vocab_size, hidden});
        for (int64_t layer = 0; layer < cfg_.num_layers; ++layer) {
            const std::string p = "model.layers." + std::to_string(layer) + ".";
            for (int i = 0; i < 2; ++i) {
                norm(p + "input_layernorm." + std::to_string(i) + ".weight", hidden);
                norm(p + "post_attention_layernorm." + std::to_string(i) + ".weight", hidden);
            }
            for (int i = 0; i < 2; ++i) mla(p + "self_attn." + std::to_string(i) + ".");
            for (int i = 0; i < 2; ++i) {
                ffn(p + "mlps." + std::to_string(i) + ".", cfg_.ffn_hidden_size, options_.fp8);
            }
            add(p + "mlp.router.classifier.weight", options_.router_dtype,
                {cfg_.num_experts_total(), hidden});
            if (cfg_.router_bias) {
                add(p + "mlp.router.classifier.bias", dtype::f32, {cfg_.num_experts_total()});
            }
            add(p + "mlp.router.e_score_correction_bias", dtype::f32, {cfg_.num_experts_total()});
            for (int64_t e = 0; e < cfg_.n_routed_experts; ++e) {
                ffn(p + "mlp.experts." + std::to_string(e) + ".", cfg_.expert_ffn_hidden_size,
                    options_.fp8 && options_.fp8_experts);
            }
        }
        norm("model.norm.weight", hidden);
        if (!cfg_.tie_word_embeddings)
            add("lm_head.weight", dtype::bf16, {cfg_.vocab_size, hidden});
        if (cfg_.num_nextn_layers > 0) {
            const std::string p = "model.mtp.layers.0.";
            add("model.mtp.embed_tokens.weight", dtype::bf16, {cfg_.vocab_size, hidden});
            linear(p + "eh_proj.weight", hidden, 2 * hidden, options_.fp8);
            norm(p + "enorm.m.weight", hidden);
            norm(p + "hnorm.m.weight", hidden);
            norm(p + "input_layernorm.weight", hidden);
            norm(p + "post_attention_layernorm.weight", hidden);
            mla(p + "self_attn.");
            ffn(p + "transformer_layer.mlp.", cfg_.ffn_hidden_size, options_.fp8);
            norm("model.mtp.norm.weight", hidden);
        }
        return std::move(specs_);
    }

  private:
    const model_config& cfg_;
    const layout_options& options_;
    std::vector<tensor_spec> specs_;
};

std::string shard_name(size_t index, size_t count) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", index + 1, count);
    return buf;
}

// Builds one plan, checking each tensor against the layout and the config's §8 shapes.
class plan_builder {
  public:
    plan_builder(const checkpoint_layout& layout, const model_config& cfg, std::string role)
        : layout_(layout), role_(std::move(role)) {
        for (tensor_spec& spec : longcat_tensor_specs(cfg)) {
            expected_.emplace(std::move(spec.name), std::move(spec.shape));
        }
    }

    const tensor_info& need(const std::string& name) const {
        const tensor_info* info = layout_.find(name);
        if (info == nullptr) {
            throw model_error(layout_.source() + ": tensor " + ticked(name) + " needed by the " +
                              role_ + " plan is missing");
        }
        auto it = expected_.find(name);
        if (it != expected_.end() && it->second != info->shape) {
            throw model_error(info->file.string() + ": tensor " + ticked(name) + " has shape " +
                              shape_to_string(info->shape) + ", but the config implies " +
                              shape_to_string(it->second));
        }
        return *info;
    }

    void whole(const std::string& name) { add(need(name), std::nullopt); }
    void rows(const std::string& name, int64_t begin, int64_t end) {
        add(need(name), tensor_slice::rows(begin, end));
    }
    void cols(const std::string& name, int64_t begin, int64_t end) {
        add(need(name), tensor_slice::cols(begin, end));
    }
    bool planned(std::string_view name) const { return plan_.find(name) != nullptr; }
    load_plan take() { return std::move(plan_); }

  private:
    void add_entry(const tensor_info& info, const std::optional<tensor_slice>& slice) {
        plan_entry entry;
        entry.name = info.name;
        entry.file = info.file;
        entry.type = info.type;
        entry.shape = info.shape;
        entry.slice = slice;
        entry.ranges = slice_byte_ranges(info, slice.value_or(tensor_slice{}));
        for (const byte_range& r : entry.ranges) entry.num_bytes += r.size();
        entry.loaded_shape = info.shape;
        if (slice && !info.shape.empty()) {
            entry.loaded_shape[0] =
                (slice->row_end == -1 ? info.shape[0] : slice->row_end) - slice->row_begin;
            if (info.shape.size() == 2) {
                entry.loaded_shape[1] =
                    (slice->col_end == -1 ? info.shape[1] : slice->col_end) - slice->col_begin;
            }
        }
        plan_.add(std::move(entry));
    }

    // The weight, then its scale companion sliced to the 128-blocks the weight slice touches.
    // NOTES: when a slice boundary is not a multiple of 128, the block straddling it is needed by
    // both neighbours, so both plans include that partial block row/column of the scale.
    void add(const tensor_info& info, const std::optional<tensor_slice>& slice) {
        add_entry(info, slice);
        const std::string scale_name = info.name + std::string(kScaleSuffix);
        const tensor_info* scale = layout_.find(scale_name);
        if (scale == nullptr) {
            if (info.type == dtype::f8_e4m3) {
                throw model_error(info.file.string() + ": FP8 tensor " + ticked(info.name) +
                                  " has no scale tensor " + ticked(scale_name));
            }
            return;
        }
        if (info.shape.size() != 2) {
            throw model_error(info.file.string() + ": tensor " + ticked(info.name) +
                              " has a scale tensor but is not 2-D");
        }
        const std::vector<int64_t> expected = {ceil_div(info.shape[0], kFp8BlockSize),
                                               ceil_div(info.shape[1], kFp8BlockSize)};
        if (scale->shape != expected) {
            throw model_error(scale->file.string() + ": scale tensor " + ticked(scale_name) +
                              " has shape " + shape_to_string(scale->shape) + ", expected " +
                              shape_to_string(expected) + " for " + ticked(info.name) + " " +
                              shape_to_string(info.shape));
        }
        std::optional<tensor_slice> block_slice;
        if (slice) {
            const int64_t row_end = slice->row_end == -1 ? info.shape[0] : slice->row_end;
            const int64_t col_end = slice->col_end == -1 ? info.shape[1] : slice->col_end;
            block_slice =
                tensor_slice{slice->row_begin / kFp8BlockSize, ceil_div(row_end, kFp8BlockSize),
                             slice->col_begin / kFp8BlockSize, ceil_div(col_end, kFp8BlockSize)};
        }
        add_entry(*scale, block_slice);
    }

    const checkpoint_layout& layout_;
    std::string role_;
    std::map<std::string, std::vector<int64_t>, std::less<>> expected_;
    load_plan plan_;
};

}  // namespace

// -- specs and layouts ----------------------------------------------------------------------------

std::vector<tensor_spec> longcat_tensor_specs(const model_config& cfg,
                                              const layout_options& options) {
    return spec_builder(cfg, options).build();
}

checkpoint_layout::checkpoint_layout(std::vector<tensor_info> tensors, std::string source)
    : tensors_(std::move(tensors)), source_(std::move(source)) {
    std::sort(tensors_.begin(), tensors_.end(),
              [](const tensor_info& a, const tensor_info& b) { return a.name < b.name; });
    for (size_t i = 1; i < tensors_.size(); ++i) {
        if (tensors_[i].name == tensors_[i - 1].name) {
            throw model_error(source_ + ": duplicate tensor " + ticked(tensors_[i].name));
        }
    }
}

checkpoint_layout checkpoint_layout::from_checkpoint(const checkpoint& ckpt) {
    return checkpoint_layout(ckpt.tensors(), ckpt.path().string());
}

checkpoint_layout checkpoint_layout::synthesize(const model_config& cfg,
                                                const layout_options& options) {
    std::vector<tensor_spec> specs = longcat_tensor_specs(cfg, options);
    std::vector<std::vector<tensor_spec>> shards(1);
    if (options.max_shard_bytes > 0) {
        uint64_t shard_bytes = 0;
        for (tensor_spec& spec : specs) {
            const uint64_t bytes = static_cast<uint64_t>(shape_num_elements(spec.shape)) *
                                   kernels::dtype_size(spec.type);
            if (!shards.back().empty() && shard_bytes + bytes > options.max_shard_bytes) {
                shards.emplace_back();
                shard_bytes = 0;
            }
            shard_bytes += bytes;
            shards.back().push_back(std::move(spec));
        }
    } else {
        shards.back() = std::move(specs);
    }
    std::vector<tensor_info> tensors;
    for (size_t i = 0; i < shards.size(); ++i) {
        const std::string file =
            options.max_shard_bytes > 0 ? shard_name(i, shards.size()) : "model.safetensors";
        for (tensor_info& info :
             safetensors_file_layout(file, std::move(shards[i]), kFormatMetadata)) {
            tensors.push_back(std::move(info));
        }
    }
    std::string source = "synthesised " + std::string(options.fp8 ? "FP8" : "BF16") +
                         " layout (hidden_size " + std::to_string(cfg.hidden_size) +
                         ", num_layers " + std::to_string(cfg.num_layers) + ")";
    return checkpoint_layout(std::move(tensors), std::move(source));
}

const tensor_info* checkpoint_layout::find(std::string_view name) const {
    auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                               [](const tensor_info& a, std::string_view n) { return a.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

const tensor_info& checkpoint_layout::at(std::string_view name) const {
    const tensor_info* info = find(name);
    if (info == nullptr) throw model_error(source_ + ": no tensor " + ticked(name));
    return *info;
}

uint64_t checkpoint_layout::total_bytes() const {
    uint64_t total = 0;
    for (const tensor_info& info : tensors_) total += info.num_bytes();
    return total;
}

std::vector<std::string> checkpoint_layout::file_names() const {
    std::vector<std::string> names;
    for (const tensor_info& info : tensors_) names.push_back(info.file.filename().string());
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    return names;
}

std::map<std::string, std::string> checkpoint_layout::weight_map() const {
    std::map<std::string, std::string> map;
    for (const tensor_info& info : tensors_) map[info.name] = info.file.filename().string();
    return map;
}

std::vector<byte_range> slice_byte_ranges(const tensor_info& info, const tensor_slice& slice) {
    const auto fail = [&](const std::string& what) {
        throw model_error(info.file.string() + ": tensor " + ticked(info.name) + " " +
                          shape_to_string(info.shape) + ": " + what);
    };
    const uint64_t esize = kernels::dtype_size(info.type);
    if (info.shape.empty()) {
        if (slice != tensor_slice{}) fail("cannot slice a scalar");
        return {{info.begin, info.end}};
    }
    const int64_t rows = info.shape[0];
    const int64_t row_elems = shape_num_elements(std::span<const int64_t>(info.shape).subspan(1));
    const int64_t row_end = slice.row_end == -1 ? rows : slice.row_end;
    if (slice.row_begin < 0 || slice.row_begin > row_end || row_end > rows) {
        fail("row slice [" + std::to_string(slice.row_begin) + ", " +
             std::to_string(slice.row_end) + ") out of range");
    }
    int64_t col_begin = 0;
    int64_t col_end = row_elems;
    if (slice.col_begin != 0 || slice.col_end != -1) {
        if (info.shape.size() != 2) fail("column slices need a 2-D tensor");
        col_begin = slice.col_begin;
        col_end = slice.col_end == -1 ? row_elems : slice.col_end;
        if (col_begin < 0 || col_begin > col_end || col_end > row_elems) {
            fail("column slice [" + std::to_string(slice.col_begin) + ", " +
                 std::to_string(slice.col_end) + ") out of range");
        }
    }
    std::vector<byte_range> ranges;
    if (slice.row_begin == row_end || col_begin == col_end) return ranges;
    const uint64_t row_bytes = static_cast<uint64_t>(row_elems) * esize;
    for (int64_t r = slice.row_begin; r < row_end; ++r) {
        const uint64_t begin = info.begin + static_cast<uint64_t>(r) * row_bytes +
                               static_cast<uint64_t>(col_begin) * esize;
        const uint64_t end = begin + static_cast<uint64_t>(col_end - col_begin) * esize;
        if (!ranges.empty() && ranges.back().end == begin) {
            ranges.back().end = end;
        } else {
            ranges.push_back({begin, end});
        }
    }
    return ranges;
}

// -- plans ----------------------------------------------------------------------------------------

void load_plan::add(plan_entry entry) {
    if (index_.contains(entry.name)) {
        throw model_error("load plan: duplicate tensor " + ticked(entry.name));
    }
    index_.emplace(entry.name, entries_.size());
    total_bytes_ += entry.num_bytes;
    entries_.push_back(std::move(entry));
}

const plan_entry* load_plan::find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &entries_[it->second];
}

std::vector<std::string> load_plan::names() const {
    std::vector<std::string> names;
    names.reserve(entries_.size());
    for (const plan_entry& entry : entries_) names.push_back(entry.name);
    return names;
}

load_plan plan_attention_worker(const checkpoint_layout& layout, const model_config& cfg,
                                int64_t tp_rank, int64_t tp_size) {
    if (tp_size < 1) {
        throw model_error("attention worker plan: TP size must be ≥ 1, got " +
                          std::to_string(tp_size));
    }
    if (tp_rank < 0 || tp_rank >= tp_size) {
        throw model_error("attention worker plan: TP rank " + std::to_string(tp_rank) +
                          " out of range [0, " + std::to_string(tp_size) + ")");
    }
    if (cfg.ffn_hidden_size % tp_size != 0) {
        throw model_error("attention worker plan: ffn_hidden_size (" +
                          std::to_string(cfg.ffn_hidden_size) +
                          ") is not divisible by the TP size R = " + std::to_string(tp_size));
    }
    const int64_t width = cfg.ffn_hidden_size / tp_size;
    const int64_t begin = tp_rank * width;
    const int64_t end = begin + width;
    plan_builder plan(
        layout, cfg,
        "attention worker (TP " + std::to_string(tp_rank) + "/" + std::to_string(tp_size) + ")");
    // Column-parallel gate/up (rows of [F, H]), row-parallel down (columns of [H, F]).
    auto dense_ffn = [&](const std::string& prefix) {
        plan.rows(prefix + "gate_proj.weight", begin, end);
        plan.rows(prefix + "up_proj.weight", begin, end);
        plan.cols(prefix + "down_proj.weight", begin, end);
    };
    auto mla = [&](const std::string& prefix) {
        for (const char* name : {"q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa",
                                 "kv_a_layernorm", "kv_b_proj", "o_proj"}) {
            plan.whole(prefix + name + ".weight");
        }
    };

    plan.whole("model.embed_tokens.weight");
    for (int64_t layer = 0; layer < cfg.num_layers; ++layer) {
        const std::string p = "model.layers." + std::to_string(layer) + ".";
        for (int i = 0; i < 2; ++i) {
            plan.whole(p + "input_layernorm." + std::to_string(i) + ".weight");
            plan.whole(p + "post_attention_layernorm." + std::to_string(i) + ".weight");
        }
        for (int i = 0; i < 2; ++i) mla(p + "self_attn." + std::to_string(i) + ".");
        for (int i = 0; i < 2; ++i) dense_ffn(p + "mlps." + std::to_string(i) + ".");
        plan.whole(p + "mlp.router.classifier.weight");
        if (cfg.router_bias) plan.whole(p + "mlp.router.classifier.bias");
        plan.whole(p + "mlp.router.e_score_correction_bias");
    }
    plan.whole("model.norm.weight");
    if (!cfg.tie_word_embeddings) plan.whole("lm_head.weight");
    if (cfg.num_nextn_layers > 0) {
        const std::string p = "model.mtp.layers.0.";
        plan.whole("model.mtp.embed_tokens.weight");
        for (const char* name :
             {"eh_proj", "enorm.m", "hnorm.m", "input_layernorm", "post_attention_layernorm"}) {
            plan.whole(p + name + ".weight");
        }
        mla(p + "self_attn.");
        dense_ffn(p + "transformer_layer.mlp.");
        plan.whole("model.mtp.norm.weight");
        // Every other model.mtp.* tensor the checkpoint carries belongs to this role too.
        for (const tensor_info& info : layout.tensors()) {
            if (info.name.starts_with("model.mtp.") && !plan.planned(info.name)) {
                plan.whole(info.name);
            }
        }
    }
    return plan.take();
}

load_plan plan_expert_group(const checkpoint_layout& layout, const model_config& cfg,
                            const std::map<int64_t, std::vector<int64_t>>& experts_by_layer) {
    plan_builder plan(layout, cfg, "expert group");
    for (const auto& [layer, experts] : experts_by_layer) {
        if (layer < 0 || layer >= cfg.num_layers) {
            throw model_error("expert group plan: layer " + std::to_string(layer) +
                              " out of range [0, num_layers = " + std::to_string(cfg.num_layers) +
                              ")");
        }
        std::vector<int64_t> sorted = experts;
        std::sort(sorted.begin(), sorted.end());
        for (size_t i = 0; i < sorted.size(); ++i) {
            const int64_t expert = sorted[i];
            const std::string where = "expert group plan: layer " + std::to_string(layer) +
                                      ", expert " + std::to_string(expert);
            if (expert >= cfg.n_routed_experts && expert < cfg.num_experts_total()) {
                throw model_error(where + " is a zero expert (ids ≥ n_routed_experts = " +
                                  std::to_string(cfg.n_routed_experts) + " hold no weights)");
            }
            if (expert < 0 || expert >= cfg.n_routed_experts) {
                throw model_error(where + " out of range [0, n_routed_experts = " +
                                  std::to_string(cfg.n_routed_experts) + ")");
            }
            if (i > 0 && sorted[i - 1] == expert) throw model_error(where + " listed twice");
            const std::string p = "model.layers." + std::to_string(layer) + ".mlp.experts." +
                                  std::to_string(expert) + ".";
            for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
                plan.whole(p + proj + ".weight");
            }
        }
    }
    return plan.take();
}

std::map<std::string, loaded_tensor> load_planned_tensors(const checkpoint& ckpt,
                                                          const load_plan& plan) {
    std::map<std::string, loaded_tensor> out;
    for (const plan_entry& entry : plan.entries()) {
        if (ends_with(entry.name, kScaleSuffix) &&
            plan.find(entry.name.substr(0, entry.name.size() - kScaleSuffix.size())) != nullptr) {
            continue;  // consumed by its weight's dequantisation
        }
        const tensor_info& info = ckpt.info(entry.name);
        if (info.type != entry.type || info.shape != entry.shape ||
            info.file.filename() != entry.file.filename() ||
            slice_byte_ranges(info, entry.slice.value_or(tensor_slice{})) != entry.ranges) {
            throw model_error(info.file.string() + ": tensor " + ticked(entry.name) +
                              " is not where the load plan expects it (" +
                              std::string(safetensors_dtype_name(info.type)) + " " +
                              shape_to_string(info.shape) + " in " + info.file.string() + " vs " +
                              std::string(safetensors_dtype_name(entry.type)) + " " +
                              shape_to_string(entry.shape) + " in " + entry.file.string() + ")");
        }
        out.emplace(entry.name, ckpt.load(entry.name, entry.shape, entry.slice));
    }
    return out;
}

}  // namespace longcat::model
