#include "host/module_runtime.h"

#include <signal.h>
#include <sys/stat.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "host/accounting.h"
#include "host/call_codec.h"
#include "host/heap_build.h"
#include "host/log.h"

namespace mp::host {
namespace {

WorkerPool::Limits PoolLimits(const ModuleConfig& c) {
  WorkerPool::Limits l;
  l.min_workers = c.workers;
  l.max_workers = c.max_workers;
  l.idle_timeout_ms = c.idle_timeout_ms;
  l.queue_limit = c.queue_limit;
  l.recycle_after_calls = c.recycle_after_calls;
  l.max_private_bytes = c.max_private_bytes;
  l.pipeline_depth = c.pipeline_depth;
  return l;
}

RestartPolicyConfig RestartConfig(const ModuleConfig& c) {
  RestartPolicyConfig r;
  r.max_restarts = c.max_restarts;
  r.window_ms = c.restart_window_ms;
  r.cooldown_max_ms = c.breaker_max_cooldown_ms;
  return r;
}

// A build that failed on its own terms (crash, throw, time limit, heap full) fails only its
// module; a plugin or config that cannot work at all stops startup.
bool IsBuildFailure(const absl::Status& s) {
  return s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kDeadlineExceeded;
}

// What a generation is built from on disk: the plugin's and each data file's identity, size
// and modification time. A file replaced or rewritten gives another fingerprint.
std::string Fingerprint(const ModuleConfig& c) {
  std::string out;
  auto add = [&out](const std::string& path) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      absl::StrAppend(&out, path, ":missing;");
      return;
    }
    absl::StrAppend(&out, path, ":", st.st_dev, ":", st.st_ino, ":", st.st_size, ":",
                    st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, ";");
  };
  add(c.plugin);
  for (const auto& [name, path] : c.data_files) add(path);
  return out;
}

// `c` with its pool limits and supervision policies taken from `from`: what is left differs
// only if a new generation is needed.
ModuleConfig WithPoolOf(ModuleConfig c, const ModuleConfig& from) {
  c.workers = from.workers;
  c.max_workers = from.max_workers;
  c.idle_timeout_ms = from.idle_timeout_ms;
  c.queue_limit = from.queue_limit;
  c.pipeline_depth = from.pipeline_depth;
  c.recycle_after_calls = from.recycle_after_calls;
  c.max_private_bytes = from.max_private_bytes;
  c.critical = from.critical;
  c.max_restarts = from.max_restarts;
  c.restart_window_ms = from.restart_window_ms;
  c.breaker_max_cooldown_ms = from.breaker_max_cooldown_ms;
  return c;
}

}  // namespace

ModuleRuntime::ModuleRuntime(const ModuleConfig& config, HelperEnv& helpers, uint64_t seed)
    : config_(config),
      helpers_(helpers),
      timer_(helpers.timer),
      pool_(PoolLimits(config), RestartConfig(config), *this, seed),
      tasks_(*this) {}

ModuleRuntime::~ModuleRuntime() noexcept { StopAll(); }

void ModuleRuntime::taskFailed(kj::Exception&& exception) {
  LogEvent(LogLevel::kError, "internal_error",
           {{"module", config_.name}, {"what", exception.getDescription().cStr()}});
}

int64_t ModuleRuntime::NowMs() { return (timer_.now() - kj::origin<kj::TimePoint>()) / kj::MILLISECONDS; }

void ModuleRuntime::RunAfter(int64_t delay_ms, std::function<void()> fn) {
  tasks_.add(timer_.afterDelay(delay_ms * kj::MILLISECONDS).then([this, fn = std::move(fn)]() {
    if (!stopping_) fn();
  }));
}

void ModuleRuntime::Refuse(PendingCall call, Unavailable cause, const absl::Status& why) {
  CallResult r = HostUnavailable(
      cause, config_.name,
      cause == Unavailable::kModuleFailed
          ? absl::StrCat("module '", config_.name, "' failed: ", why.message())
          : absl::StrCat("module '", config_.name, "': ", why.message()));
  metrics_.RecordRefusal(r);
  call.fulfiller->fulfill(std::move(r));
}

