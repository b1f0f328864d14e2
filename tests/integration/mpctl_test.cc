// Each mpctl command against a real host: human output, --json agreeing with /proc and HTTP,
// commands that change what ps and modules show, top in a pseudo-terminal, other uids.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

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

class MpctlCommandTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(host_.started()) << host_.Log(); }
  HostProcess host_;
};

TEST_F(MpctlCommandTest, Status) {
  HttpRequest(host_.port(), "GET", "/m/echo/");
  CommandResult human = host_.Mpctl({"status"});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_THAT(human.out, HasSubstr("pid " + std::to_string(host_.pid())));
  EXPECT_THAT(human.out, HasSubstr("http      127.0.0.1:" + std::to_string(host_.port())));
  EXPECT_THAT(human.out, HasSubstr("MiB"));
  CommandResult json = host_.Mpctl({"status", "--json"});
  ASSERT_EQ(json.exit_code, 0);
  EXPECT_THAT(json.out, HasSubstr("\"pid\":" + std::to_string(host_.pid())));
  EXPECT_THAT(json.out, HasSubstr("\"calls\":1"));
  const size_t workers = WorkerPids(host_.Mpctl({"ps", "--json"}).out).size();
  EXPECT_THAT(json.out, HasSubstr("\"workers\":" + std::to_string(workers)));
}

TEST_F(MpctlCommandTest, KillReplacesTheWorker) {
  auto before = WorkerPids(host_.Mpctl({"ps", "--json"}).out, "echo");
  ASSERT_EQ(before.size(), 2u);
  CommandResult kill = host_.Mpctl({"kill", std::to_string(before[0])});
  EXPECT_EQ(kill.exit_code, 0) << kill.err;
  std::vector<pid_t> after;
  for (int i = 0; i < 200; ++i) {
    after = WorkerPids(host_.Mpctl({"ps", "--json"}).out, "echo");
    if (after.size() == 2 && std::find(after.begin(), after.end(), before[0]) == after.end()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(std::find(after.begin(), after.end(), before[0]), after.end());
  EXPECT_EQ(after.size(), 2u);
  EXPECT_THAT(host_.Log(), HasSubstr("killed by the operator"));
  CommandResult bad = host_.Mpctl({"kill", "1"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.err, HasSubstr("no live worker with pid 1"));
  EXPECT_EQ(host_.Mpctl({"kill"}).exit_code, 2);
}

TEST_F(MpctlCommandTest, MetricsMatchesHttp) {
  CommandResult m = host_.Mpctl({"metrics"});
  ASSERT_EQ(m.exit_code, 0);
  HttpResponse http = HttpRequest(host_.port(), "GET", "/metrics");
  std::regex help("# HELP [a-z_]+");
  std::vector<std::string> a, b;
  for (auto it = std::sregex_iterator(m.out.begin(), m.out.end(), help); it != std::sregex_iterator(); ++it) a.push_back(it->str());
  for (auto it = std::sregex_iterator(http.body.begin(), http.body.end(), help); it != std::sregex_iterator(); ++it) b.push_back(it->str());
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a, b);
}

TEST_F(MpctlCommandTest, TopWithoutATerminalPrintsOneSnapshot) {
  CommandResult top = host_.Mpctl({"top"});
  EXPECT_EQ(top.exit_code, 0) << top.err;
  EXPECT_THAT(top.out, HasSubstr("CALLS/S"));
  EXPECT_THAT(top.out, HasSubstr("echo"));
  EXPECT_EQ(top.out.find("\033[2J"), std::string::npos);  // no screen control codes
}

TEST_F(MpctlCommandTest, TopInATerminalRefreshesAndQuitsOnQ) {
  int master = -1;
  const pid_t pid = ::forkpty(&master, nullptr, nullptr, nullptr);
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl((BinDir() + "/mpctl").c_str(), "mpctl", "--control", host_.control().c_str(), "top",
            nullptr);
    _exit(127);
  }
  std::string screen;
  auto read_until = [&](size_t screens, int ms) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < deadline) {
      size_t n = 0;
      for (size_t at = 0; (at = screen.find("(q to quit)", at)) != std::string::npos; ++at) ++n;
      if (n >= screens) return true;
      pollfd p{master, POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) {
        char buf[4096];
        ssize_t r = ::read(master, buf, sizeof buf);
        if (r > 0) screen.append(buf, static_cast<size_t>(r));
      }
    }
    return false;
  };
  EXPECT_TRUE(read_until(2, 5000)) << screen;  // two refreshes
  EXPECT_THAT(screen, HasSubstr("\033[2J"));
  EXPECT_THAT(screen, HasSubstr("MODULE"));
  ASSERT_EQ(::write(master, "q", 1), 1);
  int status = -1;
  for (int i = 0; i < 300 && ::waitpid(pid, &status, WNOHANG) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!WIFEXITED(status)) ::kill(pid, SIGKILL), ::waitpid(pid, &status, 0);
  ::close(master);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(MpctlCommandTest, EveryJsonOutputParses) {
  HttpRequest(host_.port(), "GET", "/m/echo/");
  const pid_t victim = WorkerPids(host_.Mpctl({"ps", "--json"}).out, "echo")[0];
  const std::vector<std::vector<std::string>> commands = {
      {"kill", std::to_string(victim), "--json"},
      {"status", "--json"},
      {"ps", "--json"},
      {"modules", "--json"},
      {"heap", "--json"},
      {"heap", "echo", "--json"},
      {"call", "echo", "/x?y=\"q\"", "--data", "a\"b\\c\n\x01", "--json"},
      {"scale", "echo", "--min", "2", "--max", "3", "--json"},
      {"reload", "echo", "--json"},
      {"restart", "echo", "--json"},
  };
  for (const auto& args : commands) {
    CommandResult r = host_.Mpctl(args);
    EXPECT_EQ(r.exit_code, 0) << args[0] << ": " << r.err;
    EXPECT_TRUE(ParsesAsJson(r.out)) << args[0] << ": " << r.out;
  }
  // Values agree with the host: modules shows the new pool and generation.
  std::string modules = host_.Mpctl({"modules", "--json"}).out;
  EXPECT_THAT(modules, HasSubstr("\"workers_min\":2,\"workers_max\":3"));
  EXPECT_THAT(modules, HasSubstr("\"generation\":2"));
  EXPECT_THAT(modules, HasSubstr("\"calls_per_second\":"));
  std::string ps = host_.Mpctl({"ps", "--json"}).out;
  EXPECT_THAT(ps, HasSubstr("\"restarts\":"));
  CommandResult all = host_.Mpctl({"reload"});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  EXPECT_THAT(host_.Mpctl({"modules", "--json"}).out, HasSubstr("\"generation\":3"));
}

