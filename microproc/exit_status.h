// Exit statuses of the processes the supervisor starts (helper inits and stages,
// microprocesses), named once for both ends. The supervisor turns them into causes
// ("called forbidden syscall openat", "ran out of memory") for logs, errors and metrics.
#pragma once

namespace mp::microproc {

enum ExitStatus : int {
  kExitOk = 0,
  kExitFailed = 1,              // reported its failure, then exited
  kExitHostBrokeRing = 3,       // a worker found its ring broken by the host (never happens)
  kExitSetupFailed = 70,        // could not enter its sandbox or set itself up
  kExitLostHost = 71,           // the supervisor went away
  kExitExecFailed = 127,        // a helper could not be executed
  kExitAbort = 134,             // called abort() (128 + SIGABRT)
  kExitForbiddenSyscall = 159,  // called a syscall outside its allowlist (128 + SIGSYS)
  kExitOutOfMemory = 160,       // a handler ran out of its address space
};

}  // namespace mp::microproc
