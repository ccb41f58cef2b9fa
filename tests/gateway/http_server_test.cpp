// actors/gateway/http_server: a real server on 127.0.0.1 (ephemeral port) over the router and
// the real engine backend, read by real clients (libcurl; raw sockets for clients that stall or
// leave). Every route; greedy outputs equal to the engine's own generate(); streaming and not;
// usage; stop strings never leaking; the bad-input battery (status, OpenAI error shape, param)
// while a concurrent stream stays unharmed; client disconnect cancelling the backend request in
// every state; deadlines; API keys; X-Request-Id; keep-alive; draining; 429 from the router.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/gateway/engine_backend.hpp"
#include "actors/gateway/gateway_metrics.hpp"
#include "actors/gateway/http_server.hpp"
#include "actors/gateway/router.hpp"
#include "tests/gateway/gateway_fixture.hpp"

namespace longcat::gateway {
namespace {

using json = nlohmann::json;
using fixture::http_call;
using fixture::http_reply;
using fixture::raw_client;
using fixture::sse_events;
using namespace std::chrono_literals;

struct server_setup {
    std::chrono::milliseconds step_delay{0};
    int64_t max_running = 4;
    int64_t queue_bound = 16;
    std::vector<std::string> api_keys;
    std::chrono::milliseconds request_deadline{60'000};
    int64_t context_length = 0;  // 0 = the model's
};

server_setup setup(const std::function<void(server_setup&)>& change) {
    server_setup out;
    change(out);
    return out;
}

class HttpServer : public ::testing::Test {
protected:
    void start(const server_setup& setup = {}) {
        engine_backend_options engine_opts;
        engine_opts.max_running = 8;
        engine_opts.step_delay = setup.step_delay;
        backend_ = std::make_shared<engine_backend>(fixture::make_engine(), engine_opts);
        router_config router_opts;
        router_opts.max_running_per_backend = setup.max_running;
        router_opts.queue_bound = setup.queue_bound;
        router_opts.poll_interval = 10ms;
        router_ = std::make_shared<router>(std::vector<std::shared_ptr<generation_backend>>{backend_}, router_opts,
                                           make_router_metrics(registry_));
        http_server_options opts;
        opts.io_threads = 2;
        opts.max_body_bytes = 64 * 1024;
        opts.header_deadline = 1000ms;
        opts.body_deadline = 500ms;
        opts.request_deadline = setup.request_deadline;
        opts.api_keys = setup.api_keys;
        opts.retry_after_s = 2;
        opts.served_model_name = "tiny";
        const model::model_config& config = fixture::shared_tiny_model().config();
        opts.prompt = {config.model_type, setup.context_length > 0 ? setup.context_length : config.max_position_embeddings,
                       config.vocab_size, 512, 16};
        opts.model_created = 1700000000;
        server_ = std::make_unique<http_server>(opts, router_, fixture::shared_tiny_model().tokenizer,
                                                make_gateway_metrics(registry_), [this](std::string_view line) {
                                                    std::lock_guard lock(log_mutex_);
                                                    log_.emplace_back(line);
                                                });
    }
    void TearDown() override {
        if (std::getenv("GATEWAY_TEST_LOG")) {  // the server's log lines, when debugging a test
            for (const std::string& line : log_) std::fprintf(stderr, "%s\n", line.c_str());
        }
        server_.reset();
        router_.reset();
        backend_.reset();
    }
    std::string url(const std::string& path) const { return server_->url() + path; }
    bool backend_clean() const {
        const auto stats = backend_->statistics();
        return stats.live_sequences == 0 && stats.free_pages == stats.total_pages && server_->in_flight() == 0;
    }
    bool log_contains(const std::string& needle) {
        std::lock_guard lock(log_mutex_);
        for (const std::string& line : log_)
            if (line.find(needle) != std::string::npos) return true;
        return false;
    }

