#include "live_conn.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace sluice::conformance {

namespace {

int remaining_ms(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

/// Waits for `events` on fd. False at the deadline.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, remaining_ms(deadline));
        if (r > 0) {
            return true;
        }
        if (r == 0 || errno != EINTR) {
            return false;
        }
    }
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
}

bool is_ip_literal(const std::string& host) {
    unsigned char buf[16];
    return inet_pton(AF_INET, host.c_str(), buf) == 1 ||
           inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

/// Classifies a failed TLS call (after SSL_get_error) and describes it.
ConnFail classify(SSL* ssl, int ssl_err, int saved_errno, std::string& err) {
    if (ssl_err == SSL_ERROR_ZERO_RETURN) {
        err = "the peer closed the TLS connection";
        return ConnFail::Eof;
    }
    if (ssl_err == SSL_ERROR_SYSCALL) {
        const unsigned long e = ERR_peek_last_error();
        if (e == 0 && saved_errno == 0) {
            err = "EOF";
            return ConnFail::Eof;
        }
        if (saved_errno == ECONNRESET) {
            err = "connection reset by peer";
            return ConnFail::Reset;
        }
        err = std::string("TLS I/O error: ") + std::strerror(saved_errno);
        return ConnFail::Other;
    }
    if (ssl_err == SSL_ERROR_SSL) {
        const unsigned long e = ERR_peek_last_error();
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        const int reason = ERR_GET_REASON(e);
        if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            err = "unexpected EOF";
            return ConnFail::Eof;
        }
        if (reason == SSL_R_CERTIFICATE_VERIFY_FAILED) {
            err = std::string("server certificate: ") +
                  X509_verify_cert_error_string(SSL_get_verify_result(ssl));
            return ConnFail::Verify;
        }
        if (reason >= SSL_AD_REASON_OFFSET) {
            err = std::string("TLS alert from the peer: ") + buf;
            return ConnFail::Alert;
        }
        err = std::string("TLS error: ") + buf;
        return ConnFail::Other;
    }
    err = "TLS error " + std::to_string(ssl_err);
    return ConnFail::Other;
}

std::vector<std::string> san_dns_names(X509* cert) {
    std::vector<std::string> out;
    auto* names =
        static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    if (!names) {
        return out;
    }
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
        if (n->type == GEN_DNS) {
            const ASN1_STRING* s = n->d.dNSName;
            out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                             static_cast<size_t>(ASN1_STRING_length(s)));
        }
    }
    GENERAL_NAMES_free(names);
    return out;
}

bool add_pems_to_store(X509_STORE* store, const std::string& pem) {
    BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    if (!b) {
        return false;
    }
    int added = 0;
    for (;;) {
        X509* c = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
        if (!c) {
            break;
        }
        if (X509_STORE_add_cert(store, c) == 1) {
            ++added;
        }
        X509_free(c);
    }
    BIO_free(b);
    ERR_clear_error();
    return added > 0;
}

bool use_client_cert(SSL* ssl, const std::string& cert_pem, const std::string& key_pem) {
    BIO* cb = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
    BIO* kb = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
    X509* cert = cb ? PEM_read_bio_X509(cb, nullptr, nullptr, nullptr) : nullptr;
    EVP_PKEY* key = kb ? PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr) : nullptr;
    const bool ok = cert && key && SSL_use_certificate(ssl, cert) == 1 &&
                    SSL_use_PrivateKey(ssl, key) == 1 && SSL_check_private_key(ssl) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    BIO_free(cb);
    BIO_free(kb);
    return ok;
}

} // namespace

const char* conn_fail_name(ConnFail f) noexcept {
    switch (f) {
    case ConnFail::None:
        return "none";
    case ConnFail::Connect:
        return "connect";
    case ConnFail::Eof:
        return "EOF";
    case ConnFail::Reset:
        return "reset";
    case ConnFail::Alert:
        return "alert";
    case ConnFail::Verify:
        return "verify";
    case ConnFail::Timeout:
        return "timeout";
    case ConnFail::Other:
        return "other";
    }
    return "?";
}

