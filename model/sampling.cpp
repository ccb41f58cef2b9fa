#include "model/sampling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "model/counter_rng.hpp"
#include "model/error.hpp"

namespace longcat::model {

void validate_sampling_params(const sampling_params& p) {
    if (!(p.temperature >= 0.0f) || !std::isfinite(p.temperature))
        throw model_error("sampling: temperature must be a finite number >= 0, got " +
                          std::to_string(p.temperature));
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
        throw model_error("sampling: top_p must be in (0, 1], got " + std::to_string(p.top_p));
    if (p.top_k < 0) throw model_error("sampling: top_k must be >= 0, got " + std::to_string(p.top_k));
}

double counter_uniform(uint64_t seed, uint64_t counter) {
    const uint64_t r = splitmix64(splitmix64(seed) ^ counter);
    return static_cast<double>(r >> 11) * 0x1.0p-53;
}

int32_t argmax(const float* logits, int64_t vocab) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
        if (logits[i] > logits[best]) best = i;
    return static_cast<int32_t>(best);
}

int32_t sample_token(const float* logits, int64_t vocab, const sampling_params& p,
                     uint64_t token_index) {
    if (p.temperature == 0.0f || p.top_k == 1) return argmax(logits, vocab);
    // Candidates sorted by logit (descending, lower id first on ties), cut by top-k.
    std::vector<int32_t> ids(static_cast<size_t>(vocab));
    std::iota(ids.begin(), ids.end(), 0);
    const int64_t k = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
    auto cmp = [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), cmp);
    ids.resize(static_cast<size_t>(k));
    // Softmax at temperature T in double.
    std::vector<double> probs(ids.size());
    const double mx = logits[ids[0]];
    double sum = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
        probs[i] = std::exp((static_cast<double>(logits[ids[i]]) - mx) / p.temperature);
        sum += probs[i];
    }
    // Top-p: the smallest prefix whose mass reaches top_p.
    size_t keep = ids.size();
    if (p.top_p < 1.0f) {
        double acc = 0;
        for (size_t i = 0; i < ids.size(); ++i) {
            acc += probs[i] / sum;
            if (acc >= p.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double kept_sum = 0;
    for (size_t i = 0; i < keep; ++i) kept_sum += probs[i];
    const double u = counter_uniform(p.seed, token_index) * kept_sum;
    double acc = 0;
    for (size_t i = 0; i < keep; ++i) {
        acc += probs[i];
        if (u < acc) return ids[i];
    }
    return ids[keep - 1];
}

}  // namespace longcat::model
