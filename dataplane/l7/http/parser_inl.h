#pragma once

/// @file
/// ChunkedDecoder::feed (included at the end of parser.h; do not include directly).
///
/// Grammar followed (RFC 9112 7.1), strictly:
///   chunked-body = *chunk last-chunk trailer-section CRLF
///   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
///   chunk-size   = 1*16HEXDIG            (16 digits fit in 64 bits: no overflow possible)
///   chunk-ext    = ";" ...               (no BWS before ';'; no CTL but HTAB; <= kMaxLine bytes)
///   last-chunk   = 1*("0") [ chunk-ext ] CRLF
///   trailer line = field-name ":" ...    (token name, no obs-fold, no CTL but HTAB; <= kMaxLine)
/// Every line ends in CRLF: a bare LF or a CR not followed by LF is an error. After an error
/// the decoder must be reset (or dropped with its connection); further feeds are memory-safe
/// but their result is unspecified.

#include <type_traits>

namespace sluice::http {

namespace chunked_detail {

/// Value of a hex digit, or -1.
constexpr int hex_value(unsigned char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/// tchar (RFC 9110 5.6.2).
constexpr bool is_tchar(unsigned char c) noexcept {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return true;
    }
    switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
        return true;
    default:
        return false;
    }
}

/// Bytes allowed inside an extension or trailer line: HTAB, SP, VCHAR, obs-text.
constexpr bool is_line_char(unsigned char c) noexcept {
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

} // namespace chunked_detail

template <typename OnData>
ChunkedDecoder::Step ChunkedDecoder::feed(std::string_view in, OnData&& on_data) noexcept {
    using chunked_detail::hex_value;
    using chunked_detail::is_line_char;
    using chunked_detail::is_tchar;
    using Fn = std::decay_t<OnData>;

    Step step;
    size_t i = 0;
    const size_t n = in.size();
    auto fail = [&](std::string_view why) {
        step.consumed = i;
        step.error = true;
        step.why = why;
        return step;
    };

    while (i < n) {
        const auto c = static_cast<unsigned char>(in[i]);
        switch (st) {
        case St::Size: {
            const int v = hex_value(c);
            if (v >= 0) {
                if (size_digits == 16) {
                    return fail("chunk size too long");
                }
                remaining = (remaining << 4) | static_cast<uint64_t>(v);
                ++size_digits;
                ++i;
            } else if (size_digits == 0) {
                return fail("invalid chunk size");
            } else if (c == ';') {
                st = St::Ext;
                line_len = 1;
                ++i;
            } else if (c == '\r') {
                st = St::SizeLf;
                ++i;
            } else if (c == '\n') {
                return fail("bare LF in chunk size line");
            } else {
                return fail("invalid chunk size");
            }
            break;
        }
        case St::Ext:
            if (c == '\r') {
                st = St::SizeLf;
                ++i;
            } else if (c == '\n') {
                return fail("bare LF in chunk extension");
            } else if (!is_line_char(c)) {
                return fail("invalid byte in chunk extension");
            } else if (++line_len > kMaxLine) {
                return fail("chunk extension too long");
            } else {
                ++i;
            }
            break;
        case St::SizeLf:
            if (c != '\n') {
                return fail("bare CR in chunk size line");
            }
            ++i;
            size_digits = 0;
            line_len = 0;
            if (remaining == 0) {
                st = St::Trailer;
                trailer_line_empty = true;
            } else {
                st = St::Data;
            }
            break;
        case St::Data: {
            const size_t avail = n - i;
            const size_t take = remaining < avail ? static_cast<size_t>(remaining) : avail;
            if constexpr (std::is_same_v<Fn, std::nullptr_t>) {
                // No callback: the caller only wants the framing.
            } else if constexpr (std::is_pointer_v<Fn>) {
                if (on_data != nullptr) {
                    on_data(in.substr(i, take));
                }
            } else {
                on_data(in.substr(i, take));
            }
            i += take;
            remaining -= take;
            if (remaining == 0) {
                st = St::DataCr;
            }
            break;
        }
        case St::DataCr:
            if (c != '\r') {
                return fail("missing CRLF after chunk data");
            }
            st = St::DataLf;
            ++i;
            break;
        case St::DataLf:
            if (c != '\n') {
                return fail("missing CRLF after chunk data");
            }
            st = St::Size;
            size_digits = 0;
            remaining = 0;
            ++i;
            break;
        case St::Trailer:
            // While a trailer line is read, size_digits (unused here) marks the part of the
            // line: 0 = field name, 1 = after the colon.
            if (c == '\r') {
                if (!trailer_line_empty && size_digits == 0) {
                    return fail("trailer line without colon");
                }
                st = St::TrailerLf;
                ++i;
                break;
            }
            if (c == '\n') {
                return fail("bare LF in trailer section");
            }
            if (trailer_line_empty) {
                if (c == ' ' || c == '\t') {
                    return fail("obs-fold in trailer section");
                }
                size_digits = 0;
            }
            if (size_digits == 0) {
                if (c == ':') {
                    if (trailer_line_empty) {
                        return fail("empty trailer field name");
                    }
                    size_digits = 1;
                } else if (!is_tchar(c)) {
                    return fail("invalid trailer field name");
                }
            } else if (!is_line_char(c)) {
                return fail("invalid byte in trailer field");
            }
            trailer_line_empty = false;
            if (++line_len > kMaxLine) {
                return fail("trailer line too long");
            }
            ++i;
            break;
        case St::TrailerLf:
            if (c != '\n') {
                return fail("bare CR in trailer section");
            }
            ++i;
            if (trailer_line_empty) {
                st = St::Done;
                step.consumed = i;
                step.done = true;
                return step;
            }
            st = St::Trailer;
            trailer_line_empty = true;
            size_digits = 0;
            line_len = 0;
            break;
        case St::Done:
            step.consumed = i;
            step.done = true;
            return step;
        }
    }
    step.consumed = i;
    step.done = st == St::Done;
    return step;
}

} // namespace sluice::http
