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

// How long a worker spins for its next call before it sleeps, by time, adapted to how late the
// calls it missed came. The producer stamps the time of each futex wake in the ring
// (RingControl::woken_at_ns), so a worker that slept knows when its call arrived, measured
// from when it began to spin:
//   - a call that came after the spin ran out but within the maximum: a longer spin would have
//     caught it, so the window grows to cover it (plus a quarter);
//   - one that came later still (the worker was idle): spinning would have been wasted, so the
//     window shrinks by a quarter, never below max/32;
//   - a call caught while spinning leaves the window as it is.
// A worker fed back to back keeps spinning across the host's turnaround and is never woken;
// an idle one stops burning CPU. A maximum of 0 never spins. One per waiting thread.
class SpinBudget {
 public:
  explicit SpinBudget(int64_t max_ns) noexcept : max_ns_(max_ns), window_ns_(max_ns) {}
  int64_t window_ns() const noexcept { return window_ns_; }
  int64_t max_ns() const noexcept { return max_ns_; }
  void Caught() noexcept {}
  // The spin ran out; the call came `late_ns` after the spin began (the producer's stamp).
  void Missed(int64_t late_ns) noexcept;

 private:
  int64_t max_ns_;
  int64_t window_ns_;
};

// A worker's spin limit for `spin_iterations` (the config's spinIterations): 25 ns each, so
// the default 2000 is 50 µs.
inline int64_t SpinNanos(uint32_t spin_iterations) { return int64_t{spin_iterations} * 25; }

// WaitForFrame spinning as `spin` allows, which it then adapts.
bool WaitForFrame(RingReader& reader, SpinBudget& spin, int64_t timeout_ns) noexcept;

// Consumer side, after popping frames a producer may be waiting to replace: wakes the peer
// sleeping on `control`'s futex (its announced flag), if it announced. One read-modify-write
// of the flag when it did not.
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
