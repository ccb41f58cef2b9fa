// openai_protocol: the OpenAI-compatible wire format, as pure functions (no HTTP, no tokenizer,
// no CAF/Beast/UCX, so a fuzzer can build it alone).
// Owns: the validation of POST /v1/chat/completions and /v1/completions bodies into a
// normalized_request, the one table mapping error kinds to HTTP status + OpenAI type/code, and
// the builders of response bodies and SSE chunks.
//
// NOTES:
// - A JSON `null` is the same as an absent parameter (clients send `"stop": null`).
// - A parameter that would change the result but is not implemented (tools, logprobs,
//   penalties ≠ neutral, n > 1, ...) is refused with code `unsupported_parameter`, naming it;
//   any other unknown key is ignored, as OpenAI's own server does for forward compatibility.
// - Error bodies are exactly {"error":{"message","type","param","code"}}; `param` is null when
//   no single parameter is at fault.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "actors/gateway/backend.hpp"
#include "proto/expected.hpp"

namespace longcat::gateway {

// -- errors -----------------------------------------------------------------------------------

enum class api_error_kind : uint8_t {
    invalid_json,             // 400 the body is not JSON / not an object
    invalid_value,            // 400 a wrong type, a value out of range, a missing field
    unsupported_parameter,    // 400 a parameter this server does not implement
    context_length_exceeded,  // 400 prompt + max_tokens longer than the context
    invalid_header,           // 400 a malformed request header (X-Request-Id)
    unauthorized,             // 401 missing or wrong API key
    model_not_found,          // 404 `model` is not the served model
    route_not_found,          // 404 no such path
    method_not_allowed,       // 405
    body_timeout,             // 408 the body did not arrive within the body deadline
    payload_too_large,        // 413 body (or header) over the limit
    rate_limited,             // 429 the router's queue is full (Retry-After is set)
    not_ready,                // 503 the backend is not ready
    draining,                 // 503 the gateway is shutting down
    backend_cancelled,        // 503 the backend ended the request itself
    timeout,                  // 504 the request deadline passed
    internal,                 // 500
};

struct api_error {
    api_error_kind kind = api_error_kind::internal;
    std::string message;  // names what was wrong
    std::string param;    // the offending parameter ("" → null)
};

// The one table: error kind → HTTP status, OpenAI `type` and `code`.
struct error_mapping {
    int status = 500;
    std::string_view type;
    std::string_view code;
};
error_mapping map_error(api_error_kind kind);

// The kind a backend error is reported as.
api_error_kind map_backend_error(backend_error error);

// {"error":{"message":...,"type":...,"param":...,"code":...}}
std::string error_body(const api_error& error);

// -- requests ---------------------------------------------------------------------------------

enum class api_route : uint8_t { chat_completions, completions };

struct chat_message {
    std::string role;  // "system" | "user" | "assistant" ("developer" is read as "system")
    std::string content;
};

struct normalized_request {
    api_route route = api_route::chat_completions;
    std::string model;
    std::vector<chat_message> messages;  // chat: at least one
    bool prompt_is_ids = false;          // completions: which of the next two holds the prompt
    std::string prompt_text;
    std::vector<int32_t> prompt_ids;
    std::optional<int64_t> max_tokens;  // max_completion_tokens wins over max_tokens
    float temperature = 1.0f;           // [0, 2]
    float top_p = 1.0f;                 // (0, 1]
    int64_t top_k = 0;                  // 0 = off (-1 is read as 0)
    std::vector<std::string> stop;      // ≤ 4 non-empty strings
    std::optional<uint64_t> seed;
    bool stream = false;
    bool include_usage = false;  // stream_options.include_usage
    bool ignore_eos = false;
    std::string user;
};

struct protocol_limits {
    std::string served_model_name;   // the one accepted `model`
    int64_t max_tokens_limit = 4096;  // largest accepted max_tokens
};

inline constexpr int kMaxStopStrings = 4;
inline constexpr int kMaxJsonDepth = 32;

// Parses and validates one request body for `route`. Never throws.
proto::expected<normalized_request, api_error> parse_request(api_route route, std::string_view body,
                                                             const protocol_limits& limits);

// -- responses --------------------------------------------------------------------------------

struct response_meta {
    api_route route = api_route::chat_completions;
    std::string id;  // "chatcmpl-<request id>" / "cmpl-<request id>"
    int64_t created = 0;  // unix seconds
    std::string model;
};

struct usage_counts {
    int64_t prompt_tokens = 0;
    int64_t completion_tokens = 0;
};

// The response id for a request id on a route.
std::string response_id(api_route route, std::string_view request_id);

// A non-streaming chat.completion / text_completion object.
std::string completion_body(const response_meta& meta, std::string_view text,
                            std::string_view finish_reason, const usage_counts& usage);

// SSE events ("data: {...}\n\n"). with_usage_null: include_usage was asked, so every chunk
// carries "usage": null until the usage chunk.
std::string sse_first_chunk(const response_meta& meta, bool with_usage_null);  // chat: role
std::string sse_text_chunk(const response_meta& meta, std::string_view text, bool with_usage_null);
std::string sse_finish_chunk(const response_meta& meta, std::string_view finish_reason,
                             bool with_usage_null);
std::string sse_usage_chunk(const response_meta& meta, const usage_counts& usage);  // choices: []
std::string sse_error_event(const api_error& error);
std::string sse_done();  // "data: [DONE]\n\n"

// GET /v1/models
std::string models_body(std::string_view model, int64_t created, int64_t max_model_len);

}  // namespace longcat::gateway
