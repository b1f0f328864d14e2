// The supervisor: owns every module's generation, its microprocesses and their rings, and
// turns calls into ring frames and ring frames back into answers. Runs entirely on the KJ event
// loop thread; no method may be called from another thread.
//
// Microprocesses are input, never trusted: a worker that breaks the ring protocol, sends a
// malformed reply, exceeds its deadline or dies is ended and replaced, its in-flight call is
// answered with an error naming the cause, and nothing else is affected.
#pragma once

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/timer.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <random>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "host/accounting.h"
#include "host/config.h"
#include "host/generation.h"
#include "shm/doorbell.h"
#include "shm/ring.h"

namespace mp::host {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct CallRequest {
  std::string method = "GET";
  std::string path = "/";
  std::string query;
  HeaderList headers;
  std::string body;
  uint32_t timeout_ms = 0;  // 0: the module's callTimeoutMs
};

// An answer for the client: the module's reply, or the host's error (`from_host`), whose body
// is a JSON error naming the module and the cause.
struct CallResult {
  uint16_t status = 200;
  HeaderList headers;
  std::string body;
  pid_t worker_pid = 0;
  bool from_host = false;
};

struct WorkerSnapshot {
  pid_t pid;
  std::string module;
  uint64_t generation;
  std::string state;
  uint64_t calls;
  uint64_t errors;
  int64_t started_unix_ms;
  uint64_t restarts;   // of its module's workers, when it started
  MemoryUsage memory;  // zero if /proc could not be read
  std::vector<std::string> sandbox;  // layers in force, from /proc (with_memory only)
};

// One generation's sealed heap and who maps it.
struct HeapSnapshot {
  std::string module;
  std::string version;
  uint64_t generation;
  bool current;            // new calls go to this generation
  uint64_t segment_bytes;
  uint64_t data_bytes;
  uint64_t checksum;
  int seals;               // F_GET_SEALS
  uint32_t mappers;        // processes mapping it (workers and the zygote)
  uint64_t resident_bytes; // sum over mappers of the heap mapping's Rss
  uint64_t pss_bytes;      // sum of Pss: the heap's real share of RAM
  uint64_t privatized_bytes;  // sum of Anonymous: pages copied by private writes
};

// Upper bounds (seconds) of the call latency histogram buckets; the last bucket is +Inf.
inline constexpr double kLatencyBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,   5,     10};
inline constexpr size_t kLatencyBucketCount = sizeof(kLatencyBuckets) / sizeof(double) + 1;

struct ModuleSnapshot {
  std::string name;
  std::string version;
  uint64_t generation;
  std::string state;  // ready | reloading | failed
  std::string reason; // why it failed, or why the last reload failed
  uint64_t heap_bytes;
  uint32_t workers_ready, workers_busy, workers_target, workers_max;
  uint64_t calls;
  uint64_t restarts;
  std::vector<uint64_t> latency_buckets;  // cumulative counts per kLatencyBuckets (+Inf last)
  uint32_t generations = 0;
  double calls_per_second = 0;
};

class Supervisor : private kj::TaskSet::ErrorHandler {
 public:
  // `helpers` (launcher, module output, reaper) must outlive the supervisor.
  Supervisor(kj::AsyncIoContext& io, HostConfig config, HelperEnv& helpers);
  ~Supervisor();

  // Builds every module's heap, starts its zygote and its workers, all modules at once, on the
  // event loop. Resolves once every module is serving or has failed; fails with the first
  // module that cannot be loaded at all (the message names it and the cause).
  kj::Promise<absl::Status> Start();

  // Runs one call on `module`. Always resolves (never throws): unknown module → 404, body too
  // large → 413, worker died → 502, deadline → 504, module failed → 503.
  kj::Promise<CallResult> Call(absl::string_view module, CallRequest request);

  bool HasModule(absl::string_view module) const;
  // Counts an answer the front door gave for `module` without a call (e.g. 413), in metrics.
  void CountFrontDoorAnswer(absl::string_view module, uint16_t status);
  // The module's request body limit; nullopt if there is no such module.
  std::optional<uint64_t> MaxBodyBytes(absl::string_view module) const;
  // Every module has at least one worker that can take a call.
  bool Ready() const;
  // Workers with their memory read from /proc (`with_memory`).
  std::vector<WorkerSnapshot> Workers(bool with_memory = false) const;
  std::vector<HeapSnapshot> Heaps(absl::string_view module) const;
  std::vector<ModuleSnapshot> Modules() const;

  // Builds generation N+1 of `module` (in a builder process, off the event loop), starts its
  // workers and sends new calls to them; calls in flight finish on generation N, whose workers
  // then stop and whose heap is unmapped when the last one exits. A failed build leaves N
  // serving. Resolves to the new generation number or the reason it failed.
  kj::Promise<absl::StatusOr<uint64_t>> Reload(absl::string_view module);
  // Reload of every module (SIGHUP); failures are logged.
  void ReloadAll();

