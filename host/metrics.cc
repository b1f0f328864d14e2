#include "host/metrics.h"

#include <functional>

#include "absl/strings/str_cat.h"

namespace mp::host {

void ModuleMetrics::RecordCall(uint16_t status, double seconds) {
  ++calls_by_status[status];
  if (seconds < 0) return;
  size_t b = 0;
  while (b < kLatencyBucketCount - 1 && seconds > kLatencyBuckets[b]) ++b;
  ++latency[b];
  latency_sum_seconds += seconds;
  ++latency_count;
}

uint64_t ModuleMetrics::calls() const {
  uint64_t n = 0;
  for (const auto& [status, count] : calls_by_status) n += count;
  return n;
}

void ModuleMetrics::Tick() {
  const uint64_t now = calls();
  calls_per_second = static_cast<double>(now - calls_at_last_tick);
  calls_at_last_tick = now;
}

namespace {

using Modules = capnp::List<control::ModuleInfo>::Reader;
using ModuleReader = control::ModuleInfo::Reader;

// One metric family: its HELP and TYPE, then one sample line per module from `sample`.
void Family(std::string* out, const char* name, const char* type, const char* help,
            Modules modules, const std::function<void(ModuleReader, const std::string&)>& sample) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  for (auto m : modules) sample(m, std::string(m.getName().cStr()));
}

std::string Label(const std::string& module) { return absl::StrCat("{module=\"", module, "\"}"); }

}  // namespace

std::string RenderMetrics(control::Snapshot::Reader snapshot) {
  std::string out;
  const Modules modules = snapshot.getModules();
  auto simple = [&](const char* name, const char* type, const char* help,
                    const std::function<double(ModuleReader)>& value) {
    Family(&out, name, type, help, modules, [&](ModuleReader m, const std::string& module) {
      absl::StrAppend(&out, name, Label(module), " ", value(m), "\n");
    });
  };
  Family(&out, "mphost_calls_total", "counter", "Calls answered, by module and HTTP status.",
         modules, [&](ModuleReader m, const std::string& module) {
           for (auto c : m.getCallsByStatus()) {
             absl::StrAppend(&out, "mphost_calls_total{module=\"", module, "\",status=\"",
                             c.getStatus(), "\"} ", c.getCount(), "\n");
           }
         });
  Family(&out, "mphost_call_duration_seconds", "histogram",
         "Time from receiving a call to its answer, queueing included, of calls given to a worker.",
         modules, [&](ModuleReader m, const std::string& module) {
           auto bounds = m.getLatencyBounds();
           auto counts = m.getLatencyCounts();
           for (unsigned b = 0; b < counts.size(); ++b) {
             const std::string le = b < bounds.size() ? absl::StrCat(bounds[b]) : "+Inf";
             absl::StrAppend(&out, "mphost_call_duration_seconds_bucket{module=\"", module,
                             "\",le=\"", le, "\"} ", counts[b], "\n");
           }
           absl::StrAppend(&out, "mphost_call_duration_seconds_sum", Label(module), " ",
                           m.getLatencySumSeconds(), "\n", "mphost_call_duration_seconds_count",
                           Label(module), " ", counts.size() ? counts[counts.size() - 1] : 0, "\n");
         });
  simple("mphost_queue_depth", "gauge", "Calls waiting for a worker.",
         [](ModuleReader m) { return m.getQueueDepth(); });
  Family(&out, "mphost_workers", "gauge", "Microprocesses, by module and state.", modules,
         [&](ModuleReader m, const std::string& module) {
           const std::pair<const char*, uint32_t> states[] = {{"starting", m.getWorkersStarting()},
                                                              {"ready", m.getWorkersReady()},
                                                              {"busy", m.getWorkersBusy()},
                                                              {"stopping", m.getWorkersStopping()}};
           for (const auto& [state, n] : states) {
             absl::StrAppend(&out, "mphost_workers{module=\"", module, "\",state=\"", state,
                             "\"} ", n, "\n");
           }
         });
  simple("mphost_worker_restarts_total", "counter", "Workers restarted after they ended.",
         [](ModuleReader m) { return static_cast<double>(m.getRestarts()); });
  Family(&out, "mphost_worker_exits_total", "counter",
         "Worker exits by cause: signal, seccomp, memory, deadline, protocol, operator, retired, "
         "exit, generation_lost, host_stopping.",
         modules, [&](ModuleReader m, const std::string& module) {
           for (auto c : m.getExitsByCause()) {
             absl::StrAppend(&out, "mphost_worker_exits_total{module=\"", module, "\",cause=\"",
                             c.getCause().cStr(), "\"} ", c.getCount(), "\n");
           }
         });
  simple("mphost_ring_violations_total", "counter", "Workers ended for breaking the ring protocol.",
         [](ModuleReader m) {
           for (auto c : m.getExitsByCause()) {
             if (c.getCause() == ExitCauseLabel(ExitCause::kProtocol)) return static_cast<double>(c.getCount());
           }
           return 0.0;
         });
  simple("mphost_module_breaker_trips_total", "counter",
         "Times the module's crash-loop breaker opened.",
         [](ModuleReader m) { return static_cast<double>(m.getBreakerTrips()); });
  simple("mphost_module_breaker_trials_total", "counter",
         "Trial workers started by an open crash-loop breaker.",
         [](ModuleReader m) { return static_cast<double>(m.getBreakerTrials()); });
  simple("mphost_worker_pss_bytes", "gauge", "Proportional set size of the module's workers.",
         [](ModuleReader m) { return static_cast<double>(m.getWorkerPssBytes()); });
  simple("mphost_worker_uss_bytes", "gauge", "Unique (private) memory of the module's workers.",
         [](ModuleReader m) { return static_cast<double>(m.getWorkerUssBytes()); });
  simple("mphost_heap_pss_bytes", "gauge", "The heap's share of RAM over every process mapping it.",
         [](ModuleReader m) { return static_cast<double>(m.getHeapPssBytes()); });
  simple("mphost_heap_privatized_bytes", "gauge", "Heap pages copied out of sharing by writes.",
         [](ModuleReader m) { return static_cast<double>(m.getHeapPrivatizedBytes()); });
  simple("mphost_heap_bytes", "gauge", "Size of the module's sealed heap segment.",
         [](ModuleReader m) { return static_cast<double>(m.getHeapBytes()); });
  simple("mphost_module_output_lines_total", "counter",
         "Lines module code wrote to stderr that the host logged.",
         [](ModuleReader m) { return static_cast<double>(m.getOutputLines()); });
  simple("mphost_module_output_dropped_lines_total", "counter",
         "Lines of module stderr dropped past the per-process rate limit.",
         [](ModuleReader m) { return static_cast<double>(m.getOutputDroppedLines()); });
  simple("mphost_module_output_dropped_bytes_total", "counter",
         "Bytes of module stderr dropped past the per-process rate limit.",
         [](ModuleReader m) { return static_cast<double>(m.getOutputDroppedBytes()); });
  absl::StrAppend(&out,
                  "# HELP mphost_host_pss_bytes Proportional set size of the supervisor itself.\n"
                  "# TYPE mphost_host_pss_bytes gauge\n"
                  "mphost_host_pss_bytes ", snapshot.getStatus().getHostPssBytes(), "\n");
  return out;
}

}  // namespace mp::host
