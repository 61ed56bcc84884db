#include "k8s_source.h"

#include <cctype>
#include <chrono>
#include <ctime>
#include <iostream>
#include <random>
#include <set>
#include <thread>

#include <malloc.h>
#include <unistd.h>

#include "loader.h"

namespace sluice::cp {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

/// One object as the source keeps it.
struct K8sSource::Entry {
    /// The object as the server sent it (kinds with status), or only its metadata name,
    /// namespace and resourceVersion (slim kinds: Services, EndpointSlices... whose content
    /// lives on in `model` alone).
    json obj;
    uint64_t spec = 0; ///< hash of the content without status/resourceVersion/managedFields
    /// The object loaded alone (validated, typed), until reconcile() moves it into the Store
    /// it compiles (K8sSource::store_); empty from then on. So an event converts and loads
    /// one object, not all of them.
    Store model;
};

struct K8sSource::Resource {
    std::string kind, group, plural;
    std::vector<std::string> versions; ///< tried in order; the first one served is used
    bool namespaced = true;
    bool slim = false; ///< keep only the metadata of the JSON object (no status written)
    // Guarded by K8sSource::mu_:
    std::string version; ///< "" = not discovered yet
    std::string rv;      ///< "" = (re)list needed
    bool synced = false; ///< listed once (or known missing)
    bool missing = false;
    std::map<std::string, Entry> objects; ///< "ns/name" -> the last valid version
    /// Objects whose latest version failed validation: "ns/name" -> its errors. The
    /// version in `objects` (if any) stays in force, as the API server would have refused
    /// the edit.
    std::map<std::string, std::vector<Diagnostic>> rejected;
    /// Secret, ConfigMap: only the objects something references are kept (in `objects`);
    /// of the others only the key is (here), so a cluster's other Secrets are not held.
    bool referenced_only = false;
    std::set<std::string> unreferenced;

    [[nodiscard]] std::string base(const std::string& ns = "") const {
        std::string p = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
        if (!ns.empty()) {
            p += "/namespaces/" + ns;
        }
        return p + "/" + plural;
    }
    [[nodiscard]] std::string api_version() const {
        return group.empty() ? version : group + "/" + version;
    }
};

namespace {

void log(const std::string& msg) {
    std::cerr << "sluice-controlplane: k8s: " << msg << std::endl;
}

/// One line for a log: whitespace runs collapsed, control bytes escaped, at most `max` bytes
/// (an HTML error page or a broken JSON body stays readable on one line).
std::string excerpt(std::string_view body, size_t max = 200) {
    std::string o;
    bool space = false;
    for (unsigned char c : body) {
        if (o.size() >= max) {
            o += "...";
            break;
        }
        if (std::isspace(c)) {
            space = !o.empty();
            continue;
        }
        if (space) {
            o += ' ';
            space = false;
        }
        if (c < 0x20 || c == 0x7f) {
            char b[8];
            snprintf(b, sizeof b, "\\x%02x", c);
            o += b;
        } else {
            o += static_cast<char>(c);
        }
    }
    return o;
}

/// Why an HTTP answer is not a JSON document: "" when it is one.
std::string not_json(const HttpResponse& r) {
    if (r.content_type.find("json") == std::string::npos) {
        return "unexpected Content-Type '" + r.content_type + "' (a proxy's error page?): '" +
               excerpt(r.body) + "'";
    }
    return "";
}

std::string now_rfc3339(bool micro) {
    const auto now = std::chrono::system_clock::now();
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[64];
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    std::string s = buf;
    if (micro) {
        const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                            now.time_since_epoch()).count() % 1000000;
        char frac[16];
        snprintf(frac, sizeof frac, ".%06lld", static_cast<long long>(us));
        s += frac;
    }
    return s + "Z";
}

std::optional<json> parse_json(std::string_view text) {
    // Third-party exceptions end here (STYLE C2).
    try {
        return json::parse(text.begin(), text.end());
    } catch (const json::exception&) {
        return std::nullopt;
    }
}

std::string str_at(const json& j, const char* a, const char* b = nullptr) {
    if (!j.is_object() || !j.contains(a)) {
        return "";
    }
    const json& x = j[a];
    if (!b) {
        return x.is_string() ? x.get<std::string>() : "";
    }
    if (!x.is_object() || !x.contains(b) || !x[b].is_string()) {
        return "";
    }
    return x[b].get<std::string>();
}

std::string obj_key(const json& obj) {
    return str_at(obj, "metadata", "namespace") + "/" + str_at(obj, "metadata", "name");
}

void fnv(uint64_t& h, const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
        h = (h ^ b[i]) * 0x100000001b3ULL;
    }
}

void hash_json(const json& j, uint64_t& h, int depth) {
    const auto t = static_cast<unsigned char>(j.type());
    fnv(h, &t, 1);
    switch (j.type()) {
    case json::value_t::object:
        for (auto it = j.begin(); it != j.end(); ++it) {
            // Not content: status, and the bookkeeping of metadata.
            if ((depth == 0 && it.key() == "status") ||
                (depth == 1 && (it.key() == "resourceVersion" || it.key() == "managedFields"))) {
                continue;
            }
            fnv(h, it.key().data(), it.key().size() + 1);
            hash_json(it.value(), h, depth == 0 && it.key() == "metadata" ? 1 : 2);
        }
        break;
    case json::value_t::array:
        for (const json& e : j) {
            hash_json(e, h, 2);
        }
        break;
    case json::value_t::string: {
        const std::string& v = j.get_ref<const std::string&>();
        fnv(h, v.data(), v.size() + 1);
        break;
    }
    default: {
        const std::string v = j.dump();
        fnv(h, v.data(), v.size() + 1);
        break;
    }
    }
}

/// Hash of the object without status and bookkeeping: equal means a recompile is not needed.
uint64_t spec_hash(const json& obj) {
    uint64_t h = 0xcbf29ce484222325ULL;
    hash_json(obj, h, 0);
    return h;
}

/// Calls f(dst_vector, src_vector, slot) for each vector of the two Stores, in one order.
template <class F>
void each_vector(Store& a, Store& b, F&& f) {
    f(a.classes, b.classes, 0);
    f(a.gateways, b.gateways, 1);
    f(a.listener_sets, b.listener_sets, 2);
    f(a.routes, b.routes, 3);
    f(a.grants, b.grants, 4);
    f(a.tls_policies, b.tls_policies, 5);
    f(a.namespaces, b.namespaces, 6);
    f(a.services, b.services, 7);
    f(a.slices, b.slices, 8);
    f(a.secrets, b.secrets, 9);
    f(a.config_maps, b.config_maps, 10);
    f(a.deployments, b.deployments, 11);
}
constexpr int kStoreVectors = 12;
constexpr int kRoutesSlot = 3, kSlicesSlot = 8; ///< (each_vector)

/// Which vector of a Store holding one object it is in (each_vector's numbers), or -1.
int slot_of(Store& one) {
    int slot = -1;
    each_vector(one, one, [&](auto& v, auto&, int n) { slot = v.empty() ? slot : n; });
    return slot;
}

std::string url_escape(const std::string& s) {
    std::string o;
    for (unsigned char c : s) {
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            o += static_cast<char>(c);
        } else {
            char b[4];
            snprintf(b, sizeof b, "%%%02X", c);
            o += b;
        }
    }
    return o;
}

void to_node(const json& j, Node& n) {
    switch (j.type()) {
    case json::value_t::object:
        n.kind = Node::Kind::Map;
        n.fields.reserve(j.size());
        for (auto it = j.begin(); it != j.end(); ++it) {
            n.fields.emplace_back(it.key(), Node{});
            to_node(it.value(), n.fields.back().second);
        }
        break;
    case json::value_t::array:
        n.kind = Node::Kind::Seq;
        n.items.resize(j.size());
        for (size_t i = 0; i < j.size(); ++i) {
            to_node(j[i], n.items[i]);
        }
        break;
    case json::value_t::string:
        n.kind = Node::Kind::Scalar;
        n.quoted = true;
        n.scalar = j.get<std::string>();
        break;
    case json::value_t::null:
        n.kind = Node::Kind::Null;
        break;
    default: // numbers, booleans
        n.kind = Node::Kind::Scalar;
        n.scalar = j.dump();
        break;
    }
}

// ------------------------------------------------------------------ referenced objects

