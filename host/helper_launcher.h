// Starts the helpers that run module code (mp-builder, mp-zygote) inside namespaces of their
// own, before their first instruction: the child of clone(2) is already in new user, pid,
// network, IPC and mount namespaces, and is pid 1 there. In the user namespace it is root
// with no capability outside it, mapped to `nobody` when the host runs as root, to the host's
// own uid otherwise (all an unprivileged process may map). The helper is executed from a
// descriptor the host opened at start, with a scrubbed environment, the descriptors the caller
// names and nothing else.
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "host/process.h"
#include "shm/unique_fd.h"

namespace mp::host {

enum class HelperKind { kBuilder, kZygote };

struct HelperLaunch {
  HelperKind kind = HelperKind::kZygote;
  std::string title;  // argv[0], what `ps` shows: "mphost: zygote dict gen 3"
  bool namespaces = true;
  std::vector<std::pair<int, int>> fds;  // {ours, theirs}: placed at `theirs` in the helper
};

// Not thread-safe; the supervisor's loop thread only (a helper's parent-death signal follows
// the thread that cloned it).
class HelperLauncher {
 public:
  // Opens mp-builder and mp-zygote in `dir`. They are executed from these descriptors: a
  // helper needs no access to their path (it runs as another uid), and replacing the files
  // changes nothing until the host restarts.
  static absl::StatusOr<HelperLauncher> Open(const std::string& dir);

  // Starts the helper. Errors name the failing step, e.g. an unprivileged user namespace the
  // kernel refuses.
  absl::StatusOr<ChildProcess> Launch(const HelperLaunch& launch) const;

  // The uid and gid a helper's root maps to outside its user namespace.
  uid_t outside_uid() const { return outside_uid_; }

 private:
  HelperLauncher(UniqueFd builder, UniqueFd zygote, std::vector<std::string> env);
  UniqueFd builder_, zygote_;
  std::vector<std::string> env_;
  uid_t outside_uid_;
  gid_t outside_gid_;
  bool root_;
};

}  // namespace mp::host
