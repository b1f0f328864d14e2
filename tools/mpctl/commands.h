// mpctl's commands: each asks the host one or more questions over the control RPC
// (schemas/control.capnp) and prints the answer, as text for people or, with --json, as the
// answer itself (json_output.h).
#pragma once

#include <kj/async.h>

#include <string>
#include <utility>
#include <vector>

#include "schemas/control.capnp.h"

namespace mp::mpctl {

// What the command line said (main.cc parses it).
struct Options {
  std::string control;
  bool json = false;
  bool config = false;  // reload --config
  std::string command;
  std::vector<std::string> positional;
  std::string data;
  bool has_data = false;
  std::string method;
  std::vector<std::pair<std::string, std::string>> headers;
  double timeout_s = 0;
  int64_t min = -1;
  int64_t max = -1;
};

// A command's exit code: 0 done, 1 the host refused or the call failed, 2 a usage error.
using Command = int (*)(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt);

// The commands by name, and their --help texts.
const std::vector<std::pair<std::string, Command>>& Commands();
const char* CommandHelp(const std::string& command);

// Prints `problem` and the usage to stderr; returns 2.
int Usage(const std::string& problem);

// Top (top.cc).
int Top(control::Control::Client& ctl, kj::WaitScope& ws, const Options& opt);

// 1536 → "1.5 KiB".
std::string Size(uint64_t bytes);

extern const char kUsage[];

}  // namespace mp::mpctl
