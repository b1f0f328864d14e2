// mphost as an operator runs it: config reloads, early binding and readiness, signals,
// systemd's socket activation and sd_notify, descriptor exhaustion and connection limits.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// Waits (bounded) until the host's log holds `needle` `times` times.
bool LogHas(HostProcess& host, const std::string& needle, size_t times = 1, int ms = 20000) {
  return Eventually([&] { return Count(host.Log(), needle) >= times; }, ms);
}

std::string Config(const std::string& modules, const std::string& extra = "") {
  return "{" + extra + (extra.empty() ? "" : ",") + "\"modules\":[" + modules + "]}";
}

// ---- Config reload ----

TEST(ConfigReloadTest, SighupAppliesTheDifferenceAndABadFileChangesNothing) {
  TempDir dir;
  const std::string config = dir.Write(
      "mphost.json", Config(Echo(",\"workers\":1,\"maxWorkers\":1,\"options\":{\"greeting\":\"one\"}")));
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/m/echo/").body, StartsWith("one\n"));

  // Pool, an added module, a route and the access log: no new echo generation.
  dir.Write("mphost.json",
            Config(Echo(",\"workers\":3,\"maxWorkers\":3,\"options\":{\"greeting\":\"one\"}") + "," +
                       Misbehave(""),
                   "\"accessLog\":true,\"routes\":[{\"prefix\":\"/api/\",\"module\":\"misbehave\"}]"));
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  ASSERT_TRUE(LogHas(host, "event=config_reloaded")) << host.Log();
  EXPECT_THAT(host.Log(), HasSubstr("echo: pool 1-1 -> 3-3"));
  EXPECT_THAT(host.Log(), HasSubstr("misbehave: added"));
  EXPECT_TRUE(Eventually([&] { return WorkerPids(host.Mpctl({"ps", "--json"}).out, "echo").size() == 3; }))
      << host.Mpctl({"ps"}).out;
  EXPECT_EQ(JsonNumber(host.Mpctl({"heap", "echo", "--json"}).out, "generation"), 1u);
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/misbehave/ok").status, 200);
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/api/ok").status, 200);
  // The access log is on; its line is written once the answer has gone, so it may come after.
  EXPECT_TRUE(LogHas(host, "target=/api/ok", 1, 5000)) << host.Log();

  // A changed option: a new generation. A removed module: 404 at once.
  dir.Write("mphost.json",
            Config(Echo(",\"workers\":3,\"maxWorkers\":3,\"options\":{\"greeting\":\"two\"}")));
  CommandResult r = host.Mpctl({"reload", "--config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("echo: generation 2"));
  EXPECT_THAT(r.out, HasSubstr("misbehave: removed"));
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/m/echo/").body, StartsWith("two\n"));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/misbehave/ok").status, 404);
  EXPECT_TRUE(LogHas(host, "event=module_removed module=misbehave"));

  // A bad file: nothing changes, and the error names the place.
  dir.Write("mphost.json", Config(Echo(",\"workers\":-1")));
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  ASSERT_TRUE(LogHas(host, "event=config_reload_failed")) << host.Log();
  EXPECT_THAT(host.Log(), HasSubstr("modules[0].workers"));
  r = host.Mpctl({"reload", "--config"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("modules[0].workers"));
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/m/echo/").body, StartsWith("two\n"));

  // What cannot change without a restart says so.
  dir.Write("mphost.json", Config(Echo(",\"workers\":3,\"maxWorkers\":3,\"options\":{\"greeting\":\"two\"}"),
                                  "\"listen\":\"127.0.0.1:1\""));
  r = host.Mpctl({"reload", "--config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("echo: unchanged"));
  // --listen on the command line wins over the file: nothing to restart for.
  EXPECT_THAT(r.out, Not(HasSubstr("listen: needs a restart")));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
}

TEST(ConfigReloadTest, AChangedDataFileMakesANewGenerationAnUnchangedOneDoesNot) {
  TempDir dir;
  const std::string greeting = dir.Write("greeting", "one\n");
  const std::string config = dir.Write(
      "mphost.json", Config(Echo(",\"dataFiles\":{\"greeting\":\"" + greeting + "\"}")));
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  ASSERT_TRUE(LogHas(host, "event=config_reloaded")) << host.Log();
  EXPECT_THAT(host.Log(), HasSubstr("changes=\"echo: unchanged\""));
  // Rewritten in place (same inode, new size and mtime).
  std::ofstream(greeting) << "two, rewritten\n";
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  ASSERT_TRUE(LogHas(host, "event=config_reloaded", 2)) << host.Log();
  EXPECT_THAT(host.Log(), HasSubstr("echo: generation 2"));
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/m/echo/").body, StartsWith("two, rewritten\n"));
}

// ---- Startup and readiness ----

TEST(StartupTest, SocketsAreBoundBeforeAnyModuleIsBuilt) {
  TempDir dir;
  const std::string config = dir.Write(
      "mphost.json",
      Config(Echo() + "," + Misbehave(",\"buildTimeoutMs\":4000,\"options\":{\"build\":\"spin\"}")));
  HostOptions options;
  options.args = {"--config", config};
  options.wait_serving = false;
  HostProcess host(std::move(options));
  ASSERT_TRUE(host.started()) << host.Log();
  ASSERT_THAT(host.Log(), Not(HasSubstr("event=serving")));  // misbehave's build spins for 4 s
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/healthz").status, 200);
  HttpResponse ready = HttpRequest(host.port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_TRUE(ParsesAsJson(ready.body)) << ready.body;
  EXPECT_THAT(ready.body, HasSubstr("{\"name\":\"misbehave\",\"state\":\"starting\""));
  HttpResponse call = HttpRequest(host.port(), "GET", "/m/misbehave/ok");
  EXPECT_EQ(call.status, 503);
  EXPECT_THAT(call.body, HasSubstr("module 'misbehave' is starting"));
  EXPECT_EQ(host.Mpctl({"status"}).exit_code, 0);
  // The build gives up; misbehave is critical, so the host stays out of rotation.
  ASSERT_TRUE(LogHas(host, "event=serving modules=2 failed=1")) << host.Log();
  ready = HttpRequest(host.port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_THAT(ready.body, HasSubstr("{\"name\":\"misbehave\",\"state\":\"failed\""));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
}

TEST(StartupTest, ANonCriticalModuleDoesNotHoldReadiness) {
  TempDir dir;
  const std::string config = dir.Write(
      "mphost.json",
      Config(Echo() + "," + Misbehave(",\"critical\":false,\"options\":{\"build\":\"crash\"}")));
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  HttpResponse ready = HttpRequest(host.port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 200) << ready.body;
  EXPECT_THAT(ready.body,
              HasSubstr("{\"name\":\"misbehave\",\"state\":\"failed\",\"ready\":false,\"critical\":false}"));
}

TEST(StartupTest, ABusyPortFailsAtOnceNamingTheAddress) {
  int port = 0;
  const int busy = ListenLoopback(&port);
  ASSERT_GE(busy, 0);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  TempDir dir;
  CommandResult r = RunCommand({BinDir() + "/mphost", "--listen", address, "--control",
                                dir.path() + "/c.sock"},
                               5000);  // bounded: it must not wait for any module
  ::close(busy);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("event=listen_failed"));
  EXPECT_THAT(r.err, HasSubstr(address));
  EXPECT_THAT(r.err, HasSubstr("Address already in use"));
  EXPECT_THAT(r.err, Not(HasSubstr("event=module_loaded")));
}

// ---- Signals ----

TEST(SignalTest, Usr1ReopensTheAccessLogAndUsr2IsIgnored) {
  TempDir dir;
  const std::string access = dir.path() + "/access.log";
  HostProcess host({"--config", dir.Write("mphost.json", Config(Echo(), "\"accessLogFile\":\"" + access + "\""))});
  ASSERT_TRUE(host.started()) << host.Log();
  ASSERT_EQ(HttpRequest(host.port(), "GET", "/m/echo/first").status, 200);
  ASSERT_EQ(::rename(access.c_str(), (access + ".1").c_str()), 0);  // logrotate
  ASSERT_EQ(HttpRequest(host.port(), "GET", "/m/echo/second").status, 200);
  ASSERT_EQ(::kill(host.pid(), SIGUSR1), 0);
  ASSERT_TRUE(LogHas(host, "event=logs_reopened")) << host.Log();
  ASSERT_EQ(HttpRequest(host.port(), "GET", "/m/echo/third").status, 200);
  // Each line is written once its answer has gone: it may follow the answer by a moment.
  EXPECT_TRUE(Eventually([&] { return ReadFile(access).find("target=/m/echo/third") != std::string::npos; }));
  const std::string rotated = ReadFile(access + ".1"), fresh = ReadFile(access);
  EXPECT_THAT(rotated, HasSubstr("target=/m/echo/first"));
  EXPECT_THAT(rotated, HasSubstr("target=/m/echo/second"));
  EXPECT_THAT(fresh, HasSubstr("target=/m/echo/third"));
  EXPECT_THAT(fresh, Not(HasSubstr("target=/m/echo/second")));

  ASSERT_EQ(::kill(host.pid(), SIGUSR2), 0);
  ASSERT_TRUE(LogHas(host, "event=signal_ignored signal=SIGUSR2")) << host.Log();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
}

TEST(SignalTest, Usr1ReopensTheLogFileAReloadMovedEventsTo) {
  TempDir dir;
  const std::string config = dir.Write("mphost.json", Config(Echo()));
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  // A reload sends the host's events to a file from then on.
  const std::string log = dir.path() + "/mphost.log";
  dir.Write("mphost.json", Config(Echo(), "\"logFile\":\"" + log + "\""));
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  ASSERT_TRUE(Eventually([&] { return ReadFile(log).find("event=config_reloaded") != std::string::npos; }))
      << host.Log() << ReadFile(log);
  ASSERT_EQ(::rename(log.c_str(), (log + ".1").c_str()), 0);  // logrotate
  ASSERT_EQ(::kill(host.pid(), SIGUSR1), 0);
  ASSERT_TRUE(Eventually([&] { return ReadFile(log).find("event=logs_reopened") != std::string::npos; }))
      << ReadFile(log + ".1");
  EXPECT_THAT(ReadFile(log), HasSubstr("files=" + log));
  EXPECT_THAT(ReadFile(log + ".1"), HasSubstr("event=config_reloaded"));
  EXPECT_THAT(ReadFile(log + ".1"), Not(HasSubstr("event=logs_reopened")));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
}

TEST(SignalTest, TermDrainsTheCallsInFlight) {
  TempDir dir;
  HostProcess host({"--config", dir.Write("mphost.json", Config(Misbehave("")))});
  ASSERT_TRUE(host.started()) << host.Log();
  std::atomic<int> status{0};
  std::thread slow([&] { status = HttpRequest(host.port(), "GET", "/m/misbehave/sleep?ms=1500").status; });
  // TERM once the call is on a worker (however slow this machine is to send it).
  ASSERT_TRUE(Eventually([&] {
    return host.Mpctl({"ps", "--json"}).out.find("\"state\":\"busy\"") != std::string::npos;
  })) << host.Log();
  ASSERT_EQ(::kill(host.pid(), SIGTERM), 0);
  // One TERM only: Stop() would send its own, a second and immediate stop.
  EXPECT_EQ(host.WaitExit(15000), 0) << host.Log();
  slow.join();
  EXPECT_EQ(status.load(), 200);
  EXPECT_THAT(host.Log(), HasSubstr("event=stop_requested by=SIGTERM"));
  EXPECT_THAT(host.Log(), HasSubstr("event=stopped graceful=yes"));
}

TEST(SignalTest, ASecondTermStopsAtOnce) {
  TempDir dir;
  HostProcess host({"--config", dir.Write("mphost.json", Config(Misbehave("")))});
  ASSERT_TRUE(host.started()) << host.Log();
  std::thread slow([&] { HttpRequest(host.port(), "GET", "/m/misbehave/sleep?ms=8000"); });
  ASSERT_TRUE(Eventually([&] {
    return host.Mpctl({"ps", "--json"}).out.find("\"state\":\"busy\"") != std::string::npos;
  })) << host.Log();
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(host.pid(), SIGTERM), 0);
  ASSERT_TRUE(LogHas(host, "event=draining")) << host.Log();
  ASSERT_EQ(::kill(host.pid(), SIGTERM), 0);
  ASSERT_TRUE(LogHas(host, "event=stopped graceful=no", 1, 6000)) << host.Log();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(6));  // not the 8 s call
  EXPECT_THAT(host.Log(), HasSubstr("event=stop_now"));
  EXPECT_EQ(host.Stop(), 0);
  slow.join();
}

TEST(SignalTest, QuitIsGraceful) {
  HostProcess host;
  ASSERT_TRUE(host.started()) << host.Log();
  ASSERT_EQ(::kill(host.pid(), SIGQUIT), 0);
  ASSERT_TRUE(LogHas(host, "event=stopped graceful=yes")) << host.Log();
  EXPECT_EQ(host.Stop(), 0);
}

// ---- systemd ----

TEST(SystemdTest, NotifiesReadyReloadingAndStopping) {
  TempDir dir;
  const std::string path = dir.path() + "/notify.sock";
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  std::string got;
  auto receive_until = [&](const std::string& needle) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (got.find(needle) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) got.append(buf, static_cast<size_t>(n)).append("|");
    }
    return got.find(needle) != std::string::npos;
  };
  HostOptions options;
  options.env = {"NOTIFY_SOCKET=" + path};
  HostProcess host(std::move(options));
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_TRUE(receive_until("READY=1")) << got;
  EXPECT_THAT(got, HasSubstr("STATUS=serving 2 of 2 modules"));
  got.clear();
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  EXPECT_TRUE(receive_until("READY=1")) << got;
  EXPECT_THAT(got, HasSubstr("RELOADING=1\nMONOTONIC_USEC="));
  got.clear();
  ASSERT_EQ(::kill(host.pid(), SIGTERM), 0);
  EXPECT_TRUE(receive_until("STOPPING=1")) << got;
  EXPECT_EQ(host.Stop(), 0);
  ::close(fd);
}

