// IP addresses and CIDR blocks, for trustedProxies: whose X-Forwarded-For the access log
// believes. IPv4 and IPv6; an IPv4-mapped IPv6 address ("::ffff:10.0.0.1") is its IPv4 one.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mp::host {

struct IpAddress {
  bool v6 = false;
  std::array<uint8_t, 16> bytes{};  // v4: the first 4
};

struct Cidr {
  IpAddress base;
  int prefix_bits = 0;
  bool Contains(const IpAddress& a) const;
};

// "10.0.0.1", "::1", "::ffff:10.0.0.1"; an error for anything else.
absl::StatusOr<IpAddress> ParseIp(absl::string_view text);
// "10.0.0.0/8", "fd00::/8", or one address (a /32 or /128).
absl::StatusOr<Cidr> ParseCidr(absl::string_view text);

// True if `address` is in any of `blocks`.
bool InAny(const std::vector<Cidr>& blocks, const IpAddress& address);

}  // namespace mp::host
