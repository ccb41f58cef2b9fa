#include "actors/cluster/moe_frames.hpp"

#include <algorithm>
#include <cstring>

namespace longcat::cluster {
namespace {

constexpr size_t kSlotBytes = sizeof(int32_t) + sizeof(float);

}  // namespace

std::string to_string(const unit_key& key) {
    return "step " + std::to_string(key.step_id) + " layer " + std::to_string(key.layer) +
           " micro-batch " + std::to_string(key.micro_batch);
}

unit_key unit_of(const proto::frame_header& header) {
    return unit_key{header.step_id, header.layer, header.micro_batch};
}

int64_t dispatch_rows::max_slots() const {
    int64_t most = 0;
    for (int64_t r = 0; r < num_rows(); ++r)
        most = std::max<int64_t>(most, slot_begin[r + 1] - slot_begin[r]);
    return most;
}

void dispatch_rows::reset(int64_t hidden_size) {
    hidden = hidden_size;
    token.clear();
    h.clear();
    slot_begin.assign(1, 0);
    expert.clear();
    weight.clear();
}

void split_dispatch(const placement_map& map, int32_t layer_idx, int32_t worker_index,
                    const model::layer_activations& act, int64_t hidden,
                    std::vector<dispatch_rows>& per_group) {
    per_group.resize(static_cast<size_t>(map.num_groups()));
    for (dispatch_rows& rows : per_group) rows.reset(hidden);
    const model::expert_dispatch& d = act.dispatch;
    for (size_t a = 0; a < d.token.size(); ++a) {
        const int32_t group_id = map.replica_for(layer_idx, d.expert[a], worker_index);
        dispatch_rows& rows = per_group[group_id];
        // act.dispatch is token-major, so a new token for this group is always the last row.
        if (rows.token.empty() || rows.token.back() != d.token[a]) {
            rows.token.push_back(d.token[a]);
            const float* src = act.h.data() + static_cast<int64_t>(d.token[a]) * hidden;
            rows.h.insert(rows.h.end(), src, src + hidden);
            rows.slot_begin.push_back(rows.slot_begin.back());
        }
        rows.expert.push_back(d.expert[a]);
        rows.weight.push_back(d.weight[a]);
        ++rows.slot_begin.back();
    }
}

encoded_frame encode_dispatch(const unit_key& key, const dispatch_rows& rows) {
    encoded_frame f;
    encode_dispatch(key, rows, f);
    return f;
}

void encode_dispatch(const unit_key& key, const dispatch_rows& rows, encoded_frame& f) {
    const int64_t num_rows = rows.num_rows(), max_slots = rows.max_slots();
    const uint32_t meta = static_cast<uint32_t>(sizeof(int32_t) + kSlotBytes * max_slots);
    f.header = proto::make_row_header(proto::frame_kind::dispatch, proto::wire_dtype::f32,
                                      static_cast<uint32_t>(num_rows),
                                      static_cast<uint32_t>(rows.hidden), meta);
    f.header.step_id = key.step_id;
    f.header.layer = key.layer;
    f.header.micro_batch = key.micro_batch;
    f.payload.resize(f.header.payload_bytes);
    const size_t h_bytes = sizeof(float) * static_cast<size_t>(num_rows * rows.hidden);
    if (h_bytes > 0) std::memcpy(f.payload.data(), rows.h.data(), h_bytes);
    std::byte* m = f.payload.data() + h_bytes;
    for (int64_t r = 0; r < num_rows; ++r) {
        const int32_t begin = rows.slot_begin[r], count = rows.slot_begin[r + 1] - begin;
        std::memcpy(m, &count, sizeof(int32_t));
        m += sizeof(int32_t);
        for (int64_t s = 0; s < max_slots; ++s, m += kSlotBytes) {
            const int32_t expert_idx = s < count ? rows.expert[begin + s] : -1;
            const float weight = s < count ? rows.weight[begin + s] : 0.0f;
            std::memcpy(m, &expert_idx, sizeof(int32_t));
            std::memcpy(m + sizeof(int32_t), &weight, sizeof(float));
        }
    }
}

proto::expected<dispatch_view, std::string> decode_dispatch_view(const proto::frame_header& header,
                                                                 std::span<const std::byte> payload,
                                                                 int64_t hidden,
                                                                 int64_t num_routed_experts) {
    using bad = proto::unexpected<std::string>;
    if (header.kind != proto::frame_kind::dispatch) {
        return bad("a " + std::string(proto::to_string(header.kind)) + " frame, not dispatch");
    }
    if (header.dtype != proto::wire_dtype::f32) {
        return bad("dtype " + std::string(proto::to_string(header.dtype)) + ", expected f32");
    }
    if (header.row_elems != hidden) {
        return bad("row_elems " + std::to_string(header.row_elems) + ", expected hidden " +
                   std::to_string(hidden));
    }
    const size_t hidden_bytes = sizeof(float) * static_cast<size_t>(hidden);
    const size_t meta = header.row_bytes - std::min<size_t>(header.row_bytes, hidden_bytes);
    if (header.num_tokens > 0 &&
        (meta < sizeof(int32_t) || (meta - sizeof(int32_t)) % kSlotBytes != 0)) {
        return bad("row_bytes " + std::to_string(header.row_bytes) +
                   " is not 4·hidden + 4 + 8·max_slots");
    }
    if (payload.size() != header.payload_bytes ||
        payload.size() != static_cast<size_t>(header.num_tokens) * header.row_bytes) {
        return bad("payload of " + std::to_string(payload.size()) + " bytes for " +
                   std::to_string(header.num_tokens) + " rows of " +
                   std::to_string(header.row_bytes) + " bytes");
    }
    const int64_t max_slots =
        header.num_tokens > 0 ? static_cast<int64_t>((meta - sizeof(int32_t)) / kSlotBytes) : 0;
    dispatch_view view;
    view.h = reinterpret_cast<const float*>(payload.data());
    dispatch_rows& rows = view.rows;
    rows.reset(hidden);
    // Every row has 1..max_slots slots; the payload's size bounds both reservations.
    rows.slot_begin.reserve(static_cast<size_t>(header.num_tokens) + 1);
    rows.expert.reserve(static_cast<size_t>(header.num_tokens) * static_cast<size_t>(max_slots));
    rows.weight.reserve(rows.expert.capacity());
    const std::byte* m = payload.data() + static_cast<size_t>(header.num_tokens) * hidden_bytes;
    for (uint32_t r = 0; r < header.num_tokens; ++r) {
        const std::byte* slots_end = m + meta;
        int32_t count = 0;
        std::memcpy(&count, m, sizeof(int32_t));
        m += sizeof(int32_t);
        if (count < 1 || count > max_slots) {
            return bad("row " + std::to_string(r) + " has " + std::to_string(count) +
                       " slots (1.." + std::to_string(max_slots) + ")");
        }
        for (int32_t s = 0; s < count; ++s, m += kSlotBytes) {
            int32_t expert_idx = 0;
            float weight = 0.0f;
            std::memcpy(&expert_idx, m, sizeof(int32_t));
            std::memcpy(&weight, m + sizeof(int32_t), sizeof(float));
            if (expert_idx < 0 || expert_idx >= num_routed_experts) {
                return bad("row " + std::to_string(r) + " slot " + std::to_string(s) +
                           " names expert " + std::to_string(expert_idx) + ", not a routed expert");
            }
            rows.expert.push_back(expert_idx);
            rows.weight.push_back(weight);
        }
        m = slots_end;
        rows.slot_begin.push_back(static_cast<int32_t>(rows.expert.size()));
    }
    return view;
}

proto::expected<dispatch_rows, std::string> decode_dispatch(const proto::frame_header& header,
                                                            std::span<const std::byte> payload,
                                                            int64_t hidden,
                                                            int64_t num_routed_experts) {
    auto view = decode_dispatch_view(header, payload, hidden, num_routed_experts);
    if (!view) return proto::unexpected<std::string>(view.error());
    std::vector<float> h(static_cast<size_t>(view->rows.num_rows()) * static_cast<size_t>(hidden));
    view->copy_hidden(h.data());  // before the rows move out of the view
    dispatch_rows rows = std::move(view->rows);
    rows.h = std::move(h);
    return rows;
}

void dispatch_view::copy_hidden(float* dst) const {
    const size_t n = static_cast<size_t>(rows.num_rows() * rows.hidden);
    if (n > 0) std::memcpy(dst, h, sizeof(float) * n);
}

proto::frame_header combine_header(const unit_key& key, int64_t num_rows, int64_t hidden) {
    proto::frame_header header =
        proto::make_row_header(proto::frame_kind::combine, proto::wire_dtype::f32,
                               static_cast<uint32_t>(num_rows), static_cast<uint32_t>(hidden));
    header.step_id = key.step_id;
    header.layer = key.layer;
    header.micro_batch = key.micro_batch;
    return header;
}

encoded_frame encode_combine(const unit_key& key, const float* rows, int64_t num_rows,
                             int64_t hidden) {
    encoded_frame f;
    f.header = combine_header(key, num_rows, hidden);
    f.payload.resize(f.header.payload_bytes);
    if (num_rows > 0) std::memcpy(f.payload.data(), rows, f.payload.size());
    return f;
}

std::optional<std::string> check_combine(const proto::frame_header& header, int64_t hidden,
                                         int64_t expected_rows) {
    if (header.kind != proto::frame_kind::combine) {
        return "a " + std::string(proto::to_string(header.kind)) + " frame, not combine";
    }
    if (header.dtype != proto::wire_dtype::f32 || header.row_elems != hidden ||
        header.row_bytes != sizeof(float) * static_cast<uint64_t>(hidden)) {
        return "dtype " + std::string(proto::to_string(header.dtype)) + ", row_elems " +
               std::to_string(header.row_elems) + ", row_bytes " +
               std::to_string(header.row_bytes) + "; expected f32 rows of hidden " +
               std::to_string(hidden);
    }
    if (header.num_tokens != expected_rows) {
        return std::to_string(header.num_tokens) + " rows, the dispatch had " +
               std::to_string(expected_rows);
    }
    return std::nullopt;
}

}  // namespace longcat::cluster
