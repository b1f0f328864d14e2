#include "host/reply_rules.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mp::host {

bool IsHostOwnedHeader(absl::string_view name) {
  for (absl::string_view h :
       {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te",
        "trailer", "proxy-connection", "date", "x-request-id"}) {
    if (absl::EqualsIgnoreCase(name, h)) return true;
  }
  return name.size() >= 9 && absl::EqualsIgnoreCase(name.substr(0, 9), "x-mphost-");
}

bool IsValidHeaderName(absl::string_view name) {
  if (name.empty() || name.size() > 256) return false;
  for (char c : name) {
    if (!(absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
          absl::string_view("!#$%&'*+-.^_`|~").find(c) != absl::string_view::npos)) {
      return false;
    }
  }
  return true;
}

namespace {

// The first control byte in `value` (tab excepted), or -1.
int FirstControlByte(absl::string_view value) {
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) return u;
  }
  return -1;
}

}  // namespace

bool IsValidHeaderValue(absl::string_view value) {
  return value.size() <= 8192 && FirstControlByte(value) < 0;
}

absl::Status ApplyReplyRules(uint16_t status, HeaderList* headers) {
  if (status < 200 || status > 599) {
    return absl::InvalidArgumentError(
        absl::StrCat("status ", status, " is not a final HTTP status (200-599)"));
  }
  for (const auto& [name, value] : *headers) {
    if (!IsValidHeaderName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("header name '", absl::CEscape(name.substr(0, 64)),
                       "' is not an HTTP token"));
    }
    if (value.size() > 8192) {
      return absl::InvalidArgumentError(
          absl::StrCat("header '", name, "' has a value of ", value.size(), " bytes (at most 8192)"));
    }
    if (const int c = FirstControlByte(value); c >= 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "header '%s' has a control byte (0x%02x) in its value", name, c));
    }
  }
  headers->erase(std::remove_if(headers->begin(), headers->end(),
                                [](const auto& h) { return IsHostOwnedHeader(h.first); }),
                 headers->end());
  return absl::OkStatus();
}

}  // namespace mp::host
