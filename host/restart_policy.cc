#include "host/restart_policy.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace mp::host {

RestartPolicy::RestartPolicy(const RestartPolicyConfig& config, uint64_t seed)
    : config_(config),
      rng_(static_cast<std::minstd_rand::result_type>(seed % 2147483646 + 1)),
      cooldown_ms_(config.cooldown_ms) {}

int64_t RestartPolicy::Jitter(int64_t ms) {
  // ±25%, so that the workers of modules that died together do not restart in lockstep.
  const int64_t quarter = ms / 4;
  if (quarter <= 0) return ms;
  return ms - quarter + static_cast<int64_t>(rng_() % static_cast<uint64_t>(2 * quarter + 1));
}

RestartPolicy::Decision RestartPolicy::OnWorkerEnded(int64_t now_ms, bool healthy) {
  Decision d;
  if (breaker_ == Breaker::kOpen) return d;  // a survivor ended; the trial will come
  if (breaker_ == Breaker::kHalfOpen) {
    if (!healthy) {
      // The trial ended before it answered anything: open again, for longer.
      breaker_ = Breaker::kOpen;
      cooldown_ms_ = std::min<int64_t>(cooldown_ms_ * 2, config_.cooldown_max_ms);
      trial_at_ms_ = now_ms + Jitter(cooldown_ms_);
      ++trips_;
      d.tripped = true;
      return d;
    }
    OnHealthy();
  }
  d.restart = true;
  if (healthy) return d;
  while (!ends_.empty() && now_ms - ends_.front() > config_.window_ms) ends_.pop_front();
  ends_.push_back(now_ms);
  if (ends_.size() <= config_.max_restarts) return d;
  const size_t level = ends_.size() - config_.max_restarts - 1;  // 0, 1, 2, ...
  const int64_t backoff =
      level >= 30 ? INT64_MAX : int64_t{config_.backoff_base_ms} << level;
  if (backoff <= config_.backoff_max_ms) {
    d.delay_ms = Jitter(backoff);
    return d;
  }
  breaker_ = Breaker::kOpen;
  ends_when_tripped_ = static_cast<uint32_t>(ends_.size());
  trial_at_ms_ = now_ms + Jitter(cooldown_ms_);
  ++trips_;
  d.restart = false;
  d.tripped = true;
  return d;
}

void RestartPolicy::OnHealthy() {
  if (breaker_ != Breaker::kHalfOpen) return;
  breaker_ = Breaker::kClosed;
  ends_.clear();
  cooldown_ms_ = config_.cooldown_ms;
}

bool RestartPolicy::TrialDue(int64_t now_ms) const {
  return breaker_ == Breaker::kOpen && now_ms >= trial_at_ms_;
}

void RestartPolicy::OnTrialStarted() {
  if (breaker_ != Breaker::kOpen) return;
  breaker_ = Breaker::kHalfOpen;
  ++trials_;
}

void RestartPolicy::Reset() {
  breaker_ = Breaker::kClosed;
  ends_.clear();
  cooldown_ms_ = config_.cooldown_ms;
}

std::string RestartPolicy::Reason(int64_t now_ms) const {
  if (breaker_ == Breaker::kClosed) return "";
  std::string why = absl::StrCat("workers ended ", ends_when_tripped_, " times within ",
                                 config_.window_ms, " ms before answering a call (crash loop)");
  if (breaker_ == Breaker::kHalfOpen) return absl::StrCat(why, "; a trial worker is starting");
  return absl::StrCat(why, "; next trial in ", std::max<int64_t>(0, trial_at_ms_ - now_ms),
                      " ms, or mpctl restart");
}

}  // namespace mp::host
