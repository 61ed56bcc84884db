#include "compile.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <memory>
#include <unordered_map>
#include <set>
#include <tuple>

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hostnames.h"
#include "loader.h"

namespace sluice::cp {

const Condition* ObjectStatus::condition(std::string_view type) const noexcept {
    for (const Condition& c : conditions) {
        if (c.type == type) {
            return &c;
        }
    }
    return nullptr;
}

const ObjectStatus* CompileOutput::find(const ObjectKey& k) const noexcept {
    auto it = std::lower_bound(statuses.begin(), statuses.end(), k,
                               [](const ObjectStatus& s, const ObjectKey& key) { return s.key < key; });
    return it != statuses.end() && it->key == k ? &*it : nullptr;
}

ObjectStatus* CompileOutput::find(const ObjectKey& k) noexcept {
    return const_cast<ObjectStatus*>(std::as_const(*this).find(k));
}

const std::vector<std::string>& supported_features() {
    static const std::vector<std::string> kFeatures = {
        "BackendTLSPolicy",
        "BackendTLSPolicySANValidation",
        "GRPCRoute",
        "GRPCRouteNamedRouteRule",
        "Gateway",
        "GatewayAddressEmpty",
        "GatewayBackendClientCertificate",
        "GatewayFrontendClientCertificateValidation",
        "GatewayFrontendClientCertificateValidationInsecureFallback",
        "GatewayHTTPListenerIsolation",
        "GatewayHTTPSListenerDetectMisdirectedRequests",
        "GatewayPort8080",
        "GatewayStaticAddresses",
        "HTTPRoute",
        "HTTPRoute303RedirectStatusCode",
        "HTTPRoute307RedirectStatusCode",
        "HTTPRoute308RedirectStatusCode",
        "HTTPRouteBackendProtocolH2C",
        "HTTPRouteBackendProtocolWebSocket",
        "HTTPRouteBackendRequestHeaderModification",
        "HTTPRouteBackendTimeout",
        "HTTPRouteCORS",
        "HTTPRouteHostRewrite",
        "HTTPRouteMethodMatching",
        "HTTPRouteNamedRouteRule",
        "HTTPRouteParentRefPort",
        "HTTPRoutePathRedirect",
        "HTTPRoutePathRewrite",
        "HTTPRoutePortRedirect",
        "HTTPRouteQueryParamMatching",
        "HTTPRouteRequestMirror",
        "HTTPRouteRequestMultipleMirrors",
        "HTTPRouteRequestPercentageMirror",
        "HTTPRouteRequestTimeout",
        "HTTPRouteResponseHeaderModification",
        "HTTPRouteRetry",
        "HTTPRouteSchemeRedirect",
        "ListenerSet",
        "ReferenceGrant",
        "TCPRoute",
        "TLSRoute",
        "TLSRouteModeMixed",
        "TLSRouteModeTerminate",
        "UDPRoute",
    };
    return kFeatures;
}

namespace {

using NsName = std::pair<std::string, std::string>;

Condition cond(std::string type, bool ok, std::string reason, std::string msg, int64_t gen) {
    return Condition{std::move(type), ok ? "True" : "False", std::move(reason), std::move(msg), gen};
}

/// Creation order: creationTimestamp, then load order (files have no timestamps: a
/// document loaded later counts as newer), then namespace/name.
template <class T>
bool older(const T& a, const T& b) {
    return std::tie(a.meta.creation, a.meta.sequence, a.meta.ns, a.meta.name) <
           std::tie(b.meta.creation, b.meta.sequence, b.meta.ns, b.meta.name);
}

/// Optional data key of a kubernetes.io/tls Secret: a DER OCSP response for its tls.crt.
constexpr const char* kOcspStapleKey = "tls.ocsp-staple";

bool pem_cert_ok(const std::string& pem) {
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (!bio) {
        return false;
    }
    X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    if (!x) {
        return false;
    }
    X509_free(x);
    return true;
}

bool pem_pair_ok(const std::string& cert, const std::string& key) {
    BIO* cb = BIO_new_mem_buf(cert.data(), static_cast<int>(cert.size()));
    BIO* kb = BIO_new_mem_buf(key.data(), static_cast<int>(key.size()));
    X509* x = cb ? PEM_read_bio_X509(cb, nullptr, nullptr, nullptr) : nullptr;
    EVP_PKEY* k = kb ? PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr) : nullptr;
    const bool ok = x && k && X509_check_private_key(x, k) == 1;
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    return ok;
}

bool ip_literal(const std::string& s) {
    unsigned char buf[16];
    return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

ir::PathMod lower_path_mod(const std::optional<PathModifier>& p) {
    ir::PathMod m;
    if (!p) {
        return m;
    }
    m.type = p->type == "ReplaceFullPath" ? ir::PathModType::Full : ir::PathModType::Prefix;
    m.value = p->value;
    return m;
}

ir::HeaderOps lower_headers(const HeaderModifier& h) {
    ir::HeaderOps o;
    for (const HeaderValue& v : h.set) {
        o.set.emplace_back(v.name, v.value);
    }
    for (const HeaderValue& v : h.add) {
        o.add.emplace_back(v.name, v.value);
    }
    o.remove = h.remove;
    return o;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    return s;
}

struct ListenerState {
    const Listener* l = nullptr;
    size_t gateway = 0; ///< index into Compiler::gateways_
    ListenerStatus* st = nullptr;
    std::vector<RouteGroupKind> kinds; ///< supported kinds
    bool accepted = true;
    bool resolved = true;
    bool conflicted = false;
    std::string not_accepted_reason, not_resolved_reason, conflict_reason;
    std::vector<ir::CertRef> certs;
    std::vector<std::string> client_ca_pems;
    bool client_cert_optional = false;
    std::string owner_ns;                   ///< namespace of the Gateway or ListenerSet
    ObjectStatus* listener_set = nullptr;   ///< owning ListenerSet's status, if any
    struct Attached {
        const Route* route;
        std::vector<std::string> hostnames; ///< effective (intersected) hostnames
        size_t order = 0; ///< creation order of the route (precedence ties)
        size_t slot = 0;  ///< index into Compiler::lowered_
    };
    std::vector<Attached> routes;
};

struct GatewayState {
    const Gateway* g = nullptr;
    ObjectStatus* st = nullptr;
    std::vector<size_t> listeners; ///< indices into Compiler::listeners_
    bool accepted = true;
    bool programmable = true;
    std::string programmed_reason;
    std::vector<std::string> addresses;
    ir::CertRef backend_client_cert;
    ir::FwdMode fwd_mode = ir::FwdMode::FullNat;
};

class Compiler {
public:
    Compiler(const Store& s, const CompileOptions& o)
        : s_(s)
        , o_(o) {}

    CompileOutput run() {
        classes();
        gateways();
        routes();
        policies();
        build_ir();
        std::sort(out_.statuses.begin(), out_.statuses.end(),
                  [](const ObjectStatus& a, const ObjectStatus& b) { return a.key < b.key; });
        return std::move(out_);
    }

private:
    // ------------------------------------------------------------ indexes
    void index() {
        for (const Namespace& n : s_.namespaces) {
            namespaces_[n.meta.name] = &n;
        }
        for (const Service& x : s_.services) {
            services_[{x.meta.ns, x.meta.name}] = &x;
        }
        for (const EndpointSlice& x : s_.slices) {
            slices_[{x.meta.ns, x.service}].push_back(&x);
        }
        for (const Secret& x : s_.secrets) {
            secrets_[{x.meta.ns, x.meta.name}] = &x;
        }
        for (const ConfigMap& x : s_.config_maps) {
            config_maps_[{x.meta.ns, x.meta.name}] = &x;
        }
        // Statuses are referenced by pointer while compiling: reserve so they never move.
        out_.statuses.reserve(s_.size() + 1);
    }

    ObjectStatus& new_status(const std::string& kind, const Meta& m) {
        ObjectStatus st;
        st.key = {kind, m.ns, m.name};
        st.generation = m.generation;
        out_.statuses.push_back(std::move(st));
        return out_.statuses.back();
    }

    bool granted(const std::string& from_kind, const std::string& from_ns,
                 const std::string& to_group, const std::string& to_kind, const std::string& to_ns,
                 const std::string& to_name) const {
        for (const ReferenceGrant& g : s_.grants) {
            if (g.meta.ns != to_ns) {
                continue;
            }
            bool from_ok = false;
            for (const auto& f : g.from) {
                from_ok |= f.group == kGatewayGroup && f.kind == from_kind && f.ns == from_ns;
            }
            if (!from_ok) {
                continue;
            }
            for (const auto& t : g.to) {
                if (t.group == to_group && t.kind == to_kind && (!t.name || *t.name == to_name)) {
                    return true;
                }
            }
        }
        return false;
    }

    // ------------------------------------------------------------ GatewayClass
    void classes() {
        for (const GatewayClass& c : s_.classes) {
            if (c.controller_name != o_.controller_name) {
                continue; // another controller's class: not ours to write status for
            }
            our_classes_.insert(c.meta.name);
            ObjectStatus& st = new_status("GatewayClass", c.meta);
            const int64_t gen = c.meta.generation;
            bool params_ok = true;
            std::string why;
            if (c.has_parameters_ref) {
                // sluice reads class parameters from a ConfigMap (core group); schema in
                // docs/configuration.md ("GatewayClass parameters").
                auto cm = config_maps_.find({c.parameters_ns, c.parameters_name});
                if (!c.parameters_group.empty() || c.parameters_kind != "ConfigMap") {
                    params_ok = false;
                    why = "parametersRef must name a core ConfigMap (group \"\", kind ConfigMap)";
                } else if (cm == config_maps_.end()) {
                    params_ok = false;
                    why = "parametersRef: ConfigMap " + c.parameters_ns + "/" + c.parameters_name +
                          " not found";
                } else {
                    ClassParams cp;
                    why = parse_class_params(cm->second->data, cp);
                    params_ok = why.empty();
                    if (params_ok) {
                        class_params_[c.meta.name] = std::move(cp);
                    } else {
                        why = "parametersRef: ConfigMap " + c.parameters_ns + "/" +
                              c.parameters_name + ": " + why;
                    }
                }
            }
            st.conditions.push_back(params_ok ? cond("Accepted", true, "Accepted",
                                                     "handled by sluice", gen)
                                              : cond("Accepted", false, "InvalidParameters", why,
                                                     gen));
            st.conditions.push_back(cond("SupportedVersion", true, "SupportedVersion",
                                         "Gateway API v1.6", gen));
            st.supported_features = supported_features();
            if (!params_ok) {
                bad_classes_.insert(c.meta.name);
            }
        }
    }

    // ------------------------------------------------------------ Gateway
    static std::vector<RouteGroupKind> kinds_for(const std::string& protocol) {
        auto k = [](const char* kind) { return RouteGroupKind{kGatewayGroup, kind}; };
        if (protocol == "HTTP" || protocol == "HTTPS") {
            return {k("HTTPRoute"), k("GRPCRoute")};
        }
        if (protocol == "TLS") {
            return {k("TLSRoute")};
        }
        if (protocol == "TCP") {
            return {k("TCPRoute")};
        }
        if (protocol == "UDP") {
            return {k("UDPRoute")};
        }
        return {};
    }

    /// Resolves a certificate / CA reference from `from_kind` in `from_ns`. A serving
    /// certificate (`with_staple`) also carries the Secret's tls.ocsp-staple, passed on as
    /// bytes: whether it is usable depends on the clock, so the L7 engine judges it and a bad
    /// one never makes the reference invalid.
    /// Returns "" when fine, else the reason.
    std::string resolve_secret_ref(const SecretObjectRef& r, const std::string& from_kind,
                                   const std::string& from_ns, ir::CertRef* cert_out,
                                   bool with_staple = false) {
        if (!r.group.empty() || r.kind != "Secret") {
            return "InvalidCertificateRef";
        }
        const std::string ns = r.ns.value_or(from_ns);
        if (ns != from_ns && !granted(from_kind, from_ns, "", "Secret", ns, r.name)) {
            return "RefNotPermitted";
        }
        auto it = secrets_.find({ns, r.name});
        if (it == secrets_.end()) {
            return "InvalidCertificateRef";
        }
        const Secret& s = *it->second;
        auto crt = s.data.find("tls.crt");
        auto key = s.data.find("tls.key");
        if (crt == s.data.end() || key == s.data.end() || !pem_pair_ok(crt->second, key->second)) {
            return "InvalidCertificateRef";
        }
        if (cert_out) {
            std::string staple;
            if (auto st = s.data.find(kOcspStapleKey); with_staple && st != s.data.end()) {
                staple = st->second;
            }
            *cert_out = ir::CertRef{ns, r.name, crt->second, key->second, std::move(staple)};
        }
        return "";
    }

    /// CA reference (frontend validation, BackendTLSPolicy): ConfigMap or Secret with ca.crt.
    /// Returns "" when fine, else "InvalidKind"/"InvalidCACertificateRef"/"RefNotPermitted".
    std::string resolve_ca_ref(const SecretObjectRef& r, const std::string& from_kind,
                               const std::string& from_ns, std::string* pem_out) {
        if (!r.group.empty() || (r.kind != "ConfigMap" && r.kind != "Secret")) {
            return "InvalidKind";
        }
        const std::string ns = r.ns.value_or(from_ns);
        if (ns != from_ns && !granted(from_kind, from_ns, "", r.kind, ns, r.name)) {
            return "RefNotPermitted";
        }
        const std::map<std::string, std::string>* data = nullptr;
        if (r.kind == "ConfigMap") {
            auto it = config_maps_.find({ns, r.name});
            data = it == config_maps_.end() ? nullptr : &it->second->data;
        } else {
            auto it = secrets_.find({ns, r.name});
            data = it == secrets_.end() ? nullptr : &it->second->data;
        }
        if (!data) {
            return "InvalidCACertificateRef";
        }
        auto ca = data->find("ca.crt");
        if (ca == data->end() || !pem_cert_ok(ca->second)) {
            return "InvalidCACertificateRef";
        }
        if (pem_out) {
            *pem_out = ca->second;
        }
        return "";
    }

    void gateways() {
        std::vector<const Gateway*> gws;
        for (const Gateway& g : s_.gateways) {
            if (our_classes_.count(g.class_name)) {
                gws.push_back(&g);
            }
        }
        std::sort(gws.begin(), gws.end(), [](const Gateway* a, const Gateway* b) {
            return std::tie(a->meta.ns, a->meta.name) < std::tie(b->meta.ns, b->meta.name);
        });
        gateways_.reserve(gws.size());
        size_t n_listeners = 0;
        for (const Gateway* g : gws) {
            n_listeners += g->listeners.size();
        }
        listeners_.reserve(n_listeners);
        for (const Gateway* g : gws) {
            gateway(*g);
        }
    }

    void gateway(const Gateway& g) {
        const int64_t gen = g.meta.generation;
        ObjectStatus& st = new_status("Gateway", g.meta);
        GatewayState gs;
        gs.g = &g;
        gs.st = &st;
        const size_t gi = gateways_.size();

        // Addresses.
        bool unsupported_address = false, unusable = false;
        bool want_default = g.addresses.empty();
        for (const GatewayAddress& a : g.addresses) {
            if (a.type == "IPAddress" && a.value.empty()) {
                want_default = true; // "give me an address" (GatewayAddressEmpty)
            } else if (a.type == "IPAddress") {
                if (!ip_literal(a.value)) {
                    unsupported_address = true;
                } else if (!o_.usable_addresses.empty() &&
                           std::find(o_.usable_addresses.begin(), o_.usable_addresses.end(),
                                     a.value) == o_.usable_addresses.end()) {
                    unusable = true;
                } else {
                    gs.addresses.push_back(a.value);
                }
            } else {
                unsupported_address = true; // Hostname and vendor types: not supported
            }
        }
        const ClassParams* class_params = nullptr;
        if (auto it = class_params_.find(g.class_name); it != class_params_.end()) {
            class_params = &it->second;
        }
        if (want_default && gs.addresses.empty()) {
            // The class's address pool first, then the controlplane's --address-pool.
            std::string pooled = pool_address(
                class_params && !class_params->address_pool.empty() ? class_params->address_pool
                                                                     : o_.address_pool,
                g.meta.ns + "/" + g.meta.name);
            if (!pooled.empty()) {
                gs.addresses = {pooled};
            } else {
                gs.addresses = o_.default_addresses;
            }
        }
        for (const std::string& a : gs.addresses) {
            st.addresses.push_back({"IPAddress", a});
        }

        // Listeners.
        for (const Listener& l : g.listeners) {
            ListenerStatus ls;
            ls.name = l.name;
            st.listeners.push_back(std::move(ls));
        }
        std::map<int, std::vector<size_t>> by_port;
        for (size_t i = 0; i < g.listeners.size(); ++i) {
            ListenerState s = make_listener(g, g.listeners[i], gi, &st.listeners[i], "Gateway",
                                            g.meta.ns);
            by_port[g.listeners[i].port].push_back(listeners_.size());
            gs.listeners.push_back(listeners_.size());
            listeners_.push_back(std::move(s));
        }
        // Conflicts inside one Gateway: incompatible protocols on one port, or the same
        // hostname twice. All parties are rejected; no winner is picked.
        for (const auto& [port, idx] : by_port) {
            for (size_t a : idx) {
                for (size_t b : idx) {
                    if (a == b) {
                        continue;
                    }
                    const std::string why = conflict(*listeners_[a].l, *listeners_[b].l);
                    if (!why.empty() && (listeners_[a].conflict_reason.empty() ||
                                         why == "ProtocolConflict")) {
                        listeners_[a].conflicted = true;
                        listeners_[a].conflict_reason = why;
                    }
                }
            }
        }
        bool insecure_fallback = g.frontend_default.present &&
                                 g.frontend_default.mode == "AllowInsecureFallback";
        for (const auto& pp : g.frontend_per_port) {
            insecure_fallback |= pp.second.present && pp.second.mode == "AllowInsecureFallback";
        }

        int valid = 0;
        for (size_t li : gs.listeners) {
            valid += write_listener_conditions(listeners_[li], gen) ? 1 : 0;
        }
        listener_sets(g, gs, gi, gen);

        // Gateway conditions.
        bool params_ok = true;
        std::string bad_annotation;
        if (g.has_infra_params) {
            params_ok = g.infra_params_group.empty() && g.infra_params_kind == "ConfigMap" &&
                        config_maps_.count({g.meta.ns, g.infra_params_name});
        }
        if (bad_classes_.count(g.class_name)) {
            params_ok = false;
        }
        gs.fwd_mode = class_params ? class_params->fwd_mode : ir::FwdMode::FullNat;
        if (auto it = g.meta.annotations.find(ir::kForwardingModeAnnotation);
            it != g.meta.annotations.end() && !ir::parse_fwd_mode(it->second, gs.fwd_mode)) {
            params_ok = false;
            bad_annotation = it->second;
        }
        if (unsupported_address) {
            gs.accepted = false;
            st.conditions.push_back(cond("Accepted", false, "UnsupportedAddress",
                                         "only IPAddress addresses are supported", gen));
        } else if (!params_ok) {
            gs.accepted = false;
            st.conditions.push_back(cond("Accepted", false, "InvalidParameters",
                                         bad_annotation.empty()
                                             ? "parametersRef must name an existing ConfigMap"
                                             : std::string(ir::kForwardingModeAnnotation) +
                                                   " must be full-nat, dsr-ipip or dsr-gue, not '" +
                                                   bad_annotation + "'",
                                         gen));
        } else if (valid == 0) {
            gs.accepted = false;
            st.conditions.push_back(
                cond("Accepted", false, "ListenersNotValid", "no valid listener", gen));
        } else if (valid < static_cast<int>(g.listeners.size())) {
            st.conditions.push_back(
                cond("Accepted", true, "ListenersNotValid", "some listeners are invalid", gen));
        } else {
            st.conditions.push_back(cond("Accepted", true, "Accepted", "", gen));
        }
        if (g.backend_client_cert) {
            const std::string why = resolve_secret_ref(*g.backend_client_cert, "Gateway", g.meta.ns,
                                                       &gs.backend_client_cert);
            st.conditions.push_back(
                why.empty() ? cond("ResolvedRefs", true, "ResolvedRefs", "", gen)
                            : cond("ResolvedRefs", false,
                                   why == "RefNotPermitted" ? why : "InvalidClientCertificateRef",
                                   "spec.tls.backend.clientCertificateRef cannot be used", gen));
        }
        if (insecure_fallback) {
            st.conditions.push_back(cond("InsecureFrontendValidationMode", true,
                                         "ConfigurationChanged",
                                         "AllowInsecureFallback accepts clients without a valid "
                                         "certificate",
                                         gen));
        }
        if (unusable) {
            gs.programmable = false;
            gs.programmed_reason = "AddressNotUsable";
        } else if (!gs.accepted) {
            gs.programmable = false;
            gs.programmed_reason = "Invalid";
        }
        st.conditions.push_back(gs.programmable ? cond("Programmed", false, "Pending",
                                                       "waiting for a dataplane", gen)
                                                : cond("Programmed", false, gs.programmed_reason,
                                                       "gateway cannot be programmed", gen));
        gateway_index_[{g.meta.ns, g.meta.name}] = gi;
        gateways_.push_back(std::move(gs));
    }

    static std::string conflict(const Listener& a, const Listener& b) {
        if (a.port != b.port || (a.protocol == "UDP") != (b.protocol == "UDP")) {
            return ""; // different transports share a port number fine
        }
        // TLS listeners of different modes may share a port (TLSRouteModeMixed): sluice-l7
        // reads the ClientHello's SNI before it decides to terminate or pass through.
        if (a.protocol != b.protocol) {
            return "ProtocolConflict";
        }
        if (a.hostname == b.hostname) {
            return "HostnameConflict";
        }
        return "";
    }

    ListenerState make_listener(const Gateway& g, const Listener& l, size_t gi, ListenerStatus* st,
                                const std::string& owner_kind, const std::string& owner_ns) {
        ListenerState s;
        s.l = &l;
        s.gateway = gi;
        s.st = st;
        s.owner_ns = owner_ns;
        const std::vector<RouteGroupKind> allowed = kinds_for(l.protocol);
        if (allowed.empty()) {
            s.accepted = false;
            s.not_accepted_reason = "UnsupportedProtocol";
        } else if (l.kinds_given) {
            for (const RouteGroupKind& k : l.kinds) {
                if (std::find(allowed.begin(), allowed.end(), k) != allowed.end()) {
                    if (std::find(s.kinds.begin(), s.kinds.end(), k) == s.kinds.end()) {
                        s.kinds.push_back(k);
                    }
                } else {
                    s.resolved = false;
                    s.not_resolved_reason = "InvalidRouteKinds";
                }
            }
        } else {
            s.kinds = allowed;
        }
        if ((l.protocol == "HTTPS" || l.protocol == "TLS") && l.tls_mode == "Terminate") {
            for (const SecretObjectRef& r : l.certificate_refs) {
                ir::CertRef c;
                const std::string why = resolve_secret_ref(r, owner_kind, owner_ns, &c, true);
                if (!why.empty()) {
                    if (s.resolved || s.not_resolved_reason == "InvalidRouteKinds") {
                        s.not_resolved_reason = why;
                    }
                    s.resolved = false;
                } else {
                    s.certs.push_back(std::move(c));
                }
            }
            if (l.protocol == "HTTPS") {
                frontend_validation(g, l, s);
            }
        }
        return s;
    }

    /// Writes a listener's conditions; returns whether it is valid (accepted, no conflict).
    bool write_listener_conditions(const ListenerState& s, int64_t gen) {
        ListenerStatus& ls = *s.st;
        // A listener that is not accepted serves no route kind (conformance expects an
        // empty supportedKinds for unsupported protocols and conflicts alike).
        if (s.accepted && !s.conflicted) {
            ls.supported_kinds = s.kinds;
        }
        if (!s.accepted) {
            ls.conditions.push_back(cond("Accepted", false, s.not_accepted_reason,
                                         s.not_accepted_reason == "UnsupportedProtocol"
                                             ? "protocol " + s.l->protocol + " is not supported"
                                             : "no valid CA certificate for client validation",
                                         gen));
        } else if (s.conflicted) {
            ls.conditions.push_back(cond("Accepted", false, s.conflict_reason,
                                         "listener conflicts with another on port " +
                                             std::to_string(s.l->port),
                                         gen));
        } else {
            ls.conditions.push_back(cond("Accepted", true, "Accepted", "", gen));
        }
        ls.conditions.push_back(s.conflicted
                                    ? cond("Conflicted", true, s.conflict_reason,
                                           "another listener uses this port incompatibly", gen)
                                    : cond("Conflicted", false, "NoConflicts", "", gen));
        ls.conditions.push_back(s.resolved ? cond("ResolvedRefs", true, "ResolvedRefs", "", gen)
                                           : cond("ResolvedRefs", false, s.not_resolved_reason,
                                                  resolved_message(s.not_resolved_reason), gen));
        const bool ok = s.accepted && !s.conflicted && s.resolved;
        ls.conditions.push_back(
            ok ? cond("Programmed", false, "Pending", "waiting for a dataplane", gen)
               : cond("Programmed", false, s.conflicted ? s.conflict_reason : "Invalid",
                      "listener is not valid", gen));
        return s.accepted && !s.conflicted;
    }

    bool listener_set_allowed(const Gateway& g, const ListenerSet& ls) const {
        const std::string& from = g.allowed_listeners_from;
        if (from == "All") {
            return true;
        }
        if (from == "Same") {
            return ls.meta.ns == g.meta.ns;
        }
        if (from == "Selector" && g.allowed_listeners_selector) {
            auto it = namespaces_.find(ls.meta.ns);
            std::map<std::string, std::string> labels;
            if (it != namespaces_.end()) {
                labels = it->second->meta.labels;
            }
            labels.emplace("kubernetes.io/metadata.name", ls.meta.ns);
            return g.allowed_listeners_selector->matches(labels);
        }
        return false;
    }

    /// ListenerSets of this Gateway: merged after the Gateway's own listeners, oldest set
    /// first; a listener that conflicts with an earlier one is rejected, the earlier keeps
    /// working (listenerset_types.go precedence).
    void listener_sets(const Gateway& g, GatewayState& gs, size_t gi, int64_t gw_gen) {
        (void)gw_gen;
        std::vector<const ListenerSet*> sets;
        for (const ListenerSet& ls : s_.listener_sets) {
            if (ls.parent_group == kGatewayGroup && ls.parent_kind == "Gateway" &&
                ls.parent_name == g.meta.name && ls.parent_ns == g.meta.ns) {
                sets.push_back(&ls);
            }
        }
        std::sort(sets.begin(), sets.end(),
                  [](const ListenerSet* a, const ListenerSet* b) { return older(*a, *b); });
        for (const ListenerSet* ls : sets) {
            const int64_t gen = ls->meta.generation;
            ObjectStatus& st = new_status("ListenerSet", ls->meta);
            if (!listener_set_allowed(g, *ls)) {
                st.conditions.push_back(cond("Accepted", false, "NotAllowed",
                                             "the Gateway's allowedListeners does not admit "
                                             "this ListenerSet",
                                             gen));
                st.conditions.push_back(cond("Programmed", false, "NotAllowed",
                                             "not attached to the Gateway", gen));
                continue;
            }
            for (const Listener& l : ls->listeners) {
                ListenerStatus x;
                x.name = l.name;
                st.listeners.push_back(std::move(x));
            }
            int valid = 0;
            std::vector<size_t> mine;
            for (size_t i = 0; i < ls->listeners.size(); ++i) {
                ListenerState s = make_listener(g, ls->listeners[i], gi, &st.listeners[i],
                                                "ListenerSet", ls->meta.ns);
                for (size_t earlier : gs.listeners) {
                    const ListenerState& e = listeners_[earlier];
                    if (!e.accepted || e.conflicted) {
                        continue;
                    }
                    const std::string why = conflict(*s.l, *e.l);
                    if (!why.empty()) {
                        s.conflicted = true;
                        s.conflict_reason = why;
                        break;
                    }
                }
                s.listener_set = &st;
                valid += write_listener_conditions(s, gen) && s.resolved ? 1 : 0;
                mine.push_back(listeners_.size());
                gs.listeners.push_back(listeners_.size());
                listeners_.push_back(std::move(s));
            }
            listener_set_index_[{ls->meta.ns, ls->meta.name}] = mine;
            if (valid == 0) {
                st.conditions.push_back(
                    cond("Accepted", false, "ListenersNotValid", "no valid listener", gen));
                st.conditions.push_back(
                    cond("Programmed", false, "ListenersNotValid", "no valid listener", gen));
            } else {
                st.conditions.push_back(cond("Accepted", true, "Accepted", "", gen));
                st.conditions.push_back(
                    cond("Programmed", false, "Pending", "waiting for a dataplane", gen));
                ++gs.st->attached_listener_sets;
            }
        }
    }

    static std::string resolved_message(const std::string& reason) {
        if (reason == "InvalidRouteKinds") {
            return "allowedRoutes.kinds names a kind this listener cannot serve";
        }
        if (reason == "RefNotPermitted") {
            return "a cross-namespace reference is not allowed by any ReferenceGrant";
        }
        if (reason == "InvalidCertificateRef") {
            return "a certificateRef does not name a valid kubernetes.io/tls Secret";
        }
        if (reason == "InvalidCACertificateRef" || reason == "InvalidCACertificateKind") {
            return "a CA certificate reference cannot be used";
        }
        return reason;
    }

    void frontend_validation(const Gateway& g, const Listener& l, ListenerState& s) {
        const FrontendValidation* v = g.frontend_default.present ? &g.frontend_default : nullptr;
        for (const auto& pp : g.frontend_per_port) {
            if (pp.first == l.port && pp.second.present) {
                v = &pp.second;
            }
        }
        if (!v) {
            return;
        }
        s.client_cert_optional = v->mode == "AllowInsecureFallback";
        int ok = 0;
        std::string reason;
        for (const SecretObjectRef& r : v->ca_refs) {
            std::string pem;
            std::string why = resolve_ca_ref(r, "Gateway", g.meta.ns, &pem);
            if (why.empty()) {
                s.client_ca_pems.push_back(std::move(pem));
                ++ok;
            } else if (reason.empty()) {
                reason = why == "InvalidKind" ? "InvalidCACertificateKind" : why;
            }
        }
        if (!reason.empty()) {
            s.resolved = false;
            s.not_resolved_reason = reason;
        }
        if (ok == 0) {
            s.accepted = false;
            s.not_accepted_reason = "NoValidCACertificate";
        }
    }

    // ------------------------------------------------------------ Routes
    struct BackendResolution {
        ir::Backend backend;
        std::string reason; ///< ResolvedRefs reason when invalid
    };

    /// Resolves one backendRef of a route (or a mirror target). Group interning happens here.
    BackendResolution resolve_backend(const Route& route, const BackendObjectRef& ref, int weight) {
        BackendResolution res;
        res.backend.weight = static_cast<uint32_t>(weight);
        auto invalid = [&](const char* reason, std::string msg) {
            res.reason = reason;
            res.backend.status = 500;
            res.backend.reason = std::move(msg);
            res.backend.group = ir::kNone;
            return res;
        };
        if (!ref.group.empty() || ref.kind != "Service") {
            return invalid("InvalidKind", "unsupported backend kind " +
                                              (ref.group.empty() ? "" : ref.group + "/") + ref.kind);
        }
        const std::string ns = ref.ns.value_or(route.meta.ns);
        if (ns != route.meta.ns &&
            !granted(route_kind_name(route.kind), route.meta.ns, "", "Service", ns, ref.name)) {
            return invalid("RefNotPermitted", "Service " + ns + "/" + ref.name +
                                                  " is in another namespace and no "
                                                  "ReferenceGrant allows it");
        }
        auto it = services_.find({ns, ref.name});
        if (it == services_.end()) {
            return invalid("BackendNotFound", "Service " + ns + "/" + ref.name + " not found");
        }
        const Service& svc = *it->second;
        const ServicePort* sp = nullptr;
        for (const ServicePort& p : svc.ports) {
            if (ref.port && p.port == *ref.port) {
                sp = &p;
            }
        }
        if (!sp && svc.type != "ExternalName") {
            return invalid("BackendNotFound", "Service " + ns + "/" + ref.name + " has no port " +
                                                  std::to_string(ref.port.value_or(0)));
        }
        const bool l4 = route.kind == RouteKind::TCP || route.kind == RouteKind::UDP ||
                        route.kind == RouteKind::TLS;
        if (sp && !l4) {
            static const std::set<std::string> kHttpApp = {"",
                                                           "http",
                                                           "https",
                                                           "kubernetes.io/h2c",
                                                           "kubernetes.io/ws",
                                                           "kubernetes.io/wss",
                                                           "grpc",
                                                           "h2c"};
            if (!kHttpApp.count(lower(sp->app_protocol))) {
                return invalid("UnsupportedProtocol",
                               "appProtocol " + sp->app_protocol + " is not supported");
            }
        }
        res.backend.group = intern_group(svc, sp, ref.port.value_or(0));
        if (group_broken_.count(res.backend.group)) {
            res.backend.status = 500;
            res.backend.reason = group_broken_[res.backend.group];
        }
        return res;
    }

    uint32_t intern_group(const Service& svc, const ServicePort* sp, int port) {
        const auto key = std::make_tuple(svc.meta.ns, svc.meta.name, port);
        auto it = group_index_.find(key);
        if (it != group_index_.end()) {
            if (trace_) {
                trace_->push_back(it->second);
            }
            return it->second;
        }
        if (frozen_) {
            missing_group_ = true; // a patch may not add groups (indices would move)
            return ir::kNone;
        }
        ir::BackendGroup g;
        g.ns = svc.meta.ns;
        g.name = svc.meta.name;
        g.port = static_cast<uint16_t>(port);
        g.app_protocol = sp ? sp->app_protocol : "";
        g.endpoints = group_endpoints(svc, sp);
        const std::string broken = apply_backend_tls(g, sp);
        const auto idx = static_cast<uint32_t>(groups_.size());
        groups_.push_back(std::move(g));
        group_index_[key] = idx;
        group_sp_.push_back(sp);
        group_first_.push_back(lowering_order_);
        if (trace_) {
            trace_->push_back(idx);
        }
        if (!broken.empty()) {
            group_broken_[idx] = broken;
        }
        return idx;
    }

    /// The endpoints of a Service port, from the Service's EndpointSlices in Store order,
    /// sorted by address and port.
    std::vector<ir::Endpoint> group_endpoints(const Service& svc, const ServicePort* sp) const {
        std::vector<ir::Endpoint> eps;
        auto sl = slices_.find({svc.meta.ns, svc.meta.name});
        if (sl != slices_.end()) {
            for (const EndpointSlice* es : sl->second) {
                int target = 0;
                for (const EndpointSlice::Port& p : es->ports) {
                    if (sp && ((!sp->name.empty() && p.name == sp->name) ||
                               (sp->name.empty() && es->ports.size() == 1) ||
                               (sp->target_port != 0 && p.port == sp->target_port))) {
                        target = p.port;
                        break;
                    }
                }
                if (target == 0 && sp) {
                    target = sp->target_port;
                }
                for (const EndpointSlice::Endpoint& e : es->endpoints) {
                    for (const std::string& a : e.addresses) {
                        eps.push_back(ir::Endpoint{a, static_cast<uint16_t>(target), e.ready,
                                                   e.serving, e.terminating, e.hostname});
                    }
                }
            }
            std::sort(eps.begin(), eps.end(), [](const ir::Endpoint& a, const ir::Endpoint& b) {
                return std::tie(a.address, a.port) < std::tie(b.address, b.port);
            });
        }
        return eps;
    }

    /// Applies the BackendTLSPolicy in force for this Service port; returns why the backend
    /// cannot be used ("" when it can).
    std::string apply_backend_tls(ir::BackendGroup& g, const ServicePort* sp) {
        for (const auto& [policy, target] : tls_by_service_) {
            if (target->name != g.name || policy->meta.ns != g.ns) {
                continue;
            }
            if (target->section_name && (!sp || sp->name != *target->section_name)) {
                continue;
            }
            auto st = policy_state_.find(policy);
            if (st == policy_state_.end() || st->second.conflicted) {
                continue;
            }
            g.tls = true;
            g.tls_sni = policy->hostname;
            g.tls_policy = policy->meta.ns + "/" + policy->meta.name;
            for (const auto& san : policy->sans) {
                g.tls_sans.push_back((san.type == "URI" ? "URI:" : "DNS:") + san.value);
            }
            g.tls_ca_pem = st->second.ca_pem;
            if (!st->second.valid) {
                return "BackendTLSPolicy " + g.tls_policy + " has no usable CA certificate";
            }
            return "";
        }
        return "";
    }

    /// Lowers a filter list into `into` (the route's own filters, placed in Ir::filters
    /// later); returns its index there, or kNone when empty.
    uint32_t lower_filters(const Route& route, const std::vector<HttpFilter>& fs,
                           std::string& resolved_reason, std::vector<ir::Filters>& into) {
        if (fs.empty()) {
            return ir::kNone;
        }
        ir::Filters f;
        for (const HttpFilter& x : fs) {
            if (x.type == "RequestHeaderModifier") {
                f.request_headers = lower_headers(x.headers);
            } else if (x.type == "ResponseHeaderModifier") {
                f.response_headers = lower_headers(x.headers);
            } else if (x.type == "RequestRedirect") {
                f.redirect = true;
                f.redirect_scheme = x.scheme.value_or("");
                f.redirect_host = x.hostname.value_or("");
                f.redirect_port = static_cast<uint16_t>(x.port.value_or(0));
                f.redirect_status = static_cast<uint16_t>(x.status_code);
                f.redirect_path = lower_path_mod(x.path);
            } else if (x.type == "URLRewrite") {
                f.rewrite = true;
                f.rewrite_host = x.hostname.value_or("");
                f.rewrite_path = lower_path_mod(x.path);
            } else if (x.type == "RequestMirror") {
                BackendResolution r = resolve_backend(route, x.mirror, 1);
                ir::Mirror m;
                m.group = r.backend.status == 0 ? r.backend.group : ir::kNone;
                if (x.percent) {
                    m.numerator = static_cast<uint32_t>(*x.percent);
                    m.denominator = 100;
                } else if (x.fraction) {
                    m.numerator = static_cast<uint32_t>(x.fraction->first);
                    m.denominator = static_cast<uint32_t>(x.fraction->second);
                }
                if (!r.reason.empty() && resolved_reason.empty()) {
                    resolved_reason = r.reason;
                }
                f.mirrors.push_back(m);
            } else if (x.type == "CORS") {
                f.cors = true;
                f.cors_policy.allow_origins = x.allow_origins;
                f.cors_policy.allow_methods = x.allow_methods;
                f.cors_policy.allow_headers = x.allow_headers;
                f.cors_policy.expose_headers = x.expose_headers;
                f.cors_policy.allow_credentials = x.allow_credentials;
                f.cors_policy.max_age = static_cast<uint32_t>(x.max_age);
            } else {
                // ExtensionRef / ExternalAuth: sluice has no extension filters; the spec
                // says such a rule answers 500 rather than skipping the filter.
                f.fixed_status = 500;
                if (resolved_reason.empty()) {
                    resolved_reason = "InvalidKind";
                }
            }
        }
        into.push_back(std::move(f));
        return static_cast<uint32_t>(into.size() - 1);
    }

    /// Where a route's HTTP matches went in one IR listener (build_listener).
    struct PlacedMatches {
        size_t listener = 0;     ///< index into listeners_
        uint32_t ir_listener = 0; ///< index into Ir::listeners
        uint32_t first = 0;      ///< index of the first match in its http_matches
        uint32_t count = 0;
    };

    /// Lowers every rule of a route once (shared by every listener it attaches to).
    struct LoweredRoute {
        std::vector<ir::Rule> rules; ///< filter indices relative to `filters` until placed
        std::vector<ir::Filters> filters; ///< moved to Ir::filters[first_filter...] once placed
        uint32_t base = ir::kNone; ///< index of rules[0] in Ir::rules once placed
        uint32_t first_filter = 0; ///< index of filters[0] in Ir::filters
        uint32_t n_filters = 0;
        std::string bad_mode;      ///< invalid forwarding-mode annotation value
        std::string resolved_reason; ///< "" = ResolvedRefs True
        std::string resolved_message;
        // What a patch compares (IncrementalCompiler): the shape of the route's output.
        RouteKind kind = RouteKind::HTTP;
        bool blocked = false; ///< bad_mode or an unsupported filter: attached nowhere
        std::vector<uint32_t> match_counts; ///< HTTP: matches per rule
        std::vector<std::pair<size_t, std::vector<std::string>>> attach; ///< listener, hosts
        std::vector<PlacedMatches> placed;
        std::vector<uint32_t> groups_used; ///< every group lookup while lowering, in order
    };

    /// Moves lowered filters to Ir::filters[at...] and makes the rules' indices absolute.
    static void relocate_filters(std::vector<ir::Rule>& rules, uint32_t at) {
        for (ir::Rule& rule : rules) {
            if (rule.filters != ir::kNone) {
                rule.filters += at;
            }
            for (ir::Backend& b : rule.backends) {
                if (b.filters != ir::kNone) {
                    b.filters += at;
                }
            }
        }
    }

    LoweredRoute lower_route(const Route& r) {
        LoweredRoute lr;
        lr.kind = r.kind;
        trace_ = &lr.groups_used;
        lowering_order_ = route_order_[&r];
        auto note = [&](const std::string& reason, const std::string& msg) {
            if (lr.resolved_reason.empty() && !reason.empty()) {
                lr.resolved_reason = reason;
                lr.resolved_message = msg;
            }
        };
        auto backends = [&](const std::vector<BackendRef>& refs, ir::Rule& rule) {
            for (const BackendRef& b : refs) {
                BackendResolution res = resolve_backend(r, b.ref, b.weight);
                note(res.reason, res.backend.reason);
                std::string freason;
                res.backend.filters = lower_filters(r, b.filters, freason, lr.filters);
                note(freason, "a backendRef filter cannot be resolved");
                rule.backends.push_back(std::move(res.backend));
            }
        };
        if (r.kind == RouteKind::HTTP) {
            for (size_t i = 0; i < r.http_rules.size(); ++i) {
                const HttpRule& hr = r.http_rules[i];
                ir::Rule rule;
                rule.route_ns = r.meta.ns;
                rule.route_name = r.meta.name;
                rule.index = static_cast<uint32_t>(i);
                rule.name = hr.name;
                std::string freason;
                rule.filters = lower_filters(r, hr.filters, freason, lr.filters);
                note(freason, "a filter cannot be resolved");
                backends(hr.backends, rule);
                if (hr.timeout_request) {
                    rule.timeout_request_ms =
                        static_cast<uint32_t>(std::max<int64_t>(0, parse_duration_ms(*hr.timeout_request)));
                }
                if (hr.timeout_backend) {
                    rule.timeout_backend_ms =
                        static_cast<uint32_t>(std::max<int64_t>(0, parse_duration_ms(*hr.timeout_backend)));
                }
                if (hr.retry) {
                    for (int c : hr.retry->codes) {
                        rule.retry_codes.push_back(static_cast<uint16_t>(c));
                    }
                    rule.retry_attempts = static_cast<uint32_t>(hr.retry->attempts.value_or(0));
                    if (hr.retry->backoff) {
                        rule.retry_backoff_ms = static_cast<uint32_t>(
                            std::max<int64_t>(0, parse_duration_ms(*hr.retry->backoff)));
                    }
                }
                lr.rules.push_back(std::move(rule));
                lr.match_counts.push_back(static_cast<uint32_t>(hr.matches.size()));
            }
        } else if (r.kind == RouteKind::GRPC) {
            for (size_t i = 0; i < r.grpc_rules.size(); ++i) {
                const GrpcRule& gr = r.grpc_rules[i];
                ir::Rule rule;
                rule.route_ns = r.meta.ns;
                rule.route_name = r.meta.name;
                rule.index = static_cast<uint32_t>(i);
                rule.name = gr.name;
                std::string freason;
                rule.filters = lower_filters(r, gr.filters, freason, lr.filters);
                note(freason, "a filter cannot be resolved");
                backends(gr.backends, rule);
                lr.rules.push_back(std::move(rule));
            }
        } else {
            ir::FwdMode mode = ir::FwdMode::Inherit;
            if (auto it = r.meta.annotations.find(ir::kForwardingModeAnnotation);
                it != r.meta.annotations.end() && !ir::parse_fwd_mode(it->second, mode)) {
                lr.bad_mode = it->second;
            }
            for (size_t i = 0; i < r.l4_rules.size(); ++i) {
                ir::Rule rule;
                rule.fwd_mode = mode;
                rule.route_ns = r.meta.ns;
                rule.route_name = r.meta.name;
                rule.index = static_cast<uint32_t>(i);
                rule.name = r.l4_rules[i].name;
                backends(r.l4_rules[i].backends, rule);
                lr.rules.push_back(std::move(rule));
            }
        }
        trace_ = nullptr;
        return lr;
    }

    bool namespace_allowed(const ListenerState& s, const std::string& route_ns) const {
        const Listener& l = *s.l;
        if (l.from == "All") {
            return true;
        }
        if (l.from == "Same") {
            return route_ns == s.owner_ns;
        }
        if (l.from == "Selector" && l.ns_selector) {
            auto it = namespaces_.find(route_ns);
            static const std::map<std::string, std::string> kEmpty;
            std::map<std::string, std::string> labels = it == namespaces_.end() ? kEmpty
                                                                                : it->second->meta.labels;
            labels.emplace("kubernetes.io/metadata.name", route_ns);
            return l.ns_selector->matches(labels);
        }
        return false;
    }

    /// Effective hostnames of a route on a listener ("" = any); empty result = no match.
    static std::vector<std::string> intersect(const Route& r, const Listener& l) {
        const std::string lh = l.hostname.value_or("");
        if (r.kind == RouteKind::TCP || r.kind == RouteKind::UDP) {
            return {""};
        }
        if (r.hostnames.empty()) {
            return {lh};
        }
        std::vector<std::string> out;
        for (const std::string& h : r.hostnames) {
            std::string x = hosts::intersect(h, lh);
            if (!x.empty() && std::find(out.begin(), out.end(), x) == out.end()) {
                out.push_back(std::move(x));
            }
        }
        return out;
    }

    void routes() {
        std::vector<const Route*> rs;
        for (const Route& r : s_.routes) {
            rs.push_back(&r);
        }
        std::sort(rs.begin(), rs.end(), [](const Route* a, const Route* b) { return older(*a, *b); });
        for (size_t order = 0; order < rs.size(); ++order) {
            route_order_[rs[order]] = order;
        }
        for (const Route* r : rs) {
            route(*r);
        }
        sorted_routes_ = std::move(rs);
    }

    void route(const Route& r) {
        RouteOutcome o = compute_route(r);
        if (!o.has_status) {
            return;
        }
        out_.statuses.push_back(std::move(o.st));
        LoweredRoute& lr = o.lr;
        lr.first_filter = static_cast<uint32_t>(out_.ir.filters.size());
        lr.n_filters = static_cast<uint32_t>(lr.filters.size());
        relocate_filters(lr.rules, lr.first_filter);
        for (ir::Filters& f : lr.filters) {
            out_.ir.filters.push_back(std::move(f));
        }
        lr.filters.clear();
        const size_t slot = lowered_.size();
        for (const auto& [li, hosts] : lr.attach) {
            listeners_[li].routes.push_back({&r, hosts, route_order_[&r], slot});
        }
        route_slot_[&r] = slot;
        lowered_.push_back(std::move(lr));
    }

    /// One route's status, lowering and attachments, computed without changing the
    /// compiler's state (but for interning backend groups, which a frozen_ patch forbids).
    struct RouteOutcome {
        bool has_status = false; ///< false: no parentRef of ours, nothing else is set
        ObjectStatus st;
        LoweredRoute lr;
    };

    RouteOutcome compute_route(const Route& r) {
        RouteOutcome out;
        const int64_t gen = r.meta.generation;
        // Parent candidates: explicit parentRefs, or (v1alpha1) every listener selecting us.
        struct Parent {
            ParentRef ref;
            std::vector<size_t> candidates; ///< listener state indices
            bool gateway_found = false;
        };
        std::vector<Parent> parents;
        if (r.v1alpha1) {
            for (size_t gi = 0; gi < gateways_.size(); ++gi) {
                Parent p;
                p.ref.group = "networking.x-k8s.io";
                p.ref.kind = "Gateway";
                p.ref.name = gateways_[gi].g->meta.name;
                p.ref.ns = gateways_[gi].g->meta.ns;
                p.gateway_found = true;
                for (size_t li : gateways_[gi].listeners) {
                    const Listener& l = *listeners_[li].l;
                    if (l.v1alpha1 && l.route_selector && l.route_selector->matches(r.meta.labels)) {
                        p.candidates.push_back(li);
                    }
                }
                if (!p.candidates.empty()) {
                    parents.push_back(std::move(p));
                }
            }
        } else {
            for (const ParentRef& pr : r.parents) {
                if (pr.group != kGatewayGroup || (pr.kind != "Gateway" && pr.kind != "ListenerSet")) {
                    continue; // Service parents (mesh): not handled by this controller
                }
                const NsName target{pr.ns.value_or(r.meta.ns), pr.name};
                std::vector<size_t> pool;
                if (pr.kind == "Gateway") {
                    auto it = gateway_index_.find(target);
                    if (it == gateway_index_.end()) {
                        continue; // not one of our Gateways: leave its status to its controller
                    }
                    // A Gateway parentRef reaches the Gateway's own listeners only, never
                    // those of its ListenerSets.
                    for (size_t li : gateways_[it->second].listeners) {
                        if (!listeners_[li].listener_set) {
                            pool.push_back(li);
                        }
                    }
                } else {
                    auto it = listener_set_index_.find(target);
                    if (it == listener_set_index_.end()) {
                        continue; // unknown or not attached to one of our Gateways
                    }
                    pool = it->second;
                }
                Parent p;
                p.ref = pr;
                p.gateway_found = true;
                for (size_t li : pool) {
                    const Listener& l = *listeners_[li].l;
                    if (pr.section_name && l.name != *pr.section_name) {
                        continue;
                    }
                    if (pr.port && l.port != *pr.port) {
                        continue;
                    }
                    p.candidates.push_back(li);
                }
                parents.push_back(std::move(p));
            }
        }
        if (parents.empty()) {
            return out;
        }
        out.has_status = true;
        ObjectStatus& st = out.st;
        st.key = {route_kind_name(r.kind), r.meta.ns, r.meta.name};
        st.generation = r.meta.generation;
        out.lr = lower_route(r);
        LoweredRoute& lr = out.lr;

        bool unsupported = false;
        for (const HttpRule& hr : r.http_rules) {
            for (const HttpFilter& f : hr.filters) {
                unsupported |= f.type == "ExternalAuth";
            }
        }
        for (Parent& p : parents) {
            ParentStatus ps;
            ps.ref = p.ref;
            ps.controller_name = o_.controller_name;
            std::string reason = "NoMatchingParent";
            std::string msg = "no listener matches the parentRef's sectionName/port";
            int accepted = 0;
            const RouteGroupKind my_kind{kGatewayGroup, route_kind_name(r.kind)};
            int worst = 0; // 1 = NotAllowedByListeners, 2 = NoMatchingListenerHostname
            for (size_t li : p.candidates) {
                ListenerState& ls = listeners_[li];
                const bool kind_ok =
                    std::find(ls.kinds.begin(), ls.kinds.end(), my_kind) != ls.kinds.end();
                if (!kind_ok || !namespace_allowed(ls, r.meta.ns)) {
                    worst = std::max(worst, 1);
                    continue;
                }
                std::vector<std::string> hosts = intersect(r, *ls.l);
                if (hosts.empty()) {
                    worst = 2;
                    continue;
                }
                ++accepted;
                if (lr.bad_mode.empty() && !unsupported) {
                    lr.attach.emplace_back(li, std::move(hosts));
                }
            }
            const int64_t g2 = gen;
            if (!lr.bad_mode.empty()) {
                ps.conditions.push_back(cond("Accepted", false, "UnsupportedValue",
                                             std::string(ir::kForwardingModeAnnotation) +
                                                 " must be full-nat, dsr-ipip or dsr-gue, not '" +
                                                 lr.bad_mode + "'",
                                             g2));
            } else if (unsupported) {
                ps.conditions.push_back(cond("Accepted", false, "UnsupportedValue",
                                             "the ExternalAuth filter is not supported", g2));
            } else if (accepted > 0) {
                ps.conditions.push_back(cond("Accepted", true, "Accepted", "", g2));
            } else {
                if (worst == 2) {
                    reason = "NoMatchingListenerHostname";
                    msg = "no listener hostname intersects the route's hostnames";
                } else if (worst == 1) {
                    reason = "NotAllowedByListeners";
                    msg = "no listener allows this route's kind and namespace";
                }
                ps.conditions.push_back(cond("Accepted", false, reason, msg, g2));
            }
            ps.conditions.push_back(
                lr.resolved_reason.empty()
                    ? cond("ResolvedRefs", true, "ResolvedRefs", "", g2)
                    : cond("ResolvedRefs", false, lr.resolved_reason, lr.resolved_message, g2));
            st.parents.push_back(std::move(ps));
        }
        lr.blocked = !lr.bad_mode.empty() || unsupported;
        return out;
    }

    // ------------------------------------------------------------ BackendTLSPolicy
    struct PolicyState {
        bool conflicted = false;
        bool valid = true;
        std::string ca_pem;
        std::string reason; ///< ResolvedRefs reason when invalid
    };

    /// Policies are evaluated before routes resolve backends (groups carry the TLS
    /// settings), and their ancestor status is written after routes attach.
    void prepare_policies() {
        std::vector<const BackendTlsPolicy*> ps;
        for (const BackendTlsPolicy& p : s_.tls_policies) {
            ps.push_back(&p);
        }
        std::sort(ps.begin(), ps.end(),
                  [](const BackendTlsPolicy* a, const BackendTlsPolicy* b) { return older(*a, *b); });
        std::set<std::tuple<std::string, std::string, std::string>> taken;
        for (const BackendTlsPolicy* p : ps) {
            PolicyState s;
            for (const auto& t : p->targets) {
                if (!t.group.empty() || t.kind != "Service") {
                    continue;
                }
                auto key = std::make_tuple(p->meta.ns, t.name, t.section_name.value_or(""));
                auto any = std::make_tuple(p->meta.ns, t.name, std::string());
                if (taken.count(key) || (t.section_name && taken.count(any))) {
                    s.conflicted = true;
                }
            }
            if (!s.conflicted) {
                for (const auto& t : p->targets) {
                    taken.insert(std::make_tuple(p->meta.ns, t.name, t.section_name.value_or("")));
                    tls_by_service_.push_back({p, &t});
                }
            }
            for (const SecretObjectRef& ref : p->ca_refs) {
                std::string pem;
                const std::string why = resolve_ca_ref(ref, "BackendTLSPolicy", p->meta.ns, &pem);
                if (why.empty()) {
                    s.ca_pem += pem;
                } else {
                    s.valid = false;
                    if (s.reason.empty()) {
                        s.reason = why == "InvalidKind" ? "InvalidKind" : "InvalidCACertificateRef";
                    }
                }
            }
            policy_state_[p] = std::move(s);
        }
    }

    void policies() {
        for (const BackendTlsPolicy& p : s_.tls_policies) {
            const PolicyState& ps = policy_state_[&p];
            const int64_t gen = p.meta.generation;
            // Ancestors: our Gateways with an attached route that uses a target Service.
            std::set<std::pair<std::string, std::string>> ancestors;
            for (const ListenerState& ls : listeners_) {
                for (const auto& a : ls.routes) {
                    if (uses_service(*a.route, p)) {
                        ancestors.insert({gateways_[ls.gateway].g->meta.ns,
                                          gateways_[ls.gateway].g->meta.name});
                    }
                }
            }
            if (ancestors.empty()) {
                continue;
            }
            ObjectStatus& st = new_status("BackendTLSPolicy", p.meta);
            for (const auto& [ns, name] : ancestors) {
                ParentStatus a;
                a.ref.group = kGatewayGroup;
                a.ref.kind = "Gateway";
                a.ref.name = name;
                a.ref.ns = ns;
                a.controller_name = o_.controller_name;
                if (ps.conflicted) {
                    a.conditions.push_back(cond("Accepted", false, "Conflicted",
                                                "an older BackendTLSPolicy targets the same "
                                                "Service",
                                                gen));
                } else if (!ps.valid) {
                    a.conditions.push_back(cond("Accepted", false, "NoValidCACertificate",
                                                "no CA certificate reference is usable", gen));
                } else {
                    a.conditions.push_back(cond("Accepted", true, "Accepted", "", gen));
                }
                a.conditions.push_back(ps.valid ? cond("ResolvedRefs", true, "ResolvedRefs", "", gen)
                                                : cond("ResolvedRefs", false, ps.reason,
                                                       "a caCertificateRef cannot be used", gen));
                st.parents.push_back(std::move(a));
            }
        }
    }

    bool uses_service(const Route& r, const BackendTlsPolicy& p) const {
        auto check = [&](const BackendObjectRef& b) {
            if (!b.group.empty() || b.kind != "Service" || b.ns.value_or(r.meta.ns) != p.meta.ns) {
                return false;
            }
            for (const auto& t : p.targets) {
                if (t.group.empty() && t.kind == "Service" && t.name == b.name) {
                    return true;
                }
            }
            return false;
        };
        for (const HttpRule& hr : r.http_rules) {
            for (const BackendRef& b : hr.backends) {
                if (check(b.ref)) {
                    return true;
                }
            }
        }
        for (const GrpcRule& gr : r.grpc_rules) {
            for (const BackendRef& b : gr.backends) {
                if (check(b.ref)) {
                    return true;
                }
            }
        }
        for (const L4Rule& lr : r.l4_rules) {
            for (const BackendRef& b : lr.backends) {
                if (check(b.ref)) {
                    return true;
                }
            }
        }
        return false;
    }

    // ------------------------------------------------------------ IR
    static std::tuple<int, int> host_rank(const std::string& h) {
        if (h.empty()) {
            return {0, 0};
        }
        const bool wild = h.starts_with("*.");
        return {wild ? 0 : static_cast<int>(h.size()), static_cast<int>(h.size())};
    }

    void build_ir() {
        ir::Ir& out = out_.ir;
        for (GatewayState& gs : gateways_) {
            ObjectStatus& st = *gs.st;
            for (size_t li : gs.listeners) {
                ListenerState& ls = listeners_[li];
                ls.st->attached_routes = static_cast<int>(ls.routes.size());
            }
            (void)st;
            if (!gs.accepted || !gs.programmable) {
                continue;
            }
            ir::Gateway g;
            g.ns = gs.g->meta.ns;
            g.name = gs.g->meta.name;
            g.addresses = gs.addresses;
            g.backend_client_cert = gs.backend_client_cert;
            for (size_t li : gs.listeners) {
                ListenerState& ls = listeners_[li];
                if (!ls.accepted || ls.conflicted || !ls.resolved) {
                    continue; // an invalid listener serves nothing (no broken TLS)
                }
                const auto at = static_cast<uint32_t>(out.listeners.size());
                g.listeners.push_back(at);
                match_keys_.emplace_back();
                out.listeners.push_back(build_listener(ls, li, at));
            }
            out.gateways.push_back(std::move(g));
        }
        out.groups = std::move(groups_);
    }

    static ir::HeaderMatch lower_match(const HeaderMatch& h, bool header) {
        ir::HeaderMatch m;
        m.type = h.type == MatchType::RegularExpression ? ir::MatchType::Regex : ir::MatchType::Exact;
        m.name = header ? lower(h.name) : h.name;
        m.value = h.value;
        return m;
    }

    /// An HTTP match as the IR holds it (build_listener and patches).
    static ir::HttpMatch lower_http_match(const HttpMatch& m, uint32_t rule) {
        ir::HttpMatch im;
        im.rule = rule;
        im.path_type = m.path_type == PathType::Exact        ? ir::PathType::Exact
                       : m.path_type == PathType::PathPrefix ? ir::PathType::Prefix
                                                             : ir::PathType::Regex;
        im.path = m.path;
        im.method = m.method.value_or("");
        for (const HeaderMatch& h : m.headers) {
            im.headers.push_back(lower_match(h, true));
        }
        for (const HeaderMatch& q : m.query) {
            im.query.push_back(lower_match(q, false));
        }
        return im;
    }

    /// Precedence of an HTTP match within its hostname (Gateway API rules; unique per
    /// route, rule and match, so sorting by it gives one order whatever the input order).
    struct Key {
        int path_class; ///< 0 Exact, 1 Prefix, 2 Regex
        int path_len;
        int method;
        int headers;
        int query;
        size_t route;
        uint32_t rule;
        size_t match;
    };
    static bool key_less(const Key& a, const Key& b) {
        return std::tie(a.path_class, a.path_len, a.method, a.headers, a.query, a.route, a.rule,
                        a.match) < std::tie(b.path_class, b.path_len, b.method, b.headers,
                                            b.query, b.route, b.rule, b.match);
    }
    static Key http_key(const ir::HttpMatch& im, const HttpMatch& m, size_t order, size_t ri,
                        size_t mi) {
        return Key{static_cast<int>(im.path_type),
                   -static_cast<int>(m.path.size()),
                   m.method ? 0 : 1,
                   -static_cast<int>(m.headers.size()),
                   -static_cast<int>(m.query.size()),
                   order,
                   static_cast<uint32_t>(ri),
                   mi};
    }

    ir::Listener build_listener(ListenerState& ls, size_t li, uint32_t at) {
        const Listener& l = *ls.l;
        const Gateway& g = *gateways_[ls.gateway].g;
        ir::Listener out;
        out.gateway_ns = g.meta.ns;
        out.gateway_name = g.meta.name;
        out.name = l.name;
        out.port = static_cast<uint16_t>(l.port);
        out.protocol = l.protocol == "HTTP"    ? ir::Protocol::HTTP
                       : l.protocol == "HTTPS" ? ir::Protocol::HTTPS
                       : l.protocol == "TLS"   ? ir::Protocol::TLS
                       : l.protocol == "TCP"   ? ir::Protocol::TCP
                                               : ir::Protocol::UDP;
        out.hostname = l.hostname.value_or("");
        out.fwd_mode = gateways_[ls.gateway].fwd_mode;
        if (l.protocol == "HTTPS" || l.protocol == "TLS") {
            out.tls_mode = l.tls_mode == "Passthrough" ? ir::TlsMode::Passthrough
                                                        : ir::TlsMode::Terminate;
        }
        out.certs = ls.certs;
        for (const auto& [k, v] : l.tls_options) {
            out.tls_options.emplace_back(k, v);
        }
        out.client_ca_pems = ls.client_ca_pems;
        out.client_cert_optional = ls.client_cert_optional;

        std::sort(ls.routes.begin(), ls.routes.end(), [&](const auto& a, const auto& b) {
            return a.order < b.order;
        });
        std::vector<Key>& keys = match_keys_[at];
        std::map<std::string, std::vector<std::pair<Key, uint32_t>>> http_groups;
        struct GKey {
            int service_len, method_len, headers;
            size_t route;
            uint32_t rule;
            size_t match;
        };
        std::map<std::string, std::vector<std::pair<GKey, uint32_t>>> grpc_groups;
        std::vector<std::tuple<std::tuple<int, int>, size_t, std::string, uint32_t>> sni;

        for (const auto& a : ls.routes) {
            const Route& r = *a.route;
            LoweredRoute& lr = lowered_[a.slot];
            const size_t order = a.order;
            if (lr.base == ir::kNone) {
                // First listener this route serves: its rules move into the IR once.
                lr.base = static_cast<uint32_t>(out_.ir.rules.size());
                for (ir::Rule& rule : lr.rules) {
                    out_.ir.rules.push_back(std::move(rule));
                }
            }
            const uint32_t base = lr.base;
            if (r.kind == RouteKind::HTTP) {
                PlacedMatches placed{li, at, static_cast<uint32_t>(out.http_matches.size()), 0};
                for (size_t ri = 0; ri < r.http_rules.size(); ++ri) {
                    const HttpRule& hr = r.http_rules[ri];
                    for (size_t mi = 0; mi < hr.matches.size(); ++mi) {
                        const HttpMatch& m = hr.matches[mi];
                        ir::HttpMatch im = lower_http_match(m, base + static_cast<uint32_t>(ri));
                        const auto idx = static_cast<uint32_t>(out.http_matches.size());
                        const Key k = http_key(im, m, order, ri, mi);
                        out.http_matches.push_back(std::move(im));
                        keys.push_back(k);
                        for (const std::string& h : a.hostnames) {
                            http_groups[h].push_back({k, idx});
                        }
                    }
                }
                placed.count = static_cast<uint32_t>(out.http_matches.size()) - placed.first;
                lr.placed.push_back(placed);
            } else if (r.kind == RouteKind::GRPC) {
                for (size_t ri = 0; ri < r.grpc_rules.size(); ++ri) {
                    const GrpcRule& gr = r.grpc_rules[ri];
                    std::vector<GrpcMatch> matches = gr.matches;
                    if (matches.empty()) {
                        matches.push_back(GrpcMatch{});
                    }
                    for (size_t mi = 0; mi < matches.size(); ++mi) {
                        const GrpcMatch& m = matches[mi];
                        ir::GrpcMatch im;
                        im.rule = base + static_cast<uint32_t>(ri);
                        im.type = m.method_type == MatchType::RegularExpression ? ir::MatchType::Regex
                                                                               : ir::MatchType::Exact;
                        im.service = m.service;
                        im.method = m.method;
                        for (const HeaderMatch& h : m.headers) {
                            im.headers.push_back(lower_match(h, true));
                        }
                        const auto idx = static_cast<uint32_t>(out.grpc_matches.size());
                        GKey k{-static_cast<int>(m.service.size()), -static_cast<int>(m.method.size()),
                               -static_cast<int>(m.headers.size()), order,
                               static_cast<uint32_t>(ri), mi};
                        out.grpc_matches.push_back(std::move(im));
                        for (const std::string& h : a.hostnames) {
                            grpc_groups[h].push_back({k, idx});
                        }
                    }
                }
            } else if (r.kind == RouteKind::TLS) {
                if (!lr.rules.empty()) {
                    for (const std::string& h : a.hostnames) {
                        sni.emplace_back(host_rank(h), order, h, base);
                    }
                }
            } else if (out.l4_rule == ir::kNone && !lr.rules.empty()) {
                out.l4_rule = base; // TCP/UDP: only the oldest route carries traffic
            }
        }
        auto gkey_less = [](const GKey& a, const GKey& b) {
            return std::tie(a.service_len, a.method_len, a.headers, a.route, a.rule, a.match) <
                   std::tie(b.service_len, b.method_len, b.headers, b.route, b.rule, b.match);
        };
        std::set<std::string> hostnames;
        for (const auto& [h, v] : http_groups) {
            hostnames.insert(h);
        }
        for (const auto& [h, v] : grpc_groups) {
            hostnames.insert(h);
        }
        std::vector<std::string> ordered(hostnames.begin(), hostnames.end());
        std::stable_sort(ordered.begin(), ordered.end(), [](const std::string& a, const std::string& b) {
            return host_rank(a) > host_rank(b);
        });
        for (const std::string& h : ordered) {
            ir::HostGroup hg;
            hg.hostname = h;
            auto hit = http_groups.find(h);
            if (hit != http_groups.end()) {
                std::stable_sort(hit->second.begin(), hit->second.end(),
                                 [&](const auto& a, const auto& b) { return key_less(a.first, b.first); });
                for (const auto& e : hit->second) {
                    hg.http.push_back(e.second);
                }
            }
            auto git = grpc_groups.find(h);
            if (git != grpc_groups.end()) {
                std::stable_sort(git->second.begin(), git->second.end(),
                                 [&](const auto& a, const auto& b) { return gkey_less(a.first, b.first); });
                for (const auto& e : git->second) {
                    hg.grpc.push_back(e.second);
                }
            }
            out.host_groups.push_back(std::move(hg));
        }
        std::stable_sort(sni.begin(), sni.end(), [](const auto& a, const auto& b) {
            return std::tie(std::get<0>(b), std::get<1>(a)) < std::tie(std::get<0>(a), std::get<1>(b));
        });
        for (const auto& [rank, order, h, rule] : sni) {
            out.sni_routes.push_back({h, rule});
        }
        return out;
    }

public:
    void prepare() {
        index();
        prepare_policies();
    }

    /// Brings `out` (this compiler's last output, possibly patched since, with Programmed
    /// conditions as the caller set them) up to date with the HTTPRoutes (store indices
    /// `routes`) and EndpointSlices (`slices`) replaced in place in the Store since, as a
    /// full compile of the Store would produce it. Returns false and leaves `out` and the
    /// compiler as they were when the change is not one a patch can make (ADR 0011): the
    /// caller compiles in full. Nothing else in the Store may have changed.
    /// `statuses` receives the indices (in out.statuses, ascending) of the statuses the
    /// patch replaced; no other status changes.
    bool patch(const std::vector<size_t>& routes, const std::vector<size_t>& slices,
               CompileOutput& out, std::vector<size_t>& statuses) {
        // ---- 1. compute and check; nothing changes yet.
        // EndpointSlices: only the endpoints of their Service's groups depend on them.
        std::set<NsName> services;
        for (size_t i : slices) {
            if (i >= s_.slices.size()) {
                return false;
            }
            const EndpointSlice& es = s_.slices[i];
            auto it = slices_.find({es.meta.ns, es.service});
            if (it == slices_.end() ||
                std::find(it->second.begin(), it->second.end(), &es) == it->second.end()) {
                return false; // now labelled for another Service: re-index
            }
            services.insert(it->first);
        }
        std::vector<std::pair<uint32_t, std::vector<ir::Endpoint>>> group_updates;
        for (const NsName& key : services) {
            auto sv = services_.find(key);
            if (sv == services_.end()) {
                continue; // no group names a Service that does not exist
            }
            for (auto g = group_index_.lower_bound(
                     std::make_tuple(key.first, key.second, std::numeric_limits<int>::min()));
                 g != group_index_.end() && std::get<0>(g->first) == key.first &&
                 std::get<1>(g->first) == key.second;
                 ++g) {
                if (g->second >= out.ir.groups.size() || g->second >= group_sp_.size()) {
                    return false;
                }
                group_updates.emplace_back(g->second,
                                           group_endpoints(*sv->second, group_sp_[g->second]));
            }
        }
        // HTTPRoutes: patchable when the route keeps its place in creation order and the
        // shape of its output (attachments and effective hostnames, rule, filter and match
        // counts, backend groups already interned), so no index elsewhere moves. Routes feed
        // BackendTLSPolicy ancestors: with any policy, compile in full.
        if (!routes.empty() && !s_.tls_policies.empty()) {
            return false;
        }
        std::vector<size_t> changed = routes;
        std::sort(changed.begin(), changed.end());
        changed.erase(std::unique(changed.begin(), changed.end()), changed.end());
        struct RoutePatch {
            size_t slot;
            const Route* r;
            RouteOutcome o;
            ObjectStatus* st;
        };
        std::vector<RoutePatch> todo;
        frozen_ = true;
        missing_group_ = false;
        bool ok = true;
        for (size_t i : changed) {
            if (i >= s_.routes.size()) {
                ok = false;
                break;
            }
            const Route& r = s_.routes[i];
            auto oi = route_order_.find(&r);
            if (oi == route_order_.end() || oi->second >= sorted_routes_.size() ||
                sorted_routes_[oi->second] != &r) {
                ok = false;
                break;
            }
            const size_t k = oi->second;
            if ((k > 0 && !older(*sorted_routes_[k - 1], r)) ||
                (k + 1 < sorted_routes_.size() && !older(r, *sorted_routes_[k + 1]))) {
                ok = false; // its creation order changed: everything after it moves
                break;
            }
            RouteOutcome o = compute_route(r);
            auto si = route_slot_.find(&r);
            if (si == route_slot_.end()) {
                if (o.has_status) {
                    ok = false; // it has a parent of ours now
                    break;
                }
                continue; // not ours before, not ours now
            }
            const LoweredRoute& old = lowered_[si->second];
            ObjectStatus* st = o.has_status ? out.find(o.st.key) : nullptr;
            // Groups are numbered by first use in creation order: the groups this route is
            // the first to use must be the same, in the same order (then no number moves).
            auto firsts = [&](const std::vector<uint32_t>& used) {
                std::vector<uint32_t> f;
                for (uint32_t gi : used) {
                    if (gi >= group_first_.size() || group_first_[gi] >= k) {
                        if (std::find(f.begin(), f.end(), gi) == f.end()) {
                            f.push_back(gi);
                        }
                    }
                }
                return f;
            };
            if (firsts(old.groups_used) != firsts(o.lr.groups_used)) {
                ok = false;
                break;
            }
            if (!st || r.v1alpha1 || old.kind != RouteKind::HTTP || o.lr.kind != RouteKind::HTTP ||
                old.blocked != o.lr.blocked || old.attach != o.lr.attach ||
                old.rules.size() != o.lr.rules.size() || old.n_filters != o.lr.filters.size() ||
                old.match_counts != o.lr.match_counts ||
                old.first_filter + old.n_filters > out.ir.filters.size() ||
                (old.base != ir::kNone && old.base + old.rules.size() > out.ir.rules.size())) {
                ok = false;
                break;
            }
            for (const PlacedMatches& pm : old.placed) {
                ok = ok && pm.ir_listener < out.ir.listeners.size() &&
                     pm.first + pm.count <= out.ir.listeners[pm.ir_listener].http_matches.size() &&
                     pm.ir_listener < match_keys_.size();
            }
            if (!ok) {
                break;
            }
            todo.push_back({si->second, &r, std::move(o), st});
        }
        frozen_ = false;
        if (!ok || missing_group_) {
            return false;
        }

        // ---- 2. apply.
        statuses.clear();
        for (const RoutePatch& p : todo) {
            statuses.push_back(static_cast<size_t>(p.st - out.statuses.data()));
        }
        std::sort(statuses.begin(), statuses.end());
        statuses.erase(std::unique(statuses.begin(), statuses.end()), statuses.end());
        for (auto& [idx, eps] : group_updates) {
            out.ir.groups[idx].endpoints = std::move(eps);
        }
        for (RoutePatch& p : todo) {
            LoweredRoute& old = lowered_[p.slot];
            LoweredRoute& lr = p.o.lr;
            *p.st = std::move(p.o.st);
            relocate_filters(lr.rules, old.first_filter);
            for (size_t j = 0; j < lr.filters.size(); ++j) {
                out.ir.filters[old.first_filter + j] = std::move(lr.filters[j]);
            }
            if (old.base != ir::kNone) {
                for (size_t j = 0; j < lr.rules.size(); ++j) {
                    out.ir.rules[old.base + j] = std::move(lr.rules[j]);
                }
            }
            const Route& r = *p.r;
            const size_t order = route_order_[&r];
            for (const PlacedMatches& pm : old.placed) {
                ir::Listener& l = out.ir.listeners[pm.ir_listener];
                std::vector<Key>& keys = match_keys_[pm.ir_listener];
                uint32_t at = pm.first;
                for (size_t ri = 0; ri < r.http_rules.size(); ++ri) {
                    const HttpRule& hr = r.http_rules[ri];
                    for (size_t mi = 0; mi < hr.matches.size(); ++mi) {
                        const HttpMatch& m = hr.matches[mi];
                        ir::HttpMatch im =
                            lower_http_match(m, old.base + static_cast<uint32_t>(ri));
                        keys[at] = http_key(im, m, order, ri, mi);
                        l.http_matches[at] = std::move(im);
                        ++at;
                    }
                }
                // The matches may sort elsewhere now in each hostname the route serves here.
                for (const auto& [li, hosts] : old.attach) {
                    if (li != pm.listener) {
                        continue;
                    }
                    for (const std::string& h : hosts) {
                        for (ir::HostGroup& hg : l.host_groups) {
                            if (hg.hostname == h) {
                                std::sort(hg.http.begin(), hg.http.end(),
                                          [&](uint32_t a, uint32_t b) {
                                              return key_less(keys[a], keys[b]);
                                          });
                            }
                        }
                    }
                }
            }
            old.resolved_reason = lr.resolved_reason;
            old.resolved_message = lr.resolved_message;
            old.groups_used = std::move(lr.groups_used);
        }
        return true;
    }

private:
    const Store& s_;
    const CompileOptions& o_;
    std::map<std::string, std::set<uint32_t>> pool_used_; ///< per pool: host parts given out

    std::map<std::string, ClassParams> class_params_; ///< by GatewayClass name

    /// An address of `cidr` for `id`, or "" when the pool is empty, invalid or used up.
    std::string pool_address(const std::string& cidr, const std::string& id) {
        const size_t slash = cidr.find('/');
        if (cidr.empty() || slash == std::string::npos) {
            return {};
        }
        in_addr base{};
        if (inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &base) != 1) {
            return {};
        }
        const int bits = std::atoi(cidr.c_str() + slash + 1);
        if (bits < 8 || bits > 30) {
            return {};
        }
        const uint32_t size = (1u << (32 - bits)) - 2; // no network, no broadcast address
        std::set<uint32_t>& used = pool_used_[cidr];
        if (used.size() >= size) {
            return {};
        }
        uint64_t h = 1469598103934665603ull; // FNV-1a: stable across runs and builds
        for (unsigned char ch : id) {
            h = (h ^ ch) * 1099511628211ull;
        }
        uint32_t host = static_cast<uint32_t>(h % size) + 1;
        while (used.count(host)) {
            host = host % size + 1;
        }
        used.insert(host);
        const uint32_t net = ntohl(base.s_addr) & ~((1u << (32 - bits)) - 1);
        in_addr a{};
        a.s_addr = htonl(net + host);
        char buf[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &a, buf, sizeof buf);
        return buf;
    }
    CompileOutput out_;
    std::map<std::string, const Namespace*> namespaces_;
    std::map<NsName, const Service*> services_;
    std::map<NsName, std::vector<const EndpointSlice*>> slices_;
    std::map<NsName, const Secret*> secrets_;
    std::map<NsName, const ConfigMap*> config_maps_;
    std::set<std::string> our_classes_, bad_classes_;
    std::vector<GatewayState> gateways_;
    std::map<NsName, size_t> gateway_index_;
    std::map<NsName, std::vector<size_t>> listener_set_index_;
    std::vector<ListenerState> listeners_;
    std::unordered_map<const Route*, size_t> route_order_;
    std::vector<LoweredRoute> lowered_;
    std::unordered_map<const Route*, size_t> route_slot_; ///< route -> lowered_ slot
    std::vector<const Route*> sorted_routes_;             ///< creation order
    std::vector<std::vector<Key>> match_keys_; ///< per IR listener, per HTTP match
    std::vector<const ServicePort*> group_sp_; ///< per group: its Service port (or null)
    std::vector<size_t> group_first_;          ///< per group: creation order of its first user
    std::vector<uint32_t>* trace_ = nullptr;   ///< lowering: where group lookups are noted
    size_t lowering_order_ = 0;                ///< lowering: the route's creation order
    bool frozen_ = false;        ///< patching: intern_group may not add groups
    bool missing_group_ = false; ///< a frozen intern_group was asked for a new group
    std::vector<ir::BackendGroup> groups_;
    std::map<std::tuple<std::string, std::string, int>, uint32_t> group_index_;
    std::map<uint32_t, std::string> group_broken_;
    std::vector<std::pair<const BackendTlsPolicy*, const BackendTlsPolicy::Target*>> tls_by_service_;
    std::map<const BackendTlsPolicy*, PolicyState> policy_state_;
};

} // namespace

