// bench/spawn: how long a sandboxed microprocess takes from the spawn request until it is ready
// to serve, from the zygote with a 1 MiB and a 1 GiB heap, beside posix_spawn of /bin/true and
// a start without a zygote (exec of the helper that maps the heap and loads the plugin); then
// the time and total PSS to bring up N live microprocesses on one module.
//
//   build/bin/spawn [--samples N] [--live N] [--quick] [--sandbox LAYERS]
#include <kj/async-io.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "host/accounting.h"
#include "host/config.h"
#include "host/generation.h"
#include "host/heap_build.h"
#include "host/helper_launcher.h"
#include "host/process.h"
#include "shm/doorbell.h"
#include "shm/ring.h"

extern char** environ;

namespace mp::bench {
namespace {

using Clock = std::chrono::steady_clock;
using host::Generation;

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

struct Stats {
  double p50, p99;
};

Stats Percentiles(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v[v.size() / 2], v[std::min(v.size() - 1, v.size() * 99 / 100)]};
}

std::string ExeDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string path(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return path.substr(0, path.rfind('/'));
}

std::string g_sandbox = "seccomp,landlock,namespaces,rlimits";  // --sandbox overrides

microproc::SandboxLayers Layers(const std::string& on) {
  const std::string list = "," + on + ",";
  auto has = [&](const char* layer) { return list.find(std::string(",") + layer + ",") != std::string::npos; };
  return {has("seccomp"), has("landlock"), has("namespaces"), has("rlimits")};
}

// The event loop and what generations need from the host, for the whole run.
struct Host {
  kj::AsyncIoContext io = kj::setupAsyncIo();
  host::HelperLauncher launcher = *host::HelperLauncher::Open(ExeDir());
  host::ModuleOutput output{io.unixEventPort, io.provider->getTimer()};
  host::ChildReaper reaper{io.unixEventPort};
  host::HelperEnv env{io.unixEventPort, io.provider->getTimer(), launcher, output, reaper};
};
Host* g_host = nullptr;

host::ModuleConfig Module(uint64_t heap_mb) {
  host::ModuleConfig c;
  c.sandbox = Layers(g_sandbox);
  c.name = "misbehave";
  c.plugin = ExeDir() + "/../modules/libmisbehave.so";
  c.max_heap_bytes = (heap_mb + 16) << 20;
  c.options = {{"heap_mb", std::to_string(heap_mb)}};
  c.build_timeout_ms = 300000;
  return c;
}

// One live microprocess and what it holds.
struct Live {
  std::unique_ptr<shm::RingFile> ring;
  std::unique_ptr<shm::Doorbell> bell;
  UniqueFd pidfd;
  pid_t pid = 0;
};

// Spawns a worker from `gen`; returns once it reports ready (its state word in the ring).
Live SpawnReady(Generation& gen, uint64_t id, double* us) {
  Live l;
  l.ring = std::make_unique<shm::RingFile>(*shm::RingFile::Create("bench-ring", 64 << 10, 64 << 10));
  l.bell = std::make_unique<shm::Doorbell>(*shm::Doorbell::Create());
  auto out = g_host->output.Open("misbehave", "worker");
  const auto start = Clock::now();
  auto spawned = gen.Spawn(id, l.ring->segment().fd(), l.bell->fd(), out->write_end.get(), 0, 0)
                     .wait(g_host->io.waitScope);
  if (!spawned.ok()) {
    std::fprintf(stderr, "spawn: %s\n", std::string(spawned.status().message()).c_str());
    std::exit(1);
  }
  const pid_t* pid = &spawned->pid;
  auto& state = l.ring->header()->worker.state;
  while (state.load(std::memory_order_acquire) != static_cast<uint32_t>(shm::WorkerState::kReady)) {
    ::sched_yield();  // leave the CPU to the new worker (2 cores, shared)
    if (Clock::now() - start > std::chrono::seconds(10)) {
      std::fprintf(stderr, "worker %d never became ready\n", *pid);
      std::exit(1);
    }
  }
  *us = Us(Clock::now() - start);
  l.pid = spawned->pid;
  l.pidfd = std::move(spawned->pidfd);
  return l;
}

void Stop(Live& l) {
  bool wake = false;
  shm::RingWriter w = l.ring->RequestWriter();
  if (w.TryWrite(shm::FrameKind::kStop, 0, {}, &wake) && wake) {
    shm::WakeFutexConsumer(&l.ring->header()->request);
  }
  host::AwaitExitWithin(l.pidfd.get(), 2000);  // its generation's init reaps it
}

double ZygoteSpawnOnce(Generation& gen, uint64_t id) {
  double t;
  Live l = SpawnReady(gen, id, &t);
  Stop(l);
  return t;
}

double PosixSpawnTrueOnce() {
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, nullptr};
  const auto start = Clock::now();
  pid_t pid;
  if (posix_spawn(&pid, "/bin/true", nullptr, nullptr, argv, environ) != 0) std::exit(1);
  int status;
  ::waitpid(pid, &status, 0);
  return Us(Clock::now() - start);
}

host::BuiltHeap DupHeap(const host::BuiltHeap& h) {
  return host::BuiltHeap{*shm::Segment::Adopt(UniqueFd(::dup(h.segment.fd())), "heap"), h.info,
                         host::PluginImage{UniqueFd(::dup(h.plugin.fd.get())), h.plugin.path}};
}

