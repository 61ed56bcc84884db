#include "decide.h"

#include <gtest/gtest.h>

#include "hostnames.h"

namespace sluice::route {
namespace {

TEST(ReplacePrefix, FollowsTheSpecTable) {
    EXPECT_EQ(replace_prefix("/prefix/one/two", "/prefix/one", "/one"), "/one/two");
    EXPECT_EQ(replace_prefix("/strip-prefix/three", "/strip-prefix", "/"), "/three");
    EXPECT_EQ(replace_prefix("/strip-prefix", "/strip-prefix", "/"), "/");
    EXPECT_EQ(replace_prefix("/foo/", "/foo/", "/xyz"), "/xyz/");
    EXPECT_EQ(replace_prefix("/foo/bar", "/foo", "/xyz/"), "/xyz/bar");
    EXPECT_EQ(replace_prefix("/foo", "/foo", ""), "/");
}

TEST(Hostnames, WildcardNeedsAnExtraLabel) {
    EXPECT_TRUE(hosts::matches("*.example.com", "foo.example.com"));
    EXPECT_TRUE(hosts::matches("*.example.com", "a.b.example.com"));
    EXPECT_FALSE(hosts::matches("*.example.com", "example.com"));
    EXPECT_TRUE(hosts::matches("", "anything"));
    EXPECT_TRUE(hosts::matches("Foo.Example.com", "foo.example.COM"));
    EXPECT_EQ(hosts::intersect("*.specific.com", "very.specific.com"), "very.specific.com");
    EXPECT_EQ(hosts::intersect("*.a.example.com", "*.example.com"), "*.a.example.com");
    EXPECT_EQ(hosts::intersect("*.example.com", "*.a.example.com"), "*.a.example.com");
    EXPECT_EQ(hosts::intersect("wildcard.io", "*.wildcard.io"), "");
    EXPECT_EQ(hosts::strip_port("example.com:8080"), "example.com");
    EXPECT_EQ(hosts::strip_port("[::1]:80"), "[::1]");
}

ir::Ir two_rules() {
    ir::Ir ir;
    ir.groups.push_back({"ns", "v1", 8080, "", {}, false, "", {}, "", ""});
    ir.groups.push_back({"ns", "v2", 8080, "", {}, false, "", {}, "", ""});
    ir::Listener l;
    l.gateway_ns = "ns";
    l.gateway_name = "gw";
    l.name = "http";
    l.port = 80;
    ir::Rule r0;
    r0.route_name = "r";
    r0.backends.push_back({0, 1, 0, "", ir::kNone});
    ir::Rule r1 = r0;
    r1.index = 1;
    r1.backends[0].group = 1;
    ir.rules = {r0, r1};
    ir::HttpMatch prefix;
    prefix.rule = 0;
    prefix.path = "/v2";
    ir::HttpMatch any;
    any.rule = 1;
    any.path = "/";
    l.http_matches = {prefix, any};
    l.host_groups.push_back({"", {0, 1}, {}});
    ir.listeners.push_back(l);
    ir.gateways.push_back({"ns", "gw", {"127.0.0.1"}, {0}, {}});
    return ir;
}

TEST(Match, PrefixIsSegmentWise) {
    const ir::Ir ir = two_rules();
    Request req;
    req.gateway_ns = "ns";
    req.gateway_name = "gw";
    req.target = "/v2/example?x=1";
    EXPECT_EQ(match(ir, req).rule, 0u);
    req.target = "/v2";
    EXPECT_EQ(match(ir, req).rule, 0u);
    req.target = "/v2example";
    EXPECT_EQ(match(ir, req).rule, 1u);
    req.port = 81;
    EXPECT_EQ(match(ir, req).outcome, Outcome::NoListener);
}

TEST(Decide, InvalidBackendKeepsItsWeightAndAnswers500) {
    ir::Ir ir = two_rules();
    ir.rules[1].backends.push_back({ir::kNone, 1, 500, "gone", ir::kNone});
    Request req;
    req.gateway_ns = "ns";
    req.gateway_name = "gw";
    req.target = "/other";
    EXPECT_EQ(decide(ir, req, 0).outcome, Outcome::Forward);
    const Decision d = decide(ir, req, 1);
    EXPECT_EQ(d.outcome, Outcome::Respond);
    EXPECT_EQ(d.status, 500);
}

} // namespace
} // namespace sluice::route
