// What mphost speaks of systemd's protocols, without libsystemd:
//   - socket activation (sd_listen_fds(3)): the HTTP and control sockets handed over in
//     LISTEN_FDS, told apart by LISTEN_FDNAMES ("http", "control") or, unnamed, by family
//     (a TCP socket is HTTP, a Unix socket the control socket);
//   - readiness notification (sd_notify(3)) to NOTIFY_SOCKET: READY=1, RELOADING=1,
//     STOPPING=1 and STATUS=.
// Both read the environment once, at start, and remove what they read from it, so that no
// child inherits it.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shm/unique_fd.h"

namespace mp::host {

struct ActivatedSockets {
  UniqueFd http;     // invalid: not passed
  UniqueFd control;  // invalid: not passed
};

// The sockets systemd (or any manager speaking the protocol) passed to this process; none when
// LISTEN_PID is not this process. Errors name the variable or descriptor at fault (a descriptor
// that is not a listening stream socket, an unknown name, two of a kind).
absl::StatusOr<ActivatedSockets> TakeActivatedSockets();

class Notifier {
 public:
  // Reads and unsets NOTIFY_SOCKET; without it, every call is a no-op.
  Notifier();
  bool enabled() const { return !path_.empty(); }
  // Sends `state` ("READY=1\nSTATUS=serving"); failures are logged once, never fatal.
  void Notify(absl::string_view state);

 private:
  std::string path_;  // "@name" for an abstract socket
  UniqueFd fd_;
  bool warned_ = false;
};

}  // namespace mp::host
