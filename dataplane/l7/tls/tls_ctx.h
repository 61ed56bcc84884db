#pragma once

/// @file
/// TLS termination contexts of the L7 engine: one TlsPort per (address, port) serves every
/// Terminate listener there. build() turns each listener into an OpenSSL SSL_CTX (its
/// certificates, ALPN, versions, ciphers, client-certificate validation); new_ssl() hands
/// out a server SSL whose ClientHello callback picks the listener by SNI and switches the
/// connection onto that listener's context before version, cipher, certificate and session
/// decisions are made.
///
/// Session resumption uses stateless tickets only (the server session cache is off, so no
/// lock is shared between cores). Ticket keys come from a TicketKeys ring shared by every
/// TlsPort (set_ticket_keys(); by default a random secret rotated hourly), so tickets survive
/// configuration publishes and rotate on the clock. Each listener has its own
/// session-id context, so a session never resumes on another listener (which could skip
/// that listener's client-certificate check). No 0-RTT early data.
///
/// OCSP stapling: a certificate whose ir::CertRef::ocsp_der passes ocsp::check_staple at
/// build() has that response stapled when a client asks (status_request), for that
/// certificate only (an RSA and an ECDSA certificate of one listener each have their own).
/// A staple that fails the check is not stapled and is reported in errors(); the listener
/// serves as without one. A loaded staple whose nextUpdate passes is no longer stapled once
/// expire_staples() has seen it (dp-control calls it periodically); build() checks again.
///
/// Thread: build() on dp-control; the built TlsPort is immutable and new_ssl() and the
/// static accessors may be called from any L7 thread concurrently. A TlsPort must outlive
/// every SSL it created (the ClientHello callback points at it).

#include <atomic>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/ssl.h>

#include "ir.h"
#include "pem.h"
#include "result.h"
#include "ticket_keys.h"

namespace sluice::l7 {

/// Keys of ir::Listener::tls_options (Gateway API listener.tls.options) read by build().
inline constexpr std::string_view kOptMinVersion = "sluice.dev/min-version"; ///< "1.2" | "1.3"
inline constexpr std::string_view kOptCiphers = "sluice.dev/ciphers"; ///< TLS 1.2 cipher list
inline constexpr std::string_view kOptCiphersuites = "sluice.dev/ciphersuites"; ///< TLS 1.3

/// TLS server side for every terminating listener that shares one (address, port).
class TlsPort {
public:
    /// Builds one SSL_CTX per Terminate listener in `listeners` (indices into ir.listeners,
    /// all on the same port; their order breaks ties between equal hostnames):
    /// - every certificate of the listener (RSA and ECDSA may both be loaded: OpenSSL picks by
    ///   the client's signature algorithms and ciphers); a second certificate of an already
    ///   loaded key type is ignored and reported;
    /// - ALPN for HTTPS listeners: the server's preference "h2" (only if `offer_h2`), then
    ///   "http/1.1", selected from the client's list; no overlap = no ALPN (not an alert);
    ///   TLS (TLSRoute) listeners do not negotiate ALPN;
    /// - TLS 1.2 minimum, ECDHE + AEAD TLS 1.2 ciphers, OpenSSL's TLS 1.3 suites, server
    ///   cipher preference, no renegotiation, session tickets on;
    /// - tls_options kOptMinVersion, kOptCiphers, kOptCiphersuites; other keys are ignored;
    /// - client_ca_pems non-empty: client certificates are requested and verified against
    ///   them; a missing or failing certificate aborts the handshake, unless
    ///   client_cert_optional (AllowInsecureFallback), where the connection proceeds and
    ///   client_cert_verified() tells the outcome.
    /// - a certificate's OCSP staple (ocsp_der) that passes ocsp::check_staple at the current
    ///   time is stapled for that certificate; one that fails is reported in errors() (the
    ///   listener still serves, without a staple), as is a valid one saying "revoked" (still
    ///   stapled: it is the CA's word).
    /// A listener with invalid PEM, a key that does not match its certificate, no
    /// certificate, or an invalid option value is left out and reported in errors().
    /// @return the port; Errc::Invalid if an index is out of range, the listeners do not
    ///   share a port, or no listener is usable (the message lists why); Errc::Internal if
    ///   OpenSSL fails to allocate.
    /// Thread: dp-control (any; allocates).
    [[nodiscard]] static Result<std::unique_ptr<TlsPort>>
    build(const ir::Ir& ir, const std::vector<uint32_t>& listeners, bool offer_h2);

    TlsPort(const TlsPort&) = delete;
    TlsPort& operator=(const TlsPort&) = delete;
    ~TlsPort();

