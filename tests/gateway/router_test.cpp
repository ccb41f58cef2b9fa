// actors/gateway/router over real engine backends: least-load placement, the bounded queue
// (overloaded beyond it), queued requests starting as others finish, cancel and deadline while
// queued, readiness = any backend ready, the queue/running gauges, and outputs still equal to
// the engine's own greedy generation.
#include "actors/gateway/router.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "tests/gateway/engine_backend.hpp"
#include "tests/gateway/gateway_fixture.hpp"

namespace longcat::gateway {
namespace {

using fixture::event_collector;
using fixture::make_request;
using namespace std::chrono_literals;

std::vector<int32_t> prompt_of(int salt) {
    std::vector<int32_t> ids{fixture::shared_tiny_model().tokenizer->bos_id()};
    for (int token_idx = 0; token_idx < 7; ++token_idx) ids.push_back((salt * 97 + token_idx * 31) % 900 + 40);
    return ids;
}

struct two_backends {
    std::shared_ptr<engine_backend> a = std::make_shared<engine_backend>(fixture::make_engine(), engine_backend_options{});
    std::shared_ptr<engine_backend> b = std::make_shared<engine_backend>(fixture::make_engine(), engine_backend_options{});
    std::vector<std::shared_ptr<generation_backend>> list() const { return {a, b}; }
};

router_config config(int64_t max_running, int64_t queue_bound) {
    router_config out;
    out.max_running_per_backend = max_running;
    out.queue_bound = queue_bound;
    out.poll_interval = 10ms;
    return out;
}

// A backend whose submit throws (instead of answering with an error event).
class throwing_backend final : public generation_backend {
  public:
    std::shared_ptr<generation_handle> submit(generation_request,
                                              std::function<void(generation_event)>) override {
        throw std::runtime_error("out of descriptors");
    }
    backend_readiness readiness() const override { return {true, ""}; }
    backend_load load() const override { return {}; }
};

// The request ends with the backend's error and its slot is given back: before, the slot stayed
// counted as running for good (a thrown submit delivers no finished event), and with a limit of
// one running request the backend never took another.
TEST(Router, BackendThatThrowsEndsTheRequestAndGivesBackItsSlot) {
    metrics::metrics_registry registry;
    router r({std::make_shared<throwing_backend>()}, config(1, 4), make_router_metrics(registry));
    for (int attempt = 0; attempt < 3; ++attempt) {
        auto events = std::make_shared<event_collector>();
        r.submit(make_request(prompt_of(attempt), 4), event_collector::callback(events));
        ASSERT_TRUE(events->wait_finished(2s)) << "attempt " << attempt << " never ended";
        EXPECT_EQ(events->finished->error, backend_error::internal);
        EXPECT_NE(events->finished->error_message.find("out of descriptors"), std::string::npos)
            << events->finished->error_message;
        EXPECT_EQ(r.load().running, 0) << "attempt " << attempt;
        EXPECT_EQ(r.load().queued, 0) << "attempt " << attempt;
    }
}

TEST(Router, LeastLoadQueueOverloadAndCancelWhileQueued) {
    two_backends backends;
    backends.a->pause();
    backends.b->pause();
    metrics::metrics_registry registry;
    router r(backends.list(), config(1, 1), make_router_metrics(registry));

    auto first = std::make_shared<event_collector>(), second = std::make_shared<event_collector>();
    r.submit(make_request(prompt_of(1), 6), event_collector::callback(first));
    r.submit(make_request(prompt_of(2), 6), event_collector::callback(second));
    // One on each backend: the second went to the one with less load.
    EXPECT_EQ(backends.a->statistics().submitted, 1);
    EXPECT_EQ(backends.b->statistics().submitted, 1);

    auto queued = std::make_shared<event_collector>();
    auto queued_handle = r.submit(make_request(prompt_of(3), 6), event_collector::callback(queued));
    EXPECT_EQ(r.load().running, 2);
    EXPECT_EQ(r.load().queued, 1);
    EXPECT_EQ(registry.expose().find("longcat_router_queue_depth 1") != std::string::npos, true) << registry.expose();

    auto refused = std::make_shared<event_collector>();
    r.submit(make_request(prompt_of(4), 6), event_collector::callback(refused));
    ASSERT_TRUE(refused->wait_finished(1s));  // at once, not after a wait
    EXPECT_EQ(refused->finished->error, backend_error::overloaded);
    EXPECT_NE(refused->finished->error_message.find("queue_bound 1"), std::string::npos)
        << refused->finished->error_message;

    queued_handle->cancel();
    ASSERT_TRUE(queued->wait_finished(1s));
    EXPECT_EQ(queued->finished->error, backend_error::cancelled);
    EXPECT_EQ(r.load().queued, 0);
    EXPECT_EQ(backends.a->statistics().submitted + backends.b->statistics().submitted, 2);  // never started

    // A queued request starts when a slot frees, and still gives the engine's tokens.
    auto later = std::make_shared<event_collector>();
    r.submit(make_request(prompt_of(5), 6), event_collector::callback(later));
    EXPECT_EQ(r.load().queued, 1);
    backends.a->resume();
    backends.b->resume();
    for (const auto& [events, salt] : std::vector<std::pair<std::shared_ptr<event_collector>, int>>{
             {first, 1}, {second, 2}, {later, 5}}) {
        ASSERT_TRUE(events->wait_finished());
        EXPECT_FALSE(events->finished->error);
        EXPECT_EQ(events->tokens, fixture::reference_generate(prompt_of(salt), 6)) << "salt " << salt;
        EXPECT_EQ(events->num_after_finished, 0);
    }
    EXPECT_TRUE(fixture::eventually([&] { return r.load().running == 0 && r.load().queued == 0; }));
    EXPECT_NE(registry.expose().find("longcat_router_running_requests 0"), std::string::npos);
}

TEST(Router, DeadlineWhileQueuedAndCancelWhileRunning) {
    two_backends backends;
    backends.a->pause();
    router r({backends.a}, config(1, 4));
    auto running = std::make_shared<event_collector>();
    auto running_handle = r.submit(make_request(prompt_of(1), 50), event_collector::callback(running));
    auto late = std::make_shared<event_collector>();
    const auto start = clock::now();
    r.submit(make_request(prompt_of(2), 5, 100ms), event_collector::callback(late));
    ASSERT_TRUE(late->wait_finished(2s));
    EXPECT_EQ(late->finished->error, backend_error::timeout);
    EXPECT_LT(clock::now() - start, 1s);
    running_handle->cancel();  // reaches the backend, which frees the sequence
    ASSERT_TRUE(running->wait_finished(2s));
    EXPECT_EQ(running->finished->error, backend_error::cancelled);
    EXPECT_TRUE(fixture::eventually([&] {
        const auto stats = backends.a->statistics();
        return stats.live_sequences == 0 && stats.free_pages == stats.total_pages && r.load().running == 0;
    }));
}

TEST(Router, ReadinessIsAnyBackendAndPicksTheReadyOne) {
    two_backends backends;
    router r(backends.list(), config(4, 4));
    backends.a->set_readiness(false, "warming up");
    backends.b->set_readiness(false, "no placement");
    EXPECT_FALSE(r.readiness().ready);
    EXPECT_NE(r.readiness().reason.find("warming up"), std::string::npos);
    EXPECT_NE(r.readiness().reason.find("no placement"), std::string::npos);
    auto refused = std::make_shared<event_collector>();
    r.submit(make_request(prompt_of(1), 3), event_collector::callback(refused));
    ASSERT_TRUE(refused->wait_finished(1s));
    EXPECT_EQ(refused->finished->error, backend_error::not_ready);

    backends.b->set_readiness(true, "");
    EXPECT_TRUE(r.readiness().ready);
    std::vector<std::shared_ptr<event_collector>> all;
    for (int salt = 0; salt < 3; ++salt) {
        all.push_back(std::make_shared<event_collector>());
        r.submit(make_request(prompt_of(salt), 3), event_collector::callback(all.back()));
    }
    for (const auto& events : all) ASSERT_TRUE(events->wait_finished());
    EXPECT_EQ(backends.a->statistics().submitted, 0);
    EXPECT_EQ(backends.b->statistics().submitted, 3);
}

// A backend whose events come from a thread of its own and whose destructor joins that thread,
// as cluster_backend's waits for its CAF threads.
class threaded_backend final : public generation_backend {
  public:
    explicit threaded_backend(std::shared_ptr<std::atomic<int>> destroyed_on)
        : destroyed_on_(std::move(destroyed_on)) {}
    ~threaded_backend() override {
        const bool own_thread = worker_.get_id() == std::this_thread::get_id();
        destroyed_on_->store(own_thread ? 2 : 1);
        if (own_thread)
            worker_.detach();  // would be join(): std::system_error, terminate
        else if (worker_.joinable())
            worker_.join();
    }
    std::shared_ptr<generation_handle> submit(
        generation_request, std::function<void(generation_event)> on_event) override {
        worker_ = std::thread([on_event = std::move(on_event)] {
            generation_event done;
            done.finished = true;
            done.finish_reason = "length";
            on_event(std::move(done));
        });
        return std::make_shared<finished_handle>();
    }
    backend_readiness readiness() const override { return {true, ""}; }
    backend_load load() const override { return {}; }

