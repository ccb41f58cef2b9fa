// Sampling against closed forms: empirical frequencies over many counter values converge to
// the truncated, temperature-scaled softmax; the draw depends only on (seed, token index).
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <vector>

#include "model/error.hpp"
#include "model/sampling.hpp"

namespace longcat::model {
namespace {

std::vector<double> frequencies(const std::vector<float>& logits, const sampling_params& p, int n) {
    std::vector<double> f(logits.size(), 0.0);
    for (int i = 0; i < n; ++i)
        f[sample_token(logits.data(), static_cast<int64_t>(logits.size()), p, static_cast<uint64_t>(i))] += 1.0 / n;
    return f;
}

TEST(Sampling, GreedyIsArgmaxLowestIndexOnTies) {
    std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
    EXPECT_EQ(sample_token(l.data(), 4, {0.0f, 1.0f, 0, 9}, 0), 1);
    EXPECT_EQ(argmax(l.data(), 4), 1);
}

TEST(Sampling, TemperatureTopKTopPFollowTheClosedForm) {
    const std::vector<float> l = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f};
    const int n = 200000;
    auto softmax = [&](std::vector<int> keep, double temp) {
        std::vector<double> p(l.size(), 0.0);
        double s = 0;
        for (int i : keep) s += std::exp(l[i] / temp);
        for (int i : keep) p[i] = std::exp(l[i] / temp) / s;
        return p;
    };
    // Plain temperature 0.7 over everything.
    auto f = frequencies(l, {0.7f, 1.0f, 0, 42}, n);
    auto ref = softmax({0, 1, 2, 3, 4}, 0.7);
    for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(f[i], ref[i], 0.005) << i;
    // top-k 2 keeps ids 2 and 0.
    f = frequencies(l, {1.0f, 1.0f, 2, 42}, n);
    ref = softmax({2, 0}, 1.0);
    for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(f[i], ref[i], 0.005) << i;
    // top-p: full probs at T=1 are ~[.207,.076,.563,.028,.126]; 0.563 < 0.75 <= 0.770, so
    // p = 0.75 keeps {2, 0}.
    f = frequencies(l, {1.0f, 0.75f, 0, 42}, n);
    for (size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(f[i], ref[i], 0.005) << i;
}

TEST(Sampling, DrawDependsOnlyOnSeedAndTokenIndex) {
    std::vector<float> l(100);
    for (int i = 0; i < 100; ++i) l[i] = std::sin(static_cast<float>(i));
    sampling_params p{1.0f, 1.0f, 0, 1234};
    std::vector<int32_t> a, b;
    for (uint64_t t = 0; t < 50; ++t) a.push_back(sample_token(l.data(), 100, p, t));
    for (uint64_t t = 50; t-- > 0;) b.insert(b.begin(), sample_token(l.data(), 100, p, t));
    EXPECT_EQ(a, b);
    p.seed = 1235;
    std::vector<int32_t> c;
    for (uint64_t t = 0; t < 50; ++t) c.push_back(sample_token(l.data(), 100, p, t));
    EXPECT_NE(a, c);
}

TEST(Sampling, CounterUniformIsUniform) {
    // Mean and variance of U[0,1): 1/2 and 1/12.
    double s = 0, s2 = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) {
        const double u = counter_uniform(7, static_cast<uint64_t>(i));
        ASSERT_GE(u, 0.0);
        ASSERT_LT(u, 1.0);
        s += u;
        s2 += u * u;
    }
    EXPECT_NEAR(s / n, 0.5, 0.005);
    EXPECT_NEAR(s2 / n - (s / n) * (s / n), 1.0 / 12, 0.002);
}

TEST(Sampling, InvalidParamsNameTheField) {
    auto msg = [](sampling_params p) {
        try {
            validate_sampling_params(p);
        } catch (const model_error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(msg({-1.0f, 1.0f, 0, 0}).find("temperature"), std::string::npos);
    EXPECT_NE(msg({1.0f, 0.0f, 0, 0}).find("top_p"), std::string::npos);
    EXPECT_NE(msg({1.0f, 1.5f, 0, 0}).find("top_p"), std::string::npos);
    EXPECT_NE(msg({1.0f, 1.0f, -2, 0}).find("top_k"), std::string::npos);
}

}  // namespace
}  // namespace longcat::model
