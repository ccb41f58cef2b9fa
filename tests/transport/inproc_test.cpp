// inproc_data_plane: the data_plane contract, deterministic, in one process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "actors/transport/frame_inbox.hpp"
#include "actors/transport/inproc_data_plane.hpp"
#include "tests/transport/test_frames.hpp"

namespace longcat::transport {
namespace {

using namespace std::chrono_literals;
using testing::check_pattern;
using testing::make_pattern;
using testing::make_test_header;

struct pair_fixture : ::testing::Test {
    std::shared_ptr<inproc_fabric> fabric = std::make_shared<inproc_fabric>();
    inproc_data_plane a{fabric, {.name = "attention-0"}};
    inproc_data_plane b{fabric, {.name = "experts-0"}};
    peer_id a_to_b;

    void SetUp() override {
        auto connected = a.connect(b.address(), deadline_after(1s));
        ASSERT_TRUE(connected.has_value()) << connected.error().message;
        a_to_b = *connected;
    }
};

TEST_F(pair_fixture, AddressesAndPeers) {
    EXPECT_TRUE(a.address().starts_with("inproc://attention-0"));
    auto info = a.peer(a_to_b);
    ASSERT_TRUE(info.has_value());
    EXPECT_EQ(info->name, "experts-0");
    EXPECT_EQ(info->address, b.address());
    EXPECT_TRUE(info->connected_by_us);
    EXPECT_EQ(describe_peer(*info), "experts-0 (" + b.address() + ")");
}

TEST_F(pair_fixture, RoundTripBothWaysWithContents) {
    for (uint64_t size : {uint64_t{0}, uint64_t{1024}, uint64_t{4} << 20}) {
        const proto::frame_header header = make_test_header(size + 1, size);
        const std::vector<std::byte> payload = make_pattern(header);
        ASSERT_TRUE(a.send(a_to_b, header, {payload}, deadline_after(1s)).has_value());
        auto got = b.receive(deadline_after(1s));
        ASSERT_TRUE(got.has_value()) << got.error().message;
        EXPECT_EQ(got->header, header);
        EXPECT_TRUE(check_pattern(got->header, got->payload.span()));
        auto info = b.peer(got->peer);
        ASSERT_TRUE(info.has_value());
        EXPECT_EQ(info->name, "attention-0");
        EXPECT_FALSE(info->connected_by_us);

        proto::frame_header reply = header;
        reply.kind = proto::frame_kind::combine;
        const std::vector<std::byte> reply_payload = make_pattern(reply);
        ASSERT_TRUE(b.send(got->peer, reply, {reply_payload}, deadline_after(1s)).has_value());
        auto back = a.receive(deadline_after(1s), {.peer = a_to_b});
        ASSERT_TRUE(back.has_value()) << back.error().message;
        EXPECT_EQ(back->header.kind, proto::frame_kind::combine);
        EXPECT_TRUE(check_pattern(back->header, back->payload.span()));
        EXPECT_EQ(reinterpret_cast<uintptr_t>(back->payload.data()) % byte_buffer::kAlignment, 0u);
    }
    EXPECT_EQ(a.stats().frames_sent, 3u);
    EXPECT_EQ(b.stats().frames_received, 3u);
    EXPECT_EQ(b.stats().bytes_received, 1024u + (4u << 20));
}

TEST_F(pair_fixture, ReceiveByKeyLeavesOtherFramesQueued) {
    for (uint64_t step : {1, 2, 3}) {
        const proto::frame_header header = make_test_header(step, 64);
        ASSERT_TRUE(a.send(a_to_b, header, {make_pattern(header)}, deadline_after(1s)));
    }
    auto third = b.receive(deadline_after(1s), {.step_id = 3});
    ASSERT_TRUE(third.has_value());
    EXPECT_EQ(third->header.step_id, 3u);
    auto first = b.receive(deadline_after(1s));
    ASSERT_TRUE(first.has_value());
    EXPECT_EQ(first->header.step_id, 1u);  // FIFO for the rest
    frame_filter even;
    even.predicate = [](peer_id, const proto::frame_header& h) { return h.step_id % 2 == 0; };
    auto second = b.receive(deadline_after(1s), even);
    ASSERT_TRUE(second.has_value());
    EXPECT_EQ(second->header.step_id, 2u);
}

TEST_F(pair_fixture, DiscardDropsMatchingFramesButNeverErrors) {
    for (uint64_t step : {1, 2, 3}) {
        const proto::frame_header header = make_test_header(step, 64);
        ASSERT_TRUE(a.send(a_to_b, header, {make_pattern(header)}, deadline_after(1s)));
    }
    const proto::frame_header_bytes bytes = proto::encode_frame_header(make_test_header(4, 64));
    ASSERT_TRUE(a.send_raw(a_to_b, std::span<const std::byte>(bytes).first(20), {}));  // an error entry
    EXPECT_EQ(b.discard({.step_id = 2}), 1u);
    EXPECT_EQ(b.discard({.step_id = 4}), 0u);  // the malformed frame is an error: kept
    std::vector<uint64_t> steps;
    int errors = 0;
    for (;;) {
        auto got = b.receive(deadline_after(100ms));
        if (!got && got.error().code == transport_error::timeout) break;
        if (!got) ++errors;
        else steps.push_back(got->header.step_id);
    }
    EXPECT_EQ(steps, (std::vector<uint64_t>{1, 3}));
    EXPECT_EQ(errors, 1);
}

TEST(FrameInbox, SinkTakesFramesOfItsKindBeforeTheyAreQueued) {
    frame_inbox inbox;
    const peer_id from{1};
    std::vector<uint64_t> taken;
    inbox.set_sink(proto::frame_kind::kv, [&](peer_id, const proto::frame_header& h, std::span<const std::byte> p) {
        if (h.request_id != 7) return false;  // not expected: queued as usual
        EXPECT_EQ(p.size(), 64u);
        taken.push_back(h.step_id);
        return true;
    });
    proto::frame_header kv = make_test_header(1, 64);
    kv.kind = proto::frame_kind::kv;
    kv.request_id = 7;
    inbox.push_frame(from, kv, byte_buffer(64));                                   // eager
    const frame_inbox::slot_id slot = inbox.reserve(from, (kv.step_id = 2, kv));  // rendezvous
    inbox.complete(slot, byte_buffer(64));
    EXPECT_TRUE(inbox.offer(from, (kv.step_id = 3, kv), std::vector<std::byte>(64)));  // UCX's buffer
    kv.request_id = 8;
    inbox.push_frame(from, (kv.step_id = 4, kv), byte_buffer(64));
    inbox.push_frame(from, make_test_header(5, 64), byte_buffer(64));  // another kind
    EXPECT_EQ(taken, (std::vector<uint64_t>{1, 2, 3}));
    EXPECT_EQ(inbox.size(), 2u);
    inbox.push_error(from, {transport_error::bad_frame, "bad"});
    // frames_only: the error entry stays for a receive that wants errors.
    auto frame = inbox.receive(clock::now(), {.kind = proto::frame_kind::kv, .frames_only = true});
    ASSERT_TRUE(frame.has_value());
    EXPECT_EQ(frame->header.step_id, 4u);
    inbox.set_sink(proto::frame_kind::kv, nullptr);
    inbox.push_frame(from, (kv.step_id = 6, kv), byte_buffer(64));
    EXPECT_EQ(taken.size(), 3u);
    auto error = inbox.receive(clock::now(), {.kind = proto::frame_kind::kv});
    ASSERT_FALSE(error.has_value());
    EXPECT_EQ(error.error().code, transport_error::bad_frame);
    auto queued = inbox.receive(clock::now(), {.kind = proto::frame_kind::kv});  // no sink: queued
    ASSERT_TRUE(queued.has_value());
    EXPECT_EQ(queued->header.step_id, 6u);
}

// A byte_buffer over someone else's bytes (as ucx_data_plane hands out eager payloads kept in
// UCX's buffers): the owner is let go exactly once, by whichever buffer holds it last.
TEST(ByteBuffer, AdoptedBytesAreLetGoOnceByTheirLastHolder) {
    alignas(byte_buffer::kAdoptedAlignment) std::array<std::byte, 64> storage{};
    int released = 0;
    auto owner = [&] { return std::shared_ptr<void>(storage.data(), [&](void*) { ++released; }); };
    {
        byte_buffer a = byte_buffer::adopt(storage, owner());
        EXPECT_EQ(a.data(), storage.data());
        EXPECT_EQ(a.size(), storage.size());
        byte_buffer b(std::move(a));
        EXPECT_TRUE(a.empty());
        EXPECT_EQ(b.data(), storage.data());
        byte_buffer c(16);  // allocated: assigning over it frees it, assigning over b lets go
        c = std::move(b);
        EXPECT_EQ(released, 0);
        c = byte_buffer(8);
        EXPECT_EQ(released, 1);
    }
    EXPECT_EQ(released, 1);
    byte_buffer copied = byte_buffer::adopt(storage, nullptr);  // no owner: a copy
    EXPECT_NE(copied.data(), storage.data());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(copied.data()) % byte_buffer::kAlignment, 0u);
}

// The VmFlags line of the /proc/self/smaps mapping that holds `p` ("" if none does).
std::string vm_flags_of(const void* p) {
    std::ifstream smaps("/proc/self/smaps");
    const auto at = reinterpret_cast<uintptr_t>(p);
    bool inside = false;
    for (std::string line; std::getline(smaps, line);) {
        uintptr_t begin = 0;
        uintptr_t end = 0;
        char dash = 0;
        std::istringstream head(line);
        if (head >> std::hex >> begin >> dash >> end && dash == '-') {
            inside = begin <= at && at < end;
        } else if (inside && line.rfind("VmFlags:", 0) == 0) {
            return line;
        }
    }
    return "";
}

// From kLargeBytes on, a buffer is whole huge-page extents advised as such (the "hg" flag), and a
// buffer let go of is the next one of the same extent; smaller ones come from the heap as before.
TEST(ByteBuffer, LargeBuffersAreCachedHugePageExtents) {
    const size_t huge = byte_buffer::kHugePageBytes;
    std::byte* first = nullptr;
    large_buffer_stats taken;  // right after the first buffer took its extent
    {
        byte_buffer a(huge + 1);  // rounds up to two huge pages
        taken = large_buffer_cache_stats();
        first = a.data();
        EXPECT_EQ(a.size(), huge + 1);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % huge, 0u);
        std::memset(a.data(), 0x5a, a.size());  // every byte is ours
        EXPECT_NE(vm_flags_of(first).find(" hg"), std::string::npos) << vm_flags_of(first);
        byte_buffer moved(std::move(a));  // the extent moves with the bytes, given back once
        EXPECT_TRUE(a.empty());
        EXPECT_EQ(moved.data(), first);
    }
    EXPECT_EQ(large_buffer_cache_stats().cached_bytes, taken.cached_bytes + 2 * huge);
    {
        byte_buffer same(2 * huge);  // the extent of that size given back last, from the cache
        EXPECT_EQ(same.data(), first);
        EXPECT_EQ(large_buffer_cache_stats().extents_reused, taken.extents_reused + 1);
        byte_buffer other(2 * huge + 1);  // three huge pages: another extent
        EXPECT_NE(other.data(), first);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(other.data()) % huge, 0u);
    }
    {
        // A request takes the smallest cached extent that holds it and is at most twice its size
        // (sizes no other test here uses: 20, 18 and 8 MiB).
        std::byte* twenty = nullptr;
        {
            byte_buffer b(10 * huge);
            twenty = b.data();
        }
        const uint64_t reused = large_buffer_cache_stats().extents_reused;
        byte_buffer eighteen(9 * huge);  // 20 MiB holds it, and is under twice 18
        EXPECT_EQ(eighteen.data(), twenty);
        EXPECT_EQ(large_buffer_cache_stats().extents_reused, reused + 1);
        std::memset(eighteen.data(), 1, eighteen.size());
        eighteen = byte_buffer{};  // the whole 20 MiB goes back
        EXPECT_GE(large_buffer_cache_stats().cached_bytes, 10 * huge);
        byte_buffer eight(4 * huge);  // 20 MiB is more than twice 8: not that extent
        EXPECT_NE(eight.data(), twenty);
    }
    const large_buffer_stats before_small = large_buffer_cache_stats();
    byte_buffer small(byte_buffer::kLargeBytes - 1);  // the heap, as before
    EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data()) % byte_buffer::kAlignment, 0u);
    const large_buffer_stats now = large_buffer_cache_stats();
    EXPECT_EQ(now.extents_mapped + now.extents_reused,
              before_small.extents_mapped + before_small.extents_reused);
}

