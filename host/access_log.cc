#include "host/access_log.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "host/log.h"

namespace mp::host {


absl::Status AccessLog::Configure(bool enabled, std::string file,
                                  std::vector<std::string> trusted_proxies) {
  std::vector<Cidr> trusted;
  for (const std::string& t : trusted_proxies) {
    auto c = ParseCidr(t);
    if (!c.ok()) return c.status();
    trusted.push_back(*c);
  }
  UniqueFd fd;
  if (!file.empty()) {
    auto opened = OpenLogFile(file);
    if (!opened.ok()) return opened.status();
    fd.reset(*opened);
  }
  enabled_ = enabled || !file.empty();
  file_ = std::move(file);
  trusted_ = std::move(trusted);
  fd_ = std::move(fd);
  return absl::OkStatus();
}

absl::Status AccessLog::Reopen() {
  if (file_.empty()) return absl::OkStatus();
  auto opened = OpenLogFile(file_);
  if (!opened.ok()) return opened.status();
  fd_.reset(*opened);
  return absl::OkStatus();
}

void AccessLog::Record(const AccessRecord& r) {
  if (!enabled_) return;
  const std::string status = absl::StrCat(r.status), bytes = absl::StrCat(r.bytes),
                    ms = absl::StrFormat("%.3f", r.ms), worker = absl::StrCat(r.worker);
  const std::string line =
      r.cause.empty()
          ? FormatEvent(LogLevel::kInfo, "access",
                        {{"client", r.client}, {"peer", r.peer}, {"request_id", r.request_id},
                         {"method", r.method}, {"target", r.target}, {"host", r.host},
                         {"module", r.module}, {"status", status}, {"bytes", bytes},
                         {"ms", ms}, {"worker", worker}})
          : FormatEvent(LogLevel::kInfo, "access",
                        {{"client", r.client}, {"peer", r.peer}, {"request_id", r.request_id},
                         {"method", r.method}, {"target", r.target}, {"host", r.host},
                         {"module", r.module}, {"status", status}, {"bytes", bytes},
                         {"ms", ms}, {"worker", worker}, {"cause", r.cause}});
  ssize_t unused = ::write(fd_ ? fd_.get() : 2, line.data(), line.size());
  (void)unused;
}

std::string AccessLog::ClientOf(const std::string& peer, absl::string_view forwarded_for) const {
  auto peer_ip = ParseIp(peer);
  if (forwarded_for.empty() || !peer_ip.ok() || !InAny(trusted_, *peer_ip)) return peer;
  // Right to left: each trusted proxy appended the address it got the request from.
  std::vector<absl::string_view> hops = absl::StrSplit(forwarded_for, ',');
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    const std::string hop(absl::StripAsciiWhitespace(*it));
    auto ip = ParseIp(hop);
    if (!ip.ok()) return peer;  // a malformed hop: believe no further
    if (!InAny(trusted_, *ip)) return hop;
  }
  return std::string(absl::StripAsciiWhitespace(hops.front()));
}

std::string AddressText(const sockaddr* addr, socklen_t length) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr->sa_family == AF_INET && length >= sizeof(sockaddr_in)) {
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, text, sizeof text);
  } else if (addr->sa_family == AF_INET6 && length >= sizeof(sockaddr_in6)) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr, text, sizeof text);
  }
  return text;
}

std::string NewRequestId() {
  // SplitMix64 over a counter from a random start: unique within the process, different in
  // every process, and no syscall per request. Not a secret: ids only tell requests apart.
  thread_local uint64_t state = [] {
    uint64_t seed = 0;
    if (::getrandom(&seed, sizeof seed, 0) != sizeof seed) {
      seed = static_cast<uint64_t>(::getpid()) * 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(::time(nullptr));
    }
    return seed;
  }();
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, z >>= 4) out[static_cast<size_t>(i)] = kHex[z & 15];
  return out;
}

bool UsableRequestId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' &&
        c != '-') {
      return false;
    }
  }
  return true;
}

}  // namespace mp::host
