// The supervisor: every module's runtime (module_runtime.h), by name. It routes calls, starts
// and stops the modules together, reloads and scales them on the operator's word, and answers
// what the host shows of itself (snapshot.h, metrics.h). Runs entirely on the KJ event loop
// thread; no method may be called from another thread.
//
// Microprocesses are input, never trusted: a worker that breaks the ring protocol, sends a
// malformed reply, exceeds its deadline or dies is ended and replaced, its in-flight call is
// answered with an error naming the cause, and nothing else is affected.
#pragma once

#include <capnp/message.h>
#include <kj/async-io.h>
#include <kj/timer.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "host/call.h"
#include "host/config.h"
#include "host/generation.h"
#include "host/module_runtime.h"
#include "host/service_broker.h"
#include "host/snapshot.h"

namespace mp::host {

// What /readyz shows: each module's state, and whether the host should get traffic.
struct ModuleReadiness {
  std::string name;
  ModuleState state;
  bool ready;     // serving, with a worker that can take a call
  bool critical;  // needed for the host to be ready
};
struct ReadinessReport {
  bool ready;  // not draining, and every critical module ready
  bool draining;
  std::vector<ModuleReadiness> modules;
};

class Supervisor final : private kj::TaskSet::ErrorHandler {
 public:
  // `helpers` (launcher, module output, reaper) must outlive the supervisor.
  Supervisor(kj::AsyncIoContext& io, HostConfig config, HelperEnv& helpers);
  ~Supervisor();

  // Builds every module's heap, starts its zygote and its workers, all modules at once, on the
  // event loop. Resolves once every module is serving or has failed; fails with the first
  // module that cannot be loaded at all (the message names it and the cause), or when none
  // could be built.
  kj::Promise<absl::Status> Start();

  // Runs one call on `module`. Always resolves (never throws): unknown module → 404, body too
  // large → 413, worker died → 502, deadline → 504, module failed or queue full → 503.
  kj::Promise<CallResult> Call(absl::string_view module, CallRequest request);

  bool HasModule(absl::string_view module) const;
  // Worker processes of every module, starting ones included, and at least each pool's minimum.
  size_t WorkerCount() const;
  std::vector<std::string> ModuleNames() const;
  // Counts an answer the front door gave for `module` without a call (e.g. 413), in metrics.
  void CountFrontDoorAnswer(absl::string_view module, uint16_t status);
  // The module's request body limit; nullopt if there is no such module.
  std::optional<uint64_t> MaxBodyBytes(absl::string_view module) const;
  // Every critical module has a worker that can take a call, and the host is not draining.
  ReadinessReport CheckReadiness() const;

  // See ModuleRuntime.
  kj::Promise<absl::StatusOr<uint64_t>> Reload(absl::string_view module);
  void ReloadAll();  // failures are logged
  // A config reload's modules (validated): each existing module is reconfigured (see
  // ModuleRuntime::Reconfigure), new ones start, and removed ones leave at once (their calls in
  // flight finish; they stop once idle). Resolves to one line per module saying what was done;
  // a module whose change failed keeps serving as it was, and its line says why.
  kj::Promise<std::vector<std::string>> ApplyModules(std::vector<ModuleConfig> modules);
  kj::Promise<absl::StatusOr<uint64_t>> Restart(absl::string_view module);
  absl::Status Scale(absl::string_view module, uint32_t min, uint32_t max);
  // Ends the worker `pid` as the operator asked (its call gets a 502; it is replaced).
  absl::Status KillWorker(pid_t pid);

  // Everything the host shows of itself (schemas/control.capnp Snapshot); with `with_proc`,
  // memory and sandbox figures from /proc, read off the loop.
  kj::Promise<kj::Own<capnp::MallocMessageBuilder>> Snapshot(bool with_proc);
  // Prometheus text exposition, from a snapshot.
  kj::Promise<std::string> MetricsText();
  // Addresses shown by `mpctl status`.
  void SetAddresses(std::string listen, std::string control) {
    listen_ = std::move(listen);
    control_ = std::move(control);
  }

  // What the server adds to every snapshot (its listener's and config reloads' counters).
  void SetFactsSource(std::function<void(HostFacts&)> fill) { fill_facts_ = std::move(fill); }

  // Draining: /readyz answers 503 so that load balancers stop sending; calls are still served
  // until the server stops the workers (server.h). `on_drain` (set by the server) performs the
  // rest of the stop; RequestDrain calls it once.
  void SetDrainHandler(std::function<void()> on_drain) { on_drain_ = std::move(on_drain); }
  void RequestDrain();
  bool draining() const { return draining_; }

  // Resolves once no call is in flight or queued, or after `timeout_ms`.
  kj::Promise<void> WhenIdle(uint32_t timeout_ms);
  // Stops every worker (stop frame, then SIGKILL after a grace period) and every helper, and
  // reaps them all. Blocks; call after the event loop has stopped serving.
  void StopAll();

 private:
  kj::Promise<void> MaintenanceLoop();
  void taskFailed(kj::Exception&& exception) override;

  kj::Timer& timer_;
  HostConfig config_;
  HelperEnv& helpers_;
  // Before the modules: their workers' channels use it until they are gone.
  std::unique_ptr<ServiceBroker> broker_;
  ModuleMap modules_;
  // Removed by a config reload: stopped once their calls are done and their workers gone.
  struct Removed {
    std::unique_ptr<ModuleRuntime> runtime;
    kj::TimePoint since;
  };
  std::vector<Removed> removed_;
  uint64_t seed_;
  std::string listen_, control_;
  const std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  bool stopping_ = false;
  bool draining_ = false;
  std::function<void()> on_drain_;
  std::function<void(HostFacts&)> fill_facts_;
  kj::TaskSet tasks_;
};

}  // namespace mp::host
