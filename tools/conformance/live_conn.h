#pragma once

/// @file
/// Traffic mode's connections beyond plain HTTP/1.1: TLS with OpenSSL (SNI, ALPN, trust
/// roots, Go's host name rules, client certificates, and how a handshake failed), HTTP/2
/// exchanges with libnghttp2 (h2 over TLS, h2c with prior knowledge, gRPC unary calls with
/// their trailers), and the suite's TCP echo dialogue (the TLSRoute cases). Every call
/// blocks on one connection of its own until its deadline. Thread: any.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <openssl/types.h>
#include <sys/types.h>

namespace sluice::conformance {

using Clock = std::chrono::steady_clock;
using HeaderList = std::vector<std::pair<std::string, std::string>>;

/// The client side of a TLS connection, as the suite's Go clients configure it.
struct TlsOptions {
    std::string sni;               ///< ServerName; not sent when empty or an IP address
    std::vector<std::string> alpn; ///< offered protocols ("h2", "http/1.1"); none when empty
    /// RootCAs (PEM, each may hold several certificates). Empty: the server's certificate
    /// is not checked at all (InsecureSkipVerify).
    std::vector<std::string> trusted_ca_pems;
    std::string verify_host;                     ///< name checked against the SANs; "" = sni
    std::string client_cert_pem, client_key_pem; ///< presented when asked, when both set
};

/// How a connection or an exchange on it failed.
enum class ConnFail {
    None,
    Connect, ///< TCP connect refused or timed out
    Eof,     ///< the peer closed (also mid-handshake, without an alert)
    Reset,   ///< ECONNRESET
    Alert,   ///< the peer sent a TLS alert
    Verify,  ///< the server certificate did not verify (chain or host name)
    Timeout,
    Other,
};

[[nodiscard]] const char* conn_fail_name(ConnFail f) noexcept;

/// A connected, non-blocking TCP socket (TCP_NODELAY), or -1 with `err` set. Defined in
/// live.cc.
[[nodiscard]] int tcp_connect(const std::string& address, uint16_t port, Clock::time_point deadline,
                              std::string& err);

/// A connected stream, plain TCP or TLS (handshake done).
class Conn {
public:
    /// Connects to address:port and, with `tls`, completes the handshake. nullptr on
    /// failure, with `err` and `why` set.
    [[nodiscard]] static std::unique_ptr<Conn> open(const std::string& address, uint16_t port,
                                                    const TlsOptions* tls,
                                                    Clock::time_point deadline, std::string& err,
                                                    ConnFail* why = nullptr);
    ~Conn();
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    [[nodiscard]] bool send_all(std::string_view data, Clock::time_point deadline, std::string& err,
                                ConnFail* why = nullptr);
    /// Appends what arrives (waiting for something until the deadline). Returns the bytes
    /// read, 0 at EOF, -1 on error or timeout with `err` and `why` set.
    [[nodiscard]] ssize_t recv_some(std::string& into, Clock::time_point deadline, std::string& err,
                                    ConnFail* why = nullptr);
    [[nodiscard]] bool is_tls() const noexcept { return ssl_ != nullptr; }
    [[nodiscard]] std::string alpn() const; ///< the negotiated ALPN protocol, or ""

private:
    Conn() = default;
    int fd_ = -1;
    SSL_CTX* ctx_ = nullptr;
    SSL* ssl_ = nullptr;
};

/// Go's crypto/x509 host name rule: same number of labels, case-insensitive, a "*" only
/// as the whole leftmost label of the pattern.
[[nodiscard]] bool go_host_matches(std::string_view pattern, std::string_view host);

// ------------------------------------------------------------------ HTTP/2

struct H2Request {
    std::string method = "GET";
    std::string scheme = "http";
    std::string authority;
    std::string path = "/";
    HeaderList headers; ///< names are lower-cased on the wire
    std::string body;
};

struct H2Response {
    bool ok = false; ///< a final response arrived and the stream ended without error
    std::string error;
    ConnFail fail = ConnFail::None;
    int status = 0;
    HeaderList headers, trailers;
    std::string body;
};

/// One request on a new HTTP/2 connection (`tls` with ALPN "h2", or h2c with prior
/// knowledge when null).
[[nodiscard]] H2Response h2_exchange(const std::string& address, uint16_t port,
                                     const TlsOptions* tls, const H2Request& req,
                                     std::chrono::milliseconds timeout);

// ------------------------------------------------------------------ gRPC

struct GrpcResult {
    bool ok = false; ///< an answer with a grpc-status arrived
    std::string error;
    int http_status = 0;
    int grpc_status = -1;
    std::string grpc_message;
    std::string message; ///< the response message (protobuf), when one came
};

/// A unary call with an empty request message over h2c prior knowledge (the suite's
/// grpc client): POST `path`, :authority, `metadata` as headers.
[[nodiscard]] GrpcResult grpc_unary(const std::string& address, uint16_t port,
                                    const std::string& authority, const std::string& path,
                                    const HeaderList& metadata, std::chrono::milliseconds timeout);

/// The first length-delimited field `field` of a protobuf message, or nullopt-like
/// (found=false).
[[nodiscard]] std::string_view pb_field(std::string_view msg, uint32_t field, bool& found);

/// The suite's gRPC status names ("OK", "Unimplemented", ...) to codes; -1 if unknown.
[[nodiscard]] int grpc_code(std::string_view name);

// ------------------------------------------------------------------ TCP echo

struct TcpEchoResult {
    bool ok = false; ///< the whole dialogue happened
    std::string error;
    ConnFail fail = ConnFail::None;
    std::string is_tls;    ///< the answer to IS_TLS ("true" / "false")
    std::string test_json; ///< the answer to TEST
};

/// The suite's TCP echo dialogue (tcp.WaitForValidTCPResponse): welcome line, PING/PONG,
/// IS_TLS, TEST, on a new connection (TLS when `tls` is set).
[[nodiscard]] TcpEchoResult tcp_echo(const std::string& address, uint16_t port,
                                     const TlsOptions* tls, std::chrono::milliseconds timeout);

} // namespace sluice::conformance
