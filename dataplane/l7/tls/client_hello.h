#pragma once

/// @file
/// Reads the SNI of a TLS ClientHello from the first bytes a client sent, without
/// terminating TLS (passthrough listeners route on it; mixed ports pick terminate or
/// passthrough with it). The handshake message may span several TLS records and any number
/// of TCP segments: call again with more bytes while the answer is Incomplete.
/// Thread: any; no allocation.

#include <cstddef>
#include <string_view>

namespace sluice::l7 {

enum class HelloStatus : unsigned char {
    Incomplete, ///< a prefix of a valid ClientHello: read more
    Ok,         ///< complete; `sni` is the host_name ("" when the client sent none)
    NotTls,     ///< not a TLS handshake record at all
    Error       ///< malformed or too large
};

inline constexpr size_t kMaxClientHello = 16384 + 4; ///< handshake message cap (bytes)

/// Parses `buf` (the bytes received so far). `scratch` (at least kMaxClientHello bytes)
/// receives the handshake message reassembled from its records; on Ok, `sni` views into
/// `scratch` (case as sent: compare case-insensitively).
[[nodiscard]] HelloStatus parse_client_hello(std::string_view buf, char* scratch,
                                             std::string_view& sni) noexcept;

} // namespace sluice::l7
