// bench/heap_memory: the module heap is in RAM once, whatever the number of workers, and stays
// shared. Starts the real mphost with the dict module over a large synthetic heap and 1, 8 and
// 64 workers; prints total PSS, per-worker USS and privatized heap bytes right after start and
// after N random calls (random keys touch pages all over the heap).
//
//   build/bin/heap_memory [--heap-mb 1024] [--calls 100000] [--workers 1,8,64] [--quick]
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "host/accounting.h"

namespace mp::bench {
namespace {

using Clock = std::chrono::steady_clock;

std::string ExeDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  std::string path(buf, n > 0 ? static_cast<size_t>(n) : 0);
  return path.substr(0, path.rfind('/'));
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// A keep-alive HTTP/1.1 client on one connection. Returns the status, or 0 on failure.
class Client {
 public:
  explicit Client(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  int Get(const std::string& target) {
    if (fd_ < 0) return 0;
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: b\r\n\r\n";
    if (::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return 0;
    std::string in;
    char buf[16384];
    size_t need = std::string::npos, head = std::string::npos;
    while (need == std::string::npos || in.size() < need) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return 0;
      in.append(buf, static_cast<size_t>(n));
      if (head == std::string::npos && (head = in.find("\r\n\r\n")) != std::string::npos) {
        auto cl = in.find("Content-Length: ");
        if (cl == std::string::npos || cl > head) return 0;
        need = head + 4 + std::stoul(in.substr(cl + 16));
      }
    }
    return std::atoi(in.c_str() + 9);
  }

 private:
  int fd_ = -1;
};

struct Totals {
  uint64_t pss = 0, worker_uss = 0, privatized = 0, heap_bytes = 0;
  uint64_t host_pss = 0;  // the supervisor's own share (a fixed cost, not per worker)
  int workers = 0;
};

Totals Measure(pid_t host) {
  Totals t;
  std::ifstream children("/proc/" + std::to_string(host) + "/task/" + std::to_string(host) + "/children");
  std::vector<pid_t> pids = {host};
  pid_t p;
  while (children >> p) pids.push_back(p);
  for (pid_t pid : pids) {
    auto m = host::ReadMemoryUsage(pid, "/memfd:mp-heap.dict.");
    if (!m) continue;
    if (pid == host) {
      t.host_pss = m->pss_bytes;
      continue;
    }
    t.pss += m->pss_bytes;
    t.privatized += m->heap_privatized_bytes;
    std::ifstream cmd("/proc/" + std::to_string(pid) + "/cmdline");
    std::string c((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    // Workers are the zygote's clones: same cmdline, but no heap fd (checked via fd count).
    struct stat st;
    if (pid != host && c.find("mp-zygote") != std::string::npos &&
        ::stat(("/proc/" + std::to_string(pid) + "/fd/4").c_str(), &st) == 0) {
      t.heap_bytes = static_cast<uint64_t>(st.st_size);  // the zygote holds the sealed heap
    }
    if (pid != host && c.find("mp-zygote") != std::string::npos &&
        ::access(("/proc/" + std::to_string(pid) + "/fd/4").c_str(), F_OK) != 0) {
      t.worker_uss += m->uss_bytes;
      ++t.workers;
    }
  }
  return t;
}

double MiB(uint64_t b) { return b / 1048576.0; }

int Run(int workers, int heap_mb, int calls) {
  char tmpl[] = "/tmp/mphost-bench-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const int port = FreePort();
  std::ofstream(dir + "/mphost.json")
      << "{\"listen\":\"127.0.0.1:" << port << "\",\"control\":\"" << dir << "/c.sock\","
      << "\"modules\":[{\"name\":\"dict\",\"plugin\":\"" << ExeDir() << "/../modules/libdict.so\","
      << "\"workers\":" << workers << ",\"maxHeapMb\":" << heap_mb * 2 + 64
      << ",\"buildTimeoutMs\":600000,\"options\":{\"synthetic_mb\":\"" << heap_mb << "\"},"
      << "\"dataFiles\":{\"words\":\"/usr/share/dict/words\"}}]}";
  const pid_t host = ::fork();
  if (host == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    ::execl((ExeDir() + "/mphost").c_str(), "mphost", "--config", (dir + "/mphost.json").c_str(),
            nullptr);
    _exit(127);
  }
  const auto start = Clock::now();
  bool ready = false;
  while (!ready && Clock::now() - start < std::chrono::minutes(10)) {
    Client c(port);
    ready = c.Get("/readyz") == 200;
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double startup_s = std::chrono::duration<double>(Clock::now() - start).count();
  int rc = 0;
  if (!ready) {
    std::fprintf(stderr, "mphost did not become ready\n");
    rc = 1;
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const Totals before = Measure(host);
    // Random lookups and prefixes, from 4 connections.
    std::atomic<int> next{0}, failed{0};
    auto load = [&](int seed) {
      Client c(port);
      std::mt19937 rng(seed);
      for (int i; (i = next++) < calls;) {
        std::string key;
        const int len = 2 + static_cast<int>(rng() % 7);
        for (int k = 0; k < len; ++k) key += static_cast<char>('a' + rng() % 26);
        const int status = c.Get((i % 2 ? "/m/dict/lookup?w=" : "/m/dict/prefix?limit=5&q=") + key);
        if (status != 200 && status != 404) ++failed;
      }
    };
    const auto t0 = Clock::now();
    std::vector<std::thread> threads;
    for (int k = 0; k < 4; ++k) threads.emplace_back(load, k + 1);
    for (auto& t : threads) t.join();
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    // Settle: the host releases idle workers' ring pages on its next maintenance tick (1 s).
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    const Totals after = Measure(host);
    const double target = MiB(after.heap_bytes) + workers;
    std::printf("%7d %9.1f %9.1f %8.1f %11.1f %11.1f %10.0f %10.0f %9.1f %9.1f %8.0f %6d  %s\n",
                workers, startup_s, MiB(after.heap_bytes), MiB(after.host_pss), MiB(before.pss),
                MiB(after.pss),
                before.worker_uss / 1024.0 / std::max(1, before.workers),
                after.worker_uss / 1024.0 / std::max(1, after.workers), MiB(before.privatized),
                MiB(after.privatized), calls / secs, failed.load(),
                MiB(after.pss) <= target ? "met" : "NOT met");
  }
  ::kill(host, SIGTERM);
  ::waitpid(host, nullptr, 0);
  int unused = ::system(("rm -rf '" + dir + "'").c_str());
  (void)unused;
  return rc;
}

int Main(int argc, char** argv) {
  int heap_mb = 1024, calls = 100000;
  std::vector<int> counts = {1, 8, 64};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--quick") {
      heap_mb = 32;
      calls = 5000;
      counts = {1, 8};
    } else if (a == "--heap-mb" && i + 1 < argc) {
      heap_mb = std::atoi(argv[++i]);
    } else if (a == "--calls" && i + 1 < argc) {
      calls = std::atoi(argv[++i]);
    } else if (a == "--workers" && i + 1 < argc) {
      counts.clear();
      std::stringstream ss(argv[++i]);
      for (std::string n; std::getline(ss, n, ',');) counts.push_back(std::atoi(n.c_str()));
    }
  }
  std::printf("bench/heap_memory: dict over /usr/share/dict/words + %d MiB of synthetic words; "
              "%d random /lookup and /prefix calls over 4 keep-alive connections\n",
              heap_mb, calls);
  std::printf("USS per worker; privatized: heap pages copied by writes (smaps Anonymous)\n");
  std::printf("PSS columns: the module's processes (zygote + workers); the supervisor's own PSS "
              "is shown apart (a fixed cost)\n");
  std::printf("target: module PSS after the calls <= heap + 1 MiB per worker, and no growth "
              "(privatized stays 0)\n\n");
  std::printf("%7s %9s %9s %8s %11s %11s %10s %10s %9s %9s %8s %6s  %s\n", "workers", "start s",
              "heap", "host", "PSS start", "PSS after", "USS/w st", "USS/w aft", "priv st",
              "priv aft", "calls/s", "failed", "target");
  std::printf("%7s %9s %9s %8s %11s %11s %10s %10s %9s %9s %8s %6s\n", "", "", "MiB", "MiB", "MiB",
              "MiB", "KiB", "KiB", "MiB", "MiB", "", "");
  int rc = 0;
  for (int w : counts) rc |= Run(w, heap_mb, calls);
  return rc;
}

}  // namespace
}  // namespace mp::bench

int main(int argc, char** argv) { return mp::bench::Main(argc, argv); }
