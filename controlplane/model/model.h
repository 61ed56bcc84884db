#pragma once

/// @file
/// The controlplane's typed model of Gateway API and core resources, after defaults
/// (REFERENCE.md section 1) and validation. Both API generations (v1 and the seed's
/// networking.x-k8s.io/v1alpha1) load into these same structs.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sluice::cp {

inline constexpr const char* kGatewayGroup = "gateway.networking.k8s.io";

struct SourceRef {
    std::string file;
    int doc = -1;
};

struct Meta {
    std::string name;
    std::string ns; ///< empty for cluster-scoped kinds
    int64_t generation = 1;
    bool generation_given = false; ///< metadata.generation was in the input (API objects)
    uint64_t spec_hash = 0;        ///< hash of the object's content minus metadata and status
    int64_t creation = 0;  ///< creationTimestamp in seconds, 0 when absent
    uint64_t sequence = 0; ///< load order; breaks creation ties deterministically
    std::map<std::string, std::string> labels;
    std::map<std::string, std::string> annotations;
    SourceRef source;
};

struct ObjectKey {
    std::string kind;
    std::string ns;
    std::string name;
    auto operator<=>(const ObjectKey&) const = default;
    [[nodiscard]] std::string str() const { return kind + " " + (ns.empty() ? name : ns + "/" + name); }
};

struct LabelSelectorReq {
    std::string key;
    std::string op; ///< In, NotIn, Exists, DoesNotExist
    std::vector<std::string> values;
};

struct LabelSelector {
    std::map<std::string, std::string> match_labels;
    std::vector<LabelSelectorReq> match_expressions;
    [[nodiscard]] bool matches(const std::map<std::string, std::string>& labels) const;
};

// ---------------------------------------------------------------- GatewayClass

struct GatewayClass {
    Meta meta;
    std::string controller_name;
    std::string parameters_group, parameters_kind, parameters_name, parameters_ns;
    bool has_parameters_ref = false;
};

// ---------------------------------------------------------------- Gateway

struct RouteGroupKind {
    std::string group = kGatewayGroup;
    std::string kind;
    auto operator<=>(const RouteGroupKind&) const = default;
};

struct SecretObjectRef {
    std::string group; ///< "" = core
    std::string kind = "Secret";
    std::string name;
    std::optional<std::string> ns;
};

struct FrontendValidation {
    std::vector<SecretObjectRef> ca_refs; ///< kind ConfigMap or Secret
    std::string mode = "AllowValidOnly";
    bool present = false;
};

struct Listener {
    std::string name;
    std::optional<std::string> hostname;
    int port = 0;
    std::string protocol;
    // tls
    bool has_tls = false;
    std::string tls_mode = "Terminate";
    std::vector<SecretObjectRef> certificate_refs;
    std::map<std::string, std::string> tls_options;
    // allowedRoutes
    std::string from = "Same"; ///< Same, All, Selector, None
    std::optional<LabelSelector> ns_selector;
    std::vector<RouteGroupKind> kinds; ///< empty = derive from protocol
    bool kinds_given = false;
    /// v1alpha1 only: routes bind when their labels match this selector (listener.routes).
    std::optional<LabelSelector> route_selector;
    bool v1alpha1 = false;
};

struct GatewayAddress {
    std::string type = "IPAddress";
    std::string value;
};

struct Gateway {
    Meta meta;
    std::string class_name;
    std::vector<Listener> listeners;
    std::vector<GatewayAddress> addresses;
    std::map<std::string, std::string> infra_labels, infra_annotations;
    bool has_infra_params = false;
    std::string infra_params_group, infra_params_kind, infra_params_name;
    // spec.tls
    FrontendValidation frontend_default;
    std::vector<std::pair<int, FrontendValidation>> frontend_per_port;
    std::optional<SecretObjectRef> backend_client_cert;
    // spec.allowedListeners
    std::string allowed_listeners_from = "None";
    std::optional<LabelSelector> allowed_listeners_selector;
};

// ---------------------------------------------------------------- ListenerSet

struct ListenerSet {
    Meta meta;
    std::string parent_group = kGatewayGroup, parent_kind = "Gateway", parent_name, parent_ns;
    std::vector<Listener> listeners;
};

// ---------------------------------------------------------------- Routes

struct ParentRef {
    std::string group = kGatewayGroup;
    std::string kind = "Gateway";
    std::string name;
    std::optional<std::string> ns;
    std::optional<std::string> section_name;
    std::optional<int> port;
    auto operator<=>(const ParentRef&) const = default;
};

enum class PathType { Exact, PathPrefix, RegularExpression };
enum class MatchType { Exact, RegularExpression };

struct HeaderMatch {
    MatchType type = MatchType::Exact;
    std::string name;
    std::string value;
};

struct HttpMatch {
    PathType path_type = PathType::PathPrefix;
    std::string path = "/";
    std::vector<HeaderMatch> headers;
    std::vector<HeaderMatch> query;
    std::optional<std::string> method;
};

struct HeaderValue {
    std::string name;
    std::string value;
};

struct HeaderModifier {
    std::vector<HeaderValue> set, add;
    std::vector<std::string> remove;
};

struct PathModifier {
    std::string type; ///< ReplaceFullPath | ReplacePrefixMatch
    std::string value;
};

struct BackendObjectRef {
    std::string group; ///< "" = core
    std::string kind = "Service";
    std::string name;
    std::optional<std::string> ns;
    std::optional<int> port;
};

