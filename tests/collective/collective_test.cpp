// The TP collectives against closed forms, and the TP=2 dense FFN against the unsharded FFN of
// a generated checkpoint.  Ranks are threads over the in-process data plane.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "actors/collective/collective.hpp"
#include "actors/transport/inproc_data_plane.hpp"
#include "model/mkmodel.hpp"
#include "tests/support/temp_dir.hpp"

namespace longcat::collective {
namespace {

using namespace std::chrono_literals;

struct group_fixture {
    std::shared_ptr<transport::inproc_fabric> fabric = std::make_shared<transport::inproc_fabric>();
    std::vector<std::unique_ptr<transport::inproc_data_plane>> planes;
    std::vector<std::unique_ptr<data_plane_collective>> ranks;

    explicit group_fixture(int size) {
        for (int r = 0; r < size; ++r)
            planes.push_back(std::make_unique<transport::inproc_data_plane>(
                fabric, transport::inproc_data_plane_config{"tp-" + std::to_string(r)}));
        for (int r = 0; r < size; ++r) {
            std::vector<transport::peer_id> peers(static_cast<size_t>(size));
            for (int q = 0; q < size; ++q)
                if (q != r) {
                    auto p = planes[r]->connect(planes[q]->address(), transport::deadline_after(2s));
                    if (!p) throw std::runtime_error(p.error().message);
                    peers[q] = *p;
                }
            ranks.push_back(std::make_unique<data_plane_collective>(*planes[r], r, peers, 7));
        }
    }

