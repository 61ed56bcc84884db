#pragma once

/// @file
/// PEM and OpenSSL-error helpers shared by the TLS server contexts (tls_ctx.h) and the
/// gateway-to-backend client contexts (backend_tls.h): owning pointers for OpenSSL objects,
/// certificate bundles and private keys read from PEM text (never prompting for a
/// passphrase), and the thread's OpenSSL error queue drained into a message.
///
/// Thread: any (control path: these allocate).

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "result.h"

namespace sluice::l7::pem {

struct X509Free {
    void operator()(X509* x) const noexcept { X509_free(x); }
};
struct PkeyFree {
    void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
struct BioFree {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct X509StackFree {
    void operator()(STACK_OF(X509) * s) const noexcept { sk_X509_pop_free(s, X509_free); }
};
struct CtxFree {
    void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509StackPtr = std::unique_ptr<STACK_OF(X509), X509StackFree>;
using CtxPtr = std::unique_ptr<SSL_CTX, CtxFree>;

/// Drains this thread's OpenSSL error queue and returns its first entry as text. Draining
/// matters: a stale entry makes a later SSL_get_error on the same thread report SSL_ERROR_SSL.
[[nodiscard]] std::string take_ossl_error();

/// Every certificate of a PEM bundle, in order. Text outside BEGIN/END blocks is ignored, as
/// PEM allows; a damaged block or a bundle without any certificate is Errc::Invalid.
[[nodiscard]] Result<std::vector<X509Ptr>> read_certs(std::string_view pem);

/// The first private key of a PEM text (an encrypted key fails: no passphrase prompt).
[[nodiscard]] Result<PkeyPtr> read_key(std::string_view pem);

/// Installs `certs` (leaf first, then its chain, as read_certs returns a bundle) with `key`
/// on `ctx`; the chain certificates move into the context. Errc::Invalid (message prefixed
/// by `what`) when OpenSSL refuses the pair, Errc::Internal when it cannot allocate.
[[nodiscard]] Result<void> use_cert_chain(SSL_CTX* ctx, std::vector<X509Ptr>& certs, EVP_PKEY* key,
                                          const std::string& what);

} // namespace sluice::l7::pem
