#include "host_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/compat/json.h>
#include <capnp/message.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

extern char** environ;

namespace mp::testing {
namespace {

using Clock = std::chrono::steady_clock;

int64_t MsLeft(Clock::time_point deadline) {
  return std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
  return s;
}

// Reads `fd` until EOF or the deadline.
void ReadAll(int fd, std::string* out, Clock::time_point deadline) {
  char buf[8192];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(MsLeft(deadline));
    if (left == 0 || ::poll(&p, 1, left) <= 0) return;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return;
    out->append(buf, static_cast<size_t>(n));
  }
}

// argv as execv wants it. Built before fork(): the test process has other threads (stderr
// readers), so the child may not allocate between fork and exec.
std::vector<char*> ExecArgs(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  return args;
}

}  // namespace

std::string BinDir() { return MP_TEST_BIN_DIR; }
std::string ModuleDir() { return MP_TEST_MODULE_DIR; }

HttpResponse HttpRequest(int port, const std::string& method, const std::string& target,
                         const std::string& body, int timeout_ms) {
  HttpResponse r;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return r;
  }
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n";
  if (!body.empty() || method == "POST") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return r;
  }
  // Read the head, then exactly Content-Length bytes (the server may keep the connection).
  std::string raw;
  size_t end = std::string::npos;
  size_t want = std::string::npos;
  char buf[8192];
  while (want == std::string::npos || raw.size() < want) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(MsLeft(deadline));
    if (left == 0 || ::poll(&p, 1, left) <= 0) break;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    raw.append(buf, static_cast<size_t>(n));
    if (end == std::string::npos && (end = raw.find("\r\n\r\n")) != std::string::npos) {
      std::smatch m;
      std::string head = Lower(raw.substr(0, end));
      if (std::regex_search(head, m, std::regex("\r\ncontent-length: *([0-9]+)"))) {
        want = end + 4 + std::stoul(m[1]);
      }
    }
  }
  ::close(fd);
  if (end == std::string::npos) return r;
  std::istringstream head(raw.substr(0, end));
  std::string line;
  std::getline(head, line);
  if (line.size() < 12) return r;
  r.status = std::atoi(line.c_str() + 9);
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(' '));
    r.headers[Lower(line.substr(0, colon))] = value;
  }
  r.body = raw.substr(end + 4);
  return r;
}

CommandResult RunCommand(const std::vector<std::string>& argv, int timeout_ms) {
  CommandResult result;
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return result;
  std::vector<char*> args = ExecArgs(argv);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    ::execv(args[0], args.data());
    _exit(127);
  }
  ::close(out[1]);
  ::close(err[1]);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  std::thread err_reader([&] { ReadAll(err[0], &result.err, deadline); });
  ReadAll(out[0], &result.out, deadline);
  err_reader.join();
  ::close(out[0]);
  ::close(err[0]);
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (MsLeft(deadline) == 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

TempDir::TempDir() {
  char tmpl[] = "/tmp/mphost-test-XXXXXX";
  path_ = ::mkdtemp(tmpl);
}

TempDir::~TempDir() { std::filesystem::remove_all(path_); }

std::string TempDir::Write(const std::string& name, const std::string& text) const {
  std::string p = path_ + "/" + name;
  std::ofstream(p) << text;
  return p;
}

std::string Echo(const std::string& extra) {
  return "{\"name\":\"echo\",\"plugin\":\"" + ModuleDir() + "/libecho.so\"" + extra + "}";
}

std::string Misbehave(const std::string& extra) {
  return "{\"name\":\"misbehave\",\"plugin\":\"" + ModuleDir() + "/libmisbehave.so\"" + extra +
         "}";
}

uint64_t JsonNumber(const std::string& json, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(json, m, std::regex("\"" + key + "\":([0-9]+)"))) return ~0ull;
  return std::stoull(m[1]);
}

int ListenLoopback(int* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  *port = ntohs(a.sin_port);
  return fd;
}

int ConnectLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string ReadFor(int fd, int ms) {
  std::string out;
  char buf[8192];
  const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

bool ReadUntil(int fd, const std::string& needle, int ms, std::string* out) {
  char buf[8192];
  const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  while (out->find(needle) == std::string::npos) {
    if (Clock::now() >= deadline) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return out->find(needle) != std::string::npos;
    out->append(buf, static_cast<size_t>(n));
  }
  return true;
}

ConfiguredHost::ConfiguredHost(const std::string& prefix, const std::string& config) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  dir_ = ::mkdtemp(tmpl.data());
  std::ofstream(dir_ + "/mphost.json") << config;
  host_ = std::make_unique<HostProcess>(std::vector<std::string>{"--config", dir_ + "/mphost.json"});
}

