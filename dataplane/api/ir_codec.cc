#include "ir_codec.h"

#include <cstring>
#include <sstream>
#include <type_traits>

namespace sluice::ir {

const char* protocol_name(Protocol p) noexcept {
    switch (p) {
    case Protocol::HTTP:
        return "HTTP";
    case Protocol::HTTPS:
        return "HTTPS";
    case Protocol::TLS:
        return "TLS";
    case Protocol::TCP:
        return "TCP";
    case Protocol::UDP:
        return "UDP";
    }
    return "?";
}

bool parse_fwd_mode(std::string_view s, FwdMode& out) noexcept {
    if (s == "full-nat") {
        out = FwdMode::FullNat;
    } else if (s == "dsr-ipip") {
        out = FwdMode::DsrIpip;
    } else if (s == "dsr-gue") {
        out = FwdMode::DsrGue;
    } else {
        return false;
    }
    return true;
}

namespace {

constexpr char kMagic[4] = {'S', 'L', 'I', 'R'};
constexpr size_t kHeader = 4 + 4 + 8 + 8;

template <class T>
concept HasIo = requires(T& t, int& a) { t.template io<int>(a); };

template <class T>
struct IsVector : std::false_type {};
template <class T>
struct IsVector<std::vector<T>> : std::true_type {};
template <class T>
struct IsPair : std::false_type {};
template <class A, class B>
struct IsPair<std::pair<A, B>> : std::true_type {};

/// Walks the IR twice: a Sizer pass adds up the encoded size, then the Writer fills a
/// buffer of exactly that size (no growth, no per-byte capacity checks; strings by memcpy).
class Sizer {
public:
    template <class... Ts>
    void operator()(const Ts&... vs) {
        (put(vs), ...);
    }
    [[nodiscard]] size_t size() const noexcept { return n_; }

private:
    template <class T>
    void put(const T& v) {
        if constexpr (std::is_same_v<T, bool>) {
            n_ += 1;
        } else if constexpr (std::is_enum_v<T> || std::is_integral_v<T>) {
            n_ += sizeof(T);
        } else if constexpr (std::is_same_v<T, std::string>) {
            n_ += 4 + v.size();
        } else if constexpr (IsVector<T>::value) {
            n_ += 4;
            if constexpr (std::is_integral_v<typename T::value_type> &&
                          !std::is_same_v<typename T::value_type, bool>) {
                n_ += v.size() * sizeof(typename T::value_type);
            } else {
                for (const auto& e : v) {
                    put(e);
                }
            }
        } else if constexpr (IsPair<T>::value) {
            put(v.first);
            put(v.second);
        } else {
            const_cast<T&>(v).io(*this);
        }
    }
    size_t n_ = 0;
};

class Encoder {
public:
    explicit Encoder(char* out)
        : p_(out) {}
    template <class... Ts>
    void operator()(const Ts&... vs) {
        (put(vs), ...);
    }
    [[nodiscard]] const char* end() const noexcept { return p_; }

private:
    template <size_t N>
    void raw(uint64_t v) {
        for (size_t i = 0; i < N; ++i) {
            p_[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
        }
        p_ += N;
    }
    template <class T>
    void put(const T& v) {
        if constexpr (std::is_same_v<T, bool>) {
            raw<1>(v ? 1 : 0);
        } else if constexpr (std::is_enum_v<T> || std::is_integral_v<T>) {
            raw<sizeof(T)>(static_cast<uint64_t>(v));
        } else if constexpr (std::is_same_v<T, std::string>) {
            raw<4>(v.size());
            if (!v.empty()) {
                std::memcpy(p_, v.data(), v.size());
                p_ += v.size();
            }
        } else if constexpr (IsVector<T>::value) {
            raw<4>(v.size());
            for (const auto& e : v) {
                put(e);
            }
        } else if constexpr (IsPair<T>::value) {
            put(v.first);
            put(v.second);
        } else {
            const_cast<T&>(v).io(*this);
        }
    }
    char* p_;
};

class Decoder {
public:
    explicit Decoder(std::string_view in)
        : in_(in) {}
    template <class... Ts>
    void operator()(Ts&... vs) {
        (get(vs), ...);
    }
    [[nodiscard]] bool ok() const noexcept { return ok_; }
    [[nodiscard]] bool done() const noexcept { return pos_ == in_.size(); }
    [[nodiscard]] const std::string& error() const noexcept { return error_; }

private:
    bool need(size_t n) {
        if (!ok_ || in_.size() - pos_ < n) {
            fail_with("truncated input");
            return false;
        }
        return true;
    }
    void fail_with(const char* why) {
        if (ok_) {
            ok_ = false;
            error_ = std::string(why) + " at byte " + std::to_string(pos_);
        }
    }
    uint64_t raw(size_t n) {
        if (!need(n)) {
            return 0;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < n; ++i) {
            v |= static_cast<uint64_t>(static_cast<unsigned char>(in_[pos_ + i])) << (8 * i);
        }
        pos_ += n;
        return v;
    }
    template <class T>
    void get(T& v) {
        if (!ok_) {
            return;
        }
        if constexpr (std::is_same_v<T, bool>) {
            const uint64_t b = raw(1);
            if (b > 1) {
                fail_with("bad boolean");
            }
            v = b == 1;
        } else if constexpr (std::is_enum_v<T>) {
            v = static_cast<T>(raw(sizeof(T)));
        } else if constexpr (std::is_integral_v<T>) {
            v = static_cast<T>(raw(sizeof(T)));
        } else if constexpr (std::is_same_v<T, std::string>) {
            const size_t n = raw(4);
            if (!need(n)) {
                return;
            }
            v.assign(in_.substr(pos_, n));
            pos_ += n;
        } else if constexpr (IsVector<T>::value) {
            const size_t n = raw(4);
            // Every element takes at least one byte: a count larger than the rest of the
            // input is a lie, and must not size an allocation.
            if (n > in_.size() - pos_) {
                fail_with("element count larger than the input");
                return;
            }
            v.clear();
            v.resize(n);
            for (auto& e : v) {
                get(e);
                if (!ok_) {
                    return;
                }
            }
        } else if constexpr (IsPair<T>::value) {
            get(v.first);
            get(v.second);
        } else {
            v.io(*this);
        }
    }
    std::string_view in_;
    size_t pos_ = 0;
    bool ok_ = true;
    std::string error_;
};

void put_le(std::string& s, size_t at, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        s[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
    }
}

uint64_t get_le(std::string_view s, size_t at, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
        v |= static_cast<uint64_t>(static_cast<unsigned char>(s[at + i])) << (8 * i);
    }
    return v;
}

} // namespace

uint64_t hash_of(std::string_view encoded) noexcept {
    uint64_t h = 1469598103934665603ULL;
    for (char c : encoded) {
        h ^= static_cast<unsigned char>(c);
        h *= 1099511628211ULL;
    }
    return h;
}

std::string encode(const Ir& ir) {
    std::string out;
    encode_into(ir, out);
    return out;
}

void encode_into(const Ir& ir, std::string& out) {
    Sizer sizer;
    const_cast<Ir&>(ir).io(sizer);
    out.resize(kHeader + sizer.size()); // (only growth is zero-filled; all is overwritten)
    std::memcpy(out.data(), kMagic, 4);
    Encoder enc(out.data() + kHeader);
    const_cast<Ir&>(ir).io(enc);
    const std::string_view body(out.data() + kHeader, out.size() - kHeader);
    put_le(out, 4, kIrVersion, 4);
    put_le(out, 8, hash_of(body), 8);
    put_le(out, 16, body.size(), 8);
}

uint64_t body_hash(std::string_view encoded) noexcept {
    return encoded.size() < kHeader ? hash_of(encoded) : get_le(encoded, 8, 8);
}

Result<Ir> decode(std::string_view bytes) {
    if (bytes.size() < kHeader || std::memcmp(bytes.data(), kMagic, 4) != 0) {
        return fail(Errc::Invalid, "not an IR blob (bad magic or too short)");
    }
    const uint32_t version = static_cast<uint32_t>(get_le(bytes, 4, 4));
    if (version != kIrVersion) {
        return fail(Errc::Version, "IR format version " + std::to_string(version) +
                                       ", this build speaks " + std::to_string(kIrVersion));
    }
    const uint64_t hash = get_le(bytes, 8, 8);
    const uint64_t len = get_le(bytes, 16, 8);
    const std::string_view body = bytes.substr(kHeader);
    if (len != body.size()) {
        return fail(Errc::Invalid, "IR body length mismatch");
    }
    if (hash_of(body) != hash) {
        return fail(Errc::Invalid, "IR checksum mismatch");
    }
    Ir ir;
    Decoder dec(body);
    ir.io(dec);
    if (!dec.ok()) {
        return fail(Errc::Invalid, "IR decode: " + dec.error());
    }
    if (!dec.done()) {
        return fail(Errc::Invalid, "IR decode: trailing bytes");
    }
    if (ir.version != kIrVersion) {
        return fail(Errc::Version, "IR body version mismatch");
    }
    // Cross-references must be in range, so consumers can index without checks.
    for (const Gateway& g : ir.gateways) {
        for (uint32_t l : g.listeners) {
            if (l >= ir.listeners.size()) {
                return fail(Errc::Invalid, "gateway listener index out of range");
            }
        }
    }
    auto mirrors_ok = [&](uint32_t fi) {
        if (fi == kNone) {
            return true;
        }
        if (fi >= ir.filters.size()) {
            return false;
        }
        for (const Mirror& m : ir.filters[fi].mirrors) {
            if (m.group != kNone && m.group >= ir.groups.size()) {
                return false;
            }
        }
        return true;
    };
    for (const Rule& r : ir.rules) {
        if (!mirrors_ok(r.filters)) {
            return fail(Errc::Invalid, "rule filter index out of range");
        }
        for (const Backend& b : r.backends) {
            if ((b.status == 0 && b.group >= ir.groups.size()) || !mirrors_ok(b.filters)) {
                return fail(Errc::Invalid, "backend group or filter index out of range");
            }
        }
    }
    const size_t n_rules = ir.rules.size();
    for (const Listener& l : ir.listeners) {
        for (const HttpMatch& m : l.http_matches) {
            if (m.rule >= n_rules) {
                return fail(Errc::Invalid, "match rule index out of range");
            }
        }
        for (const GrpcMatch& m : l.grpc_matches) {
            if (m.rule >= n_rules) {
                return fail(Errc::Invalid, "grpc match rule index out of range");
            }
        }
        for (const HostGroup& h : l.host_groups) {
            for (uint32_t i : h.http) {
                if (i >= l.http_matches.size()) {
                    return fail(Errc::Invalid, "host group index out of range");
                }
            }
            for (uint32_t i : h.grpc) {
                if (i >= l.grpc_matches.size()) {
                    return fail(Errc::Invalid, "host group grpc index out of range");
                }
            }
        }
        for (const SniRoute& s : l.sni_routes) {
            if (s.rule >= n_rules) {
                return fail(Errc::Invalid, "sni route rule index out of range");
            }
        }
        if (l.l4_rule != kNone && l.l4_rule >= n_rules) {
            return fail(Errc::Invalid, "l4 rule index out of range");
        }
    }
    return ir;
}

namespace {

void text_backends(std::ostringstream& o, const Ir& ir, const std::vector<Backend>& bs,
                   const char* indent) {
    for (const Backend& b : bs) {
        o << indent << "backend weight=" << b.weight;
        if (b.status != 0) {
            o << " status=" << b.status << " (" << b.reason << ")";
        } else {
            const BackendGroup& g = ir.groups[b.group];
            o << " " << g.ns << "/" << g.name << ":" << g.port;
        }
        if (b.filters != kNone) {
            o << " +filters";
        }
        o << "\n";
    }
}

} // namespace

std::string to_text(const Ir& ir) {
    std::ostringstream o;
    o << "ir version " << ir.version << "\n";
    for (const Gateway& g : ir.gateways) {
        o << "gateway " << g.ns << "/" << g.name;
        for (const auto& a : g.addresses) {
            o << " " << a;
        }
        o << "\n";
        for (uint32_t li : g.listeners) {
            const Listener& l = ir.listeners[li];
            o << "  listener " << l.name << " " << protocol_name(l.protocol) << ":" << l.port
              << (l.hostname.empty() ? "" : " host=" + l.hostname)
              << " matches=" << l.http_matches.size() + l.grpc_matches.size() << "\n";
            for (const HostGroup& h : l.host_groups) {
                o << "    host " << (h.hostname.empty() ? "*" : h.hostname) << "\n";
                for (uint32_t mi : h.http) {
                    const HttpMatch& m = l.http_matches[mi];
                    const Rule& r = ir.rules[m.rule];
                    o << "      " << (m.path_type == PathType::Exact    ? "Exact "
                                      : m.path_type == PathType::Prefix ? "Prefix "
                                                                        : "Regex ")
                      << m.path << (m.method.empty() ? "" : " method=" + m.method)
                      << " headers=" << m.headers.size() << " query=" << m.query.size() << " -> "
                      << r.route_ns << "/" << r.route_name << " rule " << r.index << "\n";
                    text_backends(o, ir, r.backends, "        ");
                }
                for (uint32_t mi : h.grpc) {
                    const GrpcMatch& m = l.grpc_matches[mi];
                    const Rule& r = ir.rules[m.rule];
                    o << "      grpc " << (m.service.empty() ? "*" : m.service) << "/"
                      << (m.method.empty() ? "*" : m.method) << " -> " << r.route_ns << "/"
                      << r.route_name << " rule " << r.index << "\n";
                    text_backends(o, ir, r.backends, "        ");
                }
            }
            for (const SniRoute& s : l.sni_routes) {
                const Rule& r = ir.rules[s.rule];
                o << "    sni " << (s.hostname.empty() ? "*" : s.hostname) << " -> " << r.route_ns
                  << "/" << r.route_name << "\n";
                text_backends(o, ir, r.backends, "      ");
            }
            if (l.l4_rule != kNone) {
                const Rule& r = ir.rules[l.l4_rule];
                o << "    l4 -> " << r.route_ns << "/" << r.route_name << "\n";
                text_backends(o, ir, r.backends, "      ");
            }
        }
    }
    for (size_t i = 0; i < ir.groups.size(); ++i) {
        const BackendGroup& g = ir.groups[i];
        o << "group " << i << " " << g.ns << "/" << g.name << ":" << g.port
          << (g.app_protocol.empty() ? "" : " app=" + g.app_protocol)
          << (g.tls ? " tls sni=" + g.tls_sni : "") << " endpoints=" << g.endpoints.size() << "\n";
    }
    return o.str();
}

} // namespace sluice::ir
