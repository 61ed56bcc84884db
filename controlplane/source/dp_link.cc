#include "dp_link.h"

using sluice::msg::encode_frame_header;
using sluice::msg::read_frame;
using sluice::msg::write_all;

#include <cerrno>
#include <chrono>
#include <cstring>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace sluice::cp {

DpLink::~DpLink() { close_fd(); }

void DpLink::close_fd() noexcept {
    if (fd_ >= 0) {
        ::close(fd_);
        fd_ = -1;
    }
}

Result<void> DpLink::connect_once() {
    if (fd_ >= 0) {
        return {};
    }
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return fail(Errc::Io, std::string("socket: ") + strerror(errno));
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path_.size() >= sizeof addr.sun_path) {
        ::close(fd);
        return fail(Errc::Invalid, "dataplane socket path too long: " + path_);
    }
    std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        const int e = errno;
        ::close(fd);
        return fail(Errc::Io, "connect " + path_ + ": " + strerror(e));
    }
    fd_ = fd;
    return {};
}

bool DpLink::peer_gone() noexcept {
    if (fd_ < 0) {
        return false;
    }
    pollfd p{fd_, POLLIN | POLLRDHUP, 0};
    if (::poll(&p, 1, 0) <= 0) {
        return false;
    }
    bool gone = (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) != 0;
    if (!gone && (p.revents & POLLIN) != 0) {
        char c;
        gone = ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0; // EOF; data: a late answer
    }
    if (gone) {
        close_fd();
    }
    return gone;
}

Result<PushResult> DpLink::push(uint64_t generation, std::string_view ir_bytes, int timeout_ms) {
    // One retry: a dataplane that restarted since the last push shows up as a dead socket.
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (auto c = connect_once(); !c) {
            return tl::unexpected(c.error());
        }
        // Header, then the IR from where it is (megabytes: no copy into a frame).
        if (auto w = write_all(fd_, encode_frame_header(FrameType::Ir, generation, ir_bytes.size()),
                               timeout_ms);
            !w) {
            close_fd();
            continue;
        }
        if (auto w = write_all(fd_, ir_bytes, timeout_ms); !w) {
            close_fd();
            continue;
        }
        while (true) {
            auto r = read_frame(fd_, timeout_ms);
            if (!r) {
                close_fd();
                if (attempt == 0 && r.error().message.find("closed") != std::string::npos) {
                    break; // reconnect and resend once
                }
                return tl::unexpected(r.error());
            }
            if (r->generation != generation) {
                continue; // a late answer for an older generation
            }
            if (r->type == FrameType::Ack) {
                return PushResult{true, r->payload};
            }
            if (r->type == FrameType::Nack) {
                return PushResult{false, r->payload};
            }
        }
    }
    return fail(Errc::Io, "dataplane did not answer");
}

} // namespace sluice::cp
