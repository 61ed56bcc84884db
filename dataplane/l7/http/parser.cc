// HTTP/1.1 head parser (RFC 9110/9112; see parser.h). Two passes over the head: the first
// splits it into lines and checks the syntax of every line as soon as the line is complete
// (so malformed bytes are answered without waiting for the rest); the second, once the head
// is complete, derives framing, Host, Connection and Expect from the header array and
// enforces the cross-header rules (CL vs TE, duplicate Host, absolute-form vs Host).
// Worker/L7-callable: no allocation, no exceptions; every string_view points into `buf`.

#include "parser.h"

#include <array>
#include <cstring>

namespace sluice::http {
namespace {

// ---------------------------------------------------------------------------------------
// Character classes

constexpr std::array<bool, 256> make_tchar_table() {
    std::array<bool, 256> t{};
    for (int c = '0'; c <= '9'; ++c) {
        t[static_cast<size_t>(c)] = true;
    }
    for (int c = 'a'; c <= 'z'; ++c) {
        t[static_cast<size_t>(c)] = true;
        t[static_cast<size_t>(c - 'a' + 'A')] = true;
    }
    for (const char c : std::string_view("!#$%&'*+-.^_`|~")) {
        t[static_cast<unsigned char>(c)] = true;
    }
    return t;
}

constexpr std::array<bool, 256> kTchar = make_tchar_table();

/// tchar (RFC 9110 5.6.2).
constexpr bool is_tchar(char c) noexcept {
    return kTchar[static_cast<unsigned char>(c)];
}

constexpr bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

constexpr bool is_hex(char c) noexcept {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

constexpr bool is_ows(char c) noexcept {
    return c == ' ' || c == '\t';
}

/// A CTL (or DEL) that may not appear in a field value, reason phrase or target.
constexpr bool is_bad_ctl(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return (u < 0x20 && u != '\t') || u == 0x7f;
}

/// Index of the first byte of `v` that is_bad_ctl(), or npos. Eight bytes at a time: a word
/// with no byte below 0x20 and none equal to 0x7f (bytes >= 0x80, obs-text, pass) is clean;
/// only a word with a candidate (HTAB, usually) is looked at byte by byte. Field values are
/// most of a head's bytes, and this check ran per byte before.
size_t find_bad_ctl(std::string_view v) noexcept {
    constexpr uint64_t k01 = 0x0101010101010101ULL;
    constexpr uint64_t k80 = 0x8080808080808080ULL;
    const char* p = v.data();
    const size_t n = v.size();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        std::memcpy(&w, p + i, 8);
        const uint64_t below = (w - 0x20 * k01) & ~w & k80; // some byte < 0x20
        const uint64_t x = w ^ (0x7f * k01);
        const uint64_t del = (x - k01) & ~x & k80; // some byte == 0x7f
        if ((below | del) != 0) {
            for (size_t k = i; k < i + 8; ++k) {
                if (is_bad_ctl(p[k])) {
                    return k;
                }
            }
        }
    }
    for (; i < n; ++i) {
        if (is_bad_ctl(p[i])) {
            return i;
        }
    }
    return std::string_view::npos;
}

bool is_token(std::string_view s) noexcept {
    if (s.empty()) {
        return false;
    }
    for (const char c : s) {
        if (!is_tchar(c)) {
            return false;
        }
    }
    return true;
}

std::string_view trim_ows(std::string_view s) noexcept {
    while (!s.empty() && is_ows(s.front())) {
        s.remove_prefix(1);
    }
    while (!s.empty() && is_ows(s.back())) {
        s.remove_suffix(1);
    }
    return s;
}

/// Calls fn(element) for every non-empty, OWS-trimmed element of a comma-separated list
/// (RFC 9110 5.6.1: empty elements are ignored). Stops early when fn returns false.
template <typename Fn>
bool for_each_element(std::string_view list, Fn&& fn) noexcept {
    while (true) {
        const size_t comma = list.find(',');
        const std::string_view elem = trim_ows(list.substr(0, comma));
        if (!elem.empty() && !fn(elem)) {
            return false;
        }
        if (comma == std::string_view::npos) {
            return true;
        }
        list.remove_prefix(comma + 1);
    }
}

// ---------------------------------------------------------------------------------------
// Results

constexpr Result ok() noexcept {
    return {Status::Complete, 0, {}};
}

constexpr Result incomplete() noexcept {
    return {Status::Incomplete, 0, {}};
}

constexpr Result error(uint16_t code, std::string_view why) noexcept {
    return {Status::Error, code, why};
}

constexpr Result kTooLarge = error(431, "head too large");

// ---------------------------------------------------------------------------------------
// Host and authority (RFC 3986 3.2.2, RFC 9110 7.2)

/// host [ ":" port ] with host = IP-literal / IPv4address / reg-name, where reg-name
/// excludes ',' (list confusion) and requires well-formed pct-encoding. An empty host is
/// accepted only as a completely empty value (RFC 9112 3.2: Host with an empty value).
/// reg-name characters besides pct-encoding: unreserved / sub-delims without ','.
constexpr std::array<bool, 256> make_reg_name_table() {
    std::array<bool, 256> t{};
    for (int c = 0; c < 256; ++c) {
        const bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                                c == '~';
        const bool sub_delim = c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' ||
                               c == ')' || c == '*' || c == '+' || c == ';' || c == '=';
        t[static_cast<size_t>(c)] = unreserved || sub_delim;
    }
    return t;
}
constexpr std::array<bool, 256> kRegName = make_reg_name_table();

bool valid_host(std::string_view v) noexcept {
    if (v.empty()) {
        return true;
    }
    size_t i = 0;
    if (v[0] == '[') {
        const size_t close = v.find(']');
        if (close == std::string_view::npos || close == 1) {
            return false;
        }
        for (size_t k = 1; k < close; ++k) {
            const char c = v[k];
            if (!is_hex(c) && c != ':' && c != '.') {
                return false;
            }
        }
        i = close + 1;
    } else {
        while (i < v.size() && v[i] != ':') {
            const char c = v[i];
            if (c == '%') {
                if (i + 2 >= v.size() || !is_hex(v[i + 1]) || !is_hex(v[i + 2])) {
                    return false;
                }
                i += 3;
                continue;
            }
            if (!kRegName[static_cast<unsigned char>(c)]) {
                return false;
            }
            ++i;
        }
        if (i == 0) {
            return false; // ":80"
        }
    }
    if (i == v.size()) {
        return true;
    }
    if (v[i] != ':') {
        return false;
    }
    for (++i; i < v.size(); ++i) {
        if (!is_digit(v[i])) {
            return false;
        }
    }
    return true;
}

/// The authority of an http/https absolute-form target (`found` false for other forms).
struct Authority {
    bool found = false;
    std::string_view value;
};

Authority absolute_form_authority(std::string_view target) noexcept {
    size_t skip = 0;
    if (target.size() >= 7 && iequals(target.substr(0, 7), "http://")) {
        skip = 7;
    } else if (target.size() >= 8 && iequals(target.substr(0, 8), "https://")) {
        skip = 8;
    } else {
        return {};
    }
    std::string_view rest = target.substr(skip);
    const size_t end = rest.find_first_of("/?#");
    return {true, rest.substr(0, end)};
}

// ---------------------------------------------------------------------------------------
// Framing headers

/// Content-Length: 1*DIGIT, possibly as a list of identical values across one or more
/// header lines. `have` tells whether a previous value was already folded into `value`.
bool merge_content_length(std::string_view field, bool& have, uint64_t& value) noexcept {
    bool bad = false;
    // Empty elements are not ignored here: "5," or ",5" is a malformed length.
    std::string_view list = field;
    while (true) {
        const size_t comma = list.find(',');
        const std::string_view elem = trim_ows(list.substr(0, comma));
        if (elem.empty()) {
            return false;
        }
        uint64_t v = 0;
        for (const char c : elem) {
            if (!is_digit(c)) {
                return false;
            }
            const auto d = static_cast<uint64_t>(c - '0');
            if (v > (UINT64_MAX - d) / 10) {
                return false;
            }
            v = v * 10 + d;
        }
        if (have && v != value) {
            bad = true;
        }
        have = true;
        value = v;
        if (comma == std::string_view::npos) {
            break;
        }
        list.remove_prefix(comma + 1);
    }
    return !bad;
}

enum class TeVerdict : uint8_t {
    ChunkedLast, ///< chunked once, and final
    NotChunked,  ///< only other codings (chunked absent)
    ChunkedNotLast,
    ChunkedTwice,
    Unknown, ///< a coding that is not registered (or carries parameters)
    Empty,   ///< the header lists no coding at all
};

bool known_coding(std::string_view c) noexcept {
    return iequals(c, "gzip") || iequals(c, "x-gzip") || iequals(c, "deflate") ||
           iequals(c, "compress") || iequals(c, "x-compress");
}

/// Folds every Transfer-Encoding line (in order, as one list) into a verdict.
TeVerdict classify_te(const Head& h) noexcept {
    size_t codings = 0;
    size_t chunked = 0;
    bool chunked_last = false;
    bool unknown = false;
    bool malformed = false;
    for (size_t k = 0; k < h.n_headers; ++k) {
        if (!iequals(h.headers[k].name, "transfer-encoding")) {
            continue;
        }
        for_each_element(h.headers[k].value, [&](std::string_view c) {
            ++codings;
            if (iequals(c, "chunked")) {
                ++chunked;
                chunked_last = true;
                return true;
            }
            chunked_last = false;
            if (!is_token(c)) {
                // Parameters or garbage: "chunked;x=1" must never be read as chunked by
                // one hop and as something else by the next.
                malformed = true;
            } else if (!known_coding(c)) {
                unknown = true;
            }
            return true;
        });
    }
    if (codings == 0) {
        return TeVerdict::Empty;
    }
    if (chunked > 1) {
        return TeVerdict::ChunkedTwice;
    }
    if (chunked == 1 && !chunked_last) {
        return TeVerdict::ChunkedNotLast;
    }
    if (malformed || unknown) {
        return TeVerdict::Unknown;
    }
    return chunked == 1 ? TeVerdict::ChunkedLast : TeVerdict::NotChunked;
}

// ---------------------------------------------------------------------------------------
// Lines

enum class LineState : uint8_t { Ok, Incomplete, TooLarge, BareLf };

/// Finds the LF that ends the line starting at `pos`, looking only inside the first
/// `limit` bytes of `buf`. On Ok, [pos, eol) is the line without its CRLF and `next` the
/// start of the following line. A CR inside the line is left for the caller's character
/// checks (it is a bare CR).
LineState next_line(std::string_view buf, size_t pos, size_t limit, size_t& eol,
                    size_t& next) noexcept {
    const size_t end = buf.size() < limit ? buf.size() : limit;
    if (pos >= end) {
        return buf.size() > limit ? LineState::TooLarge : LineState::Incomplete;
    }
    const void* lf = std::memchr(buf.data() + pos, '\n', end - pos);
    if (lf == nullptr) {
        return buf.size() > limit ? LineState::TooLarge : LineState::Incomplete;
    }
    const size_t at = static_cast<size_t>(static_cast<const char*>(lf) - buf.data());
    if (at == pos || buf[at - 1] != '\r') {
        return LineState::BareLf;
    }
    eol = at - 1;
    next = at + 1;
    return LineState::Ok;
}

Result line_error(LineState s) noexcept {
    switch (s) {
    case LineState::TooLarge:
        return kTooLarge;
    case LineState::BareLf:
        return error(400, "bare LF line terminator");
    case LineState::Incomplete:
    case LineState::Ok:
        break;
    }
    return incomplete();
}

/// "HTTP/1.0" / "HTTP/1.1" -> minor version; HTTP/d.d otherwise -> 505; else 400.
Result parse_version(std::string_view v, uint8_t& minor) noexcept {
    if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || !is_digit(v[5]) || v[6] != '.' ||
        !is_digit(v[7])) {
        return error(400, "malformed HTTP version");
    }
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1')) {
        return error(505, "HTTP version not supported");
    }
    minor = static_cast<uint8_t>(v[7] - '0');
    return ok();
}