bool go_host_matches(std::string_view pattern, std::string_view host) {
    std::string p = lower(pattern);
    std::string h = lower(host);
    if (!h.empty() && h.back() == '.') {
        h.pop_back();
    }
    if (p.empty() || h.empty()) {
        return false;
    }
    auto labels = [](const std::string& s) {
        std::vector<std::string> out;
        size_t start = 0;
        for (;;) {
            const size_t dot = s.find('.', start);
            out.push_back(s.substr(start, dot - start));
            if (dot == std::string::npos) {
                return out;
            }
            start = dot + 1;
        }
    };
    const auto pl = labels(p);
    const auto hl = labels(h);
    if (pl.size() != hl.size()) {
        return false;
    }
    for (size_t i = 0; i < pl.size(); ++i) {
        if (i == 0 && pl[i] == "*") {
            continue;
        }
        if (pl[i] != hl[i]) {
            return false;
        }
    }
    return true;
}

// ------------------------------------------------------------------ Conn

std::unique_ptr<Conn> Conn::open(const std::string& address, uint16_t port, const TlsOptions* tls,
                                 Clock::time_point deadline, std::string& err, ConnFail* why) {
    ConnFail dummy = ConnFail::None;
    ConnFail& fail = why ? *why : dummy;
    fail = ConnFail::None;
    std::unique_ptr<Conn> c(new Conn());
    c->fd_ = tcp_connect(address, port, deadline, err);
    if (c->fd_ < 0) {
        fail = ConnFail::Connect;
        return nullptr;
    }
    if (!tls) {
        return c;
    }
    ERR_clear_error();
    c->ctx_ = SSL_CTX_new(TLS_client_method());
    if (!c->ctx_) {
        err = "SSL_CTX_new failed";
        fail = ConnFail::Other;
        return nullptr;
    }
    SSL_CTX_set_min_proto_version(c->ctx_, TLS1_2_VERSION);
    const bool verify = !tls->trusted_ca_pems.empty();
    if (verify) {
        X509_STORE* store = SSL_CTX_get_cert_store(c->ctx_);
        bool any = false;
        for (const std::string& pem : tls->trusted_ca_pems) {
            any = add_pems_to_store(store, pem) || any;
        }
        if (!any) {
            err = "no usable trusted CA certificate";
            fail = ConnFail::Other;
            return nullptr;
        }
        SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_NONE, nullptr);
    }
    c->ssl_ = SSL_new(c->ctx_);
    if (!c->ssl_ || SSL_set_fd(c->ssl_, c->fd_) != 1) {
        err = "SSL_new failed";
        fail = ConnFail::Other;
        return nullptr;
    }
    if (!tls->sni.empty() && !is_ip_literal(tls->sni)) {
        SSL_set_tlsext_host_name(c->ssl_, tls->sni.c_str());
    }
    if (!tls->alpn.empty()) {
        std::string wire;
        for (const std::string& p : tls->alpn) {
            wire += static_cast<char>(p.size());
            wire += p;
        }
        SSL_set_alpn_protos(c->ssl_, reinterpret_cast<const unsigned char*>(wire.data()),
                            static_cast<unsigned>(wire.size()));
    }
    if (!tls->client_cert_pem.empty() && !tls->client_key_pem.empty() &&
        !use_client_cert(c->ssl_, tls->client_cert_pem, tls->client_key_pem)) {
        err = "cannot load the client certificate";
        fail = ConnFail::Other;
        return nullptr;
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        const int r = SSL_connect(c->ssl_);
        if (r == 1) {
            break;
        }
        const int saved = errno;
        const int e = SSL_get_error(c->ssl_, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (!wait_fd(c->fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                err = "TLS handshake timed out";
                fail = ConnFail::Timeout;
                return nullptr;
            }
            continue;
        }
        fail = classify(c->ssl_, e, saved, err);
        err = "TLS handshake: " + err;
        return nullptr;
    }
    if (verify) {
        const std::string host = tls->verify_host.empty() ? tls->sni : tls->verify_host;
        X509* peer = SSL_get1_peer_certificate(c->ssl_);
        if (!peer) {
            err = "the server sent no certificate";
            fail = ConnFail::Verify;
            return nullptr;
        }
        const auto names = san_dns_names(peer);
        X509_free(peer);
        const bool ok = std::any_of(names.begin(), names.end(),
                                    [&](const std::string& n) { return go_host_matches(n, host); });
        if (!ok) {
            std::string list;
            for (const std::string& n : names) {
                list += (list.empty() ? "" : ", ") + n;
            }
            err = "server certificate is valid for " + (list.empty() ? "no DNS name" : list) +
                  ", not " + host;
            fail = ConnFail::Verify;
            return nullptr;
        }
    }
    return c;
}

