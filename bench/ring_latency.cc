// bench/ring_latency: what a call through the shared-memory ring costs, next to the floor (a
// cache line bouncing between two cores) and the kernel's IPC primitives. One run, one pair of
// processes (a single fork, pinned to two CPUs when there are two), every line measured in the
// same run, in this order:
//   - latency lines: `--iterations` round trips after a warm-up, each timed on its own with
//     CLOCK_MONOTONIC; p50, p99, and both as ratios of the first line's;
//   - throughput lines: frames streamed one way through a ring for a fixed time per size.
// The closing "targets" section compares p50s (and the 64 B rate) with the targets.
//
//   ring_latency [--quick] [--unpinned] [--iterations=N]
//
// Timings only: nothing here passes or fails a build (CONVENTIONS.md, "Tests").
#include <arpa/inet.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <fcntl.h>
#include <kj/io.h>
#include <linux/futex.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/ring_latency_common.h"
#include "schemas/call.capnp.h"
#include "microproc/ring_message.h"
#include "shm/doorbell.h"
#include "shm/ring.h"
#include "shm/segment.h"
#include "shm/sys.h"
#include "shm/unique_fd.h"

namespace mp::bench {
namespace {

constexpr uint64_t kCallRingBytes = uint64_t{1} << 20;    // each way, latency lines
constexpr uint64_t kStreamRingBytes = uint64_t{4} << 20;  // a 1 MiB frame needs ≤ half a ring
constexpr std::array<size_t, 3> kStreamPayloads = {64, 4096, size_t{1} << 20};
static_assert(kStreamPayloads[0] == 64, "the 64 B target reads the first throughput line");




struct Setup {
  shm::Mapping words_mapping;
  SharedWords* words;       // in words_mapping
  shm::RingFile calls;      // latency lines: kCallRingBytes each way
  shm::RingFile stream;     // throughput lines: kStreamRingBytes parent → child
  shm::Doorbell read_bell;  // a blocking eventfd: the parent sleeps in read()
  // Doorbell::Create() (non-blocking): poll() + Drain(), a wait in the kernel like the host's
  // (its loop waits in epoll, edge-triggered, and reads the counter only every 64 events).
  shm::Doorbell poll_bell;
  UniqueFd unix_parent, unix_child;
  UniqueFd down_read, down_write, up_read, up_write;  // two pipes
  UniqueFd tcp_parent, tcp_child;
};

Setup MakeSetup() {
  shm::Mapping words = Check(shm::Mapping::Map(-1, 4096, PROT_READ | PROT_WRITE,
                                               MAP_SHARED | MAP_ANONYMOUS, "bench words"));
  auto* w = new (words.data()) SharedWords{};
  int sv[2], down[2], up[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) DieErrno("socketpair");
  if (::pipe2(down, O_CLOEXEC) != 0 || ::pipe2(up, O_CLOEXEC) != 0) DieErrno("pipe2");
  UniqueFd blocking_bell(::eventfd(0, EFD_CLOEXEC));
  if (!blocking_bell) DieErrno("eventfd");
  auto [tcp_parent, tcp_child] = TcpLoopbackPair();
  return Setup{std::move(words),
               w,
               Check(shm::RingFile::Create("bench.calls", kCallRingBytes, kCallRingBytes)),
               Check(shm::RingFile::Create("bench.stream", kStreamRingBytes, 4096)),
               shm::Doorbell(std::move(blocking_bell)),
               Check(shm::Doorbell::Create()),
               UniqueFd(sv[0]),
               UniqueFd(sv[1]),
               UniqueFd(down[0]),
               UniqueFd(down[1]),
               UniqueFd(up[0]),
               UniqueFd(up[1]),
               std::move(tcp_parent),
               std::move(tcp_child)};
}

// Maps every page of the ring files into this process's page tables, writable, so that no
// line pays first-touch faults (each process has its own page tables: both must call this).
void PrefaultRings(Setup& s) {
  for (const shm::RingFile* f : {&s.calls, &s.stream}) {
    if (::madvise(f->header(), f->segment().size(), MADV_POPULATE_WRITE) != 0) {
      DieErrno("madvise(MADV_POPULATE_WRITE)");
    }
  }
}


// ---- Ring round trips: a Cap'n Proto Call one way, a Reply back -----------------------------

// Process-local endpoints of the `calls` ring file.
struct HostEnd {
  shm::RingWriter requests;
  shm::RingReader responses;
  shm::RingControl* request_control;  // for the futex wake
};
struct WorkerEnd {
  shm::RingReader requests;
  shm::RingWriter responses;
};

// How the parent waits for a reply while the child's answer is on its way.
enum class HostWait { kSpin, kEventfdRead, kEventfdPollDrain };

// The messages, built in place in the ring on every round trip (microproc::FrameMessageBuilder,
// as host and worker do): GET / one way, 200 back.
void BuildCall(capnp::MessageBuilder& m) {
  auto call = m.initRoot<call::Call>();  // every field set, as the host sets them
  call.setMethod("GET");
  call.setPath("/");
  call.setQuery("");
  call.initHeaders(0);
  call.setBody(kj::ArrayPtr<const kj::byte>());
}
void BuildReply(capnp::MessageBuilder& m) {
  auto reply = m.initRoot<call::Reply>();
  reply.setStatus(200);
  reply.initHeaders(0);
  reply.setBody(kj::ArrayPtr<const kj::byte>());
}

// What a ring frame carries: a Cap'n Proto message built into it, or (`build` null) kRawBytes
// memcpy'd in, to show what building and reading the message costs.
constexpr size_t kRawBytes = 64;
struct Payload {
  void (*build)(capnp::MessageBuilder&);
  size_t bytes;
};
Payload CallPayload() { return {&BuildCall, microproc::CallMessageBytes(3, 1, 0, {}, 0)}; }
Payload ReplyPayload() { return {&BuildReply, microproc::ReplyMessageBytes({}, 0)}; }
constexpr Payload kRawPayload = {nullptr, kRawBytes};

kj::ArrayPtr<const capnp::word> Words(const shm::FrameView& f) {
  if (f.payload.size() % sizeof(capnp::word) != 0) Die("frame payload is not whole words");
  return kj::arrayPtr(reinterpret_cast<const capnp::word*>(f.payload.data()),
                      f.payload.size() / sizeof(capnp::word));
}

std::byte* SpinReserve(shm::RingWriter& out, uint64_t bytes, const Options& o) {
  std::byte* p;
  while ((p = out.Reserve(bytes)) == nullptr) {
    if (out.PeerCorrupt()) Die("ring: the consumer's head is impossible");
    SpinPause(o);
  }
  return p;
}

// Builds `payload` in Reserve()d space (as host and worker do) and commits it. Returns
// Commit's answer: true if the consumer must be woken.
bool WriteFrame(shm::RingWriter& out, shm::FrameKind kind, uint64_t id, const Payload& payload,
                const Options& o) {
  std::byte* p = SpinReserve(out, payload.bytes, o);
  if (payload.build != nullptr) {
    microproc::FrameMessageBuilder message(p, payload.bytes);
    payload.build(message);
    if (!message.InFrame() || message.FinishInFrame() != payload.bytes) Die("message size");
  } else {
    std::array<std::byte, kRawBytes> raw{};
    std::memcpy(raw.data(), &id, sizeof id);
    std::memcpy(p, raw.data(), raw.size());
  }
  return out.Commit(kind, id, payload.bytes);
}

// Reads `f` in place (FlatArrayMessageReader, as the worker reads calls) and checks that it is
// what the peer sent.
void CheckFrame(const shm::FrameView& f, shm::FrameKind kind, uint64_t id, const Payload& sent) {
  if (f.kind != kind || f.call_id != id || f.payload.size() != sent.bytes) Die("unexpected frame");
  if (sent.build == nullptr) {
    std::array<std::byte, kRawBytes> raw;
    std::memcpy(raw.data(), f.payload.data(), raw.size());
    if (std::memcmp(raw.data(), &id, sizeof id) != 0) Die("raw frame arrived garbled");
    return;
  }
  capnp::FlatArrayMessageReader message(Words(f));
  if (kind == shm::FrameKind::kCall) {
    auto call = message.getRoot<call::Call>();
    if (call.getMethod() != "GET" || call.getPath() != "/") Die("call arrived garbled");
  } else if (message.getRoot<call::Reply>().getStatus() != 200) {
    Die("reply arrived garbled");
  }
}

[[noreturn]] void DieViolation(const shm::RingReader& in) {
  Die(absl::StrCat("ring violation: ", shm::RingViolationName(in.violation())));
}

// Waits for the next frame of `in`: busy-polling, or (`futex`) the worker's way
// (microproc/worker.cc): shm::WaitForFrame without spinning, asleep on the ring's futex word.
shm::FrameView NextFrame(shm::RingReader& in, bool futex, const Options& o) {
  shm::FrameView f;
  shm::ReadStatus st;
  while ((st = in.Peek(&f)) == shm::ReadStatus::kEmpty) {
    if (futex) {
      shm::WaitForFrame(in, 0, 0);
    } else {
      while (!in.MaybeReady()) SpinPause(o);  // as shm::WaitForFrame spins
    }
  }
  if (st == shm::ReadStatus::kViolation) DieViolation(in);
  return f;
}

// The host's way, the sleep protocol of ring.h: announce → re-check Empty() → block on the
// eventfd doorbell → ClearSleeping. A ring that raced the announcement leaves a stale count in
// the eventfd; the next wait then returns at once and loops, as the host's event loop does.
shm::FrameView DoorbellPeek(shm::RingReader& in, const shm::Doorbell& bell, HostWait how) {
  for (;;) {
    shm::FrameView f;
    const shm::ReadStatus st = in.Peek(&f);
    if (st == shm::ReadStatus::kFrame) return f;
    if (st == shm::ReadStatus::kViolation) DieViolation(in);
    in.AnnounceSleep();
    if (!in.Empty()) {
      in.ClearSleeping();
      continue;
    }
    if (how == HostWait::kEventfdRead) {
      uint64_t count;
      if (RetryEintr([&] { return ::read(bell.fd(), &count, sizeof count); }) != sizeof count) {
        DieErrno("read(eventfd)");
      }
    } else {
      pollfd p{bell.fd(), POLLIN, 0};
      if (RetryEintr([&] { return ::poll(&p, 1, -1); }) < 0) DieErrno("poll(eventfd)");
      bell.Drain();
    }
    in.ClearSleeping();
  }
}

// Sends `call`, waits `how` for `reply`.
Latency ParentRingRoundTrips(HostEnd& host, const Payload& call, const Payload& reply,
                             const Options& o, HostWait how, const shm::Doorbell* bell) {
  return TimeRoundTrips(o, [&](uint64_t id) {
    if (WriteFrame(host.requests, shm::FrameKind::kCall, id, call, o)) {
      shm::WakeFutexConsumer(host.request_control);
    }
    const shm::FrameView f = how == HostWait::kSpin ? NextFrame(host.responses, /*futex=*/false, o)
                                                    : DoorbellPeek(host.responses, *bell, how);
    CheckFrame(f, shm::FrameKind::kReply, id, reply);
    host.responses.Pop();
  });
}

// Answers Rounds(o) calls. `bell_fd` < 0: spin for calls; otherwise sleep on the futex and
// ring `bell_fd` when the parent announced its sleep.
void ChildRingRoundTrips(WorkerEnd& worker, const Payload& call, const Payload& reply,
                         const Options& o, int bell_fd) {
  for (uint64_t id = 1; id <= Rounds(o); ++id) {
    CheckFrame(NextFrame(worker.requests, /*futex=*/bell_fd >= 0, o), shm::FrameKind::kCall, id,
               call);
    worker.requests.Pop();
    if (WriteFrame(worker.responses, shm::FrameKind::kReply, id, reply, o) && bell_fd >= 0) {
      shm::RingDoorbell(bell_fd);
    }
  }
}

// The Cap'n Proto part of a ring call without the ring: the call built and read, the reply
// built and read, in one process, in two private buffers (no cache line changes cores).
Latency CapnpWorkAlone(const Payload& call, const Payload& reply, const Options& o) {
  alignas(64) static std::byte call_buf[256], reply_buf[256];
  if (call.bytes > sizeof call_buf || reply.bytes > sizeof reply_buf) Die("message too large");
  auto one = [&](std::byte* buf, const Payload& p, shm::FrameKind kind, uint64_t id) {
    microproc::FrameMessageBuilder message(buf, p.bytes);
    p.build(message);
    const size_t bytes = message.FinishInFrame();
    shm::FrameView f{kind, id, {buf, bytes}};
    CheckFrame(f, kind, id, p);
  };
  return TimeRoundTrips(o, [&](uint64_t id) {
    one(call_buf, call, shm::FrameKind::kCall, id);
    one(reply_buf, reply, shm::FrameKind::kReply, id);
  });
}


// ---- One-way ring throughput ----------------------------------------------------------------

struct Throughput {
  size_t payload = 0;
  uint64_t messages = 0;
  double seconds = 0;
  double msgs_per_s() const { return static_cast<double>(messages) / seconds; }
  double gb_per_s() const { return static_cast<double>(messages * payload) / seconds / 1e9; }
};

void WaitUntilDrained(const shm::RingControl& ctl, const Options& o) {
  while (ctl.head.load(std::memory_order_acquire) != ctl.tail.load(std::memory_order_relaxed)) {
    SpinPause(o);
  }
}

// Streams frames of `payload` bytes: a warm-up, then as many as fit in o.stream_seconds, then
// a kStop frame. The clock stops when the child has consumed (Popped) everything.
Throughput ProduceFrames(shm::RingWriter& out, const shm::RingControl& ctl, size_t payload,
                         const Options& o) {
  std::vector<std::byte> source(payload, std::byte{0x5a});
  uint64_t seq = 0;
  auto send = [&] {
    std::byte* p = SpinReserve(out, payload, o);
    std::memcpy(p, source.data(), payload);
    std::memcpy(p, &seq, sizeof seq);  // the consumer checks both ends
    std::memcpy(p + payload - sizeof seq, &seq, sizeof seq);
    out.Commit(shm::FrameKind::kCall, seq, payload);  // the consumer never sleeps here
    ++seq;
  };
  const uint64_t warmup =
      std::clamp<uint64_t>((uint64_t{64} << 20) / payload, 16, 100000) / (o.quick ? 10 : 1);
  while (seq < warmup) send();
  WaitUntilDrained(ctl, o);
  const uint64_t check_every = payload < 1024 ? 256 : 1;  // clock reads cost ~20 ns
  const auto budget_ns = static_cast<int64_t>(o.stream_seconds * 1e9);
  const int64_t t0 = NowNs();
  uint64_t sent = 0;
  do {
    send();
    ++sent;
  } while (sent % check_every != 0 || NowNs() - t0 < budget_ns);
  SpinReserve(out, 0, o);
  out.Commit(shm::FrameKind::kStop, seq, 0);
  WaitUntilDrained(ctl, o);
  return {payload, sent, static_cast<double>(NowNs() - t0) / 1e9};
}

// Copies every payload out of the ring (as the host copies replies) and checks its sequence
// number at both ends, until a kStop frame.
void ConsumeFrames(shm::RingReader& in, size_t payload, const Options& o) {
  std::vector<std::byte> copy(payload);
  for (uint64_t seq = 0;; ++seq) {
    const shm::FrameView f = NextFrame(in, /*futex=*/false, o);
    if (f.kind == shm::FrameKind::kStop) break;
    if (f.call_id != seq || f.payload.size() != payload) Die("stream: unexpected frame");
    std::memcpy(copy.data(), f.payload.data(), payload);
    uint64_t first, last;
    std::memcpy(&first, copy.data(), sizeof first);
    std::memcpy(&last, copy.data() + payload - sizeof last, sizeof last);
    if (first != seq || last != seq) Die("stream: payload corrupted");
    in.Pop();
  }
  in.Pop();
}

// ---- The two processes ----------------------------------------------------------------------

struct Row {
  std::string name;
  Latency latency;
};
struct Results {
  std::vector<Row> rows;  // in RowIndex order; rows[kFloor] is the floor
  std::vector<Throughput> streams;
};
enum RowIndex { kFloor, kRingSpin, kRingRaw, kRingAsleepRead, kRingAsleepPoll, kRawFutex, kUnix };

// The child's half of every line, in the parent's order. Never returns.
[[noreturn]] void RunChild(Setup& s, const Payload& call, const Payload& reply, const Options& o) {
  ChildFloor(*s.words, o);
  WorkerEnd worker{s.calls.RequestReader(), s.calls.ResponseWriter()};
  ChildRingRoundTrips(worker, call, reply, o, -1);
  ChildRingRoundTrips(worker, kRawPayload, kRawPayload, o, -1);
  ChildRingRoundTrips(worker, call, reply, o, s.read_bell.fd());
  ChildRingRoundTrips(worker, call, reply, o, s.poll_bell.fd());
  ChildFutex(*s.words, o);
  ChildFdPingPong(s.unix_child.get(), s.unix_child.get(), o);
  ChildFdPingPong(s.down_read.get(), s.up_write.get(), o);
  ChildFdPingPong(s.tcp_child.get(), s.tcp_child.get(), o);
  shm::RingReader in = s.stream.RequestReader();
  for (size_t payload : kStreamPayloads) ConsumeFrames(in, payload, o);
  _exit(0);
}

Results RunParent(Setup& s, const Payload& call, const Payload& reply, const Options& o) {
  Results r;
  auto add = [&](std::string name, Latency l) { r.rows.push_back({std::move(name), l}); };
  HostEnd host{s.calls.RequestWriter(), s.calls.ResponseReader(), &s.calls.header()->request};
  add("shm cache-line ping-pong, spinning (floor)", ParentFloor(*s.words, o));
  add("ring call, both spinning",
      ParentRingRoundTrips(host, call, reply, o, HostWait::kSpin, nullptr));
  add(absl::StrCat("ring, ", kRawBytes, " B raw frames (no capnp), spinning"),
      ParentRingRoundTrips(host, kRawPayload, kRawPayload, o, HostWait::kSpin, nullptr));
  add("ring call, asleep: futex / eventfd read()",
      ParentRingRoundTrips(host, call, reply, o, HostWait::kEventfdRead, &s.read_bell));
  add("ring call, asleep: futex / eventfd poll()+Drain()",
      ParentRingRoundTrips(host, call, reply, o, HostWait::kEventfdPollDrain, &s.poll_bell));
  add("raw futex ping-pong (wake + wait)", ParentFutex(*s.words, o));
  const std::string size = absl::StrCat(", ", kFdMessageBytes, " B");
  add("unix socketpair" + size, ParentFdPingPong(s.unix_parent.get(), s.unix_parent.get(), o));
  add("pipe pair" + size, ParentFdPingPong(s.down_write.get(), s.up_read.get(), o));
  add("tcp loopback, TCP_NODELAY" + size,
      ParentFdPingPong(s.tcp_parent.get(), s.tcp_parent.get(), o));
  add("(the ring call's Cap'n Proto work alone, no ring)", CapnpWorkAlone(call, reply, o));
  shm::RingWriter out = s.stream.RequestWriter();
  for (size_t payload : kStreamPayloads) {
    r.streams.push_back(ProduceFrames(out, s.stream.header()->request, payload, o));
  }
  return r;
}

// ---- Report ---------------------------------------------------------------------------------

std::string SizeName(size_t bytes) {
  if (bytes >= (size_t{1} << 20)) return absl::StrCat(bytes >> 20, " MiB");
  if (bytes >= 1024) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes, " B");
}

void PrintReport(const Results& r) {
  const Latency floor = r.rows[kFloor].latency;
  absl::PrintF("\n%-52s %9s %9s %9s %9s\n", "round trip", "p50 us", "p99 us", "p50/floor",
               "p99/floor");
  for (const Row& row : r.rows) {
    const Latency l = row.latency;
    absl::PrintF("%-52s %9.3f %9.3f %8.2fx %8.2fx\n", row.name, l.p50_ns / 1e3, l.p99_ns / 1e3,
                 static_cast<double>(l.p50_ns) / floor.p50_ns,
                 static_cast<double>(l.p99_ns) / floor.p99_ns);
  }
  absl::PrintF("\n%-52s %12s %12s %8s\n", "one-way ring throughput", "messages", "msgs/s", "GB/s");
  for (const Throughput& t : r.streams) {
    absl::PrintF("%-52s %12d %12.0f %8.2f\n", "payload " + SizeName(t.payload), t.messages,
                 t.msgs_per_s(), t.gb_per_s());
  }

  auto p50 = [&](int row) { return static_cast<double>(r.rows[row].latency.p50_ns); };
  auto target = [](const std::string& what, double value, const char* unit, bool met) {
    absl::PrintF("  %-46s %8.2f%-14s %s\n", what, value, unit, met ? "met" : "NOT MET");
  };
  const double spin = p50(kRingSpin) / p50(kFloor);
  const double vs_futex = p50(kRingAsleepRead) / p50(kRawFutex);
  const double vs_unix = p50(kRingAsleepRead) / p50(kUnix);
  const double rate = r.streams[0].msgs_per_s() / 1e6;
  absl::PrintF("\ntargets (on p50; \"asleep\" = the eventfd read() line)\n");
  target("ring call spinning <= 1.5x floor", spin, "x floor", spin <= 1.5);
  target("ring call asleep <= 1.1x raw futex", vs_futex, "x raw futex", vs_futex <= 1.1);
  target("ring call asleep <= 0.75x unix socketpair", vs_unix, "x socketpair", vs_unix <= 0.75);
  target("64 B one way >= 10 M msgs/s", rate, " M msgs/s", rate >= 10);
  absl::PrintF(
      "  (for information, the poll()+Drain() line, closest to the host's event loop: %.2fx raw "
      "futex, %.2fx socketpair)\n",
      p50(kRingAsleepPoll) / p50(kRawFutex), p50(kRingAsleepPoll) / p50(kUnix));
}

// ---- main -----------------------------------------------------------------------------------

Options ParseFlags(int argc, char** argv) {
  Options o;
  int64_t iterations = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--quick") {
      o.quick = true;
      continue;
    }
    if (a == "--unpinned") {
      o.unpinned = true;
      continue;
    }
    std::string value;
    if (a.starts_with("--iterations=")) {
      value = a.substr(a.find('=') + 1);
    } else if (a == "--iterations" && i + 1 < argc) {
      value = argv[++i];
    }
    char* end = nullptr;
    iterations = value.empty() ? 0 : std::strtoll(value.c_str(), &end, 10);
    if (iterations < 100 || *end != '\0') {
      const bool help = a == "--help" || a == "-h";
      std::fprintf(help ? stdout : stderr,
                   "usage: ring_latency [--quick] [--unpinned] [--iterations=N]\n"
                   "  --iterations=N  timed round trips per latency line (default 20000, >= 100)\n"
                   "  --quick         smoke run: 2000 round trips, 0.1 s per throughput line\n"
                   "  --unpinned      pin neither process to a CPU (the scheduler places them,\n"
                   "                  as it places mphost's host and workers)\n");
      std::exit(help ? 0 : 2);
    }
  }
  if (o.quick) {
    o.iterations = 2000;
    o.stream_seconds = 0.1;
  }
  if (iterations > 0) o.iterations = iterations;
  o.warmup = std::max<int64_t>(10, o.iterations / 10);
  return o;
}

