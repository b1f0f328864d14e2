// Namespaces and Landlock for the zygote and its microprocesses. Every step is one-way.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace mp::microproc {

// Moves the calling (single-threaded) zygote into new user, network, IPC and mount
// namespaces. In the user namespace the zygote is uid 0, mapped to `nobody` outside when the
// host runs as root (to the host's own uid otherwise), so that a process escaping every other
// layer holds no privilege outside. Returns "" on success, else the reason a layer could not
// be entered (the zygote then goes on without it, and the host logs the reason).
std::string EnterZygoteNamespaces();

// Denies every filesystem access the running kernel's Landlock ABI can express, with no
// exception: a microprocess has no use for the filesystem. Requires no_new_privs. Fails with
// UNIMPLEMENTED where the kernel has no Landlock.
absl::Status RestrictFilesystemWithLandlock();

}  // namespace mp::microproc
