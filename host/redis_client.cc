// RedisPool: hiredis' async API driven by kj::UnixEventPort::FdObserver.
//
// How the pieces meet:
// - hiredis asks for readiness through its ev hooks (addRead, addWrite, cleanup); the hooks only
//   arm waits, which live in the pool's TaskSet. KJ observes edge-triggered, so a wait is armed
//   only when the socket is known to be drained (reads) or full (writes); otherwise the read or
//   write is scheduled for the next turn with kj::evalLater.
// - Every wait captures its connection's generation, bumped whenever the hiredis context goes:
//   a wait that fires for a context that is gone does nothing.
// - Replies come in order on a connection: each connection keeps a FIFO of fulfillers, and the
//   reply callback takes the front one. hiredis gets no privdata (nothing that could dangle);
//   the context's data points at the Connection, which lives as long as the pool.
// - hiredis frees a context itself after a failed connect or a lost connection, from inside its
//   own calls: first it runs the pending reply callbacks with no reply, then our cleanup hook
//   (which drops the FdObserver, before hiredis closes the fd), then the disconnect callback.
//   We free a context ourselves (redisAsyncFree) only outside hiredis callbacks: on a connect
//   timeout and when the pool is destroyed.
#include "host/redis_client.h"

#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <sys/socket.h>

#include <algorithm>
#include <deque>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "host/log.h"

namespace mp::host {
namespace {

// What redisBufferRead asks read() for (its stack buffer, 16 KiB in hiredis 0.14 and 1.x).
constexpr size_t kHiredisReadBytes = 16 * 1024;

using ReplyFulfiller = kj::PromiseFulfiller<absl::StatusOr<RedisValue>>;

// Bytes a reply counts against max_reply_bytes: its strings plus 16 per element. hiredis' reader
// nests arrays at most 7 deep, so the recursion is bounded.
uint64_t ReplyBytes(const redisReply* r) {
  uint64_t n = 16;
  if (r == nullptr) return n;
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      n += r->len;
      break;
    case REDIS_REPLY_ARRAY:
      for (size_t i = 0; i < r->elements; ++i) n += ReplyBytes(r->element[i]);
      break;
    default:
      break;
  }
  return n;
}

// A copy of `r`: hiredis frees the reply when the callback returns.
RedisValue ToValue(const redisReply* r) {
  RedisValue v;
  if (r == nullptr) return v;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      v.type = RedisValue::Type::kString;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.type = RedisValue::Type::kStatus;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      v.type = RedisValue::Type::kError;
      v.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      v.type = RedisValue::Type::kInteger;
      v.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      v.type = RedisValue::Type::kArray;
      v.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) v.elements.push_back(ToValue(r->element[i]));
      break;
    default:  // REDIS_REPLY_NIL
      break;
  }
  return v;
}

// Why `argv` may not be sent, or "" if it may. These commands make the server send replies
// that no command asked for, which would break the one-reply-per-command FIFO, and on which
// hiredis 0.14 asserts (aborting the host) or switches to pub/sub bookkeeping.
std::string RefusedCommand(const std::vector<std::string>& argv) {
  const std::string name = absl::AsciiStrToLower(argv[0]);
  static constexpr const char* kPushing[] = {"subscribe",   "psubscribe",   "ssubscribe",
                                             "unsubscribe", "punsubscribe", "sunsubscribe",
                                             "monitor",     "sync",         "psync"};
  for (const char* p : kPushing) {
    if (name == p) return name;
  }
  if (name == "client" && argv.size() > 1 && absl::AsciiStrToLower(argv[1]) == "reply") {
    return "client reply";  // OFF and SKIP leave commands without a reply
  }
  if (name == "hello" && argv.size() > 1 && argv[1] != "2") {
    return "hello " + argv[1];  // RESP3, which hiredis 0.14 cannot parse
  }
  return "";
}

kj::Promise<absl::StatusOr<RedisValue>> Ready(absl::Status status) {
  return absl::StatusOr<RedisValue>(std::move(status));
}

}  // namespace

