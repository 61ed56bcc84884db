// Real TLS handshakes in memory (a BIO pair, non-blocking pumping) against a TlsPort built
// from an IR, with certificates generated here: RSA 2048 and EC P-256, a CA and leaves.

#include "tls_ctx.h"

#include <climits>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ocsp.h"
#include "test_cert.h"

namespace {

using sluice::Errc;
using sluice::l7::TlsPort;
using sluice::l7::TicketKeys;
namespace ir = sluice::ir;

using sluice::l7::testing::Cert;
using sluice::l7::testing::make_cert;
using sluice::l7::testing::PkeyPtr;
using sluice::l7::testing::SessionPtr;
using sluice::l7::testing::SslPtr;
using sluice::l7::testing::X509Ptr;
using CtxPtr = sluice::l7::testing::SslCtxPtr;

std::string cn_of(X509* x) {
    char buf[256] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, sizeof(buf));
    return buf;
}

/// Certificates shared by all tests (RSA key generation is the slow part).
struct Pki {
    PkeyPtr rsa{EVP_RSA_gen(2048)};
    PkeyPtr ec{EVP_EC_gen("P-256")};
    PkeyPtr ec2{EVP_EC_gen("P-256")};
    Cert wild = make_cert(rsa.get(), "wild", "DNS:*.example.com");
    Cert foo_rsa = make_cert(rsa.get(), "foo-rsa", "DNS:foo.example.com");
    Cert foo_ec = make_cert(ec.get(), "foo-ec", "DNS:foo.example.com");
    Cert fallback = make_cert(ec2.get(), "default", "");
    Cert secure = make_cert(ec.get(), "secure", "DNS:secure.example.com");
    Cert ca = make_cert(ec2.get(), "test-ca", "", nullptr, /*ca=*/true);
    Cert client = make_cert(ec.get(), "client", "", &ca);
    Cert rogue = make_cert(ec.get(), "rogue", ""); // self-signed: not from `ca`
};

const Pki& pki() {
    static const Pki p;
    return p;
}

ir::Listener listener(const std::string& name, const std::string& host,
                      std::vector<const Cert*> certs, ir::Protocol protocol = ir::Protocol::HTTPS) {
    ir::Listener l;
    l.gateway_ns = "infra";
    l.gateway_name = "gw";
    l.name = name;
    l.port = 443;
    l.protocol = protocol;
    l.hostname = host;
    l.tls_mode = ir::TlsMode::Terminate;
    for (const Cert* c : certs) {
        l.certs.push_back({"infra", name + "-cert", c->cert_pem, c->key_pem, ""});
    }
    return l;
}

/// IR with a plain HTTP listener at index 0 (so TLS indices are real IR indices) and `ls`
/// after it at indices 1, 2, ...
ir::Ir make_ir(std::vector<ir::Listener> ls) {
    ir::Ir out;
    ir::Listener http;
    http.gateway_ns = "infra";
    http.gateway_name = "gw";
    http.name = "http";
    http.port = 80;
    out.listeners.push_back(http);
    for (auto& l : ls) {
        out.listeners.push_back(std::move(l));
    }
    ir::Gateway gw;
    gw.ns = "infra";
    gw.name = "gw";
    gw.addresses = {"192.0.2.10"};
    for (uint32_t i = 0; i < out.listeners.size(); ++i) {
        gw.listeners.push_back(i);
    }
    out.gateways.push_back(gw);
    return out;
}

std::unique_ptr<TlsPort> build_ok(const ir::Ir& ir, const std::vector<uint32_t>& ls,
                                  bool offer_h2 = false) {
    auto port = TlsPort::build(ir, ls, offer_h2);
    EXPECT_TRUE(port.has_value()) << (port ? "" : port.error().message);
    EXPECT_EQ(ERR_peek_error(), 0u) << "build left entries on the OpenSSL error queue";
    return port ? std::move(*port) : nullptr;
}

struct Client {
    std::string sni;
    int min_version = 0;
    int max_version = 0;
    std::string ciphers; ///< TLS 1.2 list
    std::string suites;  ///< TLS 1.3 list
    std::string sigalgs;
    std::vector<std::string> alpn;
    const Cert* cert = nullptr;
    SSL_SESSION* session = nullptr;
    bool status_request = false; ///< ask for an OCSP staple
};

struct Outcome {
    bool ok = false; ///< both sides completed the handshake
    uint32_t listener = ir::kNone;
    std::string sni;
    std::string peer_cn; ///< the server certificate the client got
    int peer_key_type = 0;
    std::string alpn;
    int version = 0;
    std::string cipher;
    int alert = -1; ///< alert description the client received
    bool reused = false;
    bool client_verified = false;
    SessionPtr session;
    std::string staple; ///< the OCSP response the client got ("" = none)
};

void on_client_info(const SSL* ssl, int where, int ret) {
    if ((where & SSL_CB_READ_ALERT) != 0) {
        static_cast<Outcome*>(SSL_get_app_data(ssl))->alert = ret & 0xff;
    }
}

/// One handshake step; false = failed for good.
bool step(SSL* ssl, bool& done) {
    const int r = SSL_do_handshake(ssl);
    if (r == 1) {
        done = true;
        return true;
    }
    const int err = SSL_get_error(ssl, r);
    return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
}

