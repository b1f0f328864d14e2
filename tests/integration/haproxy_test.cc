// Scale-out: three mphost instances behind a real haproxy on loopback, health-checked with
// /readyz. Draining one under load fails no request; killing another with SIGKILL fails at most
// the requests it had in flight, each reported, while the third takes over.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// Counts answers by outcome while the load runs.
struct Load {
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex mu;
  std::vector<std::string> failures;  // each failure, reported

  void Run(int port, int max_requests) {
    for (int i = 0; i < max_requests && !stop.load(); ++i) {
      HttpResponse r = HttpRequest(port, "GET", "/m/echo/lb", "", 5000);
      if (r.status == 200) {
        ++ok;
      } else {
        ++failed;
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back(std::to_string(r.status) + " " + r.body.substr(0, 120));
      }
    }
  }
};

TEST(HaproxyTest, DrainFailsNothingAndAKilledHostFailsOnlyItsCallsInFlight) {
  char tmpl[] = "/tmp/mphost-lb-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/mphost.json")
      << "{\"drainDelayMs\":1500,\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir()
      << "/libecho.so\"}]}";
  HostProcess a({"--config", dir + "/mphost.json"});
  HostProcess b({"--config", dir + "/mphost.json"});
  HostProcess c({"--config", dir + "/mphost.json"});
  ASSERT_TRUE(a.started() && b.started() && c.started()) << a.Log() << b.Log() << c.Log();

  const int lb_port = FreePort();
  std::ofstream(dir + "/haproxy.cfg")
      << "global\n  maxconn 512\n"
      << "defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n"
      << "  retries 3\n  option redispatch\n  http-reuse never\n"
      << "  retry-on conn-failure empty-response\n"
      << "frontend fe\n  bind 127.0.0.1:" << lb_port << "\n  default_backend hosts\n"
      << "backend hosts\n  balance roundrobin\n  option httpchk GET /readyz\n"
      << "  http-check expect status 200\n  default-server inter 200ms fall 1 rise 1\n"
      << "  server a 127.0.0.1:" << a.port() << " check\n"
      << "  server b 127.0.0.1:" << b.port() << " check\n"
      << "  server c 127.0.0.1:" << c.port() << " check\n";
  const pid_t haproxy = ::fork();
  if (haproxy == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test, however it ends
    ::execl("/usr/sbin/haproxy", "haproxy", "-db", "-f", (dir + "/haproxy.cfg").c_str(), nullptr);
    _exit(127);
  }
  ASSERT_GT(haproxy, 0);
  // Stops haproxy (by pid) and removes the files on every way out of the test.
  struct Cleanup {
    pid_t pid;
    std::string dir;
    ~Cleanup() {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
      int unused = ::system(("rm -rf '" + dir + "'").c_str());
      (void)unused;
    }
  } cleanup{haproxy, dir};
  // Wait (bounded) until haproxy answers.
  bool up = false;
  for (int i = 0; i < 100 && !up; ++i) {
    up = HttpRequest(lb_port, "GET", "/m/echo/", "", 1000).status == 200;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(up) << "haproxy (Debian package haproxy, installed by tools/setup) did not start";

  // Phase 1: drain host a under load. It leaves the pool through /readyz before it closes.
  {
    Load load;
    std::vector<std::thread> clients;
    for (int i = 0; i < 4; ++i) clients.emplace_back([&] { load.Run(lb_port, 5000); });
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    EXPECT_EQ(a.Mpctl({"drain"}).exit_code, 0);
    int status = -1;
    for (int i = 0; i < 500 && ::waitpid(a.pid(), &status, WNOHANG) != a.pid(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    load.stop = true;
    for (auto& t : clients) t.join();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "host a did not drain";
    EXPECT_GT(load.ok.load(), 50);
    EXPECT_EQ(load.failed.load(), 0) << (load.failures.empty() ? "" : load.failures[0]);
  }

  // Phase 2: SIGKILL host b under load; c takes over.
  {
    Load load;
    std::vector<std::thread> clients;
    for (int i = 0; i < 4; ++i) clients.emplace_back([&] { load.Run(lb_port, 5000); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ASSERT_EQ(::kill(b.pid(), SIGKILL), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    const int ok_before_end = load.ok.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    load.stop = true;
    for (auto& t : clients) t.join();
    EXPECT_GT(load.ok.load(), ok_before_end);  // c serves after b died
    EXPECT_LE(load.failed.load(), 4) << "at most the 4 calls in flight on b";
    for (const auto& f : load.failures) std::fprintf(stderr, "reported failure: %s\n", f.c_str());
  }
}

}  // namespace
}  // namespace mp::testing