// One hiredis async context at a time, replaced after every loss. Lives as long as the pool, so
// `this` in a wait in the pool's TaskSet never dangles (the TaskSet goes first).
class RedisPool::Connection {
 public:
  Connection(RedisPool& pool, uint32_t min_backoff_ms) : pool_(pool), backoff_ms_(min_backoff_ms) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Starts a connect attempt (there is no context now). A failure schedules the next attempt.
  void StartConnect();
  // Pool destruction: frees the context; its pending commands resolve to CANCELLED.
  void Close();
  bool up() const { return state_ == State::kUp; }
  // Appends `argv` to the context's output buffer; the reply resolves `fulfiller`.
  absl::Status Send(const std::vector<std::string>& argv, kj::Own<ReplyFulfiller> fulfiller);

 private:
  // kAuthenticating: connected, AUTH sent; commands wait for kUp.
  enum class State { kDown, kConnecting, kAuthenticating, kUp };

  // hiredis' hooks and callbacks: C entry points, so nothing may throw out of them.
  static void AddReadHook(void* self) noexcept;
  static void AddWriteHook(void* self) noexcept;
  static void DelReadHook(void* self) noexcept {
    static_cast<Connection*>(self)->want_read_ = false;
  }
  static void DelWriteHook(void* self) noexcept {
    static_cast<Connection*>(self)->want_write_ = false;
  }
  static void CleanupHook(void* self) noexcept;
  static void OnConnect(const redisAsyncContext* ac, int status) noexcept;
  static void OnDisconnect(const redisAsyncContext* ac, int status) noexcept;
  static void OnReply(redisAsyncContext* ac, void* reply, void* privdata) noexcept;

  void ArmRead();
  void ArmWrite();
  void DoRead();
  void DoWrite();
  // True if a read would not block: bytes, EOF or an error wait in the socket.
  bool InputPending() const;
  void DropObserver() noexcept;
  void ConnectFailed(std::string error);
  void Authenticate();
  void MarkUp();
  void ScheduleReconnect();
  void Resolve(absl::StatusOr<RedisValue> result);

  RedisPool& pool_;
  // hiredis', not ours to free while hiredis runs: it frees it itself after a failure (then
  // calls CleanupHook, which resets this), we free it in Close() and on a connect timeout.
  redisAsyncContext* ac_ = nullptr;
  // Watches ac_'s fd; destroyed in CleanupHook, before hiredis closes the fd.
  kj::Own<kj::UnixEventPort::FdObserver> observer_;
  uint64_t generation_ = 0;  // bumped when ac_ comes or goes; stale waits compare and return
  State state_ = State::kDown;
  bool want_read_ = false;
  bool want_write_ = false;
  bool read_armed_ = false;   // a readable wait or a scheduled read is outstanding
  bool write_armed_ = false;  // a writable wait or a scheduled write is outstanding
  bool in_write_ = false;     // inside redisAsyncHandleWrite: an addWrite now means a full socket
  bool in_read_ = false;      // inside redisAsyncHandleRead: see ArmRead
  size_t reader_len_ = 0;     // the reader's buffered bytes before that read
  bool ever_up_ = false;      // a later connect is a reconnect
  // The context going now never served (AUTH refused or timed out): CleanupHook counted a
  // failed connect, so OnDisconnect neither logs a loss nor replaces the pool's last error.
  bool never_served_ = false;
  uint32_t backoff_ms_;
  kj::TimePoint up_since_ = kj::origin<kj::TimePoint>();
  std::string error_;  // the current attempt's failure, read by CleanupHook
  std::deque<kj::Own<ReplyFulfiller>> pending_;  // in the order the replies will come
};

