#include "live.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <ostream>
#include <random>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "yaml_doc.h"

namespace sluice::conformance {

namespace fs = std::filesystem;

namespace {

// ------------------------------------------------------------------ cleanup on signals
//
// The handler may only use async-signal-safe calls: it kills the recorded process groups
// and removes the temporary directory with openat/getdents64/unlinkat.

constexpr size_t kMaxChildren = 512;
std::atomic<pid_t> g_children[kMaxChildren];
std::atomic<size_t> g_n_children{0};
char g_tmp_dir[4096];
std::atomic<bool> g_have_tmp{false};

void remember_child(pid_t pid) {
    const size_t i = g_n_children.fetch_add(1);
    if (i < kMaxChildren) {
        g_children[i].store(pid);
    }
}

void forget_child(pid_t pid) {
    const size_t n = std::min(g_n_children.load(), kMaxChildren);
    for (size_t i = 0; i < n; ++i) {
        if (g_children[i].load() == pid) {
            g_children[i].store(0);
        }
    }
}

void kill_all_children(int sig) {
    const size_t n = std::min(g_n_children.load(), kMaxChildren);
    for (size_t i = 0; i < n; ++i) {
        const pid_t p = g_children[i].load();
        if (p > 0) {
            ::kill(-p, sig);
        }
    }
}

/// Removes everything below `dirfd` (async-signal-safe).
void remove_below(int dirfd, int depth) {
    if (depth > 16) {
        return;
    }
    alignas(8) char buf[4096];
    for (int pass = 0; pass < 64; ++pass) {
        ::lseek(dirfd, 0, SEEK_SET);
        bool any = false;
        for (;;) {
            const long n = ::syscall(SYS_getdents64, dirfd, buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            for (long off = 0; off < n;) {
                // linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[]
                unsigned short reclen = 0;
                std::memcpy(&reclen, buf + off + 16, sizeof reclen);
                const unsigned char type = static_cast<unsigned char>(buf[off + 18]);
                const char* name = buf + off + 19;
                off += reclen;
                if (reclen == 0) {
                    return;
                }
                if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) {
                    continue;
                }
                any = true;
                if (type == DT_DIR) {
                    const int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
                    if (fd >= 0) {
                        remove_below(fd, depth + 1);
                        ::close(fd);
                    }
                    ::unlinkat(dirfd, name, AT_REMOVEDIR);
                } else {
                    ::unlinkat(dirfd, name, 0);
                }
            }
        }
        if (!any) {
            return;
        }
    }
}

extern "C" void on_fatal_signal(int sig) {
    kill_all_children(SIGKILL);
    if (g_have_tmp.load()) {
        const int fd = ::open(g_tmp_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (fd >= 0) {
            remove_below(fd, 0);
            ::close(fd);
        }
        ::rmdir(g_tmp_dir);
    }
    ::_exit(128 + sig);
}

void install_signal_cleanup() {
    struct sigaction sa {};
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT}) {
        sigaction(s, &sa, nullptr);
    }
    std::signal(SIGPIPE, SIG_IGN);
}

// ------------------------------------------------------------------ processes

/// Starts argv[0] (searched in PATH) in its own process group with stdout and stderr to
/// `log`; it gets SIGKILL when the runner dies.
Result<pid_t> spawn(const std::vector<std::string>& argv, const std::string& log) {
    std::vector<char*> args;
    for (const std::string& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    const pid_t parent = ::getpid();
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        return fail(Errc::Io, "cannot create " + log + ": " + std::strerror(errno));
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(out);
        return fail(Errc::Io, std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        ::setpgid(0, 0);
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) {
            ::_exit(127);
        }
        const int in = ::open("/dev/null", O_RDONLY);
        if (in >= 0) {
            ::dup2(in, 0);
        }
        ::dup2(out, 1);
        ::dup2(out, 2);
        struct sigaction sa {};
        sa.sa_handler = SIG_DFL;
        for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE}) {
            sigaction(s, &sa, nullptr);
        }
        ::execvp(args[0], args.data());
        const char msg[] = "sluice-conformance: exec failed\n";
        [[maybe_unused]] const auto w = ::write(2, msg, sizeof msg - 1);
        ::_exit(127);
    }
    ::setpgid(pid, pid);
    ::close(out);
    remember_child(pid);
    return pid;
}