/// Adds the Secrets/ConfigMaps named by the reference fields under `j` (any depth) to
/// `refs` ("Secret" / "ConfigMap" -> {"ns/name"}). `ns` is the referring object's namespace.
void collect_refs(const json& j, const std::string& ns,
                  std::map<std::string, std::set<std::string>>& refs) {
    if (j.is_array()) {
        for (const json& e : j) {
            collect_refs(e, ns, refs);
        }
        return;
    }
    if (!j.is_object()) {
        return;
    }
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& field = it.key();
        // certificateRefs (listeners), certificateRef (v1alpha1 listeners),
        // clientCertificateRef (spec.tls.backend): Secret by default; caCertificateRefs
        // (frontend validation, BackendTLSPolicy): ConfigMap by default; parametersRef
        // (GatewayClass, Gateway infrastructure): the kind it names.
        const char* dflt = field == "certificateRefs" || field == "certificateRef" ||
                                   field == "clientCertificateRef"
                               ? "Secret"
                           : field == "caCertificateRefs" ? "ConfigMap"
                           : field == "parametersRef"     ? ""
                                                          : nullptr;
        if (!dflt) {
            collect_refs(it.value(), ns, refs);
            continue;
        }
        auto one = [&](const json& ref) {
            if (!ref.is_object()) {
                return;
            }
            std::string kind = str_at(ref, "kind");
            if (kind.empty()) {
                kind = dflt;
            }
            const std::string name = str_at(ref, "name");
            if ((kind != "Secret" && kind != "ConfigMap") || name.empty()) {
                return;
            }
            const std::string rns = str_at(ref, "namespace");
            refs[kind].insert((rns.empty() ? ns : rns) + "/" + name);
        };
        if (it.value().is_array()) {
            for (const json& ref : it.value()) {
                one(ref);
            }
        } else {
            one(it.value());
        }
    }
}

// ------------------------------------------------------------------ status rendering

json conditions_json(const std::vector<Condition>& cs, const json& existing) {
    json out = json::array();
    for (const Condition& c : cs) {
        std::string ltt = now_rfc3339(false);
        if (existing.is_array()) {
            for (const json& e : existing) {
                if (str_at(e, "type") == c.type && str_at(e, "status") == c.status &&
                    !str_at(e, "lastTransitionTime").empty()) {
                    ltt = str_at(e, "lastTransitionTime");
                }
            }
        }
        json j = {{"type", c.type},       {"status", c.status},
                  {"reason", c.reason},   {"message", c.message},
                  {"lastTransitionTime", ltt}, {"observedGeneration", c.observed_generation}};
        out.push_back(std::move(j));
    }
    return out;
}

json ref_json(const ParentRef& r) {
    json j = {{"group", r.group}, {"kind", r.kind}, {"name", r.name}};
    if (r.ns) {
        j["namespace"] = *r.ns;
    }
    if (r.section_name) {
        j["sectionName"] = *r.section_name;
    }
    if (r.port) {
        j["port"] = *r.port;
    }
    return j;
}

void fnv_str(uint64_t& h, const std::string& v) {
    fnv(h, v.data(), v.size() + 1);
}

void fnv_int(uint64_t& h, int64_t v) {
    fnv(h, &v, sizeof v);
}

void fnv_conditions(uint64_t& h, const std::vector<Condition>& cs) {
    fnv_int(h, static_cast<int64_t>(cs.size()));
    for (const Condition& c : cs) {
        fnv_str(h, c.type);
        fnv_str(h, c.status);
        fnv_str(h, c.reason);
        fnv_str(h, c.message);
        fnv_int(h, c.observed_generation);
    }
}

/// Identifies an object by kind and "ns/name" (the same bytes as kind + ns + "/" + name).
uint64_t key_hash(std::string_view kind, std::string_view ns, std::string_view name) {
    uint64_t h = 0xcbf29ce484222325ULL;
    fnv(h, kind.data(), kind.size());
    fnv(h, "", 1);
    fnv(h, ns.data(), ns.size());
    fnv(h, "/", 1);
    fnv(h, name.data(), name.size());
    return h;
}

uint64_t key_hash(std::string_view kind, std::string_view ns_name) {
    const size_t slash = ns_name.find('/');
    return key_hash(kind, ns_name.substr(0, slash), ns_name.substr(slash + 1));
}

/// Everything of `st` that its status JSON is made of (write_statuses' skip test).
uint64_t status_fingerprint(const ObjectStatus& st) {
    uint64_t h = 0xcbf29ce484222325ULL;
    fnv_int(h, st.generation);
    fnv_conditions(h, st.conditions);
    for (const ListenerStatus& l : st.listeners) {
        fnv_str(h, l.name);
        fnv_int(h, l.attached_routes);
        for (const RouteGroupKind& k : l.supported_kinds) {
            fnv_str(h, k.group);
            fnv_str(h, k.kind);
        }
        fnv_conditions(h, l.conditions);
    }
    for (const GatewayAddress& a : st.addresses) {
        fnv_str(h, a.type);
        fnv_str(h, a.value);
    }
    fnv_int(h, st.attached_listener_sets);
    for (const ParentStatus& p : st.parents) {
        fnv_str(h, p.ref.group);
        fnv_str(h, p.ref.kind);
        fnv_str(h, p.ref.name);
        fnv_str(h, p.ref.ns.value_or("\x01"));
        fnv_str(h, p.ref.section_name.value_or("\x01"));
        fnv_int(h, p.ref.port.value_or(-1));
        fnv_str(h, p.controller_name);
        fnv_conditions(h, p.conditions);
    }
    for (const std::string& f : st.supported_features) {
        fnv_str(h, f);
    }
    return h;
}

/// Finds the element of `arr` whose `field` equals `value` (for carrying lastTransitionTime).
json find_by(const json& arr, const char* field, const json& value) {
    if (arr.is_array()) {
        for (const json& e : arr) {
            if (e.is_object() && e.contains(field) && e[field] == value) {
                return e;
            }
        }
    }
    return json();
}

/// The status block for a Gateway, GatewayClass or ListenerSet (owned wholly by sluice).
json owned_status(const ObjectStatus& st, const json& cur) {
    json s = json::object();
    s["conditions"] = conditions_json(st.conditions, cur.is_object() && cur.contains("conditions")
                                                         ? cur["conditions"]
                                                         : json());
    if (!st.supported_features.empty()) {
        json f = json::array();
        for (const std::string& n : st.supported_features) {
            f.push_back({{"name", n}});
        }
        s["supportedFeatures"] = f;
    }
    if (st.key.kind == "Gateway" || st.key.kind == "ListenerSet") {
        json addrs = json::array();
        for (const GatewayAddress& a : st.addresses) {
            addrs.push_back({{"type", a.type}, {"value", a.value}});
        }
        if (st.key.kind == "Gateway") {
            s["addresses"] = addrs;
            s["attachedListenerSets"] = st.attached_listener_sets;
        }
        json ls = json::array();
        const json cur_ls = cur.is_object() && cur.contains("listeners") ? cur["listeners"] : json();
        for (const ListenerStatus& l : st.listeners) {
            json kinds = json::array();
            for (const RouteGroupKind& k : l.supported_kinds) {
                kinds.push_back({{"group", k.group}, {"kind", k.kind}});
            }
            const json prev = find_by(cur_ls, "name", l.name);
            ls.push_back({{"name", l.name},
                          {"attachedRoutes", l.attached_routes},
                          {"supportedKinds", kinds},
                          {"conditions", conditions_json(l.conditions,
                                                         prev.is_object() && prev.contains("conditions")
                                                             ? prev["conditions"]
                                                             : json())}});
        }
        s["listeners"] = ls;
    }
    return s;
}

} // namespace

Document json_to_document(const json& obj, const std::string& file) {
    Document d;
    d.file = file;
    json j = obj;
    if (j.is_object()) {
        j.erase("status");
        if (j.contains("metadata") && j["metadata"].is_object()) {
            j["metadata"].erase("managedFields");
        }
    }
    to_node(j, d.root);
    return d;
}

namespace {

/// Loads `obj` alone into `model`, as the full load before a compile would: the error
/// diagnostics (empty when the object is valid). Per-object checks only; references are
/// the compiler's.
std::vector<Diagnostic> validate(const json& obj, const std::string& file,
                                 const std::string& controller_name, Store& model) {
    std::vector<Document> one;
    one.push_back(json_to_document(obj, file));
    Diagnostics diags;
    LoadOptions lo;
    lo.controller_name = controller_name;
    load_documents(one, lo, model, diags);
    std::vector<Diagnostic> errors;
    for (const Diagnostic& d : diags.items()) {
        if (d.severity == Severity::Error) {
            errors.push_back(d);
        }
    }
    return errors;
}

K8sSource::Entry make_entry(json obj, Store model, bool slim) {
    K8sSource::Entry e;
    e.spec = spec_hash(obj);
    if (slim) {
        json md = json::object();
        if (obj.is_object() && obj.contains("metadata") && obj["metadata"].is_object()) {
            for (const char* f : {"name", "namespace", "resourceVersion"}) {
                if (obj["metadata"].contains(f)) {
                    md[f] = std::move(obj["metadata"][f]);
                }
            }
        }
        e.obj = json{{"metadata", std::move(md)}};
    } else {
        e.obj = std::move(obj);
    }
    e.model = std::move(model);
    return e;
}

} // namespace

