#include "host/metrics.h"

#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

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

void ModuleMetrics::RecordBuild(bool ok, double seconds) {
  ++(ok ? builds_ok : builds_failed);
  size_t b = 0;
  while (b < kBuildBucketCount - 1 && seconds > kBuildBuckets[b]) ++b;
  ++build_duration[b];
  build_seconds_sum += seconds;
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

// A histogram family from cumulative counts (the last is +Inf) and the bounds before it.
void Histogram(std::string* out, const char* name, const char* help, Modules modules,
               capnp::List<double>::Reader (control::ModuleInfo::Reader::*bounds)() const,
               capnp::List<uint64_t>::Reader (control::ModuleInfo::Reader::*counts)() const,
               double (control::ModuleInfo::Reader::*sum)() const) {
  Family(out, name, "histogram", help, modules, [&](ModuleReader m, const std::string& module) {
    auto b = (m.*bounds)();
    auto c = (m.*counts)();
    for (unsigned i = 0; i < c.size(); ++i) {
      const std::string le = i < b.size() ? absl::StrCat(b[i]) : "+Inf";
      absl::StrAppend(out, name, "_bucket{module=\"", module, "\",le=\"", le, "\"} ", c[i], "\n");
    }
    absl::StrAppend(out, name, "_sum", Label(module), " ", (m.*sum)(), "\n", name, "_count",
                    Label(module), " ", c.size() ? c[c.size() - 1] : 0, "\n");
  });
}

// A counter family with result="ok" and result="failed" per module.
void Results(std::string* out, const char* name, const char* help, Modules modules,
             uint64_t (control::ModuleInfo::Reader::*ok)() const,
             uint64_t (control::ModuleInfo::Reader::*failed)() const) {
  Family(out, name, "counter", help, modules, [&](ModuleReader m, const std::string& module) {
    absl::StrAppend(out, name, "{module=\"", module, "\",result=\"ok\"} ", (m.*ok)(), "\n", name,
                    "{module=\"", module, "\",result=\"failed\"} ", (m.*failed)(), "\n");
  });
}

}  // namespace

