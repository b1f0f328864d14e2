// The dict module served by the real mphost: its routes, its errors, the synthetic words, and
// a reload that picks up a changed word list.
#include <signal.h>

#include <atomic>
#include <fstream>
#include <random>
#include <regex>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;

class DictTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mphost-dict-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    std::ofstream(dir_ + "/words") << "apple\napply\napricot\nbanana\nword\nworld\n";
  }
  void TearDown() override {
    host_.reset();
    int unused = ::system(("rm -rf '" + dir_ + "'").c_str());
    (void)unused;
  }
  void Start(const std::string& extra = "") {
    std::ofstream(dir_ + "/mphost.json")
        << "{\"modules\":[{\"name\":\"dict\",\"plugin\":\"" << ModuleDir()
        << "/libdict.so\",\"dataFiles\":{\"words\":\"words\"}" << extra << "}]}";
    host_ = std::make_unique<HostProcess>(std::vector<std::string>{"--config", dir_ + "/mphost.json"});
    ASSERT_TRUE(host_->started()) << host_->Log();
  }
  HttpResponse Get(const std::string& target) { return HttpRequest(host_->port(), "GET", target); }
  std::string dir_;
  std::unique_ptr<HostProcess> host_;
};

TEST_F(DictTest, Routes) {
  Start();
  HttpResponse prefix = Get("/m/dict/prefix?q=ap&limit=2");
  EXPECT_EQ(prefix.status, 200);
  EXPECT_EQ(prefix.headers["content-type"], "application/json");
  EXPECT_EQ(prefix.body, "{\"q\":\"ap\",\"words\":[\"apple\",\"apply\"]}");
  EXPECT_EQ(Get("/m/dict/lookup?w=banana").body, "{\"w\":\"banana\",\"found\":true}");
  HttpResponse missing = Get("/m/dict/lookup?w=cherry");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.body, "{\"w\":\"cherry\",\"found\":false}");
  HttpResponse suggest = Get("/m/dict/suggest?w=wrod");
  EXPECT_EQ(suggest.status, 200);
  EXPECT_THAT(suggest.body, HasSubstr("{\"word\":\"word\",\"distance\":1}"));
  EXPECT_THAT(suggest.body, HasSubstr("\"world\""));
  EXPECT_THAT(Get("/m/dict/stats").body, HasSubstr("\"words\":6"));
  HttpResponse bad = Get("/m/dict/lookup");
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("w"));
  EXPECT_EQ(Get("/m/dict/nope").status, 404);
}

TEST_F(DictTest, SyntheticWordsGrowTheHeap) {
  Start(",\"options\":{\"synthetic_mb\":\"1\"}");
  std::smatch m;
  std::string stats = Get("/m/dict/stats").body;
  ASSERT_TRUE(std::regex_search(stats, m, std::regex("\"words\":([0-9]+)")));
  EXPECT_GT(std::stoul(m[1]), 100000u);  // 1 MiB of 4-12 letter words
}

TEST_F(DictTest, ReloadPicksUpANewWordList) {
  Start();
  EXPECT_EQ(Get("/m/dict/lookup?w=cherry").status, 404);
  std::ofstream(dir_ + "/words") << "cherry\n";
  CommandResult r = host_->Mpctl({"reload", "dict"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Get("/m/dict/lookup?w=cherry").status, 200);
  EXPECT_EQ(Get("/m/dict/lookup?w=apple").status, 404);
}

TEST_F(DictTest, MissingWordListIsRefusedNamingIt) {
  std::ofstream(dir_ + "/mphost.json")
      << "{\"modules\":[{\"name\":\"dict\",\"plugin\":\"" << ModuleDir()
      << "/libdict.so\",\"dataFiles\":{\"words\":\"absent\"}}]}";
  CommandResult r = RunCommand({BinDir() + "/mphost", "--config", dir_ + "/mphost.json", "--listen",
                                "127.0.0.1:0", "--control", dir_ + "/c.sock"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("module 'dict': data file 'words' (" + dir_ + "/absent)"));
}

// The chaos run of issue 13: four dict workers, ten SIGKILLs in two seconds under load. The
// killed workers answered calls before, so each is replaced at once and the crash-loop breaker
// never opens: dict keeps serving, and only the calls in flight on a killed worker fail.
TEST_F(DictTest, TenKillsInTwoSecondsUnderLoadKeepItServing) {
  Start(",\"workers\":4,\"maxWorkers\":4");
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> load;
  for (int i = 0; i < 6; ++i) {
    load.emplace_back([&] {
      while (!stop) ++(Get("/m/dict/prefix?q=ap").status == 200 ? ok : failed);
    });
  }
  std::mt19937 rng(7);
  int kills = 0;
  for (int round = 0; round < 10; ++round) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const std::vector<pid_t> live = WorkerPids(host_->Mpctl({"ps", "--json"}).out, "dict");
    if (!live.empty() && host_->SignalDescendant(live[rng() % live.size()], SIGKILL)) ++kills;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& t : load) t.join();
  EXPECT_GE(kills, 8);
  EXPECT_LE(failed.load(), kills) << ok << " ok";
  EXPECT_GT(ok.load(), 100);
  const std::string modules = host_->Mpctl({"modules", "--json"}).out;
  EXPECT_THAT(modules, HasSubstr("\"state\":\"serving\""));
  EXPECT_THAT(modules, HasSubstr("\"breaker\":\"closed\""));
  EXPECT_EQ(Get("/m/dict/prefix?q=ap").status, 200);
}

}  // namespace
}  // namespace mp::testing
