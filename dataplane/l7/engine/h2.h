#pragma once

/// @file
/// HTTP/2 for the L7 engine: one H2Session wraps one nghttp2 session, either the server side
/// of a client connection (h2 by ALPN, h2c with prior knowledge or Upgrade) or the client
/// side of a backend connection (appProtocol kubernetes.io/h2c, gRPC). nghttp2 does the
/// framing, HPACK, flow control and protocol checks (RFC 9113 messaging rules: pseudo
/// headers, connection-specific fields, content-length against DATA); this class turns its
/// callbacks into per-stream events for the engine and buffers each stream's outgoing body.
///
/// I/O is the caller's: feed() takes bytes read from the socket, produce() appends the
/// frames to send. Events (Handler) are delivered from inside feed() only; the handler may
/// call submit_*(), send_data(), finish(), reset() and consume() from them, but not feed()
/// or produce() (nghttp2 is not re-entrant there).
///
/// Flow control is manual: received DATA stays counted against the peer's window until the
/// engine calls consume() (when the bytes have moved on), so a slow consumer bounds what a
/// peer can make the engine buffer. Outgoing bodies are buffered per stream (send_data) and
/// framed as the peer's windows allow; buffered() tells the engine when to stop reading the
/// other side.
///
/// Defences (server role): SETTINGS_MAX_CONCURRENT_STREAMS (extra streams are refused), a
/// header list limit (size and count; beyond it the stream's head is flagged too_large, and
/// four times beyond it the connection is closed: HPACK bombs), nghttp2's CONTINUATION,
/// SETTINGS and outbound-ACK flood limits, and counts per time window of client resets
/// (rapid reset) and of cheap frames (PING, SETTINGS, PRIORITY, empty DATA, invalid
/// frames); over a count the session ends with GOAWAY(ENHANCE_YOUR_CALM). After the server
/// ends a stream while the client is still sending, it sends RST_STREAM(NO_ERROR).
///
/// Thread: one L7 worker owns a session; nothing is shared.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct nghttp2_session;

namespace sluice::l7 {

/// One header field. Names are lower-case on receipt (HTTP/2 requires it); names given to
/// submit_*()/finish() are lower-cased on the way out.
struct H2Header {
    std::string name;
    std::string value;
};

/// A received header block: a request or response head, or trailers.
struct H2Head {
    std::vector<H2Header> headers; ///< arrival order, pseudo-header fields first
    uint16_t status = 0;           ///< client role: :status of the response
    bool end_stream = false;       ///< END_STREAM on this block: no body follows
    bool too_large = false;        ///< over H2Limits: fields dropped, answer 431
    /// First field named `name` (lower-case), "" if absent.
    [[nodiscard]] std::string_view get(std::string_view name) const noexcept;
};

struct H2Limits {
    uint32_t max_concurrent_streams = 100; ///< SETTINGS_MAX_CONCURRENT_STREAMS (server)
    uint32_t max_header_list = 16384;      ///< name + value + 32 per field, per block
    uint32_t max_headers = 100;            ///< fields per block
    uint32_t stream_window = 256 * 1024;   ///< SETTINGS_INITIAL_WINDOW_SIZE we announce
    uint32_t connection_window = 1u << 20; ///< our connection-level receive window
    uint32_t window_ms = 10000;            ///< period of the two counts below
    uint32_t max_resets = 100;             ///< client RST_STREAMs per period (rapid reset)
    uint32_t max_cheap_frames = 1000;      ///< PING/SETTINGS/PRIORITY/empty DATA per period
    uint32_t max_continuations = 8;        ///< CONTINUATION frames after one HEADERS
};

class H2Session {
public:
    enum class Role : uint8_t { Server, Client };

    /// Events of one session. `stream` is the HTTP/2 stream id.
    class Handler {
    public:
        /// A request head (server) or a final response head (client; 1xx are skipped).
        virtual void on_head(int32_t stream, H2Head& head) = 0;
        /// Body bytes; count them with consume() once they have moved on.
        virtual void on_data(int32_t stream, std::string_view data) = 0;
        /// Trailers (END_STREAM follows: on_end).
        virtual void on_trailers(int32_t stream, H2Head& trailers) = 0;
        /// The peer finished its side of the stream (after on_head/on_data/on_trailers).
        virtual void on_end(int32_t stream) = 0;
        /// The stream is gone: both sides finished (error_code 0), reset by either side, or
        /// refused. No event for the stream follows.
        virtual void on_close(int32_t stream, uint32_t error_code) = 0;

    protected:
        ~Handler() = default;
    };

