#include "ir_codec.h"

#include <gtest/gtest.h>

namespace sluice::ir {
namespace {

Ir sample() {
    Ir ir;
    BackendGroup g;
    g.ns = "bar";
    g.name = "bar-v1";
    g.port = 8080;
    g.endpoints.push_back({"10.0.0.1", 8080, true, true, false, "bar-v1-0"});
    ir.groups.push_back(g);
    Listener l;
    l.gateway_ns = "default";
    l.gateway_name = "prod-web";
    l.name = "https";
    l.port = 443;
    l.protocol = Protocol::HTTPS;
    Rule r;
    r.route_ns = "bar";
    r.route_name = "bar-route";
    r.backends.push_back(Backend{0, 90, 0, "", kNone});
    r.backends.push_back(Backend{kNone, 10, 500, "Service bar/gone not found", kNone});
    ir.rules.push_back(r);
    HttpMatch m;
    m.rule = 0;
    m.headers.push_back({MatchType::Exact, "env", "canary"});
    l.http_matches.push_back(m);
    l.host_groups.push_back({"bar.example.com", {0}, {}});
    l.tls_mode = TlsMode::Terminate;
    l.certs.push_back({"infra", "rsa", "cert", "key", ""});
    l.certs.push_back({"infra", "ecdsa", "cert2", "key2", std::string("\x30\x82\x00\x05", 4)});
    ir.listeners.push_back(l);
    ir.gateways.push_back({"default", "prod-web", {"192.0.2.1"}, {0}, {}});
    return ir;
}

TEST(IrCodec, RoundTripIsByteIdentical) {
    const std::string a = encode(sample());
    auto back = decode(a);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(encode(*back), a);
    EXPECT_EQ(back->rules[0].backends[1].status, 500);
    EXPECT_EQ(back->listeners[0].http_matches[0].headers[0].value, "canary");
}

TEST(IrCodec, OcspStapleStaysWithItsCertificate) {
    auto back = decode(encode(sample()));
    ASSERT_TRUE(back) << back.error().message;
    const auto& certs = back->listeners[0].certs;
    ASSERT_EQ(certs.size(), 2u);
    EXPECT_EQ(certs[0].ocsp_der, "");
    EXPECT_EQ(certs[1].name, "ecdsa");
    EXPECT_EQ(certs[1].ocsp_der, std::string("\x30\x82\x00\x05", 4)); // binary, with a NUL
    Ir other = sample();
    other.listeners[0].certs[1].ocsp_der[3] = 6; // a new staple is a new IR
    EXPECT_NE(hash_of(encode(other)), hash_of(encode(sample())));
}

TEST(IrCodec, RefusesTheVersionBeforeOcspStaples) {
    // v4 had no CertRef::ocsp_der: its bytes would decode shifted, so the header refuses it.
    std::string a = encode(sample());
    a[4] = 4;
    auto r = decode(a);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::Version);
    EXPECT_NE(r.error().message.find("version 4"), std::string::npos) << r.error().message;
    EXPECT_EQ(kIrVersion, 5u);
}

TEST(IrCodec, EqualInputEqualBytesAndHash) {
    EXPECT_EQ(encode(sample()), encode(sample()));
    Ir other = sample();
    other.listeners[0].port = 8443;
    EXPECT_NE(hash_of(encode(other)), hash_of(encode(sample())));
}

TEST(IrCodec, EncodeIntoReusesAnyBufferAndHeaderCarriesTheBodyHash) {
    const std::string a = encode(sample());
    Ir big = sample();
    big.listeners[0].hostname = std::string(5000, 'h');
    for (const std::string& start : {std::string(), std::string(3, 'x'), encode(big)}) {
        std::string buf = start; // empty, shorter and longer than the result
        encode_into(sample(), buf);
        EXPECT_EQ(buf, a);
    }
    EXPECT_EQ(body_hash(a), hash_of(std::string_view(a).substr(24)));
}

TEST(IrCodec, RejectsEveryTruncation) {
    const std::string a = encode(sample());
    for (size_t n = 0; n < a.size(); ++n) {
        EXPECT_FALSE(decode(std::string_view(a).substr(0, n))) << "prefix " << n;
    }
}

TEST(IrCodec, RejectsCorruptionAndWrongVersion) {
    std::string a = encode(sample());
    std::string flipped = a;
    flipped[a.size() / 2] ^= 0x5A;
    auto r = decode(flipped);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("checksum"), std::string::npos);
    std::string v = a;
    v[4] = 99;
    r = decode(v);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Errc::Version);
}

TEST(IrCodec, RejectsOutOfRangeIndexes) {
    Ir bad = sample();
    bad.listeners[0].http_matches[0].rule = 7;
    auto r = decode(encode(bad));
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("out of range"), std::string::npos);
}

} // namespace
} // namespace sluice::ir
