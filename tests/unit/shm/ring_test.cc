// Rings: frames round-trip intact at every size and wrap position, a full ring refuses and then
// drains, the sleep protocol tells the producer when to wake, and two processes echo frames
// through one ring file. Hostile peers: ring_hostile_test.cc.
#include "shm/ring.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "gtest/gtest.h"
#include "shm/doorbell.h"
#include "tests/unit/shm/ring_test_fixture.h"

namespace mp::shm {
namespace {

using testutil::kCap;
using testutil::kMax;
using testutil::NowNs;
using testutil::Pattern;
using testutil::RingTest;
using testutil::SameBytes;

TEST(RingFileTest, CreateRefusesBadCapacities) {
  for (uint64_t bad : {uint64_t{0}, uint64_t{2048}, uint64_t{5000}, uint64_t{12288}}) {
    auto f = RingFile::Create("ring_test", bad, kCap);
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_FALSE(RingFile::Create("ring_test", kCap, bad).ok()) << bad;
  }
}

TEST(RingFileTest, AttachChecksTheHeader) {
  auto f = RingFile::Create("ring_test", 8192, kCap);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->header()->magic, kRingMagic);
  EXPECT_EQ(f->header()->worker.forbidden_syscall.load(), -1);
  auto a = RingFile::Attach(UniqueFd(::dup(f->segment().fd())));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->request_capacity(), 8192u);
  EXPECT_EQ(a->response_capacity(), kCap);
  EXPECT_NE(a->header(), f->header());  // its own mapping of the same memfd

  f->header()->response_capacity = 8192;  // no longer matches the memfd size
  EXPECT_EQ(RingFile::Attach(UniqueFd(::dup(f->segment().fd()))).status().code(),
            absl::StatusCode::kDataLoss);
  f->header()->response_capacity = kCap;
  f->header()->magic = 0;
  EXPECT_FALSE(RingFile::Attach(UniqueFd(::dup(f->segment().fd()))).ok());

  auto tiny = Segment::Create("tiny", 100);
  ASSERT_TRUE(tiny.ok());
  EXPECT_FALSE(RingFile::Attach(std::move(*tiny).ReleaseFd()).ok());
}

TEST_F(RingTest, EmptyRingPeeksEmpty) {
  EXPECT_TRUE(worker_in_.Empty());
  EXPECT_EQ(PeekRequest(), ReadStatus::kEmpty);
  FrameView f;
  EXPECT_EQ(host_in_.Peek(&f), ReadStatus::kEmpty);
  EXPECT_EQ(worker_in_.violation(), RingViolation::kNone);
  EXPECT_EQ(kMax, kCap / 2 - sizeof(FrameHeader));
}

TEST_F(RingTest, FramesOfManySizesRoundTrip) {
  const uint64_t sizes[] = {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 100, 1000, kMax - 1, kMax};
  uint64_t id = 1;
  for (int round = 0; round < 5; ++round) {  // enough rounds to wrap several times
    for (uint64_t n : sizes) ASSERT_NO_FATAL_FAILURE(RoundTrip(n, id++));
  }
  EXPECT_GT(request().tail.load(), 4 * kCap);
  EXPECT_EQ(request().head.load(), request().tail.load());
}

TEST_F(RingTest, ResponseDirectionCarriesRepliesAndErrors) {
  auto payload = Pattern(77, 5);
  std::byte* p = worker_out_.Reserve(payload.size());
  ASSERT_NE(p, nullptr);
  std::memcpy(p, payload.data(), payload.size());
  EXPECT_FALSE(worker_out_.Commit(FrameKind::kReply, 5, payload.size()));
  bool wake;
  ASSERT_TRUE(worker_out_.TryWrite(FrameKind::kError, 6, {}, &wake));
  FrameView f;
  ASSERT_EQ(host_in_.Peek(&f), ReadStatus::kFrame);
  EXPECT_EQ(f.kind, FrameKind::kReply);
  EXPECT_EQ(f.call_id, 5u);
  EXPECT_TRUE(SameBytes(f.payload, payload));
  host_in_.Pop();
  ASSERT_EQ(host_in_.Peek(&f), ReadStatus::kFrame);
  EXPECT_EQ(f.kind, FrameKind::kError);
  EXPECT_EQ(f.payload.size(), 0u);
  host_in_.Pop();
  EXPECT_EQ(host_in_.Peek(&f), ReadStatus::kEmpty);
  EXPECT_TRUE(worker_in_.Empty());  // the request ring is untouched
}