    /// A new session with its SETTINGS queued. nullptr if nghttp2 cannot allocate.
    [[nodiscard]] static std::unique_ptr<H2Session> create(Role role, Handler& handler,
                                                           const H2Limits& limits);
    /// Server session for an HTTP/1.1 `Upgrade: h2c` request: `settings` is the decoded
    /// HTTP2-Settings payload; stream 1 is the upgraded request (its body, if any, already
    /// received), half-closed by the client. nullptr if the payload is invalid.
    [[nodiscard]] static std::unique_ptr<H2Session> create_upgraded(Handler& handler,
                                                                    const H2Limits& limits,
                                                                    std::string_view settings,
                                                                    bool head_request);

    ~H2Session();
    H2Session(const H2Session&) = delete;
    H2Session& operator=(const H2Session&) = delete;

    /// Processes bytes read from the peer (all of them). `now_ms` clocks the flood counts.
    /// @return false when the session failed (protocol error, flood, bad preface); a GOAWAY
    ///   is queued when one makes sense: produce() it, then close.
    [[nodiscard]] bool feed(std::string_view in, uint64_t now_ms);

    /// Appends frames to send to `out` until out.size() >= `limit` or nothing is left.
    /// @return false on a fatal session error (close the connection).
    [[nodiscard]] bool produce(std::string& out, size_t limit);

    /// Nothing more to read or write: the connection can be closed.
    [[nodiscard]] bool want_close() const noexcept;
    /// New streams may be submitted (client role: no GOAWAY either way).
    [[nodiscard]] bool can_submit() const noexcept;
    /// Streams open (not yet closed) in this session.
    [[nodiscard]] size_t open_streams() const noexcept { return streams_.size(); }

    /// Server: the response head; `end_stream` = no body (trailers-only or empty answer),
    /// otherwise the body follows through send_data()/finish(). @return false if the stream
    /// is gone.
    bool submit_response(int32_t stream, uint16_t status, const std::vector<H2Header>& headers,
                         bool end_stream);
    /// Server: an interim (1xx) response, e.g. 100 Continue for a client that waits for it.
    void submit_interim(int32_t stream, uint16_t status);
    /// Client: a request (pseudo-header fields first in `headers`); the body follows
    /// through send_data()/finish() unless `end_stream`. @return the stream id, or < 0.
    int32_t submit_request(const std::vector<H2Header>& headers, bool end_stream);
    /// Queues body bytes for `stream` (ignored once the stream is gone or finished).
    void send_data(int32_t stream, std::string_view data);
    /// Ends the body, with trailers when `trailers` is non-null and non-empty.
    void finish(int32_t stream, const std::vector<H2Header>* trailers);
    /// Sends RST_STREAM.
    void reset(int32_t stream, uint32_t error_code);
    /// Body bytes of `stream` not yet framed.
    [[nodiscard]] size_t buffered(int32_t stream) const noexcept;
    /// Body bytes of every stream not yet framed.
    [[nodiscard]] size_t buffered_total() const noexcept { return buffered_total_; }
    /// Received body bytes of `stream` have moved on: the peer may send that many more.
    void consume(int32_t stream, size_t n);
    /// Received body bytes of `stream` not yet consumed.
    [[nodiscard]] size_t unconsumed(int32_t stream) const noexcept;
    /// GOAWAY: graceful (NO_ERROR, streams in flight finish) or terminating (`error_code`).
    void goaway(bool graceful, uint32_t error_code = 0);

    /// Why the session failed or was ended by a defence ("" while fine): "rapid reset",
    /// "frame flood", "header list flood", or nghttp2's error text.
    [[nodiscard]] std::string_view failure() const noexcept { return failure_; }
    /// The session ended because a defence tripped (a subset of failure()).
    [[nodiscard]] bool abused() const noexcept { return abused_; }

    /// HTTP/2 error codes used by the engine (RFC 9113 7).
    static constexpr uint32_t kNoError = 0, kProtocolError = 1, kInternalError = 2,
                              kRefusedStream = 7, kCancel = 8, kEnhanceYourCalm = 11;

    struct Stream; ///< per-stream state (h2.cc)

private:
    H2Session(Role role, Handler& handler, const H2Limits& limits);
    [[nodiscard]] bool init(std::string_view upgrade_settings, bool upgrade, bool head_request);
    Stream* find(int32_t id) const noexcept;
    Stream* add(int32_t id);
    void tripped(const char* why);

    // nghttp2 callbacks (static trampolines in h2.cc reach these).
    friend struct H2Callbacks;

    Role role_;
    Handler& h_;
    H2Limits lim_;
    nghttp2_session* s_ = nullptr;
    std::unordered_map<int32_t, std::unique_ptr<Stream>> streams_;
    size_t buffered_total_ = 0;
    uint64_t now_ = 0;
    uint64_t window_start_ = 0;
    uint32_t resets_ = 0;
    uint32_t cheap_ = 0;
    bool dying_ = false;
    bool abused_ = false;
    std::string failure_;
};

/// Decodes base64url (RFC 4648 5, padding optional) as HTTP2-Settings uses it.
/// @return false on an invalid character.
[[nodiscard]] bool base64url_decode(std::string_view in, std::string& out);

} // namespace sluice::l7