std::vector<int> AllowedCpus() {
  cpu_set_t set;
  if (::sched_getaffinity(0, sizeof set, &set) != 0) DieErrno("sched_getaffinity");
  std::vector<int> cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  }
  return cpus;
}

void PinTo(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) DieErrno("sched_setaffinity");
}

// The parent spins or blocks on its child in every line: if the child dies, say so and stop
// rather than wait forever. The child exits 0 only after its last line.
void OnSigchld(int) {
  const int saved = errno;
  siginfo_t info{};
  if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid != 0 &&
      !(info.si_code == CLD_EXITED && info.si_status == 0)) {
    static constexpr char kMsg[] = "ring_latency: the child process died early\n";
    (void)!::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
    _exit(2);
  }
  errno = saved;
}

int Main(int argc, char** argv) {
  Options o = ParseFlags(argc, argv);
  const std::vector<int> cpus = AllowedCpus();
  const bool pinned = cpus.size() >= 2 && !o.unpinned;
  if (o.unpinned && cpus.size() >= 2) {
    absl::PrintF("ring_latency: nothing pinned (--unpinned), %d CPUs\n", static_cast<int>(cpus.size()));
  } else if (pinned) {
    PinTo(cpus[0]);
    absl::PrintF("ring_latency: parent pinned to CPU %d, child to CPU %d\n", cpus[0], cpus[1]);
  } else {
    o.yield_when_spinning = true;
    absl::PrintF(
        "ring_latency: ONE CPU, nothing pinned, spinners yield: the spinning lines "
        "measure the scheduler, not the ring\n");
  }
  Setup setup = MakeSetup();
  PrefaultRings(setup);
  const Payload call = CallPayload(), reply = ReplyPayload();
  const Latency clock = TimeRoundTrips(o, [](uint64_t) {});  // the clock reads alone
  absl::PrintF(
      "latency: %d timed round trips per line after %d warm-up, each timed with two "
      "clock_gettime(CLOCK_MONOTONIC) reads (p50 %d ns for the pair, included)\n"
      "ring call: %d B Cap'n Proto Call (GET /) -> %d B Reply (200), each built in place in "
      "Reserve()d space (FrameMessageBuilder), read in place with FlatArrayMessageReader; "
      "ring pages prefaulted in both processes (MADV_POPULATE_WRITE)\n"
      "asleep: child in shm::WaitForFrame(spin=0) on the futex; parent announces sleep, blocks "
      "on an eventfd doorbell\n"
      "throughput: %.1f s per size, both spinning, one Reserve/Commit per frame; producer "
      "memcpy's each payload in, consumer memcpy's it out and checks a sequence number at both "
      "ends; GB = 1e9 payload bytes\n",
      o.iterations, o.warmup, clock.p50_ns, call.bytes, reply.bytes, o.stream_seconds);
  std::fflush(stdout);  // or the child would inherit, and print, the buffered text

  struct sigaction sa {};
  sa.sa_handler = &OnSigchld;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  ::sigaction(SIGCHLD, &sa, nullptr);
  const pid_t parent = ::getpid();
  const pid_t child = ::fork();
  if (child < 0) DieErrno("fork");
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(3);
    if (pinned) PinTo(cpus[1]);
    PrefaultRings(setup);
    RunChild(setup, call, reply, o);
  }
  const Results results = RunParent(setup, call, reply, o);
  int status = 0;
  if (RetryEintr([&] { return ::waitpid(child, &status, 0); }) != child) DieErrno("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("the child process failed");
  PrintReport(results);
  return 0;
}

}  // namespace
}  // namespace mp::bench

int main(int argc, char** argv) { return mp::bench::Main(argc, argv); }
