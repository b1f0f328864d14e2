// Config parsing, with no process: JSON errors with their line, duplicate keys, wrong types,
// unknown fields, and each value's checks naming its JSON path.
#include "host/config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/config_json.h"
#include "host/net_address.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A plugin path that exists (the config checks it): this test's own executable.
std::string Plugin() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

absl::StatusOr<HostConfig> Parse(const std::string& json) { return ParseConfig(json, "t.json", "/"); }

std::string Module(const std::string& extra = "") {
  return "{\"name\": \"echo\", \"plugin\": \"" + Plugin() + "\"" + extra + "}";
}

std::string Error(const std::string& json) {
  auto c = Parse(json);
  EXPECT_FALSE(c.ok()) << json;
  return c.ok() ? "" : std::string(c.status().message());
}

TEST(ConfigParseTest, AValidConfigGivesEveryField) {
  auto c = Parse("{\"listen\": \"0.0.0.0:9\", \"modules\": [" +
                 Module(", \"workers\": 3, \"maxWorkers\": 5, \"critical\": false, "
                        "\"options\": {\"greeting\": \"hi\", \"n\": 2, \"on\": true}") +
                 "], \"trustedProxies\": [\"10.0.0.0/8\"], \"drainTimeoutMs\": 500}");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->listen, "0.0.0.0:9");
  ASSERT_EQ(c->modules.size(), 1u);
  EXPECT_EQ(c->modules[0].workers, 3u);
  EXPECT_EQ(c->modules[0].max_workers, 5u);
  EXPECT_FALSE(c->modules[0].critical);
  EXPECT_EQ(c->modules[0].options,
            (std::vector<std::pair<std::string, std::string>>{{"greeting", "hi"}, {"n", "2"}, {"on", "true"}}));
  EXPECT_EQ(c->drain_timeout_ms, 500u);
  EXPECT_EQ(c->trusted_proxies, std::vector<std::string>{"10.0.0.0/8"});
}

TEST(ConfigParseTest, AValueOutOfRangeNamesItsPathAndLine) {
  const std::string json = "{\n  \"modules\": [\n    " + Module() + ",\n    {\n      \"name\": \"b\",\n"
                           "      \"plugin\": \"" + Plugin() + "\",\n      \"workers\": -1\n    }\n  ]\n}";
  EXPECT_THAT(Error(json), HasSubstr("modules[1].workers: expected a whole number from 0 to "
                                     "4294967295, got -1 (line 7)"));
}

TEST(ConfigParseTest, ARangeCheckNamesItsPathAndLine) {
  const std::string json = "{\"modules\": [\n" + Module(",\n \"workers\": 0") + "]}";
  EXPECT_THAT(Error(json), HasSubstr("modules[0].workers: must be between 1 and 256, got 0 (line 3)"));
}

TEST(ConfigParseTest, WrongTypesAreRefusedNotCoerced) {
  EXPECT_THAT(Error("{\"modules\": [" + Module(", \"workers\": \"2\"") + "]}"),
              HasSubstr("modules[0].workers: expected a whole number from 0 to 4294967295, got \"2\""));
  EXPECT_THAT(Error("{\"accessLog\": 1, \"modules\": [" + Module() + "]}"),
              HasSubstr("accessLog: expected true or false, got 1 (line 1)"));
  EXPECT_THAT(Error("{\"modules\": [" + Module(", \"workers\": 2.5") + "]}"),
              HasSubstr("got 2.5"));
  EXPECT_THAT(Error("{\"modules\": {}}"), HasSubstr("modules: expected an array, got an object"));
  EXPECT_THAT(Error("{\"modules\": [" + Module(", \"options\": {\"a\": [1]}") + "]}"),
              HasSubstr("modules[0].options.a: expected a string, number or boolean, got an array"));
}

TEST(ConfigParseTest, DuplicateKeysAreRefused) {
  EXPECT_THAT(Error("{\"listen\": \"a:1\",\n \"listen\": \"b:2\", \"modules\": []}"),
              HasSubstr("key \"listen\" appears twice in one object (line 2)"));
}

TEST(ConfigParseTest, UnknownFieldsAreRefusedWithASuggestion) {
  EXPECT_THAT(Error("{\"modules\": [" + Module(", \"worker\": 2") + "]}"),
              HasSubstr("modules[0].worker: unknown field; did you mean 'workers'?"));
  EXPECT_THAT(Error("{\"zzzzzz\": 1, \"modules\": []}"), HasSubstr("zzzzzz: unknown field (line 1)"));
}

