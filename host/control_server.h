// The operator's control socket: Cap'n Proto RPC (schemas/control.capnp) over a Unix socket
// created mode 0600, or 0660 owned by `group` when one is configured. A connection from
// another uid (other than root, or a member of that group) is refused.
#pragma once

#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "host/supervisor.h"
#include "shm/unique_fd.h"

namespace mp::host {

class ControlServer final : private kj::TaskSet::ErrorHandler {
 public:
  // A config reload (mpctl reload --config): one line per change, or why nothing changed.
  using ConfigReloader = std::function<kj::Promise<absl::StatusOr<std::vector<std::string>>>()>;

  ControlServer(kj::AsyncIoContext& io, Supervisor& supervisor, ConfigReloader reload_config);
  ~ControlServer();

  // Binds `path` (mode 0600). A stale socket left by a dead host is replaced; a live one is an
  // error naming the path.
  absl::Status Listen(const std::string& path, const std::string& group = "");
  // Serves on a listening Unix socket handed over by systemd (its mode and owner are the
  // socket unit's; the peer checks below still apply). The socket is not removed at exit.
  absl::Status Adopt(UniqueFd socket, const std::string& group = "");

  // Accepts connections until the returned promise is dropped.
  kj::Promise<void> Run();

 private:
  kj::Promise<void> AcceptLoop();
  void taskFailed(kj::Exception&& exception) override;

  kj::AsyncIoContext& io_;
  Supervisor& supervisor_;
  absl::Status SetGroup(const std::string& group);

  std::string path_;  // removed at exit; empty for an adopted socket
  ConfigReloader reload_config_;
  gid_t group_ = static_cast<gid_t>(-1);  // members may connect; -1: owner only
  kj::Own<kj::ConnectionReceiver> listener_;
  kj::Own<capnp::TwoPartyServer> server_;
  kj::TaskSet tasks_;
};

}  // namespace mp::host
