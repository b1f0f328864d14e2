#include "tools/mpctl/commands.h"

#include <capnp/dynamic.h>
#include <time.h>

#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/mpctl/json_output.h"

namespace mp::mpctl {

const char kUsage[] =
    "usage: mpctl [--control SOCKET] COMMAND [ARGS] [--json]\n"
    "\n"
    "Commands (mpctl COMMAND --help for each):\n"
    "  status                   version, uptime, addresses, totals of calls and memory\n"
    "  ps                       the microprocesses: pid, module, state, calls, memory, sandbox\n"
    "  call MODULE [PATH]       one call to MODULE, printing status, headers and body\n"
    "       [--data STR | --file F] [--method M] [--header K:V]... [--timeout S]\n"
    "  modules                  each module: version, generation, state, heap, workers, calls\n"
    "  heap [MODULE]            each heap generation: size, seals, checksum, mappers,\n"
    "                           shared (PSS) versus privatized bytes\n"
    "  reload --config          re-read the config file and apply the difference (as SIGHUP)\n"
    "  reload [MODULE]          build a new generation (of every module if none is named) and\n"
    "                           switch to it with no failed call\n"
    "  restart MODULE           clear a failed module (crash loop) and replace its workers\n"
    "  scale MODULE --min N --max M   set the module's pool of workers\n"
    "  kill PID                 end one worker (it is replaced)\n"
    "  drain                    graceful stop of the host\n"
    "  top                      live view (q quits)\n"
    "  metrics                  the Prometheus text of /metrics\n"
    "\n"
    "Options (--flag VALUE or --flag=VALUE):\n"
    "  --control SOCKET         the host's control socket (default: $XDG_RUNTIME_DIR/mphost.sock\n"
    "                           or /tmp/mphost-UID.sock, as mphost uses)\n"
    "  --json                   machine-readable output (see docs/mpctl.md)\n"
    "\n"
    "Examples:\n"
    "  mpctl ps\n"
    "  mpctl call echo /greet --data hello\n"
    "  mpctl reload dict\n"
    "  mpctl heap --json\n"
    "\n"
    "Exit codes: 0 done, 1 the host refused or the call failed, 2 usage or connection error.\n";

int Usage(const std::string& problem) {
  std::fprintf(stderr, "mpctl: %s\n\n%s", problem.c_str(), kUsage);
  return 2;
}

namespace {

template <typename Reader>
void PrintJson(Reader reader) {
  std::fputs(ToJson(capnp::toDynamic(reader)).c_str(), stdout);
}

// An RPC's results, as JSON.
template <typename T>
void PrintResponse(const capnp::Response<T>& response) {
  PrintJson(static_cast<const typename T::Reader&>(response));
}

std::string Age(int64_t started_unix_ms) {
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t s = (int64_t{now.tv_sec} * 1000 + now.tv_nsec / 1000000 - started_unix_ms) / 1000;
  if (s < 0) s = 0;
  if (s < 120) return absl::StrCat(s, "s");
  if (s < 7200) return absl::StrCat(s / 60, "m");
  if (s < 172800) return absl::StrCat(s / 3600, "h");
  return absl::StrCat(s / 86400, "d");
}

std::string Joined(capnp::List<capnp::Text>::Reader list) {
  std::string out;
  for (auto s : list) absl::StrAppend(&out, out.empty() ? "" : ",", s.cStr());
  return out;
}

int Status(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (!opt.positional.empty()) return Usage("status takes no arguments");
  auto response = ctl.statusRequest().send().wait(ws);
  if (opt.json) {
    PrintJson(response.getStatus());
    return 0;
  }
  auto s = response.getStatus();
  const uint64_t up = s.getUptimeMs() / 1000;
  std::printf("mphost %s, pid %d, up %llud %02lluh%02llum%02llus%s\n", s.getVersion().cStr(),
              s.getPid(), static_cast<unsigned long long>(up / 86400),
              static_cast<unsigned long long>(up / 3600 % 24),
              static_cast<unsigned long long>(up / 60 % 60), static_cast<unsigned long long>(up % 60),
              s.getDraining() ? ", DRAINING" : "");
  std::printf("ready     %s\n", s.getReady() ? "yes" : "no (see /readyz)");
  std::printf("http      %s\ncontrol   %s\n", s.getListen().cStr(), s.getControl().cStr());
  std::printf("clients   %llu open, %llu accepted, %llu shed\n",
              static_cast<unsigned long long>(s.getConnectionsOpen()),
              static_cast<unsigned long long>(s.getConnectionsAccepted()),
              static_cast<unsigned long long>(s.getConnectionsShed()));
  std::printf("modules   %u (%u failed)\nworkers   %u (%u busy)\ncalls     %llu\n", s.getModules(),
              s.getModulesFailed(), s.getWorkers(), s.getWorkersBusy(),
              static_cast<unsigned long long>(s.getCalls()));
  std::printf("memory    host PSS %s, workers PSS %s, heaps %s\n", Size(s.getHostPssBytes()).c_str(),
              Size(s.getWorkerPssBytes()).c_str(), Size(s.getHeapBytes()).c_str());
  std::printf("fds       %llu of %llu\nreloads   %llu config reloads, %llu failed\n",
              static_cast<unsigned long long>(s.getOpenFds()),
              static_cast<unsigned long long>(s.getMaxFds()),
              static_cast<unsigned long long>(s.getConfigReloadsOk()),
              static_cast<unsigned long long>(s.getConfigReloadsFailed()));
  return 0;
}

int Ps(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (!opt.positional.empty()) return Usage("ps takes no arguments");
  auto resp = ctl.psRequest().send().wait(ws);
  if (opt.json) {
    PrintResponse(resp);
    return 0;
  }
  std::printf("%-8s %-16s %4s %-10s %10s %7s %8s %8s %6s %10s %10s %10s %10s  %s\n", "PID",
              "MODULE", "GEN", "STATE", "CALLS", "ERRORS", "SVC", "RESTARTS", "AGE", "RSS", "PSS",
              "USS", "HEAP-PRIV", "SANDBOX");
  for (auto w : resp.getWorkers()) {
    std::printf("%-8d %-16s %4llu %-10s %10llu %7llu %8llu %8llu %6s %10s %10s %10s %10s  %s\n",
                w.getPid(), w.getModule().cStr(), static_cast<unsigned long long>(w.getGeneration()),
                w.getState().cStr(), static_cast<unsigned long long>(w.getCalls()),
                static_cast<unsigned long long>(w.getErrors()),
                static_cast<unsigned long long>(w.getServiceRequests()),
                static_cast<unsigned long long>(w.getRestarts()), Age(w.getStartedUnixMs()).c_str(),
                Size(w.getRssBytes()).c_str(), Size(w.getPssBytes()).c_str(),
                Size(w.getUssBytes()).c_str(), Size(w.getHeapPrivatizedBytes()).c_str(),
                Joined(w.getSandbox()).c_str());
  }
  return 0;
}

int Modules(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (!opt.positional.empty()) return Usage("modules takes no arguments");
  auto resp = ctl.modulesRequest().send().wait(ws);
  if (opt.json) {
    PrintResponse(resp);
    return 0;
  }
  std::printf("%-16s %-10s %4s %5s %-10s %10s %16s %10s %8s %8s  %s\n", "MODULE", "VERSION",
              "GEN", "GENS", "STATE", "HEAP", "READY/BUSY/POOL", "CALLS", "CALLS/S", "RESTARTS",
              "REASON");
  for (auto m : resp.getModules()) {
    std::string workers = absl::StrCat(m.getWorkersReady(), "/", m.getWorkersBusy(), "/",
                                       m.getWorkersMin(), "-", m.getWorkersMax());
    std::printf("%-16s %-10s %4llu %5u %-10s %10s %16s %10llu %8.0f %8llu  %s\n",
                m.getName().cStr(), m.getVersion().cStr(),
                static_cast<unsigned long long>(m.getGeneration()), m.getGenerations(),
                m.getState().cStr(), Size(m.getHeapBytes()).c_str(), workers.c_str(),
                static_cast<unsigned long long>(m.getCalls()), m.getCallsPerSecond(),
                static_cast<unsigned long long>(m.getRestarts()), m.getReason().cStr());
  }
  return 0;
}

int Heap(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (opt.positional.size() > 1) return Usage("heap takes at most one MODULE");
  auto req = ctl.heapRequest();
  req.setModule(opt.positional.empty() ? "" : opt.positional[0]);
  auto resp = req.send().wait(ws);
  if (opt.json) {
    PrintResponse(resp);
    return 0;
  }
  std::printf("%-16s %4s %-7s %10s %-22s %-16s %7s %10s %10s %10s\n", "MODULE", "GEN", "CURRENT",
              "SIZE", "SEALS", "CHECKSUM", "MAPPERS", "RESIDENT", "PSS", "PRIVATIZED");
  for (auto h : resp.getHeaps()) {
    const std::string seals = Joined(h.getSeals());
    std::printf("%-16s %4llu %-7s %10s %-22s %-16s %7u %10s %10s %10s\n", h.getModule().cStr(),
                static_cast<unsigned long long>(h.getGeneration()), h.getCurrent() ? "yes" : "no",
                Size(h.getSegmentBytes()).c_str(), seals.empty() ? "NONE" : seals.c_str(),
                h.getChecksum().cStr(), h.getMappers(), Size(h.getResidentBytes()).c_str(),
                Size(h.getPssBytes()).c_str(), Size(h.getPrivatizedBytes()).c_str());
  }
  return 0;
}

int ReloadConfig(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  auto resp = ctl.reloadConfigRequest().send().wait(ws);
  if (opt.json) {
    PrintResponse(resp);
    return 0;
  }
  std::printf("config reloaded\n");
  for (auto line : resp.getChanges()) std::printf("  %s\n", line.cStr());
  return 0;
}

int Reload(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (opt.config) {
    if (!opt.positional.empty()) return Usage("reload --config takes no MODULE");
    return ReloadConfig(ctl, ws, opt);
  }
  if (opt.positional.size() > 1) return Usage("reload takes at most one MODULE");
  const std::string module = opt.positional.empty() ? "" : opt.positional[0];
  auto req = ctl.reloadRequest();
  req.setModule(module);
  auto resp = req.send().wait(ws);
  if (opt.json) {
    PrintResponse(resp);
  } else if (module.empty()) {
    std::printf("every module reloaded\n");
  } else {
    std::printf("module '%s' now serves generation %llu\n", module.c_str(),
                static_cast<unsigned long long>(resp.getGeneration()));
  }
  return 0;
}

int Restart(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (opt.positional.size() != 1) return Usage("restart needs one MODULE");
  auto req = ctl.restartRequest();
  req.setModule(opt.positional[0]);
  auto resp = req.send().wait(ws);
  if (opt.json) {
    PrintResponse(resp);
  } else {
    std::printf("module '%s' restarted with %u new workers\n", opt.positional[0].c_str(),
                resp.getWorkers());
  }
  return 0;
}

int Scale(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (opt.positional.size() != 1 || opt.min < 0 || opt.max < 0) {
    return Usage("scale needs MODULE --min N --max M");
  }
  auto req = ctl.scaleRequest();
  req.setModule(opt.positional[0]);
  req.setMin(static_cast<uint32_t>(opt.min));
  req.setMax(static_cast<uint32_t>(opt.max));
  req.send().wait(ws);
  if (opt.json) {
    std::printf("{\"module\":\"%s\",\"min\":%lld,\"max\":%lld}\n", opt.positional[0].c_str(),
                static_cast<long long>(opt.min), static_cast<long long>(opt.max));
  } else {
    std::printf("module '%s' now runs %lld to %lld workers\n", opt.positional[0].c_str(),
                static_cast<long long>(opt.min), static_cast<long long>(opt.max));
  }
  return 0;
}

int Kill(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  uint32_t pid = 0;
  if (opt.positional.size() != 1 || !absl::SimpleAtoi(opt.positional[0], &pid) || pid == 0 ||
      pid > 0x7fffffff) {
    return Usage("kill needs one worker PID (see mpctl ps)");
  }
  auto req = ctl.killRequest();
  req.setPid(static_cast<int32_t>(pid));
  req.send().wait(ws);
  if (opt.json) {
    std::printf("{\"killed\":%u}\n", pid);
  } else {
    std::printf("worker %u killed; it will be replaced\n", pid);
  }
  return 0;
}

int Drain(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (!opt.positional.empty()) return Usage("drain takes no arguments");
  ctl.drainRequest().send().wait(ws);
  std::printf(opt.json ? "{\"draining\":true}\n"
                       : "draining: /readyz is 503; the host stops once calls in flight finish\n");
  return 0;
}

int Metrics(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (!opt.positional.empty()) return Usage("metrics takes no arguments");
  if (opt.json) {  // the snapshot /metrics is rendered from
    auto response = ctl.snapshotRequest().send().wait(ws);
    PrintJson(response.getSnapshot());
    return 0;
  }
  auto response = ctl.metricsRequest().send().wait(ws);
  auto text = response.getText();
  std::fwrite(text.begin(), 1, text.size(), stdout);
  return 0;
}

int Call(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (opt.positional.empty() || opt.positional.size() > 2) {
    return Usage("call needs MODULE and at most one PATH");
  }
  auto req = ctl.callRequest();
  req.setModule(opt.positional[0]);
  std::string path = opt.positional.size() > 1 ? opt.positional[1] : "/";
  std::string query;
  if (auto q = path.find('?'); q != std::string::npos) {
    query = path.substr(q + 1);
    path.resize(q);
  }
  req.setPath(path);
  req.setQuery(query);
  req.setMethod(!opt.method.empty() ? opt.method : opt.has_data ? "POST" : "GET");
  auto hs = req.initHeaders(static_cast<unsigned>(opt.headers.size()));
  for (size_t i = 0; i < opt.headers.size(); ++i) {
    hs[i].setName(opt.headers[i].first);
    hs[i].setValue(opt.headers[i].second);
  }
  req.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(opt.data.data()), opt.data.size()));
  req.setTimeoutMs(static_cast<uint32_t>(opt.timeout_s * 1000));
  auto resp = req.send().wait(ws);
  const bool failed = resp.getHostError();
  if (opt.json) {
    PrintResponse(resp);
    return failed ? 1 : 0;
  }
  auto reply = resp.getReply();
  auto body = reply.getBody();
  const std::string body_text(reinterpret_cast<const char*>(body.begin()), body.size());
  std::printf("status: %u\n", reply.getStatus());
  if (resp.getWorkerPid() > 0) std::printf("worker: %d\n", resp.getWorkerPid());
  for (auto h : reply.getHeaders()) std::printf("%s: %s\n", h.getName().cStr(), h.getValue().cStr());
  std::printf("\n%s", body_text.c_str());
  if (!body_text.empty() && body_text.back() != '\n') std::printf("\n");
  return failed ? 1 : 0;
}

}  // namespace