TEST(ConfigParseTest, MalformedJsonNamesTheLine) {
  EXPECT_THAT(Error("{\n\"modules\": [\n}"), HasSubstr("not valid JSON: unexpected character '}' (line 3)"));
  EXPECT_THAT(Error("{\"a\": \"b\" \"c\": 1}"), HasSubstr("expected ',' or '}' in an object (line 1)"));
  EXPECT_THAT(Error("{} x"), HasSubstr("unexpected text after the JSON value"));
  EXPECT_THAT(Error("{\"a\": \"\\ud800\"}"), HasSubstr("unpaired surrogate"));
  EXPECT_THAT(Error("{\"a\": 01}"), HasSubstr("expected ',' or '}'"));
}

TEST(ConfigParseTest, ChecksNameTheirPath) {
  EXPECT_THAT(Error("{\"modules\": [" + Module() + "," + Module() + "]}"),
              HasSubstr("modules[1].name: module 'echo' is named twice"));
  EXPECT_THAT(Error("{\"modules\": [" + Module() + "], \"routes\": [{\"prefix\": \"/x\", \"module\": \"no\"}]}"),
              HasSubstr("routes[0].module: no module named 'no'"));
  EXPECT_THAT(Error("{\"modules\": [" + Module() + "], \"trustedProxies\": [\"10.0.0.0/33\"]}"),
              HasSubstr("trustedProxies[0]: '10.0.0.0/33' is not an IP address or CIDR"));
}

TEST(JsonTest, ParsesEscapesAndKeepsOrder) {
  auto n = ParseJson("{\"b\": \"\\u00e9\\n\", \"a\": [true, null, -1.5e2]}");
  ASSERT_TRUE(n.ok()) << n.status();
  ASSERT_EQ(n->members.size(), 2u);
  EXPECT_EQ(n->members[0].key, "b");
  EXPECT_EQ(n->members[0].value.text, "\xc3\xa9\n");
  EXPECT_EQ(n->members[1].value.items[2].number, -150);
}

TEST(NetAddressTest, CidrsContainWhatTheyShould) {
  auto block = ParseCidr("10.1.0.0/16");
  ASSERT_TRUE(block.ok());
  EXPECT_TRUE(block->Contains(*ParseIp("10.1.200.3")));
  EXPECT_FALSE(block->Contains(*ParseIp("10.2.0.1")));
  EXPECT_TRUE(block->Contains(*ParseIp("::ffff:10.1.0.9")));  // IPv4-mapped
  auto v6 = ParseCidr("fd00::/8");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->Contains(*ParseIp("fd12::1")));
  EXPECT_FALSE(v6->Contains(*ParseIp("10.1.0.1")));
  EXPECT_TRUE(ParseCidr("127.0.0.1")->Contains(*ParseIp("127.0.0.1")));
  EXPECT_FALSE(ParseCidr("1.2.3.4/x").ok());
  EXPECT_FALSE(ParseIp("localhost").ok());
}

}  // namespace
}  // namespace mp::host

