#pragma once

/// @file
/// TLS session-ticket keys that rotate on a clock, not on configuration changes.
///
/// Every key is derived from one master secret and the number of the rotation period it
/// belongs to (HKDF-SHA256(master, "sluice tls ticket" || period)), so the ring holds no
/// mutable state: any thread can encrypt with the current period's key and decrypt with the
/// current or the previous one, and every sluice-l7 that shares the master secret (a key
/// file given to every node behind one VIP) issues and accepts the same tickets. A ticket
/// lives at most two periods: one issued in period p resumes in p and p+1 (each resumption
/// is sent a fresh ticket of the current period), and is a full handshake after that.
/// The key name is the period number (8 bytes) and 8 bytes of the derived material, so a
/// forged or foreign name is refused without trying a key.
///
/// Before this, the keys were OpenSSL's automatic ones per TlsPort, so every configuration
/// publish (an EndpointSlice change, say) turned every client's next visit into a full
/// handshake.
///
/// Thread: create() anywhere; the ring is immutable afterwards and the callback is called
/// by OpenSSL from any L7 thread.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include <openssl/ssl.h>

#include "result.h"

namespace sluice::l7 {

class TicketKeys {
public:
    /// Seconds since an epoch (the wall clock by default; tests inject their own).
    using Clock = int64_t (*)();

    /// `master`: the secret (at least 32 bytes), or empty for a random one kept in memory
    /// only (tickets then resume on this process alone). `period_s`: rotation period
    /// (60 s to 7 days). Errc::Invalid for a short master or a period out of range.
    [[nodiscard]] static Result<std::shared_ptr<const TicketKeys>>
    create(std::span<const uint8_t> master, uint32_t period_s, Clock clock = nullptr);

    /// Reads the master secret from a file (its bytes, at least 32, typically
    /// `head -c 48 /dev/urandom`); Errc::Invalid with the reason otherwise.
    [[nodiscard]] static Result<std::shared_ptr<const TicketKeys>>
    from_file(const std::string& path, uint32_t period_s);

    /// Makes `ctx` issue and accept tickets with this ring (and caps the ticket lifetime
    /// hint at two periods). The ring must outlive `ctx`: the caller keeps a shared_ptr.
    [[nodiscard]] bool install(SSL_CTX* ctx) const noexcept;

    [[nodiscard]] uint32_t period_s() const noexcept { return period_s_; }

private:
    TicketKeys() = default;
    struct Keys {
        unsigned char name[16];
        unsigned char aes[32];
        unsigned char hmac[32];
    };
    [[nodiscard]] bool derive(int64_t period, Keys& out) const noexcept;
    /// derive() through a per-thread cache of two periods.
    [[nodiscard]] bool cached(int64_t period, Keys& out) const noexcept;
    [[nodiscard]] int64_t now_period() const noexcept;
    static int on_ticket(SSL* ssl, unsigned char key_name[16], unsigned char iv[16],
                         EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc);

    unsigned char master_[64] = {};
    size_t master_len_ = 0;
    uint32_t period_s_ = 3600;
    Clock clock_ = nullptr;
    /// The per-thread key cache's name for this ring: unique per ring, never 0 (an address
    /// could be reused by a later ring).
    uint64_t serial_ = 0;
};

} // namespace sluice::l7
