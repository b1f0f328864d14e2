// Building a generation's heap: module code fills it in a builder helper (mp-builder, in
// namespaces and a sandbox of its own), then the supervisor validates, checksums and seals it.
// On the event loop from start to end; the checksum of a large heap runs on a thread of its
// own.
#pragma once

#include <kj/async.h>

#include <cstdint>

#include "absl/status/statusor.h"
#include "host/config.h"
#include "host/generation.h"

namespace mp::host {

// Builds generation `number` of `config`'s heap. Resolves to the sealed heap, or to why there
// is none: INVALID_ARGUMENT when the plugin or the config cannot work at all (an unknown
// option, a wrong ABI), ABORTED when this build failed (the module said so, crashed, called a
// forbidden syscall, filled the heap), DEADLINE_EXCEEDED past buildTimeoutMs. Every process the
// build started is gone when it resolves.
kj::Promise<absl::StatusOr<BuiltHeap>> BuildHeap(HelperEnv& env, const ModuleConfig& config,
                                                 uint64_t number);

}  // namespace mp::host