void ModuleRuntime::Note(absl::string_view event, const PoolMember* member,
                         absl::string_view why) {
  const LogLevel level = event == "breaker_open" ? LogLevel::kError
                         : event == "breaker_trial" ? LogLevel::kWarn
                                                    : LogLevel::kInfo;
  const std::string pid =
      member ? absl::StrCat(static_cast<const WorkerChannel*>(member)->pid()) : "";
  if (member) {
    LogEvent(level, event, {{"module", config_.name}, {"pid", pid}, {"why", why}});
  } else {
    LogEvent(level, event, {{"module", config_.name}, {"why", why}});
  }
}

const char* ModuleStateName(ModuleState state) {
  switch (state) {
    case ModuleState::kStarting: return "starting";
    case ModuleState::kServing: return "serving";
    case ModuleState::kFailed: return "failed";
    case ModuleState::kStopping: return "stopping";
  }
  return "?";
}

ModuleState ModuleRuntime::state() const {
  if (stopping_) return ModuleState::kStopping;
  if (failed()) return ModuleState::kFailed;
  if (!started_) return ModuleState::kStarting;
  return ModuleState::kServing;
}

bool ModuleRuntime::failed() const { return build_failed_ || pool_.failed(); }

std::string ModuleRuntime::failed_reason() const {
  if (build_failed_) return build_error_;
  return pool_.failed_reason();
}

bool ModuleRuntime::busy() const {
  if (pool_.queue_depth() > 0) return true;
  for (const auto& [id, w] : workers_) {
    if (w->phase() == WorkerPhase::kBusy || w->phase() == WorkerPhase::kCancelling) return true;
  }
  return false;
}

std::vector<const Generation*> ModuleRuntime::generations() const {
  std::vector<const Generation*> out;
  if (generation_) out.push_back(generation_.get());
  for (const auto& g : retiring_) out.push_back(g.get());
  return out;
}

Generation* ModuleRuntime::FindGeneration(uint64_t number) {
  if (generation_ && generation_->number() == number) return generation_.get();
  if (starting_ && starting_->number() == number) return starting_.get();
  for (auto& g : retiring_) {
    if (g->number() == number) return g.get();
  }
  return nullptr;
}

kj::Promise<absl::StatusOr<std::unique_ptr<Generation>>> ModuleRuntime::LoadGeneration(
    uint64_t number) {
  using Result = absl::StatusOr<std::unique_ptr<Generation>>;
  const auto started = std::chrono::steady_clock::now();
  // Taken before the build reads the files: a change during the build is seen next time.
  std::string fingerprint = Fingerprint(config_);
  return BuildHeap(helpers_, config_, number)
      .then([this](absl::StatusOr<BuiltHeap> heap) -> kj::Promise<Result> {
        if (!heap.ok()) return Result(heap.status());
        return Generation::Start(helpers_, config_, *std::move(heap));
      })
      .then([this, started, fingerprint = std::move(fingerprint)](Result gen) mutable {
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        metrics_.RecordBuild(gen.ok(), seconds);
        if (gen.ok()) (*gen)->set_fingerprint(std::move(fingerprint));
        return gen;
      });
}

kj::Promise<absl::Status> ModuleRuntime::Start() {
  return StartFirstGeneration().then([this](absl::Status s) {
    started_ = true;
    return s;
  });
}

kj::Promise<absl::Status> ModuleRuntime::StartFirstGeneration() {
  return LoadGeneration(next_generation_++)
      .then([this](absl::StatusOr<std::unique_ptr<Generation>> gen) -> kj::Promise<absl::Status> {
        if (!gen.ok()) {
          if (!IsBuildFailure(gen.status())) return gen.status();
          build_failed_ = true;
          build_error_ = std::string(absl::StripPrefix(
              gen.status().message(), absl::StrCat("module '", config_.name, "': ")));
          LogEvent(LogLevel::kError, "module_failed",
                   {{"module", config_.name}, {"reason", build_error_}});
          return gen.status();
        }
        generation_ = *std::move(gen);
        const auto& heap = generation_->heap();
        LogEvent("module_loaded", {{"module", config_.name},
                                   {"version", heap.module_version},
                                   {"generation", absl::StrCat(heap.generation)},
                                   {"heap_bytes", absl::StrCat(heap.segment_bytes)},
                                   {"checksum", absl::StrCat(absl::Hex(heap.checksum))}});
        pool_.SetGeneration(generation_->number());
        return StartWorkers(*generation_, config_.workers)
            .then([this](std::pair<uint32_t, absl::Status> started) {
              if (started.first < config_.workers) return started.second;
              return absl::OkStatus();
            });
      });
}

