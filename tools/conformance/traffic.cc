#include "traffic.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>

#include "cases.h"
#include "decide.h"
#include "hostnames.h"

namespace sluice::conformance {

namespace {

using hosts::iequals;
using route::Header;

// ------------------------------------------------------------------ identities

std::vector<const cp::Deployment*> sorted_deployments(const cp::Store& store) {
    std::vector<const cp::Deployment*> ds;
    for (const cp::Deployment& d : store.deployments) {
        ds.push_back(&d);
    }
    std::sort(ds.begin(), ds.end(), [](const cp::Deployment* a, const cp::Deployment* b) {
        return std::tie(a->meta.ns, a->meta.name) < std::tie(b->meta.ns, b->meta.name);
    });
    return ds;
}

std::string ip_for_index(size_t i, bool v6) {
    if (v6) {
        char buf[48];
        std::snprintf(buf, sizeof buf, "fd00:10:244::%zx", i + 1);
        return buf;
    }
    return "10.244." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
}

const cp::Service* find_service(const cp::Store& store, const std::string& ns,
                                const std::string& name) {
    for (const cp::Service& s : store.services) {
        if (s.meta.ns == ns && s.meta.name == name) {
            return &s;
        }
    }
    return nullptr;
}

std::string join_values(const std::vector<Header>& hs, std::string_view name, bool& found) {
    std::string v;
    found = false;
    for (const Header& h : hs) {
        if (iequals(h.name, name)) {
            v += (found ? "," : "") + h.value;
            found = true;
        }
    }
    return v;
}

std::string strip_ws(std::string s) {
    std::erase_if(s, [](char c) { return c == ' ' || c == '\t'; });
    return s;
}

std::string path_only(const std::string& target) {
    const size_t q = target.find('?');
    return q == std::string::npos ? target : target.substr(0, q);
}

// ------------------------------------------------------------------ the simulated request

struct Sim {
    bool transport_error = false;
    std::string error;
    int status = 0;
    bool forwarded = false;
    route::Decision d;
    std::vector<Header> response_headers;
    std::string identity; ///< echo pod prefix when forwarded
    std::string ns;       ///< echo pod namespace when forwarded ("" otherwise)
    // Live only: the backend's side of a gateway-to-backend TLS connection.
    bool backend_tls = false;
    std::string backend_sni;
    std::vector<std::string> backend_peer_certs;
};

struct Ctx {
    const Json& c;
    const Json& req;
    const Json& exp;
    const World& w;
    const Fixtures& fx;
    route::Request r;
    bool grpc = false;
    bool live = false; ///< a real exchange (traffic mode): no IR behind `w`
};

/// Builds route::Request from the case. Returns "" or why the request cannot be built.
std::string build_request(Ctx& x) {
    const NsName gw = split_ns_name(jstr(x.c, "gateway"));
    x.r.gateway_ns = gw.ns;
    x.r.gateway_name = gw.name;
    const std::string protocol = jstr(x.req, "protocol", "HTTP");
    x.r.scheme = jstr(x.req, "scheme");
    if (x.r.scheme.empty()) {
        x.r.scheme = (protocol == "HTTPS" || protocol == "H2") ? "https" : "http";
    }
    const int def_port = x.r.scheme == "https" ? 443 : 80;
    const auto port = jint(x.c, "port");
    x.r.port = static_cast<uint16_t>(port ? *port : def_port);
    const cp::ObjectStatus* gst = x.w.out->find(cp::ObjectKey{"Gateway", gw.ns, gw.name});
    std::string address;
    if (gst && !gst->addresses.empty()) {
        address = gst->addresses.front().value;
    }
    std::string addr_host = address;
    if (x.r.port != def_port) {
        addr_host += ":" + std::to_string(x.r.port);
    }
    if (x.grpc) {
        x.r.grpc = true;
        x.r.method = "POST";
        x.r.target = jstr(x.req, "rpc", jstr(x.req, "path", "/"));
        x.r.host = jstr(x.req, "authority", addr_host);
        if (const Json* md = jget(x.req, "metadata"); md && md->is_object()) {
            for (auto it = md->begin(); it != md->end(); ++it) {
                if (it.value().is_string()) {
                    x.r.headers.push_back({it.key(), it.value().get<std::string>()});
                }
            }
        }
        x.r.headers.push_back({"content-type", "application/grpc"});
        return "";
    }
    x.r.method = jstr(x.req, "method", "GET");
    x.r.target = jstr(x.req, "path", "/");
    x.r.host = jstr(x.req, "host", addr_host);
    if (x.r.host.empty()) {
        return "the Gateway has no status address to send the request to";
    }
    if (const Json* hs = jget(x.req, "headers"); hs && hs->is_object()) {
        for (auto it = hs->begin(); it != hs->end(); ++it) {
            if (it.value().is_string()) {
                x.r.headers.push_back({it.key(), it.value().get<std::string>()});
            } else if (it.value().is_array()) {
                for (const Json& v : it.value()) {
                    if (v.is_string()) {
                        x.r.headers.push_back({it.key(), v.get<std::string>()});
                    }
                }
            }
        }
    }
    std::string echo;
    if (const Json* es = jget(x.req, "echo_set_response_headers"); es && es->is_object()) {
        for (auto it = es->begin(); it != es->end(); ++it) {
            if (it.value().is_string()) {
                echo += (echo.empty() ? "" : ",") + it.key() + ":" + it.value().get<std::string>();
            }
        }
    }
    x.r.headers.push_back({"X-Echo-Set-Header", echo});
    if (x.r.scheme == "https") {
        std::string sni;
        if (const Json* tls = jget(x.req, "tls"); tls) {
            sni = jstr(*tls, "server_name");
        }
        if (sni.empty()) {
            sni = jstr(x.req, "sni");
        }
        if (sni.empty()) {
            sni = std::string(hosts::strip_port(x.r.host));
        }
        x.r.sni = sni;
    }
    return "";
}

/// The PEM of the client certificate a case presents ("secret ns/name (...)"), or "".
std::string client_cert_pem(const Ctx& x, bool& presented) {
    presented = false;
    const Json* tls = jget(x.req, "tls");
    if (!tls) {
        return "";
    }
    const std::string s = jstr(*tls, "client_certificate");
    if (s.empty()) {
        return "";
    }
    presented = true;
    std::string ref = s;
    if (ref.starts_with("secret ")) {
        ref = ref.substr(7);
    }
    const size_t sp = ref.find(' ');
    if (sp != std::string::npos) {
        ref = ref.substr(0, sp);
    }
    auto it = x.fx.cert_pem.find(ref);
    return it == x.fx.cert_pem.end() ? "" : it->second;
}

Sim simulate(const Ctx& x, uint64_t pick) {
    Sim s;
    const ir::Ir& ir = x.w.out->ir;
    s.d = route::decide(ir, x.r, pick);
    if (x.r.scheme == "https") {
        if (s.d.m.sni_listener == ir::kNone) {
            s.transport_error = true;
            s.error = "TLS handshake fails: " + std::string(s.d.m.why);
            return s;
        }
        const ir::Listener& l = ir.listeners[s.d.m.sni_listener];
        if (!l.client_ca_pems.empty()) {
            bool presented = false;
            const std::string pem = client_cert_pem(x, presented);
            const bool ok = !pem.empty() && cert_verifies(pem, l.client_ca_pems);
            if (!ok && !l.client_cert_optional) {
                s.transport_error = true;
                s.error = presented ? "TLS handshake fails: client certificate not signed by the "
                                      "listener's CA"
                                    : "TLS handshake fails: no client certificate";
                return s;
            }
        }
    }
    switch (s.d.outcome) {
    case route::Outcome::NoListener:
        s.transport_error = true;
        s.error = "connection refused: " + std::string(s.d.m.why);
        return s;
    case route::Outcome::Respond:
    case route::Outcome::Redirect:
        s.status = s.d.status;
        for (const auto& [k, v] : s.d.fwd.response_headers) {
            s.response_headers.push_back({k, v});
        }
        if (s.d.outcome == route::Outcome::Redirect) {
            s.response_headers.push_back({"Location", s.d.location});
        }
        return s;
    case route::Outcome::Forward:
        break;
    }
    s.forwarded = true;
    s.status = 200;
    const std::string p = path_only(s.d.fwd.path);
    if (p.starts_with("/status/") && p.size() == 11 &&
        std::isdigit(static_cast<unsigned char>(p[8]))) {
        s.status = std::atoi(p.c_str() + 8);
    }
    if (s.d.group < ir.groups.size()) {
        s.identity = backend_identity(x.w, s.d.group);
        s.ns = ir.groups[s.d.group].ns;
    }
    // The echo backend: JSON body, plus the X-Echo-Set-Header pairs it was sent.
    s.response_headers.push_back({"Content-Type", "application/json"});
    bool found = false;
    const std::string echo = join_values(s.d.fwd.headers, "X-Echo-Set-Header", found);
    size_t start = 0;
    while (found && start < echo.size()) {
        size_t comma = echo.find(',', start);
        if (comma == std::string::npos) {
            comma = echo.size();
        }
        const std::string kv = echo.substr(start, comma - start);
        const size_t colon = kv.find(':');
        if (colon != std::string::npos) {
            s.response_headers.push_back({kv.substr(0, colon), kv.substr(colon + 1)});
        }
        start = comma + 1;
    }
    route::apply_header_ops(s.d.fwd.response_ops, s.response_headers);
    for (const auto& [k, v] : s.d.fwd.response_headers) {
        s.response_headers.push_back({k, v});
    }
    return s;
}

std::string sim_str(const Sim& s) {
    if (s.transport_error) {
        return s.error;
    }
    std::string out = std::to_string(s.status);
    if (s.forwarded) {
        out += " from " + s.ns + "/" + s.identity;
    } else if (!s.d.m.why.empty()) {
        out += " (" + std::string(s.d.m.why) + ")";
    }
    return out;
}

std::vector<int> expected_statuses(const Json& exp, int def) {
    std::vector<int> out;
    if (const Json* st = jget(exp, "status"); st) {
        if (st->is_array()) {
            for (const Json& v : *st) {
                if (v.is_number_integer()) {
                    out.push_back(v.get<int>());
                }
            }
        } else if (st->is_number_integer()) {
            out.push_back(st->get<int>());
        }
    }
    if (out.empty()) {
        out.push_back(def);
    }
    return out;
}

bool status_ok(const std::vector<int>& want, int got) {
    if (std::find(want.begin(), want.end(), got) != want.end()) {
        return true;
    }
    const bool timeout_expected = std::find(want.begin(), want.end(), 408) != want.end() ||
                                  std::find(want.begin(), want.end(), 504) != want.end();
    return timeout_expected && (got == 408 || got == 504);
}

std::string list_str(const std::vector<int>& v) {
    std::string s;
    for (int x : v) {
        s += (s.empty() ? "" : "|") + std::to_string(x);
    }
    return s;
}

struct Url {
    std::string scheme, host, port, path;
};

Url parse_url(const std::string& u) {
    Url out;
    std::string rest = u;
    const size_t sep = rest.find("://");
    if (sep != std::string::npos) {
        out.scheme = rest.substr(0, sep);
        rest = rest.substr(sep + 3);
    }
    const size_t slash = rest.find_first_of("/?");
    std::string authority = rest.substr(0, slash);
    rest = slash == std::string::npos ? "" : rest.substr(slash);
    const size_t colon = authority.rfind(':');
    if (colon != std::string::npos && authority.find(']') == std::string::npos) {
        out.port = authority.substr(colon + 1);
        authority = authority.substr(0, colon);
    }
    out.host = authority;
    out.path = path_only(rest);
    return out;
}

Outcome check_redirect(const Ctx& x, const Sim& s) {
    const Json* rd = jget(x.exp, "redirect");
    if (!rd) {
        return pass();
    }
    bool has = false;
    const std::string loc = join_values(s.response_headers, "Location", has);
    if (!has) {
        return failed("redirect without Location");
    }
    const Url u = parse_url(loc);
    const std::string want_scheme = jstr(*rd, "scheme", x.r.scheme);
    if (u.scheme != want_scheme) {
        return failed("Location " + loc + ": scheme expected " + want_scheme);
    }
    if (auto h = jopt_str(*rd, "host"); h && !h->empty() && u.host != *h) {
        return failed("Location " + loc + ": host expected " + *h);
    }
    const std::string want_path = jstr(*rd, "path", path_only(x.r.target));
    if (u.path != want_path) {
        return failed("Location " + loc + ": path expected " + want_path);
    }
    std::string want_port;
    if (auto p = jint(*rd, "port")) {
        want_port = std::to_string(*p);
    }
    if (!want_port.empty()) {
        if (u.port != want_port) {
            return failed("Location " + loc + ": port expected " + want_port);
        }
    } else {
        const std::string def = u.scheme == "https" ? "443" : "80";
        if (!u.port.empty() && u.port != def) {
            return failed("Location " + loc + ": port expected none or " + def);
        }
    }
    return pass();
}

Outcome check_headers_map(const Json* m, const std::vector<Header>& got, const std::string& what,
                          bool ignore_ws) {
    if (!m || !m->is_object()) {
        return pass();
    }
    for (auto it = m->begin(); it != m->end(); ++it) {
        if (!it.value().is_string()) {
            continue;
        }
        bool found = false;
        const std::string v = join_values(got, it.key(), found);
        const std::string want = it.value().get<std::string>();
        const bool eq = ignore_ws ? strip_ws(v) == strip_ws(want) : v == want;
        if (!found || !eq) {
            return failed(what + " header " + it.key() + ": expected \"" + want + "\", actual " +
                          (found ? "\"" + v + "\"" : "absent"));
        }
    }
    return pass();
}

Outcome check_absent(const Json& list_owner, std::string_view key, const std::vector<Header>& got,
                     const std::string& what) {
    for (const std::string& h : jstrs(list_owner, key)) {
        bool found = false;
        const std::string v = join_values(got, h, found);
        if (found) {
            return failed(what + " header " + h + " must be absent, actual \"" + v + "\"");
        }
    }
    return pass();
}

Outcome check_backend_request(const Ctx& x, const Sim& s) {
    const Json* br = jget(x.exp, "backend_request");
    const bool gateway_only = jbool(x.exp, "served_by_gateway");
    if (gateway_only && s.forwarded) {
        return failed("expected the gateway to answer, but it forwarded to " + s.identity);
    }
    if (!br) {
        return pass();
    }
    const std::string source = jstr(*br, "source", "implicit");
    const auto path = jopt_str(*br, "path");
    if (source == "explicit" && path && path->empty()) {
        if (s.forwarded) {
            return failed("expected the gateway to answer, but it forwarded to " + s.identity);
        }
        return pass();
    }
    if (!s.forwarded) {
        return failed("expected a backend response, but the gateway answered " +
                      std::to_string(s.status) + " itself");
    }
    const route::Forwarded& f = s.d.fwd;
    if (path && f.path != *path) {
        return failed("backend saw path " + f.path + ", expected " + *path);
    }
    if (auto m = jopt_str(*br, "method"); m && !m->empty() && f.method != *m) {
        return failed("backend saw method " + f.method + ", expected " + *m);
    }
    if (auto h = jopt_str(*br, "host"); h && !h->empty() && f.host != *h) {
        return failed("backend saw host " + f.host + ", expected " + *h);
    }
    Outcome o = check_headers_map(jget(*br, "headers"), f.headers, "backend request", false);
    if (o.verdict != Verdict::Pass) {
        return o;
    }
    o = check_absent(*br, "absent_headers", f.headers, "backend request");
    if (o.verdict != Verdict::Pass) {
        return o;
    }
    if (source == "implicit") {
        // The backend must see exactly the client's request.
        if (f.path != x.r.target) {
            return failed("backend saw path " + f.path + ", the client sent " + x.r.target);
        }
        if (f.method != x.r.method) {
            return failed("backend saw method " + f.method + ", the client sent " + x.r.method);
        }
        if (jopt_str(x.req, "host") && f.host != x.r.host) {
            return failed("backend saw host " + f.host + ", the client sent " + x.r.host);
        }
        o = check_headers_map(jget(x.req, "headers"), f.headers, "backend request", false);
        if (o.verdict != Verdict::Pass) {
            return o;
        }
    }
    if (auto sni = jopt_str(*br, "tls_sni"); sni && !sni->empty() && x.live) {
        if (!s.backend_tls) {
            return failed("the backend saw a plaintext connection; expected TLS with SNI " + *sni);
        }
        if (s.backend_sni != *sni) {
            return failed("the backend saw TLS SNI \"" + s.backend_sni + "\", expected " + *sni);
        }
    } else if (sni && !sni->empty()) {
        const ir::BackendGroup& g = x.w.out->ir.groups[s.d.group];
        if (!g.tls) {
            return failed("backend connection is not TLS; expected SNI " + *sni);
        }
        if (g.tls_sni != *sni) {
            return failed("backend TLS SNI " + g.tls_sni + ", expected " + *sni);
        }
    }
    if (auto cc = jopt_str(*br, "tls_client_cert"); cc && !cc->empty() && x.live) {
        // "PEM of secret ns/name tls.crt must be among the backend-observed TLS peer
        // certificates"
        const size_t at = cc->find("secret ");
        std::string ref = at == std::string::npos ? "" : cc->substr(at + 7);
        ref = ref.substr(0, ref.find(' '));
        auto it = x.fx.cert_pem.find(ref);
        if (it == x.fx.cert_pem.end()) {
            return failed("no runtime fixture for the expected client certificate (" + *cc + ")");
        }
        auto squash = [](std::string v) {
            std::erase_if(v, [](char c) { return c == '\n' || c == '\r' || c == ' '; });
            return v;
        };
        const std::string want = squash(it->second);
        const bool seen = std::any_of(s.backend_peer_certs.begin(), s.backend_peer_certs.end(),
                                      [&](const std::string& pem) { return squash(pem) == want; });
        if (!seen) {
            return failed("the backend did not receive the client certificate " + ref + " (" +
                          std::to_string(s.backend_peer_certs.size()) +
                          " peer certificate(s) seen)");
        }
    }
    return pass();
}

Outcome check_response_headers(const Ctx& x, const Sim& s) {
    const bool ws = jbool(x.exp, "response_headers_ignore_whitespace");
    Outcome o =
        check_headers_map(jget(x.exp, "response_headers"), s.response_headers, "response", ws);
    if (o.verdict != Verdict::Pass) {
        return o;
    }
    o = check_absent(x.exp, "response_headers_absent", s.response_headers, "response");
    if (o.verdict != Verdict::Pass) {
        return o;
    }
    if (const Json* vv = jget(x.exp, "response_header_valid_values"); vv && vv->is_object()) {
        for (auto it = vv->begin(); it != vv->end(); ++it) {
            bool found = false;
            const std::string v = join_values(s.response_headers, it.key(), found);
            bool ok = false;
            std::string opts;
            if (it.value().is_array()) {
                for (const Json& c : it.value()) {
                    if (!c.is_string()) {
                        continue;
                    }
                    const std::string want = c.get<std::string>();
                    opts += (opts.empty() ? "" : " | ") + want;
                    ok = ok || (found && (ws ? strip_ws(v) == strip_ws(want) : v == want));
                }
            }
            if (!ok) {
                return failed("response header " + it.key() + ": expected one of [" + opts +
                              "], actual " + (found ? "\"" + v + "\"" : "absent"));
            }
        }
    }
    return pass();
}

/// Mirror settings of the matched rule and chosen backend, by group index.
std::vector<ir::Mirror> mirrors_of(const Ctx& x, const Sim& s) {
    std::vector<ir::Mirror> out;
    const ir::Ir& ir = x.w.out->ir;
    if (s.d.m.listener >= ir.listeners.size()) {
        return out;
    }
    if (s.d.m.rule >= ir.rules.size()) {
        return out;
    }
    const ir::Rule& rule = ir.rules[s.d.m.rule];
    out = ir.filters_at(rule.filters).mirrors;
    if (s.d.backend < rule.backends.size()) {
        const auto& bm = ir.filters_at(rule.backends[s.d.backend].filters).mirrors;
        out.insert(out.end(), bm.begin(), bm.end());
    }
    return out;
}

Outcome check_mirrors(const Ctx& x, const Sim& s) {
    const Json* mt = jget(x.exp, "mirrored_to");
    if (!mt || !mt->is_array()) {
        return pass();
    }
    const ir::Ir& ir = x.w.out->ir;
    const std::vector<ir::Mirror> cfg = mirrors_of(x, s);
    for (const Json& m : *mt) {
        const std::string name = jstr(m, "name");
        const std::string ns = jstr(m, "namespace");
        bool sent = false;
        for (uint32_t gi : s.d.fwd.mirrors) {
            if (gi < ir.groups.size() && backend_identity(x.w, gi).starts_with(name) &&
                (ns.empty() || ir.groups[gi].ns == ns)) {
                sent = true;
            }
        }
        if (!sent) {
            std::string got;
            for (uint32_t gi : s.d.fwd.mirrors) {
                got += (got.empty() ? "" : ",") +
                       (gi < ir.groups.size() ? ir.groups[gi].ns + "/" + backend_identity(x.w, gi)
                                              : std::string("?"));
            }
            return failed("request not mirrored to " + ns + "/" + name + " (mirrors: [" + got +
                          "])");
        }
        if (auto pct = jnum(m, "percent")) {
            bool ok = false;
            std::string got;
            for (const ir::Mirror& mi : cfg) {
                if (mi.group >= ir.groups.size() ||
                    !backend_identity(x.w, mi.group).starts_with(name)) {
                    continue;
                }
                const double p = mi.denominator == 0 ? 0.0 : 100.0 * mi.numerator / mi.denominator;
                got = std::to_string(p);
                ok = std::fabs(p - *pct) < 0.5;
            }
            if (!ok) {
                return failed("mirror to " + name + ": percent expected " + std::to_string(*pct) +
                              ", configured " + (got.empty() ? "none" : got));
            }
        }
    }
    return pass();
}

/// Shares of traffic by backend identity over the rule's backends (weights, not samples).
std::map<std::string, double> shares(const World& w, const ir::Rule& rule) {
    std::map<std::string, double> out;
    const uint64_t total = route::total_weight(rule);
    if (total == 0) {
        return out;
    }
    for (const ir::Backend& b : rule.backends) {
        const std::string id = b.status != 0 ? "<invalid:" + std::to_string(b.status) + ">"
                                             : backend_identity(w, b.group);
        out[id] += static_cast<double>(b.weight) / static_cast<double>(total);
    }
    return out;
}

Outcome check_weights(const Json& exp, const World& w, const ir::Rule* rule) {
    const Json* ws = jget(exp, "weights");
    if (!ws || !ws->is_object()) {
        return pass();
    }
    if (!rule) {
        return failed("no rule carries the traffic, cannot distribute by weight");
    }
    double tol = 0.05;
    if (const Json* d = jget(exp, "distribution"); d) {
        if (auto t = jnum(*d, "tolerance_abs_fraction")) {
            tol = *t;
        }
    }
    const std::map<std::string, double> got = shares(w, *rule);
    std::string got_s;
    for (const auto& [k, v] : got) {
        got_s += (got_s.empty() ? "" : ", ") + k + "=" + std::to_string(v).substr(0, 5);
    }
    std::set<std::string> expected;
    for (auto it = ws->begin(); it != ws->end(); ++it) {
        if (!it.value().is_number()) {
            continue;
        }
        expected.insert(it.key());
        const double want = it.value().get<double>();
        double have = 0;
        for (const auto& [k, v] : got) {
            if (k.starts_with(it.key())) {
                have += v;
            }
        }
        if ((want == 0 && have != 0) || std::fabs(want - have) > tol + 1e-9) {
            return failed("share of " + it.key() + " expected " +
                          std::to_string(want).substr(0, 5) + ", actual " +
                          std::to_string(have).substr(0, 5) + " [" + got_s + "]");
        }
    }
    for (const auto& [k, v] : got) {
        const bool known = std::any_of(expected.begin(), expected.end(),
                                       [&](const std::string& e) { return k.starts_with(e); });
        if (!known && v > 0) {
            return failed("traffic to unexpected backend " + k + " [" + got_s + "]");
        }
    }
    return pass();
}

/// Compares one simulated answer with the expectation of an eventually-consistent case.
Outcome compare(const Ctx& x, const Sim& s) {
    if (s.transport_error) {
        return failed(s.error);
    }
    if (x.grpc) {
        const std::string code = jstr(x.exp, "grpc_code", "OK");
        if (code == "OK") {
            if (!s.forwarded || s.status != 200) {
                return failed("gRPC expected OK, actual HTTP " + sim_str(s));
            }
        } else if (code == "Unimplemented") {
            if (s.forwarded || s.status != 404) {
                return failed("gRPC expected Unimplemented (404), actual " + sim_str(s));
            }
            return pass();
        } else {
            return skipped("gRPC code " + code + " is not modelled");
        }
    } else {
        const std::vector<int> want = expected_statuses(x.exp, 200);
        if (!status_ok(want, s.status)) {
            return failed("status expected " + list_str(want) + ", actual " + sim_str(s));
        }
        if (s.status >= 300 && s.status <= 308) {
            return check_redirect(x, s);
        }
        if (s.status != 200 && s.status != 204) {
            return pass();
        }
        Outcome o = check_backend_request(x, s);
        if (o.verdict != Verdict::Pass) {
            return o;
        }
    }
    if (auto ns = jopt_str(x.exp, "namespace"); ns && *ns != s.ns) {
        return failed("answered from namespace \"" + s.ns + "\", expected \"" + *ns + "\"");
    }
    if (auto b = jopt_str(x.exp, "backend"); b && !s.identity.starts_with(*b)) {
        return failed("answered by " + s.ns + "/" + s.identity + ", expected " + *b);
    }
    if (!x.grpc) {
        Outcome o = check_response_headers(x, s);
        if (o.verdict != Verdict::Pass) {
            return o;
        }
        if (!x.live) { // traffic mode reads the mirror pods' logs instead
            o = check_mirrors(x, s);
            if (o.verdict != Verdict::Pass) {
                return o;
            }
        }
    }
    return pass();
}

const std::set<std::string>& known_http_expect_keys() {
    static const std::set<std::string> k = {"status",
                                            "backend",
                                            "namespace",
                                            "backend_request",
                                            "request_path_rewritten",
                                            "request_host_rewritten",
                                            "request_headers_set",
                                            "request_headers_absent",
                                            "response_headers",
                                            "response_headers_absent",
                                            "response_header_valid_values",
                                            "response_headers_ignore_whitespace",
                                            "served_by_gateway",
                                            "redirect",
                                            "mirrored_to",
                                            "grpc_code",
                                            "weights",
                                            "distribution"};
    return k;
}

/// Why an HTTP case cannot be judged from the IR, or "".
std::string live_only_reason(const Ctx& x, const std::string& protocol,
                             const std::string& assertion) {
    if (protocol == "WS" || assertion.find("websocket") != std::string::npos) {
        return "websocket frames need live traffic";
    }
    if (protocol == "H2C_PRIOR_KNOWLEDGE") {
        return "h2c prior-knowledge protocol handling needs live traffic";
    }
    const std::string path = jstr(x.req, "path");
    if (path.find("delay=") != std::string::npos) {
        return "timeouts (?delay) need live traffic";
    }
    if (path.starts_with("/retry") || assertion.find("retry") != std::string::npos) {
        return "retries need live traffic";
    }
    if (jget(x.req, "body")) {
        return "request bodies are not modelled";
    }
    for (auto it = x.exp.begin(); it != x.exp.end(); ++it) {
        if (!known_http_expect_keys().count(it.key())) {
            return "expect." + it.key() + " needs live traffic";
        }
    }
    if (const Json* br = jget(x.exp, "backend_request"); br && br->is_object()) {
        for (auto it = br->begin(); it != br->end(); ++it) {
            static const std::set<std::string> k = {"source",  "path",           "method", "host",
                                                    "headers", "absent_headers", "tls_sni"};
            if (!k.count(it.key())) {
                return "expect.backend_request." + it.key() + " needs live traffic";
            }
        }
    }
    return "";
}

/// Candidate picks: one per backend of the matched rule that has weight.
std::vector<uint64_t> candidate_picks(const ir::Ir& ir, const route::Decision& d) {
    std::vector<uint64_t> picks;
    if (d.m.listener < ir.listeners.size() && d.m.rule < ir.rules.size()) {
        const ir::Rule& rule = ir.rules[d.m.rule];
        uint64_t acc = 0;
        for (const ir::Backend& b : rule.backends) {
            if (b.weight > 0) {
                picks.push_back(acc);
            }
            acc += b.weight;
        }
    }
    if (picks.empty()) {
        picks.push_back(0);
    }
    return picks;
}

const ir::Rule* matched_rule(const ir::Ir& ir, const route::Decision& d) {
    if (d.m.outcome != route::Outcome::Forward || d.m.listener >= ir.listeners.size() ||
        d.m.rule >= ir.rules.size()) {
        return nullptr;
    }
    return &ir.rules[d.m.rule];
}

Outcome evaluate_http(Ctx& x, const std::string& protocol, const std::string& assertion) {
    if (std::string why = live_only_reason(x, protocol, assertion); !why.empty()) {
        return skipped(why);
    }
    if (std::string why = build_request(x); !why.empty()) {
        return failed(why);
    }
    const ir::Ir& ir = x.w.out->ir;
    const Sim first = simulate(x, 0);
    std::vector<Sim> sims;
    for (uint64_t p : candidate_picks(ir, first.d)) {
        sims.push_back(p == 0 ? first : simulate(x, p));
    }
    if (assertion == "expect_request_error") {
        for (const Sim& s : sims) {
            if (!s.transport_error) {
                return failed("expected the request to fail (TLS handshake/connection), got HTTP " +
                              sim_str(s));
            }
        }
        return pass();
    }
    if (assertion == "expect_failure_not_200") {
        for (const Sim& s : sims) {
            if (s.transport_error) {
                return failed("expected non-200 HTTP responses, got a transport error: " + s.error);
            }
            if (s.status == 200) {
                if (s.forwarded && s.d.group < ir.groups.size() && ir.groups[s.d.group].tls) {
                    return skipped("the IR forwards over backend TLS; whether the backend "
                                   "handshake fails needs live traffic");
                }
                return failed("expected never 200, got " + sim_str(s));
            }
        }
        return pass();
    }
    if (assertion.find("eventually_consistent") == std::string::npos &&
        assertion.find("weighted_distribution") == std::string::npos) {
        return skipped("assertion " + assertion + " is not modelled for HTTP");
    }
    const bool weighted = jget(x.exp, "weights") != nullptr;
    Json no_backend = x.exp;
    no_backend.erase("backend");
    // Distribution cases name no single backend: per request only the rest is compared.
    const Ctx y{x.c, x.req, weighted ? no_backend : x.exp, x.w, x.fx, x.r, x.grpc, false};
    for (const Sim& s : sims) {
        Outcome o = compare(y, s);
        if (o.verdict != Verdict::Pass) {
            if (sims.size() > 1 && o.verdict == Verdict::Fail) {
                o.why += " (pick " + std::to_string(&s - sims.data()) + " of " +
                         std::to_string(sims.size()) + ")";
            }
            return o;
        }
    }
    return check_weights(x.exp, x.w, matched_rule(ir, first.d));
}

// ------------------------------------------------------------------ L4 (TLS, TCP, UDP)

struct L4Choice {
    const ir::Listener* listener = nullptr;
    const ir::Rule* rule = nullptr;
    std::string why;
};

L4Choice choose_l4(const Ctx& x, const std::string& protocol, const std::string& sni) {
    L4Choice out;
    const ir::Ir& ir = x.w.out->ir;
    const NsName gw = split_ns_name(jstr(x.c, "gateway"));
    const ir::Gateway* g = nullptr;
    for (const ir::Gateway& cand : ir.gateways) {
        if (cand.ns == gw.ns && cand.name == gw.name) {
            g = &cand;
        }
    }
    if (!g) {
        out.why = "no Gateway " + gw.ns + "/" + gw.name + " in the IR";
        return out;
    }
    const auto port = jint(x.c, "port");
    const std::string lname = jstr(x.c, "listener");
    int best_rank = -1;
    for (uint32_t li : g->listeners) {
        const ir::Listener& l = ir.listeners[li];
        if ((port && l.port != *port) || (!lname.empty() && l.name != lname)) {
            continue;
        }
        int rank = 0;
        if (protocol == "TCP") {
            if (l.protocol != ir::Protocol::TCP) {
                continue;
            }
        } else if (protocol == "UDP") {
            if (l.protocol != ir::Protocol::UDP) {
                continue;
            }
        } else {
            if (l.protocol != ir::Protocol::TLS || !hosts::matches(l.hostname, sni)) {
                continue;
            }
            if (!l.hostname.empty()) {
                rank = l.hostname.starts_with("*.") ? 1 + static_cast<int>(l.hostname.size())
                                                    : 100000 + static_cast<int>(l.hostname.size());
            }
        }
        if (rank > best_rank) {
            best_rank = rank;
            out.listener = &l;
        }
    }
    if (!out.listener) {
        out.why = "no " + protocol + " listener" +
                  (port ? " on port " + std::to_string(*port) : "") +
                  (lname.empty() ? "" : " named " + lname) + " for this request";
        return out;
    }
    const ir::Listener& l = *out.listener;
    if (protocol == "TLS") {
        for (const ir::SniRoute& sr : l.sni_routes) {
            if (hosts::matches(sr.hostname, sni) && sr.rule < ir.rules.size()) {
                out.rule = &ir.rules[sr.rule];
                return out;
            }
        }
        out.why = "no TLSRoute hostname matches SNI " + sni;
        return out;
    }
    if (l.l4_rule == ir::kNone || l.l4_rule >= ir.rules.size()) {
        out.why = "listener " + l.name + " has no route";
        return out;
    }
    out.rule = &ir.rules[l.l4_rule];
    return out;
}

Outcome evaluate_l4(Ctx& x, const std::string& protocol, const std::string& assertion) {
    if (assertion == "udp_dns_query") {
        return skipped("DNS payloads need live traffic");
    }
    std::string sni;
    if (const Json* tls = jget(x.req, "tls"); tls) {
        sni = jstr(*tls, "server_name");
    }
    if (sni.empty()) {
        sni = jstr(x.req, "sni");
    }
    static const std::set<std::string> known = {"backend",           "namespace",
                                                "backend_is_tls",    "backend_observed_sni",
                                                "service",           "connection_rejected",
                                                "any_echo_response", "only_backend",
                                                "never_backend",     "weights",
                                                "distribution"};
    for (auto it = x.exp.begin(); it != x.exp.end(); ++it) {
        if (!known.count(it.key())) {
            return skipped("expect." + it.key() + " needs live traffic");
        }
    }
    const ir::Ir& ir = x.w.out->ir;
    const L4Choice ch = choose_l4(x, protocol, sni);
    std::vector<const ir::Backend*> live;
    if (ch.rule) {
        for (const ir::Backend& b : ch.rule->backends) {
            if (b.weight > 0) {
                live.push_back(&b);
            }
        }
    }
    if (assertion == "tls_connection_rejected" || jbool(x.exp, "connection_rejected")) {
        if (!ch.rule) {
            return pass();
        }
        for (const ir::Backend* b : live) {
            if (b->status == 0) {
                return failed("connection would be forwarded to " + ir.groups[b->group].ns + "/" +
                              ir.groups[b->group].name + " instead of being rejected");
            }
        }
        return pass();
    }
    if (!ch.rule) {
        return failed(ch.why);
    }
    if (jget(x.exp, "weights")) {
        return check_weights(x.exp, x.w, ch.rule);
    }
    if (live.empty()) {
        return failed("the route has no backend with weight");
    }
    for (const ir::Backend* b : live) {
        if (b->status != 0) {
            return failed("a share of connections goes to an invalid backend (" + b->reason + ")");
        }
        const ir::BackendGroup& g = ir.groups[b->group];
        const std::string id = backend_identity(x.w, b->group);
        const std::string what = g.ns + "/" + id;
        if (auto want = jopt_str(x.exp, "backend"); want && !id.starts_with(*want)) {
            return failed("connection reaches " + what + ", expected " + *want);
        }
        if (auto want = jopt_str(x.exp, "only_backend"); want && !id.starts_with(*want)) {
            return failed("connection reaches " + what + ", expected only " + *want);
        }
        if (auto never = jopt_str(x.exp, "never_backend"); never && id.starts_with(*never)) {
            return failed("connection reaches " + what + ", which must never get traffic");
        }
        if (auto svc = jopt_str(x.exp, "service"); svc && g.name != *svc) {
            return failed("datagrams reach Service " + g.ns + "/" + g.name + ", expected " + *svc);
        }
        if (auto ns = jopt_str(x.exp, "namespace"); ns && g.ns != *ns) {
            return failed("connection reaches namespace " + g.ns + ", expected " + *ns);
        }
        const bool passthrough = ch.listener->tls_mode == ir::TlsMode::Passthrough;
        const bool backend_tls = (protocol == "TLS" && passthrough) || g.tls;
        if (const Json* bt = jget(x.exp, "backend_is_tls");
            bt && bt->is_boolean() && bt->get<bool>() != backend_tls) {
            return failed(std::string("backend connection TLS expected ") +
                          (bt->get<bool>() ? "true" : "false") + ", actual " +
                          (backend_tls ? "true" : "false"));
        }
        if (auto want = jopt_str(x.exp, "backend_observed_sni")) {
            const std::string got = passthrough ? sni : (g.tls ? g.tls_sni : "");
            if (got != *want) {
                return failed("backend observes SNI \"" + got + "\", expected " + *want);
            }
        }
    }
    return pass();
}

} // namespace

std::string pod_ip(const cp::Store& store, const std::string& ns, const std::string& deployment,
                   bool v6) {
    const auto ds = sorted_deployments(store);
    for (size_t i = 0; i < ds.size(); ++i) {
        if (ds[i]->meta.ns == ns && ds[i]->meta.name == deployment) {
            return ip_for_index(i, v6);
        }
    }
    return "";
}

std::string backend_identity(const World& w, uint32_t group) {
    const ir::Ir& ir = w.out->ir;
    if (group >= ir.groups.size()) {
        return "<no backend>";
    }
    const ir::BackendGroup& g = ir.groups[group];
    const cp::Service* svc = find_service(*w.store, g.ns, g.name);
    const auto ds = sorted_deployments(*w.store);
    if (svc && !svc->selector.empty()) {
        for (const cp::Deployment* d : ds) {
            if (d->meta.ns != g.ns) {
                continue;
            }
            const bool all =
                std::all_of(svc->selector.begin(), svc->selector.end(), [&](const auto& kv) {
                    auto it = d->pod_labels.find(kv.first);
                    return it != d->pod_labels.end() && it->second == kv.second;
                });
            if (all) {
                return d->meta.name;
            }
        }
    }
    for (const ir::Endpoint& e : g.endpoints) {
        for (size_t i = 0; i < ds.size(); ++i) {
            if (e.address == ip_for_index(i, false) || e.address == ip_for_index(i, true)) {
                return ds[i]->meta.name;
            }
        }
    }
    return g.name;
}

Outcome evaluate_case(const Json& c, const World& w, const Fixtures& fx) {
    try {
        const Json* req = jget(c, "request");
        const Json* exp = jget(c, "expect");
        if (!req || !exp || !req->is_object() || !exp->is_object()) {
            return skipped("case without request or expect object");
        }
        const std::string protocol = jstr(*req, "protocol", "HTTP");
        const std::string assertion = jstr(c, "assertion", "eventually_consistent");
        if (assertion.starts_with("mesh")) {
            return skipped("mesh cases are not applicable to an edge gateway");
        }
        Ctx x{c, *req, *exp, w, fx, {}, protocol == "GRPC", false};
        if (protocol == "TCP" || protocol == "UDP" || protocol == "TLS") {
            return evaluate_l4(x, protocol, assertion);
        }
        return evaluate_http(x, protocol, assertion);
    } catch (const Json::exception& e) {
        return skipped(std::string("malformed case: ") + e.what());
    }
}

Outcome compare_live(const Json& c, const LiveExchange& lx, const Fixtures* fx) {
    try {
        const Json* req = jget(c, "request");
        const Json* exp = jget(c, "expect");
        if (!req || !exp || !req->is_object() || !exp->is_object()) {
            return skipped("case without request or expect object");
        }
        static const World kNoIr;
        static const Fixtures kNoFixtures;
        Ctx x{c, *req, *exp, kNoIr, fx ? *fx : kNoFixtures, {}, false, true};
        x.r.scheme = lx.scheme;
        x.r.method = lx.method;
        x.r.target = lx.target;
        x.r.host = lx.host;
        Sim s;
        s.transport_error = lx.transport_error;
        s.error = lx.error;
        s.status = lx.status;
        s.forwarded = lx.echoed;
        for (const auto& [k, v] : lx.headers) {
            s.response_headers.push_back({k, v});
        }
        if (lx.echoed) {
            s.identity = lx.pod;
            s.ns = lx.ns;
            s.d.fwd.method = lx.backend_method;
            s.d.fwd.path = lx.backend_path;
            s.d.fwd.host = lx.backend_host;
            for (const auto& [k, v] : lx.backend_headers) {
                s.d.fwd.headers.push_back({k, v});
            }
            s.backend_tls = lx.backend_tls;
            s.backend_sni = lx.backend_sni;
            s.backend_peer_certs = lx.backend_peer_certs;
        }
        return compare(x, s);
    } catch (const Json::exception& e) {
        return skipped(std::string("malformed case: ") + e.what());
    }
}

} // namespace sluice::conformance
