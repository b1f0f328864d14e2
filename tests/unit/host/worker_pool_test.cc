// The pool's policy with fake workers, a fake clock and delays the test fires by hand: no
// processes, no event loop but KJ's own for the call promises.
#include "host/worker_pool.h"

#include <kj/async.h>

#include <map>
#include <memory>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;

class FakeWorker final : public PoolMember {
 public:
  FakeWorker(uint64_t id, uint64_t generation, int64_t now) : id_(id), generation_(generation), active_(now) {}
  uint64_t id() const override { return id_; }
  WorkerPhase phase() const override { return phase_; }
  bool retiring() const override { return retiring_; }
  uint64_t generation() const override { return generation_; }
  uint64_t calls() const override { return calls_; }
  int64_t last_active_ms() const override { return active_; }
  void Deliver(PendingCall call) override {
    ASSERT_TRUE(CanTakeCall());
    call_ = std::move(call);
    phase_ = WorkerPhase::kBusy;
  }
  bool Pipeline(PendingCall& call, size_t max_waiting) override {
    if (phase_ != WorkerPhase::kBusy || retiring_ || waiting_.size() >= max_waiting) return false;
    waiting_.push_back(std::move(call));
    return true;
  }
  size_t calls_waiting() const override { return waiting_.size(); }
  void Retire(absl::string_view) override {
    retiring_ = true;
    if (phase_ == WorkerPhase::kIdle || phase_ == WorkerPhase::kStarting) phase_ = WorkerPhase::kStopping;
  }

  WorkerPhase phase_ = WorkerPhase::kStarting;
  bool retiring_ = false;
  uint64_t id_, generation_, calls_ = 0;
  int64_t active_;
  std::optional<PendingCall> call_;
  std::deque<PendingCall> waiting_;
};

class FakeOwner final : public PoolOwner {
 public:
  PoolMember* Launch(uint64_t generation) override {
    if (refuse_launch) return nullptr;
    auto w = std::make_unique<FakeWorker>(next_id++, generation, now);
    FakeWorker* raw = w.get();
    workers[raw->id()] = std::move(w);
    ++launched;
    return raw;
  }
  void RunAfter(int64_t delay_ms, std::function<void()> fn) override {
    delayed.push_back({now + delay_ms, std::move(fn)});
  }
  int64_t NowMs() override { return now; }
  void Refuse(PendingCall call, Unavailable, const absl::Status& why) override {
    refused.push_back(std::string(why.message()));
    call.fulfiller->fulfill(CallResult{503, {}, std::string(why.message()), 0, true});
  }
  void Note(absl::string_view event, const PoolMember*, absl::string_view why) override {
    notes.push_back(std::string(event) + ": " + std::string(why));
  }
  // Fires every delayed function that is due.
  void Advance(int64_t ms) {
    now += ms;
    for (size_t i = 0; i < delayed.size();) {
      if (delayed[i].first <= now) {
        auto fn = std::move(delayed[i].second);
        delayed.erase(delayed.begin() + static_cast<long>(i));
        fn();
      } else {
        ++i;
      }
    }
  }

  int64_t now = 1000000;
  uint64_t next_id = 1;
  int launched = 0;
  bool refuse_launch = false;
  std::map<uint64_t, std::unique_ptr<FakeWorker>> workers;
  std::vector<std::pair<int64_t, std::function<void()>>> delayed;
  std::vector<std::string> refused, notes;
};

