#include "host/worker_pool.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace mp::host {

const char* WorkerPhaseName(WorkerPhase phase) {
  switch (phase) {
    case WorkerPhase::kStarting: return "starting";
    case WorkerPhase::kIdle: return "ready";
    case WorkerPhase::kBusy: return "busy";
    case WorkerPhase::kCancelling: return "cancelling";
    case WorkerPhase::kStopping: return "stopping";
    case WorkerPhase::kKilled: return "killed";
  }
  return "unknown";
}

WorkerPool::WorkerPool(Limits limits, const RestartPolicyConfig& restart, PoolOwner& owner,
                       uint64_t seed)
    : limits_(limits), owner_(owner), restart_(restart, seed), rng_(static_cast<uint32_t>(seed)) {}

uint32_t WorkerPool::LiveWorkers() const {
  uint32_t n = 0;
  for (const PoolMember* m : members_) n += Current(*m) && m->CountsAsLive() ? 1 : 0;
  return n;
}

uint32_t WorkerPool::StartingWorkers() const {
  uint32_t n = 0;
  for (const PoolMember* m : members_) {
    n += Current(*m) && m->CountsAsLive() && m->phase() == WorkerPhase::kStarting ? 1 : 0;
  }
  return n;
}

bool WorkerPool::AnyReady() const {
  for (const PoolMember* m : members_) {
    if (Current(*m) && m->CountsAsLive() && m->phase() != WorkerPhase::kStarting) return true;
  }
  return false;
}

bool WorkerPool::failed() const {
  return restart_.breaker() != RestartPolicy::Breaker::kClosed && LiveWorkers() == 0;
}

std::string WorkerPool::failed_reason() const { return restart_.Reason(owner_.NowMs()); }

void WorkerPool::SetGeneration(uint64_t generation) {
  generation_ = generation;
  for (PoolMember* m : std::vector<PoolMember*>(members_)) {
    if (!Current(*m)) m->Retire("its generation was replaced");
  }
  Dispatch();
}

PoolMember* WorkerPool::Start(bool trial) {
  // The one place a worker starts: the cap holds whatever led here.
  if (LiveWorkers() >= limits_.max_workers) return nullptr;
  if (!trial && restart_.breaker() != RestartPolicy::Breaker::kClosed) return nullptr;
  PoolMember* m = owner_.Launch(generation_);
  if (m != nullptr) Track(m);
  return m;
}

void WorkerPool::Track(PoolMember* m) {
  members_.push_back(m);
  if (const uint64_t n = limits_.recycle_after_calls; n > 0) {
    recycle_at_[m->id()] = n + rng_() % (n / 10 + 1);
  }
}

void WorkerPool::EnsureMinimum() {
  while (LiveWorkers() < std::min(limits_.min_workers, limits_.max_workers)) {
    if (Start() == nullptr) return;
  }
}

void WorkerPool::Adopt(PoolMember* member) { Track(member); }

absl::Status WorkerPool::Submit(PendingCall& call) {
  if (failed()) return absl::UnavailableError(failed_reason());
  if (queue_.size() >= limits_.queue_limit) {
    return absl::ResourceExhaustedError(
        absl::StrCat("queue is full (", limits_.queue_limit, " calls, queueLimit)"));
  }
  queue_.push_back(std::move(call));
  Dispatch();
  return absl::OkStatus();
}

void WorkerPool::Requeue(PendingCall call) {
  queue_.push_front(std::move(call));
  // Not now: the dying worker is still being taken apart; its exit or the owner dispatches.
  owner_.RunAfter(0, [this]() { Dispatch(); });
}

void WorkerPool::Dispatch() {
  if (dispatching_) return;  // a Deliver or Launch that calls back in
  dispatching_ = true;
  while (!queue_.empty()) {
    if (!queue_.front().fulfiller->isWaiting()) {  // the client went away
      queue_.pop_front();
      continue;
    }
    PoolMember* best = nullptr;
    for (PoolMember* m : members_) {
      if (!Current(*m) || !m->CanTakeCall()) continue;
      if (best == nullptr || m->calls() < best->calls()) best = m;
    }
    if (best != nullptr) {
      PendingCall call = std::move(queue_.front());
      queue_.pop_front();
      best->Deliver(std::move(call));
      continue;
    }
    // Every worker is busy: grow, one worker per waiting call, up to the cap.
    if (StartingWorkers() < queue_.size() && Start() != nullptr) continue;
    // At the cap (or enough starting): a busy worker takes it next, in its ring, so that it
    // goes from one call to the next without sleeping. The one with the fewest waiting.
    if (limits_.pipeline_depth == 0) break;
    std::vector<PoolMember*> busy;
    for (PoolMember* m : members_) {
      if (Current(*m) && m->phase() == WorkerPhase::kBusy && !m->retiring() &&
          m->calls_waiting() < limits_.pipeline_depth) {
        busy.push_back(m);
      }
    }
    std::sort(busy.begin(), busy.end(), [](const PoolMember* a, const PoolMember* b) {
      return a->calls_waiting() < b->calls_waiting();
    });
    bool taken = false;
    for (PoolMember* m : busy) {
      if (m->Pipeline(queue_.front(), limits_.pipeline_depth)) {
        queue_.pop_front();
        taken = true;
        break;
      }
    }
    if (!taken) break;
  }
  dispatching_ = false;
}

