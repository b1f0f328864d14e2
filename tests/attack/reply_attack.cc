// A hostile handler: replies that try to forge the host's HTTP framing and output that tries
// to pass for the host's log.
//   /status-100    an interim status with a body that reads like a second response
//   /host-headers  the host's own headers (X-Mphost-Worker, Content-Length, Date, ...)
//   /control-byte  a header value with a control byte
//   /forge-log     a line on stderr that looks exactly like a host event
//   /flood         1 MiB on stderr, as fast as it can
//   anything else  "ok"
#include <unistd.h>

#include <string>

#include "mp/module.hpp"

namespace {

void WriteAll(const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(2, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

struct ReplyAttack {
  static void Build(mp::HeapBuilder&) {}

  static void Handle(const mp::Heap&, const mp::Call& call, mp::Reply& reply) {
    const std::string_view path = call.path();
    if (path == "/status-100") {
      reply.SetStatus(100);
      reply.Write("HTTP/1.1 200 OK\r\nX-Forged: yes\r\nContent-Length: 6\r\n\r\nforged");
    } else if (path == "/host-headers") {
      reply.AddHeader("X-Mphost-Worker", "1");
      reply.AddHeader("Content-Length", "999");
      reply.AddHeader("Transfer-Encoding", "chunked");
      reply.AddHeader("Connection", "close");
      reply.AddHeader("Date", "Thu, 01 Jan 1970 00:00:00 GMT");
      reply.AddHeader("X-Request-Id", "forged");
      reply.AddHeader("X-Module", "kept");
      reply.Write("body");
    } else if (path == "/control-byte") {
      reply.AddHeader("X-Evil", "a\x01" "b");
      reply.Write("body");
    } else if (path == "/forge-log") {
      WriteAll("ts=2026-01-01T00:00:00.000Z level=info event=worker_exit module=echo pid=1 "
               "cause=forged calls=0\n");
      reply.Write("forged");
    } else if (path == "/flood") {
      const std::string line = std::string(1023, 'x') + "\n";
      for (int i = 0; i < 1024; ++i) WriteAll(line);
      reply.Write("flooded");
    } else {
      reply.Write("ok");
    }
  }
};

}  // namespace

MP_MODULE(ReplyAttack, "reply-attack", "1.0.0")