Conn::~Conn() {
    if (ssl_) {
        SSL_free(ssl_);
    }
    if (ctx_) {
        SSL_CTX_free(ctx_);
    }
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

std::string Conn::alpn() const {
    if (!ssl_) {
        return "";
    }
    const unsigned char* p = nullptr;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl_, &p, &n);
    return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
}

bool Conn::send_all(std::string_view data, Clock::time_point deadline, std::string& err,
                    ConnFail* why) {
    ConnFail dummy = ConnFail::None;
    ConnFail& fail = why ? *why : dummy;
    size_t off = 0;
    while (off < data.size()) {
        if (ssl_) {
            size_t n = 0;
            ERR_clear_error();
            errno = 0;
            const int r = SSL_write_ex(ssl_, data.data() + off, data.size() - off, &n);
            if (r == 1) {
                off += n;
                continue;
            }
            const int saved = errno;
            const int e = SSL_get_error(ssl_, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (!wait_fd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                    err = "send timed out";
                    fail = ConnFail::Timeout;
                    return false;
                }
                continue;
            }
            fail = classify(ssl_, e, saved, err);
            return false;
        }
        const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (!wait_fd(fd_, POLLOUT, deadline)) {
                err = "send timed out";
                fail = ConnFail::Timeout;
                return false;
            }
            continue;
        }
        fail = errno == ECONNRESET ? ConnFail::Reset : ConnFail::Other;
        err = std::string("send: ") + std::strerror(errno);
        return false;
    }
    return true;
}

ssize_t Conn::recv_some(std::string& into, Clock::time_point deadline, std::string& err,
                        ConnFail* why) {
    ConnFail dummy = ConnFail::None;
    ConnFail& fail = why ? *why : dummy;
    char buf[16384];
    for (;;) {
        if (ssl_) {
            size_t n = 0;
            ERR_clear_error();
            errno = 0;
            const int r = SSL_read_ex(ssl_, buf, sizeof buf, &n);
            if (r == 1) {
                into.append(buf, n);
                return static_cast<ssize_t>(n);
            }
            const int saved = errno;
            const int e = SSL_get_error(ssl_, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                if (!wait_fd(fd_, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline)) {
                    err = "timed out waiting for the answer";
                    fail = ConnFail::Timeout;
                    return -1;
                }
                continue;
            }
            fail = classify(ssl_, e, saved, err);
            if (fail == ConnFail::Eof) {
                return 0; // a close without close_notify ends the stream too
            }
            return -1;
        }
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n > 0) {
            into.append(buf, static_cast<size_t>(n));
            return n;
        }
        if (n == 0) {
            fail = ConnFail::Eof;
            return 0;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            if (!wait_fd(fd_, POLLIN, deadline)) {
                err = "timed out waiting for the answer";
                fail = ConnFail::Timeout;
                return -1;
            }
            continue;
        }
        fail = errno == ECONNRESET ? ConnFail::Reset : ConnFail::Other;
        err = errno == ECONNRESET ? "connection reset by peer" : std::strerror(errno);
        return -1;
    }
}

// ------------------------------------------------------------------ HTTP/2

namespace {

struct H2State {
    int32_t sid = -1;
    bool closed = false;
    bool final_seen = false;    ///< a non-1xx :status arrived
    bool frame_trailer = false; ///< the HEADERS frame being read is a trailer block
    bool frame_interim = false; ///< ... is a 1xx answer
    uint32_t rst_code = 0;
    const std::string* body = nullptr;
    size_t body_off = 0;
    H2Response* resp = nullptr;
    std::string goaway;
};

int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* st = static_cast<H2State*>(user);
    if (frame->hd.type == NGHTTP2_HEADERS && frame->hd.stream_id == st->sid) {
        st->frame_trailer = st->final_seen;
        st->frame_interim = false;
    }
    return 0;
}

