// A libseccomp filter under construction (internal to microproc/): the worker and helper
// policies are written with it. Rules that fail to resolve or add are remembered, and
// Load/Export report the first one, so a policy reads as a plain list of Allow lines.
#pragma once

#include <seccomp.h>

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "microproc/sandbox.h"

namespace mp::microproc {

class SeccompFilter {
 public:
  // Every syscall not listed gets `default_action` (SCMP_ACT_TRAP: the process's SIGSYS
  // handler names it; SCMP_ACT_ALLOW for a filter that only adds denials).
  explicit SeccompFilter(uint32_t default_action) : ctx_(seccomp_init(default_action)) {}
  ~SeccompFilter() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  SeccompFilter(const SeccompFilter&) = delete;
  SeccompFilter& operator=(const SeccompFilter&) = delete;

  // Allows `name` when every comparison in `args` holds.
  template <typename... Cmp>
  void Allow(const char* name, Cmp... args) {
    Add(SCMP_ACT_ALLOW, name, args...);
  }

  // `name` fails with `err` when every comparison in `args` holds (for calls the C runtime
  // probes and copes without).
  template <typename... Cmp>
  void Refuse(const char* name, int err, Cmp... args) {
    Add(SCMP_ACT_ERRNO(static_cast<uint32_t>(err)), name, args...);
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

  // Compiles to BPF without loading it. Needs memfd_create: call before any filter that
  // forbids it.
  absl::StatusOr<CompiledFilter> Export();

  // Compiles and loads into the calling thread (and so the process: it is single-threaded
  // wherever this is called). Needs no_new_privs.
  absl::Status Load();

 private:
  scmp_filter_ctx ctx_;
  absl::Status status_;
};

}  // namespace mp::microproc
