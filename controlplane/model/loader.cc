#include "loader.h"

#include <algorithm>
#include <charconv>
#include <ctime>
#include <initializer_list>
#include <set>

#include <re2/re2.h>

namespace sluice::cp {

bool LabelSelector::matches(const std::map<std::string, std::string>& labels) const {
    for (const auto& [k, v] : match_labels) {
        auto it = labels.find(k);
        if (it == labels.end() || it->second != v) {
            return false;
        }
    }
    for (const LabelSelectorReq& r : match_expressions) {
        auto it = labels.find(r.key);
        const bool has = it != labels.end();
        const bool in =
            has && std::find(r.values.begin(), r.values.end(), it->second) != r.values.end();
        if ((r.op == "In" && !in) || (r.op == "NotIn" && in) || (r.op == "Exists" && !has) ||
            (r.op == "DoesNotExist" && has)) {
            return false;
        }
    }
    return true;
}

const char* route_kind_name(RouteKind k) noexcept {
    switch (k) {
    case RouteKind::HTTP:
        return "HTTPRoute";
    case RouteKind::GRPC:
        return "GRPCRoute";
    case RouteKind::TLS:
        return "TLSRoute";
    case RouteKind::TCP:
        return "TCPRoute";
    case RouteKind::UDP:
        return "UDPRoute";
    }
    return "?";
}

bool valid_hostname(const std::string& h, bool allow_wildcard) noexcept {
    if (h.empty() || h.size() > 253) {
        return false;
    }
    std::string_view s = h;
    if (s.starts_with("*.")) {
        if (!allow_wildcard) {
            return false;
        }
        s.remove_prefix(2);
    }
    size_t start = 0;
    while (start <= s.size()) {
        size_t dot = s.find('.', start);
        if (dot == std::string_view::npos) {
            dot = s.size();
        }
        std::string_view label = s.substr(start, dot - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
            return false;
        }
        for (char c : label) {
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
                return false;
            }
        }
        start = dot + 1;
        if (dot == s.size()) {
            break;
        }
    }
    return true;
}

int64_t parse_duration_ms(const std::string& s) noexcept {
    // ^([0-9]{1,5}(h|m|s|ms)){1,4}$
    if (s.empty()) {
        return -1;
    }
    int64_t total = 0;
    size_t i = 0;
    int parts = 0;
    while (i < s.size()) {
        size_t j = i;
        while (j < s.size() && s[j] >= '0' && s[j] <= '9') {
            ++j;
        }
        if (j == i || j - i > 5 || j == s.size()) {
            return -1;
        }
        int64_t v = 0;
        std::from_chars(s.data() + i, s.data() + j, v);
        if (s.compare(j, 2, "ms") == 0) {
            total += v;
            j += 2;
        } else if (s[j] == 'h') {
            total += v * 3600000;
            ++j;
        } else if (s[j] == 'm') {
            total += v * 60000;
            ++j;
        } else if (s[j] == 's') {
            total += v * 1000;
            ++j;
        } else {
            return -1;
        }
        if (++parts > 4) {
            return -1;
        }
        i = j;
    }
    return total;
}

namespace {

bool dns_label(const std::string& s) {
    if (s.empty() || s.size() > 63) {
        return false;
    }
    for (char c : s) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return false;
        }
    }
    return s.front() != '-' && s.back() != '-';
}

bool dns_subdomain(const std::string& s) {
    if (s.empty() || s.size() > 253) {
        return false;
    }
    for (char c : s) {
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) {
            return false;
        }
    }
    return s.front() != '-' && s.back() != '-' && s.front() != '.' && s.back() != '.';
}

bool http_token(const std::string& s) {
    if (s.empty() || s.size() > 256) {
        return false;
    }
    for (char c : s) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool header_value_ok(const std::string& s) {
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u == '\r' || u == '\n' || u == 0 || (u < 0x20 && u != '\t') || u == 0x7f) {
            return false;
        }
    }
    return s.size() <= 4096;
}

int64_t parse_rfc3339(const std::string& s) {
    std::tm tm{};
    int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
    if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d", &y, &mo, &d, &h, &mi, &sec) != 6) {
        return 0;
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    return static_cast<int64_t>(timegm(&tm));
}

std::string base64_decode(const std::string& in, bool& ok) {
    static const std::string kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    uint32_t buf = 0;
    int bits = 0;
    ok = true;
    for (char c : in) {
        if (c == '=' || c == '\n' || c == '\r' || c == ' ') {
            continue;
        }
        const size_t v = kAlphabet.find(c);
        if (v == std::string::npos) {
            ok = false;
            return {};
        }
        buf = (buf << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((buf >> bits) & 0xFF));
        }
    }
    return out;
}

/// Reads one object: typed accessors with the field path for diagnostics. An error marks
/// the object invalid; the caller drops it.
class Reader {
public:
    Reader(const Document& doc, Diagnostics& diags, const LoadOptions& opts)
        : doc_(doc)
        , diags_(diags)
        , opts_(opts) {}

    void set_object(std::string o) { object_ = std::move(o); }
    [[nodiscard]] bool ok() const noexcept { return ok_; }

    void error(const std::string& path, const std::string& msg, const Node* n = nullptr) {
        ok_ = false;
        diags_.add({.severity = Severity::Error,
                    .file = doc_.file,
                    .doc = doc_.index,
                    .line = n ? n->line : -1,
                    .object = object_,
                    .field = path,
                    .message = msg});
    }
    void warn(const std::string& path, const std::string& msg, const Node* n = nullptr) {
        diags_.add({.severity = Severity::Warning,
                    .file = doc_.file,
                    .doc = doc_.index,
                    .line = n ? n->line : -1,
                    .object = object_,
                    .field = path,
                    .message = msg});
    }

    /// Checks that `n` is a map and warns about fields not in `known`.
    bool map(const Node* n, const std::string& path, std::initializer_list<std::string_view> known) {
        if (!n || n->is_null()) {
            return false;
        }
        if (!n->is_map()) {
            error(path, "must be an object", n);
            return false;
        }
        for (const auto& [k, v] : n->fields) {
            if (std::find(known.begin(), known.end(), k) == known.end()) {
                warn(join(path, k), "unknown field, ignored", &v);
            }
        }
        return true;
    }

    static std::string join(const std::string& path, std::string_view k) {
        return path.empty() ? std::string(k) : path + "." + std::string(k);
    }
    static std::string idx(const std::string& path, size_t i) {
        return path + "[" + std::to_string(i) + "]";
    }

    std::optional<std::string> str(const Node* parent, std::string_view key,
                                   const std::string& path, bool required = false) {
        const Node* n = parent ? parent->get(key) : nullptr;
        const std::string p = join(path, key);
        if (!n || n->is_null()) {
            if (required) {
                error(p, "required");
            }
            return std::nullopt;
        }
        if (!n->is_scalar()) {
            error(p, "must be a string", n);
            return std::nullopt;
        }
        std::string v = n->scalar;
        auto subst = [&v](const std::string& ph, const std::string& with) {
            if (with.empty()) {
                return;
            }
            for (size_t pos = v.find(ph); pos != std::string::npos; pos = v.find(ph, pos)) {
                v.replace(pos, ph.size(), with);
                pos += with.size();
            }
        };
        subst("{GATEWAY_CLASS_NAME}", opts_.gateway_class_name);
        subst("{GATEWAY_CONTROLLER_NAME}", opts_.controller_name);
        return v;
    }

    std::optional<int64_t> integer(const Node* parent, std::string_view key, const std::string& path,
                                   int64_t lo, int64_t hi, bool required = false) {
        const Node* n = parent ? parent->get(key) : nullptr;
        const std::string p = join(path, key);
        if (!n || n->is_null()) {
            if (required) {
                error(p, "required");
            }
            return std::nullopt;
        }
        int64_t v = 0;
        if (!n->is_scalar() || n->quoted || n->scalar.empty()) {
            error(p, "must be an integer", n);
            return std::nullopt;
        }
        auto [ptr, ec] = std::from_chars(n->scalar.data(), n->scalar.data() + n->scalar.size(), v);
        if (ec != std::errc() || ptr != n->scalar.data() + n->scalar.size()) {
            error(p, "must be an integer, got '" + n->scalar.substr(0, 40) + "'", n);
            return std::nullopt;
        }
        if (v < lo || v > hi) {
            error(p, "must be between " + std::to_string(lo) + " and " + std::to_string(hi), n);
            return std::nullopt;
        }
        return v;
    }

    std::optional<bool> boolean(const Node* parent, std::string_view key, const std::string& path) {
        const Node* n = parent ? parent->get(key) : nullptr;
        if (!n || n->is_null()) {
            return std::nullopt;
        }
        if (n->is_scalar() && !n->quoted) {
            if (n->scalar == "true" || n->scalar == "True") {
                return true;
            }
            if (n->scalar == "false" || n->scalar == "False") {
                return false;
            }
        }
        error(join(path, key), "must be a boolean", n);
        return std::nullopt;
    }

    /// Iterates a list field; returns false when the field is absent.
    template <typename F>
    bool list(const Node* parent, std::string_view key, const std::string& path, size_t max_items,
              F&& each) {
        const Node* n = parent ? parent->get(key) : nullptr;
        const std::string p = join(path, key);
        if (!n || n->is_null()) {
            return false;
        }
        if (!n->is_seq()) {
            error(p, "must be a list", n);
            return false;
        }
        if (n->items.size() > max_items) {
            error(p, "has " + std::to_string(n->items.size()) + " items, at most " +
                         std::to_string(max_items) + " allowed",
                  n);
            return true;
        }
        for (size_t i = 0; i < n->items.size(); ++i) {
            each(n->items[i], idx(p, i));
        }
        return true;
    }