int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
              const uint8_t* value, size_t valuelen, uint8_t, void* user) {
    auto* st = static_cast<H2State*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != st->sid) {
        return 0;
    }
    const std::string n(reinterpret_cast<const char*>(name), namelen);
    const std::string v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":status") {
        const int code = std::atoi(v.c_str());
        st->frame_trailer = false;
        if (code < 200) {
            st->frame_interim = true;
            return 0;
        }
        st->final_seen = true;
        st->resp->status = code;
        st->resp->headers.clear();
        return 0;
    }
    if (st->frame_interim) {
        return 0;
    }
    (st->frame_trailer ? st->resp->trailers : st->resp->headers).emplace_back(n, v);
    return 0;
}

int on_data_chunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data, size_t len,
                  void* user) {
    auto* st = static_cast<H2State*>(user);
    if (stream_id == st->sid) {
        st->resp->body.append(reinterpret_cast<const char*>(data), len);
    }
    return 0;
}

int on_stream_close(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
    auto* st = static_cast<H2State*>(user);
    if (stream_id == st->sid) {
        st->closed = true;
        st->rst_code = error_code;
    }
    return 0;
}

int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto* st = static_cast<H2State*>(user);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        st->goaway = "GOAWAY " + std::string(nghttp2_http2_strerror(frame->goaway.error_code));
    }
    return 0;
}

ssize_t read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                  nghttp2_data_source*, void* user) {
    auto* st = static_cast<H2State*>(user);
    const size_t n = std::min(length, st->body->size() - st->body_off);
    std::memcpy(buf, st->body->data() + st->body_off, n);
    st->body_off += n;
    if (st->body_off == st->body->size()) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(n);
}

struct SessionFree {
    void operator()(nghttp2_session* s) const noexcept { nghttp2_session_del(s); }
};

} // namespace