#if defined(__SANITIZE_ADDRESS__)
// Under ASan an extent waiting in the cache is poisoned, so a buffer's bytes read after it let
// go of them are reported, as freed heap memory would be.
TEST(ByteBufferDeathTest, ReadingACachedExtentIsReportedUnderAsan) {
    EXPECT_DEATH(
        {
            std::byte* bytes = nullptr;
            {
                byte_buffer b(byte_buffer::kLargeBytes);
                bytes = b.data();
            }
            volatile std::byte first = bytes[0];
            (void)first;
        },
        ::testing::HasSubstr("use-after-poison"));  // a matcher: gtest's regex hangs under ASan
}
#endif

// The cache keeps at most 512 MiB of extents given back, unmapping the oldest first (never
// touched here, so this maps no memory).
TEST(ByteBuffer, TheExtentCacheIsBoundedAndKeepsTheNewest) {
    std::vector<byte_buffer> buffers;
    for (int i = 0; i < 300; ++i) buffers.emplace_back(byte_buffer::kHugePageBytes);  // 600 MiB
    std::byte* last = buffers.back().data();
    std::byte* first = buffers.front().data();
    buffers.clear();  // given back first to last
    EXPECT_EQ(large_buffer_cache_stats().cached_bytes, uint64_t{512} << 20);
    EXPECT_EQ(vm_flags_of(first), "");  // among the oldest 44: unmapped
    EXPECT_NE(vm_flags_of(last), "");   // the newest: kept
}

