// The real mphost on loopback, driven the way users drive it: HTTP and mpctl.
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <regex>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

class HostTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(host_.started()) << host_.Log(); }
  HostProcess host_;
};

TEST_F(HostTest, EchoAnswersFromTheHeapWithTheRequestBody) {
  HttpResponse r = HttpRequest(host_.port(), "POST", "/m/echo/some/path?x=1", "payload-123");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, StartsWith("hello from the echo heap\n"));  // read from the sealed heap
  EXPECT_THAT(r.body, HasSubstr("POST /some/path\n"));
  EXPECT_THAT(r.body, HasSubstr("payload-123"));
  // The answering worker is one of the host's microprocesses.
  CommandResult ps = host_.Mpctl({"ps", "--json"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  auto pids = WorkerPids(ps.out, "echo");
  ASSERT_EQ(pids.size(), 2u) << ps.out;
  const pid_t served = std::stoi(r.headers["x-mphost-worker"]);
  EXPECT_TRUE(served == pids[0] || served == pids[1]) << served;

  HttpResponse get = HttpRequest(host_.port(), "GET", "/m/echo");
  EXPECT_EQ(get.status, 200);
  EXPECT_THAT(get.body, HasSubstr("GET /\n"));
}

TEST_F(HostTest, UnknownModuleIs404WithJsonError) {
  HttpResponse r = HttpRequest(host_.port(), "GET", "/m/nosuch/x");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.headers["content-type"], "application/json");
  EXPECT_EQ(r.body, "{\"error\":\"no module named 'nosuch'\",\"module\":\"nosuch\"}\n");
  EXPECT_EQ(HttpRequest(host_.port(), "GET", "/elsewhere").status, 404);
}

TEST_F(HostTest, HealthAndReadiness) {
  EXPECT_EQ(HttpRequest(host_.port(), "GET", "/healthz").status, 200);
  EXPECT_EQ(HttpRequest(host_.port(), "GET", "/readyz").status, 200);
  HttpRequest(host_.port(), "GET", "/m/echo/");
  HttpResponse m = HttpRequest(host_.port(), "GET", "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_THAT(m.body, HasSubstr("mphost_calls_total{module=\"echo\",status=\"200\"}"));
}

TEST_F(HostTest, WorkersAreSandboxedAndMapTheHeapPrivateReadOnly) {
  CommandResult ps = host_.Mpctl({"ps", "--json"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  auto pids = WorkerPids(ps.out, "echo");
  ASSERT_EQ(pids.size(), 2u);
  for (pid_t pid : pids) {
    EXPECT_EQ(ProcStatusField(pid, "Seccomp"), "2") << pid;
    EXPECT_EQ(ProcStatusField(pid, "NoNewPrivs"), "1") << pid;
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    std::string line;
    int heap_maps = 0;
    while (std::getline(maps, line)) {
      if (line.find("mp-heap.echo") == std::string::npos) continue;
      ++heap_maps;
      std::istringstream fields(line);
      std::string range, perms;
      fields >> range >> perms;
      EXPECT_EQ(perms[3], 'p') << "heap must be mapped private: " << line;
      EXPECT_EQ(perms[1], '-') << "heap must be mapped read-only: " << line;
    }
    EXPECT_EQ(heap_maps, 1) << "worker " << pid << " should map the heap exactly once";
    // Only stderr and the doorbell stay open.
    int fds = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) {
      (void)entry;
      ++fds;
    }
    EXPECT_EQ(fds, 2) << pid;
  }
}

TEST_F(HostTest, EveryLayerIsInForceAndListedFromProc) {
  CommandResult ps = host_.Mpctl({"ps", "--json"});
  auto pids = WorkerPids(ps.out, "echo");
  ASSERT_EQ(pids.size(), 2u);
  for (const char* layer : {"close_fds", "rlimits", "no_new_privs", "seccomp", "landlock",
                            "user_ns", "pid_ns", "net_ns", "ipc_ns", "mnt_ns"}) {
    std::regex re(std::string("\"") + layer + "\"");
    EXPECT_EQ(std::distance(std::sregex_iterator(ps.out.begin(), ps.out.end(), re),
                            std::sregex_iterator()),
              static_cast<long>(WorkerPids(ps.out).size()))
        << layer << " missing: " << ps.out;
  }
  for (pid_t pid : pids) {
    // Outside its user namespace the worker is nobody, and it is pid 1 of its own namespace.
    EXPECT_EQ(ProcStatusField(pid, "Uid").substr(0, 5), ::getuid() == 0 ? "65534" : std::to_string(::getuid()).substr(0, 5));
    EXPECT_THAT(ProcStatusField(pid, "NSpid"), ::testing::EndsWith("\t1"));
  }
}

TEST(SandboxConfigTest, LayersCanBeSwitchedOff) {
  char tmpl[] = "/tmp/mphost-sb-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/mphost.json")
      << "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir()
      << "/libecho.so\",\"workers\":1,\"sandbox\":{\"namespaces\":false,\"landlock\":false}}]}";
  {
    HostProcess host({"--config", dir + "/mphost.json"});
    ASSERT_TRUE(host.started()) << host.Log();
    std::string ps = host.Mpctl({"ps", "--json"}).out;
    EXPECT_THAT(ps, HasSubstr("\"seccomp\""));
    EXPECT_THAT(ps, Not(HasSubstr("_ns\"")));
    EXPECT_THAT(ps, Not(HasSubstr("landlock")));
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  }
  int unused = ::system(("rm -rf '" + dir + "'").c_str());
  (void)unused;
}

