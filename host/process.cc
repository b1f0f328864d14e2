#include "host/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

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

ExitInfo ExitFromWaitStatus(int code, int status) {
  ExitInfo e;
  if (code == CLD_EXITED) {
    e.exit_code = status;
  } else {
    e.signal = status;
  }
  return e;
}

std::optional<ExitInfo> TryReap(int pidfd) {
  siginfo_t info{};
  int r = RetryEintr([&] { return ::waitid(P_PIDFD, pidfd, &info, WEXITED | WNOHANG); });
  if (r != 0 || info.si_pid == 0) {
    if (r != 0 && errno == ECHILD) return ExitInfo{-1, 0};  // already reaped
    return std::nullopt;
  }
  return ExitFromWaitStatus(info.si_code, info.si_status);
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

bool AwaitExitWithin(int pidfd, int timeout_ms) {
  pollfd p{pidfd, POLLIN, 0};
  if (RetryEintr([&] { return ::poll(&p, 1, timeout_ms); }) == 1) return true;
  SignalChild(pidfd, SIGKILL);
  p.revents = 0;
  return RetryEintr([&] { return ::poll(&p, 1, 5000); }) == 1;
}

std::vector<pid_t> PidfdNamespacePids(int pidfd) {
  std::ifstream info(absl::StrCat("/proc/self/fdinfo/", pidfd));
  std::string line;
  std::vector<pid_t> pids;
  while (std::getline(info, line)) {
    if (line.rfind("NSpid:", 0) != 0) continue;
    std::istringstream fields(line.substr(6));
    long pid;
    while (fields >> pid) pids.push_back(static_cast<pid_t>(pid));
  }
  if (!pids.empty() && pids[0] <= 0) pids.clear();  // -1: the process has exited
  return pids;
}

pid_t ParentOf(pid_t pid) {
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');
  if (close == std::string::npos) return -1;
  char state;
  int ppid = 0;
  if (std::sscanf(text.c_str() + close + 1, " %c %d", &state, &ppid) != 2) return -1;
  return ppid;
}

}  // namespace mp::host
