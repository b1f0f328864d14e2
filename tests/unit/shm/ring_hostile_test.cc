// Rings against a hostile peer: the test writes the shared control words and frame headers by
// hand, and the other end must detect every impossible state and never trust it again.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "gtest/gtest.h"
#include "shm/doorbell.h"
#include "shm/ring.h"
#include "tests/unit/shm/ring_test_fixture.h"

namespace mp::shm {
namespace {

using testutil::kCap;
using testutil::kMax;
using testutil::NowNs;
using testutil::Pattern;
using testutil::RingTest;
using testutil::SameBytes;

// ---- A hostile producer (the request ring written by hand) ----

TEST_F(RingTest, SharedTailIsNeverTrusted) {
  // The consumer reads frames by their publication words; whatever the producer writes into
  // the shared tail (backwards, past the capacity, misaligned) changes nothing.
  ASSERT_NO_FATAL_FAILURE(RoundTrip(16, 1));  // head and tail at 32
  for (uint64_t bogus : {uint64_t{16}, kCap + kFrameAlign, uint64_t{24}, ~uint64_t{0}}) {
    request().tail.store(bogus);
    EXPECT_EQ(PeekRequest(), ReadStatus::kEmpty) << bogus;
    EXPECT_TRUE(worker_in_.Empty());
  }
  bool wake;
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 2, Pattern(8, 2), &wake));
  FrameView f;
  ASSERT_EQ(worker_in_.Peek(&f), ReadStatus::kFrame);
  EXPECT_EQ(f.call_id, 2u);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kNone);
}

TEST_F(RingTest, UnpublishedSlotReadsEmptyWhateverFollows) {
  // Bytes after a zero publication word (a frame being written) are never looked at.
  std::memset(request_data() + 8, 0x5a, 200);
  EXPECT_EQ(PeekRequest(), ReadStatus::kEmpty);
  EXPECT_TRUE(worker_in_.Empty());
}

TEST_F(RingTest, LengthPastRingEnd) {
  ASSERT_NO_FATAL_FAILURE(AdvanceTo(kCap - 32));
  const uint64_t head = request().head.load();
  (void)head;
  PutHeader(kCap - 32, 100, static_cast<uint32_t>(FrameKind::kCall));  // runs off the end
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kLengthPastRing);
}

TEST_F(RingTest, FrameLongerThanMax) {
  PutHeader(0, kMax + 1, static_cast<uint32_t>(FrameKind::kCall));
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kFrameTooLarge);
}

class BadKindTest : public RingTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(BadKindTest, RequestRingRefusesKind) {
  PutHeader(0, 0, GetParam());
  request().tail.store(16);
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadKind);
  EXPECT_EQ(request().head.load(), 0u);
}

INSTANTIATE_TEST_SUITE_P(UnknownOrWrongDirection, BadKindTest,
                         ::testing::Values(static_cast<uint32_t>(FrameKind::kReply),
                                           static_cast<uint32_t>(FrameKind::kError),
                                           static_cast<uint32_t>(FrameKind::kServiceRequest), 10u,
                                           31u, 32u, 33u, 0xffffffffu));

TEST_F(RingTest, ResponseRingRefusesRequestKinds) {
  std::byte* data = request_data() + kCap;  // the response ring follows the request ring
  for (FrameKind k : {FrameKind::kCall, FrameKind::kCancel, FrameKind::kStop,
                      FrameKind::kServiceReply}) {
    FrameHeader h{0, static_cast<uint32_t>(k), 1};
    std::memcpy(data, &h, sizeof h);
    file_->header()->response.head.store(0);
    file_->header()->response.tail.store(16);
    RingReader reader = file_->ResponseReader();  // a fresh reader per kind
    FrameView view;
    EXPECT_EQ(reader.Peek(&view), ReadStatus::kViolation) << static_cast<int>(k);
    EXPECT_EQ(reader.violation(), RingViolation::kBadKind);
  }
}

TEST_F(RingTest, PadFrameWithWrongLength) {
  // The whole ring is published, but the pad does not claim to reach the ring's end.
  PutHeader(0, 0, static_cast<uint32_t>(FrameKind::kPad));
  PutHeader(16, 0, static_cast<uint32_t>(FrameKind::kCall));
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadPadding);
}

TEST_F(RingTest, PadFrameLongerThanTheRestOfTheRing) {
  ASSERT_NO_FATAL_FAILURE(AdvanceTo(kCap - 64));
  PutHeader(kCap - 64, 100, static_cast<uint32_t>(FrameKind::kPad));
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadPadding);
}