std::string RenderMetrics(control::Snapshot::Reader snapshot) {
  using Info = control::ModuleInfo::Reader;
  std::string out;
  const Modules modules = snapshot.getModules();
  auto simple = [&](const char* name, const char* type, const char* help,
                    const std::function<double(ModuleReader)>& value) {
    Family(&out, name, type, help, modules, [&](ModuleReader m, const std::string& module) {
      absl::StrAppend(&out, name, Label(module), " ", value(m), "\n");
    });
  };
  const auto status = snapshot.getStatus();
  absl::StrAppend(&out, "# HELP mphost_build_info The mphost version; always 1.\n",
                  "# TYPE mphost_build_info gauge\n", "mphost_build_info{version=\"",
                  status.getVersion().cStr(), "\"} 1\n");
  auto host = [&](const char* name, const char* type, const char* help, double value) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name,
                    " ", value, "\n");
  };
  host("mphost_ready", "gauge", "1 when /readyz answers 200: not draining, every critical module ready.",
       status.getReady() ? 1 : 0);
  host("mphost_draining", "gauge", "1 once a stop has begun.", status.getDraining() ? 1 : 0);
  host("mphost_connections_open", "gauge", "Client connections open.",
       static_cast<double>(status.getConnectionsOpen()));
  host("mphost_connections_accepted_total", "counter", "Client connections accepted.",
       static_cast<double>(status.getConnectionsAccepted()));
  host("mphost_connections_shed_total", "counter",
       "Idle keep-alive connections closed to make room (maxConnections, or out of descriptors).",
       static_cast<double>(status.getConnectionsShed()));
  host("mphost_connection_limit_reached_total", "counter",
       "Times maxConnections busy connections left new clients waiting in the backlog.",
       static_cast<double>(status.getConnectionLimitReached()));
  absl::StrAppend(&out,
                  "# HELP mphost_accept_errors_total Failed accepts, by reason: resources "
                  "(EMFILE, ENFILE, ENOBUFS, ENOMEM; the listener backs off and retries) or other.\n"
                  "# TYPE mphost_accept_errors_total counter\n"
                  "mphost_accept_errors_total{reason=\"resources\"} ", status.getAcceptResourceErrors(),
                  "\nmphost_accept_errors_total{reason=\"other\"} ", status.getAcceptOtherErrors(),
                  "\n");
  absl::StrAppend(&out,
                  "# HELP mphost_config_reloads_total Config reloads (SIGHUP, mpctl reload "
                  "--config), by result.\n# TYPE mphost_config_reloads_total counter\n"
                  "mphost_config_reloads_total{result=\"ok\"} ", status.getConfigReloadsOk(),
                  "\nmphost_config_reloads_total{result=\"failed\"} ",
                  status.getConfigReloadsFailed(), "\n");
  host("process_cpu_seconds_total", "counter", "User and system CPU time of the supervisor.",
       status.getCpuSeconds());
  host("process_resident_memory_bytes", "gauge", "Resident memory of the supervisor.",
       static_cast<double>(status.getResidentBytes()));
  host("process_virtual_memory_bytes", "gauge", "Virtual memory of the supervisor.",
       static_cast<double>(status.getVirtualBytes()));
  host("process_open_fds", "gauge", "Open descriptors of the supervisor.",
       static_cast<double>(status.getOpenFds()));
  host("process_max_fds", "gauge", "The supervisor's descriptor limit (soft RLIMIT_NOFILE).",
       static_cast<double>(status.getMaxFds()));
  absl::StrAppend(&out,
                  "# HELP process_start_time_seconds Start time of the supervisor since the epoch.\n"
                  "# TYPE process_start_time_seconds gauge\n",
                  absl::StrFormat("process_start_time_seconds %.2f\n", status.getStartTimeSeconds()));

  Family(&out, "mphost_module_state", "gauge",
         "1 for the module's state: starting, serving, reloading (serving while a new generation "
         "builds), failed or stopping; 0 for the others.",
         modules, [&](ModuleReader m, const std::string& module) {
           for (const char* state : {"starting", "serving", "reloading", "failed", "stopping"}) {
             absl::StrAppend(&out, "mphost_module_state{module=\"", module, "\",state=\"", state,
                             "\"} ", m.getState() == state ? 1 : 0, "\n");
           }
         });
  simple("mphost_module_ready", "gauge", "1 when the module is serving with a worker ready.",
         [](ModuleReader m) { return m.getReady() ? 1 : 0; });
  simple("mphost_module_critical", "gauge", "1 when the module counts for /readyz.",
         [](ModuleReader m) { return m.getCritical() ? 1 : 0; });
  Results(&out, "mphost_module_builds_total",
          "Heap generations built (the first and each reload's), by result.", modules,
          &Info::getBuildsOk, &Info::getBuildsFailed);
  Histogram(&out, "mphost_module_build_duration_seconds",
            "Time to build a heap generation and start its zygote, by module.", modules,
            &Info::getBuildBounds, &Info::getBuildCounts, &Info::getBuildSumSeconds);
  Results(&out, "mphost_module_reloads_total",
          "New generations after the first (mpctl reload, config reloads), by result.", modules,
          &Info::getReloadsOk, &Info::getReloadsFailed);
  Family(&out, "mphost_wakeups_total", "counter",
         "Wake-up syscalls between the host and the module's workers: to_worker, futex wakes "
         "of a sleeping worker; to_host, doorbell rings of the sleeping host (read from each "
         "worker's doorbell counter every 64 doorbell events and when it exits). Per call, the cost of the hop "
         "beyond the rings themselves.",
         modules, [&](ModuleReader m, const std::string& module) {
           absl::StrAppend(&out, "mphost_wakeups_total{module=\"", module,
                           "\",direction=\"to_worker\"} ", m.getWakeupsToWorker(), "\n",
                           "mphost_wakeups_total{module=\"", module,
                           "\",direction=\"to_host\"} ", m.getWakeupsToHost(), "\n");
         });
  // Services (docs/services.md): one series per module and service granted.
  auto each_service = [&](const std::function<void(const std::string&, control::ServiceInfo::Reader,
                                                   const std::string&)>& sample) {
    for (auto m : modules) {
      const std::string module = m.getName().cStr();
      for (auto sv : m.getServices()) {
        sample(module, sv, absl::StrCat("module=\"", module, "\",service=\"", sv.getName().cStr(), "\""));
      }
    }
  };
  absl::StrAppend(&out, "# HELP mphost_service_requests_total Service requests of handlers, by "
                        "module, service and result: ok, refused (a rule of the grant or the "
                        "limits), failed (Redis down, the target module failed), timeout.\n"
                        "# TYPE mphost_service_requests_total counter\n");
  each_service([&](const std::string&, control::ServiceInfo::Reader sv, const std::string& labels) {
    for (auto r : sv.getResults()) {
      absl::StrAppend(&out, "mphost_service_requests_total{", labels, ",result=\"",
                      r.getCause().cStr(), "\"} ", r.getCount(), "\n");
    }
  });
  absl::StrAppend(&out, "# HELP mphost_service_refused_total Service requests refused, by the "
                        "rule they broke.\n# TYPE mphost_service_refused_total counter\n");
  each_service([&](const std::string&, control::ServiceInfo::Reader sv, const std::string& labels) {
    for (auto r : sv.getRefusedByRule()) {
      absl::StrAppend(&out, "mphost_service_refused_total{", labels, ",rule=\"",
                      r.getCause().cStr(), "\"} ", r.getCount(), "\n");
    }
  });
  absl::StrAppend(&out, "# HELP mphost_service_request_seconds Time from a handler's service "
                        "request to the host's answer, as the host measures it.\n"
                        "# TYPE mphost_service_request_seconds histogram\n");
  each_service([&](const std::string&, control::ServiceInfo::Reader sv, const std::string& labels) {
    auto b = sv.getLatencyBounds();
    auto c = sv.getLatencyCounts();
    for (unsigned i = 0; i < c.size(); ++i) {
      const std::string le = i < b.size() ? absl::StrCat(b[i]) : "+Inf";
      absl::StrAppend(&out, "mphost_service_request_seconds_bucket{", labels, ",le=\"", le,
                      "\"} ", c[i], "\n");
    }
    absl::StrAppend(&out, "mphost_service_request_seconds_sum{", labels, "} ",
                    sv.getLatencySumSeconds(), "\n", "mphost_service_request_seconds_count{",
                    labels, "} ", c.size() ? c[c.size() - 1] : 0, "\n");
  });
  // One series per Redis service granted.
  auto redis_family = [&](const char* name, const char* type, const char* help,
                          uint64_t (*value)(control::ServiceInfo::Reader)) {
    absl::StrAppend(&out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
    each_service([&](const std::string&, control::ServiceInfo::Reader sv, const std::string& labels) {
      if (sv.getKind() == "redis") absl::StrAppend(&out, name, "{", labels, "} ", value(sv), "\n");
    });
  };
  redis_family("mphost_service_redis_connections", "gauge",
               "Connections up to a Redis service.",
               [](control::ServiceInfo::Reader sv) -> uint64_t { return sv.getConnected(); });
  redis_family("mphost_service_redis_reconnects_total", "counter",
               "Connections to a Redis service made again after a loss.",
               [](control::ServiceInfo::Reader sv) { return sv.getReconnects(); });
  redis_family("mphost_service_redis_connect_failures_total", "counter",
               "Connects to a Redis service that failed: refused, timed out, or denied by AUTH "
               "(each is retried with backoff; the log says why).",
               [](control::ServiceInfo::Reader sv) { return sv.getConnectFailures(); });
  Family(&out, "mphost_unavailable_total", "counter",
         "503s the host answered itself, by module and cause: starting, draining, module_failed, "
         "queue_full, no_worker.",
         modules, [&](ModuleReader m, const std::string& module) {
           for (auto c : m.getUnavailableByCause()) {
             absl::StrAppend(&out, "mphost_unavailable_total{module=\"", module, "\",cause=\"",
                             c.getCause().cStr(), "\"} ", c.getCount(), "\n");
           }
         });
  Family(&out, "mphost_calls_total", "counter", "Calls answered, by module and HTTP status.",
         modules, [&](ModuleReader m, const std::string& module) {
           // The usual statuses from the start, at 0, so that rate() sees their first increase.
           std::map<uint16_t, uint64_t> by_status;
           for (uint16_t s : {200, 400, 404, 408, 413, 500, 502, 503, 504}) by_status[s] = 0;
           for (auto c : m.getCallsByStatus()) by_status[c.getStatus()] = c.getCount();
           for (const auto& [s, n] : by_status) {
             absl::StrAppend(&out, "mphost_calls_total{module=\"", module, "\",status=\"", s,
                             "\"} ", n, "\n");
           }
         });
  Histogram(&out, "mphost_call_duration_seconds",
            "Time from receiving a call to its answer, queueing included, of calls given to a worker.",
            modules, &Info::getLatencyBounds, &Info::getLatencyCounts, &Info::getLatencySumSeconds);
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
                  "mphost_host_pss_bytes ", status.getHostPssBytes(), "\n");
  return out;
}

}  // namespace mp::host