  // Clears a failed module (crash loop) and replaces all its workers; a module that never
  // built is rebuilt (as Reload). Resolves to the number of workers started.
  kj::Promise<absl::StatusOr<uint64_t>> Restart(absl::string_view module);

  // Sets the pool of `module` to at least `min` and at most `max` workers, starting or
  // stopping workers as needed.
  absl::Status Scale(absl::string_view module, uint32_t min, uint32_t max);
  // Prometheus text exposition of the host's counters.
  std::string MetricsText() const;

  // Ends the worker `pid` as the operator asked (its call gets a 502; it is replaced).
  absl::Status KillWorker(pid_t pid);

  // Draining: /readyz answers 503 and new calls are refused with 503. `on_drain` (set by
  // main) performs the rest of the stop; RequestDrain calls it once.
  void SetDrainHandler(std::function<void()> on_drain) { on_drain_ = std::move(on_drain); }
  void RequestDrain();
  bool draining() const { return draining_; }

  struct Totals {
    uint32_t modules = 0, modules_failed = 0, workers = 0, workers_busy = 0;
    uint64_t calls = 0, worker_pss_bytes = 0, heap_bytes = 0;
  };
  Totals ComputeTotals() const;

  // Resolves once no call is in flight or queued, or after `timeout_ms`.
  kj::Promise<void> WhenIdle(uint32_t timeout_ms);
  // Stops every worker (stop frame, then SIGKILL after a grace period) and every zygote, and
  // reaps them all. Blocks; call after the event loop has stopped serving.
  void StopAll();

 private:
  struct Module;
  struct Worker;
  struct Pending {
    CallRequest request;
    kj::Own<kj::PromiseFulfiller<CallResult>> fulfiller;
    kj::TimePoint received;  // for the latency histogram (queueing included)
  };

  // Starts a worker of generation `gen` of `m`: it joins m.workers at once (starting), and is
  // ready when the promise resolves OK. Never throws.
  kj::Promise<absl::Status> SpawnWorker(Module& m, Generation& gen);
  // Starts a worker of the current generation and only logs a failure.
  void SpawnInBackground(Module& m);
  // BuildHeap then Generation::Start.
  kj::Promise<absl::StatusOr<std::unique_ptr<Generation>>> LoadGeneration(Module& m,
                                                                         uint64_t number);
  // Starts `n` workers of `gen`; resolves to how many started and the last error.
  kj::Promise<std::pair<uint32_t, absl::Status>> SpawnWorkers(Module& m, Generation& gen,
                                                              uint32_t n);
  Generation* FindGeneration(Module& m, uint64_t number);
  Worker* FindWorker(Module& m, uint64_t id);
  uint32_t StartingWorkers(const Module& m) const;
  void Dispatch(Module& m);
  void Send(Worker& w, Pending p);
  // Writes more of `w`'s chunked call, as far as the ring has room.
  void PumpOutgoing(Worker& w);
  // Exact size of `r` as a Cap'n Proto Call message.
  static size_t CallBytes(const CallRequest& r);
  void DrainResponses(Worker& w);
  void Finish(Worker& w, CallResult result);
  // Deadline passed: answer 504, ask the worker to stop (cancel frame), kill it after the grace.
  void CancelCall(Worker& w, uint32_t timeout_ms);
  // Kills `w` (the exit watch cleans up) and answers its call with `status` and the cause.
  void EndWorker(Worker& w, std::string cause, uint16_t status = 502);
  void OnWorkerExit(Worker& w, const ExitInfo& exit);
  void ScheduleRestart(Module& m);
  void RetireIdle(Module& m);
  uint32_t LiveWorkers(const Module& m) const;
  // Replaces `w` (now if idle, else after its call) with a new worker.
  void Recycle(Worker& w, absl::string_view why);
  void Maintain();  // idle scale-down and private-memory limits, every second
  kj::Promise<void> MaintenanceLoop();
  void PruneRetiredGenerations(Module& m);
  void StopWorker(Worker& w);
  kj::Promise<void> WatchDoorbell(Worker& w);
  kj::Promise<void> WatchExit(Worker& w, Generation& gen);
  CallResult HostError(uint16_t status, absl::string_view module, absl::string_view message);
  void Count(Module& m, uint16_t status);

  kj::AsyncIoContext& io_;
  kj::Timer& timer_;
  HostConfig config_;
  HelperEnv& helpers_;
  std::map<std::string, std::unique_ptr<Module>, std::less<>> modules_;
  kj::TaskSet tasks_;
  uint64_t next_worker_id_ = 1;
  uint64_t next_call_id_ = 1;
  std::minstd_rand jitter_rng_{static_cast<uint32_t>(::getpid())};
  bool stopping_ = false;
  bool draining_ = false;
  std::function<void()> on_drain_;

  void taskFailed(kj::Exception&& exception) override;
};

}  // namespace mp::host