TEST(SystemdTest, ServesOnSocketsHandedOver) {
  TempDir dir;
  int port = 0;
  const int http = ListenLoopback(&port);
  ASSERT_GE(http, 0);
  const std::string control = dir.path() + "/activated.sock";
  int ctl = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  std::snprintf(u.sun_path, sizeof u.sun_path, "%s", control.c_str());
  ASSERT_EQ(::bind(ctl, reinterpret_cast<sockaddr*>(&u), sizeof u), 0);
  ASSERT_EQ(::listen(ctl, 8), 0);

  HostOptions options;
  options.activation_fds = {ctl, http};  // in the "wrong" order: the names tell them apart
  options.activation_names = "control:http";
  HostProcess host(std::move(options));
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_EQ(host.port(), port);
  EXPECT_THAT(host.Log(), HasSubstr("socket_activation=yes"));
  EXPECT_EQ(HttpRequest(port, "GET", "/m/echo/").status, 200);
  CommandResult status = RunCommand({BinDir() + "/mpctl", "--control", control, "status"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_EQ(::access(host.control().c_str(), F_OK), -1);  // --control was not bound
  EXPECT_EQ(host.Stop(), 0);
  EXPECT_EQ(::access(control.c_str(), F_OK), 0);  // systemd's socket is left to systemd
  ::close(http);
  ::close(ctl);
}

TEST(SystemdTest, ADescriptorThatIsNotASocketIsRefusedByName) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  HostOptions options;
  options.activation_fds = {pipe_fds[0]};
  HostProcess host(std::move(options));
  EXPECT_FALSE(host.started());
  EXPECT_EQ(host.Stop(), 2);
  EXPECT_THAT(host.Log(), HasSubstr("LISTEN_FDS descriptor 3 is not a listening stream socket"));
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
}

// ---- Descriptors and connections ----

TEST(ConnectionTest, OutOfDescriptorsTheListenerKeepsServing) {
  HostOptions options;
  options.nofile = 96;  // the host's hard limit too: it cannot raise it
  HostProcess host(std::move(options));
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_THAT(host.Log(), HasSubstr("event=fd_limit soft_was=96 soft=96 hard=96"));
  std::vector<int> idle;
  for (int i = 0; i < 150; ++i) {
    const int fd = ConnectLoopback(host.port());
    if (fd >= 0) idle.push_back(fd);
  }
  // New clients are served while the host is out of descriptors: it sheds idle connections.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/", "", 5000).status, 200) << i;
  }
  EXPECT_TRUE(LogHas(host, "event=accept_error what=out_of_descriptors")) << host.Log();
  for (int fd : idle) ::close(fd);
  EXPECT_TRUE(Eventually([&] { return HttpRequest(host.port(), "GET", "/m/echo/").status == 200; }));
  const std::string metrics = HttpRequest(host.port(), "GET", "/metrics").body;
  EXPECT_THAT(metrics, Not(HasSubstr("mphost_accept_errors_total{reason=\"resources\"} 0\n")));
  EXPECT_THAT(metrics, Not(HasSubstr("mphost_connections_shed_total 0\n")));
}