Result parse_request_line(std::string_view line, Head& out) noexcept {
    const size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) {
        return error(400, "malformed request line");
    }
    out.method = line.substr(0, sp1);
    if (!is_token(out.method)) {
        return error(400, "invalid method");
    }
    const size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) {
        return error(400, "malformed request line");
    }
    out.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (out.target.empty()) {
        return error(400, "malformed request line");
    }
    if (const size_t bad = find_bad_ctl(out.target); bad != std::string_view::npos) {
        return error(400, out.target[bad] == '\r' ? "bare CR in request line"
                                                  : "invalid request target");
    }
    return parse_version(line.substr(sp2 + 1), out.version_minor);
}

Result parse_status_line(std::string_view line, Head& out) noexcept {
    if (line.size() < 8) {
        return error(400, "malformed status line");
    }
    const Result v = parse_version(line.substr(0, 8), out.version_minor);
    if (v.status == Status::Error) {
        return v;
    }
    if (line.size() < 12 || line[8] != ' ' || !is_digit(line[9]) || !is_digit(line[10]) ||
        !is_digit(line[11])) {
        return error(400, "malformed status code");
    }
    out.status = static_cast<uint16_t>((line[9] - '0') * 100 + (line[10] - '0') * 10 +
                                       (line[11] - '0'));
    if (out.status < 100 || out.status > 599) {
        return error(400, "status code out of range");
    }
    if (line.size() == 12) {
        // "HTTP/1.1 200" without SP reason: tolerated.
        return ok();
    }
    if (line[12] != ' ') {
        return error(400, "malformed status line");
    }
    out.reason = line.substr(13);
    if (const size_t bad = find_bad_ctl(out.reason); bad != std::string_view::npos) {
        return error(400, out.reason[bad] == '\r' ? "bare CR in status line"
                                                  : "invalid reason phrase");
    }
    return ok();
}