    /// A new server-side SSL (accept state) for an accepted connection; the caller attaches
    /// its BIOs, drives SSL_do_handshake and frees it with SSL_free. During the handshake
    /// the listener whose hostname matches the SNI most specifically (exact > longest
    /// wildcard > no hostname) is chosen; an SNI no listener accepts fails the handshake
    /// with an unrecognized_name alert. Without SNI the catch-all listener (no hostname)
    /// is chosen, else the first usable listener.
    /// @return nullptr if OpenSSL cannot allocate.
    /// Thread: any L7 thread (allocates, as every OpenSSL handshake does).
    [[nodiscard]] SSL* new_ssl() const noexcept;

    /// The listener chosen for `ssl` (index into ir.listeners), or ir::kNone before the
    /// ClientHello was processed or for an SSL not made by a TlsPort. Thread: any.
    [[nodiscard]] static uint32_t chosen_listener(const SSL* ssl) noexcept;

    /// The SNI the client sent, "" if none (valid while `ssl` lives). Thread: any.
    [[nodiscard]] static std::string_view sni(const SSL* ssl) noexcept;

    /// True when the client presented a certificate that verified against the chosen
    /// listener's CAs (the only case for a listener that requires one). Thread: any.
    [[nodiscard]] static bool client_cert_verified(const SSL* ssl) noexcept;

    /// Problems found at build time, one line per listener problem ("ns/gateway/listener:
    /// why"); a listener named here with "left out" serves no traffic.
    [[nodiscard]] const std::vector<std::string>& errors() const noexcept { return errors_; }

    /// The ticket-key ring of TlsPorts built from now on (null: a random secret, hourly
    /// rotation, made on first use). Thread: dp-control, like build().
    static void set_ticket_keys(std::shared_ptr<const TicketKeys> keys);

    /// Listeners that got a context, in build order (indices into ir.listeners).
    [[nodiscard]] std::vector<uint32_t> listeners() const;

    /// OCSP staples being stapled now (passed the build-time check, not expired since).
    /// Thread: any.
    [[nodiscard]] size_t staples() const noexcept;

    /// OCSP staples not stapled: refused at build time, or expired since (expire_staples).
    /// Thread: any.
    [[nodiscard]] size_t staples_refused() const noexcept;

    /// Stops stapling the staples whose nextUpdate is at or before `now`; returns one line
    /// per staple newly stopped ("ns/gateway/listener: certificate ns/name: ..."), nothing
    /// for those stopped before. Handshakes only read a flag this sets: the clock is not read
    /// per handshake, so a staple can outlive its nextUpdate by one call period.
    /// Thread: dp-control (one thread at a time); concurrent with new_ssl() and handshakes.
    std::vector<std::string> expire_staples(time_t now) const;

private:
    struct CtxFree {
        void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
    };
    using CtxPtr = std::unique_ptr<SSL_CTX, CtxFree>;

    /// One usable listener.
    struct Site {
        uint32_t listener = ir::kNone;
        std::string hostname; ///< "" any, "*.suffix" or exact
        CtxPtr ctx;
        int min_version = TLS1_2_VERSION;
        int verify_mode = SSL_VERIFY_NONE;
        SSL_verify_cb verify_cb = nullptr;
    };

    /// A valid OCSP staple of one loaded certificate.
    struct Staple {
        pem::X509Ptr leaf; ///< the certificate, as loaded in its site's context
        std::string der;   ///< the OCSP response
        time_t next_update = 0;
        std::string what; ///< "ns/gateway/listener: certificate ns/name" for log lines
        /// Set once by expire_staples() (dp-control), read by handshakes on any L7 thread.
        mutable std::atomic<bool> stale{false};
    };

    TlsPort() = default;
    /// One listener's context; Errc::Invalid for a configuration problem (message without
    /// the listener's name), Errc::Internal when OpenSSL cannot allocate.
    [[nodiscard]] Result<Site> build_site(const ir::Listener& l, uint32_t index, bool offer_h2);
    [[nodiscard]] const Site* select(std::string_view sni, bool has_sni) const noexcept;
    static int on_client_hello(SSL* ssl, int* alert, void* arg);
    static int on_status_request(SSL* ssl, void* arg);

    std::shared_ptr<const TicketKeys> tickets_; ///< installed on every site's context
    std::vector<Site> sites_;
    size_t no_sni_site_ = 0; ///< catch-all, else the first site
    std::vector<std::string> errors_;
    /// Of every site, found by certificate in on_status_request (a few per port).
    std::vector<std::unique_ptr<Staple>> staples_;
    size_t staples_refused_ = 0;
};

} // namespace sluice::l7
