// ops/bench/serve — a load generator for any OpenAI-compatible endpoint, in the manner of
// SGLang's bench_serving with its random dataset.
//   longcat_bench_serve --base-url http://HOST:PORT [--endpoint completions|chat] [--model NAME]
//       [--num-prompts N] [--random-input-len L] [--random-output-len L] [--random-range-ratio R]
//       [--request-rate R|inf] [--max-concurrency C] [--ignore-eos|--no-ignore-eos] [--seed S]
//       [--api-key K] [--tokenizer DIR] [--warmup N] [--timeout S] [--disable-stream]
//       [--threads T] [--json FILE]
// Sends --num-prompts requests (after --warmup uncounted ones) with Poisson arrivals at
// --request-rate, at most --max-concurrency in flight, over keep-alive HTTP/1.1 connections
// (Boost.Beast, a pool per I/O thread). Streams by default and timestamps every SSE chunk that
// carries content. Prints a table; writes JSON with --json. Definitions (README.md):
//   TTFT = first content chunk − send time; ITL = gaps between consecutive content chunks;
//   TPOT = (e2e − TTFT) / (output_tokens − 1); concurrency = Σ e2e / duration.
// Every wait has a deadline (connect, write, each read: --timeout per request, connect ≤ 10 s);
// a watchdog abandons the run if a request outlives its deadline by 30 s.
// Exit status: 0 when at least one request completed, 1 when none did, 2 on a usage error.
// clang-format off
#include <utility>  // NOTES: before any Asio header: Boost 1.74's awaitable.hpp needs std::exchange
// clang-format on

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "model/tokenizer.hpp"
#include "ops/bench/serve/sse.hpp"
#include "ops/bench/serve/stats.hpp"

namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;
using longcat::bench::distribution;

constexpr auto kConnectTimeout = 10s;       // connect deadline (never beyond the request's)
constexpr auto kWatchdogGrace = 30s;        // past the last request deadline: abandon the run
constexpr size_t kMaxBodyBytes = 8u << 20;  // non-SSE bodies kept (the rest is read and dropped)
constexpr size_t kMaxErrorsShown = 5;       // distinct error messages in the table
constexpr size_t kMaxErrorsKept = 20;       // distinct error messages in the JSON
constexpr size_t kMaxMessageChars = 300;    // an error message is cut to this length

// -- options --------------------------------------------------------------------------------

enum class endpoint_kind { completions, chat };

struct bench_options {
    std::string base_url;  // required: http://HOST[:PORT][/PREFIX]
    endpoint_kind endpoint = endpoint_kind::completions;
    std::string model;  // "" = the first id of GET /v1/models
    int64_t num_prompts = 1000;
    int64_t random_input_len = 1024;
    int64_t random_output_len = 1024;
    double random_range_ratio = 0.0;  // SGLang's default
    double request_rate = std::numeric_limits<double>::infinity();
    int64_t max_concurrency = 0;  // 0 = unlimited
    bool ignore_eos = true;
    uint64_t seed = 1;
    std::string api_key;        // "" = $OPENAI_API_KEY, if set
    std::string tokenizer_dir;  // "" = random-word prompts
    int64_t warmup = 1;
    double timeout_s = 600;
    bool stream = true;
    int64_t num_threads = 1;  // client I/O threads
    std::string json_out;     // "" = no JSON
};

const char* kUsage =
    "usage: longcat_bench_serve --base-url http://HOST:PORT [options]\n"
    "  --endpoint completions|chat     /v1/completions (default) or /v1/chat/completions\n"
    "  --model NAME                    default: the first id of GET /v1/models\n"
    "  --num-prompts N                 measured requests (default 1000)\n"
    "  --random-input-len L            prompt tokens (default 1024)\n"
    "  --random-output-len L           max_tokens of each request (default 1024)\n"
    "  --random-range-ratio R          lengths uniform in [max(1, floor(R*L)), L] (default 0)\n"
    "  --request-rate R                Poisson arrivals at R req/s; inf = all at once (default "
    "inf)\n"
    "  --max-concurrency C             at most C requests in flight (default unlimited)\n"
    "  --ignore-eos | --no-ignore-eos  send \"ignore_eos\": true (default on)\n"
    "  --seed S                        prompts, lengths and arrivals (default 1)\n"
    "  --api-key K                     Authorization: Bearer K (default $OPENAI_API_KEY)\n"
    "  --tokenizer DIR                 prompts of exactly L tokens from DIR/tokenizer.json\n"
    "  --warmup N                      requests sent first, not counted (default 1)\n"
    "  --timeout S                     deadline of each request, seconds (default 600)\n"
    "  --disable-stream                non-streaming requests (no TTFT, TPOT, ITL)\n"
    "  --threads T                     client I/O threads (default 1)\n"
    "  --json FILE                     write the results as JSON\n";

struct usage_error {
    std::string message;
};