    std::vector<std::string> str_list(const Node* parent, std::string_view key,
                                      const std::string& path, size_t max_items) {
        std::vector<std::string> out;
        list(parent, key, path, max_items, [&](const Node& item, const std::string& p) {
            if (!item.is_scalar()) {
                error(p, "must be a string", &item);
                return;
            }
            out.push_back(item.scalar);
        });
        return out;
    }

    std::map<std::string, std::string> str_map(const Node* parent, std::string_view key,
                                               const std::string& path) {
        std::map<std::string, std::string> out;
        const Node* n = parent ? parent->get(key) : nullptr;
        if (!n || n->is_null()) {
            return out;
        }
        if (!n->is_map()) {
            error(join(path, key), "must be an object of strings", n);
            return out;
        }
        for (const auto& [k, v] : n->fields) {
            if (v.is_null()) {
                out[k] = "";
            } else if (!v.is_scalar()) {
                error(join(join(path, key), k), "must be a string", &v);
            } else {
                out[k] = v.scalar;
            }
        }
        return out;
    }

    const Document& doc() const noexcept { return doc_; }
    const LoadOptions& opts() const noexcept { return opts_; }

private:
    const Document& doc_;
    Diagnostics& diags_;
    const LoadOptions& opts_;
    std::string object_;
    bool ok_ = true;
};

// ------------------------------------------------------------------ shared pieces

void hash_node(const Node& n, uint64_t& h) {
    auto mix = [&h](std::string_view s) {
        for (char c : s) {
            h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
        }
        h = (h ^ 0xFF) * 0x100000001b3ULL; // separator
    };
    mix(std::string_view(reinterpret_cast<const char*>(&n.kind), 1));
    mix(n.scalar);
    for (const Node& i : n.items) {
        hash_node(i, h);
    }
    for (const auto& [k, v] : n.fields) {
        mix(k);
        hash_node(v, h);
    }
}

/// What a generation counts: everything but metadata and status (the API server bumps
/// metadata.generation on spec changes; the file source imitates it with this hash).
uint64_t content_hash(const Node& root) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const auto& [k, v] : root.fields) {
        if (k == "metadata" || k == "status") {
            continue;
        }
        h = (h ^ std::hash<std::string>{}(k)) * 0x100000001b3ULL;
        hash_node(v, h);
    }
    return h;
}

