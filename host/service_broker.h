// The services the host brokers for modules' handlers (docs/services.md). A worker's request
// arrives through its ring (WorkerChannel); the broker checks it against the module's grant,
// performs it on the event loop — a Redis command on the grant's connection pool, or a call
// through the target module's pool — and answers. Every refusal names its rule and is counted.
// Not thread-safe; the supervisor's loop thread only.
#pragma once

#include <kj/async-unix.h>
#include <kj/timer.h>

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "host/call.h"
#include "host/config.h"
#include "host/metrics.h"
#include "host/redis_client.h"
#include "host/service_codec.h"
#include "host/service_rules.h"
#include "schemas/control.capnp.h"

namespace mp::host {

// One call's use of services so far, against its module's serviceLimits.
struct ServiceUsage {
  uint32_t requests = 0;
  uint64_t bytes_out = 0;
  uint64_t bytes_in = 0;
};

// Who asks: the module, how deep its call is nested in module calls (0: from HTTP), and how
// long its deadline leaves.
struct ServiceCaller {
  std::string module;
  uint32_t depth = 0;
  kj::Duration time_left = 0 * kj::MILLISECONDS;
};

class ServiceBroker {
 public:
  // Runs a call on a module, as the supervisor does for HTTP.
  using ModuleCaller = std::function<kj::Promise<CallResult>(absl::string_view, CallRequest)>;

  ServiceBroker(kj::UnixEventPort& events, kj::Timer& timer, ModuleCaller call_module);
  ~ServiceBroker();

  // The grants of every module. Redis pools whose grant is unchanged are kept (and their
  // connections); others are made anew, and those of grants gone are closed.
  void Configure(const std::vector<ModuleConfig>& modules);

  // Whether `module` was granted any service: its workers then read calls from a private copy.
  bool HasServices(absl::string_view module) const;

  // Checks the per-call limits for a new request, and counts it in `usage`; then the grant's
  // rules (the service, its kind, the Redis command and its keys, the module-call depth); then
  // takes a token of the module's rate (maxRequestsPerSecond). A module past its rate
  // waits for its token (`wait`) rather than being refused, so a flood is slowed to the rate
  // and the waiting worker sleeps; it is refused (max_rate) only if its token would come after
  // its call's deadline. A refusal is counted in metrics.
  struct Admission {
    std::optional<Refusal> refusal;
    kj::Duration wait = 0 * kj::NANOSECONDS;  // before Perform; counts against the deadline
  };
  Admission Admit(const ServiceCaller& caller, const ServiceRequestData& request,
                  ServiceUsage& usage);
  // Checks an answer's size against maxBytesInKb; a refusal replaces the answer.
  void AdmitAnswer(const ServiceCaller& caller, absl::string_view service, ServiceUsage& usage,
                   ServiceAnswer& answer);

  // Performs an admitted request. `grant_checked_this_turn`: Admit passed it on this turn of the
  // loop, so nothing can have changed; otherwise (it waited for its turn) a config reload may
  // have changed its grant meanwhile, and the grant's rules are checked again. Always resolves (never throws): a refusal, a failure or a
  // timeout is an answer naming it. Dropping the promise cancels the request (a Redis reply
  // still coming is discarded; a module call's fulfiller goes away).
  kj::Promise<ServiceAnswer> Perform(const ServiceCaller& caller, ServiceRequestData request,
                                     bool grant_checked_this_turn);

  // Counts `answer` (and how long it took) for `module`'s service.
  void Record(absl::string_view module, absl::string_view service, const ServiceAnswer& answer,
              double seconds);

  // Fills `module`'s ModuleInfo.services.
  void FillInfo(absl::string_view module, control::ModuleInfo::Builder info) const;
  // Service requests answered for `module`, every service together.
  uint64_t Requests(absl::string_view module) const;

 private:
  struct Stats {
    std::array<uint64_t, 4> outcomes{};  // by ServiceAnswer::Outcome
    std::map<ServiceRule, uint64_t> refused;
    std::array<uint64_t, kLatencyBucketCount> latency{};
    double latency_sum_seconds = 0;
  };
  struct Grant {
    ServiceConfig config;
    std::shared_ptr<RedisPool> pool;  // is_redis; shared with requests in flight
    Stats stats;
  };
  struct ModuleGrants {
    ServiceLimits limits;
    // maxRequestsPerSecond: a bucket of one second's worth, refilled as time passes. Below
    // zero, tokens promised to requests waiting for them (first come, first served).
    double tokens = 0;
    kj::TimePoint refilled = kj::origin<kj::TimePoint>();
    std::map<std::string, Grant, std::less<>> services;
  };

  // Takes a token of the module's rate bucket (maxRequestsPerSecond): how long until it is
  // due, or nullopt (and nothing taken) if that is `patience` or more.
  std::optional<kj::Duration> TakeToken(ModuleGrants& grants, kj::Duration patience);
  Grant* FindGrant(absl::string_view module, absl::string_view service);
  // The grant's rules for `request`; on success `*grant` is its grant.
  std::optional<Refusal> CheckGrant(const ServiceCaller& caller, const ServiceRequestData& request,
                                    Grant** grant);
  const ModuleGrants* FindModule(absl::string_view module) const;
  void CountRefusal(absl::string_view module, absl::string_view service, ServiceRule rule);
  kj::Promise<ServiceAnswer> Redis(const Grant& grant, std::vector<std::string> argv,
                                   kj::Duration limit);
  kj::Promise<ServiceAnswer> CallModule(const Grant& grant, const ServiceCaller& caller,
                                        CallRequest request, kj::Duration limit);

  kj::UnixEventPort& events_;
  kj::Timer& timer_;
  ModuleCaller call_module_;
  std::map<std::string, ModuleGrants, std::less<>> modules_;
  // Requests of a service since removed (its grant gone by a config reload) stay counted here.
  std::map<std::string, uint64_t, std::less<>> gone_requests_;
};

}  // namespace mp::host
