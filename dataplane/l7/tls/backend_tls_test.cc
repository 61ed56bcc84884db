// Gateway-to-backend TLS contexts: real handshakes over a non-blocking socketpair between a
// BackendTls client SSL and an OpenSSL server, with certificates generated here (EC P-256):
// trust roots, host name and subjectAltName verification, the client certificate, ALPN,
// the cache key, and build errors.

#include "backend_tls.h"
#include "test_cert.h"

#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace {

using sluice::Errc;
using sluice::l7::BackendTls;
using sluice::l7::BackendTlsConfig;

using sluice::l7::testing::Cert;
using sluice::l7::testing::make_cert;
using sluice::l7::testing::SslPtr;
using CtxPtr = sluice::l7::testing::SslCtxPtr;

/// The conformance suite's setup (REFERENCE.md section 6): a CA, the backend's certificate
/// with DNS and SPIFFE URI names, a client certificate from the same CA, and an unrelated CA.
struct Pki {
    Cert ca = make_cert("checks-ca", "", nullptr, true);
    Cert server = make_cert("abc.example.com",
                            "DNS:abc.example.com,URI:spiffe://abc.example.com/test-identity,"
                            "DNS:other.example.com",
                            &ca);
    Cert wildcard = make_cert("wild", "DNS:*.example.net", &ca);
    Cert client = make_cert("gateway-client", "DNS:client.example.com", &ca);
    Cert other_ca = make_cert("mismatch-ca", "", nullptr, true);
    Cert rogue_client = make_cert("rogue", "DNS:client.example.com", &other_ca);
};

const Pki& pki() {
    static const Pki p;
    return p;
}

/// The backend's side: serves `cert`, records the SNI, and optionally requires a client
/// certificate from `client_ca`.
struct Server {
    CtxPtr ctx{SSL_CTX_new(TLS_server_method())};
    std::string sni;
    explicit Server(const Cert& cert, const Cert* client_ca = nullptr,
                    std::vector<std::string> alpn = {"h2", "http/1.1"}) {
        SSL_CTX_use_certificate(ctx.get(), cert.x509.get());
        SSL_CTX_use_PrivateKey(ctx.get(), cert.key.get());
        if (client_ca) {
            X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), client_ca->x509.get());
            SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                               nullptr);
        }
        for (const std::string& a : alpn) {
            wire_alpn += static_cast<char>(a.size());
            wire_alpn += a;
        }
        SSL_CTX_set_alpn_select_cb(
            ctx.get(),
            [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
               unsigned int inlen, void* arg) {
                const auto* ours = static_cast<const std::string*>(arg);
                unsigned char* o = nullptr;
                if (SSL_select_next_proto(
                        &o, outlen, reinterpret_cast<const unsigned char*>(ours->data()),
                        static_cast<unsigned>(ours->size()), in, inlen) != OPENSSL_NPN_NEGOTIATED) {
                    return SSL_TLSEXT_ERR_NOACK;
                }
                *out = o;
                return SSL_TLSEXT_ERR_OK;
            },
            &wire_alpn);
    }
    std::string wire_alpn;
};

struct Outcome {
    bool ok = false;
    std::string why;     ///< BackendTls::failure() when !ok
    std::string sni;     ///< what the server saw
    std::string peer_cn; ///< the client certificate the server got ("" = none)
    std::string alpn;    ///< negotiated
};

