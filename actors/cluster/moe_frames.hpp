// moe_frames: the payloads of the MoE dispatch and combine frames between attention workers and
// expert groups (ARCHITECTURE.md §4), on top of proto::frame_header (proto/frames.hpp).
//
// A unit is one (step_id, layer, micro_batch). For every unit each attention worker sends exactly
// one dispatch frame to every expert group of the placement map (0 tokens when it has nothing for
// that group), and each group answers each worker with exactly one combine frame of the same
// unit, holding as many rows as that worker's dispatch frame did (0 for 0).
//
// Dispatch frame: kind dispatch, dtype f32, row_elems = hidden, num_tokens = rows,
//   row_bytes = 4·hidden + 4 + 8·max_slots, and the payload in proto's two blocks:
//     [ h: rows × hidden × f32 (post_norm_0 output of each token; one [rows, hidden] array)
//     | per row: num_slots: i32 (1..max_slots; the token's real-expert slots held by this group)
//                slots: max_slots × (expert_idx: i32, weight: f32) ]
//   max_slots is the largest num_slots of any row in the frame (0 in a 0-token frame); slots
//   [num_slots, max_slots) are padding (expert_idx −1, weight 0). Rows are the sender's tokens that
//   have ≥ 1 slot on this group, in ascending token order; a row's slots keep the gate's order.
//   Weights already include routed_scaling_factor. Zero-expert slots are never sent.
// Combine frame: kind combine, dtype f32, row_elems = hidden, same unit and num_tokens, and
//   layout of one row (row_bytes = 4·hidden):
//     [ partial: hidden × f32 = Σ over the row's slots of weight · FFN_expert(h) ]
//   in the order of the dispatch rows. Each row is summed from 0 in ascending expert_idx order
//   (kernels::grouped_experts' order), so one group reproduces model::forward bit for bit.
// All values little-endian (the host order of every supported platform).
#pragma once

#include <compare>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "actors/cluster/placement.hpp"
#include "model/forward.hpp"
#include "proto/frames.hpp"

namespace longcat::cluster {

struct unit_key {
    uint64_t step_id = 0;
    uint32_t layer = 0;
    uint16_t micro_batch = 0;
    auto operator<=>(const unit_key&) const = default;
};
std::string to_string(const unit_key& key);  // "step 3 layer 1 micro-batch 0"
unit_key unit_of(const proto::frame_header& header);

// The rows of one dispatch frame, decoded (or about to be encoded).
struct dispatch_rows {
    int64_t hidden = 0;
    std::vector<int32_t> token;       // [num_rows] sender's token index (not on the wire)
    std::vector<float> h;             // [num_rows, hidden]
    std::vector<int32_t> slot_begin;  // [num_rows + 1] offsets into expert/weight
    std::vector<int32_t> expert;      // [num_slots] routed expert ids
    std::vector<float> weight;        // [num_slots] gate weights (×routed_scaling_factor)

    int64_t num_rows() const { return slot_begin.empty() ? 0 : int64_t(slot_begin.size()) - 1; }
    int64_t num_slots() const { return static_cast<int64_t>(expert.size()); }
    int64_t max_slots() const;
    void reset(int64_t hidden_size);  // no rows
};

// Worker side: splits a micro-batch's real-expert slots (act.dispatch, token-major) over the
// groups of `map`, each slot to map.replica_for(layer, expert, worker_index). `per_group` is
// resized to map.num_groups(); group g's rows are the tokens with a slot on g, ascending.
void split_dispatch(const placement_map& map, int32_t layer_idx, int32_t worker_index,
                    const model::layer_activations& act, int64_t hidden,
                    std::vector<dispatch_rows>& per_group);

struct encoded_frame {
    proto::frame_header header;
    std::vector<std::byte> payload;
};

encoded_frame encode_dispatch(const unit_key& key, const dispatch_rows& rows);
// The same into `out`, reusing its payload's memory (the hot path: no allocation, no zero fill
// once the buffer has grown to the unit's size).
void encode_dispatch(const unit_key& key, const dispatch_rows& rows, encoded_frame& out);

// Group side: checks the frame's shape against `hidden` (dtype, row_elems, row_bytes, slot
// counts) and decodes it. Expert ids are checked against [0, num_routed_experts); whether this
// group holds them is the caller's check. The error says what was wrong.
proto::expected<dispatch_rows, std::string> decode_dispatch(const proto::frame_header& header,
                                                            std::span<const std::byte> payload,
                                                            int64_t hidden,
                                                            int64_t num_routed_experts);

// The same checks and the same slots, but the hidden rows stay in `payload` (which must outlive
// the view and be at least 4-byte aligned, as received payloads are): a group computes on them
// where they landed.
struct dispatch_view {
    dispatch_rows rows;        // everything but h (left empty)
    const float* h = nullptr;  // [num_rows, hidden], at the start of the payload
    const float* hidden_row(int64_t r) const { return h + r * rows.hidden; }
    // Copies the hidden rows to dst [num_rows, hidden].
    void copy_hidden(float* dst) const;
};
proto::expected<dispatch_view, std::string> decode_dispatch_view(const proto::frame_header& header,
                                                                 std::span<const std::byte> payload,
                                                                 int64_t hidden,
                                                                 int64_t num_routed_experts);

// rows: [num_rows, hidden] partial sums.
// A combine frame's header for `num_rows` f32 rows (the payload is the rows themselves, sent
// from where they are).
proto::frame_header combine_header(const unit_key& key, int64_t num_rows, int64_t hidden);
encoded_frame encode_combine(const unit_key& key, const float* rows, int64_t num_rows,
                             int64_t hidden);

// Worker side: checks a combine frame's shape (dtype f32, row_elems = hidden, row_bytes =
// 4·hidden, num_tokens = expected_rows); nullopt when it fits.
std::optional<std::string> check_combine(const proto::frame_header& header, int64_t hidden,
                                         int64_t expected_rows);

}  // namespace longcat::cluster