WorkerChannel* ModuleRuntime::StartWorker(Generation& gen,
                                          kj::Own<kj::PromiseFulfiller<absl::Status>> ready) {
  const uint64_t id = next_worker_id_++;
  WorkerConfig wc{config_.name,         gen.number(),         config_.ring_bytes,
                  config_.max_message_bytes, config_.call_timeout_ms, config_.cancel_grace_ms,
                  helpers_.services};
  auto channel = WorkerChannel::Create(id, wc, helpers_.events, timer_, *this);
  if (!channel.ok()) {
    LogEvent(LogLevel::kWarn, "worker_spawn_failed",
             {{"module", config_.name}, {"error", channel.status().message()}});
    if (ready) ready->fulfill(absl::Status(channel.status()));
    return nullptr;
  }
  auto output = helpers_.output.Open(config_.name, "worker");
  if (!output.ok()) {
    if (ready) ready->fulfill(absl::Status(output.status()));
    return nullptr;
  }
  WorkerChannel* w = channel->get();
  w->set_restarts_before(pool_.restarts());
  workers_.emplace(id, *std::move(channel));
  const uint64_t address_space =
      gen.heap().segment_bytes + 2 * w->ring().segment().size() + config_.worker_memory_bytes;
  auto spawned = gen.Spawn(id, w->ring_fd(), w->doorbell_fd(), output->write_end.get(),
                           address_space, helpers_.SpinFor(config_.spin_iterations));
  output->write_end.reset();  // the worker has its own copy now
  const uint64_t number = gen.number();
  tasks_.add(spawned.then([this, id, number, stream = output->id, ready = kj::mv(ready)](
                              absl::StatusOr<SpawnedWorker> spawned) mutable {
    auto it = workers_.find(id);
    Generation* gen = FindGeneration(number);
    if (it == workers_.end()) return;  // the module stopped meanwhile
    WorkerChannel& w = *it->second;
    if (!spawned.ok() || gen == nullptr || stopping_) {
      absl::Status why = spawned.ok() ? absl::CancelledError("its generation is gone")
                                      : spawned.status();
      if (spawned.ok()) SignalChild(spawned->pidfd.get(), SIGKILL);
      LogEvent(LogLevel::kWarn, "worker_spawn_failed",
               {{"module", config_.name}, {"error", why.message()}});
      pool_.OnExited(w, /*expected=*/false);
      workers_.erase(it);
      PruneRetiredGenerations();
      if (ready) ready->fulfill(std::move(why));
      return;
    }
    helpers_.output.SetPid(stream, spawned->pid);
    w.Started(spawned->pid, spawned->helper_pid, std::move(spawned->pidfd),
              gen->WhenExited(spawned->helper_pid));
    LogEvent("worker_started", {{"module", config_.name},
                                {"pid", absl::StrCat(w.pid())},
                                {"generation", absl::StrCat(number)}});
    if (ready) ready->fulfill(absl::OkStatus());
    pool_.OnReady(w);
  }));
  return w;
}

PoolMember* ModuleRuntime::Launch(uint64_t generation) {
  Generation* gen = FindGeneration(generation);
  if (gen == nullptr || stopping_ || !gen->zygote_end().empty()) return nullptr;
  return StartWorker(*gen, kj::Own<kj::PromiseFulfiller<absl::Status>>());
}

kj::Promise<std::pair<uint32_t, absl::Status>> ModuleRuntime::StartWorkers(Generation& gen,
                                                                          uint32_t n) {
  auto waits = kj::heapArrayBuilder<kj::Promise<absl::Status>>(n);
  for (uint32_t i = 0; i < n; ++i) {
    auto paf = kj::newPromiseAndFulfiller<absl::Status>();
    WorkerChannel* w = StartWorker(gen, kj::mv(paf.fulfiller));
    if (w != nullptr) pool_.Adopt(w);
    waits.add(kj::mv(paf.promise));
  }
  return kj::joinPromises(waits.finish()).then([](kj::Array<absl::Status> results) {
    std::pair<uint32_t, absl::Status> out{0, absl::OkStatus()};
    for (auto& r : results) {
      if (r.ok()) {
        ++out.first;
      } else {
        out.second = r;
      }
    }
    return out;
  });
}

