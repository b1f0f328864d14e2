// ServiceBroker's admission of a worker's service request: the per-call limits, and the module's
// rate (serviceLimits.maxRequestsPerSecond), whose requests past the rate wait for their token,
// first come first served, and are refused only if it would come after the call's deadline.
// Time is a kj::TimerImpl advanced by hand.
#include "host/service_broker.h"

#include <kj/async-io.h>
#include <kj/debug.h>
#include <kj/timer.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;

class ServiceBrokerTest : public ::testing::Test {
 protected:
  ServiceBrokerTest()
      : io_(kj::setupAsyncIo()),
        broker_(io_.unixEventPort, timer_, [](absl::string_view, CallRequest) {
          return kj::Promise<CallResult>(KJ_EXCEPTION(FAILED, "no module calls in this test"));
        }) {}
  ~ServiceBrokerTest() noexcept override {}

  // Module "m", granted one service: "cache", a call to module "m" itself (no Redis needed).
  void Configure(ServiceLimits limits) {
    ModuleConfig m;
    m.name = "m";
    m.service_limits = limits;
    ServiceConfig cache;
    cache.name = "cache";
    cache.module = "m";
    m.services.push_back(cache);
    broker_.Configure({m});
  }

  ServiceBroker::Admission Admit(kj::Duration time_left, uint64_t bytes = 16,
                                 const std::string& service = "cache") {
    ServiceRequestData request;
    request.service = service;
    request.bytes = bytes;
    return broker_.Admit(ServiceCaller{"m", 0, time_left}, request, usage_);
  }

  static int64_t Ms(kj::Duration d) { return d / kj::MILLISECONDS; }

  kj::AsyncIoContext io_;
  kj::TimerImpl timer_{kj::origin<kj::TimePoint>() + 1000 * kj::SECONDS};
  ServiceBroker broker_;
  ServiceUsage usage_;
};

TEST_F(ServiceBrokerTest, NoRateNeverWaits) {
  Configure(ServiceLimits{.max_requests = 1000});
  for (int i = 0; i < 500; ++i) {
    auto a = Admit(1 * kj::MILLISECONDS);
    ASSERT_FALSE(a.refusal) << i;
    EXPECT_EQ(Ms(a.wait), 0);
  }
}

TEST_F(ServiceBrokerTest, PastTheRateRequestsWaitTheirTurn) {
  Configure(ServiceLimits{.max_requests = 1000, .max_requests_per_second = 10});
  for (int i = 0; i < 10; ++i) {  // the bucket holds one second's worth
    auto a = Admit(10 * kj::SECONDS);
    ASSERT_FALSE(a.refusal) << i;
    EXPECT_EQ(Ms(a.wait), 0) << i;
  }
  // Then one token every 100 ms, each promised in turn.
  for (int i = 1; i <= 5; ++i) {
    auto a = Admit(10 * kj::SECONDS);
    ASSERT_FALSE(a.refusal) << i;
    EXPECT_EQ(Ms(a.wait), 100 * i);
  }
  // After a second, the five promised are paid for and five are left.
  timer_.advanceTo(timer_.now() + 1 * kj::SECONDS);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 0) << i;
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 100);
  EXPECT_EQ(usage_.requests, 21u);
}

TEST_F(ServiceBrokerTest, RefusedOnlyIfItsTurnComesAfterTheDeadline) {
  Configure(ServiceLimits{.max_requests = 1000, .max_requests_per_second = 10});
  for (int i = 0; i < 10; ++i) ASSERT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 0);
  EXPECT_EQ(Ms(Admit(150 * kj::MILLISECONDS).wait), 100);
  auto refused = Admit(150 * kj::MILLISECONDS);  // its turn: in 200 ms
  ASSERT_TRUE(refused.refusal);
  EXPECT_EQ(refused.refusal->rule, ServiceRule::kMaxRate);
  EXPECT_THAT(refused.refusal->message, HasSubstr("serviceLimits.maxRequestsPerSecond"));
  EXPECT_THAT(refused.refusal->message, HasSubstr("150 ms left"));
  // A refused request took no token (it counts against the call's maxRequests, as any does).
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 200);
  EXPECT_EQ(usage_.requests, 13u);
}

TEST_F(ServiceBrokerTest, PerCallLimitsComeBeforeTheRate) {
  Configure(ServiceLimits{.max_requests = 2, .max_bytes_out = 100, .max_requests_per_second = 1});
  EXPECT_FALSE(Admit(10 * kj::SECONDS, 60).refusal);
  auto too_big = Admit(10 * kj::SECONDS, 60);
  ASSERT_TRUE(too_big.refusal);
  EXPECT_EQ(too_big.refusal->rule, ServiceRule::kMaxBytesOut);
  auto second = Admit(10 * kj::SECONDS, 10);  // the rate's second token: in a second
  ASSERT_FALSE(second.refusal);
  EXPECT_EQ(Ms(second.wait), 1000);
  auto third = Admit(10 * kj::SECONDS, 10);
  ASSERT_TRUE(third.refusal);
  EXPECT_EQ(third.refusal->rule, ServiceRule::kMaxRequests);
}

// A request the grant refuses anyway neither waits for a token nor spends one, but counts
// against the call's maxRequests.
TEST_F(ServiceBrokerTest, ARequestTheGrantRefusesSpendsNoToken) {
  Configure(ServiceLimits{.max_requests = 3, .max_requests_per_second = 1});
  auto refused = Admit(10 * kj::SECONDS, 16, "nope");
  ASSERT_TRUE(refused.refusal);
  EXPECT_EQ(refused.refusal->rule, ServiceRule::kUnknownService);
  EXPECT_THAT(refused.refusal->message, HasSubstr("granted no service named 'nope'"));
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 0);  // the bucket's one token, still there
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 1000);
  EXPECT_EQ(usage_.requests, 3u);
  EXPECT_EQ(Admit(10 * kj::SECONDS, 16, "nope").refusal->rule, ServiceRule::kMaxRequests);
}

// A config reload keeps a limited module's bucket, and the turns it promised.
TEST_F(ServiceBrokerTest, TheBucketOutlivesAReload) {
  Configure(ServiceLimits{.max_requests = 1000, .max_requests_per_second = 10});
  for (int i = 0; i < 10; ++i) ASSERT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 0);
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 100);
  Configure(ServiceLimits{.max_requests = 1000, .max_requests_per_second = 10});
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 200);
  Configure(ServiceLimits{.max_requests = 1000, .max_requests_per_second = 5});  // slower now
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 600);  // 3 promised at 5 a second
  Configure(ServiceLimits{.max_requests = 1000});  // no limit any more
  EXPECT_EQ(Ms(Admit(10 * kj::SECONDS).wait), 0);
}

TEST_F(ServiceBrokerTest, AModuleWithoutGrantsIsRefused) {
  Configure(ServiceLimits{});
  ServiceRequestData request;
  request.service = "cache";
  auto a = broker_.Admit(ServiceCaller{"other", 0, 1 * kj::SECONDS}, request, usage_);
  ASSERT_TRUE(a.refusal);
  EXPECT_EQ(a.refusal->rule, ServiceRule::kUnknownService);
}

}  // namespace
}  // namespace mp::host
