#include "engine.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "backend_tls.h"
#include "client_hello.h"
#include "decide.h"
#include "h2.h"
#include "hostnames.h"
#include "records.h"
#include "tls_ctx.h"

namespace sluice::l7 {

namespace {

/// Backend TLS handshake failures are logged at most once per this interval per worker.
constexpr uint64_t kTlsLogMs = 10000;

uint64_t now_ms() noexcept {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000u + static_cast<uint64_t>(ts.tv_nsec) / 1000000u;
}

// ---------------------------------------------------------------- tables (immutable)

struct ListenSock {
    int fd = -1;
    ListenSock() = default;
    ListenSock(const ListenSock&) = delete;
    ListenSock& operator=(const ListenSock&) = delete;
    ~ListenSock() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

/// One bound (address, port) and the Gateway whose address it is.
struct Port {
    std::string address;
    uint16_t port = 0;
    std::string gw_ns, gw_name;
    bool tls = false;
    /// TLS-protocol listeners here (TLSRoute): the ClientHello's SNI is read before anything
    /// else, to pass the connection through or to terminate it (mixed ports).
    bool sniff = false;
    std::vector<uint32_t> listeners; ///< indices into Ir::listeners served on this port
    std::shared_ptr<TlsPort> tls_port; ///< terminating listeners (HTTPS, TLS Terminate)
    std::vector<std::shared_ptr<ListenSock>> socks; ///< one per worker (SO_REUSEPORT)
};

/// Gateway-to-backend TLS of one backend group (BackendTLSPolicy): the context for
/// Gateways without a backend client certificate, and one per Gateway that has one. A null
/// context is one that could not be built: requests to the group get 502.
struct GroupTls {
    bool tls = false;
    std::shared_ptr<const BackendTls> plain;
    std::vector<std::pair<uint32_t, std::shared_ptr<const BackendTls>>> by_gateway;
};

/// A backend group's names, built once per table generation instead of per request:
/// the round-robin cursor's key, and per endpoint the health/pool key (address|port) and
/// the upstream name for logs (ns/name:port@address:port).
struct GroupNames {
    std::string rr_key;
    std::vector<std::string> ep_key, ep_name;
};

struct Tables {
    uint64_t generation = 0;
    ir::Ir ir;
    std::vector<GroupNames> group_names; ///< by group index
    std::vector<Port> ports;
    std::vector<GroupTls> group_tls;        ///< by group index
    std::vector<uint32_t> listener_gateway; ///< listener index -> gateway index
};

/// The TLS context for requests to `group` arriving on `listener`: nullptr for a plain
/// group, and also (with `broken` set) for a TLS group whose context could not be built.
const BackendTls* backend_tls_for(const Tables& t, uint32_t group, uint32_t listener,
                                  bool& broken) noexcept {
    broken = false;
    if (group >= t.group_tls.size() || !t.group_tls[group].tls) {
        return nullptr;
    }
    const GroupTls& gt = t.group_tls[group];
    const uint32_t gw =
        listener < t.listener_gateway.size() ? t.listener_gateway[listener] : ir::kNone;
    const BackendTls* out = gt.plain.get();
    for (const auto& [g, ctx] : gt.by_gateway) {
        if (g == gw) {
            out = ctx.get();
            break;
        }
    }
    broken = out == nullptr;
    return out;
}

// ---------------------------------------------------------------- buffers

struct Buf {
    std::string s;
    size_t off = 0;
    [[nodiscard]] size_t size() const noexcept { return s.size() - off; }
    [[nodiscard]] bool empty() const noexcept { return size() == 0; }
    [[nodiscard]] std::string_view view() const noexcept {
        return std::string_view(s).substr(off);
    }
    void consume(size_t n) noexcept {
        off += n;
        if (off >= s.size()) {
            s.clear();
            off = 0;
        } else if (off > 65536 && off > s.size() / 2) {
            s.erase(0, off);
            off = 0;
        }
    }
    void append(std::string_view v) { s.append(v.data(), v.size()); }
    void clear() noexcept {
        s.clear();
        off = 0;
    }
};

/// Empties this thread's OpenSSL error queue (SSL_get_error() needs it empty before each
/// TLS call). ERR_clear_error() resets all 16 slots every time (about 400 instructions);
/// the queue is almost always empty already, which ERR_peek_error() sees for less.
inline void clear_tls_errors() noexcept {
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

/// Plaintext sealed per step on sluice's own TLS record layer: 16 records.
constexpr size_t kSealSlice = 16 * 16384;

/// A TLS client connection idle this long hands OpenSSL's record buffers back.
constexpr uint64_t kTlsBuffersIdleMs = 1000;

bool is_hop_by_hop(std::string_view name) noexcept {
    switch (name.size()) {
    case 2: return http::iequals(name, "te");
    case 7: return http::iequals(name, "upgrade") || http::iequals(name, "trailer");
    case 10: return http::iequals(name, "connection") || http::iequals(name, "keep-alive");
    case 16: return http::iequals(name, "proxy-connection");
    case 18: return http::iequals(name, "proxy-authenticate");
    case 19: return http::iequals(name, "proxy-authorization");
    default: return false;
    }
}

/// True if the comma-separated token list `list` holds `name` (case-insensitive).
bool has_token(std::string_view list, std::string_view name) noexcept {
    std::string_view v = list;
    while (!v.empty()) {
        size_t comma = v.find(',');
        std::string_view tok = v.substr(0, comma);
        while (!tok.empty() && (tok.front() == ' ' || tok.front() == '\t')) tok.remove_prefix(1);
        while (!tok.empty() && (tok.back() == ' ' || tok.back() == '\t')) tok.remove_suffix(1);
        if (http::iequals(tok, name)) {
            return true;
        }
        if (comma == std::string_view::npos) {
            break;
        }
        v.remove_prefix(comma + 1);
    }
    return false;
}

/// Header names listed in Connection (also hop-by-hop).
bool named_by_connection(const http::Head& h, std::string_view name) noexcept {
    for (size_t i = 0; i < h.n_headers; ++i) {
        if (http::iequals(h.headers[i].name, "connection") && has_token(h.headers[i].value, name)) {
            return true;
        }
    }
    return false;
}

/// The values of every Connection header of `h`, comma-joined (kept past the head's buffer).
std::string connection_tokens(const http::Head& h) {
    std::string t;
    for (size_t i = 0; i < h.n_headers; ++i) {
        if (http::iequals(h.headers[i].name, "connection")) {
            t += t.empty() ? "" : ",";
            t += h.headers[i].value;
        }
    }
    return t;
}

/// Fields HTTP/2 forbids (RFC 9113 8.2.2), on top of the hop-by-hop ones.
bool h2_forbidden(std::string_view name) noexcept {
    return is_hop_by_hop(name) || http::iequals(name, "transfer-encoding") ||
           http::iequals(name, "host") || http::iequals(name, "http2-settings");
}

/// content-type application/grpc, application/grpc+proto, application/grpc;... (not grpc-web)
bool is_grpc_type(std::string_view ct) noexcept {
    constexpr std::string_view kGrpc = "application/grpc";
    if (ct.size() < kGrpc.size() || !http::iequals(ct.substr(0, kGrpc.size()), kGrpc)) {
        return false;
    }
    return ct.size() == kGrpc.size() || ct[kGrpc.size()] == '+' || ct[kGrpc.size()] == ';';
}

/// gRPC status for an answer the gateway gives itself (the HTTP to gRPC mapping of
/// grpc/doc/http-grpc-status-mapping.md; an invalid backend's 500 is UNAVAILABLE too).
uint32_t grpc_status_for(uint16_t http) noexcept {
    switch (http) {
    case 400: case 431: return 13; // INTERNAL
    case 401: return 16;           // UNAUTHENTICATED
    case 403: return 7;            // PERMISSION_DENIED
    case 404: case 501: return 12; // UNIMPLEMENTED
    case 429: case 500: case 502: case 503: case 504: return 14; // UNAVAILABLE
    default: return 2;             // UNKNOWN
    }
}

/// grpc-message: percent-encoded outside printable ASCII (and '%').
std::string grpc_message(std::string_view m) {
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) {
        m.remove_suffix(1);
    }
    std::string o;
    static const char* hex = "0123456789ABCDEF";
    for (unsigned char ch : m) {
        if (ch < 0x20 || ch > 0x7e || ch == '%') {
            o += '%';
            o += hex[ch >> 4];
            o += hex[ch & 15];
        } else {
            o += static_cast<char>(ch);
        }
    }
    return o;
}

constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const char* reason_phrase(uint16_t s) noexcept {
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

struct alignas(64) Counters {
    std::atomic<uint64_t> connections{0}, active{0}, tls_handshakes{0}, tls_failures{0},
        requests{0}, s1{0}, s2{0}, s3{0}, s4{0}, s5{0}, up_connects{0}, up_failures{0},
        up_reused{0}, retries{0}, ejections{0}, mirrors{0}, bad_requests{0}, timeouts{0},
        tunnels{0}, tunnel_refused{0}, h2_connections{0}, h2_streams{0}, h2_abuse{0},
        bytes_in{0}, bytes_out{0};
    std::atomic<uint64_t> backend_tls_handshakes{0}, backend_tls_failures{0};
    std::atomic<uint64_t> tls_resumed{0};
    std::atomic<uint64_t> tls_buffers_freed{0};
    std::atomic<uint64_t> tls_own_records{0};
    static void inc(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
};

} // namespace

// ---------------------------------------------------------------- engine state

struct Worker;

struct Engine::Impl {
    EngineOptions o;
    std::mutex mu; ///< guards `tables` (taken on a table change, never per request)
    std::shared_ptr<const Tables> tables;
    std::atomic<uint64_t> version{0};
    /// dp-control only: bound sockets by "tls|address|port", reused across generations.
    std::map<std::string, std::vector<std::shared_ptr<ListenSock>>> bound;
    /// dp-control only: backend TLS contexts by BackendTlsConfig::key(), reused across
    /// generations (an unchanged policy keeps its context and its pooled connections).
    std::map<std::string, std::shared_ptr<const BackendTls>> backend_tls;
    std::vector<std::unique_ptr<Worker>> workers;
    int log_fd = -1;
};

namespace {

enum class Kind : uint8_t { Listen, Client, Upstream };

struct Io {
    Kind kind;
    int fd = -1;
    uint32_t events = 0; ///< registered epoll interest
    bool dead = false;
    explicit Io(Kind k) : kind(k) {}
};

struct ListenEntry : Io {
    std::shared_ptr<ListenSock> sock;
    size_t port = 0; ///< index into the worker's tables' ports
    ListenEntry() : Io(Kind::Listen) {}
};

struct Conn;
struct Exchange;
struct Upstream;

/// HTTP/2 events of a client connection's session, handed to the worker.
struct H2Front final : H2Session::Handler {
    Worker* w = nullptr;
    Conn* c = nullptr;
    void on_head(int32_t id, H2Head& h) override;
    void on_data(int32_t id, std::string_view d) override;
    void on_trailers(int32_t, H2Head&) override {} // request trailers are not forwarded
    void on_end(int32_t id) override;
    void on_close(int32_t id, uint32_t code) override;
};

/// HTTP/2 events of a backend connection's (h2c) session, handed to the worker.
struct H2Back final : H2Session::Handler {
    Worker* w = nullptr;
    Upstream* u = nullptr;
    void on_head(int32_t id, H2Head& h) override;
    void on_data(int32_t id, std::string_view d) override;
    void on_trailers(int32_t id, H2Head& h) override;
    void on_end(int32_t id) override;
    void on_close(int32_t id, uint32_t code) override;
};

struct Upstream : Io {
    Exchange* owner = nullptr;     ///< the exchange it serves; nullptr when pooled or a mirror
    Exchange* mirror_of = nullptr; ///< mirrors: the exchange whose request is copied
    /// Ready for the exchange's bytes: TCP up and, with TLS, the handshake done.
    bool connected = false;
    bool tcp_up = false; ///< the TCP connect completed
    // Gateway-to-backend TLS (BackendTLSPolicy): the handshake runs after the TCP connect.
    SSL* ssl = nullptr;
    bool ssl_want_write = false; ///< OpenSSL waits for the socket to take bytes
    bool eof = false;
    bool mirror = false;
    std::string key;      ///< "address|port": health key
    std::string pool_key; ///< key, "h2|key" for h2c connections
    std::string name; ///< ns/service:port for logs
    Buf in, out;
    uint64_t deadline = 0;
    // h2c backends (appProtocol kubernetes.io/h2c, gRPC): one stream at a time.
    H2Back h2_link;
    std::unique_ptr<H2Session> h2;
    int32_t h2_stream = 0; ///< the owner's stream
    bool h2_busy = false;  ///< inside the session's feed/produce: no re-entry
    Upstream() : Io(Kind::Upstream) {}
};

struct MirrorSpec {
    uint32_t group;
    uint32_t num, den;
};

/// One request and its response. Owned by the client connection: Conn::ex for HTTP/1.x,
/// H2Conn::streams for an HTTP/2 stream (sid != 0).
struct Exchange {
    Conn* c = nullptr;
    int32_t sid = 0; ///< HTTP/2 stream on the client connection; 0 = HTTP/1.x
    std::shared_ptr<const Tables> t;
    route::Decision d;
    const ir::Rule* rule = nullptr;
    std::string method, path, host; ///< for the access log
    std::string head_bytes;         ///< upstream request head, kept for retries and mirrors
    http::BodyKind req_body = http::BodyKind::None;
    uint64_t req_left = 0;
    http::ChunkedDecoder req_chunk;
    bool req_done = true;
    bool body_sent = false; ///< body bytes went to the backend: no replay
    bool client_keep_alive = true;
    uint8_t client_minor = 1;
    bool upgrade = false;
    Upstream* up = nullptr;
    uint32_t attempts = 0;
    uint32_t retries_left = 0;
    uint64_t started = 0;
    uint64_t request_deadline = 0; ///< 0 = none
    uint64_t attempt_deadline = 0;
    uint64_t retry_at = 0;
    bool resp_head_sent = false;
    http::BodyKind resp_body = http::BodyKind::None;
    uint64_t resp_left = 0;
    http::ChunkedDecoder resp_chunk;
    bool dechunk = false;
    bool raw = false; ///< a TLS tunnel (TLSRoute): no HTTP; failures reset the connection
    bool up_keep_alive = true;
    uint16_t status = 0;
    uint64_t resp_bytes = 0;
    std::string upstream_name;
    std::vector<Upstream*> mirrors;
    bool grpc = false;  ///< content-type application/grpc: GRPCRoute tables, gRPC answers
    bool up_h2 = false; ///< the backend speaks h2c (HTTP/2 over TLS with BackendTLSPolicy)
    /// The backend group's TLS context (BackendTLSPolicy); in x.t's tables, so valid while
    /// the exchange lives. nullptr = plaintext.
    const BackendTls* up_tls = nullptr;
    std::vector<H2Header> up_h2_head; ///< the request for an h2c backend (kept for retries)
    // HTTP/2 client stream: request body
    Buf req_buf;                  ///< DATA not yet given to the backend
    bool req_end_seen = false;    ///< END_STREAM received
    bool req_chunked_out = false; ///< sent to an HTTP/1.1 backend chunked (no content-length)
    // h2c backend response
    bool resp_chunk_out = false;  ///< re-chunked for an HTTP/1.1 client
    bool resp_complete = false;   ///< END_STREAM from the backend
    std::vector<H2Header> resp_trailers;
    bool finished = false; ///< finish_exchange() ran (the object waits in Worker::dead_x)
};

enum class St : uint8_t { Sniff, Handshake, Head, Exchange, Tunnel, Lingering, H2 };

/// The HTTP/2 side of a client connection: the session and the exchange of each stream.
struct H2Conn {
    H2Front link;
    std::unique_ptr<H2Session> s;
    std::unordered_map<int32_t, std::unique_ptr<Exchange>> streams;
    bool busy = false; ///< inside the session's feed/produce: no re-entry
};

struct Conn : Io {
    /// sluice's own TLS 1.3 record layer after the handshake (--tls-ipsec-mb; records.h):
    /// then `ssl` only holds the session, rec_in the bytes read and not yet opened, and
    /// rec_out (from rec_out_off) sealed bytes the socket did not take yet.
    std::unique_ptr<TlsRecords> rec;
    std::string rec_in, rec_out;
    size_t rec_out_off = 0;
    bool rec_closing = false; ///< our close_notify is sealed (lingering close under way)
    /// The last loop turn with I/O on this connection, and whether OpenSSL's record buffers
    /// (~34 KiB) were handed back after it went idle (Worker::sweep; OpenSSL allocates them
    /// again at the next read or write).
    uint64_t last_io = 0;
    bool tls_buffers_freed = false;
    SSL* ssl = nullptr;
    bool ssl_want_write = false;
    /// OpenSSL holds bytes read ahead from the socket (see read_into): kicked, not waited for.
    bool tls_buffered = false;
    bool h2_flush_queued = false; ///< in Worker::h2_dirty
    bool ssl_want_read = false;
    std::shared_ptr<TlsPort> tls_port;
    std::string address, gw_ns, gw_name, peer, sni;
    uint16_t port = 0;
    bool tls = false;
    std::shared_ptr<const Tables> accept_t; ///< TLS-listener ports: the tables at accept
    size_t port_index = 0;
    Buf in, out;
    bool read_eof = false;
    bool close_after_flush = false;
    St st = St::Head;
    uint64_t deadline = 0;
    std::unique_ptr<Exchange> ex;
    std::unique_ptr<H2Conn> h2; ///< St::H2: HTTP/2 (ALPN h2, h2c prior knowledge or Upgrade)
    uint32_t served = 0;        ///< HTTP/1.x requests started on this connection
    Conn() : Io(Kind::Client) {}
};

struct Health {
    uint32_t fails = 0;
    uint64_t ejected_until = 0;
};

} // namespace

struct Worker {
    Engine::Impl& e;
    unsigned id;
    int ep = -1;
    std::shared_ptr<const Tables> t;
    uint64_t seen_version = 0;
    std::vector<std::unique_ptr<ListenEntry>> listens;
    std::vector<Conn*> conns; ///< live client connections (swept for timeouts)
    std::vector<Upstream*> ups; ///< live upstream connections (pooled, mirrors, in use)
    std::unordered_map<std::string, std::vector<Upstream*>> pool;
    std::unordered_map<std::string, Health> health;
    std::unordered_map<std::string, uint32_t> rr;
    std::vector<Io*> graveyard;
    /// What one read takes from a socket or TLS at most, and where it lands before it is
    /// appended to a connection's buffer (uninitialised: no zero-fill per read).
    static constexpr int kReadChunk = 16384;
    std::unique_ptr<char[]> read_scratch{new char[kReadChunk]};
    /// Exchanges that ended this loop turn: freed with the graveyard, so that a caller up
    /// the stack that still holds one never sees freed memory.
    std::vector<std::unique_ptr<Exchange>> dead_x;
    H2Limits h2_client_limits; ///< client connections (defences)
    H2Limits h2_backend_limits;
    /// TLS connections with decrypted bytes buffered inside OpenSSL that epoll cannot
    /// announce: read again at the end of this loop turn.
    std::vector<Conn*> kick;
    /// HTTP/2 client connections with frames to produce: flushed once per loop turn, after
    /// the events (flush_h2()), so the responses of many streams share a TLS record and a
    /// write instead of one each (h2load -m100 made one write per stream).
    std::vector<Conn*> h2_dirty;
    std::vector<Upstream*> kick_up; ///< the same for TLS backend connections
    uint64_t accept_paused_until = 0;
    /// Backend TLS handshake failures not logged yet: one line per burst (the sweep writes
    /// it, at most every kTlsLogMs), with the count and the last reason.
    uint64_t tls_fail_unlogged = 0;
    uint64_t tls_fail_logged_at = 0;
    char tls_fail_last[320] = {};
    /// Per route metrics: counted here without synchronisation, copied under `pub_mu` to
    /// `published` once a second for the exporter.
    std::unordered_map<std::string, RouteStats> route_local;
    /// route_local's entry by (rule, group) index for the tables `stats_tables` (held, so
    /// the pointer cannot name other tables later): the key string is built once per rule
    /// and group, not per request (route_local never erases, so the pointers stay valid).
    std::unordered_map<uint64_t, RouteStats*> stats_by_index;
    std::shared_ptr<const Tables> stats_tables;
    std::mutex pub_mu;
    std::unordered_map<std::string, RouteStats> published;
    uint64_t last_publish = 0;
    uint64_t rng;
    std::string logbuf;
    Counters c;
    uint64_t now = 0;

    Worker(Engine::Impl& engine, unsigned i)
        : e(engine)
        , id(i)
        , rng(0x9E3779B97F4A7C15ull * (i + 1) ^ now_ms()) {
        h2_client_limits.max_header_list = static_cast<uint32_t>(e.o.limits.max_head_bytes);
        h2_client_limits.max_headers = static_cast<uint32_t>(e.o.limits.max_headers) + 8;
        h2_backend_limits.max_header_list = 1u << 20; // the backend is trusted further
        h2_backend_limits.max_headers = 1000;
        // One stream per backend connection: the default windows bound what a backend can
        // make the engine buffer beyond what the client has taken.
        h2_backend_limits.stream_window = 65535;
        h2_backend_limits.connection_window = 65535;
    }

    uint64_t random() noexcept {
        // splitmix64
        uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }

    void loop(const std::atomic<bool>& stop);
    void refresh_tables();
    void set_events(Io* io, uint32_t ev);
    void on_accept(ListenEntry& l);
    void on_client(Conn& c, uint32_t ev);
    void on_upstream(Upstream& u, uint32_t ev);
    void progress(Conn& c);
    void update(Conn& c);
    void update(Upstream& u);
    bool read_into(Conn& c);
    void flush(Conn& c);
    void flush(Upstream& u);
    void close_conn(Conn& c);
    void close_upstream(Upstream& u);
    void start_exchange(Conn& c, const http::Head& h);
    void route_exchange(Exchange& x, const route::Request& rq, std::string_view conn_tokens,
                        std::string_view upgrade_proto);
    void build_upstream_request(Exchange& x, std::string_view conn_tokens,
                                std::string_view upgrade_proto);
    void respond(Conn& c, uint16_t status, const std::vector<std::pair<std::string, std::string>>& extra,
                 std::string_view body, bool close);
    void answer(Exchange& x, uint16_t status,
                const std::vector<std::pair<std::string, std::string>>& extra,
                std::string_view body, bool close);
    bool attempt(Exchange& x);
    Upstream* connect_to(const Tables& tb, const ir::BackendGroup& g, std::string& why, bool h2,
                         const BackendTls* tls);
    bool upstream_handshake(Upstream& u);
    void read_upstream(Upstream& u);
    void note_tls_failure(const Upstream& u, char* why, size_t n);
    void log_tls_failures();
    void forward_body(Exchange& x);
    void forward_request_body(Conn& c);
    void upstream_progress(Upstream& u);
    void upstream_failed(Exchange& x, bool connect_failure, std::string_view why);
    void finish_exchange(Exchange& x);
    void abort_exchange(Exchange& x);
    void abort_client(Exchange& x);
    void deliver(Exchange& x, std::string_view body);
    bool client_full(const Exchange& x) const;
    void log_exchange(const Conn& c, const Exchange& x);
    void sweep();
    void sweep_exchange(Exchange& x);
    bool retry_on_status(Upstream& u, Exchange& x, uint16_t status);
    void start_mirrors(Exchange& x);
    // HTTP/2 towards clients
    void h2_start(Conn& c);
    bool h2_upgrade(Conn& c, const http::Head& h);
    void h2_progress(Conn& c);
    void h2_flush(Conn& c);
    void flush_h2();
    void h2_abort_all(Conn& c);
    void h2_on_head(Conn& c, int32_t sid, H2Head& hh);
    void h2_on_data(Conn& c, int32_t sid, std::string_view data);
    void h2_on_end(Conn& c, int32_t sid);
    void h2_on_close(Conn& c, int32_t sid);
    void h2_forward_body(Exchange& x);
    void h2_answer(Exchange& x, uint16_t status,
                   const std::vector<std::pair<std::string, std::string>>& extra,
                   std::string_view body);
    void h2_submit_head(Exchange& x, uint16_t status, const std::vector<route::Header>& hs,
                        bool end_stream);
    // h2c towards backends
    void up_h2_read(Upstream& u);
    void up_h2_flush(Upstream& u);
    void up_h2_lost(Upstream& u, std::string_view why);
    void up_h2_head(Upstream& u, int32_t id, H2Head& hh);
    void up_h2_data(Upstream& u, int32_t id, std::string_view data);
    void up_h2_trailers(Upstream& u, int32_t id, H2Head& hh);
    void up_h2_end(Upstream& u, int32_t id);
    void up_h2_close(Upstream& u, int32_t id, uint32_t code);
    void sniff(Conn& c);
    void start_tls_tunnel(Conn& c, uint32_t listener);
    void reset_conn(Conn& c);
    std::vector<char> hello_scratch = std::vector<char>(kMaxClientHello);
    http::Head req_head, resp_head; ///< parse scratch of progress() / upstream_progress()
    std::vector<uint32_t> ready_scratch; ///< connect_to()'s ready endpoints
};

namespace {

std::string endpoint_key(const ir::Endpoint& ep) {
    return ep.address + "|" + std::to_string(ep.port);
}

bool parse_sockaddr(const std::string& addr, uint16_t port, sockaddr_storage& ss, socklen_t& len) {
    std::memset(&ss, 0, sizeof ss);
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    if (inet_pton(AF_INET, addr.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        len = sizeof(sockaddr_in);
        return true;
    }
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET6, addr.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        len = sizeof(sockaddr_in6);
        return true;
    }
    return false;
}

std::string peer_string(const sockaddr_storage& ss) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
    } else if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
    }
    return buf;
}

/// The authority of a request that named none (HTTP/1.0 without Host, HTTP/2 without
/// :authority): the local address and port of its connection, as RFC 9112 3.3 reconstructs
/// the target URI. An HTTP/1.1 backend needs a Host, and many (nginx) refuse an empty one with
/// 400 and a close. One getsockname, only for such requests.
std::string local_authority(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        return {};
    }
    const std::string ip = peer_string(ss);
    if (ip.empty()) {
        return {};
    }
    const uint16_t port = ntohs(ss.ss_family == AF_INET
                                    ? reinterpret_cast<const sockaddr_in*>(&ss)->sin_port
                                    : reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
    return (ss.ss_family == AF_INET6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
}

/// absolute-form request-target ("http://a/b"): the path becomes the target and, without a
/// Host header, the authority the host (the parser checked they agree when both exist).
void origin_form(std::string_view& target, std::string_view& host) noexcept {
    if (!(target.starts_with("http://") || target.starts_with("https://"))) {
        return;
    }
    const size_t start = target.find("//") + 2;
    const size_t slash = target.find('/', start);
    if (host.empty()) {
        host = target.substr(start, slash == std::string_view::npos ? std::string_view::npos
                                                                    : slash - start);
    }
    target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
}

Result<std::shared_ptr<ListenSock>> bind_one(const std::string& addr, uint16_t port) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!parse_sockaddr(addr, port, ss, len)) {
        return fail(Errc::Invalid, "address " + addr + " is not an IP address");
    }
    auto s = std::make_shared<ListenSock>();
    s->fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        return fail(Errc::Io, std::string("socket: ") + std::strerror(errno));
    }
    int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    // Bind before the address is configured (a VIP that arrives later, a standby node).
    if (ss.ss_family == AF_INET) {
        setsockopt(s->fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof one);
    } else {
        setsockopt(s->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        setsockopt(s->fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof one);
    }
    if (::bind(s->fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        return fail(Errc::Io, "bind " + addr + ":" + std::to_string(port) + ": " +
                                  std::strerror(errno));
    }
    if (::listen(s->fd, 4096) != 0) {
        return fail(Errc::Io, std::string("listen: ") + std::strerror(errno));
    }
    return s;
}

} // namespace

// ---------------------------------------------------------------- Engine

void RouteStats::add(const RouteStats& o) noexcept {
    for (size_t i = 0; i < 5; ++i) {
        by_class[i] += o.by_class[i];
    }
    for (size_t i = 0; i <= kBuckets; ++i) {
        hist[i] += o.hist[i];
    }
    sum_us += o.sum_us;
    count += o.count;
}

std::vector<std::pair<std::string, RouteStats>> Engine::route_stats() const {
    std::map<std::string, RouteStats> all;
    for (const auto& w : impl_->workers) {
        std::lock_guard<std::mutex> lock(w->pub_mu);
        for (const auto& [k, v] : w->published) {
            all[k].add(v);
        }
    }
    return {all.begin(), all.end()};
}

Engine::Engine(EngineOptions opts)
    : impl_(std::make_unique<Impl>()) {
    impl_->o = std::move(opts);
    if (impl_->o.workers == 0) {
        impl_->o.workers = 1;
    }
    if (impl_->o.access_log == "-") {
        impl_->log_fd = 2;
    } else if (!impl_->o.access_log.empty()) {
        impl_->log_fd = ::open(impl_->o.access_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    }
    for (unsigned i = 0; i < impl_->o.workers; ++i) {
        impl_->workers.push_back(std::make_unique<Worker>(*impl_, i));
    }
}

Engine::~Engine() {
    if (impl_->log_fd > 2) {
        ::close(impl_->log_fd);
    }
}

namespace {

/// Gateway-to-backend TLS contexts of the tables: for each group under a BackendTLSPolicy,
/// one for Gateways without a backend client certificate and one per Gateway with one.
/// Contexts whose inputs did not change since the last apply are reused (e.backend_tls);
/// one that cannot be built is logged and left null (its requests get 502).
void build_backend_tls(Engine::Impl& e, Tables& t) {
    const ir::Ir& x = t.ir;
    t.listener_gateway.assign(x.listeners.size(), ir::kNone);
    for (uint32_t gi = 0; gi < x.gateways.size(); ++gi) {
        for (uint32_t li : x.gateways[gi].listeners) {
            if (li < t.listener_gateway.size()) {
                t.listener_gateway[li] = gi;
            }
        }
    }
    t.group_tls.assign(x.groups.size(), GroupTls{});
    std::map<std::string, std::shared_ptr<const BackendTls>> next;
    auto get = [&](const BackendTlsConfig& cfg, const std::string& what) {
        const std::string key = cfg.key();
        if (auto it = next.find(key); it != next.end()) {
            return it->second;
        }
        std::shared_ptr<const BackendTls> ctx;
        if (auto it = e.backend_tls.find(key); it != e.backend_tls.end()) {
            ctx = it->second;
        } else if (auto built = BackendTls::build(cfg)) {
            ctx = std::move(*built);
        } else {
            std::fprintf(stderr, "sluice-l7: backend TLS for %s: %s; its requests get 502\n",
                         what.c_str(), built.error().message.c_str());
        }
        next[key] = ctx;
        return ctx;
    };
    for (uint32_t gi = 0; gi < x.groups.size(); ++gi) {
        const ir::BackendGroup& g = x.groups[gi];
        if (!g.tls) {
            continue;
        }
        const std::string what = g.ns + "/" + g.name + ":" + std::to_string(g.port) +
                                 " (BackendTLSPolicy " + g.tls_policy + ")";
        BackendTlsConfig cfg;
        cfg.sni = g.tls_sni;
        cfg.sans = g.tls_sans;
        cfg.ca_pem = g.tls_ca_pem;
        GroupTls& gt = t.group_tls[gi];
        gt.tls = true;
        gt.plain = get(cfg, what);
        for (uint32_t gw = 0; gw < x.gateways.size(); ++gw) {
            const ir::CertRef& cc = x.gateways[gw].backend_client_cert;
            if (cc.cert_pem.empty()) {
                continue;
            }
            BackendTlsConfig with = cfg;
            with.client_cert_pem = cc.cert_pem;
            with.client_key_pem = cc.key_pem;
            gt.by_gateway.emplace_back(gw,
                                       get(with, what + " from Gateway " + x.gateways[gw].ns + "/" +
                                                     x.gateways[gw].name + " (client certificate " +
                                                     cc.ns + "/" + cc.name + ")"));
        }
    }
    std::erase_if(next, [](const auto& kv) { return kv.second == nullptr; });
    e.backend_tls = std::move(next);
}

} // namespace

Result<std::string> Engine::apply(ir::Ir&& in, uint64_t generation) {
    Impl& e = *impl_;
    auto t = std::make_shared<Tables>();
    t->generation = generation;
    t->ir = std::move(in);
    const ir::Ir& x = t->ir;
    t->group_names.resize(x.groups.size());
    for (size_t gi = 0; gi < x.groups.size(); ++gi) {
        const ir::BackendGroup& g = x.groups[gi];
        GroupNames& gn = t->group_names[gi];
        gn.rr_key = g.ns + "/" + g.name + ":" + std::to_string(g.port);
        for (const ir::Endpoint& ep : g.endpoints) {
            gn.ep_key.push_back(endpoint_key(ep));
            gn.ep_name.push_back(gn.rr_key + "@" + ep.address + ":" + std::to_string(ep.port));
        }
    }
    std::string note;
    auto unserved = [&](uint32_t li, const std::string& why) {
        const ir::Listener& l = x.listeners[li];
        note += l.gateway_ns + "/" + l.gateway_name + "/" + l.name + "\t" + why + "\n";
    };
    // (tls|address|port) -> listeners there, and the Gateway that owns the address.
    struct Want {
        std::string address;
        uint16_t port;
        bool tls;
        std::string gw_ns, gw_name;
        std::vector<uint32_t> listeners;
    };
    std::map<std::string, Want> want;
    std::map<std::string, std::string> owner; // "address|port" -> gateway ns/name
    for (const ir::Gateway& g : x.gateways) {
        std::vector<std::string> addrs = g.addresses;
        if (addrs.empty()) {
            addrs.push_back("0.0.0.0");
        }
        for (uint32_t li : g.listeners) {
            if (li >= x.listeners.size()) {
                return fail(Errc::Invalid, "gateway listener index out of range");
            }
            const ir::Listener& l = x.listeners[li];
            bool tls = false;
            if (l.protocol == ir::Protocol::HTTP) {
                tls = false;
            } else if (l.protocol == ir::Protocol::HTTPS) {
                tls = true;
            } else if (l.protocol == ir::Protocol::TCP || l.protocol == ir::Protocol::UDP) {
                unserved(li, "served by sluice-dataplane (L4), not the L7 engine");
                continue;
            } else {
                tls = true; // TLS (TLSRoute): passthrough or terminate
            }
            if (tls && l.tls_mode != ir::TlsMode::Passthrough && l.certs.empty()) {
                unserved(li, "no usable certificate (see ResolvedRefs)");
                continue;
            }
            bool served = false;
            std::string why;
            for (const std::string& a : addrs) {
                sockaddr_storage ss{};
                socklen_t len = 0;
                if (!parse_sockaddr(a, l.port, ss, len)) {
                    why = "address " + a + " is not an IP address";
                    continue;
                }
                const std::string pk = a + "|" + std::to_string(l.port);
                const std::string gid = g.ns + "/" + g.name;
                auto [oit, fresh] = owner.emplace(pk, gid);
                if (!fresh && oit->second != gid) {
                    why = a + ":" + std::to_string(l.port) + " is already served for Gateway " +
                          oit->second;
                    continue;
                }
                const std::string key = std::string(tls ? "tls|" : "tcp|") + pk;
                const std::string other = std::string(tls ? "tcp|" : "tls|") + pk;
                if (want.count(other)) {
                    why = "port " + std::to_string(l.port) + " mixes HTTP and HTTPS";
                    continue;
                }
                Want& w = want[key];
                w.address = a;
                w.port = l.port;
                w.tls = tls;
                w.gw_ns = g.ns;
                w.gw_name = g.name;
                w.listeners.push_back(li);
                served = true;
            }
            if (!served) {
                unserved(li, why.empty() ? "no address to serve on" : why);
            }
        }
    }
    std::map<std::string, std::vector<std::shared_ptr<ListenSock>>> bound;
    for (auto& [key, w] : want) {
        std::vector<std::shared_ptr<ListenSock>> socks;
        if (auto it = e.bound.find(key); it != e.bound.end()) {
            socks = it->second;
        } else {
            std::string err;
            for (unsigned i = 0; i < e.o.workers && err.empty(); ++i) {
                auto s = bind_one(w.address, w.port);
                if (!s) {
                    err = s.error().message;
                } else {
                    socks.push_back(std::move(*s));
                }
            }
            if (!err.empty()) {
                for (uint32_t li : w.listeners) {
                    unserved(li, err);
                }
                continue;
            }
        }
        Port p;
        p.address = w.address;
        p.port = w.port;
        p.gw_ns = w.gw_ns;
        p.gw_name = w.gw_name;
        p.tls = w.tls;
        p.listeners = w.listeners;
        std::vector<uint32_t> terminating;
        for (uint32_t li : w.listeners) {
            if (x.listeners[li].protocol == ir::Protocol::TLS) {
                p.sniff = true;
            }
            if (x.listeners[li].tls_mode != ir::TlsMode::Passthrough) {
                terminating.push_back(li);
            }
        }
        if (w.tls && !terminating.empty()) {
            auto tp = TlsPort::build(x, terminating, e.o.offer_h2);
            if (!tp) {
                for (uint32_t li : terminating) {
                    unserved(li, "TLS: " + tp.error().message);
                }
                if (!p.sniff) {
                    continue;
                }
                tp = Result<std::unique_ptr<TlsPort>>(std::unique_ptr<TlsPort>());
            }
            for (const std::string& err : *tp ? (*tp)->errors() : std::vector<std::string>{}) {
                std::fprintf(stderr, "sluice-l7: TLS %s:%u: %s\n", w.address.c_str(), w.port,
                             err.c_str());
            }
            p.tls_port = std::shared_ptr<TlsPort>(std::move(*tp));
        }
        p.socks = socks;
        bound[key] = std::move(socks);
        t->ports.push_back(std::move(p));
    }
    e.bound = std::move(bound); // sockets of ports that went away close with the old tables
    build_backend_tls(e, *t);
    {
        std::lock_guard<std::mutex> lock(e.mu);
        e.tables = std::move(t);
    }
    e.version.fetch_add(1, std::memory_order_release);
    return note;
}

void Engine::run() {
    std::vector<std::thread> threads;
    for (auto& w : impl_->workers) {
        threads.emplace_back([this, wp = w.get()] { wp->loop(stop_); });
    }
    for (std::thread& th : threads) {
        th.join();
    }
}

EngineStats Engine::stats() const {
    EngineStats s;
    auto ld = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    for (const auto& w : impl_->workers) {
        const Counters& c = w->c;
        s.connections += ld(c.connections);
        s.active_connections += ld(c.active);
        s.tls_handshakes += ld(c.tls_handshakes);
        s.tls_failures += ld(c.tls_failures);
        s.tls_resumed += ld(c.tls_resumed);
        s.tls_buffers_freed += ld(c.tls_buffers_freed);
        s.tls_own_records += ld(c.tls_own_records);
        s.requests += ld(c.requests);
        s.status_1xx += ld(c.s1);
        s.status_2xx += ld(c.s2);
        s.status_3xx += ld(c.s3);
        s.status_4xx += ld(c.s4);
        s.status_5xx += ld(c.s5);
        s.upstream_connects += ld(c.up_connects);
        s.upstream_failures += ld(c.up_failures);
        s.upstream_reused += ld(c.up_reused);
        s.retries += ld(c.retries);
        s.ejections += ld(c.ejections);
        s.mirrors += ld(c.mirrors);
        s.bad_requests += ld(c.bad_requests);
        s.timeouts += ld(c.timeouts);
        s.tunnels += ld(c.tunnels);
        s.tunnel_refused += ld(c.tunnel_refused);
        s.h2_connections += ld(c.h2_connections);
        s.h2_streams += ld(c.h2_streams);
        s.h2_abuse += ld(c.h2_abuse);
        s.bytes_in += ld(c.bytes_in);
        s.bytes_out += ld(c.bytes_out);
        s.backend_tls_handshakes += ld(c.backend_tls_handshakes);
        s.backend_tls_failures += ld(c.backend_tls_failures);
    }
    std::lock_guard<std::mutex> lock(impl_->mu);
    s.generation = impl_->tables ? impl_->tables->generation : 0;
    if (impl_->tables) {
        for (const Port& p : impl_->tables->ports) {
            if (p.tls_port) {
                s.ocsp_staples += p.tls_port->staples();
                s.ocsp_staples_refused += p.tls_port->staples_refused();
            }
        }
    }
    return s;
}

void Engine::expire_staples() const {
    std::shared_ptr<const Tables> t;
    {
        std::lock_guard<std::mutex> lock(impl_->mu);
        t = impl_->tables;
    }
    if (!t) {
        return;
    }
    const time_t now = std::time(nullptr);
    for (const Port& p : t->ports) {
        if (!p.tls_port) {
            continue;
        }
        for (const std::string& line : p.tls_port->expire_staples(now)) {
            std::fprintf(stderr, "sluice-l7: TLS %s:%u: %s\n", p.address.c_str(), p.port,
                         line.c_str());
        }
    }
}

// ---------------------------------------------------------------- worker loop

void Worker::loop(const std::atomic<bool>& stop) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event evs[256];
    uint64_t last_sweep = 0;
    while (!stop.load(std::memory_order_relaxed)) {
        if (e.version.load(std::memory_order_acquire) != seen_version) {
            refresh_tables();
        }
        // Work left from the last turn (kicks beyond four rounds, HTTP/2 flushes): poll.
        const bool pending = !h2_dirty.empty() || !kick.empty() || !kick_up.empty();
        const int n = epoll_wait(ep, evs, 256, pending ? 0 : 20);
        now = now_ms();
        for (int i = 0; i < n; ++i) {
            Io* io = static_cast<Io*>(evs[i].data.ptr);
            if (io->dead) {
                continue;
            }
            switch (io->kind) {
            case Kind::Listen: on_accept(*static_cast<ListenEntry*>(io)); break;
            case Kind::Client: on_client(*static_cast<Conn*>(io), evs[i].events); break;
            case Kind::Upstream: on_upstream(*static_cast<Upstream*>(io), evs[i].events); break;
            }
        }
        flush_h2();
        for (int round = 0; round < 4 && !kick.empty(); ++round) {
            std::vector<Conn*> k;
            k.swap(kick);
            for (Conn* c : k) {
                if (!c->dead) {
                    on_client(*c, EPOLLIN);
                }
            }
        }
        for (int round = 0; round < 4 && !kick_up.empty(); ++round) {
            std::vector<Upstream*> k;
            k.swap(kick_up);
            for (Upstream* u : k) {
                if (!u->dead) {
                    on_upstream(*u, EPOLLIN);
                }
            }
        }
        if (now - last_sweep >= 20) {
            last_sweep = now;
            sweep();
        }
        flush_h2();
        // Work left for the next turn (epoll_wait does not sleep then): kicks of a connection
        // re-kicked four times (they were dropped before, which could strand TLS records read
        // ahead into OpenSSL), kicks and flushes queued after their rounds. What died this
        // turn goes to the graveyard below: out of the lists first.
        std::erase_if(kick, [](Conn* c) { return c->dead; });
        std::erase_if(kick_up, [](Upstream* u) { return u->dead; });
        std::erase_if(h2_dirty, [](Conn* c) {
            if (c->dead) {
                c->h2_flush_queued = false;
                return true;
            }
            return false;
        });
        dead_x.clear();
        for (Io* io : graveyard) {
            if (io->kind == Kind::Client) {
                delete static_cast<Conn*>(io);
            } else {
                delete static_cast<Upstream*>(io);
            }
        }
        graveyard.clear();
    }
    h2_dirty.clear();
    for (Conn* c : std::vector<Conn*>(conns)) {
        if (c->h2 && !c->dead && !c->h2->busy) {
            // Stopping: tell HTTP/2 clients with a GOAWAY (one best-effort write).
            c->h2->s->goaway(false, H2Session::kNoError);
            if (c->h2->s->produce(c->out.s, e.o.max_buffer)) {
                flush(*c);
            }
        }
        if (!c->dead) {
            close_conn(*c);
        }
    }
    for (Upstream* u : std::vector<Upstream*>(ups)) {
        close_upstream(*u);
    }
    if (tls_fail_unlogged > 0) {
        log_tls_failures();
    }
    dead_x.clear();
    for (Io* io : graveyard) {
        if (io->kind == Kind::Client) {
            delete static_cast<Conn*>(io);
        } else {
            delete static_cast<Upstream*>(io);
        }
    }
    graveyard.clear();
    listens.clear();
    ::close(ep);
}

void Worker::refresh_tables() {
    {
        std::lock_guard<std::mutex> lock(e.mu);
        t = e.tables;
        seen_version = e.version.load(std::memory_order_relaxed);
    }
    // Listening sockets: keep the ones still in the tables, add new ones, drop the rest.
    std::vector<std::unique_ptr<ListenEntry>> next;
    if (t) {
        for (size_t pi = 0; pi < t->ports.size(); ++pi) {
            const auto& sock = t->ports[pi].socks[id];
            std::unique_ptr<ListenEntry> le;
            for (auto& old : listens) {
                if (old && old->sock == sock) {
                    le = std::move(old);
                    break;
                }
            }
            if (!le) {
                le = std::make_unique<ListenEntry>();
                le->sock = sock;
                le->fd = sock->fd;
                epoll_event ev{};
                ev.events = EPOLLIN;
                ev.data.ptr = le.get();
                epoll_ctl(ep, EPOLL_CTL_ADD, le->fd, &ev);
                le->events = EPOLLIN;
            }
            le->port = pi;
            next.push_back(std::move(le));
        }
    }
    for (auto& old : listens) {
        if (old) {
            epoll_ctl(ep, EPOLL_CTL_DEL, old->fd, nullptr);
        }
    }
    listens = std::move(next);
}

void Worker::set_events(Io* io, uint32_t ev) {
    if (io->events == ev || io->fd < 0) {
        return;
    }
    epoll_event e2{};
    e2.events = ev;
    e2.data.ptr = io;
    epoll_ctl(ep, EPOLL_CTL_MOD, io->fd, &e2);
    io->events = ev;
}

void Worker::on_accept(ListenEntry& l) {
    if (!t || l.port >= t->ports.size()) {
        return;
    }
    const Port& p = t->ports[l.port];
    for (int i = 0; i < 64; ++i) {
        sockaddr_storage ss{};
        socklen_t len = sizeof ss;
        const int fd = accept4(l.fd, reinterpret_cast<sockaddr*>(&ss), &len,
                               SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                // Out of descriptors: stop accepting for a moment instead of spinning on a
                // listening socket that stays readable; the sweep resumes it.
                for (auto& le : listens) {
                    set_events(le.get(), 0);
                }
                accept_paused_until = now + 100;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        auto* c = new Conn();
        c->fd = fd;
        c->address = p.address;
        c->port = p.port;
        c->gw_ns = p.gw_ns;
        c->gw_name = p.gw_name;
        c->peer = peer_string(ss);
        c->tls = p.tls;
        c->deadline = now + e.o.header_timeout_ms;
        if (p.sniff) {
            c->tls_port = p.tls_port;
            c->accept_t = t;
            c->port_index = l.port;
            c->st = St::Sniff;
        } else if (p.tls) {
            c->tls_port = p.tls_port;
            c->ssl = c->tls_port->new_ssl();
            if (!c->ssl) {
                ::close(fd);
                delete c;
                continue;
            }
            SSL_set_fd(c->ssl, fd);
            c->st = St::Handshake;
        }
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = c;
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        c->events = EPOLLIN;
        conns.push_back(c);
        Counters::inc(this->c.connections);
        Counters::inc(this->c.active);
    }
}

void Worker::close_conn(Conn& c) {
    if (c.dead) {
        return;
    }
    c.dead = true;
    auto drop = [&](std::unique_ptr<Exchange>& x) {
        if (x->up) {
            x->up->owner = nullptr;
            close_upstream(*x->up);
            x->up = nullptr;
        }
        for (Upstream* m : x->mirrors) {
            m->mirror_of = nullptr;
        }
        dead_x.push_back(std::move(x));
    };
    if (c.ex) {
        drop(c.ex);
    }
    if (c.h2) {
        for (auto& [sid, x] : c.h2->streams) {
            drop(x);
        }
        c.h2->streams.clear(); // the session itself goes with the Conn (it may be on the stack)
    }
    if (c.ssl) {
        SSL_free(c.ssl);
        c.ssl = nullptr;
    }
    // close() takes the descriptor out of the epoll set (nothing here dups it): no
    // EPOLL_CTL_DEL, one syscall less per connection.
    ::close(c.fd);
    c.fd = -1;
    for (size_t i = 0; i < conns.size(); ++i) {
        if (conns[i] == &c) {
            conns[i] = conns.back();
            conns.pop_back();
            break;
        }
    }
    Counters::inc(this->c.active, static_cast<uint64_t>(-1));
    graveyard.push_back(&c);
}

void Worker::close_upstream(Upstream& u) {
    if (u.dead) {
        return;
    }
    u.dead = true;
    if (u.mirror_of) {
        auto& ms = u.mirror_of->mirrors;
        for (size_t i = 0; i < ms.size(); ++i) {
            if (ms[i] == &u) {
                ms.erase(ms.begin() + static_cast<long>(i));
                break;
            }
        }
    }
    if (auto it = pool.find(u.pool_key); it != pool.end()) {
        auto& v = it->second;
        for (size_t i = 0; i < v.size(); ++i) {
            if (v[i] == &u) {
                v.erase(v.begin() + static_cast<long>(i));
                break;
            }
        }
    }
    if (u.ssl) {
        // close_notify for a connection that is still sound (one write attempt, no wait).
        if (u.connected && !u.eof && !(SSL_get_shutdown(u.ssl) & SSL_SENT_SHUTDOWN)) {
            clear_tls_errors();
            SSL_shutdown(u.ssl);
            clear_tls_errors();
        }
        SSL_free(u.ssl);
        u.ssl = nullptr;
    }
    ::close(u.fd); // leaves the epoll set with it (as close_conn)
    u.fd = -1;
    for (size_t i = 0; i < ups.size(); ++i) {
        if (ups[i] == &u) {
            ups[i] = ups.back();
            ups.pop_back();
            break;
        }
    }
    graveyard.push_back(&u);
}

// ---------------------------------------------------------------- client I/O

bool Worker::read_into(Conn& c) {
    // Returns false when the connection failed (and was closed).
    for (int round = 0; round < 4; ++round) {
        // Into the worker's scratch, then appended: growing the string by 16 KiB to read in
        // place zero-filled 16 KiB per read (8% of a TLS keep-alive request's CPU).
        char* const scratch = read_scratch.get();
        ssize_t r;
        c.tls_buffered = false;
        if (c.ssl && !c.rec) {
            clear_tls_errors();
            const int n = SSL_read(c.ssl, scratch, kReadChunk);
            if (n > 0) {
                r = n;
            } else {
                const int err = SSL_get_error(c.ssl, n);
                if (err == SSL_ERROR_WANT_READ) {
                    return true;
                }
                if (err == SSL_ERROR_WANT_WRITE) {
                    c.ssl_want_write = true;
                    return true;
                }
                if (err == SSL_ERROR_ZERO_RETURN) {
                    c.read_eof = true;
                    return true;
                }
                if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
                    c.read_eof = true; // EOF without close_notify
                    return true;
                }
                close_conn(c);
                return false;
            }
        } else {
            r = ::read(c.fd, scratch, kReadChunk);
            if (r <= 0) {
                if (r == 0) {
                    c.read_eof = true; // with own TLS records: EOF without close_notify
                    return true;
                }
                if (errno == EAGAIN || errno == EINTR) {
                    return true;
                }
                close_conn(c);
                return false;
            }
        }
        if (c.rec) {
            c.rec_in.append(scratch, static_cast<size_t>(r));
            const size_t before = c.in.s.size();
            std::string why;
            const TlsRecords::Status st = c.rec->open(c.rec_in, c.in.s, c.rec_out, why);
            Counters::inc(this->c.bytes_in, c.in.s.size() - before);
            if (st == TlsRecords::Status::Error) {
                Counters::inc(this->c.tls_failures);
                close_conn(c);
                return false;
            }
            if (c.rec_out.size() > c.rec_out_off) {
                flush(c); // a KeyUpdate we owe the client
                if (c.dead) {
                    return false;
                }
            }
            if (st == TlsRecords::Status::CloseNotify) {
                c.read_eof = true;
                return true;
            }
            if (r < kReadChunk || c.in.size() >= e.o.max_buffer) {
                return true;
            }
            continue;
        }
        c.in.s.append(scratch, static_cast<size_t>(r));
        Counters::inc(this->c.bytes_in, static_cast<uint64_t>(r));
        // TLS reads ahead (one read() takes a record's header and body, and whatever else
        // arrived): records may wait in OpenSSL's buffer, which epoll does not see, so read
        // on while it holds anything (a partial record ends in WANT_READ above).
        c.tls_buffered = c.ssl && SSL_has_pending(c.ssl) == 1;
        if (r < kReadChunk && !c.tls_buffered) {
            return true;
        }
        if (c.in.size() >= e.o.max_buffer) {
            return true; // tls_buffered: update() kicks the connection once there is room
        }
    }
    return true;
}

void Worker::flush(Conn& c) {
    c.ssl_want_write = false;
    if (c.rec) {
        // Seal a slice of what is pending (records of up to 2^14 bytes) only once the last
        // sealed bytes are out: the rest waits in c.out, which is what backpressure on the
        // backend looks at (client_full), as with SSL_write's WANT_WRITE.
        while (true) {
            if (c.rec_out_off == c.rec_out.size()) {
                c.rec_out.clear();
                c.rec_out_off = 0;
                if (c.out.empty()) {
                    return;
                }
                const std::string_view v = c.out.view().substr(0, kSealSlice);
                c.rec->seal(v, c.rec_out);
                Counters::inc(this->c.bytes_out, v.size());
                c.out.consume(v.size());
            }
            const ssize_t r = ::send(c.fd, c.rec_out.data() + c.rec_out_off,
                                     c.rec_out.size() - c.rec_out_off, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    c.ssl_want_write = true; // EPOLLOUT until the socket takes the rest
                    return;
                }
                close_conn(c);
                return;
            }
            c.rec_out_off += static_cast<size_t>(r);
        }
    }
    while (!c.out.empty()) {
        const std::string_view v = c.out.view();
        const size_t chunk = std::min<size_t>(v.size(), 1u << 20);
        ssize_t r;
        if (c.ssl) {
            clear_tls_errors();
            const int n = SSL_write(c.ssl, v.data(), static_cast<int>(chunk));
            if (n <= 0) {
                const int err = SSL_get_error(c.ssl, n);
                if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
                    return;
                }
                close_conn(c);
                return;
            }
            r = n;
        } else {
            r = ::send(c.fd, v.data(), chunk, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    return;
                }
                close_conn(c);
                return;
            }
        }
        Counters::inc(this->c.bytes_out, static_cast<uint64_t>(r));
        c.out.consume(static_cast<size_t>(r));
    }
}