ConfiguredHost::~ConfiguredHost() {
  host_.reset();
  std::filesystem::remove_all(dir_);
}

HostProcess::HostProcess(std::vector<std::string> extra_args)
    : HostProcess([&] {
        HostOptions options;
        options.args = std::move(extra_args);
        return options;
      }()) {}

HostProcess::HostProcess(HostOptions options) {
  char tmpl[] = "/tmp/mphost-test-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  const bool drop = options.uid != 0 && ::getuid() == 0;
  if (drop && ::chown(dir_.c_str(), options.uid, options.uid) != 0) return;
  control_ = dir_ + "/control.sock";
  bin_dir_ = options.bin_dir.empty() ? BinDir() : options.bin_dir;
  std::vector<std::string> argv = {bin_dir_ + "/mphost", "--listen", "127.0.0.1:0", "--control",
                                   control_};
  argv.insert(argv.end(), options.args.begin(), options.args.end());
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) return;
  std::vector<char*> args = ExecArgs(argv);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  env_strings.insert(env_strings.end(), options.env.begin(), options.env.end());
  const std::vector<int> activation = options.activation_fds;
  char listen_pid[32] = "LISTEN_PID=";  // the child writes its pid in
  if (!activation.empty()) {
    env_strings.push_back("LISTEN_FDS=" + std::to_string(activation.size()));
    if (!options.activation_names.empty()) env_strings.push_back("LISTEN_FDNAMES=" + options.activation_names);
  }
  std::vector<char*> envp = ExecArgs(env_strings);
  if (!activation.empty()) envp.insert(envp.end() - 1, listen_pid);
  const uid_t uid = options.uid;
  const unsigned nofile = options.nofile;
  pid_ = ::fork();
  if (pid_ == 0) {
    if (drop && (::setgroups(0, nullptr) != 0 || ::setresgid(uid, uid, uid) != 0 ||
                 ::setresuid(uid, uid, uid) != 0)) {
      _exit(126);
    }
    if (nofile > 0) {
      const rlimit limit{nofile, nofile};
      if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(125);
    }
    if (!activation.empty()) {
      // Above every descriptor first, then down to 3, 4, ...: no dup2 overwrites a source.
      std::vector<int> high;
      for (int fd : activation) high.push_back(::fcntl(fd, F_DUPFD, 100));
      for (size_t i = 0; i < high.size(); ++i) ::dup2(high[i], 3 + static_cast<int>(i));
      char digits[16];
      int n = 0;
      for (pid_t p = ::getpid(); p > 0; p /= 10) digits[n++] = static_cast<char>('0' + p % 10);
      char* out = listen_pid + 11;
      while (n > 0) *out++ = digits[--n];
      *out = '\0';
    }
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a host never outlives its test, however it ends
    ::dup2(err[1], 2);
    ::execve(args[0], args.data(), envp.data());
    _exit(127);
  }
  ::close(err[1]);
  stderr_fd_ = err[0];
  reader_ = std::thread([this] {
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(stderr_fd_, buf, sizeof buf);
      if (n <= 0) return;
      std::lock_guard<std::mutex> lock(mu_);
      log_.append(buf, static_cast<size_t>(n));
    }
  });
  const std::regex listening("event=listening http=127\\.0\\.0\\.1:([0-9]+)");
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (MsLeft(deadline) > 0) {
    std::smatch m;
    std::string log = Log();
    if (std::regex_search(log, m, listening) &&
        (!options.wait_serving || log.find("event=serving") != std::string::npos)) {
      port_ = std::stoi(m[1]);
      return;
    }
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      stopped_ = true;
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

HostProcess::~HostProcess() {
  if (!stopped_ && pid_ > 0) Stop();
  if (reader_.joinable()) reader_.join();
  if (stderr_fd_ >= 0) ::close(stderr_fd_);
  std::string cmd = "rm -rf '" + dir_ + "'";
  int unused = ::system(cmd.c_str());
  (void)unused;
}

std::string HostProcess::Log() {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

CommandResult HostProcess::Mpctl(std::vector<std::string> args) {
  std::vector<std::string> argv = {bin_dir_ + "/mpctl", "--control", control_};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

int HostProcess::WaitExit(int timeout_ms) {
  if (stopped_) return exit_status_;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (MsLeft(deadline) > 0) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      stopped_ = true;
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_status_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

int HostProcess::Stop(int timeout_ms) {
  if (stopped_) return exit_status_;
  stopped_ = true;
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (MsLeft(deadline) > 0) {
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0 && errno == ECHILD) return -1;  // the test reaped it already
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  return -1;
}

std::vector<pid_t> HostProcess::Children() const {
  std::vector<pid_t> out;
  std::ifstream in("/proc/" + std::to_string(pid_) + "/task/" + std::to_string(pid_) + "/children");
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

namespace {
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::vector<pid_t> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

std::string Cmdline(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.substr(0, text.find('\0'));
}
}  // namespace

std::vector<pid_t> HostProcess::Descendants() const {
  std::vector<pid_t> out = ChildrenOf(pid_);
  for (size_t i = 0; i < out.size() && i < 100000; ++i) {
    for (pid_t c : ChildrenOf(out[i])) out.push_back(c);
  }
  return out;
}

bool HostProcess::SignalDescendant(pid_t pid, int sig) const {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return false;
  // With the pidfd open, `pid` names this process until we close it: check its ancestry now.
  bool below = false;
  pid_t p = pid;
  for (int depth = 0; depth < 8 && p > 1 && !below; ++depth) {
    std::ifstream stat("/proc/" + std::to_string(p) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) break;
    char state;
    int ppid = 0;
    if (std::sscanf(text.c_str() + close + 1, " %c %d", &state, &ppid) != 2) break;
    below = ppid == pid_;
    p = ppid;
  }
  const bool sent = below && ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0) == 0;
  ::close(pidfd);
  return sent;
}

pid_t HostProcess::Zygote(const std::string& module) const {
  pid_t best = -1;
  for (pid_t p : Descendants()) {
    if (Cmdline(p).rfind("mphost: zygote " + module + " gen", 0) == 0 && p > best) best = p;
  }
  return best;
}

StagedInstall::StagedInstall(const std::vector<std::string>& module_files) {
  char tmpl[] = "/tmp/mphost-staged-XXXXXX";
  dir_ = ::mkdtemp(tmpl);
  namespace fs = std::filesystem;
  fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                            fs::perms::others_read | fs::perms::others_exec);
  fs::create_directories(bin_dir());
  fs::create_directories(module_dir());
  for (const char* exe : {"mphost", "mpctl", "mp-builder", "mp-zygote"}) {
    fs::copy_file(BinDir() + "/" + exe, bin_dir() + "/" + exe);
  }
  for (const std::string& m : module_files) {
    fs::copy_file(m, module_dir() + "/" + fs::path(m).filename().string());
  }
  for (const auto& entry : fs::recursive_directory_iterator(dir_)) {
    fs::permissions(entry.path(), fs::perms::others_read | fs::perms::group_read |
                                      (entry.is_directory() || entry.path().parent_path() == bin_dir()
                                           ? fs::perms::others_exec | fs::perms::group_exec
                                           : fs::perms::none),
                    fs::perm_options::add);
  }
}

StagedInstall::~StagedInstall() { std::filesystem::remove_all(dir_); }

std::string StagedInstall::MakeDirFor(uid_t uid, const std::string& name) const {
  const std::string path = dir_ + "/" + name;
  std::filesystem::create_directories(path);
  if (::getuid() == 0 && ::chown(path.c_str(), uid, uid) != 0) return "";
  return path;
}

std::vector<pid_t> ProcessesNamed(const std::string& name) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string pid = entry.path().filename().string();
    if (pid.empty() || !std::isdigit(static_cast<unsigned char>(pid[0]))) continue;
    std::ifstream in(entry.path() / "comm");
    std::string comm;
    if (std::getline(in, comm) && comm == name) out.push_back(std::stoi(pid));
  }
  return out;
}

std::vector<pid_t> WorkerPids(const std::string& ps_json, const std::string& module) {
  std::vector<pid_t> out;
  const std::regex pid_re(module.empty() ? std::string("\"pid\":([0-9]+)")
                                         : "\"pid\":([0-9]+),\"module\":\"" + module + "\"");
  for (auto it = std::sregex_iterator(ps_json.begin(), ps_json.end(), pid_re);
       it != std::sregex_iterator(); ++it) {
    out.push_back(std::stoi((*it)[1]));
  }
  return out;
}

bool ParsesAsJson(const std::string& text) {
  capnp::MallocMessageBuilder message;
  auto value = message.initRoot<capnp::JsonValue>();
  capnp::JsonCodec codec;
  return kj::runCatchingExceptions([&] {
           codec.decodeRaw(kj::ArrayPtr<const char>(text.data(), text.size()), value);
         }) == nullptr &&
         value.which() == capnp::JsonValue::OBJECT;
}

std::string ProcStatusField(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::string v = line.substr(field.size() + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  }
  return "";
}

bool WaitGone(pid_t pid, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  do {
    std::string state = ProcStatusField(pid, "State");
    if (state.empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (MsLeft(deadline) > 0);
  return false;
}

}  // namespace mp::testing
