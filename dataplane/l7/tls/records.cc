#include "records.h"

#include <atomic>
#include <cstring>
#include <new>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/tls1.h>

#include "imb_provider.h"

#if SLUICE_HAVE_IPSEC_MB
#include <intel-ipsec-mb.h>
#endif

namespace sluice::l7 {

namespace {

std::atomic<bool> g_enabled{false};

constexpr size_t kMaxPlain = 16384;        ///< TLSPlaintext limit (2^14)
constexpr size_t kMaxCipher = kMaxPlain + 256; ///< TLSCiphertext limit (RFC 8446 5.2)
constexpr size_t kTag = 16;
constexpr size_t kIv = 12;
constexpr uint8_t kTypeAlert = 21;
constexpr uint8_t kTypeHandshake = 22;
constexpr uint8_t kTypeAppData = 23;
constexpr uint8_t kHsKeyUpdate = 24;

/// What the callbacks learn during one handshake (SSL ex_data, freed with the SSL).
struct Capture {
    std::array<uint8_t, 48> client{}, server{}; ///< application traffic secrets _0
    size_t client_len = 0, server_len = 0;
    bool server_finished = false; ///< our Finished written: later records use app keys
    bool client_finished = false; ///< the client's Finished read
    uint64_t written_after = 0;   ///< records written after our Finished
    uint64_t read_after = 0;      ///< records read after the client's Finished
};

int capture_index() {
    static const int index = SSL_get_ex_new_index(
        0, nullptr, nullptr, nullptr,
        [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
            delete static_cast<Capture*>(ptr);
        });
    return index;
}

Capture* capture_of(const SSL* ssl) {
    const int index = capture_index();
    return index < 0 ? nullptr : static_cast<Capture*>(SSL_get_ex_data(ssl, index));
}

/// Decodes the hex secret that ends a key log line into `out`; its length, 0 on a bad line.
size_t hex_secret(const char* hex, std::array<uint8_t, 48>& out) {
    size_t len = 0;
    if (OPENSSL_hexstr2buf_ex(out.data(), out.size(), &len, hex, '\0') != 1) {
        return 0;
    }
    return len;
}

void on_message(int write_p, int /*version*/, int content_type, const void* buf, size_t len,
                SSL* ssl, void* /*arg*/) {
    Capture* cap = capture_of(ssl);
    if (cap == nullptr) {
        return;
    }
    if (content_type == SSL3_RT_HEADER) {
        // One call per record, before the calls for the messages in it.
        if (write_p != 0 && cap->server_finished) {
            ++cap->written_after;
        } else if (write_p == 0 && cap->client_finished) {
            ++cap->read_after;
        }
        return;
    }
    if (content_type == SSL3_RT_HANDSHAKE && len > 0 &&
        static_cast<const uint8_t*>(buf)[0] == SSL3_MT_FINISHED) {
        (write_p != 0 ? cap->server_finished : cap->client_finished) = true;
    }
}

/// HKDF-Expand-Label(secret, label, "", out.size()) of RFC 8446 7.1, for outputs no longer
/// than the hash (one HMAC block).
bool expand_label(const EVP_MD* md, const uint8_t* secret, size_t secret_len,
                  std::string_view label, uint8_t* out, size_t out_len) {
    uint8_t info[2 + 1 + 6 + 32 + 1 + 1];
    size_t n = 0;
    info[n++] = static_cast<uint8_t>(out_len >> 8);
    info[n++] = static_cast<uint8_t>(out_len);
    info[n++] = static_cast<uint8_t>(6 + label.size());
    std::memcpy(info + n, "tls13 ", 6);
    n += 6;
    std::memcpy(info + n, label.data(), label.size());
    n += label.size();
    info[n++] = 0;    // empty context
    info[n++] = 0x01; // HKDF-Expand's block counter
    uint8_t t[EVP_MAX_MD_SIZE];
    unsigned t_len = 0;
    const bool ok = HMAC(md, secret, static_cast<int>(secret_len), info, n, t, &t_len) != nullptr &&
                    t_len >= out_len;
    if (ok) {
        std::memcpy(out, t, out_len);
    }
    OPENSSL_cleanse(t, sizeof t); // key material: no copy left on the stack
    return ok;
}

} // namespace

/// One direction: its traffic secret, key schedule, nonce base and sequence number.
struct alignas(64) TlsRecords::Dir {
#if SLUICE_HAVE_IPSEC_MB
    gcm_key_data key;
    gcm_context_data ctx;
#endif
    std::array<uint8_t, 48> secret{};
    std::array<uint8_t, kIv> iv{};
    uint64_t seq = 0;
    size_t key_len = 16;