/// field-line = field-name ":" OWS field-value OWS, checked strictly.
Result parse_field_line(std::string_view line, HeaderView& hv) noexcept {
    if (is_ows(line.front())) {
        return error(400, "obs-fold or leading whitespace in header");
    }
    size_t colon = 0;
    while (colon < line.size() && is_tchar(line[colon])) {
        ++colon;
    }
    if (colon == line.size()) {
        return error(400, "header line without colon");
    }
    if (line[colon] != ':') {
        if (is_ows(line[colon])) {
            return error(400, "whitespace before colon");
        }
        return error(400, line[colon] == '\r' ? "bare CR in header" : "invalid header name");
    }
    if (colon == 0) {
        return error(400, "empty header name");
    }
    const std::string_view value = line.substr(colon + 1);
    if (const size_t bad = find_bad_ctl(value); bad != std::string_view::npos) {
        return error(400, value[bad] == '\r' ? "bare CR in header value" : "CTL in header value");
    }
    hv.name = line.substr(0, colon);
    hv.value = trim_ows(value);
    return ok();
}

void reset(Head& out) noexcept {
    out.method = {};
    out.target = {};
    out.status = 0;
    out.reason = {};
    out.version_minor = 1;
    out.n_headers = 0;
    out.head_len = 0;
    out.body = BodyKind::None;
    out.content_length = 0;
    out.host = {};
    out.keep_alive = true;
    out.expect_continue = false;
    out.upgrade = false;
    out.upgrade_proto = {};
}

