// A real redis-server for tests: on a free loopback port, in a temporary directory, with no
// persistence; stopped (by pid) and its directory removed when the object goes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mp::testing {

// A loopback port nobody listens on now: the kernel's pick for a socket bound to 127.0.0.1:0,
// which is then closed. Free until someone else takes it.
absl::StatusOr<uint16_t> FreeLoopbackPort();

struct RedisServerOptions {
  std::string password{};    // requirepass: clients must AUTH with it
  bool unix_socket = false;  // also listen on <dir>/redis.sock (see unix_path())
};

// Not thread-safe: one thread at a time (any thread; it uses no event loop). The server dies
// with the thread that started it (PR_SET_PDEATHSIG), so a crashed test leaves none behind.
class RedisServer {
 public:
  // Starts redis-server on 127.0.0.1 at a port the kernel picked, and returns once it answers
  // PING (at most 5 s). FAILED_PRECONDITION "redis-server not found: tools/setup installs it"
  // when it is not installed.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(RedisServerOptions options = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }               // -1 while stopped
  const std::string& dir() const { return dir_; }  // holds redis.log
  // The Unix socket it also listens on (mode 0700), or "" without options.unix_socket.
  std::string unix_path() const { return options_.unix_socket ? dir_ + "/redis.sock" : ""; }

  // SIGTERM, then SIGKILL if it has not exited within 2 s; reaps it. Idempotent.
  void Stop();
  // Stop(), then start again on the same port (retrying for up to 2 s while the port is not
  // yet free), waiting until it answers PING. The data is gone (no persistence).
  absl::Status Restart();

 private:
  RedisServer(std::string binary, std::string dir, uint16_t port, RedisServerOptions options);
  // Forks and execs redis-server; waits until it answers.
  absl::Status Launch();

  const std::string binary_;
  const std::string dir_;
  const uint16_t port_;
  const RedisServerOptions options_;
  pid_t pid_ = -1;
};

}  // namespace mp::testing