Outcome handshake(const TlsPort& port, const Client& o) {
    Outcome out;
    CtxPtr cctx(SSL_CTX_new(TLS_client_method()));
    SSL_CTX_set_verify(cctx.get(), SSL_VERIFY_NONE, nullptr);
    if (o.min_version != 0) {
        SSL_CTX_set_min_proto_version(cctx.get(), o.min_version);
    }
    if (o.max_version != 0) {
        SSL_CTX_set_max_proto_version(cctx.get(), o.max_version);
    }
    if (!o.ciphers.empty()) {
        EXPECT_EQ(SSL_CTX_set_cipher_list(cctx.get(), o.ciphers.c_str()), 1);
    }
    if (!o.suites.empty()) {
        EXPECT_EQ(SSL_CTX_set_ciphersuites(cctx.get(), o.suites.c_str()), 1);
    }
    if (!o.sigalgs.empty()) {
        EXPECT_EQ(SSL_CTX_set1_sigalgs_list(cctx.get(), o.sigalgs.c_str()), 1);
    }
    if (!o.alpn.empty()) {
        std::string wire;
        for (const std::string& p : o.alpn) {
            wire += static_cast<char>(p.size());
            wire += p;
        }
        EXPECT_EQ(SSL_CTX_set_alpn_protos(cctx.get(),
                                          reinterpret_cast<const unsigned char*>(wire.data()),
                                          static_cast<unsigned>(wire.size())),
                  0); // 0 = success for this one
    }
    if (o.cert != nullptr) {
        EXPECT_EQ(SSL_CTX_use_certificate(cctx.get(), o.cert->x509.get()), 1);
        EXPECT_EQ(SSL_CTX_use_PrivateKey(cctx.get(), o.cert->key.get()), 1);
    }

    SslPtr client(SSL_new(cctx.get()));
    SslPtr server(port.new_ssl());
    EXPECT_NE(server, nullptr);
    if (!client || !server) {
        return out;
    }
    EXPECT_EQ(TlsPort::chosen_listener(server.get()), ir::kNone);
    BIO* cbio = nullptr;
    BIO* sbio = nullptr;
    EXPECT_EQ(BIO_new_bio_pair(&cbio, 0, &sbio, 0), 1);
    SSL_set_bio(client.get(), cbio, cbio);
    SSL_set_bio(server.get(), sbio, sbio);
    SSL_set_connect_state(client.get());
    SSL_set_app_data(client.get(), &out);
    SSL_set_info_callback(client.get(), on_client_info);
    if (!o.sni.empty()) {
        SSL_set_tlsext_host_name(client.get(), o.sni.c_str());
    }
    if (o.session != nullptr) {
        SSL_set_session(client.get(), o.session);
    }
    if (o.status_request) {
        EXPECT_EQ(SSL_set_tlsext_status_type(client.get(), TLSEXT_STATUSTYPE_ocsp), 1);
    }

    bool c_done = false, s_done = false, c_alive = true, s_alive = true;
    for (int i = 0; i < 64 && (c_alive || s_alive) && !(c_done && s_done); ++i) {
        if (c_alive && !c_done) {
            c_alive = step(client.get(), c_done);
        }
        if (s_alive && !s_done) {
            s_alive = step(server.get(), s_done);
        }
    }
    out.ok = c_done && s_done;
    if (out.ok) {
        // Let the client read what follows the handshake (TLS 1.3 session tickets).
        char b = 0;
        EXPECT_LE(SSL_read(client.get(), &b, 1), 0);
        EXPECT_EQ(SSL_get_error(client.get(), -1), SSL_ERROR_WANT_READ);
    } else if (c_done) {
        // TLS 1.3: the client finishes before the server checks its certificate; the
        // server's alert arrives on the first read.
        char b = 0;
        EXPECT_LE(SSL_read(client.get(), &b, 1), 0);
    }
    ERR_clear_error();

    out.listener = TlsPort::chosen_listener(server.get());
    out.sni = std::string(TlsPort::sni(server.get()));
    if (X509* peer = SSL_get0_peer_certificate(client.get())) {
        out.peer_cn = cn_of(peer);
        out.peer_key_type = EVP_PKEY_get_base_id(X509_get0_pubkey(peer));
    }
    const unsigned char* proto = nullptr;
    unsigned proto_len = 0;
    SSL_get0_alpn_selected(server.get(), &proto, &proto_len);
    out.alpn.assign(reinterpret_cast<const char*>(proto), proto_len);
    out.version = SSL_version(server.get());
    if (const SSL_CIPHER* c = SSL_get_current_cipher(server.get())) {
        out.cipher = SSL_CIPHER_get_name(c);
    }
    out.reused = SSL_session_reused(client.get()) == 1;
    const unsigned char* staple = nullptr;
    const long staple_len = SSL_get_tlsext_status_ocsp_resp(client.get(), &staple);
    if (staple != nullptr && staple_len > 0) {
        out.staple.assign(reinterpret_cast<const char*>(staple), static_cast<size_t>(staple_len));
    }
    out.client_verified = TlsPort::client_cert_verified(server.get());
    out.session.reset(SSL_get1_session(client.get()));
    if (out.ok) {
        // A session of a connection freed without close_notify is marked not resumable.
        SSL_shutdown(client.get());
    }
    return out;
}

Outcome handshake(const TlsPort& port, const std::string& sni) {
    Client c;
    c.sni = sni;
    return handshake(port, c);
}

// ir.listeners: 0 http, 1 wildcard, 2 foo (RSA + EC), 3 catch-all.
ir::Ir three_listeners() {
    const Pki& p = pki();
    return make_ir({listener("wild", "*.example.com", {&p.wild}),
                    listener("foo", "foo.example.com", {&p.foo_rsa, &p.foo_ec}),
                    listener("any", "", {&p.fallback})});
}

TEST(TlsPort, SniPicksTheMostSpecificListener) {
    const ir::Ir ir = three_listeners();
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);
    EXPECT_TRUE(port->errors().empty());
    EXPECT_EQ(port->listeners(), (std::vector<uint32_t>{1, 2, 3}));

    Outcome o = handshake(*port, "foo.example.com"); // exact beats the earlier wildcard
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 2u);
    EXPECT_EQ(o.sni, "foo.example.com");
    EXPECT_TRUE(o.peer_cn == "foo-rsa" || o.peer_cn == "foo-ec") << o.peer_cn;

    o = handshake(*port, "FOO.Example.COM"); // case-insensitive
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 2u);

    o = handshake(*port, "foo.example.com."); // absolute form: the same host
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 2u);

    o = handshake(*port, "bar.example.com");
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 1u);
    EXPECT_EQ(o.peer_cn, "wild");

    o = handshake(*port, "a.b.example.com"); // wildcards cover several labels
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 1u);

    o = handshake(*port, "example.com"); // but never the apex
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 3u);
    EXPECT_EQ(o.peer_cn, "default");

    o = handshake(*port, "other.org");
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 3u);

    o = handshake(*port, ""); // no SNI -> catch-all
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 3u);
    EXPECT_EQ(o.sni, "");
    EXPECT_EQ(o.peer_cn, "default");
}

