#include "host/helper_launcher.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "microproc/exit_status.h"
#include "shm/sys.h"

extern char** environ;

namespace mp::host {
namespace {

// What helpers may see of the host's environment: locale and time zone, and the sanitizer
// settings of a sanitizer build. Secrets an operator gave the host stay in the host.
bool HelperMayInherit(absl::string_view entry) {
  for (absl::string_view prefix :
       {"LANG=", "LC_", "TZ=", "ASAN_OPTIONS=", "UBSAN_OPTIONS=", "LSAN_OPTIONS=",
        "TSAN_OPTIONS="}) {
    if (absl::StartsWith(entry, prefix)) return true;
  }
  return false;
}

absl::Status WriteProcFile(pid_t pid, const char* name, const std::string& text) {
  const std::string path = absl::StrCat("/proc/", pid, "/", name);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) return ErrnoStatus(absl::StrCat("open(", path, ")"), errno);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return ErrnoStatus(absl::StrCat("write(", path, ", \"", text, "\")"), errno);
  }
  return absl::OkStatus();
}

constexpr int kNamespaceFlags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                                CLONE_NEWNS;

}  // namespace

HelperLauncher::HelperLauncher(UniqueFd builder, UniqueFd zygote, std::vector<std::string> env)
    : builder_(std::move(builder)), zygote_(std::move(zygote)), env_(std::move(env)) {
  root_ = ::geteuid() == 0;
  outside_uid_ = root_ ? 65534 : ::geteuid();
  outside_gid_ = root_ ? 65534 : ::getegid();
}

absl::StatusOr<HelperLauncher> HelperLauncher::Open(const std::string& dir) {
  auto open_helper = [&](const char* name) -> absl::StatusOr<UniqueFd> {
    const std::string path = absl::StrCat(dir, "/", name);
    UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!fd) return ErrnoStatus(absl::StrCat("helper ", path), errno);
    if (::faccessat(fd.get(), "", X_OK, AT_EMPTY_PATH | AT_EACCESS) != 0) {
      return ErrnoStatus(absl::StrCat("helper ", path, " is not executable"), errno);
    }
    return fd;
  };
  auto builder = open_helper("mp-builder");
  if (!builder.ok()) return builder.status();
  auto zygote = open_helper("mp-zygote");
  if (!zygote.ok()) return zygote.status();
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (HelperMayInherit(*e)) env.emplace_back(*e);
  }
  return HelperLauncher(*std::move(builder), *std::move(zygote), std::move(env));
}

