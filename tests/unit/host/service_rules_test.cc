// The host's rules for brokered services, with no process: which Redis commands can be
// brokered, where their keys are, the key prefix, and decoding worker-written requests.
#include "host/service_rules.h"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "host/service_codec.h"
#include "schemas/call.capnp.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;

RedisServiceConfig Grant(std::vector<std::string> commands) {
  RedisServiceConfig g;
  g.host = "127.0.0.1";
  g.port = 6379;
  g.key_prefix = "m:";
  g.commands = std::move(commands);
  EXPECT_TRUE(NormalizeRedisCommands(&g.commands).ok());
  return g;
}

std::optional<ServiceRule> Rule(const RedisServiceConfig& g, std::vector<std::string> argv) {
  auto r = CheckRedisCommand(g, argv);
  return r ? std::optional<ServiceRule>(r->rule) : std::nullopt;
}

TEST(ServiceRulesTest, KeysAreFoundWhereEachCommandKeepsThem) {
  const auto g = Grant({"get", "Set", "MGET", "MSET", "DEL", "HSET", "PING", "EXPIRE", "ZADD"});
  EXPECT_EQ(Rule(g, {"GET", "m:a"}), std::nullopt);
  EXPECT_EQ(Rule(g, {"get", "x:a"}), ServiceRule::kKeyPrefix);
  // SET's value and options are not keys.
  EXPECT_EQ(Rule(g, {"SET", "m:a", "x:not-a-key", "EX", "10"}), std::nullopt);
  EXPECT_EQ(Rule(g, {"SET", "x:a", "v"}), ServiceRule::kKeyPrefix);
  // Every key of a variadic command, the last one too.
  EXPECT_EQ(Rule(g, {"MGET", "m:a", "m:b", "m:c"}), std::nullopt);
  EXPECT_EQ(Rule(g, {"MGET", "m:a", "m:b", "x:c"}), ServiceRule::kKeyPrefix);
  EXPECT_EQ(Rule(g, {"DEL", "x:a"}), ServiceRule::kKeyPrefix);
  // MSET: keys at 1, 3, 5 ...; values between are not keys; pairs only.
  EXPECT_EQ(Rule(g, {"MSET", "m:a", "x", "m:b", "y"}), std::nullopt);
  EXPECT_EQ(Rule(g, {"MSET", "m:a", "x", "o:b", "y"}), ServiceRule::kKeyPrefix);
  EXPECT_EQ(Rule(g, {"MSET", "m:a", "x", "m:b"}), ServiceRule::kArguments);
  EXPECT_EQ(Rule(g, {"HSET", "m:h", "f", "v"}), std::nullopt);
  EXPECT_EQ(Rule(g, {"PING"}), std::nullopt);
  EXPECT_EQ(Rule(g, {"GET"}), ServiceRule::kArguments);
  EXPECT_EQ(Rule(g, {"GET", "m:a", "m:b"}), ServiceRule::kArguments);
  EXPECT_EQ(Rule(g, {"EXPIRE", "m:a", "10", "NX"}), std::nullopt);
}

TEST(ServiceRulesTest, OnlyGrantedCommandsPassAndSomeCanNeverBeGranted) {
  const auto g = Grant({"GET"});
  auto r = CheckRedisCommand(g, {"DEL", "m:a"});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->rule, ServiceRule::kCommandNotAllowed);
  EXPECT_THAT(r->message, HasSubstr("command 'DEL' is not allowed (allowed: GET)"));
  // A command name with control bytes is shown escaped.
  r = CheckRedisCommand(g, {std::string("G\r\nET"), "m:a"});
  ASSERT_TRUE(r);
  EXPECT_THAT(r->message, HasSubstr("G\\x0d\\x0aET"));
  for (const char* never : {"KEYS", "SCAN", "FLUSHALL", "FLUSHDB", "EVAL", "EVALSHA", "CONFIG",
                            "SORT", "RENAME", "SUBSCRIBE", "MONITOR", "SELECT", "MIGRATE"}) {
    std::vector<std::string> commands{never};
    const absl::Status s = NormalizeRedisCommands(&commands);
    EXPECT_FALSE(s.ok()) << never;
    EXPECT_THAT(std::string(s.message()), HasSubstr("cannot be brokered")) << never;
  }
  EXPECT_EQ(FindRedisCommand("mget")->first_key, 1);
  EXPECT_STREQ(ServiceRuleName(ServiceRule::kKeyPrefix), "key_prefix");
}

kj::Array<capnp::word> RedisRequest(const std::string& service, std::vector<std::string> argv) {
  capnp::MallocMessageBuilder m;
  auto r = m.initRoot<call::ServiceRequest>();
  r.setService(service);
  auto args = r.initRedis(static_cast<unsigned>(argv.size()));
  for (unsigned i = 0; i < args.size(); ++i) {
    args.set(i, kj::arrayPtr(reinterpret_cast<const kj::byte*>(argv[i].data()), argv[i].size()));
  }
  return capnp::messageToFlatArray(m);
}

TEST(ServiceCodecTest, DecodesRequestsAndRefusesMalformedOnes) {
  auto words = RedisRequest("cache", {"GET", std::string("m:\0a", 4)});
  auto d = DecodeServiceRequest(words);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_redis);
  EXPECT_EQ(d->service, "cache");
  EXPECT_EQ(d->argv[1], std::string("m:\0a", 4));
  EXPECT_EQ(d->bytes, words.size() * sizeof(capnp::word));

  EXPECT_FALSE(DecodeServiceRequest(RedisRequest("", {"GET"})).ok());
  EXPECT_FALSE(DecodeServiceRequest(RedisRequest("cache", {})).ok());
  EXPECT_FALSE(DecodeServiceRequest(RedisRequest(std::string("ca\nche"), {"GET"})).ok());

  capnp::MallocMessageBuilder m;
  auto c = m.initRoot<call::ServiceRequest>();
  c.setService("words");
  auto call = c.initCall();
  call.setMethod("GET");
  call.setPath("no-slash");
  EXPECT_THAT(std::string(DecodeServiceRequest(capnp::messageToFlatArray(m)).status().message()),
              HasSubstr("path does not start with /"));
  call.setPath("/ok");
  call.setMethod("G T");
  EXPECT_FALSE(DecodeServiceRequest(capnp::messageToFlatArray(m)).ok());

  // Garbage words: an error, never a crash.
  std::vector<uint64_t> garbage(16, 0xA5A5A5A5A5A5A5A5ull);
  EXPECT_FALSE(DecodeServiceRequest(kj::arrayPtr(reinterpret_cast<const capnp::word*>(garbage.data()),
                                                 garbage.size()))
                   .ok());
}

TEST(ServiceCodecTest, AnswersCountTheirBytes) {
  ServiceAnswer a;
  a.is_redis = true;
  a.redis.type = RedisValue::Type::kArray;
  a.redis.elements.resize(2);
  a.redis.elements[0].type = RedisValue::Type::kString;
  a.redis.elements[0].str = std::string(100, 'x');
  EXPECT_EQ(AnswerBytes(a), 16u + 116u + 16u);
  EXPECT_EQ(AnswerBytes(FailedAnswer(ServiceAnswer::Outcome::kRefused, "no")), 0u);
  EXPECT_GT(EncodeServiceReply(a).size(), 0u);
}

}  // namespace
}  // namespace mp::host
