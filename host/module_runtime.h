// One module at run time: its generations (the current one, a reload's on its way up, the
// retiring ones still finishing calls), its workers (WorkerChannels it owns) and the pool that
// decides which serves what (WorkerPool), and its counters. The supervisor holds one per module
// and routes calls to it.
//
// Not thread-safe; the supervisor's event loop thread only.
#pragma once

#include <kj/async-io.h>
#include <kj/timer.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host/call.h"
#include "host/config.h"
#include "host/generation.h"
#include "host/metrics.h"
#include "host/worker_channel.h"
#include "host/worker_pool.h"

namespace mp::host {

// Where a module is in its life, as /readyz, `mpctl status` and mphost_module_state show it.
enum class ModuleState : uint8_t {
  kStarting,  // its first generation is being built
  kServing,   // a worker can take a call (or will, once one starts)
  kFailed,    // its build failed, or its crash-loop breaker is open with no worker left
  kStopping,  // the host is stopping, or a config reload removed it
};
inline constexpr ModuleState kAllModuleStates[] = {ModuleState::kStarting, ModuleState::kServing,
                                                   ModuleState::kFailed, ModuleState::kStopping};
const char* ModuleStateName(ModuleState state);  // "starting", "serving", "failed", "stopping"

class ModuleRuntime final : private PoolOwner,
                            private WorkerChannel::Owner,
                            private kj::TaskSet::ErrorHandler {
 public:
  ModuleRuntime(const ModuleConfig& config, HelperEnv& helpers, uint64_t seed);
  ~ModuleRuntime() noexcept override;

  // Builds the first generation and starts its workers. A build that fails on its own terms
  // (crash, throw, time limit, a full heap) fails only this module and resolves OK with the
  // module failed; a plugin or config that cannot work at all resolves to the error.
  kj::Promise<absl::Status> Start();

  // Admits `request`: always resolves (413 too large, 503 failed or queue full, 502/504 from
  // the worker).
  kj::Promise<CallResult> Call(CallRequest request);

  // Builds generation N+1 (builder, zygote, workers, all on the loop) and switches new calls
  // to it; calls in flight finish on N. A failure leaves N serving.
  kj::Promise<absl::StatusOr<uint64_t>> Reload();
  // A config reload's new config for this module (same name). Pool limits and policies apply
  // at once; any other change, or a plugin or data file changed on disk since the current
  // generation was built, makes a new generation (as Reload). Resolves to what was done, for
  // the log and mpctl: "unchanged", "pool 2-2 -> 3-4", "generation 3".
  kj::Promise<absl::StatusOr<std::string>> Reconfigure(const ModuleConfig& next);
  // Closes the crash-loop breaker and replaces every worker; a module without a working zygote
  // is rebuilt. Resolves to the number of workers started.
  kj::Promise<absl::StatusOr<uint64_t>> Restart();
  absl::Status Scale(uint32_t min_workers, uint32_t max_workers);
  // Ends the worker `pid` if it is one of this module's (true).
  bool KillWorker(pid_t pid);
  // Idle scale-down, memory limits, breaker trials, ring trimming; every second.
  void Tick();
  // Counts an answer the front door gave for this module without a call (413, 408, ...).
  void CountFrontDoorAnswer(uint16_t status) { metrics_.RecordCall(status, -1); }
  // Counts the host's own answer for a call it refused before it reached this module.
  void CountRefusal(const CallResult& r) { metrics_.RecordRefusal(r); }

  // For the shutdown: stop frames to every worker, then waits (blocking) for each to exit,
  // answers what was in flight, and kills every generation.
  void StopAll();

  // A config reload removed it (it gets no more calls). Once its calls are done: no worker
  // starts any more, idle ones get a stop frame, and those still there after `grace_ms` are
  // killed. True once no worker is left: StopAll then waits for nothing.
  bool RetireForRemoval(uint32_t grace_ms);

  // ---- State, for snapshots and /readyz ----
  const std::string& name() const { return config_.name; }
  const ModuleConfig& config() const { return config_; }
  ModuleState state() const;
  bool failed() const;
  std::string failed_reason() const;
  bool reloading() const { return reloading_; }
  const std::string& reload_error() const { return reload_error_; }
  bool HasReadyWorker() const { return pool_.AnyReady(); }
  bool busy() const;  // calls queued or in flight
  const Generation* current() const { return generation_.get(); }
  std::vector<const Generation*> generations() const;
  const std::map<uint64_t, std::unique_ptr<WorkerChannel>>& workers() const { return workers_; }
  const WorkerPool& pool() const { return pool_; }
  const ModuleMetrics& metrics() const { return metrics_; }

 private:
  // PoolOwner
  PoolMember* Launch(uint64_t generation) override;
  void RunAfter(int64_t delay_ms, std::function<void()> fn) override;
  int64_t NowMs() override;
  void Refuse(PendingCall call, Unavailable cause, const absl::Status& why) override;
  void Note(absl::string_view event, const PoolMember* member, absl::string_view why) override;
  // WorkerChannel::Owner
  void OnCallDone(WorkerChannel& w, const CallResult* result, double seconds) override;
  void OnWorkerExit(WorkerChannel& w, const ExitReading& exit) override;
  void Requeue(PendingCall call) override { pool_.Requeue(std::move(call)); }
  void CountWakeups(uint64_t to_worker, uint64_t to_host) override {
    metrics_.wakeups_to_worker += to_worker;
    metrics_.wakeups_to_host += to_host;
  }
  // kj::TaskSet::ErrorHandler
  void taskFailed(kj::Exception&& exception) override;

  kj::Promise<absl::Status> StartFirstGeneration();
  kj::Promise<absl::StatusOr<std::unique_ptr<Generation>>> LoadGeneration(uint64_t number);
  // Starts `n` workers of `gen`, outside the pool's decisions (a new generation's first ones);
  // resolves once each is ready or failed: how many started, and the last error.
  kj::Promise<std::pair<uint32_t, absl::Status>> StartWorkers(Generation& gen, uint32_t n);
  // Starts a worker of `gen`; nullptr if its rings cannot be made.
  WorkerChannel* StartWorker(Generation& gen, kj::Own<kj::PromiseFulfiller<absl::Status>> ready);
  Generation* FindGeneration(uint64_t number);
  void PruneRetiredGenerations();

  ModuleConfig config_;
  HelperEnv& helpers_;
  kj::Timer& timer_;
  WorkerPool pool_;
  ModuleMetrics metrics_;
  std::unique_ptr<Generation> generation_;  // current: new calls go here
  std::unique_ptr<Generation> starting_;    // a reload's, until its workers are up
  std::vector<std::unique_ptr<Generation>> retiring_;
  uint64_t next_generation_ = 1;
  bool reloading_ = false;
  bool started_ = false;           // Start() has resolved
  bool build_failed_ = false;      // the first build failed on its own terms
  std::string build_error_;
  std::string reload_error_;
  std::string fingerprint_;  // of the plugin and data files the current generation was built from
  std::map<uint64_t, std::unique_ptr<WorkerChannel>> workers_;
  uint64_t next_worker_id_ = 1;
  bool stopping_ = false;
  kj::Maybe<kj::TimePoint> removal_deadline_;  // set once RetireForRemoval began
  kj::TaskSet tasks_;
};

}  // namespace mp::host
