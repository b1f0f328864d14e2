// Waking a sleeping peer: a futex on a shared word (host → worker) and an eventfd that the
// host's event loop watches (worker → host).
#pragma once

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "shm/ring.h"
#include "shm/unique_fd.h"

namespace mp::shm {

// Wakes the consumer of `control` (after a Commit that returned true). One futex syscall.
void WakeFutexConsumer(RingControl* control) noexcept;

// Worker side: returns when `reader` has data, after spinning `spin_iterations` checks and
// then sleeping on the futex. Returns false if `timeout_ns` (0 = forever) passed first;
// a negative `timeout_ns` only spins.
bool WaitForFrame(RingReader& reader, uint32_t spin_iterations, int64_t timeout_ns) noexcept;

// How long a worker spins before it sleeps, adapted to what spinning achieves (additive
// increase, multiplicative decrease): a wait that ends while spinning adds max/8 to the
// budget, one that has to sleep takes a quarter off, never below max/32 (so that spinning can
// prove itself again). The budget holds at the maximum while at least two waits in three end
// while spinning. Where calls come back to back, within the budget, a worker keeps spinning
// and its host makes no wake syscall; where it sleeps through the budget anyway (more
// workers than cores, or little load), it stops burning CPU that the host and the other
// workers need. A maximum of 0 never spins. One per waiting thread.
class SpinBudget {
 public:
  explicit SpinBudget(uint32_t max_iterations) noexcept
      : max_(max_iterations), budget_(max_iterations) {}
  uint32_t budget() const noexcept { return budget_; }
  void Caught() noexcept;  // the frame came while spinning
  void Missed() noexcept;  // the spin ran out

 private:
  uint32_t max_;
  uint32_t budget_;
};

// WaitForFrame spinning as `spin` allows, which it then adapts.
bool WaitForFrame(RingReader& reader, SpinBudget& spin, int64_t timeout_ns) noexcept;

// Consumer side, after popping frames a producer may be waiting to replace: wakes the peer
// sleeping on `control`'s futex (its announced flag), if it announced. A fence and a load
// when it did not.
void WakeFutexConsumerIfSleeping(RingControl* control) noexcept;

// Worker side: Reserve()s `payload_bytes` in `writer`, spinning `spin_iterations` times and
// then sleeping on `sleep_on`'s futex (the worker's one sleep word) until the host, which
// consumes the other ring, wakes it with WakeFutexConsumerIfSleeping (or 1 ms passes).
// nullptr if the frame can never fit or the consumer corrupted the ring.
std::byte* ReserveWaiting(RingWriter& writer, RingReader& sleep_on, uint64_t payload_bytes,
                          uint32_t spin_iterations) noexcept;

// Adds 1 to the eventfd `fd` (non-owning). Async-signal-safe, allocation-free.
void RingDoorbell(int fd) noexcept;

// An eventfd: Ring() from any process holding the fd; the owner's event loop drains it.
class Doorbell {
 public:
  static absl::StatusOr<Doorbell> Create();
  explicit Doorbell(UniqueFd fd) : fd_(std::move(fd)) {}
  void Ring() const noexcept;   // async-signal-safe, allocation-free
  // Non-blocking read that resets the counter; how many rings it held.
  uint64_t Drain() const noexcept;
  int fd() const noexcept { return fd_.get(); }
  UniqueFd ReleaseFd() && noexcept { return std::move(fd_); }

 private:
  UniqueFd fd_;
};

}  // namespace mp::shm