void terminate_group(pid_t& pid) {
    if (pid <= 0) {
        return;
    }
    ::kill(-pid, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(3);
    int st = 0;
    while (::waitpid(pid, &st, WNOHANG) == 0) {
        if (Clock::now() > deadline) {
            ::kill(-pid, SIGKILL);
            ::waitpid(pid, &st, 0);
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    forget_child(pid);
    pid = -1;
}

bool exited(pid_t pid) {
    if (pid <= 0) {
        return true;
    }
    int st = 0;
    return ::waitpid(pid, &st, WNOHANG) == pid;
}

std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string tail(const std::string& text, size_t n) {
    return text.size() <= n ? text : "..." + text.substr(text.size() - n);
}

// ------------------------------------------------------------------ sockets

bool parse_addr(const std::string& address, uint16_t port, sockaddr_storage& ss, socklen_t& len) {
    std::string a = address;
    if (a.size() > 2 && a.front() == '[' && a.back() == ']') {
        a = a.substr(1, a.size() - 2);
    }
    ss = {};
    if (a.find(':') != std::string::npos) {
        auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        if (inet_pton(AF_INET6, a.c_str(), &s6->sin6_addr) != 1) {
            return false;
        }
        len = sizeof(sockaddr_in6);
        return true;
    }
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    if (inet_pton(AF_INET, a.c_str(), &s4->sin_addr) != 1) {
        return false;
    }
    len = sizeof(sockaddr_in);
    return true;
}

struct Fd {
    int fd = -1;
    explicit Fd(int f)
        : fd(f) {}
    ~Fd() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
};

int remaining_ms(Clock::time_point deadline) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

/// A connected, non-blocking socket, or -1 with `err` set.
int connect_to(const std::string& address, uint16_t port, Clock::time_point deadline,
               std::string& err) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (!parse_addr(address, port, ss, len)) {
        err = "bad address " + address;
        return -1;
    }
    const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
        err = "connect " + address + ":" + std::to_string(port) + ": " + std::strerror(errno);
        ::close(fd);
        return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r <= 0) {
        err = "connect " + address + ":" + std::to_string(port) + ": timed out";
        ::close(fd);
        return -1;
    }
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr != 0) {
        err = "connect " + address + ":" + std::to_string(port) + ": " + std::strerror(soerr);
        ::close(fd);
        return -1;
    }
    return fd;
}

bool send_all(int fd, const std::string& data, Clock::time_point deadline, std::string& err) {
    size_t off = 0;
    while (off < data.size()) {
        const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            pollfd p{fd, POLLOUT, 0};
            if (::poll(&p, 1, remaining_ms(deadline)) <= 0) {
                err = "send timed out";
                return false;
            }
            continue;
        }
        err = std::string("send: ") + std::strerror(errno);
        return false;
    }
    return true;
}

/// Reads what is there (waiting until the deadline for something). Returns bytes read,
/// 0 on EOF, -1 on error/timeout with `err` set.
ssize_t recv_some(int fd, std::string& into, Clock::time_point deadline, std::string& err) {
    char buf[16384];
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            into.append(buf, static_cast<size_t>(n));
            return n;
        }
        if (n == 0) {
            return 0;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, remaining_ms(deadline)) <= 0) {
                err = "timed out waiting for the answer";
                return -1;
            }
            continue;
        }
        err = errno == ECONNRESET ? "connection reset by peer" : std::strerror(errno);
        return -1;
    }
}

std::string lower(std::string s) {
    for (char& c : s) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return s;
}

std::string trim(const std::string& s) {
    size_t a = 0, b = s.size();
    while (a < b && (s[a] == ' ' || s[a] == '\t')) {
        ++a;
    }
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' || s[b - 1] == '\r')) {
        --b;
    }
    return s.substr(a, b - a);
}

enum class Parse { Incomplete, Done, Bad };

/// Decodes a chunked body starting at `data[pos]`. Done when the last chunk and the
/// trailers are there.
Parse dechunk(const std::string& data, size_t pos, std::string& body) {
    body.clear();
    for (;;) {
        const size_t eol = data.find("\r\n", pos);
        if (eol == std::string::npos) {
            return Parse::Incomplete;
        }
        std::string size_line = data.substr(pos, eol - pos);
        if (const size_t semi = size_line.find(';'); semi != std::string::npos) {
            size_line.resize(semi);
        }
        size_line = trim(size_line);
        if (size_line.empty() || size_line.size() > 12 ||
            size_line.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
            return Parse::Bad;
        }
        const size_t n = std::stoul(size_line, nullptr, 16);
        pos = eol + 2;
        if (n == 0) {
            // trailers end with an empty line
            for (;;) {
                const size_t e = data.find("\r\n", pos);
                if (e == std::string::npos) {
                    return Parse::Incomplete;
                }
                if (e == pos) {
                    return Parse::Done;
                }
                pos = e + 2;
            }
        }
        if (data.size() < pos + n + 2) {
            return Parse::Incomplete;
        }
        body.append(data, pos, n);
        pos += n + 2;
    }
}

