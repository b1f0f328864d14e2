#include "host/http_front.h"

#include <time.h>

#include <algorithm>
#include <chrono>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "host/json.h"
#include "host/log.h"
#include "host/reply_rules.h"
#include "host/routing.h"

namespace mp::host {
namespace {

constexpr size_t kLoggedTargetBytes = 1024;  // a longer target is cut in the access log
constexpr uint64_t kBodyChunk = 64 << 10;

CallResult Plain(uint16_t status, std::string body, const char* type = "text/plain; charset=utf-8") {
  CallResult r;
  r.status = status;
  r.from_host = true;
  r.headers.emplace_back("Content-Type", type);
  r.body = std::move(body);
  return r;
}

CallResult JsonStatus(uint16_t status, absl::string_view message, absl::string_view module = {}) {
  return Plain(status, JsonError(message, module), "application/json");
}

absl::string_view View(kj::StringPtr s) { return absl::string_view(s.cStr(), s.size()); }

enum class BodyRead { kComplete, kTooLarge, kTimedOut };

// Appends the request body to `*out`, up to `max` bytes (kTooLarge past it). Reads what
// `expected` announces at once (one byte more, to see the end), else in chunks that double.
kj::Promise<BodyRead> ReadBody(kj::AsyncInputStream& in, std::string* out, uint64_t max,
                               kj::Maybe<uint64_t> expected) {
  const size_t old = out->size();
  uint64_t want = std::max<uint64_t>(4096, old);
  KJ_IF_MAYBE(n, expected) { want = *n >= old ? *n - old + 1 : 1; }
  const size_t chunk = static_cast<size_t>(std::min({kBodyChunk, want, max + 1 - old}));
  out->resize(old + chunk);
  return in.tryRead(out->data() + old, 1, chunk)
      .then([&in, out, max, old, expected](size_t n) -> kj::Promise<BodyRead> {
        out->resize(old + n);
        if (n == 0) return BodyRead::kComplete;
        if (out->size() > max) return BodyRead::kTooLarge;
        return ReadBody(in, out, max, expected);
      });
}

}  // namespace

// One request's facts, for its access log line.
struct FrontDoor::Request {
  ClientStream* connection = nullptr;
  AccessRecord record;
  std::chrono::steady_clock::time_point started;
  std::string body;
};

// The service of one client connection: knows its stream (peer address, 100 Continue).
class FrontDoor::Connection final : public kj::HttpService {
 public:
  Connection(FrontDoor& front, ClientStream& stream) : front_(front), stream_(stream) {}

  kj::Promise<void> request(kj::HttpMethod method, kj::StringPtr url,
                            const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                            Response& response) override {
    auto r = kj::heap<Request>();
    stream_.BeginRequest();
    auto end = kj::defer([&stream = stream_]() { stream.EndRequest(); });
    // evalNow: a synchronous throw is a rejected promise, and EndRequest still runs.
    auto served = kj::evalNow([&]() {
      return front_.Serve(*r, method, url, headers, body, response, stream_);
    });
    return served.attach(kj::mv(r), kj::mv(end));
  }

 private:
  FrontDoor& front_;
  ClientStream& stream_;
};

FrontDoor::FrontDoor(Supervisor& supervisor, kj::Timer& timer, AccessLog& access_log,
                     FrontDoorLimits limits, std::vector<Route> routes)
    : supervisor_(supervisor),
      timer_(timer),
      access_log_(access_log),
      limits_(limits),
      routes_(std::move(routes)) {
  kj::HttpHeaderTable::Builder builder;
  request_id_ = builder.add("X-Request-Id");
  forwarded_for_ = builder.add("X-Forwarded-For");
  expect_ = builder.add("Expect");
  table_ = builder.build();
}

FrontDoor::~FrontDoor() = default;

kj::Own<kj::HttpService> FrontDoor::ForConnection(ClientStream& connection) {
  return kj::heap<Connection>(*this, connection);
}

void FrontDoor::Reconfigure(FrontDoorLimits limits, std::vector<Route> routes) {
  limits_ = limits;
  routes_ = std::move(routes);
}

void FrontDoor::LogRejection(const std::string& peer, uint16_t status, absl::string_view cause,
                             const std::string& request_id) {
  AccessRecord record;
  record.request_id = request_id;
  record.client = peer;
  record.peer = peer;
  record.status = status;
  record.cause = std::string(cause);
  access_log_.Record(record);
}

kj::Promise<void> FrontDoor::Send(Request& r, kj::HttpService::Response& response,
                                  CallResult result) {
  kj::HttpHeaders out(*table_);
  for (const auto& [name, value] : result.headers) {
    if (IsHostOwnedHeader(name)) continue;  // the host's own errors carry none either
    out.add(kj::str(name.c_str()), kj::str(value.c_str()));
  }
  if (result.worker_pid > 0) out.add("X-Mphost-Worker", kj::str(result.worker_pid));
  out.set(kj::HttpHeaderId::DATE, kj::str(HttpDate().c_str()));
  out.set(request_id_, kj::str(r.record.request_id.c_str()));

  AccessRecord& log = r.record;
  log.status = result.status;
  log.bytes = result.body.size();
  log.worker = result.worker_pid;
  log.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - r.started)
               .count();
  if (result.unavailable != Unavailable::kNone) log.cause = UnavailableName(result.unavailable);
  access_log_.Record(log);

