#pragma once

/// @file
/// HTTP/1.1 message heads (RFC 9110/9112), parsed incrementally and without copying: every
/// string_view points into the caller's buffer, which must stay unchanged while the Head is
/// used. Strict against request smuggling: anything RFC 9112 lets a recipient reject is
/// rejected (conflicting Content-Length / Transfer-Encoding, obs-fold, bare CR or LF as a
/// line end, invalid token or field characters, duplicate Host, absolute-form target whose
/// authority differs from Host, unknown transfer codings, over-long heads).
/// Thread: any; no allocation, no exceptions.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sluice::http {

inline constexpr size_t kMaxHeaders = 128; ///< hard cap of the fixed header array

struct Limits {
    size_t max_head_bytes = 16384; ///< request line + headers; beyond it: 431
    size_t max_headers = 100;      ///< header lines; beyond it: 431 (<= kMaxHeaders)
};

struct HeaderView {
    std::string_view name;  ///< as sent (compare case-insensitively)
    std::string_view value; ///< leading/trailing OWS removed
};

enum class BodyKind : uint8_t {
    None,      ///< no body (no framing headers; HEAD response; 1xx/204/304)
    Length,    ///< Content-Length bytes follow
    Chunked,   ///< Transfer-Encoding: chunked (final coding)
    UntilClose ///< response without framing: body runs to connection close
};

struct Head {
    // Request line (requests) -----------------------------------------------------------
    std::string_view method;
    std::string_view target; ///< request-target as sent (origin-, absolute-, authority- or asterisk-form)
    // Status line (responses) ------------------------------------------------------------
    uint16_t status = 0;
    std::string_view reason;
    // Both ------------------------------------------------------------------------------
    uint8_t version_minor = 1; ///< HTTP/1.x
    HeaderView headers[kMaxHeaders];
    size_t n_headers = 0;
    size_t head_len = 0; ///< bytes of the head including the final CRLF CRLF

    // Derived while parsing ---------------------------------------------------------------
    BodyKind body = BodyKind::None;
    uint64_t content_length = 0;  ///< BodyKind::Length
    std::string_view host;        ///< Host header value (requests; "" when absent)
    bool keep_alive = true;       ///< after this message (version default + Connection)
    bool expect_continue = false; ///< Expect: 100-continue (requests)
    bool upgrade = false;         ///< Connection: upgrade + Upgrade header present
    std::string_view upgrade_proto; ///< the Upgrade header's value
};

enum class Status : uint8_t { Complete, Incomplete, Error };

struct Result {
    Status status = Status::Incomplete;
    uint16_t error_status = 0; ///< on Error: 400, 431 (too large), 501 (unknown coding), 505
    std::string_view why;      ///< on Error: short static reason for logs
};

/// Parses a request head from the start of `buf`. Incomplete means "read more" (and is an
/// Error with 431 once `buf` exceeds limits.max_head_bytes without a complete head).
[[nodiscard]] Result parse_request(std::string_view buf, const Limits& limits, Head& out) noexcept;

/// Parses a response head. `request_method` and the status decide whether a body follows
/// (HEAD, 1xx, 204, 304 have none; CONNECT 2xx becomes a tunnel: BodyKind::UntilClose).
[[nodiscard]] Result parse_response(std::string_view buf, const Limits& limits,
                                    std::string_view request_method, Head& out) noexcept;

/// Case-insensitive ASCII comparison of header names and tokens. Inline: the proxy calls it
/// for every header of every message against a handful of names, and the length check
/// settles most calls.
[[nodiscard]] inline bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    for (size_t i = 0; i < a.size(); ++i) {
        const char x = a[i], y = b[i];
        if (x != y) {
            const char lx = (x >= 'A' && x <= 'Z') ? static_cast<char>(x - 'A' + 'a') : x;
            const char ly = (y >= 'A' && y <= 'Z') ? static_cast<char>(y - 'A' + 'a') : y;
            if (lx != ly) {
                return false;
            }
        }
    }
    return true;
}

/// First header named `name` (case-insensitive), or nullptr.
[[nodiscard]] const HeaderView* find_header(const Head& h, std::string_view name) noexcept;

/// Follows a chunked body through arbitrary segmentation, so that a proxy can forward the
/// bytes verbatim and still know exactly where the message ends (chunk-size lines with
/// extensions, chunk data, CRLFs, trailer section). Strict: hex sizes without overflow,
/// CRLF line ends only, bounded extension and trailer lengths.
class ChunkedDecoder {
public:
    struct Step {
        size_t consumed = 0;  ///< bytes of `in` that belong to this message
        bool done = false;    ///< the last chunk and trailers are complete
        bool error = false;   ///< malformed framing: answer 400 / close
        std::string_view why; ///< on error
    };
    /// Consumes from `in`; stops at the end of the message (done) or of `in`.
    /// Payload bytes are reported through `on_data` spans when it is non-null.
    template <typename OnData>
    Step feed(std::string_view in, OnData&& on_data) noexcept;
    Step feed(std::string_view in) noexcept {
        return feed(in, [](std::string_view) {});
    }
    void reset() noexcept { *this = ChunkedDecoder{}; }

    // State (public for the template; treat as private).
    enum class St : uint8_t { Size, Ext, SizeLf, Data, DataCr, DataLf, Trailer, TrailerLf, Done };
    St st = St::Size;
    uint64_t remaining = 0; ///< data bytes left in the current chunk
    size_t size_digits = 0;
    size_t line_len = 0; ///< bytes of the current extension / trailer line
    bool trailer_line_empty = true;
    static constexpr size_t kMaxLine = 4096;
};

} // namespace sluice::http

#include "parser_inl.h"
