#include "compile.h"

#include <algorithm>
#include <iostream>
#include <random>
#include <set>
#include <gtest/gtest.h>

#include "decide.h"
#include "ir_codec.h"
#include "loader.h"

namespace sluice::cp {
namespace {

constexpr const char* kBase = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: v1
kind: Namespace
metadata: {name: infra}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {team: apps}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: same, port: 8080, protocol: HTTP}
  - {name: sel, port: 8081, protocol: HTTP, hostname: "*.example.com",
     allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: apps}}}}}
---
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: apps}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: apps}
spec: {ports: [{port: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: infra}
spec: {ports: [{port: 8080}]}
)";

struct Env {
    Store store;
    Diagnostics diags;
    CompileOutput out;
};

Env build(const std::string& extra) {
    Env e;
    auto docs = parse_yaml(std::string(kBase) + "---\n" + extra, "t.yaml", {}, e.diags);
    load_documents(docs, {}, e.store, e.diags);
    e.out = compile(e.store, {});
    return e;
}

const Condition* parent_cond(const CompileOutput& out, const std::string& kind,
                             const std::string& ns, const std::string& name, const std::string& type,
                             size_t parent = 0) {
    const ObjectStatus* st = out.find({kind, ns, name});
    if (!st || st->parents.size() <= parent) {
        return nullptr;
    }
    for (const Condition& c : st->parents[parent].conditions) {
        if (c.type == type) {
            return &c;
        }
    }
    return nullptr;
}

route::Request req(uint16_t port, const std::string& host, const std::string& path) {
    route::Request r;
    r.gateway_ns = "infra";
    r.gateway_name = "gw";
    r.port = port;
    r.host = host;
    r.target = path;
    return r;
}

std::string backend_of(const CompileOutput& out, const route::Request& r, uint64_t pick = 0) {
    const route::Decision d = route::decide(out.ir, r, pick);
    if (d.outcome != route::Outcome::Forward) {
        return "status " + std::to_string(d.status);
    }
    return out.ir.groups[d.group].name;
}

TEST(Compile, AttachmentReasons) {
    Env e = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ok, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wrong-ns, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: same}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-section, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: nope}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-host, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: sel}]
  hostnames: [foo.example.org]
)");
    ASSERT_EQ(e.diags.errors(), 0u);
    EXPECT_EQ(parent_cond(e.out, "HTTPRoute", "apps", "ok", "Accepted")->reason, "Accepted");
    EXPECT_EQ(parent_cond(e.out, "HTTPRoute", "apps", "wrong-ns", "Accepted")->reason,
              "NotAllowedByListeners");
    EXPECT_EQ(parent_cond(e.out, "HTTPRoute", "apps", "no-section", "Accepted")->reason,
              "NoMatchingParent");
    EXPECT_EQ(parent_cond(e.out, "HTTPRoute", "apps", "bad-host", "Accepted")->reason,
              "NoMatchingListenerHostname");
    // A rejected parent still reports ResolvedRefs.
    EXPECT_EQ(parent_cond(e.out, "HTTPRoute", "apps", "wrong-ns", "ResolvedRefs")->status, "True");
    const ObjectStatus* gw = e.out.find({"Gateway", "infra", "gw"});
    ASSERT_NE(gw, nullptr);
    EXPECT_EQ(gw->listeners[0].attached_routes, 1);
    EXPECT_EQ(gw->listeners[1].attached_routes, 0);
}

TEST(Compile, InvalidBackendsKeepWeightAndAnswer500) {
    Env e = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  rules:
  - backendRefs:
    - {name: v1, port: 8080, weight: 1}
    - {name: missing, port: 8080, weight: 1}
    - {name: v2, port: 8080, weight: 0}
  - matches: [{path: {type: PathPrefix, value: /cross}}]
    backendRefs: [{name: other, namespace: infra, port: 8080}]
)");
    const Condition* rr = parent_cond(e.out, "HTTPRoute", "apps", "r", "ResolvedRefs");
    ASSERT_NE(rr, nullptr);
    EXPECT_EQ(rr->status, "False");
    EXPECT_EQ(rr->reason, "BackendNotFound");
    EXPECT_EQ(parent_cond(e.out, "HTTPRoute", "apps", "r", "Accepted")->status, "True");
    EXPECT_EQ(backend_of(e.out, req(80, "x", "/"), 0), "v1");
    EXPECT_EQ(backend_of(e.out, req(80, "x", "/"), 1), "status 500");
    for (uint64_t pick = 0; pick < 10; ++pick) {
        EXPECT_NE(backend_of(e.out, req(80, "x", "/"), pick), "v2") << "weight 0 selected";
    }
    // Cross-namespace without a ReferenceGrant: 500.
    EXPECT_EQ(backend_of(e.out, req(80, "x", "/cross")), "status 500");
}