TEST(TlsPort, LongerWildcardWins) {
    const Pki& p = pki();
    const ir::Ir ir = make_ir({listener("wide", "*.example.com", {&p.wild}),
                               listener("narrow", "*.api.example.com", {&p.fallback})});
    auto port = build_ok(ir, {1, 2});
    ASSERT_NE(port, nullptr);
    EXPECT_EQ(handshake(*port, "x.api.example.com").listener, 2u);
    EXPECT_EQ(handshake(*port, "x.web.example.com").listener, 1u);
}

TEST(TlsPort, UnknownSniWithoutCatchAllIsRejected) {
    const ir::Ir ir = three_listeners();
    auto port = build_ok(ir, {1, 2}); // no catch-all
    ASSERT_NE(port, nullptr);

    Outcome o = handshake(*port, "other.org");
    EXPECT_FALSE(o.ok);
    EXPECT_EQ(o.alert, SSL_AD_UNRECOGNIZED_NAME);
    EXPECT_EQ(o.listener, ir::kNone);

    o = handshake(*port, ""); // no SNI -> the first listener
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 1u);
    EXPECT_EQ(o.peer_cn, "wild");
}

TEST(TlsPort, AlpnPrefersH2OnlyWhenOffered) {
    const Pki& p = pki();
    const ir::Ir ir = make_ir({listener("https", "", {&p.fallback}),
                               listener("tls", "tls.example.com", {&p.wild}, ir::Protocol::TLS)});
    auto h1 = build_ok(ir, {1, 2}, /*offer_h2=*/false);
    auto h2 = build_ok(ir, {1, 2}, /*offer_h2=*/true);
    ASSERT_NE(h1, nullptr);
    ASSERT_NE(h2, nullptr);

    Client c;
    c.alpn = {"h2", "http/1.1"};
    Outcome o = handshake(*h1, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.alpn, "http/1.1");

    c.alpn = {"http/1.1", "h2"}; // the server's preference decides
    o = handshake(*h2, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.alpn, "h2");

    c.alpn = {"http/1.1"};
    o = handshake(*h2, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.alpn, "http/1.1");

    c.alpn = {"h2"}; // nothing in common: no ALPN, but no failure either
    o = handshake(*h1, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.alpn, "");

    c.alpn = {};
    o = handshake(*h2, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.alpn, "");

    c.alpn = {"h2", "http/1.1"}; // a TLS (TLSRoute) listener does not speak HTTP
    c.sni = "tls.example.com";
    o = handshake(*h2, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 2u);
    EXPECT_EQ(o.alpn, "");
}

TEST(TlsPort, MinVersionOptionIsPerListener) {
    ir::Ir ir = three_listeners();
    ir.listeners[2].tls_options = {{"sluice.dev/min-version", "1.3"}, {"unknown/key", "x"}};
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);
    EXPECT_TRUE(port->errors().empty());

    Client c;
    c.sni = "foo.example.com";
    c.max_version = TLS1_2_VERSION;
    Outcome o = handshake(*port, c);
    EXPECT_FALSE(o.ok);
    EXPECT_EQ(o.alert, SSL_AD_PROTOCOL_VERSION);

    c.max_version = 0;
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.version, TLS1_3_VERSION);

    c.sni = "other.org"; // the catch-all keeps the 1.2 default
    c.max_version = TLS1_2_VERSION;
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 3u);
    EXPECT_EQ(o.version, TLS1_2_VERSION);

    c.max_version = TLS1_1_VERSION; // below the default minimum
    c.ciphers = "DEFAULT:@SECLEVEL=0";
    o = handshake(*port, c);
    EXPECT_FALSE(o.ok);
}

TEST(TlsPort, CipherOptions) {
    ir::Ir ir = three_listeners();
    ir.listeners[2].tls_options = {{"sluice.dev/ciphers", "ECDHE-RSA-AES256-GCM-SHA384"},
                                   {"sluice.dev/ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"}};
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);

    Client c;
    c.sni = "foo.example.com";
    c.max_version = TLS1_2_VERSION;
    Outcome o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.cipher, "ECDHE-RSA-AES256-GCM-SHA384");

    c.ciphers = "ECDHE-RSA-AES128-GCM-SHA256"; // not in the listener's list
    o = handshake(*port, c);
    EXPECT_FALSE(o.ok);

    c = Client{};
    c.sni = "foo.example.com";
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.cipher, "TLS_CHACHA20_POLY1305_SHA256");

    c.sni = "bar.example.com"; // other listeners keep the defaults
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_NE(o.cipher, "TLS_CHACHA20_POLY1305_SHA256");

    c.max_version = TLS1_2_VERSION;
    c.ciphers = "AES128-SHA"; // no forward secrecy: not in the default list
    o = handshake(*port, c);
    EXPECT_FALSE(o.ok);
}

TEST(TlsPort, InvalidOptionsLeaveTheListenerOut) {
    ir::Ir ir = three_listeners();
    ir.listeners[1].tls_options = {{"sluice.dev/min-version", "1.1"}};
    ir.listeners[2].tls_options = {{"sluice.dev/ciphers", "NO-SUCH-CIPHER"}};
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);
    ASSERT_EQ(port->errors().size(), 2u);
    EXPECT_NE(port->errors()[0].find("infra/gw/wild"), std::string::npos);
    EXPECT_NE(port->errors()[0].find("min-version"), std::string::npos);
    EXPECT_NE(port->errors()[1].find("infra/gw/foo"), std::string::npos);
    EXPECT_NE(port->errors()[1].find("left out"), std::string::npos);
    EXPECT_EQ(port->listeners(), std::vector<uint32_t>{3});
    EXPECT_EQ(handshake(*port, "foo.example.com").listener, 3u);
}

