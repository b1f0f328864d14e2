// Loading a module's shared library and checking it against the ABI this build speaks.
// Runs module code (the library's constructors): call only in a sandboxed process (builder,
// zygote), never in the supervisor.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "mp/module.h"

namespace mp::microproc {

struct Plugin {
  void* handle = nullptr;  // dlopen handle; never closed (the process ends with the module)
  const mp_module* module = nullptr;
};

// dlopens `path` and validates its entry point: ABI version, struct size, declared name
// (must equal `module_name`), non-null functions. Errors name the module, the file and the
// problem, e.g. "module 'echo': plugin /x/libecho.so has ABI 2, host speaks 1".
// `shown_as` names the plugin in errors (default: `path`), for a plugin opened through
// /proc/self/fd.
absl::StatusOr<Plugin> LoadPlugin(absl::string_view module_name, const std::string& path,
                                  absl::string_view shown_as = {});

// The check LoadPlugin applies to the entry's result, exposed for tests.
absl::Status CheckModuleEntry(absl::string_view module_name, absl::string_view path,
                              const mp_module* module);

}  // namespace mp::microproc