/// Parses an answer from `data`. `at_eof`: the server closed (a body without framing
/// ends there).
Parse parse_response(const std::string& data, bool head_request, bool at_eof, HttpResponse& r) {
    size_t start = 0;
    for (;;) {
        const size_t end = data.find("\r\n\r\n", start);
        if (end == std::string::npos) {
            return data.size() - start > (1u << 20) ? Parse::Bad : Parse::Incomplete;
        }
        std::istringstream head(data.substr(start, end - start));
        std::string line;
        std::getline(head, line);
        line = trim(line);
        if (!line.starts_with("HTTP/1.")) {
            r.error = "not an HTTP response: \"" + line.substr(0, 80) + "\"";
            return Parse::Bad;
        }
        const size_t sp = line.find(' ');
        if (sp == std::string::npos || line.size() < sp + 4) {
            r.error = "bad status line \"" + line + "\"";
            return Parse::Bad;
        }
        r.status = std::atoi(line.c_str() + sp + 1);
        r.headers.clear();
        while (std::getline(head, line)) {
            line = trim(line);
            if (line.empty()) {
                continue;
            }
            const size_t colon = line.find(':');
            if (colon == std::string::npos) {
                r.error = "bad header line \"" + line + "\"";
                return Parse::Bad;
            }
            r.headers.emplace_back(trim(line.substr(0, colon)), trim(line.substr(colon + 1)));
        }
        const size_t body_at = end + 4;
        if (r.status >= 100 && r.status < 200 && r.status != 101) {
            start = body_at; // interim answer (100 Continue): the real one follows
            continue;
        }
        r.ok = true;
        if (head_request || r.status == 204 || r.status == 304 || r.status == 101) {
            r.body.clear();
            return Parse::Done;
        }
        std::string te, cl;
        for (const auto& [k, v] : r.headers) {
            if (lower(k) == "transfer-encoding") {
                te = lower(v);
            } else if (lower(k) == "content-length") {
                cl = v;
            }
        }
        if (te.find("chunked") != std::string::npos) {
            const Parse p = dechunk(data, body_at, r.body);
            if (p == Parse::Bad) {
                r.error = "bad chunked body";
            }
            return p == Parse::Incomplete && at_eof ? Parse::Bad : p;
        }
        if (!cl.empty()) {
            const size_t n = std::strtoul(cl.c_str(), nullptr, 10);
            if (data.size() < body_at + n) {
                if (at_eof) {
                    r.error = "the answer ended before its Content-Length";
                    return Parse::Bad;
                }
                return Parse::Incomplete;
            }
            r.body = data.substr(body_at, n);
            return Parse::Done;
        }
        if (!at_eof) {
            return Parse::Incomplete;
        }
        r.body = data.substr(body_at);
        return Parse::Done;
    }
}

std::string base64(const unsigned char* data, size_t n) {
    std::string out(4 * ((n + 2) / 3) + 1, '\0');
    const int k =
        EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, static_cast<int>(n));
    out.resize(k > 0 ? static_cast<size_t>(k) : 0);
    return out;
}

std::mt19937_64& rng() {
    thread_local std::mt19937_64 g([] {
        std::random_device rd;
        return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
               static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    }());
    return g;
}

// ------------------------------------------------------------------ status files

std::string scalar(const cp::Node* n, const std::string& def = "") {
    return n && n->is_scalar() ? n->scalar : def;
}

int64_t integer(const cp::Node* n, int64_t def = 0) {
    if (!n || !n->is_scalar() || n->scalar.empty()) {
        return def;
    }
    char* end = nullptr;
    const long long v = std::strtoll(n->scalar.c_str(), &end, 10);
    return end && *end == 0 ? v : def;
}

std::vector<cp::Condition> conditions(const cp::Node* n) {
    std::vector<cp::Condition> out;
    if (!n || !n->is_seq()) {
        return out;
    }
    for (const cp::Node& c : n->items) {
        cp::Condition x;
        x.type = scalar(c.get("type"));
        x.status = scalar(c.get("status"));
        x.reason = scalar(c.get("reason"));
        x.message = scalar(c.get("message"));
        x.observed_generation = integer(c.get("observedGeneration"));
        out.push_back(std::move(x));
    }
    return out;
}