TEST_F(MpctlCommandTest, EveryCommandExplainsItself) {
  for (const char* cmd : {"status", "ps", "modules", "heap", "call", "scale", "kill", "restart",
                          "reload", "drain", "top", "metrics"}) {
    CommandResult r = RunCommand({BinDir() + "/mpctl", cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_THAT(r.out, HasSubstr(std::string("mpctl ") + cmd)) << cmd;
    EXPECT_THAT(r.out, HasSubstr("e.g.")) << cmd;
  }
}

TEST_F(MpctlCommandTest, AnotherUidIsRefused) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to run mpctl as a second uid";
  ::chmod(host_.dir().c_str(), 0755);  // let it reach the socket file itself
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) _exit(126);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execl((BinDir() + "/mpctl").c_str(), "mpctl", "--control", host_.control().c_str(), "ps",
            nullptr);
    _exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 2);  // a connection error, as for any refused connection
}

TEST(MpctlDrainTest, DrainTurnsReadyzOffThenStopsCleanly) {
  char tmpl[] = "/tmp/mphost-drain-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/mphost.json") << "{\"drainDelayMs\":600,\"modules\":[{\"name\":\"echo\","
                                      << "\"plugin\":\"" << ModuleDir() << "/libecho.so\"}]}";
  {
    HostProcess host({"--config", dir + "/mphost.json"});
    ASSERT_TRUE(host.started()) << host.Log();
    auto children = host.Descendants();
    CommandResult drain = host.Mpctl({"drain"});
    EXPECT_EQ(drain.exit_code, 0) << drain.err;
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/readyz").status, 503);  // during the delay
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/healthz").status, 200);
    int status = -1;
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(host.pid(), &status, WNOHANG) == host.pid()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << host.Log();
    for (pid_t c : children) EXPECT_TRUE(WaitGone(c, 3000)) << c;
    EXPECT_THAT(host.Log(), HasSubstr("event=drain_requested"));
  }
  int unused = ::system(("rm -rf '" + dir + "'").c_str());
  (void)unused;
}

}  // namespace
}  // namespace mp::testing
