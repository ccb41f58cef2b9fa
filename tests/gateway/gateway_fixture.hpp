// Shared by the gateway tests: the tiny model (written once per test binary with mkmodel),
// engines over it, the engine's own greedy generation as the independent reference, a real HTTP
// client (libcurl) and a raw-socket client for clients that misbehave (stall, leave).
#pragma once

#include <arpa/inet.h>
#include <curl/curl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "actors/gateway/backend.hpp"
#include "model/chat_template.hpp"
#include "model/engine.hpp"
#include "model/mkmodel.hpp"
#include "model/tokenizer.hpp"
#include "model/weights.hpp"
#include "tests/support/eventually.hpp"
#include "tests/support/temp_dir.hpp"

namespace longcat::gateway::fixture {

using namespace std::chrono_literals;

// -- the model ----------------------------------------------------------------------------------

struct tiny_model {
    std::filesystem::path dir;
    std::shared_ptr<const model::model_weights> weights;
    std::shared_ptr<const model::tokenizer> tokenizer;
    const model::model_config& config() const { return weights->config; }
};

inline const tiny_model& shared_tiny_model() {
    static longcat::testing::temp_dir dir;
    static const tiny_model model = [] {
        model::make_model({"tiny", dir.path(), 11, model::checkpoint_dtype::fp32});
        tiny_model out;
        out.dir = dir.path();
        out.weights = std::make_shared<const model::model_weights>(model::load_model_weights(dir.path()));
        out.tokenizer = std::make_shared<const model::tokenizer>(model::tokenizer::load_dir(dir.path()));
        return out;
    }();
    return model;
}

inline std::shared_ptr<model::engine> make_engine(int64_t num_pages = 1024) {
    model::engine_options opts;
    opts.kv.num_pages = num_pages;
    return std::make_shared<model::engine>(shared_tiny_model().weights, opts);
}

// The prompt `longcat generate --chat` builds for one user message.
inline std::vector<int32_t> chat_prompt_ids(const std::string& user) {
    const std::vector<model::chat_message> messages{{"user", user}};
    return shared_tiny_model().tokenizer->encode(model::render_chat(messages, true), true);
}

// The engine's own generation loop on a fresh engine: the reference.
inline std::vector<int32_t> reference_generate(const std::vector<int32_t>& prompt, int64_t max_tokens,
                                               const model::sampling_params& sampling = {0.0f, 1.0f, 0, 0}) {
    auto engine = make_engine(512);
    return engine->generate(prompt, max_tokens, sampling);
}

inline std::string decode(const std::vector<int32_t>& ids) {
    return shared_tiny_model().tokenizer->decode(ids, /*skip_special_tokens=*/true);
}

// -- HTTP (libcurl) -----------------------------------------------------------------------------

struct http_reply {
    CURLcode code = CURLE_OK;
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // lower-case names
};

namespace detail {
inline size_t append(char* data, size_t size, size_t count, void* out) {
    static_cast<std::string*>(out)->append(data, size * count);
    return size * count;
}
inline size_t header_line(char* data, size_t size, size_t count, void* out) {
    std::string line(data, size * count);
    const size_t colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        while (!value.empty() && (value.back() == '\r' || value.back() == '\n')) value.pop_back();
        (*static_cast<std::map<std::string, std::string>*>(out))[name] = value;
    }
    return size * count;
}
}  // namespace detail

