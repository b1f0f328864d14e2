#include "host/heap_build.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "host/helper_channel.h"
#include "host/log.h"
#include "host/off_loop.h"
#include "microproc/helper_protocol.h"
#include "microproc/helper_spec.h"
#include "microproc/sandbox.h"
#include "mp/module.h"
#include "shm/sys.h"

namespace mp::host {
namespace {

using microproc::MessageKind;

// One build in progress: reads the builder's result on its control socket and its exit on
// init's socket, until both end (init exits when the build does).
class BuildJob {
 public:
  BuildJob(HelperEnv& env, const ModuleConfig& config, uint64_t number, shm::Segment segment,
           PluginImage plugin, ChildProcess init, UniqueFd control, UniqueFd init_socket)
      : env_(env),
        config_(config),
        number_(number),
        segment_(std::move(segment)),
        plugin_(std::move(plugin)),
        init_(std::move(init)),
        control_(env.events, std::move(control)),
        init_channel_(env.events, std::move(init_socket)) {}

  ~BuildJob() {
    // A build given up on (its deadline, or the host stopping): end it and all it started.
    if (init_.pidfd) env_.reaper.Adopt(std::move(init_), absl::StrCat("builder of ", config_.name), true);
  }

  // Sends the builder its spec, then waits for the build to end.
  kj::Promise<absl::StatusOr<BuiltHeap>> Start(const microproc::StageSpec& spec) {
    if (auto s = microproc::SendStageSpec(control_.fd(), spec); !s.ok()) {
      return absl::StatusOr<BuiltHeap>(s);
    }
    return Run();
  }

 private:
  kj::Promise<absl::StatusOr<BuiltHeap>> Run() {
    auto ended = kj::joinPromises(kj::arr(ReadControl(), ReadInit()));
    const uint32_t timeout = config_.build_timeout_ms;
    return ended.then([]() { return false; })
        .exclusiveJoin(env_.timer.afterDelay(timeout * kj::MILLISECONDS).then([]() { return true; }))
        .then([this](bool timed_out) -> kj::Promise<absl::StatusOr<BuiltHeap>> {
          if (timed_out) {
            return absl::StatusOr<BuiltHeap>(absl::DeadlineExceededError(absl::StrCat(
                Who(), ": build did not finish within ", config_.build_timeout_ms,
                " ms (buildTimeoutMs); the builder was killed")));
          }
          // Init has exited (its socket ended): reap it as it goes.
          env_.reaper.Adopt(std::move(init_), absl::StrCat("builder of ", config_.name), false);
          return Finish();
        });
  }

  std::string Who() const { return absl::StrCat("module '", config_.name, "'"); }

  kj::Promise<void> ReadControl() {
    return control_.Receive().then([this](absl::StatusOr<HelperMessage> m) -> kj::Promise<void> {
      if (!m.ok() || m->end) return kj::READY_NOW;
      microproc::BuildResult result{};
      microproc::FaultReport fault{};
      if (!result_ && m->Get(MessageKind::kBuildResult, &result)) {
        result_ = result;
      } else if (m->Get(MessageKind::kFault, &fault) && fault.syscall_nr >= 0 &&
                 fault.syscall_nr < 4096) {
        fault_syscall_ = fault.syscall_nr;
      }
      return ReadControl();
    });
  }

  kj::Promise<void> ReadInit() {
    return init_channel_.Receive().then([this](absl::StatusOr<HelperMessage> m) -> kj::Promise<void> {
      if (!m.ok() || m->end) return kj::READY_NOW;
      microproc::InitReport report{};
      const MessageKind kind = m->kind();
      if (m->Get(kind, &report)) {
        if (kind == MessageKind::kStageStarted) {
          stage_pid_ = report.pid;
        } else if (kind == MessageKind::kChildExited && report.pid == stage_pid_) {
          stage_exit_ = ExitFromWaitStatus(report.code, report.status);
        } else if (kind == MessageKind::kInitNote) {
          LogEvent(LogLevel::kWarn, "builder_note",
                   {{"module", config_.name},
                    {"note", std::string(report.note, strnlen(report.note, sizeof report.note))}});
        }
      }
      return ReadInit();
    });
  }