std::vector<Diagnostic> K8sSource::admit(Resource& r, const std::string& key, const json& obj,
                                         Store& model) {
    std::vector<Diagnostic> errors =
        validate(obj, r.plural + "/" + key, opts_.controller_name, model);
    if (errors.empty() && model.size() == 1) {
        return errors;
    }
    if (errors.empty()) {
        // Not one object of a kind sluice compiles (the loader ignored it): refuse it with
        // a reason rather than keep an entry without a model.
        Diagnostic d;
        d.file = r.plural + "/" + key;
        d.object = r.kind + " " + key;
        d.message = "not loaded as one " + r.kind + " (unexpected kind or apiVersion '" +
                    str_at(obj, "apiVersion") + "/" + str_at(obj, "kind") + "')";
        errors.push_back(std::move(d));
    }
    const std::string rv = str_at(obj, "metadata", "resourceVersion");
    const std::string first =
        errors.front().field + ": " + errors.front().message +
        (errors.size() > 1 ? " (+" + std::to_string(errors.size() - 1) + " more)" : "");
    std::string kept;
    {
        std::lock_guard<std::mutex> g(mu_);
        auto it = r.objects.find(key);
        kept = it == r.objects.end()
                   ? "not used until it is fixed (no earlier valid version)"
                   : "its last valid version (resourceVersion " +
                         str_at(it->second.obj, "metadata", "resourceVersion") + ") stays in force";
        for (Diagnostic& d : errors) {
            d.message += " [resourceVersion " + rv + " refused; " + kept + "]";
        }
        r.rejected[key] = errors;
    }
    log(r.kind + " " + key + " (resourceVersion " + rv + ") fails validation: " + first + "; " +
        kept);
    return errors;
}

// ------------------------------------------------------------------ construction

K8sSource::K8sSource(KubeClient& client, Controller& controller, K8sSourceOptions opts)
    : client_(client)
    , ctl_(controller)
    , opts_(std::move(opts)) {
    if (opts_.identity.empty()) {
        char host[256] = {};
        gethostname(host, sizeof host - 1);
        opts_.identity = std::string(host) + "_" + std::to_string(getpid());
    }
    if (opts_.lease_namespace.empty()) {
        opts_.lease_namespace = client_.config().ns;
    }
    const std::string gw = "gateway.networking.k8s.io";
    struct Def {
        const char* kind;
        std::string group;
        const char* plural;
        std::vector<std::string> versions;
        bool namespaced;
    };
    const std::vector<Def> defs = {
        {"GatewayClass", gw, "gatewayclasses", {"v1", "v1beta1"}, false},
        {"Gateway", gw, "gateways", {"v1", "v1beta1"}, true},
        {"ListenerSet", gw, "listenersets", {"v1"}, true},
        {"HTTPRoute", gw, "httproutes", {"v1", "v1beta1"}, true},
        {"GRPCRoute", gw, "grpcroutes", {"v1"}, true},
        {"TLSRoute", gw, "tlsroutes", {"v1", "v1alpha3", "v1alpha2"}, true},
        {"TCPRoute", gw, "tcproutes", {"v1alpha2"}, true},
        {"UDPRoute", gw, "udproutes", {"v1alpha2"}, true},
        {"ReferenceGrant", gw, "referencegrants", {"v1", "v1beta1"}, true},
        {"BackendTLSPolicy", gw, "backendtlspolicies", {"v1", "v1alpha3"}, true},
        {"Namespace", "", "namespaces", {"v1"}, false},
        {"Service", "", "services", {"v1"}, true},
        {"EndpointSlice", "discovery.k8s.io", "endpointslices", {"v1"}, true},
        // Listed and watched cluster-wide, but only the referenced ones are kept
        // (referenced_only; docs/adr/0007-referenced-secrets-only.md).
        {"Secret", "", "secrets", {"v1"}, true},
        {"ConfigMap", "", "configmaps", {"v1"}, true},
    };
    for (const Def& d : defs) {
        auto r = std::make_unique<Resource>();
        r->kind = d.kind;
        r->group = d.group;
        r->plural = d.plural;
        r->versions = d.versions;
        r->namespaced = d.namespaced;
        r->referenced_only = r->kind == "Secret" || r->kind == "ConfigMap";
        // Kinds without a status of ours and read by nothing but the compiler: their JSON
        // is not kept (the model holds what the compiler needs).
        r->slim = r->referenced_only || r->kind == "Namespace" || r->kind == "Service" ||
                  r->kind == "EndpointSlice" || r->kind == "ReferenceGrant";
        resources_.push_back(std::move(r));
    }
}

K8sSource::~K8sSource() = default;

K8sSource::Resource* K8sSource::resource(const std::string& kind) const {
    for (const auto& r : resources_) {
        if (r->kind == kind) {
            return r.get();
        }
    }
    return nullptr;
}

// ------------------------------------------------------------------ referenced Secrets/ConfigMaps

void K8sSource::collect_refs_locked() {
    std::map<std::string, std::set<std::string>> refs;
    std::set<std::string> classes, gateways;
    for (const auto& [k, e] : resource("GatewayClass")->objects) {
        const json& obj = e.obj;
        if (str_at(obj, "spec", "controllerName") == opts_.controller_name) {
            classes.insert(str_at(obj, "metadata", "name"));
            if (obj.contains("spec")) {
                collect_refs(obj["spec"], "", refs);
            }
        }
    }
    for (const auto& [k, e] : resource("Gateway")->objects) {
        const json& obj = e.obj;
        if (classes.count(str_at(obj, "spec", "gatewayClassName")) && obj.contains("spec")) {
            gateways.insert(k);
            collect_refs(obj["spec"], str_at(obj, "metadata", "namespace"), refs);
        }
    }
    // ListenerSets and BackendTLSPolicies: all of them (a few; their attachment is the
    // compiler's business).
    for (const char* kind : {"ListenerSet", "BackendTLSPolicy"}) {
        for (const auto& [k, e] : resource(kind)->objects) {
            if (e.obj.contains("spec")) {
                collect_refs(e.obj["spec"], str_at(e.obj, "metadata", "namespace"), refs);
            }
        }
    }
    refs_ = std::move(refs);
}

void K8sSource::store_changed_locked(Resource& r, const std::string& key, bool structural) {
    // Only our GatewayClasses are assembled, and a change can make one ours or not.
    if (structural || r.kind == "GatewayClass") {
        store_rebuild_ = true;
        store_changed_.clear();
    } else if (!store_rebuild_) {
        store_changed_.emplace_back(&r, key);
    }
    if (r.kind == "GatewayClass" || r.kind == "Gateway" || r.kind == "ListenerSet" ||
        r.kind == "BackendTLSPolicy") {
        refs_dirty_ = true; // (collect_refs_locked reads these kinds)
    }
}

bool K8sSource::referenced_locked(const Resource& r, const std::string& key) const {
    auto it = refs_.find(r.kind);
    return it != refs_.end() && it->second.count(key);
}

void K8sSource::sync_referenced() {
    struct Fetch {
        Resource* r;
        std::string key;
    };
    std::vector<Fetch> fetch;
    {
        std::lock_guard<std::mutex> g(mu_);
        if (!refs_dirty_) {
            return; // no referencing object changed, no read to retry: refs_ holds
        }
        refs_dirty_ = false;
        collect_refs_locked();
        for (const auto& r : resources_) {
            if (!r->referenced_only || r->version.empty()) {
                continue;
            }
            // No longer referenced: drop the data, keep the key.
            for (auto it = r->objects.begin(); it != r->objects.end();) {
                if (referenced_locked(*r, it->first)) {
                    ++it;
                    continue;
                }
                log(r->kind + " " + it->first + " is no longer referenced: its data is dropped (" +
                    std::to_string(r->objects.size() - 1) + " referenced of " +
                    std::to_string(r->objects.size() + r->unreferenced.size()) + " kept)");
                r->unreferenced.insert(it->first);
                r->rejected.erase(it->first);
                const std::string key = it->first;
                it = r->objects.erase(it);
                store_changed_locked(*r, key, true);
            }
            // Newly referenced and known to exist: read it (the watch dropped its data).
            auto refs = refs_.find(r->kind);
            if (refs != refs_.end()) {
                for (const std::string& key : refs->second) {
                    if (r->unreferenced.count(key)) {
                        fetch.push_back({r.get(), key});
                    }
                }
            }
        }
    }
    bool retry = false; ///< a read failed: sync again at the next reconcile
    for (const Fetch& f : fetch) {
        const size_t slash = f.key.find('/');
        const std::string path =
            f.r->base(f.key.substr(0, slash)) + "/" + url_escape(f.key.substr(slash + 1));
        auto resp = client_.request("GET", path);
        if (!resp || (resp->status != 200 && resp->status != 404)) {
            log(f.r->kind + " " + f.key + " is now referenced but could not be read (" +
                (resp ? "HTTP " + std::to_string(resp->status) + ": " + excerpt(resp->body)
                      : resp.error().message) +
                "); retried on the next change");
            retry = true;
            continue;
        }
        std::optional<json> obj;
        Store model;
        if (resp->status == 200) {
            if (std::string why = not_json(*resp); !why.empty()) {
                log(f.r->kind + " " + f.key + ": " + why);
                retry = true;
                continue;
            }
            obj = parse_json(resp->body);
            if (!obj || !obj->is_object()) {
                log(f.r->kind + " " + f.key + ": invalid JSON (" + excerpt(resp->body, 80) + ")");
                retry = true;
                continue;
            }
            if (!obj->contains("kind")) {
                (*obj)["kind"] = f.r->kind;
            }
            if (!obj->contains("apiVersion")) {
                (*obj)["apiVersion"] = f.r->api_version();
            }
            if (!admit(*f.r, f.key, *obj, model).empty()) {
                obj.reset(); // refused: as if absent (the rejection is reported)
            }
        }
        std::lock_guard<std::mutex> g(mu_);
        if (!f.r->unreferenced.erase(f.key)) {
            continue; // the watch delivered it (kept: referenced now) or deleted it meanwhile
        }
        if (obj) {
            f.r->objects[f.key] = make_entry(std::move(*obj), std::move(model), f.r->slim);
            store_changed_locked(*f.r, f.key, true);
            log(f.r->kind + " " + f.key + " is now referenced: read it (" +
                std::to_string(f.r->objects.size()) + " referenced of " +
                std::to_string(f.r->objects.size() + f.r->unreferenced.size()) + " kept)");
        }
        // 404 or refused: nothing kept; the watch brings its next version.
    }
    if (retry) {
        std::lock_guard<std::mutex> g(mu_);
        refs_dirty_ = true;
    }
}

