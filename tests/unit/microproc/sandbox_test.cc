// Sandbox tests run the body under the real policy in a child and assert how it died: what the
// worker needs keeps working, anything reaching outside the process ends it with SIGSYS.
//
// The children are forked from the (single-threaded) test process. After seccomp they make only
// raw syscalls and leave through _exit; they never return into GoogleTest.
#include "microproc/sandbox.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mp::microproc {
namespace {

using ::testing::ElementsAreArray;

constexpr int kSetupFailed = 100;  // the child could not enter the sandbox
constexpr int kSurvived = 101;     // a forbidden call returned instead of killing the child

// What a sandboxed body may know, gathered before the filter is installed.
struct ChildContext {
  int doorbell_fd;
  pid_t parent;
};
using Body = void (*)(const ChildContext&);

std::string Describe(int status) {
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Waits for `pid`, at most 30 s (then kills it); returns the wait status.
int WaitBounded(pid_t pid) {
  int status = 0;
  for (int i = 0; i < 30000; ++i) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0) return -1;
    ::usleep(1000);
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return status;
}

// Forks; the child enters the worker sandbox (no_new_privs + seccomp with `doorbell_fd`), runs
// `body` and exits 0 if the body returns. Returns the child's wait status. With `raw_clone`
// the child is made the way mp-zygote makes microprocesses: a bare clone syscall, which skips
// glibc's fork bookkeeping.
int RunSandboxed(Body body, int doorbell_fd, bool raw_clone = false) {
  const pid_t parent = ::getpid();
  pid_t pid = raw_clone ? static_cast<pid_t>(::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)) : ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const rlimit no_core{0, 0};  // SIGSYS and SIGABRT would dump core
    ::setrlimit(RLIMIT_CORE, &no_core);
    const ChildContext ctx{doorbell_fd, parent};
    if (!SetNoNewPrivs().ok()) _exit(kSetupFailed);
    if (!InstallWorkerSeccomp(SeccompTarget{doorbell_fd}).ok()) _exit(kSetupFailed);
    body(ctx);
    _exit(0);
  }
  return WaitBounded(pid);
}

class SandboxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    doorbell_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ASSERT_GE(doorbell_, 0);
  }
  void TearDown() override { ::close(doorbell_); }
  int doorbell_ = -1;
};

// Everything the worker loop and a well-behaved module need. Each failed check exits with its
// own code so the parent can say which one.
void AllowedBody(const ChildContext& ctx) {
  char* small = static_cast<char*>(std::malloc(64));
  if (small == nullptr) _exit(1);
  std::memset(small, 1, 64);
  std::free(small);
  constexpr size_t kBig = 32 << 20;  // above the mmap threshold
  char* big = static_cast<char*>(std::malloc(kBig));
  if (big == nullptr) _exit(2);
  for (size_t i = 0; i < kBig; i += 4096) big[i] = 1;
  std::free(big);

  static const char kMsg[] = "sandbox_test: stderr works under seccomp\n";
  if (::write(2, kMsg, sizeof kMsg - 1) != sizeof kMsg - 1) _exit(3);
  const uint64_t one = 1;
  if (::write(ctx.doorbell_fd, &one, sizeof one) != sizeof one) _exit(4);

  uint32_t word = 0;
  if (::syscall(SYS_futex, &word, FUTEX_WAKE, 1, nullptr, nullptr, 0) != 0) _exit(5);

  timespec ts;
  if (::clock_gettime(CLOCK_MONOTONIC, &ts) != 0) _exit(6);
  if (::syscall(SYS_clock_gettime, CLOCK_REALTIME, &ts) != 0) _exit(7);

  void* p = ::mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) _exit(8);
  static_cast<char*>(p)[100] = 7;
  if (::mprotect(p, 1 << 20, PROT_READ) != 0) _exit(9);
  if (::munmap(p, 1 << 20) != 0) _exit(10);

  if (::syscall(SYS_getpid) <= 0) _exit(11);
  if (::sched_yield() != 0) _exit(12);
  const timespec zero{0, 1000};
  if (::nanosleep(&zero, nullptr) != 0) _exit(13);
}

TEST_F(SandboxTest, AllowedOperationsWork) {
  for (bool raw_clone : {false, true}) {
    int status = RunSandboxed(&AllowedBody, doorbell_, raw_clone);
    ASSERT_TRUE(WIFEXITED(status)) << Describe(status) << " raw_clone=" << raw_clone;
    EXPECT_EQ(WEXITSTATUS(status), 0) << Describe(status) << " raw_clone=" << raw_clone;
    uint64_t rung = 0;
    ASSERT_EQ(::read(doorbell_, &rung, sizeof rung), static_cast<ssize_t>(sizeof rung));
    EXPECT_EQ(rung, 1u);  // the write to the doorbell really happened
  }
}

