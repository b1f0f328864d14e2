// The HTTP/1.1 front door on the supervisor's event loop (KJ's HTTP server): /m/<module>/...
// reaches a module; /healthz, /readyz and /metrics describe the host. Idle keep-alive
// connections cost the host a little memory and no worker.
#pragma once

#include <kj/compat/http.h>

#include "host/config.h"
#include "host/supervisor.h"

namespace mp::host {

class FrontDoor final : public kj::HttpService {
 public:
  // Requests whose target and headers exceed `max_header_bytes` are answered 431.
  FrontDoor(Supervisor& supervisor, const kj::HttpHeaderTable& table, uint64_t max_header_bytes,
            std::vector<Route> routes = {}, bool access_log = false,
            kj::Timer* timer = nullptr, uint32_t body_timeout_ms = 30000)
      : supervisor_(supervisor),
        table_(table),
        max_header_bytes_(max_header_bytes),
        routes_(std::move(routes)),
        access_log_(access_log),
        timer_(timer),
        body_timeout_ms_(body_timeout_ms) {}

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                            Response& response) override;

 private:
  kj::Promise<void> Send(Response& response, const CallResult& result);
  // The configured route for `path` and `host` (longest prefix), if any.
  const Route* MatchRoute(absl::string_view path, absl::string_view host) const;
  Supervisor& supervisor_;
  const kj::HttpHeaderTable& table_;
  uint64_t max_header_bytes_;
  std::vector<Route> routes_;
  bool access_log_;
  kj::Timer* timer_;  // for the body timeout; none: no timeout
  uint32_t body_timeout_ms_;
};

// How the HTTP server answers what never reaches FrontDoor::request: a request that does not
// parse (400), headers larger than the server's buffer (431), an internal failure (500). JSON
// bodies, like every host error.
class FrontDoorErrors final : public kj::HttpServerErrorHandler {
 public:
  kj::Promise<void> handleClientProtocolError(kj::HttpHeaders::ProtocolError error,
                                              kj::HttpService::Response& response) override;
  kj::Promise<void> handleApplicationError(kj::Exception exception,
                                           kj::Maybe<kj::HttpService::Response&> response) override;
};

// "OK", "Not Found", ... for `status`.
const char* HttpStatusText(uint16_t status);

}  // namespace mp::host
