// bench/services/redis_direct: the baseline of bench/services/run: `n` PINGs from a plain
// hiredis client in a normal process, each timed on its own. Prints "p50_ns p99_ns".
//
//   redis_direct PORT N
#include <hiredis/hiredis.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {
long long NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: redis_direct PORT N\n");
    return 2;
  }
  redisContext* c = redisConnect("127.0.0.1", std::atoi(argv[1]));
  if (c == nullptr || c->err) {
    std::fprintf(stderr, "redis_direct: cannot connect: %s\n", c ? c->errstr : "no memory");
    return 1;
  }
  const int n = std::atoi(argv[2]);
  std::vector<long long> ns;
  for (int i = 0; i < n + n / 10; ++i) {  // the first tenth warms up
    const long long t0 = NowNs();
    auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
    const long long t1 = NowNs();
    if (r == nullptr) {
      std::fprintf(stderr, "redis_direct: %s\n", c->errstr);
      return 1;
    }
    freeReplyObject(r);
    if (i >= n / 10) ns.push_back(t1 - t0);
  }
  std::sort(ns.begin(), ns.end());
  std::printf("%lld %lld\n", ns[ns.size() / 2], ns[ns.size() * 99 / 100]);
  redisFree(c);
  return 0;
}