TEST_F(RingTest, FullRingRefusesThenDrains) {
  constexpr uint64_t kPayload = 112;  // 128-byte frames
  ASSERT_EQ(RingWriter::FrameBytes(kPayload), 128u);
  uint64_t written = 0;
  bool wake;
  while (written < 1000 &&
         host_out_.TryWrite(FrameKind::kCall, written, Pattern(kPayload, written), &wake)) {
    ++written;
  }
  // The last 16 bytes (kRingSlack) stay free: the last 128-byte slot holds no frame.
  EXPECT_EQ(written, kCap / 128 - 1);
  EXPECT_NE(host_out_.Reserve(kPayload - 16), nullptr);  // 112 + 16 bytes fit in 128
  EXPECT_EQ(host_out_.Reserve(kPayload), nullptr);
  EXPECT_FALSE(host_out_.PeerCorrupt());

  FrameView f;
  ASSERT_EQ(worker_in_.Peek(&f), ReadStatus::kFrame);
  EXPECT_EQ(f.call_id, 0u);
  worker_in_.Pop();
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, written, Pattern(kPayload, written), &wake));
  ++written;
  EXPECT_EQ(host_out_.Reserve(kPayload), nullptr);  // full again
  for (uint64_t id = 1; id < written; ++id) {
    ASSERT_EQ(worker_in_.Peek(&f), ReadStatus::kFrame) << id;
    EXPECT_EQ(f.call_id, id);
    EXPECT_TRUE(SameBytes(f.payload, Pattern(kPayload, id)));
    worker_in_.Pop();
  }
  EXPECT_EQ(worker_in_.Peek(&f), ReadStatus::kEmpty);
}

TEST_F(RingTest, WrapsAtEveryOffsetClass) {
  uint64_t id = 1;
  for (uint64_t offset = 0; offset < kCap; offset += kFrameAlign) {
    const uint64_t to_end = kCap - offset;
    std::vector<uint64_t> sizes = {0, 1, kMax, std::min(kMax, to_end - sizeof(FrameHeader))};
    if (to_end - 15 <= kMax) sizes.push_back(to_end - 15);  // one byte too many: must pad
    for (uint64_t n : sizes) {
      ASSERT_NO_FATAL_FAILURE(AdvanceTo(offset));
      const uint64_t before = request().tail.load();
      const bool pads = RingWriter::FrameBytes(n) > to_end;
      auto payload = Pattern(n, id);
      bool wake;
      ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, id, payload, &wake)) << offset << "/" << n;
      EXPECT_EQ(request().tail.load(), before + (pads ? to_end : 0) + RingWriter::FrameBytes(n));
      if (pads) {
        FrameHeader pad;
        std::memcpy(&pad, request_data() + offset, sizeof pad);
        EXPECT_EQ(pad.kind, static_cast<uint32_t>(FrameKind::kPad));
        EXPECT_EQ(pad.length, to_end - sizeof(FrameHeader));
      }
      FrameView f;
      ASSERT_EQ(worker_in_.Peek(&f), ReadStatus::kFrame) << offset << "/" << n;
      EXPECT_EQ(f.kind, FrameKind::kCall);  // the pad frame is never delivered
      EXPECT_EQ(f.call_id, id);
      EXPECT_EQ(f.payload.data(), request_data() + (pads ? 0 : offset) + sizeof(FrameHeader));
      EXPECT_TRUE(SameBytes(f.payload, payload)) << offset << "/" << n;
      worker_in_.Pop();
      EXPECT_EQ(request().head.load(), request().tail.load());
      ++id;
    }
  }
}