TEST(TlsPort, EcdsaOnlyClientGetsTheEcCertificate) {
    const ir::Ir ir = three_listeners();
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);

    Client c;
    c.sni = "foo.example.com";
    c.max_version = TLS1_2_VERSION;
    c.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256";
    c.sigalgs = "ECDSA+SHA256";
    Outcome o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.peer_cn, "foo-ec");
    EXPECT_EQ(o.peer_key_type, EVP_PKEY_EC);
    EXPECT_EQ(o.cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");

    c.ciphers = "ECDHE-RSA-AES128-GCM-SHA256";
    c.sigalgs = "RSA+SHA256";
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.peer_cn, "foo-rsa");
    EXPECT_EQ(o.peer_key_type, EVP_PKEY_RSA);

    c = Client{}; // TLS 1.3: by signature algorithm alone
    c.sni = "foo.example.com";
    c.sigalgs = "ECDSA+SHA256";
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.peer_cn, "foo-ec");
    c.sigalgs = "rsa_pss_rsae_sha256";
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.peer_cn, "foo-rsa");
}

TEST(TlsPort, InvalidPemIsReportedAndTheOthersStillWork) {
    const Pki& p = pki();
    ir::Listener garbage = listener("garbage", "garbage.example.com", {});
    garbage.certs.push_back({"infra", "bad", "not a certificate", p.wild.key_pem, ""});
    ir::Listener mismatch = listener("mismatch", "mismatch.example.com", {});
    mismatch.certs.push_back({"infra", "mm", p.foo_ec.cert_pem, p.fallback.key_pem, ""});
    std::string damaged = p.wild.cert_pem;
    damaged[damaged.size() / 2] = '!';
    ir::Listener broken = listener("broken", "broken.example.com", {});
    broken.certs.push_back({"infra", "dmg", damaged, p.wild.key_pem, ""});
    ir::Listener badkey = listener("badkey", "badkey.example.com", {});
    badkey.certs.push_back({"infra", "bk", p.wild.cert_pem,
                            "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                            "-----END PRIVATE KEY-----\n",
                            ""});
    ir::Listener none = listener("none", "none.example.com", {});
    const ir::Ir ir =
        make_ir({garbage, mismatch, broken, badkey, none, listener("any", "", {&p.fallback})});

    auto port = build_ok(ir, {1, 2, 3, 4, 5, 6});
    ASSERT_NE(port, nullptr);
    ASSERT_EQ(port->errors().size(), 5u);
    const char* names[] = {"garbage", "mismatch", "broken", "badkey", "none"};
    for (size_t i = 0; i < 5; ++i) {
        EXPECT_NE(port->errors()[i].find(std::string("infra/gw/") + names[i]), std::string::npos)
            << port->errors()[i];
        EXPECT_NE(port->errors()[i].find("left out"), std::string::npos);
    }
    EXPECT_NE(port->errors()[1].find("does not match"), std::string::npos);
    EXPECT_EQ(port->listeners(), std::vector<uint32_t>{6});

    Outcome o = handshake(*port, "garbage.example.com");
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.listener, 6u);

    // Nothing usable at all: an error naming every listener.
    auto none_ok = TlsPort::build(ir, {1, 2}, false);
    ASSERT_FALSE(none_ok.has_value());
    EXPECT_EQ(none_ok.error().code, Errc::Invalid);
    EXPECT_NE(none_ok.error().message.find("garbage"), std::string::npos);
    EXPECT_NE(none_ok.error().message.find("mismatch"), std::string::npos);
    EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST(TlsPort, SecondCertificateOfTheSameKeyTypeIsIgnored) {
    const Pki& p = pki();
    const ir::Ir ir = make_ir({listener("dup", "", {&p.foo_rsa, &p.wild})});
    auto port = build_ok(ir, {1});
    ASSERT_NE(port, nullptr);
    ASSERT_EQ(port->errors().size(), 1u);
    EXPECT_NE(port->errors()[0].find("ignored"), std::string::npos);
    const Outcome o = handshake(*port, "");
    ASSERT_TRUE(o.ok);
    EXPECT_EQ(o.peer_cn, "foo-rsa");
}

TEST(TlsPort, CertificateChainIsSent) {
    const Pki& p = pki();
    const Cert leaf = make_cert(p.ec.get(), "leaf", "DNS:chain.example.com", &p.ca);
    ir::Listener l = listener("chain", "", {});
    l.certs.push_back({"infra", "chain", leaf.cert_pem + p.ca.cert_pem, leaf.key_pem, ""});
    const ir::Ir ir = make_ir({l});
    auto port = build_ok(ir, {1});
    ASSERT_NE(port, nullptr);

    CtxPtr cctx(SSL_CTX_new(TLS_client_method()));
    X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx.get()), p.ca.x509.get());
    SSL_CTX_set_verify(cctx.get(), SSL_VERIFY_PEER, nullptr);
    SslPtr client(SSL_new(cctx.get()));
    SslPtr server(port->new_ssl());
    BIO* cbio = nullptr;
    BIO* sbio = nullptr;
    ASSERT_EQ(BIO_new_bio_pair(&cbio, 0, &sbio, 0), 1);
    SSL_set_bio(client.get(), cbio, cbio);
    SSL_set_bio(server.get(), sbio, sbio);
    SSL_set_connect_state(client.get());
    bool c_done = false, s_done = false, ok = true;
    for (int i = 0; i < 32 && ok && !(c_done && s_done); ++i) {
        ok = (c_done || step(client.get(), c_done)) && (s_done || step(server.get(), s_done));
    }
    ERR_clear_error();
    ASSERT_TRUE(c_done && s_done);
    STACK_OF(X509)* chain = SSL_get_peer_cert_chain(client.get());
    ASSERT_NE(chain, nullptr);
    EXPECT_EQ(sk_X509_num(chain), 2);
    EXPECT_EQ(SSL_get_verify_result(client.get()), X509_V_OK);
}

ir::Ir mtls_ir(bool optional) {
    const Pki& p = pki();
    ir::Listener secure = listener("secure", "secure.example.com", {&p.secure});
    secure.client_ca_pems = {p.ca.cert_pem};
    secure.client_cert_optional = optional;
    return make_ir({secure, listener("any", "", {&p.fallback})});
}

