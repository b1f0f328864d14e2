#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <array>
#include <cstring>

#include "bench/ring_latency_common.h"

namespace mp::bench {

std::pair<UniqueFd, UniqueFd> TcpLoopbackPair() {
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) DieErrno("socket(AF_INET)");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listener.get(), 1) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    DieErrno("listen(127.0.0.1:0)");
  }
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!client || ::connect(client.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    DieErrno("connect(127.0.0.1)");
  }
  UniqueFd server(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!server) DieErrno("accept4");
  const int one = 1;
  for (int fd : {client.get(), server.get()}) {
    if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
      DieErrno("setsockopt(TCP_NODELAY)");
    }
  }
  return {std::move(client), std::move(server)};
}


// ---- Line 1: shared-memory cache-line ping-pong (the floor) ---------------------------------

Latency ParentFloor(SharedWords& w, const Options& o) {
  return TimeRoundTrips(o, [&](uint64_t k) {
    w.ping.store(k, std::memory_order_release);
    while (w.pong.load(std::memory_order_acquire) != k) SpinPause(o);
  });
}
void ChildFloor(SharedWords& w, const Options& o) {
  for (uint64_t k = 1; k <= Rounds(o); ++k) {
    while (w.ping.load(std::memory_order_acquire) != k) SpinPause(o);
    w.pong.store(k, std::memory_order_release);
  }
}

// ---- Raw futex ping-pong --------------------------------------------------------------------

Latency ParentFutex(SharedWords& w, const Options& o) {
  return TimeRoundTrips(o, [&](uint64_t k) {
    const auto want = static_cast<uint32_t>(k);
    w.futex_down.store(want, std::memory_order_release);
    FutexWake(&w.futex_down);
    uint32_t v;
    while ((v = w.futex_up.load(std::memory_order_acquire)) != want) FutexWait(&w.futex_up, v);
  });
}
void ChildFutex(SharedWords& w, const Options& o) {
  for (uint64_t k = 1; k <= Rounds(o); ++k) {
    const auto want = static_cast<uint32_t>(k);
    uint32_t v;
    while ((v = w.futex_down.load(std::memory_order_acquire)) != want) {
      FutexWait(&w.futex_down, v);
    }
    w.futex_up.store(want, std::memory_order_release);
    FutexWake(&w.futex_up);
  }
}

// ---- Socketpair, pipe, TCP loopback: kFdMessageBytes each way, blocking read/write ---------

Latency ParentFdPingPong(int out_fd, int in_fd, const Options& o) {
  std::array<std::byte, kFdMessageBytes> buf{};
  return TimeRoundTrips(o, [&](uint64_t k) {
    std::memcpy(buf.data(), &k, sizeof k);
    Transfer(out_fd, buf.data(), buf.size(), /*write=*/true);
    Transfer(in_fd, buf.data(), buf.size(), /*write=*/false);
    uint64_t echo;
    std::memcpy(&echo, buf.data(), sizeof echo);
    if (echo != k) Die("fd ping-pong: wrong echo");
  });
}
void ChildFdPingPong(int in_fd, int out_fd, const Options& o) {
  std::array<std::byte, kFdMessageBytes> buf{};
  for (uint64_t k = 1; k <= Rounds(o); ++k) {
    Transfer(in_fd, buf.data(), buf.size(), /*write=*/false);
    Transfer(out_fd, buf.data(), buf.size(), /*write=*/true);
  }
}

}  // namespace mp::bench