    static void* operator new(size_t n) { return ::operator new(n, std::align_val_t{64}); }
    static void operator delete(void* p) { ::operator delete(p, std::align_val_t{64}); }

    /// Key and IV from the current secret (a new secret starts at sequence number 0).
    bool derive(size_t hash_len) {
        const EVP_MD* md = hash_len == 48 ? EVP_sha384() : EVP_sha256();
        uint8_t k[32];
        if (!expand_label(md, secret.data(), hash_len, "key", k, key_len) ||
            !expand_label(md, secret.data(), hash_len, "iv", iv.data(), kIv)) {
            return false;
        }
#if SLUICE_HAVE_IPSEC_MB
        auto* mgr = static_cast<IMB_MGR*>(imb_manager());
        if (mgr == nullptr) {
            return false;
        }
        if (key_len == 16) {
            mgr->gcm128_pre(k, &key);
        } else {
            mgr->gcm256_pre(k, &key);
        }
        OPENSSL_cleanse(k, sizeof k);
        return true;
#else
        return false;
#endif
    }

    /// The next secret after a KeyUpdate (RFC 8446 7.2).
    bool update(size_t hash_len) {
        const EVP_MD* md = hash_len == 48 ? EVP_sha384() : EVP_sha256();
        std::array<uint8_t, 48> next{};
        const bool ok = expand_label(md, secret.data(), hash_len, "traffic upd", next.data(), hash_len);
        if (ok) {
            secret = next;
            seq = 0;
        }
        OPENSSL_cleanse(next.data(), next.size()); // no copy of a traffic secret left on the stack
        return ok && derive(hash_len);
    }

    void nonce(uint8_t out[kIv]) const {
        std::memcpy(out, iv.data(), kIv);
        for (int i = 0; i < 8; ++i) {
            out[kIv - 1 - i] ^= static_cast<uint8_t>(seq >> (8 * i));
        }
    }
};

bool tls_records_enable() noexcept {
#if SLUICE_HAVE_IPSEC_MB
    if (imb_manager() == nullptr) {
        return false;
    }
    g_enabled.store(true, std::memory_order_relaxed);
    return true;
#else
    return false;
#endif
}

bool tls_records_enabled() noexcept { return g_enabled.load(std::memory_order_relaxed); }

void tls_records_keylog(const SSL* ssl, const char* line) {
    Capture* cap = capture_of(ssl);
    if (cap == nullptr || line == nullptr) {
        return;
    }
    const std::string_view l(line);
    const size_t sp1 = l.find(' ');
    const size_t sp2 = sp1 == std::string_view::npos ? sp1 : l.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) {
        return;
    }
    const std::string_view label = l.substr(0, sp1);
    const char* hex = line + sp2 + 1; // the rest of the line (NUL-terminated)
    if (label == "SERVER_TRAFFIC_SECRET_0") {
        cap->server_len = hex_secret(hex, cap->server);
    } else if (label == "CLIENT_TRAFFIC_SECRET_0") {
        cap->client_len = hex_secret(hex, cap->client);
    }
}

bool tls_records_prepare(SSL* ssl) noexcept {
    const int index = capture_index();
    if (!tls_records_enabled() || index < 0) {
        return false;
    }
    auto* cap = new (std::nothrow) Capture();
    if (cap == nullptr || SSL_set_ex_data(ssl, index, cap) != 1) {
        delete cap;
        return false;
    }
    // Nothing past the client's Finished may wait in OpenSSL's buffer at the takeover.
    SSL_set_read_ahead(ssl, 0);
    SSL_set_msg_callback(ssl, on_message);
    return true;
}

