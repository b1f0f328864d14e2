// Doorbells: the eventfd the worker rings for the host, and the futex wake the host uses for a
// worker asleep in WaitForFrame.
#include "shm/doorbell.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <optional>
#include <thread>

#include "gtest/gtest.h"
#include "shm/ring.h"

namespace mp::shm {
namespace {

// Reads the eventfd counter; nullopt if it is zero (EAGAIN on a non-blocking eventfd).
std::optional<uint64_t> ReadCounter(int fd) {
  uint64_t n = 0;
  if (::read(fd, &n, sizeof n) != sizeof n) return std::nullopt;
  return n;
}

TEST(DoorbellTest, CreatesNonBlockingCloseOnExecEventfd) {
  auto bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok()) << bell.status();
  EXPECT_TRUE(::fcntl(bell->fd(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(bell->fd(), F_GETFD) & FD_CLOEXEC);
  errno = 0;
  EXPECT_EQ(ReadCounter(bell->fd()), std::nullopt);  // nothing rung yet
  EXPECT_EQ(errno, EAGAIN);
}

TEST(DoorbellTest, RingsAccumulateUntilDrained) {
  auto bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok());
  bell->Ring();
  RingDoorbell(bell->fd());
  bell->Ring();
  EXPECT_EQ(ReadCounter(bell->fd()), 3u);
  bell->Ring();
  bell->Drain();
  EXPECT_EQ(ReadCounter(bell->fd()), std::nullopt);
  bell->Drain();  // draining an empty doorbell does not block
}

// The host's event loop (KJ) watches a doorbell edge-triggered and reads its counter only now and
// then: it relies on every ring being an edge of its own, even while the counter is not zero.
TEST(DoorbellTest, EveryRingIsAnEdgeWithoutADrain) {
  auto bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok());
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  ASSERT_GE(ep.get(), 0);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;
  ASSERT_EQ(::epoll_ctl(ep.get(), EPOLL_CTL_ADD, bell->fd(), &ev), 0);
  epoll_event out[1];
  EXPECT_EQ(::epoll_wait(ep.get(), out, 1, 0), 0);
  for (int ring = 1; ring <= 3; ++ring) {
    bell->Ring();
    EXPECT_EQ(::epoll_wait(ep.get(), out, 1, 0), 1) << "ring " << ring;
    EXPECT_EQ(::epoll_wait(ep.get(), out, 1, 0), 0) << "ring " << ring << ", seen once";
  }
  EXPECT_EQ(ReadCounter(bell->fd()), 3u);
}

TEST(DoorbellTest, ReleaseFdGivesUpOwnership) {
  auto bell = Doorbell::Create();
  ASSERT_TRUE(bell.ok());
  const int raw = bell->fd();
  UniqueFd fd = std::move(*bell).ReleaseFd();
  EXPECT_EQ(fd.get(), raw);
  RingDoorbell(fd.get());
  EXPECT_EQ(ReadCounter(fd.get()), 1u);
}

// A consumer thread sleeping on the futex wakes for a frame committed after it fell asleep.
TEST(FutexWakeTest, SleepingConsumerWakesOnCommit) {
  auto file = RingFile::Create("doorbell_test", 4096, 4096);
  ASSERT_TRUE(file.ok());
  RingWriter writer = file->RequestWriter();
  RingReader reader = file->RequestReader();
  std::atomic<int> result{-1};
  std::thread consumer([&] {
    // No spinning, 30 s bound: returns true only if data arrived.
    result = WaitForFrame(reader, 0, int64_t{30} * 1000000000) ? 1 : 0;
  });
  // Wait (bounded) until the consumer has announced its sleep, then publish and wake.
  RingControl& control = file->header()->request;
  for (int i = 0; i < 30000 && control.consumer_sleeping.load() == 0; ++i) ::usleep(1000);
  ASSERT_EQ(control.consumer_sleeping.load(), 1u) << "consumer never went to sleep";
  bool wake = false;
  ASSERT_TRUE(writer.TryWrite(FrameKind::kCall, 1, {}, &wake));
  EXPECT_TRUE(wake);  // the producer learns it must wake the consumer
  if (wake) WakeFutexConsumer(&control);
  consumer.join();
  EXPECT_EQ(result.load(), 1);
  EXPECT_EQ(control.consumer_sleeping.load(), 0u);
  FrameView frame;
  ASSERT_EQ(reader.Peek(&frame), ReadStatus::kFrame);
  EXPECT_EQ(frame.call_id, 1u);
}

}  // namespace
}  // namespace mp::shm