// Without a zygote: exec the helper, which maps and verifies the heap and loads the plugin,
// until it says it is ready (what every worker would pay).
Stats ExecWithoutZygote(const host::ModuleConfig& config, const host::BuiltHeap& heap, int samples) {
  std::vector<double> us;
  for (int i = 0; i < samples; ++i) {
    const auto start = Clock::now();
    auto gen = Generation::Start(g_host->env, config, DupHeap(heap)).wait(g_host->io.waitScope);
    us.push_back(Us(Clock::now() - start));
    if (!gen.ok()) std::exit(1);
  }
  return Percentiles(us);
}

int Main(int argc, char** argv) {
  int samples = 200, live = 1000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      samples = 20;
      live = 50;
    } else if (a == "--samples" && i + 1 < argc) {
      samples = std::atoi(argv[++i]);
    } else if (a == "--sandbox" && i + 1 < argc) {  // e.g. "seccomp,rlimits" or "none"
      g_sandbox = argv[++i];
    } else if (a == "--live" && i + 1 < argc) {
      live = std::atoi(argv[++i]);
    }
  }
  Host host;
  g_host = &host;
  std::printf("bench/spawn: %d samples per line; worker sandbox layers: %s\n", samples,
              g_sandbox.c_str());
  std::printf("building heaps of 1 MiB and 1 GiB...\n");
  auto small_cfg = Module(1), big_cfg = Module(1024);
  auto small_heap = host::BuildHeap(host.env, small_cfg, 1).wait(host.io.waitScope);
  auto big_heap = host::BuildHeap(host.env, big_cfg, 1).wait(host.io.waitScope);
  if (!small_heap.ok() || !big_heap.ok()) {
    std::fprintf(stderr, "heap build failed: %s %s\n", std::string(small_heap.status().message()).c_str(),
                 std::string(big_heap.status().message()).c_str());
    return 1;
  }
  const Stats exec_small = ExecWithoutZygote(small_cfg, *small_heap, std::max(5, samples / 10));
  const Stats exec_big = ExecWithoutZygote(big_cfg, *big_heap, 5);
  auto small_gen = Generation::Start(host.env, small_cfg, DupHeap(*small_heap)).wait(host.io.waitScope);
  auto big_gen = Generation::Start(host.env, big_cfg, DupHeap(*big_heap)).wait(host.io.waitScope);
  if (!small_gen.ok() || !big_gen.ok()) return 1;
  // Interleaved, one of each per round, so that the machine's drift during the run (this is a
  // VM) weighs on the three lines alike and their ratios compare like with like.
  std::vector<double> posix_us, small_us, big_us;
  for (int i = 0; i < samples; ++i) {
    posix_us.push_back(PosixSpawnTrueOnce());
    small_us.push_back(ZygoteSpawnOnce(**small_gen, 1000 + 2 * i));
    big_us.push_back(ZygoteSpawnOnce(**big_gen, 1001 + 2 * i));
  }
  const Stats posix = Percentiles(posix_us);
  const Stats zy_small = Percentiles(small_us);
  const Stats zy_big = Percentiles(big_us);

  std::printf("\n%-52s %10s %10s %8s\n", "spawn until ready to serve", "p50 us", "p99 us", "p50 ratio");
  auto row = [&](const char* name, Stats s) {
    std::printf("%-52s %10.0f %10.0f %8.2f\n", name, s.p50, s.p99, s.p50 / posix.p50);
  };
  row("posix_spawn of /bin/true + wait (reference)", posix);
  row("zygote fork of a sandboxed worker, 1 MiB heap", zy_small);
  row("zygote fork of a sandboxed worker, 1 GiB heap", zy_big);
  row("exec without zygote (map, verify, dlopen), 1 MiB", exec_small);
  row("exec without zygote (map, verify, dlopen), 1 GiB", exec_big);
  std::printf("\ntargets: zygote spawn <= 0.6x posix_spawn: %.2fx %s; 1 GiB / 1 MiB <= 1.1: %.2f %s\n",
              zy_small.p50 / posix.p50, zy_small.p50 / posix.p50 <= 0.6 ? "met" : "NOT met",
              zy_big.p50 / zy_small.p50, zy_big.p50 / zy_small.p50 <= 1.1 ? "met" : "NOT met");

  // N live workers on the 1 MiB module.
  std::vector<Live> workers;
  workers.reserve(live);
  const auto start = Clock::now();
  for (int i = 0; i < live; ++i) {
    double t;
    workers.push_back(SpawnReady(**small_gen, 100000 + i, &t));
  }
  const double total_ms = Us(Clock::now() - start) / 1000;
  uint64_t pss = 0, uss = 0;
  for (const Live& l : workers) {
    if (auto m = host::ReadMemoryUsage(l.pid, "/memfd:mp-heap.")) {
      pss += m->pss_bytes;
      uss += m->uss_bytes;
    }
  }
  std::printf("\n%d live microprocesses: %.0f ms to bring up (%.0f us each), total PSS %.1f MiB "
              "(%.0f KiB each), total USS %.1f MiB\n",
              live, total_ms, total_ms * 1000 / live, pss / 1048576.0, pss / 1024.0 / live,
              uss / 1048576.0);
  for (Live& l : workers) {
    bool wake = false;
    shm::RingWriter w = l.ring->RequestWriter();
    if (w.TryWrite(shm::FrameKind::kStop, 0, {}, &wake) && wake) {
      shm::WakeFutexConsumer(&l.ring->header()->request);
    }
  }
  for (Live& l : workers) host::AwaitExitWithin(l.pidfd.get(), 5000);
  return 0;
}

}  // namespace
}  // namespace mp::bench

int main(int argc, char** argv) { return mp::bench::Main(argc, argv); }