std::optional<cp::ObjectStatus> status_from(const cp::Node& root) {
    if (!root.is_map()) {
        return std::nullopt;
    }
    cp::ObjectStatus st;
    st.key.kind = scalar(root.get("kind"));
    const cp::Node* md = root.get("metadata");
    if (st.key.kind.empty() || !md) {
        return std::nullopt;
    }
    st.key.name = scalar(md->get("name"));
    st.key.ns = scalar(md->get("namespace"));
    st.generation = integer(md->get("generation"), 1);
    const cp::Node* s = root.get("status");
    if (!s || !s->is_map()) {
        return st;
    }
    st.conditions = conditions(s->get("conditions"));
    if (const cp::Node* a = s->get("addresses"); a && a->is_seq()) {
        for (const cp::Node& x : a->items) {
            cp::GatewayAddress ga;
            ga.type = scalar(x.get("type"));
            ga.value = scalar(x.get("value"));
            st.addresses.push_back(std::move(ga));
        }
    }
    st.attached_listener_sets = static_cast<int>(integer(s->get("attachedListenerSets")));
    if (const cp::Node* f = s->get("supportedFeatures"); f && f->is_seq()) {
        for (const cp::Node& x : f->items) {
            st.supported_features.push_back(x.is_map() ? scalar(x.get("name")) : scalar(&x));
        }
    }
    if (const cp::Node* ls = s->get("listeners"); ls && ls->is_seq()) {
        for (const cp::Node& x : ls->items) {
            cp::ListenerStatus l;
            l.name = scalar(x.get("name"));
            l.attached_routes = static_cast<int>(integer(x.get("attachedRoutes")));
            if (const cp::Node* k = x.get("supportedKinds"); k && k->is_seq()) {
                for (const cp::Node& y : k->items) {
                    cp::RouteGroupKind rgk;
                    rgk.group = scalar(y.get("group"), cp::kGatewayGroup);
                    rgk.kind = scalar(y.get("kind"));
                    l.supported_kinds.push_back(std::move(rgk));
                }
            }
            l.conditions = conditions(x.get("conditions"));
            st.listeners.push_back(std::move(l));
        }
    }
    const cp::Node* ps = s->get("parents");
    const char* ref_key = "parentRef";
    if (!ps) {
        ps = s->get("ancestors");
        ref_key = "ancestorRef";
    }
    if (ps && ps->is_seq()) {
        for (const cp::Node& x : ps->items) {
            cp::ParentStatus p;
            if (const cp::Node* r = x.get(ref_key); r && r->is_map()) {
                // As written: absent group/kind stay empty, so the checks see what is there.
                p.ref.group = scalar(r->get("group"));
                p.ref.kind = scalar(r->get("kind"));
                p.ref.name = scalar(r->get("name"));
                if (const cp::Node* n = r->get("namespace")) {
                    p.ref.ns = scalar(n);
                }
                if (const cp::Node* n = r->get("sectionName")) {
                    p.ref.section_name = scalar(n);
                }
                if (const cp::Node* n = r->get("port")) {
                    p.ref.port = static_cast<int>(integer(n));
                }
            }
            p.controller_name = scalar(x.get("controllerName"));
            p.conditions = conditions(x.get("conditions"));
            st.parents.push_back(std::move(p));
        }
    }
    return st;
}

int free_tcp_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return 0;
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
        port = ntohs(a.sin_port);
    }
    ::close(fd);
    return port;
}

bool can_connect(const std::string& address, uint16_t port) {
    std::string err;
    const int fd = connect_to(address, port, Clock::now() + std::chrono::milliseconds(200), err);
    if (fd < 0) {
        return false;
    }
    ::close(fd);
    return true;
}

} // namespace

// ------------------------------------------------------------------ Live

Live::Live(LiveOptions o)
    : o_(std::move(o)) {}

Live::~Live() {
    stop();
}

