// One call to a module, as the host carries it: the request, the answer, and a call waiting for
// a worker. Plain data; the wire format is call_codec.h's.
#pragma once

#include <kj/async.h>
#include <kj/time.h>

#include <cstdint>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace mp::host {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct CallRequest {
  std::string method = "GET";
  std::string path = "/";
  std::string query;
  HeaderList headers;
  std::string body;
  uint32_t timeout_ms = 0;  // 0: the module's callTimeoutMs
  uint32_t depth = 0;       // module calls it is nested in (0: from HTTP); services.md
};

// Why the host answered 503 without a module's reply: a label of mphost_unavailable_total and
// of the access log (`cause=`).
enum class Unavailable : uint8_t {
  kNone,
  kStarting,      // the module's first generation is still being built
  kDraining,      // the host is stopping
  kModuleFailed,  // its build failed, or its crash-loop breaker is open
  kQueueFull,     // queueLimit calls already wait
  kNoWorker,      // no worker took the call within callTimeoutMs
};
inline constexpr Unavailable kAllUnavailable[] = {
    Unavailable::kStarting,  Unavailable::kDraining, Unavailable::kModuleFailed,
    Unavailable::kQueueFull, Unavailable::kNoWorker};
// "starting", "draining", "module_failed", "queue_full", "no_worker"; "" for kNone.
const char* UnavailableName(Unavailable cause);

// An answer for the client: the module's reply, or the host's error (`from_host`), whose body
// is a JSON error naming the module and the cause.
struct CallResult {
  uint16_t status = 200;
  HeaderList headers;
  std::string body;
  pid_t worker_pid = 0;
  bool from_host = false;
  Unavailable unavailable = Unavailable::kNone;  // set with status 503
};

// A call admitted to a module, waiting for (or given to) a worker. Its promise resolves exactly
// once, through `fulfiller`.
struct PendingCall {
  CallRequest request;
  kj::Own<kj::PromiseFulfiller<CallResult>> fulfiller;
  kj::TimePoint received;  // for the latency histogram (queueing included)
};

// The host's own error answer: `status` with a JSON body {"error": message, "module": module}.
CallResult HostError(uint16_t status, absl::string_view module, absl::string_view message);
// A 503 for `cause`, with Retry-After: 1.
CallResult HostUnavailable(Unavailable cause, absl::string_view module, absl::string_view message);

}  // namespace mp::host
