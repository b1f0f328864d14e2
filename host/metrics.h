// Counters, recorded where things happen (ModuleRuntime, WorkerChannel), and their one
// rendering as Prometheus text (RenderMetrics), from the same snapshot mpctl reads.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "host/call.h"
#include "host/exit_cause.h"
#include "schemas/control.capnp.h"

namespace mp::host {

// Upper bounds (seconds) of the call latency histogram buckets; the last bucket is +Inf.
inline constexpr double kLatencyBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,   5,     10};
inline constexpr size_t kLatencyBucketCount = sizeof(kLatencyBuckets) / sizeof(double) + 1;
// Upper bounds (seconds) of the heap build duration buckets (build, zygote start and first
// workers); the last bucket is +Inf.
inline constexpr double kBuildBuckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
inline constexpr size_t kBuildBucketCount = sizeof(kBuildBuckets) / sizeof(double) + 1;
inline constexpr size_t kExitCauseCount = sizeof(kAllExitCauses) / sizeof(kAllExitCauses[0]);
inline constexpr size_t kUnavailableCount = sizeof(kAllUnavailable) / sizeof(kAllUnavailable[0]) + 1;

// One module's counters. Not thread-safe.
struct ModuleMetrics {
  std::map<uint16_t, uint64_t> calls_by_status;
  std::array<uint64_t, kLatencyBucketCount> latency{};  // one count per bucket
  double latency_sum_seconds = 0;
  uint64_t latency_count = 0;
  std::array<uint64_t, kExitCauseCount> exits{};  // by ExitCause
  std::array<uint64_t, kUnavailableCount> unavailable{};  // 503s by Unavailable
  std::array<uint64_t, kBuildBucketCount> build_duration{};  // every build, by duration
  double build_seconds_sum = 0;
  uint64_t builds_ok = 0, builds_failed = 0;
  uint64_t reloads_ok = 0, reloads_failed = 0;  // new generations after the first
  uint64_t wakeups_to_worker = 0;  // futex wakes the host made for a sleeping worker
  uint64_t wakeups_to_host = 0;    // doorbell rings a worker made for the sleeping host
  uint64_t calls_at_last_tick = 0;
  double calls_per_second = 0;

  // An answer with `status`; `seconds` from receipt (< 0: never given to a worker).
  void RecordCall(uint16_t status, double seconds);
  void RecordExit(ExitCause cause) { ++exits[static_cast<size_t>(cause)]; }
  void RecordBuild(bool ok, double seconds);
  // The host's own answer for a call it gave to no worker (413, 503, ...).
  void RecordRefusal(const CallResult& r) {
    RecordCall(r.status, -1);
    ++unavailable[static_cast<size_t>(r.unavailable)];
  }
  uint64_t calls() const;
  // Once a second: calls per second since the last tick.
  void Tick();
};

// The text of /metrics (Prometheus exposition format 0.0.4) for `snapshot`.
std::string RenderMetrics(control::Snapshot::Reader snapshot);

}  // namespace mp::host
