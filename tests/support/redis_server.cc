// RedisServer: fork + exec of redis-server with no persistence, readiness by PING, stop by pid.
#include "tests/support/redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "shm/sys.h"
#include "shm/unique_fd.h"

namespace mp::testing {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kReadyTimeout = std::chrono::seconds(5);
constexpr auto kStopGrace = std::chrono::seconds(2);
constexpr auto kRestartRetry = std::chrono::seconds(2);

// The redis-server executable on PATH (then /usr/bin, /usr/sbin), or "".
std::string FindRedisServer() {
  const char* path = getenv("PATH");
  std::vector<std::string> dirs;
  if (path != nullptr) dirs = absl::StrSplit(path, ':', absl::SkipEmpty());
  dirs.push_back("/usr/bin");
  dirs.push_back("/usr/sbin");
  for (const std::string& d : dirs) {
    std::string candidate = d + "/redis-server";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

}  // namespace

absl::StatusOr<uint16_t> FreeLoopbackPort() {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return ErrnoStatus("socket(AF_INET)", errno);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return ErrnoStatus("bind(127.0.0.1:0)", errno);
  }
  socklen_t len = sizeof addr;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    return ErrnoStatus("getsockname", errno);
  }
  return ntohs(addr.sin_port);
}

namespace {

// True if a server on 127.0.0.1:`port` answers PING within half a second: +PONG, or -NOAUTH
// from one that wants a password first.
bool AnswersPing(uint16_t port) {
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  timeval tv{0, 500 * 1000};
  setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (RetryEintr([&] {
        return connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
      }) != 0) {
    return false;
  }
  static constexpr char kPing[] = "PING\r\n";
  if (RetryEintr([&] { return send(fd.get(), kPing, sizeof kPing - 1, MSG_NOSIGNAL); }) !=
      static_cast<ssize_t>(sizeof kPing - 1)) {
    return false;
  }
  std::string got;
  char buf[64];
  while (got.size() < 7) {  // "+PONG\r\n", "-NOAUTH"...
    const ssize_t n = RetryEintr([&] { return recv(fd.get(), buf, sizeof buf, 0); });
    if (n <= 0) return false;
    got.append(buf, static_cast<size_t>(n));
  }
  return got.rfind("+PONG\r\n", 0) == 0 || got.rfind("-NOAUTH", 0) == 0;
}

// The last lines of redis' log and output, for an error message.
std::string LogTail(const std::string& dir) {
  std::string tail;
  for (const char* name : {"redis.log", "redis.out"}) {
    std::ifstream in(dir + "/" + name);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string text = ss.str();
    if (text.size() > 600) text = text.substr(text.size() - 600);
    if (!text.empty()) absl::StrAppend(&tail, name, ": ", text);
  }
  return tail.empty() ? "(no log)" : tail;
}

}  // namespace

RedisServer::RedisServer(std::string binary, std::string dir, uint16_t port,
                         RedisServerOptions options)
    : binary_(std::move(binary)), dir_(std::move(dir)), port_(port), options_(std::move(options)) {}

RedisServer::~RedisServer() {
  Stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(RedisServerOptions options) {
  std::string binary = FindRedisServer();
  if (binary.empty()) {
    return absl::FailedPreconditionError("redis-server not found: tools/setup installs it");
  }
  const char* tmp = getenv("TMPDIR");
  const std::string base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  // Another process may take the port between our probe and redis' bind: try a few ports.
  absl::Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<uint16_t> port = FreeLoopbackPort();
    if (!port.ok()) return port.status();
    std::string dir = base + "/mp-redis-XXXXXX";
    if (mkdtemp(dir.data()) == nullptr)
      return ErrnoStatus(absl::StrCat("mkdtemp(", dir, ")"), errno);
    // From here the object owns the directory: its destructor removes it.
    std::unique_ptr<RedisServer> server(new RedisServer(binary, std::move(dir), *port, options));
    last = server->Launch();
    if (last.ok()) return server;
  }
  return last;
}

absl::Status RedisServer::Launch() {
  const std::string port = absl::StrCat(port_);
  const std::string log = dir_ + "/redis.log";
  std::vector<std::string> args = {
      binary_, "--port",           port, "--bind",    "127.0.0.1", "--save",
      "",      "--appendonly",     "no", "--dir",     dir_,        "--daemonize",
      "no",    "--protected-mode", "no", "--logfile", log};
  if (!options_.password.empty()) {
    args.insert(args.end(), {"--requirepass", options_.password});
  }
  if (options_.unix_socket) {
    args.insert(args.end(), {"--unixsocket", unix_path(), "--unixsocketperm", "700"});
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Prepared before fork: the child only makes async-signal-safe calls.
  UniqueFd null_in(open("/dev/null", O_RDONLY | O_CLOEXEC));
  UniqueFd out(
      open((dir_ + "/redis.out").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!null_in || !out) return ErrnoStatus("open(/dev/null or redis.out)", errno);
  const pid_t parent = getpid();

  const pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork", errno);
  if (pid == 0) {
    // Dies with the thread that started it, so a crashed test leaves no server behind.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(null_in.get(), 0);
    dup2(out.get(), 1);
    dup2(out.get(), 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;

  const auto deadline = Clock::now() + kReadyTimeout;
  while (Clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return absl::UnavailableError(absl::StrCat("redis-server on port ", port_,
                                                 " exited at start (status ", status,
                                                 "): ", LogTail(dir_)));
    }
    if (AnswersPing(port_)) return absl::OkStatus();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Stop();
  return absl::DeadlineExceededError(absl::StrCat(
      "redis-server on port ", port_, " did not answer PING within 5 s: ", LogTail(dir_)));
}

void RedisServer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + kStopGrace;
  while (Clock::now() < deadline) {
    int status = 0;
    const pid_t r = RetryEintr([&] { return waitpid(pid_, &status, WNOHANG); });
    if (r == pid_ || r < 0) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  int status = 0;
  RetryEintr([&] { return waitpid(pid_, &status, 0); });
  pid_ = -1;
}

absl::Status RedisServer::Restart() {
  Stop();
  // redis sets SO_REUSEADDR, but give the port a moment if the old socket still holds it.
  const auto deadline = Clock::now() + kRestartRetry;
  absl::Status last;
  do {
    last = Launch();
    if (last.ok()) return last;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  } while (Clock::now() < deadline);
  return last;
}

}  // namespace mp::testing
