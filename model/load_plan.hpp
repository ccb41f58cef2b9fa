// Load plans (ARCHITECTURE.md §10): exactly which tensors, and which bytes of them, one role
// reads from a checkpoint. A plan is computed from a checkpoint_layout, which comes from an opened
// checkpoint or is synthesised from a model_config alone (the HF layout of longcat-flash.md §8),
// so plans for the 560B model can be checked with no weights present.
//
// Roles:
//   attention worker, TP rank r of R: embeddings, model.norm, lm_head, all norms, both MLA blocks
//     of every layer, the gate (router classifier + e_score_correction_bias), every model.mtp.*
//     tensor, and 1/R of each dense FFN (mlps.{i} and the MTP transformer_layer.mlp):
//     gate_proj/up_proj rows [r·F/R, (r+1)·F/R) and down_proj columns of the same range.
//   expert group: model.layers.{l}.mlp.experts.{e}.{gate,up,down}_proj.weight for the given
//     (layer, expert) pairs. Zero experts (ids ≥ n_routed_experts) hold no weights.
// FP8 `X_scale_inv` companions travel with their weights, sliced to the 128-blocks they cover.
// NOTES: when a TP boundary is not a multiple of 128 (e.g. F/R = 192), the scale block row (or
// column) straddling it is included by both neighbouring ranks, so Σ over ranks of scale bytes
// then exceeds the unsharded scale bytes; the weight bytes still partition exactly.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/api/dtype.hpp"
#include "model/config.hpp"
#include "model/safetensors.hpp"

namespace longcat::model {

// How to synthesise a checkpoint layout from a config.
struct layout_options {
    // F8_E4M3 Linear weights with F32 `weight_scale_inv` companions (the -FP8 release): attention
    // projections, dense FFNs, MTP eh_proj/attention/FFN, and experts if `fp8_experts`.
    // Norms, embeddings, lm_head, the gate and its bias stay in higher precision.
    bool fp8 = false;
    bool fp8_experts = true;  // unverified for the release (longcat-flash.md §7)
    kernels::dtype router_dtype = kernels::dtype::bf16;  // mlp.router.classifier.weight
    // 0: one `model.safetensors`. Otherwise tensors are packed in checkpoint order into
    // `model-0000k-of-0000n.safetensors` of at most this many data bytes (a tensor larger than the
    // limit gets a shard of its own), as HF's save_pretrained(max_shard_size) does.
    uint64_t max_shard_bytes = 0;
};

// The §8 tensors of a config in checkpoint order (embedding, layers, model.norm, lm_head, MTP),
// with their stored dtypes; FP8 scale companions follow their weights.
std::vector<tensor_spec> longcat_tensor_specs(const model_config& cfg,
                                              const layout_options& options = {});

// Every tensor of a checkpoint with its file and absolute byte range.
class checkpoint_layout {
  public:
    checkpoint_layout() = default;
    // `source` names the layout in errors (a checkpoint path, or what it was synthesised from).
    // Throws on duplicate names.
    checkpoint_layout(std::vector<tensor_info> tensors, std::string source);

    static checkpoint_layout from_checkpoint(const checkpoint& ckpt);
    // The byte ranges write_safetensors(file, tensors, {{"format", "pt"}}) would produce for
    // longcat_tensor_specs(cfg, options), shard by shard; `file` is the bare shard file name.
    static checkpoint_layout synthesize(const model_config& cfg,
                                        const layout_options& options = {});

    const std::vector<tensor_info>& tensors() const { return tensors_; }  // sorted by name
    const std::string& source() const { return source_; }
    bool has(std::string_view name) const { return find(name) != nullptr; }
    const tensor_info* find(std::string_view name) const;
    const tensor_info& at(std::string_view name) const;  // throws naming the tensor
    uint64_t total_bytes() const;                        // Σ tensor bytes
    // File names (no folder) and the weight_map of model.safetensors.index.json.
    std::vector<std::string> file_names() const;
    std::map<std::string, std::string> weight_map() const;

  private:
    std::vector<tensor_info> tensors_;
    std::string source_;
};

// The byte ranges of `slice` of a tensor stored at `info` (absolute, ascending, adjacent ranges
// merged): one range for a row slice, one per row for a column slice of a 2-D tensor.
std::vector<byte_range> slice_byte_ranges(const tensor_info& info, const tensor_slice& slice);

// One tensor of a plan.
struct plan_entry {
    std::string name;
    std::filesystem::path file;
    kernels::dtype type = kernels::dtype::f32;
    std::vector<int64_t> shape;         // full stored shape
    std::optional<tensor_slice> slice;  // nullopt: the whole tensor
    std::vector<int64_t> loaded_shape;  // shape after slicing
    std::vector<byte_range> ranges;     // absolute, ascending, merged
    uint64_t num_bytes = 0;             // Σ ranges
    bool operator==(const plan_entry&) const = default;
};

class load_plan {
  public:
    void add(plan_entry entry);  // throws on a duplicate name
    const std::vector<plan_entry>& entries() const { return entries_; }
    const plan_entry* find(std::string_view name) const;
    std::vector<std::string> names() const;  // in plan order
    uint64_t total_bytes() const { return total_bytes_; }

  private:
    std::vector<plan_entry> entries_;
    std::map<std::string, size_t, std::less<>> index_;
    uint64_t total_bytes_ = 0;
};

// Throws model_error when tp_size < 1, tp_rank ∉ [0, tp_size), ffn_hidden_size % tp_size ≠ 0,
// or a needed tensor is missing or has a shape other than §8's for `cfg`.
load_plan plan_attention_worker(const checkpoint_layout& layout, const model_config& cfg,
                                int64_t tp_rank, int64_t tp_size);

// `experts_by_layer`: layer index → routed expert ids. Throws on a layer ∉ [0, num_layers), an
// id ≥ n_routed_experts (zero experts hold no weights) or < 0, or a duplicate id.
load_plan plan_expert_group(const checkpoint_layout& layout, const model_config& cfg,
                            const std::map<int64_t, std::vector<int64_t>>& experts_by_layer);

// Loads every planned weight in compute form (checkpoint::load with the planned slice), reading
// only the planned ranges. F8 weights come back dequantised to bf16; their `_scale_inv` entries
// are consumed by that and not returned. Throws if the checkpoint's tensors differ from the plan's.
std::map<std::string, loaded_tensor> load_planned_tensors(const checkpoint& ckpt,
                                                          const load_plan& plan);

}  // namespace longcat::model
