// actors/gateway/openai_protocol + prompt_builder: request validation (every field, every kind
// of bad input with the parameter it names), the error table against the statuses the OpenAI
// API uses, the exact error shape, response and SSE builders, and prompts built with the tiny
// model's tokenizer against the chat format written out by hand.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "actors/gateway/openai_protocol.hpp"
#include "actors/gateway/prompt_builder.hpp"
#include "tests/gateway/gateway_fixture.hpp"

namespace longcat::gateway {
namespace {

using json = nlohmann::json;

const protocol_limits kLimits{"tiny", 256};

normalized_request parse_ok(api_route route, const std::string& body) {
    auto parsed = parse_request(route, body, kLimits);
    EXPECT_TRUE(parsed.has_value()) << body << "\n  -> " << (parsed ? "" : parsed.error().message);
    return parsed ? *parsed : normalized_request{};
}

std::string chat_body(const std::string& extra) {
    return R"({"model":"tiny","messages":[{"role":"user","content":"Hi"}])" + (extra.empty() ? "" : "," + extra) + "}";
}
std::string completion_body_with(const std::string& extra) {
    return R"({"model":"tiny","prompt":"Once")" + (extra.empty() ? "" : "," + extra) + "}";
}

// -- valid requests -----------------------------------------------------------------------------

TEST(OpenaiProtocol, ChatRequestEveryField) {
    const auto request = parse_ok(api_route::chat_completions, R"({
        "model": "tiny",
        "messages": [{"role": "developer", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                     {"role": "assistant", "content": "c", "name": "bot"},
                     {"role": "user", "content": "d"}],
        "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.25, "top_k": -1,
        "stop": ["x", "yz"], "seed": 18446744073709551615, "stream": true,
        "stream_options": {"include_usage": true}, "ignore_eos": true, "user": "u1",
        "n": 1, "presence_penalty": 0, "frequency_penalty": 0.0, "logprobs": false, "tools": [],
        "response_format": {"type": "text"}, "store": true, "metadata": {"k": "v"}, "unknown_future_key": [1]
    })");
    ASSERT_EQ(request.messages.size(), 4u);
    EXPECT_EQ(request.messages[0].role, "system");  // developer is the newer name of system
    EXPECT_EQ(request.messages[1].content, "a\nb");
    EXPECT_EQ(request.messages[2].role, "assistant");
    EXPECT_EQ(*request.max_tokens, 7);  // max_completion_tokens wins
    EXPECT_FLOAT_EQ(request.temperature, 0.5f);
    EXPECT_FLOAT_EQ(request.top_p, 0.25f);
    EXPECT_EQ(request.top_k, 0);
    EXPECT_EQ(request.stop, (std::vector<std::string>{"x", "yz"}));
    EXPECT_EQ(*request.seed, UINT64_MAX);
    EXPECT_TRUE(request.stream);
    EXPECT_TRUE(request.include_usage);
    EXPECT_TRUE(request.ignore_eos);
    EXPECT_EQ(request.user, "u1");
}

TEST(OpenaiProtocol, NullIsAbsentAndDefaults) {
    const auto request = parse_ok(api_route::chat_completions,
                                  chat_body(R"("max_tokens":null,"temperature":null,"stop":null,"seed":null,)"
                                            R"("stream":null,"stream_options":null,"logprobs":null,"tools":null)"));
    EXPECT_FALSE(request.max_tokens);
    EXPECT_FLOAT_EQ(request.temperature, 1.0f);
    EXPECT_FLOAT_EQ(request.top_p, 1.0f);
    EXPECT_EQ(request.top_k, 0);
    EXPECT_TRUE(request.stop.empty());
    EXPECT_FALSE(request.seed);
    EXPECT_FALSE(request.stream);
}

TEST(OpenaiProtocol, CompletionPromptForms) {
    auto text = parse_ok(api_route::completions, completion_body_with(R"("stop":"\n")"));
    EXPECT_FALSE(text.prompt_is_ids);
    EXPECT_EQ(text.prompt_text, "Once");
    EXPECT_EQ(text.stop, std::vector<std::string>{"\n"});
    auto ids = parse_ok(api_route::completions, R"({"model":"tiny","prompt":[1,2,3]})");
    EXPECT_TRUE(ids.prompt_is_ids);
    EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{1, 2, 3}));
    auto one_text = parse_ok(api_route::completions, R"({"model":"tiny","prompt":["hello"]})");
    EXPECT_EQ(one_text.prompt_text, "hello");
    auto one_ids = parse_ok(api_route::completions, R"({"model":"tiny","prompt":[[7,8]]})");
    EXPECT_EQ(one_ids.prompt_ids, (std::vector<int32_t>{7, 8}));
}

