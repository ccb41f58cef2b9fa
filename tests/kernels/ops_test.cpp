// Every CPU kernel against a naive double-precision reference written independently here.
#include "kernels/api/ops.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/isa.hpp"

namespace longcat::kernels {
namespace {

// Every ISA level this CPU supports; kernels run on each (LONGCAT_CPU_ISA selects at run time).
std::vector<cpu_isa> supported_isas() {
    std::vector<cpu_isa> v = {cpu_isa::scalar};
    if (static_cast<int>(detected_cpu_isa()) >= static_cast<int>(cpu_isa::avx2)) v.push_back(cpu_isa::avx2);
    if (static_cast<int>(detected_cpu_isa()) >= static_cast<int>(cpu_isa::avx512)) v.push_back(cpu_isa::avx512);
    if (detected_cpu_isa() == cpu_isa::avx512bf16) v.push_back(cpu_isa::avx512bf16);
    return v;
}

// Restores the ISA that was active when the test began.
struct isa_guard {
    cpu_isa saved = active_cpu_isa();
    ~isa_guard() { set_cpu_isa(saved); }
};

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

double rel_err(const std::vector<float>& a, const std::vector<double>& ref) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return std::sqrt(num / std::max(den, 1e-300));
}

std::vector<bf16_t> to_bf16(const std::vector<float>& v) {
    std::vector<bf16_t> o(v.size());
    for (size_t i = 0; i < v.size(); ++i) o[i] = f32_to_bf16(v[i]);
    return o;
}

std::vector<double> ref_linear(const std::vector<double>& w, const std::vector<float>& x,
                               int64_t rows, int64_t cols, int64_t m) {
    std::vector<double> y(static_cast<size_t>(m * rows));
    for (int64_t t = 0; t < m; ++t)
        for (int64_t r = 0; r < rows; ++r) {
            double s = 0;
            for (int64_t c = 0; c < cols; ++c) s += w[r * cols + c] * x[t * cols + c];
            y[t * rows + r] = s;
        }
    return y;
}

TEST(Dtype, Bf16RoundsToNearestEven) {
    EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
    // 1 + 2^-8 is exactly half-way between two bf16 values: ties go to even (1.0).
    EXPECT_EQ(f32_to_bf16(1.0f + 0x1.0p-8f), 0x3f80);
    EXPECT_EQ(f32_to_bf16(1.0f + 0x1.8p-8f), 0x3f81);
    EXPECT_FLOAT_EQ(bf16_to_f32(0xc040), -3.0f);
}

TEST(Dtype, Fp8E4m3RoundTrip) {
    // Every finite e4m3 value converts to f32 and back to itself.
    for (int v = 0; v < 256; ++v) {
        if ((v & 0x7f) == 0x7f) continue;  // NaN
        const float f = f8_e4m3_to_f32(static_cast<uint8_t>(v));
        if (v == 0x80) continue;  // -0 → +0 is allowed either way
        EXPECT_EQ(f32_to_f8_e4m3(f), v) << v << " " << f;
    }
    EXPECT_FLOAT_EQ(f8_e4m3_to_f32(0x7e), 448.0f);
    EXPECT_EQ(f32_to_f8_e4m3(1000.0f), 0x7e);  // saturates
    EXPECT_FLOAT_EQ(f8_e4m3_to_f32(0x01), 0x1.0p-9f);
}

class LinearTest : public ::testing::TestWithParam<std::tuple<int64_t, bool, cpu_isa>> {};

// linear() on the current ISA against the double-precision reference, random weights and x.
void expect_linear_matches_reference(int64_t rows, int64_t cols, int64_t m, bool use_bf16,
                                     cpu_isa isa) {
    auto w = randn(static_cast<size_t>(rows * cols), 1);
    auto x = randn(static_cast<size_t>(m * cols), 2);
    std::vector<bf16_t> wb = to_bf16(w);
    std::vector<double> wd(w.size());
    for (size_t i = 0; i < w.size(); ++i) wd[i] = use_bf16 ? bf16_to_f32(wb[i]) : w[i];
    matrix_view v{use_bf16 ? static_cast<const void*>(wb.data()) : w.data(),
                  use_bf16 ? dtype::bf16 : dtype::f32, rows, cols};
    std::vector<float> y(static_cast<size_t>(m * rows));
    linear(v, x.data(), m, y.data());
    // avx512bf16 splits activations into two bf16 halves: 2^-17 relative per element.
    EXPECT_LT(rel_err(y, ref_linear(wd, x, rows, cols, m)),
              isa == cpu_isa::avx512bf16 && use_bf16 ? 1e-5 : 1e-6)
        << rows << "x" << cols << ", m " << m << (use_bf16 ? " bf16" : " f32");
}

TEST_P(LinearTest, MatchesReference) {
    const auto [m, use_bf16, isa] = GetParam();
    isa_guard guard;
    if (!set_cpu_isa(isa)) GTEST_SKIP() << "CPU lacks " << cpu_isa_name(isa);
    expect_linear_matches_reference(37, 300, m, use_bf16, isa);
}

INSTANTIATE_TEST_SUITE_P(SmallAndLargeM, LinearTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13,
                                                              14, 16, 17, 64),
                                            ::testing::Bool(),
                                            ::testing::Values(cpu_isa::scalar, cpu_isa::avx2,
                                                              cpu_isa::avx512,
                                                              cpu_isa::avx512bf16)),
                         [](const auto& info) {
                             return "m" + std::to_string(std::get<0>(info.param)) +
                                    (std::get<1>(info.param) ? "_bf16_" : "_f32_") +
                                    std::string(cpu_isa_name(std::get<2>(info.param)));
                         });

