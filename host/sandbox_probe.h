// What the kernel says about a microprocess's sandbox, read from /proc: the layers `mpctl ps`
// lists are facts, not the worker's claims (except Landlock, which /proc does not show).
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace mp::host {

// Layer names in force for `pid`: "seccomp", "no_new_privs", "user_ns", "pid_ns", "net_ns",
// "ipc_ns", "mnt_ns" (each namespace differing from the host's), "rlimits" (a finite address
// space limit), "close_fds" (at most `max_fds` descriptors open), plus "landlock" when
// `landlock_claimed`.
std::vector<std::string> ProbeSandboxLayers(pid_t pid, bool landlock_claimed, int max_fds = 2);

}  // namespace mp::host