kj::Promise<CallResult> ModuleRuntime::Call(CallRequest request) {
  auto refuse = [this](uint16_t status, std::string message) {
    CallResult r = HostError(status, config_.name, message);
    metrics_.RecordRefusal(r);
    return r;
  };
  auto unavailable = [this](Unavailable cause, std::string message) {
    CallResult r = HostUnavailable(cause, config_.name, message);
    metrics_.RecordRefusal(r);
    return r;
  };
  if (stopping_) return unavailable(Unavailable::kDraining, "the host is shutting down");
  if (failed()) {
    return unavailable(Unavailable::kModuleFailed,
                       absl::StrCat("module '", config_.name, "' failed: ", failed_reason()));
  }
  if (!started_) {
    return unavailable(Unavailable::kStarting,
                       absl::StrCat("module '", config_.name, "' is starting"));
  }
  if (request.body.size() > config_.max_body_bytes) {
    return refuse(413, absl::StrCat("request body of ", request.body.size(),
                                    " bytes exceeds the module's limit of ",
                                    config_.max_body_bytes));
  }
  if (const size_t bytes = CallBytes(request); bytes > config_.max_message_bytes) {
    return refuse(413, absl::StrCat("call message of ", bytes,
                                    " bytes (body, headers and framing) exceeds the module's "
                                    "maxMessageKb of ",
                                    config_.max_message_bytes >> 10, " KiB"));
  }
  auto paf = kj::newPromiseAndFulfiller<CallResult>();
  PendingCall call{std::move(request), std::move(paf.fulfiller), timer_.now()};
  if (auto admitted = pool_.Submit(call); !admitted.ok()) {
    if (absl::IsResourceExhausted(admitted)) {
      return unavailable(Unavailable::kQueueFull,
                         absl::StrCat("module '", config_.name, "' ", admitted.message()));
    }
    return unavailable(Unavailable::kModuleFailed,
                       absl::StrCat("module '", config_.name, "' failed: ", admitted.message()));
  }
  return std::move(paf.promise);
}

void ModuleRuntime::OnCallDone(WorkerChannel& w, const CallResult* result, double seconds) {
  if (result != nullptr) metrics_.RecordCall(result->status, seconds);
  pool_.OnCallDone(w);
}

void ModuleRuntime::OnWorkerExit(WorkerChannel& w, const ExitReading& exit) {
  metrics_.RecordExit(exit.cause);
  LogEvent(exit.cause == ExitCause::kRetired ? LogLevel::kInfo : LogLevel::kWarn, "worker_exit",
           {{"module", config_.name},
            {"pid", absl::StrCat(w.pid())},
            {"cause", exit.description},
            {"calls", absl::StrCat(w.calls())}});
  const uint64_t id = w.id();
  const bool expected = w.retiring() || exit.cause == ExitCause::kRetired;
  // The channel's own promise is running this: destroy it on a later turn.
  tasks_.add(kj::evalLater([this, id, expected]() {
    auto it = workers_.find(id);
    if (it == workers_.end()) return;
    std::unique_ptr<WorkerChannel> gone = std::move(it->second);
    workers_.erase(it);
    if (!stopping_) pool_.OnExited(*gone, expected);
    PruneRetiredGenerations();
  }));
}

void ModuleRuntime::PruneRetiredGenerations() {
  for (auto it = retiring_.begin(); it != retiring_.end();) {
    bool used = false;
    for (const auto& [id, w] : workers_) used = used || w->generation() == (*it)->number();
    if (used) {
      ++it;
      continue;
    }
    LogEvent("generation_retired", {{"module", config_.name},
                                    {"generation", absl::StrCat((*it)->number())}});
    it = retiring_.erase(it);  // kills its init, and with it its zygote; unmaps the heap
  }
}

