#include "host/generation.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "host/log.h"
#include "microproc/fd_passing.h"
#include "microproc/zygote_protocol.h"
#include "mp/module.h"
#include "shm/sys.h"

namespace mp::host {
namespace {

using microproc::kHelperHeapFd;
using microproc::kHelperSocketFd;

// Reads the builder's one-line result, waiting at most `timeout_ms` in total; sets
// `*timed_out` if the time ran out first.
std::string ReadResultLine(int fd, int timeout_ms, bool* timed_out) {
  std::string line;
  char buf[512];
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (line.size() < 4096 && line.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || RetryEintr([&] { return ::poll(&p, 1, static_cast<int>(left)); }) == 0) {
      *timed_out = true;
      break;
    }
    if ((p.revents & POLLIN) == 0 && (p.revents & (POLLHUP | POLLERR)) != 0) break;
    ssize_t n = RetryEintr([&] { return ::read(fd, buf, sizeof buf); });
    if (n <= 0) break;
    line.append(buf, static_cast<size_t>(n));
  }
  if (auto nl = line.find('\n'); nl != std::string::npos) line.resize(nl);
  return line;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Generation>> Generation::Create(const ModuleConfig& config,
                                                               uint64_t number,
                                                               const HelperPaths& helpers,
                                                               int build_timeout_ms) {
  auto heap = BuildHeap(config, number, helpers, build_timeout_ms);
  if (!heap.ok()) return heap.status();
  return Start(config, *std::move(heap), helpers, build_timeout_ms);
}

absl::StatusOr<BuiltHeap> BuildHeap(const ModuleConfig& config, uint64_t number,
                                    const HelperPaths& helpers, int build_timeout_ms) {
  const std::string who = absl::StrCat("module '", config.name, "'");
  auto segment = shm::CreateHeapSegment(config.name, number, config.max_heap_bytes);
  if (!segment.ok()) return segment.status();

  // 1. Build, in a process of its own.
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  UniqueFd result_read(pipefd[0]), result_write(pipefd[1]);
  std::vector<std::string> args = {"--module", config.name, "--plugin", config.plugin};
  for (const auto& [k, v] : config.options) {
    args.push_back("--option");
    args.push_back(absl::StrCat(k, "=", v));
  }
  // Data files are opened here and handed over read-only: the builder opens nothing itself.
  std::vector<UniqueFd> data_fds;
  std::vector<std::pair<int, int>> fd_map = {{result_write.get(), kHelperSocketFd},
                                             {segment->fd(), kHelperHeapFd}};
  for (const auto& [name, path] : config.data_files) {
    if (fd_map.size() >= 12) {
      return absl::InvalidArgumentError(absl::StrCat(who, ": at most 10 data files"));
    }
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return absl::NotFoundError(absl::StrCat(who, ": data file '", name, "' (", path, "): ",
                                              strerror(errno)));
    }
    data_fds.emplace_back(fd);
    const int target = kHelperHeapFd + static_cast<int>(data_fds.size());
    fd_map.emplace_back(fd, target);
    args.push_back("--data");
    args.push_back(absl::StrCat(name, "=", target));
  }
  auto builder = SpawnHelper(helpers.builder, args, fd_map);
  data_fds.clear();
  if (!builder.ok()) return builder.status();
  result_write.reset();
  bool timed_out = false;
  std::string line = ReadResultLine(result_read.get(), build_timeout_ms, &timed_out);
  ExitInfo exit = ReapWithin(builder->pidfd.get(), timed_out ? 0 : build_timeout_ms);
  if (absl::StartsWith(line, "invalid ")) return absl::InvalidArgumentError(line.substr(8));
  if (absl::StartsWith(line, "error ")) return absl::AbortedError(line.substr(6));
  if (timed_out) {
    return absl::DeadlineExceededError(
        absl::StrCat(who, ": build did not finish within ", build_timeout_ms,
                     " ms (buildTimeoutMs); the builder was killed"));
  }
  if (!absl::StartsWith(line, "ok") || exit.signal != 0 || exit.exit_code != 0) {
    return absl::AbortedError(
        absl::StrCat(who, ": build process ", exit.Describe(), " without reporting a result"));
  }
  std::string version(absl::StripPrefix(line, "ok "));