TEST_F(RingTest, WriterRefusesFrameOverMax) {
  EXPECT_EQ(host_out_.Reserve(kMax + 1), nullptr);
  bool wake;
  EXPECT_FALSE(host_out_.TryWrite(FrameKind::kCall, 1, Pattern(kMax + 1, 1), &wake));
  EXPECT_FALSE(host_out_.PeerCorrupt());
  EXPECT_EQ(request().tail.load(), 0u);  // nothing was published
  ASSERT_NO_FATAL_FAILURE(RoundTrip(kMax, 2));
}

// ---- The sleep protocol ----

TEST_F(RingTest, CommitReportsSleepingConsumer) {
  bool wake = true;
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 1, {}, &wake));
  EXPECT_FALSE(wake);
  const uint32_t seq = worker_in_.AnnounceSleep();
  EXPECT_EQ(request().consumer_sleeping.load(), 1u);
  EXPECT_EQ(seq, request().wake_seq.load());
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 2, {}, &wake));
  EXPECT_TRUE(wake);
  WakeFutexConsumer(&request());
  EXPECT_EQ(request().wake_seq.load(), seq + 1);
  worker_in_.ClearSleeping();
  EXPECT_EQ(request().consumer_sleeping.load(), 0u);
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 3, {}, &wake));
  EXPECT_FALSE(wake);
}

TEST_F(RingTest, WaitForFrameReturnsWithDataOrTimesOut) {
  EXPECT_FALSE(WaitForFrame(worker_in_, 10, 1000000));  // empty: times out
  EXPECT_EQ(request().consumer_sleeping.load(), 0u);
  bool wake;
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 1, {}, &wake));
  EXPECT_TRUE(WaitForFrame(worker_in_, 0, 0));  // data: no sleep at all
  EXPECT_EQ(request().consumer_sleeping.load(), 0u);
}

TEST(SpinBudgetTest, AMissThatALongerSpinWouldHaveCaughtGrowsTheWindowToIt) {
  SpinBudget spin(50000);  // 50 µs
  EXPECT_EQ(spin.window_ns(), 50000);
  spin.Missed(1000000);  // came 1 ms after the spin began: idle, spinning would not have paid
  EXPECT_EQ(spin.window_ns(), 37500);  // - a quarter
  for (int i = 0; i < 30; ++i) spin.Missed(1000000);
  EXPECT_EQ(spin.window_ns(), 50000 / 32);  // the floor
  spin.Missed(8000);  // came 8 µs in: a 10 µs spin catches the next one like it
  EXPECT_EQ(spin.window_ns(), 10000);
  spin.Caught();
  EXPECT_EQ(spin.window_ns(), 10000);
  spin.Missed(45000);  // later, but within the maximum
  EXPECT_EQ(spin.window_ns(), 50000);  // capped
  spin.Missed(-1);     // no stamp: counted as idle
  EXPECT_EQ(spin.window_ns(), 37500);

  SpinBudget never(0);
  never.Missed(10);
  never.Caught();
  EXPECT_EQ(never.window_ns(), 0);
  EXPECT_EQ(SpinNanos(2000), 50000);
}

TEST_F(RingTest, AdaptiveWaitSpinsThenSleepsAndLearnsHowLateTheFrameCame) {
  SpinBudget spin(20000);  // 20 µs
  // Nothing comes: the spin runs out, the wait sleeps and times out (no frame, no lesson).
  EXPECT_FALSE(WaitForFrame(worker_in_, spin, 1000000));
  EXPECT_EQ(spin.window_ns(), 20000);
  EXPECT_EQ(request().consumer_sleeping.load(), 0u);
  // A frame already there is caught while spinning.
  bool wake;
  ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 1, {}, &wake));
  EXPECT_TRUE(WaitForFrame(worker_in_, spin, 0));
  EXPECT_EQ(spin.window_ns(), 20000);
  FrameView frame;
  ASSERT_EQ(worker_in_.Peek(&frame), ReadStatus::kFrame);
  worker_in_.Pop();
  // A frame that comes 5 ms after the spin began, with a wake: the window shrinks.
  std::thread producer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    bool w = false;
    ASSERT_TRUE(host_out_.TryWrite(FrameKind::kCall, 2, {}, &w));
    if (w) WakeFutexConsumer(&request());
  });
  EXPECT_TRUE(WaitForFrame(worker_in_, spin, 0));
  producer.join();
  EXPECT_EQ(spin.window_ns(), 15000);
}

