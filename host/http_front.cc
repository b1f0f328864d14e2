#include "host/http_front.h"

#include <chrono>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "host/json.h"
#include "host/log.h"

namespace mp::host {
namespace {

// Headers the HTTP layer owns; a module's value for them is dropped.
bool HopByHop(absl::string_view name) {
  for (absl::string_view h : {"content-length", "transfer-encoding", "connection", "keep-alive",
                              "upgrade", "te", "trailer"}) {
    if (absl::EqualsIgnoreCase(name, h)) return true;
  }
  return false;
}

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

}  // namespace

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

kj::Promise<void> FrontDoor::Send(Response& response, const CallResult& result) {
  kj::HttpHeaders out(table_);
  for (const auto& [name, value] : result.headers) {
    if (HopByHop(name)) continue;
    out.add(kj::str(name.c_str()), kj::str(value.c_str()));
  }
  if (result.worker_pid > 0) out.add("X-Mphost-Worker", kj::str(result.worker_pid));
  auto stream = response.send(result.status, HttpStatusText(result.status), out,
                              static_cast<uint64_t>(result.body.size()));
  auto body = kj::heapString(result.body.data(), result.body.size());
  auto write = stream->write(body.begin(), body.size());
  return write.attach(kj::mv(stream), kj::mv(body));
}

const Route* FrontDoor::MatchRoute(absl::string_view path, absl::string_view host) const {
  const Route* best = nullptr;
  for (const Route& r : routes_) {
    if (!absl::StartsWith(path, r.prefix)) continue;
    if (!r.host.empty() && !absl::EqualsIgnoreCase(host, r.host)) continue;
    if (best == nullptr || r.prefix.size() > best->prefix.size()) best = &r;
  }
  return best;
}

kj::Promise<void> FrontDoor::request(kj::HttpMethod method, kj::StringPtr url,
                                     const kj::HttpHeaders& headers, kj::AsyncInputStream& body,
                                     Response& response) {
  uint64_t head_bytes = url.size();
  headers.forEach([&](kj::StringPtr name, kj::StringPtr value) {
    head_bytes += name.size() + value.size() + 4;
  });
  if (head_bytes > max_header_bytes_) {
    return Send(response, JsonStatus(431, absl::StrCat("request target and headers of ", head_bytes,
                                                       " bytes exceed the limit of ",
                                                       max_header_bytes_, " (maxHeaderKb)")));
  }
  absl::string_view target(url.cStr(), url.size());
  absl::string_view path = target, query;
  if (auto q = target.find('?'); q != absl::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q + 1);
  }
  if (path == "/healthz") return Send(response, Plain(200, "ok\n"));
  if (path == "/readyz") {
    return supervisor_.Ready() ? Send(response, Plain(200, "ready\n"))
                               : Send(response, Plain(503, "not ready\n"));
  }
  if (path == "/metrics") {
    return supervisor_.MetricsText().then([this, &response](std::string text) {
      return Send(response, Plain(200, std::move(text), "text/plain; version=0.0.4; charset=utf-8"));
    });
  }
  // A ".." segment never reaches a module: answer it here rather than trust every module.
  if (path == "/.." || absl::StrContains(path, "/../") || absl::EndsWith(path, "/..")) {
    return Send(response, JsonStatus(400, "path contains a '..' segment"));
  }
  std::string module, module_path;
  absl::string_view host;
  KJ_IF_MAYBE(h, headers.get(kj::HttpHeaderId::HOST)) { host = absl::string_view(h->cStr(), h->size()); }
  host = host.substr(0, host.rfind(':') == absl::string_view::npos || host.back() == ']'
                            ? host.size()
                            : host.rfind(':'));
  if (const Route* route = MatchRoute(path, host)) {
    module = route->module;
    module_path = std::string(path.substr(route->prefix.size()));
    if (module_path.empty() || module_path[0] != '/') module_path = "/" + module_path;
  } else if (absl::StartsWith(path, "/m/")) {
    absl::string_view rest = path.substr(3);
    const size_t slash = rest.find('/');
    module = std::string(rest.substr(0, slash));
    module_path = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  } else {
    return Send(response, JsonStatus(404, absl::StrCat("no route for ", path,
                                                       "; modules are under /m/<module>/")));
  }
  const auto max_body = supervisor_.MaxBodyBytes(module);
  if (!max_body) {
    return Send(response, JsonStatus(404, absl::StrCat("no module named '", module, "'"), module));
  }
  KJ_IF_MAYBE(length, body.tryGetLength()) {
    if (*length > *max_body) {
      supervisor_.CountFrontDoorAnswer(module, 413);
      return Send(response, JsonStatus(413, absl::StrCat("request body of ", *length,
                                                         " bytes exceeds the module's limit of ",
                                                         *max_body),
                                       module));
    }
  }
  CallRequest call;
  call.method = kj::str(method).cStr();
  call.path = std::move(module_path);
  call.query = std::string(query);
  headers.forEach([&](kj::StringPtr name, kj::StringPtr value) {
    call.headers.emplace_back(name.cStr(), value.cStr());
  });
  kj::Promise<kj::Array<kj::byte>> read_body = body.readAllBytes(*max_body + 1);
  if (timer_ != nullptr) {
    read_body = read_body.exclusiveJoin(
        timer_->afterDelay(body_timeout_ms_ * kj::MILLISECONDS).then([]() -> kj::Array<kj::byte> {
          throw kj::Exception(kj::Exception::Type::OVERLOADED, __FILE__, __LINE__,
                              kj::str("request body timeout"));
        }));
  }
  return kj::mv(read_body)
      .then(
          [this, &response, module, call = std::move(call)](kj::Array<kj::byte> bytes) mutable
          -> kj::Promise<void> {
            call.body.assign(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
            const auto started = std::chrono::steady_clock::now();
            std::string method = call.method, target = call.path;
            return supervisor_.Call(module, std::move(call))
                .then([this, &response, started, module, method = std::move(method),
                       target = std::move(target)](CallResult result) {
                  if (access_log_) {
                    const double ms = std::chrono::duration<double, std::milli>(
                                          std::chrono::steady_clock::now() - started)
                                          .count();
                    LogEvent("access", {{"module", module},
                                        {"method", method},
                                        {"path", target},
                                        {"status", absl::StrCat(result.status)},
                                        {"bytes", absl::StrCat(result.body.size())},
                                        {"ms", absl::StrFormat("%.3f", ms)},
                                        {"worker", absl::StrCat(result.worker_pid)}});
                  }
                  return Send(response, result);
                });
          },
          [this, &response, module, limit = *max_body](kj::Exception&& e) {
            const std::string what(e.getDescription().cStr());
            if (what.find("body timeout") != std::string::npos) {
              supervisor_.CountFrontDoorAnswer(module, 408);
              return Send(response, JsonStatus(408, absl::StrCat("request body not received within ",
                                                                 body_timeout_ms_, " ms (bodyTimeoutMs)"),
                                               module));
            }
            if (what.find("limit") != std::string::npos) {
              supervisor_.CountFrontDoorAnswer(module, 413);
              return Send(response, JsonStatus(413, absl::StrCat("request body exceeds the module's limit of ",
                                                                 limit, " bytes"),
                                               module));
            }
            supervisor_.CountFrontDoorAnswer(module, 400);
            return Send(response, JsonStatus(400, absl::StrCat("malformed request body: ", what), module));
          });
}

namespace {

kj::Promise<void> SendJsonError(const kj::HttpHeaderTable& table, kj::HttpService::Response& response,
                                uint16_t status, absl::string_view message,
                                const char* allow = nullptr) {
  kj::HttpHeaders headers(table);
  headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/json");
  if (allow != nullptr) headers.add("Allow", allow);
  headers.set(kj::HttpHeaderId::CONNECTION, "close");
  std::string body = JsonError(message);
  auto stream = response.send(status, HttpStatusText(status), headers, body.size());
  auto text = kj::heapString(body.data(), body.size());
  auto write = stream->write(text.begin(), text.size());
  return write.attach(kj::mv(stream), kj::mv(text));
}

const kj::HttpHeaderTable& ErrorTable() {
  static const kj::HttpHeaderTable* table = new kj::HttpHeaderTable();
  return *table;
}

}  // namespace

kj::Promise<void> FrontDoorErrors::handleClientProtocolError(kj::HttpHeaders::ProtocolError error,
                                                             kj::HttpService::Response& response) {
  const std::string what(error.description.cStr());
  const bool too_large = what.find("too large") != std::string::npos ||
                         what.find("too long") != std::string::npos;
  if (error.statusCode == 501) {  // a method KJ does not know: a client error here
    return SendJsonError(ErrorTable(), response, 405, absl::StrCat("bad request: ", what),
                         "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
  }
  const uint16_t status = too_large ? 431 : error.statusCode;
  return SendJsonError(ErrorTable(), response, status,
                       absl::StrCat("bad request: ", too_large ? "headers too large: " : "", what));
}

kj::Promise<void> FrontDoorErrors::handleApplicationError(
    kj::Exception exception, kj::Maybe<kj::HttpService::Response&> response) {
  const std::string what(exception.getDescription().cStr());
  KJ_IF_MAYBE(r, response) {
    if (what.find("too large") != std::string::npos || what.find("too long") != std::string::npos) {
      return SendJsonError(ErrorTable(), *r, 431, absl::StrCat("request headers too large: ", what));
    }
    if (exception.getType() == kj::Exception::Type::DISCONNECTED) return kj::READY_NOW;
    return SendJsonError(ErrorTable(), *r, 500, absl::StrCat("internal error: ", what));
  }
  return kj::READY_NOW;
}

}  // namespace mp::host