int64_t parse_int(const std::string& name, const std::string& text, int64_t min_value) {
    size_t used = 0;
    int64_t value = 0;
    try {
        value = std::stoll(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != text.size() || text.empty())
        throw usage_error{name + ": not an integer: '" + text + "'"};
    if (value < min_value) throw usage_error{name + " must be >= " + std::to_string(min_value)};
    return value;
}

double parse_double(const std::string& name, const std::string& text) {
    if (text == "inf" || text == "Inf" || text == "INF")
        return std::numeric_limits<double>::infinity();
    size_t used = 0;
    double value = 0;
    try {
        value = std::stod(text, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != text.size() || text.empty() || std::isnan(value))
        throw usage_error{name + ": not a number: '" + text + "'"};
    return value;
}

bench_options parse_options(int argc, char** argv) {
    bench_options o;
    for (int arg_idx = 1; arg_idx < argc; ++arg_idx) {
        std::string name = argv[arg_idx];
        std::optional<std::string> inline_value;
        if (const size_t eq = name.find('='); name.starts_with("--") && eq != std::string::npos) {
            inline_value = name.substr(eq + 1);
            name = name.substr(0, eq);
        }
        auto value = [&]() -> std::string {
            if (inline_value) return *inline_value;
            if (arg_idx + 1 >= argc) throw usage_error{name + " needs a value"};
            return argv[++arg_idx];
        };
        if (name == "--help" || name == "-h") {
            std::fputs(kUsage, stdout);
            std::exit(0);
        } else if (name == "--base-url") {
            o.base_url = value();
        } else if (name == "--endpoint") {
            const std::string e = value();
            if (e == "completions")
                o.endpoint = endpoint_kind::completions;
            else if (e == "chat")
                o.endpoint = endpoint_kind::chat;
            else
                throw usage_error{"--endpoint must be completions or chat, not '" + e + "'"};
        } else if (name == "--model") {
            o.model = value();
        } else if (name == "--num-prompts") {
            o.num_prompts = parse_int(name, value(), 1);
        } else if (name == "--random-input-len") {
            o.random_input_len = parse_int(name, value(), 1);
        } else if (name == "--random-output-len") {
            o.random_output_len = parse_int(name, value(), 1);
        } else if (name == "--random-range-ratio") {
            o.random_range_ratio = parse_double(name, value());
            if (!(o.random_range_ratio >= 0 && o.random_range_ratio <= 1))
                throw usage_error{"--random-range-ratio must be in [0, 1]"};
        } else if (name == "--request-rate") {
            o.request_rate = parse_double(name, value());
            if (!(o.request_rate > 0)) throw usage_error{"--request-rate must be > 0 (or inf)"};
        } else if (name == "--max-concurrency") {
            o.max_concurrency = parse_int(name, value(), 1);
        } else if (name == "--ignore-eos") {
            o.ignore_eos = true;
        } else if (name == "--no-ignore-eos") {
            o.ignore_eos = false;
        } else if (name == "--seed") {
            o.seed = static_cast<uint64_t>(parse_int(name, value(), 0));
        } else if (name == "--api-key") {
            o.api_key = value();
        } else if (name == "--tokenizer") {
            o.tokenizer_dir = value();
        } else if (name == "--warmup") {
            o.warmup = parse_int(name, value(), 0);
        } else if (name == "--timeout") {
            o.timeout_s = parse_double(name, value());
            if (!(o.timeout_s > 0) || std::isinf(o.timeout_s))
                throw usage_error{"--timeout must be a positive number"};
        } else if (name == "--disable-stream") {
            o.stream = false;
        } else if (name == "--threads") {
            o.num_threads = parse_int(name, value(), 1);
            if (o.num_threads > 64) throw usage_error{"--threads must be <= 64"};
        } else if (name == "--json") {
            o.json_out = value();
        } else {
            throw usage_error{"unknown option '" + name + "'"};
        }
        if (inline_value &&
            (name == "--ignore-eos" || name == "--no-ignore-eos" || name == "--disable-stream"))
            throw usage_error{name + " takes no value"};
    }
    if (o.base_url.empty()) throw usage_error{"--base-url is required"};
    if (o.api_key.empty()) {
        if (const char* env = std::getenv("OPENAI_API_KEY")) o.api_key = env;
    }
    return o;
}

std::string_view to_string(endpoint_kind e) {
    switch (e) {
        case endpoint_kind::completions:
            return "completions";
        case endpoint_kind::chat:
            return "chat";
    }
    return "?";
}

// -- the server address -----------------------------------------------------------------------

struct server_url {
    std::string host;
    std::string port;
    std::string host_header;  // "host[:port]" as given
    std::string prefix;       // a path before /v1, without a trailing '/'
};

server_url parse_base_url(const std::string& url) {
    constexpr std::string_view kScheme = "http://";
    if (url.starts_with("https://"))
        throw usage_error{"--base-url: https is not supported (plain http only)"};
    if (!url.starts_with(kScheme))
        throw usage_error{"--base-url must start with http://, got '" + url + "'"};
    std::string rest = url.substr(kScheme.size());
    server_url s;
    const size_t slash = rest.find('/');
    s.host_header = rest.substr(0, slash);
    if (slash != std::string::npos) s.prefix = rest.substr(slash);
    while (s.prefix.ends_with('/')) s.prefix.pop_back();
    std::string authority = s.host_header;
    if (authority.starts_with('[')) {  // [v6]:port
        const size_t close = authority.find(']');
        if (close == std::string::npos)
            throw usage_error{"--base-url: bad IPv6 host in '" + url + "'"};
        s.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size() && authority[close + 1] == ':')
            s.port = authority.substr(close + 2);
    } else if (const size_t colon = authority.rfind(':'); colon != std::string::npos) {
        s.host = authority.substr(0, colon);
        s.port = authority.substr(colon + 1);
    } else {
        s.host = authority;
    }
    if (s.port.empty()) s.port = "80";
    if (s.host.empty()) throw usage_error{"--base-url: no host in '" + url + "'"};
    return s;
}

// -- prompts ------------------------------------------------------------------------------------

enum class token_source { usage, tokenizer, words, chunks, unknown };

std::string_view to_string(token_source s) {
    switch (s) {
        case token_source::usage:
            return "usage";
        case token_source::tokenizer:
            return "tokenizer";
        case token_source::words:
            return "words";
        case token_source::chunks:
            return "chunks";
        case token_source::unknown:
            return "unknown";
    }
    return "?";
}

struct prompt_spec {
    std::string text;
    int64_t input_len = 0;   // tokens by the tokenizer, or words without one
    int64_t target_len = 0;  // the drawn length
    int64_t output_len = 0;  // max_tokens
    token_source input_source = token_source::words;
};

// Common short English words: without --tokenizer a prompt is L of them, about L tokens for a
// BPE vocabulary; the real count then comes from the server's usage.
constexpr std::string_view kWords[] = {
    "the",    "of",   "and",   "to",   "in",    "is",    "it",     "that",  "was",  "for",
    "on",     "are",  "with",  "as",   "his",   "they",  "be",     "at",    "one",  "have",
    "this",   "from", "or",    "had",  "by",    "word",  "but",    "what",  "some", "we",
    "can",    "out",  "other", "were", "all",   "there", "when",   "up",    "use",  "your",
    "how",    "said", "an",    "each", "she",   "which", "do",     "their", "time", "if",
    "will",   "way",  "about", "many", "then",  "them",  "write",  "would", "like", "so",
    "these",  "her",  "long",  "make", "thing", "see",   "him",    "two",   "has",  "look",
    "more",   "day",  "could", "go",   "come",  "did",   "number", "sound", "no",   "most",
    "people", "my",   "over",  "know", "water", "than",  "call",   "first", "who",  "may",
    "down",   "side", "been",  "now",  "find",  "any"};

class prompt_builder {
  public:
    explicit prompt_builder(std::optional<longcat::model::tokenizer> tok)
        : tokenizer_(std::move(tok)) {
        if (!tokenizer_) return;
        std::vector<bool> added(static_cast<size_t>(tokenizer_->vocab_size()), false);
        for (const auto& a : tokenizer_->added_tokens())
            if (a.id >= 0 && a.id < tokenizer_->vocab_size())
                added[static_cast<size_t>(a.id)] = true;
        for (int32_t id = 0; id < tokenizer_->vocab_size(); ++id) {
            if (added[static_cast<size_t>(id)] || tokenizer_->is_special(id) ||
                !tokenizer_->id_to_token(id))
                continue;
            candidates_.push_back(id);
        }
        if (candidates_.empty()) throw std::runtime_error("the tokenizer has no ordinary tokens");
    }

    const std::optional<longcat::model::tokenizer>& tokenizer() const { return tokenizer_; }

    // A prompt of `input_len` tokens (with a tokenizer: random ordinary token ids decoded, then
    // re-encoded and trimmed or extended until the count matches, at most 8 rounds; without one:
    // `input_len` random words).
    prompt_spec make(int64_t input_len, int64_t output_len, std::mt19937_64& rng) const {
        prompt_spec p;
        p.target_len = input_len;
        p.output_len = output_len;
        if (!tokenizer_) {
            std::uniform_int_distribution<size_t> pick(0, std::size(kWords) - 1);
            for (int64_t word_idx = 0; word_idx < input_len; ++word_idx) {
                if (word_idx) p.text.push_back(' ');
                p.text.append(kWords[pick(rng)]);
            }
            p.input_len = input_len;
            p.input_source = token_source::words;
            return p;
        }
        std::uniform_int_distribution<size_t> pick(0, candidates_.size() - 1);
        std::vector<int32_t> ids;
        for (int64_t tok_idx = 0; tok_idx < input_len; ++tok_idx)
            ids.push_back(candidates_[pick(rng)]);
        p.text = tokenizer_->decode(ids, true);
        for (int round = 0; round < 8; ++round) {
            ids = tokenizer_->encode(p.text, false);
            if (static_cast<int64_t>(ids.size()) == input_len) break;
            if (static_cast<int64_t>(ids.size()) > input_len)
                ids.resize(static_cast<size_t>(input_len));
            while (static_cast<int64_t>(ids.size()) < input_len)
                ids.push_back(candidates_[pick(rng)]);
            p.text = tokenizer_->decode(ids, true);
        }
        p.input_len = static_cast<int64_t>(tokenizer_->encode(p.text, false).size());
        p.input_source = token_source::tokenizer;
        return p;
    }

  private:
    std::optional<longcat::model::tokenizer> tokenizer_;
    std::vector<int32_t> candidates_;  // ids that are neither special nor added tokens
};

// SGLang's random dataset: lengths uniform in [max(1, floor(r·L)), L].
std::vector<prompt_spec> make_prompts(const prompt_builder& builder, const bench_options& o,
                                      int64_t num_prompts, uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto draw = [&](int64_t len) {
        const int64_t low =
            std::max<int64_t>(1, static_cast<int64_t>(std::floor(o.random_range_ratio * len)));
        return std::uniform_int_distribution<int64_t>(std::min(low, len), len)(rng);
    };
    std::vector<prompt_spec> prompts;
    for (int64_t prompt_idx = 0; prompt_idx < num_prompts; ++prompt_idx) {
        const int64_t input_len = draw(o.random_input_len);
        const int64_t output_len = draw(o.random_output_len);
        prompts.push_back(builder.make(input_len, output_len, rng));
    }
    return prompts;
}

// Arrival offsets in seconds: the first at 0, then exponential gaps of mean 1/rate (Poisson
// arrivals); all 0 for an infinite rate.
std::vector<double> make_arrivals(int64_t num_requests, double rate, uint64_t seed) {
    std::vector<double> arrivals(static_cast<size_t>(num_requests), 0.0);
    if (std::isinf(rate)) return arrivals;
    std::mt19937_64 rng(seed);
    std::exponential_distribution<double> gap(rate);
    for (size_t idx = 1; idx < arrivals.size(); ++idx) arrivals[idx] = arrivals[idx - 1] + gap(rng);
    return arrivals;
}

// -- one request --------------------------------------------------------------------------------

struct request_result {
    bool finished = false;  // the request's coroutine ran to its end
    bool ok = false;
    int http_status = 0;  // 0: no HTTP response
    std::string error;
    clock_type::time_point start, end;
    std::vector<clock_type::time_point> content_times;  // arrival of each chunk with content
    std::optional<int64_t> usage_prompt_tokens, usage_completion_tokens;
    int64_t output_tokens = 0;
    token_source output_source = token_source::unknown;
    bool saw_done = false;  // "data: [DONE]" arrived
};

struct run_context {
    server_url server;
    tcp::resolver::results_type endpoints;
    std::string target;  // the request path, e.g. /v1/completions
    const bench_options* options = nullptr;
    std::string model;
    const longcat::model::tokenizer* tokenizer = nullptr;  // nullptr without --tokenizer
    clock_type::duration timeout{};
};

// `text` on one line, cut to at most `max_chars` bytes on a UTF-8 character boundary.
std::string cut(std::string_view text, size_t max_chars = kMaxMessageChars) {
    size_t keep = std::min(max_chars, text.size());
    while (keep < text.size() && keep > 0 &&
           (static_cast<unsigned char>(text[keep]) & 0xC0) == 0x80)
        --keep;
    std::string s(text.substr(0, keep));
    if (keep < text.size()) s += "...";
    for (char& c : s)
        if (c == '\n' || c == '\r') c = ' ';
    return s;
}

// The message of an OpenAI error object ({"error": {"message": ...}}, {"error": "..."},
// {"message": ...}, FastAPI's {"detail": ...}), else the text itself.
std::string error_message(std::string_view body) {
    const json j = json::parse(body, nullptr, false);
    if (j.is_object()) {
        for (const char* key : {"error", "message", "detail"}) {
            if (!j.contains(key)) continue;
            const json& v = j[key];
            if (v.is_string()) return cut(v.get<std::string>());
            if (v.is_object() && v.contains("message") && v["message"].is_string())
                return cut(v["message"].get<std::string>());
            return cut(v.dump());
        }
    }
    return cut(body.empty() ? std::string_view("(empty body)") : body);
}

std::string_view string_field(const json& object, const char* key) {
    if (!object.is_object()) return {};
    const auto it = object.find(key);
    if (it == object.end() || !it->is_string()) return {};
    return it->get_ref<const std::string&>();
}

// The generated text in one response or stream chunk: choices[0].text (completions),
// .delta.content / .delta.reasoning_content (chat stream), .message.content (chat).
std::string content_of(const json& j) {
    if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() ||
        j["choices"].empty())
        return {};
    const json& choice = j["choices"][0];
    std::string out(string_field(choice, "text"));
    for (const char* holder : {"delta", "message"}) {
        if (!choice.is_object() || !choice.contains(holder)) continue;
        out.append(string_field(choice[holder], "reasoning_content"));
        out.append(string_field(choice[holder], "content"));
    }
    return out;
}

