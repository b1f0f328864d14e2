// The HTTP listening socket and the client connections it accepts.
//
// The listener never stops for lack of resources: when accept fails for want of descriptors or
// memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) it sheds the oldest idle keep-alive connection, if
// any, backs off (10 ms doubling to 1 s) and tries again; each such failure is counted and
// logged at most once per 10 s. With `max_connections` open, it sheds the oldest idle
// connection to make room, or, when none is idle, leaves new clients in the kernel's backlog
// until one closes. Event loop thread only.
#pragma once

#include <kj/async-io.h>
#include <kj/async-unix.h>
#include <kj/timer.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "host/client_stream.h"
#include "shm/unique_fd.h"

namespace mp::host {

// A listening TCP socket for "HOST:PORT" ("127.0.0.1:8080", "[::1]:0", "*:8080", or a name,
// which is resolved), non-blocking and close-on-exec. Errors name the address.
absl::StatusOr<UniqueFd> ListenTcp(const std::string& address);
// "127.0.0.1:8080" for a bound socket: the port the kernel chose, for port 0.
std::string BoundAddress(int fd);

struct ListenerCounters {
  uint64_t accepted = 0;
  uint64_t accept_resource_errors = 0;  // EMFILE, ENFILE, ENOBUFS, ENOMEM
  uint64_t accept_other_errors = 0;
  uint64_t shed_idle = 0;        // idle keep-alive connections closed to make room
  uint64_t limit_reached = 0;    // times maxConnections held new clients in the backlog
  uint64_t open = 0;
};

class Listener final : private kj::TaskSet::ErrorHandler {
 public:
  // Serves one connection (the HTTP server's listenHttp); resolves when it is over.
  using Serve = std::function<kj::Promise<void>(kj::Own<ClientStream>)>;
  struct Options {
    uint32_t max_connections = 0;  // 0: no limit
    kj::Duration header_timeout = 15 * kj::SECONDS;
    std::function<void(const std::string& peer)> on_head_timeout;
  };

  Listener(kj::UnixEventPort& events, kj::LowLevelAsyncIoProvider& provider, kj::Timer& timer,
           UniqueFd socket, Serve serve, Options options);
  ~Listener() noexcept;

  // Accepts until StopAccepting(); never fails.
  void Start();
  // Closes the listening socket; connections already open go on.
  void StopAccepting();
  // Resolves once no connection is open.
  kj::Promise<void> WhenAllClosed();
  // A config reload's new limits (the header timeout applies to new connections).
  void Reconfigure(uint32_t max_connections, kj::Duration header_timeout) {
    options_.max_connections = max_connections;
    options_.header_timeout = header_timeout;
    KJ_IF_MAYBE(f, room_) { (*f)->fulfill(); }  // a higher limit may let clients in
    room_ = nullptr;
  }

  const ListenerCounters& counters() const { return counters_; }

 private:
  struct Connection {
    ClientStream* stream = nullptr;  // owned by the serving promise; null once it is over
    bool shed = false;
    kj::Canceler canceler;
  };
  kj::Promise<void> AcceptLoop();
  kj::Promise<void> Backoff(const char* what, int error);
  void Adopt(int fd, const std::string& peer);
  void Closed(uint64_t id);
  // Closes the idle connection that has been idle longest; false if none is idle.
  bool ShedOldestIdle(const char* why);
  void taskFailed(kj::Exception&& exception) override;

  kj::UnixEventPort& events_;
  kj::LowLevelAsyncIoProvider& provider_;
  kj::Timer& timer_;
  UniqueFd socket_;
  kj::Own<kj::UnixEventPort::FdObserver> observer_;
  kj::Promise<void> accepting_ = nullptr;  // AcceptLoop, dropped (before observer_) to stop
  Serve serve_;
  Options options_;
  std::map<uint64_t, std::unique_ptr<Connection>> connections_;
  uint64_t next_id_ = 1;
  size_t shedding_ = 0;  // shed, not yet closed
  uint32_t backoff_ms_ = 0;
  // At most one line per 10 s of each kind; the lines skipped are counted in the next.
  struct LogLimit {
    kj::Maybe<kj::TimePoint> last;
    uint64_t skipped = 0;
    bool Allow(kj::TimePoint now);
  };
  LogLimit accept_log_, limit_log_;
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> room_;     // AcceptLoop waits for a close
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> all_closed_;
  ListenerCounters counters_;
  kj::TaskSet tasks_;  // last: destroyed first, before the connections its promises use
};

}  // namespace mp::host
