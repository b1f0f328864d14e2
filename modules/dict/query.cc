#include "query.h"

namespace mp::dict {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<std::string> PercentDecode(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= raw.size()) return std::nullopt;  // needs two more bytes
      const int hi = HexValue(raw[i + 1]), lo = HexValue(raw[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<size_t> ParseLimit(std::optional<std::string_view> decoded) {
  if (!decoded) return kDefaultLimit;
  if (decoded->empty()) return std::nullopt;
  size_t value = 0;
  for (char c : *decoded) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<size_t>(c - '0');
    if (value > kMaxLimit) value = kMaxLimit + 1;  // saturate: no overflow on long inputs
  }
  return value > kMaxLimit ? kMaxLimit : value;
}

}  // namespace mp::dict
