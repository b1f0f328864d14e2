// The init of a helper: the host's own code, first process of a helper's namespaces (pid 1
// when they are on). It never loads a plugin; it forks the stage that does, reaps every
// process of the helper, and reports each exit to the supervisor on kHelperInitFd, so the
// supervisor learns every exit status although microprocesses are not its children. When the
// supervisor closes that socket (or dies), init exits and the kernel kills everything left in
// its pid namespace: nothing module code starts outlives its build or its generation.
#pragma once

#include "absl/functional/function_ref.h"

namespace mp::microproc {

struct HelperInitOptions {
  // Exit as soon as the stage has (the builder: a build is one stage, and its end is the end
  // of everything it started). Otherwise init stays until the supervisor closes the socket.
  bool exit_with_stage = false;
};

// Runs as init and never returns. `stage` runs in init's first child, with every descriptor
// init was given except the init socket; its return value is the child's exit status.
[[noreturn]] void RunHelperInit(absl::FunctionRef<int()> stage, const HelperInitOptions& options);

}  // namespace mp::microproc