// Rows of 6 KiB (bf16, the bench preset's 3072 columns) and 12 KiB (f32): the small-M kernels'
// prefetch streams wrap into the next blocks' rows and stop at the end of each thread's chunk
// (rows enough for several chunks); with 12 and 16 tokens (AVX2's outer-product and broadcast
// panels) the panels prefetched from within the FMA loop. And no columns at all: every output is
// the empty sum, 0 (also from 128 tokens on, where BLAS would refuse the leading dimension).
TEST(Linear, LongRowsAndNoColumns) {
    for (const cpu_isa isa :
         {cpu_isa::scalar, cpu_isa::avx2, cpu_isa::avx512, cpu_isa::avx512bf16}) {
        isa_guard guard;
        if (!set_cpu_isa(isa)) continue;
        SCOPED_TRACE(cpu_isa_name(isa));
        for (const bool use_bf16 : {true, false}) {
            for (const int64_t m : {1, 4, 6, 12, 16})
                expect_linear_matches_reference(150, 3072, m, use_bf16, isa);
            const std::vector<float> none_w(1), none_x(4);
            const std::vector<bf16_t> none_wb(1);
            matrix_view empty{use_bf16 ? static_cast<const void*>(none_wb.data()) : none_w.data(),
                              use_bf16 ? dtype::bf16 : dtype::f32, 9, 0};
            for (const int64_t m : {4, 1, 12, 16, 130}) {  // row tiles, both panel paths, BLAS
                std::vector<float> y(static_cast<size_t>(9 * m), 1.0f);
                linear(empty, none_x.data(), m, y.data());
                EXPECT_EQ(y, std::vector<float>(static_cast<size_t>(9 * m), 0.0f)) << "m " << m;
            }
        }
    }
}

// A token's outputs do not depend on the other tokens of the call: the small-M kernels pick
// their arithmetic by token count only (AVX2: row tiles below outer_min tokens, then outer-product
// panels, from bcast_min on broadcast panels that sum in the same order, bit for bit; one path on
// the other levels), never by the other tokens' values. Token 0 (the same activations every
// time) with 0..15 others of random values: its outputs change at most once as the count grows
// (71 rows: a partial block for every tile's rows, 4, 3, 2, 6, 8 and 16; 1000 columns: a partial
// panel with a partial group of 16), and every token of every count matches the reference.
TEST(Linear, TokenResultDoesNotDependOnTheOtherTokens) {
    const int64_t rows = 71, cols = 1000;
    const auto wf = randn(static_cast<size_t>(rows * cols), 11);
    const auto wb = to_bf16(wf);
    const auto x0 = randn(static_cast<size_t>(cols), 12);
    isa_guard guard;
    for (const cpu_isa isa : supported_isas()) {
        set_cpu_isa(isa);
        for (const bool use_bf16 : {true, false}) {
            SCOPED_TRACE(std::string(cpu_isa_name(isa)) + (use_bf16 ? " bf16" : " f32"));
            const matrix_view v{use_bf16 ? static_cast<const void*>(wb.data()) : wf.data(),
                                use_bf16 ? dtype::bf16 : dtype::f32, rows, cols};
            std::vector<double> wd(wf.size());
            for (size_t k = 0; k < wd.size(); ++k) wd[k] = use_bf16 ? bf16_to_f32(wb[k]) : wf[k];
            const auto ref = ref_linear(wd, x0, rows, cols, 1);
            // avx512bf16 splits activations into two bf16 halves: 2^-17 relative per element.
            const double tol = isa == cpu_isa::avx512bf16 && use_bf16 ? 1e-5 : 1e-6;
            std::vector<float> prev;
            int changes = 0;
            for (int64_t m = 1; m <= 16; ++m) {
                auto x = randn(static_cast<size_t>(m * cols), 300 + static_cast<uint32_t>(m));
                std::copy(x0.begin(), x0.end(), x.begin());
                std::vector<float> y(static_cast<size_t>(m * rows));
                linear(v, x.data(), m, y.data());
                const std::vector<float> y0(y.begin(), y.begin() + rows);
                EXPECT_LT(rel_err(y0, ref), tol) << "m " << m;
                EXPECT_LT(rel_err(y, ref_linear(wd, x, rows, cols, m)), tol) << "m " << m;
                if (!prev.empty() && std::memcmp(prev.data(), y0.data(), sizeof(float) * rows) != 0)
                    ++changes;
                prev = y0;
            }
            EXPECT_LE(changes, 1);
        }
    }
}

