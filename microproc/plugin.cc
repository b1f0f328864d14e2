#include "microproc/plugin.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"

namespace mp::microproc {

absl::Status CheckModuleEntry(absl::string_view module_name, absl::string_view path,
                              const mp_module* m) {
  const std::string who = absl::StrCat("module '", module_name, "': plugin ", path);
  if (m == nullptr) return absl::InvalidArgumentError(absl::StrCat(who, ": entry point returned NULL"));
  if (m->abi_version != MP_MODULE_ABI_VERSION) {
    return absl::FailedPreconditionError(absl::StrCat(who, " has ABI ", m->abi_version,
                                                      ", host speaks ", MP_MODULE_ABI_VERSION));
  }
  if (m->struct_size < sizeof(mp_module)) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": mp_module is ", m->struct_size,
                                                    " bytes, ABI 1 needs ", sizeof(mp_module)));
  }
  if (m->name == nullptr || module_name != m->name) {
    return absl::InvalidArgumentError(absl::StrCat(
        who, " declares module '", m->name ? m->name : "(null)", "', config calls it '",
        module_name, "'"));
  }
  if (m->build == nullptr || m->handle == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(who, ": build or handle is NULL"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Plugin> LoadPlugin(absl::string_view module_name, const std::string& path,
                                  absl::string_view shown_as) {
  if (shown_as.empty()) shown_as = path;
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* err = ::dlerror();
    std::string why = err ? err : path;
    // dlerror names the path it was given: name the plugin the operator configured.
    if (shown_as != path) {
      for (size_t at = why.find(path); at != std::string::npos;
           at = why.find(path, at + shown_as.size())) {
        why.replace(at, path.size(), shown_as.data(), shown_as.size());
      }
    }
    return absl::NotFoundError(absl::StrCat("module '", module_name, "': cannot load plugin: ", why));
  }
  auto entry = reinterpret_cast<mp_module_entry_fn>(::dlsym(handle, MP_MODULE_ENTRY_SYMBOL));
  if (entry == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("module '", module_name, "': plugin ",
                                                   shown_as, " does not export ",
                                                   MP_MODULE_ENTRY_SYMBOL));
  }
  const mp_module* m = entry();
  if (auto s = CheckModuleEntry(module_name, shown_as, m); !s.ok()) return s;
  return Plugin{handle, m};
}

}  // namespace mp::microproc