void K8sSource::mark(bool compile) {
    {
        std::lock_guard<std::mutex> g(mu_);
        dirty_locked(compile, !compile);
    }
    cv_.notify_all();
}

bool K8sSource::sleep_for(int ms, const std::atomic<bool>& stop) {
    const auto until = Clock::now() + std::chrono::milliseconds(ms);
    while (Clock::now() < until) {
        if (stop.load(std::memory_order_relaxed)) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(
            std::min<int64_t>(50, std::chrono::duration_cast<std::chrono::milliseconds>(
                                      until - Clock::now()).count() + 1)));
    }
    return !stop.load(std::memory_order_relaxed);
}

// ------------------------------------------------------------------ list + watch

void K8sSource::watch_loop(Resource& r, const std::atomic<bool>& stop) {
    std::mt19937 rng(std::random_device{}());
    int backoff = opts_.backoff_min_ms;
    auto wait_backoff = [&]() {
        // Exponential backoff with full jitter in [backoff/2, backoff].
        std::uniform_int_distribution<int> d(backoff / 2, backoff);
        const bool go_on = sleep_for(d(rng), stop);
        backoff = std::min(backoff * 2, opts_.backoff_max_ms);
        return go_on;
    };
    while (!stop.load(std::memory_order_relaxed)) {
        std::string version, rv;
        {
            std::lock_guard<std::mutex> g(mu_);
            version = r.version;
            rv = r.rv;
        }
        if (version.empty()) {
            // Discovery: the first served version; 404 on all of them = the CRD is missing.
            bool transport_error = false;
            for (const std::string& v : r.versions) {
                {
                    std::lock_guard<std::mutex> g(mu_);
                    r.version = v;
                }
                auto resp = client_.request("GET", r.base() + "?limit=1");
                if (!resp) {
                    log(r.kind + ": " + resp.error().message);
                    transport_error = true;
                    break;
                }
                if (resp->status == 200) {
                    version = v;
                    break;
                }
                if (resp->status != 404) {
                    log(r.kind + ": discovery of " + r.group + "/" + v + " answered HTTP " +
                        std::to_string(resp->status));
                    transport_error = true;
                    break;
                }
            }
            if (version.empty()) {
                {
                    std::lock_guard<std::mutex> g(mu_);
                    r.version.clear();
                    if (!transport_error) {
                        if (!r.missing) {
                            log(r.kind + ": not served by this cluster (CRD not installed?); "
                                         "ignored, re-checked every " +
                                std::to_string(opts_.missing_retry_s) + " s");
                        }
                        r.missing = true;
                        r.synced = true;
                    }
                }
                cv_.notify_all();
                if (transport_error ? !wait_backoff()
                                    : !sleep_for(opts_.missing_retry_s * 1000, stop)) {
                    return;
                }
                continue;
            }
            bool was_missing = false;
            {
                std::lock_guard<std::mutex> g(mu_);
                was_missing = r.missing;
                r.missing = false;
            }
            if (was_missing) {
                log(r.kind + ": now served (" + r.api_version() + ")");
            }
        }
        if (rv.empty()) {
            std::set<std::string> refs; ///< referenced_only: the keys to keep
            if (r.referenced_only) {
                // List after the kinds that reference Secrets/ConfigMaps, so that the first
                // list keeps the right ones (no GET per referenced object afterwards).
                std::unique_lock<std::mutex> lk(mu_);
                while (!stop.load(std::memory_order_relaxed)) {
                    bool ready = true;
                    for (const char* k :
                         {"GatewayClass", "Gateway", "ListenerSet", "BackendTLSPolicy"}) {
                        ready &= resource(k)->synced;
                    }
                    if (ready) {
                        break;
                    }
                    cv_.wait_for(lk, std::chrono::milliseconds(100));
                }
                collect_refs_locked();
                refs = refs_[r.kind];
            }
            // Chunked list (limit/continue) into a fresh map, swapped in whole: a relist
            // after 410 replaces the objects in one step, so status does not flap.
            std::map<std::string, Entry> fresh;
            std::set<std::string> fresh_rejected; ///< invalid in this list
            std::set<std::string> fresh_unref;    ///< referenced_only: seen, data dropped
            std::string cont, list_rv;
            bool ok = true, restart = false;
            do {
                std::string path = r.base() + "?limit=" + std::to_string(opts_.list_limit);
                if (!cont.empty()) {
                    path += "&continue=" + url_escape(cont);
                }
                auto resp = client_.request("GET", path, "", "", std::chrono::seconds(60));
                if (!resp) {
                    log(r.kind + ": list: " + resp.error().message);
                    ok = false;
                    break;
                }
                if (resp->status == 410) {
                    log(r.kind + ": list continue token expired; listing again");
                    restart = true;
                    break;
                }
                if (resp->status == 404) {
                    std::lock_guard<std::mutex> g(mu_);
                    r.version.clear(); // CRD removed: rediscover
                    ok = false;
                    break;
                }
                if (resp->status != 200) {
                    log(r.kind + ": list: HTTP " + std::to_string(resp->status) + " (" +
                        resp->content_type + "): " + excerpt(resp->body) + "; retrying");
                    ok = false;
                    break;
                }
                if (std::string why = not_json(*resp); !why.empty()) {
                    log(r.kind + ": list: " + why + "; retrying, the last good objects stay");
                    ok = false;
                    break;
                }
                auto j = parse_json(resp->body);
                if (!j || !j->is_object() || !(*j)["items"].is_array()) {
                    log(r.kind + ": list: " +
                        (j ? std::string("the answer is not a list (no items array)")
                           : "invalid JSON (" + std::to_string(resp->body.size()) +
                                 " bytes, starting '" + excerpt(resp->body, 80) + "')") +
                        "; retrying, the last good objects stay");
                    ok = false;
                    break;
                }
                for (json& item : (*j)["items"]) {
                    if (!item.is_object()) {
                        log(r.kind + ": list: an item is not an object, ignored: " +
                            excerpt(item.dump(), 80));
                        continue;
                    }
                    if (!item.contains("kind")) {
                        item["kind"] = r.kind; // list items carry no kind/apiVersion
                    }
                    if (!item.contains("apiVersion")) {
                        item["apiVersion"] = r.api_version();
                    }
                    std::string key = obj_key(item); // before the move below
                    if (r.referenced_only && !refs.count(key)) {
                        fresh_unref.insert(std::move(key)); // its data goes with this page
                        continue;
                    }
                    Store model;
                    if (!admit(r, key, item, model).empty()) {
                        fresh_rejected.insert(key); // the version in force (if any) stays
                        continue;
                    }
                    fresh[std::move(key)] = make_entry(std::move(item), std::move(model), r.slim);
                }
                cont = str_at(*j, "metadata", "continue");
                list_rv = str_at(*j, "metadata", "resourceVersion");
            } while (!cont.empty() && !stop.load(std::memory_order_relaxed));
            if (restart) {
                continue;
            }
            if (!ok) {
                if (!wait_backoff()) {
                    return;
                }
                continue;
            }
            bool changed = false;
            const size_t count = fresh.size(), unref = fresh_unref.size();
            {
                std::lock_guard<std::mutex> g(mu_);
                for (const std::string& k : fresh_rejected) {
                    // Moved, never copied: reconcile() may hold its model (it finds the entry
                    // again by key and spec).
                    if (auto it = r.objects.find(k); it != r.objects.end()) {
                        fresh[k] = std::move(it->second);
                    }
                }
                changed = fresh.size() != r.objects.size();
                for (auto& [k, v] : fresh) {
                    auto it = r.objects.find(k);
                    if (it == r.objects.end() || it->second.spec != v.spec) {
                        changed = true;
                    } else if (!fresh_rejected.count(k)) { // (those were moved in whole)
                        // Unchanged: keep the model in force (possibly in store_ already).
                        v.model = std::move(it->second.model);
                    }
                }
                r.objects = std::move(fresh);
                r.unreferenced = std::move(fresh_unref);
                store_changed_locked(r, "", true);
                refs_dirty_ = true; // (the references may have moved while this listed)
                status_all_touched_ |= !r.slim;
                std::set<std::string> before;
                for (const auto& [k, v] : r.rejected) {
                    before.insert(k);
                }
                changed |= before != fresh_rejected; // the diagnostics change
                for (auto it = r.rejected.begin(); it != r.rejected.end();) {
                    // Rejections of objects this list found valid (or gone) are over.
                    it = fresh_rejected.count(it->first) ? std::next(it) : r.rejected.erase(it);
                }
                r.rv = list_rv;
                rv = list_rv;
                r.synced = true;
                dirty_locked(changed, true);
            }
            cv_.notify_all();
            // The pages (and the unreferenced Secrets in them) are gone: give the freed heap
            // back to the system, or a big list leaves the RSS at its peak for good.
            malloc_trim(0);
            log(r.kind + ": listed " + std::to_string(count + unref) + " object(s) at " +
                "resourceVersion " + list_rv +
                (r.referenced_only ? "; " + std::to_string(count) + " referenced of " +
                                         std::to_string(count + unref) +
                                         " kept (the data of the others is dropped)"
                                   : ""));
        }
        // Watch from rv.
        bool gone = false;
        bool bad_event = false;
        bool healthy =
            false; ///< this watch delivered a good event: its failure starts a new backoff
        auto r_rv = [&]() {
            std::lock_guard<std::mutex> g(mu_);
            return r.rv;
        };
        auto on_line = [&](std::string_view line) -> bool {
            auto ev = parse_json(line);
            if (!ev || !ev->is_object()) {
                log(r.kind + ": watch: invalid JSON event (" + std::to_string(line.size()) +
                    " bytes, starting '" + excerpt(line, 80) +
                    "'); resuming the watch from resourceVersion " + r_rv() + " after a backoff");
                bad_event = true;
                return false;
            }
            const std::string type = str_at(*ev, "type");
            json& obj = (*ev)["object"];
            healthy |=
                type == "BOOKMARK" || type == "ADDED" || type == "MODIFIED" || type == "DELETED";
            if (type == "ERROR") {
                const int code = obj.is_object() && obj["code"].is_number() ? obj["code"].get<int>()
                                                                            : 0;
                if (code == 410) {
                    gone = true;
                } else {
                    log(r.kind + ": watch error event: " + excerpt(obj.dump(), 300) +
                        "; resuming the watch after a backoff");
                    bad_event = true;
                }
                return false;
            }
            if (!obj.is_object()) {
                log(r.kind + ": watch: a " + type + " event without an object: " +
                    excerpt(line, 80) + "; resuming the watch after a backoff");
                bad_event = true;
                return false;
            }
            const std::string new_rv = str_at(obj, "metadata", "resourceVersion");
            if (!obj.contains("kind")) {
                obj["kind"] = r.kind;
            }
            if (!obj.contains("apiVersion")) {
                obj["apiVersion"] = r.api_version();
            }
            const std::string k = obj_key(obj);
            const bool upsert = type == "ADDED" || type == "MODIFIED";
            bool same_spec = false; // a status-only change (often our own write): no validation
            uint64_t spec = 0;
            if (upsert) {
                std::lock_guard<std::mutex> g(mu_);
                if (r.referenced_only && !referenced_locked(r, k)) {
                    // Not referenced: keep the key only (drop the data, skip validation).
                    if (!new_rv.empty()) {
                        r.rv = new_rv;
                    }
                    bool dropped = r.objects.erase(k) > 0;
                    dropped |= r.rejected.erase(k) > 0;
                    r.unreferenced.insert(k);
                    if (dropped) {
                        store_changed_locked(r, k, true);
                        dirty_locked(true, false);
                        cv_.notify_all();
                    }
                    return true;
                }
                r.unreferenced.erase(k);
                auto it = r.objects.find(k);
                if (it != r.objects.end() && !new_rv.empty() &&
                    str_at(it->second.obj, "metadata", "resourceVersion") == new_rv) {
                    // The echo of our own status write (patch_status kept the answer).
                    r.rv = new_rv;
                    return true;
                }
                spec = spec_hash(obj);
                same_spec =
                    it != r.objects.end() && !r.rejected.count(k) && it->second.spec == spec;
            }
            // Validated outside the lock: an invalid version is refused, the one in force stays.
            // (Only this thread writes r.objects[k] with a new spec; see patch_status.)
            Store model;
            const bool refused = upsert && !same_spec && !admit(r, k, obj, model).empty();
            bool compile = false, status = false;
            {
                std::lock_guard<std::mutex> g(mu_);
                if (!new_rv.empty()) {
                    r.rv = new_rv;
                }
                if (type == "BOOKMARK") {
                    return true;
                }
                if (refused) {
                    compile = true; // the diagnostics changed (the IR does not)
                } else if (upsert) {
                    compile |= r.rejected.erase(k) > 0;
                    auto it = r.objects.find(k);
                    if (same_spec && it != r.objects.end() && it->second.spec == spec) {
                        // Status-only (often another controller's write): the model stays.
                        status = true;
                        if (!r.slim) {
                            it->second.obj = std::move(obj);
                        } else if (it->second.obj.contains("metadata")) {
                            it->second.obj["metadata"]["resourceVersion"] = new_rv;
                        }
                    } else if (same_spec) {
                        return true; // replaced meanwhile (relist): the watch resumes after it
                    } else {
                        compile = true;
                        store_changed_locked(r, k, it == r.objects.end());
                        r.objects[k] = make_entry(std::move(obj), std::move(model), r.slim);
                    }
                } else if (type == "DELETED") {
                    compile = r.objects.erase(k) > 0;
                    if (compile) {
                        store_changed_locked(r, k, true);
                    }
                    compile |= r.rejected.erase(k) > 0;
                    r.unreferenced.erase(k);
                } else {
                    log(r.kind + ": watch: unknown event type '" + type + "'");
                    return true;
                }
                if (!r.slim) {
                    status_pending_[{r.kind, k}] = true; // write_statuses looks again
                }
                dirty_locked(compile, status);
            }
            if (compile || status) {
                cv_.notify_all();
            }
            return true;
        };
        const std::string path = r.base() + "?watch=1&allowWatchBookmarks=true&resourceVersion=" +
                                 url_escape(rv) +
                                 "&timeoutSeconds=" + std::to_string(opts_.watch_timeout_s);
        auto resp = client_.watch(path, on_line, stop,
                                  std::chrono::seconds(opts_.watch_timeout_s + 30),
                                  std::chrono::seconds(opts_.idle_timeout_s));
        if (stop.load(std::memory_order_relaxed)) {
            return;
        }
        if (healthy) {
            backoff = opts_.backoff_min_ms; // it worked for a while: start the backoff again
        }
        if (gone || (resp && resp->status == 410)) {
            log(r.kind + ": watch expired (410 Gone); relisting");
            std::lock_guard<std::mutex> g(mu_);
            r.rv.clear();
            backoff = opts_.backoff_min_ms;
            continue;
        }
        if (!resp) {
            log(r.kind + ": " + resp.error().message + "; resuming the watch");
            if (!wait_backoff()) {
                return;
            }
            continue;
        }
        if (resp->status == 200 && !not_json(*resp).empty()) {
            log(r.kind + ": watch: " + not_json(*resp) + "; retrying after a backoff");
            if (!wait_backoff()) {
                return;
            }
            continue;
        }
        if (resp->status != 200) {
            log(r.kind + ": watch: HTTP " + std::to_string(resp->status) + " (" +
                resp->content_type + "): " + excerpt(resp->body) + "; retrying after a backoff");
            if (resp->status == 404) {
                std::lock_guard<std::mutex> g(mu_);
                r.version.clear();
            }
            if (!wait_backoff()) {
                return;
            }
            continue;
        }
        if (bad_event) {
            if (!wait_backoff()) {
                return;
            }
            continue;
        }
        backoff = opts_.backoff_min_ms; // a clean end of the watch (timeoutSeconds)
    }
}