// The small-M entries take at most kMaxSmallM tokens (linear passes of that many); more is refused
// before any thread starts, not written past a tile's accumulators.
TEST(Linear, SmallMEntriesRefuseMoreThanTheirTokens) {
    if (detected_cpu_isa() < cpu_isa::avx2) GTEST_SKIP() << "CPU lacks avx2";
    const int64_t m = cpu::kMaxSmallM + 1, rows = 20, cols = 40;
    const std::vector<float> w(rows * cols, 1.0f), x(m * cols, 1.0f);
    std::vector<float> y(m * rows, 0.0f);
    EXPECT_THROW(cpu::linear_small_m_avx2(w.data(), dtype::f32, rows, cols, x.data(), m, y.data()),
                 std::invalid_argument);
    const cpu::small_m_product p{w.data(), dtype::f32, rows, cols, x.data(), m, y.data()};
    EXPECT_THROW(cpu::linear_small_m_group_avx2(&p, 1), std::invalid_argument);
    EXPECT_EQ(y, std::vector<float>(m * rows, 0.0f));
}

TEST(Isa, OverrideRefusesWhatTheCpuLacks) {
    isa_guard guard;
    EXPECT_TRUE(set_cpu_isa(cpu_isa::scalar));
    EXPECT_EQ(active_cpu_isa(), cpu_isa::scalar);
    if (detected_cpu_isa() != cpu_isa::avx512bf16) {
        EXPECT_FALSE(set_cpu_isa(cpu_isa::avx512bf16));
    }
}

TEST(RmsNorm, MatchesReference) {
    const int64_t n = 5, d = 96;
    auto x = randn(static_cast<size_t>(n * d), 3, 3.0f);
    auto w = randn(static_cast<size_t>(d), 4);
    std::vector<float> y(x.size());
    rms_norm(x.data(), w.data(), n, d, 1e-5f, y.data());
    std::vector<double> ref(x.size());
    for (int64_t r = 0; r < n; ++r) {
        double ss = 0;
        for (int64_t i = 0; i < d; ++i) ss += double(x[r * d + i]) * x[r * d + i];
        const double inv = 1.0 / std::sqrt(ss / d + 1e-5);
        for (int64_t i = 0; i < d; ++i) ref[r * d + i] = w[i] * x[r * d + i] * inv;
    }
    EXPECT_LT(rel_err(y, ref), 1e-6);
}

TEST(Rope, InterleavedPairsWrittenDeinterleaved) {
    // A closed form: pair j of position p rotates by p·theta^(-2j/d); output [evens | odds].
    const int64_t d = 8, rows = 2;
    const float theta = 10000.0f;
    auto x = randn(static_cast<size_t>(rows * d), 5);
    std::vector<float> y = x;
    const int32_t pos[1] = {7};
    rope_interleaved(y.data(), 1, rows, d, d, pos, theta);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < d / 2; ++j) {
            const double a = 7.0 * std::pow(double(theta), -2.0 * j / d);
            const double e = x[r * d + 2 * j], o = x[r * d + 2 * j + 1];
            EXPECT_NEAR(y[r * d + j], e * std::cos(a) - o * std::sin(a), 1e-5);
            EXPECT_NEAR(y[r * d + d / 2 + j], o * std::cos(a) + e * std::sin(a), 1e-5);
        }
}

TEST(MoeGate, SoftmaxOverAllExpertsBiasOnlySelects) {
    const int64_t T = 4, H = 16, E = 10, K = 3;
    auto h = randn(static_cast<size_t>(T * H), 6);
    auto gw = randn(static_cast<size_t>(E * H), 7, 0.5f);
    std::vector<float> bias(E, 0.0f);
    bias[9] = 10.0f;  // forces expert 9 into every selection without changing its weight
    std::vector<int32_t> idx(T * K);
    std::vector<float> wt(T * K);
    moe_gate(h.data(), gw.data(), bias.data(), T, H, E, K, 6.0f, idx.data(), wt.data());
    for (int64_t t = 0; t < T; ++t) {
        std::vector<double> p(E);
        double mx = -1e30, sum = 0;
        for (int64_t e = 0; e < E; ++e) {
            double s = 0;
            for (int64_t i = 0; i < H; ++i) s += double(gw[e * H + i]) * h[t * H + i];
            p[e] = s;
            mx = std::max(mx, s);
        }
        for (double& v : p) sum += (v = std::exp(v - mx));
        for (double& v : p) v /= sum;
        EXPECT_EQ(idx[t * K], 9);
        EXPECT_NEAR(wt[t * K], 6.0 * p[9], 1e-6);
        // The other two are the two largest unbiased probabilities among the rest.
        std::vector<int> order(E - 1);
        for (int e = 0; e < E - 1; ++e) order[e] = e;
        std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
        EXPECT_EQ(idx[t * K + 1], order[0]);
        EXPECT_EQ(idx[t * K + 2], order[1]);
        EXPECT_NEAR(wt[t * K + 1], 6.0 * p[order[0]], 1e-6);
    }
}

