// mpctl: the operator's CLI. Talks Cap'n Proto RPC (schemas/control.capnp) to a running mphost
// over its Unix control socket.
//
// Exit codes: 0 done; 1 the host refused or the operation failed; 2 usage or connection error.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <time.h>
#include <unistd.h>

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
    "Commands:\n"
    "  ps                       the microprocesses: pid, module, generation, state, calls\n"
    "  call MODULE [PATH]       one call to MODULE, printing status, headers and body\n"
    "       [--data STR | --file F] [--method M] [--header K:V]... [--timeout S]\n"
    "  modules                  each module: version, generation, state, heap, workers, calls\n"
    "  heap [MODULE]            each heap generation: size, seals, checksum, mappers,\n"
    "                           shared (PSS) versus privatized bytes\n"
    "  reload MODULE            build a new generation and switch to it with no failed call\n"
    "  restart MODULE           clear a failed module (crash loop) and replace its workers\n"
    "  scale MODULE --min N --max M   set the module's pool of workers\n"
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
                      ",\"restarts\":", m.getRestarts(), "}");
    }
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%-16s %-10s %4s %-10s %10s %16s %10s %8s  %s\n", "MODULE", "VERSION", "GEN",
              "STATE", "HEAP", "READY/BUSY/POOL", "CALLS", "RESTARTS", "REASON");
  for (auto m : mods) {
    std::string workers = absl::StrCat(m.getWorkersReady(), "/", m.getWorkersBusy(), "/",
                                       m.getWorkersTarget(), "-", m.getWorkersMax());
    std::printf("%-16s %-10s %4llu %-10s %10s %16s %10llu %8llu  %s\n", m.getName().cStr(),
                m.getVersion().cStr(), static_cast<unsigned long long>(m.getGeneration()),
                m.getState().cStr(), Size(m.getHeapBytes()).c_str(), workers.c_str(),
                static_cast<unsigned long long>(m.getCalls()),
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
  if (opt.positional.size() != 1) return Usage("reload needs one MODULE");
  auto req = ctl.reloadRequest();
  req.setModule(opt.positional[0]);
  auto resp = req.send().wait(ws);
  if (opt.json) {
    std::printf("{\"module\":%s,\"generation\":%llu}\n", JsonQuote(opt.positional[0]).c_str(),
                static_cast<unsigned long long>(resp.getGeneration()));
  } else {
    std::printf("module '%s' now serves generation %llu\n", opt.positional[0].c_str(),
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
                      ",\"sandbox\":[", layers, "]}");
    }
    out += "]}\n";
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  std::printf("%-8s %-16s %4s %-9s %10s %7s %6s %10s %10s %10s %10s  %s\n", "PID", "MODULE",
              "GEN", "STATE", "CALLS", "ERRORS", "AGE", "RSS", "PSS", "USS", "HEAP-PRIV",
              "SANDBOX");
  for (auto w : workers) {
    std::string layers;
    for (auto l : w.getSandbox()) absl::StrAppend(&layers, layers.empty() ? "" : ",", l.cStr());
    std::printf("%-8d %-16s %4llu %-9s %10llu %7llu %6s %10s %10s %10s %10s  %s\n", w.getPid(),
                w.getModule().cStr(), static_cast<unsigned long long>(w.getGeneration()),
                w.getState().cStr(), static_cast<unsigned long long>(w.getCalls()),
                static_cast<unsigned long long>(w.getErrors()), Age(w.getStartedUnixMs()).c_str(),
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
      {"restart", &Restart}, {"scale", &Scale}};
  auto command = commands.find(opt.command);
  if (command == commands.end()) return Usage(absl::StrCat("unknown command '", opt.command, "'"));
  if ((opt.command == "ps" || opt.command == "modules") && !opt.positional.empty()) {
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
