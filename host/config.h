// Host configuration: a JSON file decoded into schemas/config.capnp with Cap'n Proto's JSON
// codec, then validated into these plain structs. Errors name the file and the field.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "microproc/helper_spec.h"

namespace mp::host {

// A service a module's handlers may reach through the host (docs/services.md).
struct RedisServiceConfig {
  std::string host;       // with port, unless unix_path is set
  uint16_t port = 0;
  std::string unix_path;  // from "unix:/PATH"
  std::string user;       // AUTH user (empty: the default user)
  std::string password;   // from passwordFile; empty: no AUTH. Never logged or shown
  // "HOST:PORT" or "unix:/PATH": how the server is named in errors, logs and mpctl.
  std::string Address() const;
  std::string key_prefix;
  std::vector<std::string> commands;  // upper case, each one the host knows the keys of
  uint32_t connections = 2;
  bool operator==(const RedisServiceConfig&) const = default;
};

struct ServiceConfig {
  std::string name;
  bool is_redis = false;
  RedisServiceConfig redis;  // is_redis
  std::string module;        // !is_redis: the module it calls
  uint32_t timeout_ms = 1000;
  bool operator==(const ServiceConfig&) const = default;
};

// Per call, for all its service requests together.
struct ServiceLimits {
  uint32_t max_requests = 100;
  uint64_t max_bytes_out = 1024ull << 10;
  uint64_t max_bytes_in = 4096ull << 10;
  uint32_t max_depth = 4;
  uint32_t max_requests_per_second = 0;  // the module's workers together; 0: no limit
  bool operator==(const ServiceLimits&) const = default;
};

struct ModuleConfig {
  std::string name;
  std::string plugin;  // absolute path
  uint32_t workers = 2;
  uint64_t max_heap_bytes = 256ull << 20;
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::pair<std::string, std::string>> data_files;  // name → absolute path
  uint64_t max_body_bytes = 256ull << 10;      // request bodies (413 beyond)
  uint64_t max_message_bytes = 1024ull << 10;  // call and reply messages, either way
  uint64_t ring_bytes = 256ull << 10;          // per direction
  uint32_t call_timeout_ms = 10000;
  uint32_t build_timeout_ms = 60000;
  bool heap_copy_on_write = false;  // heapMode "cow"
  uint32_t max_workers = 2;          // ≥ workers
  uint32_t idle_timeout_ms = 60000;
  uint32_t recycle_after_calls = 0;  // 0: never
  uint64_t max_private_bytes = 0;    // 0: no limit
  uint32_t queue_limit = 1024;
  uint32_t pipeline_depth = 2;  // calls waiting in a busy worker's ring, at the pool's cap
  uint32_t spin_iterations = 2000;
  microproc::SandboxLayers sandbox;  // layers switched on (all by default)
  uint32_t zygote_start_timeout_ms = 10000;  // a zygote's hello, constructors included
  uint32_t max_restarts = 5;
  uint32_t cancel_grace_ms = 1000;
  uint64_t worker_memory_bytes = 1ull << 30;
  uint32_t restart_window_ms = 10000;
  uint32_t breaker_max_cooldown_ms = 60000;  // the crash-loop breaker's trials back off to this
  bool critical = true;  // false: not needed for /readyz
  std::vector<ServiceConfig> services;
  ServiceLimits service_limits;
  bool operator==(const ModuleConfig&) const = default;
};

struct Route {
  std::string prefix;
  std::string host;  // empty: any
  std::string module;
  bool operator==(const Route&) const = default;
};

struct HostConfig {
  std::string listen = "127.0.0.1:8080";
  std::string control;  // Unix socket path
  std::string control_group;  // empty: owner only (0600)
  uint32_t drain_delay_ms = 0;
  uint32_t header_timeout_ms = 15000;
  uint64_t max_header_bytes = 64 << 10;
  std::vector<ModuleConfig> modules;
  std::vector<Route> routes;
  bool access_log = false;
  std::string access_log_file;  // empty: stderr, with the host's events
  std::string log_file;         // host events; empty: stderr
  std::vector<std::string> trusted_proxies;  // addresses or CIDRs
  uint32_t max_connections = 10000;          // 0: no limit
  uint32_t drain_timeout_ms = 10000;
  uint32_t body_timeout_ms = 30000;
};

// Reads and validates `path`. Relative plugin paths are relative to the file's directory.
absl::StatusOr<HostConfig> LoadConfigFile(const std::string& path);

// Decodes and validates JSON text; `source` names it in errors.
absl::StatusOr<HostConfig> ParseConfig(absl::string_view json, absl::string_view source,
                                       const std::string& base_dir);

// The bundled modules under `module_dir`, served when no config is given: echo, and dict over
// /usr/share/dict/words when that file exists.
HostConfig DefaultConfig(const std::string& module_dir);

// $XDG_RUNTIME_DIR/mphost.sock, or /tmp/mphost-UID.sock. mpctl uses the same default.
std::string DefaultControlSocket();


}  // namespace mp::host
