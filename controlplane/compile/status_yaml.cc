#include <sstream>

#include "compile.h"

namespace sluice::cp {

namespace {

/// Quotes a scalar when YAML would read it as something else.
std::string q(const std::string& s) {
    if (s.empty()) {
        return "\"\"";
    }
    bool plain = true;
    for (char c : s) {
        if (!(isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ||
              c == '/' || c == ' ')) {
            plain = false;
        }
    }
    if (s == "true" || s == "false" || s == "null" || s == "True" || s == "False" ||
        s.front() == ' ' || s.back() == ' ' || isdigit(static_cast<unsigned char>(s.front()))) {
        plain = false;
    }
    if (plain) {
        return s;
    }
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (static_cast<unsigned char>(c) < 0x20) {
            char buf[8];
            snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned char>(c));
            out += buf;
        } else {
            out += c;
        }
    }
    return out + "\"";
}

void conditions(std::ostringstream& o, const std::vector<Condition>& cs, const std::string& ind) {
    o << ind << "conditions:\n";
    for (const Condition& c : cs) {
        o << ind << "- type: " << q(c.type) << "\n";
        o << ind << "  status: " << q(c.status) << "\n";
        o << ind << "  reason: " << q(c.reason) << "\n";
        if (!c.message.empty()) {
            o << ind << "  message: " << q(c.message) << "\n";
        }
        o << ind << "  observedGeneration: " << c.observed_generation << "\n";
    }
}

const char* api_version(const std::string& kind) {
    if (kind == "Namespace" || kind == "Service" || kind == "Secret" || kind == "ConfigMap") {
        return "v1";
    }
    return "gateway.networking.k8s.io/v1";
}

} // namespace

std::string status_yaml(const ObjectStatus& st) {
    std::ostringstream o;
    o << "apiVersion: " << api_version(st.key.kind) << "\n";
    o << "kind: " << st.key.kind << "\n";
    o << "metadata:\n  name: " << q(st.key.name) << "\n";
    if (!st.key.ns.empty()) {
        o << "  namespace: " << q(st.key.ns) << "\n";
    }
    o << "  generation: " << st.generation << "\n";
    o << "status:\n";
    if (!st.addresses.empty()) {
        o << "  addresses:\n";
        for (const GatewayAddress& a : st.addresses) {
            o << "  - type: " << q(a.type) << "\n    value: " << q(a.value) << "\n";
        }
    }
    if (st.key.kind == "GatewayClass" || st.key.kind == "Gateway" || st.key.kind == "ListenerSet") {
        conditions(o, st.conditions, "  ");
    }
    if (!st.supported_features.empty()) {
        o << "  supportedFeatures:\n";
        for (const std::string& f : st.supported_features) {
            o << "  - name: " << q(f) << "\n";
        }
    }
    if (st.key.kind == "Gateway" || st.key.kind == "ListenerSet") {
        if (st.key.kind == "Gateway" && st.attached_listener_sets > 0) {
            o << "  attachedListenerSets: " << st.attached_listener_sets << "\n";
        }
        o << "  listeners:\n";
        for (const ListenerStatus& l : st.listeners) {
            o << "  - name: " << q(l.name) << "\n";
            o << "    attachedRoutes: " << l.attached_routes << "\n";
            o << "    supportedKinds:";
            if (l.supported_kinds.empty()) {
                o << " []\n";
            } else {
                o << "\n";
                for (const RouteGroupKind& k : l.supported_kinds) {
                    o << "    - group: " << q(k.group) << "\n      kind: " << q(k.kind) << "\n";
                }
            }
            conditions(o, l.conditions, "    ");
        }
    }
    if (!st.parents.empty()) {
        const bool policy = st.key.kind == "BackendTLSPolicy";
        o << (policy ? "  ancestors:\n" : "  parents:\n");
        for (const ParentStatus& p : st.parents) {
            o << (policy ? "  - ancestorRef:\n" : "  - parentRef:\n");
            o << "      group: " << q(p.ref.group) << "\n";
            o << "      kind: " << q(p.ref.kind) << "\n";
            o << "      name: " << q(p.ref.name) << "\n";
            if (p.ref.ns) {
                o << "      namespace: " << q(*p.ref.ns) << "\n";
            }
            if (p.ref.section_name) {
                o << "      sectionName: " << q(*p.ref.section_name) << "\n";
            }
            if (p.ref.port) {
                o << "      port: " << *p.ref.port << "\n";
            }
            o << "    controllerName: " << q(p.controller_name) << "\n";
            conditions(o, p.conditions, "    ");
        }
    }
    return o.str();
}

} // namespace sluice::cp