    template <class Fn>
    void run(Fn fn) {
        std::vector<std::thread> threads;
        for (size_t r = 0; r < ranks.size(); ++r) threads.emplace_back([&, r] { fn(static_cast<int>(r), *ranks[r]); });
        for (auto& t : threads) t.join();
    }
};

TEST(Collective, AllGatherConcatenatesInRankOrderAndReduceScatterSums) {
    group_fixture g(3);
    const int64_t width = 5;
    std::vector<std::vector<float>> gathered(3), scattered(3);
    std::vector<std::vector<int64_t>> counts(3);
    g.run([&](int r, collective& c) {
        // rank r contributes r+1 rows whose values encode (rank, row, column)
        std::vector<float> mine;
        for (int i = 0; i < r + 1; ++i)
            for (int j = 0; j < width; ++j) mine.push_back(100.0f * r + 10.0f * i + j);
        ASSERT_TRUE(c.all_gather(mine, width, gathered[r], counts[r], transport::deadline_after(2s)));
        // every rank's partial sum for every row: (rank + 1) × the gathered value
        std::vector<float> partial = gathered[r];
        for (float& v : partial) v *= static_cast<float>(r + 1);
        ASSERT_TRUE(c.reduce_scatter(partial, counts[r], width, scattered[r], transport::deadline_after(2s)));
    });
    for (int r = 0; r < 3; ++r) {
        EXPECT_EQ(counts[r], (std::vector<int64_t>{1, 2, 3}));
        ASSERT_EQ(gathered[r].size(), 6u * width);
        int64_t row = 0;
        for (int q = 0; q < 3; ++q)
            for (int i = 0; i < q + 1; ++i, ++row)
                for (int j = 0; j < width; ++j)
                    EXPECT_EQ(gathered[r][row * width + j], 100.0f * q + 10.0f * i + j);
        // Σ_ranks (rank+1) = 6: rank r's rows come back ×6
        ASSERT_EQ(scattered[r].size(), static_cast<size_t>((r + 1) * width));
        for (int i = 0; i < r + 1; ++i)
            for (int j = 0; j < width; ++j)
                EXPECT_EQ(scattered[r][i * width + j], 6.0f * (100.0f * r + 10.0f * i + j));
    }
}

// Step 1 fails part-way: rank 0 runs no collective (its step failed before the forward), rank 1
// sends its all-gather rows and times out. In step 2 both run an all-gather of the same shape:
// rank 0 must get rank 1's step-2 rows, not the frame left over from step 1 (which it took before
// operations were tagged by step: wrong sums, no error), and that frame is dropped.
TEST(Collective, AFailedStepLeavesNothingForTheNext) {
    group_fixture g(2);
    const int64_t width = 3;
    const std::vector<float> stale = {-1, -1, -1}, fresh0 = {1, 2, 3}, fresh1 = {4, 5, 6};
    std::vector<float> all;
    std::vector<int64_t> counts;
    g.ranks[1]->begin_step(1);
    const auto failed =
        g.ranks[1]->all_gather(stale, width, all, counts, transport::deadline_after(100ms));
    ASSERT_FALSE(failed);
    EXPECT_EQ(failed.error().code, transport::transport_error::timeout) << failed.error().message;
    std::vector<std::vector<float>> gathered(2);
    g.run([&](int r, collective& c) {
        c.begin_step(2);
        std::vector<int64_t> n;
        ASSERT_TRUE(c.all_gather(r == 0 ? fresh0 : fresh1, width, gathered[r], n,
                                 transport::deadline_after(2s)));
    });
    for (int r = 0; r < 2; ++r)
        EXPECT_EQ(gathered[r], (std::vector<float>{1, 2, 3, 4, 5, 6})) << "rank " << r;
    // Nothing is left queued on either side.
    transport::frame_filter any;
    EXPECT_EQ(g.planes[0]->discard(any) + g.planes[1]->discard(any), 0u);
}

TEST(Collective, MissingRankTimesOutByItsDeadline) {
    group_fixture g(2);
    std::vector<float> all;
    std::vector<int64_t> counts;
    const auto t0 = std::chrono::steady_clock::now();
    auto s = g.ranks[0]->all_gather(std::vector<float>(4, 1.0f), 4, all, counts,
                                    transport::deadline_after(500ms));
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().code, transport::transport_error::timeout);
    EXPECT_LT(waited, 3s);
}

TEST(Collective, TensorParallelDenseFfnEqualsUnsharded) {
    longcat::testing::temp_dir dir;
    model::make_model({"tiny-b", dir.path(), 4, model::checkpoint_dtype::bf16});
    const auto full = model::load_model_weights(dir.path());
    std::vector<model::model_weights> shard;
    for (int r = 0; r < 2; ++r)
        shard.push_back(model::load_model_weights(dir.path(), {true, r, 2, false, {}}));
    const int64_t H = full.config.hidden_size;
    // Each rank owns different tokens (3 and 5 rows).
    std::vector<std::vector<float>> h(2), out(2);
    for (int r = 0; r < 2; ++r) {
        const int64_t n = r == 0 ? 3 : 5;
        for (int64_t i = 0; i < n * H; ++i) h[r].push_back(std::sin(0.37f * static_cast<float>(i + 1000 * r)));
        out[r].assign(h[r].size(), 0.5f);
    }
    group_fixture g(2);
    g.run([&](int r, collective& c) {
        auto ffn = tp_dense_ffn(c, H, 2000ms);
        ffn(shard[r].layers[1].mlps[0], h[r].data(), static_cast<int64_t>(h[r].size()) / H, out[r].data());
    });
    for (int r = 0; r < 2; ++r) {
        std::vector<float> ref(h[r].size(), 0.5f);
        model::dense_ffn(full.layers[1].mlps[0], h[r].data(), static_cast<int64_t>(h[r].size()) / H, H, ref.data());
        double num = 0, den = 0;
        for (size_t i = 0; i < ref.size(); ++i) {
            num += (out[r][i] - ref[i]) * (out[r][i] - ref[i]);
            den += ref[i] * ref[i];
        }
        EXPECT_LT(std::sqrt(num / den), 1e-5) << "rank " << r;
    }
}

}  // namespace
}  // namespace longcat::collective
