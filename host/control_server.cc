#include "host/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <string_view>

#include <chrono>
#include <memory>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "host/accounting.h"
#include "host/log.h"
#include "microproc/sandbox.h"
#include "schemas/control.capnp.h"
#include "shm/sys.h"

namespace mp::host {
namespace {

// Fails the RPC with `s`'s message: mpctl prints it and exits 1.
[[noreturn]] void Refuse(const absl::Status& s) {
  throw kj::Exception(kj::Exception::Type::FAILED, __FILE__, __LINE__,
                      kj::str(std::string(s.message()).c_str()));
}

// Every question but `call` is answered from one Snapshot (host/snapshot.h): the same figures
// mpctl prints, /metrics renders and the tests read.
class ControlImpl final : public control::Control::Server {
 public:
  ControlImpl(Supervisor& supervisor, const ControlServer::ConfigReloader& reload_config)
      : supervisor_(supervisor), reload_config_(reload_config) {}

  kj::Promise<void> reloadConfig(ReloadConfigContext context) override {
    return reload_config_().then(
        [context](absl::StatusOr<std::vector<std::string>> changes) mutable {
          if (!changes.ok()) Refuse(changes.status());
          auto out = context.getResults().initChanges(static_cast<unsigned>(changes->size()));
          for (size_t i = 0; i < changes->size(); ++i) out.set(i, (*changes)[i]);
        });
  }

  kj::Promise<void> ps(PsContext context) override {
    return supervisor_.Snapshot(/*with_proc=*/true).then([context](auto snapshot) mutable {
      context.getResults().setWorkers(snapshot->template getRoot<control::Snapshot>().getWorkers());
    });
  }

  kj::Promise<void> modules(ModulesContext context) override {
    return supervisor_.Snapshot(/*with_proc=*/true).then([context](auto snapshot) mutable {
      context.getResults().setModules(snapshot->template getRoot<control::Snapshot>().getModules());
    });
  }

  kj::Promise<void> heap(HeapContext context) override {
    const std::string module = context.getParams().getModule().cStr();
    return supervisor_.Snapshot(/*with_proc=*/true).then([context, module](auto snapshot) mutable {
      auto heaps = snapshot->template getRoot<control::Snapshot>().getHeaps();
      std::vector<control::HeapInfo::Reader> chosen;
      for (auto h : heaps) {
        if (module.empty() || h.getModule() == module.c_str()) chosen.push_back(h);
      }
      auto out = context.getResults().initHeaps(static_cast<unsigned>(chosen.size()));
      for (size_t i = 0; i < chosen.size(); ++i) out.setWithCaveats(i, chosen[i]);
    });
  }

  kj::Promise<void> status(StatusContext context) override {
    return supervisor_.Snapshot(/*with_proc=*/true).then([context](auto snapshot) mutable {
      context.getResults().setStatus(snapshot->template getRoot<control::Snapshot>().getStatus());
    });
  }

  kj::Promise<void> snapshot(SnapshotContext context) override {
    return supervisor_.Snapshot(/*with_proc=*/true).then([context](auto snapshot) mutable {
      context.getResults().setSnapshot(snapshot->template getRoot<control::Snapshot>());
    });
  }

  kj::Promise<void> metrics(MetricsContext context) override {
    return supervisor_.MetricsText().then([context](std::string text) mutable {
      context.getResults().setText(text);
    });
  }

  kj::Promise<void> reload(ReloadContext context) override {
    std::string module = context.getParams().getModule().cStr();
    if (module.empty()) {  // every module, one after the other; the first failure is reported
      auto names = std::make_shared<std::vector<std::string>>(supervisor_.ModuleNames());
      return ReloadEach(names, 0, context);
    }
    return supervisor_.Reload(module).then([context](absl::StatusOr<uint64_t> r) mutable {
      if (!r.ok()) Refuse(r.status());
      context.getResults().setGeneration(*r);
    });
  }

  kj::Promise<void> ReloadEach(std::shared_ptr<std::vector<std::string>> names, size_t i,
                               ReloadContext context) {
    if (i == names->size()) return kj::READY_NOW;
    return supervisor_.Reload((*names)[i]).then(
        [this, names, i, context](absl::StatusOr<uint64_t> r) mutable -> kj::Promise<void> {
          if (!r.ok()) Refuse(r.status());
          context.getResults().setGeneration(*r);
          return ReloadEach(names, i + 1, context);
        });
  }

