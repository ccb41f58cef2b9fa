#include "actors/gateway/gateway_metrics.hpp"

namespace longcat::gateway {

void gateway_metrics::count(metric_route route, int status) {
    const metric_outcome outcome = status < 400   ? metric_outcome::status_2xx
                                   : status < 500 ? metric_outcome::status_4xx
                                                  : metric_outcome::status_5xx;
    count(route, outcome);
}

void gateway_metrics::count(metric_route route, metric_outcome outcome) {
    requests[static_cast<size_t>(route)][static_cast<size_t>(outcome)].inc();
}

gateway_metrics make_gateway_metrics(metrics::metrics_registry& registry) {
    gateway_metrics out;
    const auto requests = registry.add_counter_family("longcat_gateway_requests_total",
                                                      "HTTP requests by route and outcome (status class)");
    for (size_t route_idx = 0; route_idx < kMetricRouteNames.size(); ++route_idx) {
        for (size_t outcome_idx = 0; outcome_idx < kMetricOutcomeNames.size(); ++outcome_idx) {
            out.requests[route_idx][outcome_idx] = requests.with(
                {{"route", kMetricRouteNames[route_idx]}, {"outcome", kMetricOutcomeNames[outcome_idx]}});
        }
    }
    out.time_to_first_token = registry.add_histogram(
        "longcat_gateway_time_to_first_token_seconds",
        "time from a generation request being accepted to its first token", metrics::latency_seconds_buckets());
    out.inter_token = registry.add_histogram("longcat_gateway_inter_token_seconds",
                                             "time between generated tokens of one request",
                                             metrics::latency_seconds_buckets());
    out.request_seconds = registry.add_histogram("longcat_gateway_request_seconds",
                                                 "end-to-end time of generation requests",
                                                 metrics::latency_seconds_buckets());
    out.prompt_tokens = registry.add_counter("longcat_gateway_prompt_tokens_total",
                                             "prompt tokens of generation requests");
    out.generated_tokens = registry.add_counter("longcat_gateway_generated_tokens_total",
                                                "tokens generated for clients (up to a stop string)");
    out.in_flight = registry.add_gauge("longcat_gateway_requests_in_flight",
                                       "generation requests accepted and not yet finished");
    return out;
}

}  // namespace longcat::gateway
