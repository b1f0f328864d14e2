// Structured event log: one line per event on stderr,
// "ts=... level=LEVEL event=NAME key=value ...". Values that need it are quoted by
// QuoteLogValue, so no value can end a line or pass for another field. Thread-compatible
// (the host logs from its loop thread).
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"

namespace mp::host {

using LogField = std::pair<absl::string_view, absl::string_view>;

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Logs at info level.
void LogEvent(absl::string_view event, std::initializer_list<LogField> fields);
void LogEvent(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields);

// `v` as it appears in a log line: bare if it is non-empty printable ASCII without spaces,
// quotes, backslashes or '='; otherwise in double quotes, with '"' and '\' escaped, \n, \r and
// \t spelled out, every other control byte and every byte that is not part of well-formed
// UTF-8 as \xNN.
std::string QuoteLogValue(absl::string_view v);

}  // namespace mp::host
