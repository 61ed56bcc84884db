#pragma once

/// @file
/// Gateway API hostname rules shared by the compiler and the request decision:
/// `*.example.com` matches one or more extra labels (`a.example.com`, `a.b.example.com`),
/// never `example.com` itself; "" matches anything. Thread: any; no allocation except
/// intersect()'s result.

#include <string>
#include <string_view>

namespace sluice::hosts {

/// Case-insensitive ASCII equality.
[[nodiscard]] inline bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        x = (x >= 'A' && x <= 'Z') ? static_cast<char>(x + 32) : x;
        y = (y >= 'A' && y <= 'Z') ? static_cast<char>(y + 32) : y;
        if (x != y) {
            return false;
        }
    }
    return true;
}

/// Does `pattern` ("", exact, or "*.suffix") match the concrete host `host`?
[[nodiscard]] inline bool matches(std::string_view pattern, std::string_view host) noexcept {
    if (pattern.empty()) {
        return true;
    }
    if (pattern.starts_with("*.")) {
        const std::string_view suffix = pattern.substr(1); // ".example.com"
        return host.size() > suffix.size() &&
               iequals(host.substr(host.size() - suffix.size()), suffix) &&
               host[0] != '.';
    }
    return iequals(pattern, host);
}

/// The hostnames both a route hostname `r` and a listener hostname `l` accept, as one
/// pattern (the more specific of the two), or "" when they do not intersect. A listener
/// without hostname (l == "") accepts r as is.
[[nodiscard]] inline std::string intersect(const std::string& r, const std::string& l) {
    if (l.empty()) {
        return r;
    }
    const bool rw = r.starts_with("*."), lw = l.starts_with("*.");
    if (!rw && !lw) {
        return iequals(r, l) ? r : std::string();
    }
    if (!rw && lw) {
        return matches(l, r) ? r : std::string();
    }
    if (rw && !lw) {
        return matches(r, l) ? l : std::string();
    }
    // both wildcards: the longer suffix is the intersection if it lies within the other
    if (r.size() >= l.size()) {
        return (iequals(r, l) || matches(l, std::string_view(r).substr(2))) ? r : std::string();
    }
    return matches(r, std::string_view(l).substr(2)) ? l : std::string();
}

/// Host header without its port (`example.com:8080` -> `example.com`, `[::1]:80` -> `[::1]`).
[[nodiscard]] inline std::string_view strip_port(std::string_view host) noexcept {
    if (!host.empty() && host[0] == '[') {
        const size_t close = host.find(']');
        return close == std::string_view::npos ? host : host.substr(0, close + 1);
    }
    const size_t colon = host.rfind(':');
    if (colon != std::string_view::npos && host.find(':') == colon) {
        return host.substr(0, colon);
    }
    return host;
}

} // namespace sluice::hosts
