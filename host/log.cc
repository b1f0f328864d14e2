#include "host/log.h"

#include <time.h>
#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mp::host {
namespace {

bool NeedsQuotes(absl::string_view v) {
  if (v.empty()) return true;
  for (char c : v) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20) return true;
  }
  return false;
}

}  // namespace

void LogEvent(absl::string_view event, std::initializer_list<LogField> fields) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm utc;
  gmtime_r(&ts.tv_sec, &utc);
  std::string line = absl::StrFormat("ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ event=%s",
                                     utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour,
                                     utc.tm_min, utc.tm_sec, ts.tv_nsec / 1000000, event);
  for (const auto& [k, v] : fields) {
    absl::StrAppend(&line, " ", k, "=");
    if (!NeedsQuotes(v)) {
      line.append(v.data(), v.size());
      continue;
    }
    line += '"';
    for (char c : v) {
      if (c == '"' || c == '\\') line += '\\';
      line += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
    }
    line += '"';
  }
  line += '\n';
  ssize_t unused = ::write(2, line.data(), line.size());
  (void)unused;
}

}  // namespace mp::host
