#include "host/log.h"

#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "mp/utf8.hpp"

namespace mp::host {
namespace {

bool NeedsQuotes(absl::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (c == ' ' || c == '"' || c == '=' || c == '\\' || u < 0x20 || u >= 0x7f) return true;
  }
  return false;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

}  // namespace

std::string QuoteLogValue(absl::string_view v) {
  if (!NeedsQuotes(v)) return std::string(v);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  const std::string_view s(v.data(), v.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else if (c >= 0x80) {
      const size_t n = Utf8SequenceLength(s, i);
      if (n == 0) {
        out += "\\x";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
      } else {
        out.append(s.data() + i, n);
        i += n;
        continue;
      }
    } else {
      out += static_cast<char>(c);
    }
    ++i;
  }
  out += '"';
  return out;
}

void LogEvent(absl::string_view event, std::initializer_list<LogField> fields) {
  LogEvent(LogLevel::kInfo, event, fields);
}

std::string FormatEvent(LogLevel level, absl::string_view event,
                        std::initializer_list<LogField> fields) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc;
  gmtime_r(&ts.tv_sec, &utc);
  std::string line = absl::StrFormat(
      "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s event=%s", utc.tm_year + 1900,
      utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, ts.tv_nsec / 1000000,
      LevelName(level), event);
  for (const auto& [k, v] : fields) absl::StrAppend(&line, " ", k, "=", QuoteLogValue(v));
  line += '\n';
  return line;
}

void LogEvent(LogLevel level, absl::string_view event, std::initializer_list<LogField> fields) {
  const std::string line = FormatEvent(level, event, fields);
  ssize_t unused = ::write(2, line.data(), line.size());
  (void)unused;
}

absl::StatusOr<int> OpenLogFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) return absl::InternalError(absl::StrCat("log file ", path, ": ", strerror(errno)));
  return fd;
}

absl::Status UseLogFile(int fd, const std::string& path) {
  if (::dup2(fd, 2) < 0) {  // atomic: a write never finds fd 2 closed
    return absl::InternalError(absl::StrCat("log file ", path, ": dup2: ", strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status RedirectLogTo(const std::string& path) {
  auto fd = OpenLogFile(path);
  if (!fd.ok()) return fd.status();
  absl::Status s = UseLogFile(*fd, path);
  ::close(*fd);
  return s;
}

}  // namespace mp::host