void Worker::on_client(Conn& c, uint32_t ev) {
    c.last_io = now;
    c.tls_buffers_freed = false;
    if (c.st == St::Sniff) {
        sniff(c);
        if (c.dead || c.st == St::Sniff) {
            return;
        }
        ev = EPOLLIN;
    }
    if (c.st == St::Handshake) {
        clear_tls_errors();
        const int r = SSL_do_handshake(c.ssl);
        if (r == 1) {
            c.st = St::Head;
            c.ssl_want_write = false;
            if (SSL_has_pending(c.ssl) == 1) {
                ev |= EPOLLIN; // the first request came with the Finished (read ahead)
            }
            if (tls_records_enabled()) {
                c.rec = TlsRecords::take_over(c.ssl);
                if (c.rec) {
                    // OpenSSL's record buffers are not used again; what the client sent
                    // after its Finished is still in the socket.
                    SSL_free_buffers(c.ssl);
                    Counters::inc(this->c.tls_own_records);
                    ev |= EPOLLIN;
                }
            }
            c.sni = std::string(TlsPort::sni(c.ssl));
            Counters::inc(this->c.tls_handshakes);
            if (SSL_session_reused(c.ssl) == 1) {
                Counters::inc(this->c.tls_resumed);
            }
            const uint32_t li = TlsPort::chosen_listener(c.ssl);
            if (c.accept_t && li < c.accept_t->ir.listeners.size() &&
                c.accept_t->ir.listeners[li].protocol == ir::Protocol::TLS) {
                start_tls_tunnel(c, li); // TLSRoute, terminate mode: plaintext to the backend
                if (c.dead) {
                    return;
                }
            }
            const unsigned char* alpn = nullptr;
            unsigned alpn_len = 0;
            SSL_get0_alpn_selected(c.ssl, &alpn, &alpn_len);
            if (c.st == St::Head && alpn_len == 2 && alpn[0] == 'h' && alpn[1] == '2') {
                h2_start(c);
                if (c.dead) {
                    return;
                }
            }
        } else {
            const int err = SSL_get_error(c.ssl, r);
            if (err == SSL_ERROR_WANT_READ) {
                c.ssl_want_write = false;
                update(c);
                return;
            }
            if (err == SSL_ERROR_WANT_WRITE) {
                c.ssl_want_write = true;
                update(c);
                return;
            }
            Counters::inc(this->c.tls_failures);
            close_conn(c);
            return;
        }
    }
    if (c.st == St::Lingering) {
        char sink[4096];
        for (;;) {
            const ssize_t r = ::read(c.fd, sink, sizeof sink);
            if (r > 0) {
                continue;
            }
            if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                close_conn(c);
            }
            return;
        }
    }
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if ((ev & EPOLLERR) && !(ev & EPOLLIN)) {
            close_conn(c);
            return;
        }
        if (!read_into(c)) {
            return;
        }
    }
    if (!c.out.empty() || c.ssl_want_write) {
        flush(c);
        if (c.dead) {
            return;
        }
    }
    progress(c);
}

