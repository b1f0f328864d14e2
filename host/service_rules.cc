#include "host/service_rules.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mp::host {
namespace {

// Commands over one module's keys, with fixed key positions (Redis 7 COMMAND INFO). Anything
// else is refused at config load: scripts and commands with computed key positions could
// reach any key, and server-wide commands reach every module's.
constexpr RedisKeySpec kCommands[] = {
    {"APPEND", 3, 1, 1, 1},       {"DECR", 2, 1, 1, 1},        {"DECRBY", 3, 1, 1, 1},
    {"DEL", -2, 1, -1, 1},        {"EXISTS", -2, 1, -1, 1},    {"EXPIRE", -3, 1, 1, 1},
    {"EXPIREAT", -3, 1, 1, 1},    {"GET", 2, 1, 1, 1},         {"GETDEL", 2, 1, 1, 1},
    {"GETEX", -2, 1, 1, 1},       {"GETRANGE", 4, 1, 1, 1},    {"HDEL", -3, 1, 1, 1},
    {"HEXISTS", 3, 1, 1, 1},      {"HGET", 3, 1, 1, 1},        {"HGETALL", 2, 1, 1, 1},
    {"HINCRBY", 4, 1, 1, 1},      {"HKEYS", 2, 1, 1, 1},       {"HLEN", 2, 1, 1, 1},
    {"HMGET", -3, 1, 1, 1},       {"HSET", -4, 1, 1, 1},       {"HVALS", 2, 1, 1, 1},
    {"INCR", 2, 1, 1, 1},         {"INCRBY", 3, 1, 1, 1},      {"INCRBYFLOAT", 3, 1, 1, 1},
    {"LINDEX", 3, 1, 1, 1},       {"LLEN", 2, 1, 1, 1},        {"LPOP", -2, 1, 1, 1},
    {"LPUSH", -3, 1, 1, 1},       {"LRANGE", 4, 1, 1, 1},      {"LTRIM", 4, 1, 1, 1},
    {"MGET", -2, 1, -1, 1},       {"MSET", -3, 1, -1, 2},      {"PERSIST", 2, 1, 1, 1},
    {"PEXPIRE", -3, 1, 1, 1},     {"PFADD", -2, 1, 1, 1},      {"PFCOUNT", -2, 1, -1, 1},
    {"PING", -1, 0, 0, 0},        {"PSETEX", 4, 1, 1, 1},      {"PTTL", 2, 1, 1, 1},
    {"RPOP", -2, 1, 1, 1},        {"RPUSH", -3, 1, 1, 1},      {"SADD", -3, 1, 1, 1},
    {"SCARD", 2, 1, 1, 1},        {"SET", -3, 1, 1, 1},        {"SETEX", 4, 1, 1, 1},
    {"SETNX", 3, 1, 1, 1},        {"SISMEMBER", 3, 1, 1, 1},   {"SMEMBERS", 2, 1, 1, 1},
    {"SREM", -3, 1, 1, 1},        {"STRLEN", 2, 1, 1, 1},      {"TTL", 2, 1, 1, 1},
    {"TYPE", 2, 1, 1, 1},         {"UNLINK", -2, 1, -1, 1},    {"ZADD", -4, 1, 1, 1},
    {"ZCARD", 2, 1, 1, 1},        {"ZINCRBY", 4, 1, 1, 1},     {"ZRANGE", -4, 1, 1, 1},
    {"ZRANK", -3, 1, 1, 1},       {"ZREM", -3, 1, 1, 1},       {"ZSCORE", 3, 1, 1, 1},
};

bool EqualsUpper(absl::string_view a, const char* upper) {
  const size_t n = std::char_traits<char>::length(upper);
  if (a.size() != n) return false;
  for (size_t i = 0; i < n; ++i) {
    if (absl::ascii_toupper(static_cast<unsigned char>(a[i])) != upper[i]) return false;
  }
  return true;
}

// Printable for a message: at most 64 bytes, control bytes escaped.
std::string Shown(absl::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 64)) {
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      absl::StrAppend(&out, "\\x", absl::Hex(c, absl::kZeroPad2));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

}  // namespace

