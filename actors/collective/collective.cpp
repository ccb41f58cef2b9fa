#include "actors/collective/collective.hpp"

#include <cstring>

namespace longcat::collective {

using transport::deadline;
using transport::transport_status;

namespace {
constexpr uint32_t kAllGather = 0;
constexpr uint32_t kReduceScatter = 1;
constexpr int kSequenceBits = 20;  // operations per step: 2 per dense FFN, far below 2^20
}  // namespace

void data_plane_collective::begin_step(uint64_t step_id) {
    step_ = step_id;
    sequence_ = 0;
    transport::frame_filter stale;
    stale.kind = proto::frame_kind::collective;
    stale.request_id = group_tag_;
    stale.predicate = [step_id](transport::peer_id, const proto::frame_header& h) {
        return (h.step_id >> kSequenceBits) < step_id;
    };
    plane_.discard(stale);
}

data_plane_collective::data_plane_collective(transport::data_plane& plane, int rank,
                                             std::vector<transport::peer_id> peers,
                                             uint64_t group_tag)
    : plane_(plane), rank_(rank), peers_(std::move(peers)), group_tag_(group_tag) {
    if (rank_ < 0 || rank_ >= static_cast<int>(peers_.size()))
        throw std::invalid_argument("data_plane_collective: rank " + std::to_string(rank_) +
                                    " outside a group of " + std::to_string(peers_.size()));
}

transport_status data_plane_collective::send_rows(int to, uint32_t op, const float* rows,
                                                  int64_t num_rows, int64_t width, deadline until) {
    proto::frame_header h = proto::make_row_header(proto::frame_kind::collective, proto::wire_dtype::f32,
                                                   static_cast<uint32_t>(num_rows),
                                                   static_cast<uint32_t>(width));
    h.request_id = group_tag_;
    h.step_id = (step_ << kSequenceBits) | sequence_;
    h.layer = op;
    h.micro_batch = static_cast<uint16_t>(rank_);
    const auto* bytes = reinterpret_cast<const std::byte*>(rows);
    return plane_.send(peers_[to], h,
                       {std::span<const std::byte>(bytes, static_cast<size_t>(num_rows * width) * sizeof(float))},
                       until);
}

transport::transport_result<transport::received_frame> data_plane_collective::receive_rows(
    int from, uint32_t op, int64_t width, deadline until) {
    transport::frame_filter f;
    f.kind = proto::frame_kind::collective;
    f.request_id = group_tag_;
    f.step_id = (step_ << kSequenceBits) | sequence_;
    f.layer = op;
    f.micro_batch = static_cast<uint16_t>(from);
    auto r = plane_.receive(until, f);
    if (r && r->header.row_elems != static_cast<uint32_t>(width))
        return transport::make_failure(transport::transport_error::bad_frame,
                                       "collective: rank " + std::to_string(from) + " sent rows of " +
                                           std::to_string(r->header.row_elems) + " values, expected " +
                                           std::to_string(width));
    return r;
}

transport_status data_plane_collective::all_gather(std::span<const float> mine, int64_t width,
                                                   std::vector<float>& all,
                                                   std::vector<int64_t>& rows_per_rank,
                                                   deadline until) {
    const int64_t my_rows = static_cast<int64_t>(mine.size()) / width;
    for (int r = 0; r < size(); ++r)
        if (r != rank_)
            if (auto s = send_rows(r, kAllGather, mine.data(), my_rows, width, until); !s) return s;
    std::vector<transport::byte_buffer> parts(static_cast<size_t>(size()));
    rows_per_rank.assign(static_cast<size_t>(size()), 0);
    rows_per_rank[rank_] = my_rows;
    for (int r = 0; r < size(); ++r) {
        if (r == rank_) continue;
        auto got = receive_rows(r, kAllGather, width, until);
        if (!got) return proto::unexpected(got.error());
        rows_per_rank[r] = got->header.num_tokens;
        parts[r] = std::move(got->payload);
    }
    all.clear();
    for (int r = 0; r < size(); ++r) {
        if (r == rank_) {
            all.insert(all.end(), mine.begin(), mine.end());
        } else {
            const auto* f = reinterpret_cast<const float*>(parts[r].data());
            all.insert(all.end(), f, f + rows_per_rank[r] * width);
        }
    }
    ++sequence_;
    return {};
}

transport_status data_plane_collective::reduce_scatter(std::span<const float> all,
                                                       std::span<const int64_t> rows_per_rank,
                                                       int64_t width, std::vector<float>& mine,
                                                       deadline until) {
    std::vector<int64_t> offset(static_cast<size_t>(size()) + 1, 0);
    for (int r = 0; r < size(); ++r) offset[r + 1] = offset[r] + rows_per_rank[r];
    for (int r = 0; r < size(); ++r)
        if (r != rank_)
            if (auto s = send_rows(r, kReduceScatter, all.data() + offset[r] * width, rows_per_rank[r],
                                   width, until);
                !s)
                return s;
    const int64_t n = rows_per_rank[rank_] * width;
    std::vector<transport::byte_buffer> parts(static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r) {
        if (r == rank_) continue;
        auto got = receive_rows(r, kReduceScatter, width, until);
        if (!got) return proto::unexpected(got.error());
        if (static_cast<int64_t>(got->header.num_tokens) != rows_per_rank[rank_])
            return transport::make_failure(transport::transport_error::bad_frame,
                                           "collective: reduce-scatter from rank " + std::to_string(r) +
                                               " has " + std::to_string(got->header.num_tokens) +
                                               " rows, expected " + std::to_string(rows_per_rank[rank_]));
        parts[r] = std::move(got->payload);
    }
    // Σ in rank order: every rank adds the same values in the same order.
    mine.assign(static_cast<size_t>(n), 0.0f);
    for (int r = 0; r < size(); ++r) {
        const float* src = r == rank_ ? all.data() + offset[rank_] * width
                                      : reinterpret_cast<const float*>(parts[r].data());
        for (int64_t i = 0; i < n; ++i) mine[i] += src[i];
    }
    ++sequence_;
    return {};
}

model::dense_ffn_runner tp_dense_ffn(collective& group, int64_t hidden,
                                     std::chrono::milliseconds timeout) {
    return [&group, hidden, timeout](const model::dense_ffn_weights& w, const float* h,
                                     int64_t num_tokens, float* out) {
        const auto until = transport::deadline_after(timeout);
        std::vector<float> all, partial, mine;
        std::vector<int64_t> rows;
        // Sent from a copy this call owns (one pass over the rows, small beside the FFN): a
        // payload the transport still holds after a failed send is kept for good
        // (transport::retain_payload), which the caller's buffer could not be.
        std::vector<float> x(h, h + num_tokens * hidden);
        if (auto s = group.all_gather(x, hidden, all, rows, until); !s) {
            if (s.error().payload_held) transport::retain_payload_buffer(std::move(x));
            throw collective_error("TP all-gather (rank " + std::to_string(group.rank()) + "): " +
                                   s.error().message);
        }
        const int64_t total = static_cast<int64_t>(all.size()) / hidden;
        partial.assign(all.size(), 0.0f);
        model::dense_ffn(w, all.data(), total, hidden, partial.data());
        if (auto s = group.reduce_scatter(partial, rows, hidden, mine, until); !s) {
            if (s.error().payload_held) transport::retain_payload_buffer(std::move(partial));
            throw collective_error("TP reduce-scatter (rank " + std::to_string(group.rank()) + "): " +
                                   s.error().message);
        }
        for (int64_t i = 0; i < num_tokens * hidden; ++i) out[i] += mine[i];
    };
}

}  // namespace longcat::collective
