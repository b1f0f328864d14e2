#include "host/supervisor.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "host/heap_build.h"
#include "host/json.h"
#include "host/reply_rules.h"
#include "host/log.h"
#include "host/process.h"
#include "host/response_decoder.h"
#include "host/sandbox_probe.h"
#include "microproc/sandbox.h"
#include "microproc/ring_message.h"
#include "microproc/worker.h"
#include "schemas/call.capnp.h"

namespace mp::host {
namespace {

constexpr int kMaintenanceMs = 1000;  // idle scale-down and memory checks

// Identifies a generation's heap mapping in /proc/PID/smaps.
std::string HeapMarker(const std::string& module, uint64_t generation) {
  return absl::StrCat("/memfd:mp-heap.", module, ".gen", generation, " ");
}

int64_t NowUnixMs() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return int64_t{tv.tv_sec} * 1000 + tv.tv_usec / 1000;
}

}  // namespace

struct Supervisor::Worker {
  enum class State { kStarting, kReady, kBusy, kStopping };
  uint64_t id = 0;
  Module* module = nullptr;
  pid_t pid = 0;         // 0 while starting
  pid_t helper_pid = 0;  // as its generation's init sees it
  UniqueFd pidfd;
  std::unique_ptr<shm::RingFile> ring;
  std::unique_ptr<shm::Doorbell> doorbell;
  shm::RingWriter requests;
  shm::RingReader responses;
  State state = State::kStarting;
  uint64_t generation = 0;
  uint64_t calls = 0;
  uint64_t errors = 0;
  int64_t started_unix_ms = 0;
  int64_t last_active_ms = 0;  // end of its last call (or its start)
  uint64_t recycle_at = 0;     // calls after which it is replaced; 0 = never
  bool recycle = false;        // replace it once its current call is done
  uint64_t restarts_before = 0;  // its module's restarts when it started
  uint64_t calls_at_trim = 0;    // calls when its rings' pages were last released
  std::string end_cause;  // set when the host decided to end this worker
  bool retiring = false;  // its generation was replaced: stop after the current call
  // The call in flight, if any.
  uint64_t call_id = 0;
  // Its call when too large for one frame, still being written in chunks (the worker rings
  // the doorbell as it consumes them).
  std::optional<microproc::ChunkedSend> outgoing;
  bool cancel_unsent = false;  // the ring was full of its chunks: cancel once there is room
  // Its reply when the worker sends it in chunks; null until the first one.
  std::unique_ptr<microproc::MessageAssembler> replies;
  kj::Own<kj::PromiseFulfiller<CallResult>> fulfiller;
  kj::TimePoint received = kj::origin<kj::TimePoint>();
  kj::Promise<void> deadline = nullptr;
  uint64_t cancelled_call_id = 0;     // gave up on it; its late answer is dropped
  kj::Promise<void> grace = nullptr;  // kills the worker if the cancelled call does not stop
  kj::Own<kj::UnixEventPort::FdObserver> bell_observer;
  kj::Promise<void> watches = nullptr;
};

struct Supervisor::Module {
  ModuleConfig config;
  std::unique_ptr<Generation> generation;           // current: new calls go here
  std::unique_ptr<Generation> starting;             // a reload's, until its workers are up
  std::vector<std::unique_ptr<Generation>> retiring;  // still have workers finishing calls
  bool reloading = false;
  std::string reload_error;  // why the last reload failed
  uint64_t next_generation = 1;
  std::vector<std::unique_ptr<Worker>> workers;
  std::deque<Pending> queue;
  uint64_t ring_capacity = 0;
  std::deque<int64_t> restarts;  // unix ms of recent restarts
  uint64_t restarts_total = 0;
  bool failed = false;
  std::string failed_reason;
  std::map<uint16_t, uint64_t> calls_by_status;
  uint64_t latency[kLatencyBucketCount] = {};  // not cumulative: one count per bucket
  double latency_sum_seconds = 0;
  uint64_t calls_at_last_tick = 0;  // for calls/s
  std::map<std::string, uint64_t> exits_by_cause;  // metrics: signal, seccomp, deadline, ...
  uint64_t ring_violations = 0;
  double calls_per_second = 0;
};

Supervisor::Supervisor(kj::AsyncIoContext& io, HostConfig config, HelperEnv& helpers)
    : io_(io),
      timer_(io.provider->getTimer()),
      config_(std::move(config)),
      helpers_(helpers),
      tasks_(*this) {}

Supervisor::~Supervisor() { StopAll(); }

kj::Promise<absl::StatusOr<std::unique_ptr<Generation>>> Supervisor::LoadGeneration(
    Module& m, uint64_t number) {
  return BuildHeap(helpers_, m.config, number)
      .then([this, &m](absl::StatusOr<BuiltHeap> heap)
                -> kj::Promise<absl::StatusOr<std::unique_ptr<Generation>>> {
        if (!heap.ok()) return absl::StatusOr<std::unique_ptr<Generation>>(heap.status());
        return Generation::Start(helpers_, m.config, *std::move(heap));
      });
}