  // 204, 205 and 304 have no body in HTTP (RFC 9110 §6.4.1): whatever a module wrote is dropped.
  if (result.status == 204 || result.status == 205 || result.status == 304) result.body.clear();
  if (!result.body.empty() && r.record.method != "HEAD") r.connection->ExpectResponseBody();
  auto stream = response.send(result.status, HttpStatusText(result.status), out,
                              static_cast<uint64_t>(result.body.size()));
  // KJ's stream for a bodiless status refuses every write, even an empty one.
  if (result.body.empty()) return kj::READY_NOW;
  auto body = kj::heapString(result.body.data(), result.body.size());
  auto write = stream->write(body.begin(), body.size());
  return write.attach(kj::mv(stream), kj::mv(body));
}

kj::Promise<void> FrontDoor::Readiness(Request& r, kj::HttpService::Response& response) {
  const ReadinessReport report = supervisor_.CheckReadiness();
  std::string body = absl::StrCat("{\"ready\":", report.ready ? "true" : "false",
                                  ",\"draining\":", report.draining ? "true" : "false",
                                  ",\"modules\":[");
  for (size_t i = 0; i < report.modules.size(); ++i) {
    const ModuleReadiness& m = report.modules[i];
    absl::StrAppend(&body, i ? "," : "", "{\"name\":", JsonQuote(m.name),
                    ",\"state\":", JsonQuote(ModuleStateName(m.state)),
                    ",\"ready\":", m.ready ? "true" : "false",
                    ",\"critical\":", m.critical ? "true" : "false", "}");
  }
  body += "]}\n";
  return Send(r, response, Plain(report.ready ? 200 : 503, std::move(body), "application/json"));
}