void Worker::update(Conn& c) {
    if (c.dead) {
        return;
    }
    uint32_t ev = 0;
    const Exchange* x = c.ex.get();
    bool want_read = !c.read_eof && !c.close_after_flush && c.in.size() < e.o.max_buffer;
    if (x && x->up &&
        x->up->out.size() + (x->up->h2 ? x->up->h2->buffered(x->up->h2_stream) : 0) >=
            e.o.max_buffer) {
        want_read = false;
    }
    if (c.st == St::Handshake || c.st == St::Lingering) {
        want_read = true;
    }
    if (c.st == St::Sniff) {
        // The ClientHello is peeked, not read: edge-triggered, or the unread bytes would
        // wake this loop until the rest arrives.
        set_events(&c, EPOLLIN | EPOLLET);
        return;
    }
    if (want_read && !c.ssl_want_write) {
        ev |= EPOLLIN;
    }
    if (!c.out.empty() || c.ssl_want_write) {
        ev |= EPOLLOUT;
    }
    set_events(&c, ev);
    if ((ev & EPOLLIN) && c.ssl && c.st != St::Handshake &&
        (SSL_pending(c.ssl) > 0 || c.tls_buffered)) {
        kick.push_back(&c);
    }
    if (c.out.empty() && c.close_after_flush && c.st != St::Lingering) {
        // Lingering close: stop sending, then drain what the client still sends, so a
        // close with unread input cannot turn into a reset that destroys the response.
        if (c.rec) {
            // Our close_notify after the last sealed byte, and the half-close only once the
            // socket took all of it (EPOLLOUT brings us back here until then).
            if (!c.rec_closing) {
                c.rec_closing = true;
                c.rec->seal_close_notify(c.rec_out);
            }
            flush(c);
            if (c.dead) {
                return;
            }
            if (c.rec_out_off < c.rec_out.size()) {
                set_events(&c, EPOLLOUT);
                return;
            }
        } else if (c.ssl) {
            SSL_shutdown(c.ssl);
        }
        ::shutdown(c.fd, SHUT_WR);
        c.st = St::Lingering;
        c.deadline = now + 2000;
        set_events(&c, EPOLLIN);
    }
}