  kj::Promise<absl::StatusOr<BuiltHeap>> Finish() {
    using Result = absl::StatusOr<BuiltHeap>;
    auto text = [](const microproc::BuildResult& r) {
      return std::string(r.text, strnlen(r.text, sizeof r.text));
    };
    if (fault_syscall_ >= 0) {
      return Result(absl::AbortedError(absl::StrCat(
          Who(), ": build process called forbidden syscall ",
          microproc::SyscallName(fault_syscall_), " (seccomp)")));
    }
    if (result_ && result_->outcome == microproc::BuildOutcome::kInvalid) {
      return Result(absl::InvalidArgumentError(text(*result_)));
    }
    if (result_ && result_->outcome == microproc::BuildOutcome::kFailed) {
      return Result(absl::AbortedError(text(*result_)));
    }
    const bool clean = stage_exit_ && stage_exit_->signal == 0 && stage_exit_->exit_code == 0;
    if (!result_ || result_->outcome != microproc::BuildOutcome::kOk || !clean) {
      const std::string how = stage_exit_ ? stage_exit_->Describe() : "ended";
      return Result(absl::AbortedError(
          absl::StrCat(Who(), ": build process ", how, " without reporting a result")));
    }
    // Validate, checksum and seal, off the loop: a heap may be gigabytes.
    return RunOffLoop([segment = std::move(segment_), plugin = std::move(plugin_),
                       name = config_.name, version = text(*result_),
                       number = number_]() mutable -> Result {
      auto info = shm::FinishHeap(segment, name, version, MP_MODULE_ABI_VERSION, number);
      if (!info.ok()) {
        return absl::AbortedError(absl::StrCat("module '", name, "': ", info.status().message()));
      }
      return BuiltHeap{std::move(segment), *std::move(info), std::move(plugin)};
    });
  }

  HelperEnv& env_;
  ModuleConfig config_;
  uint64_t number_;
  shm::Segment segment_;
  PluginImage plugin_;
  ChildProcess init_;
  HelperChannel control_;
  HelperChannel init_channel_;
  std::optional<microproc::BuildResult> result_;
  int32_t fault_syscall_ = -1;
  pid_t stage_pid_ = -1;
  std::optional<ExitInfo> stage_exit_;
};

}  // namespace

kj::Promise<absl::StatusOr<BuiltHeap>> BuildHeap(HelperEnv& env, const ModuleConfig& config,
                                                 uint64_t number) {
  using Result = absl::StatusOr<BuiltHeap>;
  const std::string who = absl::StrCat("module '", config.name, "'");
  auto plugin = ReadPluginImage(config.name, config.plugin);
  if (!plugin.ok()) return Result(plugin.status());
  auto segment = shm::CreateHeapSegment(config.name, number, config.max_heap_bytes);
  if (!segment.ok()) return Result(segment.status());
  // Data files are opened here and handed over read-only: the builder opens nothing itself.
  if (config.data_files.size() > static_cast<size_t>(microproc::kMaxDataFiles)) {
    return Result(absl::InvalidArgumentError(
        absl::StrCat(who, ": at most ", microproc::kMaxDataFiles, " data files")));
  }
  std::vector<UniqueFd> data_fds;
  uint64_t data_bytes = 0;
  for (const auto& [name, path] : config.data_files) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) {
      return Result(absl::NotFoundError(
          absl::StrCat(who, ": data file '", name, "' (", path, "): ", strerror(errno))));
    }
    const off_t size = ::lseek(fd.get(), 0, SEEK_END);
    if (size > 0) data_bytes += static_cast<uint64_t>(size);
    data_fds.push_back(std::move(fd));
  }
  int control[2], init[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) != 0) {
    return Result(ErrnoStatus("socketpair", errno));
  }
  UniqueFd control_ours(control[0]), control_theirs(control[1]);
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, init) != 0) {
    return Result(ErrnoStatus("socketpair", errno));
  }
  UniqueFd init_ours(init[0]), init_theirs(init[1]);
  auto output = env.output.Open(config.name, "builder");
  if (!output.ok()) return Result(output.status());
  HelperLaunch launch{HelperKind::kBuilder,
                      absl::StrCat("mphost: builder ", config.name, " gen ", number),
                      config.sandbox.namespaces,
                      {{output->write_end.get(), microproc::kHelperStderrFd},
                       {control_theirs.get(), microproc::kHelperSocketFd},
                       {segment->fd(), microproc::kHelperHeapFd},
                       {init_theirs.get(), microproc::kHelperInitFd},
                       {plugin->fd.get(), microproc::kHelperPluginFd}}};
  microproc::StageSpec spec;
  for (size_t i = 0; i < config.data_files.size(); ++i) {
    launch.fds.emplace_back(data_fds[i].get(), microproc::kHelperFirstDataFd + static_cast<int>(i));
    spec.data_files.push_back(config.data_files[i].first);
  }
  auto child = env.launcher.Launch(launch);
  output->write_end.reset();
  control_theirs.reset();
  init_theirs.reset();
  data_fds.clear();
  if (!child.ok()) {
    return Result(absl::Status(child.status().code(), absl::StrCat(who, ": ", child.status().message())));
  }
  env.output.SetPid(output->id, child->pid);
  spec.module = config.name;
  spec.generation = number;
  spec.layers = config.sandbox;
  spec.options = config.options;
  spec.plugin_path = config.plugin;
  // The heap and the data files are mapped; the module's own memory comes on top.
  spec.address_space_bytes = config.max_heap_bytes + data_bytes + config.worker_memory_bytes;
  auto job = kj::heap<BuildJob>(env, config, number, *std::move(segment), *std::move(plugin),
                                *std::move(child), std::move(control_ours), std::move(init_ours));
  return job->Start(spec).attach(kj::mv(job));
}

}  // namespace mp::host
