// cluster_session against a real local cluster (deploy/local/minimal.json as processes, CAF
// remote actors, UCX data plane): streamed tokens equal the single-process engine's; cancel
// frees the request's KV pages whether it is queued or decoding; a KV pool that holds 1.5
// requests serves 4 concurrent ones with the outputs they get alone, through preemption.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "actors/control/cluster_session.hpp"
#include "actors/control/launcher.hpp"
#include "model/engine.hpp"
#include "model/mkmodel.hpp"
#include "model/tokenizer.hpp"
#include "tests/cluster_caf/local_cluster.hpp"
#include "tests/support/temp_dir.hpp"

namespace longcat::control {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Collects one generation's events; wait() blocks (with a deadline) for the finished one.
struct collector {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<int32_t> tokens;
    std::vector<size_t> chunk_sizes;
    session_event last;
    bool done = false;

    // Keeps the collector alive as long as the session may call it.
    static std::function<void(session_event)> callback(const std::shared_ptr<collector>& self) {
        return [self](session_event event) {
            std::lock_guard lock(self->mutex);
            auto& tokens = self->tokens;
            auto& chunk_sizes = self->chunk_sizes;
            tokens.insert(tokens.end(), event.tokens.begin(), event.tokens.end());
            if (!event.tokens.empty()) chunk_sizes.push_back(event.tokens.size());
            if (event.finished) {
                self->done = true;
                self->last = std::move(event);
            }
            self->cv.notify_all();
        };
    }
    bool wait(std::chrono::seconds timeout) {
        std::unique_lock lock(mutex);
        return cv.wait_for(lock, timeout, [&] { return done; });
    }
    size_t count() {
        std::lock_guard lock(mutex);
        return tokens.size();
    }
};

std::string metric_line(const std::string& body, const std::string& name) {
    std::istringstream in(body);
    for (std::string line; std::getline(in, line);)
        if (line.rfind(name + " ", 0) == 0) return line;
    return "";
}

double metric(const launched_process& p, const std::string& name) {
    std::string body;
    if (http_get_status("127.0.0.1", p.metrics_port, "/metrics", 2s, &body) != 200) return -1;
    const std::string line = metric_line(body, name);
    return line.empty() ? -1 : std::stod(line.substr(line.find(' ') + 1));
}

class ClusterSession : public ::testing::Test {
  protected:
    void SetUp() override {
        local_cluster::use_loopback_ucx();
        model_dir_ = local_cluster::make_tiny_b(dir_.path() / "model");
        state_file_ = dir_.path() / "cluster" / "state.json";
    }
    void TearDown() override {
        session_.reset();
        if (HasFailure() && fs::exists(state_file_)) {
            if (auto state = read_cluster_state(state_file_))
                for (const auto& p : state->processes) {
                    std::ifstream log(p.log_file);
                    std::stringstream text;
                    text << log.rdbuf();
                    std::printf("---- %s\n%s\n", p.name.c_str(), text.str().c_str());
                }
        }
        if (fs::exists(state_file_)) (void)cluster_down(state_file_);
    }
    // minimal.json with `overrides`; starts it and connects a session.
    cluster_state up(const nlohmann::json& overrides, const std::string& topology = "minimal") {
        std::ifstream in(std::string(LONGCAT_SOURCE_DIR) + "/deploy/local/" + topology + ".json");
        nlohmann::json topo = nlohmann::json::parse(in);
        if (overrides.is_object()) topo.update(overrides);
        const fs::path file = dir_.path() / "topology.json";
        std::ofstream(file) << topo.dump(2);
        cluster_up_options lo;
        lo.topology = file;
        lo.model_dir = model_dir_;
        lo.state_file = state_file_;
        lo.bin_dir = fs::path(LONGCAT_CLI_PATH).parent_path().parent_path();
        lo.ready_timeout = 90s;
        auto state = cluster_up(lo);
        if (!state) throw std::runtime_error(state.error());
        auto session = cluster_session::connect(state->coordinator, 10s);
        if (!session) throw std::runtime_error(session.error());
        session_ = std::move(*session);
        return *state;
    }
    std::vector<int32_t> prompt(const std::string& text) const {
        return model::tokenizer::load_dir(model_dir_).encode(text, true);
    }
    std::vector<int32_t> engine_greedy(const std::vector<int32_t>& ids, int64_t max_tokens) const {
        auto weights = std::make_shared<model::model_weights>(model::load_model_weights(model_dir_));
        model::engine_options eo;
        eo.num_threads = 1;
        model::engine eng(weights, eo);
        model::sampling_params sp;
        sp.temperature = 0.0f;
        std::vector<int32_t> out = eng.generate(ids, max_tokens, sp);
        return out;
    }

