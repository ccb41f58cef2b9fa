// faulty_data_plane over inproc: drops, delays and fail-after-N behave as specified.
#include <gtest/gtest.h>

#include "actors/transport/faulty_data_plane.hpp"
#include "actors/transport/inproc_data_plane.hpp"
#include "tests/transport/test_frames.hpp"

namespace longcat::transport {
namespace {

using namespace std::chrono_literals;
using testing::make_pattern;
using testing::make_test_header;

struct faulty_fixture : ::testing::Test {
    std::shared_ptr<inproc_fabric> fabric = std::make_shared<inproc_fabric>();
    std::shared_ptr<inproc_data_plane> sender_inner =
        std::make_shared<inproc_data_plane>(fabric, inproc_data_plane_config{.name = "sender"});
    inproc_data_plane receiver{fabric, {.name = "receiver"}};
    faulty_data_plane sender{sender_inner, {}};
    peer_id peer;

    void SetUp() override {
        auto connected = sender.connect(receiver.address(), deadline_after(1s));
        ASSERT_TRUE(connected.has_value());
        peer = *connected;
    }

    transport_status send_step(uint64_t step, clock::duration timeout = 1s) {
        const proto::frame_header header = make_test_header(step, 1024);
        return sender.send(peer, header, {make_pattern(header)}, deadline_after(timeout));
    }
};

TEST_F(faulty_fixture, NoFaultsPassesThrough) {
    ASSERT_TRUE(send_step(1));
    auto got = receiver.receive(deadline_after(1s));
    ASSERT_TRUE(got.has_value());
    EXPECT_EQ(sender.name(), "sender");
    EXPECT_EQ(sender.fault_counts().sends, 1u);
}

TEST_F(faulty_fixture, DropMakesTheReceiverTimeOutWithinDeadlinePlusSlack) {
    sender.set_faults({.drop_probability = 1.0});
    ASSERT_TRUE(send_step(1));  // a dropped send looks like success
    const auto start = clock::now();
    auto got = receiver.receive(deadline_after(300ms));
    const auto waited = clock::now() - start;
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, transport_error::timeout);
    EXPECT_GE(waited, 300ms);
    EXPECT_LT(waited, 300ms + 2s);
    EXPECT_EQ(sender.fault_counts().dropped, 1u);
}

TEST_F(faulty_fixture, DropProbabilityIsReproducible) {
    auto run = [&](uint64_t seed) {
        sender.set_faults({.drop_probability = 0.5, .seed = seed});
        uint64_t before = sender.fault_counts().dropped;
        for (int step = 0; step < 200; ++step) EXPECT_TRUE(send_step(step));
        return sender.fault_counts().dropped - before;
    };
    const uint64_t first = run(11);
    const uint64_t second = run(11);
    EXPECT_EQ(first, second);
    EXPECT_GT(first, 60u);
    EXPECT_LT(first, 140u);
}

TEST_F(faulty_fixture, DropIfSelectsFrames) {
    sender.set_faults(
        {.drop_if = [](peer_id, const proto::frame_header& h) { return h.step_id == 2; }});
    for (uint64_t step : {1, 2, 3}) ASSERT_TRUE(send_step(step));
    auto first = receiver.receive(deadline_after(1s));
    auto second = receiver.receive(deadline_after(1s));
    ASSERT_TRUE(first.has_value() && second.has_value());
    EXPECT_EQ(first->header.step_id, 1u);
    EXPECT_EQ(second->header.step_id, 3u);
}

TEST_F(faulty_fixture, DelayEverySendByAtLeastL) {
    sender.set_faults({.send_delay = 100ms});
    for (uint64_t step : {1, 2}) {
        const auto start = clock::now();
        ASSERT_TRUE(send_step(step));
        EXPECT_GE(clock::now() - start, 100ms);
        auto got = receiver.receive(deadline_after(1s));
        ASSERT_TRUE(got.has_value());
        EXPECT_EQ(got->header.step_id, step);
    }
    EXPECT_EQ(sender.fault_counts().delayed, 2u);
}

TEST_F(faulty_fixture, DelayPastTheDeadlineTimesOutAtTheDeadline) {
    sender.set_faults({.send_delay = 2s});
    const auto start = clock::now();
    auto sent = send_step(1, 150ms);
    const auto waited = clock::now() - start;
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::timeout);
    EXPECT_GE(waited, 150ms);
    EXPECT_LT(waited, 1s);
}

TEST_F(faulty_fixture, FailAfterNSends) {
    sender.set_faults({.fail_after_sends = 3});
    for (uint64_t step : {1, 2, 3}) ASSERT_TRUE(send_step(step));
    for (uint64_t step : {4, 5}) {
        auto sent = send_step(step);
        ASSERT_FALSE(sent.has_value());
        EXPECT_EQ(sent.error().code, transport_error::peer_failed);
        EXPECT_NE(sent.error().message.find("receiver"), std::string::npos) << sent.error().message;
    }
    for (uint64_t step : {1, 2, 3}) {
        auto got = receiver.receive(deadline_after(1s));
        ASSERT_TRUE(got.has_value());
        EXPECT_EQ(got->header.step_id, step);
    }
    EXPECT_FALSE(receiver.receive(deadline_after(100ms)).has_value());
    EXPECT_EQ(sender.fault_counts().failed, 2u);
}

}  // namespace
}  // namespace longcat::transport