// close(): queued frames can no longer be received, so they are dropped at once (their buffers,
// possibly a transport's, go back), and so is any frame pushed afterwards.
// A payload the transport still holds after a failed send (transport_failure::payload_held) is
// kept for the life of the process: the buffer moved in keeps its storage, which stays readable.
TEST(RetainedPayload, MovedBufferKeepsItsStorageUntilExit) {
    const retained_payload_stats before = retained_payloads();
    std::vector<float> rows(1 << 18, 1.5f);  // 1 MiB: its own mapping, unmapped when freed
    const float* where = rows.data();
    retain_payload_buffer(std::move(rows));
    rows = std::vector<float>(1 << 18, -2.0f);  // the caller's next step allocates anew
    EXPECT_NE(rows.data(), where);
    EXPECT_EQ(where[0], 1.5f);  // still mapped, unchanged (ASan: not freed)
    EXPECT_EQ(where[(1 << 18) - 1], 1.5f);
    const retained_payload_stats after = retained_payloads();
    EXPECT_EQ(after.payloads, before.payloads + 1);
    EXPECT_EQ(after.bytes, before.bytes + (uint64_t{1} << 20));
    auto owner = std::make_shared<std::array<std::byte, 24>>();
    std::weak_ptr<std::array<std::byte, 24>> watch = owner;
    retain_payload(std::move(owner), 24);
    EXPECT_FALSE(watch.expired());
    EXPECT_EQ(retained_payloads().bytes, after.bytes + 24);
}

