// Module code attacking the host from every stage: hostile constructors in the builder and the
// zygote, a hostile build, a stalling zygote, replies that forge HTTP framing, output that
// forges the host's log (tests/attack/). Each test checks that the host lives on, that another
// module answers throughout, that the error names the cause, and that nothing is left behind.
//
// Tests marked with WhoTest run twice when the suite runs as root: as root (as CI and many
// containers run mphost) and as an unprivileged user (as production should); otherwise once,
// as the user running them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

std::string AttackModule(const std::string& file) {
  return std::string(MP_TEST_ATTACK_MODULE_DIR) + "/" + file;
}

struct Who {
  const char* name;
  bool unprivileged;
};

// A host as `Who` says, on a staged copy of the executables, serving echo and `modules` (JSON
// objects without their "plugin", which is filled in from `files`).
class AttackHost {
 public:
  AttackHost(const Who& who, const std::vector<std::pair<std::string, std::string>>& modules,
             std::vector<std::string> extra_args = {}, std::vector<std::string> env = {})
      : staged_([&] {
          std::vector<std::string> files = {ModuleDir() + "/libecho.so"};
          for (const auto& [file, json] : modules) files.push_back(AttackModule(file));
          return files;
        }()) {
    const uid_t uid = who.unprivileged ? kUnprivilegedUid : 0;
    dir_ = staged_.MakeDirFor(uid, "config");
    std::string config = "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" + staged_.module_dir() +
                         "/libecho.so\",\"workers\":1}";
    for (const auto& [file, json] : modules) {
      config += ",{\"plugin\":\"" + staged_.module_dir() + "/" + file + "\"," + json + "}";
    }
    config += "]}";
    std::ofstream(dir_ + "/mphost.json") << config;
    std::vector<std::string> args = {"--config", dir_ + "/mphost.json"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    HostOptions options;
    options.args = args;
    options.env = env;
    options.uid = uid;
    options.bin_dir = staged_.bin_dir();
    host_ = std::make_unique<HostProcess>(std::move(options));
  }
  HostProcess& host() { return *host_; }

 private:
  StagedInstall staged_;
  std::string dir_;
  std::unique_ptr<HostProcess> host_;
};

class WhoTest : public ::testing::TestWithParam<Who> {
 protected:
  void SetUp() override {
    if (GetParam().unprivileged && ::getuid() != 0) {
      GTEST_SKIP() << "already unprivileged: the as_test_user case covers it";
    }
  }
};

std::vector<Who> Everyone() {
  return {Who{"as_test_user", false}, Who{"as_unprivileged_user", true}};
}

std::string WhoName(const ::testing::TestParamInfo<Who>& info) { return info.param.name; }

// Calls echo until `stop`, counting answers and failures.
class EchoLoad {
 public:
  explicit EchoLoad(int port) : thread_([this, port] {
    while (!stop_) {
      const auto start = Clock::now();
      HttpResponse r = HttpRequest(port, "GET", "/m/echo/", "", 5000);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      max_ms_ = std::max(max_ms_.load(), ms);
      ++(r.status == 200 ? ok_ : failed_);
    }
  }) {}
  ~EchoLoad() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int ok() const { return ok_; }
  int failed() const { return failed_; }
  double max_ms() const { return max_ms_; }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> ok_{0}, failed_{0};
  std::atomic<double> max_ms_{0};
  std::thread thread_;
};

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// ---- Constructors ----

TEST_P(WhoTest, ConstructorCannotReadShadowNorTheHostsEnvironment) {
  AttackHost a(GetParam(), {{"libctor-shadow.so", "\"name\":\"ctor-shadow\",\"workers\":1"}}, {},
               {"MPTEST_SECRET=hunter2"});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/ctor-shadow/").status, 200);
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  // Module output reaches the log through pipes, maybe after the host says it serves.
  Eventually([&] { return host.Log().find("attack zygote: MPTEST_SECRET") != std::string::npos; });
  const std::string log = host.Log();
  for (const char* stage : {"builder", "zygote"}) {
    EXPECT_THAT(log, HasSubstr(std::string("event=module_output module=ctor-shadow stage=") +
                               stage))
        << log;
    EXPECT_THAT(log, HasSubstr(std::string("attack ") + stage +
                               ": open /etc/shadow failed: Permission denied"));
    EXPECT_THAT(log, HasSubstr(std::string("attack ") + stage + ": MPTEST_SECRET=(unset)"));
  }
  EXPECT_THAT(log, Not(HasSubstr("READ /etc/shadow")));
  EXPECT_THAT(log, Not(HasSubstr("hunter2")));
}

TEST_P(WhoTest, ConstructorThatOpensASocketEndsItsBuildNamingTheCall) {
  const int port = FreePort();
  AttackHost a(GetParam(), {{"libctor-connect.so", "\"name\":\"ctor-connect\""}},
               {"--listen", "127.0.0.1:" + std::to_string(port)},
               {"LC_MPTEST_PORT=" + std::to_string(port)});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  HttpResponse r = HttpRequest(host.port(), "GET", "/m/ctor-connect/");
  EXPECT_EQ(r.status, 503);
  EXPECT_THAT(r.body, HasSubstr("build process called forbidden syscall socket (seccomp)"));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  EXPECT_THAT(host.Log(), Not(HasSubstr("CONNECTED")));
}

// Without seccomp and Landlock, the network namespace alone keeps the host's port out of
// reach: loopback there is another, empty one.
TEST_P(WhoTest, ConstructorCannotReachTheHostsPortThroughItsNetworkNamespace) {
  const int port = FreePort();
  AttackHost a(GetParam(),
               {{"libctor-connect.so",
                 "\"name\":\"ctor-connect\",\"workers\":1,"
                 "\"sandbox\":{\"seccomp\":false,\"landlock\":false}"}},
               {"--listen", "127.0.0.1:" + std::to_string(port)},
               {"LC_MPTEST_PORT=" + std::to_string(port)});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/ctor-connect/").status, 200);
  // Module output reaches the log through pipes, maybe after the host says it serves.
  Eventually([&] { return host.Log().find("attack zygote: connect to port") != std::string::npos; });
  const std::string log = host.Log();
  EXPECT_THAT(log, HasSubstr("attack builder: connect to port " + std::to_string(port) +
                             " failed: Network is unreachable"));
  EXPECT_THAT(log, HasSubstr("attack zygote: connect to port " + std::to_string(port) +
                             " failed: Network is unreachable"));
  EXPECT_THAT(log, Not(HasSubstr("CONNECTED")));
}

// Without seccomp, a constructor can reach the control socket's path (no namespace hides a
// path). A root host's socket is not the helper's to open (it is nobody); an unprivileged
// host's is, by uid, and the host refuses it for its user namespace.
TEST_P(WhoTest, ConstructorCannotDriveTheControlSocket) {
  std::unique_ptr<AttackHost> a;
  // The control socket's path is only known once the host exists: start it, then reload.
  a = std::make_unique<AttackHost>(
      GetParam(),
      std::vector<std::pair<std::string, std::string>>{
          {"libctor-control.so",
           "\"name\":\"ctor-control\",\"workers\":1,\"sandbox\":{\"seccomp\":false}"}},
      std::vector<std::string>{},
      std::vector<std::string>{"LC_MPTEST_CONTROL=" + std::string("/tmp/mphost-test-control-") +
                               std::to_string(::getpid()) + ".sock"});
  HostProcess& host = a->host();
  ASSERT_TRUE(host.started()) << host.Log();
  // The constructor ran against a path where nothing listens; now put the real socket there.
  const std::string link = "/tmp/mphost-test-control-" + std::to_string(::getpid()) + ".sock";
  ASSERT_EQ(::symlink(host.control().c_str(), link.c_str()), 0);
  ASSERT_EQ(host.Mpctl({"reload", "ctor-control"}).exit_code, 0);
  ::unlink(link.c_str());
  // The zygote's stderr reaches the log through a pipe, after the reload has answered.
  auto logged = [&](const std::string& needle) {
    return Eventually([&] { return host.Log().find(needle) != std::string::npos; }, 5000);
  };
  if (GetParam().unprivileged || ::getuid() != 0) {
    EXPECT_TRUE(logged("attack zygote: control socket closed by the host")) << host.Log();
    EXPECT_TRUE(logged("why=\"in another user namespace\"")) << host.Log();
  } else {
    EXPECT_TRUE(logged("attack zygote: connect to the control socket failed: Permission denied"))
        << host.Log();
  }
  EXPECT_THAT(host.Log(), Not(HasSubstr("control socket ANSWERED")));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
}

TEST_P(WhoTest, ConstructorThatForksEndsItsBuildNamingTheCall) {
  AttackHost a(GetParam(), {{"libctor-daemon.so", "\"name\":\"ctor-daemon\""}}, {},
               {"LC_MPTEST_TAG=" + std::to_string(::getpid() % 100000000)});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  HttpResponse r = HttpRequest(host.port(), "GET", "/m/ctor-daemon/");
  EXPECT_EQ(r.status, 503);
  EXPECT_THAT(r.body, HasSubstr("build process called forbidden syscall clone (seccomp)"));
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  EXPECT_TRUE(ProcessesNamed("mpd" + std::to_string(::getpid() % 100000000)).empty());
}

// Without seccomp a constructor can fork: its daemon lives in the helper's pid namespace and
// dies with it, when the build ends, when its generation is replaced, and when the host dies,
// even by SIGKILL.
TEST_P(WhoTest, ADaemonForkedByAConstructorDiesWithItsBuildGenerationAndHost) {
  const std::string tag = std::to_string(::getpid() % 100000000);
  const std::string daemon = "mpd" + tag;
  AttackHost a(GetParam(),
               {{"libctor-daemon.so",
                 "\"name\":\"ctor-daemon\",\"workers\":1,\"sandbox\":{\"seccomp\":false}"}},
               {}, {"LC_MPTEST_TAG=" + tag});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/ctor-daemon/").status, 200);
  // Module output reaches the log through pipes, maybe after the host says it serves.
  EXPECT_TRUE(Eventually([&] {
    return host.Log().find("attack zygote: daemon forked (ok)") != std::string::npos;
  })) << host.Log();
  EXPECT_THAT(host.Log(), HasSubstr("attack builder: daemon forked (ok)"));
  // The builder's daemon went with the build; the zygote's lives with its generation.
  std::vector<pid_t> first;
  ASSERT_TRUE(Eventually([&] { return (first = ProcessesNamed(daemon)).size() == 1; }))
      << first.size() << " daemons";
  CommandResult reload = host.Mpctl({"reload", "ctor-daemon"});
  ASSERT_EQ(reload.exit_code, 0) << reload.err;
  std::vector<pid_t> second;
  EXPECT_TRUE(Eventually([&] {
    second = ProcessesNamed(daemon);
    return second.size() == 1 && second[0] != first[0];
  })) << second.size() << " daemons after the reload";
  const std::vector<pid_t> everything = host.Descendants();
  ASSERT_EQ(::kill(host.pid(), SIGKILL), 0);
  EXPECT_TRUE(Eventually([&] { return ProcessesNamed(daemon).empty(); }))
      << "a daemon outlived the host";
  for (pid_t pid : everything) EXPECT_TRUE(WaitGone(pid, 5000)) << "pid " << pid << " left behind";
}

// ---- build() ----

struct BuildAttack {
  const char* attack;
  const char* syscall;
};

class BuildAttackTest : public ::testing::TestWithParam<std::tuple<Who, BuildAttack>> {};

TEST_P(BuildAttackTest, EndsOnlyTheBuildNamingTheCall) {
  const auto& [who, attack] = GetParam();
  if (who.unprivileged && ::getuid() != 0) GTEST_SKIP() << "already unprivileged";
  AttackHost a(who, {{"libbuild-attack.so", std::string("\"name\":\"build-attack\",\"options\":"
                                                        "{\"attack\":\"") +
                                                attack.attack + "\"}"}});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  const std::string named =
      std::string("build process called forbidden syscall ") + attack.syscall + " (seccomp)";
  HttpResponse r = HttpRequest(host.port(), "GET", "/m/build-attack/");
  EXPECT_EQ(r.status, 503);
  EXPECT_THAT(r.body, HasSubstr(named));
  // Again during a reload, as an operator would trigger it, with echo under load.
  const size_t processes = host.Descendants().size();
  EchoLoad load(host.port());
  CommandResult reload = host.Mpctl({"reload", "build-attack"});
  EXPECT_NE(reload.exit_code, 0);
  EXPECT_THAT(reload.out + reload.err, HasSubstr(named));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  load.Stop();
  EXPECT_GT(load.ok(), 0);
  EXPECT_EQ(load.failed(), 0);
  EXPECT_EQ(::kill(host.pid(), 0), 0) << "the host died";
  EXPECT_TRUE(Eventually([&] { return host.Descendants().size() == processes; }))
      << "the failed build left processes behind";
  EXPECT_EQ(host.Stop(), 0) << host.Log();
}

INSTANTIATE_TEST_SUITE_P(
    Attacks, BuildAttackTest,
    ::testing::Combine(::testing::ValuesIn(Everyone()),
                       ::testing::Values(BuildAttack{"tgkill", "tgkill"},
                                         BuildAttack{"pidfd_getfd", "pidfd_getfd"},
                                         BuildAttack{"io_uring", "io_uring_setup"},
                                         BuildAttack{"unshare", "unshare"},
                                         BuildAttack{"open_by_handle_at", "open_by_handle_at"})),
    [](const auto& info) {
      return std::string(std::get<0>(info.param).name) + "_" + std::get<1>(info.param).attack;
    });

// ---- A zygote that stalls ----

TEST_P(WhoTest, AStallingZygoteFailsItsReloadAndTheLoopServesOn) {
  AttackHost a(GetParam(), {{"libctor-sleep.so",
                             "\"name\":\"ctor-sleep\",\"workers\":1,\"zygoteStartTimeoutMs\":2000"}});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  ASSERT_EQ(HttpRequest(host.port(), "GET", "/m/ctor-sleep/").status, 200);  // generation 1
  EchoLoad load(host.port());
  CommandResult reload = host.Mpctl({"reload", "ctor-sleep"});
  // The reload waited 2 s for the hello; echo was answered all along.
  load.Stop();
  EXPECT_NE(reload.exit_code, 0);
  EXPECT_THAT(reload.out + reload.err,
              HasSubstr("zygote did not say hello within 2000 ms (zygoteStartTimeoutMs)"));
  EXPECT_EQ(load.failed(), 0);
  EXPECT_GE(load.ok(), 20) << "echo was not served while the zygote stalled";
  std::printf("echo while a zygote stalled: %d calls, slowest %.1f ms\n", load.ok(), load.max_ms());
  // Generation 1 serves on.
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/ctor-sleep/").status, 200);
  EXPECT_THAT(host.Mpctl({"modules", "--json"}).out, HasSubstr("\"generation\":1"));
}

INSTANTIATE_TEST_SUITE_P(Who, WhoTest, ::testing::ValuesIn(Everyone()), WhoName);

// ---- The unprivileged path ----

TEST(UnprivilegedTest, EveryLayerIsOnAndTheHostIsOutOfReach) {
  if (::getuid() != 0) GTEST_SKIP() << "needs root to become another user";
  AttackHost a(Who{"unprivileged", true}, {});
  HostProcess& host = a.host();
  ASSERT_TRUE(host.started()) << host.Log();
  EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/echo/").status, 200);
  const std::string ps = host.Mpctl({"ps", "--json"}).out;
  for (const char* layer : {"close_fds", "rlimits", "no_new_privs", "seccomp", "landlock",
                            "user_ns", "pid_ns", "net_ns", "ipc_ns", "mnt_ns"}) {
    EXPECT_THAT(ps, HasSubstr(std::string("\"") + layer + "\"")) << layer;
  }
  // The host runs as nobody, and so does everything below it, each in a user namespace of its
  // own: what capability a zygote keeps there (CAP_SYS_ADMIN, to give each worker a pid
  // namespace) means nothing outside it. Inits and workers keep none at all.
  EXPECT_EQ(ProcStatusField(host.pid(), "Uid").substr(0, 5), "65534");
  auto user_ns = [](pid_t pid) {
    return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/ns/user").string();
  };
  const std::vector<pid_t> workers = WorkerPids(ps);
  for (pid_t pid : host.Descendants()) {
    EXPECT_EQ(ProcStatusField(pid, "Uid").substr(0, 5), "65534") << pid;
    EXPECT_NE(user_ns(pid), user_ns(host.pid())) << pid;
    const std::string caps = ProcStatusField(pid, "CapEff");
    if (pid == host.Zygote("echo")) {
      EXPECT_EQ(caps, "0000000000200000") << "zygote " << pid;  // CAP_SYS_ADMIN only
    } else {
      EXPECT_EQ(caps, "0000000000000000") << pid;
    }
  }
  EXPECT_EQ(workers.size(), 1u);
  // Non-dumpable: the kernel hands the host's /proc entries to root, so that not even a
  // process of its own uid can attach to it or read its memory.
  struct stat st;
  ASSERT_EQ(::stat(("/proc/" + std::to_string(host.pid()) + "/mem").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
}

// ---- Replies ----

class ReplyAttackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(host_.host().started()) << host_.host().Log();
  }
  // True once `raw` holds a head and as many body bytes as its Content-Length says.
  static bool Complete(const std::string& raw) {
    const size_t end = raw.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    std::smatch m;
    const std::string head = raw.substr(0, end);
    if (!std::regex_search(head, m, std::regex("\r\n[Cc]ontent-[Ll]ength: *([0-9]+)"))) return false;
    return raw.size() >= end + 4 + std::stoul(m[1]);
  }
  // One request on a fresh connection; the raw bytes of the response.
  std::string Raw(const std::string& target) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(host_.host().port()));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    std::string out;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
      ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
      char buf[4096];
      const auto deadline = Clock::now() + std::chrono::seconds(5);
      while (Clock::now() < deadline && !Complete(out)) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 100) <= 0) continue;
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<size_t>(n));
      }
    }
    ::close(fd);
    return out;
  }
  ConfiguredHost host_{"mphost-reply-attack",
                       "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" + ModuleDir() +
                           "/libecho.so\",\"workers\":1},{\"name\":\"reply-attack\",\"plugin\":\"" +
                           AttackModule("libreply-attack.so") + "\",\"workers\":1}]}"};
};

