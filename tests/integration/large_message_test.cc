// Messages larger than a ring frame travel as chunks through the real host, in both
// directions, up to maxMessageKb; past it, the client gets a clear error and nothing else is
// affected. (Chunking at the exact maximum and one byte past it: tests/unit/microproc.)
#include <signal.h>

#include <fstream>
#include <regex>
#include <string>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;

std::string Pattern(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + seed) & 0xff);
  return s;
}

class LargeMessageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // 16 KiB rings: a frame holds at most 8 KiB, so everything below is chunked.
    configured_ = std::make_unique<ConfiguredHost>(
        "mphost-large",
        "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" + ModuleDir() +
            "/libecho.so\",\"workers\":1,\"callTimeoutMs\":1000,\"cancelGraceMs\":3000,"
            "\"maxBodyKb\":1024,\"maxMessageKb\":2048,\"ringKb\":16},"
            "{\"name\":\"misbehave\",\"plugin\":\"" + ModuleDir() +
            "/libmisbehave.so\",\"workers\":1,\"maxBodyKb\":64,\"maxMessageKb\":64,"
            "\"ringKb\":16,\"maxRestarts\":100}]}");
    host_ = &configured_->host();
    ASSERT_TRUE(host_->started()) << host_->Log();
  }
  std::unique_ptr<ConfiguredHost> configured_;
  HostProcess* host_ = nullptr;
};

TEST_F(LargeMessageTest, MegabyteBodiesRoundTripInChunksBothWays) {
  const std::vector<pid_t> before = WorkerPids(host_->Mpctl({"ps", "--json"}).out, "echo");
  ASSERT_EQ(before.size(), 1u);
  for (size_t kb : {9, 100, 1000, 1024}) {
    const std::string body = Pattern(kb << 10, static_cast<int>(kb));
    HttpResponse r = HttpRequest(host_->port(), "POST", "/m/echo/big", body, 20000);
    ASSERT_EQ(r.status, 200) << kb << " KiB: " << r.body.substr(0, 300);
    EXPECT_EQ(r.body.size(), body.size() + r.body.find("POST /big\n") + 10) << kb;
    EXPECT_TRUE(r.body.size() >= body.size() &&
                r.body.compare(r.body.size() - body.size(), body.size(), body) == 0)
        << kb << " KiB: the echoed body differs";
  }
  // The same worker served them all.
  EXPECT_EQ(WorkerPids(host_->Mpctl({"ps", "--json"}).out, "echo"), before);
}

TEST_F(LargeMessageTest, CallCancelledWhileArrivingFreesTheWorker) {
  const std::vector<pid_t> before = WorkerPids(host_->Mpctl({"ps", "--json"}).out, "echo");
  ASSERT_EQ(before.size(), 1u);
  // A stopped worker takes the first chunks' worth of ring and no more; the deadline passes
  // with the call half sent.
  ASSERT_TRUE(host_->SignalDescendant(before[0], SIGSTOP));
  HttpResponse r = HttpRequest(host_->port(), "POST", "/m/echo/", Pattern(512 << 10, 3), 20000);
  host_->SignalDescendant(before[0], SIGCONT);
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_THAT(r.body, HasSubstr("missed its deadline of 1000 ms"));
  // Resumed, the worker finds the cancel behind the chunks, drops the call and answers
  // "cancelled"; the host frees it within the grace period instead of killing it.
  HttpResponse ok;
  for (int i = 0; i < 200 && ok.status != 200; ++i) {  // ≤ 2 s
    ok = HttpRequest(host_->port(), "POST", "/m/echo/", "after", 2000);
    if (ok.status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(ok.status, 200);
  EXPECT_THAT(ok.body, EndsWith("after"));
  EXPECT_EQ(WorkerPids(host_->Mpctl({"ps", "--json"}).out, "echo"), before) << host_->Log();
}

TEST_F(LargeMessageTest, CallPastMaxMessageIs413NamingTheLimit) {
  // A 60 KiB body fits a 64 KiB message; 64 KiB of body plus the call's framing does not.
  EXPECT_EQ(HttpRequest(host_->port(), "POST", "/m/misbehave/ok", Pattern(60 << 10, 1)).status, 200);
  HttpResponse r = HttpRequest(host_->port(), "POST", "/m/misbehave/ok", Pattern(64 << 10, 2));
  EXPECT_EQ(r.status, 413);
  EXPECT_THAT(r.body, HasSubstr("exceeds the module's maxMessageKb of 64 KiB"));
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/misbehave/ok").status, 200);
}

TEST_F(LargeMessageTest, ReplyPastMaxMessageIsAnErrorAndKeepsTheWorker) {
  const std::vector<pid_t> before = WorkerPids(host_->Mpctl({"ps", "--json"}).out, "misbehave");
  HttpResponse big = HttpRequest(host_->port(), "GET", "/m/misbehave/big?kb=63");
  ASSERT_EQ(big.status, 200);
  EXPECT_EQ(big.body.size(), 63u << 10);
  EXPECT_EQ(big.body.substr(0, 4), "abcd");
  HttpResponse r = HttpRequest(host_->port(), "GET", "/m/misbehave/big?kb=64");
  EXPECT_EQ(r.status, 500);
  EXPECT_THAT(r.body, HasSubstr("exceeds the module's maxMessageKb (65536 bytes)"));
  EXPECT_EQ(WorkerPids(host_->Mpctl({"ps", "--json"}).out, "misbehave"), before);
}

TEST_F(LargeMessageTest, ChunkFloodIsStoppedAtTheMaximumAndCounted) {
  HttpResponse r = HttpRequest(host_->port(), "GET", "/m/misbehave/chunk-flood");
  EXPECT_EQ(r.status, 502);
  EXPECT_THAT(r.body, HasSubstr("broke the ring protocol (reply message of more than"));
  EXPECT_THAT(r.body, HasSubstr("past the maximum of 65536"));
  std::string metrics;
  for (int i = 0; i < 100; ++i) {
    metrics = HttpRequest(host_->port(), "GET", "/metrics").body;
    if (metrics.find("mphost_ring_violations_total{module=\"misbehave\"} 1") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(metrics, HasSubstr("mphost_ring_violations_total{module=\"misbehave\"} 1"));
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/echo/").status, 200);
  HttpResponse ok;
  for (int i = 0; i < 300 && ok.status != 200; ++i) {  // the replacement worker, ≤ 3 s
    ok = HttpRequest(host_->port(), "GET", "/m/misbehave/ok");
    if (ok.status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(ok.status, 200);
}

}  // namespace
}  // namespace mp::testing
