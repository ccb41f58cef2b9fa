// faulty_data_plane over inproc: drops, delays (slow sender and delayed link) and fail-after-N
// behave as specified.
#include <gtest/gtest.h>

#include <thread>

#include "actors/transport/faulty_data_plane.hpp"
#include "actors/transport/inproc_data_plane.hpp"
#include "tests/transport/test_frames.hpp"

namespace longcat::transport {
namespace {

using namespace std::chrono_literals;
using testing::check_pattern;
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

// -- link_delay: a one-way latency that does not block the sender ---------------------------

TEST_F(faulty_fixture, LinkDelayReturnsAtOnceAndDeliversNoEarlierThanTheDelay) {
    sender.set_faults({.link_delay = 50ms});
    const auto start = clock::now();
    ASSERT_TRUE(send_step(1));
    EXPECT_LT(clock::now() - start, 25ms);  // the sender is not blocked by the link
    // Right after the send the frame is still on the link.
    auto early = receiver.receive(deadline_after(20ms));
    ASSERT_FALSE(early.has_value());
    EXPECT_EQ(early.error().code, transport_error::timeout);
    auto got = receiver.receive(deadline_after(2s));
    const auto arrived = clock::now() - start;
    ASSERT_TRUE(got.has_value()) << got.error().message;
    EXPECT_GE(arrived, 50ms);
    EXPECT_LT(arrived, 50ms + 1s);
    EXPECT_EQ(got->header.step_id, 1u);
    EXPECT_TRUE(check_pattern(got->header, got->payload.span()));
    const fault_stats counts = sender.fault_counts();
    EXPECT_EQ(counts.link_delayed, 1u);
    EXPECT_EQ(counts.delayed, 0u);  // send_delay is another fault
}

TEST_F(faulty_fixture, LinkDelayKeepsTheOrderAndTheBytes) {
    sender.set_faults({.link_delay = 50ms});
    const auto start = clock::now();
    for (uint64_t step = 1; step <= 20; ++step) {
        // The payload is copied: the caller's buffer dies with the call.
        ASSERT_TRUE(send_step(step));
    }
    EXPECT_LT(clock::now() - start, 25ms * 20);
    for (uint64_t step = 1; step <= 20; ++step) {
        auto got = receiver.receive(deadline_after(2s));
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(got->header.step_id, step);
        EXPECT_TRUE(check_pattern(got->header, got->payload.span()));
        if (step == 1) {
            EXPECT_GE(clock::now() - start, 50ms);
        }
    }
    EXPECT_EQ(sender.fault_counts().link_delayed, 20u);
}

TEST_F(faulty_fixture, LinkDelayLoweredNeverLetsAFrameOvertake) {
    sender.set_faults({.link_delay = 80ms});
    ASSERT_TRUE(send_step(1));
    sender.set_faults({});  // no delay from now on, but frame 1 is still on the link
    ASSERT_TRUE(send_step(2));
    for (uint64_t step : {1, 2}) {
        auto got = receiver.receive(deadline_after(2s));
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(got->header.step_id, step);
    }
}

TEST(faulty_link, DelayedSendThatFailsFailsThePeer) {
    auto fabric = std::make_shared<inproc_fabric>();
    // The inner plane refuses payloads over 512 bytes, so the delayed 1 KiB frame fails there.
    inproc_data_plane_config small{.name = "sender"};
    small.limits.max_payload_bytes = 512;
    auto inner = std::make_shared<inproc_data_plane>(fabric, small);
    inproc_data_plane receiver{fabric, {.name = "receiver"}};
    faulty_data_plane sender{inner, {.link_delay = 20ms}};
    auto peer = sender.connect(receiver.address(), deadline_after(1s));
    ASSERT_TRUE(peer.has_value());
    const proto::frame_header big = make_test_header(1, 1024);
    ASSERT_TRUE(sender.send(*peer, big, {make_pattern(big)}, deadline_after(1s)));
    // Wait (with a deadline) until the delivery thread has tried it.
    const auto until = clock::now() + 2s;
    while (sender.fault_counts().link_failed == 0 && clock::now() < until) {
        std::this_thread::sleep_for(5ms);
    }
    ASSERT_EQ(sender.fault_counts().link_failed, 1u);
    const proto::frame_header fine = make_test_header(2, 256);
    auto sent = sender.send(*peer, fine, {make_pattern(fine)}, deadline_after(1s));
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::peer_failed);
    EXPECT_NE(sent.error().message.find("receiver"), std::string::npos) << sent.error().message;
    EXPECT_NE(sent.error().message.find("bad_frame"), std::string::npos) << sent.error().message;
    EXPECT_FALSE(receiver.receive(deadline_after(50ms)).has_value());
}

TEST_F(faulty_fixture, CloseDropsUndeliveredFramesPromptly) {
    sender.set_faults({.link_delay = 2s});
    ASSERT_TRUE(send_step(1));
    const auto start = clock::now();
    sender.close();
    EXPECT_LT(clock::now() - start, 1s);
    EXPECT_EQ(sender.fault_counts().link_undelivered, 1u);
    // The sender's inner plane is closed: the receiver hears of the failure, never the frame.
    auto got = receiver.receive(deadline_after(100ms));
    ASSERT_FALSE(got.has_value());
    EXPECT_NE(got.error().code, transport_error::timeout);
    auto after = send_step(2);
    ASSERT_FALSE(after.has_value());
    EXPECT_EQ(after.error().code, transport_error::closed);
}

}  // namespace
}  // namespace longcat::transport
