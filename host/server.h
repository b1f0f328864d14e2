// mphost as a running process: everything around the supervisor that an operator touches.
//
//   - Sockets first. The HTTP port and the control socket are bound (or taken from systemd's
//     socket activation) before any module is built: a busy port fails at once, /healthz
//     answers 200 from the start, and /readyz says which modules are still starting.
//   - Signals. TERM, INT and QUIT drain (within drainTimeoutMs); a second TERM or INT stops at
//     once. HUP reloads the config. USR1 reopens the log files. USR2 is logged and ignored.
//   - Config reloads (SIGHUP, mpctl reload --config): the file is read and validated in full,
//     then the difference applied (see Supervisor::ApplyModules); a bad file changes nothing.
//   - sd_notify: READY=1 once the modules have started, RELOADING=1 around a config reload,
//     STOPPING=1 at the drain, STATUS= throughout.
//
// Exit codes: 0 a clean stop, 1 a failure at run time (a port in use, no module could be
// built), 2 a usage or config error.
#pragma once

#include <kj/async-io.h>

#include <string>

#include "host/config.h"
#include "host/helper_launcher.h"

namespace mp::host {

inline constexpr int kExitRuntimeFailure = 1;
inline constexpr int kExitConfigError = 2;

struct ServerOptions {
  std::string config_path;  // empty: the bundled modules
  std::string module_dir;   // where the bundled modules are
  std::string listen;       // --listen, overriding the config's
  std::string control;      // --control, overriding the config's
};

// Serves until stopped; returns the exit code. `config` is the validated config as loaded
// (overrides not yet applied). Signals TERM, INT, QUIT, HUP, USR1 and USR2 must have been
// captured (kj::UnixEventPort::captureSignal) before `io` was set up.
int RunServer(kj::AsyncIoContext& io, HelperLauncher& launcher, HostConfig config,
              const ServerOptions& options);

}  // namespace mp::host
