#include "host/config.h"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "schemas/config.capnp.h"

namespace mp::host {
namespace {

bool ValidModuleName(absl::string_view n) {
  if (n.empty() || n.size() > 32) return false;
  for (char c : n) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

absl::Status FieldError(absl::string_view source, absl::string_view field,
                        absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("config ", source, ": ", field, ": ", problem));
}

std::string S(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

std::string JsonScalarText(capnp::JsonValue::Reader v) {
  switch (v.which()) {
    case capnp::JsonValue::STRING: return S(v.getString());
    case capnp::JsonValue::BOOLEAN: return v.getBoolean() ? "true" : "false";
    case capnp::JsonValue::NUMBER: {
      double d = v.getNumber();
      if (d == static_cast<double>(static_cast<int64_t>(d))) return absl::StrCat(static_cast<int64_t>(d));
      return absl::StrCat(d);
    }
    default: return {};
  }
}

// Rewrites each modules[i].options and .dataFiles object {"k": v} into
// [{"key": "k", "value": "v"}], the schema's form.
absl::Status OptionsToLists(capnp::JsonValue::Builder root, absl::string_view source) {
  if (root.which() != capnp::JsonValue::OBJECT) {
    return absl::InvalidArgumentError(absl::StrCat("config ", source, ": must be a JSON object"));
  }
  for (auto field : root.getObject()) {
    if (field.getName() != "modules" || field.getValue().which() != capnp::JsonValue::ARRAY) continue;
    for (auto module : field.getValue().getArray()) {
      if (module.which() != capnp::JsonValue::OBJECT) continue;
      for (auto mf : module.getObject()) {
        if (mf.getName() != "options" && mf.getName() != "dataFiles") continue;
        const std::string what = absl::StrCat("modules[].", S(mf.getName()));
        auto value = mf.getValue();
        if (value.which() != capnp::JsonValue::OBJECT) {
          return FieldError(source, what, "must be a JSON object");
        }
        std::vector<std::pair<std::string, std::string>> pairs;
        for (auto o : value.getObject()) {
          auto v = o.getValue().asReader();
          if (v.which() != capnp::JsonValue::STRING && v.which() != capnp::JsonValue::NUMBER &&
              v.which() != capnp::JsonValue::BOOLEAN) {
            return FieldError(source, absl::StrCat(what, ".", S(o.getName())),
                              "must be a string, number or boolean");
          }
          pairs.emplace_back(S(o.getName()), JsonScalarText(v));
        }
        auto list = value.initArray(pairs.size());
        for (size_t i = 0; i < pairs.size(); ++i) {
          auto entry = list[i].initObject(2);
          entry[0].setName("key");
          entry[0].initValue().setString(pairs[i].first);
          entry[1].setName("value");
          entry[1].initValue().setString(pairs[i].second);
        }
      }
    }
  }
  return absl::OkStatus();
}

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
  // Parse to a JSON tree first: module options are a JSON object in the file but a list of
  // key/value pairs in the schema, so that unknown fields can be refused everywhere else.
  capnp::MallocMessageBuilder tree_message;
  auto tree = tree_message.initRoot<capnp::JsonValue>();
  capnp::JsonCodec codec;
  codec.setRejectUnknownFields(true);
  codec.setMaxNestingDepth(32);
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                codec.decodeRaw(kj::ArrayPtr<const char>(json.data(), json.size()), tree);
              })) {
    return absl::InvalidArgumentError(
        absl::StrCat("config ", source, ": not valid JSON: ", e->getDescription().cStr()));
  }
  if (auto s = OptionsToLists(tree, source); !s.ok()) return s;
  capnp::MallocMessageBuilder message;
  auto builder = message.initRoot<config::Config>();
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                codec.decode(tree.asReader(), capnp::DynamicStruct::Builder(builder));
              })) {
    std::string what = e->getDescription().cStr();
    if (auto at = what.find("field.getName() = "); at != std::string::npos) {
      what = absl::StrCat("unknown field '", what.substr(at + 18), "'");
    }
    return absl::InvalidArgumentError(absl::StrCat("config ", source, ": ", what));
  }
  auto root = builder.asReader();
  HostConfig out;
  out.listen = S(root.getListen());
  if (out.listen.find(':') == std::string::npos) {
    return FieldError(source, "listen", absl::StrCat("'", out.listen, "' is not HOST:PORT"));
  }
  out.control = root.hasControl() ? S(root.getControl()) : DefaultControlSocket();
  if (out.control.empty() || out.control.size() > 100) {
    return FieldError(source, "control", "must be a socket path of 1 to 100 bytes");
  }
  out.control_group = S(root.getControlGroup());
  if (!out.control_group.empty() && ::getgrnam(out.control_group.c_str()) == nullptr) {
    return FieldError(source, "controlGroup", absl::StrCat("no group named '", out.control_group, "'"));
  }
  out.drain_delay_ms = root.getDrainDelayMs();
  out.access_log = root.getAccessLog();
  out.body_timeout_ms = root.getBodyTimeoutMs();
  if (out.body_timeout_ms < 1) return FieldError(source, "bodyTimeoutMs", "must be > 0");
  out.header_timeout_ms = root.getHeaderTimeoutMs();
  out.max_header_bytes = uint64_t{root.getMaxHeaderKb()} << 10;
  if (out.max_header_bytes == 0) return FieldError(source, "maxHeaderKb", "must be > 0");
  if (out.header_timeout_ms < 1) return FieldError(source, "headerTimeoutMs", "must be > 0");
  if (!root.hasModules() || root.getModules().size() == 0) {
    return FieldError(source, "modules", "at least one module is required");
  }
  for (auto m : root.getModules()) {
    ModuleConfig mc;
    mc.name = S(m.getName());
    const std::string field = absl::StrCat("modules[", mc.name, "]");
    if (!ValidModuleName(mc.name)) {
      return FieldError(source, "modules[].name",
                        absl::StrCat("'", mc.name, "' must match [a-z0-9_-]{1,32}"));
    }
    for (const auto& other : out.modules) {
      if (other.name == mc.name) return FieldError(source, field, "module named twice");
    }
    std::string plugin = S(m.getPlugin());
    if (plugin.empty()) return FieldError(source, field + ".plugin", "missing");
    mc.plugin = plugin[0] == '/' ? plugin : absl::StrCat(base_dir, "/", plugin);
    struct stat st;
    if (::stat(mc.plugin.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      return FieldError(source, field + ".plugin",
                        absl::StrCat("no such file: ", mc.plugin));
    }
    mc.workers = m.getWorkers();
    if (mc.workers < 1 || mc.workers > 256) {
      return FieldError(source, field + ".workers", "must be between 1 and 256");
    }
    if (m.getMaxHeapMb() < 1 || m.getMaxHeapMb() > 65536) {
      return FieldError(source, field + ".maxHeapMb", "must be between 1 and 65536");
    }
    mc.max_heap_bytes = uint64_t{m.getMaxHeapMb()} << 20;
    if (m.getMaxBodyKb() < 1 || m.getMaxBodyKb() > 65536) {
      return FieldError(source, field + ".maxBodyKb", "must be between 1 and 65536");
    }
    mc.max_body_bytes = uint64_t{m.getMaxBodyKb()} << 10;
    {
      uint32_t kb = m.getMaxMessageKb();
      if (kb == 0) kb = std::min<uint32_t>(65536, std::max<uint32_t>(1024, m.getMaxBodyKb() + 64));
      if (kb > 65536) return FieldError(source, field + ".maxMessageKb", "must be at most 65536");
      if (kb < m.getMaxBodyKb()) {
        return FieldError(source, field + ".maxMessageKb",
                          absl::StrCat(kb, " is less than maxBodyKb (", m.getMaxBodyKb(),
                                       "): a call with the largest body could never be sent"));
      }
      mc.max_message_bytes = uint64_t{kb} << 10;
      const uint32_t ring = m.getRingKb();
      if (ring < 16 || ring > 65536 || !std::has_single_bit(ring)) {
        return FieldError(source, field + ".ringKb",
                          absl::StrCat(ring, " must be a power of two between 16 and 65536"));
      }
      mc.ring_bytes = uint64_t{ring} << 10;
    }
    mc.call_timeout_ms = m.getCallTimeoutMs();
    if (mc.call_timeout_ms < 1) return FieldError(source, field + ".callTimeoutMs", "must be > 0");
    const std::string mode = S(m.getHeapMode());
    if (mode != "readonly" && mode != "cow") {
      return FieldError(source, field + ".heapMode", absl::StrCat("'", mode, "' must be readonly or cow"));
    }
    mc.heap_copy_on_write = mode == "cow";
    mc.max_workers = m.getMaxWorkers() == 0 ? mc.workers : m.getMaxWorkers();
    if (mc.max_workers < mc.workers || mc.max_workers > 256) {
      return FieldError(source, field + ".maxWorkers", "must be between workers and 256");
    }
    mc.idle_timeout_ms = m.getIdleTimeoutMs();
    mc.recycle_after_calls = m.getRecycleAfterCalls();
    mc.max_private_bytes = uint64_t{m.getMaxPrivateMb()} << 20;
    mc.queue_limit = m.getQueueLimit();
    mc.spin_iterations = m.getSpinIterations();
    if (mc.spin_iterations > 10000000) {
      return FieldError(source, field + ".spinIterations", "must be at most 10000000");
    }
    {
      auto sb = m.getSandbox();
      mc.sandbox = {sb.getSeccomp(), sb.getLandlock(), sb.getNamespaces(), sb.getRlimits()};
    }
    if (mc.queue_limit < 1) return FieldError(source, field + ".queueLimit", "must be at least 1");
    mc.max_restarts = m.getMaxRestarts();
    mc.cancel_grace_ms = m.getCancelGraceMs();
    if (m.getWorkerMemoryMb() < 16) {
      return FieldError(source, field + ".workerMemoryMb", "must be at least 16");
    }
    mc.worker_memory_bytes = uint64_t{m.getWorkerMemoryMb()} << 20;
    mc.restart_window_ms = m.getRestartWindowMs();
    mc.breaker_max_cooldown_ms = m.getBreakerMaxCooldownMs();
    if (mc.breaker_max_cooldown_ms < 1000 || mc.breaker_max_cooldown_ms > 3600000) {
      return FieldError(source, field + ".breakerMaxCooldownMs", "must be between 1000 and 3600000");
    }
    if (mc.restart_window_ms < 1) return FieldError(source, field + ".restartWindowMs", "must be > 0");
    mc.zygote_start_timeout_ms = m.getZygoteStartTimeoutMs();
    if (mc.zygote_start_timeout_ms < 1 || mc.zygote_start_timeout_ms > 3600000) {
      return FieldError(source, field + ".zygoteStartTimeoutMs", "must be between 1 and 3600000");
    }
    mc.build_timeout_ms = m.getBuildTimeoutMs();
    if (mc.build_timeout_ms < 1 || mc.build_timeout_ms > 3600000) {
      return FieldError(source, field + ".buildTimeoutMs", "must be between 1 and 3600000");
    }
    for (auto o : m.getOptions()) mc.options.emplace_back(S(o.getKey()), S(o.getValue()));
    for (auto d : m.getDataFiles()) {
      std::string path = S(d.getValue());
      if (path.empty()) return FieldError(source, field + ".dataFiles." + S(d.getKey()), "empty path");
      mc.data_files.emplace_back(S(d.getKey()), path[0] == '/' ? path : absl::StrCat(base_dir, "/", path));
    }
    out.modules.push_back(std::move(mc));
  }
  for (auto r : root.getRoutes()) {
    Route route{S(r.getPrefix()), S(r.getHost()), S(r.getModule())};
    const std::string field = absl::StrCat("routes[", route.prefix, "]");
    if (route.prefix.empty() || route.prefix[0] != '/') {
      return FieldError(source, field + ".prefix", "must start with /");
    }
    for (const char* reserved : {"/healthz", "/readyz", "/metrics"}) {
      if (route.prefix == reserved) return FieldError(source, field, "shadows a host endpoint");
    }
    bool known = false;
    for (const auto& m : out.modules) known = known || m.name == route.module;
    if (!known) {
      return FieldError(source, field + ".module", absl::StrCat("no module named '", route.module, "'"));
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