H2Response h2_exchange(const std::string& address, uint16_t port, const TlsOptions* tls,
                       const H2Request& req, std::chrono::milliseconds timeout) {
    H2Response resp;
    const auto deadline = Clock::now() + timeout;
    std::unique_ptr<Conn> c;
    if (tls) {
        TlsOptions t = *tls;
        t.alpn = {"h2"};
        c = Conn::open(address, port, &t, deadline, resp.error, &resp.fail);
        if (c && c->alpn() != "h2") {
            resp.error = "the server did not negotiate h2 (ALPN \"" + c->alpn() + "\")";
            resp.fail = ConnFail::Other;
            return resp;
        }
    } else {
        c = Conn::open(address, port, nullptr, deadline, resp.error, &resp.fail);
    }
    if (!c) {
        return resp;
    }
    H2State st;
    st.resp = &resp;
    st.body = &req.body;
    nghttp2_session_callbacks* cbs = nullptr;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        resp.error = "nghttp2_session_callbacks_new failed";
        return resp;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session* raw = nullptr;
    const int rc = nghttp2_session_client_new(&raw, cbs, &st);
    nghttp2_session_callbacks_del(cbs);
    if (rc != 0) {
        resp.error = "nghttp2_session_client_new failed";
        return resp;
    }
    std::unique_ptr<nghttp2_session, SessionFree> session(raw);
    const nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                         {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(session.get(), NGHTTP2_FLAG_NONE, iv, 2);
    std::vector<std::pair<std::string, std::string>> fields = {{":method", req.method},
                                                               {":scheme", req.scheme},
                                                               {":authority", req.authority},
                                                               {":path", req.path}};
    for (const auto& [k, v] : req.headers) {
        fields.emplace_back(lower(k), v);
    }
    std::vector<nghttp2_nv> nva;
    for (auto& [k, v] : fields) {
        nva.push_back({reinterpret_cast<uint8_t*>(k.data()), reinterpret_cast<uint8_t*>(v.data()),
                       k.size(), v.size(), NGHTTP2_NV_FLAG_NONE});
    }
    nghttp2_data_provider prd{};
    prd.read_callback = read_body;
    st.sid = nghttp2_submit_request(session.get(), nullptr, nva.data(), nva.size(),
                                    req.body.empty() ? nullptr : &prd, &st);
    if (st.sid < 0) {
        resp.error = std::string("nghttp2_submit_request: ") + nghttp2_strerror(st.sid);
        return resp;
    }
    std::string in;
    for (;;) {
        std::string out;
        for (;;) {
            const uint8_t* data = nullptr;
            const ssize_t n = nghttp2_session_mem_send(session.get(), &data);
            if (n < 0) {
                resp.error = std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(n));
                return resp;
            }
            if (n == 0) {
                break;
            }
            out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
        }
        if (!out.empty() && !c->send_all(out, deadline, resp.error, &resp.fail)) {
            if (!st.closed) {
                return resp;
            }
        }
        if (st.closed) {
            break;
        }
        if (!nghttp2_session_want_read(session.get())) {
            resp.error = st.goaway.empty() ? "HTTP/2 session ended before the response" : st.goaway;
            return resp;
        }
        in.clear();
        const ssize_t got = c->recv_some(in, deadline, resp.error, &resp.fail);
        if (got <= 0) {
            if (got == 0) {
                resp.error = st.goaway.empty() ? "connection closed before the response ended"
                                               : "connection closed after " + st.goaway;
            }
            return resp;
        }
        const ssize_t used = nghttp2_session_mem_recv(
            session.get(), reinterpret_cast<const uint8_t*>(in.data()), in.size());
        if (used < 0) {
            resp.error = std::string("HTTP/2: ") + nghttp2_strerror(static_cast<int>(used));
            resp.fail = ConnFail::Other;
            return resp;
        }
    }
    resp.fail = ConnFail::None;
    resp.error.clear();
    if (!st.final_seen) {
        resp.error = "stream closed (" + std::string(nghttp2_http2_strerror(st.rst_code)) +
                     ") without a response";
        return resp;
    }
    if (st.rst_code != NGHTTP2_NO_ERROR) {
        resp.error = "stream reset (" + std::string(nghttp2_http2_strerror(st.rst_code)) + ")";
        return resp;
    }
    resp.ok = true;
    return resp;
}

// ------------------------------------------------------------------ gRPC

std::string_view pb_field(std::string_view msg, uint32_t field, bool& found) {
    found = false;
    size_t pos = 0;
    auto varint = [&](uint64_t& v) {
        v = 0;
        for (int shift = 0; shift < 64 && pos < msg.size(); shift += 7) {
            const auto b = static_cast<unsigned char>(msg[pos++]);
            v |= static_cast<uint64_t>(b & 0x7f) << shift;
            if (!(b & 0x80)) {
                return true;
            }
        }
        return false;
    };
    while (pos < msg.size()) {
        uint64_t key = 0;
        if (!varint(key)) {
            return {};
        }
        const auto wire = static_cast<unsigned>(key & 7);
        const uint64_t num = key >> 3;
        uint64_t len = 0;
        switch (wire) {
        case 0:
            if (!varint(len)) {
                return {};
            }
            break;
        case 1:
            pos += 8;
            break;
        case 5:
            pos += 4;
            break;
        case 2:
            if (!varint(len) || len > msg.size() - pos) {
                return {};
            }
            if (num == field) {
                found = true;
                return msg.substr(pos, static_cast<size_t>(len));
            }
            pos += static_cast<size_t>(len);
            break;
        default:
            return {};
        }
    }
    return {};
}

int grpc_code(std::string_view name) {
    static const char* const kNames[] = {
        "OK",       "Canceled",       "Unknown",          "InvalidArgument",   "DeadlineExceeded",
        "NotFound", "AlreadyExists",  "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
        "Aborted",  "OutOfRange",     "Unimplemented",    "Internal",          "Unavailable",
        "DataLoss", "Unauthenticated"};
    for (int i = 0; i < static_cast<int>(std::size(kNames)); ++i) {
        if (lower(name) == lower(kNames[i])) {
            return i;
        }
    }
    return -1;
}