// A top-k of 0 or of more than the experts is refused, naming both (past the experts the partial
// sort would run off the end of its array).
TEST(MoeGate, TopKOutsideTheExpertsIsRefused) {
    const int64_t T = 2, H = 8, E = 4;
    const auto h = randn(static_cast<size_t>(T * H), 6);
    const auto gw = randn(static_cast<size_t>(E * H), 7);
    std::vector<int32_t> idx(static_cast<size_t>(T * (E + 1)));
    std::vector<float> wt(idx.size());
    for (const int64_t k : {int64_t{0}, E + 1}) {
        try {
            moe_gate(h.data(), gw.data(), nullptr, T, H, E, k, 1.0f, idx.data(), wt.data());
            ADD_FAILURE() << "top_k " << k << " accepted";
        } catch (const std::invalid_argument& e) {
            EXPECT_NE(std::string(e.what()).find("top_k " + std::to_string(k) + " outside 1..4"),
                      std::string::npos)
                << e.what();
        }
    }
}

// linear_group runs several products in one parallel loop on the AVX-512 and AVX2 paths: each
// output must be bitwise what linear() gives for that product alone (and so match the reference),
// whatever the mix of shapes, dtypes and token counts (17 and 64 tokens run alone).
TEST(LinearGroup, EachJobEqualsLinearBitwise) {
    struct shape {
        int64_t rows, cols, m;
        bool bf16;
    };
    const std::vector<shape> shapes = {
        {37, 300, 1, true}, {64, 96, 1, true},   {9, 33, 5, false},    {50, 300, 16, true},
        {13, 70, 2, false}, {21, 64, 17, true},  {8, 40, 64, false},   {100, 128, 6, true},
        {7, 5, 3, true},    {30, 200, 11, true}, {26, 150, 15, false}, {40, 150, 11, false}};
    std::vector<std::vector<float>> wf, xs;
    std::vector<std::vector<bf16_t>> wb;
    for (size_t i = 0; i < shapes.size(); ++i) {
        const shape& sh = shapes[i];
        wf.push_back(randn(static_cast<size_t>(sh.rows * sh.cols), 100 + static_cast<uint32_t>(i)));
        wb.push_back(to_bf16(wf.back()));
        xs.push_back(randn(static_cast<size_t>(sh.m * sh.cols), 200 + static_cast<uint32_t>(i)));
    }
    isa_guard guard;
    for (cpu_isa isa : supported_isas()) {
        set_cpu_isa(isa);
        std::vector<std::vector<float>> grouped(shapes.size()), alone(shapes.size());
        std::vector<linear_job> jobs;
        std::vector<matrix_view> views;
        for (size_t i = 0; i < shapes.size(); ++i) {
            const shape& sh = shapes[i];
            views.push_back({sh.bf16 ? static_cast<const void*>(wb[i].data()) : wf[i].data(),
                             sh.bf16 ? dtype::bf16 : dtype::f32, sh.rows, sh.cols});
            grouped[i].assign(static_cast<size_t>(sh.m * sh.rows), -1.0f);
            alone[i].assign(grouped[i].size(), -2.0f);
        }
        for (size_t i = 0; i < shapes.size(); ++i)
            jobs.push_back({views[i], xs[i].data(), shapes[i].m, grouped[i].data()});
        linear_group(jobs.data(), static_cast<int64_t>(jobs.size()));
        for (size_t i = 0; i < shapes.size(); ++i) {
            const shape& sh = shapes[i];
            linear(views[i], xs[i].data(), sh.m, alone[i].data());
            EXPECT_EQ(0, std::memcmp(grouped[i].data(), alone[i].data(), grouped[i].size() * sizeof(float)))
                << cpu_isa_name(isa) << " job " << i;
            std::vector<double> wd(wf[i].size());
            for (size_t k = 0; k < wd.size(); ++k) wd[k] = sh.bf16 ? bf16_to_f32(wb[i][k]) : wf[i][k];
            EXPECT_LT(rel_err(grouped[i], ref_linear(wd, xs[i], sh.rows, sh.cols, sh.m)),
                      isa == cpu_isa::avx512bf16 && sh.bf16 ? 1e-5 : 1e-6)
                << cpu_isa_name(isa) << " job " << i;
        }
    }
}

