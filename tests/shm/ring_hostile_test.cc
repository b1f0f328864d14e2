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
#include "tests/shm/ring_test_fixture.h"

namespace mp::shm {
namespace {

using testutil::kCap;
using testutil::kMax;
using testutil::NowNs;
using testutil::Pattern;
using testutil::RingTest;
using testutil::SameBytes;

// ---- A hostile producer (the request ring written by hand) ----

TEST_F(RingTest, TailMovedBackwardsIsOutOfRange) {
  ASSERT_NO_FATAL_FAILURE(RoundTrip(16, 1));  // head and tail at 32
  request().tail.store(16);
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kTailOutOfRange);
  EXPECT_EQ(RingViolationName(worker_in_.violation()), "tail_out_of_range");
}

TEST_F(RingTest, TailBeyondCapacityIsOutOfRange) {
  PutHeader(0, 0, static_cast<uint32_t>(FrameKind::kCall));
  request().tail.store(kCap + kFrameAlign);
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kTailOutOfRange);
}

TEST_F(RingTest, MisalignedTail) {
  PutHeader(0, 0, static_cast<uint32_t>(FrameKind::kCall));
  request().tail.store(24);
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kMisaligned);
}

TEST_F(RingTest, LengthPastPublishedBytes) {
  PutHeader(0, 100, static_cast<uint32_t>(FrameKind::kCall));
  request().tail.store(32);  // 128 bytes claimed, 32 published
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kLengthPastRing);
}

TEST_F(RingTest, LengthPastRingEnd) {
  ASSERT_NO_FATAL_FAILURE(AdvanceTo(kCap - 32));
  const uint64_t head = request().head.load();
  PutHeader(kCap - 32, 100, static_cast<uint32_t>(FrameKind::kCall));
  request().tail.store(head + 256);  // enough is published, but the frame runs off the end
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kLengthPastRing);
}

TEST_F(RingTest, FrameLongerThanMax) {
  PutHeader(0, kMax + 1, static_cast<uint32_t>(FrameKind::kCall));
  request().tail.store(kCap);
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
                                           static_cast<uint32_t>(FrameKind::kError), 7u, 31u, 32u,
                                           33u, 0xffffffffu));

TEST_F(RingTest, ResponseRingRefusesRequestKinds) {
  std::byte* data = request_data() + kCap;  // the response ring follows the request ring
  for (FrameKind k : {FrameKind::kCall, FrameKind::kCancel, FrameKind::kStop}) {
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
  request().tail.store(kCap);
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadPadding);
}

TEST_F(RingTest, PadFrameLongerThanTheRestOfTheRing) {
  ASSERT_NO_FATAL_FAILURE(AdvanceTo(kCap - 64));
  PutHeader(kCap - 64, 100, static_cast<uint32_t>(FrameKind::kPad));
  request().tail.store(request().head.load() + kCap);
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadPadding);
}

TEST_F(RingTest, ValidPadFrameIsSkipped) {
  // A hand-written pad that covers exactly the rest of the ring, then a frame at offset 0.
  ASSERT_NO_FATAL_FAILURE(AdvanceTo(kCap - 64));
  const uint64_t head = request().head.load();
  PutHeader(kCap - 64, 64 - sizeof(FrameHeader), static_cast<uint32_t>(FrameKind::kPad));
  PutHeader(0, 3, static_cast<uint32_t>(FrameKind::kCancel), 77);
  request().tail.store(head + 64 + 32);
  FrameView f;
  ASSERT_EQ(worker_in_.Peek(&f), ReadStatus::kFrame) << RingViolationName(worker_in_.violation());
  EXPECT_EQ(f.kind, FrameKind::kCancel);
  EXPECT_EQ(f.call_id, 77u);
  EXPECT_EQ(f.payload.size(), 3u);
  EXPECT_EQ(request().head.load(), head + 64);  // the pad is consumed as soon as it is seen
  worker_in_.Pop();
  EXPECT_EQ(worker_in_.Peek(&f), ReadStatus::kEmpty);
}

TEST_F(RingTest, PadFrameNotFullyPublished) {
  PutHeader(0, kCap - sizeof(FrameHeader), static_cast<uint32_t>(FrameKind::kPad));
  request().tail.store(kCap / 2);  // the pad claims the whole ring, half is published
  EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kBadPadding);
}

TEST_F(RingTest, ViolationIsSticky) {
  request().tail.store(8);
  ASSERT_EQ(PeekRequest(), ReadStatus::kViolation);
  ASSERT_EQ(worker_in_.violation(), RingViolation::kMisaligned);
  // The producer "repairs" the ring; the reader must not trust it again.
  request().tail.store(0);
  bool wake;
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 1, Pattern(8, 1), &wake));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PeekRequest(), ReadStatus::kViolation);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kMisaligned);
  EXPECT_EQ(request().head.load(), 0u);
}

TEST(RingViolationTest, NamesAreStable) {
  EXPECT_EQ(RingViolationName(RingViolation::kNone), "none");
  EXPECT_EQ(RingViolationName(RingViolation::kTailOutOfRange), "tail_out_of_range");
  EXPECT_EQ(RingViolationName(RingViolation::kMisaligned), "misaligned_tail");
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
