// sluice's TLS 1.3 record layer against a real OpenSSL client: OpenSSL handshakes on both
// ends over memory BIOs, then the server's side continues with TlsRecords::take_over() and
// the client keeps talking to it with SSL_read/SSL_write (tickets, KeyUpdate both ways,
// close_notify, a forged record).

#include "records.h"

#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "test_cert.h"
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

namespace sluice::l7 {
namespace {

using sluice::l7::testing::SslCtxPtr;
using sluice::l7::testing::SslPtr;


/// Both ends over memory BIOs: c2s carries the client's bytes, s2c the server's.
struct Pair {
    SslCtxPtr sctx, cctx;
    SslPtr server, client;
    BIO* c2s = nullptr;
    BIO* s2c = nullptr;

    explicit Pair(const char* suite, int tickets = -1) {
        sctx.reset(SSL_CTX_new(TLS_server_method()));
        cctx.reset(SSL_CTX_new(TLS_client_method()));
        sluice::l7::testing::self_signed(sctx.get(), nullptr, "records.test");
        SSL_CTX_set_keylog_callback(sctx.get(), tls_records_keylog);
        SSL_CTX_set_read_ahead(sctx.get(), 1); // as sluice-l7's contexts: prepare() turns it off
        if (tickets >= 0) {
            SSL_CTX_set_num_tickets(sctx.get(), static_cast<size_t>(tickets));
        }
        SSL_CTX_set_min_proto_version(cctx.get(), TLS1_3_VERSION);
        SSL_CTX_set_ciphersuites(cctx.get(), suite);
        server.reset(SSL_new(sctx.get()));
        client.reset(SSL_new(cctx.get()));
        c2s = BIO_new(BIO_s_mem());
        s2c = BIO_new(BIO_s_mem());
        BIO_up_ref(c2s);
        BIO_up_ref(s2c);
        SSL_set_bio(server.get(), c2s, s2c);
        SSL_set_bio(client.get(), s2c, c2s);
        SSL_set_accept_state(server.get());
        SSL_set_connect_state(client.get());
    }

    bool handshake() {
        bool s_done = false, c_done = false;
        for (int i = 0; i < 1000 && !(s_done && c_done); ++i) {
            if (!c_done) {
                const int r = SSL_do_handshake(client.get());
                c_done = r == 1;
                if (r <= 0 && SSL_get_error(client.get(), r) != SSL_ERROR_WANT_READ) {
                    return false;
                }
            }
            if (!s_done) {
                const int r = SSL_do_handshake(server.get());
                s_done = r == 1;
                if (r <= 0 && SSL_get_error(server.get(), r) != SSL_ERROR_WANT_READ) {
                    return false;
                }
            }
        }
        return s_done && c_done;
    }