struct Forbidden {
  const char* name;
  Body body;
};

void PrintTo(const Forbidden& f, std::ostream* os) { *os << f.name; }

const Forbidden kForbidden[] = {
    {"openat", [](const ChildContext&) { ::syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY); }},
    {"socket", [](const ChildContext&) { ::syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0); }},
#ifdef SYS_fork
    {"fork", [](const ChildContext&) { ::syscall(SYS_fork); }},
#endif
    {"clone", [](const ChildContext&) { ::syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0); }},
    {"execve",
     [](const ChildContext&) {
       const char* argv[] = {"/bin/true", nullptr};
       const char* envp[] = {nullptr};
       ::syscall(SYS_execve, "/bin/true", argv, envp);
     }},
    {"kill_parent", [](const ChildContext& c) { ::syscall(SYS_kill, c.parent, 0); }},
    {"tgkill_parent", [](const ChildContext& c) { ::syscall(SYS_tgkill, c.parent, c.parent, 0); }},
    {"mmap_exec",
     [](const ChildContext&) {
       ::mmap(nullptr, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
     }},
    {"mprotect_exec",
     [](const ChildContext&) {
       void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
       if (p == MAP_FAILED) _exit(kSetupFailed);
       ::mprotect(p, 4096, PROT_READ | PROT_EXEC);
     }},
    {"write_stdout", [](const ChildContext&) { ::syscall(SYS_write, 1, "x", 1); }},
    {"ptrace", [](const ChildContext&) { ::syscall(SYS_ptrace, 0 /*PTRACE_TRACEME*/, 0, 0, 0); }},
    {"getppid", [](const ChildContext&) { ::syscall(SYS_getppid); }},
};

class ForbiddenSyscallTest : public SandboxTest, public ::testing::WithParamInterface<Forbidden> {};

TEST_P(ForbiddenSyscallTest, KillsWithSigsys) {
  static Body body;
  body = GetParam().body;
  int status = RunSandboxed(
      [](const ChildContext& ctx) {
        body(ctx);
        _exit(kSurvived);
      },
      doorbell_);
  ASSERT_TRUE(WIFSIGNALED(status)) << GetParam().name << ": " << Describe(status);
  EXPECT_EQ(WTERMSIG(status), SIGSYS) << GetParam().name << ": " << Describe(status);
}

INSTANTIATE_TEST_SUITE_P(Policy, ForbiddenSyscallTest, ::testing::ValuesIn(kForbidden),
                         [](const ::testing::TestParamInfo<Forbidden>& info) {
                           return std::string(info.param.name);
                         });

TEST_F(SandboxTest, AbortDiesWithSigabrtNotSigsys) {
  // abort() signals itself with tgkill(own pid): the policy allows exactly that pid.
  for (bool raw_clone : {false, true}) {
    int status = RunSandboxed([](const ChildContext&) { std::abort(); }, doorbell_, raw_clone);
    ASSERT_TRUE(WIFSIGNALED(status)) << Describe(status) << " raw_clone=" << raw_clone;
    EXPECT_EQ(WTERMSIG(status), SIGABRT) << Describe(status) << " raw_clone=" << raw_clone;
  }
}

TEST_F(SandboxTest, DoorbellWriteIsAllowedOnlyForTheDoorbellFd) {
  // Another eventfd, open before the filter, is not the doorbell: writing it is forbidden.
  int other = ::eventfd(0, EFD_CLOEXEC);
  ASSERT_GE(other, 0);
  static int other_fd;
  other_fd = other;
  int status = RunSandboxed(
      [](const ChildContext&) {
        const uint64_t one = 1;
        ::syscall(SYS_write, other_fd, &one, sizeof one);
        _exit(kSurvived);
      },
      doorbell_);
  ::close(other);
  ASSERT_TRUE(WIFSIGNALED(status)) << Describe(status);
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}

// ---- The other layers ----

struct FdReport {
  std::vector<int> open;  // sorted; {-1} if the child failed
  int pipe_fd = -1;       // the report pipe's write end, which the child must keep
};

