// libFuzzer target: the request validation of actors/gateway/openai_protocol (JSON body →
// normalized_request or an OpenAI error). Input: byte 0 picks the route (bit 0: completions),
// the rest is the body. Checks, beyond "no crash, no sanitizer report": a parsed request keeps
// every documented bound, and every error renders as the exact OpenAI error shape with a status
// from the table. Built by tests/gateway/run_fuzz.sh (clang) or, with clang as the project's
// compiler, by the fuzz_request_parser target.
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "actors/gateway/openai_protocol.hpp"

using namespace longcat::gateway;

namespace {

void require(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "fuzz_request_parser: invariant violated: %s\n", what);
        std::abort();
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    const api_route route = (data[0] & 1) ? api_route::completions : api_route::chat_completions;
    const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
    const protocol_limits limits{"tiny", 256};
    const auto parsed = parse_request(route, body, limits);
    if (parsed) {
        const normalized_request& request = *parsed;
        require(request.route == route, "route");
        require(request.model == limits.served_model_name, "model is the served one");
        require(!request.max_tokens || (*request.max_tokens >= 1 && *request.max_tokens <= limits.max_tokens_limit),
                "max_tokens in [1, limit]");
        require(request.temperature >= 0.0f && request.temperature <= 2.0f, "temperature in [0, 2]");
        require(request.top_p > 0.0f && request.top_p <= 1.0f, "top_p in (0, 1]");
        require(request.top_k >= 0, "top_k >= 0");
        require(request.stop.size() <= kMaxStopStrings, "at most 4 stop strings");
        for (const std::string& stop : request.stop) require(!stop.empty(), "stop strings not empty");
        require(!request.include_usage || request.stream, "include_usage only with stream");
        if (route == api_route::chat_completions) {
            require(!request.messages.empty(), "messages not empty");
            for (const chat_message& message : request.messages)
                require(message.role == "system" || message.role == "user" || message.role == "assistant", "role");
        } else if (request.prompt_is_ids) {
            require(!request.prompt_ids.empty(), "prompt ids not empty");
            for (const int32_t id : request.prompt_ids) require(id >= 0, "token ids >= 0");
        }
        // The builders must give valid JSON for whatever text the request carried.
        const response_meta meta{route, response_id(route, "fuzz"), 0, request.model};
        const std::string text = request.stop.empty() ? request.user : request.stop.front();
        require(nlohmann::json::accept(completion_body(meta, text, "stop", {1, 2})), "completion body is JSON");
        const std::string chunk = sse_text_chunk(meta, text, request.include_usage);
        require(chunk.starts_with("data: ") && chunk.ends_with("\n\n"), "SSE framing");
        require(nlohmann::json::accept(chunk.substr(6, chunk.size() - 8)), "SSE chunk is JSON");
    } else {
        const api_error& error = parsed.error();
        require(!error.message.empty(), "error message names what was wrong");
        const error_mapping mapping = map_error(error.kind);
        require(mapping.status >= 400 && mapping.status < 600, "status is an error");
        const nlohmann::json rendered = nlohmann::json::parse(error_body(error));
        require(rendered.size() == 1 && rendered.contains("error"), "one top-level key");
        const nlohmann::json& inner = rendered["error"];
        require(inner.size() == 4 && inner["message"].is_string() && inner["type"].is_string() &&
                    (inner["param"].is_null() || inner["param"].is_string()) && inner["code"].is_string(),
                "message, type, param, code");
    }
    return 0;
}
