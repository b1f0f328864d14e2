#include "host/server.h"

#include <kj/async-unix.h>
#include <kj/compat/http.h>
#include <signal.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host/access_log.h"
#include "host/child_reaper.h"
#include "host/control_server.h"
#include "host/http_front.h"
#include "host/listener.h"
#include "host/log.h"
#include "host/module_output.h"
#include "host/supervisor.h"
#include "host/systemd.h"

namespace mp::host {
namespace {

// The soft descriptor limit raised to the hard one: every client connection costs one.
void RaiseDescriptorLimit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  const rlim_t before = limit.rlim_cur;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) limit.rlim_cur = before;
  }
  auto text = [](rlim_t v) { return v == RLIM_INFINITY ? std::string("unlimited") : absl::StrCat(v); };
  LogEvent("fd_limit", {{"soft_was", text(before)},
                        {"soft", text(limit.rlim_cur)},
                        {"hard", text(limit.rlim_max)}});
}

std::string MonotonicUsec() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return absl::StrCat(static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000);
}

FrontDoorLimits LimitsOf(const HostConfig& c) {
  return FrontDoorLimits{c.max_header_bytes, c.body_timeout_ms};
}

enum class Stop { kGraceful, kNow, kFailed };

class Server final : private kj::TaskSet::ErrorHandler {
 public:
  Server(kj::AsyncIoContext& io, HelperLauncher& launcher, HostConfig config,
         const ServerOptions& options)
      : io_(io),
        timer_(io.provider->getTimer()),
        options_(options),
        config_(std::move(config)),
        module_output_(io.unixEventPort, timer_),
        reaper_(io.unixEventPort),
        helpers_{io.unixEventPort, timer_, launcher, module_output_, reaper_},
        tasks_(*this) {
    ApplyOverrides(&config_);
  }

  int Run();

 private:
  void taskFailed(kj::Exception&& e) override {
    LogEvent(LogLevel::kError, "internal_error", {{"what", e.getDescription().cStr()}});
  }
  void ApplyOverrides(HostConfig* c) const {
    if (!options_.listen.empty()) c->listen = options_.listen;
    if (!options_.control.empty()) c->control = options_.control;
  }
  // Binds (or adopts) both sockets and sets up everything that serves them.
  std::optional<int> OpenSockets(ActivatedSockets activated);
  void WatchSignal(int signo);
  void OnSignal(int signo);
  void RequestStop(Stop how, const std::string& why);
  void ReopenLogs();
  kj::Promise<absl::StatusOr<std::vector<std::string>>> ReloadConfig(const char* trigger);
  int Drain();
  void FillFacts(HostFacts& facts) const;

  kj::AsyncIoContext& io_;
  kj::Timer& timer_;
  const ServerOptions& options_;
  HostConfig config_;
  Notifier notifier_;
  ModuleOutput module_output_;
  ChildReaper reaper_;
  HelperEnv helpers_;
  AccessLog access_log_;
  std::unique_ptr<Supervisor> supervisor_;
  std::unique_ptr<FrontDoor> front_;
  std::unique_ptr<FrontDoorErrors> errors_;
  std::unique_ptr<kj::HttpServer> http_;
  std::unique_ptr<Listener> listener_;  // after http_: its connections are served by it
  std::unique_ptr<ControlServer> control_;
  std::string http_address_, control_address_;

  bool started_ = false;
  bool stopping_ = false;
  bool reloading_ = false;
  uint64_t reloads_ok_ = 0, reloads_failed_ = 0;
  kj::Own<kj::PromiseFulfiller<std::pair<Stop, std::string>>> stop_;
  kj::Own<kj::PromiseFulfiller<void>> stop_now_;
  kj::TaskSet tasks_;  // last: destroyed first
};

