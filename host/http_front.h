// The HTTP/1.1 front door on the supervisor's event loop (KJ's HTTP server): /m/<module>/...
// and the configured routes reach a module; /healthz, /readyz and /metrics describe the host.
// Idle keep-alive connections cost the host a little memory and no worker.
//
// Every response carries Date and X-Request-Id (the client's, if usable, else a new one, which
// the module also sees), and is written to the access log, the host's own answers (404, 413,
// 431, ...) included. A request with `Expect: 100-continue` gets "100 Continue" once the host
// knows it will read the body, and its final status at once when it will not.
#pragma once

#include <kj/compat/http.h>

#include <memory>
#include <string>
#include <vector>

#include "host/access_log.h"
#include "host/call.h"
#include "host/client_stream.h"
#include "host/config.h"
#include "host/supervisor.h"

namespace mp::host {

struct FrontDoorLimits {
  uint64_t max_header_bytes = 64 << 10;  // target and headers; beyond: 431
  uint32_t body_timeout_ms = 30000;      // the whole body; beyond: 408
};

class FrontDoor {
 public:
  FrontDoor(Supervisor& supervisor, kj::Timer& timer, AccessLog& access_log,
            FrontDoorLimits limits, std::vector<Route> routes);
  ~FrontDoor();

  // The table the HTTP server parses request headers with.
  const kj::HttpHeaderTable& table() const { return *table_; }
  // The service for one client connection (HttpServer's per-connection factory).
  kj::Own<kj::HttpService> ForConnection(ClientStream& connection);

  // A config reload: new routes and limits apply to requests from now on.
  void Reconfigure(FrontDoorLimits limits, std::vector<Route> routes);

  // For the answers written outside a request (a head timeout's 408, a request that does not
  // parse): their access log line.
  void LogRejection(const std::string& peer, uint16_t status, absl::string_view cause,
                    const std::string& request_id = "");

 private:
  class Connection;
  struct Request;
  kj::Promise<void> Serve(Request& r, kj::HttpMethod method, kj::StringPtr url,
                          const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                          kj::HttpService::Response& response, ClientStream& connection);
  kj::Promise<void> ReadBodyAndCall(Request& r, std::string module, CallRequest call,
                                    uint64_t max_body, kj::AsyncInputStream& body,
                                    kj::HttpService::Response& response);
  kj::Promise<void> Send(Request& r, kj::HttpService::Response& response, CallResult result);
  kj::Promise<void> Readiness(Request& r, kj::HttpService::Response& response);

  Supervisor& supervisor_;
  kj::Timer& timer_;
  AccessLog& access_log_;
  FrontDoorLimits limits_;
  std::vector<Route> routes_;
  kj::Own<kj::HttpHeaderTable> table_;
  kj::HttpHeaderId request_id_, forwarded_for_, expect_;
};

// How the HTTP server answers what never reaches FrontDoor: a request that does not parse
// (400), headers larger than the server's buffer (431), an internal failure (500). JSON bodies,
// like every host error, and an access log line.
class FrontDoorErrors final : public kj::HttpServerErrorHandler {
 public:
  explicit FrontDoorErrors(FrontDoor& front) : front_(front) {}
  kj::Promise<void> handleClientProtocolError(kj::HttpHeaders::ProtocolError error,
                                              kj::HttpService::Response& response) override;
  kj::Promise<void> handleApplicationError(kj::Exception exception,
                                           kj::Maybe<kj::HttpService::Response&> response) override;

 private:
  FrontDoor& front_;
};

// "OK", "Not Found", ... for `status`.
const char* HttpStatusText(uint16_t status);

}  // namespace mp::host
