// The allowlists of the helper stages, the processes that load a plugin (mp-builder and
// mp-zygote; microproc/helper_stage.h). A stage installs the load filter before dlopen, so a
// module's constructors run under it, and lays the loaded filter over it once the plugin is in.
// Everything not listed traps: the stage's SIGSYS handler sends a FaultReport naming the call
// on its control socket and exits. The filters stay for the stage's whole life, and a
// microprocess forked from the zygote inherits them under its own, stricter allowlist
// (seccomp_policy.cc), which they must therefore not refuse.
//
// Absent on purpose: creating sockets or connecting them, any process other than the
// zygote's one kind of microprocess, exec, ptrace, process_vm_*, pidfd_*, kill and signals to
// others, unshare and setns, mount, io_uring, open_by_handle_at, keyctl, bpf, perf_event_open,
// userfaultfd. Paths are Landlock's (microproc/landlock.h): the read-only opens allowed here
// reach only the system's library directories while the plugin loads, then nothing.
#include <errno.h>
#include <fcntl.h>
#include <linux/prctl.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>

#include "microproc/helper_protocol.h"
#include "microproc/sandbox.h"
#include "microproc/seccomp_filter.h"

namespace mp::microproc {
namespace {

// How the zygote clones a microprocess: the helper's init becomes its parent (so init reaps it
// and reports its exit), the host gets a pidfd of it, and with pid namespaces it is pid 1 of
// one of its own.
constexpr scmp_datum_t WorkerCloneFlags(bool pid_namespaces) {
  return CLONE_PARENT | CLONE_PIDFD | SIGCHLD | (pid_namespaces ? CLONE_NEWPID : 0);
}

constexpr scmp_datum_t kWriteOpenFlags = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND |
                                         __O_TMPFILE;

void AddCommonRules(SeccompFilter& f, pid_t self) {
  // The dynamic loader: read-only opens (Landlock limits them to library directories, then to
  // nothing), reading and mapping the files, including executable mappings of the plugin.
  f.Allow("openat", SCMP_A2(SCMP_CMP_MASKED_EQ, kWriteOpenFlags, 0));
  f.Allow("read");
  f.Allow("pread64");
  f.Allow("lseek");
  f.Allow("close");
  f.Allow("fstat");
  f.Allow("newfstatat", SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, AT_EMPTY_PATH));
  // ld.so stats a search directory a library was not found in: a refusal reads as "no such
  // directory", and path metadata stays out of reach.
  f.Refuse("newfstatat", EACCES, SCMP_A3(SCMP_CMP_MASKED_EQ, AT_EMPTY_PATH, 0));
  f.Allow("mmap");
  f.Allow("mprotect");
  f.Allow("munmap");
  f.Allow("mremap");
  f.Allow("madvise");
  f.Allow("brk");
  // Time, scheduling, randomness.
  f.Allow("futex");
  f.Allow("clock_gettime");
  f.Allow("clock_nanosleep");
  f.Allow("nanosleep");
  f.Allow("gettimeofday");
  f.Allow("sched_yield");
  f.Allow("sched_getaffinity");
  f.Allow("getrandom");
  // Identity; signals to itself only (abort() raises SIGABRT with tgkill(own pid, ...)).
  f.Allow("getpid");
  f.Allow("gettid");
  f.Allow("getppid");  // in its namespace: the helper's init, or 0
  f.Allow("getuid");
  f.Allow("geteuid");
  f.Allow("getgid");
  f.Allow("getegid");
  f.Allow("tgkill", SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(self)));
  f.Allow("rt_sigaction");
  f.Allow("rt_sigprocmask");
  f.Allow("rt_sigreturn");
  f.Allow("restart_syscall");
  f.Allow("sigaltstack");
  // Output: stderr (a pipe the host reads and labels) and the control socket (results, the
  // fault report).
  f.Allow("write", SCMP_A0(SCMP_CMP_EQ, 2));
  f.Allow("writev", SCMP_A0(SCMP_CMP_EQ, 2));
  f.Allow("write", SCMP_A0(SCMP_CMP_EQ, kHelperSocketFd));
  // Lowering its own limits, and further sandboxing itself, can only take power away.
  f.Allow("prlimit64", SCMP_A0(SCMP_CMP_EQ, 0));
  f.Allow("prctl", SCMP_A0(SCMP_CMP_EQ, PR_SET_NO_NEW_PRIVS));
  f.Allow("prctl", SCMP_A0(SCMP_CMP_EQ, PR_SET_SECCOMP));
  // Its short name (what top shows): module code can rewrite its own argv anyway.
  f.Allow("prctl", SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME));
  f.Allow("prctl", SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
  f.Allow("seccomp", SCMP_A0(SCMP_CMP_EQ, SECCOMP_SET_MODE_FILTER));
  f.Allow("landlock_create_ruleset");
  f.Allow("landlock_add_rule");
  f.Allow("landlock_restrict_self");
  f.Allow("capget");
  f.Allow("capset");
  // Leaving.
  f.Allow("exit");
  f.Allow("exit_group");
}

void AddBuilderRules(SeccompFilter& f) {
  // Threads, for a parallel build. New processes are refused: a child could outlive the
  // build holding the unsealed heap.
  f.Allow("clone", SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  // clone3 passes its flags in memory, out of the filter's reach: glibc falls back to clone.
  f.Refuse("clone3", ENOSYS);
  f.Allow("set_robust_list");
  f.Allow("rseq");
  f.Allow("membarrier");
}

void AddZygoteRules(SeccompFilter& f, bool pid_namespaces) {
  // Spawn requests in, replies (with a pidfd) out.
  f.Allow("recvmsg", SCMP_A0(SCMP_CMP_EQ, kHelperSocketFd));
  f.Allow("sendmsg", SCMP_A0(SCMP_CMP_EQ, kHelperSocketFd));
  f.Allow("poll");
  f.Allow("ppoll");
  // One kind of process only: a microprocess, whose parent is the helper's init.
  f.Allow("clone", SCMP_A0(SCMP_CMP_EQ, WorkerCloneFlags(pid_namespaces)));
  f.Refuse("clone3", ENOSYS);
  // A new microprocess sets itself up before its own allowlist: its doorbell into place, every
  // other descriptor closed. Its own pid is 1 in a pid namespace of its own.
  f.Allow("dup2");
  f.Allow("dup3");
  f.Allow("close_range");
  if (pid_namespaces) f.Allow("tgkill", SCMP_A0(SCMP_CMP_EQ, 1));
}

}  // namespace

absl::Status InstallHelperLoadSeccomp(HelperRole role, pid_t self, bool pid_namespaces) {
  SeccompFilter f(SCMP_ACT_TRAP);
  AddCommonRules(f, self);
  if (role == HelperRole::kBuilder) {
    AddBuilderRules(f);
  } else {
    AddZygoteRules(f, pid_namespaces);
  }
  return f.Load();
}

absl::Status InstallHelperLoadedSeccomp() {
  SeccompFilter f(SCMP_ACT_ALLOW);
  f.Add(SCMP_ACT_TRAP, "mmap", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
  f.Add(SCMP_ACT_TRAP, "mprotect", SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, PROT_EXEC));
  f.Add(SCMP_ACT_TRAP, "pkey_mprotect");
  return f.Load();
}

}  // namespace mp::microproc