absl::StatusOr<ChildProcess> HelperLauncher::Launch(const HelperLaunch& launch) const {
  const int exe = launch.kind == HelperKind::kBuilder ? builder_.get() : zygote_.get();
  // Everything the child uses is prepared here: between clone and exec it is a copy of a
  // (possibly multithreaded) host, and makes raw syscalls only.
  std::vector<char*> argv, envp;
  argv.push_back(const_cast<char*>(launch.title.c_str()));
  // Room for the titles the helper's processes give themselves ("mphost: init zygote ...").
  static const std::string kTitleRoom(48, ' ');
  argv.push_back(const_cast<char*>(kTitleRoom.c_str()));
  argv.push_back(nullptr);
  for (const std::string& e : env_) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int top = 2;
  for (auto [from, to] : launch.fds) top = std::max(top, to);
  if (launch.fds.size() > 16) return absl::InvalidArgumentError("helper: more than 16 fds");
  int sync[2], ready[2];
  if (::pipe2(sync, O_CLOEXEC) != 0 || ::pipe2(ready, O_CLOEXEC) != 0) {
    return ErrnoStatus("pipe2", errno);
  }
  UniqueFd sync_read(sync[0]), sync_write(sync[1]), ready_read(ready[0]), ready_write(ready[1]);
  const bool root = root_;
  const int flags = SIGCHLD | (launch.namespaces ? kNamespaceFlags : 0);

  const long pid = ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, 0);
  if (pid < 0) {
    const int err = errno;
    if (launch.namespaces) {
      return ErrnoStatus(
          "cannot start a helper in namespaces of its own: clone(CLONE_NEWUSER|CLONE_NEWPID|"
          "CLONE_NEWNET|CLONE_NEWIPC|CLONE_NEWNS); if unprivileged user namespaces are disabled "
          "here (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone), enable them "
          "or set \"sandbox\": {\"namespaces\": false} (docs/security.md)",
          err);
    }
    return ErrnoStatus("clone (helper)", err);
  }
  if (pid == 0) {
    // The helper-to-be. Wait until the host has written our uid and gid maps.
    ::syscall(SYS_close, sync_write.get());
    ::syscall(SYS_close, ready_read.get());
    // A copy of a non-dumpable host is non-dumpable, and its /proc files belong to root: an
    // unprivileged host could not write our maps. Dumpable until exec (which replaces this
    // copy of the host's memory), in a pid namespace no module process can see into.
    if (launch.namespaces && !root) ::syscall(SYS_prctl, PR_SET_DUMPABLE, 1, 0, 0, 0);
    ::syscall(SYS_write, ready_write.get(), "r", 1);
    char go = 0;
    if (::syscall(SYS_read, sync_read.get(), &go, 1) != 1) ::syscall(SYS_exit_group, microproc::kExitLostHost);
    if (launch.namespaces) {
      // Root of the new user namespace, with no supplementary groups left from the host
      // (only a root host may drop them; an unprivileged host's were denied with setgroups).
      if (root && ::syscall(SYS_setgroups, 0, nullptr) != 0) ::syscall(SYS_exit_group, microproc::kExitSetupFailed);
      if (::syscall(SYS_setresgid, 0, 0, 0) != 0 || ::syscall(SYS_setresuid, 0, 0, 0) != 0) {
        ::syscall(SYS_exit_group, microproc::kExitSetupFailed);
      }
    }
    // After the uid change, which clears it: the helper dies with the host's loop thread.
    ::syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // Every descriptor we pass, and the executable, first to numbers above all the targets:
    // placing one target must not overwrite another's source.
    int moved[16];
    const size_t n = launch.fds.size();
    for (size_t i = 0; i < n; ++i) {
      moved[i] = static_cast<int>(::syscall(SYS_fcntl, launch.fds[i].first, F_DUPFD, top + 2));
      if (moved[i] < 0) ::syscall(SYS_exit_group, microproc::kExitSetupFailed);
    }
    const int exe_high = static_cast<int>(::syscall(SYS_fcntl, exe, F_DUPFD, top + 2));
    if (exe_high < 0) ::syscall(SYS_exit_group, microproc::kExitSetupFailed);
    for (size_t i = 0; i < n; ++i) {
      // dup2 from a distinct fd clears FD_CLOEXEC on the target (PLATFORM.md pitfall).
      if (::syscall(SYS_dup2, moved[i], launch.fds[i].second) < 0) ::syscall(SYS_exit_group, microproc::kExitSetupFailed);
    }
    // Every other descriptor of the host closes here; the executable's at exec.
    for (int fd = 0; fd <= top + 1; ++fd) {
      bool keep = false;
      for (auto [from, to] : launch.fds) keep = keep || fd == to;
      if (!keep) ::syscall(SYS_close, fd);
    }
    const int exe_fd = top + 1;
    if (::syscall(SYS_dup2, exe_high, exe_fd) < 0) ::syscall(SYS_exit_group, microproc::kExitSetupFailed);
    ::syscall(SYS_fcntl, exe_fd, F_SETFD, FD_CLOEXEC);
    ::syscall(SYS_close_range, top + 2, ~0u, 0);
    if (::syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY) != 0) {  // lowest free: 0
      ::syscall(SYS_exit_group, microproc::kExitSetupFailed);
    }
    ::syscall(SYS_execveat, exe_fd, "", argv.data(), envp.data(), AT_EMPTY_PATH);
    ::syscall(SYS_exit_group, microproc::kExitExecFailed);
  }
  sync_read.reset();
  ready_write.reset();
  char ready_byte = 0;
  RetryEintr([&] { return ::read(ready_read.get(), &ready_byte, 1); });
  auto kill_child = [&](absl::Status why) {
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return why;
  };
  if (launch.namespaces) {
    // As newuidmap(1) does: the parent writes the child's maps. An unprivileged host must deny
    // setgroups before it may map its gid.
    absl::Status s = root_ ? absl::OkStatus() : WriteProcFile(pid, "setgroups", "deny");
    if (s.ok()) s = WriteProcFile(pid, "uid_map", absl::StrCat("0 ", outside_uid_, " 1\n"));
    if (s.ok()) s = WriteProcFile(pid, "gid_map", absl::StrCat("0 ", outside_gid_, " 1\n"));
    if (!s.ok()) {
      return kill_child(absl::Status(s.code(), absl::StrCat("mapping the helper's user namespace: ",
                                                            s.message())));
    }
  }
  if (::write(sync_write.get(), "g", 1) != 1) return kill_child(ErrnoStatus("helper sync", errno));
  auto pidfd = OpenPidfd(static_cast<pid_t>(pid));
  if (!pidfd.ok()) return kill_child(pidfd.status());
  return ChildProcess{static_cast<pid_t>(pid), *std::move(pidfd)};
}

}  // namespace mp::host