kj::Promise<void> FrontDoor::Serve(Request& r, kj::HttpMethod method, kj::StringPtr url,
                                   const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                                   kj::HttpService::Response& response, ClientStream& connection) {
  r.started = std::chrono::steady_clock::now();
  r.connection = &connection;
  AccessRecord& log = r.record;
  log.peer = connection.peer();
  absl::string_view forwarded;
  KJ_IF_MAYBE(f, headers.get(forwarded_for_)) { forwarded = View(*f); }
  log.client = access_log_.ClientOf(log.peer, forwarded);
  KJ_IF_MAYBE(id, headers.get(request_id_)) {
    if (UsableRequestId(View(*id))) log.request_id = id->cStr();
  }
  if (log.request_id.empty()) log.request_id = NewRequestId();
  log.method = kj::str(method).cStr();
  log.target = std::string(View(url).substr(0, kLoggedTargetBytes));
  absl::string_view host_header;
  KJ_IF_MAYBE(h, headers.get(kj::HttpHeaderId::HOST)) { host_header = View(*h); }
  log.host = std::string(host_header.substr(0, 256));

  auto reject = [&](uint16_t status, const char* cause, std::string message,
                    absl::string_view module = {}) {
    log.cause = cause;
    if (!module.empty()) supervisor_.CountFrontDoorAnswer(module, status);
    return Send(r, response, JsonStatus(status, message, module));
  };

  uint64_t head_bytes = url.size();
  headers.forEach([&](kj::StringPtr name, kj::StringPtr value) {
    head_bytes += name.size() + value.size() + 4;
  });
  if (head_bytes > limits_.max_header_bytes) {
    return reject(431, "headers_too_large",
                  absl::StrCat("request target and headers of ", head_bytes,
                               " bytes exceed the limit of ", limits_.max_header_bytes,
                               " (maxHeaderKb)"));
  }
  auto target = ParseRequestTarget(View(url), host_header);
  if (!target.ok()) return reject(400, "bad_target", std::string(target.status().message()));
  if (target->path == "/healthz") return Send(r, response, Plain(200, "ok\n"));
  if (target->path == "/readyz") return Readiness(r, response);
  if (target->path == "/metrics") {
    return supervisor_.MetricsText().then([this, &r, &response](std::string text) {
      return Send(r, response,
                  Plain(200, std::move(text), "text/plain; version=0.0.4; charset=utf-8"));
    });
  }
  // A ".." segment never reaches a module: answer it here rather than trust every module.
  if (HasDotDotSegment(target->path)) {
    return reject(400, "dot_dot_segment", "path contains a '..' segment");
  }
  auto destination = Resolve(routes_, *target);
  if (!destination) {
    return reject(404, "no_route", absl::StrCat("no route for ", target->path,
                                                "; modules are under /m/<module>/"));
  }
  log.module = destination->module;
  const auto max_body = supervisor_.MaxBodyBytes(destination->module);
  if (!max_body) {
    log.module.clear();
    return reject(404, "no_module",
                  absl::StrCat("no module named '", destination->module, "'"),
                  destination->module);
  }
  auto length = body.tryGetLength();
  KJ_IF_MAYBE(n, length) {
    if (*n > *max_body) {
      return reject(413, "body_too_large",
                    absl::StrCat("request body of ", *n, " bytes exceeds the module's limit of ",
                                 *max_body),
                    destination->module);
    }
    r.body.reserve(static_cast<size_t>(*n));
  }

  CallRequest call;
  call.method = log.method;
  call.path = std::move(destination->path);
  call.query = std::move(target->query);
  bool expects_continue = false;
  headers.forEach([&](kj::StringPtr name, kj::StringPtr value) {
    if (absl::EqualsIgnoreCase(View(name), "expect")) {  // the host answers it, not the module
      expects_continue = absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(View(value)), "100-continue");
      return;
    }
    if (absl::EqualsIgnoreCase(View(name), "x-request-id")) return;  // replaced below
    call.headers.emplace_back(name.cStr(), value.cStr());
  });
  call.headers.emplace_back("X-Request-Id", log.request_id);

  kj::Promise<void> ready = kj::READY_NOW;
  bool empty_body = false;
  KJ_IF_MAYBE(n, length) { empty_body = *n == 0; }
  if (expects_continue && !empty_body) {
    ready = connection.WriteInterim("HTTP/1.1 100 Continue\r\n\r\n");
  }
  return ready.then([this, &r, &body, &response, module = destination->module,
                     call = std::move(call), max = *max_body]() mutable {
    return ReadBodyAndCall(r, std::move(module), std::move(call), max, body, response);
  });
}

