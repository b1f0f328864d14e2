// The front door's per-connection pieces with no process: the client stream's head timeout
// (bare LF, pipelined and split heads), the access log's client address and request ids.
#include "host/client_stream.h"

#include <kj/async-io.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/access_log.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;

constexpr auto kTimeout = 30 * kj::MILLISECONDS;

class ClientStreamTest : public ::testing::Test {
 protected:
  ClientStreamTest() : io_(kj::setupAsyncIo()) {
    auto pipe = io_.provider->newTwoWayPipe();
    client_ = kj::mv(pipe.ends[0]);
    timed_out_ = 0;
    stream_ = kj::heap<ClientStream>(kj::mv(pipe.ends[1]), "192.0.2.1", io_.provider->getTimer(),
                                     kTimeout, [this] { ++timed_out_; });
  }
  ~ClientStreamTest() noexcept override {}
  void ClientSends(kj::StringPtr bytes) { client_->write(bytes.begin(), bytes.size()).wait(io_.waitScope); }
  // What the server side reads now (all of what the client sent).
  std::string ServerReads() {
    char buf[512];
    const size_t n = stream_->tryRead(buf, 1, sizeof buf).wait(io_.waitScope);
    return std::string(buf, n);
  }
  void ServerResponds() {
    stream_->write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 38).wait(io_.waitScope);
    char buf[64];
    client_->tryRead(buf, 38, sizeof buf).wait(io_.waitScope);
  }
  // True if a read that waits for the next bytes is cut off by the head timeout (a 408).
  bool NextReadTimesOut() {
    char buf[64];
    auto read = stream_->tryRead(buf, 1, sizeof buf).then([](size_t) { return false; }, [](kj::Exception&&) {
      return true;
    });
    return read.exclusiveJoin(io_.provider->getTimer().afterDelay(4 * kTimeout).then([] { return false; }))
        .wait(io_.waitScope);
  }
  kj::AsyncIoContext io_;
  kj::Own<kj::AsyncIoStream> client_;
  kj::Own<ClientStream> stream_;
  int timed_out_;
};

TEST_F(ClientStreamTest, AnUnfinishedHeadGetsA408) {
  EXPECT_TRUE(stream_->idle());
  ClientSends("GET / HTTP/1.1\r\nHost: x\r\n");
  ServerReads();
  EXPECT_FALSE(stream_->idle());
  EXPECT_TRUE(NextReadTimesOut());
  EXPECT_EQ(timed_out_, 1);
  char buf[256];
  const size_t n = client_->tryRead(buf, 1, sizeof buf).wait(io_.waitScope);
  EXPECT_THAT(std::string(buf, n), HasSubstr("HTTP/1.1 408 Request Timeout"));
}

TEST_F(ClientStreamTest, ABareLineFeedHeadEnds) {
  ClientSends("GET / HTTP/1.1\nHost: x\n\n");
  ServerReads();
  ServerResponds();
  EXPECT_TRUE(stream_->idle());
  EXPECT_FALSE(NextReadTimesOut());  // idle keep-alive: no 408
  EXPECT_EQ(timed_out_, 0);
}

TEST_F(ClientStreamTest, AHeadEndSplitAcrossReadsEnds) {
  ClientSends("GET / HTTP/1.1\r\nHost: x\r\n\r");
  ServerReads();
  ClientSends("\n");
  ServerReads();
  ServerResponds();
  EXPECT_FALSE(NextReadTimesOut());
}

TEST_F(ClientStreamTest, PipelinedHeadsInOneReadEnd) {
  // The server reads both heads at once, answers the first, then the second from its buffer.
  ClientSends("GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
  ServerReads();
  ServerResponds();
  ServerResponds();
  EXPECT_FALSE(NextReadTimesOut());
}

TEST_F(ClientStreamTest, AFrontDoorRequestIsNeverIdle) {
  stream_->BeginRequest();
  EXPECT_FALSE(stream_->idle());
  stream_->EndRequest();
  EXPECT_TRUE(stream_->idle());
  EXPECT_EQ(stream_->peer(), "192.0.2.1");
}

TEST(AccessLogTest, TheClientIsThePeerUnlessThePeerIsATrustedProxy) {
  AccessLog log;
  ASSERT_TRUE(log.Configure(false, "", {"10.0.0.0/8", "127.0.0.1"}).ok());
  EXPECT_EQ(log.ClientOf("203.0.113.5", "198.51.100.1"), "203.0.113.5");  // not trusted
  EXPECT_EQ(log.ClientOf("127.0.0.1", ""), "127.0.0.1");
  EXPECT_EQ(log.ClientOf("127.0.0.1", "198.51.100.1"), "198.51.100.1");
  // The rightmost address no trusted proxy added is the client; what is left of it is hearsay.
  EXPECT_EQ(log.ClientOf("127.0.0.1", "1.1.1.1, 198.51.100.1, 10.1.2.3"), "198.51.100.1");
  EXPECT_EQ(log.ClientOf("127.0.0.1", "10.0.0.1, 10.0.0.2"), "10.0.0.1");
  EXPECT_EQ(log.ClientOf("127.0.0.1", "not-an-ip, 10.0.0.2"), "127.0.0.1");
  EXPECT_FALSE(log.Configure(false, "", {"10.0.0.0/99"}).ok());
}

TEST(AccessLogTest, RequestIds) {
  EXPECT_TRUE(UsableRequestId("abc-123.x:Y_z"));
  EXPECT_FALSE(UsableRequestId(""));
  EXPECT_FALSE(UsableRequestId("has space"));
  EXPECT_FALSE(UsableRequestId("quote\""));
  EXPECT_FALSE(UsableRequestId(std::string(129, 'a')));
  const std::string id = NewRequestId();
  EXPECT_EQ(id.size(), 16u);
  EXPECT_TRUE(UsableRequestId(id));
  EXPECT_NE(id, NewRequestId());
}

}  // namespace
}  // namespace mp::host