// ------------------------------------------------------------------ leader election

void K8sSource::lease_loop(const std::atomic<bool>& stop) {
    const std::string path = "/apis/coordination.k8s.io/v1/namespaces/" + opts_.lease_namespace +
                             "/leases";
    const int dur_ms = opts_.lease_duration_s * 1000;
    const int retry_ms = std::max(100, dur_ms / 5);
    const int renew_deadline_ms = dur_ms * 2 / 3;
    std::string observed; ///< the lease record (holder + renewTime) last seen
    auto observed_at = Clock::now();
    auto last_renew = Clock::time_point{};
    auto set_leader = [&](bool on) {
        if (leader_.exchange(on, std::memory_order_acq_rel) != on) {
            log(std::string(on ? "became the leader" : "lost the leadership") + " (lease " +
                opts_.lease_namespace + "/" + opts_.lease_name + ", identity " + opts_.identity +
                ")");
            if (on) {
                // What another leader wrote meanwhile: compare every status with the object.
                std::lock_guard<std::mutex> g(mu_);
                status_all_touched_ = true;
            }
            mark(false);
        }
    };
    while (!stop.load(std::memory_order_relaxed)) {
        auto resp = client_.request("GET", path + "/" + opts_.lease_name, "", "",
                                    std::chrono::milliseconds(std::max(2000, retry_ms * 2)));
        const std::string now = now_rfc3339(true);
        json spec_new = {{"holderIdentity", opts_.identity},
                         {"leaseDurationSeconds", opts_.lease_duration_s},
                         {"renewTime", now}};
        if (resp && resp->status == 404) {
            spec_new["acquireTime"] = now;
            spec_new["leaseTransitions"] = 0;
            json lease = {{"apiVersion", "coordination.k8s.io/v1"},
                          {"kind", "Lease"},
                          {"metadata",
                           {{"name", opts_.lease_name}, {"namespace", opts_.lease_namespace}}},
                          {"spec", spec_new}};
            auto c = client_.request("POST", path, lease.dump(), "application/json");
            if (c && (c->status == 201 || c->status == 200)) {
                last_renew = Clock::now();
                set_leader(true);
            }
        } else if (resp && resp->status == 200) {
            auto lease = parse_json(resp->body);
            if (lease && lease->is_object()) {
                json spec = (*lease)["spec"].is_object() ? (*lease)["spec"] : json::object();
                const std::string holder = str_at(spec, "holderIdentity");
                const std::string record = holder + "|" + str_at(spec, "renewTime");
                if (record != observed) {
                    observed = record;
                    observed_at = Clock::now();
                }
                const int held_ms = spec["leaseDurationSeconds"].is_number()
                                        ? spec["leaseDurationSeconds"].get<int>() * 1000
                                        : dur_ms;
                const bool mine = holder == opts_.identity;
                const bool expired = holder.empty() ||
                                     Clock::now() - observed_at > std::chrono::milliseconds(held_ms);
                if (mine || expired) {
                    json next = *lease;
                    if (!mine) {
                        spec_new["acquireTime"] = now;
                        const int tr = spec["leaseTransitions"].is_number()
                                           ? spec["leaseTransitions"].get<int>()
                                           : 0;
                        spec_new["leaseTransitions"] = tr + 1;
                    }
                    for (auto it = spec_new.begin(); it != spec_new.end(); ++it) {
                        next["spec"][it.key()] = it.value();
                    }
                    // PUT carries metadata.resourceVersion: a concurrent writer gets 409.
                    auto u = client_.request("PUT", path + "/" + opts_.lease_name, next.dump(),
                                             "application/json");
                    if (u && u->status == 200) {
                        last_renew = Clock::now();
                        if (auto l = parse_json(u->body)) {
                            lease_rv_ = str_at(*l, "metadata", "resourceVersion");
                        }
                        set_leader(true);
                    } else if (u && u->status == 409) {
                        if (!mine) {
                            log("lease taken by another replica first");
                        }
                    }
                } else {
                    set_leader(false);
                }
            }
        } else if (!resp) {
            log("lease: " + resp.error().message);
        } else {
            log("lease: HTTP " + std::to_string(resp->status) + ": " + excerpt(resp->body));
        }
        if (leader_.load(std::memory_order_relaxed) &&
            Clock::now() - last_renew > std::chrono::milliseconds(renew_deadline_ms)) {
            set_leader(false); // could not renew in time: another replica may take over
        }
        sleep_for(retry_ms, stop);
    }
}

