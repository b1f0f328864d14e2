// mp-zygote: one per module generation. Exec'd by the supervisor (a clean image, not a copy of
// it) with
//   fd 3: a SOCK_SEQPACKET control socket to the supervisor
//   fd 4: the sealed heap memfd
// and argv: --module NAME --plugin PATH. It maps the heap private and read-only, validates its
// header and checksum, loads the plugin, says hello, then forks one microprocess per
// SpawnRequest until the socket closes.
//
// Microprocesses are created with CLONE_PARENT so that the supervisor is their parent: it
// learns every exit and its status through a pidfd, whatever happens to the zygote.
#include <poll.h>
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
#include "microproc/fd_passing.h"
#include "microproc/namespaces.h"
#include "microproc/plugin.h"
#include "microproc/sandbox.h"
#include "microproc/worker.h"
#include "microproc/zygote_protocol.h"
#include "shm/module_heap.h"
#include "shm/ring.h"
#include "shm/segment.h"

namespace mp::microproc {
namespace {

void SendHello(bool ok, absl::string_view version, absl::string_view message) {
  ZygoteHello hello{};
  hello.ok = ok ? 1 : 0;
  hello.abi_version = MP_MODULE_ABI_VERSION;
  version.copy(hello.module_version, sizeof hello.module_version - 1);
  message.copy(hello.message, sizeof hello.message - 1);
  (void)SendWithFds(kHelperSocketFd, std::as_bytes(std::span(&hello, 1)), {});
}

[[noreturn]] void Die(absl::string_view module, const absl::Status& s) {
  std::fprintf(stderr, "mp-zygote[%s]: %s\n", std::string(module).c_str(),
               std::string(s.message()).c_str());
  _exit(70);
}

// The new microprocess, between clone and its first call. Never returns.
// Which sandbox layers the config switched on (--sandbox seccomp,landlock,namespaces,rlimits).
struct Layers {
  bool seccomp = true;
  bool landlock = true;
  bool namespaces = true;
  bool rlimits = true;
};

// True if the process behind `pidfd` has exited (its pidfd polls readable).
bool Exited(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1;
}

// The worker's doorbell is moved to this fd, so that a filter compiled in advance can name it.
constexpr int kWorkerDoorbellFd = 3;

[[noreturn]] void BecomeWorker(absl::string_view module_name, int host_pidfd, UniqueFd ring_fd,
                               UniqueFd doorbell_fd, const SpawnRequest& req, const Plugin& plugin,
                               const shm::HeapView& heap, const Layers& layers,
                               const std::optional<CompiledFilter>& filter) {
  if (auto s = SetParentDeathSignal(); !s.ok()) Die(module_name, s);
  // The host died before the signal was armed? (getppid() is 0 in a new pid namespace, so ask
  // the host's pidfd instead.)
  if (Exited(host_pidfd)) _exit(71);
  auto ring = shm::RingFile::Attach(std::move(ring_fd));
  if (!ring.ok()) Die(module_name, ring.status());
  if (::dup2(doorbell_fd.get(), kWorkerDoorbellFd) < 0) _exit(72);
  const int bell = kWorkerDoorbellFd;
  // Everything but stderr and the doorbell: the ring and heap stay mapped, their fds go.
  if (auto s = CloseFdsExcept({2, bell}); !s.ok()) Die(module_name, s);
  if (layers.rlimits) {
    if (auto s = ApplyRlimits(req.address_space_bytes, 16); !s.ok()) Die(module_name, s);
  }
  if (auto s = SetNoNewPrivs(); !s.ok()) Die(module_name, s);
  if (layers.landlock && RestrictFilesystemWithLandlock().ok()) {
    ring->header()->worker.landlock.store(1, std::memory_order_release);
  }
  if (auto s = InstallSigsysReporter(&ring->header()->worker.forbidden_syscall); !s.ok()) {
    Die(module_name, s);
  }
  if (layers.seccomp) {
    auto s = filter ? LoadCompiledFilter(*filter) : InstallWorkerSeccomp({bell});
    if (!s.ok()) Die(module_name, s);
  }
  mp_heap module_heap = MakeModuleHeap(heap);
  ServeCalls(*ring, bell, *plugin.module, module_heap, {req.spin_iterations});
  _exit(0);
}

int Main(int argc, char** argv) {
  std::string module, plugin_path;
  bool copy_on_write = false;
  Layers layers;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--module") module = argv[i + 1];
    if (flag == "--plugin") plugin_path = argv[i + 1];
    if (flag == "--heap-mode") copy_on_write = std::string(argv[i + 1]) == "cow";
    if (flag == "--sandbox") {
      const std::string on = absl::StrCat(",", argv[i + 1], ",");
      layers.seccomp = on.find(",seccomp,") != std::string::npos;
      layers.landlock = on.find(",landlock,") != std::string::npos;
      layers.namespaces = on.find(",namespaces,") != std::string::npos;
      layers.rlimits = on.find(",rlimits,") != std::string::npos;
    }
  }
  if (auto s = SetParentDeathSignal(); !s.ok()) Die(module, s);
  // A pidfd of the host, opened while it is still visible (before any namespace): workers use
  // it to check that the host is alive.
  const int host_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getppid(), 0));
  if (host_pidfd < 0) Die(module, absl::InternalError("pidfd_open(host) failed"));

  auto segment = shm::Segment::Adopt(UniqueFd(kHelperHeapFd), "heap");
  if (!segment.ok()) {
    SendHello(false, "", segment.status().message());
    return 1;
  }
  if (!segment->IsSealed()) {
    SendHello(false, "", absl::StrCat("module '", module, "': heap memfd is not sealed"));
    return 1;
  }
  // Private and read-only: a stray write faults, and even a later mprotect could only ever
  // produce a private copy; the memfd itself is sealed against writes. In copy-on-write mode
  // the mapping is writable, and a write copies that page into the writing process only.
  auto mapping = segment->MapPrivate(copy_on_write ? PROT_READ | PROT_WRITE : PROT_READ);
  if (!mapping.ok()) {
    SendHello(false, "", mapping.status().message());
    return 1;
  }
  auto heap = shm::OpenHeap(mapping->data(), mapping->size(), /*verify_checksum=*/true);
  if (!heap.ok()) {
    SendHello(false, "", absl::StrCat("module '", module, "': ", heap.status().message()));
    return 1;
  }
  auto plugin = LoadPlugin(module, plugin_path);
  if (!plugin.ok()) {
    SendHello(false, "", plugin.status().message());
    return 1;
  }
  // Namespaces last: the plugin is loaded and the heap mapped, nothing else is needed from the
  // host's view of the system.
  std::string ns_problem;
  bool pid_namespaces = false;
  if (layers.namespaces) {
    ns_problem = EnterZygoteNamespaces();
    pid_namespaces = ns_problem.empty();
  }
  // Workers in pid namespaces of their own all have pid 1 and the doorbell at the same fd: one
  // filter, compiled here once, serves them all.
  std::optional<CompiledFilter> filter;
  if (layers.seccomp && pid_namespaces) {
    auto compiled = CompileWorkerSeccomp(kWorkerDoorbellFd, 1);
    if (compiled.ok()) filter = *std::move(compiled);
  }
  SendHello(true, plugin->module->version ? plugin->module->version : "",
            ns_problem.empty() ? "ready" : absl::StrCat("ready without namespaces: ", ns_problem));

  for (;;) {
    SpawnRequest req;
    std::vector<UniqueFd> fds;
    auto n = ReceiveWithFds(kHelperSocketFd, std::as_writable_bytes(std::span(&req, 1)), &fds, 2,
                            -1);
    if (!n.ok() || *n == 0) return 0;  // the supervisor closed the socket: we are done
    if (*n != sizeof req || fds.size() != 2) continue;
    SpawnReply reply{req.worker_id, 0, 0};
    // Like fork(), but the child's parent is the supervisor (our parent), and the child is
    // pid 1 of a pid namespace of its own: it can see no other process.
    unsigned long flags = CLONE_PARENT | SIGCHLD | (pid_namespaces ? CLONE_NEWPID : 0);
    long pid = ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, 0);
    if (pid < 0 && pid_namespaces && (errno == EINVAL || errno == EPERM || errno == ENOSPC)) {
      std::fprintf(stderr, "mp-zygote[%s]: no pid namespace for workers: %s\n", module.c_str(),
                   strerror(errno));
      pid_namespaces = false;
      filter.reset();  // compiled for pid 1
      pid = ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr, nullptr, 0);
    }
    if (pid == 0) {
      BecomeWorker(module, host_pidfd, std::move(fds[0]), std::move(fds[1]), req, *plugin, *heap,
                   layers, filter);
    }
    if (pid < 0) {
      reply.error = errno;
    } else {
      reply.pid = static_cast<int32_t>(pid);
    }
    (void)SendWithFds(kHelperSocketFd, std::as_bytes(std::span(&reply, 1)), {});
  }
}

}  // namespace
}  // namespace mp::microproc

int main(int argc, char** argv) { return mp::microproc::Main(argc, argv); }
