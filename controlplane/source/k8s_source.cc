#include "k8s_source.h"

#include <chrono>
#include <ctime>
#include <iostream>
#include <random>
#include <set>
#include <thread>

#include <unistd.h>

namespace sluice::cp {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct K8sSource::Resource {
    std::string kind, group, plural;
    std::vector<std::string> versions; ///< tried in order; the first one served is used
    bool namespaced = true;
    // Guarded by K8sSource::mu_:
    std::string version; ///< "" = not discovered yet
    std::string rv;      ///< "" = (re)list needed
    bool synced = false; ///< listed once (or known missing)
    bool missing = false;
    std::map<std::string, json> objects; ///< "ns/name" -> object

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

/// The object without status and bookkeeping: equal means a recompile is not needed.
json spec_part(const json& obj) {
    json j = obj;
    if (j.is_object()) {
        j.erase("status");
        if (j.contains("metadata") && j["metadata"].is_object()) {
            for (const char* f : {"resourceVersion", "managedFields"}) {
                j["metadata"].erase(f);
            }
        }
    }
    return j;
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
        // First version: Secrets and ConfigMaps are listed wholesale, not only the
        // referenced ones (RBAC therefore needs cluster-wide list/watch on them).
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
        resources_.push_back(std::move(r));
    }
}

K8sSource::~K8sSource() = default;

void K8sSource::mark(bool compile) {
    {
        std::lock_guard<std::mutex> g(mu_);
        (compile ? compile_dirty_ : status_dirty_) = true;
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
            // Chunked list (limit/continue) into a fresh map, swapped in whole: a relist
            // after 410 replaces the objects in one step, so status does not flap.
            std::map<std::string, json> fresh;
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
                    log(r.kind + ": list: HTTP " + std::to_string(resp->status) + ": " +
                        resp->body.substr(0, 300));
                    ok = false;
                    break;
                }
                if (resp->content_type.find("json") == std::string::npos) {
                    log(r.kind + ": list: unexpected Content-Type '" + resp->content_type + "'");
                    ok = false;
                    break;
                }
                auto j = parse_json(resp->body);
                if (!j || !j->is_object() || !(*j)["items"].is_array()) {
                    log(r.kind + ": list: the answer is not a JSON list");
                    ok = false;
                    break;
                }
                for (json& item : (*j)["items"]) {
                    if (!item.is_object()) {
                        continue;
                    }
                    if (!item.contains("kind")) {
                        item["kind"] = r.kind; // list items carry no kind/apiVersion
                    }
                    if (!item.contains("apiVersion")) {
                        item["apiVersion"] = r.api_version();
                    }
                    std::string key = obj_key(item); // before the move below
                    fresh[std::move(key)] = std::move(item);
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
            const size_t count = fresh.size();
            {
                std::lock_guard<std::mutex> g(mu_);
                if (fresh.size() != r.objects.size()) {
                    changed = true;
                } else {
                    for (auto& [k, v] : fresh) {
                        auto it = r.objects.find(k);
                        if (it == r.objects.end() || spec_part(it->second) != spec_part(v)) {
                            changed = true;
                            break;
                        }
                    }
                }
                r.objects = std::move(fresh);
                r.rv = list_rv;
                rv = list_rv;
                r.synced = true;
                compile_dirty_ |= changed;
                status_dirty_ = true;
            }
            cv_.notify_all();
            log(r.kind + ": listed " + std::to_string(count) + " object(s) at " +
                "resourceVersion " + list_rv);
        }
        // Watch from rv.
        bool gone = false;
        bool bad_event = false;
        auto on_line = [&](std::string_view line) -> bool {
            auto ev = parse_json(line);
            if (!ev || !ev->is_object()) {
                log(r.kind + ": watch: invalid JSON event; reconnecting");
                bad_event = true;
                return false;
            }
            const std::string type = str_at(*ev, "type");
            json& obj = (*ev)["object"];
            if (type == "ERROR") {
                const int code = obj.is_object() && obj["code"].is_number() ? obj["code"].get<int>()
                                                                            : 0;
                if (code == 410) {
                    gone = true;
                } else {
                    log(r.kind + ": watch error event: " + obj.dump().substr(0, 300));
                    bad_event = true;
                }
                return false;
            }
            if (!obj.is_object()) {
                bad_event = true;
                return false;
            }
            const std::string new_rv = str_at(obj, "metadata", "resourceVersion");
            bool compile = false, status = false;
            {
                std::lock_guard<std::mutex> g(mu_);
                if (!new_rv.empty()) {
                    r.rv = new_rv;
                }
                if (type == "BOOKMARK") {
                    return true;
                }
                if (!obj.contains("kind")) {
                    obj["kind"] = r.kind;
                }
                if (!obj.contains("apiVersion")) {
                    obj["apiVersion"] = r.api_version();
                }
                const std::string k = obj_key(obj);
                if (type == "ADDED" || type == "MODIFIED") {
                    auto it = r.objects.find(k);
                    if (it != r.objects.end() && spec_part(it->second) == spec_part(obj)) {
                        status = true; // status-only (often our own write)
                    } else {
                        compile = true;
                    }
                    r.objects[k] = std::move(obj);
                } else if (type == "DELETED") {
                    compile = r.objects.erase(k) > 0;
                } else {
                    log(r.kind + ": watch: unknown event type '" + type + "'");
                    return true;
                }
                compile_dirty_ |= compile;
                status_dirty_ |= status;
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
        if (resp->status != 200) {
            log(r.kind + ": watch: HTTP " + std::to_string(resp->status) + ": " +
                resp->body.substr(0, 300));
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
            log("lease: HTTP " + std::to_string(resp->status) + ": " + resp->body.substr(0, 200));
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

void K8sSource::reconcile() {
    std::vector<Document> docs;
    {
        std::lock_guard<std::mutex> g(mu_);
        for (const auto& r : resources_) {
            for (const auto& [k, obj] : r->objects) {
                // Only GatewayClasses whose controllerName is ours are handled.
                if (r->kind == "GatewayClass" &&
                    str_at(obj, "spec", "controllerName") != opts_.controller_name) {
                    continue;
                }
                docs.push_back(json_to_document(obj, r->plural + "/" + k));
            }
        }
    }
    ctl_.reconcile_documents(docs, Diagnostics{});
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
            // Keep the answer unless the watch already delivered something newer.
            if (it != r.objects.end() && str_at(it->second, "metadata", "resourceVersion") == rv) {
                if (!obj->contains("kind")) {
                    (*obj)["kind"] = r.kind;
                }
                it->second = std::move(*obj);
            }
        }
        return true;
    }
    if (resp->status == 409) {
        // Somebody wrote the object since we read it: read it again, retry on the next pass.
        log("status " + r.kind + " " + key + ": conflict (409); re-reading and retrying");
        auto cur = client_.request("GET", obj_path);
        if (cur && cur->status == 200) {
            if (auto obj = parse_json(cur->body); obj && obj->is_object()) {
                std::lock_guard<std::mutex> g(mu_);
                if (!obj->contains("kind")) {
                    (*obj)["kind"] = r.kind;
                }
                r.objects[key] = std::move(*obj);
            }
        }
        mark(false);
        return false;
    }
    if (resp->status != 404) {
        log("status " + r.kind + " " + key + ": HTTP " + std::to_string(resp->status) + ": " +
            resp->body.substr(0, 300));
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
        for (const auto& [k, obj] : by_kind["GatewayClass"]->objects) {
            if (str_at(obj, "spec", "controllerName") == opts_.controller_name) {
                our_classes.insert(str_at(obj, "metadata", "name"));
            }
        }
        std::set<std::string> our_gateways; // "ns/name"
        for (const auto& [k, obj] : by_kind["Gateway"]->objects) {
            if (our_classes.count(str_at(obj, "spec", "gatewayClassName"))) {
                our_gateways.insert(k);
            }
        }
        std::set<std::pair<std::string, std::string>> seen; // (kind, key) with our status
        for (const ObjectStatus& st : out->statuses) {
            auto rit = by_kind.find(st.key.kind);
            if (rit == by_kind.end()) {
                continue;
            }
            Resource& r = *rit->second;
            const std::string key = st.key.ns + "/" + st.key.name;
            auto oit = r.objects.find(key);
            if (oit == r.objects.end()) {
                continue;
            }
            const json& obj = oit->second;
            const json cur = obj.contains("status") && obj["status"].is_object() ? obj["status"]
                                                                                 : json::object();
            json patch;
            if (st.key.kind == "GatewayClass") {
                if (!our_classes.count(st.key.name)) {
                    continue;
                }
                patch = owned_status(st, cur);
            } else if (st.key.kind == "Gateway") {
                if (!our_gateways.count(key)) {
                    continue;
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
            seen.insert({st.key.kind, key});
            json merged = cur;
            merged.merge_patch(patch);
            if (merged != cur) {
                todo.push_back({&r, key, str_at(obj, "metadata", "resourceVersion"), patch,
                                r.base(st.key.ns) + "/" + st.key.name});
            }
        }
        // Routes that still carry our parent entries but no longer have any: remove ours.
        for (const char* kind : {"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute",
                                 "BackendTLSPolicy"}) {
            Resource& r = *by_kind[kind];
            const char* list = std::string(kind) == "BackendTLSPolicy" ? "ancestors" : "parents";
            for (const auto& [k, obj] : r.objects) {
                if (seen.count({kind, k}) || !obj.contains("status") ||
                    !obj["status"].is_object() || !obj["status"].contains(list) ||
                    !obj["status"][list].is_array()) {
                    continue;
                }
                json keep = json::array();
                bool had_ours = false;
                for (const json& e : obj["status"][list]) {
                    if (str_at(e, "controllerName") == opts_.controller_name) {
                        had_ours = true;
                    } else {
                        keep.push_back(e);
                    }
                }
                if (had_ours) {
                    todo.push_back({&r, k, str_at(obj, "metadata", "resourceVersion"),
                                    json{{list, keep}},
                                    r.base(str_at(obj, "metadata", "namespace")) + "/" +
                                        str_at(obj, "metadata", "name")});
                }
            }
        }
    }
    size_t written = 0;
    for (const Todo& t : todo) {
        written += patch_status(*t.r, t.key, t.patch, t.rv, t.path) ? 1 : 0;
    }
    if (!todo.empty()) {
        log("status: wrote " + std::to_string(written) + " of " + std::to_string(todo.size()) +
            " changed object status(es)");
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
    while (!stop.load(std::memory_order_relaxed)) {
        bool do_compile = false, do_status = false;
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait_for(lk, std::chrono::milliseconds(200));
            if (!synced) {
                synced = true;
                for (const auto& r : resources_) {
                    synced &= r->synced;
                }
                if (!synced) {
                    continue; // no partial first configuration
                }
                log("initial sync complete");
                compile_dirty_ = true;
            }
            if (!compile_dirty_ && !status_dirty_) {
                lk.unlock();
                if (ctl_.needs_retry() && Clock::now() - last_dp_try > std::chrono::seconds(2)) {
                    last_dp_try = Clock::now();
                    reconcile();
                }
                continue;
            }
        }
        // Debounce: let a burst of events land before compiling.
        sleep_for(opts_.debounce_ms, stop);
        {
            std::lock_guard<std::mutex> g(mu_);
            do_compile = compile_dirty_;
            do_status = status_dirty_ || compile_dirty_;
            compile_dirty_ = status_dirty_ = false;
        }
        if (do_compile) {
            last_dp_try = Clock::now();
            reconcile();
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
