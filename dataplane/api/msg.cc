#include "msg.h"

#include <cerrno>
#include <chrono>
#include <cstring>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace sluice::msg {

namespace {

void put(std::string& s, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
    }
}

uint64_t get(const char* p, size_t n) {
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
        v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
    }
    return v;
}

using Clock = std::chrono::steady_clock;

int remaining(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left < 0 ? 0 : static_cast<int>(left);
}

Result<void> read_exact(int fd, char* buf, size_t n, Clock::time_point deadline) {
    size_t got = 0;
    while (got < n) {
        pollfd p{fd, POLLIN, 0};
        const int r = poll(&p, 1, remaining(deadline));
        if (r == 0) {
            return fail(Errc::Io, "timed out waiting for the dataplane");
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail(Errc::Io, std::string("poll: ") + strerror(errno));
        }
        const ssize_t k = ::read(fd, buf + got, n - got);
        if (k == 0) {
            return fail(Errc::Io, "dataplane closed the connection");
        }
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return fail(Errc::Io, std::string("read: ") + strerror(errno));
        }
        got += static_cast<size_t>(k);
    }
    return {};
}

} // namespace

std::string encode_frame_header(FrameType type, uint64_t generation, size_t payload_size) {
    std::string s;
    s.reserve(kFrameHeader);
    put(s, kFrameMagic, 4);
    put(s, static_cast<uint8_t>(type), 1);
    put(s, generation, 8);
    put(s, payload_size, 4);
    return s;
}

std::string encode_frame(const Frame& f) {
    std::string s = encode_frame_header(f.type, f.generation, f.payload.size());
    s.reserve(s.size() + f.payload.size());
    s += f.payload;
    return s;
}

Result<Frame> read_frame(int fd, int timeout_ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    char h[kFrameHeader];
    if (auto r = read_exact(fd, h, sizeof h, deadline); !r) {
        return tl::unexpected(r.error());
    }
    if (get(h, 4) != kFrameMagic) {
        return fail(Errc::Invalid, "bad frame magic");
    }
    Frame f;
    const auto type = static_cast<uint8_t>(get(h + 4, 1));
    if (type < 1 || type > 4) {
        return fail(Errc::Invalid, "unknown frame type " + std::to_string(type));
    }
    f.type = static_cast<FrameType>(type);
    f.generation = get(h + 5, 8);
    const size_t len = get(h + 13, 4);
    if (len > kMaxFramePayload) {
        return fail(Errc::LimitExceeded, "frame payload too large");
    }
    f.payload.resize(len);
    if (auto r = read_exact(fd, f.payload.data(), len, deadline); !r) {
        return tl::unexpected(r.error());
    }
    return f;
}

Result<void> write_all(int fd, std::string_view bytes, int timeout_ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    size_t off = 0;
    while (off < bytes.size()) {
        pollfd p{fd, POLLOUT, 0};
        const int r = poll(&p, 1, remaining(deadline));
        if (r == 0) {
            return fail(Errc::Io, "timed out writing to the dataplane");
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            return fail(Errc::Io, std::string("poll: ") + strerror(errno));
        }
        const ssize_t k = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return fail(Errc::Io, std::string("send: ") + strerror(errno));
        }
        off += static_cast<size_t>(k);
    }
    return {};
}

} // namespace sluice::msg
