// What passes between the supervisor and its helpers (mp-builder, mp-zygote) besides the
// HelperSpec (schemas/helper.capnp): fixed-size structs over SOCK_SEQPACKET sockets, one
// message per struct, each starting with its kind. Both ends are built from this tree at the
// same commit. The supervisor validates every message it receives by kind and exact size: a
// helper that has loaded a plugin runs module code, and only its init (the host's own code,
// which never loads a plugin) is trusted.
//
// A helper is two processes (docs/security.md):
//   init   pid 1 of the helper's namespaces; reaps every process in them and reports each
//          exit on the init socket; when the host closes that socket (or dies) init exits,
//          and the kernel kills everything left in its pid namespace.
//   stage  init's first child: enters the sandbox, then loads the plugin and builds the heap
//          (mp-builder) or forks microprocesses (mp-zygote).
#pragma once

#include <cstdint>
#include <type_traits>

#include "microproc/exit_status.h"

namespace mp::microproc {

// Descriptors a helper finds at start (the supervisor places them).
inline constexpr int kHelperStderrFd = 2;      // a pipe the host reads (module output)
inline constexpr int kHelperSocketFd = 3;      // control socket: spec in, results out (stage)
inline constexpr int kHelperHeapFd = 4;        // the heap memfd (sealed for a zygote)
inline constexpr int kHelperInitFd = 5;        // init's report socket (init only)
inline constexpr int kHelperPluginFd = 6;      // the plugin's bytes, a sealed memfd
inline constexpr int kHelperFirstDataFd = 7;   // builder: data files, in spec order
inline constexpr int kMaxDataFiles = 16;

// Largest HelperSpec message, in bytes.
inline constexpr uint32_t kMaxHelperSpecBytes = 64 << 10;

enum class MessageKind : uint32_t {
  kHello = 1,         // zygote stage → host, once
  kSpawnRequest = 2,  // host → zygote stage
  kSpawnReply = 3,    // zygote stage → host
  kBuildResult = 4,   // builder stage → host, once
  kFault = 5,         // any stage → host, from its SIGSYS handler, just before it exits
  kStageStarted = 6,  // init → host, once, with a pidfd of the stage attached
  kChildExited = 7,   // init → host, for each process of the helper that ends
  kInitNote = 8,      // init → host: a layer it could not set up (e.g. a fresh /proc)
};

// Zygote stage → host, once: the heap is mapped and verified, the plugin loaded.
struct ZygoteHello {
  MessageKind kind = MessageKind::kHello;
  uint32_t ok;           // 1 ready, 0 failed (message says why; the stage then exits)
  uint32_t abi_version;  // of the plugin
  uint32_t reserved;
  char module_version[32];
  char message[440];
};

// Host → zygote, with three fds attached: the worker's ring memfd, its doorbell eventfd and
// the write end of its stderr pipe.
struct SpawnRequest {
  MessageKind kind = MessageKind::kSpawnRequest;
  uint32_t spin_iterations;
  uint64_t worker_id;
  uint64_t address_space_bytes;  // RLIMIT_AS for the worker (0: none)
};

// Zygote → host, with a pidfd of the new microprocess attached on success. Its parent is the
// helper's init. `pid` is as init sees it; the host checks it against the pidfd.
struct SpawnReply {
  MessageKind kind = MessageKind::kSpawnReply;
  int32_t pid;    // > 0 on success
  uint64_t worker_id;
  int32_t error;  // errno of the failed clone
  uint32_t reserved;
};

enum class BuildOutcome : uint32_t {
  kOk = 1,       // heap built; `text` is the module's version
  kInvalid = 2,  // the plugin or the setup is unusable: a configuration error
  kFailed = 3,   // the module's build failed; `text` says why
};

// Builder stage → host, once.
struct BuildResult {
  MessageKind kind = MessageKind::kBuildResult;
  BuildOutcome outcome;
  char text[1016];
};

// Any stage → host, from its SIGSYS handler: it called `syscall_nr`, outside its allowlist.
struct FaultReport {
  MessageKind kind = MessageKind::kFault;
  int32_t syscall_nr;
};

// Init → host.
struct InitReport {
  MessageKind kind;    // kStageStarted, kChildExited, kInitNote
  int32_t pid;         // as init sees it
  int32_t code;        // kChildExited: CLD_EXITED, CLD_KILLED or CLD_DUMPED (si_code)
  int32_t status;      // exit status or signal number (si_status)
  char note[240];      // kInitNote
};

static_assert(std::is_trivially_copyable_v<ZygoteHello>);
static_assert(std::is_trivially_copyable_v<SpawnRequest>);
static_assert(std::is_trivially_copyable_v<SpawnReply>);
static_assert(std::is_trivially_copyable_v<BuildResult>);
static_assert(std::is_trivially_copyable_v<FaultReport>);
static_assert(std::is_trivially_copyable_v<InitReport>);

// The largest message a helper sends (receive buffers are this size).
inline constexpr size_t kMaxHelperMessageBytes = 1024;
static_assert(sizeof(ZygoteHello) <= kMaxHelperMessageBytes);
static_assert(sizeof(BuildResult) <= kMaxHelperMessageBytes);
static_assert(sizeof(InitReport) <= kMaxHelperMessageBytes);

}  // namespace mp::microproc
