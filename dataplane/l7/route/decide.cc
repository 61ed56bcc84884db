#include "decide.h"

#include <algorithm>
#include <memory>
#include <unordered_map>

#include <re2/re2.h>

#include "hostnames.h"

namespace sluice::route {

namespace {

using hosts::iequals;

/// Regexes are compiled once per thread and pattern. The set is bounded by the IR's
/// patterns. (The L7 engine will precompile them with the table; see issue 4.)
const RE2& regex(const std::string& pattern) {
    thread_local std::unordered_map<std::string, std::unique_ptr<RE2>> cache;
    auto it = cache.find(pattern);
    if (it == cache.end()) {
        RE2::Options o;
        o.set_log_errors(false);
        it = cache.emplace(pattern, std::make_unique<RE2>(pattern, o)).first;
    }
    return *it->second;
}

bool regex_full(const std::string& pattern, std::string_view s) {
    const RE2& re = regex(pattern);
    return re.ok() && RE2::FullMatch(re2::StringPiece(s.data(), s.size()), re);
}

std::string_view path_of(std::string_view target) noexcept {
    const size_t q = target.find('?');
    return q == std::string_view::npos ? target : target.substr(0, q);
}

std::string_view query_of(std::string_view target) noexcept {
    const size_t q = target.find('?');
    return q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

std::string_view trim_slash(std::string_view prefix) noexcept {
    while (prefix.size() > 1 && prefix.back() == '/') {
        prefix.remove_suffix(1);
    }
    return prefix;
}

bool prefix_matches(std::string_view prefix, std::string_view path) noexcept {
    prefix = trim_slash(prefix);
    if (prefix == "/") {
        return true;
    }
    return path.starts_with(prefix) && (path.size() == prefix.size() || path[prefix.size()] == '/');
}

const Header* find_header(const Request& req, std::string_view name) noexcept {
    for (const Header& h : req.headers) {
        if (iequals(h.name, name)) {
            return &h;
        }
    }
    return nullptr;
}

bool query_value(std::string_view query, std::string_view name, std::string_view& value) noexcept {
    while (!query.empty()) {
        const size_t amp = query.find('&');
        std::string_view kv = query.substr(0, amp);
        const size_t eq = kv.find('=');
        const std::string_view k = kv.substr(0, eq);
        if (k == name) {
            value = eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
            return true;
        }
        if (amp == std::string_view::npos) {
            break;
        }
        query.remove_prefix(amp + 1);
    }
    return false;
}

bool value_matches(const ir::HeaderMatch& m, std::string_view v) {
    return m.type == ir::MatchType::Exact ? v == m.value : regex_full(m.value, v);
}

bool http_match(const ir::HttpMatch& m, const Request& req) {
    const std::string_view path = path_of(req.target);
    switch (m.path_type) {
    case ir::PathType::Exact:
        if (path != m.path) {
            return false;
        }
        break;
    case ir::PathType::Prefix:
        if (!prefix_matches(m.path, path)) {
            return false;
        }
        break;
    case ir::PathType::Regex:
        if (!regex_full(m.path, path)) {
            return false;
        }
        break;
    }
    if (!m.method.empty() && m.method != req.method) {
        return false;
    }
    for (const ir::HeaderMatch& h : m.headers) {
        const Header* got = find_header(req, h.name);
        if (!got || !value_matches(h, got->value)) {
            return false;
        }
    }
    const std::string_view query = query_of(req.target);
    for (const ir::HeaderMatch& q : m.query) {
        std::string_view v;
        if (!query_value(query, q.name, v) || !value_matches(q, v)) {
            return false;
        }
    }
    return true;
}

bool grpc_match(const ir::GrpcMatch& m, const Request& req) {
    // :path is /package.Service/Method
    std::string_view path = path_of(req.target);
    if (path.empty() || path[0] != '/') {
        return false;
    }
    path.remove_prefix(1);
    const size_t slash = path.find('/');
    if (slash == std::string_view::npos) {
        return false;
    }
    const std::string_view service = path.substr(0, slash);
    const std::string_view method = path.substr(slash + 1);
    if (m.type == ir::MatchType::Exact) {
        if ((!m.service.empty() && service != m.service) || (!m.method.empty() && method != m.method)) {
            return false;
        }
    } else {
        if ((!m.service.empty() && !regex_full(m.service, service)) ||
            (!m.method.empty() && !regex_full(m.method, method))) {
            return false;
        }
    }
    for (const ir::HeaderMatch& h : m.headers) {
        const Header* got = find_header(req, h.name);
        if (!got || !value_matches(h, got->value)) {
            return false;
        }
    }
    return true;
}

/// The most specific listener on the request's gateway and port whose hostname matches
/// `host`, among listeners accepted by `want`.
template <class Pred>
uint32_t select_listener(const ir::Ir& ir, const ir::Gateway& g, uint16_t port,
                         std::string_view host, Pred want) noexcept {
    uint32_t best = ir::kNone;
    int best_rank = -1;
    for (uint32_t li : g.listeners) {
        const ir::Listener& l = ir.listeners[li];
        if (l.port != port || !want(l) || !hosts::matches(l.hostname, host)) {
            continue;
        }
        // exact > longer wildcard > shorter wildcard > any
        int rank = 0;
        if (!l.hostname.empty()) {
            rank = l.hostname.starts_with("*.") ? 1 + static_cast<int>(l.hostname.size())
                                                : 100000 + static_cast<int>(l.hostname.size());
        }
        if (rank > best_rank) {
            best_rank = rank;
            best = li;
        }
    }
    return best;
}

} // namespace

Match match(const ir::Ir& ir, const Request& req) noexcept {
    Match m;
    const ir::Gateway* gw = nullptr;
    for (const ir::Gateway& g : ir.gateways) {
        if (g.ns == req.gateway_ns && g.name == req.gateway_name) {
            gw = &g;
            break;
        }
    }
    if (!gw) {
        m.why = "no such gateway";
        return m;
    }
    const std::string_view host = hosts::strip_port(req.host);
    const bool tls = req.scheme == "https";
    auto http_kind = [tls](const ir::Listener& l) {
        return tls ? l.protocol == ir::Protocol::HTTPS : l.protocol == ir::Protocol::HTTP;
    };
    if (tls) {
        m.sni_listener = select_listener(ir, *gw, req.port, req.sni, http_kind);
        if (m.sni_listener == ir::kNone) {
            m.why = "no HTTPS listener for this SNI: the handshake fails";
            return m;
        }
    }
    m.listener = select_listener(ir, *gw, req.port, host, http_kind);
    if (m.listener == ir::kNone) {
        m.outcome = tls ? Outcome::Respond : Outcome::NoListener;
        if (tls) {
            m.status = 404;
            m.listener = m.sni_listener;
            m.why = "no listener for this host";
            return m;
        }
        // Plaintext: is anything listening on this port at all?
        for (uint32_t li : gw->listeners) {
            if (ir.listeners[li].port == req.port && http_kind(ir.listeners[li])) {
                m.outcome = Outcome::Respond;
                m.status = 404;
                m.why = "no listener for this host";
                return m;
            }
        }
        m.why = "nothing listens on this port";
        return m;
    }
    if (tls && m.listener != m.sni_listener) {
        m.outcome = Outcome::Respond;
        m.status = 421;
        m.why = "Host selects another listener than the TLS SNI (misdirected request)";
        return m;
    }
    const ir::Listener& l = ir.listeners[m.listener];
    for (const ir::HostGroup& hg : l.host_groups) {
        if (!hosts::matches(hg.hostname, host)) {
            continue;
        }
        if (req.grpc) {
            for (uint32_t mi : hg.grpc) {
                if (grpc_match(l.grpc_matches[mi], req)) {
                    m.outcome = Outcome::Forward;
                    m.match = mi;
                    m.rule = l.grpc_matches[mi].rule;
                    m.why = "matched";
                    return m;
                }
            }
        } else {
            for (uint32_t mi : hg.http) {
                if (http_match(l.http_matches[mi], req)) {
                    m.outcome = Outcome::Forward;
                    m.match = mi;
                    m.rule = l.http_matches[mi].rule;
                    m.why = "matched";
                    return m;
                }
            }
        }
    }
    m.outcome = Outcome::Respond;
    m.status = 404;
    m.why = "no rule matches";
    return m;
}

uint64_t total_weight(const ir::Rule& r) noexcept {
    uint64_t t = 0;
    for (const ir::Backend& b : r.backends) {
        t += b.weight;
    }
    return t;
}

void apply_header_ops(const ir::HeaderOps& ops, std::vector<Header>& headers) {
    auto erase = [&](std::string_view name) {
        std::erase_if(headers, [&](const Header& h) { return iequals(h.name, name); });
    };
    for (const auto& [name, value] : ops.set) {
        erase(name);
        headers.push_back({name, value});
    }
    for (const auto& [name, value] : ops.add) {
        headers.push_back({name, value});
    }
    for (const std::string& name : ops.remove) {
        erase(name);
    }
}

std::string replace_prefix(std::string_view path, std::string_view prefix, std::string_view with) {
    prefix = trim_slash(prefix);
    std::string_view rest = prefix == "/" ? path : path.substr(std::min(prefix.size(), path.size()));
    std::string out(with);
    if (!out.empty() && out.back() == '/' && !rest.empty() && rest.front() == '/') {
        out.pop_back();
    }
    if (!rest.empty() && rest.front() != '/' && (out.empty() || out.back() != '/')) {
        out.push_back('/');
    }
    out.append(rest);
    if (out.empty()) {
        out = "/";
    }
    return out;
}

namespace {

bool origin_allowed(const ir::Cors& c, std::string_view origin) {
    for (const std::string& o : c.allow_origins) {
        if (o == "*" || o == origin) {
            return true;
        }
        // "https://*.bar.com": scheme must match, host must be a subdomain
        const size_t star = o.find("://*.");
        if (star != std::string::npos) {
            const std::string_view scheme = std::string_view(o).substr(0, star + 3);
            const std::string_view suffix = std::string_view(o).substr(star + 4); // ".bar.com"
            if (origin.starts_with(scheme) && origin.size() > scheme.size() + suffix.size() &&
                origin.ends_with(suffix)) {
                return true;
            }
        }
    }
    return false;
}

std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const std::string& x : v) {
        if (!s.empty()) {
            s += ", ";
        }
        s += x;
    }
    return s;
}

/// Applies a CORS policy. Returns true when the request is a preflight the gateway answers.
bool apply_cors(const ir::Cors& c, const Request& req, Decision& d) {
    const Header* origin = find_header(req, "origin");
    if (!origin) {
        return false;
    }
    const Header* acrm = find_header(req, "access-control-request-method");
    const bool preflight = req.method == "OPTIONS" && acrm;
    auto& out = d.fwd.response_headers;
    if (origin_allowed(c, origin->value)) {
        const bool wildcard =
            !c.allow_credentials &&
            std::find(c.allow_origins.begin(), c.allow_origins.end(), "*") != c.allow_origins.end();
        out.emplace_back("access-control-allow-origin", wildcard ? "*" : origin->value);
        if (c.allow_credentials) {
            out.emplace_back("access-control-allow-credentials", "true");
        }
        if (preflight) {
            const bool any_method = std::find(c.allow_methods.begin(), c.allow_methods.end(),
                                              "*") != c.allow_methods.end();
            out.emplace_back("access-control-allow-methods",
                             any_method ? (c.allow_credentials ? acrm->value : "*")
                                        : join(c.allow_methods));
            const Header* acrh = find_header(req, "access-control-request-headers");
            const bool any_header = std::find(c.allow_headers.begin(), c.allow_headers.end(),
                                              "*") != c.allow_headers.end();
            if (any_header) {
                out.emplace_back("access-control-allow-headers",
                                 c.allow_credentials && acrh ? acrh->value : "*");
            } else if (!c.allow_headers.empty()) {
                out.emplace_back("access-control-allow-headers", join(c.allow_headers));
            }
            out.emplace_back("access-control-max-age", std::to_string(c.max_age));
        }
        if (!c.expose_headers.empty()) {
            out.emplace_back("access-control-expose-headers", join(c.expose_headers));
        }
    }
    return preflight;
}

std::string location(const ir::Filters& f, const ir::Listener& l, const ir::HttpMatch* m,
                     const Request& req) {
    const std::string scheme = f.redirect_scheme.empty() ? req.scheme : f.redirect_scheme;
    const std::string host =
        f.redirect_host.empty() ? std::string(hosts::strip_port(req.host)) : f.redirect_host;
    uint16_t port = f.redirect_port;
    if (port == 0) {
        port = !f.redirect_scheme.empty() ? (scheme == "https" ? 443 : 80) : l.port;
    }
    std::string out = scheme + "://" + host;
    const bool default_port = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
    if (!default_port) {
        out += ":" + std::to_string(port);
    }
    const std::string_view path = path_of(req.target);
    const std::string_view query = query_of(req.target);
    switch (f.redirect_path.type) {
    case ir::PathModType::None:
        out.append(path);
        break;
    case ir::PathModType::Full:
        out += f.redirect_path.value;
        break;
    case ir::PathModType::Prefix:
        out += replace_prefix(path, m ? m->path : "/", f.redirect_path.value);
        break;
    }
    if (!query.empty()) {
        out += "?";
        out.append(query);
    }
    return out;
}

void apply_rewrite(const ir::Filters& f, const ir::HttpMatch* m, Decision& d) {
    if (!f.rewrite) {
        return;
    }
    if (!f.rewrite_host.empty()) {
        d.fwd.host = f.rewrite_host;
    }
    const std::string_view target = d.fwd.path;
    const std::string path(path_of(target));
    const std::string query(query_of(target));
    std::string np = path;
    if (f.rewrite_path.type == ir::PathModType::Full) {
        np = f.rewrite_path.value;
    } else if (f.rewrite_path.type == ir::PathModType::Prefix) {
        np = replace_prefix(path, m ? m->path : "/", f.rewrite_path.value);
    }
    d.fwd.path = query.empty() ? np : np + "?" + query;
}

} // namespace

