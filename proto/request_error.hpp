// request_error: why a request ended with finish_reason "error" (proto::generate_reply). No CAF
// here: the gateway's headers use it.
#pragma once

#include <cstdint>
#include <string_view>

namespace longcat::proto {

// Why a request ended with finish_reason "error" — what the gateway's one error table maps to
// an HTTP status, so that no client ever parses the message text.
enum class request_error : uint8_t {
    none = 0,
    not_serving = 1,      // refused: the cluster cannot serve now (members missing, draining)
    invalid_request = 2,  // refused: the request itself (empty prompt, larger than any KV pool)
    deadline = 3,         // its deadline passed, queued or running
    failed = 4,           // a member, step or KV transfer failed while it ran (named in `error`)
    unreachable = 5,      // the coordinator could not be reached or went away (client side)
};

constexpr std::string_view to_string(request_error kind) {
    switch (kind) {
        case request_error::none: return "none";
        case request_error::not_serving: return "not_serving";
        case request_error::invalid_request: return "invalid_request";
        case request_error::deadline: return "deadline";
        case request_error::failed: return "failed";
        case request_error::unreachable: return "unreachable";
    }
    return "unknown";
}

}  // namespace longcat::proto
