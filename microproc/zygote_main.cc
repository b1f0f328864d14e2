// mp-zygote: one per module generation. The supervisor starts it in namespaces of its own
// (host/helper_launcher.h) with
//   fd 2: a pipe for its stderr     fd 3: the control socket (SOCK_SEQPACKET)
//   fd 4: the sealed heap memfd     fd 5: the init socket    fd 6: the plugin, a sealed memfd
// and argv only its process title. Its init (microproc/helper_init.h) forks the stage, which
// receives the HelperSpec, maps the heap private and read-only and verifies it, enters the
// load sandbox, loads the plugin, tightens the sandbox, says hello, then clones one
// microprocess per SpawnRequest until the socket closes.
//
// Microprocesses are cloned with CLONE_PARENT: their parent is the helper's init, which reaps
// them and reports every exit status to the supervisor. The supervisor gets a pidfd of each.
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "microproc/fd_passing.h"
#include "microproc/helper_init.h"
#include "microproc/helper_protocol.h"
#include "microproc/helper_spec.h"
#include "microproc/helper_stage.h"
#include "microproc/landlock.h"
#include "microproc/plugin.h"
#include "microproc/sandbox.h"
#include "microproc/worker.h"
#include "shm/module_heap.h"
#include "shm/ring.h"
#include "shm/segment.h"