    metrics::metrics_registry registry_;
    std::shared_ptr<engine_backend> backend_;
    std::shared_ptr<router> router_;
    std::unique_ptr<http_server> server_;
    std::mutex log_mutex_;
    std::vector<std::string> log_;
};

std::string chat_request(const std::string& user, int64_t max_tokens, const std::string& extra = "") {
    json body = {{"model", "tiny"},
                 {"messages", json::array({{{"role", "user"}, {"content", user}}})},
                 {"max_tokens", max_tokens},
                 {"temperature", 0}};
    std::string text = body.dump();
    if (!extra.empty()) text = text.substr(0, text.size() - 1) + "," + extra + "}";
    return text;
}

std::string raw_post(const std::string& path, const std::string& body, const std::string& headers = "") {
    return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n" + headers + "\r\n" + body;
}

// The OpenAI error shape, the status, the param, and the request id in the message.
void expect_error(const http_reply& reply, long status, const std::string& type,
                  const std::optional<std::string>& param, const std::string& needle) {
    ASSERT_EQ(reply.code, CURLE_OK);
    EXPECT_EQ(reply.status, status) << reply.body;
    const json body = json::parse(reply.body, nullptr, false);
    ASSERT_TRUE(body.is_object() && body.size() == 1 && body.contains("error")) << reply.body;
    const json& error = body["error"];
    ASSERT_EQ(error.size(), 4u) << reply.body;
    EXPECT_EQ(error["type"], type) << reply.body;
    EXPECT_TRUE(error["code"].is_string()) << reply.body;
    if (param) EXPECT_EQ(error["param"], *param) << reply.body;
    else EXPECT_TRUE(error["param"].is_null()) << reply.body;
    const std::string message = error["message"];
    EXPECT_NE(message.find(needle), std::string::npos) << "missing `" << needle << "` in " << message;
    ASSERT_TRUE(reply.headers.contains("x-request-id"));
    EXPECT_NE(message.find(reply.headers.at("x-request-id")), std::string::npos) << message;
}

// Concatenated text deltas, the finish reason and the usage of an SSE body.
struct stream_result {
    std::string text;
    std::string finish_reason;
    json usage;
    bool done = false;          // ended with [DONE]
    bool role_first = false;    // chat: the first chunk carries the role
    std::optional<json> error;  // an error event
};

stream_result read_stream(const std::string& body, bool chat) {
    stream_result out;
    const std::vector<std::string> events = sse_events(body);
    for (size_t event_idx = 0; event_idx < events.size(); ++event_idx) {
        if (events[event_idx] == "[DONE]") {
            out.done = event_idx + 1 == events.size();
            break;
        }
        const json chunk = json::parse(events[event_idx]);
        if (chunk.contains("error")) {
            out.error = chunk["error"];
            continue;
        }
        if (chunk.contains("usage") && !chunk["usage"].is_null()) out.usage = chunk["usage"];
        if (chunk["choices"].empty()) continue;
        const json& choice = chunk["choices"][0];
        if (chat) {
            if (event_idx == 0) out.role_first = choice["delta"].value("role", "") == "assistant";
            if (choice["delta"].contains("content")) out.text += choice["delta"]["content"].get<std::string>();
        } else {
            out.text += choice["text"].get<std::string>();
        }
        if (!choice["finish_reason"].is_null()) out.finish_reason = choice["finish_reason"];
    }
    return out;
}

std::string finish_reason_of(const std::vector<int32_t>& reference) {
    return reference.back() == fixture::shared_tiny_model().config().eos_token_id ? "stop" : "length";
}

// -- routes -------------------------------------------------------------------------------------

TEST_F(HttpServer, RoutesAndRequestIds) {
    start();
    const http_reply health = http_call("GET", url("/health"));
    EXPECT_EQ(health.status, 200);
    EXPECT_EQ(json::parse(health.body)["status"], "ok");
    ASSERT_TRUE(health.headers.contains("x-request-id"));
    EXPECT_EQ(health.headers.at("x-request-id").size(), 24u);
    EXPECT_EQ(http_call("GET", url("/ready")).status, 200);
    const json models = json::parse(http_call("GET", url("/v1/models")).body);
    EXPECT_EQ(models["data"][0]["id"], "tiny");
    EXPECT_EQ(models["data"][0]["max_model_len"], fixture::shared_tiny_model().config().max_position_embeddings);

    expect_error(http_call("GET", url("/v2/nothing")), 404, "not_found_error", std::nullopt, "no route GET /v2/nothing");
    const http_reply wrong_method = http_call("POST", url("/health"), "{}");
    expect_error(wrong_method, 405, "invalid_request_error", std::nullopt, "not allowed");
    EXPECT_EQ(wrong_method.headers.at("allow"), "GET");
    const http_reply get_chat = http_call("GET", url("/v1/chat/completions"));
    expect_error(get_chat, 405, "invalid_request_error", std::nullopt, "allowed: POST");
    EXPECT_EQ(get_chat.headers.at("allow"), "POST");

    const http_reply honoured = http_call("GET", url("/health"), "", {"X-Request-Id: my-trace_42"});
    EXPECT_EQ(honoured.headers.at("x-request-id"), "my-trace_42");
    const http_reply chat = http_call("POST", url("/v1/chat/completions"), chat_request("Hi", 2), {"X-Request-Id: abc-1"});
    EXPECT_EQ(chat.status, 200);
    EXPECT_EQ(json::parse(chat.body)["id"], "chatcmpl-abc-1");
    EXPECT_TRUE(log_contains("request abc-1: POST /v1/chat/completions 200"));
    expect_error(http_call("GET", url("/health"), "", {"X-Request-Id: " + std::string(129, 'x')}), 400,
                 "invalid_request_error", "X-Request-Id", "X-Request-Id must be");
    expect_error(http_call("GET", url("/health"), "", {"X-Request-Id: has space"}), 400, "invalid_request_error",
                 "X-Request-Id", "printable");
}

// -- generation ---------------------------------------------------------------------------------

TEST_F(HttpServer, ChatGreedyEqualsTheEngine) {
    start();
    for (const std::string user : {"Hello there", "What is the license of this file?"}) {
        const std::vector<int32_t> prompt = fixture::chat_prompt_ids(user);
        const std::vector<int32_t> reference = fixture::reference_generate(prompt, 24);
        const http_reply reply = http_call("POST", url("/v1/chat/completions"), chat_request(user, 24));
        ASSERT_EQ(reply.status, 200) << reply.body;
        EXPECT_EQ(reply.headers.at("content-type"), "application/json");
        const json body = json::parse(reply.body);
        EXPECT_EQ(body["object"], "chat.completion");
        EXPECT_EQ(body["model"], "tiny");
        EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
        EXPECT_EQ(body["choices"][0]["message"]["content"], fixture::decode(reference)) << user;
        EXPECT_EQ(body["choices"][0]["finish_reason"], finish_reason_of(reference));
        EXPECT_EQ(body["usage"]["prompt_tokens"], prompt.size());
        EXPECT_EQ(body["usage"]["completion_tokens"], reference.size());
        EXPECT_EQ(body["usage"]["total_tokens"], prompt.size() + reference.size());
        EXPECT_EQ(body["id"], "chatcmpl-" + reply.headers.at("x-request-id"));
    }
}

TEST_F(HttpServer, StreamingEqualsNonStreaming) {
    start();
    const std::vector<int32_t> prompt = fixture::chat_prompt_ids("Tell me a story");
    const std::vector<int32_t> reference = fixture::reference_generate(prompt, 20);
    const http_reply chat = http_call("POST", url("/v1/chat/completions"),
                                      chat_request("Tell me a story", 20, R"("stream":true)"));
    ASSERT_EQ(chat.status, 200) << chat.body;
    EXPECT_EQ(chat.headers.at("content-type"), "text/event-stream");
    EXPECT_EQ(chat.headers.at("transfer-encoding"), "chunked");
    const stream_result streamed = read_stream(chat.body, true);
    EXPECT_TRUE(streamed.role_first);
    EXPECT_TRUE(streamed.done);
    EXPECT_EQ(streamed.text, fixture::decode(reference));
    EXPECT_EQ(streamed.finish_reason, finish_reason_of(reference));
    EXPECT_TRUE(streamed.usage.is_null());  // not asked for
    for (const std::string& event : sse_events(chat.body)) {
        if (event != "[DONE]") {
            EXPECT_FALSE(json::parse(event).contains("usage"));
        }
    }

    // Completions from token ids, with usage: the same tokens as the engine.
    const std::vector<int32_t> ids = {fixture::shared_tiny_model().tokenizer->bos_id(), 300, 301, 302, 57};
    const std::vector<int32_t> ids_reference = fixture::reference_generate(ids, 15);
    const json request = {{"model", "tiny"}, {"prompt", ids}, {"max_tokens", 15}, {"temperature", 0},
                          {"stream", true}, {"stream_options", {{"include_usage", true}}}};
    const http_reply completion = http_call("POST", url("/v1/completions"), request.dump());
    ASSERT_EQ(completion.status, 200) << completion.body;
    const stream_result text = read_stream(completion.body, false);
    EXPECT_EQ(text.text, fixture::decode(ids_reference));
    EXPECT_EQ(text.usage["prompt_tokens"], ids.size());
    EXPECT_EQ(text.usage["completion_tokens"], ids_reference.size());
    EXPECT_EQ(text.usage["total_tokens"], ids.size() + ids_reference.size());
    const std::vector<std::string> events = sse_events(completion.body);
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(json::parse(events[events.size() - 2])["choices"], json::array());  // the usage chunk
    EXPECT_TRUE(json::parse(events[0])["usage"].is_null());                     // "usage": null before it

    json plain = request;
    plain.erase("stream");
    plain.erase("stream_options");
    const json body = json::parse(http_call("POST", url("/v1/completions"), plain.dump()).body);
    EXPECT_EQ(body["object"], "text_completion");
    EXPECT_EQ(body["choices"][0]["text"], text.text);
}

TEST_F(HttpServer, SeededSamplingEqualsTheEngine) {
    start();
    const std::vector<int32_t> prompt = fixture::chat_prompt_ids("Sample something");
    const std::vector<int32_t> reference = fixture::reference_generate(prompt, 16, {0.9f, 0.95f, 40, 1234});
    json request = json::parse(chat_request("Sample something", 16));
    request["temperature"] = 0.9;
    request["top_p"] = 0.95;
    request["top_k"] = 40;
    request["seed"] = 1234;
    const json body = json::parse(http_call("POST", url("/v1/chat/completions"), request.dump()).body);
    EXPECT_EQ(body["choices"][0]["message"]["content"], fixture::decode(reference));
}

TEST_F(HttpServer, StopStringsNeverLeak) {
    start();
    const std::string user = "Write something long";
    const std::vector<int32_t> reference = fixture::reference_generate(fixture::chat_prompt_ids(user), 40);
    const std::string full = fixture::decode(reference);
    ASSERT_GT(full.size(), 20u);
    // A stop string from the first half of the text, on character boundaries.
    size_t begin = full.size() / 3, len = 3;
    while (begin > 0 && (static_cast<unsigned char>(full[begin]) & 0xC0) == 0x80) --begin;
    while (begin + len < full.size() && (static_cast<unsigned char>(full[begin + len]) & 0xC0) == 0x80) ++len;
    const std::string stop = full.substr(begin, len);
    const std::string expected = full.substr(0, full.find(stop));
    const int64_t cancelled_before = backend_->statistics().cancelled;

    const json stop_json = json::array({stop, "never-appears-in-the-output"});
    const std::string extra = "\"stop\":" + stop_json.dump();
    const json body = json::parse(http_call("POST", url("/v1/chat/completions"), chat_request(user, 40, extra)).body);
    EXPECT_EQ(body["choices"][0]["message"]["content"], expected) << "stop '" << stop << "'";
    EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
    EXPECT_LT(body["usage"]["completion_tokens"].get<size_t>(), reference.size());

    const http_reply stream = http_call("POST", url("/v1/chat/completions"),
                                        chat_request(user, 40, extra + R"(,"stream":true)"));
    const stream_result streamed = read_stream(stream.body, true);
    EXPECT_EQ(streamed.text, expected);
    EXPECT_EQ(streamed.finish_reason, "stop");
    EXPECT_TRUE(streamed.done);
    // Each delta on its own: none carries a piece of the stop string past the cut.
    std::string so_far;
    for (const std::string& event : sse_events(stream.body)) {
        if (event == "[DONE]") break;
        const json chunk = json::parse(event);
        if (chunk["choices"].empty() || !chunk["choices"][0]["delta"].contains("content")) continue;
        so_far += chunk["choices"][0]["delta"]["content"].get<std::string>();
        EXPECT_TRUE(expected.starts_with(so_far)) << so_far;
    }
    // The stop match cancelled the backend requests, which freed their pages.
    EXPECT_TRUE(fixture::eventually([&] { return backend_clean(); }));
    EXPECT_EQ(backend_->statistics().cancelled, cancelled_before + 2);
}

// -- bad input ----------------------------------------------------------------------------------

TEST_F(HttpServer, BadInputBatteryWhileAStreamRuns) {
    start(setup([](server_setup& s) { s.step_delay = 15ms; }));
    // A stream that runs through the whole battery.
    const std::vector<int32_t> prompt = fixture::chat_prompt_ids("Keep going");
    const std::vector<int32_t> reference = fixture::reference_generate(prompt, 60);
    http_reply stream;
    std::thread streamer([&] {
        stream = http_call("POST", url("/v1/chat/completions"), chat_request("Keep going", 60, R"("stream":true)"));
    });
    ASSERT_TRUE(fixture::eventually([&] { return server_->in_flight() == 1; }));

    const std::string chat = "/v1/chat/completions";
    const std::string completions = "/v1/completions";
    expect_error(http_call("POST", url(chat), "{\"model\": \"tiny\", \"messages\": ["), 400, "invalid_request_error",
                 std::nullopt, "not valid JSON");
    expect_error(http_call("POST", url(chat), chat_request("x", 4).replace(chat_request("x", 4).find("\"max_tokens\":4"), 14,
                                                                           "\"max_tokens\":\"4\"")),
                 400, "invalid_request_error", "max_tokens", "must be an integer");
    expect_error(http_call("POST", url(chat), chat_request("x", -3)), 400, "invalid_request_error", "max_tokens", ">= 1");
    expect_error(http_call("POST", url(chat), chat_request("x", 1000000)), 400, "invalid_request_error", "max_tokens",
                 "<= 512");
    expect_error(http_call("POST", url(chat), R"({"model":"tiny","messages":[]})"), 400, "invalid_request_error",
                 "messages", "must not be empty");
    const json long_prompt = {{"model", "tiny"}, {"prompt", std::vector<int32_t>(4100, 65)}, {"max_tokens", 4}};
    expect_error(http_call("POST", url(completions), long_prompt.dump()), 400, "invalid_request_error", "prompt",
                 "maximum context length is 4096");
    expect_error(http_call("POST", url(chat), R"({"model":"gpt-4o","messages":[{"role":"user","content":"x"}]})"), 404,
                 "not_found_error", "model", "'gpt-4o' does not exist");
    expect_error(http_call("POST", url(chat), chat_request("x", 4, R"("tools":[{"type":"function"}])")), 400,
                 "invalid_request_error", "tools", "unsupported parameter 'tools'");
    expect_error(http_call("POST", url(chat), chat_request("x", 4, R"("logit_bias":{"3":1})")), 400,
                 "invalid_request_error", "logit_bias", "not implemented");
    expect_error(http_call("POST", url(chat), std::string(100 * 1024, ' ')), 413, "invalid_request_error", std::nullopt,
                 "larger than the limit of 65536 bytes");
    expect_error(http_call("POST", url(chat), chat_request("x", 4, R"("messages":[{"role":"assistant","content":"a"}])")),
                 400, "invalid_request_error", "messages", "expected a user message");

    // A body that never finishes: 408 within the body deadline (500 ms) + slack.
    {
        raw_client client(server_->port());
        ASSERT_TRUE(client.connected());
        const auto sent = clock::now();
        ASSERT_TRUE(client.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mod"));
        const std::string reply = client.receive_until([](const std::string& r) { return r.find("}}") != std::string::npos; }, 5s);
        const auto elapsed = clock::now() - sent;
        EXPECT_TRUE(reply.starts_with("HTTP/1.1 408")) << reply;
        EXPECT_NE(reply.find("\"code\":\"request_timeout\""), std::string::npos) << reply;
        EXPECT_NE(reply.find("not complete within 500 ms"), std::string::npos) << reply;
        EXPECT_GE(elapsed, 450ms);
        EXPECT_LT(elapsed, 2000ms);
    }
    // A header that never finishes: 408 too; an idle connection is just closed.
    {
        raw_client partial(server_->port());
        ASSERT_TRUE(partial.send("GET /hea"));
        const std::string reply = partial.receive_until([](const std::string& r) { return r.find("}}") != std::string::npos; }, 5s);
        EXPECT_TRUE(reply.starts_with("HTTP/1.1 408")) << reply;
        raw_client idle(server_->port());
        const std::string nothing = idle.receive_until([](const std::string&) { return false; }, 3s);
        EXPECT_TRUE(idle.peer_closed());
        EXPECT_TRUE(nothing.empty()) << nothing;
    }
    // Garbage instead of HTTP.
    {
        raw_client garbage(server_->port());
        ASSERT_TRUE(garbage.send("\x01\x02 not http\r\n\r\n"));
        const std::string reply = garbage.receive_until([](const std::string& r) { return r.find("}}") != std::string::npos; }, 5s);
        EXPECT_TRUE(reply.starts_with("HTTP/1.1 400")) << reply;
    }

    EXPECT_EQ(http_call("GET", url("/health")).status, 200);  // still up
    streamer.join();
    ASSERT_EQ(stream.status, 200);
    const stream_result streamed = read_stream(stream.body, true);
    EXPECT_EQ(streamed.text, fixture::decode(reference));  // unharmed
    EXPECT_EQ(streamed.finish_reason, finish_reason_of(reference));
    EXPECT_TRUE(streamed.done);
    const std::string exposition = registry_.expose();
    EXPECT_NE(exposition.find(R"(longcat_gateway_requests_total{outcome="4xx",route="chat_completions"} 11)"),
              std::string::npos)
        << exposition;
    EXPECT_TRUE(fixture::eventually([&] { return backend_clean(); }));
}

TEST_F(HttpServer, ApiKeys) {
    start(setup([](server_setup& s) { s.api_keys = {"key-one", "key-two"}; }));
    expect_error(http_call("GET", url("/v1/models")), 401, "authentication_error", std::nullopt, "API key");
    expect_error(http_call("GET", url("/v1/models"), "", {"Authorization: Bearer key-three"}), 401,
                 "authentication_error", std::nullopt, "API key");
    expect_error(http_call("POST", url("/v1/chat/completions"), chat_request("x", 2), {"Authorization: key-one"}), 401,
                 "authentication_error", std::nullopt, "API key");
    EXPECT_EQ(http_call("GET", url("/v1/models"), "", {"Authorization: Bearer key-two"}).status, 200);
    EXPECT_EQ(http_call("POST", url("/v1/chat/completions"), chat_request("x", 2), {"Authorization: Bearer key-one"}).status,
              200);
    EXPECT_EQ(http_call("GET", url("/health")).status, 200);  // probes need no key
    EXPECT_EQ(http_call("GET", url("/ready")).status, 200);
}

// -- client gone ----------------------------------------------------------------------------------

TEST_F(HttpServer, ClientDisconnectCancelsTheBackendRequest) {
    start(setup([](server_setup& s) {
        s.step_delay = 20ms;
        s.max_running = 1;
    }));
    // Streaming, while decoding.
    {
        raw_client client(server_->port());
        ASSERT_TRUE(client.send(raw_post("/v1/chat/completions", chat_request("Go on", 400, R"("stream":true)"))));
        const std::string got = client.receive_until(
            [](const std::string& r) { return r.find("\"content\":\"") != std::string::npos && r.find("role") != std::string::npos; }, 10s);
        ASSERT_NE(got.find("text/event-stream"), std::string::npos) << got;
    }  // closed here
    EXPECT_TRUE(fixture::eventually([&] { return backend_->statistics().cancelled == 1 && backend_clean(); }));
    // Non-streaming, waiting for the whole result.
    {
        raw_client client(server_->port());
        ASSERT_TRUE(client.send(raw_post("/v1/completions", R"({"model":"tiny","prompt":"abc","max_tokens":400})")));
        ASSERT_TRUE(fixture::eventually([&] { return backend_->statistics().live_sequences == 1; }));
    }
    EXPECT_TRUE(fixture::eventually([&] { return backend_->statistics().cancelled == 2 && backend_clean(); }));
    // Queued in the router behind another request (max_running 1), before any prefill.
    backend_->pause();
    http_reply first;
    std::thread holder([&] { first = http_call("POST", url("/v1/completions"), R"({"model":"tiny","prompt":"x","max_tokens":3})"); });
    ASSERT_TRUE(fixture::eventually([&] { return router_->load().running == 1; }));
    {
        raw_client client(server_->port());
        ASSERT_TRUE(client.send(raw_post("/v1/chat/completions", chat_request("queued", 5, R"("stream":true)"))));
        ASSERT_TRUE(fixture::eventually([&] { return router_->load().queued == 1; }));
    }
    EXPECT_TRUE(fixture::eventually([&] { return router_->load().queued == 0; }));
    backend_->resume();
    holder.join();
    EXPECT_EQ(first.status, 200);
    EXPECT_TRUE(fixture::eventually([&] { return backend_clean(); }));
    EXPECT_EQ(backend_->statistics().submitted, 3);  // the queued one never reached the backend
    EXPECT_TRUE(log_contains("client gone"));
    EXPECT_NE(registry_.expose().find(R"(outcome="disconnect",route="chat_completions"} 2)"), std::string::npos)
        << registry_.expose();
}

// More than the server buffers (64 KiB) pipelined behind a running request: the server keeps
// reading (and drops it), so a client that leaves is noticed well before the request would have
// ended (400 tokens at 20 ms a step: 8 s), also after pipelining more than the socket buffers
// hold (its FIN would otherwise wait behind the unsent bytes); a client that stays gets the
// running request's response, marked Connection: close, and then the connection closes.
TEST_F(HttpServer, PipeliningPastTheLimitIsDroppedAndAClientThatLeavesIsStillNoticed) {
    start(setup([](server_setup& s) { s.step_delay = 20ms; }));
    const auto pipelined = [](size_t bytes) {
        std::string p;
        while (p.size() < bytes) p += "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        return p;
    };
    const std::string long_request =
        raw_post("/v1/completions", R"({"model":"tiny","prompt":"abc","max_tokens":400})");
    int cancelled = 0;
    for (const size_t bytes : {size_t{80} << 10, size_t{8} << 20}) {
        auto client = std::make_unique<raw_client>(server_->port());
        client->set_send_timeout(5s);  // a server that stopped reading fails the send, not hangs it
        ASSERT_TRUE(client->send(long_request + pipelined(bytes))) << bytes << " bytes pipelined";
        ASSERT_TRUE(
            fixture::eventually([&] { return backend_->statistics().live_sequences == 1; }));
        EXPECT_EQ(backend_->statistics().cancelled, cancelled);
        client.reset();  // closes the socket
        ++cancelled;
        EXPECT_TRUE(fixture::eventually(
            [&] { return backend_->statistics().cancelled == cancelled && backend_clean(); }, 3s))
            << bytes << " bytes pipelined";
    }
    EXPECT_TRUE(log_contains("bytes pipelined behind a running request"));
    EXPECT_TRUE(log_contains("client gone"));
    // A client that stays: one response, Connection: close, then the server closes.
    raw_client stays(server_->port());
    stays.set_send_timeout(5s);
    ASSERT_TRUE(stays.send(
        raw_post("/v1/completions", R"({"model":"tiny","prompt":"abc","max_tokens":20})") +
        pipelined(size_t{100} << 10)));
    const std::string got = stays.receive_until([](const std::string&) { return false; }, 10s);
    EXPECT_TRUE(stays.peer_closed()) << got;
    EXPECT_EQ(got.find("HTTP/1.1 200"), 0u) << got;
    EXPECT_EQ(got.find("HTTP/1.1", 1), std::string::npos) << "a pipelined request was served:\n"
                                                          << got;
    EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
    EXPECT_NE(got.find("\"usage\""), std::string::npos) << got;
    // The server carries on.
    EXPECT_EQ(http_call("GET", url("/health")).status, 200);
}

TEST_F(HttpServer, RequestDeadline) {
    start(setup([](server_setup& s) {
        s.step_delay = 30ms;
        s.request_deadline = 400ms;
    }));
    const auto sent = clock::now();
    expect_error(http_call("POST", url("/v1/chat/completions"), chat_request("slow", 300)), 504, "timeout_error",
                 std::nullopt, "deadline");
    EXPECT_LT(clock::now() - sent, 3s);
    const http_reply stream = http_call("POST", url("/v1/chat/completions"), chat_request("slow", 300, R"("stream":true)"));
    EXPECT_EQ(stream.status, 200);
    const stream_result streamed = read_stream(stream.body, true);
    ASSERT_TRUE(streamed.error.has_value()) << stream.body;
    EXPECT_EQ((*streamed.error)["type"], "timeout_error");
    EXPECT_TRUE(streamed.done);
    EXPECT_TRUE(fixture::eventually([&] { return backend_clean(); }));
}

// -- connections ----------------------------------------------------------------------------------

TEST_F(HttpServer, KeepAliveAndPipelining) {
    start();
    raw_client client(server_->port());
    const std::string chat = raw_post("/v1/chat/completions", chat_request("Hi", 3));
    ASSERT_TRUE(client.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + chat + "GET /ready HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string replies = client.receive_until(
        [](const std::string& r) { return r.find("\"status\":\"ready\"") != std::string::npos; }, 10s);
    size_t count = 0;
    for (size_t pos = replies.find("HTTP/1.1 200"); pos != std::string::npos; pos = replies.find("HTTP/1.1 200", pos + 1))
        ++count;
    EXPECT_EQ(count, 3u) << replies;
    EXPECT_NE(replies.find("chat.completion"), std::string::npos);
    // Still open: a fourth request on the same connection is answered (checking peer_closed()
    // alone could not fail: the receive above stops at the third reply).
    const auto count_ok = [](const std::string& r) {
        size_t n = 0;
        for (size_t pos = r.find("HTTP/1.1 200"); pos != std::string::npos;
             pos = r.find("HTTP/1.1 200", pos + 1))
            ++n;
        return n;
    };
    ASSERT_TRUE(client.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
    const std::string all =
        client.receive_until([&](const std::string& r) { return count_ok(r) >= 4; }, 10s);
    EXPECT_EQ(count_ok(all), 4u) << "the connection was not kept alive:\n" << all;
    // Connection: close is honoured.
    raw_client once(server_->port());
    ASSERT_TRUE(once.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    once.receive_until([](const std::string&) { return false; }, 3s);
    EXPECT_TRUE(once.peer_closed());
    // Expect: 100-continue.
    const std::string body = chat_request("Hi", 2);
    raw_client expecting(server_->port());
    ASSERT_TRUE(expecting.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                               std::to_string(body.size()) + "\r\nExpect: 100-continue\r\n\r\n"));
    const std::string interim = expecting.receive_until([](const std::string& r) { return r.find("\r\n\r\n") != std::string::npos; }, 5s);
    EXPECT_TRUE(interim.starts_with("HTTP/1.1 100 Continue")) << interim;
    ASSERT_TRUE(expecting.send(body));
    const std::string final_reply = expecting.receive_until([](const std::string& r) { return r.find("usage") != std::string::npos; }, 10s);
    EXPECT_NE(final_reply.find("HTTP/1.1 200"), std::string::npos) << final_reply;
}

// -- draining and overload ------------------------------------------------------------------------

TEST_F(HttpServer, DrainingRefusesNewRequestsAndFinishesInFlight) {
    start(setup([](server_setup& s) { s.step_delay = 15ms; }));
    const std::vector<int32_t> reference = fixture::reference_generate(fixture::chat_prompt_ids("Drain me"), 40);
    http_reply stream;
    std::thread streamer([&] {
        stream = http_call("POST", url("/v1/chat/completions"), chat_request("Drain me", 40, R"("stream":true)"));
    });
    ASSERT_TRUE(fixture::eventually([&] { return backend_->statistics().live_sequences == 1; }));
    server_->start_draining();
    EXPECT_TRUE(server_->draining());
    expect_error(http_call("POST", url("/v1/chat/completions"), chat_request("new", 4)), 503, "service_unavailable_error",
                 std::nullopt, "draining");
    const http_reply ready = http_call("GET", url("/ready"));
    EXPECT_EQ(ready.status, 503);
    EXPECT_EQ(json::parse(ready.body)["reason"], "draining");
    EXPECT_EQ(http_call("GET", url("/health")).status, 200);
    EXPECT_TRUE(server_->wait_drained(clock::now() + 20s));
    EXPECT_EQ(server_->in_flight(), 0);  // before stop(), which clears the table anyway
    server_->stop();  // as the service does next: a drained response is already all written
    streamer.join();
    const stream_result streamed = read_stream(stream.body, true);
    EXPECT_EQ(streamed.text, fixture::decode(reference));
    EXPECT_TRUE(streamed.done);
}

TEST_F(HttpServer, DrainGraceEndsWithCancel) {
    start();
    backend_->pause();
    http_reply stuck;
    std::thread waiter([&] { stuck = http_call("POST", url("/v1/chat/completions"), chat_request("stuck", 4)); });
    ASSERT_TRUE(fixture::eventually([&] { return server_->in_flight() == 1; }));
    server_->start_draining();
    EXPECT_FALSE(server_->wait_drained(clock::now() + 200ms));
    server_->cancel_all();
    EXPECT_TRUE(server_->wait_drained(clock::now() + 5s));
    waiter.join();
    expect_error(stuck, 503, "service_unavailable_error", std::nullopt, "drain grace period ended");
    EXPECT_TRUE(backend_clean());
}

TEST_F(HttpServer, RouterQueueFullGives429WithRetryAfter) {
    start(setup([](server_setup& s) {
        s.max_running = 1;
        s.queue_bound = 1;
    }));
    backend_->pause();
    http_reply first, second;
    std::thread one([&] { first = http_call("POST", url("/v1/chat/completions"), chat_request("one", 3)); });
    ASSERT_TRUE(fixture::eventually([&] { return router_->load().running == 1; }));
    std::thread two([&] { second = http_call("POST", url("/v1/chat/completions"), chat_request("two", 3, R"("stream":true)")); });
    ASSERT_TRUE(fixture::eventually([&] { return router_->load().queued == 1; }));
    const http_reply refused = http_call("POST", url("/v1/chat/completions"), chat_request("three", 3, R"("stream":true)"));
    expect_error(refused, 429, "rate_limit_error", std::nullopt, "queue_bound 1");
    EXPECT_EQ(refused.headers.at("retry-after"), "2");
    EXPECT_EQ(json::parse(refused.body)["error"]["code"], "rate_limit_exceeded");
    backend_->resume();
    one.join();
    two.join();
    EXPECT_EQ(first.status, 200);
    EXPECT_EQ(second.status, 200);
    EXPECT_TRUE(read_stream(second.body, true).done);
}

TEST_F(HttpServer, MetricsAreRecorded) {
    start();
    const auto reference = fixture::reference_generate(fixture::chat_prompt_ids("count me"), 5);
    ASSERT_EQ(http_call("POST", url("/v1/chat/completions"), chat_request("count me", 5)).status, 200);
    http_call("GET", url("/health"));
    // The client can read the whole response before the server's write handler has run and
    // let the request leave the in-flight set: the gauge reaches 0 just after, not before.
    ASSERT_TRUE(fixture::eventually([&] { return server_->in_flight() == 0; }));
    const std::string text = registry_.expose();
    for (const std::string& needle : std::vector<std::string>{
             R"(longcat_gateway_requests_total{outcome="2xx",route="chat_completions"} 1)",
          R"(longcat_gateway_requests_total{outcome="2xx",route="health"} 1)", "longcat_gateway_time_to_first_token_seconds_count 1",
          "longcat_gateway_request_seconds_count 1",
          "longcat_gateway_generated_tokens_total " + std::to_string(reference.size()),
          "longcat_gateway_requests_in_flight 0", "longcat_router_queue_depth 0"})
        EXPECT_NE(text.find(needle), std::string::npos) << needle << "\n" << text;
    EXPECT_NE(text.find("longcat_gateway_inter_token_seconds_count " + std::to_string(reference.size() - 1)),
              std::string::npos)
        << text;
}

}  // namespace
}  // namespace longcat::gateway
