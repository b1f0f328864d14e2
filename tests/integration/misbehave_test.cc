// Whatever a handler does, the host keeps serving, other modules are untouched, the client
// gets an error naming the cause, a replacement worker comes up, and the heap is unchanged.
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <thread>

#include <sys/socket.h>
#include <unistd.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"
#include "shm/module_heap.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;

struct Behaviour {
  const char* path;
  int status;
  const char* error;  // in the client's body
};

// Worker pids of `module` from `mpctl ps --json`.
std::vector<pid_t> ModuleWorkers(HostProcess& host, const std::string& module) {
  std::string ps = host.Mpctl({"ps", "--json"}).out;
  std::vector<pid_t> out;
  std::regex re("\"pid\":([0-9]+),\"module\":\"" + module + "\"");
  for (auto it = std::sregex_iterator(ps.begin(), ps.end(), re); it != std::sregex_iterator(); ++it) {
    out.push_back(std::stoi((*it)[1]));
  }
  return out;
}

// Recomputes the checksum of the sealed heap from its bytes, through the zygote's descriptor,
// and compares it with the header.
void ExpectHeapIntact(HostProcess& host) {
  int checked = 0;
  for (pid_t child : {host.Zygote("misbehave")}) {
    // The zygote keeps the heap memfd at fd 4 (its workers close it).
    int fd = ::open(("/proc/" + std::to_string(child) + "/fd/4").c_str(), O_RDONLY);
    if (fd < 0) continue;
    off_t size = ::lseek(fd, 0, SEEK_END);
    std::vector<std::byte> bytes(static_cast<size_t>(size));
    ASSERT_EQ(::pread(fd, bytes.data(), bytes.size(), 0), size);
    ::close(fd);
    auto view = shm::OpenHeap(bytes.data(), bytes.size(), /*verify_checksum=*/true);
    EXPECT_TRUE(view.ok()) << view.status();
    ++checked;
  }
  EXPECT_EQ(checked, 1);
}

class MisbehaveTest : public ::testing::TestWithParam<Behaviour> {
 protected:
  void SetUp() override {
    configured_ = std::make_unique<ConfiguredHost>(
        "mphost-misbehave",
        "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" + ModuleDir() +
            "/libecho.so\",\"workers\":1},{\"name\":\"misbehave\",\"plugin\":\"" +
            ModuleDir() +
            "/libmisbehave.so\",\"workers\":2,\"callTimeoutMs\":1500,\"maxRestarts\":100,"
            "\"workerMemoryMb\":128}]}");
    host_ = &configured_->host();
    ASSERT_TRUE(host_->started()) << host_->Log();
  }
  std::unique_ptr<ConfiguredHost> configured_;
  HostProcess* host_ = nullptr;
};

