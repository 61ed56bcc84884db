#include "backend_tls.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "pem.h"

namespace sluice::l7 {

namespace {

using pem::take_ossl_error;

constexpr unsigned char kAlpnH1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnH2[] = {2, 'h', '2'};

/// RFC 6125 host name matching as browsers and Go do it: "*" only as a whole left-most
/// label, and the subject CN is never consulted (the subjectAltNames are).
constexpr unsigned int kHostFlags =
    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS | X509_CHECK_FLAG_NEVER_CHECK_SUBJECT;

/// The subjectAltNames a context's backends must match, owned by the SSL_CTX (ex_data,
/// freed with it): the verification callback reaches them through the SSL, so an SSL that
/// outlives its BackendTls still verifies against live data.
struct Sans {
    std::vector<std::string> names;
};

void free_sans(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
    delete static_cast<Sans*>(ptr);
}

/// The SSL_CTX ex_data slot holding a context's Sans. Obtained once per process
/// (thread-safe static init); OpenSSL keeps it for the library's lifetime.
int sans_index() noexcept {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_sans);
    return index;
}

/// Certificate verification of contexts with subjectAltNames: the chain as usual, then the
/// leaf against the names. A mismatch fails the handshake with a bad_certificate alert and
/// leaves X509_V_ERR_APPLICATION_VERIFICATION as the verify result.
int verify_with_sans(X509_STORE_CTX* st, void*) {
    const int ok = X509_verify_cert(st);
    if (ok <= 0) {
        return ok;
    }
    const auto* ssl = static_cast<const SSL*>(
        X509_STORE_CTX_get_ex_data(st, SSL_get_ex_data_X509_STORE_CTX_idx()));
    const auto* sans =
        ssl == nullptr
            ? nullptr
            : static_cast<const Sans*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sans_index()));
    if (sans == nullptr) {
        X509_STORE_CTX_set_error(st, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0; // cannot happen (set at build); fail closed
    }
    X509* leaf = X509_STORE_CTX_get0_cert(st);
    if (leaf != nullptr && BackendTls::matches_sans(leaf, sans->names)) {
        return 1;
    }
    X509_STORE_CTX_set_error(st, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

/// The system trust store, read now (not lazily during a handshake on an L7 thread): the
/// bundle file ($SSL_CERT_FILE or OpenSSL's default, e.g. /etc/ssl/certs/ca-certificates.crt
/// through /usr/lib/ssl/cert.pem). Without one, the default hashed directory is used, which
/// OpenSSL reads when a handshake needs it.
Result<void> load_system_roots(SSL_CTX* ctx) {
    const char* file = std::getenv(X509_get_default_cert_file_env());
    if (file == nullptr || *file == '\0') {
        file = X509_get_default_cert_file();
    }
    if (X509_STORE_load_file(SSL_CTX_get_cert_store(ctx), file) == 1) {
        return {};
    }
    ERR_clear_error();
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        return fail(Errc::Io,
                    std::string("system trust store (") + file + "): " + take_ossl_error());
    }
    return {};
}

Result<void> load_roots(SSL_CTX* ctx, const std::string& ca_pem) {
    auto cas = pem::read_certs(ca_pem);
    if (!cas) {
        return fail(Errc::Invalid, "CA certificates: " + cas.error().message);
    }
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    for (const pem::X509Ptr& ca : *cas) {
        if (X509_STORE_add_cert(store, ca.get()) != 1) {
            const unsigned long e = ERR_peek_last_error();
            if (ERR_GET_REASON(e) == X509_R_CERT_ALREADY_IN_HASH_TABLE) {
                ERR_clear_error(); // the same CA twice in the bundle
                continue;
            }
            return fail(Errc::Invalid, "CA certificates: " + take_ossl_error());
        }
    }
    return {};
}

Result<void> load_client_cert(SSL_CTX* ctx, const BackendTlsConfig& cfg) {
    auto certs = pem::read_certs(cfg.client_cert_pem);
    if (!certs) {
        return fail(Errc::Invalid, "client certificate: " + certs.error().message);
    }
    auto key = pem::read_key(cfg.client_key_pem);
    if (!key) {
        return fail(Errc::Invalid, "client certificate: " + key.error().message);
    }
    X509* leaf = certs->front().get();
    if (X509_check_private_key(leaf, key->get()) != 1) {
        ERR_clear_error();
        return fail(Errc::Invalid, "client certificate: the private key does not match it");
    }
    return pem::use_cert_chain(ctx, *certs, key->get(), "client certificate: ");
}

struct NamesFree {
    void operator()(GENERAL_NAMES* n) const noexcept { GENERAL_NAMES_free(n); }
};

} // namespace

std::string BackendTlsConfig::key() const {
    // Length-prefixed fields, so that moving bytes between fields changes the key.
    std::string all;
    auto add = [&](std::string_view v) {
        all += std::to_string(v.size());
        all += ':';
        all.append(v.data(), v.size());
    };
    add(sni);
    add(std::to_string(sans.size()));
    for (const std::string& s : sans) {
        add(s);
    }
    add(ca_pem);
    add(client_cert_pem);
    add(client_key_pem);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_Digest(all.data(), all.size(), md, &n, EVP_sha256(), nullptr) != 1) {
        ERR_clear_error();
        return all; // no digest: the text itself is a key too
    }
    static const char* hex = "0123456789abcdef";
    std::string out;
    out.reserve(2 * n);
    for (unsigned int i = 0; i < n; ++i) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 15];
    }
    return out;
}