TEST(Compile, ReferenceGrantAllowsCrossNamespaceBackends) {
    Env e = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  rules: [{backendRefs: [{name: other, namespace: infra, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: infra}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
)");
    EXPECT_EQ(parent_cond(e.out, "HTTPRoute", "apps", "r", "ResolvedRefs")->status, "True");
    EXPECT_EQ(backend_of(e.out, req(80, "x", "/")), "other");
}

TEST(Compile, PrecedenceAcrossRoutes) {
    Env e = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  hostnames: ["*.example.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra, sectionName: http}]
  hostnames: [foo.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /only}}]
    backendRefs: [{name: v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /h}, headers: [{name: x, value: "1"}]},
              {path: {type: Exact, value: /exact}}]
    backendRefs: [{name: other, namespace: infra, port: 8080}]
)");
    EXPECT_EQ(backend_of(e.out, req(80, "foo.example.com", "/only/x")), "v2");
    EXPECT_EQ(backend_of(e.out, req(80, "foo.example.com:80", "/elsewhere")), "v1");
    EXPECT_EQ(backend_of(e.out, req(80, "bar.example.com", "/only")), "v1");
    EXPECT_EQ(backend_of(e.out, req(80, "example.com", "/")), "status 404");
}

TEST(Compile, ListenerProblemsBecomeConditions) {
    Env e = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g2, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: weird, port: 9000, protocol: SCTP}
  - {name: kinds, port: 9001, protocol: HTTP, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: HTTPRoute}]}}
  - {name: tls, port: 9443, protocol: HTTPS, tls: {certificateRefs: [{name: nope}]}}
  - {name: clash-a, port: 9500, protocol: HTTP}
  - {name: clash-b, port: 9500, protocol: TCP}
)");
    const ObjectStatus* g = e.out.find({"Gateway", "infra", "g2"});
    ASSERT_NE(g, nullptr);
    auto lc = [&](size_t i, const std::string& type) -> const Condition& {
        for (const Condition& c : g->listeners[i].conditions) {
            if (c.type == type) {
                return c;
            }
        }
        static Condition none;
        return none;
    };
    EXPECT_EQ(lc(0, "Accepted").reason, "UnsupportedProtocol");
    EXPECT_TRUE(g->listeners[0].supported_kinds.empty());
    EXPECT_EQ(lc(1, "ResolvedRefs").reason, "InvalidRouteKinds");
    ASSERT_EQ(g->listeners[1].supported_kinds.size(), 1u);
    EXPECT_EQ(g->listeners[1].supported_kinds[0].kind, "HTTPRoute");
    EXPECT_EQ(lc(2, "ResolvedRefs").reason, "InvalidCertificateRef");
    EXPECT_EQ(lc(3, "Conflicted").reason, "ProtocolConflict");
    EXPECT_EQ(lc(4, "Conflicted").status, "True");
    EXPECT_EQ(g->condition("Accepted")->reason, "ListenersNotValid");
    EXPECT_EQ(g->condition("Accepted")->status, "True");
}

TEST(Compile, IsDeterministicAndProgrammedWaitsForTheDataplane) {
    Env a = build("");
    Env b = build("");
    EXPECT_EQ(ir::encode(a.out.ir), ir::encode(b.out.ir));
    const ObjectStatus* g = a.out.find({"Gateway", "infra", "gw"});
    EXPECT_EQ(g->condition("Programmed")->reason, "Pending");
    set_programmed(a.out, true);
    EXPECT_EQ(g->condition("Programmed")->status, "True");
    EXPECT_EQ(g->listeners[0].conditions.back().reason, "Programmed");
}