  kj::Promise<void> restart(RestartContext context) override {
    std::string module = context.getParams().getModule().cStr();
    return supervisor_.Restart(module).then([context](absl::StatusOr<uint64_t> r) mutable {
      if (!r.ok()) Refuse(r.status());
      context.getResults().setWorkers(static_cast<uint32_t>(*r));
    });
  }

  kj::Promise<void> kill(KillContext context) override {
    if (auto s = supervisor_.KillWorker(context.getParams().getPid()); !s.ok()) Refuse(s);
    return kj::READY_NOW;
  }

  kj::Promise<void> drain(DrainContext) override {
    supervisor_.RequestDrain();
    return kj::READY_NOW;
  }

  kj::Promise<void> scale(ScaleContext context) override {
    auto p = context.getParams();
    if (auto s = supervisor_.Scale(p.getModule().cStr(), p.getMin(), p.getMax()); !s.ok()) Refuse(s);
    return kj::READY_NOW;
  }

  kj::Promise<void> call(CallContext context) override {
    auto p = context.getParams();
    CallRequest req;
    req.method = p.hasMethod() && p.getMethod().size() > 0 ? p.getMethod().cStr() : "GET";
    req.path = p.hasPath() && p.getPath().size() > 0 ? p.getPath().cStr() : "/";
    if (req.path[0] != '/') req.path = "/" + req.path;
    req.query = p.getQuery().cStr();
    for (auto h : p.getHeaders()) req.headers.emplace_back(h.getName().cStr(), h.getValue().cStr());
    auto body = p.getBody();
    req.body.assign(reinterpret_cast<const char*>(body.begin()), body.size());
    req.timeout_ms = p.getTimeoutMs();
    std::string module = p.getModule().cStr();
    return supervisor_.Call(module, std::move(req)).then([context](CallResult r) mutable {
      auto results = context.getResults();
      results.setWorkerPid(r.worker_pid);
      results.setHostError(r.from_host);
      auto reply = results.initReply();
      reply.setStatus(r.status);
      auto hs = reply.initHeaders(r.headers.size());
      for (size_t i = 0; i < r.headers.size(); ++i) {
        hs[i].setName(r.headers[i].first);
        hs[i].setValue(r.headers[i].second);
      }
      reply.setBody(kj::arrayPtr(reinterpret_cast<const kj::byte*>(r.body.data()), r.body.size()));
    });
  }

 private:
  Supervisor& supervisor_;
  const ControlServer::ConfigReloader& reload_config_;
};

// If a socket exists at `path`: a live listener is an error, a dead one is removed.
absl::Status ClearStaleSocket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return absl::OkStatus();
  if (!S_ISSOCK(st.st_mode)) {
    return absl::AlreadyExistsError(absl::StrCat("control socket ", path,
                                                 ": a file that is not a socket is in the way"));
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::close(fd);
  if (rc == 0) {
    return absl::AlreadyExistsError(
        absl::StrCat("control socket ", path, " is in use by another running mphost"));
  }
  ::unlink(path.c_str());
  return absl::OkStatus();
}

}  // namespace

ControlServer::ControlServer(kj::AsyncIoContext& io, Supervisor& supervisor,
                             ConfigReloader reload_config)
    : io_(io), supervisor_(supervisor), reload_config_(std::move(reload_config)), tasks_(*this) {}

namespace {
// True if the process `pid` is in a user namespace other than the host's, as far as the host
// may see (a process it may not inspect is judged by its uid alone).
bool InForeignUserNamespace(pid_t pid) {
  char theirs[64], ours[64];
  const std::string path = absl::StrCat("/proc/", pid, "/ns/user");
  const ssize_t n = ::readlink(path.c_str(), theirs, sizeof theirs);
  const ssize_t m = ::readlink("/proc/self/ns/user", ours, sizeof ours);
  if (n <= 0 || m <= 0) return false;
  return std::string_view(theirs, static_cast<size_t>(n)) != std::string_view(ours, static_cast<size_t>(m));
}

// True if `uid` belongs to group `gid` (primary or supplementary).
bool InGroup(uid_t uid, gid_t gid) {
  passwd pw{}, *found = nullptr;
  char buf[4096];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) != 0 || found == nullptr) return false;
  if (pw.pw_gid == gid) return true;
  gid_t groups[256];
  int n = 256;
  if (::getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0) return false;
  for (int i = 0; i < n; ++i) {
    if (groups[i] == gid) return true;
  }
  return false;
}
}  // namespace