TEST(GroupedExperts, EqualsPerAssignmentSwiGlu) {
    const int64_t H = 24, I = 16, E = 4, T = 5;
    std::vector<std::vector<bf16_t>> store;
    std::vector<expert_weights_view> ev(E);
    std::vector<std::vector<double>> gd(E), ud(E), dd(E);
    for (int64_t e = 0; e < E; ++e) {
        auto g = randn(I * H, 10 + e, 0.2f), u = randn(I * H, 20 + e, 0.2f),
             d = randn(H * I, 30 + e, 0.2f);
        for (auto* src : {&g, &u, &d}) store.push_back(to_bf16(*src));
        const size_t b = store.size() - 3;
        ev[e] = {{store[b].data(), dtype::bf16, I, H},
                 {store[b + 1].data(), dtype::bf16, I, H},
                 {store[b + 2].data(), dtype::bf16, H, I}};
        for (int k = 0; k < 3; ++k) {
            auto& dst = k == 0 ? gd[e] : k == 1 ? ud[e] : dd[e];
            for (bf16_t v : store[b + k]) dst.push_back(bf16_to_f32(v));
        }
    }
    auto h = randn(T * H, 40);
    // Expert 2 gets no tokens; token 1 goes to two experts; expert 3 gets three tokens.
    std::vector<int32_t> tok = {0, 1, 1, 3, 4, 2}, ex = {0, 0, 3, 3, 3, 1};
    std::vector<float> w = {0.5f, 0.25f, 1.5f, 0.75f, 2.0f, 1.0f};
    isa_guard guard;
    for (cpu_isa isa : supported_isas()) {
    set_cpu_isa(isa);
    std::vector<float> out(T * H, 1.0f);
    grouped_experts(ev.data(), E, h.data(), H, 6, tok.data(), ex.data(), w.data(), out.data());
    std::vector<double> ref(T * H, 1.0);
    for (size_t a = 0; a < tok.size(); ++a) {
        const int e = ex[a];
        std::vector<double> act(I);
        for (int64_t i = 0; i < I; ++i) {
            double g = 0, u = 0;
            for (int64_t c = 0; c < H; ++c) {
                g += gd[e][i * H + c] * h[tok[a] * H + c];
                u += ud[e][i * H + c] * h[tok[a] * H + c];
            }
            act[i] = g / (1 + std::exp(-g)) * u;
        }
        for (int64_t c = 0; c < H; ++c) {
            double s = 0;
            for (int64_t i = 0; i < I; ++i) s += dd[e][c * I + i] * act[i];
            ref[tok[a] * H + c] += w[a] * s;
        }
    }
    EXPECT_LT(rel_err(out, ref), isa == cpu_isa::avx512bf16 ? 1e-5 : 1e-6) << cpu_isa_name(isa);
    }
}

// Experts with up to 16 tokens are batched into shared parallel passes, one with more runs
// alone between them (here expert 1 with 20 tokens, between experts 0 and 2 with 3 and 1);
// every assignment still equals the double-precision SwiGLU.
TEST(GroupedExperts, SmallAndLargeExpertsMixed) {
    const int64_t H = 40, I = 24, E = 4, T = 24;
    std::vector<std::vector<bf16_t>> store;
    std::vector<expert_weights_view> ev(E);
    std::vector<std::vector<double>> wd(3 * E);
    for (int64_t e = 0; e < E; ++e) {
        for (int k = 0; k < 3; ++k) {
            const int64_t rows = k == 2 ? H : I, cols = k == 2 ? I : H;
            store.push_back(to_bf16(randn(static_cast<size_t>(rows * cols), 50 + static_cast<uint32_t>(3 * e + k), 0.2f)));
            for (bf16_t v : store.back()) wd[3 * e + k].push_back(bf16_to_f32(v));
        }
        const size_t b = store.size() - 3;
        ev[e] = {{store[b].data(), dtype::bf16, I, H},
                 {store[b + 1].data(), dtype::bf16, I, H},
                 {store[b + 2].data(), dtype::bf16, H, I}};
    }
    auto h = randn(static_cast<size_t>(T * H), 60);
    std::vector<int32_t> tok, ex;
    std::vector<float> w;
    for (int32_t t = 0; t < 3; ++t) tok.push_back(t), ex.push_back(0), w.push_back(0.5f + 0.1f * t);
    for (int32_t t = 0; t < 20; ++t) tok.push_back(t + 2), ex.push_back(1), w.push_back(0.3f + 0.05f * t);
    tok.push_back(7), ex.push_back(2), w.push_back(1.25f);
    std::vector<double> ref(static_cast<size_t>(T * H), 0.0);
    for (size_t a = 0; a < tok.size(); ++a) {
        const auto& g = wd[3 * ex[a]];
        const auto& u = wd[3 * ex[a] + 1];
        const auto& d = wd[3 * ex[a] + 2];
        std::vector<double> act(static_cast<size_t>(I));
        for (int64_t i = 0; i < I; ++i) {
            double gs = 0, us = 0;
            for (int64_t c = 0; c < H; ++c) {
                gs += g[i * H + c] * h[tok[a] * H + c];
                us += u[i * H + c] * h[tok[a] * H + c];
            }
            act[i] = gs / (1 + std::exp(-gs)) * us;
        }
        for (int64_t c = 0; c < H; ++c) {
            double sum = 0;
            for (int64_t i = 0; i < I; ++i) sum += d[c * I + i] * act[i];
            ref[tok[a] * H + c] += w[a] * sum;
        }
    }
    isa_guard guard;
    for (cpu_isa isa : supported_isas()) {
        set_cpu_isa(isa);
        std::vector<float> out(static_cast<size_t>(T * H), 0.0f);
        grouped_experts(ev.data(), E, h.data(), H, static_cast<int64_t>(tok.size()), tok.data(), ex.data(),
                        w.data(), out.data());
        EXPECT_LT(rel_err(out, ref), isa == cpu_isa::avx512bf16 ? 1e-5 : 1e-6) << cpu_isa_name(isa);
        // Bitwise what one expert at a time gives (linear per expert, outputs added in ascending
        // expert order, assignment order inside): the engine and an expert group batch
        // different sets of experts and must still agree to the bit.
        std::vector<float> one_by_one(out.size(), 0.0f);
        for (int32_t e = 0; e < E; ++e) {
            std::vector<size_t> mine;
            for (size_t a = 0; a < tok.size(); ++a)
                if (ex[a] == e) mine.push_back(a);
            if (mine.empty()) continue;
            const auto m = static_cast<int64_t>(mine.size());
            std::vector<float> x(static_cast<size_t>(m * H)), g(static_cast<size_t>(m * I)), u(g.size()),
                y(x.size());
            for (int64_t i = 0; i < m; ++i)
                std::copy_n(h.data() + tok[mine[i]] * H, H, x.data() + i * H);
            linear(ev[e].gate, x.data(), m, g.data());
            linear(ev[e].up, x.data(), m, u.data());
            silu_mul(g.data(), u.data(), m * I, g.data());
            linear(ev[e].down, g.data(), m, y.data());
            for (int64_t i = 0; i < m; ++i)
                for (int64_t c = 0; c < H; ++c) one_by_one[tok[mine[i]] * H + c] += w[mine[i]] * y[i * H + c];
        }
        EXPECT_EQ(0, std::memcmp(out.data(), one_by_one.data(), out.size() * sizeof(float))) << cpu_isa_name(isa);
    }
}