TEST(TlsPort, RequiredClientCertificate) {
    const ir::Ir ir = mtls_ir(/*optional=*/false);
    auto port = build_ok(ir, {1, 2});
    ASSERT_NE(port, nullptr);
    EXPECT_TRUE(port->errors().empty());

    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        SCOPED_TRACE(version);
        Client c;
        c.sni = "secure.example.com";
        c.max_version = version;
        Outcome o = handshake(*port, c);
        EXPECT_FALSE(o.ok);
        EXPECT_EQ(o.alert, version == TLS1_3_VERSION ? SSL_AD_CERTIFICATE_REQUIRED
                                                     : SSL_AD_HANDSHAKE_FAILURE);

        c.cert = &pki().client;
        o = handshake(*port, c);
        ASSERT_TRUE(o.ok);
        EXPECT_EQ(o.listener, 1u);
        EXPECT_TRUE(o.client_verified);

        c.cert = &pki().rogue;
        o = handshake(*port, c);
        EXPECT_FALSE(o.ok);
        EXPECT_EQ(o.alert, SSL_AD_UNKNOWN_CA);

        // The listener next door does not ask for a certificate.
        c.sni = "other.org";
        c.cert = nullptr;
        o = handshake(*port, c);
        ASSERT_TRUE(o.ok);
        EXPECT_EQ(o.listener, 2u);
        EXPECT_FALSE(o.client_verified);
    }
}

TEST(TlsPort, OptionalClientCertificate) {
    const ir::Ir ir = mtls_ir(/*optional=*/true);
    auto port = build_ok(ir, {1, 2});
    ASSERT_NE(port, nullptr);

    Client c;
    c.sni = "secure.example.com";
    Outcome o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_FALSE(o.client_verified);

    c.cert = &pki().client;
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_TRUE(o.client_verified);

    c.cert = &pki().rogue; // AllowInsecureFallback: admitted, but not verified
    o = handshake(*port, c);
    ASSERT_TRUE(o.ok);
    EXPECT_FALSE(o.client_verified);
}

TEST(TlsPort, InvalidClientCaLeavesTheListenerOut) {
    ir::Ir ir = mtls_ir(false);
    ir.listeners[1].client_ca_pems = {"garbage"};
    auto port = build_ok(ir, {1, 2});
    ASSERT_NE(port, nullptr);
    ASSERT_EQ(port->errors().size(), 1u);
    EXPECT_NE(port->errors()[0].find("client CA"), std::string::npos);
    EXPECT_EQ(port->listeners(), std::vector<uint32_t>{2});
}

TEST(TlsPort, SessionsResumeOnlyOnTheirListener) {
    const ir::Ir ir = three_listeners();
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);

    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        SCOPED_TRACE(version);
        Client c;
        c.sni = "foo.example.com";
        c.max_version = version;
        Outcome first = handshake(*port, c);
        ASSERT_TRUE(first.ok);
        ASSERT_NE(first.session, nullptr);
        ASSERT_EQ(SSL_SESSION_is_resumable(first.session.get()), 1);

        c.session = first.session.get();
        Outcome again = handshake(*port, c);
        ASSERT_TRUE(again.ok);
        EXPECT_TRUE(again.reused);
        EXPECT_EQ(again.listener, 2u);
        // Every resumption is sent a fresh ticket (a client that resumes with the session it
        // holds, as wrk does, must not find it spent: before, wrk fell back to a full
        // handshake every second connection).
        auto ticket = [](const SSL_SESSION* ss) {
            const unsigned char* t = nullptr;
            size_t n = 0;
            SSL_SESSION_get0_ticket(ss, &t, &n);
            return std::string(reinterpret_cast<const char*>(t), n);
        };
        ASSERT_NE(again.session, nullptr);
        EXPECT_FALSE(ticket(again.session.get()).empty());
        EXPECT_NE(ticket(again.session.get()), ticket(first.session.get()))
            << "no new ticket after a resumption";
        Client chain = c;
        chain.session = again.session.get();
        Outcome third = handshake(*port, chain);
        ASSERT_TRUE(third.ok);
        EXPECT_TRUE(third.reused) << "the ticket sent on a resumption resumes too";

        c.sni = "bar.example.com"; // the wildcard listener: a full handshake
        Outcome other = handshake(*port, c);
        ASSERT_TRUE(other.ok);
        EXPECT_FALSE(other.reused);
        EXPECT_EQ(other.listener, 1u);

        // A rebuild (every configuration publish) keeps the ticket keys: still resumes.
        auto rebuilt = build_ok(ir, {1, 2, 3});
        ASSERT_NE(rebuilt, nullptr);
        c.sni = "foo.example.com";
        Outcome after = handshake(*rebuilt, c);
        ASSERT_TRUE(after.ok);
        EXPECT_TRUE(after.reused) << "a configuration publish must not void the tickets";
    }
}

int64_t g_now = 0;
int64_t test_clock() { return g_now; }

TEST(TlsPort, TicketKeysRotateOnTheClockAndAreShareable) {
    const ir::Ir ir = three_listeners();
    const std::vector<uint8_t> secret(48, 0x5a);
    g_now = 100 * 3600 + 10; // period 100 of 1 h
    TlsPort::set_ticket_keys(*TicketKeys::create(secret, 3600, &test_clock));
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);
    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        SCOPED_TRACE(version);
        g_now = 100 * 3600 + 10;
        Client c;
        c.sni = "foo.example.com";
        c.max_version = version;
        Outcome first = handshake(*port, c);
        ASSERT_TRUE(first.ok);
        ASSERT_NE(first.session, nullptr);
        c.session = first.session.get();

        // Another process with the same secret (another node behind the VIP) resumes it.
        TlsPort::set_ticket_keys(*TicketKeys::create(secret, 3600, &test_clock));
        auto other_node = build_ok(ir, {1, 2, 3});
        EXPECT_TRUE(handshake(*other_node, c).reused);
        // A different secret does not (and the handshake still succeeds, in full).
        TlsPort::set_ticket_keys(*TicketKeys::create(std::vector<uint8_t>(48, 0x11), 3600, &test_clock));
        auto stranger = build_ok(ir, {1, 2, 3});
        Outcome full = handshake(*stranger, c);
        EXPECT_TRUE(full.ok);
        EXPECT_FALSE(full.reused);

        g_now = 101 * 3600 + 5; // next period: the previous key still decrypts
        EXPECT_TRUE(handshake(*port, c).reused);
        g_now = 102 * 3600 + 5; // two periods later: expired, a full handshake
        Outcome late = handshake(*port, c);
        EXPECT_TRUE(late.ok);
        EXPECT_FALSE(late.reused);
    }
    EXPECT_FALSE(TicketKeys::create(std::vector<uint8_t>(16, 1), 3600).has_value()) << "short secret";
    EXPECT_FALSE(TicketKeys::create({}, 10).has_value()) << "period under 60 s";
    TlsPort::set_ticket_keys(nullptr);
}

