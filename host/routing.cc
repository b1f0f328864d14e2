#include "host/routing.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace mp::host {

std::string HostWithoutPort(absl::string_view host) {
  if (!host.empty() && host.front() == '[') {  // [v6]:port
    const size_t close = host.find(']');
    return std::string(close == absl::string_view::npos ? host : host.substr(0, close + 1));
  }
  const size_t colon = host.rfind(':');
  return std::string(colon == absl::string_view::npos ? host : host.substr(0, colon));
}

absl::StatusOr<RequestTarget> ParseRequestTarget(absl::string_view url,
                                                 absl::string_view host_header) {
  RequestTarget t;
  absl::string_view rest = url;
  std::string authority(host_header);
  for (absl::string_view scheme : {"http://", "https://"}) {
    if (rest.size() >= scheme.size() && absl::EqualsIgnoreCase(rest.substr(0, scheme.size()), scheme)) {
      rest.remove_prefix(scheme.size());
      const size_t end = rest.find_first_of("/?");
      authority.assign(rest.data(), end == absl::string_view::npos ? rest.size() : end);
      if (authority.empty()) return absl::InvalidArgumentError("an absolute target without a host");
      rest = end == absl::string_view::npos ? absl::string_view("/") : rest.substr(end);
      if (!rest.empty() && rest.front() == '?') {
        t.path = "/";
        t.query = std::string(rest.substr(1));
        t.host = absl::AsciiStrToLower(HostWithoutPort(authority));
        return t;
      }
      break;
    }
  }
  if (rest.empty() || rest.front() != '/') {
    return absl::InvalidArgumentError(absl::StrCat("request target '", url.substr(0, 64),
                                                   "' is neither origin- nor absolute-form"));
  }
  const size_t q = rest.find('?');
  t.path = std::string(rest.substr(0, q));
  if (q != absl::string_view::npos) t.query = std::string(rest.substr(q + 1));
  t.host = absl::AsciiStrToLower(HostWithoutPort(authority));
  return t;
}

bool HasDotDotSegment(absl::string_view path) {
  return path == "/.." || absl::StrContains(path, "/../") || absl::EndsWith(path, "/..");
}

std::optional<Destination> Resolve(const std::vector<Route>& routes, const RequestTarget& t) {
  const Route* best = nullptr;
  for (const Route& r : routes) {
    if (!absl::StartsWith(t.path, r.prefix)) continue;
    if (!r.host.empty() && !absl::EqualsIgnoreCase(t.host, r.host)) continue;
    // The longest prefix; for one as long, a route for this Host beats one for any Host.
    if (best == nullptr || r.prefix.size() > best->prefix.size() ||
        (r.prefix.size() == best->prefix.size() && !r.host.empty() && best->host.empty())) {
      best = &r;
    }
  }
  if (best != nullptr) {
    std::string path = t.path.substr(best->prefix.size());
    if (path.empty() || path[0] != '/') path.insert(path.begin(), '/');
    return Destination{best->module, std::move(path)};
  }
  if (absl::StartsWith(t.path, "/m/")) {
    const absl::string_view rest = absl::string_view(t.path).substr(3);
    const size_t slash = rest.find('/');
    if (slash == 0) return std::nullopt;
    return Destination{std::string(rest.substr(0, slash)),
                       slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash))};
  }
  return std::nullopt;
}

}  // namespace mp::host
