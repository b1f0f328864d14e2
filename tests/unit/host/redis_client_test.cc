// RedisPool against a real redis-server on a real KJ event loop: every reply type, binary-safe
// arguments, large and pipelined replies, refused commands, an unreachable server, a connect
// that times out, a restart with commands in flight, callers that give up, destruction with
// commands pending, the reply size guard and the rate-limited connect-failure log; a close that
// comes with the last reply; AUTH (refused, timed out, as an ACL user) and Unix sockets.
#include "host/redis_client.h"

#include <kj/async-io.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/service_rules.h"
#include "shm/unique_fd.h"
#include "tests/support/redis_server.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using Result = absl::StatusOr<RedisValue>;
using Type = RedisValue::Type;

class RedisClientTest : public ::testing::Test {
 protected:
  // hiredis writes with write(2): a write to a connection redis closed must not kill the test.
  static void SetUpTestSuite() { signal(SIGPIPE, SIG_IGN); }

  RedisClientTest() : io_(kj::setupAsyncIo()) {}
  ~RedisClientTest() noexcept override {}

  void SetUp() override {
    auto server = mp::testing::RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  RedisPoolOptions Options() const {
    RedisPoolOptions o;
    o.port = server_->port();
    o.label = "test";
    o.min_backoff_ms = 20;
    o.max_backoff_ms = 200;
    return o;
  }
  std::string Address() const { return absl::StrCat("127.0.0.1:", server_->port()); }

  kj::Timer& timer() { return io_.provider->getTimer(); }
  kj::UnixEventPort& events() { return io_.unixEventPort; }

  // Runs the loop until `pred` holds (true) or `ms` have passed: at most ms / 5 + 1 rounds of
  // 5 ms each, and never past a wall-clock deadline.
  bool WaitUntil(const std::function<bool()>& pred, int ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    for (int i = 0; i < ms / 5 + 1 && !pred(); ++i) {
      if (std::chrono::steady_clock::now() >= deadline) break;
      timer().afterDelay(5 * kj::MILLISECONDS).wait(io_.waitScope);
    }
    return pred();
  }

  // A pool with every connection up.
  std::unique_ptr<RedisPool> ConnectedPool(RedisPoolOptions o) {
    auto pool = std::make_unique<RedisPool>(events(), timer(), o);
    EXPECT_TRUE(WaitUntil([&] { return pool->connected() == o.connections; }, 5000))
        << pool->connected() << " of " << o.connections << " connections up";
    return pool;
  }

  // The command's outcome; a command that does not resolve within 5 s is a failure.
  Result Run(RedisPool& pool, std::vector<std::string> argv) {
    return Wait(pool.Command(std::move(argv)));
  }
  Result Wait(kj::Promise<Result> p) {
    return p
        .exclusiveJoin(timer().afterDelay(5 * kj::SECONDS).then([] {
          return Result(absl::DeadlineExceededError("test: no reply within 5 s"));
        }))
        .wait(io_.waitScope);
  }

  kj::AsyncIoContext io_;
  std::unique_ptr<mp::testing::RedisServer> server_;
};

TEST_F(RedisClientTest, EveryReplyType) {
  auto pool = ConnectedPool(Options());

  Result set = Run(*pool, {"SET", "k", "v"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, Type::kStatus);
  EXPECT_EQ(set->str, "OK");

  Result get = Run(*pool, {"GET", "k"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->type, Type::kString);
  EXPECT_EQ(get->str, "v");

  Result missing = Run(*pool, {"GET", "missing"});
  ASSERT_TRUE(missing.ok()) << missing.status();
  EXPECT_EQ(missing->type, Type::kNil);

  for (int64_t want : {1, 2}) {
    Result incr = Run(*pool, {"INCR", "n"});
    ASSERT_TRUE(incr.ok()) << incr.status();
    EXPECT_EQ(incr->type, Type::kInteger);
    EXPECT_EQ(incr->integer, want);
  }

  Result mget = Run(*pool, {"MGET", "k", "missing", "n"});
  ASSERT_TRUE(mget.ok()) << mget.status();
  ASSERT_EQ(mget->type, Type::kArray);
  ASSERT_EQ(mget->elements.size(), 3u);
  EXPECT_EQ(mget->elements[0].type, Type::kString);
  EXPECT_EQ(mget->elements[0].str, "v");
  EXPECT_EQ(mget->elements[1].type, Type::kNil);
  EXPECT_EQ(mget->elements[2].str, "2");

  // An error reply is a value: redis answered.
  Result wrong = Run(*pool, {"LPUSH", "k", "x"});
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  EXPECT_EQ(wrong->type, Type::kError);
  EXPECT_THAT(wrong->str, StartsWith("WRONGTYPE"));

  Result nested = Run(*pool, {"EVAL", "return {7, {'a', 'b'}}", "0"});
  ASSERT_TRUE(nested.ok()) << nested.status();
  ASSERT_EQ(nested->type, Type::kArray);
  ASSERT_EQ(nested->elements.size(), 2u);
  EXPECT_EQ(nested->elements[0].integer, 7);
  ASSERT_EQ(nested->elements[1].type, Type::kArray);
  ASSERT_EQ(nested->elements[1].elements.size(), 2u);
  EXPECT_EQ(nested->elements[1].elements[1].str, "b");
}

TEST_F(RedisClientTest, ArgumentsAreBinarySafe) {
  auto pool = ConnectedPool(Options());
  const std::string key("k\0ey", 4);
  const std::string value("a\0b\r\n$3\r\nc \"", 13);
  Result set = Run(*pool, {"SET", key, value});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->str, "OK");
  Result get = Run(*pool, {"GET", key});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, value);
  Result other = Run(*pool, {"GET", "k"});  // the key is not cut at its NUL
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(other->type, Type::kNil);
  Result len = Run(*pool, {"STRLEN", key});
  ASSERT_TRUE(len.ok()) << len.status();
  EXPECT_EQ(len->integer, 13);
}

// A reply far larger than one read, and many commands in flight at once on both connections:
// every reply reaches its own command.
TEST_F(RedisClientTest, LargeAndPipelinedReplies) {
  auto pool = ConnectedPool(Options());
  std::string big(3 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + (i / 4096) % 26);
  ASSERT_TRUE(Run(*pool, {"SET", "big", big}).ok());
  Result got = Run(*pool, {"GET", "big"});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->str == big) << "got " << got->str.size() << " bytes";