BackendTls::~BackendTls() = default;

Result<std::shared_ptr<const BackendTls>> BackendTls::build(const BackendTlsConfig& cfg) {
    if (sans_index() < 0) {
        return fail(Errc::Internal, "SSL_CTX_get_ex_new_index: " + take_ossl_error());
    }
    for (const std::string& s : cfg.sans) {
        if (!(s.starts_with("DNS:") || s.starts_with("URI:")) || s.size() == 4) {
            return fail(Errc::Invalid, "subjectAltName \"" + s + "\" is not DNS:name or URI:uri");
        }
    }
    std::shared_ptr<BackendTls> t(new BackendTls()); // private constructor: no make_shared
    t->sni_ = cfg.sni;
    t->ctx_.reset(SSL_CTX_new(TLS_client_method()));
    SSL_CTX* ctx = t->ctx_.get();
    if (ctx == nullptr) {
        return fail(Errc::Internal, "SSL_CTX_new: " + take_ossl_error());
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // No client session cache: it is one lock shared by every core.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        return fail(Errc::Internal, "min version: " + take_ossl_error());
    }
    Result<void> roots = cfg.ca_pem.empty() ? load_system_roots(ctx) : load_roots(ctx, cfg.ca_pem);
    if (!roots) {
        return tl::unexpected(std::move(roots.error()));
    }
    if (!cfg.client_cert_pem.empty() || !cfg.client_key_pem.empty()) {
        if (auto r = load_client_cert(ctx, cfg); !r) {
            return tl::unexpected(std::move(r.error()));
        }
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (!cfg.sans.empty()) {
        auto* sans = new Sans{cfg.sans};
        if (SSL_CTX_set_ex_data(ctx, sans_index(), sans) != 1) {
            delete sans;
            return fail(Errc::Internal, "SSL_CTX_set_ex_data: " + take_ossl_error());
        }
        SSL_CTX_set_cert_verify_callback(ctx, verify_with_sans, nullptr);
    } else if (!cfg.sni.empty()) {
        X509_VERIFY_PARAM* param = SSL_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_hostflags(param, kHostFlags);
        if (X509_VERIFY_PARAM_set1_host(param, cfg.sni.c_str(), cfg.sni.size()) != 1) {
            return fail(Errc::Invalid, "hostname \"" + cfg.sni + "\": " + take_ossl_error());
        }
    }
    // Unique, not ordered: relaxed suffices (only distinctness of the values matters).
    static std::atomic<uint64_t> next_id{0};
    t->id_ = next_id.fetch_add(1, std::memory_order_relaxed) + 1;
    return std::shared_ptr<const BackendTls>(std::move(t));
}

SSL* BackendTls::new_ssl(int fd, bool h2) const noexcept {
    SSL* ssl = SSL_new(ctx_.get());
    if (ssl == nullptr) {
        ERR_clear_error();
        return nullptr;
    }
    // SSL_set_alpn_protos returns 0 on success (unlike the rest of the API).
    const bool ok = SSL_set_fd(ssl, fd) == 1 &&
                    (sni_.empty() || SSL_set_tlsext_host_name(ssl, sni_.c_str()) == 1) &&
                    (h2 ? SSL_set_alpn_protos(ssl, kAlpnH2, sizeof(kAlpnH2))
                        : SSL_set_alpn_protos(ssl, kAlpnH1, sizeof(kAlpnH1))) == 0;
    if (!ok) {
        SSL_free(ssl);
        ERR_clear_error();
        return nullptr;
    }
    SSL_set_connect_state(ssl);
    return ssl;
}

bool BackendTls::matches_sans(X509* cert, const std::vector<std::string>& sans) noexcept {
    std::unique_ptr<GENERAL_NAMES, NamesFree> names;
    bool names_read = false;
    for (const std::string& s : sans) {
        const std::string_view value = std::string_view(s).substr(std::min<size_t>(4, s.size()));
        if (value.empty()) {
            continue;
        }
        if (s.starts_with("DNS:")) {
            if (X509_check_host(cert, value.data(), value.size(), kHostFlags, nullptr) == 1) {
                return true;
            }
            continue;
        }
        if (!s.starts_with("URI:")) {
            continue;
        }
        if (!names_read) {
            names_read = true;
            names.reset(static_cast<GENERAL_NAMES*>(
                X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
        }
        for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
            const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
            if (gn->type != GEN_URI) {
                continue;
            }
            const ASN1_IA5STRING* u = gn->d.uniformResourceIdentifier;
            const std::string_view uri(reinterpret_cast<const char*>(ASN1_STRING_get0_data(u)),
                                       static_cast<size_t>(ASN1_STRING_length(u)));
            if (uri == value) {
                return true;
            }
        }
    }
    ERR_clear_error(); // a certificate without the extension leaves an entry behind
    return false;
}

const char* BackendTls::failure(const SSL* ssl, char* buf, size_t n) noexcept {
    if (n == 0) {
        return buf;
    }
    const long v = SSL_get_verify_result(ssl);
    if (v == X509_V_ERR_APPLICATION_VERIFICATION) {
        std::snprintf(buf, n, "certificate verify failed: no subjectAltName matches the policy");
    } else if (v != X509_V_OK) {
        std::snprintf(buf, n, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    } else if (const unsigned long e = ERR_peek_error(); e != 0) {
        ERR_error_string_n(e, buf, n);
    } else {
        std::snprintf(buf, n, "the backend closed the connection during the handshake");
    }
    ERR_clear_error();
    return buf;
}

} // namespace sluice::l7