const RedisKeySpec* FindRedisCommand(absl::string_view command) {
  for (const RedisKeySpec& spec : kCommands) {
    if (EqualsUpper(command, spec.name)) return &spec;
  }
  return nullptr;
}

std::vector<std::string> BrokeredRedisCommands() {
  std::vector<std::string> out;
  for (const RedisKeySpec& spec : kCommands) out.emplace_back(spec.name);
  return out;
}

const char* ServiceRuleName(ServiceRule rule) {
  switch (rule) {
    case ServiceRule::kUnknownService: return "unknown_service";
    case ServiceRule::kWrongKind: return "wrong_kind";
    case ServiceRule::kCommandNotAllowed: return "command_not_allowed";
    case ServiceRule::kArguments: return "arguments";
    case ServiceRule::kKeyPrefix: return "key_prefix";
    case ServiceRule::kMaxRequests: return "max_requests";
    case ServiceRule::kMaxBytesOut: return "max_bytes_out";
    case ServiceRule::kMaxBytesIn: return "max_bytes_in";
    case ServiceRule::kMaxDepth: return "max_depth";
    case ServiceRule::kMaxRate: return "max_rate";
  }
  return "unknown";
}

std::optional<Refusal> CheckRedisCommand(const RedisServiceConfig& grant,
                                         const std::vector<std::string>& argv) {
  if (argv.empty()) return Refusal{ServiceRule::kArguments, "an empty command"};
  const std::string& name = argv[0];
  const bool listed = std::any_of(grant.commands.begin(), grant.commands.end(),
                                  [&](const std::string& c) { return EqualsUpper(name, c.c_str()); });
  const RedisKeySpec* spec = listed ? FindRedisCommand(name) : nullptr;
  if (spec == nullptr) {
    return Refusal{ServiceRule::kCommandNotAllowed,
                   absl::StrCat("command '", Shown(name), "' is not allowed (allowed: ",
                                absl::StrJoin(grant.commands, " "), ")")};
  }
  const int argc = static_cast<int>(argv.size());
  if ((spec->min_args > 0 && argc != spec->min_args) ||
      (spec->min_args < 0 && argc < -spec->min_args)) {
    return Refusal{ServiceRule::kArguments,
                   absl::StrCat(spec->name, " takes ", spec->min_args > 0 ? "" : "at least ",
                                std::abs(spec->min_args) - 1, " arguments, got ", argc - 1)};
  }
  if (spec->first_key == 0) return std::nullopt;
  const int last = spec->last_key < 0 ? argc + spec->last_key : spec->last_key;
  if (spec->step > 1 && (argc - spec->first_key) % spec->step != 0) {
    return Refusal{ServiceRule::kArguments,
                   absl::StrCat(spec->name, " takes its arguments in groups of ", spec->step)};
  }
  for (int i = spec->first_key; i <= last && i < argc; i += spec->step) {
    if (!absl::StartsWith(argv[static_cast<size_t>(i)], grant.key_prefix)) {
      return Refusal{ServiceRule::kKeyPrefix,
                     absl::StrCat("key '", Shown(argv[static_cast<size_t>(i)]),
                                  "' (argument ", i, " of ", spec->name,
                                  ") does not start with the key prefix '",
                                  Shown(grant.key_prefix), "'")};
    }
  }
  return std::nullopt;
}

absl::Status NormalizeRedisCommands(std::vector<std::string>* commands) {
  if (commands->empty()) {
    return absl::InvalidArgumentError("lists no command; name those the module may send");
  }
  for (std::string& c : *commands) {
    const RedisKeySpec* spec = FindRedisCommand(c);
    if (spec == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", Shown(c), "' cannot be brokered (its keys are not at fixed positions, or it "
          "reaches beyond one module's keys); brokered commands: ",
          absl::StrJoin(BrokeredRedisCommands(), " ")));
    }
    c = spec->name;
  }
  return absl::OkStatus();
}

}  // namespace mp::host