ControlServer::~ControlServer() {
  listener_ = nullptr;
  if (!path_.empty()) ::unlink(path_.c_str());
}

void ControlServer::taskFailed(kj::Exception&& exception) {
  if (exception.getType() != kj::Exception::Type::DISCONNECTED) {
    LogEvent("control_error", {{"what", exception.getDescription().cStr()}});
  }
}

absl::Status ControlServer::SetGroup(const std::string& group) {
  if (group.empty()) return absl::OkStatus();
  struct group* g = ::getgrnam(group.c_str());
  if (g == nullptr) return absl::NotFoundError(absl::StrCat("control group '", group, "' does not exist"));
  group_ = g->gr_gid;
  return absl::OkStatus();
}

absl::Status ControlServer::Adopt(UniqueFd socket, const std::string& group) {
  if (auto s = SetGroup(group); !s.ok()) return s;
  listener_ = io_.lowLevelProvider->wrapListenSocketFd(
      socket.release(), kj::LowLevelAsyncIoProvider::TAKE_OWNERSHIP |
                            kj::LowLevelAsyncIoProvider::ALREADY_CLOEXEC |
                            kj::LowLevelAsyncIoProvider::ALREADY_NONBLOCK);
  server_ = kj::heap<capnp::TwoPartyServer>(kj::heap<ControlImpl>(supervisor_, reload_config_));
  return absl::OkStatus();
}

absl::Status ControlServer::Listen(const std::string& path, const std::string& group) {
  if (auto s = SetGroup(group); !s.ok()) return s;
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("control socket ", path, ": path too long"));
  }
  if (auto s = ClearStaleSocket(path); !s.ok()) return s;
  // Created 0600 from the start: the umask applies at bind(), so no window exists in which
  // another user could connect.
  const mode_t old = ::umask(group_ == static_cast<gid_t>(-1) ? 0177 : 0117);
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                auto addr = io_.provider->getNetwork()
                                .parseAddress(kj::str("unix:", path.c_str()))
                                .wait(io_.waitScope);
                listener_ = addr->listen();
              })) {
    ::umask(old);
    return absl::UnavailableError(
        absl::StrCat("control socket ", path, ": ", e->getDescription().cStr()));
  }
  ::umask(old);
  if (group_ != static_cast<gid_t>(-1)) {
    if (::chown(path.c_str(), static_cast<uid_t>(-1), group_) != 0) {
      return ErrnoStatus(absl::StrCat("chown(", path, ", group ", group, ")"), errno);
    }
  }
  const mode_t mode = group_ == static_cast<gid_t>(-1) ? 0600 : 0660;
  if (::chmod(path.c_str(), mode) != 0) return ErrnoStatus(absl::StrCat("chmod(", path, ")"), errno);
  path_ = path;
  server_ = kj::heap<capnp::TwoPartyServer>(kj::heap<ControlImpl>(supervisor_, reload_config_));
  return absl::OkStatus();
}

kj::Promise<void> ControlServer::Run() { return AcceptLoop(); }

kj::Promise<void> ControlServer::AcceptLoop() {
  return listener_->accept().then([this](kj::Own<kj::AsyncIoStream> connection) {
    ucred cred{};
    uint len = sizeof cred;
    bool allowed = false;
    if (kj::runCatchingExceptions(
            [&] { connection->getsockopt(SOL_SOCKET, SO_PEERCRED, &cred, &len); }) == nullptr) {
      allowed = cred.uid == ::getuid() || cred.uid == 0 ||
                (group_ != static_cast<gid_t>(-1) && InGroup(cred.uid, group_));
    }
    // Module code runs in user namespaces of its own, mapped to the host's uid when the host
    // is unprivileged: the uid alone would let it in (seccomp keeps it from sockets; this is the
    // second lock). The host can read the namespace of every process of its helpers.
    const bool foreign = allowed && InForeignUserNamespace(cred.pid);
    if (!allowed || foreign) {
      LogEvent(LogLevel::kWarn, "control_refused",
               {{"uid", absl::StrCat(cred.uid)},
                {"pid", absl::StrCat(cred.pid)},
                {"why", foreign ? "in another user namespace" : "uid not allowed"}});
    } else {
      server_->accept(kj::mv(connection));
    }
    return AcceptLoop();
  });
}

}  // namespace mp::host