CompileOutput compile(const Store& store, const CompileOptions& opts) {
    Compiler c(store, opts);
    c.prepare();
    return c.run();
}

struct IncrementalCompiler::State {
    CompileOptions opts; ///< the compiler holds a reference
    const Store* store = nullptr;
    std::vector<std::pair<const void*, size_t>> layout; ///< each Store vector: data, size
    std::unique_ptr<Compiler> c;
};

namespace {

std::vector<std::pair<const void*, size_t>> layout_of(const Store& s) {
    std::vector<std::pair<const void*, size_t>> l;
    auto add = [&](const auto& v) { l.emplace_back(static_cast<const void*>(v.data()), v.size()); };
    add(s.classes);
    add(s.gateways);
    add(s.listener_sets);
    add(s.routes);
    add(s.grants);
    add(s.tls_policies);
    add(s.namespaces);
    add(s.services);
    add(s.slices);
    add(s.secrets);
    add(s.config_maps);
    add(s.deployments);
    return l;
}

} // namespace

IncrementalCompiler::IncrementalCompiler() = default;
IncrementalCompiler::~IncrementalCompiler() = default;
IncrementalCompiler::IncrementalCompiler(IncrementalCompiler&&) noexcept = default;
IncrementalCompiler& IncrementalCompiler::operator=(IncrementalCompiler&&) noexcept = default;