// -- bad input: every case names its parameter ---------------------------------------------------

struct bad_case {
    api_route route;
    std::string body;
    api_error_kind kind;
    std::string param;   // expected `param` ("" = null)
    std::string needle;  // must appear in the message
};

const api_route kChat = api_route::chat_completions;
const api_route kCompletions = api_route::completions;

std::vector<bad_case> bad_cases() {
    using k = api_error_kind;
    return {
        {kChat, "{\"model\": \"tiny\",", k::invalid_json, "", "not valid JSON"},
        {kChat, "", k::invalid_json, "", "not valid JSON"},
        {kChat, "[1,2]", k::invalid_json, "", "must be a JSON object"},
        {kChat, std::string(40, '[') + std::string(40, ']'), k::invalid_json, "", "nested deeper than 32"},
        {kChat, "\"\xff\xfe\"", k::invalid_json, "", "not valid JSON"},
        {kChat, R"({"messages":[{"role":"user","content":"x"}]})", k::invalid_value, "model", "model: is required"},
        {kChat, R"({"model":5,"messages":[]})", k::invalid_value, "model", "must be a string, got number"},
        {kChat, R"({"model":"gpt-4","messages":[{"role":"user","content":"x"}]})", k::model_not_found, "model",
         "model 'gpt-4' does not exist"},
        {kChat, R"({"model":"tiny"})", k::invalid_value, "messages", "messages: is required"},
        {kChat, R"({"model":"tiny","messages":[]})", k::invalid_value, "messages", "must not be empty"},
        {kChat, R"({"model":"tiny","messages":"hi"})", k::invalid_value, "messages", "must be a list"},
        {kChat, R"({"model":"tiny","messages":[3]})", k::invalid_value, "messages[0]", "must be an object"},
        {kChat, R"({"model":"tiny","messages":[{"content":"x"}]})", k::invalid_value, "messages[0].role", "is required"},
        {kChat, R"({"model":"tiny","messages":[{"role":"robot","content":"x"}]})", k::invalid_value,
         "messages[0].role", "'robot'"},
        {kChat, R"({"model":"tiny","messages":[{"role":"tool","content":"x"}]})", k::unsupported_parameter,
         "messages[0].role", "not implemented"},
        {kChat, R"({"model":"tiny","messages":[{"role":"user"}]})", k::invalid_value, "messages[0].content", "is required"},
        {kChat, R"({"model":"tiny","messages":[{"role":"user","content":7}]})", k::invalid_value,
         "messages[0].content", "string or a list of text parts"},
        {kChat, R"({"model":"tiny","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})",
         k::unsupported_parameter, "messages[0].content[0].type", "'image_url'"},
        {kChat, R"({"model":"tiny","messages":[{"role":"user","content":[{"type":"text","text":1}]}]})",
         k::invalid_value, "messages[0].content[0].text", "must be a string"},
        {kChat, R"({"model":"tiny","messages":[{"role":"assistant","content":"x","tool_calls":[{"id":"1"}]}]})",
         k::unsupported_parameter, "messages[0].tool_calls", "tool calls"},
        {kChat, chat_body(R"("max_tokens":"8")"), k::invalid_value, "max_tokens", "must be an integer, got string"},
        {kChat, chat_body(R"("max_tokens":8.5)"), k::invalid_value, "max_tokens", "must be an integer"},
        {kChat, chat_body(R"("max_tokens":1e30)"), k::invalid_value, "max_tokens", "must be an integer"},
        {kChat, chat_body(R"("max_tokens":-1)"), k::invalid_value, "max_tokens", "must be >= 1, got -1"},
        {kChat, chat_body(R"("max_tokens":0)"), k::invalid_value, "max_tokens", "must be >= 1, got 0"},
        {kChat, chat_body(R"("max_tokens":257)"), k::invalid_value, "max_tokens", "must be <= 256"},
        {kChat, chat_body(R"("max_tokens":18446744073709551615)"), k::invalid_value, "max_tokens", "out of range"},
        {kChat, chat_body(R"("max_completion_tokens":100000)"), k::invalid_value, "max_completion_tokens", "<= 256"},
        {kChat, chat_body(R"("temperature":2.5)"), k::invalid_value, "temperature", "[0, 2]"},
        {kChat, chat_body(R"("temperature":-0.1)"), k::invalid_value, "temperature", "[0, 2]"},
        {kChat, chat_body(R"("temperature":"hot")"), k::invalid_value, "temperature", "must be a number"},
        {kChat, chat_body(R"("top_p":0)"), k::invalid_value, "top_p", "(0, 1]"},
        {kChat, chat_body(R"("top_p":1.5)"), k::invalid_value, "top_p", "(0, 1]"},
        {kChat, chat_body(R"("top_k":-2)"), k::invalid_value, "top_k", "got -2"},
        {kChat, chat_body(R"("top_k":2.5)"), k::invalid_value, "top_k", "must be an integer"},
        {kChat, chat_body(R"("stop":"")"), k::invalid_value, "stop", "empty string"},
        {kChat, chat_body(R"("stop":["a","b","c","d","e"])"), k::invalid_value, "stop", "at most 4"},
        {kChat, chat_body(R"("stop":["a",""])"), k::invalid_value, "stop", "stop[1]"},
        {kChat, chat_body(R"("stop":[1])"), k::invalid_value, "stop", "stop[0]: must be a string"},
        {kChat, chat_body(R"("stop":5)"), k::invalid_value, "stop", "string or a list"},
        {kChat, chat_body(R"("seed":"x")"), k::invalid_value, "seed", "must be an integer"},
        {kChat, chat_body(R"("stream":"yes")"), k::invalid_value, "stream", "must be a boolean"},
        {kChat, chat_body(R"("stream_options":{"include_usage":true})"), k::invalid_value, "stream_options",
         "only allowed when stream is true"},
        {kChat, chat_body(R"("stream":true,"stream_options":{"include_usage":1})"), k::invalid_value,
         "stream_options.include_usage", "boolean"},
        {kChat, chat_body(R"("ignore_eos":1)"), k::invalid_value, "ignore_eos", "boolean"},
        {kChat, chat_body(R"("user":5)"), k::invalid_value, "user", "must be a string"},
        {kChat, chat_body(R"("n":0)"), k::invalid_value, "n", "must be >= 1"},
        {kCompletions, R"({"model":"tiny"})", k::invalid_value, "prompt", "prompt: is required"},
        {kCompletions, R"({"model":"tiny","prompt":{}})", k::invalid_value, "prompt", "got object"},
        {kCompletions, R"({"model":"tiny","prompt":[]})", k::invalid_value, "prompt", "empty list"},
        {kCompletions, R"({"model":"tiny","prompt":[1,-2]})", k::invalid_value, "prompt", "prompt[1]: token id -2"},
        {kCompletions, R"({"model":"tiny","prompt":[1,"a"]})", k::invalid_value, "prompt[1]", "must be an integer"},
        {kCompletions, R"({"model":"tiny","prompt":[[]]})", k::invalid_value, "prompt[0]", "empty list"},
        {kCompletions, R"({"model":"tiny","prompt":["a","b"]})", k::unsupported_parameter, "prompt", "batch of 2"},
        {kCompletions, R"({"model":"tiny","prompt":[true]})", k::invalid_value, "prompt", "got boolean"},
    };
}