TEST(FrameInbox, CloseDropsQueuedFramesAndLaterOnes) {
    frame_inbox inbox;
    alignas(byte_buffer::kAdoptedAlignment) std::array<std::byte, 64> storage{};
    int released = 0;
    auto adopted = [&] {
        return byte_buffer::adopt(
            storage, std::shared_ptr<void>(storage.data(), [&](void*) { ++released; }));
    };
    inbox.push_frame(peer_id{1}, make_test_header(1, 64), adopted());
    inbox.push_frame(peer_id{1}, make_test_header(2, 64), byte_buffer(64));
    EXPECT_EQ(inbox.size(), 2u);
    inbox.close({transport_error::closed, "closed"});
    EXPECT_EQ(inbox.size(), 0u);
    EXPECT_EQ(released, 1);
    inbox.push_frame(peer_id{1}, make_test_header(3, 64), adopted());
    EXPECT_EQ(inbox.size(), 0u);
    EXPECT_EQ(released, 2);
    auto got = inbox.receive(clock::now() + 1s, {});
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, transport_error::closed);
}

// A failed peer with a frame still landing (error mode none: UCX cannot cancel the receive, so
// it may never complete): a receive naming it gets the failure at once, after the frame that had
// arrived before, instead of waiting for its deadline behind the unfinished one (each later
// receive timed out the same way, and the failure was never seen).
TEST(FrameInbox, FailedPeerIsNotHeldBackByAFrameStillLanding) {
    frame_inbox inbox;
    const peer_id from{1};
    inbox.push_frame(from, make_test_header(1, 64), byte_buffer(64));
    const frame_inbox::slot_id landing = inbox.reserve(from, make_test_header(2, 64));
    inbox.push_frame(from, make_test_header(3, 64), byte_buffer(64));
    inbox.fail_peer(from, {transport_error::peer_failed, "experts-0 (ucx://127.0.0.1:1): gone"});
    const frame_filter of_peer{.peer = from};
    auto first = inbox.receive(deadline_after(2s), of_peer);
    ASSERT_TRUE(first.has_value()) << first.error().message;
    EXPECT_EQ(first->header.step_id, 1u);
    for (int attempt = 0; attempt < 2; ++attempt) {
        const auto start = clock::now();
        auto failed = inbox.receive(deadline_after(2s), of_peer);
        ASSERT_FALSE(failed.has_value()) << "attempt " << attempt;
        EXPECT_EQ(failed.error().code, transport_error::peer_failed) << failed.error().message;
        EXPECT_LT(clock::now() - start, 1s) << "waited for its deadline";
    }
    // Should the frame land after all, it is delivered (in order), then the failure again.
    inbox.complete(landing, byte_buffer(64));
    auto late = inbox.receive(deadline_after(2s), of_peer);
    ASSERT_TRUE(late.has_value()) << late.error().message;
    EXPECT_EQ(late->header.step_id, 2u);
}

