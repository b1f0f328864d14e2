// The rules a module's reply obeys before it reaches a client (docs/security.md, "Replies").
// A module chooses its status, headers and body; the host alone chooses the HTTP framing.
//   - The status is a final one, 200-599: no interim (1xx) response, no protocol switch.
//   - Header names are HTTP tokens; values hold no control byte but tab.
//   - Headers that frame the message or that the host sets (Content-Length,
//     Transfer-Encoding, Connection, Date, X-Mphost-*, X-Request-Id, ...) are the host's: a
//     module's values for them are dropped.
// Pure functions, unit-tested in tests/unit/host/reply_rules_test.cc.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace mp::host {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// True for a header whose value only the host may set.
bool IsHostOwnedHeader(absl::string_view name);

// True if `name` is an HTTP token (RFC 9110, 5.6.2) of at most 256 bytes.
bool IsValidHeaderName(absl::string_view name);

// True if `value` (at most 8 KiB) has no control byte but horizontal tab (RFC 9110, 5.5).
bool IsValidHeaderValue(absl::string_view value);

// Checks `status` and `headers` and removes the host-owned headers from `*headers`. On
// failure nothing may be sent: the message says why ("status 101 is not a final HTTP status
// (200-599)", "header 'X-A' has a control byte (0x01) in its value").
absl::Status ApplyReplyRules(uint16_t status, HeaderList* headers);

}  // namespace mp::host
