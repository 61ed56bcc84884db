// sluice-imb (AES-GCM on ipsec-mb) against OpenSSL's default provider: the same bytes for
// the same records, TLS 1.3 style (nonce per record, header as AAD, tag as a parameter) and
// TLS 1.2 style (fixed IV + explicit nonce, 13-byte AAD, one in-place update), records
// sealed by one opened by the other, wrong tags refused; then libssl itself over memory
// BIOs with the provider preferred (TLS 1.3 and 1.2 suites, data both ways, mixed with a
// peer on the default provider) and the provider's counters.

#include "imb_provider.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_cert.h"
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace {

using sluice::l7::imb_provider_counters;
using sluice::l7::install_imb_provider;
using Bytes = std::vector<uint8_t>;

struct CipherFree {
    void operator()(EVP_CIPHER* c) const noexcept { EVP_CIPHER_free(c); }
};
struct CtxFree {
    void operator()(EVP_CIPHER_CTX* c) const noexcept { EVP_CIPHER_CTX_free(c); }
};
using CipherPtr = std::unique_ptr<EVP_CIPHER, CipherFree>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

constexpr size_t kLengths[] = {0, 1, 15, 16, 17, 64, 255, 1420, 4096, 16384, 16385, 16401};

Bytes random_bytes(std::mt19937& rng, size_t n) {
    Bytes b(n);
    for (auto& x : b) {
        x = static_cast<uint8_t>(rng());
    }
    return b;
}

class ImbProvider : public ::testing::TestWithParam<int> {
protected:
    static void SetUpTestSuite() {
        auto r = install_imb_provider(nullptr, false);
        ASSERT_TRUE(r) << r.error().message;
        std::printf("ipsec-mb %s, %s code path\n", r->version.c_str(), r->arch.c_str());
    }

    void SetUp() override {
        const char* name = GetParam() == 16 ? "AES-128-GCM" : "AES-256-GCM";
        ours_.reset(EVP_CIPHER_fetch(nullptr, name, "provider=sluice-imb"));
        theirs_.reset(EVP_CIPHER_fetch(nullptr, name, "provider=default"));
        ASSERT_NE(ours_, nullptr);
        ASSERT_NE(theirs_, nullptr);
        ASSERT_STREQ(OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(ours_.get())), "sluice-imb");
        ASSERT_EQ(EVP_CIPHER_get_mode(ours_.get()), EVP_CIPH_GCM_MODE);
        ASSERT_NE(EVP_CIPHER_get_flags(ours_.get()) & EVP_CIPH_FLAG_AEAD_CIPHER, 0u);
        ASSERT_EQ(EVP_CIPHER_get_key_length(ours_.get()), GetParam());
        ASSERT_EQ(EVP_CIPHER_get_iv_length(ours_.get()), 12);
        key_ = random_bytes(rng_, static_cast<size_t>(GetParam()));
    }

    /// TLS 1.3 style on a context keyed once (as libssl does): init(iv), AAD, data in
    /// `pieces` updates, final, get tag. Returns ciphertext | tag.
    static Bytes seal13(EVP_CIPHER_CTX* x, const Bytes& iv, const Bytes& aad, const Bytes& pt,
                        int pieces = 1) {
        Bytes out(pt.size() + 16);
        int l = 0;
        EXPECT_EQ(EVP_EncryptInit_ex(x, nullptr, nullptr, nullptr, iv.data()), 1);
        EXPECT_EQ(EVP_EncryptUpdate(x, nullptr, &l, aad.data(), static_cast<int>(aad.size())), 1);
        size_t done = 0;
        for (int i = 0; i < pieces; ++i) {
            const size_t n = i == pieces - 1 ? pt.size() - done : (pt.size() - done) / 3;
            EXPECT_EQ(
                EVP_EncryptUpdate(x, out.data() + done, &l, pt.data() + done, static_cast<int>(n)),
                1);
            EXPECT_EQ(static_cast<size_t>(l), n);
            done += n;
        }
        EXPECT_EQ(EVP_EncryptFinal_ex(x, out.data() + done, &l), 1);
        EXPECT_EQ(l, 0);
        EXPECT_EQ(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, out.data() + pt.size()), 1);
        return out;
    }

    /// Opens ciphertext | tag the way libssl's TLS 1.3 record layer does (tag set before the
    /// AAD). Returns false when the tag does not verify.
    static bool open13(EVP_CIPHER_CTX* x, const Bytes& iv, const Bytes& aad, const Bytes& ct,
                       Bytes& pt) {
        const size_t n = ct.size() - 16;
        Bytes tag(ct.end() - 16, ct.end());
        pt.assign(n, 0);
        int l = 0, f = 0;
        if (EVP_DecryptInit_ex(x, nullptr, nullptr, nullptr, iv.data()) != 1 ||
            EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, tag.data()) != 1 ||
            EVP_DecryptUpdate(x, nullptr, &l, aad.data(), static_cast<int>(aad.size())) != 1 ||
            EVP_DecryptUpdate(x, pt.data(), &l, ct.data(), static_cast<int>(n)) != 1) {
            return false;
        }
        return EVP_DecryptFinal_ex(x, pt.data() + l, &f) == 1;
    }

    CipherCtxPtr keyed(const EVP_CIPHER* c, bool enc) const {
        CipherCtxPtr x(EVP_CIPHER_CTX_new());
        // As libssl: cipher and direction, IV length, then the key.
        EXPECT_EQ(EVP_CipherInit_ex(x.get(), c, nullptr, nullptr, nullptr, enc ? 1 : 0), 1);
        EXPECT_EQ(EVP_CIPHER_CTX_ctrl(x.get(), EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr), 1);
        EXPECT_EQ(EVP_CipherInit_ex(x.get(), nullptr, nullptr, key_.data(), nullptr, -1), 1);
        return x;
    }

    std::mt19937 rng_{12345};
    CipherPtr ours_, theirs_;
    Bytes key_;
};

