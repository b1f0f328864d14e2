// The messages between the supervisor and a zygote, over a SOCK_SEQPACKET pair (one message
// per struct). Plain structs: both ends are built from this tree at the same commit. The
// supervisor still validates what it receives (the zygote has loaded module code).
#pragma once

#include <cstdint>
#include <type_traits>

namespace mp::microproc {

// Descriptors a zygote or builder finds at start (the supervisor dup2s them into place).
inline constexpr int kHelperSocketFd = 3;  // zygote: control socket; builder: result pipe
inline constexpr int kHelperHeapFd = 4;    // the heap memfd (sealed for a zygote)

// Zygote → host, once, after mapping the heap and loading the plugin.
struct ZygoteHello {
  uint32_t ok;           // 1 ready, 0 failed (message says why; the zygote then exits)
  uint32_t abi_version;
  char module_version[32];
  char message[440];
};

// Host → zygote, with two fds attached: the worker's ring memfd and its doorbell eventfd.
struct SpawnRequest {
  uint64_t worker_id;
  uint64_t address_space_bytes;  // RLIMIT_AS for the worker (0: none)
  uint32_t spin_iterations;
  uint32_t reserved;
};

// Zygote → host: the new microprocess (a child of the host, via CLONE_PARENT).
struct SpawnReply {
  uint64_t worker_id;
  int32_t pid;     // > 0 on success
  int32_t error;   // errno of the failed clone
};

static_assert(std::is_trivially_copyable_v<ZygoteHello>);
static_assert(std::is_trivially_copyable_v<SpawnRequest>);
static_assert(std::is_trivially_copyable_v<SpawnReply>);

}  // namespace mp::microproc
