// The sandbox a process that runs module code enters: a helper stage before it loads the
// plugin (microproc/helper_stage.h), a microprocess before it serves its first call. Every
// step is one-way: nothing here can be undone by the process that applied it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "microproc/exit_status.h"

namespace mp::microproc {

// What the seccomp allowlist needs to know about the process it confines.
struct SeccompTarget {
  int doorbell_fd = -1;  // the only fd besides stderr that write() may target
};

// Closes every descriptor except those in `keep`.
absl::Status CloseFdsExcept(std::initializer_list<int> keep);

// Core dumps off, at most `max_fds` open files, address space at most `address_space_bytes`
// (0: unchanged). Size the address space as heap + budget: the heap mapping counts.
absl::Status ApplyRlimits(uint64_t address_space_bytes, uint64_t max_fds);

// PR_SET_NO_NEW_PRIVS: no exec can ever grant privileges again. Required before seccomp.
absl::Status SetNoNewPrivs();

// Kills this process with SIGKILL when its parent dies.
absl::Status SetParentDeathSignal();

// Empties every capability set of the calling process but, with `keep_sys_admin`,
// CAP_SYS_ADMIN in its own user namespace (a zygote needs it to give each microprocess a pid
// namespace). Capabilities held there mean nothing outside it.
absl::Status DropCapabilities(bool keep_sys_admin);

// ---- seccomp ----

// A seccomp BPF program compiled once (in the zygote) and loaded by each worker with one
// prctl: libseccomp's compilation costs far more than a fork.
struct CompiledFilter {
  std::vector<uint64_t> program;  // struct sock_filter entries (8 bytes each)
};

// Installs the microprocess allowlist (microproc/seccomp_policy.cc). Any other syscall traps
// (SIGSYS): with InstallFaultReporter in place the process records the syscall and exits with
// kExitForbiddenSyscall; without it, SIGSYS kills it. Allocates while building the filter, so
// call before serving.
absl::Status InstallWorkerSeccomp(const SeccompTarget& target);

// Compiles the worker allowlist for a worker whose doorbell is `doorbell_fd` and whose pid is
// `pid` (1 in a pid namespace of its own).
absl::StatusOr<CompiledFilter> CompileWorkerSeccomp(int doorbell_fd, pid_t pid);

// Loads a compiled filter into the calling process. Allocation-free; needs no_new_privs.
absl::Status LoadCompiledFilter(const CompiledFilter& filter);

// Which helper a stage belongs to: their allowlists differ (microproc/helper_seccomp.cc).
enum class HelperRole { kBuilder, kZygote };

// The allowlist of a helper stage while it loads the plugin: what the dynamic loader, the
// module's constructors and the stage's own code need. Traps everything else. `self` is the
// stage's pid (abort() signals only itself); `pid_namespaces` says whether the zygote gives
// each microprocess a pid namespace (the one clone it may make). Needs no_new_privs.
absl::Status InstallHelperLoadSeccomp(HelperRole role, pid_t self, bool pid_namespaces);

// Laid over the load filter once the plugin is loaded: no more executable memory. Module code
// that runs from here on (build, and anything a constructor left behind) cannot bring code in.
absl::Status InstallHelperLoadedSeccomp();

// ---- reporting a forbidden syscall ----

// Where a process's SIGSYS handler reports the syscall it trapped, before it exits with
// kExitForbiddenSyscall. Either or both.
struct FaultSink {
  std::atomic<int32_t>* slot = nullptr;  // shared memory the host reads (a ring header field)
  int fd = -1;  // a helper's control socket: one FaultReport message (helper_protocol.h)
};

// Installs a SIGSYS handler that reports the trapped syscall to `sink` and exits with
// kExitForbiddenSyscall, and a SIGABRT handler that exits with kExitAbort. Async-signal-safe;
// one per process (the sink is kept in a process-wide variable of this file). A microprocess
// installs its own over the zygote's.
absl::Status InstallFaultReporter(FaultSink sink);

// "openat" for a syscall number of this architecture, or "syscall N".
std::string SyscallName(int nr);

// Names of the layers applied by the sandbox, as `mpctl ps` lists them.
std::vector<std::string> SandboxLayerNames();

}  // namespace mp::microproc