/// One handshake over a non-blocking socketpair, pumped from this thread.
Outcome handshake(const BackendTls& tls, Server& server, bool h2 = false) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    SslPtr c(tls.new_ssl(sv[0], h2));
    EXPECT_NE(c, nullptr);
    SslPtr s(SSL_new(server.ctx.get()));
    SSL_set_fd(s.get(), sv[1]);
    SSL_set_accept_state(s.get());
    Outcome out;
    bool c_done = false, s_done = false, c_failed = false;
    for (int i = 0; i < 200 && !(c_done && s_done) && !c_failed; ++i) {
        if (!c_done) {
            ERR_clear_error();
            const int r = SSL_do_handshake(c.get());
            if (r == 1) {
                c_done = true;
            } else {
                const int e = SSL_get_error(c.get(), r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    char buf[256];
                    out.why = BackendTls::failure(c.get(), buf, sizeof buf);
                    c_failed = true;
                }
            }
        }
        if (!s_done && !c_failed) {
            const int r = SSL_do_handshake(s.get());
            if (r == 1) {
                s_done = true;
            } else {
                const int e = SSL_get_error(s.get(), r);
                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    // The server refused (e.g. no client certificate): the client learns it
                    // from the alert on its next step.
                    ERR_clear_error();
                    s_done = true;
                }
            }
        }
    }
    if (!c_failed && c_done) {
        // TLS 1.3: a refused client certificate arrives as an alert after the client's
        // handshake completed: read once to see it.
        char b;
        ERR_clear_error();
        const int r = SSL_read(c.get(), &b, 1);
        const int e = SSL_get_error(c.get(), r);
        if (e == SSL_ERROR_SSL || e == SSL_ERROR_ZERO_RETURN ||
            (e == SSL_ERROR_SYSCALL && r == 0)) {
            char buf[256];
            out.why = BackendTls::failure(c.get(), buf, sizeof buf);
            c_failed = true;
        }
    }
    out.ok = c_done && !c_failed;
    if (const char* name = SSL_get_servername(s.get(), TLSEXT_NAMETYPE_host_name)) {
        out.sni = name;
    }
    if (X509* peer = SSL_get0_peer_certificate(s.get())) {
        char buf[256] = {};
        X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, buf, sizeof buf);
        out.peer_cn = buf;
    }
    const unsigned char* a = nullptr;
    unsigned alen = 0;
    SSL_get0_alpn_selected(c.get(), &a, &alen);
    out.alpn.assign(reinterpret_cast<const char*>(a), alen);
    ::close(sv[0]);
    ::close(sv[1]);
    ERR_clear_error();
    return out;
}

std::shared_ptr<const BackendTls> build_ok(const BackendTlsConfig& cfg) {
    auto t = BackendTls::build(cfg);
    EXPECT_TRUE(t.has_value()) << (t ? "" : t.error().message);
    EXPECT_EQ(ERR_peek_error(), 0u) << "build left entries on the OpenSSL error queue";
    return t ? *t : nullptr;
}

BackendTlsConfig policy(const std::string& sni, std::vector<std::string> sans = {},
                        const Cert* ca = &pki().ca) {
    BackendTlsConfig c;
    c.sni = sni;
    c.sans = std::move(sans);
    c.ca_pem = ca ? ca->cert_pem : "";
    return c;
}

TEST(BackendTls, RightCaAndHostnameVerifies) {
    Server s(pki().server);
    auto t = build_ok(policy("abc.example.com"));
    const Outcome o = handshake(*t, s);
    EXPECT_TRUE(o.ok) << o.why;
    EXPECT_EQ(o.sni, "abc.example.com");
    EXPECT_EQ(o.alpn, "http/1.1");
    EXPECT_EQ(o.peer_cn, ""); // no client certificate configured
}

TEST(BackendTls, UnrelatedCaFails) {
    Server s(pki().server);
    auto t = build_ok(policy("abc.example.com", {}, &pki().other_ca));
    const Outcome o = handshake(*t, s);
    EXPECT_FALSE(o.ok);
    EXPECT_NE(o.why.find("certificate verify failed"), std::string::npos) << o.why;
}

TEST(BackendTls, HostnameMismatchFails) {
    Server s(pki().server);
    auto t = build_ok(policy("mismatch.example.com"));
    const Outcome o = handshake(*t, s);
    EXPECT_FALSE(o.ok);
    EXPECT_EQ(o.sni, "mismatch.example.com");
    EXPECT_NE(o.why.find("hostname mismatch"), std::string::npos) << o.why;
}

TEST(BackendTls, WildcardCertificateCoversOneLabel) {
    Server s(pki().wildcard);
    EXPECT_TRUE(handshake(*build_ok(policy("a.example.net")), s).ok);
    EXPECT_FALSE(handshake(*build_ok(policy("a.b.example.net")), s).ok);
    EXPECT_FALSE(handshake(*build_ok(policy("example.net")), s).ok);
}