struct HttpFilter {
    std::string type; ///< RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect,
                      ///< URLRewrite, RequestMirror, CORS, ExtensionRef, ExternalAuth
    HeaderModifier headers;
    // RequestRedirect
    std::optional<std::string> scheme, hostname;
    std::optional<PathModifier> path;
    std::optional<int> port;
    int status_code = 302;
    // URLRewrite uses hostname + path above
    // RequestMirror
    BackendObjectRef mirror;
    std::optional<int> percent;
    std::optional<std::pair<int, int>> fraction;
    // CORS
    std::vector<std::string> allow_origins, allow_methods, allow_headers, expose_headers;
    bool allow_credentials = false;
    int max_age = 5;
    // ExtensionRef
    std::string ext_group, ext_kind, ext_name;
};

struct BackendRef {
    BackendObjectRef ref;
    int weight = 1;
    std::vector<HttpFilter> filters;
};

struct HttpRetry {
    std::vector<int> codes;
    std::optional<int> attempts;
    std::optional<std::string> backoff;
};

struct HttpRule {
    std::string name;
    std::vector<HttpMatch> matches;
    std::vector<HttpFilter> filters;
    std::vector<BackendRef> backends;
    std::optional<std::string> timeout_request, timeout_backend;
    std::optional<HttpRetry> retry;
};

struct GrpcMatch {
    MatchType method_type = MatchType::Exact;
    std::string service, method; ///< empty = any
    std::vector<HeaderMatch> headers;
};

struct GrpcRule {
    std::string name;
    std::vector<GrpcMatch> matches;
    std::vector<HttpFilter> filters;
    std::vector<BackendRef> backends;
};

struct L4Rule {
    std::string name;
    std::vector<BackendRef> backends;
};

enum class RouteKind { HTTP, GRPC, TLS, TCP, UDP };

[[nodiscard]] const char* route_kind_name(RouteKind k) noexcept;

/// One Route of any kind; the fields that do not apply to a kind stay empty.
struct Route {
    Meta meta;
    RouteKind kind = RouteKind::HTTP;
    std::vector<ParentRef> parents;
    std::vector<std::string> hostnames;
    std::vector<HttpRule> http_rules;
    std::vector<GrpcRule> grpc_rules;
    std::vector<L4Rule> l4_rules; ///< TLS, TCP, UDP
    /// Seed v1alpha1 routes bind by label selection from the listener, not by parentRefs.
    bool v1alpha1 = false;
};

// ---------------------------------------------------------------- policies and grants

struct ReferenceGrant {
    Meta meta;
    struct From {
        std::string group, kind, ns;
    };
    struct To {
        std::string group, kind;
        std::optional<std::string> name;
    };
    std::vector<From> from;
    std::vector<To> to;
};

struct BackendTlsPolicy {
    Meta meta;
    struct Target {
        std::string group, kind, name;
        std::optional<std::string> section_name;
    };
    std::vector<Target> targets;
    std::vector<SecretObjectRef> ca_refs; ///< kind ConfigMap (or Secret)
    std::string well_known_ca;            ///< "System" or ""
    std::string hostname;
    struct San {
        std::string type, value;
    };
    std::vector<San> sans;
};

// ---------------------------------------------------------------- core kinds

struct Namespace {
    Meta meta;
};

struct ServicePort {
    std::string name;
    int port = 0;
    int target_port = 0;
    std::string target_port_name;
    std::string protocol = "TCP";
    std::string app_protocol;
};

struct Service {
    Meta meta;
    std::string type = "ClusterIP";
    std::string cluster_ip;
    std::string external_name;
    std::vector<ServicePort> ports;
    std::map<std::string, std::string> selector;
};

struct EndpointSlice {
    Meta meta;
    std::string service; ///< label kubernetes.io/service-name
    std::string address_type = "IPv4";
    struct Endpoint {
        std::vector<std::string> addresses;
        bool ready = true, serving = true, terminating = false;
        std::string hostname;
    };
    std::vector<Endpoint> endpoints;
    struct Port {
        std::string name;
        int port = 0;
        std::string protocol = "TCP";
        std::string app_protocol;
    };
    std::vector<Port> ports;
};

struct Secret {
    Meta meta;
    std::string type;
    std::map<std::string, std::string> data; ///< decoded bytes
};

struct ConfigMap {
    Meta meta;
    std::map<std::string, std::string> data;
};

/// Pods are used only to give backends a name in tests and demos (the echo pod name).
struct Pod {
    Meta meta;
    std::string ip;
};

/// Deployments of the conformance base are kept only for their pod template labels, so the
/// runner can name the pod (deployment name) a Service selects.
struct Deployment {
    Meta meta;
    std::map<std::string, std::string> pod_labels;
    int replicas = 1;
};

/// Everything the controlplane knows, from one snapshot of its sources.
struct Store {
    std::vector<GatewayClass> classes;
    std::vector<Gateway> gateways;
    std::vector<ListenerSet> listener_sets;
    std::vector<Route> routes;
    std::vector<ReferenceGrant> grants;
    std::vector<BackendTlsPolicy> tls_policies;
    std::vector<Namespace> namespaces;
    std::vector<Service> services;
    std::vector<EndpointSlice> slices;
    std::vector<Secret> secrets;
    std::vector<ConfigMap> config_maps;
    std::vector<Deployment> deployments;

    [[nodiscard]] size_t size() const noexcept {
        return classes.size() + gateways.size() + listener_sets.size() + routes.size() +
               grants.size() + tls_policies.size() + namespaces.size() + services.size() +
               slices.size() + secrets.size() + config_maps.size() + deployments.size();
    }
};

} // namespace sluice::cp