void read_usage(const json& j, request_result& r) {
    if (!j.is_object() || !j.contains("usage") || !j["usage"].is_object()) return;
    const json& u = j["usage"];
    if (u.contains("prompt_tokens") && u["prompt_tokens"].is_number_integer())
        r.usage_prompt_tokens = u["prompt_tokens"].get<int64_t>();
    if (u.contains("completion_tokens") && u["completion_tokens"].is_number_integer())
        r.usage_completion_tokens = u["completion_tokens"].get<int64_t>();
}

std::string request_body(const run_context& ctx, const prompt_spec& prompt) {
    json body = {{"model", ctx.model},
                 {"max_tokens", prompt.output_len},
                 {"temperature", 0.0},
                 {"stream", ctx.options->stream}};
    if (ctx.options->endpoint == endpoint_kind::chat)
        body["messages"] = json::array({{{"role", "user"}, {"content", prompt.text}}});
    else
        body["prompt"] = prompt.text;
    if (ctx.options->stream) body["stream_options"] = {{"include_usage", true}};
    if (ctx.options->ignore_eos) body["ignore_eos"] = true;
    return body.dump();
}

void fail(request_result& r, const std::string& what, const beast::error_code& ec,
          double timeout_s) {
    r.ok = false;
    r.end = clock_type::now();
    if (ec == beast::error::timeout) {
        char buf[64];
        std::snprintf(buf, sizeof(buf), "timed out (--timeout %g s", timeout_s);
        r.error = what + ": " + buf;
        if (!r.content_times.empty())
            r.error += ", " + std::to_string(r.content_times.size()) + " content chunks so far";
        r.error += ")";
    } else {
        r.error = what + ": " + ec.message();
    }
}

