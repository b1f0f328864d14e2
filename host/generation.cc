#include "host/generation.h"

#include <sched.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "host/log.h"
#include "microproc/helper_protocol.h"
#include "microproc/helper_spec.h"
#include "microproc/sandbox.h"
#include "mp/module.h"
#include "shm/sys.h"

namespace mp::host {

uint32_t HelperEnv::SpinFor(uint32_t configured) const {
  if (configured == 0 || !count_workers) return configured;
  static const size_t cpus = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) != 0) return size_t{1};
    return static_cast<size_t>(CPU_COUNT(&set));
  }();
  return SpinForWorkers(configured, count_workers(), cpus);
}
namespace {

using microproc::MessageKind;

constexpr int kSpawnTimeoutMs = 5000;
constexpr size_t kMaxEarlyExits = 4096;
constexpr uint64_t kMaxPluginBytes = 1ull << 30;

std::string Text(const char* chars, size_t capacity) {
  return std::string(chars, strnlen(chars, capacity));
}

}  // namespace

absl::StatusOr<PluginImage> ReadPluginImage(absl::string_view module, const std::string& path) {
  const std::string who = absl::StrCat("module '", module, "': plugin ", path);
  UniqueFd file(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!file) return absl::NotFoundError(absl::StrCat(who, ": ", strerror(errno)));
  struct stat st;
  if (::fstat(file.get(), &st) != 0) return ErrnoStatus(absl::StrCat(who, ": fstat"), errno);
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(who, ": not a file"));
  if (static_cast<uint64_t>(st.st_size) > kMaxPluginBytes) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": larger than 1 GiB"));
  }
  UniqueFd image(::memfd_create(absl::StrCat("mp-plugin.", module).c_str(),
                                MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!image) return ErrnoStatus(absl::StrCat(who, ": memfd_create"), errno);
  off_t offset = 0;
  while (offset < st.st_size) {
    const ssize_t n = RetryEintr([&] {
      return ::sendfile(image.get(), file.get(), &offset, static_cast<size_t>(st.st_size - offset));
    });
    if (n < 0) return ErrnoStatus(absl::StrCat(who, ": copying"), errno);
    if (n == 0) break;  // the file shrank while we read it: what we have is the image
  }
  if (::fcntl(image.get(), F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return ErrnoStatus(absl::StrCat(who, ": sealing"), errno);
  }
  return PluginImage{std::move(image), path};
}

Generation::Generation(HelperEnv& env, const ModuleConfig& config, BuiltHeap heap,
                       ChildProcess init, UniqueFd control, UniqueFd init_socket)
    : env_(env),
      module_(config.name),
      number_(heap.info.generation),
      segment_(std::move(heap.segment)),
      heap_info_(std::move(heap.info)),
      init_(std::move(init)),
      control_(env.events, std::move(control)),
      init_channel_(env.events, std::move(init_socket)) {}

kj::Promise<absl::StatusOr<std::unique_ptr<Generation>>> Generation::Start(
    HelperEnv& env, const ModuleConfig& config, BuiltHeap heap) {
  using Result = absl::StatusOr<std::unique_ptr<Generation>>;
  int control[2], init[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, control) != 0) {
    return Result(ErrnoStatus("socketpair", errno));
  }
  UniqueFd control_ours(control[0]), control_theirs(control[1]);
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, init) != 0) {
    return Result(ErrnoStatus("socketpair", errno));
  }
  UniqueFd init_ours(init[0]), init_theirs(init[1]);
  auto output = env.output.Open(config.name, "zygote");
  if (!output.ok()) return Result(output.status());
  const uint64_t number = heap.info.generation;
  auto child = env.launcher.Launch(
      {HelperKind::kZygote,
       absl::StrCat("mphost: zygote ", config.name, " gen ", number),
       config.sandbox.namespaces,
       {{output->write_end.get(), microproc::kHelperStderrFd},
        {control_theirs.get(), microproc::kHelperSocketFd},
        {heap.segment.fd(), microproc::kHelperHeapFd},
        {init_theirs.get(), microproc::kHelperInitFd},
        {heap.plugin.fd.get(), microproc::kHelperPluginFd}}});
  output->write_end.reset();
  control_theirs.reset();
  init_theirs.reset();
  if (!child.ok()) {
    return Result(absl::Status(child.status().code(),
                               absl::StrCat("module '", config.name, "': ", child.status().message())));
  }
  env.output.SetPid(output->id, child->pid);
  microproc::StageSpec spec;
  spec.module = config.name;
  spec.generation = number;
  spec.layers = config.sandbox;
  spec.heap_copy_on_write = config.heap_copy_on_write;
  spec.plugin_path = config.plugin;
  // The zygote's limit must leave room for its microprocesses' (a process can only lower its
  // own): heap, two rings, the worker budget, and a margin for the zygote itself.
  spec.address_space_bytes = heap.info.segment_bytes + 2 * (config.ring_bytes + (64 << 10)) +
                             config.worker_memory_bytes + (64ull << 20);
  std::unique_ptr<Generation> gen(new Generation(env, config, std::move(heap), *std::move(child),
                                                 std::move(control_ours), std::move(init_ours)));
  auto hello = kj::newPromiseAndFulfiller<absl::Status>();
  gen->hello_ = kj::mv(hello.fulfiller);
  gen->control_loop_ = gen->ReadControl().eagerlyEvaluate(nullptr);
  gen->init_loop_ = gen->ReadInit().eagerlyEvaluate(nullptr);
  if (auto s = microproc::SendStageSpec(gen->control_.fd(), spec); !s.ok()) {
    gen->ZygoteGone(absl::StrCat("could not be sent its spec: ", s.message()));
  }
  const uint32_t timeout_ms = config.zygote_start_timeout_ms;
  const std::string name = config.name;
  return hello.promise
      .exclusiveJoin(env.timer.afterDelay(timeout_ms * kj::MILLISECONDS).then([name, timeout_ms]() {
        return absl::DeadlineExceededError(absl::StrCat(
            "module '", name, "': zygote did not say hello within ", timeout_ms,
            " ms (zygoteStartTimeoutMs); its constructors or heap check took too long"));
      }))
      .then([gen = std::move(gen)](absl::Status s) mutable -> Result {
        if (!s.ok()) return s;  // `gen` goes, and its namespaces with it
        return std::move(gen);
      });
}