TEST_F(RingTest, ValidPadFrameIsSkipped) {
  // A hand-written pad that covers exactly the rest of the ring, then a frame at offset 0.
  ASSERT_NO_FATAL_FAILURE(AdvanceTo(kCap - 64));
  const uint64_t head = request().head.load();
  PutHeader(kCap - 64, 64 - sizeof(FrameHeader), static_cast<uint32_t>(FrameKind::kPad));
  PutHeader(0, 3, static_cast<uint32_t>(FrameKind::kCancel), 77);
  std::memset(request_data() + 32, 0, 8);  // the next slot, as a producer clears it
  FrameView f;
  ASSERT_EQ(worker_in_.Peek(&f), ReadStatus::kFrame) << RingViolationName(worker_in_.violation());
  EXPECT_EQ(f.kind, FrameKind::kCancel);
  EXPECT_EQ(f.call_id, 77u);
  EXPECT_EQ(f.payload.size(), 3u);
  EXPECT_EQ(request().head.load(), head + 64);  // the pad is consumed as soon as it is seen
  worker_in_.Pop();
  EXPECT_EQ(worker_in_.Peek(&f), ReadStatus::kEmpty);
}

TEST_F(RingTest, PadCoveringTheWholeRingIsRefused) {
  // A pad at offset 0 would lead back to itself: a reader that followed it would spin forever.
  PutHeader(0, kCap - sizeof(FrameHeader), static_cast<uint32_t>(FrameKind::kPad));
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadPadding);
  EXPECT_EQ(request().head.load(), 0u);
}

TEST_F(RingTest, ViolationIsSticky) {
  PutHeader(0, 0, 99);
  ASSERT_EQ(PeekRequest(), ReadStatus::kViolation);
  ASSERT_EQ(worker_in_.violation(), RingViolation::kBadKind);
  // The producer "repairs" the ring; the reader must not trust it again.
  std::memset(request_data(), 0, 16);
  bool wake;
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 1, Pattern(8, 1), &wake));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadKind);
  EXPECT_EQ(request().head.load(), 0u);
}

TEST(RingViolationTest, NamesAreStable) {
  EXPECT_EQ(RingViolationName(RingViolation::kNone), "none");
  EXPECT_EQ(RingViolationName(RingViolation::kMisaligned), "misaligned_head");
  EXPECT_EQ(RingViolationName(RingViolation::kLengthPastRing), "length_past_ring");
  EXPECT_EQ(RingViolationName(RingViolation::kFrameTooLarge), "frame_too_large");
  EXPECT_EQ(RingViolationName(RingViolation::kBadKind), "bad_kind");
  EXPECT_EQ(RingViolationName(RingViolation::kBadPadding), "bad_padding");
}

// ---- A hostile consumer (the head written by hand) ----

TEST_F(RingTest, ReaderRefusesAMisalignedStartingHead) {
  auto ring = RingFile::Create("misaligned", kCap, kCap);
  ASSERT_TRUE(ring.ok());
  ring->header()->response.head.store(8);
  ring->header()->response.tail.store(8);
  RingReader reader = ring->ResponseReader();
  FrameView frame;
  EXPECT_EQ(reader.Peek(&frame), ReadStatus::kViolation);
  EXPECT_EQ(reader.violation(), RingViolation::kMisaligned);
}

// The writer re-reads the shared head only when its cached copy leaves too little room, so a
// corrupt head is caught the next time the writer needs it: before it could write anything the
// head does not allow. Writes frames until the writer refuses; returns how many it wrote.
int FillUntilRefused(RingWriter& w) {
  int frames = 0;
  while (frames < 100000) {
    std::byte* p = w.Reserve(64);
    if (p == nullptr) break;
    w.Commit(FrameKind::kCall, 1, 64);
    ++frames;
  }
  return frames;
}

TEST_F(RingTest, WriterDetectsHeadAheadOfTail) {
  ASSERT_NO_FATAL_FAILURE(RoundTrip(16, 1));  // tail at 32
  request().head.store(uint64_t{1} << 40);    // far beyond anything written
  FillUntilRefused(host_out_);
  EXPECT_TRUE(host_out_.PeerCorrupt());
  request().head.store(request().tail.load());  // once corrupt, always corrupt
  EXPECT_EQ(host_out_.Reserve(0), nullptr);
  EXPECT_TRUE(host_out_.PeerCorrupt());
}

TEST_F(RingTest, WriterDetectsHeadTooFarBehind) {
  for (uint64_t id = 0; request().tail.load() <= kCap; ++id) {
    ASSERT_NO_FATAL_FAILURE(RoundTrip(1000, id));
  }
  request().head.store(0);  // claims more than a ring's worth is unread
  const int written = FillUntilRefused(host_out_);
  EXPECT_TRUE(host_out_.PeerCorrupt());
  EXPECT_LE(static_cast<uint64_t>(written) * 80, kCap);  // never more than a ring's worth
}

TEST_F(RingTest, WriterDetectsHeadMovingBackwards) {
  ASSERT_NO_FATAL_FAILURE(RoundTrip(16, 1));
  FillUntilRefused(host_out_);  // the writer has read the head (the ring is full)
  EXPECT_FALSE(host_out_.PeerCorrupt());
  request().head.store(0);  // back before what it had consumed
  FillUntilRefused(host_out_);
  EXPECT_TRUE(host_out_.PeerCorrupt());
}

}  // namespace
}  // namespace mp::shm
