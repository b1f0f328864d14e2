// Services brokered by the host (docs/services.md), end to end: the real mphost, a real
// redis-server on a free loopback port (tests/support/redis_server.h), the dict module as a
// module service, and svc (tests/modules/svc_module.cc) driving the ABI from query parameters.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"
#include "tests/support/redis_server.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string ExtraModuleDir() { return MP_TEST_EXTRA_MODULE_DIR; }

// The value of the Prometheus sample whose line starts with `series` (labels included).
double Sample(const std::string& metrics, const std::string& series) {
  size_t at = metrics.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  at += series.size() + 2;
  return std::stod(metrics.substr(at, metrics.find('\n', at) - at));
}

class ServicesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto redis = RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = redis->release();
    const std::string cache = "\"cache\":{\"redis\":{\"address\":\"127.0.0.1:" +
                              std::to_string(redis_->port()) + "\",";
    dir_ = new TempDir();
    dir_->Write("words", "hello\nhelp\nhelm\nworld\nword\nthe\nquick\n");
    const std::string config =
        "{\"modules\":[" +
        Echo() +
        ",{\"name\":\"dict\",\"plugin\":\"" + ModuleDir() +
        "/libdict.so\",\"dataFiles\":{\"words\":\"" + dir_->path() + "/words\"},\"workers\":1}"
        ",{\"name\":\"svc\",\"plugin\":\"" + ExtraModuleDir() +
        "/libsvc.so\",\"workers\":5,\"callTimeoutMs\":1500,\"services\":{" + cache +
        "\"keyPrefix\":\"t:\",\"commands\":[\"GET\",\"SET\",\"INCR\",\"MGET\",\"PING\",\"HSET\"]},"
        "\"timeoutMs\":300},"
        "\"slow\":{\"redis\":{\"address\":\"127.0.0.1:" + std::to_string(redis_->port()) +
        "\",\"keyPrefix\":\"t:\",\"commands\":[\"PING\"]},\"timeoutMs\":60000},"
        "\"words\":{\"module\":\"dict\"},\"self\":{\"module\":\"svc\"}},"
        "\"serviceLimits\":{\"maxRequests\":50,\"maxBytesOutKb\":64,\"maxDepth\":3}}"
        ",{\"name\":\"spell\",\"plugin\":\"" + ModuleDir() + "/libspell.so\",\"workers\":1,"
        "\"services\":{" + cache + "\"keyPrefix\":\"spell:\",\"commands\":[\"MGET\",\"SET\"]}},"
        "\"words\":{\"module\":\"dict\"}}}"
        ",{\"name\":\"abi10\",\"plugin\":\"" + ExtraModuleDir() + "/libabi10.so\",\"workers\":1}"
        "]}";
    const std::string path = dir_->Write("mphost.json", config);
    host_ = new HostProcess(std::vector<std::string>{"--config", path});
    ASSERT_TRUE(host_->started()) << host_->Log();
  }
  static void TearDownTestSuite() {
    delete host_;
    host_ = nullptr;
    delete redis_;
    redis_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

  static HttpResponse Get(const std::string& target, int timeout_ms = 10000) {
    return HttpRequest(host_->port(), "GET", target, "", timeout_ms);
  }
  static std::string Metrics() { return Get("/metrics").body; }

  static RedisServer* redis_;
  static HostProcess* host_;
  static TempDir* dir_;
};

RedisServer* ServicesTest::redis_ = nullptr;
HostProcess* ServicesTest::host_ = nullptr;
TempDir* ServicesTest::dir_ = nullptr;

