#include "host/net_address.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mp::host {

absl::StatusOr<IpAddress> ParseIp(absl::string_view text) {
  const std::string s(text);
  IpAddress a;
  in_addr v4;
  in6_addr v6;
  if (::inet_pton(AF_INET, s.c_str(), &v4) == 1) {
    std::memcpy(a.bytes.data(), &v4, 4);
    return a;
  }
  if (::inet_pton(AF_INET6, s.c_str(), &v6) == 1) {
    static const uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(&v6, kMapped, 12) == 0) {
      std::memcpy(a.bytes.data(), reinterpret_cast<const uint8_t*>(&v6) + 12, 4);
      return a;
    }
    a.v6 = true;
    std::memcpy(a.bytes.data(), &v6, 16);
    return a;
  }
  return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not an IP address"));
}

absl::StatusOr<Cidr> ParseCidr(absl::string_view text) {
  const size_t slash = text.find('/');
  auto base = ParseIp(text.substr(0, slash));
  if (!base.ok()) return base.status();
  Cidr c{*base, base->v6 ? 128 : 32};
  if (slash != absl::string_view::npos) {
    int bits = -1;
    if (!absl::SimpleAtoi(text.substr(slash + 1), &bits) || bits < 0 || bits > c.prefix_bits) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' has a bad prefix length"));
    }
    c.prefix_bits = bits;
  }
  return c;
}

bool Cidr::Contains(const IpAddress& a) const {
  if (a.v6 != base.v6) return false;
  int bits = prefix_bits;
  for (size_t i = 0; bits > 0; ++i, bits -= 8) {
    const uint8_t mask = bits >= 8 ? 0xff : static_cast<uint8_t>(0xff << (8 - bits));
    if ((a.bytes[i] & mask) != (base.bytes[i] & mask)) return false;
  }
  return true;
}

bool InAny(const std::vector<Cidr>& blocks, const IpAddress& address) {
  for (const Cidr& c : blocks) {
    if (c.Contains(address)) return true;
  }
  return false;
}

}  // namespace mp::host