Meta read_meta(Reader& r, const Node& root, bool namespaced, uint64_t seq) {
    Meta m;
    const Node* md = root.get("metadata");
    r.map(md, "metadata",
          {"name", "namespace", "labels", "annotations", "generation", "creationTimestamp",
           "resourceVersion", "uid", "managedFields", "generateName", "finalizers",
           "ownerReferences", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"});
    if (!md || !md->is_map()) {
        r.error("metadata", "required");
        return m;
    }
    m.name = r.str(md, "name", "metadata", true).value_or("");
    if (namespaced) {
        m.ns = r.str(md, "namespace", "metadata").value_or(r.opts().default_namespace);
        if (!dns_label(m.ns)) {
            r.error("metadata.namespace", "must be a DNS label (RFC 1123)");
        }
    }
    if (!m.name.empty() && !dns_subdomain(m.name)) {
        r.error("metadata.name", "must be a DNS subdomain (lowercase alphanumerics, '-', '.')");
    }
    m.labels = r.str_map(md, "labels", "metadata");
    m.annotations = r.str_map(md, "annotations", "metadata");
    if (auto g = r.integer(md, "generation", "metadata", 1, INT64_MAX)) {
        m.generation = *g;
        m.generation_given = true;
    }
    m.spec_hash = content_hash(root);
    if (auto ts = r.str(md, "creationTimestamp", "metadata")) {
        m.creation = parse_rfc3339(*ts);
    }
    m.sequence = seq;
    m.source = {r.doc().file, r.doc().index};
    return m;
}

LabelSelector read_selector(Reader& r, const Node* n, const std::string& path) {
    LabelSelector s;
    if (!r.map(n, path, {"matchLabels", "matchExpressions"})) {
        return s;
    }
    s.match_labels = r.str_map(n, "matchLabels", path);
    r.list(n, "matchExpressions", path, 64, [&](const Node& e, const std::string& p) {
        r.map(&e, p, {"key", "operator", "values"});
        LabelSelectorReq q;
        q.key = r.str(&e, "key", p, true).value_or("");
        q.op = r.str(&e, "operator", p, true).value_or("");
        if (q.op != "In" && q.op != "NotIn" && q.op != "Exists" && q.op != "DoesNotExist") {
            r.error(p + ".operator", "must be In, NotIn, Exists or DoesNotExist");
        }
        q.values = r.str_list(&e, "values", p, 256);
        s.match_expressions.push_back(std::move(q));
    });
    return s;
}

SecretObjectRef read_object_ref(Reader& r, const Node& n, const std::string& path,
                                const char* default_kind) {
    SecretObjectRef ref;
    r.map(&n, path, {"group", "kind", "name", "namespace"});
    ref.group = r.str(&n, "group", path).value_or("");
    ref.kind = r.str(&n, "kind", path).value_or(default_kind);
    ref.name = r.str(&n, "name", path, true).value_or("");
    if (auto ns = r.str(&n, "namespace", path)) {
        ref.ns = *ns;
    }
    return ref;
}

void check_hostname(Reader& r, const std::string& h, const std::string& path, bool wildcard) {
    if (!valid_hostname(h, wildcard)) {
        r.error(path, "invalid hostname '" + h.substr(0, 64) +
                          "' (RFC 1123 labels; a wildcard only as the first label '*.')");
    }
}

ParentRef read_parent_ref(Reader& r, const Node& n, const std::string& path) {
    ParentRef p;
    r.map(&n, path, {"group", "kind", "name", "namespace", "sectionName", "port"});
    p.group = r.str(&n, "group", path).value_or(kGatewayGroup);
    p.kind = r.str(&n, "kind", path).value_or("Gateway");
    p.name = r.str(&n, "name", path, true).value_or("");
    if (auto v = r.str(&n, "namespace", path)) {
        p.ns = *v;
    }
    if (auto v = r.str(&n, "sectionName", path)) {
        p.section_name = *v;
    }
    if (auto v = r.integer(&n, "port", path, 1, 65535)) {
        p.port = static_cast<int>(*v);
    }
    return p;
}

BackendObjectRef read_backend_object(Reader& r, const Node& n, const std::string& path,
                                     std::initializer_list<std::string_view> extra_known) {
    BackendObjectRef b;
    std::vector<std::string_view> known = {"group", "kind", "name", "namespace", "port"};
    known.insert(known.end(), extra_known.begin(), extra_known.end());
    if (n.is_map()) {
        for (const auto& [k, v] : n.fields) {
            if (std::find(known.begin(), known.end(), k) == known.end()) {
                r.warn(Reader::join(path, k), "unknown field, ignored", &v);
            }
        }
    } else {
        r.error(path, "must be an object", &n);
        return b;
    }
    b.group = r.str(&n, "group", path).value_or("");
    b.kind = r.str(&n, "kind", path).value_or("Service");
    b.name = r.str(&n, "name", path, true).value_or("");
    if (auto v = r.str(&n, "namespace", path)) {
        b.ns = *v;
    }
    if (auto v = r.integer(&n, "port", path, 1, 65535)) {
        b.port = static_cast<int>(*v);
    }
    if (b.group.empty() && b.kind == "Service" && !b.port) {
        r.error(path + ".port", "must be set for a Service reference");
    }
    return b;
}

HeaderModifier read_header_modifier(Reader& r, const Node* n, const std::string& path) {
    HeaderModifier m;
    if (!r.map(n, path, {"set", "add", "remove"})) {
        r.error(path, "required for this filter type");
        return m;
    }
    auto values = [&](std::string_view key, std::vector<HeaderValue>& out) {
        std::set<std::string> seen;
        r.list(n, key, path, 16, [&](const Node& e, const std::string& p) {
            r.map(&e, p, {"name", "value"});
            HeaderValue hv;
            hv.name = r.str(&e, "name", p, true).value_or("");
            hv.value = r.str(&e, "value", p, true).value_or("");
            if (!http_token(hv.name)) {
                r.error(p + ".name", "invalid header name");
            }
            if (!header_value_ok(hv.value)) {
                r.error(p + ".value", "invalid header value (control characters)");
            }
            std::string lower = hv.name;
            std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
            if (!seen.insert(lower).second) {
                r.error(p + ".name", "duplicate header name '" + hv.name + "'");
            }
            out.push_back(std::move(hv));
        });
    };
    values("set", m.set);
    values("add", m.add);
    m.remove = r.str_list(n, "remove", path, 16);
    for (size_t i = 0; i < m.remove.size(); ++i) {
        if (!http_token(m.remove[i])) {
            r.error(Reader::idx(path + ".remove", i), "invalid header name");
        }
    }
    return m;
}

std::optional<PathModifier> read_path_modifier(Reader& r, const Node* n, const std::string& path) {
    if (!r.map(n, path, {"type", "replaceFullPath", "replacePrefixMatch"})) {
        return std::nullopt;
    }
    PathModifier pm;
    pm.type = r.str(n, "type", path, true).value_or("");
    if (pm.type == "ReplaceFullPath") {
        pm.value = r.str(n, "replaceFullPath", path).value_or("");
        if (n->get("replacePrefixMatch")) {
            r.error(path + ".replacePrefixMatch", "must not be set when type is ReplaceFullPath");
        }
        if (!n->get("replaceFullPath")) {
            r.error(path + ".replaceFullPath", "required when type is ReplaceFullPath");
        }
    } else if (pm.type == "ReplacePrefixMatch") {
        pm.value = r.str(n, "replacePrefixMatch", path).value_or("");
        if (n->get("replaceFullPath")) {
            r.error(path + ".replaceFullPath", "must not be set when type is ReplacePrefixMatch");
        }
        if (!n->get("replacePrefixMatch")) {
            r.error(path + ".replacePrefixMatch", "required when type is ReplacePrefixMatch");
        }
    } else {
        r.error(path + ".type", "must be ReplaceFullPath or ReplacePrefixMatch");
    }
    if (!pm.value.empty() && pm.value[0] != '/') {
        r.error(path, "path must start with '/'");
    }
    if (pm.value.size() > 1024) {
        r.error(path, "path longer than 1024 characters");
    }
    return pm;
}

HttpFilter read_filter(Reader& r, const Node& n, const std::string& path, bool grpc) {
    HttpFilter f;
    r.map(&n, path,
          {"type", "requestHeaderModifier", "responseHeaderModifier", "requestRedirect",
           "urlRewrite", "requestMirror", "cors", "extensionRef", "externalAuth"});
    f.type = r.str(&n, "type", path, true).value_or("");
    static const std::vector<std::string> kHttpTypes = {
        "RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
        "RequestMirror", "CORS", "ExtensionRef", "ExternalAuth"};
    static const std::vector<std::string> kGrpcTypes = {"RequestHeaderModifier",
                                                        "ResponseHeaderModifier", "RequestMirror",
                                                        "ExtensionRef"};
    const auto& types = grpc ? kGrpcTypes : kHttpTypes;
    if (std::find(types.begin(), types.end(), f.type) == types.end()) {
        r.error(path + ".type", "unsupported filter type '" + f.type + "'");
        return f;
    }
    static const std::vector<std::pair<std::string, std::string>> kField = {
        {"RequestHeaderModifier", "requestHeaderModifier"},
        {"ResponseHeaderModifier", "responseHeaderModifier"},
        {"RequestRedirect", "requestRedirect"},
        {"URLRewrite", "urlRewrite"},
        {"RequestMirror", "requestMirror"},
        {"CORS", "cors"},
        {"ExtensionRef", "extensionRef"},
        {"ExternalAuth", "externalAuth"}};
    for (const auto& [t, field] : kField) {
        const bool present = n.get(field) != nullptr;
        if (t == f.type && !present) {
            r.error(path + "." + field, "required when type is " + t);
        } else if (t != f.type && present) {
            r.error(path + "." + field, "must not be set when type is " + f.type);
        }
    }
    if (f.type == "RequestHeaderModifier") {
        f.headers = read_header_modifier(r, n.get("requestHeaderModifier"),
                                         path + ".requestHeaderModifier");
    } else if (f.type == "ResponseHeaderModifier") {
        f.headers = read_header_modifier(r, n.get("responseHeaderModifier"),
                                         path + ".responseHeaderModifier");
    } else if (f.type == "RequestRedirect") {
        const Node* rr = n.get("requestRedirect");
        const std::string p = path + ".requestRedirect";
        r.map(rr, p, {"scheme", "hostname", "path", "port", "statusCode"});
        f.scheme = r.str(rr, "scheme", p);
        if (f.scheme && *f.scheme != "http" && *f.scheme != "https") {
            r.error(p + ".scheme", "must be http or https");
        }
        f.hostname = r.str(rr, "hostname", p);
        if (f.hostname) {
            check_hostname(r, *f.hostname, p + ".hostname", false);
        }
        if (rr) {
            f.path = read_path_modifier(r, rr->get("path"), p + ".path");
        }
        if (auto v = r.integer(rr, "port", p, 1, 65535)) {
            f.port = static_cast<int>(*v);
        }
        f.status_code = static_cast<int>(r.integer(rr, "statusCode", p, 0, 999).value_or(302));
        if (f.status_code != 301 && f.status_code != 302 && f.status_code != 303 &&
            f.status_code != 307 && f.status_code != 308) {
            r.error(p + ".statusCode", "must be one of 301, 302, 303, 307, 308");
        }
    } else if (f.type == "URLRewrite") {
        const Node* u = n.get("urlRewrite");
        const std::string p = path + ".urlRewrite";
        r.map(u, p, {"hostname", "path"});
        f.hostname = r.str(u, "hostname", p);
        if (f.hostname) {
            check_hostname(r, *f.hostname, p + ".hostname", false);
        }
        if (u) {
            f.path = read_path_modifier(r, u->get("path"), p + ".path");
        }
    } else if (f.type == "RequestMirror") {
        const Node* m = n.get("requestMirror");
        const std::string p = path + ".requestMirror";
        r.map(m, p, {"backendRef", "percent", "fraction"});
        if (m && m->get("backendRef")) {
            f.mirror = read_backend_object(r, *m->get("backendRef"), p + ".backendRef", {});
        } else {
            r.error(p + ".backendRef", "required");
        }
        if (auto v = r.integer(m, "percent", p, 0, 100)) {
            f.percent = static_cast<int>(*v);
        }
        if (m && m->get("fraction")) {
            const Node* fr = m->get("fraction");
            r.map(fr, p + ".fraction", {"numerator", "denominator"});
            const int num = static_cast<int>(
                r.integer(fr, "numerator", p + ".fraction", 0, INT32_MAX, true).value_or(0));
            const int den = static_cast<int>(
                r.integer(fr, "denominator", p + ".fraction", 1, INT32_MAX).value_or(100));
            if (num > den) {
                r.error(p + ".fraction", "numerator must be less than or equal to denominator");
            }
            f.fraction = std::make_pair(num, den);
            if (f.percent) {
                r.error(p, "only one of percent or fraction may be set");
            }
        }
    } else if (f.type == "CORS") {
        const Node* c = n.get("cors");
        const std::string p = path + ".cors";
        r.map(c, p,
              {"allowOrigins", "allowCredentials", "allowMethods", "allowHeaders", "exposeHeaders",
               "maxAge"});
        f.allow_origins = r.str_list(c, "allowOrigins", p, 64);
        f.allow_methods = r.str_list(c, "allowMethods", p, 9);
        f.allow_headers = r.str_list(c, "allowHeaders", p, 64);
        f.expose_headers = r.str_list(c, "exposeHeaders", p, 64);
        f.allow_credentials = r.boolean(c, "allowCredentials", p).value_or(false);
        f.max_age = static_cast<int>(r.integer(c, "maxAge", p, 1, INT32_MAX).value_or(5));
        for (size_t i = 0; i < f.allow_methods.size(); ++i) {
            if (f.allow_methods[i] == "*" && f.allow_methods.size() > 1) {
                r.error(Reader::idx(p + ".allowMethods", i),
                        "'*' must be the only entry when present");
            }
        }
    } else if (f.type == "ExtensionRef") {
        const Node* e = n.get("extensionRef");
        const std::string p = path + ".extensionRef";
        r.map(e, p, {"group", "kind", "name"});
        f.ext_group = r.str(e, "group", p).value_or("");
        f.ext_kind = r.str(e, "kind", p, true).value_or("");
        f.ext_name = r.str(e, "name", p, true).value_or("");
    }
    return f;
}

void check_filter_list(Reader& r, const std::vector<HttpFilter>& filters, const std::string& path) {
    int n_req = 0, n_resp = 0, n_redirect = 0, n_rewrite = 0, n_cors = 0;
    for (const HttpFilter& f : filters) {
        n_req += f.type == "RequestHeaderModifier";
        n_resp += f.type == "ResponseHeaderModifier";
        n_redirect += f.type == "RequestRedirect";
        n_rewrite += f.type == "URLRewrite";
        n_cors += f.type == "CORS";
    }
    if (n_req > 1 || n_resp > 1 || n_redirect > 1 || n_rewrite > 1 || n_cors > 1) {
        r.error(path, "RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite "
                      "and CORS may each appear at most once");
    }
    if (n_redirect && n_rewrite) {
        r.error(path, "may contain either RequestRedirect or URLRewrite, not both");
    }
}

std::vector<BackendRef> read_backend_refs(Reader& r, const Node* rule, const std::string& path,
                                          bool with_filters, bool grpc) {
    std::vector<BackendRef> out;
    r.list(rule, "backendRefs", path, 16, [&](const Node& b, const std::string& p) {
        BackendRef br;
        br.ref = read_backend_object(r, b, p, {"weight", "filters"});
        br.weight = static_cast<int>(r.integer(&b, "weight", p, 0, 1000000).value_or(1));
        if (with_filters) {
            r.list(&b, "filters", p, 16, [&](const Node& f, const std::string& fp) {
                br.filters.push_back(read_filter(r, f, fp, grpc));
            });
            check_filter_list(r, br.filters, p + ".filters");
        } else if (b.get("filters")) {
            r.warn(p + ".filters", "unknown field, ignored");
        }
        out.push_back(std::move(br));
    });
    return out;
}

std::vector<HeaderMatch> read_header_matches(Reader& r, const Node* parent, std::string_view key,
                                             const std::string& path, bool query) {
    std::vector<HeaderMatch> out;
    std::set<std::string> seen;
    r.list(parent, key, path, 16, [&](const Node& h, const std::string& p) {
        r.map(&h, p, {"type", "name", "value"});
        HeaderMatch m;
        const std::string t = r.str(&h, "type", p).value_or("Exact");
        if (t == "RegularExpression") {
            m.type = MatchType::RegularExpression;
        } else if (t != "Exact") {
            r.error(p + ".type", "must be Exact or RegularExpression");
        }
        m.name = r.str(&h, "name", p, true).value_or("");
        m.value = r.str(&h, "value", p, true).value_or("");
        if (!http_token(m.name)) {
            r.error(p + ".name", "invalid " + std::string(query ? "query parameter" : "header") +
                                     " name");
        }
        if (m.value.size() > 4096) {
            r.error(p + ".value", "longer than 4096 characters");
        }
        if (m.type == MatchType::RegularExpression) {
            RE2 re(m.value, RE2::Quiet);
            if (!re.ok()) {
                r.error(p + ".value", "invalid regular expression: " + re.error());
            }
        }
        std::string k = m.name;
        if (!query) {
            std::transform(k.begin(), k.end(), k.begin(), ::tolower);
        }
        // Only the first entry with a name counts (HR: duplicate names are ignored).
        if (seen.insert(k).second) {
            out.push_back(std::move(m));
        }
    });
    return out;
}

void check_timeouts(Reader& r, const Node* rule, const std::string& path,
                    std::optional<std::string>& req, std::optional<std::string>& be) {
    const Node* t = rule->get("timeouts");
    if (!t) {
        return;
    }
    const std::string p = path + ".timeouts";
    r.map(t, p, {"request", "backendRequest"});
    req = r.str(t, "request", p);
    be = r.str(t, "backendRequest", p);
    int64_t rq = -1, bq = -1;
    if (req && (rq = parse_duration_ms(*req)) < 0) {
        r.error(p + ".request", "invalid duration '" + *req + "' (e.g. 10s, 500ms, 1m30s)");
    }
    if (be && (bq = parse_duration_ms(*be)) < 0) {
        r.error(p + ".backendRequest", "invalid duration '" + *be + "'");
    }
    if (rq > 0 && bq > rq) {
        r.error(p + ".backendRequest", "must be <= request timeout");
    }
}

std::vector<std::string> read_route_hostnames(Reader& r, const Node* spec, const std::string& path) {
    std::vector<std::string> hosts = r.str_list(spec, "hostnames", path, 16);
    for (size_t i = 0; i < hosts.size(); ++i) {
        check_hostname(r, hosts[i], Reader::idx(path + ".hostnames", i), true);
    }
    return hosts;
}

void read_parent_refs(Reader& r, const Node* spec, const std::string& path, Route& route) {
    r.list(spec, "parentRefs", path, 32, [&](const Node& n, const std::string& p) {
        ParentRef pr = read_parent_ref(r, n, p);
        for (const ParentRef& other : route.parents) {
            const bool same_target = other.group == pr.group && other.kind == pr.kind &&
                                     other.name == pr.name && other.ns == pr.ns;
            if (same_target && other.section_name == pr.section_name && other.port == pr.port) {
                r.error(p, "duplicate parentRef");
            }
        }
        route.parents.push_back(std::move(pr));
    });
}

// ------------------------------------------------------------------ kinds

std::vector<Listener> read_listeners(Reader& r, const Node* parent, const std::string& path) {
    std::vector<Listener> out;
    std::set<std::string> names;
    r.list(parent, "listeners", path, 64, [&](const Node& n, const std::string& p) {
        r.map(&n, p, {"name", "hostname", "port", "protocol", "tls", "allowedRoutes"});
        Listener l;
        l.name = r.str(&n, "name", p, true).value_or("");
        if (!l.name.empty() && !dns_subdomain(l.name)) {
            r.error(p + ".name", "must be a DNS subdomain");
        }
        if (!names.insert(l.name).second) {
            r.error(p + ".name", "listener name '" + l.name + "' must be unique");
        }
        if (auto h = r.str(&n, "hostname", p)) {
            check_hostname(r, *h, p + ".hostname", true);
            l.hostname = *h;
        }
        l.port = static_cast<int>(r.integer(&n, "port", p, 1, 65535, true).value_or(0));
        l.protocol = r.str(&n, "protocol", p, true).value_or("");
        if (l.protocol.empty() || l.protocol.size() > 255) {
            r.error(p + ".protocol", "required");
        }
        if ((l.protocol == "TCP" || l.protocol == "UDP") && l.hostname) {
            r.error(p + ".hostname", "must not be set for protocol " + l.protocol);
        }
        if (const Node* t = n.get("tls")) {
            l.has_tls = true;
            const std::string tp = p + ".tls";
            r.map(t, tp, {"mode", "certificateRefs", "options", "frontendValidation"});
            l.tls_mode = r.str(t, "mode", tp).value_or("Terminate");
            if (l.tls_mode != "Terminate" && l.tls_mode != "Passthrough") {
                r.error(tp + ".mode", "must be Terminate or Passthrough");
            }
            r.list(t, "certificateRefs", tp, 64, [&](const Node& c, const std::string& cp) {
                l.certificate_refs.push_back(read_object_ref(r, c, cp, "Secret"));
            });
            l.tls_options = r.str_map(t, "options", tp);
            if (l.protocol == "HTTP" || l.protocol == "TCP" || l.protocol == "UDP") {
                r.error(tp, "must not be set for protocol " + l.protocol);
            }
            if (l.protocol == "HTTPS" && l.tls_mode == "Passthrough") {
                r.error(tp + ".mode", "must be Terminate for protocol HTTPS");
            }
        } else if (l.protocol == "HTTPS" || l.protocol == "TLS") {
            r.error(p + ".tls", "required for protocol " + l.protocol);
        }
        if (l.has_tls && l.tls_mode == "Terminate" && l.certificate_refs.empty() &&
            (l.protocol == "HTTPS" || l.protocol == "TLS")) {
            // CEL: certificateRefs or options must be specified when mode is Terminate
            const Node* t = n.get("tls");
            if (!t->get("options")) {
                r.error(p + ".tls.certificateRefs", "required when mode is Terminate");
            }
        }
        if (const Node* a = n.get("allowedRoutes")) {
            const std::string ap = p + ".allowedRoutes";
            r.map(a, ap, {"namespaces", "kinds"});
            if (const Node* ns = a->get("namespaces")) {
                r.map(ns, ap + ".namespaces", {"from", "selector"});
                l.from = r.str(ns, "from", ap + ".namespaces").value_or("Same");
                if (l.from != "Same" && l.from != "All" && l.from != "Selector" &&
                    l.from != "None") {
                    r.error(ap + ".namespaces.from", "must be All, Same, Selector or None");
                }
                if (l.from == "Selector") {
                    if (!ns->get("selector")) {
                        r.error(ap + ".namespaces.selector", "required when from is Selector");
                    }
                    l.ns_selector = read_selector(r, ns->get("selector"),
                                                  ap + ".namespaces.selector");
                }
            }
            l.kinds_given = r.list(a, "kinds", ap, 8, [&](const Node& k, const std::string& kp) {
                r.map(&k, kp, {"group", "kind"});
                RouteGroupKind gk;
                gk.group = r.str(&k, "group", kp).value_or(kGatewayGroup);
                gk.kind = r.str(&k, "kind", kp, true).value_or("");
                l.kinds.push_back(std::move(gk));
            });
        }
        out.push_back(std::move(l));
    });
    return out;
}

FrontendValidation read_frontend_validation(Reader& r, const Node* n, const std::string& path) {
    FrontendValidation v;
    if (!r.map(n, path, {"caCertificateRefs", "mode"})) {
        return v;
    }
    v.present = true;
    r.list(n, "caCertificateRefs", path, 8, [&](const Node& c, const std::string& p) {
        v.ca_refs.push_back(read_object_ref(r, c, p, "ConfigMap"));
    });
    v.mode = r.str(n, "mode", path).value_or("AllowValidOnly");
    if (v.mode != "AllowValidOnly" && v.mode != "AllowInsecureFallback") {
        r.error(path + ".mode", "must be AllowValidOnly or AllowInsecureFallback");
    }
    return v;
}

void read_gateway(Reader& r, const Node& root, Gateway& g) {
    const Node* spec = root.get("spec");
    if (!r.map(spec, "spec",
               {"gatewayClassName", "listeners", "addresses", "infrastructure", "tls",
                "allowedListeners", "backendTLS"})) {
        r.error("spec", "required");
        return;
    }
    g.class_name = r.str(spec, "gatewayClassName", "spec", true).value_or("");
    g.listeners = read_listeners(r, spec, "spec");
    if (g.listeners.empty()) {
        r.error("spec.listeners", "at least one listener is required");
    }
    std::set<std::tuple<int, std::string, std::string>> seen;
    for (size_t i = 0; i < g.listeners.size(); ++i) {
        const Listener& l = g.listeners[i];
        if (!seen.insert({l.port, l.protocol, l.hostname.value_or("")}).second) {
            r.error(Reader::idx("spec.listeners", i),
                    "combination of port, protocol and hostname must be unique for each listener");
        }
    }
    r.list(spec, "addresses", "spec", 16, [&](const Node& a, const std::string& p) {
        r.map(&a, p, {"type", "value"});
        GatewayAddress ga;
        ga.type = r.str(&a, "type", p).value_or("IPAddress");
        ga.value = r.str(&a, "value", p).value_or("");
        g.addresses.push_back(std::move(ga));
    });
    if (const Node* inf = spec->get("infrastructure")) {
        r.map(inf, "spec.infrastructure", {"labels", "annotations", "parametersRef"});
        g.infra_labels = r.str_map(inf, "labels", "spec.infrastructure");
        g.infra_annotations = r.str_map(inf, "annotations", "spec.infrastructure");
        if (const Node* pr = inf->get("parametersRef")) {
            const std::string p = "spec.infrastructure.parametersRef";
            r.map(pr, p, {"group", "kind", "name"});
            g.has_infra_params = true;
            g.infra_params_group = r.str(pr, "group", p).value_or("");
            g.infra_params_kind = r.str(pr, "kind", p, true).value_or("");
            g.infra_params_name = r.str(pr, "name", p, true).value_or("");
        }
    }
    if (const Node* tls = spec->get("tls")) {
        r.map(tls, "spec.tls", {"frontend", "backend"});
        if (const Node* fe = tls->get("frontend")) {
            r.map(fe, "spec.tls.frontend", {"default", "perPort"});
            if (const Node* d = fe->get("default")) {
                r.map(d, "spec.tls.frontend.default", {"validation"});
                g.frontend_default = read_frontend_validation(r, d->get("validation"),
                                                              "spec.tls.frontend.default.validation");
            }
            r.list(fe, "perPort", "spec.tls.frontend", 64, [&](const Node& pp, const std::string& p) {
                r.map(&pp, p, {"port", "tls"});
                const int port = static_cast<int>(r.integer(&pp, "port", p, 1, 65535, true).value_or(0));
                FrontendValidation v;
                if (const Node* t = pp.get("tls")) {
                    r.map(t, p + ".tls", {"validation"});
                    v = read_frontend_validation(r, t->get("validation"), p + ".tls.validation");
                }
                g.frontend_per_port.emplace_back(port, std::move(v));
            });
        }
        if (const Node* be = tls->get("backend")) {
            r.map(be, "spec.tls.backend", {"clientCertificateRef"});
            if (const Node* c = be->get("clientCertificateRef")) {
                g.backend_client_cert =
                    read_object_ref(r, *c, "spec.tls.backend.clientCertificateRef", "Secret");
            }
        }
    }
    if (const Node* al = spec->get("allowedListeners")) {
        r.map(al, "spec.allowedListeners", {"namespaces"});
        if (const Node* ns = al->get("namespaces")) {
            r.map(ns, "spec.allowedListeners.namespaces", {"from", "selector"});
            g.allowed_listeners_from =
                r.str(ns, "from", "spec.allowedListeners.namespaces").value_or("None");
            if (ns->get("selector")) {
                g.allowed_listeners_selector = read_selector(
                    r, ns->get("selector"), "spec.allowedListeners.namespaces.selector");
            }
        }
    }
}

/// networking.x-k8s.io/v1alpha1 Gateway, as in the 2021 announcement: listeners without
/// names, `routes: {kind, selector, namespaces}` and a single `tls.certificateRef`.
void read_gateway_v1alpha1(Reader& r, const Node& root, Gateway& g) {
    const Node* spec = root.get("spec");
    if (!r.map(spec, "spec", {"gatewayClassName", "listeners", "addresses"})) {
        r.error("spec", "required");
        return;
    }
    g.class_name = r.str(spec, "gatewayClassName", "spec", true).value_or("");
    r.list(spec, "listeners", "spec", 64, [&](const Node& n, const std::string& p) {
        r.map(&n, p, {"hostname", "port", "protocol", "tls", "routes"});
        Listener l;
        l.v1alpha1 = true;
        if (auto h = r.str(&n, "hostname", p)) {
            check_hostname(r, *h, p + ".hostname", true);
            l.hostname = *h;
        }
        l.port = static_cast<int>(r.integer(&n, "port", p, 1, 65535, true).value_or(0));
        l.protocol = r.str(&n, "protocol", p, true).value_or("");
        // v1alpha1 listeners have no name; sluice names them by position, as status shows.
        l.name = "listener-" + std::to_string(g.listeners.size());
        if (const Node* t = n.get("tls")) {
            const std::string tp = p + ".tls";
            r.map(t, tp, {"mode", "certificateRef", "routeOverride", "options"});
            l.has_tls = true;
            l.tls_mode = r.str(t, "mode", tp).value_or("Terminate");
            if (const Node* c = t->get("certificateRef")) {
                SecretObjectRef ref = read_object_ref(r, *c, tp + ".certificateRef", "Secret");
                if (ref.group == "core") {
                    ref.group = "";
                }
                l.certificate_refs.push_back(std::move(ref));
            }
            l.tls_options = r.str_map(t, "options", tp);
        } else if (l.protocol == "HTTPS" || l.protocol == "TLS") {
            r.error(p + ".tls", "required for protocol " + l.protocol);
        }
        const Node* rt = n.get("routes");
        if (!rt) {
            r.error(p + ".routes", "required in v1alpha1");
        }
        r.map(rt, p + ".routes", {"kind", "group", "selector", "namespaces"});
        RouteGroupKind gk;
        gk.group = kGatewayGroup;
        gk.kind = r.str(rt, "kind", p + ".routes", true).value_or("");
        l.kinds.push_back(gk);
        l.kinds_given = true;
        l.route_selector = LabelSelector{};
        if (rt && rt->get("selector")) {
            l.route_selector = read_selector(r, rt->get("selector"), p + ".routes.selector");
        }
        l.from = "Same";
        if (const Node* ns = rt ? rt->get("namespaces") : nullptr) {
            r.map(ns, p + ".routes.namespaces", {"from", "selector"});
            l.from = r.str(ns, "from", p + ".routes.namespaces").value_or("Same");
            if (l.from == "Selector") {
                l.ns_selector =
                    read_selector(r, ns->get("selector"), p + ".routes.namespaces.selector");
            }
        }
        g.listeners.push_back(std::move(l));
    });
    r.list(spec, "addresses", "spec", 16, [&](const Node& a, const std::string& p) {
        r.map(&a, p, {"type", "value"});
        GatewayAddress ga;
        ga.type = r.str(&a, "type", p).value_or("IPAddress");
        ga.value = r.str(&a, "value", p).value_or("");
        g.addresses.push_back(std::move(ga));
    });
}

HttpMatch read_http_match(Reader& r, const Node& m, const std::string& p, bool v1alpha1) {
    HttpMatch hm;
    r.map(&m, p, {"path", "headers", "queryParams", "method", "extensionRef"});
    if (const Node* path = m.get("path")) {
        r.map(path, p + ".path", {"type", "value"});
        const std::string t = r.str(path, "type", p + ".path").value_or("PathPrefix");
        if (t == "Exact") {
            hm.path_type = PathType::Exact;
        } else if (t == "PathPrefix" || (v1alpha1 && t == "Prefix")) {
            hm.path_type = PathType::PathPrefix;
        } else if (t == "RegularExpression") {
            hm.path_type = PathType::RegularExpression;
        } else {
            r.error(p + ".path.type", "must be Exact, PathPrefix or RegularExpression");
        }
        hm.path = r.str(path, "value", p + ".path").value_or("/");
        if (hm.path.size() > 1024) {
            r.error(p + ".path.value", "longer than 1024 characters");
        }
        if (hm.path_type != PathType::RegularExpression) {
            if (hm.path.empty() || hm.path[0] != '/') {
                r.error(p + ".path.value", "must be an absolute path (start with '/')");
            }
            if (hm.path.find("//") != std::string::npos || hm.path.find("/./") != std::string::npos ||
                hm.path.find("/../") != std::string::npos || hm.path.ends_with("/..") ||
                hm.path.ends_with("/.") || hm.path.find('#') != std::string::npos) {
                r.error(p + ".path.value", "must not contain '//', '/./', '/../' or '#'");
            }
        } else {
            RE2 re(hm.path, RE2::Quiet);
            if (!re.ok()) {
                r.error(p + ".path.value", "invalid regular expression: " + re.error());
            }
        }
    }
    if (v1alpha1) {
        // v1alpha1: headers: {type: Exact, values: {name: value}}
        if (const Node* h = m.get("headers")) {
            r.map(h, p + ".headers", {"type", "values"});
            const std::string t = r.str(h, "type", p + ".headers").value_or("Exact");
            for (const auto& [k, v] : r.str_map(h, "values", p + ".headers")) {
                HeaderMatch hmm;
                hmm.type = t == "RegularExpression" ? MatchType::RegularExpression : MatchType::Exact;
                hmm.name = k;
                hmm.value = v;
                if (!http_token(k)) {
                    r.error(p + ".headers.values." + k, "invalid header name");
                }
                hm.headers.push_back(std::move(hmm));
            }
        }
    } else {
        hm.headers = read_header_matches(r, &m, "headers", p, false);
    }
    hm.query = read_header_matches(r, &m, "queryParams", p, true);
    if (auto meth = r.str(&m, "method", p)) {
        static const std::set<std::string> kMethods = {"GET",     "HEAD",    "POST",  "PUT",
                                                       "DELETE",  "CONNECT", "OPTIONS", "TRACE",
                                                       "PATCH"};
        if (!kMethods.count(*meth)) {
            r.error(p + ".method", "unsupported method '" + *meth + "'");
        }
        hm.method = *meth;
    }
    return hm;
}

void read_http_route(Reader& r, const Node& root, Route& route) {
    const Node* spec = root.get("spec");
    if (!r.map(spec, "spec", {"parentRefs", "hostnames", "rules", "useDefaultGateways"})) {
        spec = nullptr;
    }
    route.kind = RouteKind::HTTP;
    read_parent_refs(r, spec, "spec", route);
    route.hostnames = read_route_hostnames(r, spec, "spec");
    const bool had_rules =
        r.list(spec, "rules", "spec", 16, [&](const Node& rule, const std::string& rp) {
            r.map(&rule, rp,
                  {"name", "matches", "filters", "backendRefs", "timeouts", "retry",
                   "sessionPersistence"});
            HttpRule hr;
            hr.name = r.str(&rule, "name", rp).value_or("");
            const bool had_matches =
                r.list(&rule, "matches", rp, 64, [&](const Node& m, const std::string& p) {
                    hr.matches.push_back(read_http_match(r, m, p, false));
                });
            if (!had_matches) {
                hr.matches.push_back(HttpMatch{});
            }
            r.list(&rule, "filters", rp, 16, [&](const Node& f, const std::string& p) {
                hr.filters.push_back(read_filter(r, f, p, false));
            });
            check_filter_list(r, hr.filters, rp + ".filters");
            hr.backends = read_backend_refs(r, &rule, rp, true, false);
            check_timeouts(r, &rule, rp, hr.timeout_request, hr.timeout_backend);
            if (const Node* rt = rule.get("retry")) {
                r.map(rt, rp + ".retry", {"codes", "attempts", "backoff"});
                HttpRetry retry;
                r.list(rt, "codes", rp + ".retry", 64, [&](const Node& c, const std::string& cp) {
                    if (!c.is_scalar() || c.quoted) {
                        r.error(cp, "must be an integer");
                        return;
                    }
                    int v = 0;
                    auto res = std::from_chars(c.scalar.data(), c.scalar.data() + c.scalar.size(), v);
                    if (res.ec != std::errc() || v < 400 || v > 599) {
                        r.error(cp, "must be an HTTP status code between 400 and 599");
                    }
                    retry.codes.push_back(v);
                });
                if (auto a = r.integer(rt, "attempts", rp + ".retry", 0, 1000)) {
                    retry.attempts = static_cast<int>(*a);
                }
                retry.backoff = r.str(rt, "backoff", rp + ".retry");
                if (retry.backoff && parse_duration_ms(*retry.backoff) < 0) {
                    r.error(rp + ".retry.backoff", "invalid duration");
                }
                hr.retry = retry;
            }
            // ReplacePrefixMatch needs exactly one PathPrefix match (CEL).
            auto check_prefix = [&](const std::vector<HttpFilter>& filters, const std::string& fp) {
                for (const HttpFilter& f : filters) {
                    if (f.path && f.path->type == "ReplacePrefixMatch") {
                        if (hr.matches.size() != 1 ||
                            hr.matches[0].path_type != PathType::PathPrefix) {
                            r.error(fp, "ReplacePrefixMatch requires exactly one match with a "
                                        "PathPrefix path");
                        }
                    }
                }
            };
            check_prefix(hr.filters, rp + ".filters");
            for (size_t b = 0; b < hr.backends.size(); ++b) {
                check_prefix(hr.backends[b].filters, Reader::idx(rp + ".backendRefs", b) + ".filters");
            }
            route.http_rules.push_back(std::move(hr));
        });
    if (!had_rules) {
        HttpRule def;
        def.matches.push_back(HttpMatch{});
        route.http_rules.push_back(std::move(def));
    }
    std::set<std::string> names;
    for (size_t i = 0; i < route.http_rules.size(); ++i) {
        const std::string& n = route.http_rules[i].name;
        if (!n.empty() && !names.insert(n).second) {
            r.error(Reader::idx("spec.rules", i) + ".name", "rule names must be unique");
        }
    }
}

void read_http_route_v1alpha1(Reader& r, const Node& root, Route& route) {
    const Node* spec = root.get("spec");
    r.map(spec, "spec", {"hostnames", "rules", "gateways", "tls"});
    route.kind = RouteKind::HTTP;
    route.v1alpha1 = true;
    route.hostnames = read_route_hostnames(r, spec, "spec");
    const bool had_rules =
        r.list(spec, "rules", "spec", 16, [&](const Node& rule, const std::string& rp) {
            r.map(&rule, rp, {"matches", "filters", "forwardTo"});
            HttpRule hr;
            const bool had_matches =
                r.list(&rule, "matches", rp, 64, [&](const Node& m, const std::string& p) {
                    hr.matches.push_back(read_http_match(r, m, p, true));
                });
            if (!had_matches) {
                hr.matches.push_back(HttpMatch{});
            }
            r.list(&rule, "filters", rp, 16, [&](const Node& f, const std::string& p) {
                hr.filters.push_back(read_filter(r, f, p, false));
            });
            r.list(&rule, "forwardTo", rp, 16, [&](const Node& b, const std::string& p) {
                r.map(&b, p, {"serviceName", "backendRef", "port", "weight", "filters"});
                BackendRef br;
                if (auto s = r.str(&b, "serviceName", p)) {
                    br.ref.name = *s;
                } else if (const Node* bref = b.get("backendRef")) {
                    br.ref = read_backend_object(r, *bref, p + ".backendRef", {});
                } else {
                    r.error(p, "one of serviceName or backendRef is required");
                }
                if (auto port = r.integer(&b, "port", p, 1, 65535)) {
                    br.ref.port = static_cast<int>(*port);
                }
                br.weight = static_cast<int>(r.integer(&b, "weight", p, 0, 1000000).value_or(1));
                r.list(&b, "filters", p, 16, [&](const Node& f, const std::string& fp) {
                    br.filters.push_back(read_filter(r, f, fp, false));
                });
                hr.backends.push_back(std::move(br));
            });
            route.http_rules.push_back(std::move(hr));
        });
    if (!had_rules) {
        HttpRule def;
        def.matches.push_back(HttpMatch{});
        route.http_rules.push_back(std::move(def));
    }
}

void read_grpc_route(Reader& r, const Node& root, Route& route) {
    const Node* spec = root.get("spec");
    r.map(spec, "spec", {"parentRefs", "hostnames", "rules"});
    route.kind = RouteKind::GRPC;
    read_parent_refs(r, spec, "spec", route);
    route.hostnames = read_route_hostnames(r, spec, "spec");
    const bool had =
        r.list(spec, "rules", "spec", 16, [&](const Node& rule, const std::string& rp) {
            r.map(&rule, rp, {"name", "matches", "filters", "backendRefs", "sessionPersistence"});
            GrpcRule gr;
            gr.name = r.str(&rule, "name", rp).value_or("");
            r.list(&rule, "matches", rp, 64, [&](const Node& m, const std::string& p) {
                r.map(&m, p, {"method", "headers"});
                GrpcMatch gm;
                if (const Node* meth = m.get("method")) {
                    r.map(meth, p + ".method", {"type", "service", "method"});
                    const std::string t = r.str(meth, "type", p + ".method").value_or("Exact");
                    gm.method_type =
                        t == "RegularExpression" ? MatchType::RegularExpression : MatchType::Exact;
                    if (t != "Exact" && t != "RegularExpression") {
                        r.error(p + ".method.type", "must be Exact or RegularExpression");
                    }
                    gm.service = r.str(meth, "service", p + ".method").value_or("");
                    gm.method = r.str(meth, "method", p + ".method").value_or("");
                    if (gm.method_type == MatchType::Exact && gm.service.empty() &&
                        gm.method.empty()) {
                        r.error(p + ".method", "one or both of service or method must be specified");
                    }
                    if (gm.method_type == MatchType::RegularExpression) {
                        for (const std::string* s : {&gm.service, &gm.method}) {
                            if (!s->empty() && !RE2(*s, RE2::Quiet).ok()) {
                                r.error(p + ".method", "invalid regular expression '" + *s + "'");
                            }
                        }
                    }
                }
                gm.headers = read_header_matches(r, &m, "headers", p, false);
                gr.matches.push_back(std::move(gm));
            });
            r.list(&rule, "filters", rp, 16, [&](const Node& f, const std::string& p) {
                gr.filters.push_back(read_filter(r, f, p, true));
            });
            gr.backends = read_backend_refs(r, &rule, rp, true, true);
            route.grpc_rules.push_back(std::move(gr));
        });
    if (!had) {
        route.grpc_rules.push_back(GrpcRule{});
    }
}

void read_l4_route(Reader& r, const Node& root, Route& route, RouteKind kind) {
    const Node* spec = root.get("spec");
    route.kind = kind;
    if (kind == RouteKind::TLS) {
        r.map(spec, "spec", {"parentRefs", "hostnames", "rules", "useDefaultGateways"});
        route.hostnames = read_route_hostnames(r, spec, "spec");
    } else {
        r.map(spec, "spec", {"parentRefs", "rules", "useDefaultGateways"});
    }
    read_parent_refs(r, spec, "spec", route);
    const bool had = r.list(spec, "rules", "spec", 16, [&](const Node& rule, const std::string& rp) {
        r.map(&rule, rp, {"name", "backendRefs"});
        L4Rule lr;
        lr.name = r.str(&rule, "name", rp).value_or("");
        lr.backends = read_backend_refs(r, &rule, rp, false, false);
        route.l4_rules.push_back(std::move(lr));
    });
    if (!had || route.l4_rules.empty()) {
        r.error("spec.rules", "at least one rule is required");
    }
}

} // namespace

void load_documents(const std::vector<Document>& docs, const LoadOptions& opts, Store& store,
                    Diagnostics& diags, bool replace) {
    uint64_t seq = store.size();
    std::set<ObjectKey> present;
    auto key_of = [](const std::string& kind, const Meta& m) { return ObjectKey{kind, m.ns, m.name}; };
    auto index_existing = [&]() {
        for (const auto& o : store.classes) present.insert(key_of("GatewayClass", o.meta));
        for (const auto& o : store.gateways) present.insert(key_of("Gateway", o.meta));
        for (const auto& o : store.listener_sets) present.insert(key_of("ListenerSet", o.meta));
        for (const auto& o : store.routes) present.insert(key_of(route_kind_name(o.kind), o.meta));
        for (const auto& o : store.grants) present.insert(key_of("ReferenceGrant", o.meta));
        for (const auto& o : store.tls_policies) present.insert(key_of("BackendTLSPolicy", o.meta));
        for (const auto& o : store.namespaces) present.insert(key_of("Namespace", o.meta));
        for (const auto& o : store.services) present.insert(key_of("Service", o.meta));
        for (const auto& o : store.slices) present.insert(key_of("EndpointSlice", o.meta));
        for (const auto& o : store.secrets) present.insert(key_of("Secret", o.meta));
        for (const auto& o : store.config_maps) present.insert(key_of("ConfigMap", o.meta));
        for (const auto& o : store.deployments) present.insert(key_of("Deployment", o.meta));
    };
    index_existing();

    // Inserts or replaces by key.
    auto put = [&](auto& vec, auto obj, const std::string& kind, Reader& r) {
        ObjectKey k = key_of(kind, obj.meta);
        if (present.count(k)) {
            if (!replace) {
                r.error("metadata.name", "duplicate object: " + k.str() +
                                             " is already defined; this one is ignored");
                return;
            }
            for (auto& o : vec) {
                if (key_of(kind, o.meta) == k) {
                    obj.meta.sequence = o.meta.sequence;
                    o = std::move(obj);
                    return;
                }
            }
        }
        present.insert(k);
        vec.push_back(std::move(obj));
    };

    for (const Document& doc : docs) {
        Reader r(doc, diags, opts);
        const Node& root = doc.root;
        if (!root.is_map()) {
            r.error("", "a manifest must be an object with apiVersion and kind");
            continue;
        }
        // A List (kubectl get -o yaml) holds items.
        const Node* kind_n = root.get("kind");
        const Node* api_n = root.get("apiVersion");
        if (!kind_n || !kind_n->is_scalar() || !api_n || !api_n->is_scalar()) {
            r.error("", "apiVersion and kind are required strings");
            continue;
        }
        const std::string kind = kind_n->scalar;
        const std::string api = api_n->scalar;
        if (kind == "List" && api == "v1") {
            std::vector<Document> items;
            if (const Node* it = root.get("items"); it && it->is_seq()) {
                for (const Node& n : it->items) {
                    items.push_back(Document{doc.file, doc.index, n});
                }
            }
            load_documents(items, opts, store, diags, replace);
            present.clear();
            index_existing();
            continue;
        }
        const std::string group = api.find('/') == std::string::npos ? "" : api.substr(0, api.find('/'));
        const std::string version = api.substr(api.find('/') == std::string::npos ? 0 : api.find('/') + 1);
        auto meta_name = [&](const Node& rt) {
            const Node* md = rt.get("metadata");
            const Node* nm = md ? md->get("name") : nullptr;
            const Node* ns = md ? md->get("namespace") : nullptr;
            std::string s = kind + " ";
            if (ns && ns->is_scalar()) {
                s += ns->scalar + "/";
            }
            s += nm && nm->is_scalar() ? nm->scalar : "<unnamed>";
            return s;
        };
        r.set_object(meta_name(root));
        static const std::set<std::string> kTop = {"apiVersion", "kind", "metadata", "spec",
                                                   "status", "data", "stringData", "type",
                                                   "immutable", "endpoints", "ports", "addressType",
                                                   "binaryData"};
        for (const auto& [k, v] : root.fields) {
            if (!kTop.count(k)) {
                r.warn(k, "unknown field, ignored", &v);
            }
        }
        ++seq;
        const bool gw_group = group == kGatewayGroup;
        const bool alpha_group = group == "networking.x-k8s.io";
        auto version_ok = [&](std::initializer_list<const char*> vs) {
            for (const char* v : vs) {
                if (version == v) {
                    return true;
                }
            }
            r.error("apiVersion", "version '" + version + "' of " + kind + " is not served");
            return false;
        };

        if (gw_group && kind == "GatewayClass") {
            if (!version_ok({"v1", "v1beta1"})) continue;
            GatewayClass c;
            c.meta = read_meta(r, root, false, seq);
            const Node* spec = root.get("spec");
            r.map(spec, "spec", {"controllerName", "parametersRef", "description"});
            c.controller_name = r.str(spec, "controllerName", "spec", true).value_or("");
            if (const Node* pr = spec ? spec->get("parametersRef") : nullptr) {
                r.map(pr, "spec.parametersRef", {"group", "kind", "name", "namespace"});
                c.has_parameters_ref = true;
                c.parameters_group = r.str(pr, "group", "spec.parametersRef", true).value_or("");
                c.parameters_kind = r.str(pr, "kind", "spec.parametersRef", true).value_or("");
                c.parameters_name = r.str(pr, "name", "spec.parametersRef", true).value_or("");
                c.parameters_ns = r.str(pr, "namespace", "spec.parametersRef").value_or("");
            }
            if (r.ok()) put(store.classes, std::move(c), kind, r);
        } else if ((gw_group || alpha_group) && kind == "Gateway") {
            Gateway g;
            g.meta = read_meta(r, root, true, seq);
            if (alpha_group) {
                if (!version_ok({"v1alpha1"})) continue;
                read_gateway_v1alpha1(r, root, g);
            } else {
                if (!version_ok({"v1", "v1beta1"})) continue;
                read_gateway(r, root, g);
            }
            if (r.ok()) put(store.gateways, std::move(g), kind, r);
        } else if (gw_group && kind == "ListenerSet") {
            if (!version_ok({"v1", "v1alpha1"})) continue;
            ListenerSet ls;
            ls.meta = read_meta(r, root, true, seq);
            const Node* spec = root.get("spec");
            r.map(spec, "spec", {"parentRef", "listeners"});
            if (const Node* pr = spec ? spec->get("parentRef") : nullptr) {
                r.map(pr, "spec.parentRef", {"group", "kind", "name", "namespace"});
                ls.parent_group = r.str(pr, "group", "spec.parentRef").value_or(kGatewayGroup);
                ls.parent_kind = r.str(pr, "kind", "spec.parentRef").value_or("Gateway");
                ls.parent_name = r.str(pr, "name", "spec.parentRef", true).value_or("");
                ls.parent_ns = r.str(pr, "namespace", "spec.parentRef").value_or(ls.meta.ns);
            } else {
                r.error("spec.parentRef", "required");
            }
            ls.listeners = read_listeners(r, spec, "spec");
            if (r.ok()) put(store.listener_sets, std::move(ls), kind, r);
        } else if ((gw_group || alpha_group) && kind == "HTTPRoute") {
            Route rt;
            rt.meta = read_meta(r, root, true, seq);
            if (alpha_group) {
                if (!version_ok({"v1alpha1"})) continue;
                read_http_route_v1alpha1(r, root, rt);
            } else {
                if (!version_ok({"v1", "v1beta1"})) continue;
                read_http_route(r, root, rt);
            }
            if (r.ok()) put(store.routes, std::move(rt), kind, r);
        } else if (gw_group && kind == "GRPCRoute") {
            if (!version_ok({"v1", "v1alpha2"})) continue;
            Route rt;
            rt.meta = read_meta(r, root, true, seq);
            read_grpc_route(r, root, rt);
            if (r.ok()) put(store.routes, std::move(rt), kind, r);
        } else if (gw_group && (kind == "TLSRoute" || kind == "TCPRoute" || kind == "UDPRoute")) {
            if (kind == "TLSRoute" ? !version_ok({"v1", "v1alpha2", "v1alpha3"})
                                   : !version_ok({"v1", "v1alpha2"})) {
                continue;
            }
            Route rt;
            rt.meta = read_meta(r, root, true, seq);
            read_l4_route(r, root, rt,
                          kind == "TLSRoute"   ? RouteKind::TLS
                          : kind == "TCPRoute" ? RouteKind::TCP
                                               : RouteKind::UDP);
            if (r.ok()) put(store.routes, std::move(rt), kind, r);
        } else if (gw_group && kind == "ReferenceGrant") {
            if (!version_ok({"v1", "v1beta1", "v1alpha2"})) continue;
            ReferenceGrant g;
            g.meta = read_meta(r, root, true, seq);
            const Node* spec = root.get("spec");
            r.map(spec, "spec", {"from", "to"});
            r.list(spec, "from", "spec", 16, [&](const Node& f, const std::string& p) {
                r.map(&f, p, {"group", "kind", "namespace"});
                g.from.push_back({r.str(&f, "group", p, true).value_or(""),
                                  r.str(&f, "kind", p, true).value_or(""),
                                  r.str(&f, "namespace", p, true).value_or("")});
            });
            r.list(spec, "to", "spec", 16, [&](const Node& t, const std::string& p) {
                r.map(&t, p, {"group", "kind", "name"});
                ReferenceGrant::To to;
                to.group = r.str(&t, "group", p, true).value_or("");
                to.kind = r.str(&t, "kind", p, true).value_or("");
                if (auto n = r.str(&t, "name", p)) {
                    to.name = *n;
                }
                g.to.push_back(std::move(to));
            });
            if (g.from.empty() || g.to.empty()) {
                r.error("spec", "from and to need at least one entry each");
            }
            if (r.ok()) put(store.grants, std::move(g), kind, r);
        } else if (gw_group && kind == "BackendTLSPolicy") {
            if (!version_ok({"v1", "v1alpha3"})) continue;
            BackendTlsPolicy p;
            p.meta = read_meta(r, root, true, seq);
            const Node* spec = root.get("spec");
            r.map(spec, "spec", {"targetRefs", "validation", "options"});
            r.list(spec, "targetRefs", "spec", 16, [&](const Node& t, const std::string& tp) {
                r.map(&t, tp, {"group", "kind", "name", "sectionName"});
                BackendTlsPolicy::Target tg;
                tg.group = r.str(&t, "group", tp, true).value_or("");
                tg.kind = r.str(&t, "kind", tp, true).value_or("");
                tg.name = r.str(&t, "name", tp, true).value_or("");
                if (auto s = r.str(&t, "sectionName", tp)) {
                    tg.section_name = *s;
                }
                p.targets.push_back(std::move(tg));
            });
            if (p.targets.empty()) {
                r.error("spec.targetRefs", "at least one target is required");
            }
            const Node* v = spec ? spec->get("validation") : nullptr;
            if (!r.map(v, "spec.validation",
                       {"caCertificateRefs", "wellKnownCACertificates", "hostname",
                        "subjectAltNames"})) {
                r.error("spec.validation", "required");
            }
            r.list(v, "caCertificateRefs", "spec.validation", 8,
                   [&](const Node& c, const std::string& cp) {
                       p.ca_refs.push_back(read_object_ref(r, c, cp, "ConfigMap"));
                   });
            p.well_known_ca = r.str(v, "wellKnownCACertificates", "spec.validation").value_or("");
            p.hostname = r.str(v, "hostname", "spec.validation", true).value_or("");
            if (!p.hostname.empty()) {
                check_hostname(r, p.hostname, "spec.validation.hostname", false);
            }
            if (p.ca_refs.empty() == p.well_known_ca.empty()) {
                r.error("spec.validation",
                        "exactly one of caCertificateRefs or wellKnownCACertificates must be set");
            }
            r.list(v, "subjectAltNames", "spec.validation", 5,
                   [&](const Node& s, const std::string& sp) {
                       r.map(&s, sp, {"type", "hostname", "uri"});
                       BackendTlsPolicy::San san;
                       san.type = r.str(&s, "type", sp, true).value_or("");
                       san.value = san.type == "URI" ? r.str(&s, "uri", sp).value_or("")
                                                     : r.str(&s, "hostname", sp).value_or("");
                       if (san.type != "Hostname" && san.type != "URI") {
                           r.error(sp + ".type", "must be Hostname or URI");
                       }
                       p.sans.push_back(std::move(san));
                   });
            if (r.ok()) put(store.tls_policies, std::move(p), kind, r);
        } else if (group.empty() && kind == "Namespace") {
            Namespace n;
            n.meta = read_meta(r, root, false, seq);
            if (!dns_label(n.meta.name)) {
                r.error("metadata.name", "a Namespace name must be a DNS label");
            }
            if (r.ok()) put(store.namespaces, std::move(n), kind, r);
        } else if (group.empty() && kind == "Service") {
            Service s;
            s.meta = read_meta(r, root, true, seq);
            const Node* spec = root.get("spec");
            if (spec && spec->is_map()) {
                s.type = r.str(spec, "type", "spec").value_or("ClusterIP");
                s.cluster_ip = r.str(spec, "clusterIP", "spec").value_or("");
                s.external_name = r.str(spec, "externalName", "spec").value_or("");
                s.selector = r.str_map(spec, "selector", "spec");
                r.list(spec, "ports", "spec", 256, [&](const Node& p, const std::string& pp) {
                    ServicePort sp;
                    sp.name = r.str(&p, "name", pp).value_or("");
                    sp.port = static_cast<int>(r.integer(&p, "port", pp, 1, 65535, true).value_or(0));
                    if (const Node* tp = p.get("targetPort"); tp && tp->is_scalar()) {
                        int v = 0;
                        auto res = std::from_chars(tp->scalar.data(),
                                                   tp->scalar.data() + tp->scalar.size(), v);
                        if (res.ec == std::errc() && !tp->quoted) {
                            sp.target_port = v;
                        } else {
                            sp.target_port_name = tp->scalar;
                        }
                    }
                    if (sp.target_port == 0 && sp.target_port_name.empty()) {
                        sp.target_port = sp.port;
                    }
                    sp.protocol = r.str(&p, "protocol", pp).value_or("TCP");
                    sp.app_protocol = r.str(&p, "appProtocol", pp).value_or("");
                    s.ports.push_back(std::move(sp));
                });
            }
            if (r.ok()) put(store.services, std::move(s), kind, r);
        } else if (group == "discovery.k8s.io" && kind == "EndpointSlice") {
            EndpointSlice es;
            es.meta = read_meta(r, root, true, seq);
            auto it = es.meta.labels.find("kubernetes.io/service-name");
            if (it != es.meta.labels.end()) {
                es.service = it->second;
            }
            es.address_type = r.str(&root, "addressType", "").value_or("IPv4");
            r.list(&root, "endpoints", "", 1000, [&](const Node& e, const std::string& p) {
                EndpointSlice::Endpoint ep;
                ep.addresses = r.str_list(&e, "addresses", p, 100);
                ep.hostname = r.str(&e, "hostname", p).value_or("");
                if (const Node* c = e.get("conditions")) {
                    ep.ready = r.boolean(c, "ready", p + ".conditions").value_or(true);
                    ep.serving = r.boolean(c, "serving", p + ".conditions").value_or(ep.ready);
                    ep.terminating = r.boolean(c, "terminating", p + ".conditions").value_or(false);
                }
                es.endpoints.push_back(std::move(ep));
            });
            r.list(&root, "ports", "", 100, [&](const Node& p, const std::string& pp) {
                EndpointSlice::Port port;
                port.name = r.str(&p, "name", pp).value_or("");
                port.port = static_cast<int>(r.integer(&p, "port", pp, 1, 65535).value_or(0));
                port.protocol = r.str(&p, "protocol", pp).value_or("TCP");
                port.app_protocol = r.str(&p, "appProtocol", pp).value_or("");
                es.ports.push_back(std::move(port));
            });
            if (r.ok()) put(store.slices, std::move(es), kind, r);
        } else if (group.empty() && kind == "Secret") {
            Secret s;
            s.meta = read_meta(r, root, true, seq);
            s.type = r.str(&root, "type", "").value_or("Opaque");
            for (const auto& [k, v] : r.str_map(&root, "data", "")) {
                bool ok = false;
                std::string dec = base64_decode(v, ok);
                if (!ok) {
                    r.error("data." + k, "not valid base64");
                }
                s.data[k] = std::move(dec);
            }
            for (const auto& [k, v] : r.str_map(&root, "stringData", "")) {
                s.data[k] = v;
            }
            if (r.ok()) put(store.secrets, std::move(s), kind, r);
        } else if (group.empty() && kind == "ConfigMap") {
            ConfigMap c;
            c.meta = read_meta(r, root, true, seq);
            c.data = r.str_map(&root, "data", "");
            if (r.ok()) put(store.config_maps, std::move(c), kind, r);
        } else if (group == "apps" && kind == "Deployment") {
            Deployment d;
            d.meta = read_meta(r, root, true, seq);
            const Node* spec = root.get("spec");
            const Node* tmpl = spec ? spec->get("template") : nullptr;
            const Node* tmd = tmpl ? tmpl->get("metadata") : nullptr;
            if (tmd) {
                d.pod_labels = r.str_map(tmd, "labels", "spec.template.metadata");
            }
            d.replicas = static_cast<int>(r.integer(spec, "replicas", "spec", 0, 100000).value_or(1));
            if (r.ok()) put(store.deployments, std::move(d), kind, r);
        } else if (kind == "Pod" || kind == "ServiceAccount" || kind == "Role" ||
                   kind == "RoleBinding" || kind == "ClusterRole" ||
                   kind == "ClusterRoleBinding" || kind == "CustomResourceDefinition" ||
                   kind == "DaemonSet" || kind == "StatefulSet") {
            // Kubernetes objects that sluice does not consume: ignored without noise.
            continue;
        } else {
            diags.add({.severity = Severity::Warning,
                       .file = doc.file,
                       .doc = doc.index,
                       .line = root.line,
                       .object = meta_name(root),
                       .field = "kind",
                       .message = "unknown kind " + api + "/" + kind + ", ignored"});
        }
    }
}

} // namespace sluice::cp
