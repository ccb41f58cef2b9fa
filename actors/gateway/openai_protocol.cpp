#include "actors/gateway/openai_protocol.hpp"

#include <cmath>
#include <functional>
#include <limits>

#include <nlohmann/json.hpp>

namespace longcat::gateway {

namespace {

using json = nlohmann::json;
using out_json = nlohmann::ordered_json;  // responses keep OpenAI's key order

std::string dump(const json& value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}
std::string dump(const out_json& value) {
    return value.dump(-1, ' ', false, out_json::error_handler_t::replace);
}

proto::unexpected<api_error> fail(api_error_kind kind, std::string param, std::string message) {
    return proto::unexpected<api_error>(api_error{kind, std::move(message), std::move(param)});
}

// Deepest nesting of arrays/objects, counted without parsing (so a hostile body cannot make
// the parser or the destructor recurse deeply); strings are skipped.
int max_nesting(std::string_view text) {
    int depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        if (c == '"') in_string = true;
        else if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
        else if (c == ']' || c == '}') --depth;
    }
    return deepest;
}

// The value of `name`, or nullptr when absent or null.
const json* field(const json& object, const char* name) {
    const auto it = object.find(name);
    if (it == object.end() || it->is_null()) return nullptr;
    return &*it;
}

std::string got(const json& value) { return std::string(", got ") + value.type_name(); }

std::optional<api_error> invalid(std::string param, std::string message) {
    return api_error{api_error_kind::invalid_value, std::move(message), std::move(param)};
}

// Integer reader: JSON integers only (16.0 is refused), within int64.
std::optional<api_error> read_int(const json& value, const std::string& name, int64_t& out) {
    if (value.is_number_unsigned()) {
        const uint64_t raw = value.get<uint64_t>();
        if (raw > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            return invalid(name, name + ": integer " + std::to_string(raw) + " is out of range");
        out = static_cast<int64_t>(raw);
        return std::nullopt;
    }
    if (!value.is_number_integer()) return invalid(name, name + ": must be an integer" + got(value));
    out = value.get<int64_t>();
    return std::nullopt;
}

std::optional<api_error> read_number(const json& value, const std::string& name, double& out) {
    if (!value.is_number()) return invalid(name, name + ": must be a number" + got(value));
    out = value.get<double>();
    return std::nullopt;
}

std::optional<api_error> read_bool(const json& value, const std::string& name, bool& out) {
    if (!value.is_boolean()) return invalid(name, name + ": must be a boolean" + got(value));
    out = value.get<bool>();
    return std::nullopt;
}

std::optional<api_error> read_string(const json& value, const std::string& name, std::string& out) {
    if (!value.is_string()) return invalid(name, name + ": must be a string" + got(value));
    out = value.get<std::string>();
    return std::nullopt;
}

// -- parameters that would change the result but are not implemented -------------------------

struct unsupported_rule {
    const char* name;
    std::function<bool(const json&)> neutral;  // the value changes nothing (e.g. penalty 0)
    const char* what;                          // what is not implemented
};

bool is_number_equal(const json& value, double expected) {
    return value.is_number() && value.get<double>() == expected;
}
bool is_false(const json& value) { return value.is_boolean() && !value.get<bool>(); }
bool is_true(const json& value) { return value.is_boolean() && value.get<bool>(); }
bool is_empty_container(const json& value) {
    return (value.is_array() || value.is_object()) && value.empty();
}
bool never(const json&) { return false; }

const std::vector<unsupported_rule>& unsupported_rules() {
    static const std::vector<unsupported_rule> rules = {
        {"tools", is_empty_container, "tool calls are not implemented"},
        {"tool_choice",
         [](const json& v) { return v.is_string() && (v == "none" || v == "auto"); },
         "tool calls are not implemented"},
        {"functions", is_empty_container, "function calls are not implemented"},
        {"function_call",
         [](const json& v) { return v.is_string() && (v == "none" || v == "auto"); },
         "function calls are not implemented"},
        {"response_format",
         [](const json& v) { return v.is_object() && v.value("type", json()) == "text"; },
         "structured output (response_format other than text) is not implemented"},
        {"logprobs", is_false, "logprobs are not implemented"},
        {"top_logprobs", [](const json& v) { return is_number_equal(v, 0); },
         "logprobs are not implemented"},
        {"logit_bias", is_empty_container, "logit_bias is not implemented"},
        {"presence_penalty", [](const json& v) { return is_number_equal(v, 0); },
         "presence_penalty other than 0 is not implemented"},
        {"frequency_penalty", [](const json& v) { return is_number_equal(v, 0); },
         "frequency_penalty other than 0 is not implemented"},
        {"repetition_penalty", [](const json& v) { return is_number_equal(v, 1); },
         "repetition_penalty other than 1 is not implemented"},
        {"length_penalty", [](const json& v) { return is_number_equal(v, 1); },
         "length_penalty other than 1 is not implemented"},
        {"echo", is_false, "echo is not implemented"},
        {"best_of", [](const json& v) { return is_number_equal(v, 1); },
         "best_of other than 1 is not implemented"},
        {"use_beam_search", is_false, "beam search is not implemented"},
        {"suffix", [](const json& v) { return v.is_string() && v.get<std::string>().empty(); },
         "suffix (insertion) is not implemented"},
        {"min_tokens", [](const json& v) { return is_number_equal(v, 0); },
         "min_tokens other than 0 is not implemented"},
        {"min_p", [](const json& v) { return is_number_equal(v, 0); },
         "min_p other than 0 is not implemented"},
        {"stop_token_ids", is_empty_container, "stop_token_ids is not implemented"},
        {"include_stop_str_in_output", is_false, "include_stop_str_in_output is not implemented"},
        {"skip_special_tokens", is_true, "skip_special_tokens=false is not implemented"},
        {"truncate_prompt_tokens", never, "prompt truncation is not implemented"},
        {"prediction", never, "predicted outputs are not implemented"},
        {"audio", never, "audio output is not implemented"},
        {"modalities",
         [](const json& v) { return v.is_array() && v.size() == 1 && v[0] == "text"; },
         "output modalities other than text are not implemented"},
        {"web_search_options", never, "web search is not implemented"},
        {"guided_json", never, "guided decoding is not implemented"},
        {"guided_regex", never, "guided decoding is not implemented"},
        {"guided_choice", never, "guided decoding is not implemented"},
        {"guided_grammar", never, "guided decoding is not implemented"},
    };
    return rules;
}

std::optional<api_error> check_unsupported(const json& body) {
    for (const unsupported_rule& rule : unsupported_rules()) {
        const json* value = field(body, rule.name);
        if (value != nullptr && !rule.neutral(*value)) {
            return api_error{api_error_kind::unsupported_parameter,
                             std::string("unsupported parameter '") + rule.name + "': " + rule.what,
                             rule.name};
        }
    }
    // n: only 1 is implemented; other integers are refused as unsupported, other types invalid.
    if (const json* value = field(body, "n")) {
        int64_t num_choices = 0;
        if (auto error = read_int(*value, "n", num_choices)) return error;
        if (num_choices < 1) return invalid("n", "n: must be >= 1, got " + std::to_string(num_choices));
        if (num_choices > 1)
            return api_error{api_error_kind::unsupported_parameter,
                             "unsupported parameter 'n': only n = 1 is implemented, got " +
                                 std::to_string(num_choices),
                             "n"};
    }
    return std::nullopt;
}

// -- route fields -----------------------------------------------------------------------------

std::optional<api_error> read_content(const json& value, const std::string& name, std::string& out) {
    if (value.is_string()) {
        out = value.get<std::string>();
        return std::nullopt;
    }
    if (!value.is_array())
        return invalid(name, name + ": must be a string or a list of text parts" + got(value));
    out.clear();
    for (size_t part_idx = 0; part_idx < value.size(); ++part_idx) {
        const json& part = value[part_idx];
        const std::string part_name = name + "[" + std::to_string(part_idx) + "]";
        if (!part.is_object()) return invalid(part_name, part_name + ": must be an object" + got(part));
        const json* type = field(part, "type");
        if (type == nullptr || !type->is_string())
            return invalid(part_name + ".type", part_name + ".type: must be the string \"text\"");
        if (*type != "text")
            return api_error{api_error_kind::unsupported_parameter,
                             part_name + ".type: content parts of type '" +
                                 type->get<std::string>() + "' are not implemented (only text)",
                             part_name + ".type"};
        const json* text = field(part, "text");
        if (text == nullptr) return invalid(part_name + ".text", part_name + ".text: is required");
        std::string piece;
        if (auto error = read_string(*text, part_name + ".text", piece)) return error;
        if (part_idx > 0) out += '\n';
        out += piece;
    }
    return std::nullopt;
}

std::optional<api_error> read_messages(const json& body, normalized_request& out) {
    const json* messages = field(body, "messages");
    if (messages == nullptr) return invalid("messages", "messages: is required");
    if (!messages->is_array()) return invalid("messages", "messages: must be a list" + got(*messages));
    if (messages->empty()) return invalid("messages", "messages: must not be empty");
    for (size_t message_idx = 0; message_idx < messages->size(); ++message_idx) {
        const json& message = (*messages)[message_idx];
        const std::string name = "messages[" + std::to_string(message_idx) + "]";
        if (!message.is_object()) return invalid(name, name + ": must be an object" + got(message));
        chat_message parsed;
        const json* role = field(message, "role");
        if (role == nullptr) return invalid(name + ".role", name + ".role: is required");
        if (auto error = read_string(*role, name + ".role", parsed.role)) return error;
        if (parsed.role == "developer") parsed.role = "system";
        if (parsed.role == "tool" || parsed.role == "function")
            return api_error{api_error_kind::unsupported_parameter,
                             name + ".role: '" + parsed.role + "' messages are not implemented",
                             name + ".role"};
        if (parsed.role != "system" && parsed.role != "user" && parsed.role != "assistant")
            return invalid(name + ".role", name + ".role: must be system, user or assistant, got '" +
                                               parsed.role + "'");
        if (const json* tool_calls = field(message, "tool_calls"); tool_calls && !tool_calls->empty())
            return api_error{api_error_kind::unsupported_parameter,
                             name + ".tool_calls: tool calls are not implemented",
                             name + ".tool_calls"};
        const json* content = field(message, "content");
        if (content == nullptr) return invalid(name + ".content", name + ".content: is required");
        if (auto error = read_content(*content, name + ".content", parsed.content)) return error;
        out.messages.push_back(std::move(parsed));
    }
    return std::nullopt;
}

std::optional<api_error> read_token_ids(const json& list, const std::string& name,
                                        std::vector<int32_t>& out) {
    if (list.empty()) return invalid(name, name + ": must not be an empty list of token ids");
    out.reserve(list.size());
    for (size_t token_idx = 0; token_idx < list.size(); ++token_idx) {
        int64_t id = 0;
        const std::string item = name + "[" + std::to_string(token_idx) + "]";
        if (auto error = read_int(list[token_idx], item, id)) return error;
        if (id < 0 || id > std::numeric_limits<int32_t>::max())
            return invalid(name, item + ": token id " + std::to_string(id) + " is out of range");
        out.push_back(static_cast<int32_t>(id));
    }
    return std::nullopt;
}

std::optional<api_error> read_prompt(const json& body, normalized_request& out) {
    const json* prompt = field(body, "prompt");
    if (prompt == nullptr) return invalid("prompt", "prompt: is required");
    if (prompt->is_string()) {
        out.prompt_text = prompt->get<std::string>();
        return std::nullopt;
    }
    if (!prompt->is_array())
        return invalid("prompt", "prompt: must be a string, a list of token ids or a list of one string" +
                                     got(*prompt));
    if (prompt->empty()) return invalid("prompt", "prompt: must not be an empty list");
    const json& first = (*prompt)[0];
    if (first.is_number()) {
        out.prompt_is_ids = true;
        return read_token_ids(*prompt, "prompt", out.prompt_ids);
    }
    if (prompt->size() > 1)
        return api_error{api_error_kind::unsupported_parameter,
                         "prompt: a batch of " + std::to_string(prompt->size()) +
                             " prompts is not implemented (send one prompt per request)",
                         "prompt"};
    if (first.is_string()) {
        out.prompt_text = first.get<std::string>();
        return std::nullopt;
    }
    if (first.is_array()) {
        out.prompt_is_ids = true;
        return read_token_ids(first, "prompt[0]", out.prompt_ids);
    }
    return invalid("prompt", "prompt[0]: must be a string or a list of token ids" + got(first));
}

std::optional<api_error> read_stop(const json& body, normalized_request& out) {
    const json* stop = field(body, "stop");
    if (stop == nullptr) return std::nullopt;
    if (stop->is_string()) {
        if (stop->get<std::string>().empty()) return invalid("stop", "stop: must not be an empty string");
        out.stop.push_back(stop->get<std::string>());
        return std::nullopt;
    }
    if (!stop->is_array()) return invalid("stop", "stop: must be a string or a list of strings" + got(*stop));
    if (static_cast<int>(stop->size()) > kMaxStopStrings)
        return invalid("stop", "stop: at most " + std::to_string(kMaxStopStrings) + " strings, got " +
                                   std::to_string(stop->size()));
    for (size_t stop_idx = 0; stop_idx < stop->size(); ++stop_idx) {
        const std::string name = "stop[" + std::to_string(stop_idx) + "]";
        std::string text;
        if (auto error = read_string((*stop)[stop_idx], name, text)) {
            error->param = "stop";
            return error;
        }
        if (text.empty()) return invalid("stop", name + ": must not be an empty string");
        out.stop.push_back(std::move(text));
    }
    return std::nullopt;
}

std::optional<api_error> read_sampling(const json& body, const protocol_limits& limits,
                                       normalized_request& out) {
    for (const char* name : {"max_tokens", "max_completion_tokens"}) {
        const json* value = field(body, name);
        if (value == nullptr) continue;
        int64_t max_tokens = 0;
        if (auto error = read_int(*value, name, max_tokens)) return error;
        if (max_tokens < 1)
            return invalid(name, std::string(name) + ": must be >= 1, got " + std::to_string(max_tokens));
        if (max_tokens > limits.max_tokens_limit)
            return invalid(name, std::string(name) + ": must be <= " +
                                     std::to_string(limits.max_tokens_limit) + " (the server's limit), got " +
                                     std::to_string(max_tokens));
        out.max_tokens = max_tokens;  // max_completion_tokens comes second and wins
    }
    if (const json* value = field(body, "temperature")) {
        double temperature = 0;
        if (auto error = read_number(*value, "temperature", temperature)) return error;
        if (!(temperature >= 0.0 && temperature <= 2.0))
            return invalid("temperature", "temperature: must be in [0, 2], got " + dump(*value));
        out.temperature = static_cast<float>(temperature);
    }
    if (const json* value = field(body, "top_p")) {
        double top_p = 0;
        if (auto error = read_number(*value, "top_p", top_p)) return error;
        if (!(top_p > 0.0 && top_p <= 1.0))
            return invalid("top_p", "top_p: must be in (0, 1], got " + dump(*value));
        out.top_p = static_cast<float>(top_p);
        if (out.top_p <= 0.0f) out.top_p = std::numeric_limits<float>::min();  // tiny doubles
    }
    if (const json* value = field(body, "top_k")) {
        int64_t top_k = 0;
        if (auto error = read_int(*value, "top_k", top_k)) return error;
        if (top_k < -1)
            return invalid("top_k", "top_k: must be -1 or 0 (off) or >= 1, got " + std::to_string(top_k));
        out.top_k = top_k < 0 ? 0 : top_k;
    }
    if (const json* value = field(body, "seed")) {
        if (value->is_number_unsigned()) {
            out.seed = value->get<uint64_t>();
        } else {
            int64_t seed = 0;
            if (auto error = read_int(*value, "seed", seed)) return error;
            out.seed = static_cast<uint64_t>(seed);
        }
    }
    return std::nullopt;
}

std::optional<api_error> read_flags(const json& body, normalized_request& out) {
    if (const json* value = field(body, "stream")) {
        if (auto error = read_bool(*value, "stream", out.stream)) return error;
    }
    if (const json* value = field(body, "stream_options")) {
        if (!value->is_object())
            return invalid("stream_options", "stream_options: must be an object" + got(*value));
        if (!out.stream)
            return invalid("stream_options", "stream_options: only allowed when stream is true");
        if (const json* usage = field(*value, "include_usage")) {
            if (auto error = read_bool(*usage, "stream_options.include_usage", out.include_usage))
                return error;
        }
    }
    if (const json* value = field(body, "ignore_eos")) {
        if (auto error = read_bool(*value, "ignore_eos", out.ignore_eos)) return error;
    }
    if (const json* value = field(body, "user")) {
        if (auto error = read_string(*value, "user", out.user)) return error;
    }
    return std::nullopt;
}

out_json usage_json(const usage_counts& usage) {
    return {{"prompt_tokens", usage.prompt_tokens},
            {"completion_tokens", usage.completion_tokens},
            {"total_tokens", usage.prompt_tokens + usage.completion_tokens}};
}

out_json chunk_base(const response_meta& meta) {
    return {{"id", meta.id},
            {"object", meta.route == api_route::chat_completions ? "chat.completion.chunk" : "text_completion"},
            {"created", meta.created},
            {"model", meta.model}};
}

std::string sse(const out_json& event) { return "data: " + dump(event) + "\n\n"; }

// One choice of a streamed chunk: chat → delta, completions → text.
std::string sse_choice(const response_meta& meta, out_json delta_or_text, const out_json& finish_reason,
                       bool with_usage_null) {
    out_json chunk = chunk_base(meta);
    out_json choice = {{"index", 0}};
    if (meta.route == api_route::chat_completions) choice["delta"] = std::move(delta_or_text);
    else choice["text"] = std::move(delta_or_text);
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = finish_reason;
    chunk["choices"] = out_json::array({std::move(choice)});
    if (with_usage_null) chunk["usage"] = nullptr;
    return sse(chunk);
}

}  // namespace

// -- errors -----------------------------------------------------------------------------------

error_mapping map_error(api_error_kind kind) {
    switch (kind) {
        case api_error_kind::invalid_json: return {400, "invalid_request_error", "invalid_json"};
        case api_error_kind::invalid_value: return {400, "invalid_request_error", "invalid_value"};
        case api_error_kind::unsupported_parameter:
            return {400, "invalid_request_error", "unsupported_parameter"};
        case api_error_kind::context_length_exceeded:
            return {400, "invalid_request_error", "context_length_exceeded"};
        case api_error_kind::invalid_header: return {400, "invalid_request_error", "invalid_header"};
        case api_error_kind::unauthorized: return {401, "authentication_error", "invalid_api_key"};
        case api_error_kind::model_not_found: return {404, "not_found_error", "model_not_found"};
        case api_error_kind::route_not_found: return {404, "not_found_error", "not_found"};
        case api_error_kind::method_not_allowed:
            return {405, "invalid_request_error", "method_not_allowed"};
        case api_error_kind::body_timeout: return {408, "invalid_request_error", "request_timeout"};
        case api_error_kind::payload_too_large:
            return {413, "invalid_request_error", "payload_too_large"};
        case api_error_kind::rate_limited: return {429, "rate_limit_error", "rate_limit_exceeded"};
        case api_error_kind::not_ready: return {503, "service_unavailable_error", "not_ready"};
        case api_error_kind::draining: return {503, "service_unavailable_error", "draining"};
        case api_error_kind::backend_cancelled:
            return {503, "service_unavailable_error", "backend_cancelled"};
        case api_error_kind::timeout: return {504, "timeout_error", "timeout"};
        case api_error_kind::internal: return {500, "internal_error", "internal_error"};
    }
    return {500, "internal_error", "internal_error"};
}

api_error_kind map_backend_error(backend_error error) {
    switch (error) {
        case backend_error::overloaded: return api_error_kind::rate_limited;
        case backend_error::not_ready: return api_error_kind::not_ready;
        case backend_error::invalid_request: return api_error_kind::invalid_value;
        case backend_error::timeout: return api_error_kind::timeout;
        case backend_error::cancelled: return api_error_kind::backend_cancelled;
        case backend_error::internal: return api_error_kind::internal;
    }
    return api_error_kind::internal;
}

std::string error_body(const api_error& error) {
    const error_mapping mapping = map_error(error.kind);
    out_json body = {{"error",
                  {{"message", error.message},
                   {"type", mapping.type},
                   {"param", error.param.empty() ? out_json(nullptr) : out_json(error.param)},
                   {"code", mapping.code}}}};
    return dump(body);
}

// -- requests ---------------------------------------------------------------------------------

proto::expected<normalized_request, api_error> parse_request(api_route route, std::string_view body,
                                                             const protocol_limits& limits) {
    if (max_nesting(body) > kMaxJsonDepth)
        return fail(api_error_kind::invalid_json, "",
                    "request body: JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    json doc;
    try {
        doc = json::parse(body.begin(), body.end());
    } catch (const json::exception& e) {
        return fail(api_error_kind::invalid_json, "", std::string("request body is not valid JSON: ") + e.what());
    }
    if (!doc.is_object())
        return fail(api_error_kind::invalid_json, "", std::string("request body must be a JSON object, got ") +
                                                          doc.type_name());
    normalized_request out;
    out.route = route;
    const json* model = field(doc, "model");
    if (model == nullptr) return fail(api_error_kind::invalid_value, "model", "model: is required");
    if (!model->is_string()) return fail(api_error_kind::invalid_value, "model", "model: must be a string" + got(*model));
    out.model = model->get<std::string>();
    if (out.model != limits.served_model_name)
        return fail(api_error_kind::model_not_found, "model",
                    "model '" + out.model + "' does not exist; this server serves '" +
                        limits.served_model_name + "'");
    auto check = [&]() -> std::optional<api_error> {
        if (auto error = check_unsupported(doc)) return error;
        if (route == api_route::chat_completions) {
            if (auto error = read_messages(doc, out)) return error;
        } else {
            if (auto error = read_prompt(doc, out)) return error;
        }
        if (auto error = read_sampling(doc, limits, out)) return error;
        if (auto error = read_stop(doc, out)) return error;
        return read_flags(doc, out);
    };
    try {
        if (auto error = check()) return proto::unexpected<api_error>(std::move(*error));
    } catch (const json::exception& e) {  // not expected: every access is type-checked first
        return fail(api_error_kind::invalid_value, "", std::string("request body: ") + e.what());
    }
    return out;
}

// -- responses --------------------------------------------------------------------------------

std::string response_id(api_route route, std::string_view request_id) {
    return std::string(route == api_route::chat_completions ? "chatcmpl-" : "cmpl-") +
           std::string(request_id);
}

std::string completion_body(const response_meta& meta, std::string_view text,
                            std::string_view finish_reason, const usage_counts& usage) {
    out_json choice = {{"index", 0}};
    if (meta.route == api_route::chat_completions) {
        choice["message"] = {{"role", "assistant"}, {"content", std::string(text)}};
    } else {
        choice["text"] = std::string(text);
    }
    choice["logprobs"] = nullptr;
    choice["finish_reason"] = std::string(finish_reason);
    out_json body = {{"id", meta.id},
                 {"object", meta.route == api_route::chat_completions ? "chat.completion" : "text_completion"},
                 {"created", meta.created},
                 {"model", meta.model},
                 {"choices", out_json::array({std::move(choice)})},
                 {"usage", usage_json(usage)}};
    return dump(body);
}

std::string sse_first_chunk(const response_meta& meta, bool with_usage_null) {
    if (meta.route != api_route::chat_completions) return "";
    return sse_choice(meta, {{"role", "assistant"}, {"content", ""}}, nullptr, with_usage_null);
}

std::string sse_text_chunk(const response_meta& meta, std::string_view text, bool with_usage_null) {
    if (meta.route == api_route::chat_completions)
        return sse_choice(meta, {{"content", std::string(text)}}, nullptr, with_usage_null);
    return sse_choice(meta, std::string(text), nullptr, with_usage_null);
}

std::string sse_finish_chunk(const response_meta& meta, std::string_view finish_reason,
                             bool with_usage_null) {
    const out_json reason = std::string(finish_reason);
    if (meta.route == api_route::chat_completions)
        return sse_choice(meta, out_json::object(), reason, with_usage_null);
    return sse_choice(meta, "", reason, with_usage_null);
}

std::string sse_usage_chunk(const response_meta& meta, const usage_counts& usage) {
    out_json chunk = chunk_base(meta);
    chunk["choices"] = out_json::array();
    chunk["usage"] = usage_json(usage);
    return sse(chunk);
}

std::string sse_error_event(const api_error& error) { return "data: " + error_body(error) + "\n\n"; }

std::string sse_done() { return "data: [DONE]\n\n"; }

std::string models_body(std::string_view model, int64_t created, int64_t max_model_len) {
    out_json body = {{"object", "list"},
                 {"data", out_json::array({{{"id", std::string(model)},
                                        {"object", "model"},
                                        {"created", created},
                                        {"owned_by", "longcat-serve"},
                                        {"max_model_len", max_model_len}}})}};
    return dump(body);
}

}  // namespace longcat::gateway