TEST(Compile, SeedScenarioRoutesAsTheTextSays) {
    Store store;
    Diagnostics diags;
    const std::string root = SLUICE_SOURCE_ROOT;
    load_documents(load_path(root + "/examples/seed", {}, diags), {}, store, diags);
    ASSERT_EQ(diags.errors(), 0u);
    CompileOutput out = compile(store, {});
    route::Request r;
    r.gateway_ns = "default";
    r.gateway_name = "prod-web";
    r.port = 443;
    r.scheme = "https";
    r.sni = r.host = "foo.example.com";
    r.target = "/login";
    EXPECT_EQ(backend_of(out, r), "foo-auth");
    r.target = "/home";
    EXPECT_EQ(backend_of(out, r), "foo-home");
    r.target = "/x";
    EXPECT_EQ(backend_of(out, r), "foo-404");
    r.sni = r.host = "bar.example.com";
    r.target = "/";
    int v1 = 0, v2 = 0;
    for (uint64_t pick = 0; pick < 100; ++pick) {
        (backend_of(out, r, pick) == "bar-v1" ? v1 : v2)++;
    }
    EXPECT_EQ(v1, 90);
    EXPECT_EQ(v2, 10);
    r.headers.push_back({"env", "canary"});
    for (uint64_t pick = 0; pick < 100; ++pick) {
        EXPECT_EQ(backend_of(out, r, pick), "bar-v2");
    }
}

TEST(Compile, OcspStapleOfTheSecretTravelsWithItsCertificate) {
    Store store;
    Diagnostics diags;
    const std::string root = SLUICE_SOURCE_ROOT;
    load_documents(load_path(root + "/examples/seed", {}, diags), {}, store, diags);
    ASSERT_EQ(diags.errors(), 0u);
    auto certs_of_443 = [](const CompileOutput& out) {
        for (const ir::Listener& l : out.ir.listeners) {
            if (l.port == 443) {
                return l.certs;
            }
        }
        return std::vector<ir::CertRef>{};
    };
    const std::vector<ir::CertRef> before = certs_of_443(compile(store, {}));
    ASSERT_EQ(before.size(), 1u);
    EXPECT_EQ(before[0].ocsp_der, "");
    bool found = false;
    for (Secret& s : store.secrets) {
        if (s.meta.ns == before[0].ns && s.meta.name == before[0].name) {
            // Not a valid OCSP response: the controlplane passes the bytes on unjudged (the
            // L7 engine checks them against its clock), and the reference stays resolved.
            s.data["tls.ocsp-staple"] = std::string("\x30\x03\x0a\x01\x00", 5);
            found = true;
        }
    }
    ASSERT_TRUE(found);
    CompileOutput out = compile(store, {});
    const std::vector<ir::CertRef> after = certs_of_443(out);
    ASSERT_EQ(after.size(), 1u);
    EXPECT_EQ(after[0].ocsp_der, std::string("\x30\x03\x0a\x01\x00", 5));
    EXPECT_EQ(after[0].cert_pem, before[0].cert_pem);
    const ObjectStatus* g = out.find({"Gateway", "default", "prod-web"});
    ASSERT_NE(g, nullptr);
    for (const Condition& c : g->listeners[0].conditions) {
        if (c.type == "ResolvedRefs") {
            EXPECT_EQ(c.status, "True");
        }
    }
}

} // namespace
} // namespace sluice::cp

namespace sluice::cp {
namespace {

TEST(Compile, ForwardingModeAnnotations) {
    Env e = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: l4, namespace: infra, annotations: {sluice.dev/forwarding-mode: dsr-ipip}}
spec:
  gatewayClassName: sluice
  listeners: [{name: tcp, port: 9000, protocol: TCP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bad, namespace: infra, annotations: {sluice.dev/forwarding-mode: teleport}}
spec:
  gatewayClassName: sluice
  listeners: [{name: tcp, port: 9000, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: gue, namespace: apps, annotations: {sluice.dev/forwarding-mode: dsr-gue}}
spec:
  parentRefs: [{name: l4, namespace: infra}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: typo, namespace: apps, annotations: {sluice.dev/forwarding-mode: dsr}}
spec:
  parentRefs: [{name: l4, namespace: infra}]
  rules: [{backendRefs: [{name: v1, port: 8080}]}]
)");
    const ObjectStatus* bad = e.out.find({"Gateway", "infra", "bad"});
    ASSERT_NE(bad, nullptr);
    EXPECT_EQ(bad->condition("Accepted")->reason, "InvalidParameters");
    EXPECT_NE(bad->condition("Accepted")->message.find("teleport"), std::string::npos);
    EXPECT_EQ(parent_cond(e.out, "TCPRoute", "apps", "typo", "Accepted")->reason,
              "UnsupportedValue");
    EXPECT_EQ(parent_cond(e.out, "TCPRoute", "apps", "gue", "Accepted")->reason, "Accepted");
    const ir::Listener* l = nullptr;
    for (const ir::Listener& x : e.out.ir.listeners) {
        if (x.gateway_name == "l4") {
            l = &x;
        }
    }
    ASSERT_NE(l, nullptr);
    EXPECT_EQ(l->fwd_mode, ir::FwdMode::DsrIpip);
    ASSERT_NE(l->l4_rule, ir::kNone);
    EXPECT_EQ(e.out.ir.rules[l->l4_rule].fwd_mode, ir::FwdMode::DsrGue)
        << "the oldest accepted route (gue) carries traffic; the rejected one never does";
}

} // namespace
} // namespace sluice::cp

