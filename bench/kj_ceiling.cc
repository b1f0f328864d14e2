// kj_ceiling: the ceiling for mphost's front door. One KJ HttpServer on one event loop, the
// same library and settings mphost's front door uses, answering each request in-process with
// bytes given in advance: no worker, no ring, no hop. Whatever mphost spends per request above
// this server is the price of its isolation.
//
//   kj_ceiling --listen 127.0.0.1:PORT PATH=FILE...   (split at the last =)
//
// A request for PATH (its query included, as the client sends it; a PATH ending in '*' matches
// every target that starts with the rest) is answered 200 with FILE's bytes and the headers
// mphost sends (Content-Type, Date, X-Request-Id, X-Mphost-Worker); any other target is a 404. bench/http/run.py starts it beside mphost with the bytes mphost gave.
#include <kj/async-io.h>
#include <kj/compat/http.h>
#include <kj/main.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

namespace {

std::string HttpDate() {
  thread_local time_t cached_second = -1;
  thread_local char cached[40];
  const time_t now = ::time(nullptr);
  if (now != cached_second) {
    tm utc;
    ::gmtime_r(&now, &utc);
    ::strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &utc);
    cached_second = now;
  }
  return cached;
}

class Answers final : public kj::HttpService {
 public:
  Answers(const kj::HttpHeaderTable& table, std::map<std::string, std::string> bodies)
      : table_(table), bodies_(std::move(bodies)) {}

  kj::Promise<void> request(kj::HttpMethod, kj::StringPtr url, const kj::HttpHeaders&,
                            kj::AsyncInputStream&, Response& response) override {
    const std::string target(url.cStr(), url.size());
    auto it = bodies_.find(target);
    if (it == bodies_.end()) {
      for (auto p = bodies_.begin(); p != bodies_.end(); ++p) {
        const std::string& key = p->first;
        if (!key.empty() && key.back() == '*' && target.compare(0, key.size() - 1, key, 0, key.size() - 1) == 0) {
          it = p;
          break;
        }
      }
    }
    kj::HttpHeaders headers(table_);
    headers.set(kj::HttpHeaderId::DATE, kj::str(HttpDate().c_str()));
    headers.set(kj::HttpHeaderId::CONTENT_TYPE, "application/json");
    headers.add("X-Request-Id", "0123456789abcdef");
    headers.add("X-Mphost-Worker", "1");
    const std::string& body = it == bodies_.end() ? not_found_ : it->second;
    auto stream = response.send(it == bodies_.end() ? 404 : 200,
                                it == bodies_.end() ? "Not Found" : "OK", headers, body.size());
    auto write = stream->write(body.data(), body.size());
    return write.attach(kj::mv(stream));
  }

 private:
  const kj::HttpHeaderTable& table_;
  std::map<std::string, std::string> bodies_;
  const std::string not_found_ = "{\"error\":\"no such path\"}";
};

class Main {
 public:
  explicit Main(kj::ProcessContext& context) : context_(context) {}

  kj::MainFunc getMain() {
    return kj::MainBuilder(context_, "kj_ceiling", "An in-process KJ HTTP server answering fixed bytes.")
        .addOptionWithArg({"listen"}, KJ_BIND_METHOD(*this, SetListen), "HOST:PORT", "Address.")
        .expectOneOrMoreArgs("PATH=FILE", KJ_BIND_METHOD(*this, AddAnswer))
        .callAfterParsing(KJ_BIND_METHOD(*this, Run))
        .build();
  }

 private:
  kj::MainBuilder::Validity SetListen(kj::StringPtr value) {
    listen_ = value.cStr();
    return true;
  }
  kj::MainBuilder::Validity AddAnswer(kj::StringPtr arg) {
    const std::string a = arg.cStr();
    const size_t eq = a.rfind('=');  // the path may hold '=' (a query), the file not
    if (eq == std::string::npos || eq == 0) return kj::str("expected PATH=FILE, got ", arg);
    std::ifstream in(a.substr(eq + 1), std::ios::binary);
    if (!in) return kj::str("cannot read ", a.substr(eq + 1).c_str());
    std::stringstream ss;
    ss << in.rdbuf();
    bodies_[a.substr(0, eq)] = ss.str();
    return true;
  }
  kj::MainBuilder::Validity Run() {
    ::signal(SIGPIPE, SIG_IGN);
    auto io = kj::setupAsyncIo();
    kj::HttpHeaderTable table;
    Answers service(table, bodies_);
    kj::HttpServer server(io.provider->getTimer(), table, service);
    auto address = io.provider->getNetwork().parseAddress(listen_.c_str()).wait(io.waitScope);
    auto listener = address->listen();
    std::printf("listening on %s:%u\n", listen_.substr(0, listen_.rfind(':')).c_str(),
                listener->getPort());
    std::fflush(stdout);
    server.listenHttp(*listener).wait(io.waitScope);
    return true;
  }

  kj::ProcessContext& context_;
  std::string listen_ = "127.0.0.1:0";
  std::map<std::string, std::string> bodies_;
};

}  // namespace

KJ_MAIN(Main)
