// Everything the host shows of itself (schemas/control.capnp, Snapshot), filled once per
// question: mpctl's status, modules, ps and heap, and /metrics all read one. Memory figures
// come from /proc, read on a thread of their own, at most once per process per snapshot.
#pragma once

#include <capnp/message.h>
#include <kj/async.h>

#include <map>
#include <memory>
#include <string>

#include "host/module_output.h"
#include "host/module_runtime.h"
#include "schemas/control.capnp.h"

namespace mp::host {

class ServiceBroker;

struct HostFacts {
  std::string version;
  std::string listen;
  std::string control;
  bool draining = false;
  bool ready = false;
  int64_t uptime_ms = 0;
  // Filled by the server (server.h): its listener's and config reloads' counters.
  uint64_t connections_open = 0, connections_accepted = 0, connections_shed = 0,
           connection_limit_reached = 0, accept_resource_errors = 0, accept_other_errors = 0;
  uint64_t config_reloads_ok = 0, config_reloads_failed = 0;
};

using ModuleMap = std::map<std::string, std::unique_ptr<ModuleRuntime>, std::less<>>;

// Fills a Snapshot of `modules` and `output` (which must outlive the promise) and `facts`;
// with `with_proc` the memory and sandbox figures are read from /proc, off the event loop.
kj::Promise<kj::Own<capnp::MallocMessageBuilder>> TakeSnapshot(const ModuleMap& modules,
                                                               const ModuleOutput& output,
                                                               const ServiceBroker& services,
                                                               HostFacts facts, bool with_proc);

}  // namespace mp::host
