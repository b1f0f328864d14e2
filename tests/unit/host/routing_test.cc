// Routing a request to a module, with no process.
#include "host/routing.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace mp::host {
namespace {

TEST(RequestTargetTest, OriginForm) {
  auto t = ParseRequestTarget("/m/echo/x?a=1&b", "Example.com:8080");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->path, "/m/echo/x");
  EXPECT_EQ(t->query, "a=1&b");
  EXPECT_EQ(t->host, "example.com");
}

TEST(RequestTargetTest, AbsoluteFormIsRoutedAsOriginFormWithItsAuthority) {
  auto t = ParseRequestTarget("http://api.example.com:80/m/echo/x?q=1", "ignored.example.com");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->path, "/m/echo/x");
  EXPECT_EQ(t->query, "q=1");
  EXPECT_EQ(t->host, "api.example.com");
  auto bare = ParseRequestTarget("HTTPS://h", "");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->path, "/");
  auto query_only = ParseRequestTarget("http://h?x=1", "");
  ASSERT_TRUE(query_only.ok());
  EXPECT_EQ(query_only->path, "/");
  EXPECT_EQ(query_only->query, "x=1");
}

TEST(RequestTargetTest, OtherFormsAreRefused) {
  EXPECT_FALSE(ParseRequestTarget("*", "h").ok());
  EXPECT_FALSE(ParseRequestTarget("example.com:443", "h").ok());
  EXPECT_FALSE(ParseRequestTarget("http:///x", "h").ok());
}

TEST(HostTest, PortsAreDropped) {
  EXPECT_EQ(HostWithoutPort("a.b:1"), "a.b");
  EXPECT_EQ(HostWithoutPort("[::1]:8080"), "[::1]");
  EXPECT_EQ(HostWithoutPort("[::1]"), "[::1]");
  EXPECT_EQ(HostWithoutPort("plain"), "plain");
}

TEST(RoutingTest, DotDotSegments) {
  EXPECT_TRUE(HasDotDotSegment("/m/echo/../x"));
  EXPECT_TRUE(HasDotDotSegment("/.."));
  EXPECT_TRUE(HasDotDotSegment("/a/.."));
  EXPECT_FALSE(HasDotDotSegment("/a/..b/c.."));
}

TEST(RoutingTest, LongestPrefixWinsAndHostsNarrow) {
  const std::vector<Route> routes = {{"/api/", "", "echo"},
                                     {"/api/words/", "", "dict"},
                                     {"/api/", "special.example.com", "misbehave"}};
  auto d = Resolve(routes, {"/api/words/ab", "", "x.example.com"});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->module, "dict");
  EXPECT_EQ(d->path, "/ab");
  d = Resolve(routes, {"/api/other", "", "x.example.com"});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->module, "echo");
  EXPECT_EQ(d->path, "/other");
  d = Resolve(routes, {"/api/x", "", "special.example.com"});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->module, "misbehave");
}

TEST(RoutingTest, ModulePathsWithoutARoute) {
  auto d = Resolve({}, {"/m/dict/prefix", "", ""});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->module, "dict");
  EXPECT_EQ(d->path, "/prefix");
  d = Resolve({}, {"/m/dict", "", ""});
  ASSERT_TRUE(d);
  EXPECT_EQ(d->path, "/");
  EXPECT_FALSE(Resolve({}, {"/other", "", ""}));
  EXPECT_FALSE(Resolve({}, {"/m//x", "", ""}));
}

}  // namespace
}  // namespace mp::host
