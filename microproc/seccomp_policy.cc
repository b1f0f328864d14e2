// The microprocess syscall allowlist: default action kills the process. Every syscall below is
// here because the worker loop, the C/C++ runtime or a well-behaved module handler needs it
// after the sandbox is in place. Anything that reaches outside the process (files, sockets,
// processes, signals to others, exec, ptrace) is absent on purpose.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/mman.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "microproc/sandbox.h"

namespace mp::microproc {
namespace {

class Filter {
 public:
  explicit Filter(uint32_t default_action = SCMP_ACT_KILL_PROCESS)
      : ctx_(seccomp_init(default_action)) {}
  ~Filter() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  Filter(const Filter&) = delete;
  Filter& operator=(const Filter&) = delete;

  // Allows `name` when every comparison in `args` holds.
  template <typename... Cmp>
  void Allow(const char* name, Cmp... args) {
    Add(SCMP_ACT_ALLOW, name, args...);
  }

  template <typename... Cmp>
  void Add(uint32_t action, const char* name, Cmp... args) {
    if (!status_.ok()) return;
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) {
      status_ = absl::InternalError(absl::StrCat("seccomp: unknown syscall ", name));
      return;
    }
    int rc = seccomp_rule_add(ctx_, action, nr, sizeof...(args), args...);
    if (rc != 0) status_ = absl::InternalError(absl::StrCat("seccomp_rule_add(", name, "): ", rc));
  }

  // Compiles to BPF without loading it.
  absl::StatusOr<CompiledFilter> Export() {
    if (ctx_ == nullptr) return absl::InternalError("seccomp_init failed");
    if (!status_.ok()) return status_;
    int fd = ::memfd_create("seccomp-bpf", MFD_CLOEXEC);
    if (fd < 0) return absl::InternalError("memfd_create for the seccomp program failed");
    int rc = seccomp_export_bpf(ctx_, fd);
    off_t size = ::lseek(fd, 0, SEEK_END);
    CompiledFilter out;
    if (rc == 0 && size > 0 && size % 8 == 0) {
      out.program.resize(static_cast<size_t>(size) / 8);
      if (::pread(fd, out.program.data(), static_cast<size_t>(size), 0) != size) rc = -1;
    }
    ::close(fd);
    if (rc != 0 || out.program.empty()) return absl::InternalError("seccomp_export_bpf failed");
    return out;
  }

  absl::Status Load() {
    if (ctx_ == nullptr) return absl::InternalError("seccomp_init failed");
    if (!status_.ok()) return status_;
    int rc = seccomp_load(ctx_);
    if (rc != 0) return absl::InternalError(absl::StrCat("seccomp_load: ", rc));
    return absl::OkStatus();
  }

 private:
  scmp_filter_ctx ctx_;
  absl::Status status_;
};

}  // namespace

namespace {

std::atomic<int32_t>* g_sigsys_slot = nullptr;  // this process's WorkerBlock field

void OnSigabrt(int) { ::syscall(SYS_exit_group, kAbortExit); }

void OnSigsys(int, siginfo_t* info, void*) {
  if (g_sigsys_slot != nullptr) g_sigsys_slot->store(info->si_syscall, std::memory_order_release);
  ::syscall(SYS_exit_group, kForbiddenSyscallExit);
}

}  // namespace


absl::Status InstallSigsysReporter(std::atomic<int32_t>* slot) {
  g_sigsys_slot = slot;
  struct sigaction sa {};
  sa.sa_sigaction = &OnSigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(SIGSYS, &sa, nullptr) != 0) return absl::InternalError("sigaction(SIGSYS) failed");
  // As pid 1 of its namespace, a worker ignores the SIGABRT that abort() raises on itself (the
  // kernel protects init from its own default-action signals): a handler gets it delivered.
  struct sigaction abrt {};
  abrt.sa_handler = &OnSigabrt;
  sigemptyset(&abrt.sa_mask);
  if (::sigaction(SIGABRT, &abrt, nullptr) != 0) return absl::InternalError("sigaction(SIGABRT) failed");
  return absl::OkStatus();
}

std::string SyscallName(int nr) {
  char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
  if (name == nullptr) return absl::StrCat("syscall ", nr);
  std::string out(name);
  ::free(name);
  return out;
}

