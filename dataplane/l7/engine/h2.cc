#include "h2.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>

namespace sluice::l7 {

struct H2Session::Stream {
    int32_t id = 0;
    H2Head head;             ///< block being received
    size_t head_bytes = 0;   ///< its size as SETTINGS_MAX_HEADER_LIST_SIZE counts it
    bool final_seen = false; ///< the request / final response head was delivered
    bool remote_ended = false;
    // Outgoing body.
    std::string out;
    size_t off = 0;
    bool eof = false;
    bool deferred = false; ///< the data provider returned DEFERRED: resume on new bytes
    std::vector<H2Header> trailers;
    size_t unconsumed = 0; ///< received DATA bytes not yet given back to the window
};

std::string_view H2Head::get(std::string_view name) const noexcept {
    for (const H2Header& h : headers) {
        if (h.name == name) {
            return h.value;
        }
    }
    return {};
}

namespace {

std::string lower(std::string_view s) {
    std::string o(s);
    for (char& ch : o) {
        if (ch >= 'A' && ch <= 'Z') {
            ch = static_cast<char>(ch - 'A' + 'a');
        }
    }
    return o;
}

/// nghttp2_nv views over lower-cased copies of the names (nghttp2 copies nv at submit).
struct NvList {
    std::vector<std::string> names;
    std::vector<nghttp2_nv> nv;
    void add(std::string_view name, std::string_view value) {
        names.push_back(lower(name));
        nghttp2_nv n{};
        n.name = reinterpret_cast<uint8_t*>(names.back().data());
        n.namelen = names.back().size();
        n.value = reinterpret_cast<uint8_t*>(const_cast<char*>(value.data()));
        n.valuelen = value.size();
        n.flags = NGHTTP2_NV_FLAG_NONE;
        nv.push_back(n);
    }
    void reserve(size_t n) {
        names.reserve(n); // pointers into names must stay put
        nv.reserve(n);
    }
};

} // namespace

/// Static trampolines from nghttp2's C callbacks to the session.
struct H2Callbacks {
    static H2Session& self(void* ud) { return *static_cast<H2Session*>(ud); }

    static void cheap(H2Session& s) {
        if (++s.cheap_ > s.lim_.max_cheap_frames) {
            s.tripped("frame flood");
        }
    }

    static void roll(H2Session& s) {
        if (s.now_ - s.window_start_ >= s.lim_.window_ms) {
            s.window_start_ = s.now_;
            s.resets_ = 0;
            s.cheap_ = 0;
        }
    }

    static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* ud) {
        H2Session& s = self(ud);
        if (s.dying_ || f->hd.type != NGHTTP2_HEADERS) {
            return 0;
        }
        H2Session::Stream* st = s.find(f->hd.stream_id);
        if (!st && s.role_ == H2Session::Role::Server && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            st = s.add(f->hd.stream_id);
        }
        if (st) {
            st->head = H2Head{};
            st->head_bytes = 0;
        }
        return 0;
    }