  // 2. Validate, checksum and seal.
  auto info = shm::FinishHeap(*segment, config.name, version, MP_MODULE_ABI_VERSION, number);
  if (!info.ok()) return absl::AbortedError(absl::StrCat(who, ": ", info.status().message()));
  return BuiltHeap{*std::move(segment), *std::move(info)};
}

absl::StatusOr<std::unique_ptr<Generation>> Generation::Start(const ModuleConfig& config,
                                                              BuiltHeap heap,
                                                              const HelperPaths& helpers,
                                                              int timeout_ms) {
  const std::string who = absl::StrCat("module '", config.name, "'");
  auto segment = &heap.segment;
  // The zygote.
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus("socketpair", errno);
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);
  auto zygote = SpawnHelper(helpers.zygote,
                            {"--module", config.name, "--plugin", config.plugin, "--heap-mode",
                             config.heap_copy_on_write ? "cow" : "readonly", "--sandbox",
                             config.sandbox.empty() ? "none" : config.sandbox},
                            {{theirs.get(), kHelperSocketFd}, {segment->fd(), kHelperHeapFd}});
  if (!zygote.ok()) return zygote.status();
  theirs.reset();
  microproc::ZygoteHello hello{};
  auto n = microproc::ReceiveWithFds(ours.get(), std::as_writable_bytes(std::span(&hello, 1)),
                                     nullptr, 0, timeout_ms);
  if (!n.ok() || *n != sizeof hello || hello.ok != 1) {
    std::string reason;
    if (n.ok() && *n == sizeof hello) {
      reason = std::string(hello.message, strnlen(hello.message, sizeof hello.message));
    } else {
      ExitInfo e = ReapWithin(zygote->pidfd.get(), 1000);
      reason = absl::StrCat(who, ": zygote ", e.Describe(), " before it was ready");
    }
    SignalChild(zygote->pidfd.get(), SIGKILL);
    ReapWithin(zygote->pidfd.get(), 1000);
    return absl::FailedPreconditionError(reason);
  }
  const std::string note(hello.message, strnlen(hello.message, sizeof hello.message));
  if (note != "ready") LogEvent("zygote_note", {{"module", config.name}, {"note", note}});
  const uint64_t number = heap.info.generation;
  return std::unique_ptr<Generation>(new Generation(number, std::move(heap.segment),
                                                    std::move(heap.info), *std::move(zygote),
                                                    std::move(ours)));
}

Generation::~Generation() {
  control_.reset();  // the zygote exits at end of stream
  if (zygote_.pidfd) ReapWithin(zygote_.pidfd.get(), 2000);
}

absl::StatusOr<pid_t> Generation::Spawn(uint64_t worker_id, int ring_fd, int doorbell_fd,
                                        uint64_t address_space_bytes,
                                        uint32_t spin_iterations) {
  microproc::SpawnRequest req{worker_id, address_space_bytes, spin_iterations, 0};
  const int fds[2] = {ring_fd, doorbell_fd};
  if (auto s = microproc::SendWithFds(control_.get(), std::as_bytes(std::span(&req, 1)), fds);
      !s.ok()) {
    return absl::UnavailableError(absl::StrCat("zygote of '", heap_info_.module_name,
                                               "' unreachable: ", s.message()));
  }
  microproc::SpawnReply reply{};
  // TODO(perf): make this asynchronous on the event loop; a zygote answers in well under 1 ms.
  auto n = microproc::ReceiveWithFds(control_.get(), std::as_writable_bytes(std::span(&reply, 1)),
                                     nullptr, 0, 5000);
  if (!n.ok()) return n.status();
  if (*n != sizeof reply || reply.worker_id != worker_id) {
    return absl::DataLossError("zygote sent a malformed spawn reply");
  }
  if (reply.pid <= 0) return ErrnoStatus("zygote clone", reply.error);
  return static_cast<pid_t>(reply.pid);
}

}  // namespace mp::host