TEST(OpenaiProtocol, BadInputNamesTheParameter) {
    for (const bad_case& c : bad_cases()) {
        SCOPED_TRACE(c.body);
        auto parsed = parse_request(c.route, c.body, kLimits);
        ASSERT_FALSE(parsed.has_value());
        EXPECT_EQ(static_cast<int>(parsed.error().kind), static_cast<int>(c.kind)) << parsed.error().message;
        EXPECT_EQ(parsed.error().param, c.param) << parsed.error().message;
        EXPECT_NE(parsed.error().message.find(c.needle), std::string::npos)
            << "missing `" << c.needle << "` in: " << parsed.error().message;
    }
}

TEST(OpenaiProtocol, UnimplementedParametersAreRefusedNeutralOnesAccepted) {
    const std::vector<std::pair<std::string, std::string>> refused = {
        {"tools", R"([{"type":"function","function":{"name":"f"}}])"},
        {"tool_choice", R"("required")"},
        {"functions", R"([{"name":"f"}])"},
        {"function_call", R"({"name":"f"})"},
        {"response_format", R"({"type":"json_object"})"},
        {"logprobs", "true"},
        {"top_logprobs", "2"},
        {"logit_bias", R"({"5":10})"},
        {"presence_penalty", "0.5"},
        {"frequency_penalty", "-1"},
        {"repetition_penalty", "1.1"},
        {"echo", "true"},
        {"n", "2"},
        {"best_of", "3"},
        {"suffix", R"("tail")"},
        {"min_tokens", "4"},
        {"min_p", "0.1"},
        {"stop_token_ids", "[2]"},
        {"skip_special_tokens", "false"},
        {"guided_json", "{}"},
    };
    for (const auto& [name, value] : refused) {
        SCOPED_TRACE(name);
        auto parsed = parse_request(kChat, chat_body("\"" + name + "\":" + value), kLimits);
        ASSERT_FALSE(parsed.has_value());
        EXPECT_EQ(parsed.error().kind, api_error_kind::unsupported_parameter);
        EXPECT_EQ(parsed.error().param, name);
        EXPECT_NE(parsed.error().message.find("'" + name + "'"), std::string::npos) << parsed.error().message;
    }
    const std::vector<std::pair<std::string, std::string>> neutral = {
        {"tools", "[]"},          {"tool_choice", R"("none")"}, {"response_format", R"({"type":"text"})"},
        {"logprobs", "false"},    {"top_logprobs", "0"},        {"logit_bias", "{}"},
        {"presence_penalty", "0"}, {"frequency_penalty", "0.0"}, {"repetition_penalty", "1"},
        {"echo", "false"},        {"n", "1"},                   {"best_of", "1"},
        {"suffix", R"("")"},      {"min_tokens", "0"},          {"skip_special_tokens", "true"},
    };
    for (const auto& [name, value] : neutral) {
        SCOPED_TRACE(name);
        EXPECT_TRUE(parse_request(kChat, chat_body("\"" + name + "\":" + value), kLimits).has_value());
    }
}

