// The supervisor's end of a helper's SOCK_SEQPACKET socket (control or init), on the event
// loop: one message at a time, with the descriptors attached to it. Everything received is
// the helper's word: callers check each message's kind and exact size (Get) before use.
#pragma once

#include <kj/async-unix.h>

#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "microproc/helper_protocol.h"
#include "shm/unique_fd.h"

namespace mp::host {

struct HelperMessage {
  bool end = false;  // end of stream: the helper closed its end (or died)
  std::vector<std::byte> bytes;
  std::vector<UniqueFd> fds;

  // The message's kind (its first word), or 0 if it is shorter than one.
  microproc::MessageKind kind() const;
  // Copies the message into `*out` if it is of kind `expected` and exactly a T.
  template <typename T>
  bool Get(microproc::MessageKind expected, T* out) const {
    if (bytes.size() != sizeof(T) || kind() != expected) return false;
    std::memcpy(out, bytes.data(), sizeof(T));
    return true;
  }
};

// Owns the socket. Not thread-safe; one Receive() at a time.
class HelperChannel {
 public:
  HelperChannel(kj::UnixEventPort& events, UniqueFd socket);

  // The next message; `end` once the helper's end is closed. Fails only on a socket error.
  kj::Promise<absl::StatusOr<HelperMessage>> Receive();

  // Sends one message without waiting: a helper that does not read is a helper that failed.
  absl::Status Send(std::span<const std::byte> bytes, std::span<const int> fds = {});

  int fd() const { return socket_.get(); }

 private:
  UniqueFd socket_;
  kj::UnixEventPort::FdObserver observer_;
};

}  // namespace mp::host
