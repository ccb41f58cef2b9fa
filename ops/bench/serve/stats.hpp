// stats: the summary statistics of the serving benchmark (ops/bench/serve), header-only and free
// of I/O so that it can be unit-tested alone.
// Owns nothing; every function is pure. Units are whatever the caller passes (the benchmark
// passes milliseconds).
//
// Percentiles interpolate linearly between the closest ranks, like numpy.percentile's default
// ("linear"), which SGLang's bench_serving uses: for n sorted values v[0..n-1] and q in [0, 100],
// rank = q/100 · (n − 1), p = v[floor(rank)] + (rank − floor(rank)) · (v[floor(rank)+1] −
// v[floor(rank)]). The standard deviation is the population one (numpy.std, ddof = 0).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace longcat::bench {

// The percentile q (0..100) of `sorted` (ascending). Contract: sorted is non-empty and
// ascending; q outside [0, 100] is clamped.
inline double percentile_sorted(std::span<const double> sorted, double q) {
    const size_t num_values = sorted.size();
    if (num_values == 1) return sorted[0];
    const double rank = std::clamp(q, 0.0, 100.0) / 100.0 * static_cast<double>(num_values - 1);
    const size_t lower = static_cast<size_t>(std::floor(rank));
    if (lower + 1 >= num_values) return sorted[num_values - 1];
    const double frac = rank - static_cast<double>(lower);
    return sorted[lower] + frac * (sorted[lower + 1] - sorted[lower]);
}

// One metric over many samples. `count` == 0 means no samples; every other field is then 0.
struct distribution {
    size_t count = 0;
    double mean = 0;
    double stddev = 0;  // population (ddof = 0)
    double min = 0;
    double max = 0;
    double p50 = 0;
    double p90 = 0;
    double p99 = 0;
};

// Summarizes `values` (any order; taken by value because it is sorted in place).
inline distribution summarize(std::vector<double> values) {
    distribution d;
    d.count = values.size();
    if (values.empty()) return d;
    std::sort(values.begin(), values.end());
    double sum = 0;
    for (double v : values) sum += v;
    d.mean = sum / static_cast<double>(d.count);
    double sq = 0;
    for (double v : values) sq += (v - d.mean) * (v - d.mean);
    d.stddev = std::sqrt(sq / static_cast<double>(d.count));
    d.min = values.front();
    d.max = values.back();
    d.p50 = percentile_sorted(values, 50);
    d.p90 = percentile_sorted(values, 90);
    d.p99 = percentile_sorted(values, 99);
    return d;
}

// Time per output token of one request, SGLang's definition:
// (e2e − ttft) / (output_tokens − 1), defined only when output_tokens > 1.
inline std::optional<double> time_per_output_token(double e2e, double ttft, int64_t output_tokens) {
    if (output_tokens <= 1) return std::nullopt;
    return (e2e - ttft) / static_cast<double>(output_tokens - 1);
}

// The gaps between consecutive timestamps (ascending, any unit): n timestamps give n − 1 gaps.
inline std::vector<double> gaps(std::span<const double> timestamps) {
    std::vector<double> out;
    for (size_t idx = 1; idx < timestamps.size(); ++idx)
        out.push_back(timestamps[idx] - timestamps[idx - 1]);
    return out;
}

}  // namespace longcat::bench