kj::Promise<std::pair<uint32_t, absl::Status>> Supervisor::SpawnWorkers(Module& m,
                                                                        Generation& gen,
                                                                        uint32_t n) {
  auto spawns = kj::heapArrayBuilder<kj::Promise<absl::Status>>(n);
  for (uint32_t i = 0; i < n; ++i) spawns.add(SpawnWorker(m, gen));
  return kj::joinPromises(spawns.finish()).then([](kj::Array<absl::Status> results) {
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

kj::Promise<absl::StatusOr<uint64_t>> Supervisor::Reload(absl::string_view module) {
  auto it = modules_.find(module);
  if (it == modules_.end()) {
    return absl::StatusOr<uint64_t>(
        absl::NotFoundError(absl::StrCat("no module named '", module, "'")));
  }
  Module& m = *it->second;
  if (stopping_) return absl::StatusOr<uint64_t>(absl::UnavailableError("the host is stopping"));
  if (m.reloading) {
    return absl::StatusOr<uint64_t>(absl::FailedPreconditionError(
        absl::StrCat("module '", module, "' is already reloading")));
  }
  m.reloading = true;
  const uint64_t number = m.next_generation++;
  LogEvent("reload_started", {{"module", m.config.name}, {"generation", absl::StrCat(number)}});
  auto fail = [this, &m](absl::Status s) {
    m.reloading = false;
    if (stopping_) s = absl::UnavailableError("the host is stopping");
    m.reload_error = std::string(s.message());
    LogEvent(LogLevel::kWarn, "reload_failed", {{"module", m.config.name}, {"error", s.message()}});
    return s;
  };
  return LoadGeneration(m, number)
      .then([this, &m, fail](absl::StatusOr<std::unique_ptr<Generation>> generation)
                -> kj::Promise<absl::StatusOr<uint64_t>> {
        if (!generation.ok() || stopping_) {
          return absl::StatusOr<uint64_t>(fail(generation.status()));
        }
        m.starting = *std::move(generation);
        return SpawnWorkers(m, *m.starting, m.config.workers)
            .then([this, &m, fail](std::pair<uint32_t, absl::Status> spawned)
                      -> absl::StatusOr<uint64_t> {
              const uint64_t number = m.starting->number();
              if (spawned.first == 0 || stopping_) {  // keep serving from the old generation
                for (auto& w : m.workers) {
                  if (w->generation == number) StopWorker(*w);
                }
                m.retiring.push_back(std::move(m.starting));
                PruneRetiredGenerations(m);
                return fail(spawned.second);
              }
              m.reloading = false;
              std::unique_ptr<Generation> old = std::move(m.generation);
              m.generation = std::move(m.starting);
              m.reload_error.clear();
              m.failed = false;
              for (auto& w : m.workers) {
                if (w->generation != number) w->retiring = true;
              }
              if (old) m.retiring.push_back(std::move(old));
              RetireIdle(m);
              PruneRetiredGenerations(m);
              LogEvent("reload_done",
                       {{"module", m.config.name},
                        {"generation", absl::StrCat(number)},
                        {"heap_bytes", absl::StrCat(m.generation->heap().segment_bytes)}});
              Dispatch(m);
              return number;
            });
      });
}

void Supervisor::ReloadAll() {
  for (auto& [name, m] : modules_) {
    tasks_.add(Reload(name).ignoreResult());
  }
}

kj::Promise<absl::StatusOr<uint64_t>> Supervisor::Restart(absl::string_view module) {
  auto it = modules_.find(module);
  if (it == modules_.end()) {
    return absl::StatusOr<uint64_t>(
        absl::NotFoundError(absl::StrCat("no module named '", module, "'")));
  }
  Module& m = *it->second;
  if (!m.generation || !m.generation->zygote_end().empty()) {
    // Never built, or its zygote is gone: a new generation.
    m.failed = false;
    m.failed_reason.clear();
    m.restarts.clear();
    return Reload(module).then([&m](absl::StatusOr<uint64_t> r) -> absl::StatusOr<uint64_t> {
      if (!r.ok()) return r.status();
      return m.config.workers;
    });
  }
  m.failed = false;
  m.failed_reason.clear();
  m.restarts.clear();
  for (auto& w : m.workers) {
    w->retiring = true;
    if (w->state == Worker::State::kReady && !w->fulfiller) StopWorker(*w);
  }
  return SpawnWorkers(m, *m.generation, m.config.workers)
      .then([&m](std::pair<uint32_t, absl::Status> spawned) -> absl::StatusOr<uint64_t> {
        LogEvent("module_restarted",
                 {{"module", m.config.name}, {"workers", absl::StrCat(spawned.first)}});
        if (spawned.first == 0) return spawned.second;
        return uint64_t{spawned.first};
      });
}

void Supervisor::StopWorker(Worker& w) {
  if (!w.end_cause.empty()) return;
  w.retiring = true;
  bool wake = false;
  if (!w.requests.TryWrite(shm::FrameKind::kStop, 0, {}, &wake)) {
    EndWorker(w, "could not be told to stop (request ring full)");
    return;
  }
  if (wake) shm::WakeFutexConsumer(&w.ring->header()->request);
  w.state = Worker::State::kStopping;
}

void Supervisor::RetireIdle(Module& m) {
  for (auto& w : m.workers) {
    if (w->retiring && w->state == Worker::State::kReady && !w->fulfiller) StopWorker(*w);
  }
}

void Supervisor::PruneRetiredGenerations(Module& m) {
  for (auto it = m.retiring.begin(); it != m.retiring.end();) {
    bool used = false;
    for (const auto& w : m.workers) used = used || w->generation == (*it)->number();
    if (used) {
      ++it;
      continue;
    }
    LogEvent("generation_retired", {{"module", m.config.name},
                                    {"generation", absl::StrCat((*it)->number())}});
    it = m.retiring.erase(it);  // closes the zygote's socket, reaps it, unmaps the heap
  }
}

void Supervisor::taskFailed(kj::Exception&& exception) {
  LogEvent("internal_error", {{"what", exception.getDescription().cStr()}});
}

namespace {
// A build that failed on its own terms (crash, throw, time limit, heap full) fails only its
// module; a plugin or config that cannot work at all stops startup.
bool IsBuildFailure(const absl::Status& s) {
  return s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kDeadlineExceeded;
}
}  // namespace

kj::Promise<absl::Status> Supervisor::Start() {
  auto loads = kj::heapArrayBuilder<kj::Promise<absl::Status>>(config_.modules.size());
  for (const ModuleConfig& mc : config_.modules) {
    auto m = std::make_unique<Module>();
    m->config = mc;
    m->ring_capacity = mc.ring_bytes;
    Module& ref = *m;
    modules_.emplace(mc.name, std::move(m));
    loads.add(LoadGeneration(ref, ref.next_generation++)
                  .then([this, &ref](absl::StatusOr<std::unique_ptr<Generation>> gen)
                            -> kj::Promise<absl::Status> {
                    const ModuleConfig& mc = ref.config;
                    if (!gen.ok()) {
                      // A build that failed on its own terms (crash, throw, time limit, heap
                      // full) fails only its module; a plugin or config that cannot work at
                      // all stops startup.
                      if (!IsBuildFailure(gen.status())) return gen.status();
                      ref.failed = true;
                      ref.failed_reason = std::string(absl::StripPrefix(
                          gen.status().message(), absl::StrCat("module '", mc.name, "': ")));
                      LogEvent(LogLevel::kError, "module_failed",
                               {{"module", mc.name}, {"reason", ref.failed_reason}});
                      return absl::Status(gen.status().code(), std::string(gen.status().message()));
                    }
                    ref.generation = *std::move(gen);
                    const auto& heap = ref.generation->heap();
                    LogEvent("module_loaded",
                             {{"module", mc.name},
                              {"version", heap.module_version},
                              {"generation", absl::StrCat(heap.generation)},
                              {"heap_bytes", absl::StrCat(heap.segment_bytes)},
                              {"checksum", absl::StrCat(absl::Hex(heap.checksum))}});
                    return SpawnWorkers(ref, *ref.generation, mc.workers)
                        .then([&ref](std::pair<uint32_t, absl::Status> spawned) {
                          if (spawned.first < ref.config.workers) return spawned.second;
                          return absl::OkStatus();
                        });
                  }));
  }
  return kj::joinPromises(loads.finish()).then([this](kj::Array<absl::Status> results) {
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

Supervisor::Worker* Supervisor::FindWorker(Module& m, uint64_t id) {
  for (auto& w : m.workers) {
    if (w->id == id) return w.get();
  }
  return nullptr;
}

Generation* Supervisor::FindGeneration(Module& m, uint64_t number) {
  if (m.generation && m.generation->number() == number) return m.generation.get();
  if (m.starting && m.starting->number() == number) return m.starting.get();
  for (auto& g : m.retiring) {
    if (g->number() == number) return g.get();
  }
  return nullptr;
}

uint32_t Supervisor::StartingWorkers(const Module& m) const {
  uint32_t n = 0;
  for (const auto& w : m.workers) {
    if (w->state == Worker::State::kStarting && w->end_cause.empty() && !w->retiring) ++n;
  }
  return n;
}

kj::Promise<absl::Status> Supervisor::SpawnWorker(Module& m, Generation& gen) {
  auto w = std::make_unique<Worker>();
  w->id = next_worker_id_++;
  w->module = &m;
  w->generation = gen.number();
  auto ring = shm::RingFile::Create(absl::StrCat("mp-ring.", m.config.name, ".w", w->id),
                                    m.ring_capacity, m.ring_capacity,
                                    m.config.max_message_bytes);
  if (!ring.ok()) return ring.status();
  w->ring = std::make_unique<shm::RingFile>(*std::move(ring));
  // The host sleeps in its event loop: the worker must ring until the host says otherwise.
  w->ring->header()->response.consumer_sleeping.store(1, std::memory_order_relaxed);
  auto bell = shm::Doorbell::Create();
  if (!bell.ok()) return bell.status();
  w->doorbell = std::make_unique<shm::Doorbell>(*std::move(bell));
  w->requests = w->ring->RequestWriter();
  w->responses = w->ring->ResponseReader();
  auto output = helpers_.output.Open(m.config.name, "worker");
  if (!output.ok()) return output.status();
  const uint64_t address_space =
      gen.heap().segment_bytes + 2 * w->ring->segment().size() + m.config.worker_memory_bytes;
  const uint64_t id = w->id;
  const uint64_t number = gen.number();
  auto spawned = gen.Spawn(id, w->ring->segment().fd(), w->doorbell->fd(),
                           output->write_end.get(), address_space, m.config.spin_iterations);
  output->write_end.reset();  // the worker has its own copy now
  m.workers.push_back(std::move(w));
  return spawned.then([this, &m, id, number, stream = output->id](
                          absl::StatusOr<SpawnedWorker> spawned) -> absl::Status {
    Worker* w = FindWorker(m, id);
    Generation* gen = FindGeneration(m, number);
    if (!spawned.ok() || w == nullptr || gen == nullptr) {
      if (w != nullptr) {
        std::erase_if(m.workers, [id](const auto& other) { return other->id == id; });
        PruneRetiredGenerations(m);
      }
      if (!spawned.ok()) return spawned.status();
      SignalChild(spawned->pidfd.get(), SIGKILL);  // given up on while it started
      return absl::CancelledError("the worker was no longer wanted");
    }
    w->pid = spawned->pid;
    w->helper_pid = spawned->helper_pid;
    w->pidfd = std::move(spawned->pidfd);
    helpers_.output.SetPid(stream, w->pid);
    w->started_unix_ms = NowUnixMs();
    w->last_active_ms = w->started_unix_ms;
    w->restarts_before = m.restarts_total;
    if (const uint64_t n = m.config.recycle_after_calls; n > 0) {
      w->recycle_at = n + jitter_rng_() % (n / 10 + 1);
    }
    w->bell_observer = kj::heap<kj::UnixEventPort::FdObserver>(
        io_.unixEventPort, w->doorbell->fd(), kj::UnixEventPort::FdObserver::OBSERVE_READ);
    w->watches = WatchDoorbell(*w).exclusiveJoin(WatchExit(*w, *gen)).eagerlyEvaluate(nullptr);
    LogEvent("worker_started", {{"module", m.config.name},
                                {"pid", absl::StrCat(w->pid)},
                                {"generation", absl::StrCat(w->generation)}});
    if (!w->end_cause.empty()) {
      SignalChild(w->pidfd.get(), SIGKILL);  // ended while it started: its exit cleans up
    } else if (w->state == Worker::State::kStarting) {
      w->state = Worker::State::kReady;
      if (w->retiring) StopWorker(*w);
    }
    Dispatch(m);
    return absl::OkStatus();
  });
}

void Supervisor::SpawnInBackground(Module& m) {
  if (!m.generation) return;
  tasks_.add(SpawnWorker(m, *m.generation).then([&m](absl::Status s) {
    if (!s.ok() && !absl::IsCancelled(s)) {
      LogEvent(LogLevel::kWarn, "worker_spawn_failed", {{"module", m.config.name}, {"error", s.message()}});
    }
  }));
}

kj::Promise<void> Supervisor::WatchDoorbell(Worker& w) {
  return w.bell_observer->whenBecomesReadable().then([this, &w]() -> kj::Promise<void> {
    w.doorbell->Drain();
    DrainResponses(w);
    PumpOutgoing(w);
    if (!w.end_cause.empty()) return kj::NEVER_DONE;
    return WatchDoorbell(w);
  });
}

kj::Promise<void> Supervisor::WatchExit(Worker& w, Generation& gen) {
  return gen.WhenExited(w.helper_pid).then([this, &w](ExitInfo exit) { OnWorkerExit(w, exit); });
}

CallResult Supervisor::HostError(uint16_t status, absl::string_view module,
                                 absl::string_view message) {
  CallResult r;
  r.status = status;
  r.from_host = true;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = JsonError(message, module);
  return r;
}

void Supervisor::Count(Module& m, uint16_t status) { ++m.calls_by_status[status]; }

void Supervisor::CountFrontDoorAnswer(absl::string_view module, uint16_t status) {
  auto it = modules_.find(module);
  if (it != modules_.end()) Count(*it->second, status);
}

bool Supervisor::HasModule(absl::string_view module) const {
  return modules_.find(module) != modules_.end();
}

std::optional<uint64_t> Supervisor::MaxBodyBytes(absl::string_view module) const {
  auto it = modules_.find(module);
  if (it == modules_.end()) return std::nullopt;
  return it->second->config.max_body_bytes;
}

kj::Promise<CallResult> Supervisor::Call(absl::string_view module, CallRequest request) {
  auto it = modules_.find(module);
  if (it == modules_.end()) {
    return HostError(404, module, absl::StrCat("no module named '", module, "'"));
  }
  Module& m = *it->second;
  if (stopping_) {
    Count(m, 503);
    return HostError(503, module, "the host is shutting down");
  }
  if (m.failed) {
    Count(m, 503);
    return HostError(503, module, absl::StrCat("module '", module, "' failed: ", m.failed_reason));
  }
  if (request.body.size() > m.config.max_body_bytes) {
    Count(m, 413);
    return HostError(413, module, absl::StrCat("request body of ", request.body.size(),
                                               " bytes exceeds the module's limit of ",
                                               m.config.max_body_bytes));
  }
  if (const size_t bytes = CallBytes(request); bytes > m.config.max_message_bytes) {
    Count(m, 413);
    return HostError(413, module,
                     absl::StrCat("call message of ", bytes, " bytes (body, headers and framing) "
                                  "exceeds the module's maxMessageKb of ",
                                  m.config.max_message_bytes >> 10, " KiB"));
  }
  if (m.queue.size() >= m.config.queue_limit) {
    Count(m, 503);
    CallResult r = HostError(503, module, absl::StrCat("module '", module, "' queue is full"));
    r.headers.emplace_back("Retry-After", "1");
    return r;
  }
  auto paf = kj::newPromiseAndFulfiller<CallResult>();
  m.queue.push_back(Pending{std::move(request), std::move(paf.fulfiller), timer_.now()});
  Dispatch(m);
  return std::move(paf.promise);
}

uint32_t Supervisor::LiveWorkers(const Module& m) const {
  uint32_t n = 0;
  for (const auto& w : m.workers) {
    if (w->end_cause.empty() && !w->retiring && !w->recycle) ++n;
  }
  return n;
}

void Supervisor::Dispatch(Module& m) {
  while (!m.queue.empty()) {
    Worker* idle = nullptr;
    for (auto& w : m.workers) {
      if (w->state == Worker::State::kReady && w->end_cause.empty() && m.generation &&
          w->generation == m.generation->number() && !w->retiring) {
        if (idle == nullptr || w->calls < idle->calls) idle = w.get();
      }
    }
    if (idle == nullptr) {
      // All busy: grow the pool, one worker per waiting call, up to maxWorkers.
      if (m.generation && !m.failed && !stopping_ && LiveWorkers(m) < m.config.max_workers &&
          StartingWorkers(m) < m.queue.size()) {
        const size_t before = m.workers.size();
        SpawnInBackground(m);  // dispatches once the new worker is ready
        if (m.workers.size() == before) return;  // could not even begin: try on the next event
        continue;
      }
      return;
    }
    Pending p = std::move(m.queue.front());
    m.queue.pop_front();
    if (!p.fulfiller->isWaiting()) continue;  // the client went away
    Send(*idle, std::move(p));
  }
}

void Supervisor::Recycle(Worker& w, absl::string_view why) {
  if (w.recycle || w.retiring || !w.end_cause.empty()) return;
  Module& m = *w.module;
  w.recycle = true;
  LogEvent("worker_recycle", {{"module", m.config.name}, {"pid", absl::StrCat(w.pid)}, {"why", why}});
  if (!w.fulfiller && w.cancelled_call_id == 0) {
    w.retiring = true;
    StopWorker(w);
  }
  if (!stopping_ && m.generation && LiveWorkers(m) < m.config.workers) SpawnInBackground(m);
}

void Supervisor::Maintain() {
  const int64_t now = NowUnixMs();
  for (auto& [name, m] : modules_) {
    uint64_t calls = 0;
    for (const auto& [status, n] : m->calls_by_status) calls += n;
    m->calls_per_second = static_cast<double>(calls - m->calls_at_last_tick) * 1000.0 / kMaintenanceMs;
    m->calls_at_last_tick = calls;
    // Ring positions only grow, so over time a worker touches every page of its rings. While
    // it is idle both rings are empty (it answered its last call; nothing is queued for it):
    // release their data pages (the header page, with the positions, stays), so that a worker
    // costs its rings only while it carries a message.
    for (auto& w : m->workers) {
      if (w->state != Worker::State::kReady || w->fulfiller || w->cancelled_call_id != 0 ||
          !w->end_cause.empty() || w->retiring || w->calls == w->calls_at_trim) {
        continue;
      }
      w->calls_at_trim = w->calls;
      ::fallocate(w->ring->segment().fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  static_cast<off_t>(shm::kRingHeaderBytes),
                  static_cast<off_t>(w->ring->request_capacity() + w->ring->response_capacity()));
    }
    // Replace workers past their private-memory limit.
    if (m->config.max_private_bytes > 0) {
      for (auto& w : m->workers) {
        if (!w->end_cause.empty() || w->retiring || w->recycle) continue;
        auto mem = ReadMemoryUsage(w->pid, HeapMarker(name, w->generation));
        if (mem && mem->uss_bytes > m->config.max_private_bytes) {
          Recycle(*w, absl::StrCat("private memory ", mem->uss_bytes, " bytes > maxPrivateMb"));
        }
      }
    }
    // Scale down: stop idle workers above the minimum, longest idle first.
    while (LiveWorkers(*m) > m->config.workers) {
      Worker* longest = nullptr;
      for (auto& w : m->workers) {
        if (w->state != Worker::State::kReady || w->fulfiller || !w->end_cause.empty() ||
            w->retiring || w->recycle || now - w->last_active_ms < m->config.idle_timeout_ms) {
          continue;
        }
        if (longest == nullptr || w->last_active_ms < longest->last_active_ms) longest = w.get();
      }
      if (longest == nullptr) break;
      LogEvent("worker_scale_down", {{"module", name}, {"pid", absl::StrCat(longest->pid)}});
      longest->retiring = true;
      StopWorker(*longest);
    }
  }
}

kj::Promise<void> Supervisor::MaintenanceLoop() {
  return timer_.afterDelay(kMaintenanceMs * kj::MILLISECONDS).then([this]() -> kj::Promise<void> {
    if (stopping_) return kj::READY_NOW;
    Maintain();
    return MaintenanceLoop();
  });
}

absl::Status Supervisor::Scale(absl::string_view module, uint32_t min, uint32_t max) {
  auto it = modules_.find(module);
  if (it == modules_.end()) return absl::NotFoundError(absl::StrCat("no module named '", module, "'"));
  if (min < 1 || max < min || max > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("scale ", module, ": need 1 <= min <= max <= 256, got min ", min, " max ", max));
  }
  Module& m = *it->second;
  m.config.workers = min;
  m.config.max_workers = max;
  LogEvent("module_scaled", {{"module", m.config.name}, {"min", absl::StrCat(min)}, {"max", absl::StrCat(max)}});
  // Above the new maximum: stop idle workers now, busy ones after their call.
  for (auto& w : m.workers) {
    if (LiveWorkers(m) <= max) break;
    if (w->end_cause.empty() && !w->retiring && !w->recycle) {
      w->retiring = true;
      if (!w->fulfiller && w->cancelled_call_id == 0) StopWorker(*w);
    }
  }
  while (m.generation && !m.failed && LiveWorkers(m) < min) {
    const size_t before = m.workers.size();
    SpawnInBackground(m);
    if (m.workers.size() == before) {
      return absl::ResourceExhaustedError(
          absl::StrCat("scale ", module, ": could not start a worker (see the log)"));
    }
  }
  return absl::OkStatus();
}

namespace {

void FillCall(call::Call::Builder call, const CallRequest& r) {
  call.setMethod(r.method);
  call.setPath(r.path);
  call.setQuery(r.query);
  auto headers = call.initHeaders(static_cast<unsigned>(r.headers.size()));
  for (size_t i = 0; i < r.headers.size(); ++i) {
    headers[i].setName(r.headers[i].first);
    headers[i].setValue(r.headers[i].second);
  }
  call.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.body.data()), r.body.size()));
}

}  // namespace

size_t Supervisor::CallBytes(const CallRequest& r) {
  std::vector<microproc::HeaderSizes> sizes;
  sizes.reserve(r.headers.size());
  for (const auto& [name, value] : r.headers) sizes.push_back({name.size(), value.size()});
  return microproc::CallMessageBytes(r.method.size(), r.path.size(), r.query.size(), sizes,
                                     r.body.size());
}

void Supervisor::Send(Worker& w, Pending p) {
  Module& m = *w.module;
  const size_t bytes = CallBytes(p.request);  // ≤ maxMessageKb: Call() checked
  w.call_id = next_call_id_++;
  bool wake = false;
  std::byte* frame = bytes <= shm::MaxFramePayload(w.requests.capacity())
                         ? w.requests.Reserve(bytes)
                         : nullptr;
  if (frame != nullptr) {
    // Zero-copy: the call is built where the worker will read it.
    microproc::FrameMessageBuilder message(frame, bytes);
    FillCall(message.initRoot<call::Call>(), p.request);
    if (message.InFrame()) {
      wake = w.requests.Commit(shm::FrameKind::kCall, w.call_id, message.FinishInFrame());
    } else {
      w.outgoing.emplace(shm::FrameKind::kCall, w.call_id, capnp::messageToFlatArray(message));
    }
  } else {
    // Larger than a frame (or the ring is not empty yet): chunks, as the worker makes room.
    capnp::MallocMessageBuilder message(static_cast<unsigned>(bytes / sizeof(capnp::word)));
    FillCall(message.initRoot<call::Call>(), p.request);
    w.outgoing.emplace(shm::FrameKind::kCall, w.call_id, capnp::messageToFlatArray(message));
  }
  if (wake) shm::WakeFutexConsumer(&w.ring->header()->request);
  w.fulfiller = std::move(p.fulfiller);
  w.received = p.received;
  w.state = Worker::State::kBusy;
  const uint32_t timeout_ms = p.request.timeout_ms ? p.request.timeout_ms : m.config.call_timeout_ms;
  // The expiry runs on a turn of its own: it resets `deadline`, which must not happen inside
  // the deadline's own callback.
  w.deadline = timer_.afterDelay(timeout_ms * kj::MILLISECONDS)
                   .then([this, &m, worker_id = w.id, call_id = w.call_id, timeout_ms]() {
                     tasks_.add(kj::evalLater([this, &m, worker_id, call_id, timeout_ms]() {
                       for (auto& other : m.workers) {
                         if (other->id == worker_id && other->call_id == call_id) {
                           CancelCall(*other, timeout_ms);
                         }
                       }
                     }));
                   })
                   .eagerlyEvaluate(nullptr);
  PumpOutgoing(w);
}

void Supervisor::PumpOutgoing(Worker& w) {
  if (!w.end_cause.empty()) return;
  if (w.cancel_unsent) {
    bool wake = false;
    if (w.requests.TryWrite(shm::FrameKind::kCancel, w.cancelled_call_id, {}, &wake)) {
      w.cancel_unsent = false;
      if (wake) shm::WakeFutexConsumer(&w.ring->header()->request);
    }
  }
  if (!w.outgoing) return;
  bool wake = false;
  const bool done = w.outgoing->Pump(w.requests, &wake);
  if (wake) shm::WakeFutexConsumer(&w.ring->header()->request);
  if (done) {
    w.outgoing.reset();
  } else if (w.requests.PeerCorrupt()) {
    EndWorker(w, "broke the ring protocol (request ring head out of range)");
  }
}

void Supervisor::CancelCall(Worker& w, uint32_t timeout_ms) {
  Module& m = *w.module;
  const uint64_t call_id = w.call_id;
  ++w.errors;
  Finish(w, HostError(504, m.config.name,
                      absl::StrCat("worker ", w.pid, " of module '", m.config.name,
                                   "' missed its deadline of ", timeout_ms, " ms")));
  // The worker is still computing: not dispatchable until its late answer arrives (and is
  // dropped) or the grace period ends it.
  w.state = Worker::State::kBusy;
  w.cancelled_call_id = call_id;
  w.outgoing.reset();  // a call still arriving: the worker drops it on the cancel frame
  if (w.replies) w.replies->Reset();
  w.ring->header()->host.cancel_call_id.store(call_id, std::memory_order_release);
  bool wake = false;
  if (!w.requests.TryWrite(shm::FrameKind::kCancel, call_id, {}, &wake)) {
    w.cancel_unsent = true;  // sent when the worker makes room (its doorbell)
  } else if (wake) {
    shm::WakeFutexConsumer(&w.ring->header()->request);
  }
  const uint32_t grace = m.config.cancel_grace_ms;
  w.grace = timer_.afterDelay(grace * kj::MILLISECONDS)
                .then([this, &m, worker_id = w.id, call_id, grace]() {
                  tasks_.add(kj::evalLater([this, &m, worker_id, call_id, grace]() {
                    for (auto& other : m.workers) {
                      if (other->id == worker_id && other->cancelled_call_id == call_id) {
                        EndWorker(*other, absl::StrCat("did not stop within ", grace,
                                                       " ms of its call being cancelled"),
                                  504);
                      }
                    }
                  }));
                })
                .eagerlyEvaluate(nullptr);
}

void Supervisor::Finish(Worker& w, CallResult result) {
  Module& m = *w.module;
  result.worker_pid = w.pid;
  Count(m, result.status);
  if (w.fulfiller) {
    const double seconds = (timer_.now() - w.received) / kj::NANOSECONDS / 1e9;
    size_t b = 0;
    while (b < kLatencyBucketCount - 1 && seconds > kLatencyBuckets[b]) ++b;
    ++m.latency[b];
    m.latency_sum_seconds += seconds;
  }
  if (w.fulfiller) w.fulfiller->fulfill(std::move(result));
  w.fulfiller = nullptr;
  w.call_id = 0;
  w.deadline = nullptr;
  if (w.state == Worker::State::kBusy) w.state = Worker::State::kReady;
  w.last_active_ms = NowUnixMs();
  if (w.recycle_at > 0 && w.calls >= w.recycle_at) {
    Recycle(w, absl::StrCat("served ", w.calls, " calls"));
  }
  if ((w.retiring || w.recycle) && w.end_cause.empty()) {
    w.retiring = true;
    StopWorker(w);
  }
}

void Supervisor::DrainResponses(Worker& w) {
  Module& m = *w.module;
  bool released_chunks = false;
  w.responses.ClearSleeping();
  for (;;) {
    if (!w.end_cause.empty()) return;
    shm::FrameView frame;
    shm::ReadStatus st = w.responses.Peek(&frame);
    if (st == shm::ReadStatus::kEmpty) {
      w.responses.AnnounceSleep();
      if (!w.responses.Empty()) {
        w.responses.ClearSleeping();
        continue;
      }
      break;
    }
    if (st == shm::ReadStatus::kViolation) {
      EndWorker(w, absl::StrCat("broke the ring protocol (",
                                shm::RingViolationName(w.responses.violation()), ")"));
      return;
    }
    const uint64_t call_id = frame.call_id;
    const shm::FrameKind kind = frame.kind;
    const bool late = call_id != 0 && call_id == w.cancelled_call_id;
    if (!late && (call_id == 0 || call_id != w.call_id || !w.fulfiller)) {
      EndWorker(w, absl::StrCat("broke the ring protocol (answer for call ", call_id,
                                ", which it was not given)"));
      return;
    }
    if (kind == shm::FrameKind::kChunk) {
      // A piece of a reply too large for one frame: copied into private memory, released at
      // once so that the worker can write the next one. A late answer's pieces are dropped.
      absl::Status added = absl::OkStatus();
      if (!late) {
        if (!w.replies) {
          w.replies = std::make_unique<microproc::MessageAssembler>(m.config.max_message_bytes);
        }
        added = w.replies->AddChunk(call_id, frame.payload);
      }
      w.responses.Pop();
      released_chunks = true;
      if (!added.ok()) {
        EndWorker(w, absl::StrCat("broke the ring protocol (reply ", added.message(),
                                  " of maxMessageKb)"));
        return;
      }
      continue;
    }
    if (late) {
      // The late answer to a call already answered with 504: drop it; the worker is free.
      w.responses.Pop();
      if (w.replies) w.replies->Reset();
      w.cancelled_call_id = 0;
      w.cancel_unsent = false;
      w.grace = nullptr;
      w.state = Worker::State::kReady;
      if (w.retiring) {
        StopWorker(w);
      } else {
        Dispatch(m);
      }
      continue;
    }
    // Copy out before validating: the worker can rewrite shared memory at any time.
    absl::StatusOr<DecodedReply> decoded;
    if (w.replies && w.replies->active()) {
      auto whole = w.replies->Complete(call_id, frame.payload);
      w.responses.Pop();
      released_chunks = true;
      decoded = whole.ok() ? DecodeResponseWords(kind, *whole) : whole.status();
      w.replies->Reset();
    } else {
      if (frame.payload.size() % sizeof(capnp::word) != 0) {
        decoded = absl::InvalidArgumentError("payload not a whole number of words");
      } else {
        auto words = kj::heapArray<capnp::word>(frame.payload.size() / sizeof(capnp::word));
        std::memcpy(words.begin(), frame.payload.data(), frame.payload.size());
        w.responses.Pop();
        decoded = DecodeResponseWords(kind, words);
      }
    }
    if (!decoded.ok()) {
      EndWorker(w, absl::StrCat("broke the ring protocol (", decoded.status().message(), ")"));
      return;
    }
    CallResult result;
    if (decoded->is_error) {
      result = HostError(500, m.config.name,
                         absl::StrCat("module '", m.config.name, "': ", decoded->error_message));
      ++w.errors;
    } else if (auto allowed = ApplyReplyRules(decoded->status, &decoded->headers); !allowed.ok()) {
      // The module may choose its status and headers, never the HTTP framing.
      result = HostError(502, m.config.name,
                         absl::StrCat("module '", m.config.name,
                                      "' gave a reply that cannot go out: ", allowed.message()));
      ++w.errors;
    } else {
      result.status = decoded->status;
      result.headers = std::move(decoded->headers);
      result.body = std::move(decoded->body);
    }
    ++w.calls;
    Finish(w, std::move(result));
    Dispatch(m);
  }
  // The worker may be waiting for room to write its next chunk.
  if (released_chunks) shm::WakeFutexConsumerIfSleeping(&w.ring->header()->request);
}

void Supervisor::EndWorker(Worker& w, std::string cause, uint16_t status) {
  if (!w.end_cause.empty()) return;
  w.end_cause = std::move(cause);
  w.state = Worker::State::kStopping;
  w.outgoing.reset();
  w.replies.reset();
  SignalChild(w.pidfd.get(), SIGKILL);
  if (w.fulfiller) {
    ++w.errors;
    CallResult r = HostError(
        status, w.module->config.name,
        absl::StrCat("worker ", w.pid, " of module '", w.module->config.name, "' ", w.end_cause));
    Finish(w, std::move(r));
  }
}

// Why a worker ended, from its exit status and (for a seccomp trap) the syscall number its
// SIGSYS handler left in the ring header. That number is worker-written: range-checked, and it
// only ever names the worker's own death. Sets `*forbidden` to the syscall's name, if any.
std::string DescribeExit(const std::optional<ExitInfo>& exit, const shm::RingFileHeader* ring,
                         std::string* forbidden) {
  if (!exit) return "exited";
  if (exit->signal == 0 && exit->exit_code == microproc::kExitAbort) {
    return "killed by SIGABRT (abort)";
  }
  if (exit->signal == 0 && exit->exit_code == microproc::kExitOutOfMemory) {
    return "ran out of memory (its address-space limit)";
  }
  if (exit->signal == 0 && exit->exit_code == microproc::kExitForbiddenSyscall) {
    const int32_t nr = ring->worker.forbidden_syscall.load(std::memory_order_acquire);
    if (nr >= 0 && nr < 4096) {
      *forbidden = microproc::SyscallName(nr);
      return absl::StrCat("called forbidden syscall ", *forbidden, " (seccomp)");
    }
  }
  return exit->Describe();
}

void Supervisor::OnWorkerExit(Worker& w, const ExitInfo& exit_info) {
  const std::optional<ExitInfo> exit = exit_info;
  Module& m = *w.module;
  std::string forbidden;
  const std::string described = DescribeExit(exit, w.ring->header(), &forbidden);
  std::string cause = w.end_cause.empty() ? described : absl::StrCat(w.end_cause, "; ", described);
  if (w.end_cause.empty()) {
    w.end_cause = described;
    if (w.fulfiller) {
      ++w.errors;
      Finish(w, HostError(502, m.config.name,
                          forbidden.empty()
                              ? absl::StrCat("worker ", w.pid, " of module '", m.config.name,
                                             "' died during the call: ", cause)
                              : absl::StrCat("module '", m.config.name,
                                             "' called forbidden syscall ", forbidden,
                                             "; its worker ", w.pid, " was killed")));
    }
  }
  if (w.retiring && exit && exit->signal == 0 && exit->exit_code == 0) cause = "retired";
  // A short, bounded label for metrics.
  std::string label = "exit";
  if (!forbidden.empty()) {
    label = "seccomp";
  } else if (w.end_cause.rfind("broke the ring protocol", 0) == 0) {
    label = "protocol";
    ++m.ring_violations;
  } else if (w.end_cause.find("deadline") != std::string::npos ||
             w.end_cause.find("cancelled") != std::string::npos) {
    label = "deadline";
  } else if (w.end_cause.find("operator") != std::string::npos) {
    label = "operator";
  } else if (cause == "retired") {
    label = "retired";
  } else if (exit && exit->signal == 0 && exit->exit_code == microproc::kExitOutOfMemory) {
    label = "memory";
  } else if (exit && (exit->signal != 0 || exit->exit_code == microproc::kExitAbort)) {
    label = "signal";
  }
  ++m.exits_by_cause[label];
  LogEvent("worker_exit", {{"module", m.config.name},
                           {"pid", absl::StrCat(w.pid)},
                           {"cause", cause},
                           {"calls", absl::StrCat(w.calls)}});
  const uint64_t id = w.id;
  const bool replace = !w.retiring;  // a retired worker's generation was already replaced
  // Destroy the worker (and the promises running this callback) on a later turn.
  tasks_.add(kj::evalLater([this, &m, id, replace]() {
    for (auto it = m.workers.begin(); it != m.workers.end(); ++it) {
      if ((*it)->id == id) {
        m.workers.erase(it);
        break;
      }
    }
    PruneRetiredGenerations(m);
    if (replace && !stopping_) ScheduleRestart(m);
  }));
}

void Supervisor::ScheduleRestart(Module& m) {
  const int64_t now = NowUnixMs();
  const int64_t window = m.config.restart_window_ms;
  while (!m.restarts.empty() && now - m.restarts.front() > window) m.restarts.pop_front();
  if (m.restarts.size() >= m.config.max_restarts) {
    m.failed = true;
    m.failed_reason = absl::StrCat("workers ended ", m.restarts.size() + 1, " times within ",
                                   window, " ms (crash loop; mpctl restart ", m.config.name,
                                   " clears it)");
    LogEvent("module_failed", {{"module", m.config.name}, {"reason", m.failed_reason}});
    while (!m.queue.empty()) {
      Pending p = std::move(m.queue.front());
      m.queue.pop_front();
      Count(m, 503);
      p.fulfiller->fulfill(HostError(503, m.config.name,
                                     absl::StrCat("module '", m.config.name, "' failed: ",
                                                  m.failed_reason)));
    }
    return;
  }
  m.restarts.push_back(now);
  ++m.restarts_total;
  // Exponential backoff (25 ms doubling, at most 2 s) with ±25% jitter, so that workers of
  // several modules that died together do not restart in lockstep.
  const int64_t base = std::min<int64_t>(25ll << std::min<size_t>(m.restarts.size(), 7), 2000);
  const int64_t jitter = base / 4 > 0 ? static_cast<int64_t>(jitter_rng_() % (base / 2 + 1)) - base / 4 : 0;
  const auto delay = (base + jitter) * kj::MILLISECONDS;
  tasks_.add(timer_.afterDelay(delay).then([this, &m]() -> kj::Promise<void> {
    if (stopping_ || m.failed || !m.generation) return kj::READY_NOW;
    return SpawnWorker(m, *m.generation).then([this, &m](absl::Status s) {
      if (s.ok() || absl::IsCancelled(s) || stopping_) return;
      LogEvent(LogLevel::kWarn, "worker_spawn_failed", {{"module", m.config.name}, {"error", s.message()}});
      ScheduleRestart(m);
    });
  }));
}

void Supervisor::RequestDrain() {
  if (draining_) return;
  draining_ = true;
  LogEvent("drain_requested", {});
  if (on_drain_) on_drain_();
}

absl::Status Supervisor::KillWorker(pid_t pid) {
  for (auto& [name, m] : modules_) {
    for (auto& w : m->workers) {
      if (w->pid == pid && w->end_cause.empty()) {
        EndWorker(*w, "was killed by the operator (mpctl kill)");
        return absl::OkStatus();
      }
    }
  }
  return absl::NotFoundError(absl::StrCat("no live worker with pid ", pid));
}

Supervisor::Totals Supervisor::ComputeTotals() const {
  Totals t;
  for (const auto& [name, m] : modules_) {
    ++t.modules;
    if (m->failed) ++t.modules_failed;
    if (m->generation) t.heap_bytes += m->generation->heap().segment_bytes;
    for (const auto& [status, n] : m->calls_by_status) t.calls += n;
  }
  for (const auto& w : Workers(/*with_memory=*/true)) {
    ++t.workers;
    if (w.state == "busy") ++t.workers_busy;
    t.worker_pss_bytes += w.memory.pss_bytes;
  }
  return t;
}

bool Supervisor::Ready() const {
  if (stopping_ || draining_) return false;
  for (const auto& [name, m] : modules_) {
    bool any = false;
    for (const auto& w : m->workers) {
      any = any || (w->end_cause.empty() && w->state != Worker::State::kStarting);
    }
    if (!any || m->failed) return false;
  }
  return true;
}


std::vector<WorkerSnapshot> Supervisor::Workers(bool with_memory) const {
  std::vector<WorkerSnapshot> out;
  for (const auto& [name, m] : modules_) {
    for (const auto& w : m->workers) {
      if (w->state == Worker::State::kStarting) continue;  // not a process of ours yet
      const char* state = w->state == Worker::State::kReady  ? "ready"
                          : w->state == Worker::State::kBusy ? "busy"
                                                             : "stopping";
      WorkerSnapshot s{w->pid,    name,   w->generation,    state, w->calls, w->errors,
                       w->started_unix_ms, w->restarts_before, {}, {}};
      if (with_memory) {
        if (auto mem = ReadMemoryUsage(w->pid, HeapMarker(name, w->generation))) s.memory = *mem;
        s.sandbox = ProbeSandboxLayers(
            w->pid, w->ring->header()->worker.landlock.load(std::memory_order_acquire) == 1);
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

std::vector<HeapSnapshot> Supervisor::Heaps(absl::string_view module) const {
  std::vector<HeapSnapshot> out;
  for (const auto& [name, m] : modules_) {
    if (!module.empty() && name != module) continue;
    std::vector<const Generation*> gens;
    if (m->generation) gens.push_back(m->generation.get());
    for (const auto& g : m->retiring) gens.push_back(g.get());
    for (const Generation* g : gens) {
      const auto& h = g->heap();
      HeapSnapshot s{name,           h.module_version, h.generation, g == m->generation.get(),
                     h.segment_bytes, h.data_bytes,    h.checksum,   g->segment().Seals().value_or(0),
                     0,              0,                0,            0};
      std::vector<pid_t> mappers = {g->zygote_pid()};
      for (const auto& w : m->workers) {
        if (w->generation == g->number()) mappers.push_back(w->pid);
      }
      for (pid_t pid : mappers) {
        auto mem = ReadMemoryUsage(pid, HeapMarker(name, g->number()));
        if (!mem || mem->heap_mappings == 0) continue;
        ++s.mappers;
        s.resident_bytes += mem->heap_resident_bytes;
        s.pss_bytes += mem->heap_pss_bytes;
        s.privatized_bytes += mem->heap_privatized_bytes;
      }
      out.push_back(s);
    }
  }
  return out;
}

std::vector<ModuleSnapshot> Supervisor::Modules() const {
  std::vector<ModuleSnapshot> out;
  for (const auto& [name, m] : modules_) {
    ModuleSnapshot s;
    s.name = name;
    s.version = m->generation ? m->generation->heap().module_version : "";
    s.generation = m->generation ? m->generation->number() : 0;
    s.state = m->failed ? "failed" : m->reloading ? "reloading" : "ready";
    s.reason = m->failed ? m->failed_reason : m->reload_error;
    s.heap_bytes = m->generation ? m->generation->heap().segment_bytes : 0;
    s.workers_ready = s.workers_busy = 0;
    for (const auto& w : m->workers) {
      if (w->state == Worker::State::kReady && !w->retiring) ++s.workers_ready;
      if (w->state == Worker::State::kBusy) ++s.workers_busy;
    }
    s.workers_target = m->config.workers;
    s.workers_max = m->config.max_workers;
    s.calls = 0;
    for (const auto& [status, n] : m->calls_by_status) s.calls += n;
    s.restarts = m->restarts_total;
    s.generations = (m->generation ? 1 : 0) + static_cast<uint32_t>(m->retiring.size());
    s.calls_per_second = m->calls_per_second;
    uint64_t cumulative = 0;
    for (size_t b = 0; b < kLatencyBucketCount; ++b) {
      cumulative += m->latency[b];
      s.latency_buckets.push_back(cumulative);
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::string Supervisor::MetricsText() const {
  std::string out =
      "# HELP mphost_calls_total Calls answered, by module and HTTP status.\n"
      "# TYPE mphost_calls_total counter\n";
  for (const auto& [name, m] : modules_) {
    for (const auto& [status, n] : m->calls_by_status) {
      absl::StrAppend(&out, "mphost_calls_total{module=\"", name, "\",status=\"", status, "\"} ",
                      n, "\n");
    }
  }
  absl::StrAppend(&out,
                  "# HELP mphost_call_duration_seconds Time from receiving a call to its answer, "
                  "queueing included, of calls given to a worker.\n"
                  "# TYPE mphost_call_duration_seconds histogram\n");
  for (const auto& [name, m] : modules_) {
    uint64_t cumulative = 0;
    for (size_t b = 0; b < kLatencyBucketCount; ++b) {
      cumulative += m->latency[b];
      const std::string le = b + 1 < kLatencyBucketCount ? absl::StrCat(kLatencyBuckets[b]) : "+Inf";
      absl::StrAppend(&out, "mphost_call_duration_seconds_bucket{module=\"", name, "\",le=\"", le,
                      "\"} ", cumulative, "\n");
    }
    absl::StrAppend(&out, "mphost_call_duration_seconds_sum{module=\"", name, "\"} ",
                    m->latency_sum_seconds, "\n", "mphost_call_duration_seconds_count{module=\"",
                    name, "\"} ", cumulative, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_queue_depth Calls waiting for a worker.\n"
                  "# TYPE mphost_queue_depth gauge\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_queue_depth{module=\"", name, "\"} ", m->queue.size(), "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_workers Microprocesses, by module and state.\n"
                  "# TYPE mphost_workers gauge\n");
  for (const auto& [name, m] : modules_) {
    std::map<std::string, int> by_state = {{"ready", 0}, {"busy", 0}, {"stopping", 0}};
    for (const auto& w : Workers()) {
      if (w.module == name) ++by_state[w.state];
    }
    for (const auto& [state, n] : by_state) {
      absl::StrAppend(&out, "mphost_workers{module=\"", name, "\",state=\"", state, "\"} ", n,
                      "\n");
    }
  }
  absl::StrAppend(&out,
                  "# HELP mphost_worker_restarts_total Workers restarted after they ended.\n"
                  "# TYPE mphost_worker_restarts_total counter\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_worker_restarts_total{module=\"", name, "\"} ",
                    m->restarts_total, "\n");
  }
  // Memory, read from /proc at scrape time: per module (its workers; the heap figures include
  // the zygote, which maps it too) and for the supervisor itself.
  const auto workers = Workers(/*with_memory=*/true);
  std::map<std::string, MemoryUsage> by_module;
  for (const auto& w : workers) {
    MemoryUsage& t = by_module[w.module];
    t.rss_bytes += w.memory.rss_bytes;
    t.pss_bytes += w.memory.pss_bytes;
    t.uss_bytes += w.memory.uss_bytes;
  }
  std::map<std::string, std::pair<uint64_t, uint64_t>> heap_share;  // pss, privatized
  for (const auto& h : Heaps("")) {
    heap_share[h.module].first += h.pss_bytes;
    heap_share[h.module].second += h.privatized_bytes;
  }
  absl::StrAppend(&out,
                  "# HELP mphost_worker_pss_bytes Proportional set size of the module's workers.\n"
                  "# TYPE mphost_worker_pss_bytes gauge\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_worker_pss_bytes{module=\"", name, "\"} ", by_module[name].pss_bytes, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_worker_uss_bytes Unique (private) memory of the module's workers.\n"
                  "# TYPE mphost_worker_uss_bytes gauge\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_worker_uss_bytes{module=\"", name, "\"} ", by_module[name].uss_bytes, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_heap_pss_bytes The heap's share of RAM over every process mapping it.\n"
                  "# TYPE mphost_heap_pss_bytes gauge\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_heap_pss_bytes{module=\"", name, "\"} ", heap_share[name].first, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_heap_privatized_bytes Heap pages copied out of sharing by writes.\n"
                  "# TYPE mphost_heap_privatized_bytes gauge\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_heap_privatized_bytes{module=\"", name, "\"} ", heap_share[name].second, "\n");
  }
  if (auto self = ReadMemoryUsage(::getpid(), "/memfd:mp-heap.")) {
    absl::StrAppend(&out,
                    "# HELP mphost_host_pss_bytes Proportional set size of the supervisor itself.\n"
                    "# TYPE mphost_host_pss_bytes gauge\n"
                    "mphost_host_pss_bytes ", self->pss_bytes, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_worker_exits_total Worker exits by cause: signal, seccomp, "
                  "memory, deadline, protocol, operator, retired, exit.\n"
                  "# TYPE mphost_worker_exits_total counter\n");
  for (const auto& [name, m] : modules_) {
    for (const auto& [label, n] : m->exits_by_cause) {
      absl::StrAppend(&out, "mphost_worker_exits_total{module=\"", name, "\",cause=\"", label,
                      "\"} ", n, "\n");
    }
  }
  absl::StrAppend(&out,
                  "# HELP mphost_ring_violations_total Workers ended for breaking the ring "
                  "protocol.\n"
                  "# TYPE mphost_ring_violations_total counter\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_ring_violations_total{module=\"", name, "\"} ",
                    m->ring_violations, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_module_output_lines_total Lines module code wrote to stderr "
                  "that the host logged.\n"
                  "# TYPE mphost_module_output_lines_total counter\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_module_output_lines_total{module=\"", name, "\"} ",
                    helpers_.output.ForModule(name).lines, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_module_output_dropped_lines_total Lines of module stderr "
                  "dropped past the per-process rate limit.\n"
                  "# TYPE mphost_module_output_dropped_lines_total counter\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_module_output_dropped_lines_total{module=\"", name, "\"} ",
                    helpers_.output.ForModule(name).dropped_lines, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_module_output_dropped_bytes_total Bytes of module stderr "
                  "dropped past the per-process rate limit.\n"
                  "# TYPE mphost_module_output_dropped_bytes_total counter\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_module_output_dropped_bytes_total{module=\"", name, "\"} ",
                    helpers_.output.ForModule(name).dropped_bytes, "\n");
  }
  absl::StrAppend(&out,
                  "# HELP mphost_heap_bytes Size of the module's sealed heap segment.\n"
                  "# TYPE mphost_heap_bytes gauge\n");
  for (const auto& [name, m] : modules_) {
    absl::StrAppend(&out, "mphost_heap_bytes{module=\"", name, "\"} ",
                    m->generation ? m->generation->heap().segment_bytes : 0, "\n");
  }
  return out;
}

kj::Promise<void> Supervisor::WhenIdle(uint32_t timeout_ms) {
  bool busy = false;
  for (const auto& [name, m] : modules_) {
    busy = busy || !m->queue.empty();
    for (const auto& w : m->workers) busy = busy || w->fulfiller;
  }
  if (!busy || timeout_ms == 0) return kj::READY_NOW;
  const uint32_t step = std::min<uint32_t>(timeout_ms, 10);
  return timer_.afterDelay(step * kj::MILLISECONDS).then([this, timeout_ms, step]() {
    return WhenIdle(timeout_ms - step);
  });
}

void Supervisor::StopAll() {
  stopping_ = true;
  for (auto& [name, m] : modules_) {
    for (auto& w : m->workers) {
      if (!w->pidfd) continue;
      bool wake = false;
      if (w->requests.TryWrite(shm::FrameKind::kStop, 0, {}, &wake) && wake) {
        shm::WakeFutexConsumer(&w->ring->header()->request);
      }
    }
    for (auto& w : m->workers) {
      if (w->fulfiller) {
        w->fulfiller->fulfill(HostError(503, name, "the host is shutting down"));
        w->fulfiller = nullptr;
      }
      if (!w->pidfd) continue;
      // Not our child (its generation's init reaps it): wait for it to be gone.
      const bool gone = AwaitExitWithin(w->pidfd.get(), 2000);
      LogEvent("worker_exit", {{"module", name},
                               {"pid", absl::StrCat(w->pid)},
                               {"cause", gone ? "host stopping" : "host stopping; did not exit"}});
      // Observers unregister from epoll on destruction: before their fds close.
      w->watches = nullptr;
      w->bell_observer = nullptr;
      w->pidfd.reset();
    }
    m->workers.clear();
    m->retiring.clear();
    m->starting.reset();
    m->generation.reset();  // kills each generation's init, and whatever is left with it
  }
  helpers_.reaper.ReapAll(2000);
}

}  // namespace mp::host
