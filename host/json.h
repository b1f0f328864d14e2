// Minimal JSON output for error bodies, logs and mpctl --json. Writing only; reading JSON goes
// through Cap'n Proto's JSON codec.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace mp::host {

// `s` as a quoted JSON string; bytes that are not valid UTF-8 become U+FFFD.
std::string JsonQuote(absl::string_view s);

// {"error": message} plus optional "module", as the front door answers failures.
std::string JsonError(absl::string_view message, absl::string_view module = {});

}  // namespace mp::host
