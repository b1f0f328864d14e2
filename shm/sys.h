// The one way in and out of the OS for setup paths: errno-carrying Status values and EINTR retry.
#pragma once

#include <cerrno>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mp {

// A Status for a failed syscall: "what: strerror (ERRNAME)", with a code that fits the errno.
// `what` names the call and its subject, e.g. "memfd_create(echo.gen1)".
absl::Status ErrnoStatus(absl::string_view what, int err);

// Calls `f()` until it does not fail with EINTR; returns its last result.
template <typename F>
auto RetryEintr(F&& f) -> decltype(f()) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

// Name of an errno value ("EMFILE"), or its number as text when unknown.
std::string ErrnoName(int err);

}  // namespace mp
