#include "host/service_broker.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "host/log.h"

namespace mp::host {
namespace {

uint32_t Millis(kj::Duration d) {
  const int64_t ms = d / kj::MILLISECONDS;
  return ms <= 0 ? 0 : static_cast<uint32_t>(std::min<int64_t>(ms, UINT32_MAX));
}

}  // namespace

ServiceBroker::ServiceBroker(kj::UnixEventPort& events, kj::Timer& timer, ModuleCaller call_module)
    : events_(events), timer_(timer), call_module_(std::move(call_module)) {}

ServiceBroker::~ServiceBroker() = default;

void ServiceBroker::Configure(const std::vector<ModuleConfig>& modules) {
  std::map<std::string, ModuleGrants, std::less<>> next;
  for (const ModuleConfig& m : modules) {
    ModuleGrants& grants = next[m.name];
    grants.limits = m.service_limits;
    grants.tokens = m.service_limits.max_requests_per_second;
    grants.refilled = timer_.now();
    // A module still limited keeps its bucket across a reload, with the promises made to
    // requests waiting for their turn (at most the new rate's worth in hand).
    if (const ModuleGrants* old = FindModule(m.name);
        old != nullptr && old->limits.max_requests_per_second != 0 &&
        grants.limits.max_requests_per_second != 0) {
      grants.tokens = std::min<double>(old->tokens, grants.limits.max_requests_per_second);
      grants.refilled = old->refilled;
    }
    for (const ServiceConfig& sc : m.services) {
      Grant& g = grants.services[sc.name];
      g.config = sc;
      // Kept as it was (its counters, and its pool if the grant is unchanged).
      if (Grant* old = FindGrant(m.name, sc.name)) {
        g.stats = old->stats;
        if (old->config == sc) g.pool = old->pool;
      }
      if (sc.is_redis && !g.pool) {
        RedisPoolOptions options;
        options.host = sc.redis.host;
        options.port = sc.redis.port;
        options.unix_path = sc.redis.unix_path;
        options.user = sc.redis.user;
        options.password = sc.redis.password;
        options.connections = sc.redis.connections;
        options.label = absl::StrCat("module '", m.name, "' service '", sc.name, "'");
        g.pool = std::make_shared<RedisPool>(events_, timer_, std::move(options));
      }
    }
  }
  for (const auto& [module, grants] : modules_) {
    for (const auto& [service, grant] : grants.services) {
      if (next.count(module) == 0 || next[module].services.count(service) == 0) {
        uint64_t n = 0;
        for (uint64_t c : grant.stats.outcomes) n += c;
        gone_requests_[module] += n;
      }
    }
  }
  modules_ = std::move(next);
}

bool ServiceBroker::HasServices(absl::string_view module) const {
  const ModuleGrants* m = FindModule(module);
  if (m == nullptr) return false;
  return std::any_of(m->services.begin(), m->services.end(),
                     [](const auto& entry) { return !entry.first.empty(); });
}

const ServiceBroker::ModuleGrants* ServiceBroker::FindModule(absl::string_view module) const {
  auto it = modules_.find(module);
  return it == modules_.end() ? nullptr : &it->second;
}

ServiceBroker::Grant* ServiceBroker::FindGrant(absl::string_view module,
                                               absl::string_view service) {
  auto m = modules_.find(module);
  if (m == modules_.end()) return nullptr;
  auto g = m->second.services.find(service);
  return g == m->second.services.end() ? nullptr : &g->second;
}

void ServiceBroker::CountRefusal(absl::string_view module, absl::string_view service,
                                 ServiceRule rule) {
  if (Grant* g = FindGrant(module, service)) ++g->stats.refused[rule];
  // A service the module was not granted has no series of its own: counted under "".
  else if (auto m = modules_.find(module); m != modules_.end()) {
    ++m->second.services[""].stats.refused[rule];
  }
}

ServiceBroker::Admission ServiceBroker::Admit(const ServiceCaller& caller,
                                             const ServiceRequestData& request,
                                             ServiceUsage& usage) {
  Admission admission;
  auto found = modules_.find(caller.module);
  if (found == modules_.end()) {
    admission.refusal = Refusal{ServiceRule::kUnknownService, "this module has no services"};
    return admission;
  }
  ModuleGrants* m = &found->second;
  const ServiceLimits& limits = m->limits;
  Grant* grant = nullptr;
  std::optional<kj::Duration> wait;
  if (usage.requests + 1 > limits.max_requests) {
    admission.refusal = Refusal{ServiceRule::kMaxRequests,
                                absl::StrCat("the call has made its ", limits.max_requests,
                                             " service requests (serviceLimits.maxRequests)")};
  } else if (usage.bytes_out + request.bytes > limits.max_bytes_out) {
    admission.refusal = Refusal{
        ServiceRule::kMaxBytesOut,
        absl::StrCat("this request of ", request.bytes, " bytes would bring the call's to ",
                     usage.bytes_out + request.bytes, ", past serviceLimits.maxBytesOutKb (",
                     limits.max_bytes_out >> 10, " KiB)")};
  } else {
    // Past the per-call limits, a request counts against them, refused or not: a handler
    // cannot make the host check refusals without end.
    ++usage.requests;
    usage.bytes_out += request.bytes;
    // The grant's rules before the rate: a request refused anyway spends no token and does
    // not wait for one.
    if (auto refusal = CheckGrant(caller, request, &grant)) {
      admission.refusal = std::move(refusal);
    } else if (wait = TakeToken(*m, caller.time_left); !wait) {
      admission.refusal = Refusal{
          ServiceRule::kMaxRate,
          absl::StrCat("the module's workers are past their ", limits.max_requests_per_second,
                       " service requests a second (serviceLimits.maxRequestsPerSecond), and "
                       "this request's turn would come after its call's deadline (",
                       Millis(caller.time_left), " ms left)")};
    }
  }
  if (admission.refusal) {
    CountRefusal(caller.module, request.service, admission.refusal->rule);
    return admission;
  }
  admission.wait = *wait;
  return admission;
}

std::optional<kj::Duration> ServiceBroker::TakeToken(ModuleGrants& grants,
                                                     kj::Duration patience) {
  const uint32_t rate = grants.limits.max_requests_per_second;
  if (rate == 0) return 0 * kj::NANOSECONDS;
  const kj::TimePoint now = timer_.now();
  const double seconds = (now - grants.refilled) / kj::NANOSECONDS / 1e9;
  grants.refilled = now;
  grants.tokens = std::min<double>(rate, grants.tokens + seconds * rate);
  if (grants.tokens >= 1) {
    grants.tokens -= 1;
    return 0 * kj::NANOSECONDS;
  }
  // Due when the bucket, refilling, covers this token and those promised before it.
  const kj::Duration due =
      static_cast<int64_t>((1 - grants.tokens) / rate * 1e9) * kj::NANOSECONDS;
  if (due >= patience) return std::nullopt;
  grants.tokens -= 1;
  return due;
}

void ServiceBroker::AdmitAnswer(const ServiceCaller& caller, absl::string_view service,
                                ServiceUsage& usage, ServiceAnswer& answer) {
  const ModuleGrants* m = FindModule(caller.module);
  if (m == nullptr) return;
  const uint64_t bytes = AnswerBytes(answer);
  if (usage.bytes_in + bytes > m->limits.max_bytes_in) {
    CountRefusal(caller.module, service, ServiceRule::kMaxBytesIn);
    answer = FailedAnswer(
        ServiceAnswer::Outcome::kRefused,
        absl::StrCat("max_bytes_in: the answer of ", bytes, " bytes would bring the call's to ",
                     usage.bytes_in + bytes, ", past serviceLimits.maxBytesInKb (",
                     m->limits.max_bytes_in >> 10, " KiB)"));
    return;
  }
  usage.bytes_in += bytes;
}

std::optional<Refusal> ServiceBroker::CheckGrant(const ServiceCaller& caller,
                                                 const ServiceRequestData& request,
                                                 Grant** grant_out) {
  Grant* grant = FindGrant(caller.module, request.service);
  if (grant == nullptr) {
    return Refusal{ServiceRule::kUnknownService,
                   absl::StrCat("module '", caller.module, "' was granted no service named '",
                                request.service, "'")};
  }
  if (request.is_redis != grant->config.is_redis) {
    return Refusal{ServiceRule::kWrongKind,
                   absl::StrCat("service '", request.service, "' is ",
                                grant->config.is_redis ? "a Redis service, not a module"
                                                       : "a module, not a Redis service")};
  }
  if (request.is_redis) {
    if (auto refusal = CheckRedisCommand(grant->config.redis, request.argv)) return refusal;
  } else {
    const uint32_t max_depth = modules_.find(caller.module)->second.limits.max_depth;
    if (caller.depth + 1 > max_depth) {
      return Refusal{ServiceRule::kMaxDepth,
                     absl::StrCat("the call is already ", caller.depth,
                                  " module calls deep (serviceLimits.maxDepth ", max_depth, ")")};
    }
  }
  *grant_out = grant;
  return std::nullopt;
}

kj::Promise<ServiceAnswer> ServiceBroker::Perform(const ServiceCaller& caller,
                                                  ServiceRequestData request,
                                                  bool grant_checked_this_turn) {
  Grant* grant = grant_checked_this_turn ? FindGrant(caller.module, request.service) : nullptr;
  std::optional<Refusal> refusal;
  if (grant == nullptr) refusal = CheckGrant(caller, request, &grant);
  if (refusal) {
    CountRefusal(caller.module, request.service, refusal->rule);
    return FailedAnswer(ServiceAnswer::Outcome::kRefused,
                        absl::StrCat(ServiceRuleName(refusal->rule), ": ", refusal->message));
  }
  const kj::Duration limit =
      std::min(grant->config.timeout_ms * kj::MILLISECONDS, caller.time_left);
  if (limit <= 0 * kj::MILLISECONDS) {
    return FailedAnswer(ServiceAnswer::Outcome::kTimeout,
                        "timeout: the call's deadline has passed");
  }
  if (request.is_redis) return Redis(*grant, std::move(request.argv), limit);
  return CallModule(*grant, caller, std::move(request.call), limit);
}

kj::Promise<ServiceAnswer> ServiceBroker::Redis(const Grant& grant, std::vector<std::string> argv,
                                                kj::Duration limit) {
  std::shared_ptr<RedisPool> pool = grant.pool;
  const std::string address = grant.config.redis.Address();
  const uint32_t ms = Millis(limit);
  auto command = pool->Command(std::move(argv)).then([](absl::StatusOr<RedisValue> v) {
    if (!v.ok()) return FailedAnswer(ServiceAnswer::Outcome::kFailed, std::string(v.status().message()));
    ServiceAnswer a;
    a.is_redis = true;
    a.redis = *std::move(v);
    return a;
  });
  auto timeout = timer_.afterDelay(limit).then([address, ms]() {
    return FailedAnswer(ServiceAnswer::Outcome::kTimeout,
                        absl::StrCat("timeout: redis ", address, " did not answer within ", ms,
                                     " ms"));
  });
  return command.exclusiveJoin(kj::mv(timeout))
      .attach(kj::defer([pool = std::move(pool)]() {}));
}

kj::Promise<ServiceAnswer> ServiceBroker::CallModule(const Grant& grant,
                                                     const ServiceCaller& caller,
                                                     CallRequest request, kj::Duration limit) {
  request.depth = caller.depth + 1;
  request.timeout_ms = std::max<uint32_t>(1, Millis(limit));
  const std::string target = grant.config.module;
  const uint32_t ms = Millis(limit);
  // Whatever the status (the module's, or the host's 502, 503 or 504 for it), an answer: the
  // handler sees it and decides. Time waiting in the target's queue counts too.
  auto call = call_module_(target, std::move(request)).then([](CallResult r) {
    ServiceAnswer a;
    a.call = std::move(r);
    return a;
  });
  auto timeout = timer_.afterDelay(limit).then([target, ms]() {
    return FailedAnswer(ServiceAnswer::Outcome::kTimeout,
                        absl::StrCat("timeout: module '", target, "' did not answer within ", ms,
                                     " ms"));
  });
  return call.exclusiveJoin(kj::mv(timeout));
}

void ServiceBroker::Record(absl::string_view module, absl::string_view service,
                           const ServiceAnswer& answer, double seconds) {
  Grant* g = FindGrant(module, service);
  if (g == nullptr) return;
  ++g->stats.outcomes[static_cast<size_t>(answer.outcome)];
  size_t bucket = 0;
  while (bucket < kLatencyBucketCount - 1 && seconds > kLatencyBuckets[bucket]) ++bucket;
  ++g->stats.latency[bucket];
  g->stats.latency_sum_seconds += seconds;
}

uint64_t ServiceBroker::Requests(absl::string_view module) const {
  uint64_t n = 0;
  if (auto it = gone_requests_.find(module); it != gone_requests_.end()) n = it->second;
  if (const ModuleGrants* m = FindModule(module)) {
    for (const auto& [name, grant] : m->services) {
      for (uint64_t c : grant.stats.outcomes) n += c;
    }
  }
  return n;
}

void ServiceBroker::FillInfo(absl::string_view module, control::ModuleInfo::Builder info) const {
  const ModuleGrants* m = FindModule(module);
  info.setServiceRequests(Requests(module));
  if (m == nullptr) return;
  auto list = info.initServices(static_cast<unsigned>(m->services.size()));
  unsigned i = 0;
  for (const auto& [name, grant] : m->services) {
    auto s = list[i++];
    s.setName(name);
    if (name.empty()) {
      s.setKind("none");  // refusals of services the module was never granted
    } else if (grant.config.is_redis) {
      s.setKind("redis");
      s.setTarget(grant.config.redis.Address());
      if (grant.pool) {
        s.setConnected(static_cast<uint32_t>(grant.pool->connected()));
        s.setReconnects(grant.pool->reconnects());
        s.setConnectFailures(grant.pool->connect_failures());
      }
    } else {
      s.setKind("module");
      s.setTarget(grant.config.module);
    }
    const ServiceAnswer::Outcome outcomes[] = {
        ServiceAnswer::Outcome::kOk, ServiceAnswer::Outcome::kRefused,
        ServiceAnswer::Outcome::kFailed, ServiceAnswer::Outcome::kTimeout};
    auto results = s.initResults(4);
    for (unsigned k = 0; k < 4; ++k) {
      results[k].setCause(OutcomeName(outcomes[k]));
      results[k].setCount(grant.stats.outcomes[k]);
    }
    const size_t rule_count = sizeof(kAllServiceRules) / sizeof(kAllServiceRules[0]);
    auto refused = s.initRefusedByRule(static_cast<unsigned>(rule_count));
    for (unsigned k = 0; k < rule_count; ++k) {
      refused[k].setCause(ServiceRuleName(kAllServiceRules[k]));
      auto it = grant.stats.refused.find(kAllServiceRules[k]);
      refused[k].setCount(it == grant.stats.refused.end() ? 0 : it->second);
    }
    auto bounds = s.initLatencyBounds(kLatencyBucketCount - 1);
    for (unsigned k = 0; k + 1 < kLatencyBucketCount; ++k) bounds.set(k, kLatencyBuckets[k]);
    auto counts = s.initLatencyCounts(kLatencyBucketCount);
    uint64_t cumulative = 0;
    for (unsigned k = 0; k < kLatencyBucketCount; ++k) {
      cumulative += grant.stats.latency[k];
      counts.set(k, cumulative);
    }
    s.setLatencySumSeconds(grant.stats.latency_sum_seconds);
  }
}

}  // namespace mp::host
