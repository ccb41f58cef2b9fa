// actors/gateway/engine_backend: the single-process engine as a generation_backend. Its tokens
// against the engine's own generate() (greedy and seeded sampling, alone and in a batch),
// finish reasons, cancel freeing the KV pages in every state, deadlines, bad requests named,
// the queue bound.
#include <gtest/gtest.h>

#include "tests/gateway/engine_backend.hpp"
#include "tests/gateway/gateway_fixture.hpp"

namespace longcat::gateway {
namespace {

using fixture::event_collector;
using fixture::make_request;
using namespace std::chrono_literals;

std::vector<int32_t> prompt_of(int salt, int num_tokens = 9) {
    std::vector<int32_t> ids{fixture::shared_tiny_model().tokenizer->bos_id()};
    for (int token_idx = 0; token_idx < num_tokens; ++token_idx) ids.push_back((salt * 131 + token_idx * 17) % 900 + 50);
    return ids;
}

engine_backend_options options(int64_t max_running, std::chrono::milliseconds step_delay = 0ms,
                               int64_t max_queued = 256) {
    engine_backend_options opts;
    opts.max_running = max_running;
    opts.max_queued = max_queued;
    opts.step_delay = step_delay;
    return opts;
}

bool all_pages_free(const engine_backend& backend) {
    const auto stats = backend.statistics();
    return stats.live_sequences == 0 && stats.free_pages == stats.total_pages;
}

TEST(EngineBackend, GreedyEqualsTheEngineAloneAndBatched) {
    engine_backend backend(fixture::make_engine(), options(4));
    // Alone.
    for (int salt = 0; salt < 2; ++salt) {
        auto events = std::make_shared<event_collector>();
        backend.submit(make_request(prompt_of(salt), 12), event_collector::callback(events));
        ASSERT_TRUE(events->wait_finished());
        const std::vector<int32_t> reference = fixture::reference_generate(prompt_of(salt), 12);
        EXPECT_EQ(events->tokens, reference) << "salt " << salt;
        EXPECT_FALSE(events->finished->error);
        EXPECT_EQ(events->finished->finish_reason,
                  reference.back() == fixture::shared_tiny_model().config().eos_token_id ? "stop" : "length");
        EXPECT_EQ(events->finished->prompt_tokens, static_cast<int64_t>(prompt_of(salt).size()));
        EXPECT_FALSE(events->overlapped);
        EXPECT_EQ(events->num_after_finished, 0);
    }
    // Six at once (batches of up to 4, the rest queued), with seeded sampling for half of them.
    std::vector<std::shared_ptr<event_collector>> all;
    std::vector<generation_request> requests;
    for (int salt = 0; salt < 6; ++salt) {
        generation_request request = make_request(prompt_of(salt + 10, 5 + salt), 10);
        if (salt % 2) {
            request.temperature = 0.8f;
            request.top_p = 0.9f;
            request.top_k = 50;
            request.seed = 1000 + salt;
        }
        requests.push_back(request);
        all.push_back(std::make_shared<event_collector>());
        backend.submit(request, event_collector::callback(all.back()));
    }
    for (size_t request_idx = 0; request_idx < all.size(); ++request_idx) {
        ASSERT_TRUE(all[request_idx]->wait_finished());
        const generation_request& r = requests[request_idx];
        EXPECT_EQ(all[request_idx]->tokens,
                  fixture::reference_generate(r.prompt, r.max_tokens, {r.temperature, r.top_p, r.top_k, r.seed}))
            << "request " << request_idx;
    }
    EXPECT_TRUE(fixture::eventually([&] { return all_pages_free(backend); }));
}

TEST(EngineBackend, CancelFreesPagesWhileQueuedInPrefillAndDecoding) {
    engine_backend backend(fixture::make_engine(), options(1, 20ms));
    // Decoding: cancel after a few tokens.
    auto decoding = std::make_shared<event_collector>();
    auto handle = backend.submit(make_request(prompt_of(1), 200), event_collector::callback(decoding));
    ASSERT_TRUE(decoding->wait_tokens(3));
    // Queued behind it (max_running 1).
    auto queued = std::make_shared<event_collector>();
    auto queued_handle = backend.submit(make_request(prompt_of(2), 50), event_collector::callback(queued));
    EXPECT_EQ(backend.load().queued, 1);
    queued_handle->cancel();
    ASSERT_TRUE(queued->wait_finished(5s));
    EXPECT_EQ(queued->finished->error, backend_error::cancelled);
    EXPECT_TRUE(queued->tokens.empty());
    handle->cancel();
    handle->cancel();  // idempotent
    ASSERT_TRUE(decoding->wait_finished(5s));
    EXPECT_EQ(decoding->finished->error, backend_error::cancelled);
    EXPECT_LT(decoding->tokens.size(), 200u);
    EXPECT_EQ(decoding->num_after_finished, 0);
    EXPECT_TRUE(fixture::eventually([&] { return all_pages_free(backend); }));
    // Before its prefill (paused backend): nothing ran, nothing is held.
    backend.pause();
    auto paused = std::make_shared<event_collector>();
    auto paused_handle = backend.submit(make_request(prompt_of(3), 5), event_collector::callback(paused));
    std::this_thread::sleep_for(50ms);
    paused_handle->cancel();
    ASSERT_TRUE(paused->wait_finished(5s));
    EXPECT_EQ(paused->finished->error, backend_error::cancelled);
    backend.resume();
    const auto stats = backend.statistics();
    EXPECT_EQ(stats.cancelled, 3);
    EXPECT_EQ(stats.finished, 3);
    EXPECT_TRUE(all_pages_free(backend));
}

TEST(EngineBackend, DeadlineBadRequestsAndQueueBound) {
    engine_backend backend(fixture::make_engine(64), options(1, 10ms, 1));
    auto late = std::make_shared<event_collector>();
    backend.submit(make_request(prompt_of(1), 500, 150ms), event_collector::callback(late));
    ASSERT_TRUE(late->wait_finished(5s));
    EXPECT_EQ(late->finished->error, backend_error::timeout);
    EXPECT_NE(late->finished->error_message.find("deadline"), std::string::npos);
    EXPECT_TRUE(fixture::eventually([&] { return all_pages_free(backend); }));

    struct bad {
        std::vector<int32_t> prompt;
        int64_t max_tokens;
        std::string needle;
    };
    const int64_t vocab = fixture::shared_tiny_model().config().vocab_size;
    for (const bad& b : std::vector<bad>{{{}, 4, "empty prompt"},
                                         {{1, static_cast<int32_t>(vocab)}, 4, "prompt[1]"},
                                         {{1, 2}, 0, "max_tokens must be >= 1"},
                                         {prompt_of(1), 4090, "max_position_embeddings"},
                                         {prompt_of(1), 2000, "KV pages"}}) {
        auto events = std::make_shared<event_collector>();
        backend.submit(make_request(b.prompt, b.max_tokens), event_collector::callback(events));
        ASSERT_TRUE(events->wait_finished(5s));
        EXPECT_EQ(events->finished->error, backend_error::invalid_request);
        EXPECT_NE(events->finished->error_message.find(b.needle), std::string::npos)
            << events->finished->error_message;
    }

    backend.pause();
    auto first = std::make_shared<event_collector>(), second = std::make_shared<event_collector>();
    backend.submit(make_request(prompt_of(1), 4), event_collector::callback(first));
    backend.submit(make_request(prompt_of(2), 4), event_collector::callback(second));
    EXPECT_TRUE(second->wait_finished(1s));  // max_queued 1: refused at once
    EXPECT_EQ(second->finished->error, backend_error::overloaded);
    EXPECT_FALSE(first->is_finished());
    backend.resume();
    ASSERT_TRUE(first->wait_finished());
    EXPECT_FALSE(first->finished->error);
}

TEST(EngineBackend, StopsWithEveryRequestFinished) {
    auto events = std::make_shared<event_collector>();
    {
        engine_backend backend(fixture::make_engine(), options(8, 10ms));
        backend.submit(make_request(prompt_of(1), 1000), event_collector::callback(events));
        ASSERT_TRUE(events->wait_tokens(1));
    }
    ASSERT_TRUE(events->is_finished());
    EXPECT_EQ(events->finished->error, backend_error::cancelled);
}

}  // namespace
}  // namespace longcat::gateway
