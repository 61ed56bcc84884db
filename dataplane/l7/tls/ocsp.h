#pragma once

/// @file
/// OCSP staples of served certificates: the check a staple (a DER OCSP response from the
/// certificate's Secret, key tls.ocsp-staple) must pass before TlsPort staples it. The check
/// is made once per table build, never per handshake; what a handshake needs afterwards (the
/// bytes and the nextUpdate deadline) is returned.
///
/// The response's signature is not verified here: the client does that against its own
/// trust, and a server cannot make a bad signature good. What is checked is what makes a
/// staple wrong for this server: not an OCSP response, not "successful", not about this
/// certificate, or out of date.
///
/// Thread: any (control path: allocates).

#include <cstdint>
#include <ctime>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "pem.h"
#include "result.h"

namespace sluice::l7::ocsp {

/// Largest staple accepted (a response for one certificate is a few KiB at most).
inline constexpr size_t kMaxStapleBytes = 64 * 1024;
/// Allowed clock skew for a thisUpdate ahead of our clock.
inline constexpr time_t kClockSkewS = 300;
/// nextUpdate of a response that has none (RFC 6960 4.2.2.1: newer information is
/// always available): never expires by the clock.
inline constexpr time_t kNoNextUpdate = std::numeric_limits<time_t>::max();

/// What a valid staple says, as far as serving it is concerned.
struct StapleInfo {
    time_t next_update = kNoNextUpdate; ///< after this instant the staple is stale
    int cert_status = 0;                ///< V_OCSP_CERTSTATUS_GOOD / _REVOKED / _UNKNOWN
};

/// Checks `der` as a staple for `certs.front()` (a bundle as pem::read_certs returns it,
/// leaf first): a DER OCSPResponse of at most kMaxStapleBytes with responseStatus
/// successful, a basic response with exactly one SingleResponse, whose CertID names the leaf
/// (serial number and issuer-name hash; also the issuer-key hash when the issuer is among
/// the other certificates of `certs`), whose thisUpdate is not after `now` + kClockSkewS and
/// whose nextUpdate, if present, is after `now`. The certificate status itself (good,
/// revoked, unknown) is not judged: it is returned.
/// @return the staple's deadline and status; Errc::Invalid with the reason otherwise (the
///   thread's OpenSSL error queue is left empty either way).
/// Thread: any.
[[nodiscard]] Result<StapleInfo> check_staple(std::string_view der,
                                              const std::vector<pem::X509Ptr>& certs, time_t now);

/// "2026-11-30T02:00:00Z" (UTC) for log lines; "never" for kNoNextUpdate. Thread: any.
[[nodiscard]] std::string format_time(time_t t);

/// "good", "revoked" or "unknown". Thread: any.
[[nodiscard]] const char* cert_status_name(int status) noexcept;

} // namespace sluice::l7::ocsp
