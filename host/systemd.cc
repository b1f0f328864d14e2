#include "host/systemd.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "host/log.h"

namespace mp::host {
namespace {

constexpr int kListenFdsStart = 3;  // SD_LISTEN_FDS_START

std::string EnvOr(const char* name) {
  const char* v = ::getenv(name);
  return v ? v : "";
}

int SocketOption(int fd, int level, int option) {
  int value = 0;
  socklen_t length = sizeof value;
  if (::getsockopt(fd, level, option, &value, &length) != 0) return -1;
  return value;
}

}  // namespace

absl::StatusOr<ActivatedSockets> TakeActivatedSockets() {
  const std::string pid = EnvOr("LISTEN_PID"), fds = EnvOr("LISTEN_FDS"),
                    names = EnvOr("LISTEN_FDNAMES");
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  ActivatedSockets out;
  if (pid.empty() && fds.empty()) return out;
  int64_t listen_pid = 0, count = 0;
  if (!absl::SimpleAtoi(pid, &listen_pid) || listen_pid <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("LISTEN_PID='", pid, "' is not a pid"));
  }
  if (listen_pid != ::getpid()) return out;  // meant for another process
  if (!absl::SimpleAtoi(fds, &count) || count < 0 || count > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LISTEN_FDS='", fds, "': mphost takes at most two sockets (http and control)"));
  }
  std::vector<std::string> name_list;
  if (!names.empty()) name_list = absl::StrSplit(names, ':');
  for (int i = 0; i < count; ++i) {
    const int fd = kListenFdsStart + i;
    UniqueFd owned(fd);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    const std::string label = absl::StrCat("LISTEN_FDS descriptor ", fd);
    if (SocketOption(fd, SOL_SOCKET, SO_TYPE) != SOCK_STREAM ||
        SocketOption(fd, SOL_SOCKET, SO_ACCEPTCONN) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(label, " is not a listening stream socket"));
    }
    const int domain = SocketOption(fd, SOL_SOCKET, SO_DOMAIN);
    std::string name = i < static_cast<int>(name_list.size()) ? name_list[i] : "";
    if (name.empty() || name == "unknown") {  // systemd's name for an unnamed socket
      name = domain == AF_UNIX ? "control" : "http";
    }
    UniqueFd* slot = name == "http" ? &out.http : name == "control" ? &out.control : nullptr;
    if (slot == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          label, " is named '", name, "' in LISTEN_FDNAMES; mphost knows 'http' and 'control'"));
    }
    if (*slot) return absl::InvalidArgumentError(absl::StrCat("two '", name, "' sockets passed"));
    if ((name == "http") != (domain == AF_INET || domain == AF_INET6)) {
      return absl::InvalidArgumentError(absl::StrCat(
          label, " ('", name, "') is ", domain == AF_UNIX ? "a Unix" : "an IP",
          " socket; http must be TCP and control a Unix socket"));
    }
    const int flags = ::fcntl(fd, F_GETFL);
    ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    *slot = std::move(owned);
  }
  return out;
}

Notifier::Notifier() : path_(EnvOr("NOTIFY_SOCKET")) {
  ::unsetenv("NOTIFY_SOCKET");
  if (path_.empty()) return;
  if (path_[0] != '/' && path_[0] != '@') {
    LogEvent(LogLevel::kWarn, "sd_notify_disabled",
             {{"notify_socket", path_}, {"why", "neither a path nor an abstract name"}});
    path_.clear();
    return;
  }
  fd_.reset(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
}

void Notifier::Notify(absl::string_view state) {
  if (path_.empty()) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path_.size() >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path_.data(), path_.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  const socklen_t length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
  if (::sendto(fd_.get(), state.data(), state.size(), MSG_NOSIGNAL,
               reinterpret_cast<sockaddr*>(&addr), length) < 0 &&
      !warned_) {
    warned_ = true;
    LogEvent(LogLevel::kWarn, "sd_notify_failed", {{"notify_socket", path_}, {"error", strerror(errno)}});
  }
}

}  // namespace mp::host