void RedisPool::Connection::StartConnect() {
  ++generation_;
  state_ = State::kConnecting;
  error_.clear();
  never_served_ = false;
  const RedisPoolOptions& o = pool_.options_;
  redisAsyncContext* ac = o.unix_path.empty() ? redisAsyncConnect(o.host.c_str(), o.port)
                                              : redisAsyncConnectUnix(o.unix_path.c_str());
  if (ac == nullptr) return ConnectFailed("out of memory");
  if (ac->err != 0) {
    // Failed before any hook was set (refused at once, bad address): free it here, no callback.
    std::string error = ac->errstr != nullptr ? ac->errstr : ac->c.errstr;
    redisAsyncFree(ac);
    return ConnectFailed(std::move(error));
  }
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                 observer_ = kj::heap<kj::UnixEventPort::FdObserver>(
                     pool_.events_, ac->c.fd, kj::UnixEventPort::FdObserver::OBSERVE_READ_WRITE);
               })) {
    redisAsyncFree(ac);
    return ConnectFailed(absl::StrCat("cannot watch the socket: ", e->getDescription().cStr()));
  }
  ac_ = ac;
  ac->data = this;
  ac->ev.data = this;
  ac->ev.addRead = &AddReadHook;
  ac->ev.delRead = &DelReadHook;
  ac->ev.addWrite = &AddWriteHook;
  ac->ev.delWrite = &DelWriteHook;
  ac->ev.cleanup = &CleanupHook;
  redisAsyncSetDisconnectCallback(ac, &OnDisconnect);
  // Arms the first writable wait (hiredis calls addWrite): writable means connected or failed.
  redisAsyncSetConnectCallback(ac, &OnConnect);

  const uint64_t gen = generation_;
  const uint32_t timeout_ms = pool_.options_.connect_timeout_ms;
  pool_.tasks_.add(
      pool_.timer_.afterDelay(timeout_ms * kj::MILLISECONDS).then([this, gen, timeout_ms] {
        if (gen != generation_ || ac_ == nullptr) return;
        if (state_ != State::kConnecting && state_ != State::kAuthenticating) return;
        error_ = absl::StrCat(state_ == State::kConnecting ? "connect" : "AUTH",
                              " timed out after ", timeout_ms, " ms");
        // Not inside a hiredis callback: freeing is ours to do. CleanupHook counts the failure.
        redisAsyncFree(ac_);
      }));
}

void RedisPool::Connection::Close() {
  if (ac_ == nullptr) return;
  // Runs OnReply with no reply for each pending command (CANCELLED: pool_.closing_ is set),
  // then CleanupHook, then closes the fd.
  redisAsyncFree(ac_);
  ac_ = nullptr;
  DropObserver();
  for (auto& f : pending_) {
    if (f->isWaiting()) f->fulfill(absl::CancelledError("redis pool destroyed"));
  }
  pending_.clear();
}

absl::Status RedisPool::Connection::Send(const std::vector<std::string>& argv,
                                         kj::Own<ReplyFulfiller> fulfiller) {
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const std::string& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  // Queued first: once hiredis has the command, nothing may fail between it and its fulfiller.
  pending_.push_back(std::move(fulfiller));
  // Calls addWrite, which schedules the write for the next turn: commands sent in one turn go
  // out in one write.
  if (redisAsyncCommandArgv(ac_, &OnReply, nullptr, static_cast<int>(argv.size()), ptrs.data(),
                            lens.data()) != REDIS_OK) {
    pending_.pop_back();
    return absl::InternalError(
        absl::StrCat("redis ", pool_.address_, " refused to queue the command: ",
                     ac_->c.errstr[0] != '\0' ? ac_->c.errstr : "connection closing"));
  }
  return absl::OkStatus();
}

void RedisPool::Connection::AddReadHook(void* self) noexcept {
  auto* c = static_cast<Connection*>(self);
  c->want_read_ = true;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([c] { c->ArmRead(); })) {
    LogEvent(LogLevel::kError, "internal_error",
             {{"service", c->pool_.options_.label}, {"what", e->getDescription().cStr()}});
  }
}