TEST(ConnectionTest, MaxConnectionsShedsTheOldestIdleConnection) {
  TempDir dir;
  HostProcess host({"--config", dir.Write("mphost.json", Config(Echo(), "\"maxConnections\":3"))});
  ASSERT_TRUE(host.started()) << host.Log();
  const std::string request = "GET /m/echo/ HTTP/1.1\r\nHost: x\r\n\r\n";
  std::vector<int> kept;
  for (int i = 0; i < 3; ++i) {
    const int fd = ConnectLoopback(host.port());
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    std::string got;
    ASSERT_TRUE(ReadUntil(fd, "GET /\n", 5000, &got)) << got;
    kept.push_back(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // distinct idle times
  }
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);  // a fourth client
  EXPECT_TRUE(LogHas(host, "event=connection_shed")) << host.Log();
  char byte;
  pollfd p{kept[0], POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 2000), 1);
  EXPECT_EQ(::read(kept[0], &byte, 1), 0);  // the oldest idle one was closed
  for (int fd : kept) ::close(fd);
}

// ---- HTTP details ----

class HttpDetailsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    access_ = dir_.path() + "/access.log";
    host_ = std::make_unique<HostProcess>(std::vector<std::string>{
        "--config",
        dir_.Write("mphost.json",
                   Config(Echo(",\"maxBodyKb\":4"),
                          "\"headerTimeoutMs\":400,\"trustedProxies\":[\"127.0.0.1\"],"
                          "\"accessLogFile\":\"" + access_ + "\""))});
    ASSERT_TRUE(host_->started()) << host_->Log();
  }
  int Open() {
    const int fd = ConnectLoopback(host_->port());
    EXPECT_GE(fd, 0);
    return fd;
  }
  static void Send(int fd, const std::string& bytes) {
    ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
  }
  TempDir dir_;
  std::string access_;
  std::unique_ptr<HostProcess> host_;
};

