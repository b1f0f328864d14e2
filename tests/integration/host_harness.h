// Starts the real mphost on a loopback port chosen by the kernel, talks to it over HTTP and
// through the real mpctl, and always stops it (by pid). Every wait is bounded.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mp::testing {

// A temporary directory, removed with the object.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  // Writes `text` to the file `name` in it; its path.
  std::string Write(const std::string& name, const std::string& text) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Config entries for the bundled echo and misbehave modules, with extra fields (",\"workers\":3").
std::string Echo(const std::string& extra = "");
std::string Misbehave(const std::string& extra);

// The first number under `key` in JSON text (mpctl --json); ~0 if absent.
uint64_t JsonNumber(const std::string& json, const std::string& key);

// Paths baked in by CMake.
std::string BinDir();     // build/bin: mphost, mpctl, helpers
std::string ModuleDir();  // build/modules

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// One HTTP/1.1 request on a fresh loopback connection ("Connection: close"); status 0 if the
// connection failed.
HttpResponse HttpRequest(int port, const std::string& method, const std::string& target,
                         const std::string& body = "", int timeout_ms = 10000);

// Polls `pred` every 20 ms until it holds (true) or `timeout_ms` have passed.
template <typename P>
bool Eventually(P pred, int timeout_ms = 5000) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

// A listening TCP socket on 127.0.0.1 at a port the kernel chose (`*port`); -1 if it failed.
int ListenLoopback(int* port);
// A TCP connection to 127.0.0.1:`port`; -1 if it failed.
int ConnectLoopback(int port);
// What arrives on `fd` within `ms` (until the peer closes or the time is up).
std::string ReadFor(int fd, int ms);
// Reads from `fd` until `needle` has arrived (true) or `ms` have passed or the peer closed;
// appends what it read to `*out`.
bool ReadUntil(int fd, const std::string& needle, int ms, std::string* out);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs argv (argv[0] a path) with a time limit, capturing stdout and stderr.
CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_ms = 20000);

// How to start a host beyond its arguments.
struct HostOptions {
  std::vector<std::string> args;  // after --listen 127.0.0.1:0 --control <tmp>/control.sock
  std::vector<std::string> env;   // NAME=VALUE, added to the test's environment
  uid_t uid = 0;      // run as this uid (and its gid) when the test runs as root; 0: as the test
  std::string bin_dir;  // where mphost is; empty: BinDir()
  // Wait for "event=serving" (every module started or failed) as well as "event=listening";
  // false: return once the sockets are bound.
  bool wait_serving = true;
  // Listening sockets handed over as systemd does (descriptors 3, 4, ... with LISTEN_FDS,
  // LISTEN_PID and, if given, LISTEN_FDNAMES). The test keeps its own copies.
  std::vector<int> activation_fds;
  std::string activation_names;
  // Both RLIMIT_NOFILE limits for the host; 0: inherited.
  unsigned nofile = 0;
};

// A running mphost. The destructor stops it (SIGTERM, then SIGKILL) if the test did not.
class HostProcess {
 public:
  // Starts `mphost --listen 127.0.0.1:0 --control <tmp>/control.sock` plus `extra_args`;
  // waits (bounded) for its "listening" and "serving" log lines.
  explicit HostProcess(std::vector<std::string> extra_args = {});
  explicit HostProcess(HostOptions options);
  ~HostProcess();
  HostProcess(const HostProcess&) = delete;
  HostProcess& operator=(const HostProcess&) = delete;

  bool started() const { return port_ > 0; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& control() const { return control_; }
  const std::string& dir() const { return dir_; }
  std::string Log();

  CommandResult Mpctl(std::vector<std::string> args);

  // SIGTERM and wait (bounded); returns the exit status (or -1 on timeout, then SIGKILL). For a
  // host that already exited (it failed to start), its exit status.
  int Stop(int timeout_ms = 15000);
  // Waits (bounded) for the host to exit by itself, sending nothing; its exit status, or -1 if
  // it is still running (then Stop() ends it).
  int WaitExit(int timeout_ms = 15000);

  // Direct children of the host right now (the inits of its helpers).
  std::vector<pid_t> Children() const;
  // Every process below the host right now: helper inits, zygotes, workers, builders.
  std::vector<pid_t> Descendants() const;
  // Sends `sig` to `pid` only if it is still a process below this host (through a pidfd, so
  // that a pid the kernel has reused meanwhile is never hit). True if it was sent.
  bool SignalDescendant(pid_t pid, int sig) const;
  // The zygote of `module` (the process that maps its heap and forks its workers), by its
  // title "mphost: zygote MODULE gen N"; -1 if there is none. The newest generation's first.
  pid_t Zygote(const std::string& module) const;

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  int stderr_fd_ = -1;
  std::string dir_;
  std::string control_;
  std::string bin_dir_;
  std::mutex mu_;
  std::string log_;
  std::thread reader_;
  bool stopped_ = false;
  int exit_status_ = -1;  // once stopped_
};

// A temporary directory holding `config` as mphost.json, and an mphost started on it; the
// destructor stops the host and removes the directory. For fixtures: check started().
class ConfiguredHost {
 public:
  ConfiguredHost(const std::string& prefix, const std::string& config);
  ~ConfiguredHost();
  ConfiguredHost(const ConfiguredHost&) = delete;
  ConfiguredHost& operator=(const ConfiguredHost&) = delete;
  HostProcess& host() { return *host_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::unique_ptr<HostProcess> host_;
};

// A copy of the executables and modules in a directory every uid may read (the build tree may
// sit under a home directory an unprivileged user cannot enter), removed with the object.
class StagedInstall {
 public:
  // Copies bin/{mphost,mpctl,mp-builder,mp-zygote} and the given module files.
  explicit StagedInstall(const std::vector<std::string>& module_files);
  ~StagedInstall();
  std::string bin_dir() const { return dir_ + "/bin"; }
  std::string module_dir() const { return dir_ + "/modules"; }
  // A directory for a config and sockets, owned by `uid`.
  std::string MakeDirFor(uid_t uid, const std::string& name) const;

 private:
  std::string dir_;
};

// The unprivileged uid the tests run mphost as when they run as root: nobody.
inline constexpr uid_t kUnprivilegedUid = 65534;

// Processes anywhere on the machine whose short name (comm) is `name`.
std::vector<pid_t> ProcessesNamed(const std::string& name);

// Worker pids from `mpctl ps --json` output (of `module` only, if given).
std::vector<pid_t> WorkerPids(const std::string& ps_json, const std::string& module = "");

// True if `text` is one well-formed JSON value (parsed with Cap'n Proto's JSON codec).
bool ParsesAsJson(const std::string& text);

// A /proc/PID/status field ("Seccomp"), trimmed; empty if absent.
std::string ProcStatusField(pid_t pid, const std::string& field);

// True once /proc/PID is gone or a zombie no longer ours, within `timeout_ms`.
bool WaitGone(pid_t pid, int timeout_ms);

}  // namespace mp::testing
