// The operator's control socket: Cap'n Proto RPC (schemas/control.capnp) over a Unix socket
// created mode 0600, or 0660 owned by `group` when one is configured. A connection from
// another uid (other than root, or a member of that group) is refused.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "host/supervisor.h"

namespace mp::host {

class ControlServer : private kj::TaskSet::ErrorHandler {
 public:
  // `listen` is the HTTP address, reported by `mpctl status`.
  ControlServer(kj::AsyncIoContext& io, Supervisor& supervisor, std::string listen);
  ~ControlServer();

  // Binds `path` (mode 0600). A stale socket left by a dead host is replaced; a live one is an
  // error naming the path.
  absl::Status Listen(const std::string& path, const std::string& group = "");

  // Accepts connections until the returned promise is dropped.
  kj::Promise<void> Run();

 private:
  kj::Promise<void> AcceptLoop();
  void taskFailed(kj::Exception&& exception) override;

  kj::AsyncIoContext& io_;
  Supervisor& supervisor_;
  std::string path_;
  std::string listen_;
  gid_t group_ = static_cast<gid_t>(-1);  // members may connect; -1: owner only
  kj::Own<kj::ConnectionReceiver> listener_;
  kj::Own<capnp::TwoPartyServer> server_;
  kj::TaskSet tasks_;
};

}  // namespace mp::host