// Forks a child that runs `close` and then reports, through the pipe it keeps, which fds are
// open (from /proc/self/fd). `close` gets the pipe's write end (the same number as here).
FdReport OpenFdsAfter(const std::function<absl::Status(int)>& close) {
  int p[2];
  if (::pipe(p) != 0) return {{-1}, -1};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    if (!close(p[1]).ok()) _exit(1);
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) _exit(2);
    while (dirent* e = ::readdir(dir)) {
      if (e->d_name[0] == '.') continue;
      int fd = std::atoi(e->d_name);
      if (fd == ::dirfd(dir)) continue;
      if (::write(p[1], &fd, sizeof fd) != sizeof fd) _exit(3);
    }
    _exit(0);
  }
  FdReport report;
  report.pipe_fd = p[1];
  ::close(p[1]);
  int fd;
  while (::read(p[0], &fd, sizeof fd) == sizeof fd) report.open.push_back(fd);
  ::close(p[0]);
  int status = WaitBounded(pid);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) report.open = {-1};
  std::sort(report.open.begin(), report.open.end());
  return report;
}

std::vector<int> Sorted(std::vector<int> v) {
  std::sort(v.begin(), v.end());
  return v;
}

class CloseFdsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int& fd : extra_) {
      fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0);
    }
  }
  void TearDown() override {
    for (int fd : extra_) ::close(fd);
  }
  int extra_[4] = {-1, -1, -1, -1};
};

TEST_F(CloseFdsTest, KeepsExactlyTheListedFds) {
  const int a = extra_[1], b = extra_[3];
  FdReport r = OpenFdsAfter([&](int pipe_fd) { return CloseFdsExcept({b, pipe_fd, a}); });
  EXPECT_THAT(r.open, ElementsAreArray(Sorted({a, b, r.pipe_fd})));
}

TEST_F(CloseFdsTest, KeepsStandardStreamsWhenListed) {
  FdReport r = OpenFdsAfter([](int pipe_fd) { return CloseFdsExcept({0, 1, 2, pipe_fd}); });
  EXPECT_THAT(r.open, ElementsAreArray(Sorted({0, 1, 2, r.pipe_fd})));
}

TEST_F(CloseFdsTest, IgnoresDuplicatesAndNegatives) {
  const int a = extra_[2];
  FdReport r = OpenFdsAfter([&](int pipe_fd) { return CloseFdsExcept({pipe_fd, -1, a, a}); });
  EXPECT_THAT(r.open, ElementsAreArray(Sorted({a, r.pipe_fd})));
}

TEST_F(CloseFdsTest, EmptyListClosesEverything) {
  // Nothing is kept, so the child cannot report: it checks for itself and exits 0 or 1.
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!CloseFdsExcept({}).ok()) _exit(2);
    for (int fd = 0; fd < 64; ++fd) {
      if (::fcntl(fd, F_GETFD) != -1) _exit(1);
    }
    _exit(0);
  }
  int status = WaitBounded(pid);
  ASSERT_TRUE(WIFEXITED(status)) << Describe(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(SandboxLayersTest, NoNewPrivsAndRlimitsStick) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (!SetNoNewPrivs().ok()) _exit(2);
    if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) _exit(3);
    if (!ApplyRlimits(uint64_t{1} << 32, 32).ok()) _exit(4);
    rlimit lim;
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur != 32 || lim.rlim_max != 32) _exit(5);
#if defined(__SANITIZE_ADDRESS__)
    // Under ASan the limit is the budget on top of ASan's reservations (see ApplyRlimits).
    if (::getrlimit(RLIMIT_AS, &lim) != 0 || lim.rlim_cur < (rlim_t{1} << 32)) _exit(6);
#else
    if (::getrlimit(RLIMIT_AS, &lim) != 0 || lim.rlim_cur != (rlim_t{1} << 32)) _exit(6);
#endif
    if (::getrlimit(RLIMIT_CORE, &lim) != 0 || lim.rlim_max != 0) _exit(7);
    if (!SetParentDeathSignal().ok()) _exit(8);
    int sig = 0;
    if (::prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) != 0 || sig != SIGKILL) _exit(9);
    _exit(0);
  }
  int status = WaitBounded(pid);
  ASSERT_TRUE(WIFEXITED(status)) << Describe(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << Describe(status);
}

TEST(SandboxLayersTest, LayerNamesIncludeSeccomp) {
  auto names = SandboxLayerNames();
  EXPECT_NE(std::find(names.begin(), names.end(), "seccomp"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "no_new_privs"), names.end());
}

}  // namespace
}  // namespace mp::microproc