TEST(TlsPort, BuildRejectsBadInput) {
    ir::Ir ir = three_listeners();
    auto r = TlsPort::build(ir, {}, false);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, Errc::Invalid);

    r = TlsPort::build(ir, {1, 9}, false);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, Errc::Invalid);

    ir.listeners[2].port = 8443;
    r = TlsPort::build(ir, {1, 2}, false);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code, Errc::Invalid);
    EXPECT_NE(r.error().message.find("8443"), std::string::npos);

    ir.listeners[2].port = 443;
    ir.listeners[2].tls_mode = ir::TlsMode::Passthrough;
    auto port = build_ok(ir, {1, 2, 3});
    ASSERT_NE(port, nullptr);
    ASSERT_EQ(port->errors().size(), 1u);
    EXPECT_NE(port->errors()[0].find("infra/gw/foo"), std::string::npos);
    EXPECT_EQ(port->listeners(), (std::vector<uint32_t>{1, 3}));
}

// ---------------------------------------------------------------- OCSP stapling

namespace ocsp = sluice::l7::ocsp;
using OcspInfo = ocsp::StapleInfo;

constexpr long kDay = 86400;
constexpr long kNoNext = LONG_MIN;

struct OcspSpec {
    long this_update = -3600; ///< seconds from now
    long next_update = kDay;  ///< seconds from now; kNoNext = no nextUpdate
    int cert_status = V_OCSP_CERTSTATUS_GOOD;
    int response_status = OCSP_RESPONSE_STATUS_SUCCESSFUL;
    const Cert* also = nullptr; ///< a second SingleResponse, for this certificate
};

/// A DER OCSP response about `leaf` issued by `ca` (which also signs it), as a CA's
/// responder would answer (what `openssl ocsp -respout` writes).
std::string ocsp_response(const Cert& leaf, const Cert& ca, const OcspSpec& spec = {}) {
    std::unique_ptr<OCSP_RESPONSE, decltype(&OCSP_RESPONSE_free)> resp(nullptr, OCSP_RESPONSE_free);
    if (spec.response_status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        resp.reset(OCSP_response_create(spec.response_status, nullptr));
    } else {
        std::unique_ptr<OCSP_BASICRESP, decltype(&OCSP_BASICRESP_free)> basic(OCSP_BASICRESP_new(),
                                                                              OCSP_BASICRESP_free);
        std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)> this_update(
            X509_gmtime_adj(nullptr, spec.this_update), ASN1_TIME_free);
        std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)> next_update(
            spec.next_update == kNoNext ? nullptr : X509_gmtime_adj(nullptr, spec.next_update),
            ASN1_TIME_free);
        std::unique_ptr<ASN1_TIME, decltype(&ASN1_TIME_free)> revoked_at(
            X509_gmtime_adj(nullptr, -kDay), ASN1_TIME_free);
        for (const Cert* c : {&leaf, spec.also}) {
            if (c == nullptr) {
                continue;
            }
            std::unique_ptr<OCSP_CERTID, decltype(&OCSP_CERTID_free)> id(
                OCSP_cert_to_id(EVP_sha1(), c->x509.get(), ca.x509.get()), OCSP_CERTID_free);
            const bool revoked = spec.cert_status == V_OCSP_CERTSTATUS_REVOKED;
            EXPECT_NE(OCSP_basic_add1_status(basic.get(), id.get(), spec.cert_status,
                                             revoked ? OCSP_REVOKED_STATUS_KEYCOMPROMISE : 0,
                                             revoked ? revoked_at.get() : nullptr,
                                             this_update.get(), next_update.get()),
                      nullptr);
        }
        EXPECT_EQ(
            OCSP_basic_sign(basic.get(), ca.x509.get(), ca.key.get(), EVP_sha256(), nullptr, 0), 1);
        resp.reset(OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic.get()));
    }
    EXPECT_NE(resp, nullptr);
    const int n = i2d_OCSP_RESPONSE(resp.get(), nullptr);
    EXPECT_GT(n, 0);
    std::string der(static_cast<size_t>(n), '\0');
    auto* p = reinterpret_cast<unsigned char*>(der.data());
    EXPECT_EQ(i2d_OCSP_RESPONSE(resp.get(), &p), n);
    return der;
}

/// Leaves issued by pki().ca (RSA and ECDSA) and an unrelated self-signed one.
struct OcspPki {
    Cert rsa = make_cert(pki().rsa.get(), "ocsp-rsa", "DNS:ocsp.example.com", &pki().ca);
    Cert ec = make_cert(pki().ec.get(), "ocsp-ec", "DNS:ocsp.example.com", &pki().ca);
    Cert other = make_cert(pki().ec.get(), "ocsp-other", "DNS:ocsp.example.com", &pki().ca);
};

const OcspPki& ocsp_pki() {
    static const OcspPki p;
    return p;
}

/// The certificates of `c`'s tls.crt: the leaf, then the CA when `with_issuer`.
std::vector<sluice::l7::pem::X509Ptr> bundle(const Cert& c, bool with_issuer) {
    auto certs = sluice::l7::pem::read_certs(c.cert_pem + (with_issuer ? pki().ca.cert_pem : ""));
    EXPECT_TRUE(certs.has_value());
    return certs ? std::move(*certs) : std::vector<sluice::l7::pem::X509Ptr>{};
}

