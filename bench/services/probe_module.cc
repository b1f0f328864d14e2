// bench/services/probe_module: the brokered side of bench/services/run. GET /pings?n=N makes N
// PINGs through the host (service "cache"), each timed in the worker from the request to the
// answer (worker -> host -> Redis -> host -> worker), and answers "p50_ns p99_ns".
// Built twice: as "probe", and as "flood" (PROBE_NAME) for the rate-limited flood.
#include <time.h>

#include <algorithm>
#include <string>
#include <vector>

#include "mp/module.hpp"

namespace {

long long NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // the vDSO: no syscall, allowed in the sandbox
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

struct Probe {
  static void Build(mp::HeapBuilder& heap) { heap.StoreBytes("probe", "probe"); }
  static void Handle(const mp::Heap&, const mp::Call& call, mp::Reply& reply) {
    const long n = std::stol(std::string(call.QueryParam("n").value_or("1000")));
    const mp::Services services = call.services();
    std::vector<long long> ns;
    for (long i = 0; i < n; ++i) {
      const long long t0 = NowNs();
      auto r = services.Redis("cache", {"PING"});
      const long long t1 = NowNs();
      if (!r) {
        reply.SetStatus(502);
        reply.Write(r.error());
        return;
      }
      ns.push_back(t1 - t0);
    }
    std::sort(ns.begin(), ns.end());
    reply.Write(std::to_string(ns[ns.size() / 2]) + " " + std::to_string(ns[ns.size() * 99 / 100]));
  }
};

}  // namespace

MP_MODULE(Probe, PROBE_NAME, "1.0.0")