void Worker::respond(Conn& c, uint16_t status,
                     const std::vector<std::pair<std::string, std::string>>& extra,
                     std::string_view body, bool close) {
    std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
    bool has_type = false;
    for (const auto& [k, v] : extra) {
        h += k + ": " + v + "\r\n";
        has_type = has_type || http::iequals(k, "content-type");
    }
    if (!body.empty() && !has_type) {
        h += "Content-Type: text/plain\r\n";
    }
    h += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    if (close) {
        h += "Connection: close\r\n";
        c.close_after_flush = true;
    }
    h += "\r\n";
    c.out.append(h);
    c.out.append(body);
}

// ---------------------------------------------------------------- request path

void Worker::progress(Conn& c) {
    for (int guard = 0; guard < 1024 && !c.dead; ++guard) {
        if (c.st == St::H2) {
            h2_progress(c);
            return;
        }
        if (c.st == St::Head) {
            if (c.close_after_flush) {
                break;
            }
            if (c.in.empty()) {
                if (c.read_eof) {
                    c.close_after_flush = true;
                }
                break;
            }
            if (e.o.offer_h2 && c.served == 0) {
                // HTTP/2 with prior knowledge: the connection preface instead of a request.
                const std::string_view in = c.in.view();
                const size_t n = std::min(in.size(), kH2Preface.size());
                if (in.substr(0, n) == kH2Preface.substr(0, n)) {
                    if (n < kH2Preface.size()) {
                        if (c.read_eof) {
                            c.close_after_flush = true;
                        }
                        break;
                    }
                    h2_start(c);
                    continue;
                }
            }
            // Parsed into the worker's scratch head (4 KiB of header slots: constructing one
            // per request zeroed them all). Nothing reads it once start_exchange() or
            // h2_upgrade() took what they need, so a nested progress() may reuse it.
            http::Head& h = req_head;
            const http::Result r = http::parse_request(c.in.view(), e.o.limits, h);
            if (r.status == http::Status::Incomplete) {
                if (c.read_eof) {
                    c.close_after_flush = true;
                }
                break;
            }
            if (r.status == http::Status::Error) {
                Counters::inc(this->c.bad_requests);
                Counters::inc(this->c.s4);
                std::string body(r.why);
                body += "\n";
                respond(c, r.error_status, {}, body, true);
                c.in.clear();
                break;
            }
            if (e.o.offer_h2 && !c.ssl && h.upgrade && has_token(h.upgrade_proto, "h2c") &&
                h.body == http::BodyKind::None && h2_upgrade(c, h)) {
                continue; // Upgrade: h2c taken: the request is stream 1
            }
            start_exchange(c, h);
            continue;
        }
        if (c.st == St::Exchange) {
            Exchange& x = *c.ex;
            if (!x.req_done) {
                forward_request_body(c);
                if (c.dead) {
                    return;
                }
            }
            if (c.read_eof && !x.req_done) {
                close_conn(c); // the client went away in the middle of its request
                return;
            }
            break;
        }
        if (c.st == St::Tunnel) {
            Exchange& x = *c.ex;
            if (x.up && !c.in.empty()) {
                x.up->out.append(c.in.view());
                c.in.clear();
                if (x.up->connected) {
                    flush(*x.up);
                }
            }
            if (c.read_eof && x.up && !x.up->dead) {
                if (!x.up->ssl) {
                    ::shutdown(x.up->fd, SHUT_WR);
                } else if (x.up->connected && !(SSL_get_shutdown(x.up->ssl) & SSL_SENT_SHUTDOWN)) {
                    clear_tls_errors();
                    SSL_shutdown(x.up->ssl); // close_notify: TLS's half-close, sent once
                    clear_tls_errors();
                }
            }
            break;
        }
        break;
    }
    if (!c.dead) {
        if (!c.out.empty()) {
            flush(c);
        }
        update(c);
        if (c.ex && c.ex->up && !c.ex->up->dead) {
            update(*c.ex->up);
        }
    }
}

namespace {

/// Mirrors of the chosen rule and backend, with their percentages (REFERENCE: fraction).
std::vector<MirrorSpec> mirror_specs(const ir::Ir& ir, const route::Decision& d) {
    std::vector<MirrorSpec> out;
    if (d.m.rule == ir::kNone) {
        return out;
    }
    const ir::Rule& rule = ir.rules[d.m.rule];
    auto add = [&](const ir::Filters& f) {
        for (const ir::Mirror& m : f.mirrors) {
            if (m.group != ir::kNone && m.numerator > 0 && m.denominator > 0) {
                out.push_back({m.group, m.numerator, m.denominator});
            }
        }
    };
    add(ir.filters_at(rule.filters));
    if (d.backend != ir::kNone && d.backend < rule.backends.size()) {
        add(ir.filters_at(rule.backends[d.backend].filters));
    }
    return out;
}

} // namespace

void Worker::start_exchange(Conn& c, const http::Head& h) {
    Counters::inc(this->c.requests);
    ++c.served;
    auto xp = std::make_unique<Exchange>();
    Exchange& x = *xp;
    x.c = &c;
    x.t = t; // the tables, read once for this request
    x.started = now;
    x.client_minor = h.version_minor;
    x.client_keep_alive = h.keep_alive;
    x.req_body = h.body;
    x.req_left = h.content_length;
    x.req_done = h.body == http::BodyKind::None ||
                 (h.body == http::BodyKind::Length && h.content_length == 0);
    // An h2c upgrade the engine did not take is not passed on either.
    x.upgrade = h.upgrade && !has_token(h.upgrade_proto, "h2c");
    x.method.assign(h.method);

    route::Request rq;
    rq.gateway_ns = c.gw_ns;
    rq.gateway_name = c.gw_name;
    rq.port = c.port;
    rq.scheme = c.tls ? "https" : "http";
    rq.sni = c.sni;
    rq.method.assign(h.method);
    std::string_view target = h.target;
    std::string_view host = h.host;
    origin_form(target, host);
    rq.target.assign(target);
    rq.host.assign(host);
    for (size_t i = 0; i < h.n_headers; ++i) {
        if (http::iequals(h.headers[i].name, "host")) {
            continue;
        }
        if (http::iequals(h.headers[i].name, "content-type") && is_grpc_type(h.headers[i].value)) {
            x.grpc = true;
        }
        rq.headers.push_back({std::string(h.headers[i].name), std::string(h.headers[i].value)});
    }
    rq.grpc = x.grpc;
    x.path = rq.target;
    x.host = rq.host;
    // The head's views die with the consume below: keep what the upstream request needs.
    const std::string conn_tokens = connection_tokens(h);
    const std::string upgrade_proto(x.upgrade ? h.upgrade_proto : std::string_view());
    c.in.consume(h.head_len);
    c.ex = std::move(xp);
    c.st = St::Exchange;
    route_exchange(x, rq, conn_tokens, upgrade_proto);
}

