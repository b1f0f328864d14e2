#include "host/call_codec.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "host/json.h"
#include "host/reply_rules.h"
#include "microproc/ring_message.h"

namespace mp::host {

CallResult HostError(uint16_t status, absl::string_view module, absl::string_view message) {
  CallResult r;
  r.status = status;
  r.from_host = true;
  r.headers.emplace_back("Content-Type", "application/json");
  r.body = JsonError(message, module);
  return r;
}

CallResult HostUnavailable(Unavailable cause, absl::string_view module, absl::string_view message) {
  CallResult r = HostError(503, module, message);
  r.unavailable = cause;
  r.headers.emplace_back("Retry-After", "1");
  return r;
}

const char* UnavailableName(Unavailable cause) {
  switch (cause) {
    case Unavailable::kNone: return "";
    case Unavailable::kStarting: return "starting";
    case Unavailable::kDraining: return "draining";
    case Unavailable::kModuleFailed: return "module_failed";
    case Unavailable::kQueueFull: return "queue_full";
    case Unavailable::kNoWorker: return "no_worker";
  }
  return "";
}

size_t CallBytes(const CallRequest& r) {
  std::vector<microproc::HeaderSizes> sizes;
  sizes.reserve(r.headers.size());
  for (const auto& [name, value] : r.headers) sizes.push_back({name.size(), value.size()});
  return microproc::CallMessageBytes(r.method.size(), r.path.size(), r.query.size(), sizes,
                                     r.body.size());
}

void FillCall(call::Call::Builder call, const CallRequest& r) {
  call.setMethod(r.method);
  call.setPath(r.path);
  call.setQuery(r.query);
  auto headers = call.initHeaders(static_cast<unsigned>(r.headers.size()));
  for (size_t i = 0; i < r.headers.size(); ++i) {
    headers[i].setName(r.headers[i].first);
    headers[i].setValue(r.headers[i].second);
  }
  call.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.body.data()), r.body.size()));
}

CallResult ResultOfReply(DecodedReply reply, absl::string_view module, pid_t pid) {
  CallResult result;
  if (reply.is_error) {
    result = HostError(500, module, absl::StrCat("module '", module, "': ", reply.error_message));
  } else if (auto allowed = ApplyReplyRules(reply.status, &reply.headers); !allowed.ok()) {
    // The module may choose its status and headers, never the HTTP framing.
    result = HostError(502, module, absl::StrCat("module '", module,
                                                 "' gave a reply that cannot go out: ",
                                                 allowed.message()));
  } else {
    result.status = reply.status;
    result.headers = std::move(reply.headers);
    result.body = std::move(reply.body);
  }
  result.worker_pid = pid;
  return result;
}

}  // namespace mp::host
