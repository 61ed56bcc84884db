#include "ticket_keys.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

namespace sluice::l7 {

namespace {

int64_t wall_clock() {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// SSL_CTX ex_data slot holding the ring of a context.
int ex_index() {
    static const int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return idx;
}

void put_be64(unsigned char* p, int64_t v) {
    for (int i = 7; i >= 0; --i) {
        p[i] = static_cast<unsigned char>(v & 0xff);
        v >>= 8;
    }
}

int64_t get_be64(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) {
        v = v << 8 | p[i];
    }
    return static_cast<int64_t>(v);
}

} // namespace

Result<std::shared_ptr<const TicketKeys>> TicketKeys::create(std::span<const uint8_t> master,
                                                             uint32_t period_s, Clock clock) {
    if (period_s < 60 || period_s > 7 * 86400) {
        return fail(Errc::Invalid, "ticket key rotation period must be 60 s to 7 days, got " +
                                       std::to_string(period_s));
    }
    std::shared_ptr<TicketKeys> k(new TicketKeys());
    static std::atomic<uint64_t> serials{0};
    k->serial_ = ++serials;
    if (master.empty()) {
        if (RAND_bytes(k->master_, 48) != 1) {
            return fail(Errc::Internal, "RAND_bytes failed");
        }
        k->master_len_ = 48;
    } else if (master.size() < 32) {
        return fail(Errc::Invalid, "ticket key secret has " + std::to_string(master.size()) +
                                       " bytes, at least 32 needed");
    } else {
        k->master_len_ = std::min(master.size(), sizeof k->master_);
        std::memcpy(k->master_, master.data(), k->master_len_);
    }
    k->period_s_ = period_s;
    k->clock_ = clock != nullptr ? clock : &wall_clock;
    Keys probe{};
    if (!k->derive(0, probe)) {
        return fail(Errc::Internal, "HKDF-SHA256 unavailable");
    }
    return std::shared_ptr<const TicketKeys>(std::move(k));
}

Result<std::shared_ptr<const TicketKeys>> TicketKeys::from_file(const std::string& path,
                                                                uint32_t period_s) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        return fail(Errc::Invalid, "cannot read ticket key file " + path);
    }
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (bytes.size() < 32) {
        return fail(Errc::Invalid, "ticket key file " + path + " has " +
                                       std::to_string(bytes.size()) +
                                       " bytes, at least 32 needed (head -c 48 /dev/urandom)");
    }
    return create(bytes, period_s);
}

bool TicketKeys::derive(int64_t period, Keys& out) const noexcept {
    unsigned char info[17 + 8];
    std::memcpy(info, "sluice tls ticket", 17);
    put_be64(info + 17, period);
    unsigned char okm[8 + 32 + 32];
    EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
    if (kdf == nullptr) {
        return false;
    }
    EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (kctx == nullptr) {
        return false;
    }
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<unsigned char*>(master_),
                                          master_len_),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, sizeof info),
        OSSL_PARAM_construct_end()};
    const bool ok = EVP_KDF_derive(kctx, okm, sizeof okm, params) == 1;
    EVP_KDF_CTX_free(kctx);
    if (!ok) {
        return false;
    }
    put_be64(out.name, period);
    std::memcpy(out.name + 8, okm, 8);
    std::memcpy(out.aes, okm + 8, 32);
    std::memcpy(out.hmac, okm + 40, 32);
    OPENSSL_cleanse(okm, sizeof okm);
    return true;
}

bool TicketKeys::cached(int64_t period, Keys& out) const noexcept {
    // Per thread, the keys of the last two periods used with the last ring: HKDF (a KDF
    // fetch, two HMACs) ran twice per full handshake and twice per resumed one before.
    // A different ring (a new --tls-ticket-key-file) or period replaces an entry.
    struct Slot {
        uint64_t serial = 0; ///< the ring's (0: empty)
        int64_t period = 0;
        Keys keys{};
    };
    thread_local Slot slots[2];
    Slot& s = slots[period & 1];
    if (s.serial != serial_ || s.period != period) {
        if (!derive(period, s.keys)) {
            s.serial = 0;
            return false;
        }
        s.serial = serial_;
        s.period = period;
    }
    out = s.keys;
    return true;
}

int64_t TicketKeys::now_period() const noexcept {
    const int64_t t = clock_();
    return t / static_cast<int64_t>(period_s_);
}

bool TicketKeys::install(SSL_CTX* ctx) const noexcept {
    if (SSL_CTX_set_ex_data(ctx, ex_index(), const_cast<TicketKeys*>(this)) != 1) {
        return false;
    }
    // The lifetime hint sent with a ticket: it resumes during at most two periods.
    SSL_CTX_set_timeout(ctx, static_cast<long>(2 * period_s_));
    return SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, &TicketKeys::on_ticket) == 1;
}

int TicketKeys::on_ticket(SSL* ssl, unsigned char key_name[16], unsigned char iv[16],
                          EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, int enc) {
    // The ring of the context the connection started on (tickets use the session context).
    const auto* self = static_cast<const TicketKeys*>(
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ex_index()));
    if (self == nullptr) {
        return enc ? -1 : 0;
    }
    const int64_t cur = self->now_period();
    Keys k{};
    char digest[] = "SHA256";
    if (enc) {
        if (!self->cached(cur, k) || RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) {
            return -1;
        }
        std::memcpy(key_name, k.name, 16);
    } else {
        const int64_t p = get_be64(key_name);
        if ((p != cur && p != cur - 1) || !self->cached(p, k) ||
            CRYPTO_memcmp(key_name, k.name, 16) != 0) {
            return 0; // unknown or expired key: a full handshake, no error
        }
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac, sizeof k.hmac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end()};
    // The cipher fetched once per process (EVP_aes_256_cbc() would be fetched by name from
    // the provider store on every ticket).
    static EVP_CIPHER* const aes = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    const bool ok = aes != nullptr && EVP_MAC_CTX_set_params(hctx, params) == 1 &&
                    (enc ? EVP_EncryptInit_ex(cctx, aes, nullptr, k.aes, iv)
                         : EVP_DecryptInit_ex(cctx, aes, nullptr, k.aes, iv)) == 1;
    OPENSSL_cleanse(&k, sizeof k);
    if (!ok) {
        return enc ? -1 : 0;
    }
    // 2 (renew) for every accepted ticket: in TLS 1.3 OpenSSL sends a NewSessionTicket after
    // a resumption only then. With 1, a client that reuses its last session (wrk) found it
    // spent and made a full handshake every second connection (nginx, with OpenSSL's own
    // keys, renews; RFC 8446 C.4: clients should not reuse a ticket).
    return 2;
}

} // namespace sluice::l7
