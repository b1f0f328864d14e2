// A module builds out of tree with the installed headers alone, and mphost serves it.
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host_harness.h"

namespace mp::testing {
namespace {

TEST(SdkTest, OutOfTreeModuleBuildsAgainstInstalledHeadersAndServes) {
  char tmpl[] = "/tmp/mphost-sdk-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  // Install only the SDK component, as a module author's machine would have it.
  CommandResult install = RunCommand(
      {MP_TEST_CMAKE, "--install", MP_TEST_BUILD_DIR, "--prefix", dir + "/prefix", "--component", "sdk"},
      60000);
  ASSERT_EQ(install.exit_code, 0) << install.out << install.err;
  CommandResult compile = RunCommand({MP_TEST_CXX, "-std=c++20", "-O1", "-shared", "-fPIC",
                                      "-Wall", "-Werror", "-I" + dir + "/prefix/include",
                                      MP_TEST_SDK_SOURCE, "-o", dir + "/libhello.so"},
                                     120000);
  ASSERT_EQ(compile.exit_code, 0) << compile.err;
  std::ofstream(dir + "/words.txt") << "apple\npear\napple\n";
  std::ofstream(dir + "/mphost.json")
      << "{\"modules\":[{\"name\":\"hello\",\"plugin\":\"libhello.so\",\"workers\":1,"
         "\"options\":{\"name\":\"mphost\"},\"dataFiles\":{\"words\":\"words.txt\"}}]}";
  {
    HostProcess host({"--config", dir + "/mphost.json"});
    ASSERT_TRUE(host.started()) << host.Log();
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/hello/").body, "hello, mphost");
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/hello/count?w=apple").body, "2");
    EXPECT_EQ(HttpRequest(host.port(), "GET", "/m/hello/count?w=plum").body, "0");
  }
  int unused = ::system(("rm -rf '" + dir + "'").c_str());
  (void)unused;
}

}  // namespace
}  // namespace mp::testing