    static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name,
                         size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* ud) {
        H2Session& s = self(ud);
        if (s.dying_ || f->hd.type != NGHTTP2_HEADERS) {
            return 0;
        }
        H2Session::Stream* st = s.find(f->hd.stream_id);
        if (!st) {
            return 0;
        }
        st->head_bytes += namelen + valuelen + 32;
        if (st->head_bytes > 4ull * s.lim_.max_header_list) {
            s.tripped("header list flood"); // an HPACK bomb: stop decoding altogether
            return 0;
        }
        if (st->head.too_large) {
            return 0;
        }
        if (st->head_bytes > s.lim_.max_header_list ||
            st->head.headers.size() >= s.lim_.max_headers) {
            st->head.too_large = true;
            st->head.headers.clear();
            st->head.headers.shrink_to_fit();
            return 0;
        }
        const std::string_view n(reinterpret_cast<const char*>(name), namelen);
        const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
        if (n == ":status" && valuelen == 3) {
            st->head.status =
                static_cast<uint16_t>((v[0] - '0') * 100 + (v[1] - '0') * 10 + (v[2] - '0'));
        }
        st->head.headers.push_back({std::string(n), std::string(v)});
        return 0;
    }

    static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* ud) {
        H2Session& s = self(ud);
        if (s.dying_) {
            return 0;
        }
        roll(s);
        const int32_t id = f->hd.stream_id;
        const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        switch (f->hd.type) {
        case NGHTTP2_DATA: {
            if (f->hd.length == 0 && !end) {
                cheap(s);
            }
            H2Session::Stream* st = s.find(id);
            if (end && st) {
                st->remote_ended = true;
                s.h_.on_end(id);
            }
            break;
        }
        case NGHTTP2_HEADERS: {
            H2Session::Stream* st = s.find(id);
            if (!st) {
                break;
            }
            st->head.end_stream = end;
            if (end) {
                st->remote_ended = true;
            }
            if (!st->final_seen) {
                if (s.role_ == H2Session::Role::Client && st->head.status >= 100 &&
                    st->head.status < 200) {
                    st->head = H2Head{}; // interim response: wait for the final one
                    break;
                }
                st->final_seen = true;
                s.h_.on_head(id, st->head);
            } else {
                s.h_.on_trailers(id, st->head);
            }
            if ((st = s.find(id)) != nullptr) {
                st->head = H2Head{};
                if (end) {
                    s.h_.on_end(id);
                }
            }
            break;
        }
        case NGHTTP2_RST_STREAM:
            if (s.role_ == H2Session::Role::Server && ++s.resets_ > s.lim_.max_resets) {
                s.tripped("rapid reset");
            }
            break;
        case NGHTTP2_PING:
        case NGHTTP2_SETTINGS:
            if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) {
                cheap(s);
            }
            break;
        case NGHTTP2_PRIORITY:
            cheap(s);
            break;
        default:
            break;
        }
        return 0;
    }

    static int on_invalid_frame(nghttp2_session*, const nghttp2_frame*, int, void* ud) {
        H2Session& s = self(ud);
        if (!s.dying_) {
            roll(s);
            cheap(s);
        }
        return 0;
    }

    static int on_data_chunk(nghttp2_session* ng, uint8_t, int32_t id, const uint8_t* data,
                             size_t len, void* ud) {
        H2Session& s = self(ud);
        if (s.dying_) {
            return 0;
        }
        H2Session::Stream* st = s.find(id);
        if (!st) {
            nghttp2_session_consume_connection(ng, len);
            return 0;
        }
        st->unconsumed += len;
        s.h_.on_data(id, std::string_view(reinterpret_cast<const char*>(data), len));
        return 0;
    }

    static int on_stream_close(nghttp2_session* ng, int32_t id, uint32_t code, void* ud) {
        H2Session& s = self(ud);
        if (s.dying_) {
            return 0;
        }
        auto it = s.streams_.find(id);
        if (it == s.streams_.end()) {
            return 0;
        }
        s.h_.on_close(id, code);
        it = s.streams_.find(id); // the handler may not erase, but stay safe
        if (it != s.streams_.end()) {
            s.buffered_total_ -= it->second->out.size() - it->second->off;
            if (it->second->unconsumed > 0) {
                // What the engine never consumed still counts against the connection window.
                nghttp2_session_consume_connection(ng, it->second->unconsumed);
            }
            s.streams_.erase(it);
        }
        return 0;
    }

    static int on_frame_send(nghttp2_session* ng, const nghttp2_frame* f, void* ud) {
        H2Session& s = self(ud);
        if (s.dying_ || s.role_ != H2Session::Role::Server ||
            (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) ||
            !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            return 0;
        }
        // The response is complete while the client is still sending: ask it to stop
        // (RFC 9113 8.1), so an unread upload does not hold the stream open.
        const H2Session::Stream* st = s.find(f->hd.stream_id);
        if (st && !st->remote_ended) {
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_NO_ERROR);
        }
        return 0;
    }

    static ssize_t read_body(nghttp2_session* ng, int32_t id, uint8_t* buf, size_t len,
                             uint32_t* flags, nghttp2_data_source* src, void* ud) {
        auto* st = static_cast<H2Session::Stream*>(src->ptr);
        const size_t avail = st->out.size() - st->off;
        const size_t n = std::min(len, avail);
        if (n > 0) {
            self(ud).buffered_total_ -= n;
            std::memcpy(buf, st->out.data() + st->off, n);
            st->off += n;
            if (st->off == st->out.size()) {
                st->out.clear();
                st->off = 0;
            } else if (st->off > 65536 && st->off > st->out.size() / 2) {
                st->out.erase(0, st->off);
                st->off = 0;
            }
        }
        if (st->eof && st->out.size() == st->off) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            if (!st->trailers.empty()) {
                NvList nv;
                nv.reserve(st->trailers.size());
                for (const H2Header& h : st->trailers) {
                    nv.add(h.name, h.value);
                }
                if (nghttp2_submit_trailer(ng, id, nv.nv.data(), nv.nv.size()) == 0) {
                    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
                }
            }
            return static_cast<ssize_t>(n);
        }
        if (n == 0) {
            st->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
        return static_cast<ssize_t>(n);
    }
};

H2Session::H2Session(Role role, Handler& handler, const H2Limits& limits)
    : role_(role)
    , h_(handler)
    , lim_(limits) {}

H2Session::~H2Session() {
    dying_ = true;
    if (s_) {
        nghttp2_session_del(s_);
    }
}

