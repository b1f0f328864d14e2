#include "host/exit_cause.h"

#include <signal.h>

#include "absl/strings/str_cat.h"
#include "microproc/exit_status.h"
#include "microproc/sandbox.h"

namespace mp::host {

const char* ExitCauseLabel(ExitCause cause) {
  switch (cause) {
    case ExitCause::kExited: return "exit";
    case ExitCause::kSignal: return "signal";
    case ExitCause::kSeccomp: return "seccomp";
    case ExitCause::kMemory: return "memory";
    case ExitCause::kDeadline: return "deadline";
    case ExitCause::kProtocol: return "protocol";
    case ExitCause::kOperator: return "operator";
    case ExitCause::kRetired: return "retired";
    case ExitCause::kGenerationLost: return "generation_lost";
    case ExitCause::kHostStopping: return "host_stopping";
  }
  return "exit";
}

ExitReading ReadExit(const ExitInfo& exit, const shm::RingFileHeader& ring) {
  using microproc::ExitStatus;
  if (exit.signal == 0) {
    switch (exit.exit_code) {
      case ExitStatus::kExitAbort:
        return {ExitCause::kSignal, "killed by SIGABRT (abort)", ""};
      case ExitStatus::kExitOutOfMemory:
        return {ExitCause::kMemory, "ran out of memory (its address-space limit)", ""};
      case ExitStatus::kExitForbiddenSyscall: {
        const int32_t nr = ring.worker.forbidden_syscall.load(std::memory_order_acquire);
        if (nr >= 0 && nr < 4096) {
          std::string name = microproc::SyscallName(nr);
          std::string what = absl::StrCat("called forbidden syscall ", name, " (seccomp)");
          return {ExitCause::kSeccomp, std::move(what), std::move(name)};
        }
        return {ExitCause::kSeccomp, "called a forbidden syscall (seccomp)", ""};
      }
      default:
        return {ExitCause::kExited, exit.Describe(), ""};
    }
  }
  return {ExitCause::kSignal, exit.Describe(), ""};
}

}  // namespace mp::host
