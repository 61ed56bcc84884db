#pragma once

/// @file
/// Test helpers: owning pointers for SSL_CTX / SSL, and a self-signed P-256 certificate and key installed in an SSL_CTX (made in
/// library context `lib`, nullptr = the default one). Tests only (uses gtest assertions).

#include <memory>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace sluice::l7::testing {

struct SslCtxFree {
    void operator()(SSL_CTX* c) const noexcept { SSL_CTX_free(c); }
};
struct SslFree {
    void operator()(SSL* s) const noexcept { SSL_free(s); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

inline void self_signed(SSL_CTX* ctx, OSSL_LIB_CTX* lib = nullptr, const char* cn = "test") {
    EVP_PKEY* key = EVP_PKEY_Q_keygen(lib, nullptr, "EC", "P-256");
    ASSERT_NE(key, nullptr);
    X509* x = X509_new_ex(lib, nullptr);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME* n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                               -1, -1, 0);
    X509_set_issuer_name(x, n);
    ASSERT_GT(X509_sign(x, key, EVP_sha256()), 0);
    ASSERT_EQ(SSL_CTX_use_certificate(ctx, x), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey(ctx, key), 1);
    X509_free(x);
    EVP_PKEY_free(key);
}

} // namespace sluice::l7::testing
