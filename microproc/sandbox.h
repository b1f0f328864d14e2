// The sandbox a microprocess enters before it serves its first call. Every step is one-way:
// nothing here can be undone by the process that applied it.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <sys/types.h>

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

// Kills this process with SIGKILL when its parent (the supervisor) dies.
absl::Status SetParentDeathSignal();

// Installs the microprocess allowlist (microproc/seccomp_policy.cc). Any other syscall traps
// (SIGSYS): with InstallSigsysReporter in place the process records the syscall and exits with
// kForbiddenSyscallExit; without it, SIGSYS kills it. Allocates while building the filter, so
// call before serving.
absl::Status InstallWorkerSeccomp(const SeccompTarget& target);

// A seccomp BPF program compiled once (in the zygote) and loaded by each worker with one
// prctl: libseccomp's compilation costs far more than a fork.
struct CompiledFilter {
  std::vector<uint64_t> program;  // struct sock_filter entries (8 bytes each)
};

// Compiles the worker allowlist for a worker whose doorbell is `doorbell_fd` and whose pid is
// `pid` (1 in a pid namespace of its own).
absl::StatusOr<CompiledFilter> CompileWorkerSeccomp(int doorbell_fd, pid_t pid);

// Loads a compiled filter into the calling process. Allocation-free; needs no_new_privs.
absl::Status LoadCompiledFilter(const CompiledFilter& filter);

// Exit status of a worker that called a forbidden syscall (128 + SIGSYS).
inline constexpr int kForbiddenSyscallExit = 159;
// Exit status of a worker that called abort() (128 + SIGABRT).
inline constexpr int kAbortExit = 134;

// Installs a SIGSYS handler that stores the trapped syscall number in `*slot` (shared memory
// the supervisor reads after the exit) and exits with kForbiddenSyscallExit, and a SIGABRT
// handler that exits with kAbortExit. Async-signal-safe;
// one per process (the slot is kept in a process-wide variable of this file).
absl::Status InstallSigsysReporter(std::atomic<int32_t>* slot);

// "openat" for a syscall number of this architecture, or "syscall N".
std::string SyscallName(int nr);

// The builder's filter: everything is allowed but creating processes (fork, vfork, clone
// without CLONE_THREAD, clone3), exec, ptrace, and opening files or sockets (the builder gets
// descriptors for all it may read). Forbidden calls kill the builder with SIGSYS.
absl::Status InstallBuilderSeccomp();

// Names of the layers applied by the sandbox, as `mpctl ps` lists them.
std::vector<std::string> SandboxLayerNames();

}  // namespace mp::microproc