void K8sSource::release_lease() {
    if (!leader_.load(std::memory_order_acquire)) {
        return;
    }
    const std::string p = "/apis/coordination.k8s.io/v1/namespaces/" + opts_.lease_namespace +
                          "/leases/" + opts_.lease_name;
    auto resp = client_.request("GET", p, "", "", std::chrono::seconds(2));
    if (!resp || resp->status != 200) {
        return;
    }
    auto lease = parse_json(resp->body);
    if (!lease || str_at((*lease)["spec"], "holderIdentity") != opts_.identity) {
        return;
    }
    (*lease)["spec"]["holderIdentity"] = "";
    (*lease)["spec"]["leaseDurationSeconds"] = 1;
    (void)client_.request("PUT", p, lease->dump(), "application/json", std::chrono::seconds(2));
    leader_.store(false, std::memory_order_release);
    log("released the lease");
}

// ------------------------------------------------------------------ reconcile + status

void K8sSource::reassemble_locked(StoreDelta& delta) {
    struct Item {
        Resource* r;
        const std::string* key;
        Entry* e;
    };
    std::vector<Item> now;
    now.reserve(assembled_.size() + 16);
    for (const auto& r : resources_) {
        for (auto& [k, e] : r->objects) {
            // Only GatewayClasses whose controllerName is ours are handled.
            if (r->kind == "GatewayClass" &&
                str_at(e.obj, "spec", "controllerName") != opts_.controller_name) {
                continue;
            }
            now.push_back({r.get(), &k, &e});
        }
    }
    bool same = now.size() == assembled_.size();
    for (size_t i = 0; same && i < now.size(); ++i) {
        same = now[i].r == assembled_[i].r && *now[i].key == assembled_[i].key &&
               (now[i].e->model.size() == 0 || slot_of(now[i].e->model) == assembled_[i].slot);
    }
    if (same) {
        size_t cursor[kStoreVectors] = {};
        for (size_t i = 0; i < now.size(); ++i) {
            const int slot = assembled_[i].slot;
            const size_t pos = cursor[slot]++;
            Store& one = now[i].e->model;
            if (one.size() == 0) {
                continue; // unchanged: its model is in store_
            }
            move_model(one, slot, pos, delta);
        }
        return;
    }
    // Re-assemble: each model comes from its entry (new) or from store_ (unchanged).
    std::unordered_map<std::string, std::pair<int, size_t>> old_pos = std::move(assembled_at_);
    Store fresh;
    each_vector(fresh, store_, [](auto& all, auto& v, int) { all.reserve(v.size() + 64); });
    std::vector<Assembled> order;
    order.reserve(now.size());
    std::unordered_map<std::string, std::pair<int, size_t>> at;
    at.reserve(now.size());
    size_t cursor[kStoreVectors] = {};
    uint64_t seq = 0;
    for (const Item& it : now) {
        Store& one = it.e->model;
        int slot = -1;
        std::string id = it.r->kind + "/" + *it.key;
        if (one.size() == 1) {
            slot = slot_of(one);
            each_vector(fresh, one, [&](auto& all, auto& v, int n) {
                if (n == slot) {
                    all.push_back(std::move(v.front()));
                    all.back().meta.sequence = seq; // the order files would have
                    v.clear();
                }
            });
        } else if (auto o = old_pos.find(id); o != old_pos.end()) {
            slot = o->second.first;
            const size_t pos = o->second.second;
            each_vector(fresh, store_, [&](auto& all, auto& v, int n) {
                if (n == slot) {
                    all.push_back(std::move(v[pos]));
                    all.back().meta.sequence = seq;
                }
            });
        } else {
            log("internal: no model for " + it.r->kind + " " + *it.key + "; skipped");
            continue;
        }
        ++seq;
        order.push_back({it.r, *it.key, slot});
        at.emplace(std::move(id), std::make_pair(slot, cursor[slot]++));
    }
    store_ = std::move(fresh);
    assembled_ = std::move(order);
    assembled_at_ = std::move(at);
    delta.other = true;
}

void K8sSource::move_model(Store& one, int slot, size_t pos, StoreDelta& delta) {
    if (slot == kRoutesSlot) {
        delta.routes.push_back(pos);
    } else if (slot == kSlicesSlot) {
        delta.slices.push_back(pos);
    } else {
        delta.other = true;
    }
    each_vector(store_, one, [&](auto& all, auto& v, int n) {
        if (n == slot) {
            const uint64_t seq = all[pos].meta.sequence;
            all[pos] = std::move(v.front());
            all[pos].meta.sequence = seq;
            v.clear();
        }
    });
}

