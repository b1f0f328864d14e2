#include "microproc/helper_init.h"

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "microproc/helper_protocol.h"
#include "microproc/sandbox.h"

namespace mp::microproc {
namespace {

void Send(const InitReport& report, int fd = -1) {
  iovec iov{const_cast<InitReport*>(&report), sizeof report};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  ssize_t n;
  do {
    n = ::sendmsg(kHelperInitFd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) _exit(kExitLostHost);  // the supervisor is gone: so is everything here
}

void Note(const char* what, int err) {
  InitReport r{};
  r.kind = MessageKind::kInitNote;
  snprintf(r.note, sizeof r.note, "%s: %s", what, strerror(err));
  Send(r);
}

// A /proc of the helper's own pid namespace: it shows only the helper's processes, and
// /proc/self/fd (how the stage opens its plugin) names them. The host's /proc stays hidden
// beneath it.
void MountOwnProc() {
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    Note("mount namespace: making / private", errno);
    return;
  }
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    Note("mounting a /proc of the helper's pid namespace (the host's stays mounted)", errno);
  }
}

}  // namespace

void RunHelperInit(absl::FunctionRef<int()> stage, const HelperInitOptions& options) {
  // Module code runs beside init in these namespaces: it may neither trace init nor read its
  // memory (non-dumpable), nor signal it (pid 1 ignores what it has no handler for; Landlock
  // scopes signals where the kernel can).
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (::getpid() == 1) MountOwnProc();

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::sigprocmask(SIG_BLOCK, &chld, nullptr);
  const int exits = ::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (exits < 0) _exit(kExitSetupFailed);

  const pid_t stage_pid = ::fork();
  if (stage_pid < 0) _exit(kExitSetupFailed);
  if (stage_pid == 0) {
    ::close(exits);
    ::close(kHelperInitFd);
    ::sigprocmask(SIG_UNBLOCK, &chld, nullptr);
    _exit(stage());
  }
  // Init keeps only its report socket: the stage alone holds the control socket, the heap and
  // the plugin, so that the supervisor sees end of stream when the stage ends.
  if (!CloseFdsExcept({kHelperInitFd, exits}).ok()) _exit(kExitSetupFailed);
  // Init needs no capability from here on (the stage took what it needs when it was forked).
  if (!DropCapabilities(/*keep_sys_admin=*/false).ok()) _exit(kExitSetupFailed);
  {
    InitReport started{};
    started.kind = MessageKind::kStageStarted;
    started.pid = stage_pid;
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, stage_pid, 0));
    Send(started, pidfd);
    if (pidfd >= 0) ::close(pidfd);
  }
  for (;;) {
    pollfd p[2] = {{kHelperInitFd, POLLIN | POLLRDHUP, 0}, {exits, POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      _exit(kExitSetupFailed);
    }
    if ((p[0].revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0) _exit(kExitOk);
    if ((p[0].revents & POLLIN) != 0) {
      char discard[64];
      if (::recv(kHelperInitFd, discard, sizeof discard, MSG_DONTWAIT) == 0) _exit(kExitOk);
    }
    if ((p[1].revents & POLLIN) == 0) continue;
    signalfd_siginfo info;
    while (::read(exits, &info, sizeof info) == sizeof info) {
    }
    for (;;) {
      siginfo_t child{};
      if (::waitid(P_ALL, 0, &child, WEXITED | WNOHANG) != 0 || child.si_pid == 0) break;
      InitReport r{};
      r.kind = MessageKind::kChildExited;
      r.pid = child.si_pid;
      r.code = child.si_code;
      r.status = child.si_status;
      Send(r);
      if (child.si_pid == stage_pid && options.exit_with_stage) {
        _exit(child.si_code == CLD_EXITED ? child.si_status : 128 + child.si_status);
      }
    }
  }
}

}  // namespace mp::microproc
