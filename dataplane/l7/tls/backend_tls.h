#pragma once

/// @file
/// Gateway-to-backend TLS (BackendTLSPolicy, Gateway spec.tls.backend.clientCertificateRef):
/// one OpenSSL client context per distinct (trust roots, SNI, subjectAltNames, client
/// certificate). The engine builds them when tables are installed, keeps them in a cache
/// keyed by BackendTlsConfig::key() so that an unchanged policy keeps its context (and its
/// pooled connections) across configuration changes, and makes one client SSL per backend
/// connection with new_ssl().
///
/// What a handshake verifies (Gateway API BackendTLSPolicy, REFERENCE.md 7.7):
/// - the backend's chain against the policy's CA certificates, or the system's trust store
///   when the policy names none (WellKnownCACertificates: System);
/// - without subjectAltNames: the certificate matches the SNI (validation.hostname), by its
///   DNS subjectAltNames (wildcards as RFC 6125; the subject CN is never used);
/// - with subjectAltNames: the certificate matches at least one of them instead, a
///   "DNS:name" as a host name (same rules), a "URI:uri" by an equal URI subjectAltName.
/// TLS 1.2 minimum; SNI = validation.hostname; ALPN http/1.1, or h2 for HTTP/2 backends;
/// the Gateway's client certificate presented when the backend asks for one. No session
/// resumption (pooled keep-alive connections carry the reuse).
///
/// Thread: build() on dp-control; a built BackendTls is immutable and new_ssl() and the
/// static functions may be called from any L7 thread concurrently. An SSL made by
/// new_ssl() may outlive its BackendTls (it holds its own reference to the context).

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/ssl.h>

#include "result.h"

namespace sluice::l7 {

/// The inputs of one client context.
struct BackendTlsConfig {
    std::string sni;               ///< SNI, and the name verified when `sans` is empty
    std::vector<std::string> sans; ///< "DNS:name" / "URI:uri"; any one must match
    std::string ca_pem;            ///< trust roots (PEM bundle); "" = the system's
    std::string client_cert_pem;   ///< presented when asked; "" = none
    std::string client_key_pem;

    /// A digest of every field: equal configurations give equal keys (the cache key).
    [[nodiscard]] std::string key() const;
};

class BackendTls {
public:
    /// Builds the client context. Errc::Invalid for a bad CA bundle, an unusable
    /// subjectAltName, or a bad client certificate or key (or one that does not match);
    /// Errc::Io when the system trust store cannot be read; Errc::Internal when OpenSSL
    /// cannot allocate. Thread: dp-control (allocates, may read the system trust store).
    [[nodiscard]] static Result<std::shared_ptr<const BackendTls>>
    build(const BackendTlsConfig& cfg);

    BackendTls(const BackendTls&) = delete;
    BackendTls& operator=(const BackendTls&) = delete;
    ~BackendTls();

    /// A client SSL (connect state) on `fd` with the SNI and ALPN ("h2" when `h2`, else
    /// "http/1.1") set; the caller drives SSL_do_handshake and frees it with SSL_free.
    /// nullptr if OpenSSL cannot allocate. Thread: any L7 thread (allocates, as every
    /// handshake does).
    [[nodiscard]] SSL* new_ssl(int fd, bool h2) const noexcept;

    /// Unique per built context in this process (never reused): backend connections are
    /// pooled by it, so a pooled connection only serves requests of the same context.
    [[nodiscard]] uint64_t id() const noexcept { return id_; }
    [[nodiscard]] const std::string& sni() const noexcept { return sni_; }

    /// True when `cert` matches one of `sans` ("DNS:name": RFC 6125 host name match on the
    /// DNS subjectAltNames, no partial wildcards, never the subject CN; "URI:uri": an equal
    /// URI subjectAltName). Other prefixes never match. Thread: any.
    [[nodiscard]] static bool matches_sans(X509* cert,
                                           const std::vector<std::string>& sans) noexcept;

    /// Why the handshake of `ssl` failed, into `buf` (the certificate verification error
    /// when there is one, else the first entry of this thread's OpenSSL error queue, which
    /// it drains). Returns `buf`. Thread: the thread that ran the handshake; no allocation.
    static const char* failure(const SSL* ssl, char* buf, size_t n) noexcept;

private:
    BackendTls() = default;

    struct CtxFree {
        void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
    };
    std::unique_ptr<SSL_CTX, CtxFree> ctx_;
    std::string sni_;
    uint64_t id_ = 0;
};

} // namespace sluice::l7