TEST_P(ImbProvider, Tls13RecordsSameBytesBothWays) {
    auto seal_ours = keyed(ours_.get(), true), seal_theirs = keyed(theirs_.get(), true);
    auto open_ours = keyed(ours_.get(), false), open_theirs = keyed(theirs_.get(), false);
    const uint64_t sealed0 = imb_provider_counters().sealed;
    const uint64_t opened0 = imb_provider_counters().opened;
    int records = 0;
    for (size_t len : kLengths) {
        for (int pieces : {1, 3}) {
            const Bytes iv = random_bytes(rng_, 12), pt = random_bytes(rng_, len);
            const Bytes aad = {0x17, 0x03, 0x03, static_cast<uint8_t>((len + 16) >> 8),
                               static_cast<uint8_t>(len + 16)};
            const Bytes a = seal13(seal_ours.get(), iv, aad, pt, pieces);
            const Bytes b = seal13(seal_theirs.get(), iv, aad, pt);
            ASSERT_EQ(a, b) << "length " << len << " in " << pieces << " pieces";
            Bytes back;
            ASSERT_TRUE(open13(open_ours.get(), iv, aad, b, back)) << len;
            ASSERT_EQ(back, pt);
            ASSERT_TRUE(open13(open_theirs.get(), iv, aad, a, back)) << len;
            ASSERT_EQ(back, pt);
            ++records;
        }
    }
    EXPECT_EQ(imb_provider_counters().sealed - sealed0, static_cast<uint64_t>(records));
    EXPECT_EQ(imb_provider_counters().opened - opened0, static_cast<uint64_t>(records));
}

