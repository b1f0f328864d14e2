// Child processes of the supervisor: helpers it execs (builder, zygote) and microprocesses
// (CLONE_PARENT children of a zygote). Every child is watched through a pidfd, which the
// event loop polls and which cannot be confused with a reused pid.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "shm/unique_fd.h"

namespace mp::host {

struct ChildProcess {
  pid_t pid = -1;
  UniqueFd pidfd;
};

// How a child ended.
struct ExitInfo {
  int exit_code = -1;  // when it exited
  int signal = 0;      // when a signal killed it
  // "exited with status 3", "killed by SIGSEGV", "killed by SIGSYS (seccomp: forbidden syscall)"
  std::string Describe() const;
};

// A pidfd for `pid`, which must be our child (or a zombie child) so its status can be reaped.
absl::StatusOr<UniqueFd> OpenPidfd(pid_t pid);

// How a process ended, from waitid's si_code and si_status (or a helper init's report of them).
ExitInfo ExitFromWaitStatus(int code, int status);

// Reaps the child behind `pidfd` if it has exited; nullopt while it runs.
std::optional<ExitInfo> TryReap(int pidfd);

// Sends `sig` through the pidfd (never to a reused pid).
void SignalChild(int pidfd, int sig);

// Waits up to `timeout_ms` for the child to exit, then SIGKILLs and reaps it.
ExitInfo ReapWithin(int pidfd, int timeout_ms);

// Waits up to `timeout_ms` for the process behind `pidfd` (a child or not) to exit, then
// SIGKILLs it and waits for that. True once it has exited. Does not reap.
bool AwaitExitWithin(int pidfd, int timeout_ms);

// The pid of the process behind `pidfd` in this process's pid namespace, and its pids in every
// namespace down to its own (NSpid), from /proc/self/fdinfo. Empty if it has exited.
std::vector<pid_t> PidfdNamespacePids(int pidfd);

// The parent of `pid`, from /proc/PID/stat; -1 if it cannot be read.
pid_t ParentOf(pid_t pid);

}  // namespace mp::host
