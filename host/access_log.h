// The access log: one line per request, the host's rejections included, to stderr with the
// host's events or to a file of its own (accessLogFile, reopened on SIGUSR1):
//   ts=... level=info event=access client=203.0.113.9 peer=10.0.0.2 request_id=... method=GET
//   target="/m/dict/prefix?q=ab" host=api.example.com module=dict status=200 bytes=52
//   ms=0.412 worker=4242
// `client` is the peer, or, when the peer is a trusted proxy (trustedProxies), the last
// address of X-Forwarded-For that is not one. Not thread-safe: the loop thread.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "host/net_address.h"
#include "shm/unique_fd.h"

namespace mp::host {

struct AccessRecord {
  std::string client;
  std::string peer;  // the TCP peer, when a proxy stands between
  std::string request_id;
  std::string method;
  std::string target;  // path and query, as the client sent them
  std::string host;
  std::string module;  // empty: none matched
  uint16_t status = 0;
  uint64_t bytes = 0;
  double ms = 0;
  pid_t worker = 0;
  std::string cause;  // why the host answered itself (404, 413, ...)
};

class AccessLog {
 public:
  // Off until configured.
  AccessLog() = default;
  // `file` empty: stderr. Lines are written only when `enabled` (or a file is given). Opens the
  // file; on failure the log keeps its former settings.
  absl::Status Configure(bool enabled, std::string file, std::vector<std::string> trusted_proxies);
  // Reopens the file (logrotate, SIGUSR1); a no-op for stderr.
  absl::Status Reopen();
  bool enabled() const { return enabled_; }
  void Record(const AccessRecord& r);

  // The client of a request from `peer` carrying `forwarded_for` (X-Forwarded-For, maybe empty).
  std::string ClientOf(const std::string& peer, absl::string_view forwarded_for) const;

 private:
  bool enabled_ = false;
  std::string file_;
  std::vector<Cidr> trusted_;
  UniqueFd fd_;  // invalid: stderr
};

// "203.0.113.9" for an AF_INET/AF_INET6 address, "" otherwise.
std::string AddressText(const sockaddr* addr, socklen_t length);

// A request id for a request without a usable X-Request-Id: 16 random hex digits.
std::string NewRequestId();
// True if a client's X-Request-Id can be used as it is: 1-128 of [A-Za-z0-9._:-].
bool UsableRequestId(absl::string_view id);

}  // namespace mp::host
