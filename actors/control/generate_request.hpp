// The one mapping from a client's cluster_generate_options to the proto::generate_request the
// coordinator receives (cluster_client's one-shot call and cluster_session's streams).
// NOTES: includes proto/messages.hpp (CAF); include only from .cpp files.
#pragma once

#include "actors/control/cluster_client.hpp"
#include "proto/messages.hpp"

namespace longcat::control {

inline proto::generate_request to_generate_request(const cluster_generate_options& opts) {
    proto::generate_request request;
    request.client_request_id = opts.client_request_id;
    request.prompt = opts.prompt;
    request.max_tokens = opts.max_tokens;
    request.temperature = opts.temperature;
    request.top_p = opts.top_p;
    request.top_k = opts.top_k;
    request.seed = opts.seed;
    request.ignore_eos = opts.ignore_eos;
    request.deadline_ms = opts.timeout.count();
    return request;
}

}  // namespace longcat::control