// Naive MLA attention over explicit keys/values (expanded form, double precision).
struct mla_case {
    mla_dims d{3, 8, 4, 6, 10, 0.3f};
    int64_t ctx = 11, page_size = 4;
    std::vector<float> rows, kvb, q;
    std::vector<int32_t> pages = {5, 2, 7};  // fragmented, out of order
    std::vector<float> pool;

    // A longer context: its pages spread over a pool of `pool_pages` (prime) in a scrambled order.
    static constexpr int32_t kPoolPages = 151;
    explicit mla_case(dtype t, int64_t context = 11) : ctx(context) {
        if (ctx != 11) {
            pages.clear();
            for (int64_t i = 0; i < (ctx + page_size - 1) / page_size; ++i)
                pages.push_back(static_cast<int32_t>((i * 37 + 5) % kPoolPages));
        }
        const int64_t row_dim = d.kv_lora_rank + d.qk_rope_head_dim;
        rows = randn(ctx * row_dim, 50);
        if (t == dtype::bf16)
            for (float& v : rows) v = bf16_to_f32(f32_to_bf16(v));
        kvb = randn(d.num_heads * (d.qk_nope_head_dim + d.v_head_dim) * d.kv_lora_rank, 51, 0.3f);
        q = randn(ctx * d.num_heads * (d.qk_nope_head_dim + d.qk_rope_head_dim), 52);
    }

    std::vector<double> reference(int64_t first, int64_t n) const {
        const int64_t H = d.num_heads, nope = d.qk_nope_head_dim, rope = d.qk_rope_head_dim,
                      vd = d.v_head_dim, L = d.kv_lora_rank, row_dim = L + rope;
        std::vector<double> out(n * H * vd, 0.0);
        for (int64_t t = 0; t < n; ++t) {
            const int64_t pos = first + t;
            for (int64_t h = 0; h < H; ++h) {
                std::vector<double> sc(pos + 1);
                double mx = -1e300;
                for (int64_t s = 0; s <= pos; ++s) {
                    double acc = 0;
                    for (int64_t i = 0; i < nope; ++i) {
                        double k = 0;
                        for (int64_t c = 0; c < L; ++c)
                            k += double(kvb[(h * (nope + vd) + i) * L + c]) * rows[s * row_dim + c];
                        acc += q[(t * H + h) * (nope + rope) + i] * k;
                    }
                    for (int64_t i = 0; i < rope; ++i)
                        acc += double(q[(t * H + h) * (nope + rope) + nope + i]) * rows[s * row_dim + L + i];
                    sc[s] = acc * d.softmax_scale;
                    mx = std::max(mx, sc[s]);
                }
                double sum = 0;
                for (double& v : sc) sum += (v = std::exp(v - mx));
                for (int64_t j = 0; j < vd; ++j) {
                    double o = 0;
                    for (int64_t s = 0; s <= pos; ++s) {
                        double v = 0;
                        for (int64_t c = 0; c < L; ++c)
                            v += double(kvb[(h * (nope + vd) + nope + j) * L + c]) * rows[s * row_dim + c];
                        o += sc[s] / sum * v;
                    }
                    out[(t * H + h) * vd + j] = o;
                }
            }
        }
        return out;
    }
};