TEST_F(HttpDetailsTest, BareLineFeedAndPipelinedHeadsGetNo408) {
  const int fd = Open();
  Send(fd, "GET /m/echo/a HTTP/1.1\nHost: x\n\n");
  std::string got;
  ASSERT_TRUE(ReadUntil(fd, "GET /a\n", 3000, &got)) << got;
  // Two pipelined requests in one write, then one whose head ends in the next write.
  Send(fd, "GET /m/echo/b HTTP/1.1\nHost: x\n\nGET /m/echo/c HTTP/1.1\r\nHost: x\r\n\r\nGET /m/echo/d HTTP/1.1\r\nHost: x\r\n\r");
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  Send(fd, "\n");
  ASSERT_TRUE(ReadUntil(fd, "GET /d\n", 3000, &got)) << got;
  got += ReadFor(fd, 900);  // past the 400 ms header timeout, idle
  EXPECT_THAT(got, Not(HasSubstr("408")));
  EXPECT_EQ(Count(got, "HTTP/1.1 200 OK"), 4u) << got;
  Send(fd, "GET /m/echo/e HTTP/1.1\r\nHost: x\r\n\r\n");  // still open
  EXPECT_TRUE(ReadUntil(fd, "GET /e\n", 3000, &got)) << got;
  ::close(fd);
}

