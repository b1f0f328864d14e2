// mphost refuses a bad config or a bad plugin at startup: non-zero exit and one line that
// names the file and the problem.
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

using ::testing::HasSubstr;

class BadStartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/mphost-cfg-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override {
    int unused = ::system(("rm -rf '" + dir_ + "'").c_str());
    (void)unused;
  }
  std::string Write(const std::string& json) {
    std::string path = dir_ + "/mphost.json";
    std::ofstream(path) << json;
    return path;
  }
  // Runs mphost with `config`, expecting it to refuse to start.
  CommandResult Start(const std::string& config) {
    return RunCommand({BinDir() + "/mphost", "--config", config, "--listen", "127.0.0.1:0",
                       "--control", dir_ + "/c.sock"});
  }
  std::string ModuleJson(const std::string& name, const std::string& plugin,
                         const std::string& extra = "") {
    return "{\"modules\":[{\"name\":\"" + name + "\",\"plugin\":\"" + plugin + "\"" + extra + "}]}";
  }
  std::string dir_;
};

// A module that cannot load at all, found once the sockets are bound: exit 1, and one error
// event naming the module and the cause.
void ExpectStartFailed(const CommandResult& r) {
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("level=error event=start_failed"));
}

// The error is one line, prefixed "mphost: ".
void ExpectOneLine(const CommandResult& r) {
  EXPECT_NE(r.exit_code, 0);
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.rfind("mphost: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST_F(BadStartTest, MissingConfigFile) {
  CommandResult r = Start(dir_ + "/absent.json");
  ExpectOneLine(r);
  EXPECT_THAT(r.err, HasSubstr(dir_ + "/absent.json"));
}

TEST_F(BadStartTest, InvalidJson) {
  std::string path = Write("{\"modules\": [");
  CommandResult r = Start(path);
  ExpectOneLine(r);
  EXPECT_THAT(r.err, HasSubstr(path));
}

TEST_F(BadStartTest, UnknownFieldIsNamed) {
  std::string path = Write(ModuleJson("echo", ModuleDir() + "/libecho.so", ",\"wrokers\":3"));
  CommandResult r = Start(path);
  ExpectOneLine(r);
  EXPECT_THAT(r.err, HasSubstr("wrokers"));
}

TEST_F(BadStartTest, BadValueIsNamed) {
  std::string path = Write(ModuleJson("echo", ModuleDir() + "/libecho.so", ",\"workers\":0"));
  CommandResult r = Start(path);
  ExpectOneLine(r);
  EXPECT_THAT(r.err, HasSubstr("modules[0].workers"));
}

TEST_F(BadStartTest, BadHeapModeIsNamed) {
  std::string path = Write(ModuleJson("echo", ModuleDir() + "/libecho.so", ",\"heapMode\":\"rw\""));
  CommandResult r = Start(path);
  ExpectOneLine(r);
  EXPECT_THAT(r.err, HasSubstr("modules[0].heapMode: 'rw' must be readonly or cow"));
}

TEST_F(BadStartTest, BadMessageAndRingSizesAreNamed) {
  struct Case {
    const char* extra;
    const char* error;
  } cases[] = {
      {",\"maxMessageKb\":70000", "modules[0].maxMessageKb: must be at most 65536"},
      {",\"maxBodyKb\":512,\"maxMessageKb\":256",
       "modules[0].maxMessageKb: 256 is less than maxBodyKb (512)"},
      {",\"ringKb\":100", "modules[0].ringKb: 100 must be a power of two between 16 and 65536"},
      {",\"ringKb\":8", "modules[0].ringKb: 8 must be a power of two"},
  };
  for (const Case& c : cases) {
    CommandResult r = Start(Write(ModuleJson("echo", ModuleDir() + "/libecho.so", c.extra)));
    ExpectOneLine(r);
    EXPECT_THAT(r.err, HasSubstr(c.error)) << c.extra;
  }
}

TEST_F(BadStartTest, UnknownControlGroupIsNamed) {
  std::string path = Write("{\"controlGroup\":\"no-such-group-x\",\"modules\":[{\"name\":\"echo\",\"plugin\":\"" +
                           ModuleDir() + "/libecho.so\"}]}");
  CommandResult r = Start(path);
  ExpectOneLine(r);
  EXPECT_THAT(r.err, HasSubstr("controlGroup: no group named 'no-such-group-x'"));
}

TEST_F(BadStartTest, MissingPluginIsNamed) {
  std::string path = Write(ModuleJson("echo", "no/such/libecho.so"));
  CommandResult r = Start(path);
  ExpectOneLine(r);
  EXPECT_THAT(r.err, HasSubstr(dir_ + "/no/such/libecho.so"));
}

TEST_F(BadStartTest, PluginThatIsNotALibrary) {
  std::string fake = dir_ + "/libfake.so";
  std::ofstream(fake) << "not an ELF file";
  CommandResult r = Start(Write(ModuleJson("fake", fake)));
  ExpectStartFailed(r);
  EXPECT_THAT(r.err, HasSubstr("module 'fake': cannot load plugin"));
  EXPECT_THAT(r.err, HasSubstr(fake));
}

TEST_F(BadStartTest, OtherAbiVersionIsRefusedNamingBoth) {
  CommandResult r = Start(Write(ModuleJson("abi2", MP_TEST_ABI2_MODULE)));
  ExpectStartFailed(r);
  EXPECT_THAT(r.err, HasSubstr("has ABI 2, host speaks 1"));
}

TEST_F(BadStartTest, ModuleNameMustMatchThePlugin) {
  CommandResult r = Start(Write(ModuleJson("other", ModuleDir() + "/libecho.so")));
  ExpectStartFailed(r);
  EXPECT_THAT(r.err, HasSubstr("declares module 'echo'"));
}

TEST_F(BadStartTest, UnknownArgument) {
  CommandResult r = RunCommand({BinDir() + "/mphost", "--frobnicate"});
  EXPECT_EQ(r.exit_code, 2);  // a usage error
  EXPECT_THAT(r.err, HasSubstr("--frobnicate: unrecognized option"));
  EXPECT_THAT(r.err, HasSubstr("mphost --help"));
}

TEST(CommandLineTest, FlagsTakeEitherFormAndVersionAndHelpExitZero) {
  CommandResult version = RunCommand({BinDir() + "/mphost", "--version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_THAT(version.out, HasSubstr("mphost 0.2.0"));
  CommandResult help = RunCommand({BinDir() + "/mphost", "--help"});
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("--check-config"));
  EXPECT_EQ(RunCommand({BinDir() + "/mphost", "--listen"}).exit_code, 2);
  char tmpl[] = "/tmp/mphost-flags-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  std::ofstream(dir + "/ok.json") << "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir()
                                  << "/libecho.so\"}]}";
  std::ofstream(dir + "/bad.json") << "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir()
                                   << "/libecho.so\",\"workers\":0}]}";
  CommandResult ok = RunCommand({BinDir() + "/mphost", "--check-config=" + dir + "/ok.json"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("valid (1 modules)"));
  CommandResult bad = RunCommand({BinDir() + "/mphost", "--check-config", dir + "/bad.json"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("workers"));
  std::filesystem::remove_all(dir);
}

TEST(CommandLineTest, MpctlParsesNumbersStrictlyAndSuggestsCommands) {
  CommandResult typo = RunCommand({BinDir() + "/mpctl", "stauts"});
  EXPECT_EQ(typo.exit_code, 2);
  EXPECT_THAT(typo.err, HasSubstr("unknown command 'stauts'; did you mean 'status'?"));
  CommandResult number = RunCommand({BinDir() + "/mpctl", "scale", "echo", "--min=2x", "--max", "3"});
  EXPECT_EQ(number.exit_code, 2);
  EXPECT_THAT(number.err, HasSubstr("'2x' is not a whole number"));
}

TEST(ConfigTest, AValidConfigServesItsModulesWithOptions) {
  char tmpl[] = "/tmp/mphost-cfg-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  std::string path = dir + "/mphost.json";
  std::ofstream(path) << "{\"modules\":[{\"name\":\"echo\",\"plugin\":\"" << ModuleDir()
                      << "/libecho.so\",\"workers\":3,\"spinIterations\":0,"
                      << "\"options\":{\"greeting\":\"howdy\"}}]}";
  {
    HostProcess host({"--config", path});
    ASSERT_TRUE(host.started()) << host.Log();
    HttpResponse r = HttpRequest(host.port(), "GET", "/m/echo/");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body.rfind("howdy\n", 0), 0u) << r.body;
    EXPECT_EQ(WorkerPids(host.Mpctl({"ps", "--json"}).out).size(), 3u);
  }
  int unused = ::system(("rm -rf '" + dir + "'").c_str());
  (void)unused;
}

}  // namespace
}  // namespace mp::testing