// -- errors -------------------------------------------------------------------------------------

TEST(OpenaiProtocol, ErrorTableMatchesTheApi) {
    struct row {
        api_error_kind kind;
        int status;
        std::string type;
    };
    // The statuses and types of the OpenAI API (issue #5's table).
    const std::vector<row> expected = {
        {api_error_kind::invalid_json, 400, "invalid_request_error"},
        {api_error_kind::invalid_value, 400, "invalid_request_error"},
        {api_error_kind::unsupported_parameter, 400, "invalid_request_error"},
        {api_error_kind::context_length_exceeded, 400, "invalid_request_error"},
        {api_error_kind::invalid_header, 400, "invalid_request_error"},
        {api_error_kind::unauthorized, 401, "authentication_error"},
        {api_error_kind::model_not_found, 404, "not_found_error"},
        {api_error_kind::route_not_found, 404, "not_found_error"},
        {api_error_kind::method_not_allowed, 405, "invalid_request_error"},
        {api_error_kind::body_timeout, 408, "invalid_request_error"},
        {api_error_kind::payload_too_large, 413, "invalid_request_error"},
        {api_error_kind::rate_limited, 429, "rate_limit_error"},
        {api_error_kind::not_ready, 503, "service_unavailable_error"},
        {api_error_kind::draining, 503, "service_unavailable_error"},
        {api_error_kind::backend_cancelled, 503, "service_unavailable_error"},
        {api_error_kind::timeout, 504, "timeout_error"},
        {api_error_kind::internal, 500, "internal_error"},
    };
    for (const row& r : expected) {
        EXPECT_EQ(map_error(r.kind).status, r.status) << static_cast<int>(r.kind);
        EXPECT_EQ(map_error(r.kind).type, r.type) << static_cast<int>(r.kind);
        EXPECT_FALSE(map_error(r.kind).code.empty());
    }
    EXPECT_EQ(map_error(api_error_kind::rate_limited).code, "rate_limit_exceeded");
    EXPECT_EQ(map_error(map_backend_error(backend_error::overloaded)).status, 429);
    EXPECT_EQ(map_error(map_backend_error(backend_error::not_ready)).status, 503);
    EXPECT_EQ(map_error(map_backend_error(backend_error::invalid_request)).status, 400);
    EXPECT_EQ(map_error(map_backend_error(backend_error::timeout)).status, 504);
    EXPECT_EQ(map_error(map_backend_error(backend_error::internal)).status, 500);
}