TlsRecords::TlsRecords() = default;
TlsRecords::~TlsRecords() {
    if (read_) {
        OPENSSL_cleanse(read_.get(), sizeof(Dir));
    }
    if (write_) {
        OPENSSL_cleanse(write_.get(), sizeof(Dir));
    }
}

std::unique_ptr<TlsRecords> TlsRecords::from_secrets(size_t hash_len, std::string_view read_secret,
                                                     std::string_view write_secret,
                                                     uint64_t read_seq, uint64_t write_seq) {
    if ((hash_len != 32 && hash_len != 48) || read_secret.size() != hash_len ||
        write_secret.size() != hash_len) {
        return nullptr;
    }
    std::unique_ptr<TlsRecords> r(new TlsRecords());
    r->hash_len_ = hash_len;
    r->read_.reset(new Dir());
    r->write_.reset(new Dir());
    for (Dir* d : {r->read_.get(), r->write_.get()}) {
        d->key_len = hash_len == 48 ? 32 : 16;
    }
    std::memcpy(r->read_->secret.data(), read_secret.data(), hash_len);
    std::memcpy(r->write_->secret.data(), write_secret.data(), hash_len);
    if (!r->read_->derive(hash_len) || !r->write_->derive(hash_len)) {
        return nullptr;
    }
    r->read_->seq = read_seq;
    r->write_->seq = write_seq;
    return r;
}

std::unique_ptr<TlsRecords> TlsRecords::take_over(SSL* ssl) {
    Capture* cap = capture_of(ssl);
    if (cap == nullptr || SSL_version(ssl) != TLS1_3_VERSION || !cap->server_finished ||
        !cap->client_finished || cap->read_after != 0 || SSL_has_pending(ssl) != 0) {
        return nullptr;
    }
    const SSL_CIPHER* c = SSL_get_current_cipher(ssl);
    const uint32_t id = c ? SSL_CIPHER_get_id(c) : 0;
    size_t hash_len = 0;
    if (id == TLS1_3_CK_AES_128_GCM_SHA256) {
        hash_len = 32;
    } else if (id == TLS1_3_CK_AES_256_GCM_SHA384) {
        hash_len = 48;
    } else {
        return nullptr; // ChaCha20-Poly1305 and others stay with OpenSSL
    }
    if (cap->client_len != hash_len || cap->server_len != hash_len) {
        return nullptr;
    }
    auto r = from_secrets(
        hash_len,
        std::string_view(reinterpret_cast<const char*>(cap->client.data()), hash_len),
        std::string_view(reinterpret_cast<const char*>(cap->server.data()), hash_len), 0,
        cap->written_after);
    OPENSSL_cleanse(cap->client.data(), cap->client.size());
    OPENSSL_cleanse(cap->server.data(), cap->server.size());
    return r;
}

void TlsRecords::seal_one(uint8_t inner_type, std::string_view plain, std::string& wire) {
#if SLUICE_HAVE_IPSEC_MB
    auto* mgr = static_cast<IMB_MGR*>(imb_manager());
    Dir& w = *write_;
    const size_t len = plain.size() + 1 + kTag;
    const size_t at = wire.size();
    wire.resize(at + 5 + len);
    auto* p = reinterpret_cast<uint8_t*>(wire.data() + at);
    p[0] = kTypeAppData;
    p[1] = 0x03;
    p[2] = 0x03;
    p[3] = static_cast<uint8_t>(len >> 8);
    p[4] = static_cast<uint8_t>(len);
    uint8_t* body = p + 5;
    std::memcpy(body, plain.data(), plain.size());
    body[plain.size()] = inner_type;
    uint8_t nonce[kIv];
    w.nonce(nonce);
    if (w.key_len == 16) {
        mgr->gcm128_enc(&w.key, &w.ctx, body, body, plain.size() + 1, nonce, p, 5,
                        body + plain.size() + 1, kTag);
    } else {
        mgr->gcm256_enc(&w.key, &w.ctx, body, body, plain.size() + 1, nonce, p, 5,
                        body + plain.size() + 1, kTag);
    }
    ++w.seq;
    ++sealed_;
#else
    (void)inner_type;
    (void)plain;
    (void)wire;
#endif
}

