// gateway_metrics: the gateway's Prometheus metrics (ARCHITECTURE.md §11), resolved once into
// handles so the request path never looks up a label.
// Owns nothing but handles into a metrics_registry (actors/metrics).
//   longcat_gateway_requests_total{route, outcome}   outcome = 2xx | 4xx | 5xx | disconnect
//   longcat_gateway_time_to_first_token_seconds      request accepted → first token event
//   longcat_gateway_inter_token_seconds              between tokens (per token)
//   longcat_gateway_request_seconds                  end to end, generation requests
//   longcat_gateway_prompt_tokens_total, longcat_gateway_generated_tokens_total
//   longcat_gateway_requests_in_flight               generation requests not yet finished
// The router's queue depth and running gauges are router_metrics (router.hpp).
#pragma once

#include <array>
#include <cstdint>

#include "actors/metrics/metrics.hpp"

namespace longcat::gateway {

enum class metric_route : uint8_t { chat_completions, completions, models, health, ready, other };
inline constexpr std::array<const char*, 6> kMetricRouteNames{"chat_completions", "completions", "models",
                                                              "health", "ready", "other"};
enum class metric_outcome : uint8_t { status_2xx, status_4xx, status_5xx, disconnect };
inline constexpr std::array<const char*, 4> kMetricOutcomeNames{"2xx", "4xx", "5xx", "disconnect"};

struct gateway_metrics {
    std::array<std::array<metrics::counter, kMetricOutcomeNames.size()>, kMetricRouteNames.size()> requests;
    metrics::histogram time_to_first_token;
    metrics::histogram inter_token;
    metrics::histogram request_seconds;
    metrics::counter prompt_tokens;
    metrics::counter generated_tokens;
    metrics::gauge in_flight;

    // Counts one finished request by its HTTP status class.
    void count(metric_route route, int status);
    void count(metric_route route, metric_outcome outcome);
};

// Registers every metric above in `registry` (throws metrics_error on a name clash).
gateway_metrics make_gateway_metrics(metrics::metrics_registry& registry);

}  // namespace longcat::gateway