void RedisPool::Connection::AddWriteHook(void* self) noexcept {
  auto* c = static_cast<Connection*>(self);
  c->want_write_ = true;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([c] { c->ArmWrite(); })) {
    LogEvent(LogLevel::kError, "internal_error",
             {{"service", c->pool_.options_.label}, {"what", e->getDescription().cStr()}});
  }
}

bool RedisPool::Connection::InputPending() const {
  char byte;
  const ssize_t n = recv(ac_->c.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n >= 0) return true;  // bytes, or 0: EOF
  return errno != EAGAIN && errno != EWOULDBLOCK;
}

// hiredis reads at most 16 KiB per call (redisBufferRead's buffer) and KJ only reports a socket
// that becomes readable, so a wait is armed only once the socket is drained; until then the next
// read is scheduled. hiredis calls addRead right after its read() and before it parses, so there
// the reader's buffer has grown by exactly what read() returned: less than the 16 KiB asked for
// means the socket was drained, with no syscall to ask, unless the peer has also closed (KJ's
// at-end hint, from EPOLLRDHUP): the end of stream is read on the next turn, or it would never
// be seen. Elsewhere (after a write or the connect) a peek tells.
void RedisPool::Connection::ArmRead() {
  if (read_armed_ || ac_ == nullptr) return;
  read_armed_ = true;
  const uint64_t gen = generation_;
  auto read = [this, gen] {
    if (gen != generation_) return;
    read_armed_ = false;
    if (want_read_) DoRead();
  };
  bool more;
  bool at_end_known = false, at_end = false;
  KJ_IF_MAYBE(hint, observer_->atEndHint()) {
    at_end_known = true;
    at_end = *hint;
  }
  if (in_read_ && at_end_known) {
    const size_t got = ac_->c.reader->len - std::min(reader_len_, ac_->c.reader->len);
    more = got >= kHiredisReadBytes || at_end;
  } else {
    more = InputPending();
  }
  if (more) {
    pool_.tasks_.add(kj::evalLater(kj::mv(read)));
  } else {
    // The observer's destruction rejects the wait: a connection that went, nothing to do.
    pool_.tasks_.add(observer_->whenBecomesReadable().then(kj::mv(read), [](kj::Exception&&) {}));
  }
}

// hiredis calls addWrite when it has bytes to send. The socket is writable then, unless the
// connect is still in progress or the last write stopped short (a full socket buffer): only
// those wait for KJ's edge; otherwise the write is scheduled for the next turn.
void RedisPool::Connection::ArmWrite() {
  if (write_armed_ || ac_ == nullptr) return;
  write_armed_ = true;
  const uint64_t gen = generation_;
  auto write = [this, gen] {
    if (gen != generation_) return;
    write_armed_ = false;
    if (want_write_) DoWrite();
  };
  if (in_write_ || (ac_->c.flags & REDIS_CONNECTED) == 0) {
    pool_.tasks_.add(observer_->whenBecomesWritable().then(kj::mv(write), [](kj::Exception&&) {}));
  } else {
    pool_.tasks_.add(kj::evalLater(kj::mv(write)));
  }
}

void RedisPool::Connection::DoRead() {
  // May run OnReply (fulfilling), or end in a disconnect that frees ac_ (CleanupHook ran).
  reader_len_ = ac_->c.reader->len;
  in_read_ = true;
  redisAsyncHandleRead(ac_);
  in_read_ = false;
}

void RedisPool::Connection::DoWrite() {
  const uint64_t gen = generation_;
  in_write_ = true;
  // May complete or fail the connect (OnConnect), or end in a disconnect that frees ac_.
  redisAsyncHandleWrite(ac_);
  in_write_ = false;
  // hiredis' connect check saw EINPROGRESS (a spurious wake-up) and returned without asking for
  // another write: keep waiting for the connect.
  if (gen == generation_ && ac_ != nullptr && (ac_->c.flags & REDIS_CONNECTED) == 0) {
    want_write_ = true;
    in_write_ = true;  // forces a wait for the edge, not a scheduled write
    ArmWrite();
    in_write_ = false;
  }
}