enum class exchange_outcome {
    reusable,          // the response was read to its end on a keep-alive connection
    closed,            // the connection must not be reused
    stale_connection,  // a pooled connection failed before any response byte: retry on a new one
};

// Handles the events of one SSE stream: timestamps content, records usage and errors.
struct stream_reader {
    request_result& r;
    std::optional<std::string> error;

    void on_event(std::string_view data, clock_type::time_point now) {
        if (error) return;
        if (data == "[DONE]") {
            r.saw_done = true;
            return;
        }
        const json j = json::parse(data, nullptr, false);
        if (j.is_discarded()) {
            error = "malformed stream event: " + cut(data, 120);
            return;
        }
        if (j.is_object() && j.contains("error") && !j["error"].is_null()) {
            error = "error event in the stream: " + error_message(data);
            return;
        }
        read_usage(j, r);
        if (!content_of(j).empty()) r.content_times.push_back(now);
    }
};

// One request/response on `stream`. Timestamps are taken when a read returns.
net::awaitable<exchange_outcome> exchange(beast::tcp_stream& stream, const run_context& ctx,
                                          const prompt_spec& prompt,
                                          clock_type::time_point deadline, bool reused,
                                          request_result& r) {
    const double timeout_s = ctx.options->timeout_s;
    beast::error_code ec;
    http::request<http::string_body> req{http::verb::post, ctx.target, 11};
    req.set(http::field::host, ctx.server.host_header);
    req.set(http::field::user_agent, "longcat_bench_serve");
    req.set(http::field::content_type, "application/json");
    req.set(http::field::accept, ctx.options->stream ? "text/event-stream" : "application/json");
    if (!ctx.options->api_key.empty())
        req.set(http::field::authorization, "Bearer " + ctx.options->api_key);
    req.body() = request_body(ctx, prompt);
    req.prepare_payload();

    stream.expires_at(deadline);
    co_await http::async_write(stream, req, net::redirect_error(net::use_awaitable, ec));
    if (ec) {
        if (reused && ec != beast::error::timeout) co_return exchange_outcome::stale_connection;
        fail(r, "sending the request", ec, timeout_s);
        co_return exchange_outcome::closed;
    }
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    // NOTES: not boost::none: Boost 1.74 compares a Content-Length against an empty optional as
    // "greater" and fails every such body with error::body_limit.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    co_await http::async_read_header(stream, buffer, parser,
                                     net::redirect_error(net::use_awaitable, ec));
    if (ec) {
        if (reused && !parser.got_some() && ec != beast::error::timeout)
            co_return exchange_outcome::stale_connection;
        fail(r, "waiting for the response header", ec, timeout_s);
        co_return exchange_outcome::closed;
    }
    r.http_status = parser.get().result_int();
    std::string content_type(parser.get()[http::field::content_type]);
    std::transform(content_type.begin(), content_type.end(), content_type.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const bool is_sse = r.http_status == 200 && content_type.starts_with("text/event-stream");

    longcat::bench::sse_parser sse;
    stream_reader reader{r, std::nullopt};
    std::string body;
    std::array<char, 16384> chunk;
    while (!parser.is_done()) {
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        co_await http::async_read_some(stream, buffer, parser,
                                       net::redirect_error(net::use_awaitable, ec));
        if (ec == http::error::need_buffer) ec = {};
        const size_t got = chunk.size() - parser.get().body().size;
        const auto now = clock_type::now();
        if (is_sse) {
            sse.feed(std::string_view(chunk.data(), got),
                     [&](std::string_view data) { reader.on_event(data, now); });
            if (reader.error) {
                r.ok = false;
                r.end = now;
                r.error = *reader.error;
                co_return exchange_outcome::closed;
            }
        } else if (body.size() < kMaxBodyBytes) {
            body.append(chunk.data(), std::min(got, kMaxBodyBytes - body.size()));
        }
        if (ec) {
            fail(r, is_sse ? "reading the stream" : "reading the response body", ec, timeout_s);
            co_return exchange_outcome::closed;
        }
    }
    r.end = clock_type::now();
    const exchange_outcome outcome =
        parser.get().keep_alive() ? exchange_outcome::reusable : exchange_outcome::closed;

    if (r.http_status != 200) {
        r.ok = false;
        r.error = "HTTP " + std::to_string(r.http_status) + " " +
                  std::string(parser.get().reason()) + ": " + error_message(body);
        co_return outcome;
    }
    if (is_sse) {
        sse.finish([&](std::string_view data) { reader.on_event(data, r.end); });
        if (reader.error) {
            r.ok = false;
            r.error = *reader.error;
            co_return outcome;
        }
        r.ok = true;
        if (r.usage_completion_tokens) {
            r.output_tokens = *r.usage_completion_tokens;
            r.output_source = token_source::usage;
        } else {
            r.output_tokens = static_cast<int64_t>(r.content_times.size());
            r.output_source = token_source::chunks;
        }
        co_return outcome;
    }
    // A whole JSON response: --disable-stream, or a server that ignored "stream": true.
    const json j = json::parse(body, nullptr, false);
    if (!j.is_object()) {
        r.ok = false;
        r.error = "HTTP 200 with an unreadable body (content-type '" + content_type +
                  "'): " + cut(body, 120);
        co_return outcome;
    }
    if (j.contains("error") && !j["error"].is_null()) {
        r.ok = false;
        r.error = "HTTP 200 with an error: " + error_message(body);
        co_return outcome;
    }
    read_usage(j, r);
    r.ok = true;
    if (r.usage_completion_tokens) {
        r.output_tokens = *r.usage_completion_tokens;
        r.output_source = token_source::usage;
    } else if (ctx.tokenizer) {
        r.output_tokens = static_cast<int64_t>(ctx.tokenizer->encode(content_of(j), false).size());
        r.output_source = token_source::tokenizer;
    }
    co_return outcome;
}

// An I/O thread: its io_context and its pool of idle keep-alive connections (touched only by
// coroutines running on this io_context's one thread).
struct client_worker {
    net::io_context io;
    std::vector<std::unique_ptr<beast::tcp_stream>> idle;
};