void Worker::route_exchange(Exchange& x, const route::Request& rq, std::string_view conn_tokens,
                            std::string_view upgrade_proto) {
    if (!t) {
        answer(x, 503, {}, "no configuration yet\n", true);
        x.status = 503;
        x.req_done = true;
        finish_exchange(x);
        return;
    }
    x.d = route::decide(t->ir, rq, random());
    if (x.d.outcome == route::Outcome::Forward && x.d.fwd.host.empty()) {
        x.d.fwd.host = local_authority(x.c->fd);
    }
    const route::Decision& d = x.d;
    // A request the gateway answers itself: a body it did not read means the connection
    // cannot be reused (the body's bytes would be taken for the next request).
    const bool close = !x.client_keep_alive || !x.req_done;
    switch (d.outcome) {
    case route::Outcome::NoListener:
    case route::Outcome::Respond: {
        uint16_t st = d.outcome == route::Outcome::NoListener ? 404 : d.status;
        if (st == 0) {
            st = 404;
        }
        std::string body;
        if (st >= 400) {
            body = std::to_string(st) + " " + reason_phrase(st) + "\n";
        }
        x.status = st;
        answer(x, st, d.fwd.response_headers, body, close);
        x.req_done = true;
        finish_exchange(x);
        return;
    }
    case route::Outcome::Redirect: {
        x.status = d.status;
        answer(x, d.status, {{"Location", d.location}}, "", close);
        x.req_done = true;
        finish_exchange(x);
        return;
    }
    case route::Outcome::Forward: break;
    }
    x.rule = d.m.rule != ir::kNone ? &t->ir.rules[d.m.rule] : nullptr;
    if (d.group < t->ir.groups.size()) {
        // h2c by the Service port's appProtocol; gRPC needs HTTP/2 whatever the port says.
        x.up_h2 = t->ir.groups[d.group].app_protocol == "kubernetes.io/h2c" || x.grpc;
    }
    if (x.up_h2) {
        x.upgrade = false; // no tunnel over an HTTP/2 stream
    }
    bool tls_broken = false;
    x.up_tls = backend_tls_for(*t, d.group, d.m.listener, tls_broken);
    if (tls_broken) {
        Counters::inc(this->c.up_failures);
        x.status = 502;
        answer(x, 502, {}, "502 the backend's TLS configuration (BackendTLSPolicy) is unusable\n",
               close);
        x.req_done = true;
        finish_exchange(x);
        return;
    }
    build_upstream_request(x, conn_tokens, upgrade_proto);
    uint32_t req_timeout = x.rule ? x.rule->timeout_request_ms : 0;
    if (req_timeout == 0) {
        req_timeout = e.o.response_timeout_ms;
    }
    x.request_deadline = now + req_timeout;
    x.retries_left = x.rule ? x.rule->retry_attempts : 0;
    if (!attempt(x)) {
        return;
    }
    start_mirrors(x);
    forward_body(x);
}

void Worker::build_upstream_request(Exchange& x, std::string_view conn_tokens,
                                    std::string_view upgrade_proto) {
    const route::Decision& d = x.d;
    const Conn& c = *x.c;
    auto by_connection = [&](std::string_view name) {
        return !conn_tokens.empty() && has_token(conn_tokens, name);
    };
    // The HTTP/1.1 head (an HTTP/1.1 backend's, and what mirrors get): request line, Host,
    // the filtered headers minus hop-by-hop ones, X-Forwarded-*, and Connection/Upgrade
    // only for an upgrade. HTTP/2 cookie crumbs are joined again (RFC 9113 8.2.3).
    std::string hb;
    hb.reserve(512);
    hb += d.fwd.method;
    hb += ' ';
    hb += d.fwd.path;
    hb += " HTTP/1.1\r\nHost: ";
    hb += d.fwd.host;
    hb += "\r\n";
    std::string xff, cookies;
    bool has_length = false;
    for (const route::Header& hd : d.fwd.headers) {
        if (is_hop_by_hop(hd.name) || by_connection(hd.name)) {
            continue;
        }
        if (http::iequals(hd.name, "x-forwarded-for")) {
            xff = hd.value;
            continue;
        }
        if (x.sid != 0 && http::iequals(hd.name, "cookie")) {
            cookies += cookies.empty() ? "" : "; ";
            cookies += hd.value;
            continue;
        }
        has_length = has_length || http::iequals(hd.name, "content-length");
        hb += hd.name;
        hb += ": ";
        hb += hd.value;
        hb += "\r\n";
    }
    if (!cookies.empty()) {
        hb += "cookie: " + cookies + "\r\n";
    }
    const std::string fwd_for = xff.empty() ? c.peer : xff + ", " + c.peer;
    hb += "X-Forwarded-For: ";
    hb += fwd_for;
    hb += "\r\nX-Forwarded-Proto: ";
    hb += c.tls ? "https" : "http";
    hb += "\r\n";
    if (x.sid != 0 && !x.req_end_seen && !has_length) {
        // An HTTP/2 body of unannounced length goes to an HTTP/1.1 backend chunked.
        hb += "Transfer-Encoding: chunked\r\n";
        x.req_chunked_out = true;
    }
    if (x.upgrade) {
        hb += "Connection: upgrade\r\nUpgrade: ";
        hb += upgrade_proto;
        hb += "\r\n";
    }
    hb += "\r\n";
    x.head_bytes = std::move(hb);
    if (!x.up_h2) {
        return;
    }
    // The same request for an h2c backend: pseudo-header fields, then the fields HTTP/2
    // allows ("te: trailers" is kept: gRPC servers want it).
    std::vector<H2Header>& hs = x.up_h2_head;
    hs.clear();
    hs.push_back({":method", d.fwd.method});
    hs.push_back({":scheme", x.up_tls ? "https" : "http"});
    hs.push_back({":authority", d.fwd.host});
    hs.push_back({":path", d.fwd.path});
    bool te = false;
    for (const route::Header& hd : d.fwd.headers) {
        if (http::iequals(hd.name, "te") && http::iequals(hd.value, "trailers")) {
            te = true;
            hs.push_back({"te", "trailers"});
            continue;
        }
        if (h2_forbidden(hd.name) || by_connection(hd.name) ||
            http::iequals(hd.name, "x-forwarded-for") || hd.name.starts_with(":")) {
            continue;
        }
        hs.push_back({hd.name, hd.value});
    }
    if (x.grpc && !te) {
        hs.push_back({"te", "trailers"});
    }
    hs.push_back({"x-forwarded-for", fwd_for});
    hs.push_back({"x-forwarded-proto", c.tls ? "https" : "http"});
}

void Worker::answer(Exchange& x, uint16_t status,
                    const std::vector<std::pair<std::string, std::string>>& extra,
                    std::string_view body, bool close) {
    if (x.sid == 0) {
        respond(*x.c, status, extra, body, close);
    } else {
        h2_answer(x, status, extra, body);
    }
}

Upstream* Worker::connect_to(const Tables& tb, const ir::BackendGroup& g, std::string& why,
                             bool h2, const BackendTls* tls) {
    // The group's precomputed names (g is one of tb's groups).
    const size_t gi = static_cast<size_t>(&g - tb.ir.groups.data());
    const GroupNames& gn = tb.group_names[gi];
    // Round-robin over ready endpoints, skipping ejected ones while any other is left.
    // Ready endpoints by index into g.endpoints, in the worker's reused scratch vector.
    std::vector<uint32_t>& ready = ready_scratch;
    ready.clear();
    for (size_t i = 0; i < g.endpoints.size(); ++i) {
        if (g.endpoints[i].ready) {
            ready.push_back(static_cast<uint32_t>(i));
        }
    }
    const size_t n_ready = ready.size();
    if (n_ready == 0) {
        why = "no ready endpoint for " + g.ns + "/" + g.name;
        return nullptr;
    }
    uint32_t& cursor = rr[gn.rr_key];
    size_t pick_i = SIZE_MAX;
    for (size_t i = 0; i < n_ready && pick_i == SIZE_MAX; ++i) {
        const uint32_t ei = ready[(cursor + i) % n_ready];
        auto it = health.empty() ? health.end() : health.find(gn.ep_key[ei]);
        if (it == health.end() || it->second.ejected_until <= now) {
            pick_i = ei;
            cursor = static_cast<uint32_t>((cursor + i + 1) % n_ready);
        }
    }
    if (pick_i == SIZE_MAX) {
        pick_i = ready[cursor++ % n_ready]; // every endpoint ejected: try anyway
    }
    const ir::Endpoint* pick = &g.endpoints[pick_i];
    const std::string& key = gn.ep_key[pick_i];
    const std::string& name = gn.ep_name[pick_i];
    // A pooled connection serves only requests of the same protocol and TLS context.
    std::string pool_key_built;
    if (h2 || tls) {
        pool_key_built = h2 ? "h2|" + key : key;
        if (tls) {
            pool_key_built = "tls" + std::to_string(tls->id()) + "|" + pool_key_built;
        }
    }
    const std::string& pool_key = h2 || tls ? pool_key_built : key;
    if (auto it = pool.find(pool_key); it != pool.end()) {
        while (!it->second.empty()) {
            Upstream* u = it->second.back();
            it->second.pop_back();
            if (u->h2 && !u->h2->can_submit()) {
                close_upstream(*u); // the backend sent GOAWAY meanwhile
                continue;
            }
            u->name = name;
            Counters::inc(c.up_reused);
            return u;
        }
    }
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!parse_sockaddr(pick->address, pick->port, ss, len)) {
        why = "endpoint " + pick->address + " is not an IP address";
        return nullptr;
    }
    const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        why = std::string("socket: ") + std::strerror(errno);
        return nullptr;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const int r = ::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
    if (r != 0 && errno != EINPROGRESS) {
        why = "connect " + pick->address + ":" + std::to_string(pick->port) + ": " +
              std::strerror(errno);
        ::close(fd);
        Health& hl = health[key];
        if (++hl.fails >= e.o.eject_after) {
            hl.ejected_until = now + e.o.eject_ms;
            Counters::inc(c.ejections);
        }
        return nullptr;
    }
    auto* u = new Upstream();
    u->fd = fd;
    u->key = key;
    u->pool_key = pool_key;
    u->name = name;
    if (tls) {
        u->ssl = tls->new_ssl(fd, h2);
        if (!u->ssl) {
            why = "cannot allocate a TLS connection";
            ::close(fd);
            delete u;
            return nullptr;
        }
    }
    u->tcp_up = r == 0;
    u->connected = u->tcp_up && !u->ssl;
    u->ssl_want_write = u->ssl != nullptr;      // the handshake starts at the first EPOLLOUT
    u->deadline = now + e.o.connect_timeout_ms; // the TLS handshake included
    if (h2) {
        u->h2_link.w = this;
        u->h2_link.u = u;
        u->h2 = H2Session::create(H2Session::Role::Client, u->h2_link, h2_backend_limits);
        if (!u->h2) {
            why = "cannot allocate an HTTP/2 session";
            SSL_free(u->ssl);
            ::close(fd);
            delete u;
            return nullptr;
        }
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = u;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    u->events = EPOLLIN | EPOLLOUT;
    ups.push_back(u);
    Counters::inc(c.up_connects);
    return u;
}

bool Worker::attempt(Exchange& x) {
    const route::Decision& d = x.d;
    ++x.attempts;
    std::string why;
    Upstream* u = nullptr;
    if (d.group < x.t->ir.groups.size()) {
        // An endpoint that refuses at once (loopback, local subnets): try the next ones.
        const ir::BackendGroup& g = x.t->ir.groups[d.group];
        const size_t tries = std::min<size_t>(3, std::max<size_t>(1, g.endpoints.size()));
        for (size_t i = 0; i < tries && !u; ++i) {
            why.clear();
            u = connect_to(*x.t, g, why, x.up_h2, x.up_tls);
            if (!u && why.rfind("connect ", 0) != 0) {
                break;
            }
        }
    } else {
        why = "no backend group";
    }
    if (u && u->h2) {
        // No body pending: the request ends with its HEADERS.
        const bool end = x.sid == 0 ? x.req_done : x.req_end_seen && x.req_buf.empty();
        const int32_t sid = u->h2->submit_request(x.up_h2_head, end);
        if (sid < 0) {
            close_upstream(*u);
            u = nullptr;
            why = "cannot open an HTTP/2 stream to the backend";
        } else {
            u->h2_stream = sid;
            if (end) {
                x.req_done = true;
            }
        }
    }
    if (!u) {
        x.status = 503;
        answer(x, 503, {}, "503 " + why + "\n", !x.client_keep_alive || !x.req_done);
        x.req_done = true;
        finish_exchange(x);
        return false;
    }
    u->owner = &x;
    u->in.clear();
    u->eof = false;
    x.up = u;
    x.upstream_name = u->name;
    x.resp_head_sent = false;
    const uint32_t backend_timeout = x.rule ? x.rule->timeout_backend_ms : 0;
    x.attempt_deadline = backend_timeout ? now + backend_timeout : 0;
    if (u->h2) {
        up_h2_flush(*u);
    } else {
        u->out.append(x.head_bytes);
        if (u->connected) {
            flush(*u);
        }
    }
    update(*u);
    return true;
}

void Worker::start_mirrors(Exchange& x) {
    for (const MirrorSpec& m : mirror_specs(x.t->ir, x.d)) {
        if (m.num < m.den && random() % m.den >= m.num) {
            continue;
        }
        if (m.group >= x.t->ir.groups.size() ||
            x.t->ir.groups[m.group].app_protocol == "kubernetes.io/h2c") {
            continue; // mirrors speak HTTP/1.1 only
        }
        bool tls_broken = false;
        const BackendTls* tls = backend_tls_for(*x.t, m.group, x.d.m.listener, tls_broken);
        if (tls_broken) {
            continue;
        }
        std::string why;
        Upstream* u = connect_to(*x.t, x.t->ir.groups[m.group], why, false, tls);
        if (!u) {
            continue;
        }
        u->mirror = true;
        u->mirror_of = &x;
        u->deadline = now + 10000;
        u->out.append(x.head_bytes);
        if (u->connected) {
            flush(*u);
        }
        x.mirrors.push_back(u);
        Counters::inc(this->c.mirrors);
    }
}

void Worker::forward_body(Exchange& x) {
    if (x.sid == 0) {
        forward_request_body(*x.c);
    } else {
        h2_forward_body(x);
    }
}

void Worker::forward_request_body(Conn& c) {
    Exchange& x = *c.ex;
    if (x.req_done || !x.up || c.in.empty()) {
        return;
    }
    Upstream& u = *x.up;
    std::string_view avail = c.in.view();
    size_t take = 0;
    if (x.req_body == http::BodyKind::Length) {
        take = static_cast<size_t>(std::min<uint64_t>(avail.size(), x.req_left));
        x.req_left -= take;
        x.req_done = x.req_left == 0;
        if (u.h2 && take > 0) {
            u.h2->send_data(u.h2_stream, avail.substr(0, take));
        }
    } else if (x.req_body == http::BodyKind::Chunked) {
        // An h2c backend gets the payload; an HTTP/1.1 one the chunks as they came.
        const auto step = u.h2 ? x.req_chunk.feed(avail, [&](std::string_view d) {
            u.h2->send_data(u.h2_stream, d);
        })
                               : x.req_chunk.feed(avail);
        if (step.error) {
            Counters::inc(this->c.bad_requests);
            if (!x.resp_head_sent) {
                x.status = 400;
                x.up->owner = nullptr;
                close_upstream(*x.up);
                x.up = nullptr;
                respond(c, 400, {}, std::string(step.why) + "\n", true);
                finish_exchange(x);
            } else {
                close_conn(c);
            }
            return;
        }
        take = step.consumed;
        x.req_done = step.done;
    } else {
        x.req_done = true;
        return;
    }
    if (take == 0) {
        return;
    }
    const std::string_view body = avail.substr(0, take);
    if (!u.h2) {
        u.out.append(body);
    } else if (x.req_done) {
        u.h2->finish(u.h2_stream, nullptr);
    }
    for (Upstream* m : x.mirrors) {
        if (m->out.size() < e.o.max_buffer) {
            m->out.append(body);
            if (m->connected) {
                flush(*m);
            }
        }
    }
    x.body_sent = true;
    c.in.consume(take);
    if (u.h2) {
        up_h2_flush(u);
    } else if (u.connected) {
        flush(u);
    }
}

// ---------------------------------------------------------------- upstream path

void Worker::flush(Upstream& u) {
    if (!u.connected) {
        return; // the bytes wait for the connect (and the TLS handshake)
    }
    u.ssl_want_write = false;
    while (!u.out.empty() && !u.dead) {
        const std::string_view v = u.out.view();
        ssize_t r;
        if (u.ssl) {
            const size_t chunk = std::min<size_t>(v.size(), 1u << 20);
            clear_tls_errors();
            const int n = SSL_write(u.ssl, v.data(), static_cast<int>(chunk));
            if (n <= 0) {
                const int err = SSL_get_error(u.ssl, n);
                if (err == SSL_ERROR_WANT_WRITE) {
                    u.ssl_want_write = true;
                    return;
                }
                if (err == SSL_ERROR_WANT_READ) {
                    return; // EPOLLIN is armed while the connection is open
                }
                clear_tls_errors();
                u.eof = true;
                return;
            }
            r = n;
        } else {
            r = ::send(u.fd, v.data(), v.size(), MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    return;
                }
                u.eof = true;
                return;
            }
        }
        u.out.consume(static_cast<size_t>(r));
    }
}