GrpcResult grpc_unary(const std::string& address, uint16_t port, const std::string& authority,
                      const std::string& path, const HeaderList& metadata,
                      std::chrono::milliseconds timeout) {
    GrpcResult out;
    H2Request r;
    r.method = "POST";
    r.scheme = "http";
    r.authority = authority;
    r.path = path;
    r.headers = {{"content-type", "application/grpc"},
                 {"te", "trailers"},
                 {"user-agent", "sluice-conformance grpc"}};
    for (const auto& [k, v] : metadata) {
        r.headers.emplace_back(lower(k), v);
    }
    r.body.assign(5, '\0'); // an uncompressed, empty EchoRequest
    const H2Response h = h2_exchange(address, port, nullptr, r, timeout);
    if (!h.ok) {
        out.error = h.error;
        return out;
    }
    out.http_status = h.status;
    auto find = [](const HeaderList& hs, const std::string& name, bool& found) {
        found = false;
        for (const auto& [k, v] : hs) {
            if (k == name) {
                found = true;
                return v;
            }
        }
        return std::string();
    };
    bool found = false;
    std::string status = find(h.trailers, "grpc-status", found);
    bool in_trailers = found;
    if (!found) {
        status = find(h.headers, "grpc-status", found); // trailers-only answer
    }
    if (!found) {
        out.error = "HTTP " + std::to_string(h.status) + " without grpc-status";
        return out;
    }
    out.grpc_status = std::atoi(status.c_str());
    out.grpc_message = find(in_trailers ? h.trailers : h.headers, "grpc-message", found);
    if (h.body.size() >= 5) {
        const auto b = [&](size_t i) {
            return static_cast<uint32_t>(static_cast<unsigned char>(h.body[i]));
        };
        const uint32_t len = b(1) << 24 | b(2) << 16 | b(3) << 8 | b(4);
        if (h.body[0] == 0 && h.body.size() >= 5 + static_cast<size_t>(len)) {
            out.message = h.body.substr(5, len);
        }
    }
    out.ok = true;
    return out;
}

// ------------------------------------------------------------------ TCP echo

TcpEchoResult tcp_echo(const std::string& address, uint16_t port, const TlsOptions* tls,
                       std::chrono::milliseconds timeout) {
    TcpEchoResult out;
    const auto deadline = Clock::now() + timeout;
    std::unique_ptr<Conn> c = Conn::open(address, port, tls, deadline, out.error, &out.fail);
    if (!c) {
        return out;
    }
    std::string buf;
    auto line = [&](std::string& into) {
        for (;;) {
            const size_t nl = buf.find('\n');
            if (nl != std::string::npos) {
                into = buf.substr(0, nl + 1);
                buf.erase(0, nl + 1);
                return true;
            }
            const ssize_t n = c->recv_some(buf, deadline, out.error, &out.fail);
            if (n <= 0) {
                if (n == 0) {
                    out.error = "connection closed";
                    out.fail = ConnFail::Eof;
                }
                return false;
            }
        }
    };
    std::string got;
    if (!line(got)) {
        out.error = "reading the welcome line: " + out.error;
        return out;
    }
    if (got != "Gateway API Test TCP Server\n") {
        out.error = "welcome line \"" + got.substr(0, 80) + "\"";
        return out;
    }
    auto ask = [&](const char* cmd, std::string& answer) {
        if (!c->send_all(std::string(cmd) + "\n", deadline, out.error, &out.fail)) {
            return false;
        }
        if (!line(answer)) {
            out.error = std::string("reading the answer to ") + cmd + ": " + out.error;
            return false;
        }
        if (!answer.empty() && answer.back() == '\n') {
            answer.pop_back();
        }
        return true;
    };
    if (!ask("PING", got)) {
        return out;
    }
    if (got != "PONG") {
        out.error = "PING answered \"" + got.substr(0, 80) + "\"";
        return out;
    }
    if (!ask("IS_TLS", out.is_tls) || !ask("TEST", out.test_json)) {
        return out;
    }
    out.ok = true;
    return out;
}

} // namespace sluice::conformance