    testing::temp_dir dir_;
    fs::path model_dir_;
    fs::path state_file_;
    std::unique_ptr<cluster_session> session_;
};

const launched_process& find(const cluster_state& state, const std::string& name) {
    for (const auto& p : state.processes)
        if (p.name == name) return p;
    throw std::runtime_error("no process " + name);
}

TEST_F(ClusterSession, StreamsTheEnginesGreedyTokensStepByStep) {
    up({});
    const auto ids = prompt("The quick brown fox jumps over the lazy dog");
    cluster_generate_options o;
    o.prompt = ids;
    o.max_tokens = 20;
    o.ignore_eos = true;
    o.client_request_id = "stream-test";
    auto cp = std::make_shared<collector>();
    auto& c = *cp;
    session_->submit(o, collector::callback(cp));
    ASSERT_TRUE(c.wait(60s));
    EXPECT_EQ(c.last.finish_reason, "length") << c.last.error;
    EXPECT_EQ(c.tokens, engine_greedy(ids, 20));
    EXPECT_EQ(c.last.prompt_tokens, static_cast<int64_t>(ids.size()));
    // Streamed, not delivered at the end: one token per step.
    EXPECT_GE(c.chunk_sizes.size(), 19u);

    // `cluster down` reports every running process as signalled or as stopped with its
    // coordinator, never as "already stopped", and none needs SIGKILL.
    session_.reset();
    const auto state = read_cluster_state(state_file_);
    ASSERT_TRUE(state.has_value());
    auto report = cluster_down(state_file_);
    ASSERT_TRUE(report.has_value()) << report.error();
    ASSERT_EQ(report->size(), state->processes.size());
    for (const std::string& line : *report) {
        EXPECT_TRUE(line.ends_with(": SIGTERM") || line.ends_with(": stopped with the coordinator")) << line;
    }
}

TEST_F(ClusterSession, CancelFreesThePagesOfQueuedAndDecodingRequests) {
    // max_batch 1: the second request waits in the queue while the first decodes.
    const cluster_state state = up({{"max_batch", 1}});
    const auto& worker = find(state, "attention-0");
    cluster_generate_options o;
    o.prompt = prompt("A long story begins");
    o.max_tokens = 5000;
    o.ignore_eos = true;
    auto dp = std::make_shared<collector>(), qp = std::make_shared<collector>();
    auto &decoding = *dp, &queued = *qp;
    const auto h1 = session_->submit(o, collector::callback(dp));
    const auto h2 = session_->submit(o, collector::callback(qp));
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (decoding.count() < 5) {
        ASSERT_LT(std::chrono::steady_clock::now(), until);
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_EQ(queued.count(), 0u);
    session_->cancel(h2, "test: client left while queued");
    ASSERT_TRUE(queued.wait(10s));
    EXPECT_EQ(queued.last.finish_reason, "cancelled");
    session_->cancel(h1, "test: client left while decoding");
    ASSERT_TRUE(decoding.wait(10s));
    EXPECT_EQ(decoding.last.finish_reason, "cancelled");
    // Once nothing runs the coordinator sends a release-only step: the reservations drop to 0
    // and the worker's whole pool (the topology's default 1024 pages) is free again.
    const auto& coordinator = find(state, "coordinator");
    const auto free_until = std::chrono::steady_clock::now() + 10s;
    while (metric(coordinator, "longcat_kv_pages_reserved") != 0.0 ||
           metric(worker, "longcat_kv_pages_free") != 1024.0) {
        ASSERT_LT(std::chrono::steady_clock::now(), free_until)
            << "reserved " << metric(coordinator, "longcat_kv_pages_reserved") << ", worker free "
            << metric(worker, "longcat_kv_pages_free");
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_EQ(metric(coordinator, "longcat_running_requests"), 0.0);
    EXPECT_EQ(metric(coordinator, "longcat_queue_depth"), 0.0);
}

TEST_F(ClusterSession, PoolOfOneAndAHalfRequestsServesFourThroughPreemption) {
    // One request: prompt ~12 tokens + 40 generated ≈ 52 tokens = 13 pages of 4; the pool is 20.
    const cluster_state state = up({{"kv_pages", 20}, {"page_size", 4}, {"prefill_chunk", 8}});
    std::vector<std::vector<int32_t>> prompts;
    for (int idx = 0; idx < 4; ++idx) prompts.push_back(prompt("Request " + std::to_string(idx) + " asks: why is the sky blue"));
    std::vector<std::shared_ptr<collector>> running;
    for (const auto& p : prompts) {
        ASSERT_LE(p.size() + 40, 80u);  // fits alone (20 pages of 4)
        cluster_generate_options o;
        o.prompt = p;
        o.max_tokens = 40;
        o.ignore_eos = true;
        running.push_back(std::make_shared<collector>());
        session_->submit(o, collector::callback(running.back()));
    }
    int preempted = 0;
    for (size_t idx = 0; idx < running.size(); ++idx) {
        ASSERT_TRUE(running[idx]->wait(120s));
        EXPECT_EQ(running[idx]->last.finish_reason, "length") << running[idx]->last.error;
        EXPECT_EQ(running[idx]->tokens, engine_greedy(prompts[idx], 40)) << "request " << idx;
        preempted += running[idx]->last.preemptions;
    }
    EXPECT_GT(preempted, 0);
    EXPECT_GT(metric(find(state, "coordinator"), "longcat_preemptions_total"), 0.0);
}

// Failed requests carry a kind (what the gateway maps to an HTTP status), not only words.
TEST_F(ClusterSession, FailedRequestsCarryTheirErrorKind) {
    nlohmann::json small_pool;
    small_pool["kv_pages"] = 8;  // 8 pages of 16 tokens
    small_pool["page_size"] = 16;
    up(small_pool);
    cluster_generate_options o;
    o.prompt = prompt("A prompt for a pool that is too small");
    o.max_tokens = 500;
    auto too_big = std::make_shared<collector>();
    session_->submit(o, collector::callback(too_big));
    ASSERT_TRUE(too_big->wait(30s));
    EXPECT_EQ(too_big->last.finish_reason, "error");
    EXPECT_EQ(too_big->last.error_kind, proto::request_error::invalid_request) << too_big->last.error;
    EXPECT_NE(too_big->last.error.find("KV pages"), std::string::npos) << too_big->last.error;
    o.max_tokens = 100;
    o.ignore_eos = true;
    o.timeout = 1ms;
    auto late = std::make_shared<collector>();
    session_->submit(o, collector::callback(late));
    ASSERT_TRUE(late->wait(30s));
    EXPECT_EQ(late->last.finish_reason, "error");
    EXPECT_EQ(late->last.error_kind, proto::request_error::deadline) << late->last.error;
}

// Prefill/decode disaggregation (deploy/local/pd.json: a prefill worker with its own expert pool
// of one group, a decode worker with a pool of two): every request prefills on one side, its KV
// moves over UCX to the other, which decodes it — with the single-process engine's greedy tokens.
// Each side's groups serve only that side's worker, and each side runs its own step loop.
TEST_F(ClusterSession, PdTopologyGivesTheEnginesGreedyTokens) {
    nlohmann::json no_gateway;
    no_gateway["gateway"] = nullptr;
    const cluster_state state = up(no_gateway, "pd");
    std::vector<std::vector<int32_t>> prompts;
    std::vector<std::shared_ptr<collector>> running;
    for (int idx = 0; idx < 4; ++idx) {
        prompts.push_back(prompt("Disaggregated request " + std::to_string(idx) + " says hello"));
        cluster_generate_options o;
        o.prompt = prompts.back();
        o.max_tokens = 24;
        o.ignore_eos = true;
        running.push_back(std::make_shared<collector>());
        session_->submit(o, collector::callback(running.back()));
    }
    for (size_t idx = 0; idx < running.size(); ++idx) {
        ASSERT_TRUE(running[idx]->wait(60s));
        EXPECT_EQ(running[idx]->last.finish_reason, "length") << running[idx]->last.error;
        EXPECT_EQ(running[idx]->tokens, engine_greedy(prompts[idx], 24)) << "request " << idx;
    }
    // The prefill worker ran the prompts, the decode worker received their KV and decoded.
    const auto& decode = find(state, "decode-0");
    EXPECT_GT(metric(decode, "longcat_kv_transfer_bytes_total"), 0.0);
    EXPECT_EQ(metric(find(state, "prefill-0"), "longcat_kv_transfer_bytes_total"), 0.0);
    EXPECT_GT(metric(find(state, "prefill-0"), "longcat_step_tokens_total"), 0.0);
    std::string body;
    http_get_status("127.0.0.1", decode.metrics_port, "/metrics", 2s, &body);
    EXPECT_NE(body.find("longcat_kv_transfer_seconds_count 4"), std::string::npos) << body;
    // The KV landed in pages reserved when each prefill started, as its frames arrived (frames
    // that beat their reservation are taken from the queue: a race, so only "landed" is sure).
    EXPECT_GT(metric(decode, "longcat_kv_frames_total{path=\"landed\"}"), 0.0) << body;
    // The pools: each group paired with its side's worker only.
    auto log_of = [&](const std::string& name) {
        std::ifstream in(find(state, name).log_file);
        return std::string(std::istreambuf_iterator<char>(in), {});
    };
    for (const char* group : {"experts-p0", "experts-d0", "experts-d1"}) {
        const std::string text = log_of(group);
        const bool prefill_side = std::string(group) == "experts-p0";
        EXPECT_NE(text.find(prefill_side ? "serving attention workers prefill-0\n"
                                         : "serving attention workers decode-0\n"),
                  std::string::npos)
            << group << ":\n" << text;
        EXPECT_EQ(text.find(prefill_side ? "decode-0" : "prefill-0"), std::string::npos) << group << ":\n" << text;
    }
}

}  // namespace
}  // namespace longcat::control