namespace sluice::cp {
namespace {

TEST(Compile, AddressPoolGivesEachGatewayItsOwnStableAddress) {
    Diagnostics diags;
    std::string yaml = std::string(kBase);
    for (int i = 0; i < 40; ++i) {
        yaml += "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g" +
                std::to_string(i) +
                ", namespace: infra}\nspec:\n  gatewayClassName: sluice\n  listeners:\n  - {name: "
                "http, port: 80, protocol: HTTP}\n";
    }
    auto docs = parse_yaml(yaml, "t.yaml", {}, diags);
    Store store;
    load_documents(docs, {}, store, diags);
    CompileOptions o;
    o.address_pool = "127.1.0.0/26"; // 62 usable addresses for 41 Gateways: collisions happen
    const CompileOutput a = compile(store, o);
    std::set<std::string> seen;
    for (const ir::Gateway& g : a.ir.gateways) {
        ASSERT_EQ(g.addresses.size(), 1u) << g.name;
        EXPECT_EQ(g.addresses[0].rfind("127.1.0.", 0), 0u) << g.addresses[0];
        EXPECT_NE(g.addresses[0], "127.1.0.0");
        EXPECT_NE(g.addresses[0], "127.1.0.63");
        EXPECT_TRUE(seen.insert(g.addresses[0]).second) << "shared address " << g.addresses[0];
    }
    EXPECT_EQ(seen.size(), a.ir.gateways.size());
    const CompileOutput b = compile(store, o); // same input, same addresses
    for (size_t i = 0; i < a.ir.gateways.size(); ++i) {
        EXPECT_EQ(a.ir.gateways[i].addresses, b.ir.gateways[i].addresses);
    }
    const CompileOutput plain = compile(store, {}); // no pool: the default address
    EXPECT_EQ(plain.ir.gateways[0].addresses, std::vector<std::string>{"127.0.0.1"});
}

} // namespace
} // namespace sluice::cp

namespace sluice::cp {
namespace {

// GatewayClass parameters: a ConfigMap named by parametersRef (docs/configuration.md).
TEST(Compile, GatewayClassParametersGiveAddressesAndForwardingMode) {
    Env e = build(R"(
apiVersion: v1
kind: ConfigMap
metadata: {name: metal-params, namespace: infra}
data:
  addressPool: 10.9.0.0/24
  forwardingMode: dsr-ipip
  ports: "0000:3b:00.0 net_memif0,role=server"
  lcores: 1-3,6
  exceptionInterface: sl-exc
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: metal}
spec:
  controllerName: sluice.dev/gateway-controller
  parametersRef: {group: "", kind: ConfigMap, name: metal-params, namespace: infra}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: broken-params, namespace: infra}
data: {lcores: "3-1", colour: blue}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: broken}
spec:
  controllerName: sluice.dev/gateway-controller
  parametersRef: {group: "", kind: ConfigMap, name: broken-params, namespace: infra}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: missing}