// Two threads through a 4 KiB ring, neither ever spinning, so that every wait is the sleep
// protocol: the consumer sleeps on the ring's futex until the producer's Commit says to wake it;
// the producer, out of room, sleeps until the consumer's pop wakes it. A lost wake-up shows as a
// consumer wait that times out. Every frame arrives once, in order, intact. (tools/test also
// runs this under ThreadSanitizer.)
TEST_F(RingTest, TwoThreadsNeverLoseAWakeUp) {
  constexpr uint64_t kFrames = 20000;
  RingControl& response = file_->header()->response;
  std::atomic<bool> producer_failed{false};
  std::atomic<bool> producer_done{false};
  std::thread producer([&] {
    struct Done {
      std::atomic<bool>& done;
      ~Done() { done = true; }
    } done{producer_done};
    for (uint64_t seq = 1; seq <= kFrames; ++seq) {
      const uint64_t bytes = 8 + (seq * 37) % 600;  // wraps the ring at every offset class
      std::byte* p = ReserveWaiting(worker_out_, worker_in_, bytes, /*spin_iterations=*/0);
      if (p == nullptr) {
        producer_failed = true;
        return;
      }
      std::memcpy(p, &seq, sizeof seq);
      std::memset(p + sizeof seq, static_cast<int>(seq & 0xff), bytes - sizeof seq);
      if (worker_out_.Commit(FrameKind::kReply, seq, bytes)) WakeFutexConsumer(&response);
    }
  });
  uint64_t expected = 1;
  int lost_wakeups = 0;
  const int64_t deadline = NowNs() + int64_t{60} * 1000000000;
  while (expected <= kFrames && !producer_failed && NowNs() < deadline) {
    if (!WaitForFrame(host_in_, /*spin_iterations=*/0, /*timeout_ns=*/2000000000)) {
      ++lost_wakeups;  // 2 s with a frame due: nobody woke us
      continue;
    }
    FrameView frame;
    const ReadStatus st = host_in_.Peek(&frame);
    if (st == ReadStatus::kEmpty) continue;
    if (st != ReadStatus::kFrame) {
      ADD_FAILURE() << RingViolationName(host_in_.violation());
      break;
    }
    uint64_t seq = 0;
    if (frame.payload.size() >= sizeof seq) std::memcpy(&seq, frame.payload.data(), sizeof seq);
    if (frame.call_id != expected || frame.payload.size() != 8 + (expected * 37) % 600 ||
        seq != expected) {
      ADD_FAILURE() << "frame " << expected << ": call " << frame.call_id << ", "
                    << frame.payload.size() << " bytes, sequence " << seq;
      break;
    }
    size_t bad = 0, first_bad = 0;
    for (size_t i = sizeof seq; i < frame.payload.size(); ++i) {
      if (frame.payload[i] != static_cast<std::byte>(expected & 0xff)) {
        if (bad++ == 0) first_bad = i;
      }
    }
    if (bad != 0) {
      ADD_FAILURE() << "frame " << expected << " of " << frame.payload.size() << " bytes: " << bad
                    << " wrong, from byte " << first_bad;
      break;
    }
    host_in_.Pop();
    WakeFutexConsumerIfSleeping(&request());  // the producer may be waiting for room
    ++expected;
  }
  // After a failure, frames are drained so that the producer can finish and be joined.
  while (!producer_done) {
    FrameView frame;
    if (host_in_.Peek(&frame) == ReadStatus::kFrame) {
      host_in_.Pop();
      WakeFutexConsumerIfSleeping(&request());
    } else {
      std::this_thread::yield();
    }
  }
  producer.join();
  EXPECT_FALSE(producer_failed);
  EXPECT_EQ(expected, kFrames + 1);
  EXPECT_EQ(lost_wakeups, 0);
}