std::string Size(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrCat(bytes, " B") : absl::StrFormat("%.1f %s", v, units[u]);
}

const std::vector<std::pair<std::string, Command>>& Commands() {
  static const auto* commands = new std::vector<std::pair<std::string, Command>>{
      {"status", &Status}, {"ps", &Ps},           {"call", &Call},     {"modules", &Modules},
      {"heap", &Heap},     {"reload", &Reload},   {"restart", &Restart}, {"scale", &Scale},
      {"kill", &Kill},     {"drain", &Drain},     {"top", &Top},       {"metrics", &Metrics}};
  return *commands;
}

const char* CommandHelp(const std::string& command) {
  static const std::map<std::string, const char*> help = {
      {"status", "mpctl status [--json]\n  Version, uptime, addresses, modules, workers, calls and memory totals.\n  e.g. mpctl status\n"},
      {"ps", "mpctl ps [--json]\n  One line per worker: pid, module, generation, state, calls, errors, age,\n  RSS, PSS, USS, heap bytes privatized, and the sandbox layers in force (from /proc).\n  e.g. mpctl ps --json | jq '.workers[].pid'\n"},
      {"modules", "mpctl modules [--json]\n  One line per module: version, generation, state (and why it failed), heap size,\n  workers ready/busy/pool, calls, restarts. --json adds calls by status, exits by\n  cause, the crash-loop breaker and module output counts.\n  e.g. mpctl modules\n"},
      {"heap", "mpctl heap [MODULE] [--json]\n  Each heap generation: size, seals, checksum, processes mapping it, resident,\n  PSS (its real share of RAM) and privatized bytes.\n  e.g. mpctl heap dict\n"},
      {"call", "mpctl call MODULE [PATH] [--data STR | --file F] [--method M] [--header K:V]... [--timeout S] [--json]\n  One call, as if over HTTP; prints status, headers and body. Exit 1 if the host\n  answered with an error of its own (no module, limits, worker died, deadline).\n  e.g. mpctl call dict '/lookup?w=word'\n"},
      {"scale", "mpctl scale MODULE --min N --max M\n  Sets the module's pool: at least N workers, up to M when calls queue.\n  e.g. mpctl scale dict --min 2 --max 8\n"},
      {"kill", "mpctl kill PID\n  Ends one worker (SIGKILL). Its call, if any, gets a 502; it is replaced.\n  e.g. mpctl kill 4242\n"},
      {"restart", "mpctl restart MODULE\n  Closes a module's crash-loop breaker and replaces all its workers (a module\n  without a working zygote is rebuilt).\n  e.g. mpctl restart dict\n"},
      {"reload", "mpctl reload [MODULE]\n  Builds a new heap generation from the module's data files and switches to it;\n  calls in flight finish on the old one. A failed build leaves the old one serving.\n  Without MODULE, every module in turn.\n  e.g. mpctl reload dict\nmpctl reload --config\n  Re-reads the host's config file and applies the difference, as SIGHUP does: pools\n  resized, changed modules (config, plugin or data files) rebuilt, added modules started,\n  removed ones drained, routes swapped. An invalid file changes nothing and is reported.\n"},
      {"drain", "mpctl drain\n  Graceful stop: /readyz turns 503, the listener closes after drainDelayMs,\n  calls in flight finish, the host exits 0.\n  e.g. mpctl drain\n"},
      {"top", "mpctl top [--json]\n  A live view refreshed every second: modules with calls/s and p50/p99 latency,\n  workers with memory. q quits. Prints one snapshot when stdout is not a terminal,\n  as JSON with --json.\n  e.g. mpctl top\n"},
      {"metrics", "mpctl metrics [--json]\n  The Prometheus text the host exports at /metrics; with --json, the snapshot it is\n  rendered from (status, modules, workers, heaps).\n  e.g. mpctl metrics | grep mphost_calls_total\n"},
  };
  auto it = help.find(command);
  return it == help.end() ? nullptr : it->second;
}

}  // namespace mp::mpctl