TEST_P(MisbehaveTest, HostSurvivesAndReplacesTheWorker) {
  const Behaviour& b = GetParam();
  HostProcess& host = *host_;
  std::vector<pid_t> before;
  for (int i = 0; i < 300 && (before = ModuleWorkers(host, "misbehave")).size() != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(before.size(), 2u) << host.Log();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);

  HttpResponse r = HttpRequest(host.port(), "GET", std::string("/m/misbehave") + b.path);
  EXPECT_EQ(r.status, b.status) << r.body;
  EXPECT_THAT(r.body, HasSubstr(b.error));

  // Other modules are served, the host is alive, and a replacement worker is ready.
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  std::vector<pid_t> after;
  for (int i = 0; i < 300; ++i) {  // ≤ 3 s
    after = ModuleWorkers(host, "misbehave");
    if (after.size() == 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(after.size(), 2u);
  HttpResponse ok = HttpRequest(host.port(), "GET", "/m/misbehave/ok");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "misbehave heap");
  EXPECT_EQ(::kill(host.pid(), 0), 0);
  ExpectHeapIntact(host);
  // The exit is counted by cause.
  std::string metrics;
  for (int i = 0; i < 100 && metrics.find("mphost_worker_exits_total{module=\"misbehave\"") == std::string::npos; ++i) {
    metrics = HttpRequest(host.port(), "GET", "/metrics").body;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(metrics, HasSubstr("mphost_worker_exits_total{module=\"misbehave\""));
}

INSTANTIATE_TEST_SUITE_P(
    Behaviours, MisbehaveTest,
    ::testing::Values(
        Behaviour{"/segv", 502, "killed by SIGSEGV"},
        Behaviour{"/abort", 502, "killed by SIGABRT"},
        Behaviour{"/exit", 502, "died during the call: exited with status 0"},
        Behaviour{"/stack", 502, "killed by SIGSEGV"},
        Behaviour{"/spin", 504, "missed its deadline of 1500 ms"},
        Behaviour{"/alloc", 502, "ran out of memory"},
        Behaviour{"/write-heap", 502, "killed by SIGSEGV"},
        Behaviour{"/open", 502, "module 'misbehave' called forbidden syscall openat"},
        Behaviour{"/socket", 502, "module 'misbehave' called forbidden syscall socket"},
        Behaviour{"/connect", 502, "module 'misbehave' called forbidden syscall connect"},
        Behaviour{"/execve", 502, "module 'misbehave' called forbidden syscall execve"},
        Behaviour{"/fork", 502, "module 'misbehave' called forbidden syscall fork"},
        Behaviour{"/ptrace", 502, "module 'misbehave' called forbidden syscall ptrace"},
        Behaviour{"/kill-host", 502, "module 'misbehave' called forbidden syscall kill"},
        Behaviour{"/mprotect-exec", 502, "module 'misbehave' called forbidden syscall mprotect"},
        // A compromised worker writing its own ring:
        Behaviour{"/garbage-ring", 502, "broke the ring protocol (bad_kind)"},
        Behaviour{"/frame-too-large", 502, "broke the ring protocol (frame_too_large)"},
        Behaviour{"/answer-unasked", 502, "which it was not given"},
        Behaviour{"/chunk-flood", 502, "past the maximum of 1048576 of maxMessageKb"},
        Behaviour{"/die-mid-reply", 502, "died during the call: exited with status 1"}),
    [](const auto& info) {
      std::string name = info.param.path + 1;
      for (char& c : name) {
        if (c == '-') c = '_';
      }
      return name;
    });

TEST_F(MisbehaveTest, HandlerFailureIs500AndKeepsTheWorker) {
  const auto before = ModuleWorkers(*host_, "misbehave");
  HttpResponse r = HttpRequest(host_->port(), "GET", "/m/misbehave/fail");
  EXPECT_EQ(r.status, 500);
  EXPECT_THAT(r.body, HasSubstr("module 'misbehave': the module's handler failed"));
  EXPECT_EQ(ModuleWorkers(*host_, "misbehave"), before);
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/misbehave/status/418").status, 418);
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/misbehave/status/99").status, 502);  // not HTTP
}

// 204, 205 and 304 have no body in HTTP: the module's is dropped, and the answer arrives whole
// on a connection that serves on.
TEST_F(MisbehaveTest, ABodyOnABodilessStatusIsDroppedAndTheConnectionServesOn) {
  const int fd = ConnectLoopback(host_->port());
  ASSERT_GE(fd, 0);
  std::string got;
  for (const char* status : {"204", "304", "205"}) {
    const std::string request =
        std::string("GET /m/misbehave/status/") + status + " HTTP/1.1\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(request.size()));
    ASSERT_TRUE(ReadUntil(fd, std::string("HTTP/1.1 ") + status, 5000, &got)) << got;
  }
  const std::string ok = "GET /m/misbehave/ok HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::send(fd, ok.data(), ok.size(), MSG_NOSIGNAL), static_cast<ssize_t>(ok.size()));
  EXPECT_TRUE(ReadUntil(fd, "HTTP/1.1 200", 5000, &got)) << got;
  EXPECT_EQ(got.find("status on request"), std::string::npos) << got;
  ::close(fd);
}

TEST_F(MisbehaveTest, AnsweringTwiceServesTheFirstAnswerAndEndsTheWorker) {
  const auto before = ModuleWorkers(*host_, "misbehave");
  HttpResponse r = HttpRequest(host_->port(), "GET", "/m/misbehave/answer-twice");
  EXPECT_EQ(r.status, 200);
  std::vector<pid_t> after;
  for (int i = 0; i < 300; ++i) {
    after = ModuleWorkers(*host_, "misbehave");
    if (after.size() == 2 && after != before) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(after, before);
  EXPECT_THAT(host_->Log(), HasSubstr("which it was not given"));
  EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/echo/").status, 200);
}

TEST_F(MisbehaveTest, CancelledCallThatStopsKeepsItsWorker) {
  const auto before = ModuleWorkers(*host_, "misbehave");
  HttpResponse r = HttpRequest(host_->port(), "GET", "/m/misbehave/spin-cooperative");
  EXPECT_EQ(r.status, 504);
  EXPECT_THAT(r.body, HasSubstr("missed its deadline of 1500 ms"));
  // The handler saw the cancel and returned: its answer is dropped, the worker lives on.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(HttpRequest(host_->port(), "GET", "/m/misbehave/ok").status, 200);
  }
  EXPECT_EQ(ModuleWorkers(*host_, "misbehave"), before);
  EXPECT_THAT(host_->Log(), ::testing::Not(HasSubstr("worker_exit module=misbehave")));
}

TEST_F(MisbehaveTest, CancelledCallThatSpinsOnIsKilledAfterTheGrace) {
  const auto before = ModuleWorkers(*host_, "misbehave");
  HttpResponse r = HttpRequest(host_->port(), "GET", "/m/misbehave/spin");
  EXPECT_EQ(r.status, 504);
  std::vector<pid_t> after;
  for (int i = 0; i < 400; ++i) {  // grace 1 s + restart; ≤ 4 s
    after = ModuleWorkers(*host_, "misbehave");
    if (after.size() == 2 && after != before) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(after, before);
  EXPECT_THAT(host_->Log(), HasSubstr("of its call being cancelled"));
}

TEST(CrashLoopTest, BreakerMarksTheModuleFailedAndRestartClearsIt) {
  char tmpl[] = "/tmp/mphost-loop-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/mphost.json")
      << "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir()
      << "/libecho.so\",\"workers\":1},{\"name\":\"misbehave\",\"plugin\":\"" << ModuleDir()
      << "/libmisbehave.so\",\"workers\":1,\"maxRestarts\":2,\"restartWindowMs\":60000}]}";
  {
    HostProcess host({"--config", dir + "/mphost.json"});
    ASSERT_TRUE(host.started()) << host.Log();
    HttpResponse last;
    for (int i = 0; i < 20; ++i) {  // bounded: the breaker trips after 3 ends
      last = HttpRequest(host.port(), "GET", "/m/misbehave/segv");
      if (last.status == 503) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    EXPECT_EQ(last.status, 503);
    EXPECT_THAT(last.body, HasSubstr("crash loop"));
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
    EXPECT_THAT(host.Mpctl({"modules", "--json"}).out, HasSubstr("\"state\":\"failed\""));
    CommandResult restart = host.Mpctl({"restart", "misbehave"});
    EXPECT_EQ(restart.exit_code, 0) << restart.err;
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/misbehave/ok").status, 200);
    EXPECT_THAT(host.Mpctl({"modules", "--json"}).out, ::testing::Not(HasSubstr("\"state\":\"failed\"")));
  }
  int unused = ::system(("rm -rf '" + dir + "'").c_str());
  (void)unused;
}

}  // namespace
}  // namespace mp::testing