    /// Everything the client wrote since the last call.
    std::string from_client() {
        std::string out;
        char buf[4096];
        int n;
        while ((n = BIO_read(c2s, buf, sizeof buf)) > 0) {
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }
    void to_client(const std::string& wire) {
        ASSERT_EQ(BIO_write(s2c, wire.data(), static_cast<int>(wire.size())),
                  static_cast<int>(wire.size()));
    }
    /// What the client reads now (its records processed, tickets and KeyUpdates included).
    std::string client_reads() {
        std::string out;
        char buf[20000];
        int n;
        while ((n = SSL_read(client.get(), buf, sizeof buf)) > 0) {
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }
    void client_writes(const std::string& s) {
        ASSERT_EQ(SSL_write(client.get(), s.data(), static_cast<int>(s.size())),
                  static_cast<int>(s.size()));
    }
};

class Records : public ::testing::TestWithParam<const char*> {
protected:
    void SetUp() override {
        if (!tls_records_enable()) {
            GTEST_SKIP() << "ipsec-mb not usable here";
        }
    }
};

TEST_P(Records, ApplicationDataBothWaysAfterTheTakeover) {
    Pair p(GetParam());
    ASSERT_TRUE(tls_records_prepare(p.server.get()));
    ASSERT_TRUE(p.handshake());
    auto rec = TlsRecords::take_over(p.server.get());
    ASSERT_NE(rec, nullptr);

    // Client -> server: a request, then one larger than a record.
    p.client_writes("GET / HTTP/1.1\r\n\r\n");
    std::string wire = p.from_client(), plain, out, why;
    ASSERT_EQ(rec->open(wire, plain, out, why), TlsRecords::Status::Ok) << why;
    EXPECT_EQ(plain, "GET / HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(wire.empty());
    EXPECT_TRUE(out.empty());

    // Server -> client, over the tickets OpenSSL sent (write sequence numbers after them).
    std::string big(40000, 'x');
    for (size_t i = 0; i < big.size(); ++i) {
        big[i] = static_cast<char>('a' + i % 26);
    }
    std::string w;
    rec->seal("HTTP/1.1 200 OK\r\n\r\n", w);
    rec->seal(big, w);
    p.to_client(w);
    EXPECT_EQ(p.client_reads(), "HTTP/1.1 200 OK\r\n\r\n" + big);
    EXPECT_EQ(rec->sealed(), 4u); // 1 + 3 records of at most 2^14 bytes

    // A record split anywhere waits for its rest.
    p.client_writes(big);
    const std::string all = p.from_client();
    std::string part = all.substr(0, 7), got;
    ASSERT_EQ(rec->open(part, got, out, why), TlsRecords::Status::Ok);
    EXPECT_TRUE(got.empty());
    part += all.substr(7);
    ASSERT_EQ(rec->open(part, got, out, why), TlsRecords::Status::Ok) << why;
    EXPECT_EQ(got, big);
}

TEST_P(Records, KeyUpdatesBothWays) {
    Pair p(GetParam());
    ASSERT_TRUE(tls_records_prepare(p.server.get()));
    ASSERT_TRUE(p.handshake());
    auto rec = TlsRecords::take_over(p.server.get());
    ASSERT_NE(rec, nullptr);
    std::string w;
    rec->seal("warm", w);
    p.to_client(w);
    ASSERT_EQ(p.client_reads(), "warm");

    // The client updates its keys and asks for ours: we answer with a KeyUpdate and move on.
    ASSERT_EQ(SSL_key_update(p.client.get(), SSL_KEY_UPDATE_REQUESTED), 1);
    p.client_writes("after update");
    std::string wire = p.from_client(), plain, out, why;
    ASSERT_EQ(rec->open(wire, plain, out, why), TlsRecords::Status::Ok) << why;
    EXPECT_EQ(plain, "after update");
    ASSERT_FALSE(out.empty()) << "a requested KeyUpdate is answered";
    w = out;
    rec->seal("with new keys", w);
    p.to_client(w);
    EXPECT_EQ(p.client_reads(), "with new keys");

    // Our own KeyUpdate, not requesting one: the client follows.
    w.clear();
    rec->seal_key_update(w, false);
    rec->seal("again", w);
    p.to_client(w);
    EXPECT_EQ(p.client_reads(), "again");
    p.client_writes("still");
    wire = p.from_client();
    plain.clear();
    ASSERT_EQ(rec->open(wire, plain, out, why), TlsRecords::Status::Ok) << why;
    EXPECT_EQ(plain, "still");
}

TEST_P(Records, CloseNotifyAndForgeries) {
    Pair p(GetParam());
    ASSERT_TRUE(tls_records_prepare(p.server.get()));
    ASSERT_TRUE(p.handshake());
    auto rec = TlsRecords::take_over(p.server.get());
    ASSERT_NE(rec, nullptr);

    p.client_writes("abc");
    std::string wire = p.from_client(), plain, out, why;
    std::string forged = wire;
    forged[forged.size() - 1] ^= 1; // the tag
    EXPECT_EQ(rec->open(forged, plain, out, why), TlsRecords::Status::Error);
    EXPECT_EQ(why, "record authentication failed");
    EXPECT_TRUE(plain.empty());

    Pair q(GetParam());
    ASSERT_TRUE(tls_records_prepare(q.server.get()));
    ASSERT_TRUE(q.handshake());
    auto rec2 = TlsRecords::take_over(q.server.get());
    ASSERT_NE(rec2, nullptr);
    q.client_writes("last words");
    ASSERT_EQ(SSL_shutdown(q.client.get()), 0);
    wire = q.from_client();
    plain.clear();
    EXPECT_EQ(rec2->open(wire, plain, out, why), TlsRecords::Status::CloseNotify);
    EXPECT_EQ(plain, "last words");
    std::string w;
    rec2->seal_close_notify(w);
    q.to_client(w);
    EXPECT_EQ(q.client_reads(), "");
    EXPECT_EQ(SSL_get_shutdown(q.client.get()) & SSL_RECEIVED_SHUTDOWN, SSL_RECEIVED_SHUTDOWN);

    // A plaintext record type after the handshake is refused.
    std::string bad("\x16\x03\x03\x00\x05hello", 10);
    EXPECT_EQ(rec2->open(bad, plain, out, why), TlsRecords::Status::Error);
}

TEST_P(Records, TicketCountsDoNotMatter) {
    for (int tickets : {0, 1, 4}) {
        Pair p(GetParam(), tickets);
        ASSERT_TRUE(tls_records_prepare(p.server.get()));
        ASSERT_TRUE(p.handshake());
        auto rec = TlsRecords::take_over(p.server.get());
        ASSERT_NE(rec, nullptr);
        std::string w;
        rec->seal("n", w);
        p.to_client(w);
        EXPECT_EQ(p.client_reads(), "n") << tickets << " tickets";
    }
}

TEST(RecordsFallback, UnpreparedTls12AndChaChaStayWithOpenSsl) {
    if (!tls_records_enable()) {
        GTEST_SKIP() << "ipsec-mb not usable here";
    }
    {
        Pair p("TLS_AES_128_GCM_SHA256");
        ASSERT_TRUE(p.handshake());
        EXPECT_EQ(TlsRecords::take_over(p.server.get()), nullptr) << "not prepared";
    }
    {
        Pair p("TLS_CHACHA20_POLY1305_SHA256");
        ASSERT_TRUE(tls_records_prepare(p.server.get()));
        ASSERT_TRUE(p.handshake());
        EXPECT_EQ(TlsRecords::take_over(p.server.get()), nullptr) << "ChaCha20";
        p.client_writes("still OpenSSL");
        char buf[64];
        EXPECT_EQ(SSL_read(p.server.get(), buf, sizeof buf), 13);
    }
    {
        Pair p("TLS_AES_128_GCM_SHA256");
        SSL_CTX_set_max_proto_version(p.sctx.get(), TLS1_2_VERSION);
        SSL_set_max_proto_version(p.server.get(), TLS1_2_VERSION);
        SSL_set_min_proto_version(p.client.get(), TLS1_2_VERSION);
        SSL_set_max_proto_version(p.client.get(), TLS1_2_VERSION);
        ASSERT_TRUE(tls_records_prepare(p.server.get()));
        ASSERT_TRUE(p.handshake());
        EXPECT_EQ(TlsRecords::take_over(p.server.get()), nullptr) << "TLS 1.2";
    }
}

INSTANTIATE_TEST_SUITE_P(Suites, Records,
                         ::testing::Values("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384"),
                         [](const auto& info) {
                             return std::string(info.param).substr(8, 3) == "128" ? "Aes128"
                                                                                  : "Aes256";
                         });

} // namespace
} // namespace sluice::l7