std::unique_ptr<H2Session> H2Session::create(Role role, Handler& handler, const H2Limits& limits) {
    std::unique_ptr<H2Session> s(new H2Session(role, handler, limits));
    if (!s->init({}, false, false)) {
        return nullptr;
    }
    return s;
}

std::unique_ptr<H2Session> H2Session::create_upgraded(Handler& handler, const H2Limits& limits,
                                                      std::string_view settings,
                                                      bool head_request) {
    std::unique_ptr<H2Session> s(new H2Session(Role::Server, handler, limits));
    if (!s->init(settings, true, head_request)) {
        return nullptr;
    }
    return s;
}

bool H2Session::init(std::string_view upgrade_settings, bool upgrade, bool head_request) {
    nghttp2_session_callbacks* cb = nullptr;
    if (nghttp2_session_callbacks_new(&cb) != 0) {
        return false;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, H2Callbacks::on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, H2Callbacks::on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, H2Callbacks::on_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, H2Callbacks::on_invalid_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, H2Callbacks::on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, H2Callbacks::on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, H2Callbacks::on_frame_send);
    nghttp2_option* opt = nullptr;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return false;
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_continuations(opt, lim_.max_continuations);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    nghttp2_option_set_max_settings(opt, 32);
    int rv = role_ == Role::Server ? nghttp2_session_server_new2(&s_, cb, this, opt)
                                   : nghttp2_session_client_new2(&s_, cb, this, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0) {
        s_ = nullptr;
        return false;
    }
    if (upgrade) {
        Stream* st = add(1);
        st->final_seen = true;
        st->remote_ended = true;
        rv = nghttp2_session_upgrade2(s_, reinterpret_cast<const uint8_t*>(upgrade_settings.data()),
                                      upgrade_settings.size(), head_request ? 1 : 0, st);
        if (rv != 0) {
            return false;
        }
    }
    std::vector<nghttp2_settings_entry> iv;
    iv.push_back({NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, lim_.stream_window});
    if (role_ == Role::Server) {
        iv.push_back({NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, lim_.max_concurrent_streams});
        iv.push_back({NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, lim_.max_header_list});
        iv.push_back({NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1});
    } else {
        iv.push_back({NGHTTP2_SETTINGS_ENABLE_PUSH, 0});
    }
    if (nghttp2_submit_settings(s_, NGHTTP2_FLAG_NONE, iv.data(), iv.size()) != 0) {
        return false;
    }
    if (lim_.connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE) {
        nghttp2_session_set_local_window_size(s_, NGHTTP2_FLAG_NONE, 0,
                                              static_cast<int32_t>(lim_.connection_window));
    }
    return true;
}

H2Session::Stream* H2Session::find(int32_t id) const noexcept {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
}

H2Session::Stream* H2Session::add(int32_t id) {
    auto st = std::make_unique<Stream>();
    st->id = id;
    Stream* p = st.get();
    streams_[id] = std::move(st);
    return p;
}

void H2Session::tripped(const char* why) {
    if (!failure_.empty()) {
        return;
    }
    failure_ = why;
    abused_ = true;
    nghttp2_session_terminate_session(s_, NGHTTP2_ENHANCE_YOUR_CALM);
}

bool H2Session::feed(std::string_view in, uint64_t now_ms) {
    now_ = now_ms;
    if (window_start_ == 0) {
        window_start_ = now_ms;
    }
    if (!failure_.empty()) {
        return false;
    }
    const ssize_t r =
        nghttp2_session_mem_recv(s_, reinterpret_cast<const uint8_t*>(in.data()), in.size());
    if (r < 0) {
        if (failure_.empty()) {
            failure_ = nghttp2_strerror(static_cast<int>(r));
            if (r == NGHTTP2_ERR_FLOODED || r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
                abused_ = true;
            }
        }
        if (r != NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            nghttp2_session_terminate_session(s_, abused_ ? NGHTTP2_ENHANCE_YOUR_CALM
                                                          : NGHTTP2_PROTOCOL_ERROR);
        }
        return false;
    }
    return failure_.empty();
}