net::awaitable<void> run_request(client_worker& worker, const run_context& ctx,
                                 const prompt_spec& prompt, request_result& r,
                                 std::function<void()> on_done) {
    r.start = clock_type::now();
    const auto deadline = r.start + ctx.timeout;
    try {
        bool fresh_only = false;
        for (int attempt = 0; attempt < 2; ++attempt) {
            std::unique_ptr<beast::tcp_stream> conn;
            const bool reused = !fresh_only && !worker.idle.empty();
            if (reused) {
                conn = std::move(worker.idle.back());
                worker.idle.pop_back();
            } else {
                conn = std::make_unique<beast::tcp_stream>(worker.io);
                conn->expires_at(std::min(deadline, clock_type::now() + kConnectTimeout));
                beast::error_code ec;
                co_await conn->async_connect(ctx.endpoints,
                                             net::redirect_error(net::use_awaitable, ec));
                if (ec) {
                    r.ok = false;
                    r.end = clock_type::now();
                    r.error =
                        "connecting to " + ctx.server.host_header + ": " +
                        (ec == beast::error::timeout ? std::string("timed out") : ec.message());
                    break;
                }
                conn->socket().set_option(tcp::no_delay(true), ec);
            }
            const exchange_outcome outcome =
                co_await exchange(*conn, ctx, prompt, deadline, reused, r);
            if (outcome == exchange_outcome::stale_connection) {
                worker.idle.clear();  // the server dropped idle connections: drop them all
                fresh_only = true;
                continue;
            }
            if (outcome == exchange_outcome::reusable) {
                conn->expires_never();
                worker.idle.push_back(std::move(conn));
            }
            break;
        }
    } catch (const std::exception& e) {
        r.ok = false;
        r.error = std::string("internal error: ") + e.what();
    }
    if (r.end == clock_type::time_point{}) r.end = clock_type::now();
    r.finished = true;
    on_done();
}

// -- the client: I/O threads and one phase of requests ------------------------------------------

class client_pool {
  public:
    explicit client_pool(int64_t num_threads) {
        for (int64_t thread_idx = 0; thread_idx < num_threads; ++thread_idx) {
            workers_.push_back(std::make_unique<client_worker>());
            guards_.emplace_back(net::make_work_guard(workers_.back()->io));
        }
        for (auto& w : workers_) threads_.emplace_back([io = &w->io] { io->run(); });
    }
    ~client_pool() { stop(); }
    client_pool(const client_pool&) = delete;
    client_pool& operator=(const client_pool&) = delete;

    client_worker& worker(size_t request_idx) { return *workers_[request_idx % workers_.size()]; }

    // Stops the threads; pending requests are abandoned (their coroutines are destroyed with
    // the io_contexts).
    void stop() {
        guards_.clear();
        for (auto& w : workers_) w->io.stop();
        for (auto& t : threads_)
            if (t.joinable()) t.join();
        threads_.clear();
    }

  private:
    std::vector<std::unique_ptr<client_worker>> workers_;
    std::vector<net::executor_work_guard<net::io_context::executor_type>> guards_;
    std::vector<std::thread> threads_;
};

struct phase_result {
    std::vector<request_result> results;
    clock_type::time_point start, end;  // first dispatch, last request end
    bool abandoned = false;             // the watchdog fired
};

// The in-flight requests of one phase: free slots (--max-concurrency) and completions.
class flight_tracker {
  public:
    explicit flight_tracker(int64_t max_in_flight) : max_in_flight_(max_in_flight) {}

    // Waits until fewer than max_in_flight requests are in flight (always true when unlimited),
    // then counts one more. False at `until`.
    bool acquire(clock_type::time_point until) {
        std::unique_lock lock(mutex_);
        const bool free = changed_.wait_until(
            lock, until, [&] { return max_in_flight_ <= 0 || num_in_flight_ < max_in_flight_; });
        if (free) ++num_in_flight_;
        return free;
    }
    // One request ended.
    void release(bool ok) {
        {
            std::lock_guard lock(mutex_);
            --num_in_flight_;
            ++num_done_;
            if (!ok) ++num_failed_;
        }
        changed_.notify_all();
    }
    // Waits until `num_dispatched` requests have ended; false at `until`.
    bool wait_done(size_t num_dispatched, clock_type::time_point until) {
        std::unique_lock lock(mutex_);
        return changed_.wait_until(lock, until, [&] { return num_done_ >= num_dispatched; });
    }
    std::pair<size_t, size_t> done_and_failed() {
        std::lock_guard lock(mutex_);
        return {num_done_, num_failed_};
    }

  private:
    const int64_t max_in_flight_;  // <= 0: unlimited
    std::mutex mutex_;
    std::condition_variable changed_;
    int64_t num_in_flight_ = 0;
    size_t num_done_ = 0;
    size_t num_failed_ = 0;
};

std::string seconds_text(double s) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.1f", s);
    return buf;
}

// Dispatches `prompts` at `arrivals` (seconds from the start), at most `max_concurrency` in
// flight (0 = unlimited; a request waits for a free slot, and its send time is when it got
// one), and waits for all of them. Never waits past the last deadline + kWatchdogGrace.
phase_result run_phase(client_pool& pool, const run_context& ctx,
                       const std::vector<prompt_spec>& prompts, const std::vector<double>& arrivals,
                       int64_t max_concurrency, const char* label) {
    phase_result out;
    out.results.resize(prompts.size());
    flight_tracker tracker(max_concurrency);
    out.start = clock_type::now();
    clock_type::time_point last_dispatch = out.start;
    auto watchdog = [&] { return last_dispatch + ctx.timeout + kWatchdogGrace; };
    size_t dispatched = 0;
    auto last_report = clock_type::now();
    auto report = [&] {
        if (clock_type::now() - last_report < 10s) return;
        last_report = clock_type::now();
        const auto [done, failed] = tracker.done_and_failed();
        std::fprintf(
            stderr, "  %s: %s s, %zu/%zu done (%zu failed), %zu in flight\n", label,
            seconds_text(std::chrono::duration<double>(clock_type::now() - out.start).count())
                .c_str(),
            done, prompts.size(), failed, dispatched - done);
    };
    for (size_t req_idx = 0; req_idx < prompts.size() && !out.abandoned; ++req_idx) {
        const auto due = out.start + std::chrono::duration_cast<clock_type::duration>(
                                         std::chrono::duration<double>(arrivals[req_idx]));
        while (clock_type::now() < due) {
            std::this_thread::sleep_until(std::min(due, clock_type::now() + 1s));
            report();
        }
        while (!tracker.acquire(std::min(watchdog(), clock_type::now() + 1s))) {
            report();
            if (clock_type::now() >= watchdog()) {
                out.abandoned = true;
                break;
            }
        }
        if (out.abandoned) break;
        last_dispatch = clock_type::now();
        request_result& r = out.results[req_idx];
        auto on_done = [&tracker, &r] { tracker.release(r.ok); };
        client_worker& worker = pool.worker(req_idx);
        net::co_spawn(worker.io, run_request(worker, ctx, prompts[req_idx], r, on_done),
                      net::detached);
        ++dispatched;
    }
    while (!out.abandoned &&
           !tracker.wait_done(dispatched, std::min(watchdog(), clock_type::now() + 1s))) {
        report();
        if (clock_type::now() >= watchdog()) out.abandoned = true;
    }
    if (out.abandoned) pool.stop();
    out.end = out.start;
    for (request_result& r : out.results) {
        if (!r.finished) {
            r.ok = false;
            r.error = r.start == clock_type::time_point{}
                          ? "not sent: the run was abandoned by the watchdog"
                          : "abandoned by the watchdog (past its deadline)";
            continue;
        }
        out.end = std::max(out.end, r.end);
    }
    return out;
}

// -- start-up: resolve the host, ask for the model -----------------------------------------------

