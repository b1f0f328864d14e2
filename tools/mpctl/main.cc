// mpctl: the operator's CLI. Talks Cap'n Proto RPC (schemas/control.capnp) to a running mphost
// over its Unix control socket.
//
// Exit codes: 0 done; 1 the host refused or the operation failed; 2 usage or connection error.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <poll.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "host/config.h"
#include "host/json.h"
#include "schemas/control.capnp.h"

namespace mp::mpctl {
namespace {

using host::JsonQuote;

constexpr char kUsage[] =
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
    "  reload [MODULE]          build a new generation (of every module if none is named) and\n"
    "                           switch to it with no failed call\n"
    "  restart MODULE           clear a failed module (crash loop) and replace its workers\n"
    "  scale MODULE --min N --max M   set the module's pool of workers\n"
    "  kill PID                 end one worker (it is replaced)\n"
    "  drain                    graceful stop of the host\n"
    "  top                      live view (q quits)\n"
    "  metrics                  the Prometheus text of /metrics\n"
    "\n"
    "Options:\n"
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

int Usage(absl::string_view problem);

// `mpctl COMMAND --help`.
int CommandHelp(const std::string& command) {
  static const std::map<std::string, const char*> help = {
      {"status", "mpctl status [--json]\n  Version, uptime, addresses, modules, workers, calls and memory totals.\n  e.g. mpctl status\n"},
      {"ps", "mpctl ps [--json]\n  One line per worker: pid, module, generation, state, calls, errors, age,\n  RSS, PSS, USS, heap bytes privatized, and the sandbox layers in force (from /proc).\n  e.g. mpctl ps --json | jq '.workers[].pid'\n"},
      {"modules", "mpctl modules [--json]\n  One line per module: version, generation, state (and why it failed), heap size,\n  workers ready/busy/pool, calls, restarts.\n  e.g. mpctl modules\n"},
      {"heap", "mpctl heap [MODULE] [--json]\n  Each heap generation: size, seals, checksum, processes mapping it, resident,\n  PSS (its real share of RAM) and privatized bytes.\n  e.g. mpctl heap dict\n"},
      {"call", "mpctl call MODULE [PATH] [--data STR | --file F] [--method M] [--header K:V]... [--timeout S] [--json]\n  One call, as if over HTTP; prints status, headers and body. Exit 1 if the host\n  answered with an error of its own (no module, limits, worker died, deadline).\n  e.g. mpctl call dict '/lookup?w=word'\n"},
      {"scale", "mpctl scale MODULE --min N --max M\n  Sets the module's pool: at least N workers, up to M when calls queue.\n  e.g. mpctl scale dict --min 2 --max 8\n"},
      {"kill", "mpctl kill PID\n  Ends one worker (SIGKILL). Its call, if any, gets a 502; it is replaced.\n  e.g. mpctl kill 4242\n"},
      {"restart", "mpctl restart MODULE\n  Clears a failed module (crash loop) and replaces all its workers.\n  e.g. mpctl restart dict\n"},
      {"reload", "mpctl reload [MODULE]\n  Builds a new heap generation from the module's data files and switches to it;\n  calls in flight finish on the old one. A failed build leaves the old one serving.\n  Without MODULE, every module in turn.\n  e.g. mpctl reload dict\n"},
      {"drain", "mpctl drain\n  Graceful stop: /readyz turns 503, the listener closes after drainDelayMs,\n  calls in flight finish, the host exits 0.\n  e.g. mpctl drain\n"},
      {"top", "mpctl top\n  A live view refreshed every second: modules with calls/s and p50/p99 latency,\n  workers with memory. q quits. Prints one snapshot when stdout is not a terminal.\n  e.g. mpctl top\n"},
      {"metrics", "mpctl metrics\n  The Prometheus text the host exports at /metrics.\n  e.g. mpctl metrics | grep mphost_calls_total\n"},
  };
  auto it = help.find(command);
  if (it == help.end()) return Usage(absl::StrCat("unknown command '", command, "'"));
  std::fputs(it->second, stdout);
  return 0;
}

int Usage(absl::string_view problem) {
  std::fprintf(stderr, "mpctl: %s\n\n%s", std::string(problem).c_str(), kUsage);
  return 2;
}

struct Options {
  std::string control = host::DefaultControlSocket();
  bool json = false;
  std::string command;
  std::vector<std::string> positional;
  std::string data;
  bool has_data = false;
  std::string method;
  std::vector<std::pair<std::string, std::string>> headers;
  double timeout_s = 0;
  int min = -1;
  int max = -1;
};

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

// 1536 → "1.5 KiB"
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

int Modules(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  auto resp = ctl.modulesRequest().send().wait(ws);
  auto mods = resp.getModules();
  if (opt.json) {
    std::string out = "{\"modules\":[";
    for (size_t i = 0; i < mods.size(); ++i) {
      auto m = mods[i];
      absl::StrAppend(&out, i ? "," : "", "{\"name\":", JsonQuote(m.getName().cStr()),
                      ",\"version\":", JsonQuote(m.getVersion().cStr()),
                      ",\"generation\":", m.getGeneration(),
                      ",\"state\":", JsonQuote(m.getState().cStr()),
                      ",\"reason\":", JsonQuote(m.getReason().cStr()),
                      ",\"heap_bytes\":", m.getHeapBytes(),
                      ",\"workers_ready\":", m.getWorkersReady(),
                      ",\"workers_busy\":", m.getWorkersBusy(),
                      ",\"workers_min\":", m.getWorkersTarget(),
                      ",\"workers_max\":", m.getWorkersMax(), ",\"calls\":", m.getCalls(),
                      ",\"restarts\":", m.getRestarts(), ",\"generations\":", m.getGenerations(),
                      ",\"calls_per_second\":", absl::StrFormat("%.1f", m.getCallsPerSecond()), "}");
    }
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%-16s %-10s %4s %5s %-10s %10s %16s %10s %8s %8s  %s\n", "MODULE", "VERSION",
              "GEN", "GENS", "STATE", "HEAP", "READY/BUSY/POOL", "CALLS", "CALLS/S", "RESTARTS",
              "REASON");
  for (auto m : mods) {
    std::string workers = absl::StrCat(m.getWorkersReady(), "/", m.getWorkersBusy(), "/",
                                       m.getWorkersTarget(), "-", m.getWorkersMax());
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
  auto heaps = resp.getHeaps();
  if (opt.json) {
    std::string out = "{\"heaps\":[";
    for (size_t i = 0; i < heaps.size(); ++i) {
      auto h = heaps[i];
      std::string seals;
      for (auto s : h.getSeals()) absl::StrAppend(&seals, seals.empty() ? "" : ",", JsonQuote(s.cStr()));
      absl::StrAppend(&out, i ? "," : "", "{\"module\":", JsonQuote(h.getModule().cStr()),
                      ",\"version\":", JsonQuote(h.getVersion().cStr()),
                      ",\"generation\":", h.getGeneration(),
                      ",\"current\":", h.getCurrent() ? "true" : "false",
                      ",\"segment_bytes\":", h.getSegmentBytes(),
                      ",\"data_bytes\":", h.getDataBytes(),
                      ",\"checksum\":\"", absl::StrFormat("%016x", h.getChecksum()), "\"",
                      ",\"seals\":[", seals, "],\"mappers\":", h.getMappers(),
                      ",\"resident_bytes\":", h.getResidentBytes(),
                      ",\"pss_bytes\":", h.getPssBytes(),
                      ",\"privatized_bytes\":", h.getPrivatizedBytes(), "}");
    }
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%-16s %4s %-7s %10s %-22s %-16s %7s %10s %10s %10s\n", "MODULE", "GEN", "CURRENT",
              "SIZE", "SEALS", "CHECKSUM", "MAPPERS", "RESIDENT", "PSS", "PRIVATIZED");
  for (auto h : heaps) {
    std::string seals;
    for (auto s : h.getSeals()) absl::StrAppend(&seals, seals.empty() ? "" : ",", s.cStr());
    std::printf("%-16s %4llu %-7s %10s %-22s %016llx %7u %10s %10s %10s\n", h.getModule().cStr(),
                static_cast<unsigned long long>(h.getGeneration()), h.getCurrent() ? "yes" : "no",
                Size(h.getSegmentBytes()).c_str(), seals.empty() ? "NONE" : seals.c_str(),
                static_cast<unsigned long long>(h.getChecksum()), h.getMappers(),
                Size(h.getResidentBytes()).c_str(), Size(h.getPssBytes()).c_str(),
                Size(h.getPrivatizedBytes()).c_str());
  }
  return 0;
}

int Reload(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (opt.positional.size() > 1) return Usage("reload takes at most one MODULE");
  const std::string module = opt.positional.empty() ? "" : opt.positional[0];
  auto req = ctl.reloadRequest();
  req.setModule(module);
  auto resp = req.send().wait(ws);
  if (opt.json) {
    std::printf("{\"module\":%s,\"generation\":%llu}\n", JsonQuote(module).c_str(),
                static_cast<unsigned long long>(resp.getGeneration()));
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
    std::printf("{\"module\":%s,\"workers\":%u}\n", JsonQuote(opt.positional[0]).c_str(),
                resp.getWorkers());
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
    std::printf("{\"module\":%s,\"min\":%d,\"max\":%d}\n", JsonQuote(opt.positional[0]).c_str(),
                opt.min, opt.max);
  } else {
    std::printf("module '%s' now runs %d to %d workers\n", opt.positional[0].c_str(), opt.min, opt.max);
  }
  return 0;
}

int Status(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  auto response = ctl.statusRequest().send().wait(ws);
  auto s = response.getStatus();
  if (opt.json) {
    std::printf("{\"version\":%s,\"pid\":%d,\"uptime_ms\":%llu,\"listen\":%s,\"control\":%s,"
                "\"draining\":%s,\"modules\":%u,\"modules_failed\":%u,\"workers\":%u,"
                "\"workers_busy\":%u,\"calls\":%llu,\"host_pss_bytes\":%llu,"
                "\"worker_pss_bytes\":%llu,\"heap_bytes\":%llu}\n",
                JsonQuote(s.getVersion().cStr()).c_str(), s.getPid(),
                static_cast<unsigned long long>(s.getUptimeMs()), JsonQuote(s.getListen().cStr()).c_str(),
                JsonQuote(s.getControl().cStr()).c_str(), s.getDraining() ? "true" : "false",
                s.getModules(), s.getModulesFailed(), s.getWorkers(), s.getWorkersBusy(),
                static_cast<unsigned long long>(s.getCalls()),
                static_cast<unsigned long long>(s.getHostPssBytes()),
                static_cast<unsigned long long>(s.getWorkerPssBytes()),
                static_cast<unsigned long long>(s.getHeapBytes()));
    return 0;
  }
  const uint64_t up = s.getUptimeMs() / 1000;
  std::printf("mphost %s, pid %d, up %llud %02lluh%02llum%02llus%s\n", s.getVersion().cStr(), s.getPid(),
              static_cast<unsigned long long>(up / 86400), static_cast<unsigned long long>(up / 3600 % 24),
              static_cast<unsigned long long>(up / 60 % 60), static_cast<unsigned long long>(up % 60),
              s.getDraining() ? ", DRAINING" : "");
  std::printf("http      %s\ncontrol   %s\n", s.getListen().cStr(), s.getControl().cStr());
  std::printf("modules   %u (%u failed)\nworkers   %u (%u busy)\ncalls     %llu\n", s.getModules(),
              s.getModulesFailed(), s.getWorkers(), s.getWorkersBusy(),
              static_cast<unsigned long long>(s.getCalls()));
  std::printf("memory    host PSS %s, workers PSS %s, heaps %s\n", Size(s.getHostPssBytes()).c_str(),
              Size(s.getWorkerPssBytes()).c_str(), Size(s.getHeapBytes()).c_str());
  return 0;
}

int Kill(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (opt.positional.size() != 1 || std::atoi(opt.positional[0].c_str()) <= 0) {
    return Usage("kill needs one worker PID (see mpctl ps)");
  }
  auto req = ctl.killRequest();
  req.setPid(std::atoi(opt.positional[0].c_str()));
  req.send().wait(ws);
  if (opt.json) {
    std::printf("{\"killed\":%d}\n", std::atoi(opt.positional[0].c_str()));
  } else {
    std::printf("worker %s killed; it will be replaced\n", opt.positional[0].c_str());
  }
  return 0;
}

int Drain(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  ctl.drainRequest().send().wait(ws);
  std::printf(opt.json ? "{\"draining\":true}\n"
                       : "draining: /readyz is 503; the host stops once calls in flight finish\n");
  return 0;
}

int Metrics(control::Control::Client& ctl, kj::WaitScope& ws, const Options&) {
  auto response = ctl.metricsRequest().send().wait(ws);
  auto text = response.getText();
  std::fwrite(text.begin(), 1, text.size(), stdout);
  return 0;
}

// p-quantile (0..1) in milliseconds from two cumulative histograms (now - before), as the upper
// bound of the bucket holding it; -1 with no calls in between.
double QuantileMs(capnp::List<double>::Reader bounds, const std::vector<uint64_t>& now,
                  const std::vector<uint64_t>& before, double q) {
  if (now.empty()) return -1;
  const uint64_t total = now.back() - (before.empty() ? 0 : before.back());
  if (total == 0) return -1;
  for (size_t b = 0; b < now.size(); ++b) {
    const uint64_t n = now[b] - (before.size() > b ? before[b] : 0);
    if (n >= q * total) return b < bounds.size() ? bounds[b] * 1000 : 1e9;
  }
  return 1e9;
}

std::string FormatMs(double ms) {
  if (ms < 0) return "-";
  if (ms >= 1e9) return ">10s";
  return ms < 1 ? absl::StrFormat("%.1fms", ms) : absl::StrFormat("%.0fms", ms);
}

// One screen of top: modules with calls/s and latency over the last interval, then workers.
void DrawTop(control::Control::Client& ctl, kj::WaitScope& ws, double interval_s,
             std::map<std::string, std::pair<uint64_t, std::vector<uint64_t>>>* last, bool clear) {
  auto status_response = ctl.statusRequest().send().wait(ws);
  auto status = status_response.getStatus();
  auto modules = ctl.modulesRequest().send().wait(ws);
  auto ps = ctl.psRequest().send().wait(ws);
  std::string out = clear ? "\033[H\033[2J" : "";
  absl::StrAppend(&out, absl::StrFormat("mphost pid %d  http %s  workers %u (%u busy)  calls %llu  "
                                        "host PSS %s  workers PSS %s%s\n\n",
                                        status.getPid(), status.getListen().cStr(),
                                        status.getWorkers(), status.getWorkersBusy(),
                                        static_cast<unsigned long long>(status.getCalls()),
                                        Size(status.getHostPssBytes()), Size(status.getWorkerPssBytes()),
                                        status.getDraining() ? "  DRAINING" : ""));
  absl::StrAppend(&out, absl::StrFormat("%-16s %-9s %8s %9s %9s %12s %10s\n", "MODULE", "STATE",
                                        "CALLS/S", "P50", "P99", "WORKERS", "HEAP"));
  for (auto m : modules.getModules()) {
    std::vector<uint64_t> counts;
    for (uint64_t n : m.getLatencyCounts()) counts.push_back(n);
    auto& prev = (*last)[m.getName().cStr()];
    const double rate = prev.second.empty() || interval_s <= 0
                            ? 0
                            : static_cast<double>(m.getCalls() - prev.first) / interval_s;
    const std::vector<uint64_t> before = prev.second.empty() ? std::vector<uint64_t>() : prev.second;
    absl::StrAppend(&out, absl::StrFormat(
        "%-16s %-9s %8.0f %9s %9s %12s %10s\n", m.getName().cStr(), m.getState().cStr(), rate,
        FormatMs(QuantileMs(m.getLatencyBounds(), counts, before, 0.5)),
        FormatMs(QuantileMs(m.getLatencyBounds(), counts, before, 0.99)),
        absl::StrCat(m.getWorkersReady() + m.getWorkersBusy(), " (", m.getWorkersBusy(), " busy)"),
        Size(m.getHeapBytes())));
    prev = {m.getCalls(), counts};
  }
  absl::StrAppend(&out, absl::StrFormat("\n%-8s %-16s %4s %-9s %10s %10s %10s %10s\n", "PID",
                                        "MODULE", "GEN", "STATE", "CALLS", "PSS", "USS",
                                        "HEAP-PRIV"));
  for (auto w : ps.getWorkers()) {
    absl::StrAppend(&out, absl::StrFormat("%-8d %-16s %4d %-9s %10d %10s %10s %10s\n", w.getPid(),
                                          w.getModule().cStr(), w.getGeneration(),
                                          w.getState().cStr(), w.getCalls(),
                                          Size(w.getPssBytes()), Size(w.getUssBytes()),
                                          Size(w.getHeapPrivatizedBytes())));
  }
  if (clear) absl::StrAppend(&out, "\n(q to quit)\n");
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
}

int Top(control::Control::Client& ctl, kj::WaitScope& ws, const Options&) {
  std::map<std::string, std::pair<uint64_t, std::vector<uint64_t>>> last;
  if (!::isatty(1)) {  // not a terminal: one snapshot
    DrawTop(ctl, ws, 0, &last, false);
    return 0;
  }
  termios saved{};
  const bool raw = ::isatty(0) && ::tcgetattr(0, &saved) == 0;
  if (raw) {
    termios t = saved;
    t.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    t.c_cc[VMIN] = 0;
    t.c_cc[VTIME] = 0;
    ::tcsetattr(0, TCSANOW, &t);
  }
  auto previous = std::chrono::steady_clock::now();
  DrawTop(ctl, ws, 0, &last, true);
  for (;;) {
    pollfd p{0, POLLIN, 0};
    const int r = ::poll(&p, 1, 1000);
    if (r > 0) {
      char ch = 0;
      if (::read(0, &ch, 1) <= 0 || ch == 'q' || ch == 'Q') break;
    }
    const auto now = std::chrono::steady_clock::now();
    DrawTop(ctl, ws, std::chrono::duration<double>(now - previous).count(), &last, true);
    previous = now;
  }
  if (raw) ::tcsetattr(0, TCSANOW, &saved);
  return 0;
}

int Ps(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  auto resp = ctl.psRequest().send().wait(ws);
  auto workers = resp.getWorkers();
  if (opt.json) {
    std::string out = "{\"workers\":[";
    for (size_t i = 0; i < workers.size(); ++i) {
      auto w = workers[i];
      std::string layers;
      for (auto l : w.getSandbox()) {
        absl::StrAppend(&layers, layers.empty() ? "" : ",", JsonQuote(l.cStr()));
      }
      absl::StrAppend(&out, i ? "," : "", "{\"pid\":", w.getPid(),
                      ",\"module\":", JsonQuote(w.getModule().cStr()),
                      ",\"generation\":", w.getGeneration(),
                      ",\"state\":", JsonQuote(w.getState().cStr()), ",\"calls\":", w.getCalls(),
                      ",\"errors\":", w.getErrors(), ",\"started_unix_ms\":", w.getStartedUnixMs(),
                      ",\"rss_bytes\":", w.getRssBytes(), ",\"pss_bytes\":", w.getPssBytes(),
                      ",\"uss_bytes\":", w.getUssBytes(),
                      ",\"heap_resident_bytes\":", w.getHeapResidentBytes(),
                      ",\"heap_privatized_bytes\":", w.getHeapPrivatizedBytes(),
                      ",\"restarts\":", w.getRestarts(),
                      ",\"sandbox\":[", layers, "]}");
    }
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%-8s %-16s %4s %-9s %10s %7s %8s %6s %10s %10s %10s %10s  %s\n", "PID", "MODULE",
              "GEN", "STATE", "CALLS", "ERRORS", "RESTARTS", "AGE", "RSS", "PSS", "USS",
              "HEAP-PRIV", "SANDBOX");
  for (auto w : workers) {
    std::string layers;
    for (auto l : w.getSandbox()) absl::StrAppend(&layers, layers.empty() ? "" : ",", l.cStr());
    std::printf("%-8d %-16s %4llu %-9s %10llu %7llu %8llu %6s %10s %10s %10s %10s  %s\n",
                w.getPid(), w.getModule().cStr(), static_cast<unsigned long long>(w.getGeneration()),
                w.getState().cStr(), static_cast<unsigned long long>(w.getCalls()),
                static_cast<unsigned long long>(w.getErrors()),
                static_cast<unsigned long long>(w.getRestarts()), Age(w.getStartedUnixMs()).c_str(),
                Size(w.getRssBytes()).c_str(), Size(w.getPssBytes()).c_str(),
                Size(w.getUssBytes()).c_str(), Size(w.getHeapPrivatizedBytes()).c_str(),
                layers.c_str());
  }
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
  auto hs = req.initHeaders(opt.headers.size());
  for (size_t i = 0; i < opt.headers.size(); ++i) {
    hs[i].setName(opt.headers[i].first);
    hs[i].setValue(opt.headers[i].second);
  }
  req.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(opt.data.data()), opt.data.size()));
  req.setTimeoutMs(static_cast<uint32_t>(opt.timeout_s * 1000));
  auto resp = req.send().wait(ws);
  auto reply = resp.getReply();
  auto body = reply.getBody();
  std::string body_text(reinterpret_cast<const char*>(body.begin()), body.size());
  const bool failed = resp.getHostError();
  if (opt.json) {
    std::string headers;
    for (auto h : reply.getHeaders()) {
      absl::StrAppend(&headers, headers.empty() ? "" : ",", "[", JsonQuote(h.getName().cStr()),
                      ",", JsonQuote(h.getValue().cStr()), "]");
    }
    std::printf("{\"status\":%u,\"worker_pid\":%d,\"host_error\":%s,\"headers\":[%s],\"body\":%s}\n",
                reply.getStatus(), resp.getWorkerPid(), failed ? "true" : "false",
                headers.c_str(), JsonQuote(body_text).c_str());
  } else {
    std::printf("status: %u\n", reply.getStatus());
    if (resp.getWorkerPid() > 0) std::printf("worker: %d\n", resp.getWorkerPid());
    for (auto h : reply.getHeaders()) std::printf("%s: %s\n", h.getName().cStr(), h.getValue().cStr());
    std::printf("\n%s", body_text.c_str());
    if (!body_text.empty() && body_text.back() != '\n') std::printf("\n");
  }
  return failed ? 1 : 0;
}

int Main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&](const char* what) -> const char* {
      if (i + 1 >= argc) return nullptr;
      (void)what;
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      if (!opt.command.empty()) return CommandHelp(opt.command);
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--json") {
      opt.json = true;
    } else if (a == "--control") {
      const char* v = next("SOCKET");
      if (!v) return Usage("--control needs a SOCKET path");
      opt.control = v;
    } else if (a == "--data") {
      const char* v = next("STR");
      if (!v) return Usage("--data needs a value");
      opt.data = v;
      opt.has_data = true;
    } else if (a == "--file") {
      const char* v = next("F");
      if (!v) return Usage("--file needs a path");
      std::ifstream in(v, std::ios::binary);
      if (!in) return Usage(absl::StrCat("--file ", v, ": cannot open"));
      std::stringstream ss;
      ss << in.rdbuf();
      opt.data = ss.str();
      opt.has_data = true;
    } else if (a == "--method") {
      const char* v = next("M");
      if (!v) return Usage("--method needs a value");
      opt.method = v;
    } else if (a == "--header") {
      const char* v = next("K:V");
      std::string kv = v ? v : "";
      auto colon = kv.find(':');
      if (colon == std::string::npos || colon == 0) return Usage("--header needs NAME:VALUE");
      std::string value = kv.substr(colon + 1);
      while (!value.empty() && value[0] == ' ') value.erase(0, 1);
      opt.headers.emplace_back(kv.substr(0, colon), value);
    } else if (a == "--min" || a == "--max") {
      const char* v = next("N");
      if (!v || std::atoi(v) < 1) return Usage(absl::StrCat(a, " needs a number >= 1"));
      (a == "--min" ? opt.min : opt.max) = std::atoi(v);
    } else if (a == "--timeout") {
      const char* v = next("S");
      if (!v || std::atof(v) <= 0) return Usage("--timeout needs a number of seconds > 0");
      opt.timeout_s = std::atof(v);
    } else if (!a.empty() && a[0] == '-') {
      return Usage(absl::StrCat("unknown option ", a));
    } else if (opt.command.empty()) {
      opt.command = a;
    } else {
      opt.positional.push_back(a);
    }
  }
  if (opt.command.empty()) return Usage("no command given");
  using Command = int (*)(control::Control::Client&, kj::WaitScope&, const Options&);
  const std::map<std::string, Command> commands = {
      {"ps", &Ps}, {"call", &Call}, {"modules", &Modules}, {"heap", &Heap}, {"reload", &Reload},
      {"restart", &Restart}, {"scale", &Scale}, {"status", &Status}, {"kill", &Kill},
      {"drain", &Drain}, {"metrics", &Metrics}, {"top", &Top}};
  auto command = commands.find(opt.command);
  if (command == commands.end()) return Usage(absl::StrCat("unknown command '", opt.command, "'"));
  if ((opt.command == "ps" || opt.command == "modules" || opt.command == "status" ||
       opt.command == "drain" || opt.command == "metrics" || opt.command == "top") &&
      !opt.positional.empty()) {
    return Usage(absl::StrCat(opt.command, " takes no arguments"));
  }

  auto io = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> connection;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                auto addr = io.provider->getNetwork()
                                .parseAddress(kj::str("unix:", opt.control.c_str()))
                                .wait(io.waitScope);
                connection = addr->connect().wait(io.waitScope);
              })) {
    std::fprintf(stderr,
                 "mpctl: cannot reach mphost at %s: %s\n"
                 "       is mphost running? pass its socket with --control SOCKET\n",
                 opt.control.c_str(), e->getDescription().cStr());
    return 2;
  }
  capnp::TwoPartyClient client(*connection);
  auto ctl = client.bootstrap().castAs<control::Control>();
  int rc = 2;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                rc = command->second(ctl, io.waitScope, opt);
              })) {
    if (e->getType() == kj::Exception::Type::DISCONNECTED) {
      std::fprintf(stderr,
                   "mpctl: mphost at %s closed the connection (only its owner and root may use "
                   "the control socket)\n",
                   opt.control.c_str());
      return 2;
    }
    std::string what = e->getDescription().cStr();
    if (what.rfind("remote exception: ", 0) == 0) what = what.substr(18);
    std::fprintf(stderr, "mpctl: %s failed: %s\n", opt.command.c_str(), what.c_str());
    return 1;
  }
  return rc;
}

}  // namespace
}  // namespace mp::mpctl

int main(int argc, char** argv) { return mp::mpctl::Main(argc, argv); }
