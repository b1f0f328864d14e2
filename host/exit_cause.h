// Why a microprocess ended, as one enum: the supervisor decides it once, where it happens, and
// logs, errors and metrics read it from there (no matching of message text).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "host/process.h"
#include "shm/ring_layout.h"

namespace mp::host {

enum class ExitCause {
  kExited,          // it exited on its own (status != 0 and none of the below)
  kSignal,          // a signal killed it (SIGSEGV, SIGKILL from outside, abort())
  kSeccomp,         // it called a syscall outside its allowlist
  kMemory,          // its handler ran out of its address space
  kDeadline,        // its call missed the deadline and it did not stop within the grace
  kProtocol,        // it broke the ring protocol
  kOperator,        // mpctl kill
  kRetired,         // stopped on purpose: reload, scale down, recycle
  kGenerationLost,  // its generation's init ended, and every process with it
  kHostStopping,    // the host is shutting down
};

// The label of `mphost_worker_exits_total{cause=...}`.
const char* ExitCauseLabel(ExitCause cause);

// Every cause, for series that must exist from the start.
inline constexpr ExitCause kAllExitCauses[] = {
    ExitCause::kExited,   ExitCause::kSignal,   ExitCause::kSeccomp,
    ExitCause::kMemory,   ExitCause::kDeadline, ExitCause::kProtocol,
    ExitCause::kOperator, ExitCause::kRetired,  ExitCause::kGenerationLost,
    ExitCause::kHostStopping};

// How a process ended, in words, from its exit status and, for a seccomp trap, the syscall
// number its SIGSYS handler left in its ring header (worker-written: range-checked, and only
// ever used to name its own death). Sets `*syscall` to the syscall's name, if any.
struct ExitReading {
  ExitCause cause;
  std::string description;  // "killed by SIGSEGV", "called forbidden syscall openat (seccomp)"
  std::string syscall;      // for kSeccomp
};
ExitReading ReadExit(const ExitInfo& exit, const shm::RingFileHeader& ring);

}  // namespace mp::host