TEST(FrameInbox, DiscardedFrameStillLandingIsDroppedWhenItLandsOrFails) {
    frame_inbox inbox;
    const peer_id from{1};
    const frame_inbox::slot_id landing = inbox.reserve(from, make_test_header(7, 64));
    const frame_inbox::slot_id failing = inbox.reserve(from, make_test_header(8, 64));
    EXPECT_EQ(inbox.discard({.step_id = 7}), 1u);
    EXPECT_EQ(inbox.discard({.step_id = 8}), 1u);
    inbox.complete(landing, byte_buffer(64));
    inbox.abort(failing, {transport_error::peer_failed, "gone"});
    EXPECT_EQ(inbox.size(), 0u);
    auto got = inbox.receive(clock::now(), {});
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, transport_error::timeout);
}

TEST_F(pair_fixture, ReceiveTimesOutByItsDeadline) {
    const auto start = clock::now();
    auto got = b.receive(deadline_after(200ms), {.kind = proto::frame_kind::kv});
    const auto waited = clock::now() - start;
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, transport_error::timeout);
    EXPECT_GE(waited, 200ms);
    EXPECT_LT(waited, 2s);
}

TEST_F(pair_fixture, BadOutgoingFramesAreRefusedBeforeSending) {
    proto::frame_header header = make_test_header(1, 1024);
    const std::vector<std::byte> payload = make_pattern(header);
    header.payload_bytes += 1;
    auto sent = a.send(a_to_b, header, {payload}, deadline_after(1s));
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::bad_frame);
    header = make_test_header(1, 1024);
    sent = a.send(a_to_b, header, {std::span(payload).first(100)}, deadline_after(1s));
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::bad_frame);
    sent = a.send(a_to_b, header, {payload, memory_type::cuda}, deadline_after(1s));
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::unsupported_memory);
    EXPECT_EQ(a.stats().frames_sent, 0u);
}

