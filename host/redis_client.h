// Redis client for the host's KJ event loop: a fixed pool of hiredis async connections to one
// redis server, driven by kj::UnixEventPort, reconnecting with exponential backoff, each command
// a promise of absl::StatusOr<RedisValue>. hiredis stays out of this header.
#pragma once

#include <kj/async-unix.h>
#include <kj/timer.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mp::host {

// One reply, copied out of hiredis (RESP2). An error reply ("WRONGTYPE ...") is a value of type
// kError, not an error Status: the command reached redis and redis answered it.
struct RedisValue {
  enum class Type : uint8_t { kNil, kInteger, kString, kStatus, kError, kArray };
  Type type = Type::kNil;
  int64_t integer = 0;
  std::string str;                   // kString, kStatus, kError
  std::vector<RedisValue> elements;  // kArray
};

struct RedisPoolOptions {
  // An IP address: hiredis resolves a name with a blocking getaddrinfo() on the loop thread.
  std::string host = "127.0.0.1";
  uint16_t port = 6379;
  std::string unix_path;  // when set, the server's Unix socket instead of host:port
  // AUTH on every connect before the connection serves (password empty: none). A refused AUTH
  // fails the connect (logged as such, retried with backoff); the password is never logged.
  std::string user;  // empty: AUTH password (the default user)
  std::string password;
  uint32_t connections = 2;  // connections kept open (at least 1)
  uint32_t connect_timeout_ms = 1000;
  uint32_t min_backoff_ms = 100;  // reconnect backoff, doubling up to max
  uint32_t max_backoff_ms = 5000;
  std::string label;  // names the pool in log events, e.g. "module 'spell' service 'cache'"
  // A reply whose size (string bytes + 16 per reply element, nested ones included) exceeds this
  // resolves to RESOURCE_EXHAUSTED instead of being copied out.
  uint64_t max_reply_bytes = 8 << 20;
};

// A fixed number of connections to one redis server, opened in the constructor and reopened
// after every loss or failed connect, with backoff, for as long as the pool lives. Commands go
// round robin to the connections that are up; nothing is queued while none is.
//
// Not thread-safe: the thread running the event loop of `events` only. `events` and `timer`
// must outlive the pool. hiredis writes with write(2): the process must ignore SIGPIPE.
// Request/reply commands only: commands that make the server push unrequested replies
// (SUBSCRIBE and friends, MONITOR, SYNC, CLIENT REPLY, HELLO 3) are refused with
// INVALID_ARGUMENT, since hiredis 0.14 aborts the process on a reply nobody asked for.
class RedisPool final : private kj::TaskSet::ErrorHandler {
 public:
  RedisPool(kj::UnixEventPort& events, kj::Timer& timer, RedisPoolOptions options);
  // Safe at any time, commands pending or not: each pending command resolves to CANCELLED
  // (callers may still hold the promises). Closes every connection.
  ~RedisPool() noexcept;
  RedisPool(const RedisPool&) = delete;
  RedisPool& operator=(const RedisPool&) = delete;

  // Sends one command (argv, binary-safe) on a connected connection, round robin. Resolves to
  // the reply, or to an error Status: UNAVAILABLE when no connection is up ("redis
  // 127.0.0.1:6390 is unreachable: Connection refused"), UNAVAILABLE "connection to redis
  // 127.0.0.1:6390 lost: ..." for a command in flight when its connection drops (it may or may
  // not have run), RESOURCE_EXHAUSTED for a reply over max_reply_bytes, INVALID_ARGUMENT for an
  // empty or refused command. Never throws. Timeouts are the caller's: the caller may drop the
  // returned promise at any time; the reply, when it comes, is then discarded. A command redis
  // never answers (BLPOP with no timeout) holds its connection's later replies back.
  kj::Promise<absl::StatusOr<RedisValue>> Command(std::vector<std::string> argv);

  size_t connected() const;                            // connections up now
  uint64_t reconnects() const { return reconnects_; }  // successful connects after a loss
  uint64_t connect_failures() const { return connect_failures_; }  // refused, failed, timed out

 private:
  class Connection;

  // A connect attempt failed with `error`: counts it, remembers it for UNAVAILABLE messages and
  // logs it, at most once per max_backoff_ms after the first.
  void NoteConnectFailure(const std::string& error);
  void NoteConnected(bool after_loss);
  void taskFailed(kj::Exception&& e) override;

  kj::UnixEventPort& events_;
  kj::Timer& timer_;
  const RedisPoolOptions options_;
  const std::string address_;  // "host:port" or "unix:/path", for messages and logs
  bool closing_ = false;       // set by the destructor: no reconnects, no logs, CANCELLED
  std::string last_error_;     // why the most recent connect failed or connection dropped
  uint64_t reconnects_ = 0;
  uint64_t connect_failures_ = 0;
  uint64_t failures_unlogged_ = 0;  // connect failures since the last redis_connect_failed line
  bool failure_logged_ = false;     // since the last successful connect
  kj::TimePoint failure_logged_at_ = kj::origin<kj::TimePoint>();
  size_t next_ = 0;  // round robin
  std::vector<std::unique_ptr<Connection>> connections_;
  // Last: destroyed first. Holds every wait (fd readiness, timers, deferred writes) so that no
  // promise is ever destroyed from inside its own continuation; each checks its connection's
  // generation and does nothing once stale.
  kj::TaskSet tasks_;
};

}  // namespace mp::host