void K8sSource::reconcile() {
    sync_referenced();
    Diagnostics diags; // refused objects: in the log and diagnostics.txt while they last
    StoreDelta delta;  // what changed in store_ since the last compile (patches, ADR 0011)
    {
        // The objects' models (loaded alone when they arrived) make up store_, which stays
        // assembled between compiles: a changed object's new model replaces the old one in
        // place; only a change of the set of objects re-assembles it (by moves). So an
        // event costs one object's conversion and load, not all of them; and the objects
        // replaced are the ones the watch noted (store_changed_), found by key, so a change
        // does not walk the other objects either.
        std::lock_guard<std::mutex> g(mu_);
        for (const auto& r : resources_) {
            for (const auto& [k, errors] : r->rejected) {
                for (const Diagnostic& d : errors) {
                    diags.add(d);
                }
            }
        }
        bool rebuild = store_rebuild_;
        const std::vector<std::pair<Resource*, std::string>> changed = std::move(store_changed_);
        store_changed_.clear();
        store_rebuild_ = false;
        for (size_t c = 0; !rebuild && c < changed.size(); ++c) {
            Resource& r = *changed[c].first;
            const std::string& key = changed[c].second;
            auto it = r.objects.find(key);
            auto at = assembled_at_.find(r.kind + "/" + key);
            if (it == r.objects.end() || at == assembled_at_.end()) {
                rebuild = true; // (not expected: an added or deleted object is structural)
                break;
            }
            Store& one = it->second.model;
            if (one.size() == 0) {
                continue; // noted twice: moved in already
            }
            const auto [slot, pos] = at->second;
            if (one.size() != 1 || slot_of(one) != slot) {
                rebuild = true;
                break;
            }
            move_model(one, slot, pos, delta);
        }
        if (rebuild) {
            // (Models moved in above are found in store_ by the walk, as unchanged ones.)
            const bool moved = !delta.routes.empty() || !delta.slices.empty() || delta.other;
            delta = StoreDelta{};
            reassemble_locked(delta);
            // Models moved in above look unchanged to the walk: compile in full then.
            delta.other |= moved;
        }
    }
    const ReconcileResult res = ctl_.reconcile_store(store_, std::move(diags), &delta);
    // What write_statuses must look at: the statuses this compile can have changed.
    std::lock_guard<std::mutex> g(mu_);
    const CompileOutput* out = ctl_.current();
    if (res.statuses_all || !out) {
        status_all_compiled_ = true;
    } else {
        for (size_t i : res.statuses_changed) {
            if (i < out->statuses.size()) {
                const ObjectKey& k = out->statuses[i].key;
                status_pending_.emplace(std::make_pair(k.kind, k.ns + "/" + k.name), false);
            }
        }
    }
}

bool K8sSource::patch_status(Resource& r, const std::string& key, const json& patch,
                             const std::string& rv, const std::string& obj_path) {
    const std::string path = obj_path + "/status";
    json body = {{"metadata", {{"resourceVersion", rv}}}, {"status", patch}};
    auto resp = client_.request("PATCH", path, body.dump(), "application/merge-patch+json");
    if (!resp) {
        log("status " + r.kind + " " + key + ": " + resp.error().message);
        return false;
    }
    if (resp->status == 200) {
        if (auto obj = parse_json(resp->body); obj && obj->is_object()) {
            std::lock_guard<std::mutex> g(mu_);
            auto it = r.objects.find(key);
            // Keep the answer unless the watch already delivered something newer (its spec
            // is the one we read: the patch carried its resourceVersion).
            if (it != r.objects.end() &&
                str_at(it->second.obj, "metadata", "resourceVersion") == rv) {
                if (!obj->contains("kind")) {
                    (*obj)["kind"] = r.kind;
                }
                if (!obj->contains("apiVersion")) {
                    (*obj)["apiVersion"] = r.api_version();
                }
                it->second.obj = std::move(*obj);
            }
        }
        return true;
    }
    if (resp->status == 409) {
        // Somebody wrote the object since we read it: read it again, retry on the next pass.
        log("status " + r.kind + " " + key + ": conflict (409); re-reading and retrying");
        auto cur = client_.request("GET", obj_path);
        if (cur && cur->status == 200 && not_json(*cur).empty()) {
            if (auto obj = parse_json(cur->body); obj && obj->is_object()) {
                std::lock_guard<std::mutex> g(mu_);
                if (!obj->contains("kind")) {
                    (*obj)["kind"] = r.kind;
                }
                if (!obj->contains("apiVersion")) {
                    (*obj)["apiVersion"] = r.api_version();
                }
                auto it = r.objects.find(key);
                // Only the newer resourceVersion of the same spec is taken here: a spec change
                // goes through the watch (validation, recompile).
                if (it != r.objects.end() && it->second.spec == spec_hash(*obj)) {
                    it->second.obj = std::move(*obj);
                }
            }
        }
        mark(false);
        return false;
    }
    if (resp->status != 404) {
        log("status " + r.kind + " " + key + ": HTTP " + std::to_string(resp->status) + ": " +
            excerpt(resp->body));
    }
    return false;
}

