// The microprocess syscall allowlist: default action traps (the SIGSYS reporter names the call
// and ends the process). Every syscall below is here because the worker loop, the C/C++
// runtime or a well-behaved module handler needs it after the sandbox is in place. Anything
// that reaches outside the process (files, sockets, processes, signals to others, exec,
// ptrace) is absent on purpose.
//
// Also here: compiling and loading filters, and the SIGSYS reporter every sandboxed process
// installs. The helpers' allowlists are in helper_seccomp.cc.
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "microproc/helper_protocol.h"
#include "microproc/sandbox.h"
#include "microproc/seccomp_filter.h"

namespace mp::microproc {

absl::StatusOr<CompiledFilter> SeccompFilter::Export() {
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

absl::Status SeccompFilter::Load() {
  if (ctx_ == nullptr) return absl::InternalError("seccomp_init failed");
  if (!status_.ok()) return status_;
  int rc = seccomp_load(ctx_);
  if (rc != 0) return absl::InternalError(absl::StrCat("seccomp_load: ", rc));
  return absl::OkStatus();
}

namespace {

std::atomic<int32_t>* g_fault_slot = nullptr;  // this process's FaultSink
int g_fault_fd = -1;

void OnSigabrt(int) { ::syscall(SYS_exit_group, kExitAbort); }

void OnSigsys(int, siginfo_t* info, void*) {
  if (g_fault_slot != nullptr) g_fault_slot->store(info->si_syscall, std::memory_order_release);
  if (g_fault_fd >= 0) {
    const FaultReport report{MessageKind::kFault, info->si_syscall};
    ::syscall(SYS_write, g_fault_fd, &report, sizeof report);
  }
  ::syscall(SYS_exit_group, kExitForbiddenSyscall);
}

}  // namespace

absl::Status InstallFaultReporter(FaultSink sink) {
  g_fault_slot = sink.slot;
  g_fault_fd = sink.fd;
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
void AddWorkerRules(SeccompFilter& f, int doorbell_fd, pid_t pid) {
  // The ring protocol: sleep and wake on the futex word; ring the host's eventfd doorbell.
  f.Allow("futex");
  f.Allow("write", SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(doorbell_fd)));
  // Diagnostics from the runtime and modules go to stderr, a pipe the host reads and logs.
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
  SeccompFilter f(SCMP_ACT_TRAP);
  AddWorkerRules(f, target.doorbell_fd, ::getpid());
  return f.Load();
}

absl::StatusOr<CompiledFilter> CompileWorkerSeccomp(int doorbell_fd, pid_t pid) {
  SeccompFilter f(SCMP_ACT_TRAP);
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

}  // namespace mp::microproc