std::optional<int> Server::OpenSockets(ActivatedSockets activated) {
  UniqueFd http_socket = std::move(activated.http);
  if (!http_socket) {
    auto bound = ListenTcp(config_.listen);
    if (!bound.ok()) {
      LogEvent(LogLevel::kError, "listen_failed", {{"error", bound.status().message()}});
      return kExitRuntimeFailure;
    }
    http_socket = *std::move(bound);
  }
  http_address_ = BoundAddress(http_socket.get());

  supervisor_ = std::make_unique<Supervisor>(io_, config_, helpers_);
  helpers_.count_workers = [this]() { return supervisor_->WorkerCount(); };
  supervisor_->SetFactsSource([this](HostFacts& facts) { FillFacts(facts); });
  supervisor_->SetDrainHandler([this]() { RequestStop(Stop::kGraceful, "mpctl drain"); });

  control_ = std::make_unique<ControlServer>(io_, *supervisor_, [this]() {
    return ReloadConfig("mpctl reload --config");
  });
  const bool control_activated = static_cast<bool>(activated.control);
  absl::Status control = control_activated
                             ? control_->Adopt(std::move(activated.control), config_.control_group)
                             : control_->Listen(config_.control, config_.control_group);
  if (!control.ok()) {
    LogEvent(LogLevel::kError, "listen_failed", {{"error", control.message()}});
    return kExitRuntimeFailure;
  }
  control_address_ = control_activated ? "(from systemd)" : config_.control;
  supervisor_->SetAddresses(http_address_, control_address_);

  front_ = std::make_unique<FrontDoor>(*supervisor_, timer_, access_log_, LimitsOf(config_),
                                       config_.routes);
  errors_ = std::make_unique<FrontDoorErrors>(*front_);
  kj::HttpServerSettings settings;
  // ClientStream answers a slow head with 408; KJ's own timeout is the backstop.
  settings.headerTimeout = (config_.header_timeout_ms + 5000) * kj::MILLISECONDS;
  settings.errorHandler = *errors_;
  http_ = std::make_unique<kj::HttpServer>(
      timer_, front_->table(),
      [this](kj::AsyncIoStream& connection) {
        // Every connection is a ClientStream: the listener made it.
        return front_->ForConnection(static_cast<ClientStream&>(connection));
      },
      settings);
  Listener::Options listener_options;
  listener_options.max_connections = config_.max_connections;
  listener_options.header_timeout = config_.header_timeout_ms * kj::MILLISECONDS;
  listener_options.on_head_timeout = [this](const std::string& peer) {
    front_->LogRejection(peer, 408, "head_timeout");
  };
  listener_ = std::make_unique<Listener>(
      io_.unixEventPort, *io_.lowLevelProvider, timer_, std::move(http_socket),
      [this](kj::Own<ClientStream> stream) { return http_->listenHttp(kj::mv(stream)); },
      std::move(listener_options));
  return std::nullopt;
}

void Server::FillFacts(HostFacts& facts) const {
  if (listener_) {
    const ListenerCounters& c = listener_->counters();
    facts.connections_open = c.open;
    facts.connections_accepted = c.accepted;
    facts.connections_shed = c.shed_idle;
    facts.connection_limit_reached = c.limit_reached;
    facts.accept_resource_errors = c.accept_resource_errors;
    facts.accept_other_errors = c.accept_other_errors;
  }
  facts.config_reloads_ok = reloads_ok_;
  facts.config_reloads_failed = reloads_failed_;
}

void Server::WatchSignal(int signo) {
  tasks_.add(io_.unixEventPort.onSignal(signo).then([this, signo](siginfo_t) {
    OnSignal(signo);
    WatchSignal(signo);
  }));
}

void Server::OnSignal(int signo) {
  const std::string name = absl::StrCat("SIG", sigabbrev_np(signo));
  switch (signo) {
    case SIGTERM:
    case SIGINT:
      if (stopping_) {
        LogEvent(LogLevel::kWarn, "stop_now", {{"signal", name}, {"why", "second stop signal"}});
        if (stop_now_) stop_now_->fulfill();
        return;
      }
      RequestStop(Stop::kGraceful, name);
      return;
    case SIGQUIT:
      if (!stopping_) RequestStop(Stop::kGraceful, name);
      return;
    case SIGHUP:
      tasks_.add(ReloadConfig("SIGHUP").ignoreResult());
      return;
    case SIGUSR1:
      ReopenLogs();
      return;
    default:
      LogEvent(LogLevel::kWarn, "signal_ignored", {{"signal", name}, {"why", "it has no meaning"}});
  }
}

void Server::RequestStop(Stop how, const std::string& why) {
  if (stopping_) return;
  stopping_ = true;
  if (stop_->isWaiting()) stop_->fulfill(std::make_pair(how, why));
}

void Server::ReopenLogs() {
  std::vector<std::string> reopened;
  if (!config_.log_file.empty()) {
    if (auto s = RedirectLogTo(config_.log_file); !s.ok()) {
      LogEvent(LogLevel::kError, "log_reopen_failed", {{"error", s.message()}});
    } else {
      reopened.push_back(config_.log_file);
    }
  }
  if (!config_.access_log_file.empty()) {
    if (auto s = access_log_.Reopen(); !s.ok()) {
      LogEvent(LogLevel::kError, "log_reopen_failed", {{"error", s.message()}});
    } else {
      reopened.push_back(config_.access_log_file);
    }
  }
  LogEvent("logs_reopened", {{"signal", "SIGUSR1"},
                             {"files", reopened.empty() ? "none (stderr)" : absl::StrJoin(reopened, ",")}});
}