namespace {

// The worker allowlist, for a worker whose doorbell is `doorbell_fd` and pid is `pid`.
void AddWorkerRules(Filter& f, int doorbell_fd, pid_t pid) {
  // The ring protocol: sleep and wake on the futex word; ring the host's eventfd doorbell.
  f.Allow("futex");
  f.Allow("write", SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(doorbell_fd)));
  // Diagnostics from the runtime and modules go to stderr, which the host logs.
  f.Allow("write", SCMP_A0(SCMP_CMP_EQ, 2));
  f.Allow("writev", SCMP_A0(SCMP_CMP_EQ, 2));
  // Memory for malloc and C++ new: never executable (no code can be brought in after load).
  f.Allow("brk");
  f.Allow("mmap", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
  f.Allow("mprotect", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
  f.Allow("munmap");
  f.Allow("mremap");
  f.Allow("madvise");
  // Time and scheduling (clock_gettime is normally the vDSO; the fallback is a syscall).
  f.Allow("clock_gettime");
  f.Allow("clock_nanosleep");
  f.Allow("nanosleep");
  f.Allow("sched_yield");
  f.Allow("getrandom");
  // fstat of an open descriptor (glibc's stdio asks it via newfstatat(fd, "", AT_EMPTY_PATH)).
  f.Allow("newfstatat", SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
  f.Allow("fstat");
  // Identity and signals to itself only: abort() raises SIGABRT with tgkill(own pid, ...).
  f.Allow("getpid");
  f.Allow("gettid");
  f.Allow("tgkill", SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(pid)));
  f.Allow("rt_sigprocmask");
  f.Allow("rt_sigreturn");
  f.Allow("restart_syscall");
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer builds only (-DMP_SANITIZE=ON: tools/test's build-asan/). Before every
  // noreturn call (_exit, abort, a throw) ASan's runtime asks whether it runs on the alternate
  // signal stack: __asan_handle_no_return → PlatformUnpoisonStacks → sigaltstack(NULL, &old).
  // A query only: setting or changing a stack (ss != NULL) stays forbidden, and release
  // builds never contain this rule.
  f.Allow("sigaltstack", SCMP_A0(SCMP_CMP_EQ, 0));
#endif
  // Leaving.
  f.Allow("exit");
  f.Allow("exit_group");
}

}  // namespace

absl::Status InstallWorkerSeccomp(const SeccompTarget& target) {
  // Trap rather than kill: the SIGSYS reporter names the syscall for the supervisor.
  Filter f(SCMP_ACT_TRAP);
  AddWorkerRules(f, target.doorbell_fd, ::getpid());
  return f.Load();
}

absl::StatusOr<CompiledFilter> CompileWorkerSeccomp(int doorbell_fd, pid_t pid) {
  Filter f(SCMP_ACT_TRAP);
  AddWorkerRules(f, doorbell_fd, pid);
  return f.Export();
}

absl::Status LoadCompiledFilter(const CompiledFilter& filter) {
  sock_fprog prog{static_cast<unsigned short>(filter.program.size()),
                  reinterpret_cast<sock_filter*>(const_cast<uint64_t*>(filter.program.data()))};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
    return absl::InternalError(absl::StrCat("prctl(PR_SET_SECCOMP): ", strerror(errno)));
  }
  return absl::OkStatus();
}



absl::Status InstallBuilderSeccomp() {
  Filter f(SCMP_ACT_ALLOW);
  for (const char* name : {"fork", "vfork", "execve", "execveat", "ptrace", "open", "openat",
                           "openat2", "creat", "socket", "socketpair", "connect", "bind",
                           "process_vm_writev", "process_vm_readv", "kill", "tkill"}) {
    f.Add(SCMP_ACT_KILL_PROCESS, name);
  }
  // Threads are fine (CLONE_THREAD); new processes are not.
  f.Add(SCMP_ACT_KILL_PROCESS, "clone", SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
  // clone3 passes its flags in memory, out of the filter's reach: make glibc fall back to clone.
  f.Add(SCMP_ACT_ERRNO(ENOSYS), "clone3");
  return f.Load();
}

}  // namespace mp::microproc