TEST_F(ServicesTest, RedisCommandsComeBackTyped) {
  EXPECT_EQ(Get("/m/svc/redis?a=SET&a=t:a&a=v%001").body, std::string("status:OK"));
  EXPECT_EQ(Get("/m/svc/redis?a=GET&a=t:a").body, std::string("str:v\0" "1", 7));
  EXPECT_EQ(Get("/m/svc/redis?a=GET&a=t:missing").body, "nil");
  Get("/m/svc/redis?a=SET&a=t:n&a=41");
  EXPECT_EQ(Get("/m/svc/redis?a=INCR&a=t:n").body, "int:42");
  EXPECT_EQ(Get("/m/svc/redis?a=MGET&a=t:n&a=t:missing").body, "[str:42,nil]");
  EXPECT_THAT(Get("/m/svc/redis?a=HSET&a=t:n&a=f&a=v").body, StartsWith("err:WRONGTYPE"));
  EXPECT_EQ(Get("/m/svc/redis?a=ping").body, "status:PONG");  // any case
}

TEST_F(ServicesTest, EveryKeyMustStartWithThePrefix) {
  HttpResponse r = Get("/m/svc/redis?a=GET&a=spell:w:hello");
  EXPECT_EQ(r.status, 502);
  EXPECT_THAT(r.body, HasSubstr("key_prefix: key 'spell:w:hello' (argument 1 of GET)"));
  r = Get("/m/svc/redis?a=MGET&a=t:ok&a=other");
  EXPECT_THAT(r.body, HasSubstr("key_prefix: key 'other' (argument 2 of MGET)"));
  r = Get("/m/svc/redis?a=SET&a=x&a=t:value-is-not-a-key");
  EXPECT_THAT(r.body, HasSubstr("key_prefix"));
  EXPECT_GE(Sample(Metrics(), "mphost_service_refused_total{module=\"svc\",service=\"cache\",rule=\"key_prefix\"}"), 3);
}

TEST_F(ServicesTest, OnlyListedCommandsPass) {
  for (const char* command : {"FLUSHALL", "KEYS", "DEL", "EVAL", "CONFIG"}) {
    HttpResponse r = Get(std::string("/m/svc/redis?a=") + command + "&a=t:x");
    EXPECT_EQ(r.status, 502) << command;
    EXPECT_THAT(r.body, HasSubstr("command_not_allowed: command '" + std::string(command) +
                                  "' is not allowed (allowed: GET SET INCR MGET PING HSET)"));
  }
  EXPECT_THAT(Get("/m/svc/redis?a=GET").body, HasSubstr("arguments: GET takes 1 arguments, got 0"));
  EXPECT_THAT(Get("/m/svc/redis?s=nope&a=PING").body,
              HasSubstr("unknown_service: module 'svc' was granted no service named 'nope'"));
  EXPECT_THAT(Get("/m/svc/redis?s=words&a=PING").body, HasSubstr("wrong_kind"));
}

TEST_F(ServicesTest, PerCallLimitsAreErrorsForTheHandlerNotCrashes) {
  const std::string before = Metrics();
  HttpResponse r = Get("/m/svc/ping?n=60");
  EXPECT_EQ(r.status, 502);
  EXPECT_THAT(r.body, HasSubstr("at 50: max_requests: the call has made its 50 service requests"));
  EXPECT_EQ(Get("/m/svc/ping?n=50").body, "ok 50");  // the count is per call
  r = Get("/m/svc/big?n=70000");
  EXPECT_THAT(r.body, HasSubstr("max_bytes_out"));
  EXPECT_EQ(Get("/m/svc/big?n=1000").body, "status:OK");
  // No worker ended for it.
  EXPECT_EQ(Sample(Metrics(), "mphost_worker_exits_total{module=\"svc\",cause=\"protocol\"}"),
            Sample(before, "mphost_worker_exits_total{module=\"svc\",cause=\"protocol\"}"));
}

TEST_F(ServicesTest, ModulesCallModulesThroughTheirPoolsUpToTheDepthLimit) {
  HttpResponse r = Get("/m/svc/call?s=words&p=/lookup&q=w%3Dhello");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "status 200\n{\"w\":\"hello\",\"found\":true}");
  EXPECT_THAT(Get("/m/svc/call?s=words&p=/lookup&q=w%3Dhelo").body, StartsWith("status 404\n"));
  // svc calls itself: depth 1, 2, 3, then the fourth is refused (maxDepth 3).
  r = Get("/m/svc/recurse?s=self");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, StartsWith("3 max_depth: the call is already 3 module calls deep"));
  EXPECT_THAT(Get("/m/svc/call?s=cache&p=/").body, HasSubstr("wrong_kind"));
}