TEST_P(ImbProvider, Tls13WrongTagOrDataFails) {
    auto seal = keyed(ours_.get(), true), open = keyed(ours_.get(), false);
    for (size_t len : {size_t{0}, size_t{1}, size_t{1420}, size_t{16385}}) {
        const Bytes iv = random_bytes(rng_, 12), pt = random_bytes(rng_, len);
        const Bytes aad = {0x17, 0x03, 0x03, 0x00, 0x10};
        const Bytes ct = seal13(seal.get(), iv, aad, pt);
        Bytes back;
        const uint64_t fail0 = imb_provider_counters().open_failures;
        Bytes bad = ct;
        bad.back() ^= 0x01; // tag
        EXPECT_FALSE(open13(open.get(), iv, aad, bad, back)) << len;
        if (len > 0) {
            bad = ct;
            bad[len / 2] ^= 0x80; // ciphertext
            EXPECT_FALSE(open13(open.get(), iv, aad, bad, back)) << len;
        }
        Bytes bad_aad = aad;
        bad_aad[0] = 0x16;
        EXPECT_FALSE(open13(open.get(), iv, bad_aad, ct, back)) << len;
        EXPECT_GE(imb_provider_counters().open_failures - fail0, 2u);
        ASSERT_TRUE(open13(open.get(), iv, aad, ct, back)) << "context usable after a failure";
        EXPECT_EQ(back, pt);
    }
    ERR_clear_error();
}

TEST_P(ImbProvider, NonceIsNotReusedWithoutInit) {
    auto seal = keyed(ours_.get(), true);
    const Bytes iv = random_bytes(rng_, 12), aad = {1, 2, 3, 4, 5}, pt = random_bytes(rng_, 40);
    seal13(seal.get(), iv, aad, pt);
    uint8_t out[64];
    int l = 0;
    // Without a new nonce the next record is refused (no accidental nonce reuse).
    EXPECT_NE(EVP_EncryptUpdate(seal.get(), out, &l, pt.data(), 16), 1);
    ERR_clear_error();
}

/// TLS 1.2 style: the record layer's calls (fixed IV once, then per record the 13-byte AAD
/// and one in-place update over explicit nonce | payload | tag).
struct Tls12 {
    CipherCtxPtr x;
    uint64_t seq = 0;

    Tls12(const EVP_CIPHER* c, const Bytes& key, const Bytes& fixed, bool enc)
        : x(EVP_CIPHER_CTX_new()) {
        EXPECT_EQ(EVP_CipherInit_ex(x.get(), c, nullptr, key.data(), nullptr, enc ? 1 : 0), 1);
        EXPECT_EQ(EVP_CIPHER_CTX_ctrl(x.get(), EVP_CTRL_GCM_SET_IV_FIXED, 4,
                                      const_cast<uint8_t*>(fixed.data())),
                  1);
        // libssl sets these on every provided cipher; an AEAD ignores them.
        int version = TLS1_2_VERSION;
        size_t mac = 0;
        OSSL_PARAM p[] = {OSSL_PARAM_construct_int(OSSL_CIPHER_PARAM_TLS_VERSION, &version),
                          OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_TLS_MAC_SIZE, &mac),
                          OSSL_PARAM_construct_end()};
        EXPECT_EQ(EVP_CIPHER_CTX_set_params(x.get(), p), 1);
    }

    Bytes aad(size_t record_len) {
        Bytes a(13);
        for (int i = 0; i < 8; ++i) {
            a[static_cast<size_t>(i)] = static_cast<uint8_t>(seq >> (56 - 8 * i));
        }
        ++seq;
        a[8] = 0x17;
        a[9] = 0x03;
        a[10] = 0x03;
        a[11] = static_cast<uint8_t>(record_len >> 8);
        a[12] = static_cast<uint8_t>(record_len);
        return a;
    }

    /// Returns explicit nonce | ciphertext | tag.
    Bytes seal(const Bytes& pt) {
        Bytes rec(8 + pt.size() + 16);
        std::memcpy(rec.data() + 8, pt.data(), pt.size());
        Bytes a = aad(8 + pt.size());
        EXPECT_EQ(EVP_CIPHER_CTX_ctrl(x.get(), EVP_CTRL_AEAD_TLS1_AAD, 13, a.data()), 16);
        int l = 0;
        EXPECT_EQ(
            EVP_CipherUpdate(x.get(), rec.data(), &l, rec.data(), static_cast<int>(rec.size())), 1);
        EXPECT_EQ(static_cast<size_t>(l), rec.size());
        return rec;
    }

    /// Opens in place; false if the tag does not verify.
    bool open(Bytes rec, Bytes& pt) {
        Bytes a = aad(rec.size());
        if (EVP_CIPHER_CTX_ctrl(x.get(), EVP_CTRL_AEAD_TLS1_AAD, 13, a.data()) != 16) {
            return false;
        }
        int l = 0;
        if (EVP_CipherUpdate(x.get(), rec.data(), &l, rec.data(), static_cast<int>(rec.size())) !=
            1) {
            return false;
        }
        EXPECT_EQ(static_cast<size_t>(l), rec.size() - 24);
        pt.assign(rec.begin() + 8, rec.begin() + 8 + l);
        return true;
    }
};

