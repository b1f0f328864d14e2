// The restart policy with a fake clock (plain milliseconds) and a seeded generator.
#include "host/restart_policy.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mp::host {
namespace {

using Breaker = RestartPolicy::Breaker;
using ::testing::HasSubstr;

RestartPolicyConfig Config() {
  RestartPolicyConfig c;
  c.max_restarts = 2;
  c.window_ms = 10000;
  c.backoff_base_ms = 100;
  c.backoff_max_ms = 400;
  c.cooldown_ms = 1000;
  c.cooldown_max_ms = 4000;
  return c;
}

TEST(RestartPolicyTest, HealthyWorkersAreReplacedAtOnceHoweverOftenTheyEnd) {
  RestartPolicy p(Config(), 1);
  for (int i = 0; i < 1000; ++i) {
    auto d = p.OnWorkerEnded(i * 10, /*healthy=*/true);
    ASSERT_TRUE(d.restart);
    ASSERT_EQ(d.delay_ms, 0);
    ASSERT_FALSE(d.tripped);
  }
  EXPECT_EQ(p.breaker(), Breaker::kClosed);
}

TEST(RestartPolicyTest, UnhealthyEndsGetImmediateThenBackedOffRestartsThenTheBreakerOpens) {
  RestartPolicy p(Config(), 7);
  // Within the intensity: at once.
  EXPECT_EQ(p.OnWorkerEnded(0, false).delay_ms, 0);
  EXPECT_EQ(p.OnWorkerEnded(10, false).delay_ms, 0);
  // Then 100, 200, 400 ms, each ±25%.
  for (int64_t base : {100, 200, 400}) {
    auto d = p.OnWorkerEnded(20, false);
    EXPECT_TRUE(d.restart);
    EXPECT_GE(d.delay_ms, base - base / 4);
    EXPECT_LE(d.delay_ms, base + base / 4);
  }
  // 800 > backoff_max: open.
  auto d = p.OnWorkerEnded(30, false);
  EXPECT_FALSE(d.restart);
  EXPECT_TRUE(d.tripped);
  EXPECT_EQ(p.breaker(), Breaker::kOpen);
  EXPECT_EQ(p.trips(), 1u);
  EXPECT_THAT(p.Reason(30), HasSubstr("workers ended 6 times within 10000 ms"));
  EXPECT_THAT(p.Reason(30), HasSubstr("crash loop"));
  // While open, survivors that end are not replaced.
  EXPECT_FALSE(p.OnWorkerEnded(40, true).restart);
}

TEST(RestartPolicyTest, EndsOutsideTheWindowAreForgotten) {
  RestartPolicy p(Config(), 3);
  for (int i = 0; i < 50; ++i) {
    auto d = p.OnWorkerEnded(i * 6000, false);  // one every 6 s, window 10 s: at most 2 inside
    ASSERT_TRUE(d.restart);
    ASSERT_EQ(d.delay_ms, 0);
  }
}

RestartPolicy Tripped(int64_t* now) {
  RestartPolicy p(Config(), 11);
  for (int i = 0; i < 6; ++i) p.OnWorkerEnded(*now, false);
  EXPECT_EQ(p.breaker(), Breaker::kOpen);
  return p;
}

TEST(RestartPolicyTest, TheBreakerHalfOpensAfterItsCooldownAndClosesOnAHealthyTrial) {
  int64_t now = 0;
  RestartPolicy p = Tripped(&now);
  EXPECT_FALSE(p.TrialDue(now + 700));   // 1000 ms -25% at the earliest
  EXPECT_TRUE(p.TrialDue(now + 1250));   // +25% at the latest
  p.OnTrialStarted();
  EXPECT_EQ(p.breaker(), Breaker::kHalfOpen);
  EXPECT_EQ(p.trials(), 1u);
  p.OnHealthy();
  EXPECT_EQ(p.breaker(), Breaker::kClosed);
  // Closed again, with its ends forgotten: the next unhealthy ends restart at once.
  EXPECT_EQ(p.OnWorkerEnded(now + 2000, false).delay_ms, 0);
}

TEST(RestartPolicyTest, AFailedTrialReopensWithADoubledCooldownUpToTheCap) {
  int64_t now = 0;
  RestartPolicy p = Tripped(&now);
  int64_t expected = 1000;
  for (int round = 0; round < 6; ++round) {
    now = p.trial_at_ms();
    ASSERT_TRUE(p.TrialDue(now));
    p.OnTrialStarted();
    auto d = p.OnWorkerEnded(now + 5, /*healthy=*/false);
    EXPECT_TRUE(d.tripped);
    EXPECT_FALSE(d.restart);
    expected = std::min<int64_t>(expected * 2, 4000);
    const int64_t wait = p.trial_at_ms() - (now + 5);
    EXPECT_GE(wait, expected - expected / 4) << "round " << round;
    EXPECT_LE(wait, expected + expected / 4) << "round " << round;
  }
  EXPECT_EQ(p.trips(), 7u);
}

TEST(RestartPolicyTest, ATrialThatServedThenEndedClosesTheBreaker) {
  int64_t now = 0;
  RestartPolicy p = Tripped(&now);
  p.OnTrialStarted();
  auto d = p.OnWorkerEnded(p.trial_at_ms() + 100, /*healthy=*/true);
  EXPECT_TRUE(d.restart);
  EXPECT_EQ(p.breaker(), Breaker::kClosed);
}

TEST(RestartPolicyTest, ResetClosesAtOnce) {
  int64_t now = 0;
  RestartPolicy p = Tripped(&now);
  p.Reset();
  EXPECT_EQ(p.breaker(), Breaker::kClosed);
  EXPECT_EQ(p.Reason(now), "");
  EXPECT_EQ(p.OnWorkerEnded(now, false).delay_ms, 0);
}

TEST(RestartPolicyTest, TheSameSeedGivesTheSameDelays) {
  RestartPolicy a(Config(), 42), b(Config(), 42);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(a.OnWorkerEnded(i, false).delay_ms, b.OnWorkerEnded(i, false).delay_ms);
  }
}

}  // namespace
}  // namespace mp::host