Generation::~Generation() {
  retired_ = true;
  ZygoteGone("its generation was retired");
  for (auto& [pid, waiter] : exit_waiters_) waiter->fulfill(ExitInfo{-1, SIGKILL});
  exit_waiters_.clear();
  control_loop_ = nullptr;
  init_loop_ = nullptr;
  // Killing init ends every process left in the generation's pid namespace.
  env_.reaper.Adopt(std::move(init_), absl::StrCat("init of ", module_, " gen ", number_),
                    /*kill=*/true);
}

kj::Promise<void> Generation::ReadControl() {
  return control_.Receive().then([this](absl::StatusOr<HelperMessage> m) -> kj::Promise<void> {
    if (!m.ok()) {
      ZygoteGone(std::string(m.status().message()));
      return kj::READY_NOW;
    }
    if (m->end) {
      // The zygote closed its socket: it is ending. Its cause comes from its fault report (sent
      // first) or from init's report of its exit, which may follow by a moment.
      if (fault_syscall_ >= 0) {
        ZygoteGone(absl::StrCat("called forbidden syscall ", microproc::SyscallName(fault_syscall_),
                                " (seccomp)"));
        return kj::READY_NOW;
      }
      return env_.timer.afterDelay(1 * kj::SECONDS).then([this]() {
        ZygoteGone("closed its control socket");
      });
    }
    OnControlMessage(*std::move(m));
    return ReadControl();
  });
}

