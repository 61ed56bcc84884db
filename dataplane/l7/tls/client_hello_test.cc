#include "client_hello.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <random>
#include <string>
#include <vector>

namespace sluice::l7 {
namespace {

/// The first flight of a real OpenSSL client (its ClientHello), with or without SNI.
std::string client_hello(const char* sni, bool big = false) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = SSL_new(ctx);
    BIO* rb = BIO_new(BIO_s_mem());
    BIO* wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    if (sni) {
        SSL_set_tlsext_host_name(ssl, sni);
    }
    if (big) {
        // A large ALPN list: a ClientHello of about 9 kB.
        std::string alpn;
        for (int i = 0; i < 1000; ++i) {
            alpn += static_cast<char>(8);
            alpn += "proto" + std::to_string(100 + i % 900);
        }
        SSL_set_alpn_protos(ssl, reinterpret_cast<const unsigned char*>(alpn.data()),
                            static_cast<unsigned>(alpn.size()));
    }
    SSL_connect(ssl);
    std::string out;
    char buf[4096];
    int n;
    while ((n = BIO_read(wb, buf, sizeof buf)) > 0) {
        out.append(buf, static_cast<size_t>(n));
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return out;
}

TEST(ClientHello, ReadsSniFromEveryPrefixOnwards) {
    const std::string hello = client_hello("Foo.Example.com");
    ASSERT_GT(hello.size(), 50u);
    std::vector<char> scratch(kMaxClientHello);
    std::string_view sni;
    for (size_t i = 0; i < hello.size(); ++i) {
        EXPECT_EQ(parse_client_hello(std::string_view(hello).substr(0, i), scratch.data(), sni),
                  HelloStatus::Incomplete)
            << "prefix " << i;
    }
    ASSERT_EQ(parse_client_hello(hello, scratch.data(), sni), HelloStatus::Ok);
    EXPECT_EQ(sni, "Foo.Example.com");
    // Bytes after the hello (a pipelined record) do not matter.
    ASSERT_EQ(parse_client_hello(hello + "\x17\x03\x03\x00\x01z", scratch.data(), sni), HelloStatus::Ok);
    EXPECT_EQ(sni, "Foo.Example.com");
}

TEST(ClientHello, NoSniIsOkAndEmpty) {
    const std::string hello = client_hello(nullptr);
    std::vector<char> scratch(kMaxClientHello);
    std::string_view sni = "x";
    ASSERT_EQ(parse_client_hello(hello, scratch.data(), sni), HelloStatus::Ok);
    EXPECT_TRUE(sni.empty());
}

TEST(ClientHello, SplitAcrossRecords) {
    // Re-frame one ClientHello as many 100-byte records (legal, rarely seen).
    const std::string hello = client_hello("split.example.com", true);
    const std::string msg = hello.substr(5, (static_cast<unsigned char>(hello[3]) << 8) |
                                                static_cast<unsigned char>(hello[4]));
    std::string framed;
    for (size_t off = 0; off < msg.size(); off += 100) {
        const std::string part = msg.substr(off, 100);
        framed += std::string("\x16\x03\x01", 3);
        framed += static_cast<char>(part.size() >> 8);
        framed += static_cast<char>(part.size() & 0xff);
        framed += part;
    }
    std::vector<char> scratch(kMaxClientHello);
    std::string_view sni;
    EXPECT_EQ(parse_client_hello(std::string_view(framed).substr(0, framed.size() - 1), scratch.data(), sni),
              HelloStatus::Incomplete);
    ASSERT_EQ(parse_client_hello(framed, scratch.data(), sni), HelloStatus::Ok);
    EXPECT_EQ(sni, "split.example.com");
}

TEST(ClientHello, GarbageIsNotTlsOrError) {
    std::vector<char> scratch(kMaxClientHello);
    std::string_view sni;
    EXPECT_EQ(parse_client_hello("GET / HTTP/1.1\r\n\r\n", scratch.data(), sni), HelloStatus::NotTls);
    EXPECT_EQ(parse_client_hello(std::string("\x16\x03\x01\x00\x00", 5), scratch.data(), sni),
              HelloStatus::Error); // empty record
    EXPECT_EQ(parse_client_hello(std::string("\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9), scratch.data(), sni),
              HelloStatus::Error); // a ServerHello first
    // Every single-byte corruption of a real hello: never a crash, never a bogus SNI.
    const std::string hello = client_hello("ok.example.com");
    std::mt19937 rng(7);
    for (size_t i = 0; i < hello.size(); ++i) {
        std::string bad = hello;
        bad[i] = static_cast<char>(bad[i] ^ (1 + rng() % 255));
        const HelloStatus st = parse_client_hello(bad, scratch.data(), sni);
        if (st == HelloStatus::Ok && !sni.empty()) {
            EXPECT_LE(sni.size(), 253u);
        }
    }
}

} // namespace
} // namespace sluice::l7
