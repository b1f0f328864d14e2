// Structured event log: one line per event on stderr, "ts=... event=NAME key=value ...".
// Nothing is logged per call. Thread-compatible (the host is one thread).
#pragma once

#include <initializer_list>
#include <utility>

#include "absl/strings/string_view.h"

namespace mp::host {

using LogField = std::pair<absl::string_view, absl::string_view>;

void LogEvent(absl::string_view event, std::initializer_list<LogField> fields);

}  // namespace mp::host
