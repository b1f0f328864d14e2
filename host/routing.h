// Which module a request is for, from its target and Host. Pure functions, unit-tested in
// tests/unit/host/routing_test.cc.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "host/config.h"

namespace mp::host {

struct RequestTarget {
  std::string path;   // origin-form, without the query
  std::string query;  // without the '?'
  std::string host;   // the Host (or an absolute-form target's authority), without the port
};

// Reads a request target: origin-form ("/m/echo/x?q") or absolute-form
// ("http://example.com:8080/m/echo/x?q"), which RFC 9112 §3.2.2 says a server must accept; its
// authority then stands for the Host header.
absl::StatusOr<RequestTarget> ParseRequestTarget(absl::string_view url,
                                                 absl::string_view host_header);

// "example.com:8080" → "example.com"; "[::1]:80" → "[::1]".
std::string HostWithoutPort(absl::string_view host);

// True if the path has a ".." segment: it never reaches a module.
bool HasDotDotSegment(absl::string_view path);

struct Destination {
  std::string module;
  std::string path;  // what the module sees, starting with "/"
};

// The longest configured route whose prefix matches (and whose Host, if it names one; of two
// as long, the one naming the Host), else /m/<module>/...; nullopt when neither applies.
std::optional<Destination> Resolve(const std::vector<Route>& routes, const RequestTarget& target);

}  // namespace mp::host
