#include "admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace sluice::dp {

AdminServer::~AdminServer() {
    if (fd_ >= 0) {
        ::close(fd_);
    }
}

Result<void> AdminServer::listen(const std::string& spec) {
    const size_t colon = spec.rfind(':');
    if (colon == std::string::npos) {
        return fail(Errc::Invalid, "admin address " + spec + ": want ADDR:PORT");
    }
    std::string host = spec.substr(0, colon);
    const std::string port_s = spec.substr(colon + 1);
    char* end = nullptr;
    const long port = std::strtol(port_s.c_str(), &end, 10);
    if (port_s.empty() || *end != '\0' || port <= 0 || port > 65535) {
        return fail(Errc::Invalid, "admin address " + spec + ": bad port");
    }
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    sockaddr_storage ss{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(static_cast<uint16_t>(port));
        len = sizeof *v4;
    } else if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(static_cast<uint16_t>(port));
        len = sizeof *v6;
    } else {
        return fail(Errc::Invalid, "admin address " + spec + ": not an IP address");
    }
    fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd_, 16) != 0) {
        return fail(Errc::Io, "admin " + spec + ": " + std::strerror(errno));
    }
    timeval tv{0, 200000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return {};
}

void AdminServer::serve(const std::atomic<bool>& stop, const Handler& handler) {
    while (fd_ >= 0 && !stop.load(std::memory_order_relaxed)) {
        const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            continue;
        }
        timeval tv{1, 0};
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char buf[2048];
        const ssize_t n = ::read(c, buf, sizeof buf - 1);
        const std::string req(buf, n > 0 ? static_cast<size_t>(n) : 0);
        AdminAnswer a;
        if (req.rfind("GET ", 0) != 0) {
            a = {400, "text/plain", "GET only\n"};
        } else {
            const size_t sp = req.find(' ', 4);
            a = handler(req.substr(4, sp == std::string::npos ? std::string::npos : sp - 4));
        }
        const char* reason = a.status == 200 ? "OK" : a.status == 404 ? "Not Found" : "Bad Request";
        const std::string resp = "HTTP/1.1 " + std::to_string(a.status) + " " + reason +
                                 "\r\nContent-Type: " + a.content_type +
                                 "\r\nContent-Length: " + std::to_string(a.body.size()) +
                                 "\r\nConnection: close\r\n\r\n" + a.body;
        const ssize_t w = ::send(c, resp.data(), resp.size(), MSG_NOSIGNAL);
        (void)w;
        ::close(c);
    }
}

std::string prom_escape(const std::string& v) {
    std::string o;
    for (char ch : v) {
        if (ch == '\\' || ch == '"') {
            o += '\\';
        }
        o += ch == '\n' ? ' ' : ch;
    }
    return o;
}

} // namespace sluice::dp