TEST_F(ServicesTest, ASlowRedisCostsTheServiceTimeoutAndOtherModulesServeOn) {
  ASSERT_EQ(::kill(redis_->pid(), SIGSTOP), 0);
  HttpResponse r = Get("/m/svc/redis?a=GET&a=t:a");
  HttpResponse echo = Get("/m/echo/x");
  ::kill(redis_->pid(), SIGCONT);
  EXPECT_EQ(r.status, 502);
  EXPECT_THAT(r.body, HasSubstr("timeout: redis 127.0.0.1:" + std::to_string(redis_->port()) +
                                " did not answer within 300 ms"));
  EXPECT_EQ(echo.status, 200);
  EXPECT_TRUE(Eventually([&] { return Get("/m/svc/redis?a=PING").body == "status:PONG"; }, 5000));
}

TEST_F(ServicesTest, TheCallsDeadlineCancelsItsServiceRequestsAndTheWorkerServesOn) {
  const std::string before = Metrics();
  // Redis stops answering, and the service allows 60 s: the call's own deadline (1500 ms)
  // ends the wait. The host answers 504 and cancels the request in flight; the handler's
  // request returns "cancelled", it returns, and its worker is not killed.
  ASSERT_EQ(::kill(redis_->pid(), SIGSTOP), 0);
  const auto started = std::chrono::steady_clock::now();
  HttpResponse r = Get("/m/svc/redis?s=slow&a=PING");
  const auto took = std::chrono::steady_clock::now() - started;
  ::kill(redis_->pid(), SIGCONT);
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_THAT(r.body, HasSubstr("missed its deadline of 1500 ms"));
  EXPECT_LT(took, std::chrono::milliseconds(4000));
  EXPECT_TRUE(Eventually([&] { return Get("/m/svc/redis?a=PING").status == 200; }, 3000));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));  // past the cancel grace
  EXPECT_EQ(Sample(Metrics(), "mphost_worker_exits_total{module=\"svc\",cause=\"deadline\"}"),
            Sample(before, "mphost_worker_exits_total{module=\"svc\",cause=\"deadline\"}"));
}