TEST(BackendTls, SubjectAltNamesReplaceTheHostname) {
    Server s(pki().server);
    struct Case {
        std::vector<std::string> sans;
        bool ok;
    } cases[] = {
        {{"DNS:abc.example.com"}, true},
        {{"DNS:dce.example.com"}, false},
        {{"URI:spiffe://abc.example.com/test-identity"}, true},
        {{"URI:spiffe://def.example.com/test-identity"}, false},
        {{"URI:spiffe://abc.example.com/test-identity", "DNS:abc.example.com"}, true},
        {{"URI:spiffe://def.example.com/test-identity", "DNS:def.example.com"}, false},
        {{"URI:spiffe://def.example.com/x", "DNS:other.example.com"}, true},
        // The URI must be equal, not a prefix; a DNS name is not a URI.
        {{"URI:spiffe://abc.example.com/test"}, false},
        {{"URI:abc.example.com"}, false},
    };
    for (const Case& c : cases) {
        // The SNI stays the policy's hostname; only verification changes.
        auto t = build_ok(policy("abc.example.com", c.sans));
        const Outcome o = handshake(*t, s);
        EXPECT_EQ(o.ok, c.ok) << c.sans.front() << ": " << o.why;
        EXPECT_EQ(o.sni, "abc.example.com");
        if (!c.ok) {
            EXPECT_NE(o.why.find("subjectAltName"), std::string::npos) << o.why;
        }
    }
    // With subjectAltNames the hostname itself is not required to match.
    auto t = build_ok(policy("nothing.example.org", {"DNS:other.example.com"}));
    EXPECT_TRUE(handshake(*t, s).ok);
}

TEST(BackendTls, SansStillNeedTheChain) {
    Server s(pki().server);
    auto t = build_ok(policy("abc.example.com", {"DNS:abc.example.com"}, &pki().other_ca));
    const Outcome o = handshake(*t, s);
    EXPECT_FALSE(o.ok);
    EXPECT_NE(o.why.find("certificate verify failed"), std::string::npos) << o.why;
}

