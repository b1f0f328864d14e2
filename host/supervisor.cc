#include "host/supervisor.h"

#include <unistd.h>

#include <kj/vector.h>

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"
#include "host/call_codec.h"
#include "host/log.h"
#include "host/metrics.h"
#include "host/version.h"

namespace mp::host {
namespace {

constexpr int kMaintenanceMs = 1000;  // idle scale-down, memory checks, breaker trials
constexpr uint32_t kRemovalGraceMs = 5000;  // a removed module's workers, told to stop

// A build that failed on its own terms fails only its module (see ModuleRuntime::Start).
bool IsBuildFailure(const absl::Status& s) {
  return s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kDeadlineExceeded;
}

}  // namespace

Supervisor::Supervisor(kj::AsyncIoContext& io, HostConfig config, HelperEnv& helpers)
    : timer_(io.provider->getTimer()),
      config_(std::move(config)),
      helpers_(helpers),
      seed_(static_cast<uint64_t>(::getpid())),
      tasks_(*this) {
  // A module call from a handler goes through the target's pool as any call does.
  broker_ = std::make_unique<ServiceBroker>(
      helpers_.events, timer_,
      [this](absl::string_view module, CallRequest request) { return Call(module, std::move(request)); });
  broker_->Configure(config_.modules);
  helpers_.services = broker_.get();
  for (const ModuleConfig& mc : config_.modules) {
    modules_.emplace(mc.name, std::make_unique<ModuleRuntime>(mc, helpers_, seed_++));
  }
}

Supervisor::~Supervisor() { StopAll(); }

void Supervisor::taskFailed(kj::Exception&& exception) {
  LogEvent(LogLevel::kError, "internal_error", {{"what", exception.getDescription().cStr()}});
}

kj::Promise<absl::Status> Supervisor::Start() {
  auto starts = kj::heapArrayBuilder<kj::Promise<absl::Status>>(modules_.size());
  for (auto& [name, m] : modules_) starts.add(m->Start());
  return kj::joinPromises(starts.finish()).then([this](kj::Array<absl::Status> results) {
    size_t failed = 0;
    absl::Status last_failure;
    for (auto& r : results) {
      if (r.ok()) continue;
      if (!IsBuildFailure(r)) return r;
      ++failed;
      last_failure = r;
    }
    tasks_.add(MaintenanceLoop());
    if (failed == results.size()) {
      return absl::Status(last_failure.code(), absl::StrCat("no module could be built; last: ",
                                                            last_failure.message()));
    }
    return absl::OkStatus();
  });
}

kj::Promise<void> Supervisor::MaintenanceLoop() {
  return timer_.afterDelay(kMaintenanceMs * kj::MILLISECONDS).then([this]() -> kj::Promise<void> {
    if (stopping_) return kj::READY_NOW;
    for (auto& [name, m] : modules_) m->Tick();
    for (auto it = removed_.begin(); it != removed_.end();) {
      ModuleRuntime& m = *it->runtime;
      m.Tick();
      // Still starting or reloading: promises elsewhere refer to it. Still busy: its calls
      // finish first, for up to drainTimeoutMs.
      const bool calls_left = m.busy() && timer_.now() - it->since <
                                              config_.drain_timeout_ms * kj::MILLISECONDS;
      if (m.state() == ModuleState::kStarting || m.reloading() || calls_left ||
          !m.RetireForRemoval(kRemovalGraceMs)) {
        ++it;
        continue;
      }
      LogEvent("module_removed", {{"module", m.name()}});
      m.StopAll();  // no worker left: nothing to wait for
      it = removed_.erase(it);
    }
    return MaintenanceLoop();
  });
}

kj::Promise<CallResult> Supervisor::Call(absl::string_view module, CallRequest request) {
  auto it = modules_.find(module);
  if (it == modules_.end()) {
    return HostError(404, module, absl::StrCat("no module named '", module, "'"));
  }
  if (stopping_) {
    CallResult r = HostUnavailable(Unavailable::kDraining, module, "the host is shutting down");
    it->second->CountRefusal(r);
    return r;
  }
  return it->second->Call(std::move(request));
}

size_t Supervisor::WorkerCount() const {
  // At least each pool's minimum: at startup the modules' first workers come up together, and
  // each must count the others that are about to start.
  size_t n = 0;
  for (const auto& [name, m] : modules_) {
    n += std::max<size_t>(m->workers().size(), m->pool().limits().min_workers);
  }
  for (const auto& m : removed_) n += m.runtime->workers().size();
  return n;
}

bool Supervisor::HasModule(absl::string_view module) const {
  return modules_.find(module) != modules_.end();
}

std::vector<std::string> Supervisor::ModuleNames() const {
  std::vector<std::string> out;
  for (const auto& [name, m] : modules_) out.push_back(name);
  return out;
}

void Supervisor::CountFrontDoorAnswer(absl::string_view module, uint16_t status) {
  if (auto it = modules_.find(module); it != modules_.end()) it->second->CountFrontDoorAnswer(status);
}

std::optional<uint64_t> Supervisor::MaxBodyBytes(absl::string_view module) const {
  auto it = modules_.find(module);
  if (it == modules_.end()) return std::nullopt;
  return it->second->config().max_body_bytes;
}

ReadinessReport Supervisor::CheckReadiness() const {
  ReadinessReport report{!stopping_ && !draining_, draining_, {}};
  for (const auto& [name, m] : modules_) {
    const ModuleState state = m->state();
    const bool ready = state == ModuleState::kServing && m->HasReadyWorker();
    const bool critical = m->config().critical;
    report.modules.push_back({name, state, ready, critical});
    if (critical && !ready) report.ready = false;
  }
  return report;
}

kj::Promise<absl::StatusOr<uint64_t>> Supervisor::Reload(absl::string_view module) {
  auto it = modules_.find(module);
  if (it == modules_.end()) {
    return absl::StatusOr<uint64_t>(
        absl::NotFoundError(absl::StrCat("no module named '", module, "'")));
  }
  if (stopping_) return absl::StatusOr<uint64_t>(absl::UnavailableError("the host is stopping"));
  return it->second->Reload();
}

void Supervisor::ReloadAll() {
  for (auto& [name, m] : modules_) tasks_.add(m->Reload().ignoreResult());
}

kj::Promise<std::vector<std::string>> Supervisor::ApplyModules(std::vector<ModuleConfig> modules) {
  // The new grants hold at once, for calls in flight too; new workers start from them.
  broker_->Configure(modules);
  kj::Vector<kj::Promise<std::string>> steps;
  std::set<std::string> wanted;
  for (ModuleConfig& mc : modules) {
    wanted.insert(mc.name);
    const std::string name = mc.name;
    if (auto it = modules_.find(name); it != modules_.end()) {
      steps.add(it->second->Reconfigure(mc).then([name](absl::StatusOr<std::string> r) {
        return absl::StrCat(name, ": ", r.ok() ? *r : r.status().message());
      }));
      continue;
    }
    auto runtime = std::make_unique<ModuleRuntime>(mc, helpers_, seed_++);
    ModuleRuntime& m = *runtime;
    modules_.emplace(name, std::move(runtime));
    LogEvent("module_added", {{"module", name}});
    steps.add(m.Start().then([name](absl::Status s) {
      return absl::StrCat(name, ": added", s.ok() ? "" : absl::StrCat(", failed: ", s.message()));
    }));
  }
  for (auto it = modules_.begin(); it != modules_.end();) {
    if (wanted.count(it->first) > 0) {
      ++it;
      continue;
    }
    steps.add(kj::Promise<std::string>(absl::StrCat(it->first, ": removed, stops once idle")));
    LogEvent("module_removing", {{"module", it->first}});
    removed_.push_back(Removed{std::move(it->second), timer_.now()});
    it = modules_.erase(it);
  }
  config_.modules = std::move(modules);
  return kj::joinPromises(steps.releaseAsArray()).then([](kj::Array<std::string> lines) {
    return std::vector<std::string>(lines.begin(), lines.end());
  });
}

kj::Promise<absl::StatusOr<uint64_t>> Supervisor::Restart(absl::string_view module) {
  auto it = modules_.find(module);
  if (it == modules_.end()) {
    return absl::StatusOr<uint64_t>(
        absl::NotFoundError(absl::StrCat("no module named '", module, "'")));
  }
  return it->second->Restart();
}

absl::Status Supervisor::Scale(absl::string_view module, uint32_t min, uint32_t max) {
  auto it = modules_.find(module);
  if (it == modules_.end()) {
    return absl::NotFoundError(absl::StrCat("no module named '", module, "'"));
  }
  return it->second->Scale(min, max);
}

absl::Status Supervisor::KillWorker(pid_t pid) {
  for (auto& [name, m] : modules_) {
    if (m->KillWorker(pid)) return absl::OkStatus();
  }
  return absl::NotFoundError(absl::StrCat("no live worker with pid ", pid));
}

kj::Promise<kj::Own<capnp::MallocMessageBuilder>> Supervisor::Snapshot(bool with_proc) {
  HostFacts facts;
  if (fill_facts_) fill_facts_(facts);
  facts.version = kMphostVersion;
  facts.ready = CheckReadiness().ready;
  facts.listen = listen_;
  facts.control = control_;
  facts.draining = draining_;
  facts.uptime_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started_)
                        .count();
  return TakeSnapshot(modules_, helpers_.output, *broker_, std::move(facts), with_proc);
}

kj::Promise<std::string> Supervisor::MetricsText() {
  return Snapshot(/*with_proc=*/true).then([](kj::Own<capnp::MallocMessageBuilder> message) {
    return RenderMetrics(message->getRoot<control::Snapshot>().asReader());
  });
}

void Supervisor::RequestDrain() {
  if (draining_) return;
  draining_ = true;
  LogEvent("drain_requested", {});
  if (on_drain_) on_drain_();
}

kj::Promise<void> Supervisor::WhenIdle(uint32_t timeout_ms) {
  bool busy = false;
  for (const auto& [name, m] : modules_) busy = busy || m->busy();
  if (!busy || timeout_ms == 0) return kj::READY_NOW;
  const uint32_t step = std::min<uint32_t>(timeout_ms, 10);
  return timer_.afterDelay(step * kj::MILLISECONDS).then([this, timeout_ms, step]() {
    return WhenIdle(timeout_ms - step);
  });
}

void Supervisor::StopAll() {
  stopping_ = true;
  for (auto& [name, m] : modules_) m->StopAll();
  for (auto& m : removed_) m.runtime->StopAll();
  helpers_.reaper.ReapAll(2000);
}

}  // namespace mp::host
