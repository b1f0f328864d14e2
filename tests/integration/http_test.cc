// The front door's limits and HTTP behaviour, over raw sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/resource.h>
#include <unistd.h>

#include <regex>

#include <chrono>
#include <fstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

int Connect(int port) { return ConnectLoopback(port); }

class HttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    configured_ = std::make_unique<ConfiguredHost>(
        "mphost-http",
        "{\"headerTimeoutMs\":400,\"bodyTimeoutMs\":400,\"maxHeaderKb\":16,\"accessLog\":true,"
        "\"modules\":[{\"name\":\"echo\",\"plugin\":\"" + ModuleDir() +
            "/libecho.so\",\"maxBodyKb\":4}]}");
    host_ = &configured_->host();
    ASSERT_TRUE(host_->started()) << host_->Log();
  }
  std::string Exchange(const std::string& request, int ms = 2000) {
    int fd = Connect(host_->port());
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    std::string out = ReadFor(fd, ms);
    ::close(fd);
    return out;
  }
  std::unique_ptr<ConfiguredHost> configured_;
  HostProcess* host_ = nullptr;
};

TEST_F(HttpTest, HeadersTooLargeIs431) {
  std::string r = Exchange("GET /m/echo/ HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') +
                           "\r\n\r\n");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 431 "));
  EXPECT_THAT(r, HasSubstr("exceed the limit of 16384 (maxHeaderKb)"));
}

TEST_F(HttpTest, MalformedRequestIs400WithJson) {
  std::string r = Exchange("GET /m/echo/ HTTP/1.1\r\nHost x\r\n\r\n");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(r, HasSubstr("{\"error\":\"bad request"));
}

TEST_F(HttpTest, BodyTooLargeIs413DeclaredOrChunked) {
  std::string declared = Exchange("POST /m/echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
  EXPECT_THAT(declared, StartsWith("HTTP/1.1 413 "));
  EXPECT_THAT(declared, HasSubstr("limit of 4096"));
  std::string chunk(5000, 'b');
  char size[16];
  std::snprintf(size, sizeof size, "%zx", chunk.size());
  std::string chunked = Exchange(std::string("POST /m/echo/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n") +
                                 size + "\r\n" + chunk + "\r\n0\r\n\r\n");
  EXPECT_THAT(chunked, StartsWith("HTTP/1.1 413 "));
}

TEST_F(HttpTest, SlowClientIsCutOffAfterTheHeaderTimeout) {
  int fd = Connect(host_->port());
  ASSERT_GE(fd, 0);
  const std::string partial = "GET /m/echo/ HTTP/1.1\r\nHost: x\r\n";
  ASSERT_EQ(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), static_cast<ssize_t>(partial.size()));
  const auto start = std::chrono::steady_clock::now();
  std::string got = ReadFor(fd, 3000);  // returns when the host closes the connection
  const auto waited = std::chrono::steady_clock::now() - start;
  ::close(fd);
  EXPECT_THAT(got, StartsWith("HTTP/1.1 408 "));
  EXPECT_THAT(got, HasSubstr("request head not received in time (headerTimeoutMs)"));
  EXPECT_LT(waited, std::chrono::milliseconds(2500)) << "the connection was not closed";
}

TEST_F(HttpTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  int fd = Connect(host_->port());
  ASSERT_GE(fd, 0);
  const std::string two = "GET /m/echo/a HTTP/1.1\r\nHost: x\r\n\r\nGET /m/echo/b HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, two.data(), two.size(), MSG_NOSIGNAL), static_cast<ssize_t>(two.size()));
  std::string got;
  for (int i = 0; i < 40 && got.find("GET /b") == std::string::npos; ++i) got += ReadFor(fd, 50);
  ::close(fd);
  EXPECT_THAT(got, HasSubstr("GET /a"));
  EXPECT_THAT(got, HasSubstr("GET /b"));
  EXPECT_THAT(host_->Log(), HasSubstr("method=GET target=/m/echo/b host=x module=echo status=200"));
}

