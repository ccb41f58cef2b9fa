// cluster_error: the named errors of the cluster's compute core (attention worker executor,
// expert group). Errors are values: every fallible call returns cluster_result<T>; the message
// names the peer (worker or group), the layer and the micro-batch involved.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "proto/expected.hpp"

namespace longcat::cluster {

enum class cluster_error : uint8_t {
    bad_config,        // a config field out of range (message names it)
    bad_placement,     // the placement map does not fit this model or this member
    connect_failed,    // data-plane connect to a peer failed
    send_failed,       // a dispatch or combine send failed (peer failed, deadline, closed)
    combine_timeout,   // worker: an expert group's combine missed the deadline
    group_failed,      // worker: an expert group's data-plane peer failed
    bad_combine,       // worker: a combine frame of the wrong shape
    dispatch_timeout,  // group: a paired worker's dispatch missed the unit deadline
    worker_failed,     // group: a paired worker's data-plane peer failed
    bad_dispatch,      // group: a dispatch frame of the wrong shape, or for experts not held
    unpaired_peer,     // group: a dispatch from a peer that is not a paired worker
    out_of_pages,      // worker: the KV cache cannot hold the step
    bad_batch,         // worker: an empty or malformed batch
    model_failure,     // a model stage threw (e.g. model_error); the message is its what()
    closed,            // the data plane was closed
};
std::string_view to_string(cluster_error error);

struct cluster_failure {
    cluster_error code = cluster_error::bad_config;
    std::string message;  // "<code>: <what happened>, naming the peer"
};

template <class T>
using cluster_result = proto::expected<T, cluster_failure>;
using cluster_status = cluster_result<void>;

// unexpected{code, "<to_string(code)>: <message>"}.
proto::unexpected<cluster_failure> make_cluster_failure(cluster_error code,
                                                        std::string_view message);

}  // namespace longcat::cluster
