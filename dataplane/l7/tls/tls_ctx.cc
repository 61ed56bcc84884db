#include "tls_ctx.h"

#include "records.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <limits>
#include <optional>
#include <utility>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "hostnames.h"
#include "ocsp.h"
#include "pem.h"

namespace sluice::l7 {

namespace {

using pem::PkeyPtr;
using pem::read_certs;
using pem::read_key;
using pem::take_ossl_error;
using pem::X509Ptr;
using pem::X509StackPtr;

/// Mozilla "intermediate" TLS 1.2 ciphers without DHE (no DH parameters are configured):
/// forward secret, AEAD only.
constexpr const char* kTls12Ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                      "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                      "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// ALPN protocol lists in wire format, in server preference order.
struct AlpnList {
    const unsigned char* data;
    size_t size;
};
constexpr unsigned char kAlpnH2H1[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr unsigned char kAlpnH1[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
constexpr AlpnList kOfferH2{kAlpnH2H1, sizeof(kAlpnH2H1)};
constexpr AlpnList kOfferH1{kAlpnH1, sizeof(kAlpnH1)};

/// The SSL ex_data slot holding the chosen listener (index + 1; null = none). Obtained once
/// per process (thread-safe static init); OpenSSL keeps it for the library's lifetime.
int ex_index() noexcept {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

/// Optional client certificate (AllowInsecureFallback): accept whatever chain the client
/// sends; the verification result stays available through SSL_get_verify_result.
int accept_any_chain(int, X509_STORE_CTX*) {
    return 1;
}

std::string label(const ir::Listener& l) {
    return l.gateway_ns + "/" + l.gateway_name + "/" + l.name;
}

/// The first host_name of a server_name extension body (RFC 6066 3), as OpenSSL itself
/// parses it: the first entry must be a non-empty host_name. False = malformed.
bool parse_sni(const unsigned char* p, size_t len, std::string_view& name) noexcept {
    if (len < 2) {
        return false;
    }
    const size_t list = (static_cast<size_t>(p[0]) << 8) | p[1];
    if (list != len - 2 || list < 3) {
        return false;
    }
    const size_t n = (static_cast<size_t>(p[3]) << 8) | p[4];
    if (p[2] != TLSEXT_NAMETYPE_host_name || n == 0 || n > list - 3) {
        return false;
    }
    name = std::string_view(reinterpret_cast<const char*>(p + 5), n);
    return true;
}

/// ALPN select callback: the first protocol of our list (server preference) that the client
/// offers; none in common = no ALPN rather than a no_application_protocol alert.
int on_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
            unsigned int inlen, void* arg) {
    const auto* ours = static_cast<const AlpnList*>(arg);
    for (size_t i = 0; i < ours->size; i += 1 + ours->data[i]) {
        const unsigned char n = ours->data[i];
        for (size_t j = 0; j < inlen; j += 1 + in[j]) {
            if (j + 1 + in[j] > inlen) {
                return SSL_TLSEXT_ERR_NOACK; // malformed client list
            }
            if (in[j] == n && std::memcmp(in + j + 1, ours->data + i + 1, n) == 0) {
                *out = ours->data + i + 1;
                *outlen = n;
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_NOACK;
}

std::optional<std::string_view> option(const ir::Listener& l, std::string_view key) {
    std::optional<std::string_view> value;
    for (const auto& [k, v] : l.tls_options) {
        if (k == key) {
            value = v; // the last one wins
        }
    }
    return value;
}

} // namespace

TlsPort::~TlsPort() = default;

namespace {
std::shared_ptr<const TicketKeys>& ticket_keys_slot() {
    static std::shared_ptr<const TicketKeys> keys;
    return keys;
}
} // namespace

void TlsPort::set_ticket_keys(std::shared_ptr<const TicketKeys> keys) {
    ticket_keys_slot() = std::move(keys);
}

Result<TlsPort::Site> TlsPort::build_site(const ir::Listener& l, uint32_t index, bool offer_h2) {
    Site site;
    site.listener = index;
    site.hostname = l.hostname;
    site.ctx.reset(SSL_CTX_new(TLS_server_method()));
    SSL_CTX* ctx = site.ctx.get();
    if (ctx == nullptr) {
        return fail(Errc::Internal, "SSL_CTX_new: " + take_ossl_error());
    }

    // Options and mode are copied into an SSL at SSL_new from the context it starts on (the
    // no-SNI site), not on the switch to the SNI's site: they must be the same on every site.
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    // NO_AUTO_CHAIN: the chain sent is the Secret's tls.crt as given (leaf + intermediates,
    // the Kubernetes convention). Without it OpenSSL tries to build a chain from the
    // context's store at every handshake (an X509_verify_cert per handshake).
    // No SSL_MODE_RELEASE_BUFFERS: it frees and reallocates the record buffers around every
    // record; the engine hands them back only once a connection is idle (Worker::sweep).
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_NO_AUTO_CHAIN);
    // Read ahead: one read() per record instead of two (header, then body). The engine reads
    // on while SSL_has_pending says bytes wait in OpenSSL's buffer (engine.cc read_into).
    SSL_CTX_set_read_ahead(ctx, 1);
    if (tls_records_enabled()) {
        // The traffic secrets for sluice's record layer (records.h); engine SSLs are
        // prepared for it (read-ahead off until the handshake ends).
        SSL_CTX_set_keylog_callback(ctx, tls_records_keylog);
    }
    // Stateless tickets only: the server cache is per SSL_CTX behind a lock shared by cores.
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (tickets_ && !tickets_->install(ctx)) {
        return fail(Errc::Internal, "ticket keys: " + take_ossl_error());
    }
    // A session resumes only on the listener that created it (sid_ctx is compared on
    // resumption), so it cannot bypass another listener's client-certificate check.
    const std::string id = label(l) + ":" + std::to_string(l.port);
    unsigned char sid_ctx[EVP_MAX_MD_SIZE];
    unsigned int sid_len = 0;
    if (EVP_Digest(id.data(), id.size(), sid_ctx, &sid_len, EVP_sha256(), nullptr) != 1 ||
        SSL_CTX_set_session_id_context(ctx, sid_ctx, std::min(sid_len, 32u)) != 1) {
        return fail(Errc::Internal, "session id context: " + take_ossl_error());
    }

    if (auto v = option(l, kOptMinVersion)) {
        if (*v == "1.2") {
            site.min_version = TLS1_2_VERSION;
        } else if (*v == "1.3") {
            site.min_version = TLS1_3_VERSION;
        } else {
            return fail(Errc::Invalid, std::string(kOptMinVersion) + " \"" + std::string(*v) +
                                           "\" is not 1.2 or 1.3");
        }
    }
    if (SSL_CTX_set_min_proto_version(ctx, site.min_version) != 1) {
        return fail(Errc::Internal, "min version: " + take_ossl_error());
    }
    const std::string ciphers(option(l, kOptCiphers).value_or(kTls12Ciphers));
    if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
        ERR_clear_error();
        return fail(Errc::Invalid,
                    std::string(kOptCiphers) + " \"" + ciphers + "\" selects no cipher");
    }
    if (auto v = option(l, kOptCiphersuites)) {
        const std::string suites(*v);
        if (SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1) {
            ERR_clear_error();
            return fail(Errc::Invalid, std::string(kOptCiphersuites) + " \"" + suites +
                                           "\" is not a valid TLS 1.3 suite list");
        }
    }

    if (l.certs.empty()) {
        return fail(Errc::Invalid, "no certificate");
    }
    std::vector<int> key_types;
    bool stapling = false;
    const time_t now = std::time(nullptr);
    for (const ir::CertRef& c : l.certs) {
        const std::string what = "certificate " + c.ns + "/" + c.name + ": ";
        auto certs = read_certs(c.cert_pem);
        if (!certs) {
            return fail(Errc::Invalid, what + certs.error().message);
        }
        auto key = read_key(c.key_pem);
        if (!key) {
            return fail(Errc::Invalid, what + key.error().message);
        }
        X509* leaf = certs->front().get();
        if (X509_check_private_key(leaf, key->get()) != 1) {
            ERR_clear_error();
            return fail(Errc::Invalid, what + "private key does not match the certificate");
        }
        const int type = EVP_PKEY_get_base_id(key->get());
        if (std::find(key_types.begin(), key_types.end(), type) != key_types.end()) {
            // One certificate per key type per context: OpenSSL has one slot for each.
            errors_.push_back(label(l) + ": " + what + "a certificate with the same key type (" +
                              OBJ_nid2sn(type) + ") is already loaded; ignored");
            continue;
        }
        key_types.push_back(type);
        // The staple is checked against the whole bundle (the issuer may be in it), before
        // use_cert_chain moves the chain into the context.
        std::unique_ptr<Staple> staple;
        if (!c.ocsp_der.empty()) {
            const std::string where = label(l) + ": certificate " + c.ns + "/" + c.name;
            auto info = ocsp::check_staple(c.ocsp_der, *certs, now);
            if (!info) {
                errors_.push_back(
                    where + ": OCSP staple (tls.ocsp-staple) not stapled: " + info.error().message);
                ++staples_refused_;
            } else {
                if (info->cert_status != V_OCSP_CERTSTATUS_GOOD) {
                    errors_.push_back(where + ": OCSP staple says the certificate is " +
                                      ocsp::cert_status_name(info->cert_status) +
                                      " (stapled as is)");
                }
                staple = std::make_unique<Staple>();
                staple->der = c.ocsp_der;
                staple->next_update = info->next_update;
                staple->what = where;
                // The context takes its own reference to the leaf in use_cert_chain; this
                // one keeps the pointer on_status_request compares with valid and unique.
                X509_up_ref(certs->front().get());
                staple->leaf.reset(certs->front().get());
            }
        }
        if (auto used = use_cert_chain(ctx, *certs, key->get(), what); !used) {
            return tl::unexpected(std::move(used.error()));
        }
        if (staple) {
            staples_.push_back(std::move(staple));
            stapling = true;
        }
    }
    if (stapling) {
        SSL_CTX_set_tlsext_status_cb(ctx, on_status_request);
        SSL_CTX_set_tlsext_status_arg(ctx, this);
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        return fail(Errc::Invalid, "private key check: " + take_ossl_error());
    }

    if (!l.client_ca_pems.empty()) {
        X509_STORE* store = SSL_CTX_get_cert_store(ctx);
        for (size_t i = 0; i < l.client_ca_pems.size(); ++i) {
            auto cas = read_certs(l.client_ca_pems[i]);
            if (!cas) {
                return fail(Errc::Invalid,
                            "client CA " + std::to_string(i) + ": " + cas.error().message);
            }
            for (const X509Ptr& ca : *cas) {
                // add_cert takes its own reference; add_client_CA copies the subject name
                // into the CertificateRequest's list of acceptable CAs.
                if (X509_STORE_add_cert(store, ca.get()) != 1 ||
                    SSL_CTX_add_client_CA(ctx, ca.get()) != 1) {
                    return fail(Errc::Invalid,
                                "client CA " + std::to_string(i) + ": " + take_ossl_error());
                }
            }
        }
        site.verify_mode = SSL_VERIFY_PEER;
        if (l.client_cert_optional) {
            site.verify_cb = accept_any_chain;
        } else {
            site.verify_mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        }
    }
    // Like options, the verify mode is copied at SSL_new; on_client_hello applies the site's.
    SSL_CTX_set_verify(ctx, site.verify_mode, site.verify_cb);

    if (l.protocol == ir::Protocol::HTTPS) {
        // const_cast: OpenSSL's callback argument is void*; on_alpn only reads it.
        SSL_CTX_set_alpn_select_cb(ctx, on_alpn,
                                   const_cast<AlpnList*>(offer_h2 ? &kOfferH2 : &kOfferH1));
    }
    // Every site carries the callback: after a HelloRetryRequest the second ClientHello is
    // handled by the context chosen for the first.
    SSL_CTX_set_client_hello_cb(ctx, on_client_hello, this);
    return site;
}

Result<std::unique_ptr<TlsPort>>
TlsPort::build(const ir::Ir& ir, const std::vector<uint32_t>& listeners, bool offer_h2) {
    if (ex_index() < 0) {
        return fail(Errc::Internal, "SSL_get_ex_new_index: " + take_ossl_error());
    }
    if (listeners.empty()) {
        return fail(Errc::Invalid, "no listener");
    }
    std::unique_ptr<TlsPort> port(new TlsPort()); // private constructor: no make_unique
    if (!ticket_keys_slot()) {
        auto keys = TicketKeys::create({}, 3600);
        if (!keys) {
            return tl::unexpected(std::move(keys.error()));
        }
        ticket_keys_slot() = std::move(*keys);
    }
    port->tickets_ = ticket_keys_slot();
    const uint32_t first = listeners.front();
    for (uint32_t index : listeners) {
        if (index >= ir.listeners.size()) {
            return fail(Errc::Invalid, "listener index " + std::to_string(index) +
                                           " out of range (" + std::to_string(ir.listeners.size()) +
                                           " listeners)");
        }
        const ir::Listener& l = ir.listeners[index];
        if (first < ir.listeners.size() && l.port != ir.listeners[first].port) {
            return fail(Errc::Invalid, label(l) + ": port " + std::to_string(l.port) +
                                           " differs from " +
                                           std::to_string(ir.listeners[first].port));
        }
        if (l.tls_mode != ir::TlsMode::Terminate) {
            port->errors_.push_back(label(l) + ": not a TLS Terminate listener; left out");
            continue;
        }
        const size_t n_staples = port->staples_.size(), n_refused = port->staples_refused_;
        auto site = port->build_site(l, index, offer_h2);
        if (!site) {
            // A left-out listener serves nothing: its staples count neither way.
            port->staples_.resize(n_staples);
            port->staples_refused_ = n_refused;
            if (site.error().code == Errc::Internal) {
                return tl::unexpected(std::move(site.error()));
            }
            port->errors_.push_back(label(l) + ": " + site.error().message + "; left out");
            continue;
        }
        port->sites_.push_back(std::move(*site));
    }
    if (port->sites_.empty()) {
        std::string why;
        for (const std::string& e : port->errors_) {
            why += why.empty() ? e : "; " + e;
        }
        return fail(Errc::Invalid, "no usable TLS listener: " + why);
    }
    for (size_t i = 0; i < port->sites_.size(); ++i) {
        if (port->sites_[i].hostname.empty()) {
            port->no_sni_site_ = i;
            break;
        }
    }
    return port;
}

std::vector<uint32_t> TlsPort::listeners() const {
    std::vector<uint32_t> out;
    out.reserve(sites_.size());
    for (const Site& s : sites_) {
        out.push_back(s.listener);
    }
    return out;
}

size_t TlsPort::staples() const noexcept {
    size_t n = 0;
    for (const auto& s : staples_) {
        n += s->stale.load(std::memory_order_relaxed) ? 0 : 1;
    }
    return n;
}

size_t TlsPort::staples_refused() const noexcept {
    return staples_refused_ + (staples_.size() - staples());
}

std::vector<std::string> TlsPort::expire_staples(time_t now) const {
    std::vector<std::string> out;
    for (const auto& s : staples_) {
        if (s->next_update <= now && !s->stale.load(std::memory_order_relaxed)) {
            // Relaxed: a lone flag; nothing else is published with it (the staple's bytes
            // were built before the port was published).
            s->stale.store(true, std::memory_order_relaxed);
            out.push_back(s->what + ": OCSP staple (tls.ocsp-staple) no longer stapled: " +
                          "expired (nextUpdate " + ocsp::format_time(s->next_update) + ")");
        }
    }
    return out;
}

const TlsPort::Site* TlsPort::select(std::string_view sni, bool has_sni) const noexcept {
    if (!has_sni) {
        return &sites_[no_sni_site_];
    }
    if (sni.ends_with('.')) {
        sni.remove_suffix(1); // "foo.example.com." names the same host
    }
    // Rank: exact > longer wildcard > shorter wildcard > catch-all; ties go to the earlier.
    const Site* best = nullptr;
    size_t best_rank = 0;
    for (const Site& s : sites_) {
        size_t rank = 0;
        if (s.hostname.empty()) {
            rank = 1;
        } else if (s.hostname.starts_with("*.")) {
            rank = hosts::matches(s.hostname, sni) ? 1 + s.hostname.size() : 0;
        } else if (hosts::iequals(s.hostname, sni)) {
            rank = std::numeric_limits<size_t>::max();
        }
        if (rank > best_rank) {
            best = &s;
            best_rank = rank;
        }
    }
    return best;
}

int TlsPort::on_client_hello(SSL* ssl, int* alert, void* arg) {
    const auto* port = static_cast<const TlsPort*>(arg);
    const unsigned char* ext = nullptr;
    size_t ext_len = 0;
    std::string_view name;
    const bool has_sni =
        SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &ext_len) == 1;
    if (has_sni && !parse_sni(ext, ext_len, name)) {
        *alert = SSL_AD_DECODE_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    const Site* site = port->select(name, has_sni);
    if (site == nullptr) {
        *alert = SSL_AD_UNRECOGNIZED_NAME;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (SSL_set_SSL_CTX(ssl, site->ctx.get()) == nullptr) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    // What SSL_set_SSL_CTX does not carry over (certificates, ciphers, ALPN, CA list and the
    // verify store follow the context; these were copied at SSL_new). Version negotiation
    // and certificate requests come after this callback.
    if (SSL_set_min_proto_version(ssl, site->min_version) != 1) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_verify(ssl, site->verify_mode, site->verify_cb);
    // The listener index travels as a pointer-sized integer (+1 so that null means none).
    if (SSL_set_ex_data(ssl, ex_index(),
                        reinterpret_cast<void*>(static_cast<uintptr_t>(site->listener) + 1)) != 1) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

int TlsPort::on_status_request(SSL* ssl, void* arg) {
    const auto* port = static_cast<const TlsPort*>(arg);
    // OpenSSL has made the certificate it chose (by key type) current before calling us:
    // the one whose staple, if any, is sent. Contexts share their X509 objects with the SSLs
    // (SSL_new, SSL_set_SSL_CTX), so the pointer identifies the loaded certificate.
    const X509* cert = SSL_get_certificate(ssl);
    if (cert == nullptr) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    for (const auto& s : port->staples_) {
        if (s->leaf.get() != cert) {
            continue;
        }
        if (s->stale.load(std::memory_order_relaxed)) {
            return SSL_TLSEXT_ERR_NOACK;
        }
        // The SSL takes ownership of the response buffer and frees it with OPENSSL_free.
        auto* copy = static_cast<unsigned char*>(OPENSSL_memdup(s->der.data(), s->der.size()));
        if (copy == nullptr) {
            ERR_clear_error();
            return SSL_TLSEXT_ERR_NOACK;
        }
        if (SSL_set_tlsext_status_ocsp_resp(ssl, copy, static_cast<long>(s->der.size())) != 1) {
            OPENSSL_free(copy);
            ERR_clear_error();
            return SSL_TLSEXT_ERR_NOACK;
        }
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

SSL* TlsPort::new_ssl() const noexcept {
    SSL* ssl = SSL_new(sites_[no_sni_site_].ctx.get());
    if (ssl == nullptr) {
        ERR_clear_error();
        return nullptr;
    }
    SSL_set_accept_state(ssl);
    (void)tls_records_prepare(ssl); // sluice's record layer later: no-op unless enabled
    return ssl;
}

uint32_t TlsPort::chosen_listener(const SSL* ssl) noexcept {
    const int index = ex_index();
    const void* v = index < 0 ? nullptr : SSL_get_ex_data(ssl, index);
    if (v == nullptr) {
        return ir::kNone;
    }
    return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(v) - 1);
}

std::string_view TlsPort::sni(const SSL* ssl) noexcept {
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    return name == nullptr ? std::string_view() : std::string_view(name);
}

bool TlsPort::client_cert_verified(const SSL* ssl) noexcept {
    return SSL_get0_peer_certificate(ssl) != nullptr && SSL_get_verify_result(ssl) == X509_V_OK;
}

} // namespace sluice::l7
