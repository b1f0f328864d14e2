#include "host/snapshot.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "absl/strings/str_format.h"
#include "host/accounting.h"
#include "host/off_loop.h"
#include "host/service_broker.h"
#include "host/sandbox_probe.h"

namespace mp::host {
namespace {

// One process to read from /proc, and what was read.
struct ProcTarget {
  pid_t pid;
  std::string heap_marker;
  bool worker;           // read its sandbox layers too
  bool landlock_claimed;
};
struct ProcReading {
  std::optional<MemoryUsage> memory;
  std::vector<std::string> sandbox;
};

std::vector<ProcReading> ReadAll(const std::vector<ProcTarget>& targets) {
  std::vector<ProcReading> out(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    const ProcTarget& t = targets[i];
    out[i].memory = ReadMemoryUsage(t.pid, t.heap_marker);
    if (t.worker) out[i].sandbox = ProbeSandboxLayers(t.pid, t.landlock_claimed);
  }
  return out;
}

const char* SealName(int bit) {
  switch (bit) {
    case F_SEAL_SEAL: return "seal";
    case F_SEAL_SHRINK: return "shrink";
    case F_SEAL_GROW: return "grow";
    case F_SEAL_WRITE: return "write";
  }
  return "other";
}

const char* BreakerName(RestartPolicy::Breaker b) {
  switch (b) {
    case RestartPolicy::Breaker::kClosed: return "closed";
    case RestartPolicy::Breaker::kOpen: return "open";
    case RestartPolicy::Breaker::kHalfOpen: return "half-open";
  }
  return "closed";
}

// Fills the message from the modules as they are now, with `readings` (by pid) where read.
void Fill(const ModuleMap& modules, const HostFacts& facts,
          const std::map<pid_t, ProcReading>& readings, const ProcReading& self,
          const ProcessStats& process, const ModuleOutput& output,
          const ServiceBroker& services, capnp::MallocMessageBuilder& message) {
  auto snap = message.initRoot<control::Snapshot>();
  size_t worker_count = 0, heap_count = 0;
  for (const auto& [name, m] : modules) {
    for (const auto& [id, w] : m->workers()) {
      worker_count += w->pid() > 0 && w->phase() != WorkerPhase::kStarting ? 1 : 0;
    }
    heap_count += m->generations().size();
  }
  auto workers = snap.initWorkers(static_cast<unsigned>(worker_count));
  auto heaps = snap.initHeaps(static_cast<unsigned>(heap_count));
  auto mods = snap.initModules(static_cast<unsigned>(modules.size()));
  unsigned wi = 0, hi = 0, mi = 0;
  uint32_t total_workers = 0, total_busy = 0, failed = 0;
  uint64_t total_calls = 0, total_worker_pss = 0, total_heap = 0;
  for (const auto& [name, m] : modules) {
    auto info = mods[mi++];
    const Generation* current = m->current();
    const ModuleMetrics& metrics = m->metrics();
    const WorkerPool& pool = m->pool();
    info.setName(name);
    info.setVersion(current ? current->heap().module_version : "");
    info.setGeneration(current ? current->number() : 0);
    const bool is_failed = m->failed();
    failed += is_failed ? 1 : 0;
    const ModuleState state = m->state();
    info.setState(state == ModuleState::kServing && m->reloading() ? "reloading"
                                                                   : ModuleStateName(state));
    info.setCritical(m->config().critical);
    info.setReady(state == ModuleState::kServing && m->HasReadyWorker());
    info.setReason(is_failed ? m->failed_reason() : m->reload_error());
    info.setHeapBytes(current ? current->heap().segment_bytes : 0);
    total_heap += current ? current->heap().segment_bytes : 0;
    uint32_t ready = 0, busy = 0, starting = 0, stopping = 0;
    uint64_t pss = 0, uss = 0;
    for (const auto& [id, w] : m->workers()) {
      const WorkerPhase phase = w->phase();
      if (phase == WorkerPhase::kStarting) {
        ++starting;
        continue;
      }
      if (phase == WorkerPhase::kIdle && !w->retiring()) ++ready;
      if (phase == WorkerPhase::kBusy || phase == WorkerPhase::kCancelling) ++busy;
      if (phase == WorkerPhase::kStopping || phase == WorkerPhase::kKilled) ++stopping;
      if (w->pid() <= 0) continue;
      auto out = workers[wi++];
      out.setPid(w->pid());
      out.setModule(name);
      out.setGeneration(w->generation());
      out.setState(WorkerPhaseName(phase));
      out.setCalls(w->calls());
      out.setErrors(w->errors());
      out.setServiceRequests(w->service_requests());
      out.setStartedUnixMs(w->started_unix_ms());
      out.setRestarts(w->restarts_before());
      auto r = readings.find(w->pid());
      if (r != readings.end()) {
        auto layers = out.initSandbox(static_cast<unsigned>(r->second.sandbox.size()));
        for (size_t k = 0; k < r->second.sandbox.size(); ++k) layers.set(k, r->second.sandbox[k]);
        if (const auto& mem = r->second.memory) {
          out.setRssBytes(mem->rss_bytes);
          out.setPssBytes(mem->pss_bytes);
          out.setUssBytes(mem->uss_bytes);
          out.setHeapResidentBytes(mem->heap_resident_bytes);
          out.setHeapPrivatizedBytes(mem->heap_privatized_bytes);
          pss += mem->pss_bytes;
          uss += mem->uss_bytes;
        }
      }
    }
    total_workers += ready + busy;
    total_busy += busy;
    total_worker_pss += pss;
    info.setWorkersReady(ready);
    info.setWorkersBusy(busy);
    info.setWorkersStarting(starting);
    info.setWorkersStopping(stopping);
    info.setWorkersMin(pool.limits().min_workers);
    info.setWorkersMax(pool.limits().max_workers);
    info.setWorkerPssBytes(pss);
    info.setWorkerUssBytes(uss);
    info.setCalls(metrics.calls());
    total_calls += metrics.calls();
    info.setRestarts(pool.restarts());
    info.setGenerations(static_cast<uint32_t>(m->generations().size()));
    info.setCallsPerSecond(metrics.calls_per_second);
    info.setQueueDepth(static_cast<uint32_t>(pool.queue_depth()));
    auto bounds = info.initLatencyBounds(kLatencyBucketCount - 1);
    auto counts = info.initLatencyCounts(kLatencyBucketCount);
    uint64_t cumulative = 0;
    for (size_t b = 0; b < kLatencyBucketCount; ++b) {
      if (b + 1 < kLatencyBucketCount) bounds.set(b, kLatencyBuckets[b]);
      cumulative += metrics.latency[b];
      counts.set(b, cumulative);
    }
    info.setLatencySumSeconds(metrics.latency_sum_seconds);
    auto build_bounds = info.initBuildBounds(kBuildBucketCount - 1);
    auto build_counts = info.initBuildCounts(kBuildBucketCount);
    cumulative = 0;
    for (size_t b = 0; b < kBuildBucketCount; ++b) {
      if (b + 1 < kBuildBucketCount) build_bounds.set(b, kBuildBuckets[b]);
      cumulative += metrics.build_duration[b];
      build_counts.set(b, cumulative);
    }
    info.setBuildSumSeconds(metrics.build_seconds_sum);
    info.setBuildsOk(metrics.builds_ok);
    info.setBuildsFailed(metrics.builds_failed);
    info.setReloadsOk(metrics.reloads_ok);
    info.setWakeupsToWorker(metrics.wakeups_to_worker);
    info.setWakeupsToHost(metrics.wakeups_to_host);
    services.FillInfo(name, info);
    info.setReloadsFailed(metrics.reloads_failed);
    auto unavailable = info.initUnavailableByCause(kUnavailableCount - 1);
    for (size_t c = 0; c + 1 < kUnavailableCount; ++c) {
      const Unavailable cause = kAllUnavailable[c];
      unavailable[c].setCause(UnavailableName(cause));
      unavailable[c].setCount(metrics.unavailable[static_cast<size_t>(cause)]);
    }
    auto by_status = info.initCallsByStatus(static_cast<unsigned>(metrics.calls_by_status.size()));
    unsigned si = 0;
    for (const auto& [status, n] : metrics.calls_by_status) {
      by_status[si].setStatus(status);
      by_status[si++].setCount(n);
    }
    auto exits = info.initExitsByCause(kExitCauseCount);
    for (size_t c = 0; c < kExitCauseCount; ++c) {
      exits[c].setCause(ExitCauseLabel(kAllExitCauses[c]));
      exits[c].setCount(metrics.exits[c]);
    }
    info.setBreaker(BreakerName(pool.restart_policy().breaker()));
    info.setBreakerTrips(pool.restart_policy().trips());
    info.setBreakerTrials(pool.restart_policy().trials());
    const ModuleOutput::Counters printed = output.ForModule(name);
    info.setOutputLines(printed.lines);
    info.setOutputDroppedLines(printed.dropped_lines);
    info.setOutputDroppedBytes(printed.dropped_bytes);
    // Heaps: the current generation and any retiring one, with who maps each.
    uint64_t heap_pss = 0, heap_privatized = 0;
    for (const Generation* g : m->generations()) {
      auto h = heaps[hi++];
      const auto& heap = g->heap();
      h.setModule(name);
      h.setVersion(heap.module_version);
      h.setGeneration(heap.generation);
      h.setCurrent(g == current);
      h.setSegmentBytes(heap.segment_bytes);
      h.setDataBytes(heap.data_bytes);
      h.setChecksum(absl::StrFormat("%016x", heap.checksum));
      const int seals = g->segment().Seals().value_or(0);
      std::vector<const char*> names;
      for (int bit : {F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE}) {
        if (seals & bit) names.push_back(SealName(bit));
      }
      auto l = h.initSeals(static_cast<unsigned>(names.size()));
      for (size_t k = 0; k < names.size(); ++k) l.set(k, names[k]);
      std::vector<pid_t> mappers = {g->zygote_pid()};
      for (const auto& [id, w] : m->workers()) {
        if (w->generation() == g->number() && w->pid() > 0) mappers.push_back(w->pid());
      }
      uint32_t count = 0;
      uint64_t resident = 0, pss_sum = 0, privatized = 0;
      for (pid_t pid : mappers) {
        auto r = readings.find(pid);
        if (pid <= 0 || r == readings.end() || !r->second.memory ||
            r->second.memory->heap_mappings == 0) {
          continue;
        }
        ++count;
        resident += r->second.memory->heap_resident_bytes;
        pss_sum += r->second.memory->heap_pss_bytes;
        privatized += r->second.memory->heap_privatized_bytes;
      }
      h.setMappers(count);
      h.setResidentBytes(resident);
      h.setPssBytes(pss_sum);
      h.setPrivatizedBytes(privatized);
      heap_pss += pss_sum;
      heap_privatized += privatized;
    }
    info.setHeapPssBytes(heap_pss);
    info.setHeapPrivatizedBytes(heap_privatized);
  }
  auto status = snap.initStatus();
  status.setVersion(facts.version);
  status.setPid(::getpid());
  status.setUptimeMs(static_cast<uint64_t>(facts.uptime_ms));
  status.setListen(facts.listen);
  status.setControl(facts.control);
  status.setDraining(facts.draining);
  status.setModules(static_cast<uint32_t>(modules.size()));
  status.setModulesFailed(failed);
  status.setWorkers(total_workers);
  status.setWorkersBusy(total_busy);
  status.setCalls(total_calls);
  if (self.memory) status.setHostPssBytes(self.memory->pss_bytes);
  status.setWorkerPssBytes(total_worker_pss);
  status.setHeapBytes(total_heap);
  status.setReady(facts.ready);
  status.setConnectionsOpen(facts.connections_open);
  status.setConnectionsAccepted(facts.connections_accepted);
  status.setConnectionsShed(facts.connections_shed);
  status.setConnectionLimitReached(facts.connection_limit_reached);
  status.setAcceptResourceErrors(facts.accept_resource_errors);
  status.setAcceptOtherErrors(facts.accept_other_errors);
  status.setConfigReloadsOk(facts.config_reloads_ok);
  status.setConfigReloadsFailed(facts.config_reloads_failed);
  status.setCpuSeconds(process.cpu_seconds);
  status.setResidentBytes(process.resident_bytes);
  status.setVirtualBytes(process.virtual_bytes);
  status.setOpenFds(process.open_fds);
  status.setMaxFds(process.max_fds);
  status.setStartTimeSeconds(process.start_time_seconds);
}

}  // namespace

kj::Promise<kj::Own<capnp::MallocMessageBuilder>> TakeSnapshot(const ModuleMap& modules,
                                                               const ModuleOutput& output,
                                                               const ServiceBroker& services,
                                                               HostFacts facts, bool with_proc) {
  std::vector<ProcTarget> targets;
  if (with_proc) {
    targets.push_back({::getpid(), "/memfd:mp-heap.", false, false});
    for (const auto& [name, m] : modules) {
      for (const Generation* g : m->generations()) {
        if (g->zygote_pid() > 0) {
          targets.push_back({g->zygote_pid(), HeapMarker(name, g->number()), false, false});
        }
      }
      for (const auto& [id, w] : m->workers()) {
        if (w->pid() <= 0) continue;
        targets.push_back(
            {w->pid(), HeapMarker(name, w->generation()), true, w->landlock_claimed()});
      }
    }
  }
  using Readings = std::pair<std::vector<ProcReading>, ProcessStats>;
  auto read = targets.empty()
                  ? kj::Promise<Readings>(Readings{{}, ProcessStats{}})
                  : RunOffLoop([targets]() { return Readings{ReadAll(targets), ReadProcessStats()}; });
  return read.then([&modules, &output, &services, facts = std::move(facts),
                    targets](Readings both) {
    std::vector<ProcReading>& readings = both.first;
    std::map<pid_t, ProcReading> by_pid;
    ProcReading self;
    for (size_t i = 0; i < readings.size(); ++i) {
      if (i == 0) {
        self = readings[0];
      } else {
        by_pid[targets[i].pid] = std::move(readings[i]);
      }
    }
    auto message = kj::heap<capnp::MallocMessageBuilder>();
    Fill(modules, facts, by_pid, self, both.second, output, services, *message);
    return message;
  });
}

}  // namespace mp::host
