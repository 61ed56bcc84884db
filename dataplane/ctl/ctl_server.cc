#include "ctl_server.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "msg.h"
#include "ir_codec.h"

namespace sluice::dp {

using msg::Frame;
using msg::FrameType;

CtlServer::~CtlServer() {
    if (listen_fd_ >= 0) {
        ::close(listen_fd_);
        ::unlink(path_.c_str());
    }
}

Result<void> CtlServer::listen() {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return fail(Errc::Io, std::string("socket: ") + strerror(errno));
    }
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path_.size() >= sizeof a.sun_path) {
        ::close(fd);
        return fail(Errc::Invalid, "socket path too long: " + path_);
    }
    std::memcpy(a.sun_path, path_.c_str(), path_.size() + 1);
    std::error_code ec; // e.g. /run/sluice on a fresh boot
    std::filesystem::create_directories(std::filesystem::path(path_).parent_path(), ec);
    ::unlink(path_.c_str()); // a stale socket of a previous run
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0) {
        const int e = errno;
        ::close(fd);
        return fail(Errc::Io, "bind/listen " + path_ + ": " + strerror(e));
    }
    listen_fd_ = fd;
    return {};
}

void CtlServer::run() {
    while (!stop_.load(std::memory_order_relaxed)) {
        pollfd p{listen_fd_, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) {
            continue;
        }
        const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            continue;
        }
        serve(c);
        ::close(c);
    }
}

void CtlServer::serve(int fd) {
    while (!stop_.load(std::memory_order_relaxed)) {
        pollfd p[2] = {{fd, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
        const int r = poll(p, 2, 200);
        if (r == 0) {
            continue;
        }
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if ((p[1].revents & POLLIN) && !(p[0].revents & POLLIN)) {
            // A new controlplane connected (a restart, or a new leader): it replaces the
            // old connection; the tables stay as they are until it sends IR.
            return;
        }
        auto f = msg::read_frame(fd, 10000);
        if (!f) {
            return; // controlplane gone or garbage: keep the tables, wait for the next one
        }
        if (f->type != FrameType::Ir) {
            continue;
        }
        Frame reply{FrameType::Ack, f->generation, ""};
        const uint64_t h = ir::hash_of(f->payload);
        if (h == hash_.load(std::memory_order_relaxed) && applied_.load() != 0) {
            // The same IR again (a restarted controlplane resyncing): nothing to rebuild.
            applied_.store(f->generation, std::memory_order_relaxed);
            reply.payload = last_note_;
        } else {
            auto decoded = ir::decode(f->payload);
            Result<std::string> ok = decoded ? apply_(std::move(*decoded), f->generation)
                                             : Result<std::string>(tl::unexpected(decoded.error()));
            if (ok) {
                applied_.store(f->generation, std::memory_order_relaxed);
                hash_.store(h, std::memory_order_relaxed);
                last_note_ = *ok;
                reply.payload = *ok;
            } else {
                reply.type = FrameType::Nack;
                reply.payload = ok.error().message;
                std::cerr << "sluice-dataplane: NACK generation " << f->generation << ": "
                          << ok.error().message << std::endl;
            }
        }
        if (!msg::write_all(fd, msg::encode_frame(reply), 5000)) {
            return;
        }
    }
}

} // namespace sluice::dp
