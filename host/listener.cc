#include "host/listener.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "host/access_log.h"
#include "host/log.h"

namespace mp::host {
namespace {

constexpr uint32_t kFirstBackoffMs = 10;
constexpr uint32_t kMaxBackoffMs = 1000;
constexpr int64_t kLogEveryMs = 10000;

bool OutOfResources(int error) {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

// Failures of one connection that accept reports: try the next at once.
bool Transient(int error) {
  switch (error) {
    case EINTR: case ECONNABORTED: case EPROTO: case ENETDOWN: case ENOPROTOOPT:
    case EHOSTDOWN: case ENONET: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
    case EPERM:  // a firewall rule refused it
      return true;
    default:
      return false;
  }
}

}  // namespace

absl::StatusOr<UniqueFd> ListenTcp(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", address, "' is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const bool any = host.empty() || host == "*";
  if (int rc = ::getaddrinfo(any ? nullptr : host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address '", address, "': ", ::gai_strerror(rc)));
  }
  std::string last_error = "no address";
  UniqueFd out;
  for (addrinfo* a = found; a != nullptr && !out; a = a->ai_next) {
    UniqueFd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) {
      last_error = absl::StrCat("socket: ", strerror(errno));
      continue;
    }
    const int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0) {
      last_error = absl::StrCat("bind: ", strerror(errno));
      continue;
    }
    if (::listen(fd.get(), SOMAXCONN) != 0) {
      last_error = absl::StrCat("listen: ", strerror(errno));
      continue;
    }
    out = std::move(fd);
  }
  ::freeaddrinfo(found);
  if (!out) {
    return absl::UnavailableError(absl::StrCat("listen address ", address, ": ", last_error));
  }
  return out;
}

std::string BoundAddress(int fd) {
  sockaddr_storage addr{};
  socklen_t length = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) != 0) return "?";
  const std::string ip = AddressText(reinterpret_cast<sockaddr*>(&addr), length);
  if (addr.ss_family == AF_INET6) {
    return absl::StrCat("[", ip, "]:", ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port));
  }
  if (addr.ss_family == AF_INET) {
    return absl::StrCat(ip, ":", ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port));
  }
  return "?";
}

Listener::Listener(kj::UnixEventPort& events, kj::LowLevelAsyncIoProvider& provider,
                   kj::Timer& timer, UniqueFd socket, Serve serve, Options options)
    : events_(events),
      provider_(provider),
      timer_(timer),
      socket_(std::move(socket)),
      observer_(kj::heap<kj::UnixEventPort::FdObserver>(
          events_, socket_.get(), kj::UnixEventPort::FdObserver::OBSERVE_READ)),
      serve_(std::move(serve)),
      options_(std::move(options)),
      tasks_(*this) {}

// tasks_, declared last, goes first: the connections' promises, then their cancelers.
Listener::~Listener() noexcept = default;

void Listener::taskFailed(kj::Exception&& exception) {
  if (exception.getType() == kj::Exception::Type::DISCONNECTED) return;
  LogEvent(LogLevel::kWarn, "connection_error", {{"what", exception.getDescription().cStr()}});
}

bool Listener::LogLimit::Allow(kj::TimePoint now) {
  KJ_IF_MAYBE(t, last) {
    if (now - *t < kLogEveryMs * kj::MILLISECONDS) {
      ++skipped;
      return false;
    }
  }
  last = now;
  return true;
}

void Listener::Start() {
  accepting_ = AcceptLoop().eagerlyEvaluate([](kj::Exception&& e) {
    LogEvent(LogLevel::kError, "listener_error", {{"what", e.getDescription().cStr()}});
  });
}

void Listener::StopAccepting() {
  accepting_ = nullptr;  // before the observer it may wait on
  observer_ = nullptr;
  socket_.reset();
  KJ_IF_MAYBE(f, room_) { (*f)->fulfill(); }
  room_ = nullptr;
}

kj::Promise<void> Listener::WhenAllClosed() {
  if (connections_.empty()) return kj::READY_NOW;
  auto paf = kj::newPromiseAndFulfiller<void>();
  all_closed_ = kj::mv(paf.fulfiller);
  return kj::mv(paf.promise);
}