inline http_reply http_call(const std::string& method, const std::string& url, const std::string& body = "",
                            const std::vector<std::string>& headers = {}, long timeout_ms = 60'000) {
    http_reply reply;
    CURL* curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &detail::append);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &detail::header_line);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply.headers);
    curl_slist* list = nullptr;
    for (const std::string& header : headers) list = curl_slist_append(list, header.c_str());
    if (method == "POST") {
        list = curl_slist_append(list, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    } else if (method != "GET") {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
    reply.code = curl_easy_perform(curl);
    if (reply.code == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_slist_free_all(list);
    curl_easy_cleanup(curl);
    return reply;
}

// The payloads of an SSE body's "data: " events, in order.
inline std::vector<std::string> sse_events(const std::string& body) {
    std::vector<std::string> events;
    size_t pos = 0;
    while (pos < body.size()) {
        const size_t end = body.find("\n\n", pos);
        if (end == std::string::npos) break;
        const std::string event = body.substr(pos, end - pos);
        if (event.starts_with("data: ")) events.push_back(event.substr(6));
        pos = end + 2;
    }
    return events;
}

// -- raw sockets --------------------------------------------------------------------------------

class raw_client {
public:
    explicit raw_client(uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    }
    ~raw_client() { close(); }
    raw_client(const raw_client&) = delete;
    raw_client& operator=(const raw_client&) = delete;

    bool connected() const { return connected_; }
    // A send that cannot finish within `timeout` (the peer stopped reading) then fails.
    void set_send_timeout(std::chrono::milliseconds timeout) {
        timeval tv{static_cast<time_t>(timeout.count() / 1000),
                   static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    bool send(const std::string& data) {
        return ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size());
    }
    // Reads until `done(received)` or the peer closes or the timeout passes; returns all bytes.
    std::string receive_until(const std::function<bool(const std::string&)>& done,
                              std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!done(received_) && !peer_closed_) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            pollfd pfd{fd_, POLLIN, 0};
            if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
            char buffer[4096];
            const ssize_t got = ::recv(fd_, buffer, sizeof(buffer), 0);
            if (got <= 0) peer_closed_ = true;
            else received_.append(buffer, static_cast<size_t>(got));
        }
        return received_;
    }
    bool peer_closed() const { return peer_closed_; }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }

private:
    int fd_ = -1;
    bool connected_ = false;
    bool peer_closed_ = false;
    std::string received_;
};

// -- backend events -----------------------------------------------------------------------------

// Collects one request's events (from any thread); checks they never run concurrently and
// that nothing follows the finished one.
struct event_collector {
    std::mutex mutex;
    std::condition_variable changed;
    std::vector<int32_t> tokens;
    int num_events = 0;
    int num_after_finished = 0;
    std::optional<generation_event> finished;
    std::atomic<int> active{0};
    std::atomic<bool> overlapped{false};  // two calls for this request at once

    static std::function<void(generation_event)> callback(const std::shared_ptr<event_collector>& self) {
        return [self](generation_event event) {
            if (self->active.fetch_add(1) != 0) self->overlapped = true;
            std::this_thread::yield();  // widen the window an overlap would fall into
            std::lock_guard lock(self->mutex);
            self->active.fetch_sub(1);
            ++self->num_events;
            if (self->finished) ++self->num_after_finished;
            self->tokens.insert(self->tokens.end(), event.tokens.begin(), event.tokens.end());
            if (event.finished) self->finished = std::move(event);
            self->changed.notify_all();
        };
    }
    bool wait_finished(std::chrono::milliseconds timeout = 30s) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, timeout, [&] { return finished.has_value(); });
    }
    bool wait_tokens(size_t count, std::chrono::milliseconds timeout = 30s) {
        std::unique_lock lock(mutex);
        return changed.wait_for(lock, timeout, [&] { return tokens.size() >= count || finished.has_value(); });
    }
    bool is_finished() {
        std::lock_guard lock(mutex);
        return finished.has_value();
    }
};

inline generation_request make_request(std::vector<int32_t> prompt, int64_t max_tokens,
                                       std::chrono::milliseconds deadline = 60s, const std::string& id = "t") {
    generation_request request;
    request.request_id = id;
    request.prompt = std::move(prompt);
    request.max_tokens = max_tokens;
    request.temperature = 0.0f;
    request.deadline = clock::now() + deadline;
    return request;
}

using longcat::testing::eventually;

}  // namespace longcat::gateway::fixture