// ---- Two processes ----

// Kills and reaps the child if a failed assertion leaves the test early.
struct ChildGuard {
  pid_t pid;
  ~ChildGuard() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// Worker side of the echo test: returns the exit code.
int EchoChild(int fd) {
  auto f = RingFile::Attach(UniqueFd(::dup(fd)));
  if (!f.ok()) return 10;
  RingReader in = f->RequestReader();
  RingWriter out = f->ResponseWriter();
  const int64_t deadline = NowNs() + int64_t{60} * 1000000000;
  while (NowNs() < deadline) {
    if (!WaitForFrame(in, 1000, 1000000000)) continue;
    FrameView frame;
    ReadStatus st = in.Peek(&frame);
    if (st == ReadStatus::kEmpty) continue;
    if (st == ReadStatus::kViolation) return 11;
    if (frame.kind == FrameKind::kStop) return 0;
    std::byte* p;
    while ((p = out.Reserve(frame.payload.size())) == nullptr) {
      if (out.PeerCorrupt() || NowNs() > deadline) return 12;
      sched_yield();
    }
    std::memcpy(p, frame.payload.data(), frame.payload.size());
    const bool wake = out.Commit(FrameKind::kReply, frame.call_id, frame.payload.size());
    in.Pop();
    if (wake) WakeFutexConsumer(&f->header()->response);
  }
  return 13;
}

TEST(RingTwoProcessTest, ChildEchoesFramesInOrder) {
  constexpr uint64_t kRequestCap = 16384, kResponseCap = 8192;
  constexpr uint64_t kFrames = 3000;
  auto file = RingFile::Create("ring_test.echo", kRequestCap, kResponseCap);
  ASSERT_TRUE(file.ok());
  auto size_of = [](uint64_t i) -> uint64_t {
    return i % 100 == 0 ? MaxFramePayload(kResponseCap) : (i * 97) % 700;
  };
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) _exit(EchoChild(file->segment().fd()));
  ChildGuard guard{pid};

  RingWriter out = file->RequestWriter();
  RingReader in = file->ResponseReader();
  uint64_t sent = 0, received = 0;
  const int64_t deadline = NowNs() + int64_t{60} * 1000000000;
  while (received < kFrames && NowNs() < deadline) {
    bool wake = false;
    while (sent < kFrames &&
           out.TryWrite(FrameKind::kCall, sent, Pattern(size_of(sent), sent), &wake)) {
      if (wake) WakeFutexConsumer(&file->header()->request);
      ++sent;
    }
    FrameView f;
    ReadStatus st = in.Peek(&f);
    ASSERT_NE(st, ReadStatus::kViolation) << RingViolationName(in.violation());
    if (st == ReadStatus::kEmpty) {
      WaitForFrame(in, 1000, 100000000);
      continue;
    }
    ASSERT_EQ(f.kind, FrameKind::kReply);
    ASSERT_EQ(f.call_id, received);
    ASSERT_TRUE(SameBytes(f.payload, Pattern(size_of(received), received))) << received;
    in.Pop();
    ++received;
  }
  ASSERT_EQ(received, kFrames);

  bool wake = false;
  while (!out.TryWrite(FrameKind::kStop, 0, {}, &wake) && NowNs() < deadline) sched_yield();
  WakeFutexConsumer(&file->header()->request);
  int status = 0;
  pid_t r = 0;
  while ((r = ::waitpid(pid, &status, WNOHANG)) == 0 && NowNs() < deadline + 10000000000) {
    ::usleep(1000);
  }
  ASSERT_EQ(r, pid) << "child did not exit";
  guard.pid = 0;
  ASSERT_TRUE(WIFEXITED(status)) << "child died with signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace mp::shm
