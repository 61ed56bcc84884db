#include "parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace sluice::http {
namespace {

// ---------------------------------------------------------------------------------------
// Helpers

Result req(std::string_view s, Head& h, const Limits& l = {}) {
    return parse_request(s, l, h);
}

Result resp(std::string_view s, Head& h, std::string_view method = "GET",
            const Limits& l = {}) {
    return parse_response(s, l, method, h);
}

/// True when `v` lies inside `buf` (or is empty).
bool inside(std::string_view v, std::string_view buf) {
    return v.empty() || (v.data() >= buf.data() && v.data() + v.size() <= buf.data() + buf.size());
}

struct Case {
    const char* name;
    std::string raw;
    uint16_t status; ///< 0: must be Complete
};

// ---------------------------------------------------------------------------------------
// Requests

TEST(ParseRequest, SimpleGet) {
    const std::string buf = "GET /index.html?q=1 HTTP/1.1\r\n"
                            "Host: example.com\r\n"
                            "User-Agent:  curl/8 \t\r\n"
                            "Accept: */*\r\n"
                            "\r\n";
    Head h;
    const Result r = req(buf, h);
    ASSERT_EQ(r.status, Status::Complete) << r.why;
    EXPECT_EQ(h.method, "GET");
    EXPECT_EQ(h.target, "/index.html?q=1");
    EXPECT_EQ(h.version_minor, 1);
    EXPECT_EQ(h.head_len, buf.size());
    ASSERT_EQ(h.n_headers, 3u);
    EXPECT_EQ(h.headers[0].name, "Host");
    EXPECT_EQ(h.headers[0].value, "example.com");
    EXPECT_EQ(h.headers[1].value, "curl/8");
    EXPECT_EQ(h.host, "example.com");
    EXPECT_EQ(h.body, BodyKind::None);
    EXPECT_TRUE(h.keep_alive);
    EXPECT_FALSE(h.expect_continue);
    EXPECT_FALSE(h.upgrade);
    for (size_t k = 0; k < h.n_headers; ++k) {
        EXPECT_TRUE(inside(h.headers[k].name, buf));
        EXPECT_TRUE(inside(h.headers[k].value, buf));
    }
    EXPECT_TRUE(inside(h.method, buf));
    EXPECT_TRUE(inside(h.target, buf));
}

TEST(ParseRequest, EmptyValueAndNoHeadersHttp10) {
    Head h;
    ASSERT_EQ(req("GET / HTTP/1.0\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.version_minor, 0);
    EXPECT_EQ(h.n_headers, 0u);
    EXPECT_FALSE(h.keep_alive);
    EXPECT_EQ(h.host, "");

    ASSERT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank:   \r\n\r\n", h).status,
              Status::Complete);
    EXPECT_EQ(h.headers[1].value, "");
    EXPECT_EQ(h.headers[2].value, "");
}

TEST(ParseRequest, PipelinedHeadLenIsExact) {
    const std::string first = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    const std::string second = "GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    const std::string buf = first + "hello" + second;
    Head h;
    ASSERT_EQ(req(buf, h).status, Status::Complete);
    EXPECT_EQ(h.head_len, first.size());
    EXPECT_EQ(h.body, BodyKind::Length);
    EXPECT_EQ(h.content_length, 5u);
    const std::string_view rest = std::string_view(buf).substr(h.head_len + h.content_length);
    Head h2;
    ASSERT_EQ(req(rest, h2).status, Status::Complete);
    EXPECT_EQ(h2.head_len, second.size());
    EXPECT_EQ(h2.target, "/b");
    EXPECT_EQ(h2.body, BodyKind::None);
}

TEST(ParseRequest, ByteByByteIsIncompleteUntilTheEnd) {
    const std::string buf = "PUT /x HTTP/1.1\r\nHost: example.com:8080\r\n"
                            "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
    Head h;
    for (size_t n = 0; n < buf.size(); ++n) {
        // A copy of exactly n bytes, so ASan would notice a read past the prefix.
        const std::vector<char> prefix(buf.begin(), buf.begin() + static_cast<long>(n));
        const Result r = req(std::string_view(prefix.data(), prefix.size()), h);
        ASSERT_EQ(r.status, Status::Incomplete) << "at " << n << ": " << r.why;
    }
    ASSERT_EQ(req(buf, h).status, Status::Complete);
    EXPECT_EQ(h.head_len, buf.size());
    EXPECT_EQ(h.body, BodyKind::Chunked);
    EXPECT_TRUE(h.expect_continue);
    EXPECT_EQ(h.host, "example.com:8080");
}

TEST(ParseRequest, LeadingEmptyLines) {
    Head h;
    ASSERT_EQ(req("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.head_len, 29u);
    ASSERT_EQ(req("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.head_len, 31u);
    EXPECT_EQ(h.method, "GET");
    EXPECT_EQ(req("\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", h).error_status, 400);
    EXPECT_EQ(req("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", h).error_status, 400);
    EXPECT_EQ(req("\r", h).status, Status::Incomplete);
    EXPECT_EQ(req("\r\n\r", h).status, Status::Incomplete);
    EXPECT_EQ(req("\rX", h).error_status, 400);
}

TEST(ParseRequest, ConnectionExpectAndUpgrade) {
    Head h;
    ASSERT_EQ(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_TRUE(h.keep_alive);
    ASSERT_EQ(req("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_FALSE(h.keep_alive);
    ASSERT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo,  CLOSE\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_FALSE(h.keep_alive);
    ASSERT_EQ(req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
                  "Upgrade: websocket\r\n\r\n",
                  h)
                  .status,
              Status::Complete);
    EXPECT_TRUE(h.keep_alive);
    EXPECT_TRUE(h.upgrade);
    EXPECT_EQ(h.upgrade_proto, "websocket");
    // Upgrade header without the Connection token, and Connection token without Upgrade.
    ASSERT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_FALSE(h.upgrade);
    ASSERT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_FALSE(h.upgrade);
    // HTTP/1.0 ignores Upgrade and Expect.
    ASSERT_EQ(req("GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
                  "Expect: 100-continue\r\n\r\n",
                  h)
                  .status,
              Status::Complete);
    EXPECT_FALSE(h.upgrade);
    EXPECT_FALSE(h.expect_continue);
    ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
                  "Content-Length: 3\r\n\r\n",
                  h)
                  .status,
              Status::Complete);
    EXPECT_TRUE(h.expect_continue);
}

TEST(ParseRequest, FramingAccepted) {
    Head h;
    ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n"
                  "content-length: 5\r\n\r\n",
                  h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::Length);
    EXPECT_EQ(h.content_length, 5u);
    ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
                  h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.content_length, UINT64_MAX);
    ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n", h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::Chunked);
    ASSERT_EQ(req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n",
                  h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::Chunked);
}

TEST(ParseRequest, HostAndAuthorityAccepted) {
    Head h;
    for (const char* host : {"example.com", "example.com:8080", "10.0.0.1:80", "[::1]:443",
                             "[2001:db8::1]", "xn--bcher-kva.example", "a_b.example~x",
                             "ex%41mple.com", "example.com:"}) {
        const std::string buf = std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n";
        EXPECT_EQ(req(buf, h).status, Status::Complete) << host;
        EXPECT_EQ(h.host, host);
    }
    ASSERT_EQ(req("GET http://Example.COM:8080/p?q HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
                  h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.target, "http://Example.COM:8080/p?q");
    ASSERT_EQ(req("GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", h).status,
              Status::Complete);
    ASSERT_EQ(req("GET http://example.com/ HTTP/1.0\r\n\r\n", h).status, Status::Complete);
    ASSERT_EQ(req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", h)
                  .status,
              Status::Complete);
    ASSERT_EQ(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", h).status, Status::Complete);
    ASSERT_EQ(req("GET /p HTTP/1.1\r\nHost:\r\n\r\n", h).status, Status::Complete);
}

TEST(ParseRequest, RejectsSmugglingAndMalformedHeads) {
    const std::string get = "GET / HTTP/1.1\r\nHost: a\r\n";
    const std::string post = "POST / HTTP/1.1\r\nHost: a\r\n";
    const std::vector<Case> cases = {
        // Framing conflicts.
        {"CL+TE", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"TE+CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
        {"CL,CL differing", post + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"CL list differing", post + "Content-Length: 5, 6\r\n\r\n", 400},
        {"CL empty element", post + "Content-Length: 5,\r\n\r\n", 400},
        {"CL empty", post + "Content-Length:\r\n\r\n", 400},
        {"CL sign", post + "Content-Length: +5\r\n\r\n", 400},
        {"CL negative", post + "Content-Length: -1\r\n\r\n", 400},
        {"CL hex", post + "Content-Length: 0x5\r\n\r\n", 400},
        {"CL inner space", post + "Content-Length: 5 5\r\n\r\n", 400},
        {"CL overflow", post + "Content-Length: 18446744073709551616\r\n\r\n", 400},
        {"CL huge", post + "Content-Length: 99999999999999999999999999\r\n\r\n", 400},
        {"TE chunked not last", post + "Transfer-Encoding: chunked, gzip\r\n\r\n", 400},
        {"TE chunked not last across lines",
         post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
        {"TE without chunked", post + "Transfer-Encoding: gzip\r\n\r\n", 400},
        {"TE chunked twice", post + "Transfer-Encoding: chunked, chunked\r\n\r\n", 400},
        {"TE chunked twice across lines",
         post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"TE empty", post + "Transfer-Encoding: \r\n\r\n", 400},
        {"TE unknown", post + "Transfer-Encoding: foo, chunked\r\n\r\n", 501},
        {"TE identity", post + "Transfer-Encoding: identity, chunked\r\n\r\n", 501},
        {"TE chunked with params", post + "Transfer-Encoding: chunked;q=1\r\n\r\n", 501},
        {"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        // Line syntax.
        {"obs-fold", get + "X-A: b\r\n c\r\n\r\n", 400},
        {"obs-fold tab", get + "X-A: b\r\n\tc\r\n\r\n", 400},
        {"whitespace before first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
        {"bare LF header", get + "X-A: b\nX-B: c\r\n\r\n", 400},
        {"bare LF end of head", get + "\n", 400},
        {"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
        {"bare CR in value", get + "X-A: b\rc\r\n\r\n", 400},
        {"bare CR end of value", get + "X-A: b\r\r\n\r\n", 400},
        {"bare CR in name", get + "X\rA: b\r\n\r\n", 400},
        {"NUL in value", get + std::string("X-A: b\0c\r\n\r\n", 12) + "", 400},
        {"DEL in value", get + "X-A: b\x7f\r\n\r\n", 400},
        {"VT in value", get + "X-A: b\vc\r\n\r\n", 400},
        {"space before colon", get + "X-A : b\r\n\r\n", 400},
        {"tab before colon", get + "Content-Length\t: 5\r\n\r\n", 400},
        {"no colon", get + "X-A b\r\n\r\n", 400},
        {"empty name", get + ": b\r\n\r\n", 400},
        {"bad name char", get + "X(A): b\r\n\r\n", 400},
        // Host.
        {"duplicate Host", get + "host: a\r\n\r\n", 400},
        {"missing Host", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400},
        {"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
        {"Host with comma", "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400},
        {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
        {"Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
        {"Host bad port", "GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n", 400},
        {"Host port only", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400},
        {"Host unclosed IPv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400},
        {"Host bad IPv6", "GET / HTTP/1.1\r\nHost: [::g]\r\n\r\n", 400},
        {"Host bad pct", "GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", 400},
        {"absolute-form mismatch", "GET http://evil.com/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form port mismatch",
         "GET http://a:81/ HTTP/1.1\r\nHost: a:80\r\n\r\n", 400},
        {"absolute-form userinfo", "GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"absolute-form empty authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        // Request line.
        {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
        {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
        {"HTTP/0.9", "GET / HTTP/0.9\r\n\r\n", 505},
        {"HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400},
        {"lowercase version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
        {"no version", "GET /\r\nHost: a\r\n\r\n", 400},
        {"double SP", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"trailing SP", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
        {"tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"empty method", " / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"bad method", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"CTL in target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"CR in target", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
    };
    for (const Case& c : cases) {
        Head h;
        const Result r = req(c.raw, h);
        EXPECT_EQ(r.status, Status::Error) << c.name;
        EXPECT_EQ(r.error_status, c.status) << c.name << ": " << r.why;
        EXPECT_FALSE(r.why.empty()) << c.name;
    }
}

TEST(ParseRequest, ErrorsShowBeforeTheHeadIsComplete) {
    Head h;
    // Line syntax errors are reported once the offending line is complete.
    EXPECT_EQ(req("GET / HTTP/1.1\r\nX-A : b\r\n", h).error_status, 400);
    EXPECT_EQ(req("GET / HTTP/1.1\nHost", h).error_status, 400);
    EXPECT_EQ(req("GET / HTTP/2.0\r\n", h).error_status, 505);
    // The request line is only judged once it is complete.
    EXPECT_EQ(req("GET / HTTP/1.", h).status, Status::Incomplete);
}

TEST(ParseRequest, TooLarge) {
    const std::string base = "GET / HTTP/1.1\r\nHost: a\r\n";
    Head h;
    Limits few;
    few.max_headers = 3;
    EXPECT_EQ(req(base + "A: 1\r\nB: 2\r\n\r\n", h, few).status, Status::Complete);
    const Result r = req(base + "A: 1\r\nB: 2\r\nC: 3\r\n\r\n", h, few);
    EXPECT_EQ(r.status, Status::Error);
    EXPECT_EQ(r.error_status, 431);

    // max_headers above the fixed array is capped at kMaxHeaders.
    Limits many;
    many.max_headers = 1000;
    many.max_head_bytes = 1 << 20;
    std::string big = base;
    for (size_t k = 1; k < kMaxHeaders; ++k) {
        big += "X: y\r\n";
    }
    EXPECT_EQ(req(big + "\r\n", h, many).status, Status::Complete);
    EXPECT_EQ(h.n_headers, kMaxHeaders);
    EXPECT_EQ(req(big + "X: y\r\n\r\n", h, many).error_status, 431);

    Limits small;
    small.max_head_bytes = 64;
    const std::string fits = base + "X-Pad: " + std::string(64 - base.size() - 11, 'p') +
                             "\r\n\r\n";
    ASSERT_EQ(fits.size(), 64u);
    EXPECT_EQ(req(fits, h, small).status, Status::Complete);
    EXPECT_EQ(h.head_len, 64u);
    // Pipelined bytes after a head that fits do not count.
    EXPECT_EQ(req(fits + "GET / HTTP/1.1\r\n", h, small).status, Status::Complete);
    const std::string over = base + "X-Pad: " + std::string(64 - base.size() - 10, 'p') +
                             "\r\n\r\n";
    EXPECT_EQ(req(over, h, small).error_status, 431);
    // Incomplete: Incomplete up to the limit, 431 beyond it.
    const std::string partial = base + "X-Pad: " + std::string(200, 'p');
    EXPECT_EQ(req(std::string_view(partial).substr(0, 64), h, small).status, Status::Incomplete);
    EXPECT_EQ(req(std::string_view(partial).substr(0, 65), h, small).error_status, 431);
    EXPECT_EQ(req(std::string(100, 'G'), h, small).error_status, 431);
    EXPECT_EQ(req("\r\n" + std::string(100, 'G'), h, small).error_status, 431);
}

TEST(ParseRequest, EveryControlByteAtEveryPositionOfAValue) {
    // The value check reads eight bytes at a time: a CTL (or DEL) is found wherever it sits
    // in a word and in the tail; HTAB and obs-text (>= 0x80) pass; CR gets its own reason.
    for (size_t pos = 0; pos < 21; ++pos) {
        for (int b = 0; b < 256; ++b) {
            std::string v(21, 'v');
            v[pos] = static_cast<char>(b);
            if (b == '\n') {
                continue; // a line end, not a value byte
            }
            Head h;
            const std::string raw = "GET / HTTP/1.1\r\nHost: a\r\nX-V: a" + v + "z\r\n\r\n";
            const Result r = req(raw, h);
            const bool bad = (b < 0x20 && b != '\t') || b == 0x7f;
            if (bad) {
                ASSERT_EQ(r.status, Status::Error) << "byte " << b << " at " << pos;
                EXPECT_EQ(r.error_status, 400);
                EXPECT_EQ(r.why, b == '\r' ? "bare CR in header value" : "CTL in header value");
            } else {
                ASSERT_EQ(r.status, Status::Complete) << "byte " << b << " at " << pos;
            }
            if (b == ' ') {
                continue; // splits the request line
            }
            Head hr;
            const std::string target = "GET /" + v + " HTTP/1.1\r\nHost: a\r\n\r\n";
            EXPECT_EQ(req(target, hr).status, bad ? Status::Error : Status::Complete)
                << "target byte " << b << " at " << pos;
        }
    }
}

TEST(Helpers, IequalsAndFindHeader) {
    EXPECT_TRUE(iequals("Content-Length", "content-length"));
    EXPECT_TRUE(iequals("", ""));
    EXPECT_FALSE(iequals("Host", "Hosts"));
    EXPECT_FALSE(iequals("a", "b"));
    EXPECT_FALSE(iequals("\xc1", "\xe1")); // no locale folding
    Head h;
    ASSERT_EQ(req("GET / HTTP/1.1\r\nHost: a\r\nX-Two: 1\r\nx-two: 2\r\n\r\n", h).status,
              Status::Complete);
    const HeaderView* v = find_header(h, "X-TWO");
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->value, "1");
    EXPECT_EQ(find_header(h, "missing"), nullptr);
}

// ---------------------------------------------------------------------------------------
// Responses

TEST(ParseResponse, BodyRules) {
    Head h;
    std::string buf = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
    ASSERT_EQ(resp(buf, h).status, Status::Complete);
    EXPECT_EQ(h.status, 200);
    EXPECT_EQ(h.reason, "OK");
    EXPECT_EQ(h.body, BodyKind::Length);
    EXPECT_EQ(h.content_length, 12u);
    EXPECT_EQ(h.head_len, buf.size());
    EXPECT_TRUE(h.keep_alive);

    ASSERT_EQ(resp(buf, h, "HEAD").status, Status::Complete);
    EXPECT_EQ(h.body, BodyKind::None);
    EXPECT_TRUE(h.keep_alive);

    ASSERT_EQ(resp("HTTP/1.1 204 No Content\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.body, BodyKind::None);
    EXPECT_TRUE(h.keep_alive);
    ASSERT_EQ(resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::None);
    ASSERT_EQ(resp("HTTP/1.1 100 Continue\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.body, BodyKind::None);
    ASSERT_EQ(resp("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                   "Upgrade: websocket\r\n\r\n",
                   h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::None);
    EXPECT_TRUE(h.upgrade);
    EXPECT_EQ(h.upgrade_proto, "websocket");

    ASSERT_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::Chunked);
    EXPECT_TRUE(h.keep_alive);
    ASSERT_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                   h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::Chunked);
    EXPECT_FALSE(h.keep_alive);
    ASSERT_EQ(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", h).status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::UntilClose);
    EXPECT_FALSE(h.keep_alive);

    ASSERT_EQ(resp("HTTP/1.1 200 OK\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.body, BodyKind::UntilClose);
    EXPECT_FALSE(h.keep_alive);

    ASSERT_EQ(resp("HTTP/1.1 200 Connection established\r\n\r\n", h, "CONNECT").status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::UntilClose);
    ASSERT_EQ(resp("HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n", h, "CONNECT").status,
              Status::Complete);
    EXPECT_EQ(h.body, BodyKind::Length);

    ASSERT_EQ(resp("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", h).status, Status::Complete);
    EXPECT_FALSE(h.keep_alive);
    EXPECT_EQ(h.version_minor, 0);
    ASSERT_EQ(resp("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", h)
                  .status,
              Status::Complete);
    EXPECT_TRUE(h.keep_alive);
    ASSERT_EQ(resp("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", h)
                  .status,
              Status::Complete);
    EXPECT_FALSE(h.keep_alive);
}

TEST(ParseResponse, StatusLineVariants) {
    Head h;
    ASSERT_EQ(resp("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.status, 200);
    EXPECT_EQ(h.reason, "");
    ASSERT_EQ(resp("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", h).status, Status::Complete);
    EXPECT_EQ(h.status, 404);
    EXPECT_EQ(h.reason, "");
    ASSERT_EQ(resp("HTTP/1.1 500 Internal\tServer  Error\r\nContent-Length: 0\r\n\r\n", h)
                  .status,
              Status::Complete);
    EXPECT_EQ(h.reason, "Internal\tServer  Error");

    const std::vector<Case> bad = {
        {"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n", 505},
        {"short code", "HTTP/1.1 20 OK\r\n\r\n", 400},
        {"long code", "HTTP/1.1 2000 OK\r\n\r\n", 400},
        {"code 099", "HTTP/1.1 099 OK\r\n\r\n", 400},
        {"code 600", "HTTP/1.1 600 OK\r\n\r\n", 400},
        {"no SP", "HTTP/1.1200 OK\r\n\r\n", 400},
        {"garbage", "HTTP\r\n\r\n", 400},
        {"CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", 400},
        {"bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", 400},
        {"obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 400},
        {"CL differing", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
         400},
        {"TE chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
         400},
    };
    for (const Case& c : bad) {
        const Result r = resp(c.raw, h);
        EXPECT_EQ(r.status, Status::Error) << c.name;
        EXPECT_EQ(r.error_status, c.status) << c.name << ": " << r.why;
    }
    EXPECT_EQ(resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", h).status, Status::Incomplete);
    // Responses do not get the leading-CRLF tolerance of requests.
    EXPECT_EQ(resp("\r\nHTTP/1.1 200 OK\r\n\r\n", h).status, Status::Error);
}

// ---------------------------------------------------------------------------------------
// ChunkedDecoder

/// Feeds `segments` in order; returns the payload seen, the total consumed, and how it ended.
struct DecodeOutcome {
    std::string payload;
    size_t consumed = 0;
    bool done = false;
    bool error = false;
};

DecodeOutcome decode(std::string_view body, const std::vector<size_t>& cuts) {
    ChunkedDecoder d;
    DecodeOutcome o;
    size_t from = 0;
    std::vector<size_t> ends = cuts;
    ends.push_back(body.size());
    for (const size_t to : ends) {
        if (to < from) {
            continue;
        }
        // Each segment is its own exact-size copy so ASan catches reads past it.
        const std::vector<char> seg(body.begin() + static_cast<long>(from),
                                    body.begin() + static_cast<long>(to));
        const ChunkedDecoder::Step s = d.feed(std::string_view(seg.data(), seg.size()),
                                              [&](std::string_view data) {
                                                  EXPECT_FALSE(data.empty());
                                                  EXPECT_TRUE(inside(
                                                      data, std::string_view(seg.data(),
                                                                             seg.size())));
                                                  o.payload.append(data);
                                              });
        EXPECT_LE(s.consumed, seg.size());
        o.consumed += s.consumed;
        if (s.error) {
            o.error = true;
            return o;
        }
        if (s.done) {
            o.done = true;
            return o;
        }
        EXPECT_EQ(s.consumed, seg.size()); // not done, no error: everything is taken
        from = to;
    }
    return o;
}

const std::string kEncoded = "5;name=value;x=\"q\"\r\nhello\r\n"
                             "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                             "00c\r\n, more data!\r\n"
                             "0;last\r\n"
                             "Expires: never\r\n"
                             "X-Trailer:\tv \r\n"
                             "\r\n";
const std::string kPayload = "helloabcdefghijklmnopqrstuvwxyz, more data!";
const std::string kPipelined = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";

TEST(ChunkedDecoder, WholeBody) {
    const DecodeOutcome o = decode(kEncoded + kPipelined, {});
    EXPECT_TRUE(o.done);
    EXPECT_FALSE(o.error);
    EXPECT_EQ(o.payload, kPayload);
    EXPECT_EQ(o.consumed, kEncoded.size());
}

TEST(ChunkedDecoder, EverySplitPosition) {
    const std::string all = kEncoded + kPipelined;
    for (size_t cut = 0; cut <= all.size(); ++cut) {
        const DecodeOutcome o = decode(all, {cut});
        ASSERT_TRUE(o.done) << cut;
        ASSERT_FALSE(o.error) << cut;
        ASSERT_EQ(o.payload, kPayload) << cut;
        ASSERT_EQ(o.consumed, kEncoded.size()) << cut;
    }
}

TEST(ChunkedDecoder, ByteByByte) {
    std::vector<size_t> cuts;
    for (size_t k = 1; k < kEncoded.size() + kPipelined.size(); ++k) {
        cuts.push_back(k);
    }
    const DecodeOutcome o = decode(kEncoded + kPipelined, cuts);
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.payload, kPayload);
    EXPECT_EQ(o.consumed, kEncoded.size());
}

TEST(ChunkedDecoder, RandomSegmentations) {
    std::mt19937 rng(12345);
    for (int round = 0; round < 300; ++round) {
        // A random body: random chunk sizes (hex, sometimes upper case or zero-padded),
        // optional extensions and trailers.
        std::string enc;
        std::string payload;
        const int chunks = static_cast<int>(rng() % 6);
        for (int c = 0; c < chunks; ++c) {
            const size_t len = 1 + rng() % 300;
            char size[32];
            std::snprintf(size, sizeof size, (rng() & 1) ? "%zx" : "%04zX", len);
            enc += size;
            if (rng() % 3 == 0) {
                enc += ";ext=" + std::to_string(rng() % 1000);
            }
            enc += "\r\n";
            std::string data;
            for (size_t k = 0; k < len; ++k) {
                data.push_back(static_cast<char>(rng() & 0xff));
            }
            enc += data + "\r\n";
            payload += data;
        }
        enc += "0\r\n";
        for (int t = static_cast<int>(rng() % 3); t > 0; --t) {
            enc += "T" + std::to_string(t) + ": v\r\n";
        }
        enc += "\r\n";
        const std::string all = enc + kPipelined;
        std::vector<size_t> cuts;
        const int n_cuts = static_cast<int>(rng() % 12);
        for (int k = 0; k < n_cuts; ++k) {
            cuts.push_back(rng() % (all.size() + 1));
        }
        std::sort(cuts.begin(), cuts.end());
        const DecodeOutcome o = decode(all, cuts);
        ASSERT_TRUE(o.done) << round;
        ASSERT_FALSE(o.error) << round;
        ASSERT_EQ(o.payload, payload) << round;
        ASSERT_EQ(o.consumed, enc.size()) << round;
    }
}

TEST(ChunkedDecoder, StopsAtTheEndAndStaysDone) {
    ChunkedDecoder d;
    const std::string all = "0\r\n\r\nGET";
    ChunkedDecoder::Step s = d.feed(all);
    EXPECT_TRUE(s.done);
    EXPECT_EQ(s.consumed, 5u);
    s = d.feed("more");
    EXPECT_TRUE(s.done);
    EXPECT_EQ(s.consumed, 0u);
    d.reset();
    s = d.feed("3\r\nab");
    EXPECT_FALSE(s.done);
    EXPECT_EQ(s.consumed, 5u);
    // A null function pointer as callback is allowed.
    void (*none)(std::string_view) = nullptr;
    s = d.feed("c\r\n0\r\n\r\n", none);
    EXPECT_TRUE(s.done);
    EXPECT_EQ(s.consumed, 8u);
}

TEST(ChunkedDecoder, LargestSizeIsAccepted) {
    ChunkedDecoder d;
    const ChunkedDecoder::Step s = d.feed("ffffffffffffffff\r\nabc");
    EXPECT_FALSE(s.error);
    EXPECT_EQ(d.remaining, UINT64_MAX - 3);
}

TEST(ChunkedDecoder, RejectsMalformedFraming) {
    const std::string long_ext = "5;" + std::string(ChunkedDecoder::kMaxLine, 'x') + "\r\n";
    const std::string ok_ext = "5;" + std::string(ChunkedDecoder::kMaxLine - 2, 'x') +
                               "\r\nhello\r\n0\r\n\r\n";
    const std::string long_trailer = "0\r\nX: " + std::string(ChunkedDecoder::kMaxLine, 'v') +
                                     "\r\n\r\n";
    const std::vector<std::pair<const char*, std::string>> bad = {
        {"empty size", "\r\n"},
        {"non-hex size", "g\r\n"},
        {"sign", "+5\r\nhello\r\n0\r\n\r\n"},
        {"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"},
        {"space after size", "5 \r\nhello\r\n0\r\n\r\n"},
        {"space before size", " 5\r\nhello\r\n0\r\n\r\n"},
        {"overflow 17 digits", "10000000000000000\r\n"},
        {"17 digits zero padded", "00000000000000005\r\nhello\r\n0\r\n\r\n"},
        {"bare LF after size", "5\nhello\r\n0\r\n\r\n"},
        {"bare CR after size", "5\rhello\r\n0\r\n\r\n"},
        {"bare LF after ext", "5;a=b\nhello\r\n0\r\n\r\n"},
        {"CTL in ext", "5;a=\x01\r\nhello\r\n0\r\n\r\n"},
        {"data too long", "5\r\nhelloX\r\n0\r\n\r\n"},
        {"bare LF after data", "5\r\nhello\n0\r\n\r\n"},
        {"CR without LF after data", "5\r\nhello\rX0\r\n\r\n"},
        {"over-long extension", long_ext},
        {"bare LF ends body", "0\r\n\n"},
        {"bare LF in trailer", "0\r\nX: a\n\r\n"},
        {"bare CR in trailer", "0\r\nX: a\rb\r\n\r\n"},
        {"obs-fold in trailer", "0\r\nX: a\r\n b\r\n\r\n"},
        {"trailer without colon", "0\r\nXa\r\n\r\n"},
        {"trailer space before colon", "0\r\nX : a\r\n\r\n"},
        {"trailer empty name", "0\r\n: a\r\n\r\n"},
        {"over-long trailer", long_trailer},
    };
    for (const auto& [name, body] : bad) {
        // Whole and byte by byte: the verdict must not depend on segmentation.
        const DecodeOutcome whole = decode(body, {});
        EXPECT_TRUE(whole.error) << name;
        EXPECT_FALSE(whole.done) << name;
        std::vector<size_t> cuts;
        for (size_t k = 1; k < body.size(); ++k) {
            cuts.push_back(k);
        }
        const DecodeOutcome bytes = decode(body, cuts);
        EXPECT_TRUE(bytes.error) << name;
        EXPECT_EQ(bytes.consumed, whole.consumed) << name;
    }
    const DecodeOutcome o = decode(ok_ext, {});
    EXPECT_TRUE(o.done);
    EXPECT_EQ(o.payload, "hello");
}

TEST(ChunkedDecoder, FollowsAParsedRequest) {
    const std::string head = "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string buf = head + "4\r\nwiki\r\n0\r\n\r\n" + kPipelined;
    Head h;
    ASSERT_EQ(req(buf, h).status, Status::Complete);
    ASSERT_EQ(h.body, BodyKind::Chunked);
    ChunkedDecoder d;
    std::string payload;
    const auto s = d.feed(std::string_view(buf).substr(h.head_len),
                          [&](std::string_view v) { payload.append(v); });
    ASSERT_TRUE(s.done);
    EXPECT_EQ(payload, "wiki");
    Head next;
    ASSERT_EQ(req(std::string_view(buf).substr(h.head_len + s.consumed), next).status,
              Status::Complete);
    EXPECT_EQ(next.target, "/next");
}

} // namespace
} // namespace sluice::http
