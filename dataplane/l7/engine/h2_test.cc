#include "h2.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sluice::l7 {
namespace {

/// Records every event of one session.
struct Rec : H2Session::Handler {
    std::vector<std::pair<int32_t, H2Head>> heads, trailers;
    std::string data;
    std::vector<int32_t> ends;
    std::vector<std::pair<int32_t, uint32_t>> closes;
    H2Session* self = nullptr;
    bool consume_all = true;
    void on_head(int32_t id, H2Head& h) override { heads.emplace_back(id, h); }
    void on_data(int32_t id, std::string_view d) override {
        data.append(d);
        if (consume_all) {
            self->consume(id, d.size());
        }
    }
    void on_trailers(int32_t id, H2Head& h) override { trailers.emplace_back(id, h); }
    void on_end(int32_t id) override { ends.push_back(id); }
    void on_close(int32_t id, uint32_t code) override { closes.emplace_back(id, code); }
};

struct Pair {
    Rec cr, sr;
    std::unique_ptr<H2Session> client, server;
    bool server_ok = true;
    explicit Pair(H2Limits lim = {}) {
        client = H2Session::create(H2Session::Role::Client, cr, lim);
        server = H2Session::create(H2Session::Role::Server, sr, lim);
        cr.self = client.get();
        sr.self = server.get();
    }
    /// Moves bytes both ways until both sides are quiet.
    void pump(uint64_t now = 1000) {
        for (int i = 0; i < 100; ++i) {
            std::string a, b;
            EXPECT_TRUE(client->produce(a, 1 << 20));
            if (!a.empty() && server_ok) {
                server_ok = server->feed(a, now);
            }
            EXPECT_TRUE(server->produce(b, 1 << 20));
            if (!b.empty()) {
                (void)client->feed(b, now);
            }
            if (a.empty() && b.empty()) {
                return;
            }
        }
    }
};

std::vector<H2Header> request(std::string_view path) {
    return {{":method", "POST"},
            {":scheme", "http"},
            {":authority", "x.example"},
            {":path", std::string(path)},
            {"content-type", "application/grpc"},
            {"te", "trailers"}};
}

TEST(H2Session, RequestBodyResponseBodyAndTrailers) {
    Pair p;
    const int32_t id = p.client->submit_request(request("/pkg.Svc/Method"), false);
    ASSERT_GT(id, 0);
    p.client->send_data(id, "hello ");
    p.client->send_data(id, "world");
    p.client->finish(id, nullptr);
    p.pump();
    ASSERT_EQ(p.sr.heads.size(), 1u);
    EXPECT_EQ(p.sr.heads[0].second.get(":path"), "/pkg.Svc/Method");
    EXPECT_EQ(p.sr.heads[0].second.get("content-type"), "application/grpc");
    EXPECT_FALSE(p.sr.heads[0].second.end_stream);
    EXPECT_EQ(p.sr.data, "hello world");
    ASSERT_EQ(p.sr.ends.size(), 1u);

    const int32_t sid = p.sr.heads[0].first;
    ASSERT_TRUE(p.server->submit_response(sid, 200, {{"Content-Type", "application/grpc"}}, false));
    p.server->send_data(sid, "answer");
    const std::vector<H2Header> tr = {{"grpc-status", "0"}, {"grpc-message", ""}};
    p.server->finish(sid, &tr);
    p.pump();
    ASSERT_EQ(p.cr.heads.size(), 1u);
    EXPECT_EQ(p.cr.heads[0].second.status, 200);
    EXPECT_EQ(p.cr.heads[0].second.get("content-type"), "application/grpc");
    EXPECT_EQ(p.cr.data, "answer");
    ASSERT_EQ(p.cr.trailers.size(), 1u);
    EXPECT_EQ(p.cr.trailers[0].second.get("grpc-status"), "0");
    ASSERT_EQ(p.cr.ends.size(), 1u);
    ASSERT_EQ(p.cr.closes.size(), 1u);
    EXPECT_EQ(p.cr.closes[0].second, 0u);
    EXPECT_EQ(p.server->open_streams(), 0u);
}

TEST(H2Session, TrailersOnlyAnswer) {
    Pair p;
    const int32_t id = p.client->submit_request(request("/pkg.Svc/Nope"), true);
    p.pump();
    ASSERT_EQ(p.sr.heads.size(), 1u);
    EXPECT_TRUE(p.sr.heads[0].second.end_stream);
    ASSERT_TRUE(p.server->submit_response(
        id, 200, {{"content-type", "application/grpc"}, {"grpc-status", "12"}}, true));
    p.pump();
    ASSERT_EQ(p.cr.heads.size(), 1u);
    EXPECT_TRUE(p.cr.heads[0].second.end_stream);
    EXPECT_EQ(p.cr.heads[0].second.get("grpc-status"), "12");
}

TEST(H2Session, EarlyAnswerResetsTheUploadWithNoError) {
    Pair p;
    const int32_t id = p.client->submit_request(request("/up"), false);
    p.client->send_data(id, "part");
    p.pump();
    ASSERT_EQ(p.sr.heads.size(), 1u);
    ASSERT_TRUE(p.server->submit_response(id, 404, {}, true));
    p.pump();
    ASSERT_EQ(p.cr.closes.size(), 1u);
    EXPECT_EQ(p.cr.closes[0].second, H2Session::kNoError);
    EXPECT_EQ(p.server->open_streams(), 0u);
}

TEST(H2Session, HeaderListOverTheLimitIsFlagged) {
    H2Limits lim;
    lim.max_header_list = 1024;
    Pair p(lim);
    auto hs = request("/big");
    hs.push_back({"x-big", std::string(2000, 'a')});
    p.client->submit_request(hs, true);
    p.pump();
    ASSERT_EQ(p.sr.heads.size(), 1u);
    EXPECT_TRUE(p.sr.heads[0].second.too_large);
    EXPECT_TRUE(p.sr.heads[0].second.headers.empty());
    EXPECT_TRUE(p.server_ok);
}

TEST(H2Session, RapidResetEndsTheSession) {
    H2Limits lim;
    lim.max_resets = 20;
    Pair p(lim);
    p.pump();
    for (int i = 0; i < 30 && p.server_ok; ++i) {
        // HEADERS and RST_STREAM in one write, as the attack sends them.
        const int32_t id = p.client->submit_request(request("/r"), true);
        std::string wire;
        ASSERT_TRUE(p.client->produce(wire, 1 << 20));
        p.client->reset(id, H2Session::kCancel);
        ASSERT_TRUE(p.client->produce(wire, 1 << 20));
        p.server_ok = p.server->feed(wire, 1000);
        p.pump();
    }
    EXPECT_FALSE(p.server_ok);
    EXPECT_TRUE(p.server->abused());
    EXPECT_EQ(p.server->failure(), "rapid reset");
    EXPECT_FALSE(p.client->can_submit()); // the GOAWAY arrived
}

TEST(H2Session, PingFloodEndsTheSession) {
    H2Limits lim;
    lim.max_cheap_frames = 50;
    Pair p(lim);
    p.pump();
    // 60 PINGs, hand-framed: length 8, type 6, flags 0, stream 0.
    std::string pings;
    for (int i = 0; i < 60; ++i) {
        pings += std::string("\x00\x00\x08\x06\x00\x00\x00\x00\x00", 9) + std::string(8, 'p');
    }
    EXPECT_FALSE(p.server->feed(pings, 2000));
    EXPECT_TRUE(p.server->abused());
    std::string out;
    EXPECT_TRUE(p.server->produce(out, 1 << 20));
    EXPECT_NE(out.find(std::string("\x07\x00\x00\x00\x00\x00", 6)), std::string::npos); // GOAWAY
}

TEST(H2Session, BadPrefaceFails) {
    Rec r;
    auto s = H2Session::create(H2Session::Role::Server, r, {});
    r.self = s.get();
    EXPECT_FALSE(s->feed("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1));
}

TEST(H2Base64, Url) {
    std::string out;
    ASSERT_TRUE(base64url_decode("AAMAAABkAARAAAAAAAIAAAAA", out));
    EXPECT_EQ(out.size(), 18u);
    EXPECT_EQ(out[1], '\x03');
    EXPECT_FALSE(base64url_decode("a b", out));
}

} // namespace
} // namespace sluice::l7
