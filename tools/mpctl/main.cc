// mpctl: the operator's CLI. Talks Cap'n Proto RPC (schemas/control.capnp) to a running mphost
// over its Unix control socket.
//
//   mpctl [--control SOCKET] COMMAND [ARGS] [--json]
//
// Exit codes: 0 done; 1 the host refused or the operation failed; 2 usage or connection error.
#include <capnp/rpc-twoparty.h>
#include <kj/async-io.h>
#include <kj/main.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "host/cli.h"
#include "host/config.h"
#include "host/version.h"
#include "tools/mpctl/commands.h"

namespace mp::mpctl {
namespace {

using Validity = kj::MainBuilder::Validity;

std::vector<std::string> CommandNames() {
  std::vector<std::string> names;
  for (const auto& [name, command] : Commands()) names.push_back(name);
  return names;
}

// Parses the command line into `*opt`; nullopt to go on, else the exit code.
std::optional<int> Parse(int argc, char** argv, Options* opt) {
  // `mpctl COMMAND --help`: that command's help, not the program's.
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a != "--help" && a != "-h") continue;
    for (int j = 1; j < argc; ++j) {
      if (const char* help = CommandHelp(argv[j])) {
        std::fputs(help, stdout);
        return 0;
      }
    }
    std::fputs(kUsage, stdout);
    return 0;
  }
  host::CliContext context("mpctl");
  auto text = [](std::string* out) {
    return [out](kj::StringPtr v) -> Validity {
      *out = v.cStr();
      return true;
    };
  };
  auto number = [](int64_t* out) {
    return [out](kj::StringPtr v) -> Validity {
      auto n = host::ParseNumber(v.cStr(), "", 1, 256);
      if (!n.ok()) return kj::str(n.status().message().data());
      *out = static_cast<int64_t>(*n);
      return true;
    };
  };
  return host::ParseCommandLine(
      kj::MainBuilder(context, kj::str("mpctl ", host::kMphostVersion), "Steers a running mphost over its control socket.",
                      kUsage)
          .addOptionWithArg({"control"}, text(&opt->control), "SOCKET",
                            "The host's control socket.")
          .addOption({"json"},
                     [opt]() -> Validity {
                       opt->json = true;
                       return true;
                     },
                     "Machine-readable output.")
          .addOption({"config"},
                     [opt]() -> Validity {
                       opt->config = true;
                       return true;
                     },
                     "reload: re-read the config file and apply it, as SIGHUP does.")
          .addOptionWithArg({"data"},
                            [opt](kj::StringPtr v) -> Validity {
                              opt->data = v.cStr();
                              opt->has_data = true;
                              return true;
                            },
                            "STR", "call: the request body.")
          .addOptionWithArg({"file"},
                            [opt](kj::StringPtr v) -> Validity {
                              std::ifstream in(v.cStr(), std::ios::binary);
                              if (!in) return kj::str(v, ": cannot open");
                              std::stringstream ss;
                              ss << in.rdbuf();
                              opt->data = ss.str();
                              opt->has_data = true;
                              return true;
                            },
                            "F", "call: the request body, from a file.")
          .addOptionWithArg({"method"}, text(&opt->method), "M", "call: the method.")
          .addOptionWithArg({"header"},
                            [opt](kj::StringPtr v) -> Validity {
                              std::string kv = v.cStr();
                              const auto colon = kv.find(':');
                              if (colon == std::string::npos || colon == 0) return kj::str("needs NAME:VALUE");
                              std::string value = kv.substr(colon + 1);
                              while (!value.empty() && value[0] == ' ') value.erase(0, 1);
                              opt->headers.emplace_back(kv.substr(0, colon), value);
                              return true;
                            },
                            "K:V", "call: a request header (repeatable).")
          .addOptionWithArg({"timeout"},
                            [opt](kj::StringPtr v) -> Validity {
                              double s = 0;
                              if (!absl::SimpleAtod(v.cStr(), &s) || !(s > 0) || s > 3600) {
                                return kj::str("'", v, "' is not a number of seconds in (0, 3600]");
                              }
                              opt->timeout_s = s;
                              return true;
                            },
                            "S", "call: the deadline, in seconds.")
          .addOptionWithArg({"min"}, number(&opt->min), "N", "scale: the minimum.")
          .addOptionWithArg({"max"}, number(&opt->max), "M", "scale: the maximum.")
          .expectArg("COMMAND",
                     [opt](kj::StringPtr v) -> Validity {
                       opt->command = v.cStr();
                       if (CommandHelp(opt->command) != nullptr) return true;
                       const std::string near = host::Nearest(opt->command, CommandNames());
                       const std::string hint =
                           near.empty() ? "" : absl::StrCat("; did you mean '", near, "'?");
                       return kj::str("unknown command '", v, "'", hint.c_str());
                     })
          .expectZeroOrMoreArgs("ARGS",
                                [opt](kj::StringPtr v) -> Validity {
                                  opt->positional.push_back(v.cStr());
                                  return true;
                                })
          .build(),
      context, argc, argv);
}

int Main(int argc, char** argv) {
  Options opt;
  opt.control = host::DefaultControlSocket();
  if (auto code = Parse(argc, argv, &opt)) return *code;
  Command command = nullptr;
  for (const auto& [name, c] : Commands()) {
    if (name == opt.command) command = c;
  }
  auto io = kj::setupAsyncIo();
  kj::Own<kj::AsyncIoStream> connection;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                auto addr = io.provider->getNetwork()
                                .parseAddress(kj::str("unix:", opt.control.c_str()))
                                .wait(io.waitScope);
                connection = addr->connect().wait(io.waitScope);
              })) {
    std::fprintf(stderr,
                 "mpctl: cannot reach mphost at %s: %s\n"
                 "       is mphost running? pass its socket with --control SOCKET\n",
                 opt.control.c_str(), e->getDescription().cStr());
    return 2;
  }
  capnp::TwoPartyClient client(*connection);
  auto ctl = client.bootstrap().castAs<control::Control>();
  int rc = 2;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { rc = command(ctl, io.waitScope, opt); })) {
    if (e->getType() == kj::Exception::Type::DISCONNECTED) {
      std::fprintf(stderr,
                   "mpctl: mphost at %s closed the connection (only its owner and root may use "
                   "the control socket)\n",
                   opt.control.c_str());
      return 2;
    }
    std::string what = e->getDescription().cStr();
    if (what.rfind("remote exception: ", 0) == 0) what = what.substr(18);
    std::fprintf(stderr, "mpctl: %s failed: %s\n", opt.command.c_str(), what.c_str());
    return 1;
  }
  return rc;
}

}  // namespace
}  // namespace mp::mpctl

int main(int argc, char** argv) { return mp::mpctl::Main(argc, argv); }