void K8sSource::write_statuses() {
    const CompileOutput* out = ctl_.current();
    if (!out) {
        return;
    }
    struct Todo {
        Resource* r;
        std::string key, rv;
        json patch;
        std::string path;
    };
    std::vector<Todo> todo;
    {
        std::lock_guard<std::mutex> g(mu_);
        std::map<std::string, Resource*> by_kind;
        for (auto& r : resources_) {
            by_kind[r->kind] = r.get();
        }
        // Our GatewayClasses and the Gateways that use them: only their statuses are ours.
        std::set<std::string> our_classes;
        for (const auto& [k, e] : by_kind["GatewayClass"]->objects) {
            if (str_at(e.obj, "spec", "controllerName") == opts_.controller_name) {
                our_classes.insert(str_at(e.obj, "metadata", "name"));
            }
        }
        std::set<std::string> our_gateways; // "ns/name"
        for (const auto& [k, e] : by_kind["Gateway"]->objects) {
            if (our_classes.count(str_at(e.obj, "spec", "gatewayClassName"))) {
                our_gateways.insert(k);
            }
        }
        // What decides which parent entries are ours: part of every fingerprint.
        uint64_t context = 0xcbf29ce484222325ULL;
        for (const std::string& c : our_classes) {
            fnv_str(context, c);
        }
        for (const std::string& g : our_gateways) {
            fnv_str(context, g);
        }
        if (status_fp_.size() > 2 * out->statuses.size() + 1024) {
            status_fp_.clear(); // forget deleted objects now and then
        }
        // Every status when a full compile or a relist may have changed any of them (or
        // which entries are ours changed); else only those a patch replaced and those of
        // the objects the watch changed: a change costs its own objects, not all of them.
        const bool all_touched = status_all_touched_;
        const bool all = all_touched || status_all_compiled_ || context != status_context_;
        status_all_touched_ = status_all_compiled_ = false;
        status_context_ = context;
        const std::map<std::pair<std::string, std::string>, bool> pending =
            std::move(status_pending_);
        status_pending_.clear();

        // One computed status against its object: a merge patch when it is not in place.
        auto one = [&](const ObjectStatus& st, bool touched) {
            // Skip what was found in place last time: the same computed status and set of
            // our classes and gateways, and the object not changed since (by the watch).
            const uint64_t kh = key_hash(st.key.kind, st.key.ns, st.key.name);
            const uint64_t fp = status_fingerprint(st) ^ context;
            if (auto f = status_fp_.find(kh);
                f != status_fp_.end() && f->second == fp && !all_touched && !touched) {
                return;
            }
            status_fp_.erase(kh);
            auto rit = by_kind.find(st.key.kind);
            if (rit == by_kind.end()) {
                return;
            }
            Resource& r = *rit->second;
            const std::string key = st.key.ns + "/" + st.key.name;
            auto oit = r.objects.find(key);
            if (oit == r.objects.end()) {
                return;
            }
            const json& obj = oit->second.obj;
            static const json kNoStatus = json::object();
            const json& cur =
                obj.contains("status") && obj["status"].is_object() ? obj["status"] : kNoStatus;
            json patch;
            if (st.key.kind == "GatewayClass") {
                if (!our_classes.count(st.key.name)) {
                    return;
                }
                patch = owned_status(st, cur);
            } else if (st.key.kind == "Gateway") {
                if (!our_gateways.count(key)) {
                    return;
                }
                patch = owned_status(st, cur);
            } else if (st.key.kind == "ListenerSet") {
                patch = owned_status(st, cur);
            } else {
                // Routes (status.parents) and BackendTLSPolicy (status.ancestors): replace only
                // the entries whose controllerName is ours; keep the others as they are.
                const bool policy = st.key.kind == "BackendTLSPolicy";
                const char* list = policy ? "ancestors" : "parents";
                const char* ref_field = policy ? "ancestorRef" : "parentRef";
                const json cur_list = cur.contains(list) && cur[list].is_array() ? cur[list]
                                                                                 : json::array();
                json entries = json::array();
                for (const json& e : cur_list) {
                    if (str_at(e, "controllerName") != opts_.controller_name) {
                        entries.push_back(e);
                    }
                }
                for (const ParentStatus& p : st.parents) {
                    if (p.controller_name != opts_.controller_name) {
                        continue;
                    }
                    // A parent Gateway of another controller is not ours to report on.
                    if (p.ref.kind == "Gateway" && p.ref.group == kGatewayGroup &&
                        !our_gateways.count(p.ref.ns.value_or(st.key.ns) + "/" + p.ref.name)) {
                        continue;
                    }
                    const json ref = ref_json(p.ref);
                    json prev;
                    for (const json& e : cur_list) {
                        if (str_at(e, "controllerName") == opts_.controller_name &&
                            e.contains(ref_field) && e[ref_field] == ref) {
                            prev = e;
                        }
                    }
                    entries.push_back({{ref_field, ref},
                                       {"controllerName", p.controller_name},
                                       {"conditions",
                                        conditions_json(p.conditions,
                                                        prev.is_object() && prev.contains("conditions")
                                                            ? prev["conditions"]
                                                            : json())}});
                }
                patch = {{list, entries}};
            }
            json merged = cur;
            merged.merge_patch(patch);
            if (merged != cur) {
                todo.push_back({&r, key, str_at(obj, "metadata", "resourceVersion"), patch,
                                r.base(st.key.ns) + "/" + st.key.name});
            } else {
                status_fp_[kh] = fp; // in place: nothing to do while this holds
            }
        };
        // A Route or BackendTLSPolicy without a computed status that still carries our
        // entries (no longer a parent of ours): remove ours, keep the others.
        static const std::set<std::string> kParentKinds = {
            "HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute", "BackendTLSPolicy"};
        auto orphan = [&](Resource& r, const std::string& k, const Entry& e) {
            const json& obj = e.obj;
            const char* list = r.kind == "BackendTLSPolicy" ? "ancestors" : "parents";
            if (!obj.contains("status") || !obj["status"].is_object() ||
                !obj["status"].contains(list) || !obj["status"][list].is_array()) {
                return;
            }
            json keep = json::array();
            bool had_ours = false;
            for (const json& p : obj["status"][list]) {
                if (str_at(p, "controllerName") == opts_.controller_name) {
                    had_ours = true;
                } else {
                    keep.push_back(p);
                }
            }
            if (had_ours) {
                todo.push_back({&r, k, str_at(obj, "metadata", "resourceVersion"),
                                json{{list, keep}},
                                r.base(str_at(obj, "metadata", "namespace")) + "/" +
                                    str_at(obj, "metadata", "name")});
            }
        };
        if (all) {
            std::unordered_set<uint64_t> seen; // key hashes of the objects with a status
            seen.reserve(out->statuses.size());
            for (const ObjectStatus& st : out->statuses) {
                const auto p = pending.find({st.key.kind, st.key.ns + "/" + st.key.name});
                one(st, p != pending.end() && p->second);
                seen.insert(key_hash(st.key.kind, st.key.ns, st.key.name));
            }
            for (const std::string& kind : kParentKinds) {
                Resource& r = *by_kind[kind];
                for (const auto& [k, e] : r.objects) {
                    if (!seen.count(key_hash(kind, k))) {
                        orphan(r, k, e);
                    }
                }
            }
        } else {
            // The set of computed statuses is the one of the last full pass (a patch never
            // adds or removes one): an object without a status can only have gained our
            // entries through the watch, which put it here.
            for (const auto& [id, touched] : pending) {
                const auto& [kind, key] = id;
                const size_t slash = key.find('/');
                const ObjectKey ok{kind, key.substr(0, slash), key.substr(slash + 1)};
                if (const ObjectStatus* st = out->find(ok)) {
                    one(*st, touched);
                } else if (kParentKinds.count(kind)) {
                    Resource& r = *by_kind[kind];
                    if (auto e = r.objects.find(key); e != r.objects.end()) {
                        orphan(r, key, e->second);
                    }
                }
            }
        }
    }
    // A few requests in flight at once: after the first sync of a big cluster every route's
    // status is new, and one PATCH at a time spends most of its time waiting for answers.
    std::atomic<size_t> next{0}, written{0};
    std::vector<char> done(todo.size(), 0);
    auto worker = [&] {
        for (size_t i = next++; i < todo.size(); i = next++) {
            const Todo& t = todo[i];
            done[i] = patch_status(*t.r, t.key, t.patch, t.rv, t.path) ? 1 : 0;
            written += done[i];
        }
    };
    std::vector<std::thread> pool;
    const size_t extra = std::min<size_t>(opts_.status_writers, todo.size() / 8);
    for (size_t i = 1; i < extra; ++i) {
        pool.emplace_back(worker);
    }
    worker();
    for (std::thread& t : pool) {
        t.join();
    }
    if (!todo.empty()) {
        log("status: wrote " + std::to_string(written.load()) + " of " +
            std::to_string(todo.size()) + " changed object status(es)");
        // Not written (a conflict, an error): look at these again on the next pass.
        std::lock_guard<std::mutex> g(mu_);
        for (size_t i = 0; i < todo.size(); ++i) {
            if (!done[i]) {
                status_pending_[{todo[i].r->kind, todo[i].key}] = true;
            }
        }
    }
}

int K8sSource::run(const std::atomic<bool>& stop) {
    log("API server " + client_.config().server + "; controllerName " + opts_.controller_name +
        (opts_.leader_election ? "; leader election with lease " + opts_.lease_namespace + "/" +
                                     opts_.lease_name + " as " + opts_.identity
                               : "; no leader election"));
    std::vector<std::thread> threads;
    for (auto& r : resources_) {
        threads.emplace_back([this, &r, &stop] { watch_loop(*r, stop); });
    }
    if (opts_.leader_election) {
        threads.emplace_back([this, &stop] { lease_loop(stop); });
    } else {
        leader_.store(true, std::memory_order_release);
    }
    bool synced = false;
    auto last_dp_try = Clock::now();
    auto last_compile_end = Clock::now();
    while (!stop.load(std::memory_order_relaxed)) {
        bool do_compile = false, do_status = false;
        {
            std::unique_lock<std::mutex> lk(mu_);
            auto all_synced = [&] {
                for (const auto& r : resources_) {
                    if (!r->synced) {
                        return false;
                    }
                }
                return true;
            };
            if (!synced) {
                // Until every kind is listed, only that is waited for: the lists flag
                // changes as they come, and waiting for those would return at once and spin
                // (a CPU taken from the lists being parsed).
                cv_.wait_for(lk, std::chrono::milliseconds(200), [&] {
                    return all_synced() || stop.load(std::memory_order_relaxed);
                });
                if (!all_synced()) {
                    continue; // no partial first configuration
                }
                synced = true;
                log("initial sync complete");
                compile_dirty_ = true;
            } else {
                // The predicate: a change flagged while we were compiling is seen at once.
                cv_.wait_for(lk, std::chrono::milliseconds(200), [&] {
                    return compile_dirty_ || status_dirty_ || stop.load(std::memory_order_relaxed);
                });
            }
            if (!compile_dirty_ && !status_dirty_) {
                lk.unlock();
                if (ctl_.check_links()) {
                    last_dp_try = {}; // a dataplane went away: resend as soon as it is back
                }
                if (ctl_.needs_retry() && Clock::now() - last_dp_try > std::chrono::seconds(2)) {
                    last_dp_try = Clock::now();
                    reconcile();
                }
                continue;
            }
        }
        // Debounce: compile once the events have stopped for quiet_ms, or debounce_ms after
        // the first one (a burst: a relist, a rollout). Not when idle: a spec change that
        // comes debounce_ms or more after the last compile is compiled at once (a lone
        // change does not wait; the events of a burst gather while that compile runs).
        bool idle = false;
        {
            std::lock_guard<std::mutex> g(mu_);
            idle = compile_dirty_ && Clock::now() - last_compile_end >=
                                         std::chrono::milliseconds(opts_.debounce_ms);
        }
        if (!idle) {
            const auto first = Clock::now();
            uint64_t seen = 0;
            {
                std::lock_guard<std::mutex> g(mu_);
                seen = dirty_seq_;
            }
            for (;;) {
                const auto left =
                    std::chrono::milliseconds(opts_.debounce_ms) - (Clock::now() - first);
                const int ms = static_cast<int>(std::min<int64_t>(
                    opts_.quiet_ms,
                    std::chrono::duration_cast<std::chrono::milliseconds>(left).count()));
                if (ms <= 0 || !sleep_for(ms, stop)) {
                    break;
                }
                std::lock_guard<std::mutex> g(mu_);
                if (dirty_seq_ == seen) {
                    break;
                }
                seen = dirty_seq_;
            }
        }
        {
            std::lock_guard<std::mutex> g(mu_);
            do_compile = compile_dirty_;
            do_status = status_dirty_ || compile_dirty_;
            compile_dirty_ = status_dirty_ = false;
        }
        if (do_compile) {
            last_dp_try = Clock::now();
            reconcile();
            last_compile_end = Clock::now();
        }
        if (do_status && leader_.load(std::memory_order_acquire)) {
            write_statuses();
        }
    }
    for (std::thread& t : threads) {
        t.join();
    }
    if (opts_.leader_election) {
        release_lease();
    }
    return 0;
}

} // namespace sluice::cp