// Raised before any host starts (hosts inherit it): 5,000 connections need more than 1,024
// descriptors on both sides.
const bool kRaisedFileLimit = [] {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 16384);
  return ::setrlimit(RLIMIT_NOFILE, &lim) == 0;
}();

TEST_F(HttpTest, FiveThousandIdleConnectionsCostMemoryButNoWorker) {
  ASSERT_TRUE(kRaisedFileLimit);
  const std::string ps_before = host_->Mpctl({"ps", "--json"}).out;
  const size_t workers = WorkerPids(ps_before).size();
  const std::string rss_before = ProcStatusField(host_->pid(), "VmRSS");
  std::vector<int> fds;
  for (int i = 0; i < 5000; ++i) {
    int fd = Connect(host_->port());
    if (fd < 0) break;
    fds.push_back(fd);
  }
  EXPECT_EQ(fds.size(), 5000u);
  // Requests on other connections are answered while the idle ones stay open.
  for (int i = 0; i < 20; ++i) EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/echo/").status, 200);
  const std::string rss_with = ProcStatusField(host_->pid(), "VmRSS");
  const std::string ps_after = host_->Mpctl({"ps", "--json"}).out;
  EXPECT_EQ(WorkerPids(ps_after).size(), workers);  // no worker per connection
  int calls = 0;
  const std::regex calls_re("\"calls\":([0-9]+)");
  for (auto it = std::sregex_iterator(ps_after.begin(), ps_after.end(), calls_re);
       it != std::sregex_iterator(); ++it) {
    calls += std::stoi((*it)[1]);
  }
  EXPECT_EQ(calls, 20);  // the workers computed only the 20 calls; idle connections cost none
  std::fprintf(stderr, "host RSS: %s before, %s with 5000 idle connections\n", rss_before.c_str(),
               rss_with.c_str());
  RecordProperty("host_rss_idle_5000", rss_with);
  for (int fd : fds) ::close(fd);
}