kj::Promise<absl::StatusOr<std::vector<std::string>>> Server::ReloadConfig(const char* trigger) {
  using Result = absl::StatusOr<std::vector<std::string>>;
  auto refuse = [this, trigger](absl::Status s) {
    ++reloads_failed_;
    LogEvent(LogLevel::kError, "config_reload_failed", {{"trigger", trigger}, {"error", s.message()}});
    notifier_.Notify(absl::StrCat("READY=1\nSTATUS=config reload failed: ", s.message()));
    return Result(std::move(s));
  };
  // Refused, not failed: nothing was read. Logged, since a signal has no one to answer.
  auto refused = [trigger](absl::Status s) {
    LogEvent(LogLevel::kWarn, "config_reload_refused", {{"trigger", trigger}, {"why", s.message()}});
    return Result(std::move(s));
  };
  if (stopping_) return refused(absl::UnavailableError("the host is stopping"));
  if (reloading_) return refused(absl::FailedPreconditionError("a config reload is already running"));
  if (!started_) {
    return refused(absl::UnavailableError("the modules are still starting; reload once they serve"));
  }
  LogEvent("config_reload", {{"trigger", trigger},
                             {"file", options_.config_path.empty() ? "(bundled modules)"
                                                                   : options_.config_path}});
  notifier_.Notify(absl::StrCat("RELOADING=1\nMONOTONIC_USEC=", MonotonicUsec(),
                                "\nSTATUS=reloading the config"));
  absl::StatusOr<HostConfig> loaded = options_.config_path.empty()
                                          ? absl::StatusOr<HostConfig>(DefaultConfig(options_.module_dir))
                                          : LoadConfigFile(options_.config_path);
  if (!loaded.ok()) return refuse(loaded.status());
  HostConfig next = *std::move(loaded);
  ApplyOverrides(&next);
  // What could fail comes first, so that a failure changes nothing: the new log file is
  // opened (not yet used), then the access log reconfigured (all or nothing).
  UniqueFd new_log;
  if (next.log_file != config_.log_file && !next.log_file.empty()) {
    auto opened = OpenLogFile(next.log_file);
    if (!opened.ok()) return refuse(opened.status());
    new_log.reset(*opened);
  }
  if (auto s = access_log_.Configure(next.access_log, next.access_log_file, next.trusted_proxies);
      !s.ok()) {
    return refuse(s);
  }
  if (new_log) {
    if (auto s = UseLogFile(new_log.get(), next.log_file); !s.ok()) {
      LogEvent(LogLevel::kError, "log_reopen_failed", {{"error", s.message()}});
    }
  }
  std::vector<std::string> changes;
  auto needs_restart = [&](const char* field, const std::string& now, const std::string& wanted) {
    if (now == wanted) return;
    changes.push_back(absl::StrCat(field, ": needs a restart (\"", now, "\" stays until then)"));
    LogEvent(LogLevel::kWarn, "config_needs_restart",
             {{"field", field}, {"current", now}, {"wanted", wanted}});
  };
  needs_restart("listen", config_.listen, next.listen);
  needs_restart("control", config_.control, next.control);
  needs_restart("controlGroup", config_.control_group, next.control_group);
  if (next.log_file.empty()) needs_restart("logFile", config_.log_file, next.log_file);
  next.listen = config_.listen;
  next.control = config_.control;
  next.control_group = config_.control_group;
  if (next.log_file.empty()) next.log_file = config_.log_file;

  front_->Reconfigure(LimitsOf(next), next.routes);
  listener_->Reconfigure(next.max_connections, next.header_timeout_ms * kj::MILLISECONDS);
  std::vector<ModuleConfig> modules = next.modules;
  config_ = std::move(next);
  reloading_ = true;
  return supervisor_->ApplyModules(std::move(modules))
      .then([this, changes = std::move(changes)](std::vector<std::string> lines) mutable -> Result {
        reloading_ = false;
        ++reloads_ok_;
        changes.insert(changes.end(), lines.begin(), lines.end());
        LogEvent("config_reloaded", {{"changes", absl::StrJoin(changes, "; ")}});
        notifier_.Notify("READY=1\nSTATUS=serving (config reloaded)");
        return changes;
      }, [this](kj::Exception&& e) -> Result {
        // Not expected (every step resolves to its outcome), but a reload must never stay
        // "running" for good.
        reloading_ = false;
        ++reloads_failed_;
        LogEvent(LogLevel::kError, "config_reload_failed", {{"error", e.getDescription().cStr()}});
        notifier_.Notify("READY=1\nSTATUS=config reload failed");
        return absl::InternalError(e.getDescription().cStr());
      });
}

