// The HTTP/1.1 front door on the supervisor's event loop (KJ's HTTP server): /m/<module>/...
// reaches a module; /healthz, /readyz and /metrics describe the host. Idle keep-alive
// connections cost the host a little memory and no worker.
#pragma once

#include <kj/compat/http.h>

#include "host/supervisor.h"

namespace mp::host {

class FrontDoor final : public kj::HttpService {
 public:
  FrontDoor(Supervisor& supervisor, const kj::HttpHeaderTable& table)
      : supervisor_(supervisor), table_(table) {}

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                            Response& response) override;

 private:
  kj::Promise<void> Send(Response& response, const CallResult& result);
  Supervisor& supervisor_;
  const kj::HttpHeaderTable& table_;
};

// "OK", "Not Found", ... for `status`.
const char* HttpStatusText(uint16_t status);

}  // namespace mp::host