TEST_P(ImbProvider, Tls12RecordsSameBytesBothWays) {
    const Bytes fixed = random_bytes(rng_, 4);
    Tls12 seal_ours(ours_.get(), key_, fixed, true), seal_theirs(theirs_.get(), key_, fixed, true);
    Tls12 open_ours(ours_.get(), key_, fixed, false),
        open_theirs(theirs_.get(), key_, fixed, false);
    auto reference = keyed(theirs_.get(), true);
    Bytes last_nonce;
    for (size_t len : kLengths) {
        const Bytes pt = random_bytes(rng_, len);
        const uint64_t seq = seal_ours.seq;
        const Bytes a = seal_ours.seal(pt);
        // The same record by OpenSSL from its parts: nonce fixed | explicit, AAD with the
        // payload length.
        Bytes nonce = fixed;
        nonce.insert(nonce.end(), a.begin(), a.begin() + 8);
        Bytes aad(13);
        for (int i = 0; i < 8; ++i) {
            aad[static_cast<size_t>(i)] = static_cast<uint8_t>(seq >> (56 - 8 * i));
        }
        aad[8] = 0x17, aad[9] = 0x03, aad[10] = 0x03;
        aad[11] = static_cast<uint8_t>(len >> 8), aad[12] = static_cast<uint8_t>(len);
        const Bytes expect = seal13(reference.get(), nonce, aad, pt);
        ASSERT_EQ(Bytes(a.begin() + 8, a.end()), expect) << "length " << len;
        if (!last_nonce.empty()) { // the explicit nonce counts up by one per record
            Bytes next = last_nonce;
            for (int i = 7; i >= 0 && ++next[static_cast<size_t>(i)] == 0; --i) {
            }
            EXPECT_EQ(Bytes(a.begin(), a.begin() + 8), next);
        }
        last_nonce.assign(a.begin(), a.begin() + 8);

        const Bytes b = seal_theirs.seal(pt);
        Bytes back;
        ASSERT_TRUE(open_theirs.open(a, back)) << len;
        ASSERT_EQ(back, pt);
        ASSERT_TRUE(open_ours.open(b, back)) << len;
        ASSERT_EQ(back, pt);
    }
}

TEST_P(ImbProvider, Tls12WrongTagFails) {
    const Bytes fixed = random_bytes(rng_, 4);
    Tls12 seal(ours_.get(), key_, fixed, true);
    for (size_t len : {size_t{0}, size_t{1}, size_t{16385}}) {
        const Bytes pt = random_bytes(rng_, len);
        Bytes rec = seal.seal(pt);
        rec.back() ^= 0x40;
        Tls12 open(ours_.get(), key_, fixed, false);
        open.seq = seal.seq - 1;
        Bytes back;
        EXPECT_FALSE(open.open(rec, back)) << len;
        rec.back() ^= 0x40;
        open.seq = seal.seq - 1;
        EXPECT_TRUE(open.open(rec, back)) << len;
        EXPECT_EQ(back, pt);
        open.seq = seal.seq; // wrong sequence number = wrong AAD
        EXPECT_FALSE(open.open(rec, back)) << len;
    }
    ERR_clear_error();
}