kj::Promise<void> FrontDoor::ReadBodyAndCall(Request& r, std::string module, CallRequest call,
                                             uint64_t max_body, kj::AsyncInputStream& body,
                                             kj::HttpService::Response& response) {
  const uint32_t body_timeout_ms = limits_.body_timeout_ms;
  const kj::Maybe<uint64_t> expected = body.tryGetLength();
  kj::Promise<BodyRead> read = BodyRead::kComplete;
  bool empty = false;
  KJ_IF_MAYBE(n, expected) { empty = *n == 0; }
  if (!empty) {  // a GET: nothing to read, no timer to set
    read = ReadBody(body, &r.body, max_body, expected)
               .exclusiveJoin(timer_.afterDelay(body_timeout_ms * kj::MILLISECONDS)
                                  .then([] { return BodyRead::kTimedOut; }));
  }
  return read.then(
      [this, &r, &response, module, call = std::move(call), max_body,
       body_timeout_ms](BodyRead outcome) mutable -> kj::Promise<void> {
        auto reject = [&](uint16_t status, const char* cause, std::string message) {
          r.record.cause = cause;
          supervisor_.CountFrontDoorAnswer(module, status);
          return Send(r, response, JsonStatus(status, message, module));
        };
        switch (outcome) {
          case BodyRead::kTimedOut:
            return reject(408, "body_timeout",
                          absl::StrCat("request body not received within ", body_timeout_ms,
                                       " ms (bodyTimeoutMs)"));
          case BodyRead::kTooLarge:
            return reject(413, "body_too_large",
                          absl::StrCat("request body exceeds the module's limit of ", max_body,
                                       " bytes"));
          case BodyRead::kComplete:
            break;
        }
        call.body = std::move(r.body);
        return supervisor_.Call(module, std::move(call))
            .then([this, &r, &response](CallResult result) {
              return Send(r, response, std::move(result));
            });
      },
      [this, &r, &response, module](kj::Exception&& e) -> kj::Promise<void> {
        // The client went away: nobody to answer.
        if (e.getType() == kj::Exception::Type::DISCONNECTED) return kj::mv(e);
        r.record.cause = "bad_body";
        supervisor_.CountFrontDoorAnswer(module, 400);
        return Send(r, response,
                    JsonStatus(400, absl::StrCat("malformed request body: ", e.getDescription().cStr()),
                               module));
      });
}

const char* HttpStatusText(uint16_t status) {
  switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
  }
}

namespace {

kj::Promise<void> SendJsonError(const kj::HttpHeaderTable& table, kj::HttpService::Response& response,
                                uint16_t status, const std::string& request_id,
                                absl::string_view message, const char* allow = nullptr) {
  kj::HttpHeaders headers(table);
  headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/json");
  headers.set(kj::HttpHeaderId::DATE, kj::str(HttpDate().c_str()));
  headers.add("X-Request-Id", kj::str(request_id.c_str()));
  if (allow != nullptr) headers.add("Allow", allow);
  headers.set(kj::HttpHeaderId::CONNECTION, "close");
  std::string body = JsonError(message);
  auto stream = response.send(status, HttpStatusText(status), headers, body.size());
  auto text = kj::heapString(body.data(), body.size());
  auto write = stream->write(text.begin(), text.size());
  return write.attach(kj::mv(stream), kj::mv(text));
}

// KJ reports headers beyond its buffer as a protocol error or an exception; only its message
// tells them apart from others.
bool HeadersTooLarge(absl::string_view what) {
  return absl::StrContains(what, "too large") || absl::StrContains(what, "too long");
}

}  // namespace

kj::Promise<void> FrontDoorErrors::handleClientProtocolError(kj::HttpHeaders::ProtocolError error,
                                                             kj::HttpService::Response& response) {
  const std::string what(error.description.cStr());
  const std::string id = NewRequestId();
  if (error.statusCode == 501) {  // a method KJ does not know: a client error here
    front_.LogRejection("", 405, "unknown_method", id);
    return SendJsonError(front_.table(), response, 405, id, absl::StrCat("bad request: ", what),
                         "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
  }
  const bool too_large = HeadersTooLarge(what);
  const uint16_t status = too_large ? 431 : error.statusCode;
  front_.LogRejection("", status, too_large ? "headers_too_large" : "bad_request", id);
  return SendJsonError(front_.table(), response, status, id,
                       absl::StrCat("bad request: ", too_large ? "headers too large: " : "", what));
}

kj::Promise<void> FrontDoorErrors::handleApplicationError(
    kj::Exception exception, kj::Maybe<kj::HttpService::Response&> response) {
  const std::string what(exception.getDescription().cStr());
  KJ_IF_MAYBE(r, response) {
    const std::string id = NewRequestId();
    if (HeadersTooLarge(what)) {
      front_.LogRejection("", 431, "headers_too_large", id);
      return SendJsonError(front_.table(), *r, 431, id,
                           absl::StrCat("request headers too large: ", what));
    }
    if (exception.getType() == kj::Exception::Type::DISCONNECTED) return kj::READY_NOW;
    front_.LogRejection("", 500, "internal_error", id);
    LogEvent(LogLevel::kError, "http_internal_error", {{"what", what}, {"request_id", id}});
    return SendJsonError(front_.table(), *r, 500, id, absl::StrCat("internal error: ", what));
  }
  return kj::READY_NOW;
}

}  // namespace mp::host
