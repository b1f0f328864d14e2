// The stage of a helper (mp-builder, mp-zygote): the process that loads a plugin. It enters
// its sandbox before dlopen, since a module's constructors are module code too, and tightens
// it once the plugin is in:
//
//   EnterLoadSandbox     closed descriptors, rlimits, no_new_privs, no capabilities (but
//                        CAP_SYS_ADMIN in its own user namespace for a zygote that gives
//                        microprocesses pid namespaces), Landlock reading only the system's
//                        library directories, the SIGSYS reporter, the load allowlist
//   LoadPluginFromFd     dlopen of the plugin's sealed memfd; constructors run here
//   EnterLoadedSandbox   Landlock with nothing readable, no executable memory
//
// The namespaces (user, pid, net, ipc, mount) are entered before the helper is even executed
// (host/helper_launcher.h). docs/security.md has the whole picture.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "microproc/helper_spec.h"
#include "microproc/plugin.h"
#include "microproc/sandbox.h"

namespace mp::microproc {

struct LoadSandbox {
  HelperRole role;
  SandboxLayers layers;
  uint64_t address_space_bytes = 0;  // RLIMIT_AS (0: none)
  std::initializer_list<int> keep_fds;
};

// Enters the sandbox the plugin is loaded in. One-way. On failure the stage must exit.
absl::Status EnterLoadSandbox(const LoadSandbox& sandbox);

// dlopens the plugin whose bytes are in `fd` (kHelperPluginFd) and checks its entry point;
// `path` names it in errors. Runs the module's constructors.
absl::StatusOr<Plugin> LoadPluginFromFd(absl::string_view module, int fd, const std::string& path);

// Laid over the load sandbox once the plugin is loaded. One-way.
absl::Status EnterLoadedSandbox(const SandboxLayers& layers);

// Sets the process title `ps` shows (argv[0], within the room the original argv had) and the
// short name `top` shows.
void SetProcessTitle(int argc, char** argv, absl::string_view title);

}  // namespace mp::microproc
