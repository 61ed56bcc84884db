#pragma once

/// @file
/// sluice's own TLS 1.3 record layer for client connections (sluice-l7 --tls-ipsec-mb):
/// OpenSSL does the handshake, then this object seals and opens the connection's
/// application records itself with Intel ipsec-mb's AES-GCM, so a request costs one GCM
/// call per record instead of OpenSSL's record layer and provider plumbing around it.
///
/// Taking over needs the traffic secrets and the record sequence numbers at the end of the
/// handshake. OpenSSL gives the secrets to a keylog callback (the NSS key log lines); the
/// sequence numbers are counted with a message callback: records OpenSSL wrote after the
/// server's Finished (the NewSessionTickets) and read after the client's (none: read-ahead
/// is off until the handshake is over, so nothing beyond the client's Finished sits in
/// OpenSSL's buffer). A connection whose handshake did not end that way (TLS 1.2, a suite
/// other than AES-GCM, secrets missing, data read ahead) simply stays with OpenSSL.
///
/// After the takeover: application data both ways; KeyUpdate from the client (the read
/// keys move on, and when the client asks, a KeyUpdate of ours goes out and the write keys
/// move on: RFC 8446 4.6.3); close_notify; any other alert or unexpected message ends the
/// connection. Records are at most 2^14 bytes of plaintext; inner padding is removed.
///
/// Thread: a TlsRecords belongs to the worker that owns the connection. The enable switch is
/// set at startup, before any TLS context is made.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <openssl/types.h>

namespace sluice::l7 {

/// Turns the takeover on for TLS contexts and connections made afterwards (only when
/// ipsec-mb works: returns false otherwise and leaves it off). Thread: startup.
bool tls_records_enable() noexcept;
[[nodiscard]] bool tls_records_enabled() noexcept;

/// For SSL_CTX_set_keylog_callback() on server contexts: keeps the application traffic
/// secrets of connections prepared with tls_records_prepare(). Thread: any.
void tls_records_keylog(const SSL* ssl, const char* line);

/// Prepares a new server-side SSL for a later take_over(): read-ahead off, the record
/// counting callback, the capture state (freed with the SSL). False: not prepared (the
/// connection stays with OpenSSL). Thread: worker.
bool tls_records_prepare(SSL* ssl) noexcept;

class TlsRecords {
public:
    /// After SSL_do_handshake() returned 1 on a prepared SSL: the record layer continuing
    /// the connection, or nullptr when it stays with OpenSSL. Thread: worker.
    [[nodiscard]] static std::unique_ptr<TlsRecords> take_over(SSL* ssl);

    /// From explicit secrets (tests): `hash_len` 32 (AES-128-GCM-SHA256) or 48
    /// (AES-256-GCM-SHA384); `read_secret` opens what the peer sealed with the same secret.
    [[nodiscard]] static std::unique_ptr<TlsRecords> from_secrets(
        size_t hash_len, std::string_view read_secret, std::string_view write_secret,
        uint64_t read_seq, uint64_t write_seq);

    ~TlsRecords();
    TlsRecords(const TlsRecords&) = delete;
    TlsRecords& operator=(const TlsRecords&) = delete;

    enum class Status : uint8_t {
        Ok,          ///< every complete record opened; a partial one may wait in `wire`
        CloseNotify, ///< the peer closed its side (after the records before it)
        Error,       ///< bad record, tag, alert or message: close the connection
    };

    /// Opens the complete records at the front of `wire` (those are erased from it),
    /// appending their application data to `plain` and whatever it owes the peer (a
    /// KeyUpdate) to `out_wire`. `why` names an Error.
    Status open(std::string& wire, std::string& plain, std::string& out_wire, std::string& why);

    /// Seals `plain` into application-data records (2^14 bytes each) appended to `wire`.
    void seal(std::string_view plain, std::string& wire);

    /// Appends a sealed close_notify alert to `wire`.
    void seal_close_notify(std::string& wire);

    /// Records sealed / opened so far (tests, counters).
    [[nodiscard]] uint64_t sealed() const noexcept { return sealed_; }
    [[nodiscard]] uint64_t opened() const noexcept { return opened_; }

    /// Sends a KeyUpdate (update_not_requested) and moves the write keys on (tests; a
    /// server may do it to bound the data under one key). Appends to `wire`.
    void seal_key_update(std::string& wire, bool request_peer_update);

private:
    struct Dir;
    TlsRecords();
    void seal_one(uint8_t inner_type, std::string_view plain, std::string& wire);

    size_t hash_len_ = 32;
    std::unique_ptr<Dir> read_, write_;
    uint64_t sealed_ = 0, opened_ = 0;
};

} // namespace sluice::l7
