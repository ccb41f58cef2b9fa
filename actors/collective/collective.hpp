// collective: the tensor-parallel group operations of the dense FFNs (ARCHITECTURE.md §3).
// One interface; the CPU build implements it over the UCX data plane (data_plane_collective),
// the CUDA build will implement it over NCCL behind the same calls.
// Contract: every rank of a group calls the same operations in the same order (lockstep); each
// call returns by its deadline; sums are taken in rank order, so every rank computes bitwise
// the same values whatever the arrival order.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "actors/transport/transport.hpp"
#include "model/forward.hpp"

namespace longcat::collective {

class collective {
public:
    virtual ~collective() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;

    // Called by every rank before the operations of coordinator step `step_id` (step ids grow).
    // The operations of a step are told apart from another step's: a step that failed part-way on
    // some rank (one rank ran no collectives, another timed out on its first) leaves nothing that
    // a later step could take for its own.
    virtual void begin_step(uint64_t step_id) = 0;

    // Concatenates every rank's rows [n_r, width] in rank order into `all`; rows_per_rank[r] = n_r.
    virtual transport::transport_status all_gather(std::span<const float> mine, int64_t width,
                                                   std::vector<float>& all,
                                                   std::vector<int64_t>& rows_per_rank,
                                                   transport::deadline until) = 0;
    // `all` holds this rank's partial sums for every rank's rows (layout of all_gather's result);
    // `mine` receives Σ over ranks (in rank order) of the rows that belong to this rank.
    virtual transport::transport_status reduce_scatter(std::span<const float> all,
                                                       std::span<const int64_t> rows_per_rank,
                                                       int64_t width, std::vector<float>& mine,
                                                       transport::deadline until) = 0;
};

// Over a data_plane: peers[r] is a peer this data plane connected to rank r (peers[rank()] is
// ignored).  Frames are kind `collective`, dtype f32, one row per token:
//   request_id = group_tag, step_id = (coordinator step << 20) | operation sequence number within
//   the step, layer = operation (0 all-gather, 1 reduce-scatter), micro_batch = sender rank.
// begin_step drops what is left of earlier steps (frames a failed step's peers sent).
class data_plane_collective final : public collective {
public:
    data_plane_collective(transport::data_plane& plane, int rank,
                          std::vector<transport::peer_id> peers, uint64_t group_tag);
    int rank() const override { return rank_; }
    int size() const override { return static_cast<int>(peers_.size()); }
    void begin_step(uint64_t step_id) override;
    transport::transport_status all_gather(std::span<const float> mine, int64_t width,
                                           std::vector<float>& all,
                                           std::vector<int64_t>& rows_per_rank,
                                           transport::deadline until) override;
    transport::transport_status reduce_scatter(std::span<const float> all,
                                               std::span<const int64_t> rows_per_rank,
                                               int64_t width, std::vector<float>& mine,
                                               transport::deadline until) override;

private:
    transport::transport_status send_rows(int to, uint32_t op, const float* rows, int64_t num_rows,
                                          int64_t width, transport::deadline until);
    transport::transport_result<transport::received_frame> receive_rows(int from, uint32_t op,
                                                                         int64_t width,
                                                                         transport::deadline until);

    transport::data_plane& plane_;
    int rank_;
    std::vector<transport::peer_id> peers_;
    uint64_t group_tag_;
    uint64_t step_ = 0;      // the coordinator step whose operations run now
    uint64_t sequence_ = 0;  // operations of this step so far
};

// The dense-FFN runner of a TP rank (for model::stage_mid / stage_back): all-gathers the
// group's post-norm rows, runs this rank's shard (gate/up rows, down columns), reduce-scatters
// the partial sums back to the rows' owners and adds them to `out`.  A collective failure
// throws collective_error naming the operation and the peer.
class collective_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};
model::dense_ffn_runner tp_dense_ffn(collective& group, int64_t hidden,
                                     std::chrono::milliseconds timeout);

}  // namespace longcat::collective
