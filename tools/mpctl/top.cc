// mpctl top: a live view of the host, one screen a second, from the same snapshot as
// `mpctl metrics --json`.
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "tools/mpctl/commands.h"
#include "tools/mpctl/json_output.h"

namespace mp::mpctl {
namespace {

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
  auto response = ctl.snapshotRequest().send().wait(ws);
  auto snapshot = response.getSnapshot();
  auto status = snapshot.getStatus();
  std::string out = clear ? "\033[H\033[2J" : "";
  absl::StrAppend(&out, absl::StrFormat("mphost pid %d  http %s  workers %u (%u busy)  calls %llu  "
                                        "host PSS %s  workers PSS %s%s\n\n",
                                        status.getPid(), status.getListen().cStr(),
                                        status.getWorkers(), status.getWorkersBusy(),
                                        static_cast<unsigned long long>(status.getCalls()),
                                        Size(status.getHostPssBytes()), Size(status.getWorkerPssBytes()),
                                        status.getDraining() ? "  DRAINING" : ""));
  absl::StrAppend(&out, absl::StrFormat("%-16s %-9s %8s %9s %9s %8s %12s %10s\n", "MODULE",
                                        "STATE", "CALLS/S", "P50", "P99", "SVC/S", "WORKERS",
                                        "HEAP"));
  static std::map<std::string, uint64_t> last_services;  // service requests, by module
  for (auto m : snapshot.getModules()) {
    std::vector<uint64_t> counts;
    for (uint64_t n : m.getLatencyCounts()) counts.push_back(n);
    auto& prev = (*last)[m.getName().cStr()];
    const double rate = prev.second.empty() || interval_s <= 0
                            ? 0
                            : static_cast<double>(m.getCalls() - prev.first) / interval_s;
    const std::vector<uint64_t> before = prev.second.empty() ? std::vector<uint64_t>() : prev.second;
    auto svc = last_services.find(m.getName().cStr());
    const double svc_rate = svc == last_services.end() || interval_s <= 0
                                ? 0
                                : static_cast<double>(m.getServiceRequests() - svc->second) / interval_s;
    last_services[m.getName().cStr()] = m.getServiceRequests();
    absl::StrAppend(&out, absl::StrFormat(
        "%-16s %-9s %8.0f %9s %9s %8.0f %12s %10s\n", m.getName().cStr(), m.getState().cStr(), rate,
        FormatMs(QuantileMs(m.getLatencyBounds(), counts, before, 0.5)),
        FormatMs(QuantileMs(m.getLatencyBounds(), counts, before, 0.99)), svc_rate,
        absl::StrCat(m.getWorkersReady() + m.getWorkersBusy(), " (", m.getWorkersBusy(), " busy)"),
        Size(m.getHeapBytes())));
    prev = {m.getCalls(), counts};
  }
  absl::StrAppend(&out, absl::StrFormat("\n%-8s %-16s %4s %-9s %10s %8s %10s %10s %10s\n", "PID",
                                        "MODULE", "GEN", "STATE", "CALLS", "SVC", "PSS", "USS",
                                        "HEAP-PRIV"));
  for (auto w : snapshot.getWorkers()) {
    absl::StrAppend(&out, absl::StrFormat("%-8d %-16s %4d %-9s %10d %8d %10s %10s %10s\n", w.getPid(),
                                          w.getModule().cStr(), w.getGeneration(),
                                          w.getState().cStr(), w.getCalls(), w.getServiceRequests(),
                                          Size(w.getPssBytes()), Size(w.getUssBytes()),
                                          Size(w.getHeapPrivatizedBytes())));
  }
  if (clear) absl::StrAppend(&out, "\n(q to quit)\n");
  std::fputs(out.c_str(), stdout);
  std::fflush(stdout);
}

}  // namespace

int Top(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt) {
  if (!opt.positional.empty()) return Usage("top takes no arguments");
  if (opt.json) {  // one snapshot, as JSON
    auto response = ctl.snapshotRequest().send().wait(ws);
    std::fputs(ToJson(capnp::toDynamic(response.getSnapshot())).c_str(), stdout);
    return 0;
  }
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


}  // namespace mp::mpctl