spec:
  controllerName: sluice.dev/gateway-controller
  parametersRef: {group: "", kind: ConfigMap, name: nope, namespace: infra}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: metal
  listeners: [{name: tcp, port: 9000, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: nat, namespace: infra, annotations: {sluice.dev/forwarding-mode: full-nat}}
spec:
  gatewayClassName: metal
  listeners: [{name: tcp, port: 9001, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: orphan, namespace: infra}
spec:
  gatewayClassName: broken
  listeners: [{name: tcp, port: 9002, protocol: TCP}]
)");
    const ObjectStatus* metal = e.out.find({"GatewayClass", "", "metal"});
    ASSERT_NE(metal, nullptr);
    EXPECT_EQ(metal->condition("Accepted")->status, "True");
    const ObjectStatus* broken = e.out.find({"GatewayClass", "", "broken"});
    ASSERT_NE(broken, nullptr);
    EXPECT_EQ(broken->condition("Accepted")->reason, "InvalidParameters");
    EXPECT_NE(broken->condition("Accepted")->message.find("unknown key \"colour\""),
              std::string::npos)
        << broken->condition("Accepted")->message;
    const ObjectStatus* missing = e.out.find({"GatewayClass", "", "missing"});
    ASSERT_NE(missing, nullptr);
    EXPECT_NE(missing->condition("Accepted")->message.find("infra/nope not found"),
              std::string::npos);
    EXPECT_EQ(e.out.find({"Gateway", "infra", "orphan"})->condition("Accepted")->status, "False");

    std::map<std::string, const ir::Gateway*> gws;
    for (const ir::Gateway& g : e.out.ir.gateways) {
        gws[g.name] = &g;
    }
    ASSERT_TRUE(gws.count("edge") && gws.count("nat"));
    ASSERT_EQ(gws["edge"]->addresses.size(), 1u);
    EXPECT_EQ(gws["edge"]->addresses[0].rfind("10.9.0.", 0), 0u) << "the class's pool";
    EXPECT_NE(gws["edge"]->addresses, gws["nat"]->addresses);
    for (const ir::Listener& l : e.out.ir.listeners) {
        if (l.gateway_name == "edge") {
            EXPECT_EQ(l.fwd_mode, ir::FwdMode::DsrIpip) << "the class's default";
        } else if (l.gateway_name == "nat") {
            EXPECT_EQ(l.fwd_mode, ir::FwdMode::FullNat) << "the Gateway's annotation wins";
        }
    }
}

TEST(Compile, GatewayClassParametersAreValidatedKeyByKey) {
    const std::pair<const char*, const char*> bad[] = {
        {"addressPool: 10.9.0.0", "addressPool"},
        {"addressPool: 10.9.0.0/31", "addressPool"},
        {"forwardingMode: teleport", "forwardingMode"},
        {"ports: eth0", "ports"},
        {"ports: \"0000:3b:00.9\"", "ports"},
        {"lcores: \"1,\"", "lcores"},
        {"lcores: \"a-b\"", "lcores"},
        {"exceptionInterface: this-name-is-far-too-long", "exceptionInterface"},
        {"exceptionInterface: \"sl exc\"", "exceptionInterface"},
    };
    for (const auto& [data, key] : bad) {
        Env e = build(std::string(R"(
apiVersion: v1
kind: ConfigMap
metadata: {name: p, namespace: infra}
data:
  )") + data + R"(
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: c}
spec:
  controllerName: sluice.dev/gateway-controller
  parametersRef: {group: "", kind: ConfigMap, name: p, namespace: infra}
)");
        const ObjectStatus* c = e.out.find({"GatewayClass", "", "c"});
        ASSERT_NE(c, nullptr) << data;
        EXPECT_EQ(c->condition("Accepted")->reason, "InvalidParameters") << data;
        EXPECT_NE(c->condition("Accepted")->message.find(key), std::string::npos)
            << data << ": " << c->condition("Accepted")->message;
    }
}


// ---------------------------------------------------------------- IncrementalCompiler

namespace inc {

/// Random but valid HTTPRoutes and EndpointSlices for the incremental == full test.
struct Gen {
    std::mt19937 rnd;
    explicit Gen(uint32_t seed)
        : rnd(seed) {}
    int pick(int n) { return static_cast<int>(rnd() % static_cast<uint32_t>(n)); }
    bool coin(int percent) { return pick(100) < percent; }