class MlaTest : public ::testing::TestWithParam<dtype> {};

// A prompt longer than a score tile (256 tokens) over a context split into blocks that do not
// line up with the tiles: rows masked inside a tile, tiles that see only part of a block, tokens
// before a block skipped (tiles then start past the first token).
TEST_P(MlaTest, LongPrefillOverSeveralTokenTilesAndBlocksMatchesReference) {
    const dtype t = GetParam();
    mla_case c(t, 600);
    const int64_t row_dim = c.d.kv_lora_rank + c.d.qk_rope_head_dim;
    ASSERT_LE(static_cast<int64_t>(c.pages.size()), mla_case::kPoolPages);
    std::vector<uint8_t> pool(mla_case::kPoolPages * c.page_size * row_dim * dtype_size(t));
    kv_pool_view pv{pool.data(), t, c.page_size, row_dim};
    kv_write(pv, c.pages.data(), 0, c.ctx, c.rows.data());
    matrix_view kvb{c.kvb.data(), dtype::f32,
                    c.d.num_heads * (c.d.qk_nope_head_dim + c.d.v_head_dim), c.d.kv_lora_rank};
    const int64_t qk = c.d.qk_nope_head_dim + c.d.qk_rope_head_dim;
    const int64_t first = 40, n = c.ctx - first;  // 560 tokens: tiles of 256, 256 and 48
    mla_case shifted = c;
    shifted.q.erase(shifted.q.begin(), shifted.q.begin() + first * c.d.num_heads * qk);
    const std::vector<double> ref = shifted.reference(first, n);
    const int64_t per_position =
        (c.d.num_heads * (c.d.qk_nope_head_dim + c.d.v_head_dim) + row_dim + c.d.kv_lora_rank) *
        static_cast<int64_t>(sizeof(float));
    for (int64_t block : {int64_t{0}, int64_t{100}, int64_t{257}}) {  // 0: the default (one block)
        std::vector<float> out(n * c.d.num_heads * c.d.v_head_dim, -3.0f);
        if (block == 0)
            mla_attention_prefill(c.d, pv, c.pages.data(), first, n,
                                  c.q.data() + first * c.d.num_heads * qk, kvb, out.data());
        else
            mla_attention_prefill(c.d, pv, c.pages.data(), first, n,
                                  c.q.data() + first * c.d.num_heads * qk, kvb, out.data(),
                                  block * per_position + per_position / 2);
        EXPECT_LT(rel_err(out, ref), 1e-5) << "blocks of " << block;
    }
}

