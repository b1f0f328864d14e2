#include "microproc/namespaces.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "shm/sys.h"
#include "shm/unique_fd.h"

namespace mp::microproc {
namespace {

bool WriteAll(int fd, const std::string& text) {
  return ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

}  // namespace

std::string EnterZygoteNamespaces() {
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  const uid_t outside_uid = uid == 0 ? 65534 : uid;
  const gid_t outside_gid = uid == 0 ? 65534 : gid;
  // Mapping to another uid must be written by a process still in the parent namespace: a
  // child forked now writes our maps once we have unshared (as newuidmap(1) does).
  int go[2], done[2];
  if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(done, O_CLOEXEC) != 0) {
    return absl::StrCat("user namespace: pipe2: ", strerror(errno));
  }
  // Supplementary groups cannot be changed once setgroups is denied: drop them now (root may).
  if (uid == 0 && ::setgroups(0, nullptr) != 0) {
    return absl::StrCat("user namespace: setgroups: ", strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t writer = ::fork();
  if (writer < 0) return absl::StrCat("user namespace: fork: ", strerror(errno));
  if (writer == 0) {
    char byte;
    ::close(go[1]);
    ::close(done[0]);
    if (::read(go[0], &byte, 1) != 1) _exit(1);
    auto write_file = [&](const char* name, const std::string& text) {
      UniqueFd fd(::open(absl::StrCat("/proc/", parent, "/", name).c_str(), O_WRONLY | O_CLOEXEC));
      return fd && WriteAll(fd.get(), text);
    };
    const bool ok = write_file("setgroups", "deny") &&
                    write_file("uid_map", absl::StrCat("0 ", outside_uid, " 1")) &&
                    write_file("gid_map", absl::StrCat("0 ", outside_gid, " 1"));
    const char result = ok ? 1 : 0;
    ssize_t unused = ::write(done[1], &result, 1);
    (void)unused;
    _exit(ok ? 0 : 1);
  }
  ::close(go[0]);
  ::close(done[1]);
  UniqueFd go_write(go[1]), done_read(done[0]);
  const bool unshared = ::unshare(CLONE_NEWUSER) == 0;
  const int unshare_errno = errno;
  char byte = unshared ? 1 : 0;
  ssize_t unused = ::write(go_write.get(), &byte, 1);
  (void)unused;
  go_write.reset();
  char result = 0;
  const bool mapped = unshared && ::read(done_read.get(), &result, 1) == 1 && result == 1;
  ::waitpid(writer, nullptr, 0);
  if (!unshared) {
    return absl::StrCat("user namespace unavailable: unshare(CLONE_NEWUSER): ",
                        strerror(unshare_errno));
  }
  if (!mapped) return "user namespace: writing uid/gid maps failed";
  // Become the namespace's root: outside, that is the unprivileged uid of the map.
  if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) {
    return absl::StrCat("user namespace: setresuid(0): ", strerror(errno));
  }
  if (::unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWNS) != 0) {
    return absl::StrCat("net/ipc/mount namespaces: unshare: ", strerror(errno));
  }
  // Mount events of the host never reach us, and ours never reach it.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return absl::StrCat("mount namespace: making / private: ", strerror(errno));
  }
  return "";
}

absl::Status RestrictFilesystemWithLandlock() {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0,
                             LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 1) return absl::UnimplementedError("landlock: not supported by this kernel");
  landlock_ruleset_attr attr{};
  attr.handled_access_fs =
      LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE |
      LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |
      LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
      LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
      LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM;
#ifdef LANDLOCK_ACCESS_FS_REFER
  if (abi >= 2) attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
#endif
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
  if (abi >= 3) attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
  UniqueFd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0)));
  if (!ruleset) return ErrnoStatus("landlock_create_ruleset", errno);
  if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) {
    return ErrnoStatus("landlock_restrict_self", errno);
  }
  return absl::OkStatus();
}

}  // namespace mp::microproc