kj::Promise<absl::StatusOr<uint64_t>> ModuleRuntime::Reload() {
  using Result = absl::StatusOr<uint64_t>;
  if (stopping_) return Result(absl::UnavailableError("the host is stopping"));
  if (reloading_) {
    return Result(absl::FailedPreconditionError(
        absl::StrCat("module '", config_.name, "' is already reloading")));
  }
  reloading_ = true;
  const uint64_t number = next_generation_++;
  LogEvent("reload_started", {{"module", config_.name}, {"generation", absl::StrCat(number)}});
  auto fail = [this](absl::Status s) {
    reloading_ = false;
    ++metrics_.reloads_failed;
    if (stopping_) s = absl::UnavailableError("the host is stopping");
    reload_error_ = std::string(s.message());
    LogEvent(LogLevel::kWarn, "reload_failed", {{"module", config_.name}, {"error", s.message()}});
    return s;
  };
  return LoadGeneration(number).then(
      [this, fail](absl::StatusOr<std::unique_ptr<Generation>> generation) -> kj::Promise<Result> {
        if (!generation.ok() || stopping_) return Result(fail(generation.status()));
        starting_ = *std::move(generation);
        return StartWorkers(*starting_, config_.workers)
            .then([this, fail](std::pair<uint32_t, absl::Status> started) -> Result {
              const uint64_t number = starting_->number();
              if (started.first == 0 || stopping_) {  // keep serving from the old generation
                for (auto& [id, w] : workers_) {
                  if (w->generation() == number) w->Retire("its reload failed");
                }
                retiring_.push_back(std::move(starting_));
                PruneRetiredGenerations();
                return fail(started.second);
              }
              reloading_ = false;
              ++metrics_.reloads_ok;
              if (generation_) retiring_.push_back(std::move(generation_));
              generation_ = std::move(starting_);
              reload_error_.clear();
              build_failed_ = false;
              pool_.SetGeneration(number);  // the old generation's workers retire
              pool_.EnsureMinimum();
              PruneRetiredGenerations();
              LogEvent("reload_done", {{"module", config_.name},
                                       {"generation", absl::StrCat(number)},
                                       {"heap_bytes", absl::StrCat(generation_->heap().segment_bytes)}});
              return number;
            });
      });
}

kj::Promise<absl::StatusOr<std::string>> ModuleRuntime::Reconfigure(const ModuleConfig& next) {
  using Result = absl::StatusOr<std::string>;
  std::vector<std::string> applied;
  const WorkerPool::Limits limits = PoolLimits(next);
  if (!(limits == pool_.limits())) {
    applied.push_back(absl::StrCat("pool ", config_.workers, "-", config_.max_workers, " -> ",
                                   next.workers, "-", next.max_workers));
    pool_.SetLimits(limits);
  }
  if (!(RestartConfig(next) == pool_.restart_policy().config())) {
    applied.push_back("restart policy");
    pool_.SetRestartConfig(RestartConfig(next));
  }
  if (next.critical != config_.critical) {
    applied.push_back(next.critical ? "critical" : "not critical");
  }
  config_ = WithPoolOf(config_, next);
  const std::string done = absl::StrJoin(applied, ", ");
  const bool changed = !(WithPoolOf(next, config_) == config_);
  const bool files_changed = generation_ && Fingerprint(next) != generation_->fingerprint();
  if (!changed && !files_changed && generation_ && !build_failed_) {
    return Result(done.empty() ? "unchanged" : done);
  }
  // A new generation from the new config; if it fails, the old config goes on with the old one.
  ModuleConfig previous = config_;
  config_ = next;
  const char* why = changed ? "config changed" : generation_ ? "files changed" : "not built";
  LogEvent("module_reconfigure", {{"module", config_.name}, {"why", why}});
  return Reload().then([this, previous = std::move(previous), done](
                           absl::StatusOr<uint64_t> r) mutable -> Result {
    if (!r.ok()) {
      if (!stopping_) config_ = WithPoolOf(std::move(previous), config_);
      return absl::Status(r.status().code(),
                          absl::StrCat(done.empty() ? "" : absl::StrCat(done, "; "),
                                       "no new generation, the current one serves on: ",
                                       r.status().message()));
    }
    return absl::StrCat(done.empty() ? "" : absl::StrCat(done, ", "), "generation ", *r);
  });
}