kj::Promise<void> Listener::AcceptLoop() {
  for (int i = 0; i < 64; ++i) {  // then yield to the loop, so requests are served meanwhile
    if (!socket_) return kj::READY_NOW;
    if (options_.max_connections > 0 &&
        connections_.size() - shedding_ >= options_.max_connections &&
        !ShedOldestIdle("max_connections")) {
      ++counters_.limit_reached;
      if (limit_log_.Allow(timer_.now())) {
        LogEvent(LogLevel::kWarn, "connection_limit",
                 {{"open", absl::StrCat(connections_.size())},
                  {"max_connections", absl::StrCat(options_.max_connections)},
                  {"action", "new clients wait in the backlog until a connection closes"},
                  {"not_logged_since_last", absl::StrCat(limit_log_.skipped)}});
        limit_log_.skipped = 0;
      }
      auto paf = kj::newPromiseAndFulfiller<void>();
      room_ = kj::mv(paf.fulfiller);
      return paf.promise.then([this]() { return AcceptLoop(); });
    }
    sockaddr_storage addr{};
    socklen_t length = sizeof addr;
    const int fd = ::accept4(socket_.get(), reinterpret_cast<sockaddr*>(&addr), &length,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      backoff_ms_ = 0;
      Adopt(fd, AddressText(reinterpret_cast<sockaddr*>(&addr), length));
      continue;
    }
    const int error = errno;
    if (error == EAGAIN || error == EWOULDBLOCK) {
      return observer_->whenBecomesReadable().then([this]() { return AcceptLoop(); });
    }
    if (Transient(error)) continue;
    return Backoff(OutOfResources(error) ? "out_of_descriptors" : "accept_failed", error);
  }
  return kj::evalLater([this]() { return AcceptLoop(); });
}

kj::Promise<void> Listener::Backoff(const char* what, int error) {
  const bool resources = OutOfResources(error);
  ++(resources ? counters_.accept_resource_errors : counters_.accept_other_errors);
  // A descriptor held by an idle client is better spent on a new one.
  if (resources) ShedOldestIdle("out_of_descriptors");
  backoff_ms_ = backoff_ms_ == 0 ? kFirstBackoffMs : std::min(backoff_ms_ * 2, kMaxBackoffMs);
  if (accept_log_.Allow(timer_.now())) {
    LogEvent(LogLevel::kError, "accept_error",
             {{"what", what},
              {"errno", strerror(error)},
              {"open_connections", absl::StrCat(connections_.size())},
              {"retry_in_ms", absl::StrCat(backoff_ms_)},
              {"not_logged_since_last", absl::StrCat(accept_log_.skipped)}});
    accept_log_.skipped = 0;
  }
  return timer_.afterDelay(backoff_ms_ * kj::MILLISECONDS).then([this]() { return AcceptLoop(); });
}

void Listener::Adopt(int fd, const std::string& peer) {
  ++counters_.accepted;
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // KJ writes head and body apart
  auto socket = provider_.wrapSocketFd(fd, kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                                               kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                                               kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK);
  std::function<void()> on_timeout;
  if (options_.on_head_timeout) {
    on_timeout = [this, peer]() { options_.on_head_timeout(peer); };
  }
  auto stream = kj::heap<ClientStream>(kj::mv(socket), peer, timer_, options_.header_timeout,
                                       std::move(on_timeout));
  const uint64_t id = next_id_++;
  auto connection = std::make_unique<Connection>();
  connection->stream = stream.get();
  // The stream goes with the serving promise: the pointer is cleared when that ends (found by
  // id: the entry may be on its way out of the map by then).
  auto served = connection->canceler.wrap(serve_(kj::mv(stream)).attach(kj::defer([this, id]() {
    if (auto it = connections_.find(id); it != connections_.end()) it->second->stream = nullptr;
  })));
  connections_.emplace(id, std::move(connection));
  counters_.open = connections_.size();
  tasks_.add(served.then([this, id]() { Closed(id); },
                         [this, id](kj::Exception&& e) {
                           Closed(id);
                           if (e.getType() != kj::Exception::Type::DISCONNECTED) {
                             kj::throwFatalException(kj::mv(e));
                           }
                         }));
}

void Listener::Closed(uint64_t id) {
  if (auto it = connections_.find(id); it != connections_.end()) {
    if (it->second->shed) --shedding_;
    connections_.erase(it);
  }
  counters_.open = connections_.size();
  KJ_IF_MAYBE(f, room_) {
    auto fulfiller = kj::mv(*f);
    room_ = nullptr;
    fulfiller->fulfill();
  }
  if (connections_.empty()) {
    KJ_IF_MAYBE(f, all_closed_) {
      auto fulfiller = kj::mv(*f);
      all_closed_ = nullptr;
      fulfiller->fulfill();
    }
  }
}

bool Listener::ShedOldestIdle(const char* why) {
  Connection* oldest = nullptr;
  for (auto& [id, c] : connections_) {
    if (c->shed || c->stream == nullptr || !c->stream->idle()) continue;
    if (oldest == nullptr || c->stream->last_active() < oldest->stream->last_active()) {
      oldest = c.get();
    }
  }
  if (oldest == nullptr) return false;
  ++counters_.shed_idle;
  LogEvent(LogLevel::kWarn, "connection_shed",
           {{"peer", oldest->stream->peer()},
            {"why", why},
            {"open", absl::StrCat(connections_.size())}});
  oldest->shed = true;
  ++shedding_;
  // Rejects its promise with DISCONNECTED now (closing the socket); Closed() erases it.
  oldest->canceler.cancel(kj::Exception(kj::Exception::Type::DISCONNECTED, __FILE__, __LINE__,
                                        kj::str("connection shed: ", why)));
  return true;
}

}  // namespace mp::host