INSTANTIATE_TEST_SUITE_P(KeySizes, ImbProvider, ::testing::Values(16, 32),
                         [](const auto& info) { return "AES" + std::to_string(info.param * 8); });

// ---- libssl through the provider

struct LibCtxFree {
    void operator()(OSSL_LIB_CTX* l) const noexcept { OSSL_LIB_CTX_free(l); }
};
using sluice::l7::testing::SslCtxPtr;
using sluice::l7::testing::SslPtr;


/// Runs `step` (one round of both ends over their memory BIOs) until it says done.
template <class F>
bool pump(F&& step, int max_rounds = 100000) {
    for (int i = 0; i < max_rounds; ++i) {
        if (step()) {
            return true;
        }
    }
    return false;
}

struct Link {
    SslPtr server, client;
};

Link connect(SSL_CTX* sctx, SSL_CTX* cctx) {
    Link l{SslPtr(SSL_new(sctx)), SslPtr(SSL_new(cctx))};
    BIO* c2s = BIO_new(BIO_s_mem());
    BIO* s2c = BIO_new(BIO_s_mem());
    BIO_up_ref(c2s);
    BIO_up_ref(s2c);
    SSL_set_bio(l.server.get(), c2s, s2c);
    SSL_set_bio(l.client.get(), s2c, c2s);
    SSL_set_accept_state(l.server.get());
    SSL_set_connect_state(l.client.get());
    bool s_done = false, c_done = false;
    pump([&] {
        if (!c_done) {
            const int r = SSL_do_handshake(l.client.get());
            c_done = r == 1;
            if (r <= 0 && SSL_get_error(l.client.get(), r) != SSL_ERROR_WANT_READ) {
                return true;
            }
        }
        if (!s_done) {
            const int r = SSL_do_handshake(l.server.get());
            s_done = r == 1;
            if (r <= 0 && SSL_get_error(l.server.get(), r) != SSL_ERROR_WANT_READ) {
                return true;
            }
        }
        return s_done && c_done;
    });
    EXPECT_TRUE(s_done && c_done) << "handshake: " << ERR_error_string(ERR_get_error(), nullptr);
    return l;
}

/// Sends `data` from `from` to `to` in SSL_write chunks and reads it all back.
Bytes transfer(SSL* from, SSL* to, const Bytes& data) {
    Bytes got;
    size_t sent = 0;
    uint8_t buf[20000];
    pump([&] {
        if (sent < data.size()) {
            const int n = SSL_write(from, data.data() + sent,
                                    static_cast<int>(std::min<size_t>(data.size() - sent, 50000)));
            if (n > 0) {
                sent += static_cast<size_t>(n);
            }
        }
        int r;
        while ((r = SSL_read(to, buf, sizeof buf)) > 0) {
            got.insert(got.end(), buf, buf + r);
        }
        return got.size() >= data.size();
    });
    return got;
}

struct SuiteCase {
    const char* name;
    bool tls13;
    const char* expect_cipher; ///< IANA-ish OpenSSL name
};

class ImbLibssl : public ::testing::TestWithParam<SuiteCase> {};