  constexpr int kCommands = 2000;
  std::vector<kj::Promise<Result>> echoes;
  for (int i = 0; i < kCommands; ++i) {
    echoes.push_back(pool->Command({"ECHO", absl::StrCat("echo-", i)}));
  }
  for (int i = 0; i < kCommands; ++i) {
    Result r = Wait(kj::mv(echoes[i]));
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    ASSERT_EQ(r->str, absl::StrCat("echo-", i));
  }
}

TEST_F(RedisClientTest, CommandsThatPushRepliesAreRefused) {
  auto pool = ConnectedPool(Options());
  for (std::vector<std::string> argv :
       std::vector<std::vector<std::string>>{{"SUBSCRIBE", "ch"},
                                             {"psubscribe", "c*"},
                                             {"SSUBSCRIBE", "ch"},
                                             {"UNSUBSCRIBE"},
                                             {"MONITOR"},
                                             {"CLIENT", "REPLY", "OFF"},
                                             {"HELLO", "3"},
                                             {}}) {
    Result r = Run(*pool, argv);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument)
        << (argv.empty() ? "(empty)" : argv[0]) << ": " << r.status();
  }
  Result ping = Run(*pool, {"PING"});
  ASSERT_TRUE(ping.ok()) << ping.status();
  EXPECT_EQ(ping->str, "PONG");
}