TEST_F(ReplyAttackTest, AnInterimStatusIsRefusedAndForgesNothing) {
  const std::string raw = Raw("/m/reply-attack/status-100");
  EXPECT_EQ(raw.rfind("HTTP/1.1 502 Bad Gateway\r\n", 0), 0u) << raw;
  EXPECT_THAT(raw, HasSubstr("status 100 is not a final HTTP status (200-599)"));
  EXPECT_THAT(raw, Not(HasSubstr("X-Forged")));
  EXPECT_EQ(raw.find("HTTP/1.1", 1), std::string::npos) << "a second response: " << raw;
  // The worker was not at fault for the protocol: it serves on.
  HttpResponse ok = HttpRequest(host_.host().port(), "GET", "/m/reply-attack/ok");
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(HttpRequest(host_.host().port(), "GET", "/m/echo/").status, 200);
}

TEST_F(ReplyAttackTest, TheHostsHeadersAreTheHostsAlone) {
  const std::string raw = Raw("/m/reply-attack/host-headers");
  ASSERT_EQ(raw.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << raw;
  const std::string head = raw.substr(0, raw.find("\r\n\r\n"));
  std::string lower = head;
  for (char& c : lower) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  auto count = [&](const std::string& needle) {
    size_t n = 0;
    for (size_t at = lower.find(needle); at != std::string::npos; at = lower.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("\r\nx-mphost-worker:"), 1u) << head;
  EXPECT_EQ(count("\r\ncontent-length:"), 1u) << head;
  EXPECT_THAT(lower, HasSubstr("\r\ncontent-length: 4"));
  EXPECT_THAT(lower, Not(HasSubstr("transfer-encoding")));
  EXPECT_EQ(count("\r\ndate:"), 1u) << head;
  EXPECT_THAT(lower, Not(HasSubstr("1970 ")));  // the module's Date (a request id may hold "1970")
  EXPECT_THAT(lower, Not(HasSubstr("forged")));
  EXPECT_THAT(lower, Not(HasSubstr("x-mphost-worker: 1\r\n")));
  EXPECT_THAT(lower, HasSubstr("\r\nx-module: kept"));
  EXPECT_EQ(raw.substr(raw.find("\r\n\r\n") + 4), "body");
}

TEST_F(ReplyAttackTest, AControlByteInAHeaderIsRefused) {
  HttpResponse r = HttpRequest(host_.host().port(), "GET", "/m/reply-attack/control-byte");
  EXPECT_EQ(r.status, 502);
  EXPECT_THAT(r.body, HasSubstr("header 'X-Evil' has a control byte (0x01) in its value"));
  EXPECT_EQ(r.headers.count("x-evil"), 0u);
}

TEST_F(ReplyAttackTest, OutputCannotPassForTheHostsLog) {
  HttpResponse r = HttpRequest(host_.host().port(), "GET", "/m/reply-attack/forge-log");
  ASSERT_EQ(r.status, 200);
  const std::string pid = r.headers["x-mphost-worker"];
  const std::string forged =
      "ts=2026-01-01T00:00:00.000Z level=info event=worker_exit module=echo pid=1 cause=forged "
      "calls=0";
  std::string log;
  ASSERT_TRUE(Eventually([&] {
    log = host_.host().Log();
    return log.find("cause=forged") != std::string::npos;
  }));
  EXPECT_THAT(log, HasSubstr("event=module_output module=reply-attack stage=worker pid=" + pid +
                             " stream=stderr line=\"" + forged + "\""));
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.rfind("ts=2026-01-01T00:00:00.000Z", 0), 0u) << "a forged event: " << line;
  }
}

