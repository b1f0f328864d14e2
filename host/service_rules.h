// What a module may ask of a service, decided by the host alone: which Redis commands can be
// brokered at all (those whose key arguments the host knows where to find), and whether one
// command stays inside the module's grant (a listed command, every key under its prefix).
// Pure functions; the broker (service_broker.h) applies them to every request.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "host/config.h"

namespace mp::host {

// Where a command's keys are, as Redis's COMMAND INFO gives them: arguments first_key,
// first_key + step, ... up to last_key (negative: counted from the end, -1 the last).
// A command with first_key 0 has no keys (PING).
struct RedisKeySpec {
  const char* name;
  int min_args;  // argv size, command name included; negative: at least -min_args
  int first_key;
  int last_key;
  int step;
};

// The spec of `command` (any case), or nullptr if the host cannot broker it: its keys are not
// at fixed positions (EVAL, SORT ... STORE), or it reaches beyond one module's keys (KEYS,
// SCAN, FLUSHALL, CONFIG, ...).
const RedisKeySpec* FindRedisCommand(absl::string_view command);

// Every command FindRedisCommand knows, for error messages and the docs.
std::vector<std::string> BrokeredRedisCommands();

// Why a service request was refused or failed: a label of mphost_service_refused_total and
// the start of the message the handler gets.
enum class ServiceRule : uint8_t {
  kUnknownService,     // the module was granted no service of that name
  kWrongKind,          // a Redis command to a module service, or the other way round
  kCommandNotAllowed,  // not in the grant's "commands"
  kArguments,          // the wrong number of arguments for the command
  kKeyPrefix,          // a key outside the grant's keyPrefix
  kMaxRequests,        // serviceLimits.maxRequests
  kMaxBytesOut,        // serviceLimits.maxBytesOutKb
  kMaxBytesIn,         // serviceLimits.maxBytesInKb
  kMaxDepth,           // serviceLimits.maxDepth
  kMaxRate,            // serviceLimits.maxRequestsPerSecond
};
inline constexpr ServiceRule kAllServiceRules[] = {
    ServiceRule::kUnknownService, ServiceRule::kWrongKind,   ServiceRule::kCommandNotAllowed,
    ServiceRule::kArguments,      ServiceRule::kKeyPrefix,   ServiceRule::kMaxRequests,
    ServiceRule::kMaxBytesOut,    ServiceRule::kMaxBytesIn,  ServiceRule::kMaxDepth,
    ServiceRule::kMaxRate};
// "unknown_service", "wrong_kind", "command_not_allowed", "arguments", "key_prefix",
// "max_requests", "max_bytes_out", "max_bytes_in", "max_depth", "max_rate".
const char* ServiceRuleName(ServiceRule rule);

// A refusal: the rule, and a message for the handler that names it and the offending part.
struct Refusal {
  ServiceRule rule;
  std::string message;
};

// Checks `argv` (the command name first) against `grant`. nullopt if allowed.
std::optional<Refusal> CheckRedisCommand(const RedisServiceConfig& grant,
                                         const std::vector<std::string>& argv);

// Validates a grant's command list for the config: each one brokerable. Upper-cases them.
absl::Status NormalizeRedisCommands(std::vector<std::string>* commands);

}  // namespace mp::host