void Generation::OnControlMessage(HelperMessage message) {
  switch (message.kind()) {
    case MessageKind::kHello: {
      microproc::ZygoteHello hello{};
      if (!message.Get(MessageKind::kHello, &hello) || !hello_ || !hello_->isWaiting()) break;
      if (hello.ok == 1) {
        version_ = Text(hello.module_version, sizeof hello.module_version);
        hello_->fulfill(absl::OkStatus());
      } else {
        // The zygote's words (it has run module code): labelled as such, never as the host's.
        std::string said = Text(hello.message, sizeof hello.message);
        const std::string who = absl::StrCat("module '", module_, "'");
        if (!absl::StartsWith(said, who)) said = absl::StrCat(who, ": zygote: ", said);
        hello_->fulfill(absl::FailedPreconditionError(said));
      }
      return;
    }
    case MessageKind::kSpawnReply:
      OnSpawnReply(message);
      return;
    case MessageKind::kFault: {
      microproc::FaultReport fault{};
      if (message.Get(MessageKind::kFault, &fault) && fault.syscall_nr >= 0 &&
          fault.syscall_nr < 4096) {
        fault_syscall_ = fault.syscall_nr;
      }
      return;
    }
    default:
      break;
  }
  LogEvent(LogLevel::kWarn, "zygote_protocol",
           {{"module", module_},
            {"generation", absl::StrCat(number_)},
            {"what", absl::StrCat("ignored a malformed message of ", message.bytes.size(), " bytes")}});
}

void Generation::OnSpawnReply(const HelperMessage& message) {
  microproc::SpawnReply reply{};
  if (!message.Get(MessageKind::kSpawnReply, &reply)) return;
  auto it = spawns_.find(reply.worker_id);
  if (it == spawns_.end()) return;  // not asked, or given up on
  auto fulfiller = std::move(it->second);
  spawns_.erase(it);
  const std::string who = absl::StrCat("zygote of module '", module_, "' gen ", number_);
  if (reply.pid <= 0) {
    fulfiller->fulfill(ErrnoStatus(absl::StrCat(who, ": clone"), reply.error));
    return;
  }
  if (message.fds.size() != 1) {
    fulfiller->fulfill(absl::DataLossError(absl::StrCat(who, " sent no pidfd with pid ", reply.pid)));
    return;
  }
  // Trust nothing the zygote says: the pidfd names one process for sure, and that process must
  // be a child of this generation's init, known to init by the pid the zygote gave.
  std::vector<pid_t> pids = PidfdNamespacePids(message.fds[0].get());
  if (pids.empty()) {
    fulfiller->fulfill(absl::AbortedError(absl::StrCat(who, ": microprocess ", reply.pid,
                                                       " ended before it could serve")));
    return;
  }
  const pid_t host_pid = pids[0];
  const pid_t init_view = pids.size() >= 2 ? pids[1] : pids[0];
  if (init_view != reply.pid || ParentOf(host_pid) != init_.pid) {
    fulfiller->fulfill(absl::DataLossError(absl::StrCat(
        who, " reported pid ", reply.pid, ", which is not a microprocess it made")));
    return;
  }
  // It was alive just now, so an exit already reported under its pid was another process's.
  early_exits_.erase(init_view);
  SpawnedWorker worker;
  worker.pid = host_pid;
  worker.helper_pid = reply.pid;
  worker.pidfd = UniqueFd(::fcntl(message.fds[0].get(), F_DUPFD_CLOEXEC, 0));
  if (!worker.pidfd) {
    fulfiller->fulfill(ErrnoStatus("dup(pidfd)", errno));
    return;
  }
  fulfiller->fulfill(std::move(worker));
}

kj::Promise<void> Generation::ReadInit() {
  return init_channel_.Receive().then([this](absl::StatusOr<HelperMessage> m) -> kj::Promise<void> {
    if (!m.ok() || m->end) {
      InitGone();
      return kj::READY_NOW;
    }
    OnInitMessage(*std::move(m));
    return ReadInit();
  });
}

void Generation::OnInitMessage(HelperMessage message) {
  microproc::InitReport report{};
  const MessageKind kind = message.kind();
  if (!message.Get(kind, &report)) return;  // init is ours: a bad size is a build mismatch
  if (kind == MessageKind::kStageStarted) {
    if (message.fds.size() == 1) {
      std::vector<pid_t> pids = PidfdNamespacePids(message.fds[0].get());
      if (!pids.empty()) stage_pid_ = pids[0];
    }
    stage_helper_pid_ = report.pid;
    return;
  }
  if (kind == MessageKind::kInitNote) {
    LogEvent(LogLevel::kWarn, "zygote_note",
             {{"module", module_},
              {"generation", absl::StrCat(number_)},
              {"note", Text(report.note, sizeof report.note)}});
    return;
  }
  if (kind != MessageKind::kChildExited) return;
  const ExitInfo exit = ExitFromWaitStatus(report.code, report.status);
  if (report.pid == stage_helper_pid_) {
    std::string how = exit.Describe();
    if (exit.signal == 0 && exit.exit_code == microproc::kExitForbiddenSyscall &&
        fault_syscall_ >= 0) {
      how = absl::StrCat("called forbidden syscall ", microproc::SyscallName(fault_syscall_),
                         " (seccomp)");
    }
    stage_pid_ = 0;
    ZygoteGone(how);
    return;
  }
  if (auto it = exit_waiters_.find(report.pid); it != exit_waiters_.end()) {
    auto waiter = std::move(it->second);
    exit_waiters_.erase(it);
    waiter->fulfill(ExitInfo(exit));
    return;
  }
  early_exits_[report.pid] = exit;
  early_order_.push_back(report.pid);
  while (early_order_.size() > kMaxEarlyExits) {
    early_exits_.erase(early_order_.front());
    early_order_.pop_front();
  }
}

