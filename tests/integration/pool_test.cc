// Worker pools: on-demand growth, idle scale-down, recycling, memory limits, bounded queues,
// and mpctl scale.
#include <atomic>
#include <set>
#include <fstream>
#include <random>
#include <regex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;

std::vector<pid_t> Workers(HostProcess& host) { return WorkerPids(host.Mpctl({"ps", "--json"}).out); }

class PoolTest : public ::testing::Test {
 protected:
  void Start(const std::string& module_fields) {
    char tmpl[] = "/tmp/mphost-pool-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::ofstream(dir_ + "/mphost.json") << "{\"modules\":[{\"name\":\"misbehave\",\"plugin\":\""
                                         << ModuleDir() << "/libmisbehave.so\"" << module_fields
                                         << "}]}";
    host_ = std::make_unique<HostProcess>(std::vector<std::string>{"--config", dir_ + "/mphost.json"});
    ASSERT_TRUE(host_->started()) << host_->Log();
  }
  void TearDown() override {
    host_.reset();
    int unused = ::system(("rm -rf '" + dir_ + "'").c_str());
    (void)unused;
  }
  // Runs `n` concurrent requests to `target`; returns their statuses.
  std::vector<HttpResponse> Concurrently(int n, const std::string& target) {
    std::vector<HttpResponse> out(n);
    std::vector<std::thread> threads;
    for (int i = 0; i < n; ++i) {
      threads.emplace_back([&, i] { out[i] = HttpRequest(host_->port(), "GET", target); });
    }
    for (auto& t : threads) t.join();
    return out;
  }
  std::string dir_;
  std::unique_ptr<HostProcess> host_;
};

TEST_F(PoolTest, GrowsOnDemandAndScalesDownWhenIdle) {
  Start(",\"workers\":1,\"maxWorkers\":3,\"idleTimeoutMs\":300");
  ASSERT_EQ(Workers(*host_).size(), 1u);
  std::set<std::string> served_by;
  for (const auto& r : Concurrently(3, "/m/misbehave/sleep?ms=400")) {
    EXPECT_EQ(r.status, 200);
    served_by.insert(r.headers.at("x-mphost-worker"));
  }
  EXPECT_EQ(served_by.size(), 3u);  // three calls at once: three workers
  EXPECT_EQ(Workers(*host_).size(), 3u);
  EXPECT_TRUE(Eventually([&] { return Workers(*host_).size() == 1; }, 4000));
  EXPECT_THAT(host_->Log(), HasSubstr("event=worker_scale_down"));
}

TEST_F(PoolTest, RecyclesAfterNCallsWithoutFailingAny) {
  Start(",\"workers\":1,\"recycleAfterCalls\":5");
  const pid_t first = Workers(*host_)[0];
  std::set<std::string> pids;
  for (int i = 0; i < 20; ++i) {
    HttpResponse r = HttpRequest(host_->port(), "GET", "/m/misbehave/ok");
    ASSERT_EQ(r.status, 200) << r.body;
    pids.insert(r.headers["x-mphost-worker"]);
  }
  EXPECT_GE(pids.size(), 2u);  // 20 calls, recycled after 5-5.5 each
  EXPECT_LE(pids.size(), 5u);
  EXPECT_TRUE(Eventually([&] { return Workers(*host_).size() == 1; }, 2000));
  EXPECT_NE(Workers(*host_)[0], first);
  EXPECT_THAT(host_->Log(), HasSubstr("why=\"served 5 calls\""));
}

TEST_F(PoolTest, ReplacesAWorkerPastItsPrivateMemoryLimit) {
  Start(",\"workers\":1,\"maxPrivateMb\":24");
  const pid_t first = Workers(*host_)[0];
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/misbehave/grow?mb=48").status, 200);
  EXPECT_TRUE(Eventually(
      [&] {
        auto w = Workers(*host_);
        return w.size() == 1 && w[0] != first;
      },
      4000));
  EXPECT_THAT(host_->Log(), HasSubstr("maxPrivateMb"));
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/misbehave/ok").status, 200);
}

TEST_F(PoolTest, FullQueueIs503WithRetryAfter) {
  Start(",\"workers\":1,\"maxWorkers\":1,\"queueLimit\":1");
  auto results = Concurrently(4, "/m/misbehave/sleep?ms=300");
  int ok = 0, full = 0;
  for (const auto& r : results) {
    if (r.status == 200) ++ok;
    if (r.status == 503) {
      ++full;
      EXPECT_EQ(r.headers.at("retry-after"), "1");
      EXPECT_THAT(r.body, HasSubstr("queue is full"));
    }
  }
  EXPECT_GE(ok, 2);  // one running, one queued
  EXPECT_GE(full, 1);
  EXPECT_EQ(ok + full, 4);
}

TEST_F(PoolTest, MpctlScaleChangesThePool) {
  Start(",\"workers\":1");
  CommandResult up = host_->Mpctl({"scale", "misbehave", "--min", "3", "--max", "4"});
  EXPECT_EQ(up.exit_code, 0) << up.err;
  EXPECT_EQ(Workers(*host_).size(), 3u);
  EXPECT_THAT(host_->Mpctl({"modules", "--json"}).out, HasSubstr("\"workers_min\":3,\"workers_max\":4"));
  EXPECT_EQ(host_->Mpctl({"scale", "misbehave", "--min", "1", "--max", "1"}).exit_code, 0);
  EXPECT_TRUE(Eventually([&] { return Workers(*host_).size() == 1; }, 2000));
  CommandResult bad = host_->Mpctl({"scale", "misbehave", "--min", "3", "--max", "2"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("min <= max"));
  EXPECT_EQ(host_->Mpctl({"scale", "misbehave"}).exit_code, 2);
}

}  // namespace
}  // namespace mp::testing

