#include "host/config.h"

#include <capnp/message.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "host/config_json.h"
#include "host/net_address.h"
#include "host/service_rules.h"
#include "schemas/config.capnp.h"

namespace mp::host {

std::string RedisServiceConfig::Address() const {
  return unix_path.empty() ? absl::StrCat(host, ":", port) : absl::StrCat("unix:", unix_path);
}

namespace {

// A Redis password: the file's bytes, less one trailing newline. The error never quotes them.
absl::StatusOr<std::string> ReadPasswordFile(const std::string& path) {
  static constexpr size_t kMaxBytes = 4096;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::string password(kMaxBytes + 1, '\0');
  in.read(password.data(), static_cast<std::streamsize>(password.size()));
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read '", path, "'"));
  password.resize(static_cast<size_t>(in.gcount()));
  if (password.size() > kMaxBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' holds more than ", kMaxBytes, " bytes: not a password"));
  }
  if (absl::EndsWith(password, "\n")) password.pop_back();
  if (absl::EndsWith(password, "\r")) password.pop_back();
  if (password.empty()) return absl::InvalidArgumentError(absl::StrCat("'", path, "' is empty"));
  return password;
}

bool ValidModuleName(absl::string_view n) {
  if (n.empty() || n.size() > 32) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

// Errors about a value, naming the file, the JSON path and the line it is on (or its nearest
// enclosing value's, for one the file leaves out).
class Checker {
 public:
  Checker(absl::string_view source, const JsonLines& lines) : source_(source), lines_(lines) {}
  absl::Status Error(const std::string& path, absl::string_view problem) const {
    std::string at = path;
    for (;;) {
      if (auto it = lines_.find(at); it != lines_.end()) {
        return absl::InvalidArgumentError(absl::StrCat("config ", source_, ": ", path, ": ",
                                                       problem, " (line ", it->second, ")"));
      }
      const size_t cut = at.find_last_of(".[");
      if (cut == std::string::npos || cut == 0) break;
      at.resize(cut);
    }
    return absl::InvalidArgumentError(absl::StrCat("config ", source_, ": ", path, ": ", problem));
  }

 private:
  std::string source_;
  const JsonLines& lines_;
};

std::string S(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

}  // namespace

constexpr char kSystemWords[] = "/usr/share/dict/words";

std::string DefaultControlSocket() {
  const char* xdg = ::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/') return absl::StrCat(xdg, "/mphost.sock");
  return absl::StrCat("/tmp/mphost-", ::getuid(), ".sock");
}

HostConfig DefaultConfig(const std::string& module_dir) {
  HostConfig c;
  c.control = DefaultControlSocket();
  ModuleConfig echo;
  echo.name = "echo";
  echo.plugin = absl::StrCat(module_dir, "/libecho.so");
  echo.max_heap_bytes = 16ull << 20;
  c.modules.push_back(echo);
  // dict serves the system word list (Debian package wamerican), when it is installed.
  struct stat st;
  if (::stat(kSystemWords, &st) == 0 && S_ISREG(st.st_mode)) {
    ModuleConfig dict;
    dict.name = "dict";
    dict.plugin = absl::StrCat(module_dir, "/libdict.so");
    dict.max_heap_bytes = 64ull << 20;
    dict.data_files = {{"words", kSystemWords}};
    c.modules.push_back(dict);
  }
  return c;
}

absl::StatusOr<HostConfig> ParseConfig(absl::string_view json, absl::string_view source,
                                       const std::string& base_dir) {
  auto tree = ParseJson(json);
  if (!tree.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config ", source, ": ", tree.status().message()));
  }
  capnp::MallocMessageBuilder message;
  JsonLines lines;
  if (auto s = DecodeJson(*tree, message.initRoot<config::Config>(), &lines); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config ", source, ": ", s.message()));
  }
  const Checker check(source, lines);
  auto root = message.getRoot<config::Config>().asReader();
  HostConfig out;
  out.listen = S(root.getListen());
  if (out.listen.find(':') == std::string::npos) {
    return check.Error("listen", absl::StrCat("'", out.listen, "' is not HOST:PORT"));
  }
  out.control = root.hasControl() ? S(root.getControl()) : DefaultControlSocket();
  if (out.control.empty() || out.control.size() > 100) {
    return check.Error("control", "must be a socket path of 1 to 100 bytes");
  }
  out.control_group = S(root.getControlGroup());
  if (!out.control_group.empty() && ::getgrnam(out.control_group.c_str()) == nullptr) {
    return check.Error("controlGroup", absl::StrCat("no group named '", out.control_group, "'"));
  }
  out.drain_delay_ms = root.getDrainDelayMs();
  out.drain_timeout_ms = root.getDrainTimeoutMs();
  out.access_log_file = S(root.getAccessLogFile());
  out.access_log = root.getAccessLog() || !out.access_log_file.empty();
  out.log_file = S(root.getLogFile());
  out.max_connections = root.getMaxConnections();
  for (unsigned i = 0; i < root.getTrustedProxies().size(); ++i) {
    const std::string proxy = S(root.getTrustedProxies()[i]);
    if (!ParseCidr(proxy).ok()) {
      return check.Error(absl::StrCat("trustedProxies[", i, "]"),
                         absl::StrCat("'", proxy, "' is not an IP address or CIDR"));
    }
    out.trusted_proxies.push_back(proxy);
  }
  out.body_timeout_ms = root.getBodyTimeoutMs();
  if (out.body_timeout_ms < 1) return check.Error("bodyTimeoutMs", "must be > 0");
  out.header_timeout_ms = root.getHeaderTimeoutMs();
  out.max_header_bytes = uint64_t{root.getMaxHeaderKb()} << 10;
  if (out.max_header_bytes == 0) return check.Error("maxHeaderKb", "must be > 0");
  if (out.header_timeout_ms < 1) return check.Error("headerTimeoutMs", "must be > 0");
  if (!root.hasModules() || root.getModules().size() == 0) {
    return check.Error("modules", "at least one module is required");
  }
  const auto modules = root.getModules();
  for (unsigned index = 0; index < modules.size(); ++index) {
    const auto m = modules[index];
    ModuleConfig mc;
    mc.name = S(m.getName());
    const std::string field = absl::StrCat("modules[", index, "]");
    auto error = [&](absl::string_view name, absl::string_view problem) {
      return check.Error(absl::StrCat(field, ".", name), problem);
    };
    if (!ValidModuleName(mc.name)) {
      return error("name", absl::StrCat("'", mc.name, "' must match [a-z0-9_-]{1,32}"));
    }
    for (const auto& other : out.modules) {
      if (other.name == mc.name) return error("name", absl::StrCat("module '", mc.name, "' is named twice"));
    }
    std::string plugin = S(m.getPlugin());
    if (plugin.empty()) return error("plugin", "missing");
    mc.plugin = plugin[0] == '/' ? plugin : absl::StrCat(base_dir, "/", plugin);
    struct stat st;
    if (::stat(mc.plugin.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return error("plugin", absl::StrCat("no such file: ", mc.plugin));
    }
    mc.workers = m.getWorkers();
    if (mc.workers < 1 || mc.workers > 256) {
      return error("workers", absl::StrCat("must be between 1 and 256, got ", mc.workers));
    }
    if (m.getMaxHeapMb() < 1 || m.getMaxHeapMb() > 65536) {
      return error("maxHeapMb", "must be between 1 and 65536");
    }
    mc.max_heap_bytes = uint64_t{m.getMaxHeapMb()} << 20;
    if (m.getMaxBodyKb() < 1 || m.getMaxBodyKb() > 65536) {
      return error("maxBodyKb", "must be between 1 and 65536");
    }
    mc.max_body_bytes = uint64_t{m.getMaxBodyKb()} << 10;
    {
      uint32_t kb = m.getMaxMessageKb();
      if (kb == 0) kb = std::min<uint32_t>(65536, std::max<uint32_t>(1024, m.getMaxBodyKb() + 64));
      if (kb > 65536) return error("maxMessageKb", "must be at most 65536");
      if (kb < m.getMaxBodyKb()) {
        return error("maxMessageKb",
                     absl::StrCat(kb, " is less than maxBodyKb (", m.getMaxBodyKb(),
                                  "): a call with the largest body could never be sent"));
      }
      mc.max_message_bytes = uint64_t{kb} << 10;
      const uint32_t ring = m.getRingKb();
      if (ring < 16 || ring > 65536 || !std::has_single_bit(ring)) {
        return error("ringKb", absl::StrCat(ring, " must be a power of two between 16 and 65536"));
      }
      mc.ring_bytes = uint64_t{ring} << 10;
    }
    mc.call_timeout_ms = m.getCallTimeoutMs();
    if (mc.call_timeout_ms < 1) return error("callTimeoutMs", "must be > 0");
    const std::string mode = S(m.getHeapMode());
    if (mode != "readonly" && mode != "cow") {
      return error("heapMode", absl::StrCat("'", mode, "' must be readonly or cow"));
    }
    mc.heap_copy_on_write = mode == "cow";
    mc.max_workers = m.getMaxWorkers() == 0 ? mc.workers : m.getMaxWorkers();
    if (mc.max_workers < mc.workers || mc.max_workers > 256) {
      return error("maxWorkers", "must be between workers and 256");
    }
    mc.idle_timeout_ms = m.getIdleTimeoutMs();
    mc.recycle_after_calls = m.getRecycleAfterCalls();
    mc.max_private_bytes = uint64_t{m.getMaxPrivateMb()} << 20;
    mc.queue_limit = m.getQueueLimit();
    mc.pipeline_depth = m.getPipelineDepth();
    if (mc.pipeline_depth > 16) return error("pipelineDepth", "must be at most 16");
    mc.spin_iterations = m.getSpinIterations();
    if (mc.spin_iterations > 10000000) return error("spinIterations", "must be at most 10000000");
    {
      auto sb = m.getSandbox();
      mc.sandbox = {sb.getSeccomp(), sb.getLandlock(), sb.getNamespaces(), sb.getRlimits()};
    }
    if (mc.queue_limit < 1) return error("queueLimit", "must be at least 1");
    mc.max_restarts = m.getMaxRestarts();
    mc.cancel_grace_ms = m.getCancelGraceMs();
    if (m.getWorkerMemoryMb() < 16) return error("workerMemoryMb", "must be at least 16");
    mc.worker_memory_bytes = uint64_t{m.getWorkerMemoryMb()} << 20;
    mc.restart_window_ms = m.getRestartWindowMs();
    if (mc.restart_window_ms < 1) return error("restartWindowMs", "must be > 0");
    mc.breaker_max_cooldown_ms = m.getBreakerMaxCooldownMs();
    if (mc.breaker_max_cooldown_ms < 1000 || mc.breaker_max_cooldown_ms > 3600000) {
      return error("breakerMaxCooldownMs", "must be between 1000 and 3600000");
    }
    mc.zygote_start_timeout_ms = m.getZygoteStartTimeoutMs();
    if (mc.zygote_start_timeout_ms < 1 || mc.zygote_start_timeout_ms > 3600000) {
      return error("zygoteStartTimeoutMs", "must be between 1 and 3600000");
    }
    mc.build_timeout_ms = m.getBuildTimeoutMs();
    if (mc.build_timeout_ms < 1 || mc.build_timeout_ms > 3600000) {
      return error("buildTimeoutMs", "must be between 1 and 3600000");
    }
    mc.critical = m.getCritical();
    for (auto o : m.getOptions()) mc.options.emplace_back(S(o.getKey()), S(o.getValue()));
    for (auto d : m.getDataFiles()) {
      std::string path = S(d.getValue());
      if (path.empty()) return error(absl::StrCat("dataFiles.", S(d.getKey())), "empty path");
      mc.data_files.emplace_back(S(d.getKey()), path[0] == '/' ? path : absl::StrCat(base_dir, "/", path));
    }
    {
      const auto limits = m.getServiceLimits();
      mc.service_limits.max_requests = limits.getMaxRequests();
      mc.service_limits.max_bytes_out = uint64_t{limits.getMaxBytesOutKb()} << 10;
      mc.service_limits.max_bytes_in = uint64_t{limits.getMaxBytesInKb()} << 10;
      mc.service_limits.max_depth = limits.getMaxDepth();
      mc.service_limits.max_requests_per_second = limits.getMaxRequestsPerSecond();
      if (mc.service_limits.max_depth > 16) return error("serviceLimits.maxDepth", "must be at most 16");
    }
    for (auto sv : m.getServices()) {
      ServiceConfig sc;
      sc.name = S(sv.getName());
      const std::string at = absl::StrCat("services.", sc.name);
      if (!ValidModuleName(sc.name)) {
        return error(at, absl::StrCat("'", sc.name, "' must match [a-z0-9_-]{1,32}"));
      }
      sc.timeout_ms = sv.getTimeoutMs();
      if (sc.timeout_ms < 1) return error(at + ".timeoutMs", "must be > 0");
      if (sv.hasRedis() == sv.hasModule()) {
        return error(at, "needs exactly one of \"redis\" and \"module\"");
      }
      if (sv.hasRedis()) {
        const auto r = sv.getRedis();
        sc.is_redis = true;
        const std::string address = S(r.getAddress());
        if (absl::StartsWith(address, "unix:")) {
          sc.redis.unix_path = address.substr(5);
          if (sc.redis.unix_path.empty() || sc.redis.unix_path[0] != '/') {
            return error(at + ".redis.address",
                         absl::StrCat("'", address, "' is not unix:/ABSOLUTE/PATH"));
          }
          if (sc.redis.unix_path.size() >= sizeof(sockaddr_un::sun_path)) {
            return error(at + ".redis.address",
                         absl::StrCat("'", address, "': the socket path is longer than ",
                                      sizeof(sockaddr_un::sun_path) - 1, " bytes"));
          }
        } else {
          const size_t colon = address.rfind(':');
          int port = 0;
          if (colon == std::string::npos || colon == 0 ||
              !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 1 || port > 65535) {
            return error(at + ".redis.address",
                         absl::StrCat("'", address, "' is not HOST:PORT or unix:/PATH"));
          }
          sc.redis.host = address.substr(0, colon);
          sc.redis.port = static_cast<uint16_t>(port);
        }
        sc.redis.user = S(r.getUser());
        const std::string password_file = S(r.getPasswordFile());
        if (!sc.redis.user.empty() && password_file.empty()) {
          return error(at + ".redis.user", "needs passwordFile");
        }
        if (!password_file.empty()) {
          const std::string path =
              password_file[0] == '/' ? password_file : absl::StrCat(base_dir, "/", password_file);
          auto password = ReadPasswordFile(path);
          if (!password.ok()) return error(at + ".redis.passwordFile", password.status().message());
          sc.redis.password = *std::move(password);
        }
        sc.redis.key_prefix = S(r.getKeyPrefix());
        if (sc.redis.key_prefix.empty()) {
          return error(at + ".redis.keyPrefix",
                       "required: every key the module uses must start with it");
        }
        for (auto c : r.getCommands()) sc.redis.commands.push_back(S(c));
        if (auto st = NormalizeRedisCommands(&sc.redis.commands); !st.ok()) {
          return error(at + ".redis.commands", st.message());
        }
        sc.redis.connections = r.getConnections();
        if (sc.redis.connections < 1 || sc.redis.connections > 64) {
          return error(at + ".redis.connections", "must be between 1 and 64");
        }
      } else {
        sc.module = S(sv.getModule());
        if (!ValidModuleName(sc.module)) {
          return error(at + ".module", absl::StrCat("'", sc.module, "' is not a module name"));
        }
      }
      mc.services.push_back(std::move(sc));
    }
    out.modules.push_back(std::move(mc));
  }
  // Two modules' key prefixes on one Redis must not overlap: "spell" would reach "spell2:...".
  for (size_t i = 0; i < out.modules.size(); ++i) {
    for (size_t j = i + 1; j < out.modules.size(); ++j) {
      for (const ServiceConfig& a : out.modules[i].services) {
        for (const ServiceConfig& b : out.modules[j].services) {
          if (!a.is_redis || !b.is_redis || a.redis.Address() != b.redis.Address()) {
            continue;
          }
          const std::string& pa = a.redis.key_prefix;
          const std::string& pb = b.redis.key_prefix;
          if (pa.compare(0, pb.size(), pb) == 0 || pb.compare(0, pa.size(), pa) == 0) {
            return check.Error(
                absl::StrCat("modules[", j, "].services.", b.name, ".redis.keyPrefix"),
                absl::StrCat("'", pb, "' overlaps module '", out.modules[i].name,
                             "''s keyPrefix '", pa, "' on the same Redis: each module's keys "
                             "must be its own"));
          }
        }
      }
    }
  }
  // Module services name modules of this config.
  for (size_t i = 0; i < out.modules.size(); ++i) {
    for (const ServiceConfig& sc : out.modules[i].services) {
      if (sc.is_redis) continue;
      const bool known = std::any_of(out.modules.begin(), out.modules.end(),
                                     [&](const ModuleConfig& m) { return m.name == sc.module; });
      if (!known) {
        return check.Error(absl::StrCat("modules[", i, "].services.", sc.name, ".module"),
                           absl::StrCat("no module named '", sc.module, "'"));
      }
    }
  }
  const auto routes = root.getRoutes();
  for (unsigned i = 0; i < routes.size(); ++i) {
    const auto r = routes[i];
    Route route{S(r.getPrefix()), S(r.getHost()), S(r.getModule())};
    const std::string field = absl::StrCat("routes[", i, "]");
    if (route.prefix.empty() || route.prefix[0] != '/') {
      return check.Error(field + ".prefix", "must start with /");
    }
    for (const char* reserved : {"/healthz", "/readyz", "/metrics"}) {
      if (route.prefix == reserved) return check.Error(field + ".prefix", "shadows a host endpoint");
    }
    bool known = false;
    for (const auto& m : out.modules) known = known || m.name == route.module;
    if (!known) {
      return check.Error(field + ".module", absl::StrCat("no module named '", route.module, "'"));
    }
    out.routes.push_back(std::move(route));
  }
  return out;
}

absl::StatusOr<HostConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("config ", path, ": cannot open: ", strerror(errno)));
  std::stringstream text;
  text << in.rdbuf();
  std::string dir = ".";
  if (auto slash = path.rfind('/'); slash != std::string::npos) dir = path.substr(0, slash);
  if (dir.empty()) dir = "/";
  if (dir[0] != '/') {
    char cwd[4096];
    if (::getcwd(cwd, sizeof cwd) != nullptr) dir = absl::StrCat(cwd, "/", dir);
  }
  return ParseConfig(text.str(), path, dir);
}

}  // namespace mp::host