void RedisPool::Connection::OnConnect(const redisAsyncContext* ac, int status) noexcept {
  auto* c = static_cast<Connection*>(ac->data);
  if (status != REDIS_OK) {
    // hiredis frees the context when this returns; CleanupHook counts the failure.
    c->error_ = ac->c.errstr[0] != '\0' ? ac->c.errstr : "connect failed";
    return;
  }
  if (c->pool_.options_.password.empty()) {
    c->MarkUp();
    return;
  }
  // Called from redisAsyncHandleWrite: the AUTH's addWrite does not mean a full socket.
  const bool in_write = c->in_write_;
  c->in_write_ = false;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([c] { c->Authenticate(); })) {
    LogEvent(LogLevel::kError, "internal_error",
             {{"service", c->pool_.options_.label}, {"what", e->getDescription().cStr()}});
  }
  c->in_write_ = in_write;
}

void RedisPool::Connection::MarkUp() {
  state_ = State::kUp;
  up_since_ = pool_.timer_.now();
  const bool after_loss = ever_up_;
  ever_up_ = true;
  pool_.NoteConnected(after_loss);
}

// The first command on a new connection, before any of the pool's: its reply comes first.
// Refused (WRONGPASS, or no password set on the server), the connection is dropped and counted
// as a failed connect, so it is retried with backoff and logged rate-limited.
void RedisPool::Connection::Authenticate() {
  state_ = State::kAuthenticating;
  const RedisPoolOptions& o = pool_.options_;
  std::vector<std::string> argv = {"AUTH"};
  if (!o.user.empty()) argv.push_back(o.user);
  argv.push_back(o.password);
  auto paf = kj::newPromiseAndFulfiller<absl::StatusOr<RedisValue>>();
  if (absl::Status sent = Send(argv, kj::mv(paf.fulfiller)); !sent.ok()) {
    // Inside hiredis' connect callback, the context may not be freed: the connect timeout
    // frees it, and CleanupHook counts the failure.
    error_ = absl::StrCat("AUTH could not be sent: ", sent.message());
    return;
  }
  const uint64_t gen = generation_;
  pool_.tasks_.add(paf.promise.then([this, gen](absl::StatusOr<RedisValue> reply) {
    if (gen != generation_ || state_ != State::kAuthenticating || ac_ == nullptr) return;
    if (reply.ok() && reply->type != RedisValue::Type::kError) {
      MarkUp();
      return;
    }
    error_ = absl::StrCat("AUTH refused: ",
                          reply.ok() ? reply->str : std::string(reply.status().message()));
    // Outside hiredis' callbacks: hiredis disconnects now (nothing else is pending), and
    // CleanupHook takes it for a failed connect.
    redisAsyncDisconnect(ac_);
  }));
}

void RedisPool::Connection::OnReply(redisAsyncContext* ac, void* reply, void*) noexcept {
  auto* c = static_cast<Connection*>(ac->data);
  RedisPool& pool = c->pool_;
  if (reply == nullptr) {
    // The context is being freed with this command unanswered.
    if (pool.closing_) {
      c->Resolve(absl::CancelledError(
          absl::StrCat("redis pool for ", pool.address_, " destroyed before the reply came")));
    } else {
      c->Resolve(absl::UnavailableError(
          absl::StrCat("connection to redis ", pool.address_,
                       " lost: ", ac->c.errstr[0] != '\0' ? ac->c.errstr : "disconnected")));
    }
    return;
  }
  const auto* r = static_cast<const redisReply*>(reply);
  const uint64_t bytes = ReplyBytes(r);
  if (bytes > pool.options_.max_reply_bytes) {
    c->Resolve(absl::ResourceExhaustedError(absl::StrCat("redis ", pool.address_, " reply of ",
                                                         bytes, " bytes exceeds the limit of ",
                                                         pool.options_.max_reply_bytes, " bytes")));
    return;
  }
  if (c->pending_.empty() || !c->pending_.front()->isWaiting()) {
    c->Resolve(absl::CancelledError("nobody waits"));  // pops it; skips the copy
    return;
  }
  try {
    c->Resolve(ToValue(r));
  } catch (const std::exception& e) {  // std::bad_alloc: fail this command, not the host
    c->Resolve(absl::ResourceExhaustedError(
        absl::StrCat("redis ", pool.address_, " reply of ", bytes, " bytes: ", e.what())));
  }
}

