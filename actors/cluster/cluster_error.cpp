#include "actors/cluster/cluster_error.hpp"

namespace longcat::cluster {

std::string_view to_string(cluster_error error) {
    switch (error) {
        case cluster_error::bad_config:
            return "bad_config";
        case cluster_error::bad_placement:
            return "bad_placement";
        case cluster_error::connect_failed:
            return "connect_failed";
        case cluster_error::send_failed:
            return "send_failed";
        case cluster_error::combine_timeout:
            return "combine_timeout";
        case cluster_error::group_failed:
            return "group_failed";
        case cluster_error::bad_combine:
            return "bad_combine";
        case cluster_error::dispatch_timeout:
            return "dispatch_timeout";
        case cluster_error::worker_failed:
            return "worker_failed";
        case cluster_error::bad_dispatch:
            return "bad_dispatch";
        case cluster_error::unpaired_peer:
            return "unpaired_peer";
        case cluster_error::out_of_pages:
            return "out_of_pages";
        case cluster_error::bad_batch:
            return "bad_batch";
        case cluster_error::model_failure:
            return "model_failure";
        case cluster_error::closed:
            return "closed";
    }
    return "unknown";
}

proto::unexpected<cluster_failure> make_cluster_failure(cluster_error code,
                                                        std::string_view message) {
    return proto::unexpected(
        cluster_failure{code, std::string(to_string(code)) + ": " + std::string(message)});
}

}  // namespace longcat::cluster