struct get_result {
    int status = 0;
    std::string body;
    std::string error;
};

net::awaitable<void> resolve_host(net::io_context& io, const server_url& server,
                                  tcp::resolver::results_type& out, std::string& error) {
    auto resolver =
        std::make_shared<tcp::resolver>(io);  // shared: the timer's handler may outlive this frame
    net::steady_timer timer(io, kConnectTimeout);
    timer.async_wait([resolver](const beast::error_code& ec) {
        if (!ec) resolver->cancel();
    });
    beast::error_code ec;
    out = co_await resolver->async_resolve(server.host, server.port,
                                           net::redirect_error(net::use_awaitable, ec));
    timer.cancel();
    if (ec)
        error = "resolving " + server.host + ": " +
                (ec == net::error::operation_aborted ? "timed out" : ec.message());
}

net::awaitable<void> http_get(net::io_context& io, const run_context& ctx,
                              const std::string& target, clock_type::duration timeout,
                              get_result& out) {
    beast::tcp_stream stream(io);
    beast::error_code ec;
    const auto deadline = clock_type::now() + timeout;
    stream.expires_at(std::min(deadline, clock_type::now() + kConnectTimeout));
    co_await stream.async_connect(ctx.endpoints, net::redirect_error(net::use_awaitable, ec));
    if (ec) {
        out.error = "connecting to " + ctx.server.host_header + ": " + ec.message();
        co_return;
    }
    stream.expires_at(deadline);
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, ctx.server.host_header);
    req.set(http::field::user_agent, "longcat_bench_serve");
    if (!ctx.options->api_key.empty())
        req.set(http::field::authorization, "Bearer " + ctx.options->api_key);
    co_await http::async_write(stream, req, net::redirect_error(net::use_awaitable, ec));
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxBodyBytes);
    if (!ec)
        co_await http::async_read(stream, buffer, parser,
                                  net::redirect_error(net::use_awaitable, ec));
    if (ec) {
        out.error = "GET " + target + ": " +
                    (ec == beast::error::timeout ? std::string("timed out") : ec.message());
        co_return;
    }
    out.status = parser.get().result_int();
    out.body = parser.get().body();
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

// -- the report ---------------------------------------------------------------------------------

struct error_entry {
    std::string message;
    int http_status = 0;
    size_t count = 0;
};

struct bench_summary {
    double duration_s = 0;
    size_t num_completed = 0, num_failed = 0, num_rate_limited = 0;
    int64_t input_tokens = 0, output_tokens = 0;
    std::map<std::string, size_t> input_sources, output_sources;  // how the token counts were found
    double request_throughput = 0, input_throughput = 0, output_throughput = 0,
           total_throughput = 0;
    double concurrency = 0;
    distribution ttft_ms, tpot_ms, itl_ms, e2e_ms;
    std::vector<error_entry> errors;      // distinct messages, first seen first
    std::map<int, size_t> status_counts;  // failed requests by HTTP status (0: none)
    size_t num_without_done = 0;          // completed streams without "data: [DONE]"
};

double ms(clock_type::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

bench_summary summarize_phase(const phase_result& phase, const std::vector<prompt_spec>& prompts,
                              bool stream) {
    bench_summary s;
    s.duration_s = std::chrono::duration<double>(phase.end - phase.start).count();
    std::vector<double> ttft, tpot, itl, e2e;
    double sum_e2e_s = 0;
    for (size_t req_idx = 0; req_idx < phase.results.size(); ++req_idx) {
        const request_result& r = phase.results[req_idx];
        if (!r.ok) {
            ++s.num_failed;
            if (r.http_status == 429) ++s.num_rate_limited;
            ++s.status_counts[r.http_status];
            auto it = std::find_if(s.errors.begin(), s.errors.end(),
                                   [&](const error_entry& e) { return e.message == r.error; });
            if (it != s.errors.end())
                ++it->count;
            else if (s.errors.size() < kMaxErrorsKept)
                s.errors.push_back({r.error, r.http_status, 1});
            continue;
        }
        ++s.num_completed;
        const prompt_spec& p = prompts[req_idx];
        if (r.usage_prompt_tokens) {
            s.input_tokens += *r.usage_prompt_tokens;
            ++s.input_sources["usage"];
        } else {
            s.input_tokens += p.input_len;
            ++s.input_sources[std::string(to_string(p.input_source))];
        }
        s.output_tokens += r.output_tokens;
        ++s.output_sources[std::string(to_string(r.output_source))];
        if (stream && !r.saw_done) ++s.num_without_done;
        const double e2e_ms = ms(r.end - r.start);
        e2e.push_back(e2e_ms);
        sum_e2e_s += e2e_ms / 1000.0;
        if (!stream || r.content_times.empty()) continue;
        const double ttft_ms = ms(r.content_times.front() - r.start);
        ttft.push_back(ttft_ms);
        if (auto t = longcat::bench::time_per_output_token(e2e_ms, ttft_ms, r.output_tokens))
            tpot.push_back(*t);
        for (size_t chunk_idx = 1; chunk_idx < r.content_times.size(); ++chunk_idx)
            itl.push_back(ms(r.content_times[chunk_idx] - r.content_times[chunk_idx - 1]));
    }
    if (s.duration_s > 0) {
        s.request_throughput = static_cast<double>(s.num_completed) / s.duration_s;
        s.input_throughput = static_cast<double>(s.input_tokens) / s.duration_s;
        s.output_throughput = static_cast<double>(s.output_tokens) / s.duration_s;
        s.total_throughput = s.input_throughput + s.output_throughput;
        s.concurrency = sum_e2e_s / s.duration_s;
    }
    s.ttft_ms = longcat::bench::summarize(std::move(ttft));
    s.tpot_ms = longcat::bench::summarize(std::move(tpot));
    s.itl_ms = longcat::bench::summarize(std::move(itl));
    s.e2e_ms = longcat::bench::summarize(std::move(e2e));
    return s;
}

json to_json(const distribution& d) {
    if (d.count == 0) return {{"count", 0}};
    return {{"count", d.count}, {"mean", d.mean}, {"std", d.stddev}, {"min", d.min},
            {"p50", d.p50},     {"p90", d.p90},   {"p99", d.p99},    {"max", d.max}};
}

std::string sources_text(const std::map<std::string, size_t>& sources) {
    std::string out;
    for (const auto& [name, count] : sources)
        out += (out.empty() ? "" : ", ") + name + " " + std::to_string(count);
    return out.empty() ? "-" : out;
}

void print_summary(const bench_summary& s, bool stream) {
    std::printf("\n%-26s %12.3f s\n", "duration", s.duration_s);
    std::printf("%-26s %12zu\n", "completed requests", s.num_completed);
    std::printf("%-26s %12zu   (HTTP 429: %zu)\n", "failed requests", s.num_failed,
                s.num_rate_limited);
    std::printf("%-26s %12.3f req/s\n", "request throughput", s.request_throughput);
    std::printf("%-26s %12ld   (counted by: %s)\n", "input tokens",
                static_cast<long>(s.input_tokens), sources_text(s.input_sources).c_str());
    std::printf("%-26s %12ld   (counted by: %s)\n", "output tokens",
                static_cast<long>(s.output_tokens), sources_text(s.output_sources).c_str());
    std::printf("%-26s %12.1f tok/s\n", "input throughput", s.input_throughput);
    std::printf("%-26s %12.1f tok/s\n", "output throughput", s.output_throughput);
    std::printf("%-26s %12.1f tok/s\n", "total throughput", s.total_throughput);
    std::printf("%-26s %12.2f   (sum of e2e latencies / duration)\n", "concurrency", s.concurrency);
    if (s.num_without_done)
        std::printf("note: %zu completed streams ended without [DONE]\n", s.num_without_done);

    std::printf("\n%-12s %10s %10s %10s %10s %10s %8s\n", "metric (ms)", "mean", "p50", "p90",
                "p99", "max", "n");
    auto row = [](const char* name, const distribution& d, bool measured) {
        if (!measured || d.count == 0) {
            std::printf("%-12s %10s %10s %10s %10s %10s %8zu\n", name, "-", "-", "-", "-", "-",
                        d.count);
            return;
        }
        std::printf("%-12s %10.2f %10.2f %10.2f %10.2f %10.2f %8zu\n", name, d.mean, d.p50, d.p90,
                    d.p99, d.max, d.count);
    };
    row("TTFT", s.ttft_ms, stream);
    row("TPOT", s.tpot_ms, stream);
    row("ITL", s.itl_ms, stream);
    row("E2E latency", s.e2e_ms, true);
    if (!s.errors.empty()) {
        std::printf("\nerrors (first %zu distinct):\n", std::min(kMaxErrorsShown, s.errors.size()));
        for (size_t err_idx = 0; err_idx < std::min(kMaxErrorsShown, s.errors.size()); ++err_idx)
            std::printf("  %6zu x  %s\n", s.errors[err_idx].count,
                        s.errors[err_idx].message.c_str());
    }
}

// -- the machine and the command line -------------------------------------------------------------

std::string cpu_model() {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);) {
        if (!line.starts_with("model name")) continue;
        const size_t colon = line.find(':');
        if (colon == std::string::npos) break;
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(" \t"));
        return value;
    }
    return "unknown";
}