void RedisPool::Connection::Resolve(absl::StatusOr<RedisValue> result) {
  if (pending_.empty()) return;  // cannot happen: one callback per command sent
  kj::Own<ReplyFulfiller> f = std::move(pending_.front());
  pending_.pop_front();
  // A caller that gave up dropped its promise: the reply is discarded.
  if (f->isWaiting()) f->fulfill(std::move(result));
}

void RedisPool::Connection::CleanupHook(void* self) noexcept {
  auto* c = static_cast<Connection*>(self);
  // hiredis closes the fd right after this returns: the observer must go first. Waits still
  // armed on it are rejected, and those already firing see the new generation.
  c->DropObserver();
  ++c->generation_;
  c->ac_ = nullptr;
  c->want_read_ = c->want_write_ = false;
  c->read_armed_ = c->write_armed_ = false;
  const State was = c->state_;
  c->state_ = State::kDown;
  c->never_served_ = was == State::kConnecting || was == State::kAuthenticating;
  if (c->pool_.closing_) return;
  if (c->never_served_) {
    c->ConnectFailed(c->error_.empty() ? "connect failed" : c->error_);
  } else {
    // Lost. OnDisconnect (next) logs it. A connection that stayed up for a while starts its
    // backoff over; one that keeps dropping right after connecting keeps backing off.
    const auto up_for = c->pool_.timer_.now() - c->up_since_;
    if (up_for >= c->pool_.options_.max_backoff_ms * kj::MILLISECONDS) {
      c->backoff_ms_ = c->pool_.options_.min_backoff_ms;
    }
    c->ScheduleReconnect();
  }
}

void RedisPool::Connection::OnDisconnect(const redisAsyncContext* ac, int) noexcept {
  auto* c = static_cast<Connection*>(ac->data);
  RedisPool& pool = c->pool_;
  if (pool.closing_ || c->never_served_) return;
  const char* error = ac->c.errstr[0] != '\0' ? ac->c.errstr : "disconnected";
  pool.last_error_ = error;
  LogEvent(LogLevel::kWarn, "redis_disconnected",
           {{"service", pool.options_.label}, {"address", pool.address_}, {"error", error}});
}

void RedisPool::Connection::DropObserver() noexcept {
  // ~FdObserver may throw if epoll refuses the fd; it is going anyway.
  try {
    observer_ = nullptr;
  } catch (...) {
  }
}

void RedisPool::Connection::ConnectFailed(std::string error) {
  state_ = State::kDown;
  pool_.NoteConnectFailure(error);
  ScheduleReconnect();
}

void RedisPool::Connection::ScheduleReconnect() {
  const uint64_t gen = generation_;
  const uint32_t delay_ms = backoff_ms_;
  backoff_ms_ = std::min(backoff_ms_ * 2, pool_.options_.max_backoff_ms);
  pool_.tasks_.add(pool_.timer_.afterDelay(delay_ms * kj::MILLISECONDS).then([this, gen] {
    if (gen != generation_ || state_ != State::kDown || pool_.closing_) return;
    StartConnect();
  }));
}

namespace {

RedisPoolOptions Sanitized(RedisPoolOptions o) {
  o.connections = std::max<uint32_t>(o.connections, 1);
  o.min_backoff_ms = std::max<uint32_t>(o.min_backoff_ms, 1);  // 0 would reconnect in a loop
  o.max_backoff_ms = std::max(o.max_backoff_ms, o.min_backoff_ms);
  o.connect_timeout_ms = std::max<uint32_t>(o.connect_timeout_ms, 1);
  return o;
}

}  // namespace

