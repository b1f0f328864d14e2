// Generations, build failures, copy-on-write and accounting, on the real mphost.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <regex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(ReloadTest, ReloadUnderLoadFailsNoCall) {
  TempDir dir;
  const std::string greeting = dir.Write("greeting", "generation one\n");
  const std::string config = dir.Write(
      "mphost.json", "{\"modules\":[" + Echo(",\"dataFiles\":{\"greeting\":\"" + greeting + "\"}") + "]}");
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();

  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::string> failures;
  std::mutex mu;
  auto load = [&] {
    for (int i = 0; i < 20000 && !stop.load(); ++i) {  // bounded in count; the test bounds time
      HttpResponse r = HttpRequest(host.port(), "POST", "/m/echo/load", "x");
      if (r.status == 200 && r.body.rfind("generation ", 0) == 0) {
        ++ok;
      } else {
        ++failed;
        std::lock_guard<std::mutex> lock(mu);
        if (failures.size() < 5) failures.push_back(std::to_string(r.status) + " " + r.body);
      }
    }
  };
  std::thread a(load), b(load);
  const char* names[] = {"two", "three", "four"};
  for (const char* name : names) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    dir.Write("greeting", std::string("generation ") + name + "\n");
    CommandResult r = host.Mpctl({"reload", "echo"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_THAT(r.out, HasSubstr("now serves generation"));
    HttpResponse after = HttpRequest(host.port(), "GET", "/m/echo/");
    EXPECT_THAT(after.body, StartsWith(std::string("generation ") + name + "\n"));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  stop = true;
  a.join();
  b.join();
  EXPECT_EQ(failed.load(), 0) << (failures.empty() ? "" : failures[0]);
  EXPECT_GT(ok.load(), 100);

  // Every worker is of generation 4, and old generations are retired and unmapped.
  std::string heaps;
  for (int i = 0; i < 200; ++i) {
    heaps = host.Mpctl({"heap", "--json"}).out;
    if (std::count(heaps.begin(), heaps.end(), '{') == 2) break;  // the object + one heap
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(JsonNumber(heaps, "generation"), 4u) << heaps;
  std::string ps = host.Mpctl({"ps", "--json"}).out;
  EXPECT_EQ(WorkerPids(ps).size(), 2u);
  EXPECT_EQ(ps.find("\"generation\":1"), std::string::npos) << ps;
  EXPECT_THAT(host.Log(), HasSubstr("event=generation_retired module=echo generation=3"));
}

TEST(ReloadTest, FailedReloadLeavesTheCurrentGenerationServing) {
  TempDir dir;
  const std::string greeting = dir.Write("greeting", "still here\n");
  const std::string config = dir.Write(
      "mphost.json", "{\"modules\":[" + Echo(",\"dataFiles\":{\"greeting\":\"" + greeting + "\"}") + "]}");
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  ::unlink(greeting.c_str());
  CommandResult r = host.Mpctl({"reload", "echo"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("data file 'greeting' (" + greeting + "): No such file"));
  EXPECT_THAT(HttpRequest(host.port(), "GET", "/m/echo/").body, StartsWith("still here\n"));
  std::string modules = host.Mpctl({"modules", "--json"}).out;
  EXPECT_THAT(modules, HasSubstr("\"state\":\"serving\""));
  EXPECT_EQ(JsonNumber(modules, "generation"), 1u);
  EXPECT_EQ(host.Mpctl({"reload", "nosuch"}).exit_code, 1);
}

struct BuildFailureCase {
  const char* name;
  const char* extra;     // misbehave's config fields
  const char* expected;  // in the module's failure reason
};

class BuildFailureTest : public ::testing::TestWithParam<BuildFailureCase> {};

TEST_P(BuildFailureTest, FailsOnlyThatModule) {
  TempDir dir;
  const std::string config = dir.Write(
      "mphost.json", "{\"modules\":[" + Echo() + "," + Misbehave(GetParam().extra) + "]}");
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  HttpResponse bad = HttpRequest(host.port(), "GET", "/m/misbehave/ok");
  EXPECT_EQ(bad.status, 503);
  EXPECT_THAT(bad.body, HasSubstr(GetParam().expected));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  std::string modules = host.Mpctl({"modules", "--json"}).out;
  EXPECT_THAT(modules, HasSubstr("\"state\":\"failed\""));
  EXPECT_THAT(modules, HasSubstr(GetParam().expected));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/readyz").status, 503);  // not every module ready
}

INSTANTIATE_TEST_SUITE_P(
    Builds, BuildFailureTest,
    ::testing::Values(
        BuildFailureCase{"crash", ",\"options\":{\"build\":\"crash\"}", "killed by SIGSEGV"},
        BuildFailureCase{"throw", ",\"options\":{\"build\":\"throw\"}", "build threw on purpose"},
        BuildFailureCase{"oversize", ",\"options\":{\"build\":\"oversize\"},\"maxHeapMb\":4",
                         "the heap is full"},
        BuildFailureCase{"spin", ",\"options\":{\"build\":\"spin\"},\"buildTimeoutMs\":300",
                         "build did not finish within 300 ms"},
        BuildFailureCase{"fork", ",\"options\":{\"build\":\"fork\"}", "forbidden syscall"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(StartupTest, AllModulesFailingStopsStartup) {
  TempDir dir;
  const std::string config = dir.Write(
      "mphost.json", "{\"modules\":[" + Misbehave(",\"options\":{\"build\":\"throw\"}") + "]}");
  CommandResult r = RunCommand({BinDir() + "/mphost", "--config", config, "--listen",
                                "127.0.0.1:0", "--control", dir.path() + "/c.sock"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("no module could be built"));
  EXPECT_THAT(r.err, HasSubstr("build threw on purpose"));
}

// Reads `n` bytes at `offset` of the memfd that `pid` holds at fd 4 (a zygote's heap).
std::string ReadZygoteHeap(pid_t zygote, off_t offset, size_t n) {
  int fd = ::open(("/proc/" + std::to_string(zygote) + "/fd/4").c_str(), O_RDONLY);
  if (fd < 0) return "";
  std::string out(n, '\0');
  ssize_t got = ::pread(fd, out.data(), n, offset);
  ::close(fd);
  out.resize(got > 0 ? static_cast<size_t>(got) : 0);
  return out;
}

TEST(CopyOnWriteTest, WritesStayPrivateToTheWriter) {
  TempDir dir;
  const std::string config = dir.Write(
      "mphost.json", "{\"modules\":[" + Misbehave(",\"heapMode\":\"cow\",\"workers\":2") + "]}");
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  HttpResponse w = HttpRequest(host.port(), "GET", "/m/misbehave/write-heap");
  ASSERT_EQ(w.status, 200) << w.body;
  const pid_t writer = std::stoi(w.headers["x-mphost-worker"]);
  // The other worker, and the memfd itself, still see the original bytes.
  bool saw_other = false;
  for (int i = 0; i < 10; ++i) {
    HttpResponse r = HttpRequest(host.port(), "GET", "/m/misbehave/ok");
    const pid_t who = std::stoi(r.headers["x-mphost-worker"]);
    if (who == writer) {
      EXPECT_EQ(r.body, "Xisbehave heap");  // its own private copy
    } else {
      EXPECT_EQ(r.body, "misbehave heap");
      saw_other = true;
    }
  }
  EXPECT_TRUE(saw_other);
  std::string ps = host.Mpctl({"ps", "--json"}).out;
  // Exactly one worker privatized heap pages; the sealed memfd is unchanged.
  EXPECT_THAT(ps, HasSubstr("\"heap_privatized_bytes\":4096"));
  EXPECT_THAT(ps, HasSubstr("\"heap_privatized_bytes\":0"));
  std::vector<pid_t> children = host.Descendants();
  std::vector<pid_t> workers = WorkerPids(ps);
  bool checked = false;
  for (pid_t c : children) {
    if (std::find(workers.begin(), workers.end(), c) != workers.end()) continue;
    std::string bytes = ReadZygoteHeap(c, 4096, 64 * 1024);
    if (bytes.empty()) continue;
    EXPECT_NE(bytes.find("misbehave heap"), std::string::npos);
    EXPECT_EQ(bytes.find("Xisbehave heap"), std::string::npos);
    checked = true;
  }
  EXPECT_TRUE(checked) << "found no zygote holding the heap";
}

TEST(CopyOnWriteTest, ReadOnlyHeapWriteKillsOnlyTheWriter) {
  TempDir dir;
  const std::string config =
      dir.Write("mphost.json", "{\"modules\":[" + Echo() + "," + Misbehave("") + "]}");
  HostProcess host({"--config", config});
  ASSERT_TRUE(host.started()) << host.Log();
  HttpResponse w = HttpRequest(host.port(), "GET", "/m/misbehave/write-heap");
  EXPECT_EQ(w.status, 502);
  EXPECT_THAT(w.body, HasSubstr("SIGSEGV"));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/misbehave/ok").body, "misbehave heap");
}

// /proc/PID/smaps_rollup's Pss in bytes, read independently of the host.
uint64_t ProcPss(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Pss:", 0) == 0) return std::stoull(line.substr(4)) * 1024;
  }
  return 0;
}

TEST(AccountingTest, FiguresAgreeWithProc) {
  HostProcess host;
  ASSERT_TRUE(host.started()) << host.Log();
  HttpRequest(host.port(), "GET", "/m/echo/");
  std::string ps = host.Mpctl({"ps", "--json"}).out;
  std::regex entry("\\{\"pid\":([0-9]+),\"module\":\"echo\"[^}]*\"pss_bytes\":([0-9]+),\"uss_bytes\":([0-9]+),"
                   "\"heap_resident_bytes\":([0-9]+),\"heap_privatized_bytes\":([0-9]+)");
  int seen = 0;
  for (auto it = std::sregex_iterator(ps.begin(), ps.end(), entry); it != std::sregex_iterator();
       ++it) {
    ++seen;
    const pid_t pid = std::stoi((*it)[1]);
    const uint64_t pss = std::stoull((*it)[2]);
    const uint64_t proc = ProcPss(pid);
    ASSERT_GT(proc, 0u);
    // Read a moment apart: allow for the other worker's pages changing the split a little.
    EXPECT_NEAR(static_cast<double>(pss), static_cast<double>(proc), proc * 0.1 + 65536.0) << pid;
    EXPECT_GT(std::stoull((*it)[3]), 0u);
    EXPECT_GT(std::stoull((*it)[4]), 0u);  // the heap page read by the worker is resident
    EXPECT_EQ(std::stoull((*it)[5]), 0u);  // read-only: nothing privatized
  }
  EXPECT_EQ(seen, 2) << ps;
  std::string heap = host.Mpctl({"heap", "echo", "--json"}).out;
  EXPECT_THAT(heap, HasSubstr("\"seals\":[\"seal\",\"shrink\",\"grow\",\"write\"]"));
  EXPECT_EQ(JsonNumber(heap, "mappers"), 3u) << heap;  // two workers and the zygote
  EXPECT_EQ(JsonNumber(heap, "privatized_bytes"), 0u);
  HttpResponse metrics = HttpRequest(host.port(), "GET", "/metrics");
  EXPECT_THAT(metrics.body, HasSubstr("mphost_worker_pss_bytes{module=\"echo\"} "));
  EXPECT_THAT(metrics.body, HasSubstr("mphost_heap_privatized_bytes{module=\"echo\"} 0\n"));
  EXPECT_THAT(metrics.body, HasSubstr("mphost_host_pss_bytes "));
  CommandResult human = host.Mpctl({"heap"});
  EXPECT_THAT(human.out, HasSubstr("PRIVATIZED"));
  EXPECT_THAT(human.out, HasSubstr("KiB"));
}

}  // namespace
}  // namespace mp::testing