TEST_F(HttpDetailsTest, ExpectContinueGetsAnInterimResponseOrTheFinalStatus) {
  int fd = Open();
  Send(fd, "POST /m/echo/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  std::string got;
  ASSERT_TRUE(ReadUntil(fd, "HTTP/1.1 100 Continue\r\n\r\n", 3000, &got)) << got;
  Send(fd, "hello");
  ASSERT_TRUE(ReadUntil(fd, "POST /up\nhello", 3000, &got)) << got;
  EXPECT_THAT(got, HasSubstr("HTTP/1.1 200 OK"));
  ::close(fd);

  fd = Open();  // too large: the final status at once, no 100
  got.clear();
  Send(fd, "POST /m/echo/up HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_TRUE(ReadUntil(fd, "maxBody", 3000, &got) || ReadUntil(fd, "limit", 100, &got)) << got;
  EXPECT_THAT(got, StartsWith("HTTP/1.1 413 "));
  EXPECT_THAT(got, Not(HasSubstr("100 Continue")));
  ::close(fd);

  fd = Open();  // no such module: 404 at once
  got.clear();
  Send(fd, "POST /m/nope/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_TRUE(ReadUntil(fd, "no module named", 3000, &got)) << got;
  EXPECT_THAT(got, StartsWith("HTTP/1.1 404 "));
  ::close(fd);
}

TEST_F(HttpDetailsTest, AnAbsoluteFormTargetIsRoutedAsOriginForm) {
  const int fd = Open();
  Send(fd, "GET http://example.com:8080/m/echo/abs?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n");
  std::string got;
  EXPECT_TRUE(ReadUntil(fd, "GET /abs\n", 3000, &got)) << got;
  EXPECT_THAT(got, StartsWith("HTTP/1.1 200 "));
  ::close(fd);
}

TEST_F(HttpDetailsTest, ResponsesCarryDateAndARequestIdTheModuleSees) {
  int fd = Open();
  Send(fd, "GET /m/echo/ HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc-123.x\r\n\r\n");
  std::string got;
  ASSERT_TRUE(ReadUntil(fd, "GET /\n", 3000, &got)) << got;
  EXPECT_THAT(got, HasSubstr("X-Request-Id: abc-123.x\r\n"));
  EXPECT_THAT(got, HasSubstr("X-Echo-Request-Id: abc-123.x\r\n"));
  EXPECT_TRUE(std::regex_search(got, std::regex("\r\nDate: [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} "
                                                "[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT\r\n")))
      << got;
  ::close(fd);
  // An unusable id (a space, a quote) is replaced by a fresh one, the same the module saw.
  HttpResponse r = HttpRequest(host_->port(), "GET", "/m/echo/");
  const std::string id = r.headers["x-request-id"];
  EXPECT_TRUE(std::regex_match(id, std::regex("[0-9a-f]{16}"))) << id;
  EXPECT_EQ(r.headers["x-echo-request-id"], id);
  // The host's own answers carry them too.
  HttpResponse missing = HttpRequest(host_->port(), "GET", "/nowhere");
  EXPECT_EQ(missing.status, 404);
  EXPECT_FALSE(missing.headers["date"].empty());
  EXPECT_FALSE(missing.headers["x-request-id"].empty());
}

TEST_F(HttpDetailsTest, TheAccessLogNamesTheClientAndTheHostsOwnAnswers) {
  int fd = Open();
  Send(fd, "GET /m/echo/x?a=1&b=two HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-For: 203.0.113.9, 127.0.0.1\r\nX-Request-Id: r-1\r\n\r\n");
  std::string got;
  ASSERT_TRUE(ReadUntil(fd, "GET /x\n", 3000, &got)) << got;
  ::close(fd);
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/nope/y").status, 404);
  std::string log;
  ASSERT_TRUE(Eventually([&] {
    log = ReadFile(access_);
    return Count(log, "event=access") >= 2;
  })) << log;
  EXPECT_THAT(log, HasSubstr("level=info event=access client=203.0.113.9 peer=127.0.0.1 request_id=r-1 "
                             "method=GET target=\"/m/echo/x?a=1&b=two\" host=api.example module=echo "
                             "status=200 bytes="));
  EXPECT_TRUE(std::regex_search(log, std::regex("target=/m/nope/y host=127.0.0.1 module=\"\" status=404 "
                                                "bytes=[0-9]+ ms=[0-9.]+ worker=0 cause=no_module")))
      << log;
}

// ---- Metrics ----

TEST(OperationsMetricsTest, EverySeriesIsThereFromTheStart) {
  HostProcess host;
  ASSERT_TRUE(host.started()) << host.Log();
  const std::string m = HttpRequest(host.port(), "GET", "/metrics").body;
  for (const char* series : {
           "mphost_build_info{version=\"0.2.0\"} 1\n",
           "mphost_ready 1\n",
           "process_cpu_seconds_total ",
           "process_resident_memory_bytes ",
           "process_open_fds ",
           "process_max_fds ",
           "process_start_time_seconds ",
           "mphost_module_state{module=\"echo\",state=\"serving\"} 1\n",
           "mphost_module_state{module=\"echo\",state=\"failed\"} 0\n",
           "mphost_module_builds_total{module=\"echo\",result=\"ok\"} 1\n",
           "mphost_module_builds_total{module=\"echo\",result=\"failed\"} 0\n",
           "mphost_module_build_duration_seconds_count{module=\"echo\"} 1\n",
           "mphost_module_reloads_total{module=\"echo\",result=\"ok\"} 0\n",
           "mphost_unavailable_total{module=\"echo\",cause=\"queue_full\"} 0\n",
           "mphost_unavailable_total{module=\"echo\",cause=\"no_worker\"} 0\n",
           "mphost_calls_total{module=\"echo\",status=\"503\"} 0\n",
           "mphost_worker_exits_total{module=\"echo\",cause=\"signal\"} 0\n",
           "mphost_config_reloads_total{result=\"ok\"} 0\n",
           "mphost_accept_errors_total{reason=\"resources\"} 0\n",
           "mphost_connections_open ",
           "mphost_queue_depth{module=\"echo\"} 0\n",
           "mphost_workers{module=\"echo\",state=\"ready\"} 2\n",
       }) {
    EXPECT_THAT(m, HasSubstr(series));
  }
  ASSERT_EQ(::kill(host.pid(), SIGHUP), 0);
  ASSERT_TRUE(LogHas(host, "event=config_reloaded")) << host.Log();
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/metrics").body,
              HasSubstr("mphost_config_reloads_total{result=\"ok\"} 1\n"));
}

}  // namespace
}  // namespace mp::testing