TEST(OpenaiProtocol, ErrorBodyIsExactlyTheOpenaiShape) {
    const json with_param = json::parse(error_body({api_error_kind::invalid_value, "max_tokens: bad", "max_tokens"}));
    EXPECT_EQ(with_param, json::parse(R"({"error":{"message":"max_tokens: bad","type":"invalid_request_error",
                                                   "param":"max_tokens","code":"invalid_value"}})"));
    const std::string text = error_body({api_error_kind::internal, "boom", ""});
    EXPECT_EQ(text, R"({"error":{"message":"boom","type":"internal_error","param":null,"code":"internal_error"}})");
}

// -- responses ----------------------------------------------------------------------------------

TEST(OpenaiProtocol, CompletionObjects) {
    const response_meta chat{api_route::chat_completions, response_id(api_route::chat_completions, "r1"), 42, "tiny"};
    const json body = json::parse(completion_body(chat, "hé", "length", {5, 3}));
    EXPECT_EQ(body["id"], "chatcmpl-r1");
    EXPECT_EQ(body["object"], "chat.completion");
    EXPECT_EQ(body["created"], 42);
    EXPECT_EQ(body["model"], "tiny");
    ASSERT_EQ(body["choices"].size(), 1u);
    EXPECT_EQ(body["choices"][0]["index"], 0);
    EXPECT_EQ(body["choices"][0]["message"], json::parse(R"({"role":"assistant","content":"hé"})"));
    EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(body["usage"], json::parse(R"({"prompt_tokens":5,"completion_tokens":3,"total_tokens":8})"));
    const response_meta completion{api_route::completions, response_id(api_route::completions, "r2"), 1, "tiny"};
    const json text = json::parse(completion_body(completion, "abc", "stop", {1, 1}));
    EXPECT_EQ(text["id"], "cmpl-r2");
    EXPECT_EQ(text["object"], "text_completion");
    EXPECT_EQ(text["choices"][0]["text"], "abc");
    EXPECT_EQ(text["choices"][0]["finish_reason"], "stop");
}

TEST(OpenaiProtocol, SseChunks) {
    const response_meta chat{api_route::chat_completions, "chatcmpl-x", 7, "tiny"};
    auto payload = [](const std::string& event) {
        EXPECT_TRUE(event.starts_with("data: ") && event.ends_with("\n\n")) << event;
        return json::parse(event.substr(6, event.size() - 8));
    };
    const json first = payload(sse_first_chunk(chat, false));
    EXPECT_EQ(first["object"], "chat.completion.chunk");
    EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
    EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
    EXPECT_FALSE(first.contains("usage"));
    const json text = payload(sse_text_chunk(chat, "hi", true));
    EXPECT_EQ(text["choices"][0]["delta"], json::parse(R"({"content":"hi"})"));
    EXPECT_TRUE(text["usage"].is_null());
    const json finish = payload(sse_finish_chunk(chat, "stop", false));
    EXPECT_EQ(finish["choices"][0]["delta"], json::object());
    EXPECT_EQ(finish["choices"][0]["finish_reason"], "stop");
    const json usage = payload(sse_usage_chunk(chat, {4, 6}));
    EXPECT_EQ(usage["choices"], json::array());
    EXPECT_EQ(usage["usage"]["total_tokens"], 10);
    EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
    const response_meta completion{api_route::completions, "cmpl-x", 7, "tiny"};
    EXPECT_EQ(sse_first_chunk(completion, false), "");  // completions have no role chunk
    EXPECT_EQ(payload(sse_text_chunk(completion, "ab", false))["choices"][0]["text"], "ab");
    EXPECT_EQ(payload(sse_finish_chunk(completion, "length", false))["choices"][0]["text"], "");
    const json models = json::parse(models_body("tiny", 3, 4096));
    EXPECT_EQ(models["object"], "list");
    EXPECT_EQ(models["data"][0]["id"], "tiny");
    EXPECT_EQ(models["data"][0]["object"], "model");
}