bool H2Session::produce(std::string& out, size_t limit) {
    while (out.size() < limit) {
        const uint8_t* p = nullptr;
        const ssize_t n = nghttp2_session_mem_send(s_, &p);
        if (n < 0) {
            if (failure_.empty()) {
                failure_ = nghttp2_strerror(static_cast<int>(n));
            }
            return false;
        }
        if (n == 0) {
            break;
        }
        out.append(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
    }
    return true;
}

bool H2Session::want_close() const noexcept {
    return nghttp2_session_want_read(s_) == 0 && nghttp2_session_want_write(s_) == 0;
}

bool H2Session::can_submit() const noexcept {
    return failure_.empty() && nghttp2_session_check_request_allowed(s_) != 0;
}

bool H2Session::submit_response(int32_t stream, uint16_t status,
                                const std::vector<H2Header>& headers, bool end_stream) {
    Stream* st = find(stream);
    if (!st) {
        return false;
    }
    char code[4] = {static_cast<char>('0' + status / 100 % 10),
                    static_cast<char>('0' + status / 10 % 10), static_cast<char>('0' + status % 10),
                    0};
    NvList nv;
    nv.reserve(headers.size() + 1);
    nv.add(":status", std::string_view(code, 3));
    for (const H2Header& h : headers) {
        nv.add(h.name, h.value);
    }
    nghttp2_data_provider prd{};
    prd.source.ptr = st;
    prd.read_callback = H2Callbacks::read_body;
    if (end_stream) {
        st->eof = true;
    }
    return nghttp2_submit_response(s_, stream, nv.nv.data(), nv.nv.size(),
                                   end_stream ? nullptr : &prd) == 0;
}

void H2Session::submit_interim(int32_t stream, uint16_t status) {
    if (!find(stream) || status < 100 || status > 199) {
        return;
    }
    const char code[3] = {'1', static_cast<char>('0' + status / 10 % 10),
                          static_cast<char>('0' + status % 10)};
    NvList nv;
    nv.reserve(1);
    nv.add(":status", std::string_view(code, 3));
    nghttp2_submit_headers(s_, NGHTTP2_FLAG_NONE, stream, nullptr, nv.nv.data(), nv.nv.size(),
                           nullptr);
}

int32_t H2Session::submit_request(const std::vector<H2Header>& headers, bool end_stream) {
    NvList nv;
    nv.reserve(headers.size());
    for (const H2Header& h : headers) {
        nv.add(h.name, h.value);
    }
    auto holder = std::make_unique<Stream>();
    nghttp2_data_provider prd{};
    prd.source.ptr = holder.get();
    prd.read_callback = H2Callbacks::read_body;
    if (end_stream) {
        holder->eof = true;
    }
    const int32_t id = nghttp2_submit_request(s_, nullptr, nv.nv.data(), nv.nv.size(),
                                              end_stream ? nullptr : &prd, holder.get());
    if (id < 0) {
        return id;
    }
    holder->id = id;
    streams_[id] = std::move(holder);
    return id;
}

void H2Session::send_data(int32_t stream, std::string_view data) {
    Stream* st = find(stream);
    if (!st || st->eof || data.empty()) {
        return;
    }
    st->out.append(data.data(), data.size());
    buffered_total_ += data.size();
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(s_, stream);
    }
}

void H2Session::finish(int32_t stream, const std::vector<H2Header>* trailers) {
    Stream* st = find(stream);
    if (!st || st->eof) {
        return;
    }
    st->eof = true;
    if (trailers) {
        st->trailers = *trailers;
    }
    if (st->deferred) {
        st->deferred = false;
        nghttp2_session_resume_data(s_, stream);
    }
}

void H2Session::reset(int32_t stream, uint32_t error_code) {
    if (find(stream)) {
        nghttp2_submit_rst_stream(s_, NGHTTP2_FLAG_NONE, stream, error_code);
    }
}

size_t H2Session::buffered(int32_t stream) const noexcept {
    const Stream* st = find(stream);
    return st ? st->out.size() - st->off : 0;
}

void H2Session::consume(int32_t stream, size_t n) {
    Stream* st = find(stream);
    if (!st) {
        return;
    }
    n = std::min(n, st->unconsumed);
    if (n == 0) {
        return;
    }
    st->unconsumed -= n;
    nghttp2_session_consume(s_, stream, n);
}

size_t H2Session::unconsumed(int32_t stream) const noexcept {
    const Stream* st = find(stream);
    return st ? st->unconsumed : 0;
}

void H2Session::goaway(bool graceful, uint32_t error_code) {
    if (graceful) {
        nghttp2_submit_goaway(s_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(s_),
                              NGHTTP2_NO_ERROR, nullptr, 0);
    } else {
        nghttp2_session_terminate_session(s_, error_code);
    }
}

bool base64url_decode(std::string_view in, std::string& out) {
    out.clear();
    uint32_t acc = 0;
    int bits = 0;
    for (char ch : in) {
        int v;
        if (ch >= 'A' && ch <= 'Z') {
            v = ch - 'A';
        } else if (ch >= 'a' && ch <= 'z') {
            v = ch - 'a' + 26;
        } else if (ch >= '0' && ch <= '9') {
            v = ch - '0' + 52;
        } else if (ch == '-' || ch == '+') {
            v = 62;
        } else if (ch == '_' || ch == '/') {
            v = 63;
        } else if (ch == '=') {
            break;
        } else {
            return false;
        }
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return true;
}

} // namespace sluice::l7
