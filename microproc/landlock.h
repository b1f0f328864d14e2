// Landlock for the processes that run module code. Every ruleset is one-way and stacks on the
// ones before it: a helper stage keeps the system's library directories readable while its
// plugin loads, then drops them; a microprocess keeps nothing at all.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mp::microproc {

// Denies every filesystem access the running kernel's Landlock can express, except reading
// the files and directory trees in `read_only` (paths that do not exist are skipped). Where the
// kernel can (Landlock ABI 4 and 6), also denies TCP bind and connect, and confines signals
// and abstract Unix sockets to the processes of this sandbox: not the helper's init, not the
// host. Files without a path (memfds, pipes, sockets) stay usable. Requires no_new_privs.
// Returns the Landlock ABI version applied; UNIMPLEMENTED where the kernel has none.
absl::StatusOr<int> RestrictWithLandlock(const std::vector<std::string>& read_only);

// RestrictWithLandlock({}): a microprocess has no use for the filesystem.
absl::Status RestrictFilesystemWithLandlock();

// What loading a plugin may read: the directories the dynamic loader searches for a module's
// dependencies, and its cache.
std::vector<std::string> PluginLoadPaths();

}  // namespace mp::microproc