void Generation::ZygoteGone(const std::string& why) {
  if (stage_end_.empty()) {
    stage_end_ = why;
    if (!retired_ && (hello_.get() == nullptr || !hello_->isWaiting())) {
      LogEvent(LogLevel::kWarn, "zygote_exit",
               {{"module", module_}, {"generation", absl::StrCat(number_)}, {"cause", why}});
    }
  }
  const std::string who = absl::StrCat("module '", module_, "': zygote");
  if (hello_ && hello_->isWaiting()) {
    hello_->fulfill(absl::FailedPreconditionError(
        absl::StrCat(who, " ", stage_end_, " before it was ready")));
  }
  auto pending = std::move(spawns_);
  spawns_.clear();
  for (auto& [id, fulfiller] : pending) {
    fulfiller->fulfill(absl::UnavailableError(absl::StrCat(who, " of gen ", number_, " ", stage_end_)));
  }
}

void Generation::InitGone() {
  if (init_gone_) return;
  init_gone_ = true;
  ZygoteGone("ended with the generation's init");
  auto waiters = std::move(exit_waiters_);
  exit_waiters_.clear();
  for (auto& [pid, waiter] : waiters) waiter->fulfill(ExitInfo{-1, SIGKILL});
}

kj::Promise<absl::StatusOr<SpawnedWorker>> Generation::Spawn(uint64_t worker_id, int ring_fd,
                                                             int doorbell_fd, int stderr_fd,
                                                             uint64_t address_space_bytes,
                                                             uint32_t spin_iterations) {
  using Result = absl::StatusOr<SpawnedWorker>;
  if (!stage_end_.empty()) {
    return Result(absl::UnavailableError(
        absl::StrCat("zygote of module '", module_, "' gen ", number_, " ", stage_end_)));
  }
  microproc::SpawnRequest req{};
  req.kind = MessageKind::kSpawnRequest;
  req.worker_id = worker_id;
  req.address_space_bytes = address_space_bytes;
  req.spin_iterations = spin_iterations;
  const int fds[3] = {ring_fd, doorbell_fd, stderr_fd};
  if (auto s = control_.Send(std::as_bytes(std::span(&req, 1)), fds); !s.ok()) {
    return Result(absl::UnavailableError(absl::StrCat("zygote of module '", module_,
                                                      "' unreachable: ", s.message())));
  }
  auto paf = kj::newPromiseAndFulfiller<Result>();
  spawns_[worker_id] = kj::mv(paf.fulfiller);
  return paf.promise.exclusiveJoin(
      env_.timer.afterDelay(kSpawnTimeoutMs * kj::MILLISECONDS).then([this, worker_id]() {
        spawns_.erase(worker_id);
        return Result(absl::DeadlineExceededError(
            absl::StrCat("zygote of module '", module_, "' gen ", number_,
                         " did not answer a spawn request within ", kSpawnTimeoutMs, " ms")));
      }));
}

kj::Promise<ExitInfo> Generation::WhenExited(pid_t helper_pid) {
  if (auto it = early_exits_.find(helper_pid); it != early_exits_.end()) {
    ExitInfo e = it->second;
    early_exits_.erase(it);
    return e;
  }
  if (init_gone_) return ExitInfo{-1, SIGKILL};
  auto paf = kj::newPromiseAndFulfiller<ExitInfo>();
  exit_waiters_[helper_pid] = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

}  // namespace mp::host
