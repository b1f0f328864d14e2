// Plugin loading: the ABI check on hand-made entries, and LoadPlugin on real shared libraries
// (the bundled echo module, a plugin speaking ABI 2, a missing file).
#include "microproc/plugin.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "mp/module.h"

namespace mp::microproc {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

int NoBuild(mp_build_ctx*) { return 0; }
int NoHandle(const mp_heap*, const mp_call*, mp_reply*) { return 0; }

// An entry that passes every check for module "dict".
mp_module GoodEntry() {
  return mp_module{MP_MODULE_ABI_VERSION, sizeof(mp_module), "dict", "1.0", &NoBuild, &NoHandle};
}

std::string Message(const absl::Status& s) { return std::string(s.message()); }

TEST(CheckModuleEntryTest, AcceptsAWellFormedEntry) {
  mp_module m = GoodEntry();
  EXPECT_TRUE(CheckModuleEntry("dict", "/x/libdict.so", &m).ok());
}

TEST(CheckModuleEntryTest, RefusesOtherAbiNamingBothVersions) {
  mp_module m = GoodEntry();
  m.abi_version = 2;
  absl::Status s = CheckModuleEntry("dict", "/x/libdict.so", &m);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Message(s), "module 'dict': plugin /x/libdict.so has ABI 2, host speaks 1");
}

TEST(CheckModuleEntryTest, AbiIsCheckedBeforeAnythingElse) {
  // A plugin from another ABI may lay out the struct differently: only the version is read.
  mp_module m{};
  m.abi_version = 0;
  EXPECT_THAT(Message(CheckModuleEntry("dict", "p.so", &m)), HasSubstr("has ABI 0, host speaks 1"));
}

TEST(CheckModuleEntryTest, RefusesWrongName) {
  mp_module m = GoodEntry();
  m.name = "dictionary";
  absl::Status s = CheckModuleEntry("dict", "/x/libdict.so", &m);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("declares module 'dictionary'"),
                                HasSubstr("config calls it 'dict'")));
  // A prefix of the configured name is not the name.
  m.name = "dic";
  EXPECT_FALSE(CheckModuleEntry("dict", "/x/libdict.so", &m).ok());
}

TEST(CheckModuleEntryTest, RefusesNullName) {
  mp_module m = GoodEntry();
  m.name = nullptr;
  EXPECT_THAT(Message(CheckModuleEntry("dict", "p.so", &m)), HasSubstr("'(null)'"));
}

TEST(CheckModuleEntryTest, RefusesNullEntry) {
  absl::Status s = CheckModuleEntry("dict", "/x/libdict.so", nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), AllOf(HasSubstr("module 'dict'"), HasSubstr("/x/libdict.so"),
                                HasSubstr("returned NULL")));
}

TEST(CheckModuleEntryTest, RefusesTooSmallStruct) {
  mp_module m = GoodEntry();
  m.struct_size = sizeof(mp_module) - 8;
  absl::Status s = CheckModuleEntry("dict", "p.so", &m);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(Message(s), HasSubstr("mp_module is " + std::to_string(sizeof(mp_module) - 8)));
}

TEST(CheckModuleEntryTest, AcceptsLargerStructFromSameAbi) {
  mp_module m = GoodEntry();
  m.struct_size = sizeof(mp_module) + 16;  // appended fields are compatible
  EXPECT_TRUE(CheckModuleEntry("dict", "p.so", &m).ok());
}

TEST(CheckModuleEntryTest, RefusesNullFunctions) {
  mp_module m = GoodEntry();
  m.build = nullptr;
  EXPECT_THAT(Message(CheckModuleEntry("dict", "p.so", &m)), HasSubstr("NULL"));
  m = GoodEntry();
  m.handle = nullptr;
  EXPECT_FALSE(CheckModuleEntry("dict", "p.so", &m).ok());
}

TEST(LoadPluginTest, LoadsTheBundledEchoModule) {
  auto plugin = LoadPlugin("echo", MP_TEST_ECHO_MODULE);
  ASSERT_TRUE(plugin.ok()) << plugin.status();
  ASSERT_NE(plugin->handle, nullptr);
  ASSERT_NE(plugin->module, nullptr);
  EXPECT_EQ(plugin->module->abi_version, MP_MODULE_ABI_VERSION);
  EXPECT_STREQ(plugin->module->name, "echo");
  EXPECT_STREQ(plugin->module->version, "1.0.0");
}

TEST(LoadPluginTest, EchoUnderAnotherNameIsRefused) {
  auto plugin = LoadPlugin("greeter", MP_TEST_ECHO_MODULE);
  ASSERT_FALSE(plugin.ok());
  EXPECT_THAT(Message(plugin.status()),
              AllOf(HasSubstr("declares module 'echo'"), HasSubstr("'greeter'")));
}

TEST(LoadPluginTest, RefusesAbi2PluginNamingBothVersions) {
  auto plugin = LoadPlugin("abi2", MP_TEST_ABI2_MODULE);
  ASSERT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Message(plugin.status()), std::string("module 'abi2': plugin ") + MP_TEST_ABI2_MODULE +
                                          " has ABI 2, host speaks 1");
}

TEST(LoadPluginTest, MissingFileNamesTheFile) {
  const std::string path = "/nonexistent/dir/libmissing.so";
  auto plugin = LoadPlugin("missing", path);
  ASSERT_FALSE(plugin.ok());
  EXPECT_EQ(plugin.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(Message(plugin.status()), AllOf(HasSubstr("module 'missing'"), HasSubstr(path)));
}

TEST(LoadPluginTest, LibraryWithoutEntryPointIsRefused) {
  // libc is a shared library that certainly exports no mp_module_entry.
  auto plugin = LoadPlugin("libc", "libc.so.6");
  ASSERT_FALSE(plugin.ok());
  EXPECT_THAT(Message(plugin.status()),
              AllOf(HasSubstr("libc.so.6"), HasSubstr("does not export mp_module_entry")));
}

}  // namespace
}  // namespace mp::microproc