Result<void> Live::start(const std::string& base_yaml, std::vector<EchoPod> pods,
                         std::ostream& err) {
    install_signal_cleanup();
    const std::string cp_bin = o_.build_dir + "/controlplane/sluice-controlplane";
    const std::string l7_bin = o_.build_dir + "/dataplane/sluice-l7";
    const std::string echo = o_.source_dir + "/tools/echo/sluice-echo";
    for (const std::string& f : {cp_bin, l7_bin, echo}) {
        if (::access(f.c_str(), R_OK) != 0) {
            return fail(Errc::NotFound, "missing " + f + " (build it, or pass --build/--source)");
        }
    }
    std::string tmpl = (fs::temp_directory_path() / "sluice-conformance.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) {
        return fail(Errc::Io, std::string("mkdtemp: ") + std::strerror(errno));
    }
    dir_ = tmpl;
    std::snprintf(g_tmp_dir, sizeof g_tmp_dir, "%s", dir_.c_str());
    g_have_tmp.store(true);
    config_dir_ = dir_ + "/config";
    status_dir_ = dir_ + "/status";
    l7_socket_ = dir_ + "/l7.sock";
    cp_log_ = dir_ + "/controlplane.log";
    l7_log_ = dir_ + "/sluice-l7.log";
    std::error_code ec;
    fs::create_directories(config_dir_, ec);
    fs::create_directories(status_dir_, ec);
    fs::create_directories(dir_ + "/staging", ec);
    fs::create_directories(dir_ + "/echo", ec);

    // Echo pods first: the backends are there before any route points at them.
    pods_ = std::move(pods);
    for (EchoPod& p : pods_) {
        std::vector<std::string> argv = {"python3", echo, "--pod", p.pod, "--namespace", p.ns};
        for (int port : p.http_ports) {
            argv.push_back("--listen");
            argv.push_back(p.address + ":" + std::to_string(port));
        }
        if (!p.extra_listen.empty()) {
            argv.push_back("--listen");
            argv.push_back(p.extra_listen);
        }
        const std::pair<const char*, const std::vector<int>*> more[] = {
            {"--h2c-listen", &p.h2c_ports},
            {"--tls-listen", &p.tls_ports},
            {"--grpc-listen", &p.grpc_ports},
            {"--tcp-listen", &p.tcp_ports},
            {"--tcp-tls-listen", &p.tcp_tls_ports}};
        for (const auto& [flag, ports] : more) {
            for (int port : *ports) {
                argv.push_back(flag);
                argv.push_back(p.address + ":" + std::to_string(port));
            }
        }
        if (!p.tls_ports.empty() || !p.tcp_tls_ports.empty()) {
            // The Secret echo-basic mounts (TLS_SERVER_CERT / TLS_SERVER_PRIVKEY).
            const std::string base = dir_ + "/echo/" + p.ns + "_" + p.pod;
            for (const auto& [file, pem] :
                 {std::pair{base + ".crt", &p.cert_pem}, std::pair{base + ".key", &p.key_pem}}) {
                std::ofstream out(file, std::ios::binary | std::ios::trunc);
                out << *pem;
                if (!out) {
                    return fail(Errc::Io, "cannot write " + file);
                }
            }
            argv.insert(argv.end(), {"--cert", base + ".crt", "--key", base + ".key"});
            if (!p.client_ca_pem.empty()) {
                // echo-basic's TLS_CLIENT_CACERTS: client certificates are asked for and
                // checked against it (tls.VerifyClientCertIfGiven).
                const std::string file = base + ".client-ca.crt";
                std::ofstream out(file, std::ios::binary | std::ios::trunc);
                out << p.client_ca_pem;
                if (!out) {
                    return fail(Errc::Io, "cannot write " + file);
                }
                argv.insert(argv.end(), {"--client-ca", file});
            }
        }
        p.log = dir_ + "/echo/" + p.ns + "_" + p.pod + ".log";
        auto pid = spawn(argv, p.log);
        if (!pid) {
            return tl::unexpected<Error>(pid.error());
        }
        p.pid = *pid;
    }
    admin_port_ = free_tcp_port();
    auto l7 = spawn({l7_bin, "--dp-socket", l7_socket_, "--stats-file", dir_ + "/l7-stats.json",
                     "--admin", "127.0.0.1:" + std::to_string(admin_port_), "--workers", "1"},
                    l7_log_);
    if (!l7) {
        return tl::unexpected<Error>(l7.error());
    }
    l7_pid_ = *l7;
    const auto deadline = Clock::now() + std::chrono::seconds(90); // 2 cores, 20+ Pythons
    for (EchoPod& p : pods_) {
        // sluice-echo binds its listeners in this order: the last one up means all are.
        uint16_t port = 0;
        for (const std::vector<int>* ports : {&p.http_ports, &p.h2c_ports, &p.tls_ports,
                                              &p.grpc_ports, &p.tcp_ports, &p.tcp_tls_ports}) {
            if (!ports->empty()) {
                port = static_cast<uint16_t>(ports->back());
            }
        }
        while (port != 0 && !can_connect(p.address, port)) {
            if (exited(p.pid) || Clock::now() > deadline) {
                p.pid = -1;
                return fail(Errc::Io, "echo pod " + p.ns + "/" + p.pod +
                                          " did not start: " + tail(read_all(p.log), 400));
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
    while (!fs::exists(l7_socket_, ec)) {
        if (exited(l7_pid_) || Clock::now() > deadline) {
            l7_pid_ = -1;
            return fail(Errc::Io, "sluice-l7 did not start: " + tail(read_all(l7_log_), 600));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    {
        std::ofstream out(config_dir_ + "/00-base.yaml", std::ios::binary | std::ios::trunc);
        out << base_yaml;
        if (!out) {
            return fail(Errc::Io, "cannot write " + config_dir_ + "/00-base.yaml");
        }
    }
    auto cp = spawn({cp_bin, "--config-dir", config_dir_, "--status-dir", status_dir_,
                     "--dp-socket", l7_socket_, "--address-pool", "127.1.0.0/16"},
                    cp_log_);
    if (!cp) {
        return tl::unexpected<Error>(cp.error());
    }
    cp_pid_ = *cp;
    const Reconcile r = wait_reconcile(0, Clock::now() + std::chrono::seconds(30));
    if (!r.seen || !r.programmed) {
        return fail(Errc::Io, "the controlplane did not program the base configuration: " +
                                  (r.seen ? r.line : std::string("no reconcile logged")) + "\n" +
                                  tail(read_all(cp_log_), 1500));
    }
    err << "sluice-conformance: traffic mode in " << dir_ << ": " << pods_.size()
        << " echo pods, sluice-l7, sluice-controlplane (" << r.line << ")\n";
    return {};
}

void Live::stop() {
    if (stopped_) {
        return;
    }
    stopped_ = true;
    terminate_group(cp_pid_);
    terminate_group(l7_pid_);
    for (EchoPod& p : pods_) {
        if (p.pid > 0) {
            ::kill(-p.pid, SIGTERM);
        }
    }
    for (EchoPod& p : pods_) {
        terminate_group(p.pid);
    }
    if (!dir_.empty()) {
        if (o_.keep) {
            std::fprintf(stderr, "sluice-conformance: kept %s\n", dir_.c_str());
        } else {
            std::error_code ec;
            fs::remove_all(dir_, ec);
        }
        g_have_tmp.store(false);
    }
}

size_t Live::write_test_config(const std::string& yaml) {
    poll_log();
    const size_t before = reconciles_.size();
    const std::string staged = dir_ + "/staging/10-test.yaml";
    {
        std::ofstream out(staged, std::ios::binary | std::ios::trunc);
        out << yaml;
    }
    std::error_code ec;
    fs::rename(staged, config_dir_ + "/10-test.yaml", ec);
    return before;
}

void Live::poll_log() {
    std::ifstream in(cp_log_, std::ios::binary);
    if (!in) {
        return;
    }
    in.seekg(static_cast<std::streamoff>(log_offset_));
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    log_offset_ += chunk.size();
    log_partial_ += chunk;
    size_t pos = 0;
    for (;;) {
        const size_t nl = log_partial_.find('\n', pos);
        if (nl == std::string::npos) {
            break;
        }
        const std::string line = log_partial_.substr(pos, nl - pos);
        pos = nl + 1;
        const std::string prefix = "sluice-controlplane: generation ";
        const bool refused = line.find("keeping the last good configuration") != std::string::npos;
        if (line.starts_with(prefix) || refused) {
            Reconcile r;
            r.seen = true;
            r.refused = refused;
            r.line = line;
            r.diagnostics = pending_diags_;
            pending_diags_.clear();
            if (!refused) {
                r.generation = std::strtoull(line.c_str() + prefix.size(), nullptr, 10);
                r.programmed = line.find(", programmed") != std::string::npos;
            } else if (!reconciles_.empty()) {
                r.generation = reconciles_.back().generation;
                r.programmed = reconciles_.back().programmed;
            }
            reconciles_.push_back(std::move(r));
        } else {
            pending_diags_ += line + "\n";
            if (pending_diags_.size() > 16384) {
                pending_diags_ = pending_diags_.substr(pending_diags_.size() - 8192);
            }
        }
    }
    log_partial_.erase(0, pos);
}

Reconcile Live::wait_reconcile(size_t since, Clock::time_point deadline) {
    for (;;) {
        poll_log();
        if (reconciles_.size() > since) {
            // Let a reconcile that follows at once (a second inotify event) land too.
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
            poll_log();
            return reconciles_.back();
        }
        if (Clock::now() >= deadline) {
            return {};
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
}

Reconcile Live::last_reconcile() {
    poll_log();
    return reconciles_.empty() ? Reconcile{} : reconciles_.back();
}

cp::CompileOutput Live::read_status() const {
    cp::CompileOutput out;
    std::error_code ec;
    for (fs::recursive_directory_iterator it(status_dir_, ec), end; it != end; it.increment(ec)) {
        if (ec) {
            break;
        }
        const fs::path& p = it->path();
        if (!it->is_regular_file(ec) || p.extension() != ".yaml") {
            continue;
        }
        const std::string text = read_all(p.string());
        cp::Diagnostics diags;
        for (const cp::Document& d : cp::parse_yaml(text, p.string(), cp::LoadLimits{}, diags)) {
            if (auto st = status_from(d.root)) {
                out.statuses.push_back(std::move(*st));
            }
        }
    }
    std::sort(out.statuses.begin(), out.statuses.end(),
              [](const cp::ObjectStatus& a, const cp::ObjectStatus& b) { return a.key < b.key; });
    return out;
}

std::optional<uint64_t> Live::l7_generation() const {
    const HttpResponse r =
        http_exchange("127.0.0.1", static_cast<uint16_t>(admin_port_),
                      "GET /stats HTTP/1.1\r\nHost: sluice-l7\r\nConnection: close\r\n\r\n",
                      std::chrono::milliseconds(2000));
    if (!r.ok || r.status != 200) {
        return std::nullopt;
    }
    const auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("generation") ||
        !j["generation"].is_number_unsigned()) {
        return std::nullopt;
    }
    return j["generation"].get<uint64_t>();
}

bool Live::alive(std::string& why) {
    if (exited(cp_pid_)) {
        why = "sluice-controlplane exited: " + tail(read_all(cp_log_), 800);
        cp_pid_ = -1;
        return false;
    }
    if (exited(l7_pid_)) {
        why = "sluice-l7 exited: " + tail(read_all(l7_log_), 800);
        l7_pid_ = -1;
        return false;
    }
    for (EchoPod& p : pods_) {
        if (exited(p.pid)) {
            why = "echo pod " + p.pod + " exited: " + tail(read_all(p.log), 400);
            p.pid = -1;
            return false;
        }
    }
    return true;
}

// ------------------------------------------------------------------ clients

int tcp_connect(const std::string& address, uint16_t port, Clock::time_point deadline,
                std::string& err) {
    return connect_to(address, port, deadline, err);
}

HttpResponse http_exchange(const std::string& address, uint16_t port, const std::string& request,
                           std::chrono::milliseconds timeout, const TlsOptions* tls) {
    HttpResponse r;
    const auto deadline = Clock::now() + timeout;
    std::unique_ptr<Conn> conn = Conn::open(address, port, tls, deadline, r.error, &r.fail);
    if (!conn) {
        return r;
    }
    if (!conn->send_all(request, deadline, r.error, &r.fail)) {
        return r;
    }
    const bool head = request.starts_with("HEAD ");
    std::string data;
    for (;;) {
        std::string err;
        ConnFail fail = ConnFail::None;
        const ssize_t n = conn->recv_some(data, deadline, err, &fail);
        HttpResponse parsed;
        const Parse p = parse_response(data, head, n <= 0, parsed);
        if (p == Parse::Done) {
            return parsed;
        }
        if (p == Parse::Bad) {
            r = parsed;
            r.ok = false;
            r.fail = fail;
            if (r.error.empty()) {
                r.error = data.empty() ? (n == 0 ? "connection closed without an answer" : err)
                                       : "incomplete answer (" + std::to_string(data.size()) +
                                             " bytes)" + (err.empty() ? "" : ": " + err);
            }
            return r;
        }
        if (n <= 0) {
            r.ok = false;
            r.fail = n == 0 ? ConnFail::Eof : fail;
            r.error = data.empty() ? (n == 0 ? "connection closed without an answer" : err)
                                   : "incomplete answer: " + (err.empty() ? "EOF" : err);
            return r;
        }
    }
}

namespace {

bool read_exact(int fd, std::string& buf, size_t n, Clock::time_point deadline, std::string& err) {
    while (buf.size() < n) {
        const ssize_t got = recv_some(fd, buf, deadline, err);
        if (got <= 0) {
            if (got == 0) {
                err = "connection closed";
            }
            return false;
        }
    }
    return true;
}

std::string ws_frame(int opcode, const std::string& payload) {
    std::string f;
    f += static_cast<char>(0x80 | opcode);
    const size_t n = payload.size();
    if (n < 126) {
        f += static_cast<char>(0x80 | n);
    } else if (n < 65536) {
        f += static_cast<char>(0x80 | 126);
        f += static_cast<char>((n >> 8) & 0xff);
        f += static_cast<char>(n & 0xff);
    } else {
        f += static_cast<char>(0x80 | 127);
        for (int i = 7; i >= 0; --i) {
            f += static_cast<char>((static_cast<uint64_t>(n) >> (8 * i)) & 0xff);
        }
    }
    unsigned char mask[4];
    const uint64_t m = rng()();
    std::memcpy(mask, &m, 4);
    f.append(reinterpret_cast<const char*>(mask), 4);
    for (size_t i = 0; i < n; ++i) {
        f += static_cast<char>(static_cast<unsigned char>(payload[i]) ^ mask[i % 4]);
    }
    return f;
}

} // namespace

std::string websocket_echo(const std::string& address, uint16_t port, const std::string& path,
                           const std::string& host, const std::string& origin,
                           const std::vector<std::pair<int, std::string>>& frames,
                           std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    std::string err;
    Fd fd(connect_to(address, port, deadline, err));
    if (fd.fd < 0) {
        return err;
    }
    unsigned char key_bytes[16];
    for (unsigned char& b : key_bytes) {
        b = static_cast<unsigned char>(rng()() & 0xff);
    }
    const std::string key = base64(key_bytes, sizeof key_bytes);
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: " + host +
                      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
                      "\r\nSec-WebSocket-Version: 13\r\n";
    if (!origin.empty()) {
        req += "Origin: " + origin + "\r\n";
    }
    req += "\r\n";
    if (!send_all(fd.fd, req, deadline, err)) {
        return err;
    }
    std::string data;
    size_t head_end = std::string::npos;
    while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
        if (recv_some(fd.fd, data, deadline, err) <= 0) {
            return "handshake: " + (err.empty() ? std::string("connection closed") : err);
        }
    }
    HttpResponse hr;
    parse_response(data.substr(0, head_end + 4), false, true, hr);
    if (!hr.ok || hr.status != 101) {
        return "handshake answered " + std::to_string(hr.status) + " instead of 101";
    }
    const std::string magic = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(reinterpret_cast<const unsigned char*>(magic.data()), magic.size(), digest);
    const std::string want_accept = base64(digest, sizeof digest);
    std::string accept;
    for (const auto& [k, v] : hr.headers) {
        if (lower(k) == "sec-websocket-accept") {
            accept = v;
        }
    }
    if (accept != want_accept) {
        return "handshake: Sec-WebSocket-Accept \"" + accept + "\", expected " + want_accept;
    }
    std::string buf = data.substr(head_end + 4);
    for (const auto& [opcode, payload] : frames) {
        if (!send_all(fd.fd, ws_frame(opcode, payload), deadline, err)) {
            return err;
        }
        // Read one data frame back (control frames other than close are skipped).
        for (;;) {
            if (!read_exact(fd.fd, buf, 2, deadline, err)) {
                return "reading the echoed frame: " + err;
            }
            const auto b0 = static_cast<unsigned char>(buf[0]);
            const auto b1 = static_cast<unsigned char>(buf[1]);
            size_t len = b1 & 0x7f;
            size_t hdr = 2;
            if (len == 126) {
                if (!read_exact(fd.fd, buf, 4, deadline, err)) {
                    return "reading the echoed frame: " + err;
                }
                len = (static_cast<size_t>(static_cast<unsigned char>(buf[2])) << 8) |
                      static_cast<unsigned char>(buf[3]);
                hdr = 4;
            } else if (len == 127) {
                if (!read_exact(fd.fd, buf, 10, deadline, err)) {
                    return "reading the echoed frame: " + err;
                }
                len = 0;
                for (int i = 2; i < 10; ++i) {
                    len = (len << 8) | static_cast<unsigned char>(buf[static_cast<size_t>(i)]);
                }
                hdr = 10;
            }
            const bool masked = (b1 & 0x80) != 0;
            const size_t mask_at = hdr;
            if (masked) {
                hdr += 4;
            }
            if (len > (16u << 20) || !read_exact(fd.fd, buf, hdr + len, deadline, err)) {
                return "reading the echoed frame: " + (err.empty() ? "too large" : err);
            }
            std::string got = buf.substr(hdr, len);
            if (masked) {
                for (size_t i = 0; i < got.size(); ++i) {
                    got[i] = static_cast<char>(got[i] ^ buf[mask_at + i % 4]);
                }
            }
            buf.erase(0, hdr + len);
            const int op = b0 & 0x0f;
            if (op == 8) {
                return "the server closed the WebSocket instead of echoing";
            }
            if (op == 9 || op == 10) {
                continue;
            }
            if (op != opcode || got != payload) {
                return "echoed frame opcode " + std::to_string(op) + " (" +
                       std::to_string(got.size()) + " bytes), expected opcode " +
                       std::to_string(opcode) + " (" + std::to_string(payload.size()) + " bytes)";
            }
            break;
        }
    }
    std::string close_payload("\x03\xe8", 2);
    send_all(fd.fd, ws_frame(8, close_payload), deadline, err);
    return "";
}

std::string uuid4() {
    const uint64_t a = rng()();
    const uint64_t b = rng()();
    unsigned char u[16];
    std::memcpy(u, &a, 8);
    std::memcpy(u + 8, &b, 8);
    u[6] = static_cast<unsigned char>((u[6] & 0x0f) | 0x40);
    u[8] = static_cast<unsigned char>((u[8] & 0x3f) | 0x80);
    char out[37];
    std::snprintf(out, sizeof out,
                  "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                  u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                  u[14], u[15]);
    return out;
}

} // namespace sluice::conformance