namespace mp::microproc {
namespace {

// The process's argv, for titles.
int g_argc = 0;
char** g_argv = nullptr;

void SendHello(bool ok, absl::string_view version, absl::string_view message) {
  ZygoteHello hello{};
  hello.kind = MessageKind::kHello;
  hello.ok = ok ? 1 : 0;
  hello.abi_version = MP_MODULE_ABI_VERSION;
  version.copy(hello.module_version, sizeof hello.module_version - 1);
  message.copy(hello.message, sizeof hello.message - 1);
  (void)SendWithFds(kHelperSocketFd, std::as_bytes(std::span(&hello, 1)), {});
}

[[noreturn]] void Die(absl::string_view module, const absl::Status& s) {
  std::fprintf(stderr, "mp-zygote[%s]: %s\n", std::string(module).c_str(),
               std::string(s.message()).c_str());
  _exit(kExitSetupFailed);
}

// The worker's doorbell is moved to this fd, so that a filter compiled in advance can name it.
constexpr int kWorkerDoorbellFd = 3;

// The new microprocess, between clone and its first call. Never returns.
[[noreturn]] void BecomeWorker(const StageSpec& spec, UniqueFd ring_fd, UniqueFd doorbell_fd,
                               UniqueFd stderr_fd, const SpawnRequest& req, const Plugin& plugin,
                               const shm::HeapView& heap,
                               const std::optional<CompiledFilter>& filter) {
  // Its own stderr pipe: the host labels each line with this worker's pid.
  if (::dup2(stderr_fd.get(), 2) < 0) _exit(kExitSetupFailed);
  auto ring = shm::RingFile::Attach(std::move(ring_fd));
  if (!ring.ok()) Die(spec.module, ring.status());
  // From here a forbidden syscall is this worker's, reported in its ring (not as the zygote's).
  if (auto s = InstallFaultReporter({&ring->header()->worker.forbidden_syscall, -1}); !s.ok()) {
    Die(spec.module, s);
  }
  // Over the control socket: the worker must not keep it.
  if (::dup2(doorbell_fd.get(), kWorkerDoorbellFd) < 0) _exit(kExitSetupFailed);
  const int bell = kWorkerDoorbellFd;
  // Everything but stderr and the doorbell: the ring and heap stay mapped, their fds go.
  if (auto s = CloseFdsExcept({2, bell}); !s.ok()) Die(spec.module, s);
  const std::string title(g_argv[0]);
  SetProcessTitle(g_argc, g_argv, absl::StrReplaceAll(title, {{"mphost: zygote", "mphost: worker"}}));
  if (spec.layers.rlimits) {
    if (auto s = ApplyRlimits(req.address_space_bytes, 16); !s.ok()) Die(spec.module, s);
  }
  if (auto s = SetNoNewPrivs(); !s.ok()) Die(spec.module, s);
  if (auto s = DropCapabilities(/*keep_sys_admin=*/false); !s.ok()) Die(spec.module, s);
  if (spec.layers.landlock && RestrictFilesystemWithLandlock().ok()) {
    ring->header()->worker.landlock.store(1, std::memory_order_release);
  }
  if (spec.layers.seccomp) {
    auto s = filter ? LoadCompiledFilter(*filter) : InstallWorkerSeccomp({bell});
    if (!s.ok()) Die(spec.module, s);
  }
  mp_heap module_heap = MakeModuleHeap(heap);
  ServeCalls(*ring, bell, *plugin.module, module_heap, {req.spin_iterations});
  _exit(kExitOk);
}

// Answers spawn requests until the supervisor closes the control socket.
int ServeSpawns(const StageSpec& spec, const Plugin& plugin, const shm::HeapView& heap,
                const std::optional<CompiledFilter>& filter) {
  const bool pid_namespaces = spec.layers.namespaces;
  for (;;) {
    SpawnRequest req{};
    std::vector<UniqueFd> fds;
    auto n = ReceiveWithFds(kHelperSocketFd, std::as_writable_bytes(std::span(&req, 1)), &fds, 3,
                            -1);
    if (!n.ok() || *n == 0) return kExitOk;  // the supervisor closed the socket: we are done
    if (*n != sizeof req || req.kind != MessageKind::kSpawnRequest || fds.size() != 3) continue;
    SpawnReply reply{};
    reply.kind = MessageKind::kSpawnReply;
    reply.worker_id = req.worker_id;
    // Like fork(), but the child's parent is init, the host gets a pidfd of it, and (with
    // namespaces) it is pid 1 of a pid namespace of its own: it can see no other process.
    const unsigned long flags =
        CLONE_PARENT | CLONE_PIDFD | SIGCHLD | (pid_namespaces ? CLONE_NEWPID : 0);
    int pidfd = -1;
    const long pid = ::syscall(SYS_clone, flags, nullptr, &pidfd, nullptr, 0);
    if (pid == 0) {
      BecomeWorker(spec, std::move(fds[0]), std::move(fds[1]), std::move(fds[2]), req, plugin,
                   heap, filter);
    }
    UniqueFd owned_pidfd(pid > 0 ? pidfd : -1);
    if (pid < 0) {
      reply.error = errno;
    } else {
      reply.pid = static_cast<int32_t>(pid);
    }
    fds.clear();  // our copies of the worker's descriptors
    const int attached[1] = {owned_pidfd.get()};
    (void)SendWithFds(kHelperSocketFd, std::as_bytes(std::span(&reply, 1)),
                      owned_pidfd ? std::span<const int>(attached) : std::span<const int>());
  }
}

int Stage() {
  auto spec = ReceiveStageSpec(kHelperSocketFd, 10000);
  if (!spec.ok()) {
    SendHello(false, "", absl::StrCat("mp-zygote: ", spec.status().message()));
    return kExitSetupFailed;
  }
  const std::string& module = spec->module;
  auto fail = [&](const absl::Status& s) {
    SendHello(false, "", s.message());
    return kExitFailed;
  };
  auto segment = shm::Segment::Adopt(UniqueFd(kHelperHeapFd), "heap");
  if (!segment.ok()) return fail(segment.status());
  if (!segment->IsSealed()) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("module '", module, "': heap memfd is not sealed")));
  }
  // Private and read-only: a stray write faults, and even a later mprotect could only ever
  // produce a private copy; the memfd itself is sealed against writes. In copy-on-write mode
  // the mapping is writable, and a write copies that page into the writing process only.
  auto mapping = segment->MapPrivate(spec->heap_copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ);
  if (!mapping.ok()) return fail(mapping.status());
  auto heap = shm::OpenHeap(mapping->data(), mapping->size(), /*verify_checksum=*/true);
  if (!heap.ok()) {
    return fail(absl::DataLossError(absl::StrCat("module '", module, "': ", heap.status().message())));
  }
  // Workers in pid namespaces of their own all have pid 1 and the doorbell at the same fd: one
  // filter, compiled here once (before the sandbox: compiling needs a memfd), serves them all.
  std::optional<CompiledFilter> filter;
  if (spec->layers.seccomp && spec->layers.namespaces) {
    auto compiled = CompileWorkerSeccomp(kWorkerDoorbellFd, 1);
    if (!compiled.ok()) return fail(compiled.status());
    filter = *std::move(compiled);
  }
  if (auto s = EnterLoadSandbox({HelperRole::kZygote, spec->layers, spec->address_space_bytes,
                                 {2, kHelperSocketFd, kHelperHeapFd, kHelperPluginFd}});
      !s.ok()) {
    return fail(absl::InternalError(absl::StrCat("module '", module, "': entering the sandbox: ",
                                                 s.message())));
  }
  // Module code runs from here on: the plugin's constructors.
  auto plugin = LoadPluginFromFd(module, kHelperPluginFd, spec->plugin_path);
  ::close(kHelperPluginFd);
  if (!plugin.ok()) return fail(plugin.status());
  if (auto s = EnterLoadedSandbox(spec->layers); !s.ok()) return fail(s);
  SendHello(true, plugin->module->version ? plugin->module->version : "", "ready");
  return ServeSpawns(*spec, *plugin, *heap, filter);
}

}  // namespace
}  // namespace mp::microproc

int main(int argc, char** argv) {
  using namespace mp::microproc;
  g_argc = argc;
  g_argv = argv;
  const std::string title(argc > 0 ? argv[0] : "mphost: zygote");
  SetProcessTitle(argc, argv, absl::StrReplaceAll(title, {{"mphost: ", "mphost: init "}}));
  RunHelperInit(
      [&] {
        SetProcessTitle(g_argc, g_argv, title);
        return Stage();
      },
      {.exit_with_stage = false});
}
