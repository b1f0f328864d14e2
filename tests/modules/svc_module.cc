// svc: drives the services of ABI 1.1 from query parameters, for services_test.cc. Answers 200
// with what the service said, or 502 with "service failed: <the host's message>".
//
//   /redis?s=cache&a=SET&a=k&a=v     a Redis command, argument by argument (%-decoded)
//   /call?s=words&p=/lookup&q=w%3Dx  a module call: "status <n>\n<body>"
//   /ping?s=cache&n=150              n PINGs: "ok <n>", or where and why they stopped
//   /recurse?s=self                  calls /recurse on service s until refused: the depth
//   /big?s=cache&n=2000000           SET of an n-byte value
//   /sleep?ms=N                      sleeps until N ms pass or the call is cancelled
#include <unistd.h>

#include <string>
#include <string_view>
#include <vector>

#include "mp/module.hpp"

namespace {

std::string Decode(std::string_view s) {
  std::string out;
  auto hex = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i] == '+' ? ' ' : s[i];
    }
  }
  return out;
}

// Every value of `key` in the query, in order.
std::vector<std::string> Params(std::string_view q, std::string_view key) {
  std::vector<std::string> out;
  while (!q.empty()) {
    const size_t amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    const size_t eq = pair.find('=');
    if (pair.substr(0, eq) == key) out.push_back(Decode(eq == std::string_view::npos ? "" : pair.substr(eq + 1)));
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return out;
}

std::string Param(std::string_view q, std::string_view key, std::string fallback = "") {
  auto v = Params(q, key);
  return v.empty() ? fallback : v[0];
}

std::string Show(mp::Value v) {
  switch (v.type()) {
    case MP_VALUE_NIL: return "nil";
    case MP_VALUE_INTEGER: return "int:" + std::to_string(v.integer());
    case MP_VALUE_STRING: return "str:" + std::string(v.str());
    case MP_VALUE_STATUS: return "status:" + std::string(v.str());
    case MP_VALUE_ERROR: return "err:" + std::string(v.str());
    case MP_VALUE_ARRAY: {
      std::string out = "[";
      for (size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + Show(v[i]);
      return out + "]";
    }
  }
  return "?";
}

struct Svc {
  static void Build(mp::HeapBuilder& heap) { heap.StoreBytes("svc", "svc"); }

  static void Handle(const mp::Heap&, const mp::Call& call, mp::Reply& reply) {
    const mp::Services services = call.services();
    const std::string_view path = call.path();
    const std::string_view q = call.query();
    const std::string s = Param(q, "s", "cache");
    auto failed = [&](std::string_view why) {
      reply.SetStatus(502);
      reply.Write("service failed: ");
      reply.Write(why);
    };
    if (path == "/redis") {
      const std::vector<std::string> args = Params(q, "a");
      std::vector<std::string_view> views(args.begin(), args.end());
      auto r = services.RedisArgv(s, views);
      if (!r) return failed(r.error());
      reply.Write(Show(r.value()));
    } else if (path == "/call") {
      auto r = services.CallModule(s, "GET", Param(q, "p", "/"), Param(q, "q"));
      if (!r) return failed(r.error());
      reply.Write("status " + std::to_string(r->status()) + "\n");
      reply.Write(r->body());
    } else if (path == "/ping") {
      const long n = std::stol(Param(q, "n", "1"));
      for (long i = 0; i < n; ++i) {
        auto r = services.Redis(s, {"PING"});
        if (!r) return failed("at " + std::to_string(i) + ": " + std::string(r.error()));
      }
      reply.Write("ok " + std::to_string(n));
    } else if (path == "/recurse") {
      auto r = services.CallModule(s, "GET", "/recurse", "s=" + s);
      if (!r) {
        reply.Write("0 " + std::string(r.error()));
        return;
      }
      const std::string body(r->body());
      reply.Write(std::to_string(std::stol(body) + 1) + body.substr(body.find(' ')));
    } else if (path == "/sleep") {  // until ms pass or the host cancels the call
      const long ms = std::stol(Param(q, "ms", "0"));
      for (long i = 0; i < ms && !reply.Cancelled(); ++i) usleep(1000);
      reply.Write(reply.Cancelled() ? "cancelled" : "slept");
    } else if (path == "/big") {
      const std::string value(std::stoul(Param(q, "n", "1")), 'x');
      auto r = services.Redis(s, {"SET", Param(q, "k", "t:big"), value});
      if (!r) return failed(r.error());
      reply.Write(Show(r.value()));
    } else {
      reply.SetStatus(404);
    }
  }
};

}  // namespace

MP_MODULE(Svc, "svc", "1.0.0")