TEST_F(pair_fixture, MalformedFrameIsANamedErrorThenTheNextFrameArrives) {
    const proto::frame_header header = make_test_header(5, 1024);
    const std::vector<std::byte> payload = make_pattern(header);
    const proto::frame_header_bytes bytes = proto::encode_frame_header(header);
    ASSERT_TRUE(a.send_raw(a_to_b, std::span<const std::byte>(bytes).first(20), {payload}));
    auto bad = b.receive(deadline_after(1s));
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().code, transport_error::bad_frame);
    EXPECT_NE(bad.error().message.find("truncated"), std::string::npos) << bad.error().message;
    EXPECT_NE(bad.error().message.find("attention-0"), std::string::npos) << bad.error().message;
    ASSERT_TRUE(a.send(a_to_b, header, {payload}, deadline_after(1s)));
    auto good = b.receive(deadline_after(1s));
    ASSERT_TRUE(good.has_value()) << good.error().message;
    EXPECT_TRUE(check_pattern(good->header, good->payload.span()));
    EXPECT_EQ(b.stats().bad_frames, 1u);
}

TEST(Inproc, OversizedForTheReceiverIsABadFrameThere) {
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_data_plane a{fabric, {.name = "a"}};
    inproc_data_plane b{fabric, {.name = "b", .limits = {.max_payload_bytes = 1 << 20}}};
    auto peer = a.connect(b.address(), deadline_after(1s));
    ASSERT_TRUE(peer.has_value());
    const proto::frame_header header = make_test_header(1, 2 << 20);
    ASSERT_TRUE(a.send(*peer, header, {make_pattern(header)}, deadline_after(1s)));
    auto got = b.receive(deadline_after(1s));
    ASSERT_FALSE(got.has_value());
    EXPECT_EQ(got.error().code, transport_error::bad_frame);
    EXPECT_NE(got.error().message.find("oversized"), std::string::npos) << got.error().message;
}

TEST(Inproc, VersionMismatchIsRefusedNamingBothSides) {
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_data_plane ours{fabric, {.name = "attention-0"}};
    proto::wire_versions old = proto::local_wire_versions();
    old.protocol = proto::kProtocolVersion + 1;
    inproc_data_plane theirs{fabric, {.name = "experts-9", .versions = old}};
    auto connected = ours.connect(theirs.address(), deadline_after(1s));
    ASSERT_FALSE(connected.has_value());
    EXPECT_EQ(connected.error().code, transport_error::version_mismatch);
    const std::string& message = connected.error().message;
    EXPECT_NE(message.find("attention-0"), std::string::npos) << message;
    EXPECT_NE(message.find("experts-9"), std::string::npos) << message;
    EXPECT_NE(message.find("protocol " + std::to_string(proto::kProtocolVersion)),
              std::string::npos);
    EXPECT_NE(message.find("protocol " + std::to_string(proto::kProtocolVersion + 1)),
              std::string::npos);
    auto seen = theirs.receive(deadline_after(1s));
    ASSERT_FALSE(seen.has_value());
    EXPECT_EQ(seen.error().code, transport_error::version_mismatch);
    EXPECT_EQ(theirs.stats().refused_handshakes, 1u);
}

