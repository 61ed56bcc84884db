#include "pem.h"

#include <climits>

#include <openssl/err.h>
#include <openssl/pem.h>

namespace sluice::l7::pem {

namespace {

/// Passphrase callback: never prompt on the terminal for an encrypted key (it fails instead).
int no_password(char*, int, int, void*) {
    return 0;
}

BioPtr mem_bio(std::string_view pem) {
    if (pem.size() > static_cast<size_t>(INT_MAX)) {
        return nullptr;
    }
    return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

} // namespace

std::string take_ossl_error() {
    unsigned long first = 0;
    for (unsigned long e = ERR_get_error(); e != 0; e = ERR_get_error()) {
        if (first == 0) {
            first = e;
        }
    }
    if (first == 0) {
        return "unknown OpenSSL error";
    }
    char buf[256];
    ERR_error_string_n(first, buf, sizeof(buf));
    return buf;
}

Result<std::vector<X509Ptr>> read_certs(std::string_view pem) {
    BioPtr bio = mem_bio(pem);
    if (!bio) {
        ERR_clear_error();
        return fail(Errc::Invalid, "PEM too large or out of memory");
    }
    std::vector<X509Ptr> out;
    for (X509* x = PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr); x != nullptr;
         x = PEM_read_bio_X509(bio.get(), nullptr, no_password, nullptr)) {
        out.emplace_back(x);
    }
    const unsigned long last = ERR_peek_last_error();
    const bool at_end =
        ERR_GET_LIB(last) == ERR_LIB_PEM && ERR_GET_REASON(last) == PEM_R_NO_START_LINE;
    if (at_end && !out.empty()) {
        ERR_clear_error(); // the normal end of the bundle
        return out;
    }
    if (at_end) {
        ERR_clear_error();
        return fail(Errc::Invalid, "no PEM certificate found");
    }
    return fail(Errc::Invalid, "bad PEM certificate: " + take_ossl_error());
}

Result<PkeyPtr> read_key(std::string_view pem) {
    BioPtr bio = mem_bio(pem);
    if (!bio) {
        ERR_clear_error();
        return fail(Errc::Invalid, "PEM too large or out of memory");
    }
    PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr));
    if (!key) {
        return fail(Errc::Invalid, "bad PEM private key: " + take_ossl_error());
    }
    ERR_clear_error(); // the decoder may leave entries from formats it tried first
    return key;
}

Result<void> use_cert_chain(SSL_CTX* ctx, std::vector<X509Ptr>& certs, EVP_PKEY* key,
                            const std::string& what) {
    X509StackPtr chain(sk_X509_new_null());
    if (!chain) {
        return fail(Errc::Internal, "sk_X509_new_null: " + take_ossl_error());
    }
    for (size_t i = 1; i < certs.size(); ++i) {
        if (sk_X509_push(chain.get(), certs[i].get()) <= 0) {
            return fail(Errc::Internal, "sk_X509_push: " + take_ossl_error());
        }
        certs[i].release(); // owned by `chain` now
    }
    if (SSL_CTX_use_cert_and_key(ctx, certs.front().get(), key, chain.get(), 1) != 1) {
        return fail(Errc::Invalid, what + take_ossl_error());
    }
    return {};
}

} // namespace sluice::l7::pem
