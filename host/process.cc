#include "host/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "shm/sys.h"

namespace mp::host {

std::string ExitInfo::Describe() const {
  if (signal == 0) return absl::StrCat("exited with status ", exit_code);
  const char* abbrev = sigabbrev_np(signal);
  std::string name = abbrev ? absl::StrCat("SIG", abbrev) : absl::StrCat("signal ", signal);
  if (signal == SIGSYS) return absl::StrCat("killed by ", name, " (seccomp: forbidden syscall)");
  return absl::StrCat("killed by ", name);
}

absl::StatusOr<UniqueFd> OpenPidfd(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return ErrnoStatus(absl::StrCat("pidfd_open(", pid, ")"), errno);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return UniqueFd(fd);
}

absl::StatusOr<ChildProcess> SpawnHelper(const std::string& path,
                                         const std::vector<std::string>& args,
                                         const std::vector<std::pair<int, int>>& fds) {
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(path.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int max_to = 2;
  for (auto [from, to] : fds) max_to = std::max(max_to, to);

  pid_t pid = ::fork();
  if (pid < 0) return ErrnoStatus(absl::StrCat("fork(", path, ")"), errno);
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    int moved[16];
    const size_t n = std::min<size_t>(fds.size(), 16);
    for (size_t i = 0; i < n; ++i) moved[i] = ::fcntl(fds[i].first, F_DUPFD, max_to + 1);
    for (size_t i = 0; i < n; ++i) {
      // dup2 from a distinct fd clears FD_CLOEXEC on the target (PLATFORM.md pitfall).
      if (moved[i] < 0 || ::dup2(moved[i], fds[i].second) < 0) _exit(127);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::syscall(SYS_close_range, max_to + 1, ~0u, 0);
    ::execv(path.c_str(), argv.data());
    _exit(127);
  }
  auto pidfd = OpenPidfd(pid);
  if (!pidfd.ok()) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return pidfd.status();
  }
  return ChildProcess{pid, *std::move(pidfd)};
}

std::optional<ExitInfo> TryReap(int pidfd) {
  siginfo_t info{};
  int r = RetryEintr([&] { return ::waitid(P_PIDFD, pidfd, &info, WEXITED | WNOHANG); });
  if (r != 0 || info.si_pid == 0) {
    if (r != 0 && errno == ECHILD) return ExitInfo{-1, 0};  // already reaped
    return std::nullopt;
  }
  ExitInfo e;
  if (info.si_code == CLD_EXITED) {
    e.exit_code = info.si_status;
  } else {
    e.signal = info.si_status;
  }
  return e;
}

void SignalChild(int pidfd, int sig) { ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0); }

ExitInfo ReapWithin(int pidfd, int timeout_ms) {
  pollfd p{pidfd, POLLIN, 0};
  RetryEintr([&] { return ::poll(&p, 1, timeout_ms); });
  if (auto e = TryReap(pidfd)) return *e;
  SignalChild(pidfd, SIGKILL);
  p.revents = 0;
  RetryEintr([&] { return ::poll(&p, 1, 5000); });
  if (auto e = TryReap(pidfd)) return *e;
  return ExitInfo{-1, SIGKILL};
}

}  // namespace mp::host
