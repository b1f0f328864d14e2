#include "shm/doorbell.h"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "shm/sys.h"

namespace mp::shm {
namespace {

inline void CpuRelax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  asm volatile("" ::: "memory");
#endif
}

// Shared (not FUTEX_PRIVATE) because the word lives in a memfd mapped by two processes.
long Futex(std::atomic<uint32_t>* word, int op, uint32_t val, const timespec* timeout) {
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, timeout, nullptr, 0);
}

}  // namespace

static int64_t MonotonicNs() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the vDSO: no syscall
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

void WakeFutexConsumer(RingControl* control) noexcept {
  control->woken_at_ns.store(MonotonicNs(), std::memory_order_relaxed);
  control->wake_seq.fetch_add(1, std::memory_order_release);
  Futex(&control->wake_seq, FUTEX_WAKE, 1, nullptr);
}

void SpinBudget::Missed(int64_t late_ns) noexcept {
  if (late_ns >= 0 && late_ns <= max_ns_) {
    window_ns_ = std::min(max_ns_, late_ns + late_ns / 4);
  } else {
    window_ns_ = std::max(max_ns_ / 32, window_ns_ - window_ns_ / 4);
  }
}

bool WaitForFrame(RingReader& reader, SpinBudget& spin, int64_t timeout_ns) noexcept {
  const int64_t window = spin.window_ns();
  if (window <= 0) return WaitForFrame(reader, 0, timeout_ns);
  const int64_t start = MonotonicNs();
  for (uint32_t i = 1;; ++i) {
    if (reader.MaybeReady() && !reader.Empty()) {
      spin.Caught();
      return true;
    }
    CpuRelax();
    if ((i & 15) == 0 && MonotonicNs() - start >= window) break;
  }
  if (!WaitForFrame(reader, 0, timeout_ns)) return false;
  // When the producer woke us; a stamp from before the spin means the call came without a
  // wake (between our announcing sleep and our futex wait): at about now.
  const int64_t woken = reader.control()->woken_at_ns.load(std::memory_order_relaxed);
  spin.Missed((woken >= start ? woken : MonotonicNs()) - start);
  return true;
}

bool WaitForFrame(RingReader& reader, uint32_t spin_iterations, int64_t timeout_ns) noexcept {
  for (uint32_t i = 0; i < spin_iterations; ++i) {
    if (reader.MaybeReady() && !reader.Empty()) return true;
    CpuRelax();
  }
  if (timeout_ns < 0) return !reader.Empty();  // spin only
  timespec deadline{};
  if (timeout_ns > 0) {
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += timeout_ns / 1000000000;
    deadline.tv_nsec += timeout_ns % 1000000000;
    if (deadline.tv_nsec >= 1000000000) {
      deadline.tv_sec += 1;
      deadline.tv_nsec -= 1000000000;
    }
  }
  for (;;) {
    const uint32_t seq = reader.AnnounceSleep();
    if (!reader.Empty()) break;
    timespec rel{};
    if (timeout_ns > 0) {
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      int64_t left = (deadline.tv_sec - now.tv_sec) * 1000000000 + (deadline.tv_nsec - now.tv_nsec);
      if (left <= 0) {
        reader.ClearSleeping();
        return !reader.Empty();
      }
      rel.tv_sec = left / 1000000000;
      rel.tv_nsec = left % 1000000000;
    }
    Futex(&reader.control()->wake_seq, FUTEX_WAIT, seq, timeout_ns > 0 ? &rel : nullptr);
    if (!reader.Empty()) break;
  }
  reader.ClearSleeping();
  return true;
}

void WakeFutexConsumerIfSleeping(RingControl* control) noexcept {
  // Pairs with the exchange in AnnounceSleep, as RingWriter::Commit does: our head stores
  // (Pop) are visible to a producer that announced after this, or we read its flag.
  if (control->consumer_sleeping.fetch_add(0, std::memory_order_acq_rel) != 0) {
    WakeFutexConsumer(control);
  }
}

std::byte* ReserveWaiting(RingWriter& writer, RingReader& sleep_on, uint64_t payload_bytes,
                          uint32_t spin_iterations) noexcept {
  for (uint32_t i = 0;; ++i) {
    if (std::byte* p = writer.Reserve(payload_bytes)) return p;
    if (writer.PeerCorrupt() || payload_bytes > MaxFramePayload(writer.capacity())) return nullptr;
    if (i < spin_iterations) {
      CpuRelax();
      continue;
    }
    const uint32_t seq = sleep_on.AnnounceSleep();
    std::byte* p = writer.Reserve(payload_bytes);  // re-check after announcing
    if (p == nullptr && !writer.PeerCorrupt()) {
      // The consumer wakes us after it released frames; the timeout backs that up (and
      // bounds the wait on a consumer that never announces).
      const timespec backstop{0, 1000000};
      Futex(&sleep_on.control()->wake_seq, FUTEX_WAIT, seq, &backstop);
    }
    sleep_on.ClearSleeping();
    if (p != nullptr) return p;
  }
}

absl::StatusOr<Doorbell> Doorbell::Create() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return ErrnoStatus("eventfd", errno);
  return Doorbell(UniqueFd(fd));
}

void RingDoorbell(int fd) noexcept {
  uint64_t one = 1;
  ssize_t r;
  do {
    r = ::write(fd, &one, sizeof one);
  } while (r < 0 && errno == EINTR);
}

void Doorbell::Ring() const noexcept { RingDoorbell(fd_.get()); }

uint64_t Doorbell::Drain() const noexcept {
  uint64_t n = 0;
  ssize_t r;
  do {
    r = ::read(fd_.get(), &n, sizeof n);
  } while (r < 0 && errno == EINTR);
  return r == sizeof n ? n : 0;
}

}  // namespace mp::shm
