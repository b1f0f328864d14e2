// mphost: the supervisor. Loads each module's heap once into a sealed memfd, forks sandboxed
// microprocesses from a zygote per module, and serves HTTP and the control socket on one KJ
// event loop.
//
//   mphost [--config FILE] [--listen HOST:PORT] [--control SOCKET]
//   mphost --check-config FILE | --version | --help
#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/compat/http.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "host/cli.h"
#include "host/config.h"
#include "host/control_server.h"
#include "host/head_timeout.h"
#include "host/helper_launcher.h"
#include "host/module_output.h"
#include "host/http_front.h"
#include "host/log.h"
#include "host/supervisor.h"

namespace mp::host {
namespace {

constexpr char kVersion[] = "0.1.0";

int Fail(absl::string_view message, int code = 1) {
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
      kj::MainBuilder(context, kj::str("mphost ", kVersion),
                      "Serves the modules of a config file (JSON, docs/operations.md), or the "
                      "bundled modules when none is given, over HTTP at /m/<module>/...; "
                      "/healthz, /readyz and /metrics describe the host, and mpctl steers it "
                      "through the control socket.",
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
    if (!checked.ok()) return Fail(checked.status().message(), kExitUsage);
    std::printf("config %s: valid (%zu modules)\n", flags.check_config.c_str(),
                checked->modules.size());
    return 0;
  }
  const std::string config_path = flags.config, listen = flags.listen, control = flags.control;
  const std::string exe_dir = ExeDir();
  HostConfig config;
  if (config_path.empty()) {
    config = DefaultConfig(exe_dir + "/../modules");
  } else {
    auto loaded = LoadConfigFile(config_path);
    if (!loaded.ok()) return Fail(loaded.status().message(), kExitUsage);
    config = *std::move(loaded);
  }
  if (!listen.empty()) config.listen = listen;
  if (!control.empty()) config.control = control;

  // Nothing can attach to the host or read its memory, not even a process of the same uid:
  // module code never runs here, and no process that runs it may reach in.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  auto launcher = HelperLauncher::Open(exe_dir);
  if (!launcher.ok()) return Fail(launcher.status().message());

  ::signal(SIGPIPE, SIG_IGN);
  kj::UnixEventPort::captureSignal(SIGTERM);
  kj::UnixEventPort::captureSignal(SIGINT);
  kj::UnixEventPort::captureSignal(SIGHUP);
  auto io = kj::setupAsyncIo();

  ModuleOutput module_output(io.unixEventPort, io.provider->getTimer());
  ChildReaper reaper(io.unixEventPort);
  HelperEnv helpers{io.unixEventPort, io.provider->getTimer(), *launcher, module_output, reaper};
  Supervisor supervisor(io, config, helpers);
  if (auto s = supervisor.Start().wait(io.waitScope); !s.ok()) {
    supervisor.StopAll();
    return Fail(s.message());
  }

  kj::HttpHeaderTable table;
  FrontDoor front(supervisor, table, config.max_header_bytes, config.routes, config.access_log,
                  &io.provider->getTimer(), config.body_timeout_ms);
  kj::HttpServerSettings settings;
  // Our HeadTimeoutStream answers a slow head with 408; KJ's own timeout is the backstop.
  settings.headerTimeout = (config.header_timeout_ms + 5000) * kj::MILLISECONDS;
  FrontDoorErrors errors;
  settings.errorHandler = errors;
  kj::HttpServer http(io.provider->getTimer(), table, front, settings);
  kj::Own<kj::ConnectionReceiver> listener;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                auto addr = io.provider->getNetwork()
                                .parseAddress(kj::StringPtr(config.listen.c_str()))
                                .wait(io.waitScope);
                listener = addr->listen();
              })) {
    supervisor.StopAll();
    return Fail(absl::StrCat("--listen ", config.listen, ": ", e->getDescription().cStr()));
  }
  std::string host = config.listen.substr(0, config.listen.rfind(':'));
  const std::string http_address = absl::StrCat(host, ":", listener->getPort());
  ControlServer control_server(io, supervisor, http_address);
  supervisor.SetAddresses(http_address, config.control);
  if (auto s = control_server.Listen(config.control, config.control_group); !s.ok()) {
    supervisor.StopAll();
    return Fail(s.message());
  }
  LogEvent("listening", {{"http", http_address},
                         {"control", config.control},
                         {"pid", absl::StrCat(::getpid())}});

  // SIGHUP: reload every module as a new generation.
  std::function<kj::Promise<void>()> on_hup = [&]() -> kj::Promise<void> {
    return io.unixEventPort.onSignal(SIGHUP).then([&](siginfo_t) {
      LogEvent("sighup", {{"action", "reload all modules"}});
      supervisor.ReloadAll();
      return on_hup();
    });
  };
  auto hup = on_hup().eagerlyEvaluate(nullptr);
  // A stop starts with SIGTERM, SIGINT or mpctl drain.
  auto drain = kj::newPromiseAndFulfiller<int>();
  supervisor.SetDrainHandler([&fulfiller = drain.fulfiller]() {
    if (fulfiller->isWaiting()) fulfiller->fulfill(0);
  });
  // Connections, each wrapped so a slow request head gets a 408.
  class QuietErrors final : public kj::TaskSet::ErrorHandler {
   public:
    void taskFailed(kj::Exception&& e) override {
      if (e.getType() != kj::Exception::Type::DISCONNECTED) {
        LogEvent("connection_error", {{"what", e.getDescription().cStr()}});
      }
    }
  } quiet_errors;
  kj::TaskSet connections(quiet_errors);
  auto& timer = io.provider->getTimer();
  const kj::Duration head_timeout = config.header_timeout_ms * kj::MILLISECONDS;
  std::function<kj::Promise<void>()> accept_loop = [&]() -> kj::Promise<void> {
    return listener->accept().then([&](kj::Own<kj::AsyncIoStream> connection) {
      connections.add(http.listenHttp(kj::heap<HeadTimeoutStream>(kj::mv(connection), timer, head_timeout)));
      return accept_loop();
    });
  };
  auto serving = accept_loop().eagerlyEvaluate([](kj::Exception&& e) {
    LogEvent("listener_error", {{"what", e.getDescription().cStr()}});
  });
  auto controlling = control_server.Run().eagerlyEvaluate(nullptr);
  int signo = io.unixEventPort.onSignal(SIGTERM)
                  .exclusiveJoin(io.unixEventPort.onSignal(SIGINT))
                  .then([](siginfo_t info) { return info.si_signo; })
                  .exclusiveJoin(kj::mv(drain.promise))
                  .wait(io.waitScope);
  supervisor.RequestDrain();  // /readyz turns 503
  // One short turn so that a reply already written (mpctl drain's) reaches its client.
  io.provider->getTimer().afterDelay(20 * kj::MILLISECONDS).wait(io.waitScope);
  LogEvent("draining", {{"signal", signo ? sigabbrev_np(signo) : "none (mpctl drain)"},
                        {"listener_closes_in_ms", absl::StrCat(config.drain_delay_ms)}});
  if (config.drain_delay_ms > 0) {
    io.provider->getTimer().afterDelay(config.drain_delay_ms * kj::MILLISECONDS).wait(io.waitScope);
  }
  serving = nullptr;
  listener = nullptr;  // stop accepting; connections in progress finish their calls
  supervisor.WhenIdle(10000).wait(io.waitScope);
  supervisor.StopAll();
  LogEvent("stopped", {});
  return 0;
}

}  // namespace
}  // namespace mp::host

int main(int argc, char** argv) { return mp::host::Main(argc, argv); }
