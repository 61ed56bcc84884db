#pragma once

/// @file
/// Test helpers for the TLS tests: owning pointers for the OpenSSL objects they hold, PEM text
/// of a certificate or key, certificates made on the fly (make_cert: CN, subjectAltNames, an
/// issuer or self-signed, CA or leaf), and a self-signed P-256 certificate and key installed
/// in an SSL_CTX (made in library context `lib`, nullptr = the default one). Tests only
/// (uses gtest assertions).

#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pem.h"

namespace sluice::l7::testing {

// pem.h's owning pointers (X509, EVP_PKEY, BIO, SSL_CTX), and those only the tests need.
using pem::BioPtr;
using pem::PkeyPtr;
using pem::X509Ptr;
using SslCtxPtr = pem::CtxPtr;
struct SslFree {
    void operator()(SSL* s) const noexcept { SSL_free(s); }
};
struct SessionFree {
    void operator()(SSL_SESSION* s) const noexcept { SSL_SESSION_free(s); }
};
using SslPtr = std::unique_ptr<SSL, SslFree>;
using SessionPtr = std::unique_ptr<SSL_SESSION, SessionFree>;

/// A certificate, its key and both as PEM (what a kubernetes.io/tls Secret holds).
struct Cert {
    X509Ptr x509;
    PkeyPtr key;
    std::string cert_pem, key_pem;
};

/// The text a memory BIO holds.
inline std::string bio_text(BIO* b) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(b, &data);
    return std::string(data, static_cast<size_t>(n));
}

inline std::string pem_of(X509* x) {
    BioPtr b(BIO_new(BIO_s_mem()));
    PEM_write_bio_X509(b.get(), x);
    return bio_text(b.get());
}

inline std::string pem_of(EVP_PKEY* k) {
    BioPtr b(BIO_new(BIO_s_mem()));
    PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr);
    return bio_text(b.get());
}

inline void add_ext(X509* x, X509V3_CTX* v3, int nid, const std::string& value) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, v3, nid, value.c_str());
    ASSERT_NE(ext, nullptr) << value;
    ASSERT_EQ(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/// A certificate for `key` with subject CN `cn` and subjectAltNames `sans` ("DNS:a,URI:b",
/// none if empty), signed by `issuer` (self-signed without one); `ca` makes it a CA. Valid
/// from an hour ago for a day; serial numbers count up per process.
inline Cert make_cert(EVP_PKEY* key, const std::string& cn, const std::string& sans,
                      const Cert* issuer = nullptr, bool ca = false) {
    static long serial = 1;
    Cert c;
    EVP_PKEY_up_ref(key);
    c.key.reset(key);
    c.x509.reset(X509_new());
    X509* x = c.x509.get();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
    X509_set_issuer_name(x, issuer != nullptr ? X509_get_subject_name(issuer->x509.get()) : name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer != nullptr ? issuer->x509.get() : x, x, nullptr, nullptr, 0);
    add_ext(x, &v3, NID_basic_constraints, ca ? "critical,CA:TRUE" : "CA:FALSE");
    if (ca) {
        add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
    }
    if (!sans.empty()) {
        add_ext(x, &v3, NID_subject_alt_name, sans);
    }
    X509_sign(x, issuer != nullptr ? issuer->key.get() : key, EVP_sha256());
    c.cert_pem = pem_of(x);
    c.key_pem = pem_of(key);
    return c;
}

/// make_cert() with a new P-256 key.
inline Cert make_cert(const std::string& cn, const std::string& sans, const Cert* issuer = nullptr,
                      bool ca = false) {
    const PkeyPtr key(EVP_EC_gen("P-256"));
    return make_cert(key.get(), cn, sans, issuer, ca);
}

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