class WorkerPoolTest : public ::testing::Test {
 protected:
  ~WorkerPoolTest() noexcept override = default;
  WorkerPool::Limits Limits(uint32_t min, uint32_t max) {
    WorkerPool::Limits l;
    l.min_workers = min;
    l.max_workers = max;
    l.idle_timeout_ms = 1000;
    l.queue_limit = 8;
    l.pipeline_depth = 0;  // the tests of pipelining set it
    return l;
  }
  PendingCall Call() {
    auto paf = kj::newPromiseAndFulfiller<CallResult>();
    promises_.push_back(kj::mv(paf.promise));
    return PendingCall{CallRequest{}, kj::mv(paf.fulfiller), kj::origin<kj::TimePoint>()};
  }
  // Makes every starting worker ready.
  void AllReady(WorkerPool& pool) {
    for (auto& [id, w] : owner_.workers) {
      if (w->phase_ == WorkerPhase::kStarting && !w->retiring_) {
        w->phase_ = WorkerPhase::kIdle;
        pool.OnReady(*w);
      }
    }
  }
  // The worker answers its call.
  void Answer(WorkerPool& pool, FakeWorker& w) {
    w.call_->fulfiller->fulfill(CallResult{});
    w.call_.reset();
    ++w.calls_;
    if (!w.waiting_.empty()) {  // it goes on with the next call in its ring
      w.call_ = std::move(w.waiting_.front());
      w.waiting_.pop_front();
    } else {
      w.phase_ = w.retiring_ ? WorkerPhase::kStopping : WorkerPhase::kIdle;
    }
    w.active_ = owner_.now;
    pool.OnCallDone(w);
  }
  // The worker's process is gone.
  void Exit(WorkerPool& pool, uint64_t id, bool expected) {
    auto it = owner_.workers.find(id);
    std::unique_ptr<FakeWorker> w = std::move(it->second);
    owner_.workers.erase(it);
    if (w->call_) w->call_->fulfiller->fulfill(CallResult{502, {}, {}, 0, true});
    pool.OnExited(*w, expected);
  }
  uint32_t Processes(uint64_t generation) {
    uint32_t n = 0;
    for (auto& [id, w] : owner_.workers) n += w->generation_ == generation && w->CountsAsLive();
    return n;
  }

  kj::EventLoop loop_;
  kj::WaitScope wait_{loop_};
  FakeOwner owner_;
  std::vector<kj::Promise<CallResult>> promises_;
};

