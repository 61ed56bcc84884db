#pragma once

/// @file
/// The IR: what the controlplane compiles and the dataplane consumes. Plain structs, no
/// DPDK, no pointers: indices only, so the same bytes decode identically in another
/// process. Every struct lists its fields once in io(), which both the encoder and the
/// decoder of ir_codec.h walk, so the wire format cannot drift from the structs.
/// Bump kIrVersion whenever a field is added, removed or reordered.
/// Thread: any (immutable once built).

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::ir {

inline constexpr uint32_t kIrVersion = 5;
inline constexpr uint32_t kNone = 0xFFFFFFFFu;

enum class Protocol : uint8_t { HTTP = 0, HTTPS = 1, TLS = 2, TCP = 3, UDP = 4 };
enum class TlsMode : uint8_t { None = 0, Terminate = 1, Passthrough = 2 };
enum class PathType : uint8_t { Exact = 0, Prefix = 1, Regex = 2 };
enum class MatchType : uint8_t { Exact = 0, Regex = 1 };
enum class PathModType : uint8_t { None = 0, Full = 1, Prefix = 2 };
/// L4 forwarding mode (annotation sluice.dev/forwarding-mode on a Gateway, or on a
/// TCPRoute/UDPRoute to override it). Inherit on a rule means "the listener's".
enum class FwdMode : uint8_t { Inherit = 0, FullNat = 1, DsrIpip = 2, DsrGue = 3 };

inline constexpr const char* kForwardingModeAnnotation = "sluice.dev/forwarding-mode";

[[nodiscard]] const char* protocol_name(Protocol p) noexcept;
/// Parses "full-nat", "dsr-ipip", "dsr-gue"; false for anything else.
[[nodiscard]] bool parse_fwd_mode(std::string_view s, FwdMode& out) noexcept;

struct Endpoint {
    std::string address; ///< IPv4 or IPv6 literal
    uint16_t port = 0;   ///< target port
    bool ready = true;
    bool serving = true;
    bool terminating = false;
    std::string name; ///< pod / target name (identity in logs, tests and demos)
    template <class A>
    void io(A& a) {
        a(address, port, ready, serving, terminating, name);
    }
};

/// A Service port as a destination: shared by every rule that names it.
struct BackendGroup {
    std::string ns, name; ///< Service
    uint16_t port = 0;    ///< Service port
    std::string app_protocol;
    std::vector<Endpoint> endpoints; ///< sorted; identical on every node for the same input
    // gateway -> backend TLS (BackendTLSPolicy)
    bool tls = false;
    std::string tls_sni;
    std::vector<std::string> tls_sans; ///< "DNS:x" / "URI:x"
    std::string tls_ca_pem;            ///< empty + tls = system CAs
    std::string tls_policy;            ///< ns/name of the policy in force
    template <class A>
    void io(A& a) {
        a(ns, name, port, app_protocol, endpoints, tls, tls_sni, tls_sans, tls_ca_pem, tls_policy);
    }
};

struct HeaderOps {
    std::vector<std::pair<std::string, std::string>> set, add;
    std::vector<std::string> remove;
    [[nodiscard]] bool empty() const noexcept { return set.empty() && add.empty() && remove.empty(); }
    template <class A>
    void io(A& a) {
        a(set, add, remove);
    }
};

struct PathMod {
    PathModType type = PathModType::None;
    std::string value;
    template <class A>
    void io(A& a) {
        a(type, value);
    }
};

struct Mirror {
    uint32_t group = kNone; ///< kNone: invalid mirror target, skipped
    uint32_t numerator = 100;
    uint32_t denominator = 100;
    template <class A>
    void io(A& a) {
        a(group, numerator, denominator);
    }
};

struct Cors {
    std::vector<std::string> allow_origins, allow_methods, allow_headers, expose_headers;
    bool allow_credentials = false;
    uint32_t max_age = 5;
    template <class A>
    void io(A& a) {
        a(allow_origins, allow_methods, allow_headers, expose_headers, allow_credentials, max_age);
    }
};

/// The filters of a rule or of one backendRef, in application order.
struct Filters {
    HeaderOps request_headers, response_headers;
    bool redirect = false;
    std::string redirect_scheme, redirect_host;
    uint16_t redirect_port = 0;
    uint16_t redirect_status = 302;
    PathMod redirect_path;
    bool rewrite = false;
    std::string rewrite_host;
    PathMod rewrite_path;
    std::vector<Mirror> mirrors;
    bool cors = false;
    Cors cors_policy;
    uint16_t fixed_status = 0; ///< e.g. 500 for an unresolvable ExtensionRef filter
    [[nodiscard]] bool empty() const noexcept {
        return request_headers.empty() && response_headers.empty() && !redirect && !rewrite &&
               mirrors.empty() && !cors && fixed_status == 0;
    }
    template <class A>
    void io(A& a) {
        a(request_headers, response_headers, redirect, redirect_scheme, redirect_host,
          redirect_port, redirect_status, redirect_path, rewrite, rewrite_host, rewrite_path,
          mirrors, cors, cors_policy, fixed_status);
    }
};

struct Backend {
    uint32_t group = kNone; ///< index into Ir::groups; kNone when status != 0
    uint32_t weight = 1;
    uint16_t status = 0; ///< 0 = forward; 500 = invalid backendRef (keeps its weight)
    std::string reason;  ///< why it is invalid (explain, access log)
    uint32_t filters = kNone; ///< backendRef-level filters: index into Ir::filters
    template <class A>
    void io(A& a) {
        a(group, weight, status, reason, filters);
    }
};

struct HeaderMatch {
    MatchType type = MatchType::Exact;
    std::string name; ///< lower-case for headers; as written for query params
    std::string value;
    template <class A>
    void io(A& a) {
        a(type, name, value);
    }
};

/// One route rule, shared by all of its matches and by every listener the route attaches to.
struct Rule {
    std::string route_ns, route_name;
    uint32_t index = 0; ///< position in the route's rules
    std::string name;   ///< rule name (sectionName), may be empty
    uint32_t filters = kNone; ///< index into Ir::filters; kNone = no filters
    std::vector<Backend> backends; ///< empty + no redirect = 500
    uint32_t timeout_request_ms = 0; ///< 0 = none
    uint32_t timeout_backend_ms = 0;
    std::vector<uint16_t> retry_codes;
    uint32_t retry_attempts = 0;
    uint32_t retry_backoff_ms = 0;
    FwdMode fwd_mode = FwdMode::Inherit; ///< TCP/UDP routes
    template <class A>
    void io(A& a) {
        a(route_ns, route_name, index, name, filters, backends, timeout_request_ms,
          timeout_backend_ms, retry_codes, retry_attempts, retry_backoff_ms, fwd_mode);
    }
};

struct HttpMatch {
    uint32_t rule = 0; ///< index into Ir::rules
    PathType path_type = PathType::Prefix;
    std::string path = "/";
    std::string method; ///< empty = any
    std::vector<HeaderMatch> headers, query;
    template <class A>
    void io(A& a) {
        a(rule, path_type, path, method, headers, query);
    }
};

struct GrpcMatch {
    uint32_t rule = 0;
    MatchType type = MatchType::Exact;
    std::string service, method; ///< empty = any
    std::vector<HeaderMatch> headers;
    template <class A>
    void io(A& a) {
        a(rule, type, service, method, headers);
    }
};

/// Matches of one effective hostname, in precedence order (REFERENCE 7.1).
struct HostGroup {
    std::string hostname; ///< "" any, "*.x" wildcard, or exact
    std::vector<uint32_t> http; ///< indices into Listener::http_matches
    std::vector<uint32_t> grpc; ///< indices into Listener::grpc_matches
    template <class A>
    void io(A& a) {
        a(hostname, http, grpc);
    }
};

struct SniRoute {
    std::string hostname; ///< "" any, "*.x" or exact; sorted most specific first
    uint32_t rule = 0;    ///< index into Ir::rules (backends)
    template <class A>
    void io(A& a) {
        a(hostname, rule);
    }
};

struct CertRef {
    std::string ns, name; ///< kubernetes.io/tls Secret
    std::string cert_pem, key_pem;
    /// The Secret's tls.ocsp-staple: a DER OCSP response for cert_pem's leaf, stapled by the
    /// L7 engine when valid (checked there: it needs the clock). "" = none. Since IR v5.
    std::string ocsp_der;
    template <class A>
    void io(A& a) {
        a(ns, name, cert_pem, key_pem, ocsp_der);
    }
};

struct Listener {
    std::string gateway_ns, gateway_name, name;
    uint16_t port = 0;
    Protocol protocol = Protocol::HTTP;
    std::string hostname; ///< "" = any
    TlsMode tls_mode = TlsMode::None;
    std::vector<CertRef> certs;
    std::vector<std::pair<std::string, std::string>> tls_options;
    std::vector<std::string> client_ca_pems; ///< frontend client-certificate validation
    bool client_cert_optional = false;       ///< AllowInsecureFallback
    std::vector<HttpMatch> http_matches;
    std::vector<GrpcMatch> grpc_matches;
    std::vector<HostGroup> host_groups; ///< most specific first
    std::vector<SniRoute> sni_routes;   ///< TLS listeners
    uint32_t l4_rule = kNone;           ///< TCP/UDP: the oldest attached route's rule
    FwdMode fwd_mode = FwdMode::FullNat; ///< from the Gateway's annotation
    template <class A>
    void io(A& a) {
        a(gateway_ns, gateway_name, name, port, protocol, hostname, tls_mode, certs, tls_options,
          client_ca_pems, client_cert_optional, http_matches, grpc_matches, host_groups,
          sni_routes, l4_rule, fwd_mode);
    }
};

struct Gateway {
    std::string ns, name;
    std::vector<std::string> addresses;
    std::vector<uint32_t> listeners; ///< indices into Ir::listeners
    CertRef backend_client_cert;     ///< spec.tls.backend.clientCertificateRef (name "" = none)
    template <class A>
    void io(A& a) {
        a(ns, name, addresses, listeners, backend_client_cert);
    }
};

struct Ir {
    uint32_t version = kIrVersion;
    std::vector<Gateway> gateways;
    std::vector<Listener> listeners;
    std::vector<Rule> rules;       ///< shared by listeners (a route on two listeners: once)
    std::vector<Filters> filters;  ///< out of line: most rules and backends have none
    std::vector<BackendGroup> groups;
    template <class A>
    void io(A& a) {
        a(version, gateways, listeners, rules, filters, groups);
    }

    /// The filters at `index`, or an empty set for kNone. Thread: any.
    [[nodiscard]] const Filters& filters_at(uint32_t index) const noexcept {
        static const Filters kEmpty;
        return index < filters.size() ? filters[index] : kEmpty;
    }
};

} // namespace sluice::ir
