#include "microproc/helper_stage.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "microproc/helper_protocol.h"
#include "microproc/landlock.h"

namespace mp::microproc {

absl::Status EnterLoadSandbox(const LoadSandbox& sandbox) {
  if (auto s = CloseFdsExcept(sandbox.keep_fds); !s.ok()) return s;
  if (sandbox.layers.rlimits) {
    if (auto s = ApplyRlimits(sandbox.address_space_bytes, 64); !s.ok()) return s;
  }
  if (auto s = SetNoNewPrivs(); !s.ok()) return s;
  // A zygote with namespaces gives each microprocess a pid namespace of its own.
  const bool pid_namespaces = sandbox.layers.namespaces && sandbox.role == HelperRole::kZygote;
  if (auto s = DropCapabilities(/*keep_sys_admin=*/pid_namespaces); !s.ok()) return s;
  if (sandbox.layers.landlock) {
    auto abi = RestrictWithLandlock(PluginLoadPaths());
    if (!abi.ok() && !absl::IsUnimplemented(abi.status())) return abi.status();
  }
  if (auto s = InstallFaultReporter({nullptr, kHelperSocketFd}); !s.ok()) return s;
  if (sandbox.layers.seccomp) {
    return InstallHelperLoadSeccomp(sandbox.role, ::getpid(), pid_namespaces);
  }
  return absl::OkStatus();
}

absl::StatusOr<Plugin> LoadPluginFromFd(absl::string_view module, int fd,
                                        const std::string& path) {
  return LoadPlugin(module, absl::StrCat("/proc/self/fd/", fd), path);
}

absl::Status EnterLoadedSandbox(const SandboxLayers& layers) {
  if (layers.landlock) {
    auto abi = RestrictWithLandlock({});
    if (!abi.ok() && !absl::IsUnimplemented(abi.status())) return abi.status();
  }
  if (layers.seccomp) return InstallHelperLoadedSeccomp();
  return absl::OkStatus();
}

void SetProcessTitle(int argc, char** argv, absl::string_view title) {
  if (argc < 1) return;
  // argv strings are contiguous: the title may use all of their room.
  char* start = argv[0];
  char* end = argv[argc - 1] + std::strlen(argv[argc - 1]);
  const size_t room = static_cast<size_t>(end - start);
  const size_t n = std::min(room, title.size());
  std::memcpy(start, title.data(), n);
  std::memset(start + n, 0, room - n + 1);
  // The short name: what follows "mphost: ", cut to the kernel's 15 bytes.
  absl::string_view comm = title;
  if (comm.substr(0, 8) == "mphost: ") comm.remove_prefix(8);
  char name[16] = {};
  std::memcpy(name, comm.data(), std::min(comm.size(), sizeof name - 1));
  ::prctl(PR_SET_NAME, name, 0, 0, 0);
}

}  // namespace mp::microproc
