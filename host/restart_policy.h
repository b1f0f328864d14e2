// When a module's ended worker is replaced, and when the module is in a crash loop.
//
// A worker that had answered a call (it was healthy) is replaced at once: killing a serving
// worker, however often, never fails its module, since each replacement will serve. A worker
// that ended before answering anything counts toward the crash-loop breaker:
//   - the first `max_restarts` such ends within `window_ms` are replaced at once;
//   - further ends are replaced after an exponential backoff (`backoff_base_ms`, doubling, with
//     ±25% jitter) while it stays within `backoff_max_ms`;
//   - past that the breaker opens: no more replacements. After `cooldown_ms` one trial worker
//     is started (half-open); if it answers a call the breaker closes and the pool is
//     restored; if it ends first, the breaker opens again with the cooldown doubled, up to
//     `cooldown_max_ms`. `Reset` (mpctl restart) closes it at once.
// Pure logic: time comes in as milliseconds, randomness from a seeded generator, so it is
// unit-tested with neither (tests/unit/host/restart_policy_test.cc). Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <string>

namespace mp::host {

struct RestartPolicyConfig {
  uint32_t max_restarts = 5;
  uint32_t window_ms = 10000;
  uint32_t backoff_base_ms = 25;
  uint32_t backoff_max_ms = 2000;
  uint32_t cooldown_ms = 1000;
  uint32_t cooldown_max_ms = 60000;
  bool operator==(const RestartPolicyConfig&) const = default;
};

class RestartPolicy {
 public:
  enum class Breaker { kClosed, kOpen, kHalfOpen };

  struct Decision {
    bool restart = false;   // start a replacement after `delay_ms`
    int64_t delay_ms = 0;
    bool tripped = false;   // the breaker opened just now (log it, count it)
  };

  RestartPolicy(const RestartPolicyConfig& config, uint64_t seed);

  // A worker ended at `now_ms`; `healthy` if it had answered a call.
  Decision OnWorkerEnded(int64_t now_ms, bool healthy);
  // A worker answered a call: a half-open breaker closes.
  void OnHealthy();
  // The breaker is open and its cooldown is over at `now_ms`: a trial may start.
  bool TrialDue(int64_t now_ms) const;
  // The trial worker was started (open → half-open).
  void OnTrialStarted();
  // Closes the breaker and forgets every end (mpctl restart).
  void Reset();
  // New limits (a config reload); the breaker keeps its state, and a cooldown under way keeps
  // its due time.
  void SetConfig(const RestartPolicyConfig& config) { config_ = config; }
  const RestartPolicyConfig& config() const { return config_; }

  Breaker breaker() const { return breaker_; }
  // When the next trial is due (only while open).
  int64_t trial_at_ms() const { return trial_at_ms_; }
  uint64_t trips() const { return trips_; }
  uint64_t trials() const { return trials_; }
  // Why the breaker is open, for errors and `mpctl modules`.
  std::string Reason(int64_t now_ms) const;

 private:
  int64_t Jitter(int64_t ms);
  RestartPolicyConfig config_;
  std::minstd_rand rng_;
  std::deque<int64_t> ends_;  // unhealthy ends within the window
  Breaker breaker_ = Breaker::kClosed;
  int64_t cooldown_ms_;
  int64_t trial_at_ms_ = 0;
  uint32_t ends_when_tripped_ = 0;
  uint64_t trips_ = 0;
  uint64_t trials_ = 0;
};

}  // namespace mp::host
