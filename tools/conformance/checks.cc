#include "checks.h"

#include <algorithm>
#include <functional>

#include "cases.h"

namespace sluice::conformance {

namespace {

using cp::Condition;
using cp::ObjectStatus;

std::string cond_str(const Condition& c) {
    return c.type + "=" + c.status + "(" + c.reason + ")@" + std::to_string(c.observed_generation);
}

std::string conds_str(const std::vector<Condition>& cs) {
    if (cs.empty()) {
        return "[]";
    }
    std::string s = "[";
    for (const Condition& c : cs) {
        s += (s.size() > 1 ? ", " : "") + cond_str(c);
    }
    return s + "]";
}

struct ExpectedCond {
    std::string type, status, reason;
    [[nodiscard]] std::string str() const {
        return type + "=" + (status.empty() ? "*" : status) + "(" +
               (reason.empty() ? "*" : reason) + ")";
    }
};

ExpectedCond expected_cond(const Json& j) {
    return {jstr(j, "type"), jstr(j, "status"), jstr(j, "reason")};
}

std::vector<ExpectedCond> expected_conds(const Json& j, std::string_view key) {
    std::vector<ExpectedCond> out;
    if (const Json* a = jget(j, key); a && a->is_array()) {
        for (const Json& c : *a) {
            out.push_back(expected_cond(c));
        }
    }
    return out;
}

bool cond_matches(const ExpectedCond& e, const Condition& c) {
    return c.type == e.type && (e.status.empty() || c.status == e.status) &&
           (e.reason.empty() || c.reason == e.reason);
}

bool has_cond(const std::vector<Condition>& cs, const ExpectedCond& e) {
    return std::any_of(cs.begin(), cs.end(),
                       [&](const Condition& c) { return cond_matches(e, c); });
}

/// Every condition at generation `gen` (and at least one condition).
bool latest(const std::vector<Condition>& cs, int64_t gen, std::string& why) {
    if (cs.empty()) {
        why = "no conditions";
        return false;
    }
    for (const Condition& c : cs) {
        if (c.observed_generation != gen) {
            why = "condition " + cond_str(c) + " is not at generation " + std::to_string(gen);
            return false;
        }
    }
    return true;
}

bool parents_latest(const ObjectStatus& st, std::string& why) {
    for (const cp::ParentStatus& p : st.parents) {
        for (const Condition& c : p.conditions) {
            if (c.observed_generation != st.generation) {
                why = "parent " + p.ref.name + " condition " + cond_str(c) +
                      " is not at generation " + std::to_string(st.generation);
                return false;
            }
        }
    }
    return true;
}

std::string parent_str(const cp::ParentStatus& p) {
    std::string s =
        p.ref.group + "/" + p.ref.kind + " " + (p.ref.ns ? *p.ref.ns + "/" : "") + p.ref.name;
    if (p.ref.section_name) {
        s += "#" + *p.ref.section_name;
    }
    return s + " ctrl=" + p.controller_name + " " + conds_str(p.conditions);
}

std::string parents_str(const ObjectStatus& st) {
    if (st.parents.empty()) {
        return "no parents";
    }
    std::string s;
    for (const cp::ParentStatus& p : st.parents) {
        s += (s.empty() ? "" : "; ") + parent_str(p);
    }
    return s;
}

const ObjectStatus* find_status(const World& w, const std::string& kind, const std::string& ref) {
    const NsName nn = split_ns_name(ref);
    return w.out->find(cp::ObjectKey{kind, nn.ns, nn.name});
}

std::string missing(const std::string& kind, const std::string& ref) {
    return "no status for " + kind + " " + ref;
}

const cp::ListenerStatus* find_listener(const ObjectStatus& st, const std::string& name) {
    for (const cp::ListenerStatus& l : st.listeners) {
        if (l.name == name) {
            return &l;
        }
    }
    return nullptr;
}

std::string gateway_ref(const Json& check) {
    if (const Json* g = jget(check, "gatewayRef"); g) {
        return jstr(*g, "gateway");
    }
    if (auto s = jopt_str(check, "gateway")) {
        return *s;
    }
    if (const Json* g = jget(check, "gwRef"); g) {
        return jstr(*g, "gateway");
    }
    return "";
}

/// The route kind a helper is about: the check name's prefix or its routeType argument.
std::string route_kind(const Json& check, const std::string& name) {
    if (auto rt = jopt_str(check, "routeType")) {
        return *rt;
    }
    for (const char* k : {"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute"}) {
        if (name.find(k) != std::string::npos) {
            return k;
        }
    }
    return "HTTPRoute";
}

// ------------------------------------------------------------------ helpers

Outcome namespaces_ready(const Json& check, const World& w) {
    const std::vector<std::string> nss = jstrs(check, "namespaces");
    for (const cp::Gateway& g : w.store->gateways) {
        if (std::find(nss.begin(), nss.end(), g.meta.ns) == nss.end()) {
            continue;
        }
        auto ann = g.meta.annotations.find("gateway-api/skip-this-for-readiness");
        if (ann != g.meta.annotations.end() && ann->second == "true") {
            continue;
        }
        const std::string ref = g.meta.ns + "/" + g.meta.name;
        const ObjectStatus* st = w.out->find(cp::ObjectKey{"Gateway", g.meta.ns, g.meta.name});
        if (!st) {
            return failed(missing("Gateway", ref));
        }
        std::string why;
        if (!latest(st->conditions, st->generation, why)) {
            return failed("Gateway " + ref + ": " + why);
        }
        for (const char* t : {"Accepted", "Programmed"}) {
            if (!has_cond(st->conditions, {t, "True", ""})) {
                return failed("Gateway " + ref + " is not " + t +
                              "=True: " + conds_str(st->conditions));
            }
        }
    }
    return pass();
}

bool parent_is(const cp::ParentStatus& p, const std::string& kind, const NsName& parent,
               const std::string& route_ns, const std::string& controller) {
    if (p.controller_name != controller || p.ref.group != cp::kGatewayGroup || p.ref.kind != kind ||
        p.ref.name != parent.name) {
        return false;
    }
    if (p.ref.ns) {
        return *p.ref.ns == parent.ns;
    }
    return route_ns == parent.ns;
}

Outcome routes_accepted_on(const Json& check, const World& w, const std::string& rkind,
                           const std::string& parent_kind, const std::string& parent_ref) {
    const NsName parent = split_ns_name(parent_ref);
    for (const std::string& r : jstrs(check, "routes")) {
        const ObjectStatus* st = find_status(w, rkind, r);
        if (!st) {
            return failed(missing(rkind, r));
        }
        bool ok = false;
        for (const cp::ParentStatus& p : st->parents) {
            if (parent_is(p, parent_kind, parent, st->key.ns, w.controller_name) &&
                has_cond(p.conditions, {"Accepted", "True", "Accepted"})) {
                ok = true;
                break;
            }
        }
        if (!ok) {
            return failed(rkind + " " + r + " has no parent " + parent_kind + " " + parent_ref +
                          " (controller " + w.controller_name +
                          ") with Accepted=True(Accepted); actual: " + parents_str(*st));
        }
    }
    return pass();
}

Outcome listeners_all_true(const ObjectStatus& st, const std::string& what) {
    for (const cp::ListenerStatus& l : st.listeners) {
        for (const char* t : {"ResolvedRefs", "Accepted", "Programmed"}) {
            if (!has_cond(l.conditions, {t, "True", ""})) {
                return failed(what + " listener " + l.name + " is not " + t +
                              "=True: " + conds_str(l.conditions));
            }
        }
    }
    return pass();
}

Outcome gateway_and_routes_accepted(const Json& check, const World& w, const std::string& name) {
    const std::string gw = gateway_ref(check);
    const ObjectStatus* st = find_status(w, "Gateway", gw);
    if (!st) {
        return failed(missing("Gateway", gw));
    }
    const bool has_addr = std::any_of(st->addresses.begin(), st->addresses.end(),
                                      [](const cp::GatewayAddress& a) { return !a.type.empty(); });
    if (!has_addr) {
        return failed("Gateway " + gw + " has no status address with a type");
    }
    const std::string rkind = route_kind(check, name);
    Outcome o = routes_accepted_on(check, w, rkind, "Gateway", gw);
    if (o.verdict != Verdict::Pass) {
        return o;
    }
    if (rkind == "TLSRoute") {
        return pass();
    }
    return listeners_all_true(*st, "Gateway " + gw);
}

Outcome routes_and_parent_accepted(const Json& check, const World& w) {
    const Json* pr = jget(check, "parentRef");
    if (!pr) {
        return skipped("no parentRef argument");
    }
    const std::string kind = jstr(*pr, "kind", "Gateway");
    const std::string ref = jstr(*pr, "name");
    const ObjectStatus* st = find_status(w, kind, ref);
    if (!st) {
        return failed(missing(kind, ref));
    }
    Outcome o =
        routes_accepted_on(check, w, route_kind(check, "RoutesAndParentMustBeAccepted"), kind, ref);
    if (o.verdict != Verdict::Pass) {
        return o;
    }
    o = listeners_all_true(*st, kind + " " + ref);
    if (o.verdict != Verdict::Pass) {
        return o;
    }
    std::string why;
    if (!latest(st->conditions, st->generation, why)) {
        return failed(kind + " " + ref + ": " + why);
    }
    return pass();
}

Outcome route_has_condition(const Json& check, const World& w, const std::string& rkind,
                            const ExpectedCond& e) {
    const std::string r = jstr(check, "route");
    const NsName gw = split_ns_name(jstr(check, "gateway"));
    const ObjectStatus* st = find_status(w, rkind, r);
    if (!st) {
        return failed(missing(rkind, r));
    }
    std::string why;
    if (!parents_latest(*st, why)) {
        return failed(rkind + " " + r + ": " + why);
    }
    for (const cp::ParentStatus& p : st->parents) {
        if (p.ref.name == gw.name && (!p.ref.ns || *p.ref.ns == gw.ns) &&
            has_cond(p.conditions, e)) {
            return pass();
        }
    }
    return failed(rkind + " " + r + " parent " + gw.ns + "/" + gw.name + " lacks " + e.str() +
                  "; actual: " + parents_str(*st));
}

Outcome route_has_parents(const Json& check, const World& w, const std::string& rkind) {
    const std::string r = jstr(check, "route");
    const bool ns_required = jbool(check, "namespaceRequired");
    const ObjectStatus* st = find_status(w, rkind, r);
    if (!st) {
        return failed(missing(rkind, r));
    }
    const Json* parents = jget(check, "parents");
    if (!parents || !parents->is_array()) {
        return skipped("no parents argument");
    }
    for (const Json& ep : *parents) {
        const Json* er = jget(ep, "parentRef");
        if (!er) {
            return skipped("expected parent without parentRef");
        }
        std::string ctrl = jstr(ep, "controllerName");
        if (ctrl == "<controllerName>") {
            ctrl = w.controller_name;
        }
        const auto eg = jopt_str(*er, "group");
        const auto ek = jopt_str(*er, "kind");
        const std::string en = jstr(*er, "name");
        const auto ens = jopt_str(*er, "namespace");
        const std::vector<ExpectedCond> conds = expected_conds(ep, "conditions");
        bool found = false;
        for (const cp::ParentStatus& p : st->parents) {
            if (p.controller_name != ctrl || (eg && p.ref.group != *eg) ||
                (ek && p.ref.kind != *ek) || p.ref.name != en) {
                continue;
            }
            if (p.ref.ns != ens) {
                if (ns_required || p.ref.ns) {
                    continue;
                }
            }
            if (std::all_of(conds.begin(), conds.end(),
                            [&](const ExpectedCond& c) { return has_cond(p.conditions, c); })) {
                found = true;
                break;
            }
        }
        if (!found) {
            std::string cs;
            for (const ExpectedCond& c : conds) {
                cs += (cs.empty() ? "" : ",") + c.str();
            }
            return failed(rkind + " " + r + " has no parent " + en + " (ns " +
                          (ens ? *ens : "<unset>") + ", ctrl " + ctrl + ") with [" + cs +
                          "]; actual: " + parents_str(*st));
        }
    }
    return pass();
}

Outcome no_accepted_parents(const Json& check, const World& w, const std::string& rkind) {
    const std::string r = jstr(check, "route");
    const ObjectStatus* st = find_status(w, rkind, r);
    if (!st) {
        // A route the controller ignores entirely has no parents: that satisfies the helper.
        return pass();
    }
    if (st->parents.empty()) {
        return pass();
    }
    if (st->parents.size() == 1 && has_cond(st->parents[0].conditions, {"Accepted", "False", ""})) {
        return pass();
    }
    return failed(rkind + " " + r +
                  " must have no parents or one with Accepted=False; actual: " + parents_str(*st));
}

Outcome zero_routes(const Json& check, const World& w) {
    const std::string gw = gateway_ref(check);
    const ObjectStatus* st = find_status(w, "Gateway", gw);
    if (!st) {
        return failed(missing("Gateway", gw));
    }
    if (st->listeners.empty() ||
        (st->listeners.size() == 1 && st->listeners[0].attached_routes == 0)) {
        return pass();
    }
    std::string s;
    for (const cp::ListenerStatus& l : st->listeners) {
        s += (s.empty() ? "" : ", ") + l.name + ":" + std::to_string(l.attached_routes);
    }
    return failed("Gateway " + gw + " must have no listeners or one with 0 routes; actual: " + s);
}

std::string kinds_str(const std::vector<cp::RouteGroupKind>& ks) {
    std::string s = "[";
    for (const cp::RouteGroupKind& k : ks) {
        s += (s.size() > 1 ? "," : "") + k.group + "/" + k.kind;
    }
    return s + "]";
}

Outcome status_has_listeners(const Json& check, const World& w, const std::string& kind,
                             const std::string& ref) {
    const ObjectStatus* st = find_status(w, kind, ref);
    if (!st) {
        return failed(missing(kind, ref));
    }
    const Json* ls = jget(check, "listeners");
    if (!ls || !ls->is_array()) {
        return skipped("no listeners argument");
    }
    if (ls->size() != st->listeners.size()) {
        std::string names;
        for (const cp::ListenerStatus& l : st->listeners) {
            names += (names.empty() ? "" : ",") + l.name;
        }
        return failed(kind + " " + ref + ": expected " + std::to_string(ls->size()) +
                      " listeners, actual " + std::to_string(st->listeners.size()) + " [" + names +
                      "]");
    }
    for (const Json& el : *ls) {
        const std::string name = jstr(el, "name");
        const cp::ListenerStatus* l = find_listener(*st, name);
        if (!l) {
            return failed(kind + " " + ref + ": no listener " + name + " in status");
        }
        std::vector<cp::RouteGroupKind> want;
        if (const Json* sk = jget(el, "supportedKinds"); sk && sk->is_array()) {
            for (const Json& k : *sk) {
                want.push_back({jstr(k, "group", cp::kGatewayGroup), jstr(k, "kind")});
            }
        }
        if (want.empty() && !l->supported_kinds.empty()) {
            return failed(kind + " " + ref + " listener " + name +
                          ": supportedKinds must be empty, actual " +
                          kinds_str(l->supported_kinds));
        }
        for (const cp::RouteGroupKind& k : want) {
            if (std::find(l->supported_kinds.begin(), l->supported_kinds.end(), k) ==
                l->supported_kinds.end()) {
                return failed(kind + " " + ref + " listener " + name + ": supportedKinds lacks " +
                              k.group + "/" + k.kind + ", actual " + kinds_str(l->supported_kinds));
            }
        }
        if (auto ar = jint(el, "attachedRoutes"); ar && *ar != l->attached_routes) {
            return failed(kind + " " + ref + " listener " + name + ": attachedRoutes expected " +
                          std::to_string(*ar) + ", actual " + std::to_string(l->attached_routes));
        }
        for (const ExpectedCond& c : expected_conds(el, "conditions")) {
            if (!has_cond(l->conditions, c)) {
                return failed(kind + " " + ref + " listener " + name + " lacks " + c.str() +
                              "; actual " + conds_str(l->conditions));
            }
        }
    }
    return pass();
}

Outcome listeners_have_conditions(const ObjectStatus& st, const std::string& what,
                                  const std::vector<std::string>& names,
                                  const std::vector<ExpectedCond>& conds) {
    std::vector<const cp::ListenerStatus*> ls;
    if (names.empty()) {
        for (const cp::ListenerStatus& l : st.listeners) {
            ls.push_back(&l);
        }
    } else {
        for (const std::string& n : names) {
            const cp::ListenerStatus* l = find_listener(st, n);
            if (!l) {
                return failed(what + ": no listener " + n + " in status");
            }
            ls.push_back(l);
        }
    }
    for (const cp::ListenerStatus* l : ls) {
        for (const ExpectedCond& c : conds) {
            if (!has_cond(l->conditions, c)) {
                return failed(what + " listener " + l->name + " lacks " + c.str() + "; actual " +
                              conds_str(l->conditions));
            }
        }
    }
    return pass();
}

Outcome object_has_condition(const World& w, const std::string& kind, const std::string& ref,
                             const std::optional<ExpectedCond>& e) {
    const ObjectStatus* st = find_status(w, kind, ref);
    if (!st) {
        return failed(missing(kind, ref));
    }
    std::string why;
    if (!latest(st->conditions, st->generation, why)) {
        return failed(kind + " " + ref + ": " + why);
    }
    if (e && !has_cond(st->conditions, *e)) {
        return failed(kind + " " + ref + " lacks " + e->str() + "; actual " +
                      conds_str(st->conditions));
    }
    return pass();
}

Outcome policy_has_condition(const World& w, const std::string& policy, const NsName& gw,
                             const ExpectedCond& e) {
    const ObjectStatus* st = find_status(w, "BackendTLSPolicy", policy);
    if (!st) {
        return failed(missing("BackendTLSPolicy", policy));
    }
    std::string why;
    if (!parents_latest(*st, why)) {
        return failed("BackendTLSPolicy " + policy + ": " + why);
    }
    for (const cp::ParentStatus& p : st->parents) {
        if (p.ref.name == gw.name && (!p.ref.ns || *p.ref.ns == gw.ns) &&
            has_cond(p.conditions, e)) {
            return pass();
        }
    }
    return failed("BackendTLSPolicy " + policy + " ancestor " + gw.ns + "/" + gw.name + " lacks " +
                  e.str() + "; actual ancestors: " + parents_str(*st));
}

Outcome policies_latest(const World& w) {
    int seen = 0;
    for (const cp::BackendTlsPolicy& p : w.store->tls_policies) {
        if (!w.test_files.count(p.meta.source.file)) {
            continue;
        }
        ++seen;
        const std::string ref = p.meta.ns + "/" + p.meta.name;
        const ObjectStatus* st =
            w.out->find(cp::ObjectKey{"BackendTLSPolicy", p.meta.ns, p.meta.name});
        if (!st) {
            return failed(missing("BackendTLSPolicy", ref));
        }
        if (st->parents.empty()) {
            return failed("BackendTLSPolicy " + ref + " has no ancestors");
        }
        std::string why;
        if (!parents_latest(*st, why)) {
            return failed("BackendTLSPolicy " + ref + ": " + why);
        }
    }
    if (seen == 0) {
        return skipped("no BackendTLSPolicy in the test's manifests to check");
    }
    return pass();
}

Outcome route_latest(const World& w, const std::string& ref) {
    const ObjectStatus* st = find_status(w, "HTTPRoute", ref);
    if (!st) {
        return failed(missing("HTTPRoute", ref));
    }
    if (st->parents.empty()) {
        return failed("HTTPRoute " + ref + " has no parents");
    }
    std::string why;
    if (!parents_latest(*st, why)) {
        return failed("HTTPRoute " + ref + ": " + why);
    }
    return pass();
}

Outcome class_check(const World& w, const std::string& ref, bool accepted_any) {
    const ObjectStatus* st = find_status(w, "GatewayClass", ref);
    if (!st) {
        return failed(missing("GatewayClass", ref));
    }
    std::string why;
    if (!latest(st->conditions, st->generation, why)) {
        return failed("GatewayClass " + ref + ": " + why);
    }
    if (accepted_any && !has_cond(st->conditions, {"Accepted", "", ""})) {
        return failed("GatewayClass " + ref + " has no Accepted condition");
    }
    return pass();
}

Outcome secret_exists(const World& w, const std::string& ref) {
    const NsName nn = split_ns_name(ref);
    for (const cp::Secret& s : w.store->secrets) {
        if (s.meta.ns == nn.ns && s.meta.name == nn.name) {
            if (!s.data.count("tls.crt")) {
                return failed("Secret " + ref + " has no tls.crt");
            }
            return pass();
        }
    }
    return failed("no Secret " + ref);
}

Outcome config_map_exists(const World& w, const std::string& ref) {
    const NsName nn = split_ns_name(ref);
    for (const cp::ConfigMap& c : w.store->config_maps) {
        if (c.meta.ns == nn.ns && c.meta.name == nn.name) {
            return pass();
        }
    }
    return failed("no ConfigMap " + ref);
}

Outcome gateway_address(const World& w, const std::string& ref) {
    const ObjectStatus* st = find_status(w, "Gateway", ref);
    if (!st) {
        return failed(missing("Gateway", ref));
    }
    if (st->addresses.empty()) {
        return failed("Gateway " + ref + " has no status address");
    }
    return pass();
}

Outcome evaluate_one(const Json& c, const World& w) {
    const std::string name = jstr(c, "check");
    if (name == "NamespacesMustBeReady") {
        return namespaces_ready(c, w);
    }
    if (name == "GatewayAndHTTPRoutesMustBeAccepted" || name == "GatewayAndRoutesMustBeAccepted" ||
        name == "GatewayAndTCPRoutesMustBeAccepted" ||
        name == "GatewayAndUDPRoutesMustBeAccepted" ||
        name == "GatewayAndTLSRoutesMustBeAccepted" ||
        name == "GatewayAndGRPCRoutesMustBeAccepted") {
        return gateway_and_routes_accepted(c, w, name);
    }
    if (name == "RoutesAndParentMustBeAccepted") {
        return routes_and_parent_accepted(c, w);
    }
    if (name == "HTTPRouteMustHaveCondition" || name == "TLSRouteMustHaveCondition" ||
        name == "TCPRouteMustHaveCondition" || name == "UDPRouteMustHaveCondition" ||
        name == "GRPCRouteMustHaveCondition") {
        const Json* cond = jget(c, "condition");
        if (!cond) {
            return skipped("no condition argument");
        }
        return route_has_condition(c, w, route_kind(c, name), expected_cond(*cond));
    }
    if (name == "HTTPRouteMustHaveResolvedRefsConditionsTrue") {
        return route_has_condition(c, w, "HTTPRoute", {"ResolvedRefs", "True", "ResolvedRefs"});
    }
    if (name.ends_with("RouteMustHaveParents")) {
        return route_has_parents(c, w, route_kind(c, name));
    }
    if (name.ends_with("RouteMustHaveNoAcceptedParents")) {
        return no_accepted_parents(c, w, route_kind(c, name));
    }
    if (name == "GatewayMustHaveZeroRoutes") {
        return zero_routes(c, w);
    }
    if (name == "GatewayStatusMustHaveListeners") {
        return status_has_listeners(c, w, "Gateway", gateway_ref(c));
    }
    if (name == "ListenerSetStatusMustHaveListeners") {
        return status_has_listeners(c, w, "ListenerSet", jstr(c, "listenerSet"));
    }
    if (name == "GatewayListenersMustHaveConditions" ||
        name == "GatewayListenerMustHaveConditions" ||
        name == "ListenerSetListenersMustHaveConditions") {
        const bool ls = name.starts_with("ListenerSet");
        const std::string kind = ls ? "ListenerSet" : "Gateway";
        const std::string ref = ls ? jstr(c, "listenerSet") : gateway_ref(c);
        const ObjectStatus* st = find_status(w, kind, ref);
        if (!st) {
            return failed(missing(kind, ref));
        }
        std::vector<std::string> names = jstrs(c, "listenerNames", true);
        if (auto one = jopt_str(c, "lName")) {
            names.push_back(*one);
        }
        return listeners_have_conditions(*st, kind + " " + ref, names,
                                         expected_conds(c, "conditions"));
    }
    if (name == "GatewayMustHaveCondition" || name == "ListenerSetMustHaveCondition") {
        const bool ls = name.starts_with("ListenerSet");
        const Json* cond = jget(c, "condition");
        if (!cond) {
            return skipped("no condition argument");
        }
        return object_has_condition(w, ls ? "ListenerSet" : "Gateway",
                                    ls ? jstr(c, "listenerSet") : gateway_ref(c),
                                    expected_cond(*cond));
    }
    if (name == "GatewayMustHaveLatestConditions") {
        return object_has_condition(w, "Gateway", gateway_ref(c), std::nullopt);
    }
    if (name == "GatewayMustHaveAttachedListeners") {
        const std::string gw = gateway_ref(c);
        const ObjectStatus* st = find_status(w, "Gateway", gw);
        if (!st) {
            return failed(missing("Gateway", gw));
        }
        const auto n = jint(c, "expectedCount");
        if (!n) {
            return skipped("no expectedCount argument");
        }
        if (*n != st->attached_listener_sets) {
            return failed("Gateway " + gw + " attachedListenerSets expected " + std::to_string(*n) +
                          ", actual " + std::to_string(st->attached_listener_sets));
        }
        return pass();
    }
    if (name == "BackendTLSPolicyMustHaveCondition") {
        const Json* cond = jget(c, "condition");
        if (!cond) {
            return skipped("no condition argument");
        }
        return policy_has_condition(w, jstr(c, "policy"), split_ns_name(jstr(c, "gateway")),
                                    expected_cond(*cond));
    }
    if (name == "BackendTLSPolicyMustHaveAcceptedConditionTrue") {
        return policy_has_condition(w, jstr(c, "policy"), split_ns_name(jstr(c, "gateway")),
                                    {"Accepted", "True", "Accepted"});
    }
    if (name == "BackendTLSPolicyMustHaveLatestConditions") {
        if (auto p = jopt_str(c, "policy")) {
            const ObjectStatus* st = find_status(w, "BackendTLSPolicy", *p);
            if (!st) {
                return failed(missing("BackendTLSPolicy", *p));
            }
            std::string why;
            if (st->parents.empty() || !parents_latest(*st, why)) {
                return failed("BackendTLSPolicy " + *p + ": " +
                              (why.empty() ? "no ancestors" : why));
            }
            return pass();
        }
        return policies_latest(w);
    }
    if (name == "HTTPRouteMustHaveLatestConditions") {
        std::string ref = jstr(c, "rNN");
        if (ref.empty()) {
            ref = jstr(c, "route");
        }
        return route_latest(w, ref);
    }
    if (name == "GWCMustHaveAcceptedConditionAny" || name == "GWCMustHaveAcceptedConditionTrue") {
        Outcome o = class_check(w, jstr(c, "gatewayClass"), true);
        if (o.verdict == Verdict::Pass && name.ends_with("True")) {
            const ObjectStatus* st = find_status(w, "GatewayClass", jstr(c, "gatewayClass"));
            if (!has_cond(st->conditions, {"Accepted", "True", ""})) {
                return failed("GatewayClass is not Accepted=True: " + conds_str(st->conditions));
            }
        }
        return o;
    }
    if (name == "GatewayClassMustHaveLatestConditions") {
        return class_check(w, jstr(c, "gatewayClass"), false);
    }
    if (name == "GetTLSSecret") {
        return secret_exists(w, jstr(c, "secretName"));
    }
    if (name == "GetConfigMapData") {
        return config_map_exists(w, jstr(c, "name"));
    }
    if (name == "WaitForGatewayAddress") {
        return gateway_address(w, gateway_ref(c));
    }
    return skipped("unknown status helper " + name);
}

/// Expands {"for_each": [...]} arguments into one check per value (cartesian product).
void expand(const Json& c, std::vector<Json>& out) {
    if (c.is_object()) {
        for (auto it = c.begin(); it != c.end(); ++it) {
            const Json* fe = jget(it.value(), "for_each");
            if (fe && fe->is_array()) {
                for (const Json& v : *fe) {
                    Json copy = c;
                    copy[it.key()] = v;
                    expand(copy, out);
                }
                return;
            }
        }
    }
    out.push_back(c);
}

} // namespace

Outcome evaluate_check(const Json& check, const World& w) {
    try {
        std::vector<Json> calls;
        expand(check, calls);
        Outcome worst = pass();
        for (const Json& c : calls) {
            Outcome o = evaluate_one(c, w);
            if (o.verdict == Verdict::Fail) {
                return o;
            }
            if (o.verdict == Verdict::Skip) {
                worst = o;
            }
        }
        return worst;
    } catch (const Json::exception& e) {
        return skipped(std::string("malformed check: ") + e.what());
    }
}

std::string describe_check(const Json& check) {
    std::string s = jstr(check, "check", "?");
    for (const char* k : {"gateway", "route", "rNN", "policy", "listenerSet", "gatewayClass",
                          "secretName", "name"}) {
        if (const Json* v = jget(check, k); v) {
            s += " " + (v->is_string() ? v->get_ref<const std::string&>() : jdump(*v, 120));
        }
    }
    for (const char* k : {"gatewayRef", "gwRef"}) {
        if (const Json* v = jget(check, k); v) {
            s += " " + jstr(*v, "gateway");
        }
    }
    if (const Json* v = jget(check, "condition"); v) {
        s += " " + expected_cond(*v).str();
    }
    return s;
}

} // namespace sluice::conformance