TEST_P(ImbLibssl, HandshakeAndDataThroughProvider) {
    const SuiteCase sc = GetParam();
    std::unique_ptr<OSSL_LIB_CTX, LibCtxFree> lib(OSSL_LIB_CTX_new());
    auto r = install_imb_provider(lib.get(), true);
    ASSERT_TRUE(r) << r.error().message;
    {
        CipherPtr gcm(EVP_CIPHER_fetch(lib.get(), "AES-256-GCM", nullptr));
        CipherPtr cbc(EVP_CIPHER_fetch(lib.get(), "AES-256-CBC", nullptr));
        ASSERT_NE(gcm, nullptr);
        ASSERT_NE(cbc, nullptr);
        EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(gcm.get())), "sluice-imb");
        EXPECT_STREQ(OSSL_PROVIDER_get0_name(EVP_CIPHER_get0_provider(cbc.get())), "default");
    }
    SslCtxPtr sctx(SSL_CTX_new_ex(lib.get(), nullptr, TLS_server_method()));
    ASSERT_NE(sctx, nullptr);
    sluice::l7::testing::self_signed(sctx.get(), lib.get(), "imb.test");
    // Peers: the same library context (both ends on ipsec-mb), and a client of the default
    // context pinned to OpenSSL's own provider (the two implementations talk to each other).
    SslCtxPtr same(SSL_CTX_new_ex(lib.get(), nullptr, TLS_client_method()));
    SslCtxPtr other(SSL_CTX_new_ex(nullptr, "provider=default", TLS_client_method()));
    for (SSL_CTX* c : {same.get(), other.get()}) {
        ASSERT_NE(c, nullptr);
        if (sc.tls13) {
            ASSERT_EQ(SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION), 1);
            ASSERT_EQ(SSL_CTX_set_ciphersuites(c, sc.name), 1);
        } else {
            ASSERT_EQ(SSL_CTX_set_max_proto_version(c, TLS1_2_VERSION), 1);
            ASSERT_EQ(SSL_CTX_set_cipher_list(c, sc.name), 1);
        }
    }
    std::mt19937 rng(7);
    const Bytes up = random_bytes(rng, 100000), down = random_bytes(rng, 3 << 20);
    for (SSL_CTX* cctx : {same.get(), other.get()}) {
        const auto before = imb_provider_counters();
        Link l = connect(sctx.get(), cctx);
        ASSERT_NE(SSL_get_current_cipher(l.server.get()), nullptr);
        EXPECT_STREQ(SSL_CIPHER_get_name(SSL_get_current_cipher(l.server.get())), sc.expect_cipher);
        EXPECT_EQ(transfer(l.client.get(), l.server.get(), up), up);
        EXPECT_EQ(transfer(l.server.get(), l.client.get(), down), down);
        // TLS 1.3: KeyUpdate stays with OpenSSL; the records after it use the new keys.
        if (sc.tls13) {
            ASSERT_EQ(SSL_key_update(l.server.get(), SSL_KEY_UPDATE_REQUESTED), 1);
            EXPECT_EQ(transfer(l.server.get(), l.client.get(), up), up);
            EXPECT_EQ(transfer(l.client.get(), l.server.get(), up), up);
        }
        const auto after = imb_provider_counters();
        // At least the server's ~190 records of `down` sealed and the 7 of `up` opened.
        EXPECT_GE(after.sealed - before.sealed, (3u << 20) / 16384);
        EXPECT_GE(after.opened - before.opened, 100000u / 16384);
        EXPECT_EQ(after.open_failures, before.open_failures);
    }
}

INSTANTIATE_TEST_SUITE_P(
    Suites, ImbLibssl,
    ::testing::Values(
        SuiteCase{"TLS_AES_128_GCM_SHA256", true, "TLS_AES_128_GCM_SHA256"},
        SuiteCase{"TLS_AES_256_GCM_SHA384", true, "TLS_AES_256_GCM_SHA384"},
        SuiteCase{"ECDHE-ECDSA-AES128-GCM-SHA256", false, "ECDHE-ECDSA-AES128-GCM-SHA256"},
        SuiteCase{"ECDHE-ECDSA-AES256-GCM-SHA384", false, "ECDHE-ECDSA-AES256-GCM-SHA384"}),
    [](const auto& info) {
        std::string n = info.param.name;
        for (auto& ch : n) {
            ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
        }
        return n;
    });

} // namespace