void WorkerPool::OnReady(PoolMember&) { Dispatch(); }

void WorkerPool::OnCallDone(PoolMember& member) {
  if (member.calls() > 0) restart_.OnHealthy();
  if (auto it = recycle_at_.find(member.id());
      it != recycle_at_.end() && member.calls() >= it->second && !member.retiring()) {
    const std::string why = absl::StrCat("served ", member.calls(), " calls");
    owner_.Note("worker_recycle", &member, why);
    member.Retire(why);
    EnsureMinimum();
  }
  Dispatch();
}

void WorkerPool::Remove(PoolMember& member) {
  recycle_at_.erase(member.id());
  members_.erase(std::remove(members_.begin(), members_.end(), &member), members_.end());
}

void WorkerPool::OnExited(PoolMember& member, bool expected) {
  const bool current = Current(member);
  const bool healthy = member.calls() > 0;
  Remove(member);
  if (expected || !current) {
    EnsureMinimum();
    Dispatch();
    return;
  }
  const RestartPolicy::Decision d = restart_.OnWorkerEnded(owner_.NowMs(), healthy);
  if (d.tripped) {
    owner_.Note("breaker_open", &member, restart_.Reason(owner_.NowMs()));
    if (LiveWorkers() == 0) {
      FailQueue(Unavailable::kModuleFailed, absl::UnavailableError(restart_.Reason(owner_.NowMs())));
    }
    return;
  }
  if (!d.restart) return;
  ++restarts_;
  if (d.delay_ms <= 0) {
    EnsureMinimum();
  } else {
    owner_.RunAfter(d.delay_ms, [this]() {
      EnsureMinimum();
      Dispatch();
    });
  }
  Dispatch();
}

void WorkerPool::Tick(const std::function<uint64_t(PoolMember&)>& private_bytes) {
  const int64_t now = owner_.NowMs();
  if (restart_.TrialDue(now) && LiveWorkers() < limits_.max_workers) {
    restart_.OnTrialStarted();
    owner_.Note("breaker_trial", nullptr, "starting one trial worker");
    if (Start(/*trial=*/true) == nullptr) {
      // Could not even begin: count it as a failed trial.
      restart_.OnWorkerEnded(now, /*healthy=*/false);
    }
  }
  if (limits_.max_private_bytes > 0) {
    for (PoolMember* m : std::vector<PoolMember*>(members_)) {
      if (!Current(*m) || !m->CountsAsLive() || m->phase() == WorkerPhase::kStarting) continue;
      const uint64_t bytes = private_bytes(*m);
      if (bytes > limits_.max_private_bytes) {
        const std::string why =
            absl::StrCat("private memory ", bytes, " bytes > maxPrivateMb");
        owner_.Note("worker_recycle", m, why);
        m->Retire(why);
        EnsureMinimum();
      }
    }
  }
  // Scale down: stop idle workers above the minimum, longest idle first.
  while (LiveWorkers() > limits_.min_workers) {
    PoolMember* longest = nullptr;
    for (PoolMember* m : members_) {
      if (!Current(*m) || !m->CanTakeCall() ||
          now - m->last_active_ms() < static_cast<int64_t>(limits_.idle_timeout_ms)) {
        continue;
      }
      if (longest == nullptr || m->last_active_ms() < longest->last_active_ms()) longest = m;
    }
    if (longest == nullptr) break;
    owner_.Note("worker_scale_down", longest,
                absl::StrCat("idle ", now - longest->last_active_ms(), " ms above the minimum"));
    longest->Retire("idle above the minimum");
  }
  Dispatch();
}

void WorkerPool::Scale(uint32_t min_workers, uint32_t max_workers) {
  Limits limits = limits_;
  limits.min_workers = min_workers;
  limits.max_workers = max_workers;
  SetLimits(limits);
}

void WorkerPool::SetLimits(const Limits& limits) {
  limits_ = limits;
  // Above the new maximum: the idle stop now, the busy after their call.
  for (PoolMember* m : std::vector<PoolMember*>(members_)) {
    if (LiveWorkers() <= limits_.max_workers) break;
    if (Current(*m) && m->CountsAsLive()) m->Retire("scaled down");
  }
  EnsureMinimum();
  Dispatch();
}

void WorkerPool::Reset() {
  restart_.Reset();
  EnsureMinimum();
  Dispatch();
}

void WorkerPool::FailQueue(Unavailable cause, const absl::Status& why) {
  std::deque<PendingCall> queue = std::move(queue_);
  queue_.clear();
  for (PendingCall& call : queue) owner_.Refuse(std::move(call), cause, why);
}

void WorkerPool::ExpireQueued(kj::TimePoint cutoff, const absl::Status& why) {
  // The queue is in arrival order: the expired calls are at its front.
  while (!queue_.empty() && queue_.front().received < cutoff) {
    PendingCall call = std::move(queue_.front());
    queue_.pop_front();
    owner_.Refuse(std::move(call), Unavailable::kNoWorker, why);
  }
}

void WorkerPool::RetireAll(absl::string_view why) {
  for (PoolMember* m : std::vector<PoolMember*>(members_)) m->Retire(why);
}

}  // namespace mp::host
