// The HelperSpec (schemas/helper.capnp) as both ends use it: the supervisor fills a StageSpec
// and sends it; the helper stage receives and decodes it, refusing anything malformed. No
// argv parsing: a helper's argv is only its process title.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace mp::microproc {

struct SandboxLayers {
  bool seccomp = true;
  bool landlock = true;
  bool namespaces = true;
  bool rlimits = true;
  bool operator==(const SandboxLayers&) const = default;
};

struct StageSpec {
  std::string module;
  uint64_t generation = 0;
  SandboxLayers layers;
  uint64_t address_space_bytes = 0;
  bool heap_copy_on_write = false;
  std::vector<std::pair<std::string, std::string>> options;
  std::vector<std::string> data_files;
  std::string plugin_path;
};

// Sends `spec` as one message on the SOCK_SEQPACKET socket `fd`. Fails if it is larger than
// kMaxHelperSpecBytes.
absl::Status SendStageSpec(int fd, const StageSpec& spec);

// Waits for the spec on `fd` (at most `timeout_ms`) and decodes it.
absl::StatusOr<StageSpec> ReceiveStageSpec(int fd, int timeout_ms);

}  // namespace mp::microproc
