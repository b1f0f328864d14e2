#include "microproc/helper_spec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "microproc/fd_passing.h"
#include "microproc/helper_protocol.h"
#include "schemas/helper.capnp.h"

namespace mp::microproc {

absl::Status SendStageSpec(int fd, const StageSpec& spec) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<helper::HelperSpec>();
  root.setModule(spec.module);
  root.setGeneration(spec.generation);
  auto layers = root.initLayers();
  layers.setSeccomp(spec.layers.seccomp);
  layers.setLandlock(spec.layers.landlock);
  layers.setNamespaces(spec.layers.namespaces);
  layers.setRlimits(spec.layers.rlimits);
  root.setAddressSpaceBytes(spec.address_space_bytes);
  root.setHeapCopyOnWrite(spec.heap_copy_on_write);
  auto options = root.initOptions(static_cast<unsigned>(spec.options.size()));
  for (size_t i = 0; i < spec.options.size(); ++i) {
    options[i].setKey(spec.options[i].first);
    options[i].setValue(spec.options[i].second);
  }
  auto data = root.initDataFiles(static_cast<unsigned>(spec.data_files.size()));
  for (size_t i = 0; i < spec.data_files.size(); ++i) data.set(i, spec.data_files[i]);
  root.setPluginPath(spec.plugin_path);
  kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  auto bytes = words.asBytes();
  if (bytes.size() > kMaxHelperSpecBytes) {
    return absl::InvalidArgumentError(absl::StrCat("module '", spec.module, "': helper spec of ",
                                                   bytes.size(), " bytes exceeds ",
                                                   kMaxHelperSpecBytes, " (options too large)"));
  }
  return SendWithFds(fd, std::as_bytes(std::span(bytes.begin(), bytes.size())), {});
}

absl::StatusOr<StageSpec> ReceiveStageSpec(int fd, int timeout_ms) {
  auto words = kj::heapArray<capnp::word>(kMaxHelperSpecBytes / sizeof(capnp::word));
  auto n = ReceiveWithFds(fd, std::as_writable_bytes(std::span(words.begin(), words.size())),
                          nullptr, 0, timeout_ms);
  if (!n.ok()) return n.status();
  if (*n == 0 || *n % sizeof(capnp::word) != 0) {
    return absl::DataLossError(absl::StrCat("helper spec: malformed message of ", *n, " bytes"));
  }
  StageSpec spec;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                capnp::FlatArrayMessageReader reader(words.slice(0, *n / sizeof(capnp::word)));
                auto root = reader.getRoot<helper::HelperSpec>();
                spec.module = root.getModule();
                spec.generation = root.getGeneration();
                auto layers = root.getLayers();
                spec.layers = {layers.getSeccomp(), layers.getLandlock(), layers.getNamespaces(),
                               layers.getRlimits()};
                spec.address_space_bytes = root.getAddressSpaceBytes();
                spec.heap_copy_on_write = root.getHeapCopyOnWrite();
                for (auto o : root.getOptions()) spec.options.emplace_back(o.getKey(), o.getValue());
                for (auto d : root.getDataFiles()) spec.data_files.emplace_back(d);
                spec.plugin_path = root.getPluginPath();
              })) {
    return absl::DataLossError(absl::StrCat("helper spec: ", e->getDescription().cStr()));
  }
  if (spec.data_files.size() > static_cast<size_t>(kMaxDataFiles)) {
    return absl::InvalidArgumentError("helper spec: too many data files");
  }
  return spec;
}

}  // namespace mp::microproc