namespace mp::testing {
namespace {

// SIGKILL a random worker every 200 ms while calls keep every worker busy: the pool stays at
// its size, never above maxWorkers, and only calls in flight on a killed worker fail.
TEST_F(PoolTest, RandomKillsUnderLoadNeverPassMaxWorkers) {
  Start(",\"workers\":2,\"maxWorkers\":2");
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0}, other{0};
  std::vector<std::thread> load;
  for (int i = 0; i < 6; ++i) {
    load.emplace_back([&] {
      while (!stop) {
        const int status = HttpRequest(host_->port(), "GET", "/m/misbehave/ok").status;
        ++(status == 200 ? ok : status == 502 ? failed : other);
      }
    });
  }
  std::mt19937 rng(42);
  size_t most = 0;
  int kills = 0;
  for (int round = 0; round < 15; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const std::string ps = host_->Mpctl({"ps", "--json"}).out;
    std::vector<pid_t> live;
    const std::regex worker("\"pid\":([0-9]+),[^}]*\"state\":\"(ready|busy|starting)\"");
    for (auto it = std::sregex_iterator(ps.begin(), ps.end(), worker); it != std::sregex_iterator(); ++it) {
      live.push_back(std::stoi((*it)[1]));
    }
    most = std::max(most, live.size());
    EXPECT_LE(live.size(), 2u) << ps;
    if (live.empty()) continue;
    if (host_->SignalDescendant(live[rng() % live.size()], SIGKILL)) ++kills;
  }
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_GE(kills, 10);
  EXPECT_LE(most, 2u);
  // Settled: exactly the pool's size again, and the module serves.
  EXPECT_TRUE(Eventually([&] { return Workers(*host_).size() == 2; }, 5000))
      << host_->Mpctl({"ps", "--json"}).out;
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/misbehave/ok").status, 200);
  // Failures: at most one call in flight per kill (each killed worker was serving one call).
  EXPECT_LE(failed.load(), kills) << ok << " ok";
  EXPECT_EQ(other.load(), 0) << "calls that failed otherwise than with their worker";
  EXPECT_GT(ok.load(), 100);
}

}  // namespace
}  // namespace mp::testing
