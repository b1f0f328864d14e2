// mphost: the supervisor. Loads each module's heap once into a sealed memfd, forks sandboxed
// microprocesses from a zygote per module, and serves HTTP and the control socket on one KJ
// event loop (server.h).
//
//   mphost [--config FILE] [--listen HOST:PORT] [--control SOCKET]
//   mphost --check-config FILE | --version | --help
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "host/cli.h"
#include "host/config.h"
#include "host/helper_launcher.h"
#include "host/server.h"
#include "host/version.h"

namespace mp::host {
namespace {

int Fail(absl::string_view message, int code) {
  std::fprintf(stderr, "mphost: %s\n", std::string(message).c_str());
  return code;
}

// The directory holding this executable (and mp-builder, mp-zygote).
std::string ExeDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

struct Flags {
  std::string config, listen, control, check_config;
};

// Parses the command line into `*flags`; nullopt to go on, else the exit code.
std::optional<int> ParseFlags(int argc, char** argv, Flags* flags) {
  CliContext context("mphost");
  auto set = [](std::string* out) {
    return [out](kj::StringPtr value) -> kj::MainBuilder::Validity {
      if (value.size() == 0) return kj::str("needs a value");
      *out = value.cStr();
      return true;
    };
  };
  return ParseCommandLine(
      kj::MainBuilder(context, kj::str("mphost ", kMphostVersion),
                      "Serves the modules of a config file (JSON, docs/operations.md), or the "
                      "bundled modules when none is given, over HTTP at /m/<module>/...; "
                      "/healthz, /readyz and /metrics describe the host, and mpctl steers it "
                      "through the control socket. Signals: TERM, INT and QUIT drain (a second "
                      "TERM or INT stops at once), HUP reloads the config, USR1 reopens the log "
                      "files.",
                      "Exit codes: 0 a clean stop, 1 a failure at run time, 2 a usage or config "
                      "error.")
          .addOptionWithArg({"config"}, set(&flags->config), "FILE", "The config file (JSON).")
          .addOptionWithArg({"listen"}, set(&flags->listen), "HOST:PORT",
                            "The HTTP address (overrides the config's).")
          .addOptionWithArg({"control"}, set(&flags->control), "SOCKET",
                            "The control socket's path (overrides the config's).")
          .addOptionWithArg({"check-config"}, set(&flags->check_config), "FILE",
                            "Validate FILE and exit: 0 if it is valid, 2 with the error if not.")
          .build(),
      context, argc, argv);
}

int Main(int argc, char** argv) {
  Flags flags;
  if (auto code = ParseFlags(argc, argv, &flags)) return *code;
  if (!flags.check_config.empty()) {
    auto checked = LoadConfigFile(flags.check_config);
    if (!checked.ok()) return Fail(checked.status().message(), kExitConfigError);
    std::printf("config %s: valid (%zu modules)\n", flags.check_config.c_str(),
                checked->modules.size());
    return 0;
  }
  const std::string exe_dir = ExeDir();
  ServerOptions options{flags.config, exe_dir + "/../modules", flags.listen, flags.control};
  HostConfig config;
  if (flags.config.empty()) {
    config = DefaultConfig(options.module_dir);
  } else {
    auto loaded = LoadConfigFile(flags.config);
    if (!loaded.ok()) return Fail(loaded.status().message(), kExitConfigError);
    config = *std::move(loaded);
  }

  // Nothing can attach to the host or read its memory, not even a process of the same uid:
  // module code never runs here, and no process that runs it may reach in.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  auto launcher = HelperLauncher::Open(exe_dir);
  if (!launcher.ok()) return Fail(launcher.status().message(), kExitRuntimeFailure);

  ::signal(SIGPIPE, SIG_IGN);
  // KJ keeps SIGUSR1 for itself unless told otherwise; USR1 is the operator's (logrotate).
  kj::UnixEventPort::setReservedSignal(SIGRTMIN + 6);
  for (int signo : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) {
    kj::UnixEventPort::captureSignal(signo);
  }
  auto io = kj::setupAsyncIo();
  return RunServer(io, *launcher, std::move(config), options);
}

}  // namespace
}  // namespace mp::host

int main(int argc, char** argv) { return mp::host::Main(argc, argv); }