TEST(BackendTls, MatchesSansDirectly) {
    X509* x = pki().server.x509.get();
    EXPECT_TRUE(BackendTls::matches_sans(x, {"DNS:abc.example.com"}));
    EXPECT_TRUE(BackendTls::matches_sans(x, {"DNS:ABC.example.com"})); // DNS is case-insensitive
    EXPECT_FALSE(BackendTls::matches_sans(x, {"DNS:abc.example.com.evil"}));
    EXPECT_TRUE(BackendTls::matches_sans(x, {"URI:spiffe://abc.example.com/test-identity"}));
    EXPECT_FALSE(BackendTls::matches_sans(x, {"URI:spiffe://abc.example.com/test-identity/"}));
    EXPECT_FALSE(BackendTls::matches_sans(x, {"IP:127.0.0.1", "DNS:", "URI:"}));
    EXPECT_FALSE(BackendTls::matches_sans(x, {}));
    // The CN is never used.
    EXPECT_FALSE(BackendTls::matches_sans(pki().ca.x509.get(), {"DNS:checks-ca"}));
    EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST(BackendTls, PresentsTheClientCertificate) {
    Server s(pki().server, &pki().ca);
    BackendTlsConfig cfg = policy("abc.example.com");
    // Without a certificate the backend refuses.
    Outcome o = handshake(*build_ok(cfg), s);
    EXPECT_FALSE(o.ok);
    cfg.client_cert_pem = pki().client.cert_pem;
    cfg.client_key_pem = pki().client.key_pem;
    o = handshake(*build_ok(cfg), s);
    EXPECT_TRUE(o.ok) << o.why;
    EXPECT_EQ(o.peer_cn, "gateway-client");
    // A certificate from another CA is refused by the backend.
    cfg.client_cert_pem = pki().rogue_client.cert_pem;
    cfg.client_key_pem = pki().rogue_client.key_pem;
    o = handshake(*build_ok(cfg), s);
    EXPECT_FALSE(o.ok);
}

TEST(BackendTls, AlpnH2OnRequest) {
    Server s(pki().server);
    auto t = build_ok(policy("abc.example.com"));
    EXPECT_EQ(handshake(*t, s, /*h2=*/true).alpn, "h2");
    Server h1_only(pki().server, nullptr, {"http/1.1"});
    EXPECT_EQ(handshake(*t, h1_only, /*h2=*/true).alpn, ""); // no overlap: no ALPN
}

TEST(BackendTls, SslOutlivesItsContext) {
    // A backend connection may still be handshaking when its tables (and BackendTls) go:
    // the subjectAltNames live with the SSL_CTX.
    Server s(pki().server);
    auto t = build_ok(policy("abc.example.com", {"URI:spiffe://abc.example.com/test-identity"}));
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    SslPtr c(t->new_ssl(sv[0], false));
    t.reset();
    SslPtr srv(SSL_new(s.ctx.get()));
    SSL_set_fd(srv.get(), sv[1]);
    SSL_set_accept_state(srv.get());
    bool done = false;
    for (int i = 0; i < 100 && !done; ++i) {
        done = SSL_do_handshake(c.get()) == 1;
        SSL_do_handshake(srv.get());
    }
    EXPECT_TRUE(done);
    ::close(sv[0]);
    ::close(sv[1]);
    ERR_clear_error();
}

TEST(BackendTls, KeyFollowsEveryField) {
    const BackendTlsConfig a = policy("abc.example.com", {"DNS:x"});
    EXPECT_EQ(a.key(), policy("abc.example.com", {"DNS:x"}).key());
    EXPECT_NE(a.key(), policy("abc.example.org", {"DNS:x"}).key());
    EXPECT_NE(a.key(), policy("abc.example.com", {"DNS:y"}).key());
    EXPECT_NE(a.key(), policy("abc.example.com", {}).key());
    EXPECT_NE(a.key(), policy("abc.example.com", {"DNS:x"}, &pki().other_ca).key());
    BackendTlsConfig b = a;
    b.client_cert_pem = pki().client.cert_pem;
    b.client_key_pem = pki().client.key_pem;
    EXPECT_NE(a.key(), b.key());
    // Field boundaries count: "ab" + "c" differs from "a" + "bc".
    BackendTlsConfig c1 = policy("ab", {"DNS:c"});
    BackendTlsConfig c2 = policy("a", {"bDNS:c"});
    EXPECT_NE(c1.key(), c2.key());
    EXPECT_EQ(a.key().size(), 64u);
}

TEST(BackendTls, DistinctContextsHaveDistinctIds) {
    auto a = build_ok(policy("abc.example.com"));
    auto b = build_ok(policy("abc.example.com"));
    EXPECT_NE(a->id(), b->id());
    EXPECT_EQ(a->sni(), "abc.example.com");
}

TEST(BackendTls, SystemRootsWhenNoCa) {
    // The system store does not know the test CA.
    Server s(pki().server);
    auto t = BackendTls::build(policy("abc.example.com", {}, nullptr));
    if (!t) {
        GTEST_SKIP() << "no system trust store here: " << t.error().message;
    }
    const Outcome o = handshake(**t, s);
    EXPECT_FALSE(o.ok);
    EXPECT_NE(o.why.find("certificate verify failed"), std::string::npos) << o.why;
}

TEST(BackendTls, BuildErrors) {
    BackendTlsConfig bad_ca = policy("abc.example.com");
    bad_ca.ca_pem = "not a certificate";
    auto r = BackendTls::build(bad_ca);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::Invalid);

    r = BackendTls::build(policy("abc.example.com", {"IP:10.0.0.1"}));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::Invalid);
    r = BackendTls::build(policy("abc.example.com", {"DNS:"}));
    ASSERT_FALSE(r);

    BackendTlsConfig wrong_key = policy("abc.example.com");
    wrong_key.client_cert_pem = pki().client.cert_pem;
    wrong_key.client_key_pem = pki().server.key_pem;
    r = BackendTls::build(wrong_key);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("does not match"), std::string::npos) << r.error().message;

    BackendTlsConfig no_key = policy("abc.example.com");
    no_key.client_cert_pem = pki().client.cert_pem;
    r = BackendTls::build(no_key);
    ASSERT_FALSE(r);
    EXPECT_EQ(ERR_peek_error(), 0u) << "a failed build must not leave errors behind";
}

} // namespace