TEST_F(HttpTest, BadInputGetsItsAnswerAndTheHostKeepsServing) {
  struct Case {
    const char* name;
    std::string request;
    const char* expect;  // the start of the answer
  };
  const std::vector<Case> cases = {
      {"body shorter than Content-Length",
       "POST /m/echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc", "HTTP/1.1 408 "},
      {"invalid chunked encoding",
       "POST /m/echo/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
       "HTTP/1.1 400 "},
      {"unknown method", "FROB /m/echo/ HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 405 "},
      {"malformed request line", "GET\r\n\r\n", "HTTP/1.1 "},
      {"'..' in the path", "GET /m/echo/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 400 "},
      {"NUL in the path",
       [] {
         static const char kNul[] = "GET /m/echo/a\0b HTTP/1.1\r\nHost: x\r\n\r\n";
         return std::string(kNul, sizeof kNul - 1);
       }(),
       "HTTP/1.1 400 "},
  };
  for (const Case& k : cases) {
    std::string got = Exchange(k.request, 1500);
    EXPECT_THAT(got, StartsWith(k.expect)) << k.name << ": " << got.substr(0, 120);
    EXPECT_THAT(got, ::testing::Not(StartsWith("HTTP/1.1 5"))) << k.name;  // not a host failure
  }
  // A body longer than its Content-Length: the first request is answered; the rest is a bad
  // next request on the same connection.
  std::string longer = Exchange("POST /m/echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGARBAGE\r\n\r\n", 1000);
  EXPECT_THAT(longer, StartsWith("HTTP/1.1 200 "));
  EXPECT_THAT(longer, HasSubstr("HTTP/1.1 405 "));
  // Clients that disconnect mid-body and mid-reply.
  for (int i = 0; i < 3; ++i) {
    int fd = Connect(host_->port());
    const std::string partial = "POST /m/echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc";
    EXPECT_EQ(::send(fd, partial.data(), partial.size(), MSG_NOSIGNAL), static_cast<ssize_t>(partial.size()));
    ::close(fd);
    fd = Connect(host_->port());
    const std::string full = "POST /m/echo/ HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n" + std::string(4000, 'z');
    EXPECT_EQ(::send(fd, full.data(), full.size(), MSG_NOSIGNAL), static_cast<ssize_t>(full.size()));
    ::close(fd);  // before the reply
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/echo/").status, 200);
  EXPECT_EQ(::kill(host_->pid(), 0), 0);
}

TEST_F(HttpTest, MetricsPassPromtool) {
  HttpRequest(host_->port(), "GET", "/m/echo/");
  HttpRequest(host_->port(), "GET", "/m/nosuch/");
  HttpRequest(host_->port(), "POST", "/m/echo/", std::string(5000, 'x'));  // 413
  HttpResponse m = HttpRequest(host_->port(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  std::ofstream(configured_->dir() + "/metrics.txt") << m.body;
  CommandResult check = RunCommand({"/bin/sh", "-c", "promtool check metrics < '" + configured_->dir() + "/metrics.txt'"});
  EXPECT_EQ(check.exit_code, 0) << "promtool (Debian package prometheus, installed by tools/setup): "
                                << check.out << check.err;
  for (const char* family : {"mphost_calls_total{module=\"echo\",status=\"200\"} 1",
                             "mphost_calls_total{module=\"echo\",status=\"413\"}",
                             "mphost_call_duration_seconds_bucket{module=\"echo\",le=\"+Inf\"} 1",
                             "mphost_workers{module=\"echo\",state=\"ready\"}",
                             "mphost_queue_depth{module=\"echo\"} 0", "mphost_heap_bytes{module=\"echo\"}",
                             "mphost_worker_uss_bytes{module=\"echo\"}", "mphost_host_pss_bytes"}) {
    EXPECT_THAT(m.body, HasSubstr(family));
  }
}

TEST(RouteTest, ConfiguredPrefixesAndHostsReachTheirModules) {
  char tmpl[] = "/tmp/mphost-route-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/mphost.json")
      << "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir() << "/libecho.so\"}],"
      << "\"routes\":[{\"prefix\":\"/api/\",\"module\":\"echo\"},"
      << "{\"prefix\":\"/api/v2/\",\"host\":\"v2.example\",\"module\":\"echo\"}]}";
  {
    HostProcess host({"--config", dir + "/mphost.json"});
    ASSERT_TRUE(host.started()) << host.Log();
    auto get = [&](const std::string& target, const std::string& host_header) {
      int fd = Connect(host.port());
      std::string req = "GET " + target + " HTTP/1.1\r\nHost: " + host_header + "\r\n\r\n";
      EXPECT_EQ(::send(fd, req.data(), req.size(), MSG_NOSIGNAL), static_cast<ssize_t>(req.size()));
      std::string out = ReadFor(fd, 300);
      ::close(fd);
      return out;
    };
    EXPECT_THAT(get("/api/words?x=1", "a.example"), HasSubstr("GET /words\n"));
    EXPECT_THAT(get("/api/v2/w", "v2.example:8080"), HasSubstr("GET /w\n"));      // longest prefix
    EXPECT_THAT(get("/api/v2/w", "other.example"), HasSubstr("GET /v2/w\n"));     // host differs
    EXPECT_THAT(get("/m/echo/still", "x"), HasSubstr("GET /still\n"));            // always there
    EXPECT_THAT(get("/elsewhere", "x"), StartsWith("HTTP/1.1 404"));
  }
  std::ofstream(dir + "/bad.json")
      << "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir() << "/libecho.so\"}],"
      << "\"routes\":[{\"prefix\":\"/x/\",\"module\":\"nosuch\"}]}";
  CommandResult bad = RunCommand({BinDir() + "/mphost", "--config", dir + "/bad.json", "--listen",
                                  "127.0.0.1:0", "--control", dir + "/c.sock"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("routes[0].module: no module named 'nosuch'"));
  int unused = ::system(("rm -rf '" + dir + "'").c_str());
  (void)unused;
}

}  // namespace
}  // namespace mp::testing