/// The client side holds as much of this exchange's response as it may: stop reading (or
/// acknowledging) the backend. HTTP/1.x: the connection's buffer. HTTP/2: a quarter of it
/// per stream, and four times it over the whole connection (up to 100 streams share it).
bool Worker::client_full(const Exchange& x) const {
    if (x.sid == 0) {
        return x.c->out.size() >= e.o.max_buffer;
    }
    const H2Session& s = *x.c->h2->s;
    return s.buffered(x.sid) >= e.o.max_buffer / 4 || s.buffered_total() >= 4 * e.o.max_buffer;
}

void Worker::update(Upstream& u) {
    if (u.dead) {
        return;
    }
    if (u.tcp_up && !u.connected) {
        // TLS handshake: exactly what OpenSSL waits for (level-triggered: an EPOLLOUT while
        // it waits to read would spin).
        set_events(&u, u.ssl_want_write ? EPOLLOUT : EPOLLIN);
        return;
    }
    uint32_t ev = 0;
    bool want_read = !u.eof;
    if (u.owner && !u.h2 && client_full(*u.owner)) {
        want_read = false; // an h2c backend is held back by its stream window instead
    }
    if (u.h2 && u.owner && u.h2_stream && !client_full(*u.owner)) {
        // The client took what was buffered: let the backend send that much more.
        const size_t n = u.h2->unconsumed(u.h2_stream);
        if (n > 0) {
            u.h2->consume(u.h2_stream, n);
            up_h2_flush(u);
            if (u.dead) {
                return;
            }
        }
    }
    if (want_read) {
        ev |= EPOLLIN;
    }
    if (!u.connected || !u.out.empty() || u.ssl_want_write) {
        ev |= EPOLLOUT;
    }
    set_events(&u, ev);
    if ((ev & EPOLLIN) && u.ssl && SSL_pending(u.ssl) > 0) {
        kick_up.push_back(&u); // decrypted bytes inside OpenSSL: epoll cannot announce them
    }
}

bool Worker::upstream_handshake(Upstream& u) {
    clear_tls_errors();
    const int r = SSL_do_handshake(u.ssl);
    if (r == 1) {
        u.connected = true;
        u.ssl_want_write = false;
        health[u.key].fails = 0;
        Counters::inc(c.backend_tls_handshakes);
        return true;
    }
    const int err = SSL_get_error(u.ssl, r);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
        u.ssl_want_write = err == SSL_ERROR_WANT_WRITE;
        update(u);
        return false;
    }
    // Verification failed, the backend sent an alert (e.g. it wanted a client certificate),
    // or it closed: this connection attempt failed, like a refused connect (the exchange
    // tries another endpoint, then answers 503). Not counted by passive health: the cause
    // is almost always the policy or the certificates, and one Service's wrong policy must
    // not eject pods that other Services reach with a right one.
    char why[256];
    note_tls_failure(u, why, sizeof why);
    Exchange* owner = u.mirror ? nullptr : u.owner;
    u.owner = nullptr;
    close_upstream(u);
    if (owner) {
        owner->up = nullptr;
        upstream_failed(*owner, true, std::string("backend TLS handshake failed: ") + why);
    }
    return false;
}

void Worker::note_tls_failure(const Upstream& u, char* why, size_t n) {
    Counters::inc(c.backend_tls_failures);
    BackendTls::failure(u.ssl, why, n);
    ++tls_fail_unlogged;
    std::snprintf(tls_fail_last, sizeof tls_fail_last, "%s: %s", u.name.c_str(), why);
}

void Worker::log_tls_failures() {
    std::fprintf(stderr, "sluice-l7: worker %u: %llu backend TLS handshake(s) failed, last %s\n",
                 id, static_cast<unsigned long long>(tls_fail_unlogged), tls_fail_last);
    tls_fail_unlogged = 0;
    tls_fail_logged_at = now;
}

void Worker::read_upstream(Upstream& u) {
    if (u.ssl) {
        u.ssl_want_write = false;
    }
    for (int round = 0; round < 4 && !u.eof; ++round) {
        char* const scratch = read_scratch.get(); // as in read_into
        ssize_t r;
        if (u.ssl) {
            clear_tls_errors();
            const int n = SSL_read(u.ssl, scratch, kReadChunk);
            if (n <= 0) {
                const int err = SSL_get_error(u.ssl, n);
                if (err == SSL_ERROR_WANT_WRITE) {
                    u.ssl_want_write = true;
                } else if (err != SSL_ERROR_WANT_READ) {
                    if (err == SSL_ERROR_SSL) {
                        // A TLS error or alert after the handshake, e.g. TLS 1.3's refusal of
                        // the client certificate, which comes after the client's Finished.
                        char why[256];
                        note_tls_failure(u, why, sizeof why);
                    }
                    clear_tls_errors();
                    u.eof = true; // close_notify, EOF, or a TLS error: the stream ends here
                }
                return;
            }
            r = n;
        } else {
            r = ::read(u.fd, scratch, kReadChunk);
            if (r <= 0) {
                if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    u.eof = true;
                }
                return;
            }
        }
        u.in.s.append(scratch, static_cast<size_t>(r));
        if (r < kReadChunk && !(u.ssl && SSL_pending(u.ssl) > 0)) {
            return;
        }
    }
}

void Worker::on_upstream(Upstream& u, uint32_t ev) {
    if (!u.tcp_up) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(u.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
            Health& hl = health[u.key];
            if (++hl.fails >= e.o.eject_after) {
                hl.ejected_until = now + e.o.eject_ms;
                Counters::inc(c.ejections);
            }
            Exchange* owner = u.owner;
            u.owner = nullptr;
            if (u.mirror) {
                close_upstream(u);
                return;
            }
            close_upstream(u);
            if (owner) {
                owner->up = nullptr;
                upstream_failed(*owner, true, std::strerror(err ? err : ECONNREFUSED));
            }
            return;
        }
        if (!(ev & EPOLLOUT)) {
            return;
        }
        u.tcp_up = true;
        if (!u.ssl) {
            u.connected = true;
            health[u.key].fails = 0;
        }
    }
    if (!u.connected && !upstream_handshake(u)) {
        return; // waiting for the socket, or failed (the connection is gone)
    }
    // TLS: any event may let a read progress (OpenSSL may have waited to write).
    if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) || u.ssl) {
        read_upstream(u);
    }
    if (u.h2) {
        up_h2_read(u);
        return;
    }
    if (u.mirror || !u.owner) {
        // A mirror's answer or a pooled connection's: nobody wants it.
        u.in.clear();
        if (u.eof) {
            close_upstream(u);
            return;
        }
        if (!u.out.empty()) {
            flush(u);
        }
        update(u);
        return;
    }
    if (!u.out.empty()) {
        flush(u);
    }
    upstream_progress(u);
}

void Worker::deliver(Exchange& x, std::string_view body) {
    if (body.empty()) {
        return;
    }
    if (x.sid == 0) {
        x.c->out.append(body);
    } else {
        x.c->h2->s->send_data(x.sid, body);
    }
}

void Worker::abort_client(Exchange& x) {
    // A response that cannot be completed: HTTP/1.x closes the connection (the client sees
    // a short body), HTTP/2 resets just the stream.
    if (x.sid == 0) {
        x.c->close_after_flush = true;
    } else {
        x.c->h2->s->reset(x.sid, H2Session::kInternalError);
    }
}

void Worker::upstream_progress(Upstream& u) {
    Exchange& x = *u.owner;
    Conn& c = *x.c;
    if (x.sid != 0 && !x.req_done) {
        h2_forward_body(x); // the backend took some of the request body: send more
        if (u.dead || c.dead) {
            return;
        }
    }
    while (!x.resp_head_sent && !u.in.empty()) {
        http::Head& h = resp_head; // the worker's scratch (see progress())
        const http::Result r = http::parse_response(u.in.view(), e.o.limits, x.method, h);
        if (r.status == http::Status::Incomplete) {
            break;
        }
        if (r.status == http::Status::Error || (x.sid != 0 && h.status == 101)) {
            u.owner = nullptr;
            close_upstream(u);
            x.up = nullptr;
            x.status = 502;
            answer(x, 502, {}, "502 invalid response from the backend\n", true);
            finish_exchange(x);
            progress(c);
            return;
        }
        if (h.status >= 100 && h.status < 200 && h.status != 101) {
            if (x.sid == 0 && x.client_minor >= 1) {
                c.out.append(u.in.view().substr(0, h.head_len));
            } else if (x.sid != 0 && h.status == 100) {
                c.h2->s->submit_interim(x.sid, 100); // a client may wait for it to send the body
            }
            u.in.consume(h.head_len);
            continue;
        }
        // Retry on the listed codes while attempts are left and the request can be replayed.
        if (retry_on_status(u, x, h.status)) {
            return;
        }
        x.status = h.status;
        x.up_keep_alive = h.keep_alive;
        // Names listed in Connection are hop-by-hop: their values, joined once per response.
        const std::string conn = connection_tokens(h);
        auto passed_on = [&](const http::HeaderView& hv) {
            if (h.status != 101 &&
                (is_hop_by_hop(hv.name) || (!conn.empty() && has_token(conn, hv.name)))) {
                return false;
            }
            if (http::iequals(hv.name, "transfer-encoding") && (x.client_minor == 0 || x.sid != 0)) {
                return false; // HTTP/1.0 and HTTP/2 clients get the body de-chunked
            }
            if (http::iequals(hv.name, "content-length") && h.body == http::BodyKind::Chunked) {
                return false; // TE wins (RFC 9112 6.3); do not pass a conflicting length on
            }
            return true;
        };
        x.resp_body = h.body;
        x.resp_left = h.content_length;
        x.dechunk = h.body == http::BodyKind::Chunked && (x.client_minor == 0 || x.sid != 0);
        if (x.sid == 0 && (h.body == http::BodyKind::UntilClose || x.dechunk)) {
            x.client_keep_alive = false;
        }
        if (x.sid == 0 && x.d.fwd.response_ops.empty() && x.d.fwd.response_headers.empty()) {
            // The common HTTP/1.1 case, no response filters: the head is written straight
            // into the client's buffer from the backend's.
            char code[4] = {static_cast<char>('0' + h.status / 100 % 10),
                            static_cast<char>('0' + h.status / 10 % 10),
                            static_cast<char>('0' + h.status % 10), ' '};
            c.out.append("HTTP/1.1 ");
            c.out.append(std::string_view(code, 4));
            c.out.append(h.reason.empty() ? std::string_view(reason_phrase(h.status)) : h.reason);
            c.out.append("\r\n");
            for (size_t i = 0; i < h.n_headers; ++i) {
                const http::HeaderView& hv = h.headers[i];
                if (passed_on(hv)) {
                    c.out.append(hv.name);
                    c.out.append(": ");
                    c.out.append(hv.value);
                    c.out.append("\r\n");
                }
            }
            if (h.status != 101 && !x.client_keep_alive) {
                c.out.append("Connection: close\r\n");
            }
            c.out.append("\r\n");
        } else {
            std::vector<route::Header> hs;
            hs.reserve(h.n_headers);
            for (size_t i = 0; i < h.n_headers; ++i) {
                if (passed_on(h.headers[i])) {
                    hs.push_back({std::string(h.headers[i].name), std::string(h.headers[i].value)});
                }
            }
            route::apply_header_ops(x.d.fwd.response_ops, hs);
            for (const auto& [k, v] : x.d.fwd.response_headers) {
                hs.push_back({k, v});
            }
            if (x.sid != 0) {
                h2_submit_head(x, h.status, hs, h.body == http::BodyKind::None);
            } else {
                std::string out = "HTTP/1.1 " + std::to_string(h.status) + " ";
                out += h.reason.empty() ? std::string_view(reason_phrase(h.status)) : h.reason;
                out += "\r\n";
                for (const route::Header& hd : hs) {
                    out += hd.name;
                    out += ": ";
                    out += hd.value;
                    out += "\r\n";
                }
                if (h.status != 101 && !x.client_keep_alive) {
                    out += "Connection: close\r\n";
                }
                out += "\r\n";
                c.out.append(out);
            }
        }
        u.in.consume(h.head_len);
        x.resp_head_sent = true;
        if (h.status == 101) {
            c.st = St::Tunnel;
            x.req_done = true;
        }
    }
    if (x.resp_head_sent && c.st == St::Tunnel) {
        if (!u.in.empty()) {
            c.out.append(u.in.view());
            u.in.clear();
        }
        if (!c.in.empty()) {
            u.out.append(c.in.view());
            c.in.clear();
            flush(u);
        }
        if (u.eof) {
            c.close_after_flush = true;
        }
        flush(c);
        if (!c.dead) {
            update(c);
            update(u);
        }
        return;
    }
    bool done = false;
    if (x.resp_head_sent) {
        switch (x.resp_body) {
        case http::BodyKind::None: done = true; break;
        case http::BodyKind::Length: {
            const size_t take = static_cast<size_t>(std::min<uint64_t>(u.in.size(), x.resp_left));
            deliver(x, u.in.view().substr(0, take));
            u.in.consume(take);
            x.resp_left -= take;
            x.resp_bytes += take;
            done = x.resp_left == 0;
            break;
        }
        case http::BodyKind::Chunked: {
            http::ChunkedDecoder::Step step;
            if (x.dechunk) {
                step = x.resp_chunk.feed(u.in.view(), [&](std::string_view d) { deliver(x, d); });
            } else {
                step = x.resp_chunk.feed(u.in.view());
                c.out.append(u.in.view().substr(0, step.consumed));
            }
            if (step.error) {
                u.owner = nullptr;
                close_upstream(u);
                x.up = nullptr;
                abort_client(x);
                finish_exchange(x);
                progress(c);
                return;
            }
            u.in.consume(step.consumed);
            x.resp_bytes += step.consumed;
            done = step.done;
            break;
        }
        case http::BodyKind::UntilClose:
            x.resp_bytes += u.in.size();
            deliver(x, u.in.view());
            u.in.clear();
            done = u.eof;
            break;
        }
    }
    if (!done && u.eof) {
        // The backend went away before the response was complete.
        Counters::inc(this->c.up_failures);
        u.owner = nullptr;
        close_upstream(u);
        x.up = nullptr;
        if (!x.resp_head_sent) {
            upstream_failed(x, false, "backend closed the connection before responding");
        } else {
            abort_client(x);
            finish_exchange(x);
            progress(c);
        }
        return;
    }
    if (done) {
        if (x.sid != 0) {
            c.h2->s->finish(x.sid, nullptr); // HTTP/1.1 chunked trailers are not relayed
        }
        finish_exchange(x);
        progress(c);
        return;
    }
    if (x.sid != 0) {
        progress(c); // frames out; also re-arms this upstream
        return;
    }
    flush(c);
    if (!c.dead) {
        update(c);
        update(u);
    }
}

void Worker::upstream_failed(Exchange& x, bool connect_failure, std::string_view why) {
    Conn& c = *x.c;
    Counters::inc(this->c.up_failures);
    if (x.raw) {
        reset_conn(c); // a TLS tunnel has no way to say why: reset, as the spec asks
        return;
    }
    // Nothing of the request body has been sent yet: another endpoint may take it.
    if (!x.body_sent && (connect_failure || x.retries_left > 0) && x.attempts < 3 + x.retries_left) {
        if (!connect_failure) {
            --x.retries_left;
        }
        Counters::inc(this->c.retries);
        if (attempt(x)) {
            forward_body(x);
        }
        progress(c);
        return;
    }
    const uint16_t st = connect_failure ? 503 : 502;
    x.status = st;
    answer(x, st, {}, std::to_string(st) + " " + std::string(why) + "\n", true);
    x.req_done = true;
    finish_exchange(x);
    progress(c);
}