/// Splits the head into start line + header fields. Complete means `out.head_len`,
/// the start line fields and `out.headers` are set.
Result split_head(std::string_view buf, const Limits& limits, bool is_request,
                  Head& out) noexcept {
    const size_t limit = limits.max_head_bytes;
    const size_t max_headers = limits.max_headers < kMaxHeaders ? limits.max_headers
                                                                 : kMaxHeaders;
    size_t pos = 0;
    if (is_request) {
        // RFC 9112 2.2: ignore at least one empty line before the request-line; we take two.
        for (int k = 0; k < 3 && pos < buf.size(); ++k) {
            if (buf[pos] == '\n') {
                return error(400, "bare LF line terminator");
            }
            if (buf[pos] != '\r') {
                break;
            }
            if (pos + 1 >= buf.size()) {
                return buf.size() > limit ? kTooLarge : incomplete();
            }
            if (buf[pos + 1] != '\n') {
                return error(400, "bare CR");
            }
            if (k == 2) {
                return error(400, "too many empty lines before request line");
            }
            pos += 2;
        }
    }

    size_t eol = 0;
    size_t next = 0;
    LineState ls = next_line(buf, pos, limit, eol, next);
    if (ls != LineState::Ok) {
        return line_error(ls);
    }
    const std::string_view start = buf.substr(pos, eol - pos);
    const Result r = is_request ? parse_request_line(start, out) : parse_status_line(start, out);
    if (r.status != Status::Complete) {
        return r;
    }
    pos = next;

    while (true) {
        ls = next_line(buf, pos, limit, eol, next);
        if (ls != LineState::Ok) {
            return line_error(ls);
        }
        if (eol == pos) {
            out.head_len = next;
            return ok();
        }
        if (out.n_headers == max_headers) {
            return error(431, "too many headers");
        }
        const Result f = parse_field_line(buf.substr(pos, eol - pos), out.headers[out.n_headers]);
        if (f.status != Status::Complete) {
            return f;
        }
        ++out.n_headers;
        pos = next;
    }
}