TEST_F(ServicesTest, ARedisRestartFailsSomeRequestsCleanlyAndServiceComesBack) {
  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed_cleanly{0}, other{0}, echo_failed{0};
  std::thread load([&] {
    for (int i = 0; i < 20000 && !done; ++i) {
      HttpResponse r = Get("/m/svc/redis?a=INCR&a=t:restart", 5000);
      if (r.status == 200) {
        ++ok;
      } else if (r.status == 502 && r.body.rfind("service failed: ", 0) == 0) {
        ++failed_cleanly;
      } else {
        ++other;
      }
      if (Get("/m/echo/x", 5000).status != 200) ++echo_failed;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_TRUE(redis_->Restart().ok());
  const bool back = Eventually([&] { return Get("/m/svc/redis?a=GET&a=t:restart").status == 200; }, 10000);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  done = true;
  load.join();
  EXPECT_TRUE(back);
  EXPECT_GT(ok.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(echo_failed.load(), 0);
  const std::string metrics = Metrics();
  EXPECT_GE(Sample(metrics, "mphost_service_redis_reconnects_total{module=\"svc\",service=\"cache\"}"), 1);
  EXPECT_THAT(host_->Log(), HasSubstr("event=redis_"));
}

TEST_F(ServicesTest, SpellChecksThroughDictAndCachesInRedis) {
  HttpResponse r = Get("/m/spell/check?text=Helo+world%2C+hello+wrld");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, HasSubstr("\"words\":4"));
  EXPECT_THAT(r.body, HasSubstr("{\"word\":\"helo\",\"suggestions\":[\"hello\",\"helm\",\"help\"]}"));
  EXPECT_THAT(r.body, HasSubstr("\"word\":\"wrld\""));
  r = Get("/m/spell/check?text=helo+world+hello+wrld");
  EXPECT_THAT(r.body, HasSubstr("\"cache\":{\"hits\":4,\"misses\":0}"));
  // The other module cannot read spell's keys.
  EXPECT_THAT(Get("/m/svc/redis?a=GET&a=spell:w:helo").body, HasSubstr("key_prefix"));
}

TEST_F(ServicesTest, AModuleBuiltAgainstAbi10LoadsAndServes) {
  HttpResponse r = HttpRequest(host_->port(), "POST", "/m/abi10/path", "body");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "built against ABI 1.0 /path body");
}

TEST_F(ServicesTest, MetricsAndMpctlShowServiceRequests) {
  Get("/m/svc/redis?a=PING");
  const std::string metrics = Metrics();
  EXPECT_GT(Sample(metrics, "mphost_service_requests_total{module=\"svc\",service=\"cache\",result=\"ok\"}"), 0);
  EXPECT_GT(Sample(metrics, "mphost_service_request_seconds_count{module=\"svc\",service=\"cache\"}"), 0);
  EXPECT_GE(Sample(metrics, "mphost_service_redis_connections{module=\"svc\",service=\"cache\"}"), 1);
  CommandResult ps = host_->Mpctl({"ps"});
  EXPECT_EQ(ps.exit_code, 0) << ps.err;
  EXPECT_THAT(ps.out, HasSubstr("SVC"));
  CommandResult modules = host_->Mpctl({"modules", "--json"});
  EXPECT_THAT(modules.out, HasSubstr("\"service_requests\""));
  EXPECT_THAT(modules.out, HasSubstr("\"target\":\"dict\""));
}

// The same services whoever the host runs as: root (CI), or an unprivileged user (production).
struct Who {
  const char* name;
  bool unprivileged;
};

// A Redis that requires a password, reached over its Unix socket: the host AUTHs each
// connection with the password from passwordFile (relative to the config), which appears in no
// log. A wrong one leaves the handler a clear error, and other modules serve on.
TEST(ServicesAuthTest, APasswordFileAndAUnixSocketReachAProtectedRedis) {
  auto redis = RedisServer::Start({.password = "pw-7f3a", .unix_socket = true});
  ASSERT_TRUE(redis.ok()) << redis.status();
  TempDir dir;
  dir.Write("right.pw", "pw-7f3a\n");
  dir.Write("wrong.pw", "not-the-pw\n");
  auto config = [&](const std::string& password_file) {
    return dir.Write("mphost-" + password_file + ".json",
                     "{\"modules\":[" + Echo() + ",{\"name\":\"svc\",\"plugin\":\"" +
                         ExtraModuleDir() +
                         "/libsvc.so\",\"workers\":1,\"services\":{\"cache\":{\"redis\":{"
                         "\"address\":\"unix:" + (*redis)->unix_path() +
                         "\",\"passwordFile\":\"" + password_file +
                         "\",\"keyPrefix\":\"a:\",\"commands\":[\"SET\",\"GET\"]}}}}]}");
  };
  {
    HostProcess host(std::vector<std::string>{"--config", config("right.pw")});
    ASSERT_TRUE(host.started()) << host.Log();
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/svc/redis?a=SET&a=a:k&a=v").body, "status:OK");
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/svc/redis?a=GET&a=a:k").body, "str:v");
    EXPECT_EQ(host.Stop(), 0);
    EXPECT_THAT(host.Log(), HasSubstr("address=unix:" + (*redis)->unix_path()));
    EXPECT_THAT(host.Log(), Not(HasSubstr("pw-7f3a")));
  }
  HostProcess host(std::vector<std::string>{"--config", config("wrong.pw")});
  ASSERT_TRUE(host.started()) << host.Log();
  // Before the first refusal, a request would find the connection still starting.
  ASSERT_TRUE(Eventually([&] {
    return host.Log().find("event=redis_connect_failed") != std::string::npos;
  })) << host.Log();
  const HttpResponse refused = HttpRequest(host.port(), "GET", "/m/svc/redis?a=GET&a=a:k");
  EXPECT_EQ(refused.status, 502);
  EXPECT_THAT(refused.body, HasSubstr("AUTH refused: WRONGPASS"));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/x").status, 200);
  EXPECT_GE(Sample(HttpRequest(host.port(), "GET", "/metrics").body,
                   "mphost_service_redis_connect_failures_total{module=\"svc\",service=\"cache\"}"),
            1);
  // Rotated: the file now holds the server's password, and a config reload (SIGHUP) reads it.
  dir.Write("wrong.pw", "pw-7f3a\n");
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  ASSERT_TRUE(Eventually([&] {
    return host.Log().find("event=config_reloaded") != std::string::npos;
  })) << host.Log();
  EXPECT_TRUE(Eventually([&] {
    return HttpRequest(host.port(), "GET", "/m/svc/redis?a=SET&a=a:k&a=rotated").body ==
           "status:OK";
  })) << host.Log();
  EXPECT_EQ(host.Stop(), 0);
  EXPECT_THAT(host.Log(), HasSubstr("event=redis_connect_failed"));
  EXPECT_THAT(host.Log(), Not(HasSubstr("not-the-pw")));
}

class ServicesWhoTest : public ::testing::TestWithParam<Who> {};

TEST_P(ServicesWhoTest, GrantsHoldWhateverUserTheHostIs) {
  if (GetParam().unprivileged && ::getuid() != 0) GTEST_SKIP() << "already unprivileged";
  auto redis = RedisServer::Start();
  ASSERT_TRUE(redis.ok()) << redis.status();
  StagedInstall staged({ExtraModuleDir() + "/libsvc.so"});
  const uid_t uid = GetParam().unprivileged ? kUnprivilegedUid : 0;
  const std::string dir = staged.MakeDirFor(uid, "config");
  std::ofstream(dir + "/mphost.json")
      << "{\"modules\":[{\"name\":\"svc\",\"plugin\":\"" << staged.module_dir()
      << "/libsvc.so\",\"workers\":1,\"services\":{\"cache\":{\"redis\":{\"address\":"
         "\"127.0.0.1:"
      << (*redis)->port()
      << "\",\"keyPrefix\":\"w:\",\"commands\":[\"SET\",\"GET\",\"PING\"]}}},"
         "\"serviceLimits\":{\"maxRequestsPerSecond\":20}}]}";
  HostOptions options;
  options.args = {"--config", dir + "/mphost.json"};
  options.uid = uid;
  options.bin_dir = staged.bin_dir();
  HostProcess host(std::move(options));
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/svc/redis?a=SET&a=w:k&a=v").body, "status:OK");
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/svc/redis?a=GET&a=w:k").body, "str:v");
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/m/svc/redis?a=GET&a=k").body,
              HasSubstr("key_prefix"));
  // 20 requests a second for the whole module, a bucket of one second's worth: past it, requests
  // wait their turn (the worker sleeps) rather than fail, so 60 PINGs take at least 2 s.
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/svc/ping?n=60").body, "ok 60");
  EXPECT_GE(std::chrono::steady_clock::now() - started, std::chrono::milliseconds(1900));
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/metrics").body,
              HasSubstr("service=\"cache\",rule=\"max_rate\"} 0\n"));
  EXPECT_EQ(host.Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(Who, ServicesWhoTest,
                         ::testing::Values(Who{"as_test_user", false},
                                           Who{"as_unprivileged_user", true}),
                         [](const ::testing::TestParamInfo<Who>& info) { return info.param.name; });

}  // namespace
}  // namespace mp::testing