TEST_P(MlaTest, PrefillAndAbsorbedDecodeMatchExpandedReference) {
    const dtype t = GetParam();
    mla_case c(t);
    const int64_t row_dim = c.d.kv_lora_rank + c.d.qk_rope_head_dim;
    std::vector<uint8_t> pool(8 * c.page_size * row_dim * dtype_size(t));
    kv_pool_view pv{pool.data(), t, c.page_size, row_dim};
    kv_write(pv, c.pages.data(), 0, c.ctx, c.rows.data());
    matrix_view kvb{c.kvb.data(), dtype::f32, c.d.num_heads * (c.d.qk_nope_head_dim + c.d.v_head_dim),
                    c.d.kv_lora_rank};
    const int64_t qk = c.d.qk_nope_head_dim + c.d.qk_rope_head_dim;
    // Prefill of positions 4..10 over a cache holding 0..10.
    std::vector<float> out(7 * c.d.num_heads * c.d.v_head_dim);
    mla_attention_prefill(c.d, pv, c.pages.data(), 4, 7, c.q.data() + 4 * c.d.num_heads * qk, kvb,
                          out.data());
    // The reference's query rows are the case's rows 4..10.
    mla_case shifted = c;
    shifted.q.erase(shifted.q.begin(), shifted.q.begin() + 4 * c.d.num_heads * qk);
    EXPECT_LT(rel_err(out, shifted.reference(4, 7)), 1e-5);
    // The context in blocks of 1, 3 and 4 positions (online softmax across blocks; blocks that
    // start before, at and after the first query position 4): the same attention.
    const int64_t per_position =
        (c.d.num_heads * (c.d.qk_nope_head_dim + c.d.v_head_dim) + row_dim + c.d.kv_lora_rank) *
        static_cast<int64_t>(sizeof(float));
    for (int64_t block : {1, 3, 4}) {
        std::vector<float> blocked(out.size(), -7.0f);
        mla_attention_prefill(c.d, pv, c.pages.data(), 4, 7, c.q.data() + 4 * c.d.num_heads * qk,
                              kvb, blocked.data(), block * per_position + per_position / 2);
        EXPECT_LT(rel_err(blocked, shifted.reference(4, 7)), 1e-5) << "blocks of " << block;
        EXPECT_LT(rel_err(blocked, std::vector<double>(out.begin(), out.end())), 1e-6)
            << "blocks of " << block;
    }
    // A whole prefill (first_pos 0) in blocks of 2.
    std::vector<float> whole(c.ctx * c.d.num_heads * c.d.v_head_dim);
    mla_attention_prefill(c.d, pv, c.pages.data(), 0, c.ctx, c.q.data(), kvb, whole.data(),
                          2 * per_position);
    EXPECT_LT(rel_err(whole, c.reference(0, c.ctx)), 1e-5);
    // Decode at the last position.
    std::vector<float> dec(c.d.num_heads * c.d.v_head_dim);
    mla_attention_decode(c.d, pv, c.pages.data(), 10, c.q.data() + 10 * c.d.num_heads * qk, kvb,
                         dec.data());
    mla_case last = c;
    last.q.erase(last.q.begin(), last.q.begin() + 10 * c.d.num_heads * qk);
    EXPECT_LT(rel_err(dec, last.reference(10, 1)), 1e-5);
    // Several sequences in one call (positions 10, 6 and 8 over the same pages, queries of rows
    // 10, 3 and 7): each output bitwise the one-sequence call's, which for position 10 is the
    // call above.
    const int64_t hv = c.d.num_heads * c.d.v_head_dim;
    const int64_t pos[3] = {10, 6, 8}, qrow[3] = {10, 3, 7};
    std::vector<float> batched(3 * hv, -1.0f), alone(3 * hv, -2.0f);
    std::vector<mla_decode_seq> seqs;
    for (int i = 0; i < 3; ++i) {
        const float* qi = c.q.data() + qrow[i] * c.d.num_heads * qk;
        seqs.push_back({c.pages.data(), pos[i], qi, batched.data() + i * hv});
        mla_attention_decode(c.d, pv, c.pages.data(), pos[i], qi, kvb, alone.data() + i * hv);
    }
    mla_attention_decode_batch(c.d, pv, seqs.data(), 3, kvb);
    EXPECT_EQ(0, std::memcmp(batched.data(), alone.data(), batched.size() * sizeof(float)));
    EXPECT_EQ(0, std::memcmp(batched.data(), dec.data(), dec.size() * sizeof(float)));
    mla_attention_decode_batch(c.d, pv, seqs.data(), 0, kvb);  // nothing to do, nothing written
    EXPECT_EQ(0, std::memcmp(batched.data(), alone.data(), batched.size() * sizeof(float)));
    // A gather cap of 12 rows: positions 10 and 6 (11 + 7 rows) cannot share a loop, 6 and 8
    // (7 + 9) neither: three loops, the same bits.
    std::fill(batched.begin(), batched.end(), -1.0f);
    mla_attention_decode_batch(c.d, pv, seqs.data(), 3, kvb,
                               12 * row_dim * static_cast<int64_t>(sizeof(float)));
    EXPECT_EQ(0, std::memcmp(batched.data(), alone.data(), batched.size() * sizeof(float)));
    // A cap of 18 rows: 10 and 6 together (11 + 7), then 8 alone (18 + 9 > 18).
    std::fill(batched.begin(), batched.end(), -1.0f);
    mla_attention_decode_batch(c.d, pv, seqs.data(), 3, kvb,
                               18 * row_dim * static_cast<int64_t>(sizeof(float)));
    EXPECT_EQ(0, std::memcmp(batched.data(), alone.data(), batched.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(KvDtypes, MlaTest, ::testing::Values(dtype::f32, dtype::bf16));

TEST(SiluMul, MatchesClosedForm) {
    std::vector<float> g = {-2.0f, 0.0f, 3.0f}, u = {1.0f, 5.0f, -0.5f}, o(3);
    silu_mul(g.data(), u.data(), 3, o.data());
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(o[i], g[i] / (1 + std::exp(-g[i])) * u[i], 1e-6);
}

// Long enough to take the compute threads, in place as the engine calls it: every element as
// one element alone (double closed form within 1e-6, and the 3-element call's bits).
TEST(SiluMul, ThreadedInPlaceEqualsElementByElement) {
    const int64_t n = 40001;
    std::vector<float> g = randn(n, 61, 3.0f), u = randn(n, 62);
    const std::vector<float> g0 = g;
    silu_mul(g.data(), u.data(), n, g.data());
    int64_t differ = 0, far = 0;
    for (int64_t i = 0; i < n; ++i) {
        float one = 0.0f;
        silu_mul(&g0[i], &u[i], 1, &one);
        differ += std::memcmp(&one, &g[i], sizeof(float)) != 0;
        const double x = g0[i], want = x / (1 + std::exp(-x)) * u[i];
        far += std::abs(g[i] - want) > 1e-6 * (1 + std::abs(want));
    }
    EXPECT_EQ(differ, 0);
    EXPECT_EQ(far, 0);
}

}  // namespace
}  // namespace longcat::kernels
