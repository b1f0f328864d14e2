// One generation of a module: its sealed heap and its zygote. Built at startup (and, later,
// on reload); the supervisor owns it until its last worker exits.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "host/config.h"
#include "host/process.h"
#include "shm/module_heap.h"
#include "shm/segment.h"

namespace mp::host {

// Where the helper executables live (the directory of mphost itself).
struct HelperPaths {
  std::string builder;  // mp-builder
  std::string zygote;   // mp-zygote
};

// A sealed heap, built but not yet served.
struct BuiltHeap {
  shm::Segment segment;
  shm::HeapInfo info;
};

// Builds the heap in an mp-builder process (module code never runs here), then validates and
// seals it. Blocks for at most `build_timeout_ms`. Safe to call from any thread (it forks and
// execs; the child does only async-signal-safe work before exec).
absl::StatusOr<BuiltHeap> BuildHeap(const ModuleConfig& config, uint64_t number,
                                    const HelperPaths& helpers, int build_timeout_ms);

// A module's sealed heap and the zygote that forks its microprocesses. Not thread-safe; the
// supervisor's event loop thread only.
class Generation {
 public:
  // Starts and greets the zygote for `heap`. Must run on the supervisor's main thread: the
  // zygote's parent-death signal (and so its microprocesses') follows the thread that forked it.
  static absl::StatusOr<std::unique_ptr<Generation>> Start(const ModuleConfig& config,
                                                           BuiltHeap heap,
                                                           const HelperPaths& helpers,
                                                           int timeout_ms);

  // BuildHeap then Start, on the calling (main) thread.
  static absl::StatusOr<std::unique_ptr<Generation>> Create(const ModuleConfig& config,
                                                            uint64_t number,
                                                            const HelperPaths& helpers,
                                                            int build_timeout_ms);
  ~Generation();

  // Asks the zygote for one microprocess serving `ring_fd`, waking the host via `doorbell_fd`.
  // Returns the pid of the new process, a child of this supervisor.
  absl::StatusOr<pid_t> Spawn(uint64_t worker_id, int ring_fd, int doorbell_fd,
                              uint64_t address_space_bytes, uint32_t spin_iterations);

  uint64_t number() const { return number_; }
  const shm::HeapInfo& heap() const { return heap_info_; }
  const shm::Segment& segment() const { return segment_; }
  pid_t zygote_pid() const { return zygote_.pid; }

 private:
  Generation(uint64_t number, shm::Segment segment, shm::HeapInfo info, ChildProcess zygote,
             UniqueFd control)
      : number_(number),
        segment_(std::move(segment)),
        heap_info_(std::move(info)),
        zygote_(std::move(zygote)),
        control_(std::move(control)) {}
  uint64_t number_;
  shm::Segment segment_;
  shm::HeapInfo heap_info_;
  ChildProcess zygote_;
  UniqueFd control_;  // SOCK_SEQPACKET to the zygote
};

}  // namespace mp::host