/// Connection tokens, Upgrade and Content-Length / Transfer-Encoding presence.
struct Framing {
    bool conn_close = false;
    bool conn_keep_alive = false;
    bool conn_upgrade = false;
    const HeaderView* upgrade = nullptr;
    bool have_cl = false;
    uint64_t cl = 0;
    bool have_te = false;
};

Result scan_common(const Head& h, Framing& f) noexcept {
    for (size_t k = 0; k < h.n_headers; ++k) {
        const HeaderView& hv = h.headers[k];
        if (iequals(hv.name, "content-length")) {
            if (!merge_content_length(hv.value, f.have_cl, f.cl)) {
                return error(400, "invalid or conflicting Content-Length");
            }
        } else if (iequals(hv.name, "transfer-encoding")) {
            f.have_te = true;
        } else if (iequals(hv.name, "connection")) {
            for_each_element(hv.value, [&](std::string_view t) {
                if (iequals(t, "close")) {
                    f.conn_close = true;
                } else if (iequals(t, "keep-alive")) {
                    f.conn_keep_alive = true;
                } else if (iequals(t, "upgrade")) {
                    f.conn_upgrade = true;
                }
                return true;
            });
        } else if (iequals(hv.name, "upgrade")) {
            if (f.upgrade == nullptr) {
                f.upgrade = &hv;
            }
        }
    }
    return ok();
}

void apply_connection(const Framing& f, Head& out) noexcept {
    out.keep_alive = out.version_minor >= 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
    // RFC 9110 7.8: Upgrade is ignored in HTTP/1.0 messages.
    if (out.version_minor >= 1 && f.conn_upgrade && f.upgrade != nullptr) {
        out.upgrade = true;
        out.upgrade_proto = f.upgrade->value;
    }
}

} // namespace

const HeaderView* find_header(const Head& h, std::string_view name) noexcept {
    for (size_t k = 0; k < h.n_headers; ++k) {
        if (iequals(h.headers[k].name, name)) {
            return &h.headers[k];
        }
    }
    return nullptr;
}