void Worker::finish_exchange(Exchange& x) {
    if (x.finished) {
        return;
    }
    x.finished = true;
    Conn& c = *x.c;
    if (x.status >= 100) {
        switch (x.status / 100) {
        case 1: Counters::inc(this->c.s1); break;
        case 2: Counters::inc(this->c.s2); break;
        case 3: Counters::inc(this->c.s3); break;
        case 4: Counters::inc(this->c.s4); break;
        default: Counters::inc(this->c.s5); break;
        }
    }
    log_exchange(c, x);
    if (x.status >= 100 && x.status < 600) {
        const bool has_rule = x.d.m.rule != ir::kNone && x.t && x.d.m.rule < x.t->ir.rules.size();
        const bool has_group =
            has_rule && x.d.group != ir::kNone && x.d.group < x.t->ir.groups.size();
        if (x.t != stats_tables) {
            stats_by_index.clear();
            stats_tables = x.t;
        }
        const uint64_t idx = has_rule ? (uint64_t{x.d.m.rule} << 32 | (has_group ? x.d.group : ir::kNone))
                                      : UINT64_MAX;
        RouteStats*& slot = stats_by_index[idx];
        if (slot == nullptr) {
            std::string key;
            if (has_rule) {
                const ir::Rule& r = x.t->ir.rules[x.d.m.rule];
                key = r.route_ns + "/" + r.route_name + "\t" + std::to_string(r.index) + "\t";
                if (has_group) {
                    const ir::BackendGroup& g = x.t->ir.groups[x.d.group];
                    key += g.ns + "/" + g.name + ":" + std::to_string(g.port);
                } else {
                    key += "-";
                }
            } else {
                key = "-\t-\t-";
            }
            slot = &route_local[key];
        }
        RouteStats& rs = *slot;
        rs.by_class[x.status / 100 - 1]++;
        const uint64_t ms = now - x.started;
        size_t b = 0;
        while (b < RouteStats::kBuckets && ms > RouteStats::kBucketsMs[b]) {
            ++b;
        }
        rs.hist[b]++;
        rs.sum_us += ms * 1000;
        rs.count++;
    }
    if (x.up && !x.up->dead) {
        Upstream& u = *x.up;
        u.owner = nullptr;
        auto& idle = pool[u.pool_key];
        const bool reusable =
            (u.h2 ? !u.eof && x.req_done && x.resp_complete && u.h2->can_submit()
                  : x.up_keep_alive && x.req_done && u.in.empty() && u.out.empty() && !u.eof) &&
            !(u.ssl && (SSL_pending(u.ssl) > 0 || (SSL_get_shutdown(u.ssl) != 0)));
        if (reusable && idle.size() < e.o.max_pool_per_endpoint) {
            u.deadline = now + e.o.upstream_idle_ms;
            idle.push_back(&u);
            update(u);
        } else {
            close_upstream(u);
        }
    }
    x.up = nullptr;
    for (Upstream* m : x.mirrors) {
        m->mirror_of = nullptr;
    }
    if (x.sid != 0) {
        auto it = c.h2->streams.find(x.sid);
        if (it != c.h2->streams.end()) {
            dead_x.push_back(std::move(it->second));
            c.h2->streams.erase(it);
        }
        if (c.h2->streams.empty()) {
            c.deadline = now + e.o.idle_timeout_ms;
        }
        return;
    }
    const bool keep = x.client_keep_alive && x.req_done && !c.close_after_flush;
    dead_x.push_back(std::move(c.ex));
    c.st = St::Head;
    if (!keep) {
        c.close_after_flush = true;
    } else {
        c.deadline = now + (c.in.empty() ? e.o.idle_timeout_ms : e.o.header_timeout_ms);
    }
}

/// The client went away (or reset its stream) in the middle of an exchange.
void Worker::abort_exchange(Exchange& x) {
    if (x.up) {
        x.up->owner = nullptr;
        close_upstream(*x.up);
        x.up = nullptr;
    }
    finish_exchange(x);
}

void Worker::log_exchange(const Conn& c, const Exchange& x) {
    if (e.log_fd < 0) {
        return;
    }
    char line[1024];
    const int n = std::snprintf(line, sizeof line, "%s %s %.*s %s%.*s %u %llu %s %llums\n",
                                c.peer.c_str(), x.method.c_str(),
                                static_cast<int>(std::min<size_t>(x.host.size(), 200)), x.host.data(),
                                c.tls ? "https " : "",
                                static_cast<int>(std::min<size_t>(x.path.size(), 400)), x.path.data(),
                                x.status, static_cast<unsigned long long>(x.resp_bytes),
                                x.upstream_name.empty() ? "-" : x.upstream_name.c_str(),
                                static_cast<unsigned long long>(now - x.started));
    if (n > 0) {
        logbuf.append(line, std::min<size_t>(static_cast<size_t>(n), sizeof line - 1));
    }
}