// -- prompts ------------------------------------------------------------------------------------

class PromptBuilder : public ::testing::Test {
protected:
    const model::tokenizer& tok() const { return *fixture::shared_tiny_model().tokenizer; }
    prompt_limits limits(int64_t context = 4096) const {
        return {"longcat_flash", context, fixture::shared_tiny_model().config().vocab_size, 256, 16};
    }
};

TEST_F(PromptBuilder, ChatUsesTheLongcatFormatAndBos) {
    normalized_request request;
    request.messages = {{"system", "S"}, {"user", "q0"}, {"assistant", "r0"}, {"user", "q1"}};
    request.max_tokens = 4;
    auto built = build_prompt(request, tok(), limits());
    ASSERT_TRUE(built.has_value()) << built.error().message;
    // The format of longcat-flash.md §6, written out.
    const std::vector<int32_t> expected =
        tok().encode("SYSTEM:S [Round 0] USER:q0 ASSISTANT:r0</longcat_s> [Round 1] USER:q1 ASSISTANT:", true);
    EXPECT_EQ(built->ids, expected);
    ASSERT_FALSE(expected.empty());
    EXPECT_EQ(expected.front(), tok().bos_id());
    EXPECT_EQ(built->max_tokens, 4);
    request.messages = {{"user", "Hi"}};
    EXPECT_EQ(build_prompt(request, tok(), limits())->ids, fixture::chat_prompt_ids("Hi"));
}

TEST_F(PromptBuilder, DefaultMaxTokens) {
    normalized_request chat;
    chat.messages = {{"user", "Hi"}};
    const auto prompt_tokens = static_cast<int64_t>(fixture::chat_prompt_ids("Hi").size());
    EXPECT_EQ(build_prompt(chat, tok(), limits())->max_tokens, 256);  // the limit
    EXPECT_EQ(build_prompt(chat, tok(), limits(prompt_tokens + 10))->max_tokens, 10);  // the context left
    normalized_request completion;
    completion.route = api_route::completions;
    completion.prompt_text = "Once";
    EXPECT_EQ(build_prompt(completion, tok(), limits())->max_tokens, 16);
    EXPECT_EQ(build_prompt(completion, tok(), limits())->ids, tok().encode("Once", true));
}

TEST_F(PromptBuilder, Errors) {
    normalized_request bad_order;
    bad_order.messages = {{"assistant", "x"}};
    auto error = build_prompt(bad_order, tok(), limits());
    ASSERT_FALSE(error.has_value());
    EXPECT_EQ(error.error().kind, api_error_kind::invalid_value);
    EXPECT_EQ(error.error().param, "messages");
    EXPECT_NE(error.error().message.find("expected a user message"), std::string::npos) << error.error().message;

    normalized_request ids;
    ids.route = api_route::completions;
    ids.prompt_is_ids = true;
    ids.prompt_ids = {1, 5000};
    error = build_prompt(ids, tok(), limits());
    ASSERT_FALSE(error.has_value());
    EXPECT_EQ(error.error().param, "prompt");
    EXPECT_NE(error.error().message.find("prompt[1]: token id 5000"), std::string::npos) << error.error().message;

    normalized_request too_long;
    too_long.route = api_route::completions;
    too_long.prompt_is_ids = true;
    too_long.prompt_ids.assign(60, 7);
    too_long.max_tokens = 8;
    error = build_prompt(too_long, tok(), limits(64));
    ASSERT_FALSE(error.has_value());
    EXPECT_EQ(error.error().kind, api_error_kind::context_length_exceeded);
    EXPECT_EQ(error.error().param, "prompt");
    for (const std::string needle : {"context length is 64", "has 60 tokens", "max_tokens is 8"})
        EXPECT_NE(error.error().message.find(needle), std::string::npos) << error.error().message;
    too_long.max_tokens = 4;  // exactly fits
    EXPECT_TRUE(build_prompt(too_long, tok(), limits(64)).has_value());
    too_long.prompt_ids.assign(64, 7);  // no room at all, even for the default
    too_long.max_tokens.reset();
    EXPECT_FALSE(build_prompt(too_long, tok(), limits(64)).has_value());
}

}  // namespace
}  // namespace longcat::gateway