    std::string backend() {
        static const char* kNames[] = {"s0", "s1", "s2", "s3", "nosvc"};
        std::string b = std::string("{name: ") + kNames[pick(coin(90) ? 4 : 5)] +
                        ", port: " + (coin(70) ? "8080" : "9090");
        if (coin(30)) {
            b += ", weight: " + std::to_string(pick(5));
        }
        if (coin(10)) {
            b += ", filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: "
                 "[{name: x-b, value: v" + std::to_string(pick(9)) + "}]}}]";
        }
        return b + "}";
    }
    std::string path() {
        std::string p = "/p" + std::to_string(pick(6));
        for (int i = pick(3); i > 0; --i) {
            p += "/x" + std::to_string(pick(4));
        }
        return p;
    }
    std::string match() {
        static const char* kTypes[] = {"PathPrefix", "Exact", "RegularExpression"};
        const int t = pick(coin(80) ? 2 : 3);
        std::string m = std::string("{path: {type: ") + kTypes[t] + ", value: \"" +
                        (t == 2 ? "/r[0-9]+" + std::to_string(pick(5)) : path()) + "\"}";
        if (coin(30)) {
            m += ", method: " + std::string(coin(50) ? "GET" : "POST");
        }
        if (coin(30)) {
            m += ", headers: [{name: X-H" + std::to_string(pick(3)) + ", value: \"" +
                 std::to_string(pick(3)) + "\"}]";
        }
        if (coin(15)) {
            m += ", queryParams: [{name: q, value: \"" + std::to_string(pick(3)) + "\"}]";
        }
        return m + "}";
    }
    /// One HTTPRoute. Most edits keep its shape (paths, headers, weights, backends change);
    /// some change hostnames, parents or counts (a full compile).
    std::string route(int i, int gen, bool same_shape, int rules_seed) {
        std::mt19937 shape(static_cast<uint32_t>(rules_seed));
        auto sp = [&](int n) { return static_cast<int>(shape() % static_cast<uint32_t>(n)); };
        static const char* kHosts[] = {"a.example.com", "b.example.com", "*.example.com",
                                       "c.other.org"};
        const std::string ns = sp(3) == 0 ? "infra" : "apps";
        std::string y = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
                        "metadata: {name: r" + std::to_string(i) + ", namespace: " + ns +
                        ", generation: " + std::to_string(gen) + "}\nspec:\n";
        const int parents = sp(4);
        y += "  parentRefs: [{name: gw, namespace: infra";
        y += parents == 0 ? ", sectionName: http}" : parents == 1 ? ", sectionName: sel}" : "}";
        y += sp(5) == 0 ? ", {name: nogw}]\n" : "]\n";
        if (sp(4) != 0) {
            y += "  hostnames: [";
            for (int h = 0, n = 1 + sp(2); h < n; ++h) {
                y += std::string(h ? ", " : "") + "\"" + kHosts[sp(4)] + "\"";
            }
            y += "]\n";
        }
        if (!same_shape) {
            shape.seed(static_cast<uint32_t>(rnd()));
        }
        y += "  rules:\n";
        for (int r = 0, n = 1 + sp(3); r < n; ++r) {
            y += "  - matches: [";
            for (int m = 0, k = 1 + sp(3); m < k; ++m) {
                y += std::string(m ? ", " : "") + match();
            }
            y += "]\n";
            if (sp(3) == 0) {
                y += "    timeouts: {request: " + std::to_string(1 + pick(9)) + "s}\n";
            }
            y += "    backendRefs: [" + backend();
            if (sp(3) == 0) {
                y += ", " + backend();
            }
            y += "]\n";
            if (sp(4) == 0) {
                // The filter count is part of the shape; its content is not.
                switch (pick(3)) {
                case 0:
                    y += "    filters: [{type: RequestMirror, requestMirror: {backendRef: " +
                         backend() + "}}]\n";
                    break;
                case 1:
                    y += "    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: "
                         "{add: [{name: x-r, value: \"" + std::to_string(pick(9)) + "\"}]}}]\n";
                    break;
                default:
                    y += "    filters: [{type: RequestHeaderModifier, requestHeaderModifier: "
                         "{set: [{name: x-f, value: \"" + std::to_string(pick(99)) + "\"}]}}]\n";
                }
            }
        }
        return y;
    }
    std::string slice(int svc, int k, bool move_service) {
        const int target = move_service ? pick(4) : svc;
        std::string y = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s" +
                        std::to_string(svc) + "-" + std::to_string(k) +
                        ", namespace: apps, labels: {kubernetes.io/service-name: s" +
                        std::to_string(target) + "}}\naddressType: IPv4\n"
                        "ports: [{name: http, port: 8080}, {name: alt, port: 9090}]\nendpoints:\n";
        for (int e = 0, n = pick(4); e < n; ++e) {
            y += "- {addresses: [\"10.0." + std::to_string(pick(4)) + "." +
                 std::to_string(pick(250)) + "\"], conditions: {ready: " +
                 (coin(80) ? "true" : "false") + "}}\n";
        }
        if (y.back() == '\n' && y.find("endpoints:\n-") == std::string::npos) {
            y += "  []\n";
            y.replace(y.find("endpoints:\n  []"), 15, "endpoints: []");
        }
        return y;
    }
};

constexpr const char* kServices = R"(
apiVersion: v1
kind: Service
metadata: {name: s0, namespace: apps}
spec: {ports: [{name: http, port: 8080}, {name: alt, port: 9090}]}
---
apiVersion: v1
kind: Service
metadata: {name: s1, namespace: apps}
spec: {ports: [{name: http, port: 8080}, {name: alt, port: 9090}]}
---
apiVersion: v1
kind: Service
metadata: {name: s2, namespace: apps}
spec: {ports: [{name: http, port: 8080, targetPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: s3, namespace: infra}
spec: {ports: [{name: http, port: 8080}, {name: alt, port: 9090}]}
)";

/// Loads one object alone (as the Kubernetes source does) and moves it into `slot`,
/// keeping its load order.
template <class T>
void replace(std::vector<T>& (*vec)(Store&), const std::string& yaml, T& slot) {
    Store one;
    Diagnostics d;
    load_documents(parse_yaml(yaml, "edit.yaml", {}, d), {}, one, d);
    ASSERT_EQ(d.errors(), 0u) << yaml;
    std::vector<T>& v = vec(one);
    ASSERT_EQ(v.size(), 1u) << yaml;
    const uint64_t seq = slot.meta.sequence;
    slot = std::move(v.front());
    slot.meta.sequence = seq;
}

std::string statuses_text(const CompileOutput& out) {
    std::string s;
    for (const ObjectStatus& st : out.statuses) {
        s += st.key.str() + "\n" + status_yaml(st);
    }
    return s;
}

} // namespace inc

TEST(IncrementalCompile, PatchesEqualFullCompilesOnRandomEdits) {
    constexpr int kRoutes = 24, kServicesN = 4, kSlicesPer = 2;
    for (uint32_t seed : {1u, 2u, 3u}) {
        inc::Gen g(seed);
        std::string text = std::string(kBase) + "---\n" + inc::kServices;
        std::vector<int> shape(kRoutes), gen(kRoutes, 1);
        for (int i = 0; i < kRoutes; ++i) {
            shape[i] = static_cast<int>(g.rnd());
            text += "---\n" + g.route(i, 1, true, shape[i]);
        }
        for (int s = 0; s < kServicesN; ++s) {
            for (int k = 0; k < kSlicesPer; ++k) {
                std::string y = g.slice(s, k, false);
                if (s == 3) { // s3 lives in infra
                    y.replace(y.find("namespace: apps"), 15, "namespace: infra");
                }
                text += "---\n" + y;
            }
        }
        Store store;
        Diagnostics diags;
        load_documents(parse_yaml(text, "t.yaml", {}, diags), {}, store, diags);
        ASSERT_EQ(diags.errors(), 0u);
        ASSERT_EQ(store.routes.size(), static_cast<size_t>(kRoutes));
        IncrementalCompiler ic;
        CompileOutput out = ic.compile(store, {});
        set_programmed(out, true);
        int patched = 0, steps = 300, reported = 0;
        for (int step = 0; step < steps; ++step) {
            StoreDelta delta;
            for (int n = 1 + g.pick(3); n > 0; --n) {
                if (g.coin(55)) {
                    const int i = g.pick(kRoutes);
                    const bool same = g.coin(85);
                    if (!same) {
                        shape[i] = static_cast<int>(g.rnd());
                    }
                    auto& slot = store.routes[static_cast<size_t>(
                        std::find_if(store.routes.begin(), store.routes.end(),
                                     [&](const Route& r) { return r.meta.name == "r" + std::to_string(i); }) -
                        store.routes.begin())];
                    const std::string y = g.route(i, ++gen[i], same, shape[i]);
                    // the namespace is part of the key: keep it
                    if (y.find("namespace: " + slot.meta.ns + ",") == std::string::npos) {
                        continue;
                    }
                    inc::replace<Route>([](Store& s) -> std::vector<Route>& { return s.routes; },
                                        y, slot);
                    delta.routes.push_back(static_cast<size_t>(&slot - store.routes.data()));
                } else {
                    const size_t j = static_cast<size_t>(g.pick(static_cast<int>(store.slices.size())));
                    EndpointSlice& slot = store.slices[j];
                    const int svc = slot.meta.name[1] - '0', k = slot.meta.name[3] - '0';
                    std::string y = g.slice(svc, k, g.coin(5) && svc != 3);
                    if (svc == 3) {
                        y.replace(y.find("namespace: apps"), 15, "namespace: infra");
                    }
                    inc::replace<EndpointSlice>(
                        [](Store& s) -> std::vector<EndpointSlice>& { return s.slices; }, y, slot);
                    delta.slices.push_back(j);
                }
            }
            std::vector<std::string> before;
            for (const ObjectStatus& st : out.statuses) {
                before.push_back(st.key.str() + "\n" + status_yaml(st));
            }
            if (ic.patch(store, delta, out)) {
                ++patched;
                // Only the statuses it reports may have changed (status write-back looks
                // at those alone).
                ASSERT_EQ(out.statuses.size(), before.size());
                const std::vector<size_t>& changed = ic.patched_statuses();
                ASSERT_TRUE(std::is_sorted(changed.begin(), changed.end()));
                for (size_t i = 0; i < before.size(); ++i) {
                    const bool listed = std::binary_search(changed.begin(), changed.end(), i);
                    if (!listed) {
                        ASSERT_EQ(out.statuses[i].key.str() + "\n" + status_yaml(out.statuses[i]),
                                  before[i])
                            << "seed " << seed << " step " << step << ": a status changed by "
                            << "the patch is not in patched_statuses()";
                    }
                    if (listed) {
                        ++reported;
                    }
                }
            } else {
                out = ic.compile(store, {});
                set_programmed(out, true);
            }
            CompileOutput full = compile(store, {});
            set_programmed(full, true);
            ASSERT_EQ(ir::encode(out.ir), ir::encode(full.ir)) << "seed " << seed << " step " << step;
            ASSERT_EQ(inc::statuses_text(out), inc::statuses_text(full))
                << "seed " << seed << " step " << step;
        }
        std::cout << "seed " << seed << ": " << patched << " of " << steps
                  << " steps patched, " << ic.full_compiles() << " full compiles\n";
        // Most edits keep the shape: the patch path must have been taken often.
        EXPECT_GT(patched, steps / 4) << "seed " << seed;
        EXPECT_GT(ic.full_compiles(), 1u) << "seed " << seed;
        EXPECT_GT(reported, 0) << "seed " << seed; // route patches report their status
    }
}

TEST(IncrementalCompile, DeclinesWhatItCannotPatch) {
    Env e = build(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{matches: [{path: {type: PathPrefix, value: /a}}], backendRefs: [{name: v1, port: 8080}]}]
)");
    IncrementalCompiler ic;
    CompileOutput out = ic.compile(e.store, {});
    StoreDelta other;
    other.other = true;
    EXPECT_FALSE(ic.patch(e.store, other, out));
    Store copy = e.store; // another Store object
    EXPECT_FALSE(ic.patch(copy, StoreDelta{}, out));
    // A route now naming a Service port no route named: new group, indices would move.
    e.store.routes[0].http_rules[0].backends[0].ref.name = "v2";
    StoreDelta d;
    d.routes = {0};
    EXPECT_FALSE(ic.patch(e.store, d, out));
    e.store.routes[0].http_rules[0].backends[0].ref.name = "v1";
    e.store.routes[0].http_rules[0].matches[0].path = "/longer";
    EXPECT_TRUE(ic.patch(e.store, d, out));
    EXPECT_EQ(ir::encode(out.ir), ir::encode(compile(e.store, {}).ir));
    EXPECT_EQ(ic.patches(), 1u);
}

} // namespace
} // namespace sluice::cp
