// The HTTP rules a module's reply obeys before it reaches a client (host/reply_rules.h).
#include "host/reply_rules.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mp::host {
namespace {

using ::testing::HasSubstr;

absl::Status Check(uint16_t status, HeaderList headers = {}) {
  return ApplyReplyRules(status, &headers);
}

class BadStatusTest : public ::testing::TestWithParam<uint16_t> {};

TEST_P(BadStatusTest, RefusedNamingTheStatus) {
  absl::Status s = Check(GetParam());
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("status " + std::to_string(GetParam()) +
                                     " is not a final HTTP status (200-599)"));
}
// 1xx would go out as an interim response followed by the module's bytes: a forged response.
INSTANTIATE_TEST_SUITE_P(NotFinal, BadStatusTest,
                         ::testing::Values(0, 99, 100, 101, 103, 199, 600, 65535));

class GoodStatusTest : public ::testing::TestWithParam<uint16_t> {};
TEST_P(GoodStatusTest, Accepted) { EXPECT_TRUE(Check(GetParam()).ok()); }
INSTANTIATE_TEST_SUITE_P(Final, GoodStatusTest, ::testing::Values(200, 204, 304, 418, 599));

TEST(ReplyRulesTest, HeaderNamesThatAreNotTokensAreRefused) {
  for (const std::string& name :
       {std::string("Bad Name"), std::string("Bad:Name"), std::string("Bad\rName"),
        std::string("Bad\nName"), std::string("Bad\0Name", 8), std::string("Caf\xc3\xa9"),
        std::string("(x)"), std::string(), std::string(257, 'n')}) {
    SCOPED_TRACE(name);
    absl::Status s = Check(200, {{"X-Ok", "1"}, {name, "v"}});
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr("is not an HTTP token"));
  }
}

TEST(ReplyRulesTest, TokenHeaderNamesAreAccepted) {
  HeaderList headers{{"!#$%&'*+-.^_`|~", "1"}, {std::string(256, 'n'), "2"}, {"x9", "3"}};
  const HeaderList expected = headers;
  ASSERT_TRUE(ApplyReplyRules(200, &headers).ok());
  EXPECT_EQ(headers, expected);
}

TEST(ReplyRulesTest, ControlBytesInValuesAreRefusedNamingTheByte) {
  const std::pair<std::string, const char*> cases[] = {
      {"a\rb", "0x0d"}, {"a\nb", "0x0a"}, {std::string("a\0b", 3), "0x00"},
      {"ok\r\nX-Injected: 1", "0x0d"}, {"\x01", "0x01"}, {"del\x7f", "0x7f"}, {"\x1b[31m", "0x1b"}};
  for (const auto& [value, byte] : cases) {
    SCOPED_TRACE(value);
    absl::Status s = Check(200, {{"X-Value", value}});
    EXPECT_FALSE(s.ok());
    EXPECT_THAT(s.message(), HasSubstr(std::string("header 'X-Value' has a control byte (") +
                                       byte + ") in its value"));
  }
}

TEST(ReplyRulesTest, TabsAndNonAsciiBytesInValuesAreAccepted) {
  HeaderList headers{{"X-Tab", "a\tb"}, {"X-Utf8", "caf\xc3\xa9"}, {"X-Obs", "\xff"}};
  EXPECT_TRUE(ApplyReplyRules(200, &headers).ok());
  EXPECT_EQ(headers.size(), 3u);
}

TEST(ReplyRulesTest, ValueOf8KiBPlusOneIsRefused) {
  EXPECT_FALSE(Check(200, {{"X-Big", std::string(8193, 'v')}}).ok());
  EXPECT_TRUE(Check(200, {{"X-Big", std::string(8192, 'v')}, {"X-Empty", ""}}).ok());
}

TEST(ReplyRulesTest, HostOwnedHeadersAreDroppedAndTheRestKeptInOrder) {
  HeaderList headers{{"Content-Type", "text/plain"},   {"X-Mphost-Worker", "1"},
                     {"content-length", "999"},        {"Transfer-Encoding", "chunked"},
                     {"CONNECTION", "close"},          {"Date", "yesterday"},
                     {"X-Request-Id", "forged"},       {"x-mphost-anything", "x"},
                     {"Keep-Alive", "timeout=1"},      {"Upgrade", "h2c"},
                     {"Trailer", "X"},                 {"TE", "trailers"},
                     {"Set-Cookie", "a=1"},            {"X-Mphost", "not the prefix"}};
  ASSERT_TRUE(ApplyReplyRules(200, &headers).ok());
  EXPECT_EQ(headers, (HeaderList{{"Content-Type", "text/plain"},
                                 {"Set-Cookie", "a=1"},
                                 {"X-Mphost", "not the prefix"}}));
}

TEST(ReplyRulesTest, NothingIsDroppedFromARefusedReply) {
  HeaderList headers{{"Date", "x"}, {"X-Bad", "\x01"}};
  EXPECT_FALSE(ApplyReplyRules(200, &headers).ok());
  EXPECT_EQ(headers.size(), 2u);
}

}  // namespace
}  // namespace mp::host