std::string utc_now() {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::string shell_quote(const std::string& word) {
    if (!word.empty() &&
        word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                               "-_./:=,+@%") == std::string::npos)
        return word;
    std::string out = "'";
    for (char c : word) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

// The command line with the value of --api-key masked.
std::string command_line(int argc, char** argv) {
    std::string out;
    bool mask_next = false;
    for (int arg_idx = 0; arg_idx < argc; ++arg_idx) {
        std::string word = argv[arg_idx];
        if (mask_next) word = "***";
        mask_next = word == "--api-key";
        if (word.starts_with("--api-key=")) word = "--api-key=***";
        out += (out.empty() ? "" : " ") + shell_quote(word);
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    bench_options opt;
    server_url server;
    try {
        opt = parse_options(argc, argv);
        server = parse_base_url(opt.base_url);
    } catch (const usage_error& e) {
        std::fprintf(stderr, "longcat_bench_serve: %s\n\n%s", e.message.c_str(), kUsage);
        return 2;
    }
    const std::string started_at = utc_now();

    std::optional<longcat::model::tokenizer> tok;
    if (!opt.tokenizer_dir.empty()) {
        try {
            tok = longcat::model::tokenizer::load_dir(opt.tokenizer_dir);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "longcat_bench_serve: --tokenizer %s: %s\n",
                         opt.tokenizer_dir.c_str(), e.what());
            return 2;
        }
    }
    const prompt_builder builder(std::move(tok));

    run_context ctx;
    ctx.server = server;
    ctx.options = &opt;
    ctx.target = server.prefix +
                 (opt.endpoint == endpoint_kind::chat ? "/v1/chat/completions" : "/v1/completions");
    ctx.tokenizer = builder.tokenizer() ? &*builder.tokenizer() : nullptr;
    ctx.timeout = std::chrono::duration_cast<clock_type::duration>(
        std::chrono::duration<double>(opt.timeout_s));

    // Start-up on this thread: resolve once, then GET /v1/models when no --model was given.
    {
        net::io_context io;
        std::string error;
        net::co_spawn(io, resolve_host(io, server, ctx.endpoints, error), net::detached);
        io.run();
        if (!error.empty()) {
            std::fprintf(stderr, "longcat_bench_serve: %s\n", error.c_str());
            return 1;
        }
        ctx.model = opt.model;
        if (ctx.model.empty()) {
            get_result got;
            io.restart();
            net::co_spawn(io,
                          http_get(io, ctx, server.prefix + "/v1/models",
                                   std::min<clock_type::duration>(ctx.timeout, 30s), got),
                          net::detached);
            io.run();
            if (got.error.empty() && got.status != 200)
                got.error = "GET /v1/models: HTTP " + std::to_string(got.status) + ": " +
                            error_message(got.body);
            if (got.error.empty()) {
                const json j = json::parse(got.body, nullptr, false);
                if (j.is_object() && j.contains("data") && j["data"].is_array() &&
                    !j["data"].empty())
                    ctx.model = std::string(string_field(j["data"][0], "id"));
                if (ctx.model.empty())
                    got.error = "GET /v1/models: no model id in " + cut(got.body, 200);
            }
            if (!got.error.empty()) {
                std::fprintf(stderr, "longcat_bench_serve: %s (give --model to skip this)\n",
                             got.error.c_str());
                return 1;
            }
        }
    }

    // Prompts: benchmark and warm-up prompts come from separate seeded streams, so the measured
    // prompts do not depend on --warmup.
    const auto t_prompts = clock_type::now();
    std::vector<prompt_spec> prompts, warmup_prompts;
    try {
        prompts = make_prompts(builder, opt, opt.num_prompts, opt.seed);
        warmup_prompts = make_prompts(builder, opt, opt.warmup, opt.seed ^ 0x5eedf00dcafe1234ull);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "longcat_bench_serve: building prompts: %s\n", e.what());
        return 1;
    }
    const std::vector<double> arrivals =
        make_arrivals(opt.num_prompts, opt.request_rate, opt.seed + 1);
    const double prompt_build_s =
        std::chrono::duration<double>(clock_type::now() - t_prompts).count();
    size_t num_exact = 0;
    int64_t max_deviation = 0, sum_input = 0, sum_output = 0;
    for (const prompt_spec& p : prompts) {
        num_exact += p.input_len == p.target_len;
        max_deviation = std::max<int64_t>(max_deviation, std::abs(p.input_len - p.target_len));
        sum_input += p.input_len;
        sum_output += p.output_len;
    }

    const std::string rate_text =
        std::isinf(opt.request_rate) ? "inf" : std::to_string(opt.request_rate);
    std::printf("longcat_bench_serve: POST http://%s%s (%s), model '%s'\n",
                server.host_header.c_str(), ctx.target.c_str(),
                opt.stream ? "streaming" : "not streaming", ctx.model.c_str());
    std::printf(
        "%ld prompts, input len %ld, output len %ld, range ratio %g (mean %.1f / %.1f), "
        "request rate %s, max concurrency %s, ignore_eos %s, seed %lu, %ld I/O thread%s\n",
        static_cast<long>(opt.num_prompts), static_cast<long>(opt.random_input_len),
        static_cast<long>(opt.random_output_len), opt.random_range_ratio,
        static_cast<double>(sum_input) / static_cast<double>(prompts.size()),
        static_cast<double>(sum_output) / static_cast<double>(prompts.size()), rate_text.c_str(),
        opt.max_concurrency ? std::to_string(opt.max_concurrency).c_str() : "unlimited",
        opt.ignore_eos ? "on" : "off", static_cast<unsigned long>(opt.seed),
        static_cast<long>(opt.num_threads), opt.num_threads == 1 ? "" : "s");
    if (ctx.tokenizer)
        std::printf(
            "prompts from %s/tokenizer.json: %zu of %zu exactly at the drawn length (max deviation "
            "%ld "
            "tokens), built in %.2f s\n",
            opt.tokenizer_dir.c_str(), num_exact, prompts.size(), static_cast<long>(max_deviation),
            prompt_build_s);
    else
        std::printf(
            "prompts of random words (no --tokenizer): input tokens are taken from the server's "
            "usage\n");
    std::fflush(stdout);

    client_pool pool(opt.num_threads);
    json warmup_json = {{"requests", opt.warmup}};
    if (opt.warmup > 0) {
        const phase_result warm = run_phase(
            pool, ctx, warmup_prompts, std::vector<double>(static_cast<size_t>(opt.warmup), 0.0),
            opt.max_concurrency, "warm-up");
        const bench_summary ws = summarize_phase(warm, warmup_prompts, opt.stream);
        std::printf("warm-up: %zu of %ld requests completed in %.2f s\n", ws.num_completed,
                    static_cast<long>(opt.warmup), ws.duration_s);
        for (const error_entry& e : ws.errors)
            std::printf("  warm-up error (%zu x): %s\n", e.count, e.message.c_str());
        warmup_json["completed"] = ws.num_completed;
        warmup_json["failed"] = ws.num_failed;
        warmup_json["duration_s"] = ws.duration_s;
        if (warm.abandoned) {
            std::fprintf(stderr,
                         "longcat_bench_serve: the warm-up was abandoned by the watchdog\n");
            return 1;
        }
    }
    std::fflush(stdout);

    const phase_result phase =
        run_phase(pool, ctx, prompts, arrivals, opt.max_concurrency, "benchmark");
    pool.stop();
    const bench_summary s = summarize_phase(phase, prompts, opt.stream);
    print_summary(s, opt.stream);
    if (phase.abandoned)
        std::printf("\nWARNING: the watchdog abandoned the run; the figures are incomplete\n");

    if (!opt.json_out.empty()) {
        json j;
        j["benchmark"] = "serve";
        j["time_utc"] = started_at;
        j["command_line"] = command_line(argc, argv);
        cpu_set_t affinity;
        CPU_ZERO(&affinity);
        const int nproc = ::sched_getaffinity(0, sizeof(affinity), &affinity) == 0
                              ? CPU_COUNT(&affinity)
                              : static_cast<int>(std::thread::hardware_concurrency());
        j["machine"] = {{"nproc", nproc},  // as nproc(1): the CPUs this process may run on
                        {"online_cpus", std::thread::hardware_concurrency()},
                        {"cpu_model", cpu_model()}};
        char host[256] = {};
        if (::gethostname(host, sizeof(host) - 1) == 0) j["machine"]["hostname"] = host;
        j["config"] = {
            {"base_url", opt.base_url},
            {"url", "http://" + server.host_header + ctx.target},
            {"endpoint", std::string(to_string(opt.endpoint))},
            {"model", ctx.model},
            {"num_prompts", opt.num_prompts},
            {"random_input_len", opt.random_input_len},
            {"random_output_len", opt.random_output_len},
            {"random_range_ratio", opt.random_range_ratio},
            {"request_rate", std::isinf(opt.request_rate) ? json("inf") : json(opt.request_rate)},
            {"max_concurrency", opt.max_concurrency ? json(opt.max_concurrency) : json(nullptr)},
            {"ignore_eos", opt.ignore_eos},
            {"seed", opt.seed},
            {"tokenizer", opt.tokenizer_dir.empty() ? json(nullptr) : json(opt.tokenizer_dir)},
            {"warmup", opt.warmup},
            {"timeout_s", opt.timeout_s},
            {"stream", opt.stream},
            {"threads", opt.num_threads}};
        j["prompts"] = {{"mean_input_len",
                         static_cast<double>(sum_input) / static_cast<double>(prompts.size())},
                        {"mean_output_len",
                         static_cast<double>(sum_output) / static_cast<double>(prompts.size())},
                        {"input_len_counted_by", ctx.tokenizer ? "tokenizer" : "words"}};
        if (ctx.tokenizer) {
            j["prompts"]["exact_length"] = num_exact;
            j["prompts"]["max_length_deviation"] = max_deviation;
        }
        j["warmup"] = warmup_json;
        j["results"] = {{"duration_s", s.duration_s},
                        {"completed", s.num_completed},
                        {"failed", s.num_failed},
                        {"rate_limited_429", s.num_rate_limited},
                        {"request_throughput", s.request_throughput},
                        {"total_input_tokens", s.input_tokens},
                        {"total_output_tokens", s.output_tokens},
                        {"input_tokens_counted_by", s.input_sources},
                        {"output_tokens_counted_by", s.output_sources},
                        {"input_throughput", s.input_throughput},
                        {"output_throughput", s.output_throughput},
                        {"total_throughput", s.total_throughput},
                        {"concurrency", s.concurrency},
                        {"streams_without_done", s.num_without_done},
                        {"abandoned_by_watchdog", phase.abandoned}};
        j["units"] = "latencies in ms; throughputs per second of duration";
        j["ttft_ms"] = opt.stream ? to_json(s.ttft_ms) : json(nullptr);
        j["tpot_ms"] = opt.stream ? to_json(s.tpot_ms) : json(nullptr);
        j["itl_ms"] = opt.stream ? to_json(s.itl_ms) : json(nullptr);
        j["e2e_latency_ms"] = to_json(s.e2e_ms);
        j["errors"] = json::array();
        for (const error_entry& e : s.errors)
            j["errors"].push_back(
                {{"message", e.message},
                 {"http_status", e.http_status ? json(e.http_status) : json(nullptr)},
                 {"count", e.count}});
        json by_status = json::object();
        for (const auto& [status, count] : s.status_counts)
            by_status[status ? std::to_string(status) : std::string("no_response")] = count;
        j["failed_by_http_status"] = by_status;
        std::ofstream out(opt.json_out);
        out << j.dump(2, ' ', false, json::error_handler_t::replace) << "\n";
        if (!out) {
            std::fprintf(stderr, "longcat_bench_serve: could not write %s\n", opt.json_out.c_str());
            return 1;
        }
        std::printf("\nwrote %s\n", opt.json_out.c_str());
    }
    return s.num_completed > 0 ? 0 : 1;
}