void Worker::reset_conn(Conn& c) {
    linger lg{1, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close_conn(c);
}

void Worker::sniff(Conn& c) {
    char* buf = hello_scratch.data(); // peek area; parse_client_hello gets its own scratch
    static thread_local std::vector<char> peek(kMaxClientHello + 4096);
    const ssize_t n = ::recv(c.fd, peek.data(), peek.size(), MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        close_conn(c);
        return;
    }
    if (n < 0) {
        update(c);
        return;
    }
    std::string_view sni;
    const HelloStatus st =
        parse_client_hello(std::string_view(peek.data(), static_cast<size_t>(n)), buf, sni);
    if (st == HelloStatus::Incomplete && static_cast<size_t>(n) < peek.size()) {
        update(c);
        return;
    }
    if (st != HelloStatus::Ok) {
        Counters::inc(this->c.tls_failures);
        reset_conn(c);
        return;
    }
    c.sni.assign(sni);
    // The listener: most specific hostname that accepts the SNI.
    const Tables& at = *c.accept_t;
    const Port& p = at.ports[c.port_index];
    uint32_t best = ir::kNone;
    int best_rank = -1;
    for (uint32_t li : p.listeners) {
        const ir::Listener& l = at.ir.listeners[li];
        if (!hosts::matches(l.hostname, c.sni)) {
            continue;
        }
        const int rank = l.hostname.empty() ? 0
                         : l.hostname.starts_with("*.") ? 1 + static_cast<int>(l.hostname.size())
                                                        : 100000 + static_cast<int>(l.hostname.size());
        if (rank > best_rank) {
            best_rank = rank;
            best = li;
        }
    }
    if (best == ir::kNone) {
        Counters::inc(this->c.tunnel_refused);
        reset_conn(c);
        return;
    }
    const ir::Listener& l = at.ir.listeners[best];
    if (l.tls_mode == ir::TlsMode::Passthrough) {
        set_events(&c, EPOLLIN); // back to level-triggered; the hello is still unread
        start_tls_tunnel(c, best);
        return;
    }
    if (!c.tls_port) {
        reset_conn(c);
        return;
    }
    c.ssl = c.tls_port->new_ssl();
    if (!c.ssl) {
        close_conn(c);
        return;
    }
    SSL_set_fd(c.ssl, c.fd);
    c.st = St::Handshake;
    set_events(&c, EPOLLIN);
}

void Worker::start_tls_tunnel(Conn& c, uint32_t li) {
    const std::shared_ptr<const Tables> at = c.accept_t ? c.accept_t : t;
    const ir::Listener& l = at->ir.listeners[li];
    const ir::Rule* rule = nullptr;
    for (const ir::SniRoute& sr : l.sni_routes) {
        if (hosts::matches(sr.hostname, c.sni) && sr.rule < at->ir.rules.size()) {
            rule = &at->ir.rules[sr.rule];
            break;
        }
    }
    const uint64_t total = rule ? route::total_weight(*rule) : 0;
    if (!rule || total == 0) {
        Counters::inc(this->c.tunnel_refused);
        reset_conn(c); // no route for this name: reset, no alert
        return;
    }
    uint64_t x = random() % total;
    const ir::Backend* b = nullptr;
    for (const ir::Backend& cand : rule->backends) {
        if (x < cand.weight) {
            b = &cand;
            break;
        }
        x -= cand.weight;
    }
    if (!b || b->status != 0 || b->group >= at->ir.groups.size()) {
        Counters::inc(this->c.tunnel_refused);
        reset_conn(c); // an invalid backendRef's share of connections is refused
        return;
    }
    auto ex = std::make_unique<Exchange>();
    ex->c = &c;
    ex->t = at;
    ex->raw = true;
    ex->resp_head_sent = true;
    ex->req_done = true;
    ex->started = now;
    ex->method = "TLS";
    ex->host = c.sni;
    std::string why;
    Upstream* u = nullptr;
    const ir::BackendGroup& g = at->ir.groups[b->group];
    for (size_t i = 0; i < 3 && !u; ++i) {
        u = connect_to(*at, g, why, false, nullptr); // TLSRoute: bytes as they are (no re-encryption)
        if (!u && why.rfind("connect ", 0) != 0) {
            break;
        }
    }
    if (!u) {
        Counters::inc(this->c.tunnel_refused);
        reset_conn(c);
        return;
    }
    u->owner = ex.get();
    ex->up = u;
    ex->upstream_name = u->name;
    c.ex = std::move(ex);
    c.st = St::Tunnel;
    c.deadline = 0;
    Counters::inc(this->c.tunnels);
    update(*u);
    update(c);
}

// ---------------------------------------------------------------- HTTP/2 towards clients
//
// A client connection in St::H2 carries an H2Session (h2.h); each stream is an Exchange
// routed like an HTTP/1.1 request (route_exchange) and proxied to an HTTP/1.1 or h2c
// backend. Session events come from inside its feed()/produce(): H2Conn::busy keeps the
// engine from re-entering them (progress() on a busy connection does nothing; the caller
// that holds the session flushes when it returns).

namespace {

void H2Front::on_head(int32_t id, H2Head& h) {
    if (!c->dead) {
        w->h2_on_head(*c, id, h);
    }
}
void H2Front::on_data(int32_t id, std::string_view d) {
    if (!c->dead) {
        w->h2_on_data(*c, id, d);
    }
}
void H2Front::on_end(int32_t id) {
    if (!c->dead) {
        w->h2_on_end(*c, id);
    }
}
void H2Front::on_close(int32_t id, uint32_t) {
    if (!c->dead) {
        w->h2_on_close(*c, id);
    }
}

void H2Back::on_head(int32_t id, H2Head& h) { w->up_h2_head(*u, id, h); }
void H2Back::on_data(int32_t id, std::string_view d) { w->up_h2_data(*u, id, d); }
void H2Back::on_trailers(int32_t id, H2Head& h) { w->up_h2_trailers(*u, id, h); }
void H2Back::on_end(int32_t id) { w->up_h2_end(*u, id); }
void H2Back::on_close(int32_t id, uint32_t code) { w->up_h2_close(*u, id, code); }

std::string lower_ascii(std::string_view s) {
    std::string o(s);
    for (char& ch : o) {
        if (ch >= 'A' && ch <= 'Z') {
            ch = static_cast<char>(ch - 'A' + 'a');
        }
    }
    return o;
}

std::string chunk_header(size_t n) {
    char hex[24];
    const int k = std::snprintf(hex, sizeof hex, "%zx\r\n", n);
    return std::string(hex, k > 0 ? static_cast<size_t>(k) : 0);
}

} // namespace

void Worker::h2_start(Conn& c) {
    auto h = std::make_unique<H2Conn>();
    h->link.w = this;
    h->link.c = &c;
    h->s = H2Session::create(H2Session::Role::Server, h->link, h2_client_limits);
    if (!h->s) {
        close_conn(c);
        return;
    }
    c.h2 = std::move(h);
    c.st = St::H2;
    c.deadline = now + e.o.header_timeout_ms; // the preface and a first request
    Counters::inc(this->c.h2_connections);
}

bool Worker::h2_upgrade(Conn& c, const http::Head& h) {
    // RFC 7540 3.2: answer 101, then this request is stream 1 of an HTTP/2 connection.
    const http::HeaderView* hs = http::find_header(h, "http2-settings");
    std::string settings;
    if (!hs || !named_by_connection(h, "http2-settings") || !base64url_decode(hs->value, settings)) {
        return false;
    }
    auto hc = std::make_unique<H2Conn>();
    hc->link.w = this;
    hc->link.c = &c;
    hc->s = H2Session::create_upgraded(hc->link, h2_client_limits, settings,
                                       http::iequals(h.method, "HEAD"));
    if (!hc->s) {
        return false; // invalid HTTP2-Settings: serve it as HTTP/1.1
    }
    std::string_view target = h.target;
    std::string_view host = h.host;
    origin_form(target, host);
    H2Head hh;
    hh.end_stream = true;
    hh.headers.push_back({":method", std::string(h.method)});
    hh.headers.push_back({":scheme", "http"});
    hh.headers.push_back({":authority", std::string(host)});
    hh.headers.push_back({":path", std::string(target)});
    for (size_t i = 0; i < h.n_headers; ++i) {
        const http::HeaderView& f = h.headers[i];
        if (h2_forbidden(f.name) || named_by_connection(h, f.name)) {
            continue;
        }
        hh.headers.push_back({lower_ascii(f.name), std::string(f.value)});
    }
    c.in.consume(h.head_len);
    c.out.append("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
    c.h2 = std::move(hc);
    c.st = St::H2;
    ++c.served;
    Counters::inc(this->c.h2_connections);
    h2_on_head(c, 1, hh);
    return true;
}

void Worker::h2_progress(Conn& c) {
    H2Conn& h = *c.h2;
    if (h.busy) {
        return;
    }
    if (!c.in.empty() && !c.close_after_flush) {
        h.busy = true;
        const bool ok = h.s->feed(c.in.view(), now);
        h.busy = false;
        c.in.clear();
        if (c.dead) {
            return;
        }
        if (h.streams.empty()) {
            std::string().swap(c.in.s); // an idle HTTP/2 connection keeps no read buffer
        }
        if (!ok) {
            // Protocol error or a defence tripped: the GOAWAY goes out, then the close.
            if (h.s->abused()) {
                Counters::inc(this->c.h2_abuse);
            } else {
                Counters::inc(this->c.bad_requests);
            }
            h2_abort_all(c);
            c.close_after_flush = true;
        }
    }
    if (c.read_eof && !c.close_after_flush) {
        h2_abort_all(c); // the client closed its side: nothing it asked for can be delivered
        c.close_after_flush = true;
    }
    if (!c.h2_flush_queued) {
        c.h2_flush_queued = true;
        h2_dirty.push_back(&c);
    }
}

void Worker::flush_h2() {
    for (int round = 0; round < 4 && !h2_dirty.empty(); ++round) {
        std::vector<Conn*> d;
        d.swap(h2_dirty);
        for (Conn* c : d) {
            c->h2_flush_queued = false;
            if (!c->dead && c->h2) {
                h2_flush(*c);
            }
        }
    }
}

void Worker::h2_flush(Conn& c) {
    H2Conn& h = *c.h2;
    if (h.busy || c.dead) {
        return;
    }
    for (int round = 0; round < 8; ++round) {
        const size_t before = c.out.size();
        h.busy = true;
        const bool ok = h.s->produce(c.out.s, e.o.max_buffer);
        h.busy = false;
        if (c.dead) {
            return;
        }
        if (!ok) {
            close_conn(c);
            return;
        }
        if (c.out.size() == before) {
            break;
        }
        flush(c);
        if (c.dead) {
            return;
        }
        if (!c.out.empty()) {
            break;
        }
    }
    // Streams whose buffers drained may read (and acknowledge) their backends again.
    std::vector<Upstream*> ups_now;
    for (const auto& [sid, x] : h.streams) {
        if (x->up && !x->up->dead) {
            ups_now.push_back(x->up);
        }
    }
    for (Upstream* u : ups_now) {
        update(*u);
    }
    if (c.dead) {
        return;
    }
    if (c.out.empty() && h.s->want_close()) {
        c.close_after_flush = true;
    }
    update(c);
}

void Worker::h2_abort_all(Conn& c) {
    std::vector<int32_t> ids;
    for (const auto& [sid, x] : c.h2->streams) {
        ids.push_back(sid);
    }
    for (int32_t sid : ids) {
        auto it = c.h2->streams.find(sid);
        if (it != c.h2->streams.end()) {
            abort_exchange(*it->second);
        }
    }
}

void Worker::h2_on_head(Conn& c, int32_t sid, H2Head& hh) {
    Counters::inc(this->c.requests);
    Counters::inc(this->c.h2_streams);
    auto xp = std::make_unique<Exchange>();
    Exchange& x = *xp;
    x.c = &c;
    x.sid = sid;
    x.t = t; // the tables, read once for this request
    x.started = now;
    x.req_end_seen = hh.end_stream;
    x.req_done = false;
    c.h2->streams[sid] = std::move(xp);
    c.deadline = 0;
    const std::string_view method = hh.get(":method");
    const std::string_view path = hh.get(":path");
    std::string_view authority = hh.get(":authority");
    if (authority.empty()) {
        authority = hh.get("host");
    }
    x.method.assign(method);
    x.path.assign(path);
    x.host.assign(authority);
    for (const H2Header& f : hh.headers) {
        if (f.name == "content-type" && is_grpc_type(f.value)) {
            x.grpc = true;
        }
    }
    uint16_t bad = 0;
    std::string_view why;
    if (hh.too_large) {
        bad = 431;
        why = "431 request header fields too large\n";
    } else if (method == "CONNECT") {
        bad = 501;
        why = "501 CONNECT is not supported\n";
    } else if (path.empty() || authority.empty()) {
        bad = 400;
        why = "400 :path and :authority (or host) are required\n";
    }
    if (bad != 0) {
        Counters::inc(this->c.bad_requests);
        x.status = bad;
        h2_answer(x, bad, {}, why);
        x.req_done = true;
        finish_exchange(x);
        return;
    }
    route::Request rq;
    rq.gateway_ns = c.gw_ns;
    rq.gateway_name = c.gw_name;
    rq.port = c.port;
    rq.scheme = c.tls ? "https" : "http";
    rq.sni = c.sni;
    rq.method.assign(method);
    rq.target.assign(path);
    rq.host.assign(authority);
    for (const H2Header& f : hh.headers) {
        if (f.name.starts_with(":") || f.name == "host") {
            continue;
        }
        rq.headers.push_back({f.name, f.value});
    }
    rq.grpc = x.grpc;
    route_exchange(x, rq, {}, {});
}

void Worker::h2_on_data(Conn& c, int32_t sid, std::string_view data) {
    auto it = c.h2->streams.find(sid);
    if (it == c.h2->streams.end() || it->second->req_done) {
        c.h2->s->consume(sid, data.size()); // answered already: dropped
        return;
    }
    Exchange& x = *it->second;
    x.req_buf.append(data); // bounded by the stream window: consumed as it moves on
    h2_forward_body(x);
}

void Worker::h2_on_end(Conn& c, int32_t sid) {
    auto it = c.h2->streams.find(sid);
    if (it == c.h2->streams.end()) {
        return;
    }
    it->second->req_end_seen = true;
    h2_forward_body(*it->second);
}

void Worker::h2_on_close(Conn& c, int32_t sid) {
    // Still in the table: the stream was reset before its response was complete.
    auto it = c.h2->streams.find(sid);
    if (it != c.h2->streams.end()) {
        abort_exchange(*it->second);
    }
}

void Worker::h2_forward_body(Exchange& x) {
    if (x.req_done || !x.up || x.up->dead) {
        return;
    }
    Upstream& u = *x.up;
    // A quarter of max_buffer per stream: up to 100 streams share the connection.
    const size_t backlog = u.out.size() + (u.h2 ? u.h2->buffered(u.h2_stream) : 0);
    if (!x.req_buf.empty() && backlog < e.o.max_buffer / 4) {
        const std::string_view b = x.req_buf.view();
        // What an HTTP/1.1 backend (and a mirror) gets: as is, or as one chunk.
        std::string framed;
        if (x.req_chunked_out) {
            framed = chunk_header(b.size());
            framed.append(b);
            framed += "\r\n";
        }
        const std::string_view h1 = x.req_chunked_out ? std::string_view(framed) : b;
        if (u.h2) {
            u.h2->send_data(u.h2_stream, b);
        } else {
            u.out.append(h1);
        }
        for (Upstream* m : x.mirrors) {
            if (m->out.size() < e.o.max_buffer) {
                m->out.append(h1);
                if (m->connected) {
                    flush(*m);
                }
            }
        }
        x.body_sent = true;
        x.c->h2->s->consume(x.sid, b.size());
        x.req_buf.clear();
    }
    if (x.req_buf.empty() && x.req_end_seen) {
        if (u.h2) {
            u.h2->finish(u.h2_stream, nullptr);
        } else if (x.req_chunked_out) {
            u.out.append("0\r\n\r\n");
            for (Upstream* m : x.mirrors) {
                m->out.append("0\r\n\r\n");
            }
            x.body_sent = true;
        }
        x.req_done = true;
    }
    if (u.h2) {
        up_h2_flush(u);
    } else if (u.connected) {
        flush(u);
    }
}

void Worker::h2_answer(Exchange& x, uint16_t status,
                       const std::vector<std::pair<std::string, std::string>>& extra,
                       std::string_view body) {
    H2Session& s = *x.c->h2->s;
    std::vector<H2Header> hs;
    if (x.grpc && status != 421 && (status < 300 || status >= 400)) {
        // gRPC clients read the outcome from grpc-status: a trailers-only answer (HTTP 200,
        // one HEADERS frame with END_STREAM). No route = UNIMPLEMENTED, no backend = UNAVAILABLE.
        hs.push_back({"content-type", "application/grpc"});
        hs.push_back({"grpc-status", std::to_string(grpc_status_for(status))});
        hs.push_back({"grpc-message", grpc_message(body)});
        for (const auto& [k, v] : extra) {
            hs.push_back({k, v});
        }
        s.submit_response(x.sid, 200, hs, true);
        return;
    }
    bool has_type = false;
    for (const auto& [k, v] : extra) {
        hs.push_back({k, v});
        has_type = has_type || http::iequals(k, "content-type");
    }
    if (!body.empty() && !has_type) {
        hs.push_back({"content-type", "text/plain"});
    }
    hs.push_back({"content-length", std::to_string(body.size())});
    s.submit_response(x.sid, status, hs, body.empty());
    if (!body.empty()) {
        s.send_data(x.sid, body);
        s.finish(x.sid, nullptr);
    }
}

void Worker::h2_submit_head(Exchange& x, uint16_t status, const std::vector<route::Header>& hs,
                            bool end_stream) {
    std::vector<H2Header> out;
    out.reserve(hs.size());
    for (const route::Header& hd : hs) {
        if (!h2_forbidden(hd.name)) {
            out.push_back({hd.name, hd.value});
        }
    }
    x.c->h2->s->submit_response(x.sid, status, out, end_stream);
}

// ---------------------------------------------------------------- h2c towards backends
//
// An Upstream with an H2Session (Service port appProtocol kubernetes.io/h2c, and every gRPC
// request) carries one stream at a time (u.h2_stream); the connection is pooled between
// requests like an HTTP/1.1 one. Response HEADERS, DATA and trailers go to the client as
// HTTP/2 frames, or as HTTP/1.1 (re-chunked when no content-length, trailers in the last
// chunk). Response DATA is acknowledged to the backend only once the client side buffers
// less than max_buffer.

void Worker::up_h2_flush(Upstream& u) {
    if (u.h2_busy || u.dead) {
        return;
    }
    u.h2_busy = true;
    const bool ok = u.h2->produce(u.out.s, e.o.max_buffer);
    u.h2_busy = false;
    if (!ok) {
        u.eof = true; // the sweep fails the stream (this may run under its exchange)
        return;
    }
    if (u.connected && !u.out.empty()) {
        flush(u);
    }
}

void Worker::up_h2_read(Upstream& u) {
    Conn* oc = u.owner ? u.owner->c : nullptr;
    if (!u.in.empty()) {
        u.h2_busy = true;
        const bool ok = u.h2->feed(u.in.view(), now);
        u.h2_busy = false;
        u.in.clear();
        if (!ok) {
            u.eof = true;
        }
    }
    if (!u.dead) {
        if (u.eof) {
            up_h2_lost(u, "backend closed the HTTP/2 connection");
        } else {
            up_h2_flush(u);
            if (!u.dead && !u.owner && (u.eof || u.h2->want_close())) {
                close_upstream(u); // pooled, and the backend sent GOAWAY
            } else if (!u.dead) {
                update(u);
            }
        }
    }
    if (oc && !oc->dead) {
        progress(*oc); // what the events queued for the client goes out once
    }
}

void Worker::up_h2_lost(Upstream& u, std::string_view why) {
    Exchange* x = u.owner;
    u.owner = nullptr;
    close_upstream(u);
    if (!x) {
        return;
    }
    x->up = nullptr;
    Conn& c = *x->c;
    if (!x->resp_head_sent) {
        upstream_failed(*x, false, why);
        return;
    }
    Counters::inc(this->c.up_failures);
    abort_client(*x);
    finish_exchange(*x);
    progress(c);
}

void Worker::up_h2_head(Upstream& u, int32_t id, H2Head& hh) {
    if (!u.owner || id != u.h2_stream || u.owner->resp_head_sent) {
        return;
    }
    Exchange& x = *u.owner;
    if (retry_on_status(u, x, hh.status)) {
        return;
    }
    x.status = hh.status;
    std::vector<route::Header> hs;
    hs.reserve(hh.headers.size());
    for (const H2Header& f : hh.headers) {
        if (!f.name.starts_with(":") && !h2_forbidden(f.name)) {
            hs.push_back({f.name, f.value});
        }
    }
    route::apply_header_ops(x.d.fwd.response_ops, hs);
    for (const auto& [k, v] : x.d.fwd.response_headers) {
        hs.push_back({k, v});
    }
    if (x.sid != 0) {
        h2_submit_head(x, hh.status, hs, hh.end_stream);
    } else {
        bool has_length = false;
        for (const route::Header& hd : hs) {
            has_length = has_length || http::iequals(hd.name, "content-length");
        }
        const bool bodiless = x.method == "HEAD" || hh.status == 204 || hh.status == 304;
        if (!bodiless && !has_length) {
            if (hh.end_stream) {
                hs.push_back({"content-length", "0"});
            } else if (x.client_minor >= 1) {
                hs.push_back({"transfer-encoding", "chunked"});
                x.resp_chunk_out = true;
            } else {
                x.client_keep_alive = false; // HTTP/1.0: the body runs to the close
            }
        }
        std::string out = "HTTP/1.1 " + std::to_string(hh.status) + " " +
                          reason_phrase(hh.status) + "\r\n";
        for (const route::Header& hd : hs) {
            out += hd.name + ": " + hd.value + "\r\n";
        }
        if (!x.client_keep_alive) {
            out += "Connection: close\r\n";
        }
        out += "\r\n";
        x.c->out.append(out);
    }
    x.resp_head_sent = true;
}

void Worker::up_h2_data(Upstream& u, int32_t id, std::string_view data) {
    if (!u.owner || id != u.h2_stream || !u.owner->resp_head_sent) {
        u.h2->consume(id, data.size());
        return;
    }
    Exchange& x = *u.owner;
    x.resp_bytes += data.size();
    if (x.resp_chunk_out) {
        x.c->out.append(chunk_header(data.size()));
        x.c->out.append(data);
        x.c->out.append("\r\n");
    } else {
        deliver(x, data);
    }
    if (!client_full(x)) {
        u.h2->consume(id, data.size());
    } // else update(u) acknowledges it once the client has read
}

void Worker::up_h2_trailers(Upstream& u, int32_t id, H2Head& hh) {
    if (!u.owner || id != u.h2_stream) {
        return;
    }
    for (H2Header& f : hh.headers) {
        if (!f.name.starts_with(":") && !h2_forbidden(f.name)) {
            u.owner->resp_trailers.push_back(std::move(f));
        }
    }
}

void Worker::up_h2_end(Upstream& u, int32_t id) {
    if (!u.owner || id != u.h2_stream || !u.owner->resp_head_sent) {
        return;
    }
    Exchange& x = *u.owner;
    x.resp_complete = true;
    if (x.sid != 0) {
        // grpc-status travels here: the trailers reach the client.
        x.c->h2->s->finish(x.sid, x.resp_trailers.empty() ? nullptr : &x.resp_trailers);
    } else if (x.resp_chunk_out) {
        std::string last = "0\r\n";
        for (const H2Header& f : x.resp_trailers) {
            last += f.name + ": " + f.value + "\r\n";
        }
        last += "\r\n";
        x.c->out.append(last);
    }
    finish_exchange(x);
}

void Worker::up_h2_close(Upstream& u, int32_t id, uint32_t code) {
    if (!u.owner || id != u.h2_stream) {
        return;
    }
    // The stream ended before its response did.
    Exchange& x = *u.owner;
    u.owner = nullptr;
    x.up = nullptr;
    close_upstream(u); // under u's own session: freed at the end of the loop turn
    if (!x.resp_head_sent) {
        upstream_failed(x, false,
                        code == H2Session::kRefusedStream ? "backend refused the stream"
                                                          : "backend reset the stream");
        return;
    }
    Counters::inc(this->c.up_failures);
    Conn& c = *x.c;
    abort_client(x);
    finish_exchange(x);
    progress(c);
}

/// A backend status the rule retries on, with attempts left and a replayable request: the
/// answer is dropped, the connection closed and the attempt scheduled after the backoff.
bool Worker::retry_on_status(Upstream& u, Exchange& x, uint16_t status) {
    if (x.retries_left == 0 || x.body_sent || !x.rule) {
        return false;
    }
    bool retry = false;
    for (uint16_t code : x.rule->retry_codes) {
        retry = retry || code == status;
    }
    if (!retry) {
        return false;
    }
    --x.retries_left;
    Counters::inc(this->c.retries);
    u.owner = nullptr;
    close_upstream(u);
    x.up = nullptr;
    x.retry_at = now + (x.rule->retry_backoff_ms ? x.rule->retry_backoff_ms : 1);
    return true;
}

void Worker::sweep() {
    if (now - last_publish >= 1000) {
        last_publish = now;
        std::lock_guard<std::mutex> lock(pub_mu);
        published = route_local;
    }
    if (accept_paused_until && now >= accept_paused_until) {
        accept_paused_until = 0;
        for (auto& le : listens) {
            set_events(le.get(), EPOLLIN);
        }
    }
    for (Conn* cp : std::vector<Conn*>(conns)) {
        Conn& c = *cp;
        if (c.dead) {
            continue;
        }
        if (c.ssl && !c.rec && !c.tls_buffers_freed && now - c.last_io >= kTlsBuffersIdleMs &&
            (c.st == St::Head || (c.st == St::H2 && c.h2->streams.empty())) && c.in.empty() &&
            c.out.empty() && !c.tls_buffered && SSL_has_pending(c.ssl) == 0 &&
            SSL_free_buffers(c.ssl) == 1) {
            // An idle keep-alive connection: OpenSSL's read and write buffers go back (only
            // with nothing read ahead in them: SSL_has_pending; CVE-2024-4741 was a freed
            // buffer with a partial record in it). A busy one keeps them, so requests
            // do not allocate and free ~34 KiB each (SSL_MODE_RELEASE_BUFFERS did).
            c.tls_buffers_freed = true;
            Counters::inc(this->c.tls_buffers_freed);
        }
        if (c.st == St::Sniff || c.st == St::Handshake || c.st == St::Head ||
            c.st == St::Lingering) {
            if (c.deadline && now >= c.deadline) {
                if (c.st == St::Head && !c.in.empty() && !c.close_after_flush) {
                    Counters::inc(this->c.timeouts);
                    respond(c, 408, {}, "408 request head not received in time\n", true);
                    c.in.clear();
                    flush(c);
                    if (!c.dead) {
                        update(c);
                        c.deadline = now + 2000;
                    }
                } else {
                    close_conn(c);
                }
            }
            continue;
        }
        if (c.st == St::Exchange && c.ex) {
            sweep_exchange(*c.ex);
            continue;
        }
        if (c.st == St::H2) {
            if (c.h2->streams.empty()) {
                if (c.deadline && now >= c.deadline && !c.close_after_flush) {
                    // Idle (or no preface in time): GOAWAY, then close.
                    c.h2->s->goaway(true);
                    c.close_after_flush = true;
                    progress(c);
                }
                continue;
            }
            std::vector<int32_t> ids;
            for (const auto& [sid, x] : c.h2->streams) {
                ids.push_back(sid);
            }
            for (int32_t sid : ids) {
                if (c.dead) {
                    break;
                }
                auto it = c.h2->streams.find(sid);
                if (it != c.h2->streams.end()) {
                    sweep_exchange(*it->second);
                }
            }
        }
    }
    for (Upstream* u : std::vector<Upstream*>(ups)) {
        if (!u->dead && u->h2 && u->eof && !u->h2_busy) {
            up_h2_lost(*u, "HTTP/2 session to the backend failed");
            continue;
        }
        if (!u->dead && !u->owner && u->deadline && now >= u->deadline) {
            close_upstream(*u); // idle pooled connection, or a mirror that took too long
        }
    }
    if (tls_fail_unlogged > 0 &&
        (tls_fail_logged_at == 0 || now - tls_fail_logged_at >= kTlsLogMs)) {
        log_tls_failures(); // one line per burst, not one per request
    }
    if (!logbuf.empty() && e.log_fd >= 0) {
        // One write per sweep (not per request); O_APPEND keeps workers' lines whole.
        const ssize_t r = ::write(e.log_fd, logbuf.data(), logbuf.size());
        (void)r;
        logbuf.clear();
    }
}

void Worker::sweep_exchange(Exchange& x) {
    Conn& c = *x.c;
    if (!x.up && x.retry_at && now >= x.retry_at) {
        x.retry_at = 0;
        if (attempt(x)) {
            forward_body(x);
        }
        progress(c);
        return;
    }
    const bool late = (x.request_deadline && now >= x.request_deadline) ||
                      (x.attempt_deadline && now >= x.attempt_deadline);
    if (late && !x.resp_head_sent) {
        Counters::inc(this->c.timeouts);
        if (x.up) {
            x.up->owner = nullptr;
            close_upstream(*x.up);
            x.up = nullptr;
        }
        x.status = 504;
        answer(x, 504, {}, "504 the backend did not answer in time\n", true);
        x.req_done = true;
        finish_exchange(x);
        progress(c);
        return;
    }
    if (x.up && !x.up->connected && now >= x.up->deadline) {
        Upstream& u = *x.up;
        u.owner = nullptr;
        close_upstream(u);
        x.up = nullptr;
        upstream_failed(x, true, "connect timeout");
    }
}

} // namespace sluice::l7
