// One module's pool of workers: the calls waiting for one, which worker gets which call, when
// to start a worker and when to stop one. Policy only: workers are PoolMembers the owner
// launches (WorkerChannels in the host, fakes in tests/unit/host/worker_pool_test.cc), and time
// and delays come from the owner, so that the policy can be tested without processes.
//
//   - `max_workers` is a hard cap: no sequence of exits, restarts, growth or trials ever has
//     more live workers of the current generation than that (live: PoolMember::CountsAsLive).
//   - `min_workers` always run, replaced as the restart policy says (restart_policy.h).
//   - A call waits in a bounded queue; it goes to the ready worker of the current generation
//     that has served fewest. When every worker is busy, the pool grows, one worker per waiting
//     call, up to `max_workers`.
//   - Each second (Tick): workers idle past `idle_timeout_ms` above the minimum stop, workers
//     past `max_private_bytes` are replaced, and an open breaker's trial starts when due.
//   - A worker is replaced after ~`recycle_after_calls` calls (+0-10% jitter).
//
// Not thread-safe; the owner's thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "host/call.h"
#include "host/pool_member.h"
#include "host/restart_policy.h"

namespace mp::host {

// What a pool needs from its module (host/module_runtime.h implements it).
class PoolOwner {
 public:
  virtual ~PoolOwner() = default;
  // Starts a worker of `generation`; nullptr if none can start now (say, no zygote). The
  // pool reports it back through OnReady, or OnExited if it never gets there.
  virtual PoolMember* Launch(uint64_t generation) = 0;
  virtual void RunAfter(int64_t delay_ms, std::function<void()> fn) = 0;
  virtual int64_t NowMs() = 0;
  // Answers a call the pool will not serve: its queue was failed, or the call waited too long.
  virtual void Refuse(PendingCall call, Unavailable cause, const absl::Status& why) = 0;
  // Something an operator should see: "breaker_open", "breaker_trial", "worker_scale_down",
  // "worker_recycle" (about `member`, if any), and why.
  virtual void Note(absl::string_view event, const PoolMember* member, absl::string_view why) = 0;
};

class WorkerPool {
 public:
  struct Limits {
    uint32_t min_workers = 2;
    uint32_t max_workers = 2;
    uint32_t idle_timeout_ms = 60000;
    uint32_t queue_limit = 1024;
    uint64_t recycle_after_calls = 0;  // 0: never
    uint64_t max_private_bytes = 0;    // 0: no limit
    uint32_t pipeline_depth = 2;       // calls that may wait in a busy worker's ring; 0: none
    bool operator==(const Limits&) const = default;
  };

  WorkerPool(Limits limits, const RestartPolicyConfig& restart, PoolOwner& owner, uint64_t seed);

  // Calls go to workers of `generation` from now on; workers of any other generation retire.
  void SetGeneration(uint64_t generation);
  uint64_t generation() const { return generation_; }
  // Starts workers of the current generation until `min_workers` are live (unless the breaker
  // is open).
  void EnsureMinimum();
  // Takes a worker the owner started itself (a reload's, of a generation not current yet).
  void Adopt(PoolMember* member);

  // A call given to a worker that died before it began it: first in line again (past the
  // queue's limit: it was admitted once), dispatched on the next turn of the pool.
  void Requeue(PendingCall call);

  // Queues `call` and dispatches. Fails, leaving the call to the caller to answer, when the
  // queue is full (RESOURCE_EXHAUSTED) or the module is failed (UNAVAILABLE, the reason).
  absl::Status Submit(PendingCall& call);

  // ---- What happened to a worker ----
  void OnReady(PoolMember& member);
  // Its call is over (answered, failed, or given up on and its late answer arrived).
  void OnCallDone(PoolMember& member);
  // It is gone (its exit reported), or never started. `expected`: it was told to stop.
  // The member must not be used after this.
  void OnExited(PoolMember& member, bool expected);

  // Once a second. `private_bytes` reads a live worker's unique memory (only called when
  // max_private_bytes is set).
  void Tick(const std::function<uint64_t(PoolMember&)>& private_bytes);

  // New limits (mpctl scale): workers above `max` retire, workers below `min` start.
  void Scale(uint32_t min_workers, uint32_t max_workers);
  // Every limit at once (a config reload).
  void SetLimits(const Limits& limits);
  void SetRestartConfig(const RestartPolicyConfig& config) { restart_.SetConfig(config); }
  // Closes the breaker and starts the minimum (mpctl restart).
  void Reset();
  // Answers every queued call with `why`.
  void FailQueue(Unavailable cause, const absl::Status& why);
  // Answers the queued calls received before `cutoff` (no worker took them in time).
  void ExpireQueued(kj::TimePoint cutoff, const absl::Status& why);
  // Retires every worker.
  void RetireAll(absl::string_view why);

  // ---- State ----
  const Limits& limits() const { return limits_; }
  const RestartPolicy& restart_policy() const { return restart_; }
  // Workers that ended unexpectedly and were (or will be) replaced.
  uint64_t restarts() const { return restarts_; }
  size_t queue_depth() const { return queue_.size(); }
  uint32_t LiveWorkers() const;
  uint32_t StartingWorkers() const;
  bool AnyReady() const;
  // The breaker is open and no worker is left to serve: calls are refused.
  bool failed() const;
  std::string failed_reason() const;
  const std::vector<PoolMember*>& members() const { return members_; }

 private:
  PoolMember* Start(bool trial = false);
  void Track(PoolMember* member);
  void Dispatch();
  void Remove(PoolMember& member);
  bool Current(const PoolMember& m) const { return m.generation() == generation_; }

  Limits limits_;
  PoolOwner& owner_;
  RestartPolicy restart_;
  std::minstd_rand rng_;
  uint64_t generation_ = 0;
  std::vector<PoolMember*> members_;       // not owned
  std::map<uint64_t, uint64_t> recycle_at_;  // member id → calls after which it is replaced
  std::deque<PendingCall> queue_;
  bool dispatching_ = false;
  uint64_t restarts_ = 0;
};

}  // namespace mp::host