void TlsRecords::seal(std::string_view plain, std::string& wire) {
    while (!plain.empty()) {
        const size_t n = plain.size() < kMaxPlain ? plain.size() : kMaxPlain;
        seal_one(kTypeAppData, plain.substr(0, n), wire);
        plain.remove_prefix(n);
    }
}

void TlsRecords::seal_close_notify(std::string& wire) {
    const char alert[2] = {1, 0}; // warning, close_notify
    seal_one(kTypeAlert, std::string_view(alert, 2), wire);
}

void TlsRecords::seal_key_update(std::string& wire, bool request_peer_update) {
    const char msg[5] = {static_cast<char>(kHsKeyUpdate), 0, 0, 1,
                         static_cast<char>(request_peer_update ? 1 : 0)};
    seal_one(kTypeHandshake, std::string_view(msg, 5), wire);
    write_->update(hash_len_);
}

TlsRecords::Status TlsRecords::open(std::string& wire, std::string& plain, std::string& out_wire,
                                    std::string& why) {
#if SLUICE_HAVE_IPSEC_MB
    auto* mgr = static_cast<IMB_MGR*>(imb_manager());
    size_t off = 0;
    Status st = Status::Ok;
    while (st == Status::Ok && wire.size() - off >= 5) {
        auto* p = reinterpret_cast<uint8_t*>(wire.data() + off);
        const size_t len = static_cast<size_t>(p[3]) << 8 | p[4];
        if (p[0] != kTypeAppData || p[1] != 0x03) {
            why = "unexpected record type after the handshake";
            st = Status::Error;
            break;
        }
        if (len < 1 + kTag || len > kMaxCipher) {
            why = "record length out of range";
            st = Status::Error;
            break;
        }
        if (wire.size() - off < 5 + len) {
            break; // the rest of this record has not arrived
        }
        Dir& r = *read_;
        uint8_t* body = p + 5;
        const size_t clen = len - kTag;
        uint8_t nonce[kIv];
        r.nonce(nonce);
        uint8_t tag[kTag];
        if (r.key_len == 16) {
            mgr->gcm128_dec(&r.key, &r.ctx, body, body, clen, nonce, p, 5, tag, kTag);
        } else {
            mgr->gcm256_dec(&r.key, &r.ctx, body, body, clen, nonce, p, 5, tag, kTag);
        }
        if (CRYPTO_memcmp(tag, body + clen, kTag) != 0) {
            why = "record authentication failed";
            st = Status::Error;
            break;
        }
        ++r.seq;
        ++opened_;
        off += 5 + len;
        // TLSInnerPlaintext: content, the real type, zero padding.
        size_t n = clen;
        while (n > 0 && body[n - 1] == 0) {
            --n;
        }
        if (n == 0) {
            why = "record without a content type";
            st = Status::Error;
            break;
        }
        const uint8_t type = body[n - 1];
        const size_t content = n - 1;
        if (content > kMaxPlain) {
            why = "record over 2^14 bytes";
            st = Status::Error;
            break;
        }
        if (type == kTypeAppData) {
            plain.append(reinterpret_cast<const char*>(body), content);
        } else if (type == kTypeAlert) {
            if (content == 2 && body[1] == 0) {
                st = Status::CloseNotify;
            } else {
                why = "alert from the client";
                st = Status::Error;
            }
        } else if (type == kTypeHandshake) {
            // Post-handshake messages a server may get: KeyUpdate only (no post-handshake
            // authentication is asked for). One message per record.
            if (content != 5 || body[0] != kHsKeyUpdate || body[1] != 0 || body[2] != 0 ||
                body[3] != 1 || body[4] > 1) {
                why = "unexpected handshake message after the handshake";
                st = Status::Error;
            } else {
                const bool requested = body[4] == 1;
                if (!r.update(hash_len_)) {
                    why = "key update failed";
                    st = Status::Error;
                } else if (requested) {
                    seal_key_update(out_wire, false); // ours, then our keys move on
                }
            }
        } else {
            why = "unexpected content type after the handshake";
            st = Status::Error;
        }
    }
    wire.erase(0, off);
    return st;
#else
    (void)wire;
    (void)plain;
    (void)out_wire;
    why = "built without ipsec-mb";
    return Status::Error;
#endif
}

} // namespace sluice::l7