RedisPool::RedisPool(kj::UnixEventPort& events, kj::Timer& timer, RedisPoolOptions options)
    : events_(events),
      timer_(timer),
      options_(Sanitized(std::move(options))),
      address_(options_.unix_path.empty() ? absl::StrCat(options_.host, ":", options_.port)
                                          : absl::StrCat("unix:", options_.unix_path)),
      tasks_(*this) {
  connections_.reserve(options_.connections);
  for (uint32_t i = 0; i < options_.connections; ++i) {
    connections_.push_back(std::make_unique<Connection>(*this, options_.min_backoff_ms));
  }
  for (auto& c : connections_) c->StartConnect();
}

RedisPool::~RedisPool() noexcept {
  closing_ = true;
  for (auto& c : connections_) c->Close();
  // tasks_ (declared last) goes next, cancelling every wait while the connections still exist.
}

kj::Promise<absl::StatusOr<RedisValue>> RedisPool::Command(std::vector<std::string> argv) {
  if (argv.empty()) return Ready(absl::InvalidArgumentError("empty redis command"));
  if (argv.size() > static_cast<size_t>(INT32_MAX)) {
    return Ready(absl::InvalidArgumentError("redis command has too many arguments"));
  }
  if (std::string refused = RefusedCommand(argv); !refused.empty()) {
    return Ready(absl::InvalidArgumentError(
        absl::StrCat("redis command '", refused,
                     "' is not supported: the server would send replies no command asked for")));
  }
  Connection* conn = nullptr;
  for (size_t i = 0; i < connections_.size() && conn == nullptr; ++i) {
    Connection* c = connections_[(next_ + i) % connections_.size()].get();
    if (c->up()) {
      conn = c;
      next_ = (next_ + i + 1) % connections_.size();
    }
  }
  if (conn == nullptr) {
    return Ready(absl::UnavailableError(
        absl::StrCat("redis ", address_,
                     " is unreachable: ", last_error_.empty() ? "still connecting" : last_error_)));
  }
  try {
    auto paf = kj::newPromiseAndFulfiller<absl::StatusOr<RedisValue>>();
    absl::Status sent = conn->Send(argv, kj::mv(paf.fulfiller));
    if (!sent.ok()) return Ready(std::move(sent));
    return kj::mv(paf.promise);
  } catch (const std::exception& e) {  // std::bad_alloc, a kj::Exception from arming a wait
    return Ready(absl::InternalError(absl::StrCat("redis ", address_, ": ", e.what())));
  }
}

size_t RedisPool::connected() const {
  return static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(),
                                           [](const auto& c) { return c->up(); }));
}

void RedisPool::NoteConnectFailure(const std::string& error) {
  ++connect_failures_;
  last_error_ = error;
  ++failures_unlogged_;
  const kj::TimePoint now = timer_.now();
  // The first failure is logged at once, then at most one line per max_backoff_ms: a server
  // that stays down must not fill the log.
  if (failure_logged_ && now - failure_logged_at_ < options_.max_backoff_ms * kj::MILLISECONDS) {
    return;
  }
  const std::string failures = absl::StrCat(failures_unlogged_);
  LogEvent(LogLevel::kWarn, "redis_connect_failed",
           {{"service", options_.label},
            {"address", address_},
            {"error", error},
            {"failures", failures}});
  failure_logged_ = true;
  failure_logged_at_ = now;
  failures_unlogged_ = 0;
}

void RedisPool::NoteConnected(bool after_loss) {
  if (after_loss) ++reconnects_;
  failure_logged_ = false;
  failures_unlogged_ = 0;
  LogEvent(LogLevel::kInfo, "redis_connected",
           {{"service", options_.label},
            {"address", address_},
            {"reconnect", after_loss ? "true" : "false"}});
}

void RedisPool::taskFailed(kj::Exception&& e) {
  LogEvent(LogLevel::kError, "internal_error",
           {{"service", options_.label}, {"what", e.getDescription().cStr()}});
}

}  // namespace mp::host