TEST(Ocsp, CheckStapleAcceptsAValidResponseForTheCertificate) {
    const OcspPki& o = ocsp_pki();
    const time_t now = std::time(nullptr);
    const std::string der = ocsp_response(o.ec, pki().ca);
    for (bool with_issuer : {true, false}) {
        SCOPED_TRACE(with_issuer);
        auto info = ocsp::check_staple(der, bundle(o.ec, with_issuer), now);
        ASSERT_TRUE(info.has_value()) << info.error().message;
        EXPECT_EQ(info->cert_status, V_OCSP_CERTSTATUS_GOOD);
        EXPECT_GE(info->next_update, now + kDay - 5);
        EXPECT_LE(info->next_update, now + kDay + 5);
        EXPECT_EQ(ERR_peek_error(), 0u);
    }
    // No nextUpdate: never stale by the clock.
    auto info = ocsp::check_staple(ocsp_response(o.ec, pki().ca, {.next_update = kNoNext}),
                                   bundle(o.ec, true), now);
    ASSERT_TRUE(info.has_value()) << info.error().message;
    EXPECT_EQ(info->next_update, ocsp::kNoNextUpdate);
    // "revoked" is the CA's word: returned, not judged.
    info = ocsp::check_staple(
        ocsp_response(o.ec, pki().ca, {.cert_status = V_OCSP_CERTSTATUS_REVOKED}),
        bundle(o.ec, true), now);
    ASSERT_TRUE(info.has_value()) << info.error().message;
    EXPECT_EQ(info->cert_status, V_OCSP_CERTSTATUS_REVOKED);
}

TEST(Ocsp, CheckStapleRefuses) {
    const OcspPki& o = ocsp_pki();
    const time_t now = std::time(nullptr);
    const std::string good = ocsp_response(o.ec, pki().ca);
    struct Case {
        const char* what;
        std::string der;
        bool with_issuer;
        time_t now;
        const char* reason;
    };
    const std::vector<Case> cases = {
        {"garbage", "this is not DER", true, now, "not a DER OCSP response"},
        {"empty", "", true, now, "empty"},
        {"cut", good.substr(0, good.size() - 10), true, now, "not a DER OCSP response"},
        {"trailing bytes", good + "x", true, now, "trailing bytes"},
        {"too large", std::string(ocsp::kMaxStapleBytes + 1, '\x30'), true, now, "more than"},
        {"another certificate", ocsp_response(o.other, pki().ca), true, now, "another certificate"},
        {"another certificate, issuer unknown", ocsp_response(o.other, pki().ca), false, now,
         "another certificate"},
        {"expired", ocsp_response(o.ec, pki().ca, {.this_update = -2 * kDay, .next_update = -60}),
         true, now, "expired"},
        {"valid now, expired later", good, true, now + 2 * kDay, "expired"},
        {"thisUpdate ahead", ocsp_response(o.ec, pki().ca, {.this_update = 3600}), true, now,
         "in the future"},
        {"tryLater",
         ocsp_response(o.ec, pki().ca, {.response_status = OCSP_RESPONSE_STATUS_TRYLATER}), true,
         now, "not successful"},
        {"two statuses", ocsp_response(o.ec, pki().ca, {.also = &o.rsa}), true, now,
         "2 certificate statuses"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        auto info = ocsp::check_staple(c.der, bundle(o.ec, c.with_issuer), c.now);
        ASSERT_FALSE(info.has_value());
        EXPECT_EQ(info.error().code, Errc::Invalid);
        EXPECT_NE(info.error().message.find(c.reason), std::string::npos) << info.error().message;
        EXPECT_EQ(ERR_peek_error(), 0u);
    }
}

/// A listener "ocsp" (no hostname) with the RSA and the ECDSA leaf, each bundled with the CA
/// and carrying `rsa_staple` / `ec_staple`.
ir::Ir ocsp_ir(const std::string& rsa_staple, const std::string& ec_staple) {
    const OcspPki& o = ocsp_pki();
    ir::Listener l = listener("ocsp", "", {});
    l.certs.push_back(
        {"infra", "rsa-cert", o.rsa.cert_pem + pki().ca.cert_pem, o.rsa.key_pem, rsa_staple});
    l.certs.push_back(
        {"infra", "ec-cert", o.ec.cert_pem + pki().ca.cert_pem, o.ec.key_pem, ec_staple});
    return make_ir({l});
}

Client ocsp_client(const char* sigalgs, int max_version, bool status_request = true) {
    Client c;
    c.sni = "ocsp.example.com";
    c.sigalgs = sigalgs;
    c.max_version = max_version;
    c.status_request = status_request;
    return c;
}

TEST(TlsPort, EachCertificateGetsItsOwnOcspStaple) {
    const OcspPki& o = ocsp_pki();
    const std::string rsa_staple = ocsp_response(o.rsa, pki().ca);
    const std::string ec_staple = ocsp_response(o.ec, pki().ca);
    ASSERT_NE(rsa_staple, ec_staple);
    const ir::Ir ir = ocsp_ir(rsa_staple, ec_staple);
    auto port = build_ok(ir, {1});
    ASSERT_NE(port, nullptr);
    EXPECT_TRUE(port->errors().empty()) << port->errors().front();
    EXPECT_EQ(port->staples(), 2u);
    EXPECT_EQ(port->staples_refused(), 0u);

    for (int version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
        SCOPED_TRACE(version);
        Outcome r = handshake(*port, ocsp_client("ECDSA+SHA256", version));
        ASSERT_TRUE(r.ok);
        EXPECT_EQ(r.peer_cn, "ocsp-ec");
        EXPECT_EQ(r.staple, ec_staple);
        r = handshake(*port, ocsp_client("rsa_pss_rsae_sha256:RSA+SHA256", version));
        ASSERT_TRUE(r.ok);
        EXPECT_EQ(r.peer_cn, "ocsp-rsa");
        EXPECT_EQ(r.staple, rsa_staple);
        // A client that does not ask gets none.
        r = handshake(*port, ocsp_client("ECDSA+SHA256", version, /*status_request=*/false));
        ASSERT_TRUE(r.ok);
        EXPECT_EQ(r.staple, "");
    }

    // Only the ECDSA certificate has one: an RSA handshake gets no staple.
    const ir::Ir ec_only = ocsp_ir("", ec_staple);
    port = build_ok(ec_only, {1});
    ASSERT_NE(port, nullptr);
    EXPECT_EQ(port->staples(), 1u);
    Outcome r = handshake(*port, ocsp_client("rsa_pss_rsae_sha256:RSA+SHA256", TLS1_3_VERSION));
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.peer_cn, "ocsp-rsa");
    EXPECT_EQ(r.staple, "");
    r = handshake(*port, ocsp_client("ECDSA+SHA256", TLS1_3_VERSION));
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.staple, ec_staple);
}

