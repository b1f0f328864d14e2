// One generation of a module: its sealed heap and its zygote, a helper in namespaces of its
// own (microproc/helper_protocol.h). Built at startup and on reload; the supervisor owns it
// until its last worker exits. Starting it, spawning from it and learning its processes' exits
// all happen on the event loop: a slow or hostile zygote never holds the loop.
#pragma once

#include <kj/async-unix.h>
#include <kj/timer.h>

#include <cstdint>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "host/child_reaper.h"
#include "host/config.h"
#include "host/helper_channel.h"
#include "host/helper_launcher.h"
#include "host/module_output.h"
#include "host/process.h"
#include "shm/module_heap.h"
#include "shm/segment.h"

namespace mp::host {

class ServiceBroker;

// What builds and generations need from the host; the supervisor passes it in.
struct HelperEnv {
  kj::UnixEventPort& events;
  kj::Timer& timer;
  const HelperLauncher& launcher;
  ModuleOutput& output;
  ChildReaper& reaper;
  // Workers of every module, for the spin decision (SpinFor); unset: unknown.
  std::function<size_t()> count_workers = nullptr;
  // The services modules were granted (service_broker.h); set by the supervisor.
  ServiceBroker* services = nullptr;

  // The spin a new worker gets: its module's `spinIterations`, unless the workers of every
  // module (this one included) and the host's own thread outnumber the CPUs this process may
  // run on. Then a spinning worker only takes a core from the host or another worker, which
  // must then wake it anyway: 0.
  uint32_t SpinFor(uint32_t configured) const;
};

// The rule of HelperEnv::SpinFor: `configured`, or 0 when `workers` + 1 > `cpus`.
inline uint32_t SpinForWorkers(uint32_t configured, size_t workers, size_t cpus) {
  return workers + 1 > cpus ? 0 : configured;
}

// The plugin's bytes, read once per generation into a sealed memfd: the builder and the zygote
// of a generation load exactly the same code, whatever happens to the file meanwhile, and a
// helper needs no access to its path.
struct PluginImage {
  UniqueFd fd;
  std::string path;  // as configured, for messages
};

// Reads `path` (at most 1 GiB) into a sealed memfd. Errors name the module and the file.
absl::StatusOr<PluginImage> ReadPluginImage(absl::string_view module, const std::string& path);

// A sealed heap, built but not yet served, and the plugin it was built with.
struct BuiltHeap {
  shm::Segment segment;
  shm::HeapInfo info;
  PluginImage plugin;
};

// A microprocess the zygote made. Its parent is the generation's init, not the host.
struct SpawnedWorker {
  pid_t pid = 0;         // in the host's pid namespace
  pid_t helper_pid = 0;  // as the generation's init sees it (WhenExited)
  UniqueFd pidfd;
};

// Not thread-safe; the supervisor's event loop thread only.
class Generation {
 public:
  // Starts the zygote for `heap` and resolves once it has said hello, or with why it did not:
  // the plugin's refusal, its death (with its cause, such as a forbidden syscall in a
  // constructor), or no hello within config.zygote_start_timeout_ms.
  static kj::Promise<absl::StatusOr<std::unique_ptr<Generation>>> Start(HelperEnv& env,
                                                                        const ModuleConfig& config,
                                                                        BuiltHeap heap);
  // Kills the generation's init, and with it every process left in its namespaces.
  ~Generation();

  // Asks the zygote for one microprocess serving `ring_fd`, ringing the host on `doorbell_fd`,
  // writing its stderr to `stderr_fd`. Resolves to the new process, checked to be a child of
  // this generation's init, or to why there is none (within 5 s).
  kj::Promise<absl::StatusOr<SpawnedWorker>> Spawn(uint64_t worker_id, int ring_fd,
                                                   int doorbell_fd, int stderr_fd,
                                                   uint64_t address_space_bytes,
                                                   uint32_t spin_iterations);

  // Resolves when the process the generation's init knows as `helper_pid` has ended, with how
  // it ended (reported by init, which reaps it). If init itself is gone, every process of the
  // generation is: resolves at once with SIGKILL.
  kj::Promise<ExitInfo> WhenExited(pid_t helper_pid);

  uint64_t number() const { return number_; }
  const shm::HeapInfo& heap() const { return heap_info_; }
  const shm::Segment& segment() const { return segment_; }
  // The zygote (the process that maps the heap and forks workers); 0 until init reports it.
  pid_t zygote_pid() const { return stage_pid_; }
  // The generation's init, a child of the host.
  pid_t init_pid() const { return init_.pid; }
  // Why the zygote is gone, or empty while it serves.
  const std::string& zygote_end() const { return stage_end_; }
  // The plugin and data files as they were when the build began (see ModuleRuntime).
  const std::string& fingerprint() const { return fingerprint_; }
  void set_fingerprint(std::string f) { fingerprint_ = std::move(f); }

 private:
  Generation(HelperEnv& env, const ModuleConfig& config, BuiltHeap heap, ChildProcess init,
             UniqueFd control, UniqueFd init_socket);
  kj::Promise<void> ReadControl();
  kj::Promise<void> ReadInit();
  void OnControlMessage(HelperMessage message);
  void OnInitMessage(HelperMessage message);
  void OnSpawnReply(const HelperMessage& message);
  // The zygote can no longer answer: fails the hello and every pending spawn with `why`.
  void ZygoteGone(const std::string& why);
  void InitGone();

  HelperEnv& env_;
  std::string module_;
  uint64_t number_;
  shm::Segment segment_;
  shm::HeapInfo heap_info_;
  ChildProcess init_;
  HelperChannel control_;
  HelperChannel init_channel_;
  pid_t stage_pid_ = 0;          // host pid namespace
  pid_t stage_helper_pid_ = -1;  // as init sees it
  std::string stage_end_;
  int32_t fault_syscall_ = -1;   // what the zygote's SIGSYS handler reported
  bool init_gone_ = false;
  bool retired_ = false;  // being destroyed: its zygote's end is expected
  kj::Own<kj::PromiseFulfiller<absl::Status>> hello_;
  std::string version_;
  std::string fingerprint_;
  std::map<uint64_t, kj::Own<kj::PromiseFulfiller<absl::StatusOr<SpawnedWorker>>>> spawns_;
  std::map<pid_t, kj::Own<kj::PromiseFulfiller<ExitInfo>>> exit_waiters_;
  std::map<pid_t, ExitInfo> early_exits_;  // reported before anyone asked
  std::deque<pid_t> early_order_;          // oldest first, to bound early_exits_
  kj::Promise<void> control_loop_ = nullptr;
  kj::Promise<void> init_loop_ = nullptr;
};

}  // namespace mp::host