  private:
    std::shared_ptr<std::atomic<int>> destroyed_on_;  // 0 alive, 1 another thread, 2 its own
    std::thread worker_;
};

// The process lets go of the router and the backend while the backend's last event is still
// being delivered: the router's state (which holds the backend) then goes with that event, on
// the backend's own thread. It is deleted from another thread, which the process can wait for
// (in the gateway, a cluster_backend destroyed on its own CAF thread waited for itself for ever).
TEST(Router, LastReferenceDroppedInABackendEventIsReleasedOffThatThread) {
    auto destroyed_on = std::make_shared<std::atomic<int>>(0);
    auto backend = std::make_shared<threaded_backend>(destroyed_on);
    auto r = std::make_unique<router>(std::vector<std::shared_ptr<generation_backend>>{backend},
                                      config(1, 1));
    std::promise<void> in_event, let_go;
    std::shared_future<void> let_go_future = let_go.get_future().share();
    bool finished = false;
    r->submit(make_request(prompt_of(1), 4), [&, let_go_future](generation_event event) {
        finished = event.finished;
        in_event.set_value();
        let_go_future.wait();  // the process drops the router and the backend meanwhile
    });
    ASSERT_EQ(in_event.get_future().wait_for(5s), std::future_status::ready);
    r.reset();
    backend.reset();
    EXPECT_EQ(destroyed_on->load(), 0) << "the router's state holds the backend";
    let_go.set_value();
    EXPECT_TRUE(router::await_released(5s)) << "the router's state is still there";
    EXPECT_EQ(destroyed_on->load(), 1) << "0: never destroyed, 2: destroyed on its own thread";
    EXPECT_TRUE(finished);
}

TEST(Router, RefusesBadConfig) {
    two_backends backends;
    EXPECT_THROW(router({}, config(1, 1)), std::invalid_argument);
    EXPECT_THROW(router({backends.a, nullptr}, config(1, 1)), std::invalid_argument);
    EXPECT_THROW(router(backends.list(), config(0, 1)), std::invalid_argument);
    EXPECT_THROW(router(backends.list(), config(1, -1)), std::invalid_argument);
}

}  // namespace
}  // namespace longcat::gateway
