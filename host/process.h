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

// Execs `path` with `args` (argv[0] is `path`). Each {from, to} in `fds` is placed at `to` in
// the child; every other descriptor is closed. stdin is /dev/null; stdout and stderr are
// inherited.
absl::StatusOr<ChildProcess> SpawnHelper(const std::string& path,
                                         const std::vector<std::string>& args,
                                         const std::vector<std::pair<int, int>>& fds);

// A pidfd for `pid`, which must be our child (or a zombie child) so its status can be reaped.
absl::StatusOr<UniqueFd> OpenPidfd(pid_t pid);

// Reaps the child behind `pidfd` if it has exited; nullopt while it runs.
std::optional<ExitInfo> TryReap(int pidfd);

// Sends `sig` through the pidfd (never to a reused pid).
void SignalChild(int pidfd, int sig);

// Waits up to `timeout_ms` for the child to exit, then SIGKILLs and reaps it.
ExitInfo ReapWithin(int pidfd, int timeout_ms);

}  // namespace mp::host
