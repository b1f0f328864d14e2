// One call's wire format, host side: a CallRequest as a Cap'n Proto Call (exact size, built
// where it is sent: microproc::BuildMessage), and a worker's reply (decoded by
// response_decoder.h, checked by reply_rules.h) as a CallResult.
#pragma once

#include <sys/types.h>

#include <cstddef>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "host/call.h"
#include "host/response_decoder.h"
#include "schemas/call.capnp.h"

namespace mp::host {

// Exact size of `r` as a Call message (segment table included).
size_t CallBytes(const CallRequest& r);

// Writes `r` into a Call.
void FillCall(call::Call::Builder call, const CallRequest& r);

// What the client gets for a reply the worker `pid` of `module` sent: the module's answer, a
// 500 for the module's error, or a 502 for a reply that breaks the reply rules.
CallResult ResultOfReply(DecodedReply reply, absl::string_view module, pid_t pid);

}  // namespace mp::host