kj::Promise<absl::StatusOr<uint64_t>> ModuleRuntime::Restart() {
  pool_.Reset();
  if (!generation_ || !generation_->zygote_end().empty()) {
    // Never built, or its zygote is gone: a new generation.
    return Reload().then([this](absl::StatusOr<uint64_t> r) -> absl::StatusOr<uint64_t> {
      if (!r.ok()) return r.status();
      return uint64_t{config_.workers};
    });
  }
  // Every worker is replaced: the current ones retire once their call is done.
  pool_.RetireAll("restarted by the operator");
  return StartWorkers(*generation_, config_.workers)
      .then([this](std::pair<uint32_t, absl::Status> started) -> absl::StatusOr<uint64_t> {
        LogEvent("module_restarted",
                 {{"module", config_.name}, {"workers", absl::StrCat(started.first)}});
        if (started.first == 0) return started.second;
        return uint64_t{started.first};
      });
}

absl::Status ModuleRuntime::Scale(uint32_t min_workers, uint32_t max_workers) {
  if (min_workers < 1 || max_workers < min_workers || max_workers > 256) {
    return absl::InvalidArgumentError(absl::StrCat("scale ", config_.name,
                                                   ": need 1 <= min <= max <= 256, got min ",
                                                   min_workers, " max ", max_workers));
  }
  config_.workers = min_workers;
  config_.max_workers = max_workers;
  LogEvent("module_scaled", {{"module", config_.name},
                             {"min", absl::StrCat(min_workers)},
                             {"max", absl::StrCat(max_workers)}});
  pool_.Scale(min_workers, max_workers);
  return absl::OkStatus();
}

bool ModuleRuntime::KillWorker(pid_t pid) {
  for (auto& [id, w] : workers_) {
    if (w->pid() == pid && w->phase() != WorkerPhase::kKilled) {
      w->Kill(ExitCause::kOperator, "was killed by the operator (mpctl kill)");
      return true;
    }
  }
  return false;
}

void ModuleRuntime::Tick() {
  metrics_.Tick();
  pool_.ExpireQueued(timer_.now() - config_.call_timeout_ms * kj::MILLISECONDS,
                     absl::UnavailableError(absl::StrCat("no worker was free within ",
                                                         config_.call_timeout_ms,
                                                         " ms (callTimeoutMs)")));
  for (auto& [id, w] : workers_) w->TrimIdleRings();
  pool_.Tick([this](PoolMember& m) -> uint64_t {
    auto& w = static_cast<WorkerChannel&>(m);
    const Generation* gen = FindGeneration(w.generation());
    if (gen == nullptr) return 0;
    auto mem = ReadMemoryUsage(w.pid(), HeapMarker(config_.name, gen->number()));
    return mem ? mem->uss_bytes : 0;
  });
}

bool ModuleRuntime::RetireForRemoval(uint32_t grace_ms) {
  if (removal_deadline_ == nullptr) {
    removal_deadline_ = timer_.now() + grace_ms * kj::MILLISECONDS;
    WorkerPool::Limits none = pool_.limits();
    none.min_workers = 0;
    none.max_workers = 0;
    none.pipeline_depth = 0;
    pool_.SetLimits(none);  // every worker retires: idle ones now, busy ones after their call
  }
  if (workers_.empty()) return true;
  KJ_IF_MAYBE(deadline, removal_deadline_) {
    if (timer_.now() >= *deadline) {
      for (auto& [id, w] : workers_) {
        w->Kill(ExitCause::kOperator, "its module was removed from the config and it did not stop");
      }
    }
  }
  return false;
}

void ModuleRuntime::StopAll() {
  if (stopping_ && workers_.empty() && !generation_) return;
  stopping_ = true;
  pool_.FailQueue(Unavailable::kDraining, absl::UnavailableError("the host is shutting down"));
  for (auto& [id, w] : workers_) {
    if (w->pidfd() >= 0) w->SendStop();
  }
  for (auto& [id, w] : workers_) {
    w->AbandonCall(HostUnavailable(Unavailable::kDraining, config_.name, "the host is shutting down"));
    if (w->pidfd() < 0) continue;
    // Not our child (its generation's init reaps it): wait for it to be gone.
    const bool gone = AwaitExitWithin(w->pidfd(), 2000);
    LogEvent("worker_exit", {{"module", config_.name},
                             {"pid", absl::StrCat(w->pid())},
                             {"cause", gone ? "host stopping" : "host stopping; did not exit"}});
  }
  workers_.clear();
  retiring_.clear();
  starting_.reset();
  generation_.reset();  // kills each generation's init, and whatever is left with it
}

}  // namespace mp::host
