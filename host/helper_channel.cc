#include "host/helper_channel.h"

#include <sys/socket.h>

#include "shm/sys.h"

namespace mp::host {

microproc::MessageKind HelperMessage::kind() const {
  uint32_t k = 0;
  if (bytes.size() >= sizeof k) std::memcpy(&k, bytes.data(), sizeof k);
  return static_cast<microproc::MessageKind>(k);
}

HelperChannel::HelperChannel(kj::UnixEventPort& events, UniqueFd socket)
    : socket_(std::move(socket)),
      observer_(events, socket_.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ) {}

kj::Promise<absl::StatusOr<HelperMessage>> HelperChannel::Receive() {
  HelperMessage message;
  message.bytes.resize(microproc::kMaxHelperMessageBytes);
  iovec iov{message.bytes.data(), message.bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = RetryEintr(
      [&] { return ::recvmsg(socket_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC); });
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    // Edge-triggered: read until EAGAIN, then wait for the next edge.
    return observer_.whenBecomesReadable().then([this]() { return Receive(); });
  }
  if (n < 0) {
    if (errno == ECONNRESET) {
      message.end = true;
      message.bytes.clear();
      return absl::StatusOr<HelperMessage>(std::move(message));
    }
    return absl::StatusOr<HelperMessage>(ErrnoStatus("recvmsg (helper)", errno));
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      message.fds.emplace_back(fd);  // owned at once, so none can leak
    }
  }
  message.end = n == 0;
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    message.bytes.clear();  // a truncated message matches no kind: the caller refuses it
  } else {
    message.bytes.resize(static_cast<size_t>(n));
  }
  return absl::StatusOr<HelperMessage>(std::move(message));
}

absl::Status HelperChannel::Send(std::span<const std::byte> bytes, std::span<const int> fds) {
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  if (fds.size() > 4) return absl::InvalidArgumentError("HelperChannel::Send: more than 4 fds");
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  const ssize_t n =
      RetryEintr([&] { return ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT); });
  if (n < 0) return ErrnoStatus("sendmsg (helper)", errno);
  if (static_cast<size_t>(n) != bytes.size()) return absl::DataLossError("sendmsg: short write");
  return absl::OkStatus();
}

}  // namespace mp::host
