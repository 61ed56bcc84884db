#include "loader.h"

#include <gtest/gtest.h>

namespace sluice::cp {
namespace {

struct Loaded {
    Store store;
    Diagnostics diags;
};

Loaded load(const std::string& yaml) {
    Loaded l;
    auto docs = parse_yaml(yaml, "test.yaml", LoadLimits{}, l.diags);
    load_documents(docs, LoadOptions{}, l.store, l.diags);
    return l;
}

bool has_diag(const Diagnostics& d, Severity sev, const std::string& field_part,
              const std::string& msg_part) {
    for (const Diagnostic& x : d.items()) {
        if (x.severity == sev && x.field.find(field_part) != std::string::npos &&
            x.message.find(msg_part) != std::string::npos) {
            return true;
        }
    }
    return false;
}

TEST(Loader, AppliesCrdDefaults) {
    auto l = load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{headers: [{name: x, value: y}]}]
    backendRefs: [{name: svc, port: 80}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https}}]
)");
    ASSERT_EQ(l.diags.errors(), 0u);
    ASSERT_EQ(l.store.routes.size(), 1u);
    const Route& r = l.store.routes[0];
    EXPECT_EQ(r.parents[0].group, "gateway.networking.k8s.io");
    EXPECT_EQ(r.parents[0].kind, "Gateway");
    const HttpRule& rule = r.http_rules[0];
    EXPECT_EQ(rule.matches[0].path_type, PathType::PathPrefix);
    EXPECT_EQ(rule.matches[0].path, "/");
    EXPECT_EQ(rule.matches[0].headers[0].type, MatchType::Exact);
    EXPECT_EQ(rule.backends[0].weight, 1);
    EXPECT_EQ(rule.backends[0].ref.kind, "Service");
    EXPECT_EQ(rule.filters[0].status_code, 302);
}

TEST(Loader, RouteWithoutRulesGetsTheDefaultRule) {
    auto l = load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec: {parentRefs: [{name: gw}]}
)");
    ASSERT_EQ(l.store.routes.size(), 1u);
    EXPECT_EQ(l.store.routes[0].meta.ns, "default");
    ASSERT_EQ(l.store.routes[0].http_rules.size(), 1u);
    EXPECT_EQ(l.store.routes[0].http_rules[0].matches[0].path, "/");
}

TEST(Loader, InvalidObjectsAreDroppedWithAPreciseDiagnostic) {
    auto l = load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: ns}
spec:
  rules:
  - matches: [{path: {type: PathPrefix, value: "no-slash"}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: ns}
spec:
  gatewayClassName: c
  listeners: [{name: a, port: "80", protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: good, namespace: ns}
spec: {}
)");
    EXPECT_TRUE(has_diag(l.diags, Severity::Error, "spec.rules[0].matches[0].path.value",
                         "must be an absolute path"));
    EXPECT_TRUE(has_diag(l.diags, Severity::Error, "spec.listeners[0].port", "integer"));
    ASSERT_EQ(l.store.routes.size(), 1u);
    EXPECT_EQ(l.store.routes[0].meta.name, "good");
    EXPECT_TRUE(l.store.gateways.empty());
    const Diagnostic& d = l.diags.items()[0];
    EXPECT_EQ(d.file, "test.yaml");
    EXPECT_EQ(d.doc, 0);
    EXPECT_EQ(d.object, "HTTPRoute ns/bad");
}

TEST(Loader, CelRulesOfFiltersAreEnforced) {
    auto l = load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  rules:
  - matches: [{path: {type: Exact, value: /a}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}
    - type: RequestRedirect
      requestRedirect: {statusCode: 305}
)");
    EXPECT_TRUE(has_diag(l.diags, Severity::Error, "filters", "ReplacePrefixMatch requires"));
    EXPECT_TRUE(has_diag(l.diags, Severity::Error, "statusCode", "301, 302, 303, 307, 308"));
    EXPECT_TRUE(has_diag(l.diags, Severity::Error, "filters", "either RequestRedirect or URLRewrite"));
    EXPECT_TRUE(l.store.routes.empty());
}

TEST(Loader, UnknownFieldsWarnAndUnknownKindsAreIgnored) {
    auto l = load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec: {parentRefs: [{name: gw, colour: red}]}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
)");
    EXPECT_EQ(l.diags.errors(), 0u);
    EXPECT_TRUE(has_diag(l.diags, Severity::Warning, "spec.parentRefs[0].colour", "unknown field"));
    EXPECT_TRUE(has_diag(l.diags, Severity::Warning, "kind", "unknown kind"));
    EXPECT_EQ(l.store.routes.size(), 1u);
}

TEST(Loader, SeedV1alpha1IsConvertedToTheSameModel) {
    Diagnostics diags;
    auto docs = load_path(std::string(SLUICE_SOURCE_ROOT) + "/examples/seed/seed-v1alpha1.yaml",
                          LoadLimits{}, diags);
    Store store;
    load_documents(docs, LoadOptions{}, store, diags);
    ASSERT_EQ(diags.errors(), 0u) << diags.items()[0].str();
    ASSERT_EQ(store.gateways.size(), 1u);
    const Listener& l = store.gateways[0].listeners[0];
    EXPECT_EQ(l.protocol, "HTTPS");
    EXPECT_EQ(l.from, "All");
    ASSERT_TRUE(l.route_selector);
    EXPECT_EQ(l.route_selector->match_labels.at("gateway"), "external-https-prod");
    EXPECT_EQ(l.certificate_refs[0].name, "admin-controlled-cert");
    ASSERT_EQ(store.routes.size(), 2u);
    const Route* bar = store.routes[0].meta.name == "bar-route" ? &store.routes[0] : &store.routes[1];
    EXPECT_TRUE(bar->v1alpha1);
    ASSERT_EQ(bar->http_rules.size(), 2u);
    EXPECT_EQ(bar->http_rules[0].backends[0].weight, 90);
    EXPECT_EQ(bar->http_rules[0].backends[1].ref.name, "bar-v2");
    EXPECT_EQ(bar->http_rules[1].matches[0].headers[0].name, "env");
    EXPECT_EQ(bar->http_rules[1].matches[0].headers[0].value, "canary");
}

TEST(Loader, DurationsFollowTheGatewayApiFormat) {
    EXPECT_EQ(parse_duration_ms("500ms"), 500);
    EXPECT_EQ(parse_duration_ms("1h2m3s4ms"), 3723004);
    EXPECT_EQ(parse_duration_ms("0s"), 0);
    EXPECT_EQ(parse_duration_ms("1.5s"), -1);
    EXPECT_EQ(parse_duration_ms("123456s"), -1);
    EXPECT_EQ(parse_duration_ms("1s1s1s1s1s"), -1);
}

TEST(Loader, HostnameSyntax) {
    EXPECT_TRUE(valid_hostname("foo.example.com", false));
    EXPECT_TRUE(valid_hostname("*.example.com", true));
    EXPECT_FALSE(valid_hostname("*.example.com", false));
    EXPECT_FALSE(valid_hostname("foo.*.com", true));
    EXPECT_FALSE(valid_hostname("Foo.com", true));
    EXPECT_FALSE(valid_hostname("foo.com:80", true));
    EXPECT_FALSE(valid_hostname("", true));
}

} // namespace
} // namespace sluice::cp
