#include "microproc/fd_passing.h"

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

#include "shm/sys.h"

namespace mp::microproc {

absl::Status SendWithFds(int sock, std::span<const std::byte> bytes, std::span<const int> fds) {
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  if (fds.size() > 8) return absl::InvalidArgumentError("SendWithFds: more than 8 fds");
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n = RetryEintr([&] { return ::sendmsg(sock, &msg, MSG_NOSIGNAL); });
  if (n < 0) return ErrnoStatus("sendmsg", errno);
  if (static_cast<size_t>(n) != bytes.size()) return absl::DataLossError("sendmsg: short write");
  return absl::OkStatus();
}

absl::StatusOr<size_t> ReceiveWithFds(int sock, std::span<std::byte> buffer,
                                      std::vector<UniqueFd>* fds, size_t max_fds,
                                      int timeout_ms) {
  pollfd p{sock, POLLIN, 0};
  int r = RetryEintr([&] { return ::poll(&p, 1, timeout_ms); });
  if (r < 0) return ErrnoStatus("poll", errno);
  if (r == 0) return absl::DeadlineExceededError("no message within the time limit");
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = RetryEintr([&] { return ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); });
  if (n < 0) return ErrnoStatus("recvmsg", errno);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (fds != nullptr && fds->size() < max_fds) {
        fds->emplace_back(fd);
      } else {
        ::close(fd);  // more than the caller asked for: never leak them
      }
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    return absl::DataLossError("recvmsg: message truncated");
  }
  return static_cast<size_t>(n);
}

}  // namespace mp::microproc