int Server::Drain() {
  notifier_.Notify("STOPPING=1\nSTATUS=draining");
  supervisor_->RequestDrain();  // /readyz turns 503
  auto now = kj::newPromiseAndFulfiller<void>();
  stop_now_ = kj::mv(now.fulfiller);
  auto stop_now = now.promise.fork();
  // Waits `delay`, or less if a second signal asks to stop now: true if it was not cut short.
  auto wait = [&](kj::Promise<void> what) {
    return what.then([] { return true; })
        .exclusiveJoin(stop_now.addBranch().then([] { return false; }))
        .wait(io_.waitScope);
  };
  // One short turn so that a reply already written (mpctl drain's) reaches its client.
  timer_.afterDelay(20 * kj::MILLISECONDS).wait(io_.waitScope);
  LogEvent("draining", {{"listener_closes_in_ms", absl::StrCat(config_.drain_delay_ms)},
                        {"drain_timeout_ms", absl::StrCat(config_.drain_timeout_ms)}});
  bool graceful = wait(timer_.afterDelay(config_.drain_delay_ms * kj::MILLISECONDS));
  const kj::TimePoint deadline = timer_.now() + config_.drain_timeout_ms * kj::MILLISECONDS;
  listener_->StopAccepting();
  if (graceful) {
    // Idle keep-alive connections close now; the others after their response.
    tasks_.add(http_->drain());
    graceful = wait(listener_->WhenAllClosed().exclusiveJoin(timer_.atTime(deadline)));
    if (graceful && listener_->counters().open > 0) {
      LogEvent(LogLevel::kWarn, "drain_timeout",
               {{"open_connections", absl::StrCat(listener_->counters().open)},
                {"drain_timeout_ms", absl::StrCat(config_.drain_timeout_ms)}});
      graceful = false;
    }
  }
  supervisor_->StopAll();
  LogEvent("stopped", {{"graceful", graceful ? "yes" : "no"}});
  return 0;
}

int Server::Run() {
  auto activated = TakeActivatedSockets();
  if (!activated.ok()) {
    LogEvent(LogLevel::kError, "config_error", {{"error", activated.status().message()}});
    return kExitConfigError;
  }
  if (!config_.log_file.empty()) {
    if (auto s = RedirectLogTo(config_.log_file); !s.ok()) {
      LogEvent(LogLevel::kError, "config_error", {{"error", s.message()}});
      return kExitConfigError;
    }
  }
  if (auto s = access_log_.Configure(config_.access_log, config_.access_log_file,
                                     config_.trusted_proxies);
      !s.ok()) {
    LogEvent(LogLevel::kError, "config_error", {{"error", s.message()}});
    return kExitConfigError;
  }
  RaiseDescriptorLimit();
  const bool activated_any = activated->http || activated->control;
  if (auto code = OpenSockets(*std::move(activated))) return *code;

  auto stop = kj::newPromiseAndFulfiller<std::pair<Stop, std::string>>();
  stop_ = kj::mv(stop.fulfiller);
  for (int signo : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2}) WatchSignal(signo);
  listener_->Start();
  tasks_.add(control_->Run());
  LogEvent("listening", {{"http", http_address_},
                         {"control", control_address_},
                         {"pid", absl::StrCat(::getpid())},
                         {"socket_activation", activated_any ? "yes" : "no"}});
  notifier_.Notify("STATUS=starting the modules");

  const auto started = timer_.now();
  tasks_.add(supervisor_->Start().then([this, started](absl::Status s) {
    if (!s.ok()) {
      LogEvent(LogLevel::kError, "start_failed", {{"error", s.message()}});
      RequestStop(Stop::kFailed, std::string(s.message()));
      return;
    }
    started_ = true;
    const ReadinessReport report = supervisor_->CheckReadiness();
    size_t failed = 0;
    for (const ModuleReadiness& m : report.modules) failed += m.state == ModuleState::kFailed ? 1 : 0;
    LogEvent("serving", {{"modules", absl::StrCat(report.modules.size())},
                         {"failed", absl::StrCat(failed)},
                         {"startup_ms", absl::StrCat((timer_.now() - started) / kj::MILLISECONDS)}});
    notifier_.Notify(absl::StrCat("READY=1\nSTATUS=serving ", report.modules.size() - failed,
                                  " of ", report.modules.size(), " modules"));
  }));

  auto [how, why] = stop.promise.wait(io_.waitScope);
  if (how == Stop::kFailed) {
    notifier_.Notify(absl::StrCat("STOPPING=1\nSTATUS=failed: ", why));
    listener_->StopAccepting();
    supervisor_->StopAll();
    return kExitRuntimeFailure;
  }
  LogEvent("stop_requested", {{"by", why}});
  return Drain();
}

}  // namespace

int RunServer(kj::AsyncIoContext& io, HelperLauncher& launcher, HostConfig config,
              const ServerOptions& options) {
  Server server(io, launcher, std::move(config), options);
  return server.Run();
}

}  // namespace mp::host