TEST_F(RedisClientTest, UnreachableServerFailsAtOnceNamingTheAddress) {
  absl::StatusOr<uint16_t> port = mp::testing::FreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  RedisPoolOptions o = Options();
  o.port = *port;
  RedisPool pool(events(), timer(), o);
  ASSERT_TRUE(WaitUntil([&] { return pool.connect_failures() >= 4; }, 3000))
      << pool.connect_failures();
  EXPECT_EQ(pool.connected(), 0u);

  kj::Promise<Result> p = pool.Command({"GET", "k"});
  // Resolved without waiting for any I/O or timer.
  ASSERT_TRUE(p.poll(io_.waitScope));
  Result r = p.wait(io_.waitScope);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(),
              HasSubstr(absl::StrCat("redis 127.0.0.1:", *port, " is unreachable: ")));
  EXPECT_THAT(r.status().message(), HasSubstr("Connection refused"));
  EXPECT_EQ(pool.reconnects(), 0u);
}

// A listener whose accept queue is full drops further SYNs: the connect hangs until our
// timeout, which counts as a failure and is retried.
TEST_F(RedisClientTest, ConnectThatHangsTimesOut) {
  UniqueFd listener(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(listener.valid());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ASSERT_EQ(getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ASSERT_EQ(listen(listener.get(), 0), 0);
  // Fill the accept queue (never accepted).
  std::vector<UniqueFd> fillers;
  for (int i = 0; i < 4; ++i) {
    UniqueFd c(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    ASSERT_TRUE(c.valid());
    connect(c.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    fillers.push_back(std::move(c));
  }
  timer().afterDelay(50 * kj::MILLISECONDS).wait(io_.waitScope);

  RedisPoolOptions o = Options();
  o.port = ntohs(addr.sin_port);
  o.connections = 1;
  o.connect_timeout_ms = 100;
  RedisPool pool(events(), timer(), o);
  ASSERT_TRUE(WaitUntil([&] { return pool.connect_failures() >= 2; }, 3000))
      << pool.connect_failures();
  EXPECT_EQ(pool.connected(), 0u);
  Result r = Run(pool, {"PING"});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(r.status().message(), HasSubstr("connect timed out after 100 ms"));
}

// A one-connection server on a loopback port, scripted by `serve` (given the accepted socket) on
// a thread of its own; joined when the object goes.
class FakeRedis {
 public:
  explicit FakeRedis(std::function<void(int fd)> serve) {
    listener_ = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        listen(listener_.get(), 4) != 0) {
      ADD_FAILURE() << "fake redis: cannot listen";
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, serve = std::move(serve)] {
      timeval tv{5, 0};  // bounded: a test that goes wrong does not hang here
      setsockopt(listener_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      UniqueFd c(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c.valid()) return;
      setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      serve(c.get());
    });
  }
  ~FakeRedis() {
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return port_; }

  // Reads until `n` complete lines (CRLF) have come, or the peer goes.
  static void ReadLines(int fd, int n) {
    std::string got;
    char buf[256];
    while (std::count(got.begin(), got.end(), '\n') < n) {
      const ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r <= 0) return;
      got.append(buf, static_cast<size_t>(r));
    }
  }

 private:
  UniqueFd listener_;
  uint16_t port_ = 0;
  std::thread thread_;
};

// The server answers and closes at once, and both reach the host within one event of its loop:
// the short read must not be taken for a drained socket, or the close would never be seen.
TEST_F(RedisClientTest, AReplyFollowedByACloseIsSeenAsALoss) {
  std::atomic<bool> replied{false};
  FakeRedis fake([&](int fd) {
    FakeRedis::ReadLines(fd, 3);  // *1 $4 PING
    (void)!send(fd, "+PONG\r\n", 7, MSG_NOSIGNAL);
    replied = true;
    // The socket closes as `serve` returns.
  });
  RedisPoolOptions o = Options();
  o.port = fake.port();
  o.connections = 1;
  o.min_backoff_ms = o.max_backoff_ms = 60000;  // no reconnect within the test
  auto pool = ConnectedPool(o);
  auto reply = pool->Command({"PING"});
  io_.waitScope.poll();  // sends it
  for (int i = 0; i < 500 && !replied; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the close lands too
  Result r = Wait(kj::mv(reply));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->str, "PONG");
  EXPECT_TRUE(WaitUntil([&] { return pool->connected() == 0; }, 2000))
      << "the connection still counts as up after the server closed it";
}

// A server that accepts and never answers the AUTH: the connect times out as an AUTH timeout,
// logged once as a failed connect (not also as a lost connection).
TEST_F(RedisClientTest, AnAuthThatIsNeverAnsweredTimesOut) {
  FakeRedis fake([](int fd) {
    FakeRedis::ReadLines(fd, 5);  // *2 $4 AUTH $n password
    char buf[64];
    while (recv(fd, buf, sizeof buf, 0) > 0) {
    }  // until the client gives up
  });
  RedisPoolOptions o = Options();
  o.port = fake.port();
  o.connections = 1;
  o.connect_timeout_ms = 100;
  o.min_backoff_ms = o.max_backoff_ms = 60000;
  o.password = "pw";
  ::testing::internal::CaptureStderr();
  std::string error;
  {
    RedisPool pool(events(), timer(), o);
    EXPECT_TRUE(WaitUntil([&] { return pool.connect_failures() >= 1; }, 3000));
    Result r = Run(pool, {"PING"});
    ASSERT_FALSE(r.ok());
    error = std::string(r.status().message());
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(error, HasSubstr("AUTH timed out after 100 ms"));
  EXPECT_THAT(log, HasSubstr("AUTH timed out after 100 ms"));
  EXPECT_THAT(log, Not(HasSubstr("event=redis_disconnected")));
}

// The host's key table (host/service_rules.cc), against the server's own: for every command the
// host can broker, the legacy key range of COMMAND INFO matches, and for argument vectors of
// every length the server accepts (up to 4 past its minimum), CheckRedisCommand refuses an
// argument outside the key prefix exactly where COMMAND GETKEYS says a key is. A command whose
// keys the host looked for in the wrong place would let a module reach another's keys. (Arity
// may differ between Redis versions, as options come: ZRANK's WITHSCORE is 7.2's; where the
// host is stricter, it refuses with `arguments`, which is safe.)
TEST_F(RedisClientTest, TheKeyTableAgreesWithTheServer) {
  RedisPoolOptions o = Options();
  o.connections = 1;
  auto pool = ConnectedPool(o);
  RedisServiceConfig grant;
  grant.key_prefix = "t:";
  grant.commands = BrokeredRedisCommands();
  int positions_compared = 0;
  for (const std::string& name : BrokeredRedisCommands()) {
    SCOPED_TRACE(name);
    const RedisKeySpec* spec = FindRedisCommand(name);
    ASSERT_NE(spec, nullptr);
    Result info = Run(*pool, {"COMMAND", "INFO", name});
    ASSERT_TRUE(info.ok()) << info.status();
    ASSERT_EQ(info->type, Type::kArray);
    ASSERT_EQ(info->elements.size(), 1u);
    const RedisValue& c = info->elements[0];
    ASSERT_EQ(c.type, Type::kArray) << "the server does not know " << name;
    ASSERT_GE(c.elements.size(), 6u);
    const int server_arity = static_cast<int>(c.elements[1].integer);
    EXPECT_EQ(c.elements[3].integer, spec->first_key) << "first key";
    EXPECT_EQ(c.elements[4].integer, spec->last_key) << "last key";
    EXPECT_EQ(c.elements[5].integer, spec->step) << "step";
    if (spec->first_key == 0) continue;  // no keys (PING)

    std::vector<int> lengths = {std::abs(server_arity)};
    if (server_arity < 0) {
      for (int extra = 1; extra <= 4; ++extra) lengths.push_back(-server_arity + extra);
    }
    for (int n : lengths) {
      if (spec->step > 1 && (n - spec->first_key) % spec->step != 0) continue;
      std::vector<std::string> argv = {name};
      for (int i = 1; i < n; ++i) argv.push_back(absl::StrCat("t:", i));
      std::vector<std::string> getkeys = {"COMMAND", "GETKEYS"};
      getkeys.insert(getkeys.end(), argv.begin(), argv.end());
      Result keys = Run(*pool, getkeys);
      ASSERT_TRUE(keys.ok()) << keys.status();
      ASSERT_EQ(keys->type, Type::kArray) << n << " arguments: " << keys->str;
      std::set<std::string> server_keys;
      for (const RedisValue& k : keys->elements) server_keys.insert(k.str);
      if (auto refused = CheckRedisCommand(grant, argv)) {
        EXPECT_EQ(refused->rule, ServiceRule::kArguments) << n << " arguments: " << refused->message;
        continue;  // stricter than the server about the count: safe
      }
      for (int i = 1; i < n; ++i) {
        std::vector<std::string> outside = argv;
        outside[static_cast<size_t>(i)] = absl::StrCat("u:", i);
        const bool refused = CheckRedisCommand(grant, outside).has_value();
        ++positions_compared;
        EXPECT_EQ(refused, server_keys.count(absl::StrCat("t:", i)) == 1)
            << n << " arguments, argument " << i
            << (refused ? ": refused, but the server does not take it for a key"
                        : ": allowed, but the server takes it for a key");
      }
    }
  }
  EXPECT_GT(positions_compared, 300);
}

TEST_F(RedisClientTest, RestartFailsCommandsClearlyThenRecovers) {
  auto pool = ConnectedPool(Options());
  ASSERT_TRUE(Run(*pool, {"SET", "a", "1"}).ok());

  // Commands in flight when the server goes: each fails, saying the connection was lost.
  std::vector<kj::Promise<Result>> in_flight;
  for (int i = 0; i < 50; ++i) in_flight.push_back(pool->Command({"INCR", "n"}));
  server_->Stop();
  for (auto& p : in_flight) {
    Result r = Wait(kj::mv(p));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
    EXPECT_THAT(r.status().message(),
                HasSubstr(absl::StrCat("connection to redis ", Address(), " lost: ")));
  }

  // While it is down, commands fail at once, naming the address and the reason.
  ASSERT_TRUE(
      WaitUntil([&] { return pool->connected() == 0 && pool->connect_failures() > 0; }, 3000));
  Result down = Run(*pool, {"GET", "a"});
  EXPECT_EQ(down.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(down.status().message(),
              HasSubstr(absl::StrCat("redis ", Address(), " is unreachable: Connection refused")));

  absl::Status restarted = server_->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted;
  // Back within the backoff (max 200 ms), checked for at most 5 s.
  Result back = absl::UnavailableError("not tried");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  for (int i = 0; i < 200 && std::chrono::steady_clock::now() < deadline; ++i) {
    back = Run(*pool, {"SET", "b", "2"});
    if (back.ok()) break;
    timer().afterDelay(25 * kj::MILLISECONDS).wait(io_.waitScope);
  }
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->str, "OK");
  EXPECT_TRUE(WaitUntil([&] { return pool->connected() == 2; }, 3000));
  EXPECT_GE(pool->reconnects(), 1u);
  Result get = Run(*pool, {"GET", "b"});
  ASSERT_TRUE(get.ok()) << get.status();
  EXPECT_EQ(get->str, "2");
}

// A caller that gives up drops its promise; the late reply is discarded and the next command
// on the same connection gets its own reply, not the late one.
TEST_F(RedisClientTest, ADroppedPromiseLeavesTheConnectionInOrder) {
  RedisPoolOptions o = Options();
  o.connections = 1;
  auto pool = ConnectedPool(o);
  bool gave_up =
      pool->Command({"BLPOP", "empty-list", "0.3"})
          .then([](Result) { return false; })
          .exclusiveJoin(timer().afterDelay(50 * kj::MILLISECONDS).then([] { return true; }))
          .wait(io_.waitScope);
  ASSERT_TRUE(gave_up);
  // Also dropped before it was even written.
  { kj::Promise<Result> dropped = pool->Command({"ECHO", "never read"}); }

  std::vector<kj::Promise<Result>> echoes;
  for (int i = 0; i < 10; ++i) echoes.push_back(pool->Command({"ECHO", absl::StrCat("e", i)}));
  for (int i = 0; i < 10; ++i) {
    Result r = Wait(kj::mv(echoes[i]));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->type, Type::kString);
    EXPECT_EQ(r->str, absl::StrCat("e", i));
  }
  EXPECT_EQ(pool->connected(), 1u);
}

TEST_F(RedisClientTest, DestroyingThePoolWithCommandsPendingIsSafe) {
  auto pool = ConnectedPool(Options());
  // Written and blocking in redis...
  kj::Promise<Result> blocked = pool->Command({"BLPOP", "empty-list", "5"});
  timer().afterDelay(50 * kj::MILLISECONDS).wait(io_.waitScope);
  // ...queued but not yet written, and one whose caller gave up.
  std::vector<kj::Promise<Result>> queued;
  for (int i = 0; i < 10; ++i) queued.push_back(pool->Command({"SET", absl::StrCat("q", i), "x"}));
  { kj::Promise<Result> dropped = pool->Command({"GET", "q0"}); }
  pool.reset();

  Result r = Wait(kj::mv(blocked));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kCancelled) << r.status();
  for (auto& p : queued) {
    Result q = Wait(kj::mv(p));
    EXPECT_EQ(q.status().code(), absl::StatusCode::kCancelled) << q.status();
  }
  // Nothing of the old pool runs any more; the server serves a new one.
  timer().afterDelay(50 * kj::MILLISECONDS).wait(io_.waitScope);
  auto again = ConnectedPool(Options());
  EXPECT_TRUE(Run(*again, {"PING"}).ok());
}

TEST_F(RedisClientTest, DestroyingThePoolWhileConnectingOrBackingOffIsSafe) {
  { RedisPool connecting(events(), timer(), Options()); }

  absl::StatusOr<uint16_t> port = mp::testing::FreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  RedisPoolOptions o = Options();
  o.port = *port;
  auto backing_off = std::make_unique<RedisPool>(events(), timer(), o);
  ASSERT_TRUE(WaitUntil([&] { return backing_off->connect_failures() >= 2; }, 3000));
  backing_off.reset();
  // The old pool's timers and waits are gone with it: running the loop touches nothing freed.
  timer().afterDelay(300 * kj::MILLISECONDS).wait(io_.waitScope);
  auto pool = ConnectedPool(Options());
  EXPECT_TRUE(Run(*pool, {"PING"}).ok());
}

TEST_F(RedisClientTest, OversizedReplyIsResourceExhausted) {
  RedisPoolOptions o = Options();
  o.connections = 1;
  o.max_reply_bytes = 1024;
  auto pool = ConnectedPool(o);
  ASSERT_TRUE(Run(*pool, {"SET", "big", std::string(4000, 'x')}).ok());
  Result big = Run(*pool, {"GET", "big"});
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted) << big.status();
  EXPECT_THAT(big.status().message(), HasSubstr("4016 bytes"));  // 4000 + 16
  EXPECT_THAT(big.status().message(), HasSubstr("1024"));

  // Arrays count 16 bytes per element: 100 elements of 10 bytes are 16 + 100 * 26 = 2616.
  std::vector<std::string> push = {"RPUSH", "list"};
  for (int i = 0; i < 100; ++i) push.push_back("0123456789");
  ASSERT_TRUE(Run(*pool, push).ok());
  Result list = Run(*pool, {"LRANGE", "list", "0", "-1"});
  EXPECT_EQ(list.status().code(), absl::StatusCode::kResourceExhausted) << list.status();
  EXPECT_THAT(list.status().message(), HasSubstr("2616 bytes"));

  // The connection goes on, in order.
  Result small = Run(*pool, {"LRANGE", "list", "0", "1"});
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->elements.size(), 2u);
}