Result parse_request(std::string_view buf, const Limits& limits, Head& out) noexcept {
    reset(out);
    const Result split = split_head(buf, limits, true, out);
    if (split.status != Status::Complete) {
        return split;
    }

    Framing f;
    const Result common = scan_common(out, f);
    if (common.status != Status::Complete) {
        return common;
    }
    const HeaderView* host = nullptr;
    for (size_t k = 0; k < out.n_headers; ++k) {
        const HeaderView& hv = out.headers[k];
        if (iequals(hv.name, "host")) {
            if (host != nullptr) {
                return error(400, "duplicate Host");
            }
            host = &hv;
        } else if (iequals(hv.name, "expect")) {
            // RFC 9110 10.1.1: a 100-continue expectation in HTTP/1.0 is ignored.
            if (out.version_minor >= 1 && iequals(hv.value, "100-continue")) {
                out.expect_continue = true;
            }
        }
    }

    // Host (RFC 9112 3.2) and the absolute-form authority.
    if (host == nullptr) {
        if (out.version_minor >= 1) {
            return error(400, "missing Host");
        }
    } else {
        if (!valid_host(host->value)) {
            return error(400, "invalid Host");
        }
        out.host = host->value;
    }
    const Authority auth = absolute_form_authority(out.target);
    if (auth.found) {
        if (auth.value.find('@') != std::string_view::npos) {
            return error(400, "userinfo in request target");
        }
        if (auth.value.empty() || !valid_host(auth.value)) {
            return error(400, "invalid authority in request target");
        }
        if (host != nullptr && !iequals(auth.value, host->value)) {
            return error(400, "Host differs from request target authority");
        }
    }

    // Framing (RFC 9112 6.1-6.3).
    if (f.have_te) {
        if (out.version_minor == 0) {
            return error(400, "Transfer-Encoding in HTTP/1.0 request");
        }
        if (f.have_cl) {
            return error(400, "both Content-Length and Transfer-Encoding");
        }
        switch (classify_te(out)) {
        case TeVerdict::ChunkedLast:
            out.body = BodyKind::Chunked;
            break;
        case TeVerdict::ChunkedTwice:
            return error(400, "chunked applied more than once");
        case TeVerdict::ChunkedNotLast:
        case TeVerdict::NotChunked:
            return error(400, "chunked is not the final transfer coding");
        case TeVerdict::Empty:
            return error(400, "empty Transfer-Encoding");
        case TeVerdict::Unknown:
            return error(501, "unknown transfer coding");
        }
    } else if (f.have_cl) {
        out.body = BodyKind::Length;
        out.content_length = f.cl;
    }

    apply_connection(f, out);
    return ok();
}

Result parse_response(std::string_view buf, const Limits& limits,
                      std::string_view request_method, Head& out) noexcept {
    reset(out);
    const Result split = split_head(buf, limits, false, out);
    if (split.status != Status::Complete) {
        return split;
    }

    Framing f;
    const Result common = scan_common(out, f);
    if (common.status != Status::Complete) {
        return common;
    }
    apply_connection(f, out);

    TeVerdict te = TeVerdict::Empty;
    if (f.have_te) {
        te = classify_te(out);
        if (te == TeVerdict::ChunkedTwice) {
            return error(400, "chunked applied more than once");
        }
        if (te == TeVerdict::Empty) {
            return error(400, "empty Transfer-Encoding");
        }
        if (out.version_minor == 0) {
            // RFC 9112 6.1: framing of an HTTP/1.0 message with Transfer-Encoding is faulty;
            // process it, then close.
            out.keep_alive = false;
        }
    }

    // RFC 9112 6.3, in order.
    const uint16_t s = out.status;
    // Methods are case-sensitive (RFC 9110 9.1).
    if (request_method == "HEAD" || (s >= 100 && s < 200) || s == 204 || s == 304) {
        out.body = BodyKind::None;
        return ok();
    }
    if (request_method == "CONNECT" && s >= 200 && s < 300) {
        out.body = BodyKind::UntilClose;
        out.keep_alive = false;
        return ok();
    }
    if (f.have_te) {
        if (f.have_cl) {
            out.keep_alive = false;
        }
        if (te == TeVerdict::ChunkedLast) {
            out.body = BodyKind::Chunked;
        } else {
            out.body = BodyKind::UntilClose;
            out.keep_alive = false;
        }
        return ok();
    }
    if (f.have_cl) {
        out.body = BodyKind::Length;
        out.content_length = f.cl;
        return ok();
    }
    out.body = BodyKind::UntilClose;
    out.keep_alive = false;
    return ok();
}

} // namespace sluice::http