TEST(TlsPort, InvalidOcspStaplesAreReportedNotStapledAndTheListenerServes) {
    const OcspPki& o = ocsp_pki();
    const struct {
        const char* name;
        std::string staple;
        const char* reason;
    } bad[] = {
        {"garbage", "not an OCSP response", "not a DER OCSP response"},
        // The RSA leaf's staple on the ECDSA certificate: a swapped Secret key.
        {"swapped", ocsp_response(o.rsa, pki().ca), "another certificate"},
        {"expired", ocsp_response(o.ec, pki().ca, {.this_update = -2 * kDay, .next_update = -60}),
         "expired"},
    };
    for (const auto& b : bad) {
        SCOPED_TRACE(b.name);
        const ir::Ir ir = ocsp_ir("", b.staple);
        auto port = build_ok(ir, {1});
        ASSERT_NE(port, nullptr);
        EXPECT_EQ(port->listeners(), std::vector<uint32_t>{1});
        ASSERT_EQ(port->errors().size(), 1u);
        const std::string& e = port->errors()[0];
        EXPECT_NE(e.find("infra/gw/ocsp: certificate infra/ec-cert: OCSP staple (tls.ocsp-staple) "
                         "not stapled: "),
                  std::string::npos)
            << e;
        EXPECT_NE(e.find(b.reason), std::string::npos) << e;
        EXPECT_EQ(e.find("left out"), std::string::npos) << e;
        EXPECT_EQ(port->staples(), 0u);
        EXPECT_EQ(port->staples_refused(), 1u);
        const Outcome r = handshake(*port, ocsp_client("ECDSA+SHA256", TLS1_3_VERSION));
        ASSERT_TRUE(r.ok);
        EXPECT_EQ(r.peer_cn, "ocsp-ec");
        EXPECT_EQ(r.staple, "");
    }

    // A revoked status is stapled (the client decides), and said once.
    const std::string revoked =
        ocsp_response(o.ec, pki().ca, {.cert_status = V_OCSP_CERTSTATUS_REVOKED});
    const ir::Ir ir = ocsp_ir("", revoked);
    auto port = build_ok(ir, {1});
    ASSERT_NE(port, nullptr);
    ASSERT_EQ(port->errors().size(), 1u);
    EXPECT_NE(port->errors()[0].find("revoked (stapled as is)"), std::string::npos);
    EXPECT_EQ(port->staples(), 1u);
    EXPECT_EQ(handshake(*port, ocsp_client("ECDSA+SHA256", TLS1_2_VERSION)).staple, revoked);
}

TEST(TlsPort, OcspStapleStopsWhenItsNextUpdatePasses) {
    const OcspPki& o = ocsp_pki();
    const std::string staple = ocsp_response(o.ec, pki().ca); // nextUpdate: in a day
    const ir::Ir ir = ocsp_ir("", staple);
    auto port = build_ok(ir, {1});
    ASSERT_NE(port, nullptr);
    const time_t now = std::time(nullptr);
    EXPECT_TRUE(port->expire_staples(now).empty());
    EXPECT_EQ(handshake(*port, ocsp_client("ECDSA+SHA256", TLS1_3_VERSION)).staple, staple);

    const std::vector<std::string> lines = port->expire_staples(now + 2 * kDay);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_NE(lines[0].find("infra/gw/ocsp: certificate infra/ec-cert: OCSP staple "
                            "(tls.ocsp-staple) no longer stapled: expired (nextUpdate "),
              std::string::npos)
        << lines[0];
    EXPECT_EQ(port->staples(), 0u);
    EXPECT_EQ(port->staples_refused(), 1u);
    const Outcome r = handshake(*port, ocsp_client("ECDSA+SHA256", TLS1_3_VERSION));
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.staple, "");
    EXPECT_TRUE(port->expire_staples(now + 3 * kDay).empty()) << "said once";
}

TEST(TlsPort, OcspStaplesOfALeftOutListenerAreNotCounted) {
    const OcspPki& o = ocsp_pki();
    // The certificates and their staples are loaded (one valid, one refused), then the
    // listener fails (its client CA).
    ir::Listener bad = listener("bad", "bad.example.com", {});
    bad.certs.push_back({"infra", "bad-cert", o.ec.cert_pem + pki().ca.cert_pem, o.ec.key_pem,
                         ocsp_response(o.ec, pki().ca)});
    bad.certs.push_back({"infra", "bad-rsa", o.rsa.cert_pem, o.rsa.key_pem, "garbage"});
    bad.client_ca_pems = {"not a CA"};
    const ir::Ir ir = make_ir({bad, listener("any", "", {&pki().fallback})});
    auto port = build_ok(ir, {1, 2});
    ASSERT_NE(port, nullptr);
    EXPECT_EQ(port->listeners(), std::vector<uint32_t>{2});
    ASSERT_EQ(port->errors().size(), 2u);
    EXPECT_NE(port->errors()[0].find("not stapled"), std::string::npos) << port->errors()[0];
    EXPECT_NE(port->errors()[1].find("client CA"), std::string::npos) << port->errors()[1];
    EXPECT_EQ(port->staples(), 0u);
    EXPECT_EQ(port->staples_refused(), 0u);
}

} // namespace
