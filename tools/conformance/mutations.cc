#include "mutations.h"

#include <algorithm>
#include <map>

#include "traffic.h"
#include "yaml_doc.h"

namespace sluice::conformance {

namespace {

constexpr const char* kInfra = "gateway-conformance-infra";

template <class T>
T* find_obj(std::vector<T>& v, const std::string& ns, const std::string& name) {
    for (T& o : v) {
        if (o.meta.ns == ns && o.meta.name == name) {
            return &o;
        }
    }
    return nullptr;
}

std::string add_listener(MutEnv& e, const std::string& gw, const std::string& name,
                         const std::string& hostname) {
    cp::Gateway* g = find_obj(e.store.gateways, kInfra, gw);
    if (!g) {
        return "no Gateway " + gw;
    }
    cp::Listener l;
    l.name = name;
    l.port = 80;
    l.protocol = "HTTP";
    l.hostname = hostname;
    l.from = "All";
    g->listeners.push_back(l);
    ++g->meta.generation;
    return "";
}

std::string remove_listener(MutEnv& e, const std::string& gw, const std::string& name) {
    cp::Gateway* g = find_obj(e.store.gateways, kInfra, gw);
    if (!g) {
        return "no Gateway " + gw;
    }
    const size_t before = g->listeners.size();
    std::erase_if(g->listeners, [&](const cp::Listener& l) { return l.name == name; });
    if (g->listeners.size() == before) {
        return "Gateway " + gw + " has no listener " + name;
    }
    ++g->meta.generation;
    return "";
}

std::string delete_test_grants(MutEnv& e) {
    const size_t before = e.store.grants.size();
    std::erase_if(e.store.grants, [&](const cp::ReferenceGrant& g) {
        return e.test_files.count(g.meta.source.file) > 0;
    });
    return e.store.grants.size() == before ? "the test's manifests hold no ReferenceGrant" : "";
}

std::string create_route(MutEnv& e, const std::string& kind, const std::string& name,
                         const std::string& gw, const std::string& section,
                         const std::string& backend, int port) {
    const std::string yaml =
        "apiVersion: gateway.networking.k8s.io/v1\nkind: " + kind + "\nmetadata:\n  name: " + name +
        "\n  namespace: " + kInfra + "\nspec:\n  parentRefs:\n  - name: " + gw +
        "\n    sectionName: " + section + "\n  rules:\n  - backendRefs:\n    - name: " + backend +
        "\n      port: " + std::to_string(port) + "\n";
    std::string why = load_yaml_text(yaml, "<runner: " + name + ">", e.load, e.store, e.diags);
    stamp_creation(e.store, e.now);
    return why;
}

std::string set_policy_ca(MutEnv& e, const std::string& policy, const std::string& cm) {
    cp::BackendTlsPolicy* p = find_obj(e.store.tls_policies, kInfra, policy);
    if (!p) {
        return "no BackendTLSPolicy " + policy;
    }
    if (p->ca_refs.empty()) {
        return "BackendTLSPolicy " + policy + " has no caCertificateRefs";
    }
    p->ca_refs[0].name = cm;
    ++p->meta.generation;
    return "";
}

std::string set_config_map_ca(MutEnv& e, const std::string& name, const std::string& pem) {
    cp::ConfigMap* c = find_obj(e.store.config_maps, kInfra, name);
    if (!c) {
        return "no ConfigMap " + name;
    }
    c->data["ca.crt"] = pem;
    return "";
}

std::string fixture_pem(const MutEnv& e, const std::string& ref) {
    auto it = e.fx.cert_pem.find(ref);
    return it == e.fx.cert_pem.end() ? "" : it->second;
}

// ---- the same steps on traffic mode's config files

TextDoc* find_doc(LiveMutEnv& e, const std::string& kind, const std::string& name) {
    for (TextDoc& d : e.docs) {
        if (d.kind == kind && d.name == name && (d.ns.empty() || d.ns == kInfra)) {
            return &d;
        }
    }
    return nullptr;
}

/// A CA ConfigMap document with `pem` as ca.crt ("" = an empty value).
std::string config_map_doc(const std::string& name, const std::string& pem) {
    std::string y = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name +
                    "\n  namespace: " + kInfra + "\ndata:\n";
    if (pem.empty()) {
        return y + "  ca.crt: \"\"\n";
    }
    y += "  ca.crt: |\n";
    size_t start = 0;
    while (start < pem.size()) {
        size_t nl = pem.find('\n', start);
        if (nl == std::string::npos) {
            nl = pem.size();
        }
        y += "    " + pem.substr(start, nl - start) + "\n";
        start = nl + 1;
    }
    return y;
}

std::string live_fixture_pem(const LiveMutEnv& e, const std::string& ref) {
    if (!e.fx) {
        return "";
    }
    auto it = e.fx->cert_pem.find(ref);
    return it == e.fx->cert_pem.end() ? "" : it->second;
}

/// Points the first caCertificateRefs entry of a policy document at ConfigMap `cm`.
std::string live_set_policy_ca(LiveMutEnv& e, const std::string& policy, const std::string& from,
                               const std::string& cm) {
    TextDoc* d = find_doc(e, "BackendTLSPolicy", policy);
    if (!d) {
        return "the test's manifests hold no BackendTLSPolicy " + policy;
    }
    const std::string old = "name: \"" + from + "\"";
    const size_t at = d->text.find(old);
    if (at == std::string::npos || d->text.find(old, at + 1) != std::string::npos) {
        return "BackendTLSPolicy " + policy + " does not name ConfigMap " + from + " once";
    }
    d->text.replace(at, old.size(), "name: \"" + cm + "\"");
    return "";
}

/// Creates or replaces the runner's CA ConfigMap document `cm`.
std::string live_set_config_map(LiveMutEnv& e, const std::string& cm, const std::string& pem,
                                bool create) {
    TextDoc* d = find_doc(e, "ConfigMap", cm);
    if (create && !d) {
        e.docs.push_back(TextDoc{"ConfigMap", kInfra, cm, ""});
        d = &e.docs.back();
    }
    if (!d) {
        return "no ConfigMap " + cm + " in the test's manifests";
    }
    d->text = config_map_doc(cm, pem);
    return "";
}

} // namespace

void stamp_creation(cp::Store& s, int64_t when) {
    auto st = [when](auto& v) {
        for (auto& o : v) {
            if (o.meta.creation == 0) {
                o.meta.creation = when;
            }
        }
    };
    st(s.classes);
    st(s.gateways);
    st(s.listener_sets);
    st(s.routes);
    st(s.grants);
    st(s.tls_policies);
    st(s.namespaces);
    st(s.services);
    st(s.slices);
    st(s.secrets);
    st(s.config_maps);
    st(s.deployments);
}

std::string load_yaml_text(const std::string& text, const std::string& label,
                           const cp::LoadOptions& lo, cp::Store& store, cp::Diagnostics& diags) {
    const size_t before = diags.size();
    const std::vector<cp::Document> docs = cp::parse_yaml(text, label, cp::LoadLimits{}, diags);
    for (size_t i = before; i < diags.size(); ++i) {
        if (diags.items()[i].severity == cp::Severity::Error) {
            return "cannot parse " + label + ": " + diags.items()[i].str();
        }
    }
    cp::load_documents(docs, lo, store, diags);
    return "";
}

std::vector<Mutation> mutations_for(const std::string& test) {
    std::vector<Mutation> m;
    if (test == "GatewayModifyListeners") {
        m.push_back({"add listener http (data.test.com:80, from All) to gateway-add-listener",
                     "GatewayMustHaveLatestConditions",
                     "",
                     1,
                     {},
                     [](MutEnv& e) {
                         return add_listener(e, "gateway-add-listener", "http", "data.test.com");
                     }});
        m.push_back(
            {"remove listener https from gateway-remove-listener",
             "GatewayMustHaveLatestConditions",
             "",
             3,
             {},
             [](MutEnv& e) { return remove_listener(e, "gateway-remove-listener", "https"); }});
    } else if (test == "GatewayObservedGenerationBump") {
        m.push_back({"add listener alternate (foo.com:80, from All)",
                     "GatewayMustHaveLatestConditions",
                     "",
                     1,
                     {},
                     [](MutEnv& e) {
                         return add_listener(e, "gateway-observed-generation-bump", "alternate",
                                             "foo.com");
                     }});
    } else if (test == "GatewayClassObservedGenerationBump") {
        m.push_back({"set spec.description on the GatewayClass",
                     "GatewayClassMustHaveLatestConditions",
                     "",
                     1,
                     {},
                     [](MutEnv& e) -> std::string {
                         for (cp::GatewayClass& c : e.store.classes) {
                             if (c.meta.name == "gatewayclass-observed-generation-bump") {
                                 ++c.meta.generation;
                                 return "";
                             }
                         }
                         return "no GatewayClass gatewayclass-observed-generation-bump";
                     }});
    } else if (test == "HTTPRouteObservedGenerationBump") {
        m.push_back({"patch rules[0].backendRefs[0].name to infra-backend-v2",
                     "HTTPRouteMustHaveLatestConditions",
                     "",
                     1,
                     {},
                     [](MutEnv& e) -> std::string {
                         cp::Route* r =
                             find_obj(e.store.routes, kInfra, "observed-generation-bump");
                         if (!r || r->http_rules.empty() || r->http_rules[0].backends.empty()) {
                             return "no HTTPRoute observed-generation-bump with a backendRef";
                         }
                         r->http_rules[0].backends[0].ref.name = "infra-backend-v2";
                         ++r->meta.generation;
                         return "";
                     }});
    } else if (test == "BackendTLSPolicyObservedGenerationBump") {
        m.push_back({"patch spec.validation.hostname to foo.example.com",
                     "BackendTLSPolicyMustHaveLatestConditions",
                     "",
                     1,
                     {},
                     [](MutEnv& e) -> std::string {
                         cp::BackendTlsPolicy* p =
                             find_obj(e.store.tls_policies, kInfra, "observed-generation-bump");
                         if (!p) {
                             return "no BackendTLSPolicy observed-generation-bump";
                         }
                         p->hostname = "foo.example.com";
                         ++p->meta.generation;
                         return "";
                     }});
    } else if (test == "GatewayStaticAddresses") {
        auto remove = [](MutEnv& e, bool invalid_type) -> std::string {
            cp::Gateway* g = find_obj(e.store.gateways, kInfra, "gateway-static-addresses");
            if (!g) {
                return "no Gateway gateway-static-addresses";
            }
            const size_t before = g->addresses.size();
            std::erase_if(g->addresses, [&](const cp::GatewayAddress& a) {
                if (invalid_type) {
                    return a.type != "IPAddress" && a.type != "Hostname";
                }
                return a.value == kUnusableAddress;
            });
            if (g->addresses.size() == before) {
                return "no such address on gateway-static-addresses";
            }
            ++g->meta.generation;
            return "";
        };
        m.push_back({"remove the address of unsupported type",
                     "",
                     "GatewayMustHaveLatestConditions",
                     2,
                     {},
                     [remove](MutEnv& e) { return remove(e, true); }});
        m.push_back({"remove the unusable address",
                     "",
                     "GatewayMustHaveLatestConditions",
                     3,
                     {},
                     [remove](MutEnv& e) { return remove(e, false); }});
    } else if (test == "HTTPRouteReferenceGrant") {
        m.push_back({"delete the test's ReferenceGrant", "", "", 0, {"#1"}, delete_test_grants});
        m.back().live = [](LiveMutEnv& e) -> std::string {
            const size_t before = e.docs.size();
            std::erase_if(e.docs, [](const TextDoc& d) { return d.kind == "ReferenceGrant"; });
            return e.docs.size() == before ? "the test's manifests hold no ReferenceGrant" : "";
        };
    } else if (test == "TCPRouteReferenceGrant") {
        m.push_back({"delete the test's ReferenceGrant",
                     "",
                     "TCPRouteMustHaveCondition",
                     1,
                     {},
                     delete_test_grants});
    } else if (test == "UDPRouteReferenceGrant") {
        m.push_back({"delete the test's ReferenceGrant",
                     "",
                     "UDPRouteMustHaveCondition",
                     2,
                     {},
                     delete_test_grants});
    } else if (test == "TCPRouteMultipleRoutesAttachment") {
        m.push_back({"create TCPRoute tcproute-attach-newer (later creationTimestamp)",
                     "",
                     "TCPRouteMustHaveCondition",
                     1,
                     {"*"},
                     [](MutEnv& e) {
                         return create_route(e, "TCPRoute", "tcproute-attach-newer",
                                             "tcp-multi-route-attach-gateway", "tcp",
                                             "tcp-attach-backend-2", 3000);
                     }});
    } else if (test == "UDPRouteMultipleRoutesAttachment") {
        m.push_back(
            {"create UDPRoute udproute-attach-newer (later creationTimestamp)",
             "",
             "UDPRouteMustHaveCondition",
             1,
             {"*"},
             [](MutEnv& e) -> std::string {
                 // The backend port is the one the older route uses.
                 cp::Route* older = find_obj(e.store.routes, kInfra, "udproute-attach-older");
                 int port = 3000;
                 if (older && !older->l4_rules.empty() && !older->l4_rules[0].backends.empty() &&
                     older->l4_rules[0].backends[0].ref.port) {
                     port = *older->l4_rules[0].backends[0].ref.port;
                 }
                 return create_route(e, "UDPRoute", "udproute-attach-newer",
                                     "udp-multi-route-attach-gateway", "udp",
                                     "udp-attach-backend-2", port);
             }});
    } else if (test == "HTTPRouteServiceTypes") {
        m.push_back({"patch the manual EndpointSlices with infra-backend-v1 pod IPs",
                     "",
                     "GatewayAndHTTPRoutesMustBeAccepted",
                     1,
                     {"*"},
                     [](MutEnv& e) -> std::string {
                         int patched = 0;
                         for (cp::EndpointSlice& s : e.store.slices) {
                             if (!e.test_files.count(s.meta.source.file) || !s.endpoints.empty()) {
                                 continue;
                             }
                             const bool v6 = s.address_type == "IPv6";
                             const std::string ip = pod_ip(e.store, kInfra, "infra-backend-v1", v6);
                             if (ip.empty()) {
                                 return std::string("no Deployment infra-backend-v1");
                             }
                             cp::EndpointSlice::Endpoint ep;
                             ep.addresses.push_back(ip);
                             s.endpoints.push_back(ep);
                             ++patched;
                         }
                         return patched ? std::string() : std::string("no empty EndpointSlice");
                     }});
        m.back().live = [](LiveMutEnv& e) -> std::string {
            int patched = 0;
            for (TextDoc& d : e.docs) {
                if (d.kind != "EndpointSlice" || d.text.find("\nendpoints:") != std::string::npos) {
                    continue;
                }
                const bool v6 = d.text.find("addressType: IPv6") != std::string::npos;
                const auto addrs = e.pod_addresses(kInfra, "infra-backend-v1", v6);
                if (addrs.empty()) {
                    continue; // no pod of that family: the slice stays empty
                }
                if (!d.text.ends_with("\n")) {
                    d.text += "\n";
                }
                d.text += "endpoints:\n";
                for (const std::string& a : addrs) {
                    d.text += "- addresses: [\"" + a + "\"]\n  conditions: {ready: true}\n";
                }
                ++patched;
            }
            return patched ? "" : "no empty EndpointSlice to patch";
        };
    } else if (test == "BackendTLSPolicy") {
        const std::string cm = "tls-checks-ca-certificate-reconcile-test";
        const std::string ca = std::string(kInfra) + "/tls-checks-ca-certificate";
        m.push_back({"point reconcile-test at the missing ConfigMap " + cm,
                     "",
                     "BackendTLSPolicyMustHaveCondition",
                     11,
                     {},
                     [cm](MutEnv& e) { return set_policy_ca(e, "reconcile-test", cm); }});
        m.back().live = [cm](LiveMutEnv& e) {
            return live_set_policy_ca(e, "reconcile-test", "tls-checks-ca-certificate", cm);
        };
        m.push_back({"create ConfigMap " + cm + " (copy of tls-checks-ca-certificate)",
                     "",
                     "BackendTLSPolicyMustHaveCondition",
                     13,
                     {},
                     [cm](MutEnv& e) -> std::string {
                         const std::string pem =
                             fixture_pem(e, std::string(kInfra) + "/tls-checks-ca-certificate");
                         std::string y =
                             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + cm +
                             "\n  namespace: " + kInfra + "\ndata:\n  ca.crt: \"\"\n";
                         std::string why =
                             load_yaml_text(y, "<runner: " + cm + ">", e.load, e.store, e.diags);
                         stamp_creation(e.store, e.now);
                         return why.empty() ? set_config_map_ca(e, cm, pem) : why;
                     }});
        m.back().live = [cm, ca](LiveMutEnv& e) {
            const std::string pem = live_fixture_pem(e, ca);
            return pem.empty() ? "no runtime fixture " + ca
                               : live_set_config_map(e, cm, pem, /*create=*/true);
        };
        m.push_back({"blank ca.crt of " + cm,
                     "",
                     "BackendTLSPolicyMustHaveCondition",
                     15,
                     {},
                     [cm](MutEnv& e) { return set_config_map_ca(e, cm, ""); }});
        m.back().live = [cm](LiveMutEnv& e) { return live_set_config_map(e, cm, "", false); };
        m.push_back({"restore ca.crt of " + cm,
                     "",
                     "BackendTLSPolicyMustHaveCondition",
                     17,
                     {},
                     [cm](MutEnv& e) {
                         return set_config_map_ca(
                             e, cm,
                             fixture_pem(e, std::string(kInfra) + "/tls-checks-ca-certificate"));
                     }});
        m.back().live = [cm, ca](LiveMutEnv& e) {
            const std::string pem = live_fixture_pem(e, ca);
            return pem.empty() ? "no runtime fixture " + ca
                               : live_set_config_map(e, cm, pem, /*create=*/false);
        };
    }
    return m;
}

} // namespace sluice::conformance