CompileOutput IncrementalCompiler::compile(const Store& store, const CompileOptions& opts) {
    st_.reset(); // the old compiler refers to the old options
    auto st = std::make_unique<State>();
    st->opts = opts;
    st->c = std::make_unique<Compiler>(store, st->opts);
    st->c->prepare();
    CompileOutput out = st->c->run();
    st->store = &store;
    st->layout = layout_of(store);
    st_ = std::move(st);
    ++full_;
    return out;
}

bool IncrementalCompiler::patch(const Store& store, const StoreDelta& delta, CompileOutput& out) {
    if (!st_ || delta.other || st_->store != &store || layout_of(store) != st_->layout) {
        return false;
    }
    std::vector<size_t> statuses;
    if (!st_->c->patch(delta.routes, delta.slices, out, statuses)) {
        return false;
    }
    patched_statuses_ = std::move(statuses);
    ++patched_;
    return true;
}

void IncrementalCompiler::reset() noexcept { st_.reset(); }

void set_programmed(ObjectStatus& st, bool acked, const std::string& why) {
    auto fix = [&](std::vector<Condition>& cs) {
        for (Condition& c : cs) {
            if (c.type == "Programmed" && c.reason == "Pending") {
                c.status = acked ? "True" : "False";
                c.reason = acked ? "Programmed" : "Invalid";
                c.message = acked ? "" : "dataplane refused the configuration: " + why;
            }
        }
    };
    fix(st.conditions);
    for (ListenerStatus& l : st.listeners) {
        fix(l.conditions);
    }
}

