// What bench/ring_latency's two processes share: its options, timing and statistics, and the
// baselines it measures the ring against (a cache line bouncing between cores, a raw futex,
// socketpair, pipe and TCP ping-pong: ipc_baselines.cc). Benchmark code: it dies on any error.
#pragma once

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "shm/sys.h"
#include "shm/unique_fd.h"

namespace mp::bench {

constexpr size_t kFdMessageBytes = 64;  // socketpair, pipe, TCP ping-pong

struct Options {
  int64_t iterations = 20000;   // timed round trips per latency line
  int64_t warmup = 2000;        // untimed round trips before them
  double stream_seconds = 1.0;  // timed streaming per throughput line
  bool quick = false;
  bool unpinned = false;  // leave both processes to the scheduler (as mphost's are)
  bool yield_when_spinning = false;  // one CPU: a spinner must hand the CPU to its peer
};

// ---- Plumbing -------------------------------------------------------------------------------

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "ring_latency: %s\n", what.c_str());
  std::fflush(stderr);
  _exit(2);
}
[[noreturn]] inline void DieErrno(std::string_view what) {
  Die(ErrnoStatus(absl::string_view(what.data(), what.size()), errno).ToString());
}
template <typename T>
T Check(absl::StatusOr<T> v) {
  if (!v.ok()) Die(v.status().ToString());
  return *std::move(v);
}

inline int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

inline void SpinPause(const Options& o) {
  if (o.yield_when_spinning) sched_yield();
}

// Shared (not FUTEX_PRIVATE): the words live in a mapping shared by two processes.
inline void FutexWait(std::atomic<uint32_t>* word, uint32_t expected) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, nullptr, nullptr,
            0);
}
inline void FutexWake(std::atomic<uint32_t>* word) {
  ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, 1, nullptr, nullptr, 0);
}

// Moves exactly `n` bytes through a blocking descriptor, in whatever pieces it takes.
inline void Transfer(int fd, std::byte* p, size_t n, bool write) {
  while (n > 0) {
    const ssize_t r = RetryEintr([&] { return write ? ::write(fd, p, n) : ::read(fd, p, n); });
    if (r == 0) Die("the peer closed the connection");
    if (r < 0) DieErrno(write ? "write" : "read");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

// ---- Latency statistics ---------------------------------------------------------------------

struct Latency {
  int64_t p50_ns = 0;
  int64_t p99_ns = 0;
};

// Nearest-rank percentiles.
inline Latency Percentiles(std::vector<int64_t> samples) {
  std::sort(samples.begin(), samples.end());
  auto rank = [&](size_t p) { return samples[(samples.size() * p + 99) / 100 - 1]; };
  return {rank(50), rank(99)};
}

// Runs o.warmup untimed, then o.iterations timed round trips; `round_trip(k)` performs round
// trip k, counting from 1 over both. The peer answers o.warmup + o.iterations of them.
template <typename RoundTrip>
Latency TimeRoundTrips(const Options& o, RoundTrip&& round_trip) {
  uint64_t k = 0;
  for (int64_t i = 0; i < o.warmup; ++i) round_trip(++k);
  std::vector<int64_t> samples(static_cast<size_t>(o.iterations));  // touched before timing
  for (int64_t& sample : samples) {
    const int64_t t0 = NowNs();
    round_trip(++k);
    sample = NowNs() - t0;
  }
  return Percentiles(std::move(samples));
}

inline uint64_t Rounds(const Options& o) { return static_cast<uint64_t>(o.warmup + o.iterations); }

// ---- What both processes share (made before the fork) --------------------------------------

// ---- What both processes share (made before the fork) --------------------------------------

// Words in a MAP_SHARED anonymous mapping; each on its own cache line.
struct SharedWords {
  alignas(64) std::atomic<uint64_t> ping;        // parent → child, floor line
  alignas(64) std::atomic<uint64_t> pong;        // child → parent, floor line
  alignas(64) std::atomic<uint32_t> futex_down;  // parent → child, raw futex line
  alignas(64) std::atomic<uint32_t> futex_up;    // child → parent, raw futex line
};
static_assert(sizeof(SharedWords) <= 4096);

// ---- Baselines (ipc_baselines.cc) -------------------------------------------------------------

// A connected TCP pair on 127.0.0.1 (kernel-chosen port), TCP_NODELAY on both ends.
std::pair<UniqueFd, UniqueFd> TcpLoopbackPair();
// The floor: shared-memory cache-line ping-pong, both spinning.
Latency ParentFloor(SharedWords& w, const Options& o);
void ChildFloor(SharedWords& w, const Options& o);
// Raw futex ping-pong (wake + wait).
Latency ParentFutex(SharedWords& w, const Options& o);
void ChildFutex(SharedWords& w, const Options& o);
// kFdMessageBytes each way through blocking descriptors.
Latency ParentFdPingPong(int out_fd, int in_fd, const Options& o);
void ChildFdPingPong(int in_fd, int out_fd, const Options& o);

}  // namespace mp::bench