TEST_F(pair_fixture, ClosedPeerFailsReceivesAndSendsNamingIt) {
    std::thread waiter([&] {
        auto got = a.receive(deadline_after(5s), {.peer = a_to_b});
        ASSERT_FALSE(got.has_value());
        EXPECT_EQ(got.error().code, transport_error::peer_failed);
        EXPECT_NE(got.error().message.find("experts-0"), std::string::npos);
    });
    std::this_thread::sleep_for(50ms);
    b.close();
    waiter.join();
    auto sent = a.send(a_to_b, make_test_header(1, 0), {}, deadline_after(1s));
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::peer_failed);
    auto again = a.receive(deadline_after(1s), {.peer = a_to_b});  // sticky
    ASSERT_FALSE(again.has_value());
    EXPECT_EQ(again.error().code, transport_error::peer_failed);
    auto info = a.peer(a_to_b);
    ASSERT_TRUE(info.has_value());
    EXPECT_TRUE(info->failure.has_value());
}

TEST_F(pair_fixture, FramesQueuedBeforeAFailureAreStillDelivered) {
    const proto::frame_header header = make_test_header(1, 64);
    ASSERT_TRUE(a.send(a_to_b, header, {make_pattern(header)}, deadline_after(1s)));
    auto from_a = b.receive(deadline_after(1s));
    ASSERT_TRUE(from_a.has_value());
    ASSERT_TRUE(b.send(from_a->peer, header, {make_pattern(header)}, deadline_after(1s)));
    b.close();
    auto queued = a.receive(deadline_after(1s), {.peer = a_to_b});
    ASSERT_TRUE(queued.has_value());
    auto failed = a.receive(deadline_after(1s), {.peer = a_to_b});
    ASSERT_FALSE(failed.has_value());
    EXPECT_EQ(failed.error().code, transport_error::peer_failed);
}

TEST_F(pair_fixture, DisconnectFailsBothSides) {
    ASSERT_TRUE(a.disconnect(a_to_b, deadline_after(1s)));
    auto sent = a.send(a_to_b, make_test_header(1, 0), {}, deadline_after(1s));
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::peer_failed);
    auto event = b.receive(deadline_after(1s));
    ASSERT_FALSE(event.has_value());
    EXPECT_EQ(event.error().code, transport_error::peer_failed);
}

TEST_F(pair_fixture, CloseWakesAWaitingReceive) {
    std::thread waiter([&] {
        auto got = b.receive(deadline_after(10s));
        ASSERT_FALSE(got.has_value());
        EXPECT_EQ(got.error().code, transport_error::closed);
    });
    std::this_thread::sleep_for(50ms);
    const auto start = clock::now();
    b.close();
    waiter.join();
    EXPECT_LT(clock::now() - start, 1s);
    b.close();  // idempotent
}

TEST(Inproc, BadAddressAndUnknownPeer) {
    auto fabric = std::make_shared<inproc_fabric>();
    inproc_data_plane a{fabric, {.name = "a"}};
    auto connected = a.connect("inproc://nobody#1", deadline_after(1s));
    ASSERT_FALSE(connected.has_value());
    EXPECT_EQ(connected.error().code, transport_error::bad_address);
    connected = a.connect("ucx://127.0.0.1:1", deadline_after(1s));
    ASSERT_FALSE(connected.has_value());
    EXPECT_EQ(connected.error().code, transport_error::bad_address);
    auto sent = a.send(peer_id{42}, make_test_header(1, 0), {}, deadline_after(1s));
    ASSERT_FALSE(sent.has_value());
    EXPECT_EQ(sent.error().code, transport_error::unknown_peer);
}

}  // namespace
}  // namespace longcat::transport