Decision decide(const ir::Ir& ir, const Request& req, uint64_t pick) {
    Decision d;
    d.m = match(ir, req);
    d.outcome = d.m.outcome;
    d.status = d.m.status;
    if (d.m.outcome != Outcome::Forward) {
        return d;
    }
    const ir::Listener& l = ir.listeners[d.m.listener];
    const ir::Rule& rule = ir.rules[d.m.rule];
    const ir::HttpMatch* hm = req.grpc ? nullptr : &l.http_matches[d.m.match];
    d.fwd.method = req.method;
    d.fwd.path = req.target;
    d.fwd.host = req.host;
    d.fwd.headers = req.headers;
    const ir::Filters& f = ir.filters_at(rule.filters);
    if (f.fixed_status != 0) {
        d.outcome = Outcome::Respond;
        d.status = f.fixed_status;
        return d;
    }
    if (f.cors && apply_cors(f.cors_policy, req, d)) {
        d.outcome = Outcome::Respond;
        d.status = 200;
        return d;
    }
    if (f.redirect) {
        d.outcome = Outcome::Redirect;
        d.status = f.redirect_status;
        d.location = location(f, l, hm, req);
        return d;
    }
    apply_header_ops(f.request_headers, d.fwd.headers);
    apply_rewrite(f, hm, d);
    for (const ir::Mirror& mi : f.mirrors) {
        if (mi.group != ir::kNone && mi.numerator > 0) {
            d.fwd.mirrors.push_back(mi.group);
        }
    }
    d.fwd.response_ops = f.response_headers;
    const uint64_t total = total_weight(rule);
    if (rule.backends.empty() || total == 0) {
        d.outcome = Outcome::Respond;
        d.status = 500;
        return d;
    }
    uint64_t x = pick % total;
    for (uint32_t i = 0; i < rule.backends.size(); ++i) {
        const ir::Backend& b = rule.backends[i];
        if (x < b.weight) {
            d.backend = i;
            break;
        }
        x -= b.weight;
    }
    const ir::Backend& b = rule.backends[d.backend];
    if (b.status != 0) {
        d.outcome = Outcome::Respond;
        d.status = b.status;
        return d;
    }
    d.group = b.group;
    const ir::Filters& bf = ir.filters_at(b.filters);
    if (bf.fixed_status != 0) {
        d.outcome = Outcome::Respond;
        d.status = bf.fixed_status;
        return d;
    }
    apply_header_ops(bf.request_headers, d.fwd.headers);
    apply_rewrite(bf, hm, d);
    for (const ir::Mirror& mi : bf.mirrors) {
        if (mi.group != ir::kNone && mi.numerator > 0) {
            d.fwd.mirrors.push_back(mi.group);
        }
    }
    for (const auto& kv : bf.response_headers.set) {
        d.fwd.response_ops.set.push_back(kv);
    }
    for (const auto& kv : bf.response_headers.add) {
        d.fwd.response_ops.add.push_back(kv);
    }
    for (const auto& n : bf.response_headers.remove) {
        d.fwd.response_ops.remove.push_back(n);
    }
    return d;
}

} // namespace sluice::route