// A server that stays down is logged once, not at every attempt.
TEST_F(RedisClientTest, RepeatedConnectFailuresAreLoggedOnce) {
  absl::StatusOr<uint16_t> port = mp::testing::FreeLoopbackPort();
  ASSERT_TRUE(port.ok()) << port.status();
  RedisPoolOptions o = Options();
  o.port = *port;
  o.min_backoff_ms = 10;
  o.max_backoff_ms = 60000;  // the log window
  ::testing::internal::CaptureStderr();
  {
    RedisPool pool(events(), timer(), o);
    WaitUntil([&] { return pool.connect_failures() >= 6; }, 3000);
    EXPECT_GE(pool.connect_failures(), 6u);
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  size_t lines = 0;
  for (size_t at = log.find("event=redis_connect_failed"); at != std::string::npos;
       at = log.find("event=redis_connect_failed", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, 1u) << log;
  EXPECT_THAT(log, HasSubstr(absl::StrCat("address=127.0.0.1:", *port)));
  EXPECT_THAT(log, HasSubstr("service=test"));
}

// A server that requires a password: every connection AUTHs before it serves.
TEST_F(RedisClientTest, AuthenticatesEachConnectionBeforeItServes) {
  auto server = mp::testing::RedisServer::Start({.password = "s3cret pw"});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(*server);
  RedisPoolOptions o = Options();
  o.connections = 2;
  o.password = "s3cret pw";
  auto pool = ConnectedPool(o);
  for (int i = 0; i < 4; ++i) {  // round robin: both connections
    Result r = Run(*pool, {"SET", "k", "v"});
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->type, Type::kStatus) << r->str;
  }
  EXPECT_EQ(pool->connect_failures(), 0u);
}

// A refused AUTH is a failed connect: retried with backoff, logged rate-limited, and the
// commands meanwhile fail naming it. The password appears nowhere.
TEST_F(RedisClientTest, ARefusedAuthFailsTheConnectAndIsRetried) {
  auto server = mp::testing::RedisServer::Start({.password = "right"});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(*server);
  RedisPoolOptions o = Options();
  o.connections = 1;
  o.password = "wrong-secret";
  ::testing::internal::CaptureStderr();
  std::string error;
  {
    RedisPool pool(events(), timer(), o);
    EXPECT_TRUE(WaitUntil([&] { return pool.connect_failures() >= 3; }, 5000))
        << pool.connect_failures();
    EXPECT_EQ(pool.connected(), 0u);
    Result r = Run(pool, {"PING"});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
    error = std::string(r.status().message());
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(error, HasSubstr("AUTH refused"));
  EXPECT_THAT(error, HasSubstr("WRONGPASS"));
  EXPECT_THAT(log, HasSubstr("AUTH refused"));
  EXPECT_THAT(log, Not(HasSubstr("event=redis_disconnected")));
  EXPECT_THAT(error + log, Not(HasSubstr("wrong-secret")));
}

// A Redis 6+ ACL user: AUTH user password.
TEST_F(RedisClientTest, AuthenticatesAsAnAclUser) {
  RedisPool admin(events(), timer(), Options());
  ASSERT_TRUE(WaitUntil([&] { return admin.connected() > 0; }, 5000));
  Result made = Run(admin, {"ACL", "SETUSER", "app", "on", ">app-pw", "~app:*", "+get", "+set"});
  ASSERT_TRUE(made.ok()) << made.status();
  ASSERT_EQ(made->type, Type::kStatus) << made->str;
  RedisPoolOptions o = Options();
  o.user = "app";
  o.password = "app-pw";
  auto pool = ConnectedPool(o);
  Result set = Run(*pool, {"SET", "app:k", "v"});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->type, Type::kStatus) << set->str;
  Result denied = Run(*pool, {"SET", "other:k", "v"});  // the server's ACL, not ours
  ASSERT_TRUE(denied.ok()) << denied.status();
  EXPECT_EQ(denied->type, Type::kError);
  EXPECT_THAT(denied->str, HasSubstr("NOPERM"));
}

TEST_F(RedisClientTest, ConnectsOverAUnixSocket) {
  auto server = mp::testing::RedisServer::Start({.unix_socket = true});
  ASSERT_TRUE(server.ok()) << server.status();
  server_ = std::move(*server);
  RedisPoolOptions o = Options();
  o.port = 1;  // unused: the socket is
  o.unix_path = server_->unix_path();
  auto pool = ConnectedPool(o);
  Result r = Run(*pool, {"PING"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->str, "PONG");
  // Gone: the errors name the socket.
  server_->Stop();
  EXPECT_TRUE(WaitUntil([&] { return pool->connected() == 0; }, 5000));
  Result down = Run(*pool, {"PING"});
  ASSERT_FALSE(down.ok());
  EXPECT_THAT(down.status().message(), HasSubstr("unix:" + o.unix_path));
}

}  // namespace
}  // namespace mp::host
