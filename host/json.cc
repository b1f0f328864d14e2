#include "host/json.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "mp/utf8.hpp"

namespace mp::host {

std::string JsonQuote(absl::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      default: break;
    }
    if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<int>(c));
      ++i;
      continue;
    }
    size_t n = Utf8SequenceLength(std::string_view(s.data(), s.size()), i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  out += '"';
  return out;
}

std::string JsonError(absl::string_view message, absl::string_view module) {
  if (module.empty()) return absl::StrCat("{\"error\":", JsonQuote(message), "}\n");
  return absl::StrCat("{\"error\":", JsonQuote(message), ",\"module\":", JsonQuote(module), "}\n");
}

}  // namespace mp::host