TEST_F(HostTest, ControlSocketIsOwnerOnly) {
  struct stat st;
  ASSERT_EQ(::stat(host_.control().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(HostTest, MpctlPsAndCall) {
  CommandResult ps = host_.Mpctl({"ps"});
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  EXPECT_THAT(ps.out, HasSubstr("PID"));
  EXPECT_THAT(ps.out, HasSubstr("echo"));
  EXPECT_THAT(ps.out, HasSubstr("seccomp"));

  CommandResult json = host_.Mpctl({"ps", "--json"});
  ASSERT_EQ(json.exit_code, 0);
  EXPECT_THAT(json.out, StartsWith("{\"workers\":["));
  EXPECT_THAT(json.out, HasSubstr("\"module\":\"echo\""));
  EXPECT_THAT(json.out, HasSubstr("\"state\":\"ready\""));

  CommandResult call = host_.Mpctl({"call", "echo", "--data", "hello"});
  ASSERT_EQ(call.exit_code, 0) << call.err;
  EXPECT_THAT(call.out, HasSubstr("status: 200"));
  EXPECT_THAT(call.out, HasSubstr("hello from the echo heap"));
  EXPECT_THAT(call.out, HasSubstr("POST /\nhello"));

  CommandResult call_json = host_.Mpctl({"call", "echo", "/p", "--data", "hi", "--json"});
  ASSERT_EQ(call_json.exit_code, 0) << call_json.err;
  EXPECT_THAT(call_json.out, HasSubstr("\"status\":200"));
  EXPECT_THAT(call_json.out, HasSubstr("\"body\":\"hello from the echo heap\\nPOST /p\\nhi\""));

  CommandResult missing = host_.Mpctl({"call", "nosuch"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.out, HasSubstr("404"));

  // Calls are counted per worker.
  CommandResult after = host_.Mpctl({"ps", "--json"});
  std::regex calls_re("\"calls\":([0-9]+)");
  int total = 0;
  for (auto it = std::sregex_iterator(after.out.begin(), after.out.end(), calls_re);
       it != std::sregex_iterator(); ++it) {
    total += std::stoi((*it)[1]);
  }
  EXPECT_EQ(total, 2);
}

TEST_F(HostTest, KilledWorkerIsReplacedAndServiceContinues) {
  auto before = WorkerPids(host_.Mpctl({"ps", "--json"}).out, "echo");
  ASSERT_EQ(before.size(), 2u);
  ASSERT_TRUE(host_.SignalDescendant(before[0], SIGKILL));
  std::vector<pid_t> after;
  for (int i = 0; i < 300; ++i) {  // ≤ 3 s
    after = WorkerPids(host_.Mpctl({"ps", "--json"}).out, "echo");
    if (after.size() == 2 && std::find(after.begin(), after.end(), before[0]) == after.end()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(std::find(after.begin(), after.end(), before[0]), after.end());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(HttpRequest(host_.port(), "GET", "/m/echo/").status, 200);
  EXPECT_THAT(host_.Log(), HasSubstr("cause=\"killed by SIGKILL\""));
}

TEST_F(HostTest, StopLeavesNoProcessBehind) {
  HttpRequest(host_.port(), "GET", "/m/echo/");
  auto children = host_.Descendants();
  // Per module (echo, dict): the helper's init, its zygote and two workers.
  ASSERT_GE(children.size(), 8u);
  const std::string socket = host_.control();
  EXPECT_EQ(host_.Stop(), 0) << host_.Log();
  for (pid_t pid : children) EXPECT_TRUE(WaitGone(pid, 5000)) << "pid " << pid << " left behind";
  struct stat st;
  EXPECT_NE(::stat(socket.c_str(), &st), 0) << "control socket left behind";
}

TEST(MpctlTest, NoHostListeningIsExitCode2WithAClearMessage) {
  CommandResult r = RunCommand({BinDir() + "/mpctl", "--control", "/tmp/mphost-test-none.sock", "ps"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("cannot reach mphost at /tmp/mphost-test-none.sock"));
}

TEST(MpctlTest, UsageErrorsAreExitCode2) {
  EXPECT_EQ(RunCommand({BinDir() + "/mpctl", "frobnicate"}).exit_code, 2);
  EXPECT_EQ(RunCommand({BinDir() + "/mpctl"}).exit_code, 2);
  CommandResult help = RunCommand({BinDir() + "/mpctl", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("mpctl call echo"));
}

}  // namespace
}  // namespace mp::testing