TEST_F(ReplyAttackTest, AFloodOnStderrIsCappedAndCounted) {
  HttpResponse r = HttpRequest(host_.host().port(), "GET", "/m/reply-attack/flood");
  ASSERT_EQ(r.status, 200);
  const std::regex dropped("mphost_module_output_dropped_lines_total\\{module=\"reply-attack\"\\} ([0-9]+)");
  std::smatch m;
  std::string metrics;
  ASSERT_TRUE(Eventually([&] {
    metrics = HttpRequest(host_.host().port(), "GET", "/metrics").body;
    return std::regex_search(metrics, m, dropped) && std::stoul(m[1]) > 0;
  })) << metrics;
  const std::string log = host_.host().Log();
  size_t logged = 0;
  for (size_t at = log.find("module=reply-attack stage=worker"); at != std::string::npos;
       at = log.find("module=reply-attack stage=worker", at + 1)) {
    ++logged;
  }
  EXPECT_LE(logged, 110u) << "1,024 lines came; at most 100 a second may be logged";
  EXPECT_TRUE(Eventually([&] {
    return host_.host().Log().find("event=module_output_dropped module=reply-attack") !=
           std::string::npos;
  }));
  EXPECT_EQ(HttpRequest(host_.host().port(), "GET", "/m/echo/").status, 200);
}

}  // namespace
}  // namespace mp::testing