TEST_F(WorkerPoolTest, StartsTheMinimumAndDispatchesToTheLeastUsed) {
  WorkerPool pool(Limits(2, 2), {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  EXPECT_EQ(owner_.launched, 2);
  AllReady(pool);
  PendingCall a = Call();
  ASSERT_TRUE(pool.Submit(a).ok());
  FakeWorker* first = owner_.workers[1]->call_ ? owner_.workers[1].get() : owner_.workers[2].get();
  Answer(pool, *first);
  PendingCall b = Call();
  ASSERT_TRUE(pool.Submit(b).ok());
  // The other worker, which has served fewer, got the second call.
  EXPECT_FALSE(first->call_.has_value());
}

TEST_F(WorkerPoolTest, GrowsOneWorkerPerWaitingCallUpToTheMaximum) {
  WorkerPool pool(Limits(1, 3), {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  for (int i = 0; i < 6; ++i) {
    PendingCall c = Call();
    ASSERT_TRUE(pool.Submit(c).ok());
  }
  EXPECT_EQ(owner_.launched, 3);  // never more than maxWorkers
  EXPECT_EQ(pool.queue_depth(), 5u);
  AllReady(pool);
  EXPECT_EQ(pool.queue_depth(), 3u);
}

TEST_F(WorkerPoolTest, AFullQueueIsRefused) {
  WorkerPool pool(Limits(1, 1), {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();  // starting, never ready: calls queue
  for (int i = 0; i < 8; ++i) {
    PendingCall c = Call();
    ASSERT_TRUE(pool.Submit(c).ok());
  }
  PendingCall c = Call();
  absl::Status s = pool.Submit(c);
  EXPECT_TRUE(absl::IsResourceExhausted(s));
  EXPECT_THAT(s.message(), HasSubstr("queue is full"));
}

TEST_F(WorkerPoolTest, IdleWorkersAboveTheMinimumStopAfterTheirTimeout) {
  WorkerPool pool(Limits(1, 3), {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  for (int i = 0; i < 3; ++i) {
    PendingCall c = Call();
    pool.Submit(c).IgnoreError();
  }
  AllReady(pool);
  for (auto& [id, w] : owner_.workers) Answer(pool, *w);
  owner_.Advance(500);
  pool.Tick([](PoolMember&) { return 0; });
  EXPECT_EQ(pool.LiveWorkers(), 3u);  // not idle long enough
  owner_.Advance(600);
  pool.Tick([](PoolMember&) { return 0; });
  EXPECT_EQ(pool.LiveWorkers(), 1u);
  EXPECT_EQ(owner_.notes.size(), 2u);
}

TEST_F(WorkerPoolTest, AHealthyWorkerThatEndsIsReplacedAtOnce) {
  WorkerPool pool(Limits(2, 2), {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  PendingCall c = Call();
  ASSERT_TRUE(pool.Submit(c).ok());
  uint64_t served = 0;
  for (auto& [id, w] : owner_.workers) {
    if (w->call_) {
      Answer(pool, *w);
      served = id;
    }
  }
  Exit(pool, served, /*expected=*/false);
  EXPECT_EQ(owner_.launched, 3);
  EXPECT_EQ(pool.restarts(), 1u);
  EXPECT_TRUE(owner_.delayed.empty());
}

TEST_F(WorkerPoolTest, ACrashLoopOpensTheBreakerAndAHealthyTrialClosesIt) {
  RestartPolicyConfig restart;
  restart.max_restarts = 1;
  restart.backoff_base_ms = 10;
  restart.backoff_max_ms = 20;
  restart.cooldown_ms = 1000;
  WorkerPool pool(Limits(1, 1), restart, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  PendingCall waiting = Call();
  ASSERT_TRUE(pool.Submit(waiting).ok());
  // Workers that die before answering anything: at once, then 10 ms, 20 ms, then the breaker.
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(owner_.workers.size(), 1u) << i;
    Exit(pool, owner_.workers.begin()->first, false);
    owner_.Advance(30);
  }
  EXPECT_TRUE(owner_.workers.empty());
  EXPECT_TRUE(pool.failed());
  EXPECT_THAT(pool.failed_reason(), HasSubstr("crash loop"));
  ASSERT_EQ(owner_.refused.size(), 1u);  // the queued call was answered, not left waiting
  PendingCall refused = Call();
  EXPECT_TRUE(absl::IsUnavailable(pool.Submit(refused)));
  // The cooldown passes: one trial worker.
  owner_.Advance(1300);
  pool.Tick([](PoolMember&) { return 0; });
  ASSERT_EQ(owner_.workers.size(), 1u);
  EXPECT_FALSE(pool.failed());  // a worker is on its way: calls wait for it
  AllReady(pool);
  PendingCall call = Call();
  ASSERT_TRUE(pool.Submit(call).ok());
  Answer(pool, *owner_.workers.begin()->second);
  EXPECT_EQ(pool.restart_policy().breaker(), RestartPolicy::Breaker::kClosed);
}

TEST_F(WorkerPoolTest, RecyclesAfterItsCallsWithAReplacementFirst) {
  WorkerPool::Limits limits = Limits(1, 1);
  limits.recycle_after_calls = 3;
  WorkerPool pool(limits, {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  FakeWorker* w = owner_.workers.begin()->second.get();
  for (int i = 0; i < 3; ++i) {
    PendingCall c = Call();
    ASSERT_TRUE(pool.Submit(c).ok());
    Answer(pool, *w);
  }
  EXPECT_TRUE(w->retiring_);
  EXPECT_EQ(owner_.launched, 2);  // its replacement, while it stops
}

TEST_F(WorkerPoolTest, ANewGenerationRetiresTheOldOnesWorkers) {
  WorkerPool pool(Limits(2, 2), {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  for (int i = 0; i < 2; ++i) pool.Adopt(owner_.Launch(2));
  AllReady(pool);
  pool.SetGeneration(2);
  for (auto& [id, w] : owner_.workers) EXPECT_EQ(w->retiring_, w->generation_ == 1) << id;
  EXPECT_EQ(pool.LiveWorkers(), 2u);
}

// The bug of issue 14: workers killed one after another under load, with growth and restarts
// racing, must never leave more than maxWorkers live processes of the generation.
TEST_F(WorkerPoolTest, NoSequenceOfKillsPassesMaxWorkers) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    FakeOwner owner;
    std::swap(owner_, owner);
    {
      WorkerPool pool(Limits(2, 3), {}, owner_, seed);
      pool.SetGeneration(1);
      pool.EnsureMinimum();
      std::mt19937 rng(seed);
      for (int step = 0; step < 2000; ++step) {
        switch (rng() % 6) {
          case 0: {  // a call arrives
            PendingCall c = Call();
            pool.Submit(c).IgnoreError();
            break;
          }
          case 1:
            AllReady(pool);
            break;
          case 2:  // a busy worker answers
            for (auto& [id, w] : owner_.workers) {
              if (w->call_) {
                Answer(pool, *w);
                break;
              }
            }
            break;
          case 3: {  // SIGKILL a random worker
            if (owner_.workers.empty()) break;
            auto it = std::next(owner_.workers.begin(),
                                static_cast<long>(rng() % owner_.workers.size()));
            Exit(pool, it->first, it->second->phase_ == WorkerPhase::kStopping);
            break;
          }
          case 4:
            owner_.Advance(static_cast<int64_t>(rng() % 300));
            break;
          case 5:
            pool.Tick([](PoolMember&) { return 0; });
            break;
        }
        ASSERT_LE(Processes(1), 3u) << "seed " << seed << " step " << step;
        ASSERT_LE(pool.LiveWorkers(), 3u) << "seed " << seed << " step " << step;
      }
      // Settled: no call left behind, no process above the cap.
      pool.FailQueue(Unavailable::kDraining, absl::CancelledError("test over"));
      for (auto& [id, w] : owner_.workers) {
        if (w->call_) w->call_->fulfiller->fulfill(CallResult{});
      }
    }
    std::swap(owner_, owner);
  }
}

TEST_F(WorkerPoolTest, AtItsCapABusyWorkerTakesCallsInItsRingUpToTheDepth) {
  WorkerPool::Limits limits = Limits(2, 2);
  limits.pipeline_depth = 2;
  WorkerPool pool(limits, {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  for (int i = 0; i < 7; ++i) {
    PendingCall c = Call();
    ASSERT_TRUE(pool.Submit(c).ok());
  }
  // Two running, two waiting in each ring, the seventh in the queue: never past the depth.
  EXPECT_EQ(owner_.launched, 2);
  EXPECT_EQ(owner_.workers[1]->waiting_.size(), 2u);
  EXPECT_EQ(owner_.workers[2]->waiting_.size(), 2u);
  EXPECT_EQ(pool.queue_depth(), 1u);
  // An answer frees a place in that worker's ring: the queued call goes there.
  Answer(pool, *owner_.workers[1]);
  EXPECT_EQ(pool.queue_depth(), 0u);
  EXPECT_EQ(owner_.workers[1]->waiting_.size(), 2u);
}

TEST_F(WorkerPoolTest, BelowItsCapThePoolGrowsBeforeItPipelines) {
  WorkerPool::Limits limits = Limits(1, 3);
  limits.pipeline_depth = 2;
  WorkerPool pool(limits, {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  PendingCall a = Call(), b = Call();
  ASSERT_TRUE(pool.Submit(a).ok());
  ASSERT_TRUE(pool.Submit(b).ok());
  EXPECT_EQ(owner_.launched, 2);  // a second worker for the second call
  // While it starts, the call may wait in the busy worker's ring rather than in the queue.
  EXPECT_EQ(owner_.workers[1]->waiting_.size() + pool.queue_depth(), 1u);
}

TEST_F(WorkerPoolTest, NoPipeliningWithADepthOfZero) {
  WorkerPool pool(Limits(1, 1), {}, owner_, 1);
  pool.SetGeneration(1);
  pool.EnsureMinimum();
  AllReady(pool);
  for (int i = 0; i < 3; ++i) {
    PendingCall c = Call();
    ASSERT_TRUE(pool.Submit(c).ok());
  }
  EXPECT_EQ(owner_.workers[1]->waiting_.size(), 0u);
  EXPECT_EQ(pool.queue_depth(), 2u);
}

}  // namespace
}  // namespace mp::host