namespace mp::host {
namespace {

std::string WithServices(const std::string& services, const std::string& more = "") {
  return "{\"modules\": [" + Module(", \"services\": " + services + more) + "]}";
}

TEST(ConfigParseTest, ServicesAreAnObjectByName) {
  auto c = Parse(WithServices(
      "{\"cache\": {\"redis\": {\"address\": \"127.0.0.1:6390\", \"keyPrefix\": \"e:\", "
      "\"commands\": [\"get\", \"SET\"]}, \"timeoutMs\": 250}, "
      "\"self\": {\"module\": \"echo\"}}",
      ", \"serviceLimits\": {\"maxRequests\": 7, \"maxDepth\": 2}"));
  ASSERT_TRUE(c.ok()) << c.status();
  const ModuleConfig& m = c->modules[0];
  ASSERT_EQ(m.services.size(), 2u);
  EXPECT_EQ(m.services[0].name, "cache");
  EXPECT_TRUE(m.services[0].is_redis);
  EXPECT_EQ(m.services[0].redis.host, "127.0.0.1");
  EXPECT_EQ(m.services[0].redis.port, 6390);
  EXPECT_EQ(m.services[0].redis.commands, (std::vector<std::string>{"GET", "SET"}));
  EXPECT_EQ(m.services[0].timeout_ms, 250u);
  EXPECT_EQ(m.services[1].module, "echo");
  EXPECT_EQ(m.service_limits.max_requests, 7u);
  EXPECT_EQ(m.service_limits.max_depth, 2u);
  EXPECT_EQ(m.service_limits.max_bytes_out, 1024u << 10);  // the default
}

TEST(ConfigParseTest, ABadServiceNamesItsFieldAndTheProblem) {
  const std::string redis = "{\"s\": {\"redis\": {\"address\": \"127.0.0.1:6390\", ";
  EXPECT_THAT(Error(WithServices(redis + "\"commands\": [\"GET\"]}}}")),
              HasSubstr("modules[0].services.s.redis.keyPrefix: required"));
  EXPECT_THAT(Error(WithServices(redis + "\"keyPrefix\": \"e:\", \"commands\": [\"KEYS\"]}}}")),
              HasSubstr("services.s.redis.commands: 'KEYS' cannot be brokered"));
  EXPECT_THAT(Error(WithServices(redis + "\"keyPrefix\": \"e:\", \"commands\": []}}}")),
              HasSubstr("lists no command"));
  EXPECT_THAT(Error(WithServices("{\"s\": {\"redis\": {\"address\": \"nowhere\", "
                                 "\"keyPrefix\": \"e:\", \"commands\": [\"GET\"]}}}")),
              HasSubstr("'nowhere' is not HOST:PORT"));
  EXPECT_THAT(Error(WithServices("{\"s\": {\"module\": \"nope\"}}")),
              HasSubstr("modules[0].services.s.module: no module named 'nope'"));
  EXPECT_THAT(Error(WithServices("{\"s\": {}}")), HasSubstr("exactly one of"));
  EXPECT_THAT(Error(WithServices("{\"s\": {\"module\": \"echo\", \"name\": \"x\"}}")),
              HasSubstr("the name is the key"));
  EXPECT_THAT(Error(WithServices("{\"S!\": {\"module\": \"echo\"}}")),
              HasSubstr("must match [a-z0-9_-]{1,32}"));
  // Two modules' prefixes on one Redis must not overlap.
  const std::string grant = "\"services\": {\"c\": {\"redis\": {\"address\": \"127.0.0.1:6390\", "
                            "\"commands\": [\"GET\"], \"keyPrefix\": ";
  const std::string second = "{\"name\": \"two\", \"plugin\": \"" + Plugin() + "\", " + grant;
  EXPECT_THAT(Error("{\"modules\": [" + Module(", " + grant + "\"spell\"}}}") + ", " + second +
                    "\"spell2:\"}}}}]}"),
              HasSubstr("'spell2:' overlaps module 'echo''s keyPrefix 'spell'"));
  EXPECT_TRUE(Parse("{\"modules\": [" + Module(", " + grant + "\"a:\"}}}") + ", " + second +
                    "\"b:\"}}}}]}")
                  .ok());
}

// A Redis on a Unix socket, and AUTH with a password read from a file (relative paths: to the
// config's directory). Errors name the field and the file, never the password.
TEST(ConfigParseTest, RedisOverAUnixSocketWithAPasswordFile) {
  char dir_template[] = "/tmp/mp-config-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const std::string dir = dir_template;
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
  };
  write("pw", "s3cret\n");
  write("empty", "");
  write("long", std::string(5000, 'x'));
  auto parse = [&](const std::string& redis) {
    return ParseConfig(WithServices("{\"c\": {\"redis\": {\"keyPrefix\": \"e:\", "
                                    "\"commands\": [\"GET\"], " + redis + "}}}"),
                       "t.json", dir);
  };
  auto c = parse("\"address\": \"unix:/run/redis/redis.sock\", \"user\": \"app\", "
                 "\"passwordFile\": \"pw\"");
  ASSERT_TRUE(c.ok()) << c.status();
  const RedisServiceConfig& r = c->modules[0].services[0].redis;
  EXPECT_EQ(r.unix_path, "/run/redis/redis.sock");
  EXPECT_EQ(r.Address(), "unix:/run/redis/redis.sock");
  EXPECT_EQ(r.user, "app");
  EXPECT_EQ(r.password, "s3cret");  // less its newline
  auto error = [&](const std::string& redis) {
    auto bad = parse(redis);
    EXPECT_FALSE(bad.ok()) << redis;
    return bad.ok() ? "" : std::string(bad.status().message());
  };
  EXPECT_THAT(error("\"address\": \"unix:redis.sock\""),
              HasSubstr("redis.address: 'unix:redis.sock' is not unix:/ABSOLUTE/PATH"));
  EXPECT_THAT(error("\"address\": \"unix:/" + std::string(120, 'a') + "\""),
              HasSubstr("the socket path is longer than 107 bytes"));
  const std::string tcp = "\"address\": \"127.0.0.1:6390\", ";
  EXPECT_THAT(error(tcp + "\"passwordFile\": \"missing\""),
              HasSubstr("redis.passwordFile: cannot read '" + dir + "/missing'"));
  EXPECT_THAT(error(tcp + "\"passwordFile\": \"empty\""), HasSubstr("is empty"));
  const std::string long_error = error(tcp + "\"passwordFile\": \"long\"");
  EXPECT_THAT(long_error, HasSubstr("holds more than 4096 bytes"));
  EXPECT_THAT(long_error, Not(HasSubstr("xxxx")));
  EXPECT_THAT(error(tcp + "\"user\": \"app\""), HasSubstr("redis.user: needs passwordFile"));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace mp::host
