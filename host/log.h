// Structured event log: one line per event on stderr,
// "ts=... level=LEVEL event=NAME key=value ...". Values that need it are quoted by
// QuoteLogValue, so no value can end a line or pass for another field. Thread-compatible
// (the host logs from its loop thread).
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mp::host {

using LogField = std::pair<absl::string_view, absl::string_view>;

enum class LogLevel { kDebug, kInfo, kWarn, kError };

// Logs at info level.
void LogEvent(absl::string_view event, std::initializer_list<LogField> fields);
void LogEvent(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields);

// One event as a line (with its newline), as LogEvent writes it.
std::string FormatEvent(LogLevel level, absl::string_view event,
                        std::initializer_list<LogField> fields);

// Host events go to `path` from now on (appending; created 0640), in place of stderr: the file
// takes over descriptor 2. Called again (SIGUSR1), it reopens the path, for logrotate.
absl::Status RedirectLogTo(const std::string& path);
// The two halves of RedirectLogTo: open `path` (nothing changes yet), then make the descriptor
// the log (it takes over descriptor 2; `fd` stays the caller's to close).
absl::StatusOr<int> OpenLogFile(const std::string& path);
absl::Status UseLogFile(int fd, const std::string& path);

// `v` as it appears in a log line: bare if it is non-empty printable ASCII without spaces,
// quotes, backslashes or '='; otherwise in double quotes, with '"' and '\' escaped, \n, \r and
// \t spelled out, every other control byte and every byte that is not part of well-formed
// UTF-8 as \xNN.
std::string QuoteLogValue(absl::string_view v);

}  // namespace mp::host