void set_programmed(CompileOutput& out, bool acked, const std::string& why) {
    for (ObjectStatus& st : out.statuses) {
        set_programmed(st, acked, why);
    }
}

bool status_ok(const ObjectStatus& st) {
    auto is_true = [](const std::vector<Condition>& cs, std::string_view type) {
        for (const Condition& c : cs) {
            if (c.type == type) {
                return c.status == "True";
            }
        }
        return true; // absent = not applicable
    };
    auto is_false = [](const std::vector<Condition>& cs, std::string_view type) {
        for (const Condition& c : cs) {
            if (c.type == type) {
                return c.status == "False";
            }
        }
        return true;
    };
    if (st.key.kind == "Gateway" || st.key.kind == "GatewayClass") {
        if (!is_true(st.conditions, "Accepted") || !is_true(st.conditions, "ResolvedRefs")) {
            return false;
        }
        for (const ListenerStatus& l : st.listeners) {
            if (!is_true(l.conditions, "Accepted") || !is_true(l.conditions, "ResolvedRefs") ||
                !is_false(l.conditions, "Conflicted")) {
                return false;
            }
        }
        return true;
    }
    for (const ParentStatus& p : st.parents) {
        if (!is_true(p.conditions, "Accepted") || !is_true(p.conditions, "ResolvedRefs")) {
            return false;
        }
    }
    return true;
}

} // namespace sluice::cp
