#include "k8s_client.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <iostream>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include "yaml_doc.h"

namespace sluice::cp {

namespace fs = std::filesystem;

namespace {

Result<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return fail(Errc::Io, "cannot read " + path);
    }
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) {
        s.pop_back();
    }
    return s;
}

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string scalar(const Node* n, std::string_view key) {
    if (!n || !n->is_map()) {
        return "";
    }
    const Node* v = n->get(key);
    return v && v->is_scalar() ? v->scalar : "";
}

/// Finds `name` in a kubeconfig list (clusters, users, contexts) and returns its `field` map.
const Node* named(const Node& root, std::string_view list, const std::string& name,
                  std::string_view field) {
    const Node* l = root.get(list);
    if (!l || !l->is_seq()) {
        return nullptr;
    }
    for (const Node& e : l->items) {
        if (scalar(&e, "name") == name) {
            const Node* f = e.get(field);
            return f && f->is_map() ? f : nullptr;
        }
    }
    return nullptr;
}

struct CurlHandle {
    CURL* h = curl_easy_init();
    curl_slist* headers = nullptr;
    /// libcurl's detail of the last failure (CURLOPT_ERRORBUFFER): "SSL certificate
    /// problem: unable to get local issuer certificate" where curl_easy_strerror() only
    /// says "SSL peer certificate or SSH remote key was not OK".
    char err[CURL_ERROR_SIZE] = {};
    ~CurlHandle() {
        curl_slist_free_all(headers);
        if (h) {
            curl_easy_cleanup(h);
        }
    }
};

struct WatchState {
    CURL* h = nullptr;
    const std::function<bool(std::string_view)>* on_line = nullptr;
    const std::atomic<bool>* stop = nullptr;
    std::string pending; ///< bytes after the last newline (a partial event)
    std::string body;    ///< non-200 (or non-JSON) response body
    int json_stream = -1; ///< 200 answer: 1 = a JSON stream, 0 = something else, -1 = unknown
    bool stopped_by_callback = false;
};

size_t collect(char* p, size_t sz, size_t n, void* ud) {
    static_cast<std::string*>(ud)->append(p, sz * n);
    return sz * n;
}

size_t watch_write(char* p, size_t sz, size_t n, void* ud) {
    auto* w = static_cast<WatchState*>(ud);
    long code = 0;
    curl_easy_getinfo(w->h, CURLINFO_RESPONSE_CODE, &code);
    if (code == 200 && w->json_stream < 0) {
        // A proxy in front of the API server may answer 200 with an HTML page: that is not
        // a watch stream, and its lines must not be fed to the event parser.
        char* ct = nullptr;
        curl_easy_getinfo(w->h, CURLINFO_CONTENT_TYPE, &ct);
        w->json_stream = ct && std::string_view(ct).find("json") != std::string_view::npos ? 1 : 0;
    }
    if (code != 200 || w->json_stream == 0) {
        if (w->body.size() < (1u << 20)) {
            w->body.append(p, sz * n);
        }
        return sz * n;
    }
    w->pending.append(p, sz * n);
    size_t start = 0;
    for (;;) {
        const size_t nl = w->pending.find('\n', start);
        if (nl == std::string::npos) {
            break;
        }
        const std::string_view line(w->pending.data() + start, nl - start);
        start = nl + 1;
        if (line.empty()) {
            continue;
        }
        if (!(*w->on_line)(line)) {
            w->stopped_by_callback = true;
            return 0; // aborts the transfer (CURLE_WRITE_ERROR)
        }
    }
    w->pending.erase(0, start);
    if (w->pending.size() > (64u << 20)) {
        return 0; // a single event larger than 64 MiB: give up on this stream
    }
    return sz * n;
}

int watch_progress(void* ud, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto* w = static_cast<WatchState*>(ud);
    return w->stop->load(std::memory_order_relaxed) ? 1 : 0;
}

} // namespace

Result<std::string> base64_decode(std::string_view in) {
    auto val = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+' || c == '-') return 62;
        if (c == '/' || c == '_') return 63;
        return -1;
    };
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : in) {
        if (c == '=' || c == ' ' || c == '\n' || c == '\r' || c == '\t') {
            continue;
        }
        const int v = val(c);
        if (v < 0) {
            return fail(Errc::Invalid, "invalid base64");
        }
        acc = (acc << 6) | static_cast<uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += static_cast<char>((acc >> bits) & 0xff);
        }
    }
    return out;
}

Result<KubeConfig> in_cluster_config(const std::string& sa_dir) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (!host || !*host || !port || !*port) {
        return fail(Errc::NotFound,
                    "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set (use --kubeconfig)");
    }
    KubeConfig c;
    const std::string h = host;
    c.server = "https://" + (h.find(':') != std::string::npos ? "[" + h + "]" : h) + ":" + port;
    c.token_file = sa_dir + "/token";
    c.ca_file = sa_dir + "/ca.crt";
    if (!fs::exists(c.token_file)) {
        return fail(Errc::NotFound, "no service-account token at " + c.token_file);
    }
    if (auto ns = read_file(sa_dir + "/namespace")) {
        c.ns = trim(*ns);
    }
    return c;
}

Result<KubeConfig> load_kubeconfig(const std::string& path) {
    auto text = read_file(path);
    if (!text) {
        return fail(text.error().code, text.error().message);
    }
    Diagnostics diags;
    std::vector<Document> docs = parse_yaml(*text, path, LoadLimits{}, diags);
    if (docs.empty() || !docs[0].root.is_map()) {
        std::string why = diags.items().empty() ? "not a YAML map" : diags.items()[0].str();
        return fail(Errc::Invalid, "kubeconfig " + path + ": " + why);
    }
    const Node& root = docs[0].root;
    const std::string ctx_name = scalar(&root, "current-context");
    if (ctx_name.empty()) {
        return fail(Errc::Invalid, "kubeconfig " + path + ": no current-context");
    }
    const Node* ctx = named(root, "contexts", ctx_name, "context");
    if (!ctx) {
        return fail(Errc::Invalid, "kubeconfig " + path + ": context " + ctx_name + " not found");
    }
    const fs::path base = fs::path(path).parent_path();
    auto resolve = [&](const std::string& f) {
        return f.empty() || fs::path(f).is_absolute() ? f : (base / f).string();
    };
    KubeConfig c;
    if (std::string ns = scalar(ctx, "namespace"); !ns.empty()) {
        c.ns = ns;
    }
    const std::string cluster_name = scalar(ctx, "cluster");
    const Node* cl = named(root, "clusters", cluster_name, "cluster");
    if (!cl) {
        return fail(Errc::Invalid, "kubeconfig: cluster " + cluster_name + " not found");
    }
    c.server = scalar(cl, "server");
    if (c.server.empty()) {
        return fail(Errc::Invalid, "kubeconfig: cluster " + cluster_name + " has no server");
    }
    while (!c.server.empty() && c.server.back() == '/') {
        c.server.pop_back();
    }
    c.insecure = scalar(cl, "insecure-skip-tls-verify") == "true";
    c.ca_file = resolve(scalar(cl, "certificate-authority"));
    if (std::string d = scalar(cl, "certificate-authority-data"); !d.empty()) {
        auto pem = base64_decode(d);
        if (!pem) {
            return fail(Errc::Invalid, "kubeconfig: certificate-authority-data: invalid base64");
        }
        c.ca_data = *pem;
    }
    const std::string user_name = scalar(ctx, "user");
    if (!user_name.empty()) {
        const Node* u = named(root, "users", user_name, "user");
        if (!u) {
            return fail(Errc::Invalid, "kubeconfig: user " + user_name + " not found");
        }
        if (u->get("auth-provider")) {
            return fail(Errc::Invalid,
                        "kubeconfig: user " + user_name +
                            " uses an auth-provider (removed from Kubernetes in 1.26); use an "
                            "exec credential plugin, a token or a client certificate");
        }
        if (const Node* ex = u->get("exec"); ex && ex->is_map()) {
            KubeConfig::Exec e;
            e.command = scalar(ex, "command");
            if (e.command.empty()) {
                return fail(Errc::Invalid, "kubeconfig: user " + user_name + ": exec without command");
            }
            if (e.command.find('/') != std::string::npos) {
                e.command = resolve(e.command);
            }
            if (std::string v = scalar(ex, "apiVersion"); !v.empty()) {
                e.api_version = v;
            }
            if (const Node* a = ex->get("args"); a && a->is_seq()) {
                for (const Node& i : a->items) {
                    e.args.push_back(i.scalar);
                }
            }
            if (const Node* en = ex->get("env"); en && en->is_seq()) {
                for (const Node& i : en->items) {
                    e.env.emplace_back(scalar(&i, "name"), scalar(&i, "value"));
                }
            }
            c.exec = std::move(e);
        }
        c.token = scalar(u, "token");
        c.token_file = resolve(scalar(u, "tokenFile"));
        c.cert_file = resolve(scalar(u, "client-certificate"));
        c.key_file = resolve(scalar(u, "client-key"));
        for (auto [key, dst] : {std::pair{"client-certificate-data", &c.cert_data},
                                std::pair{"client-key-data", &c.key_data}}) {
            if (std::string d = scalar(u, key); !d.empty()) {
                auto pem = base64_decode(d);
                if (!pem) {
                    return fail(Errc::Invalid, std::string("kubeconfig: ") + key + ": invalid base64");
                }
                *dst = *pem;
            }
        }
    }
    return c;
}

namespace {

/// RFC 3339 UTC ("2026-11-28T12:00:00Z", fractions allowed) to epoch seconds; 0 if invalid.
int64_t parse_rfc3339(const std::string& t) {
    std::tm tm{};
    if (t.size() < 20 || !strptime(t.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) {
        return 0;
    }
    return static_cast<int64_t>(timegm(&tm));
}

} // namespace

Result<std::pair<std::string, int64_t>> run_exec_plugin(const KubeConfig::Exec& e,
                                                         std::chrono::milliseconds timeout) {
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        return fail(Errc::Io, std::string("exec plugin: pipe: ") + std::strerror(errno));
    }
    const std::string info = "{\"apiVersion\":\"" + e.api_version +
                             "\",\"kind\":\"ExecCredential\",\"spec\":{\"interactive\":false}}";
    std::vector<std::string> argv_s{e.command};
    argv_s.insert(argv_s.end(), e.args.begin(), e.args.end());
    const pid_t pid = fork();
    if (pid < 0) {
        close(out[0]);
        close(out[1]);
        return fail(Errc::Io, std::string("exec plugin: fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        dup2(out[1], 1);
        const int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0); // never interactive
        }
        setenv("KUBERNETES_EXEC_INFO", info.c_str(), 1);
        for (const auto& [k, v] : e.env) {
            setenv(k.c_str(), v.c_str(), 1);
        }
        std::vector<char*> argv;
        for (std::string& a : argv_s) {
            argv.push_back(a.data());
        }
        argv.push_back(nullptr);
        execvp(argv[0], argv.data());
        _exit(127);
    }
    close(out[1]);
    std::string text;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    bool timed_out = false;
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            break;
        }
        pollfd pfd{out[0], POLLIN, 0};
        if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
            continue;
        }
        const ssize_t n = read(out[0], buf, sizeof buf);
        if (n <= 0) {
            break;
        }
        text.append(buf, static_cast<size_t>(n));
        if (text.size() > (1u << 20)) {
            timed_out = true; // a plugin that never stops talking
            break;
        }
    }
    close(out[0]);
    if (timed_out) {
        kill(pid, SIGKILL);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (timed_out) {
        return fail(Errc::Io, "exec plugin " + e.command + ": no answer in time");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return fail(Errc::Io, "exec plugin " + e.command + " failed (exit " +
                                  std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) + ")");
    }
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || j.value("kind", "") != "ExecCredential" ||
        !j.contains("status") || !j["status"].is_object()) {
        return fail(Errc::Invalid, "exec plugin " + e.command + ": output is not an ExecCredential");
    }
    const auto& st = j["status"];
    const std::string token = st.value("token", "");
    if (token.empty()) {
        return fail(Errc::Invalid, "exec plugin " + e.command +
                                       ": no status.token (client certificates from plugins are "
                                       "not supported)");
    }
    return std::pair<std::string, int64_t>{token, parse_rfc3339(st.value("expirationTimestamp", ""))};
}

KubeClient::KubeClient(KubeConfig cfg)
    : cfg_(std::move(cfg)) {
    global_init();
    token_ = cfg_.token;
}

KubeClient::~KubeClient() = default;

std::string KubeClient::bearer() {
    std::lock_guard<std::mutex> g(token_mu_);
    if (cfg_.exec) {
        const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count();
        const bool expired = token_expiry_ != 0 && now_s + 10 >= token_expiry_;
        if (token_.empty() || token_stale_ || expired) {
            auto t = run_exec_plugin(*cfg_.exec);
            if (!t) {
                std::cerr << "sluice-controlplane: " << t.error().message << std::endl;
            } else {
                token_ = t->first;
                token_expiry_ = t->second;
                token_stale_ = false;
                refused_ = false;
            }
        }
        return token_;
    }
    if (cfg_.token_file.empty()) {
        return token_;
    }
    // Projected service-account tokens rotate: re-read the file every minute, and at once
    // after a 401 (token_read_ reset by token_refused()).
    const auto now = std::chrono::steady_clock::now();
    if (token_.empty() || now - token_read_ > std::chrono::seconds(60)) {
        if (auto t = read_file(cfg_.token_file)) {
            std::string fresh = trim(*t);
            if (!token_.empty() && fresh != token_) {
                std::cerr << "sluice-controlplane: k8s: token file " << cfg_.token_file
                          << " changed: using the new token" << std::endl;
            } else if (refused_ && fresh == token_ &&
                       now - refused_log_ > std::chrono::seconds(30)) {
                refused_log_ = now;
                std::cerr << "sluice-controlplane: k8s: token file " << cfg_.token_file
                          << " still holds the refused token; retrying with backoff" << std::endl;
            }
            token_ = std::move(fresh);
            token_read_ = now;
            refused_ = false;
        } else if (token_read_ == std::chrono::steady_clock::time_point{} || refused_) {
            std::cerr << "sluice-controlplane: k8s: " << t.error().message
                      << " (service-account token)" << std::endl;
            token_read_ = now - std::chrono::seconds(50); // try again in 10 s
        }
    }
    return token_;
}

void KubeClient::token_refused(const std::string& used) {
    if (cfg_.token_file.empty() && !cfg_.exec) {
        return; // a fixed token or a client certificate: nothing to reload
    }
    std::lock_guard<std::mutex> g(token_mu_);
    if (used != token_) {
        // Sent before the credential was reloaded: says nothing of the new token. (Judging
        // it by this 401 ran an exec plugin again for each request in flight, each new
        // token made stale by the next late 401.)
        return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (!refused_ && now - refused_log_ > std::chrono::seconds(30)) {
        refused_log_ = now;
        std::cerr << "sluice-controlplane: k8s: HTTP 401 Unauthorized: the API server refuses "
                     "the token (expired?); "
                  << (cfg_.exec ? "running the exec credential plugin again"
                                : "re-reading " + cfg_.token_file)
                  << std::endl;
    }
    refused_ = true;
    token_read_ = {};    // an expired projected token: re-read it on the next call
    token_stale_ = true; // an exec plugin's token: run the plugin again
}

namespace {

/// Common options: URL, TLS material, auth header.
Result<void> setup(CurlHandle& c, const KubeConfig& cfg, const std::string& path,
                   const std::string& token, std::chrono::milliseconds timeout) {
    if (!c.h) {
        return fail(Errc::Internal, "curl_easy_init failed");
    }
    const std::string url = cfg.server + path;
    curl_easy_setopt(c.h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c.h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c.h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c.h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(c.h, CURLOPT_ACCEPT_ENCODING, ""); // gzip if the server offers it
    curl_easy_setopt(c.h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c.h, CURLOPT_ERRORBUFFER, c.err);
    if (!cfg.ca_file.empty() || !cfg.ca_data.empty()) {
        // The cluster's CA is the only trust anchor (as in client-go): without this, libcurl
        // would also trust its built-in CA directory (/etc/ssl/certs), i.e. any public CA's
        // certificate for the server's name. CAINFO(_BLOB) below replaces the CA bundle file.
        curl_easy_setopt(c.h, CURLOPT_CAPATH, nullptr);
    }
    if (!cfg.ca_file.empty()) {
        curl_easy_setopt(c.h, CURLOPT_CAINFO, cfg.ca_file.c_str());
    }
    if (!cfg.ca_data.empty()) {
        curl_blob b{const_cast<char*>(cfg.ca_data.data()), cfg.ca_data.size(), CURL_BLOB_COPY};
        curl_easy_setopt(c.h, CURLOPT_CAINFO_BLOB, &b);
    }
    if (cfg.insecure) {
        curl_easy_setopt(c.h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c.h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!cfg.cert_file.empty()) {
        curl_easy_setopt(c.h, CURLOPT_SSLCERT, cfg.cert_file.c_str());
    }
    if (!cfg.cert_data.empty()) {
        curl_blob b{const_cast<char*>(cfg.cert_data.data()), cfg.cert_data.size(),
                    CURL_BLOB_COPY};
        curl_easy_setopt(c.h, CURLOPT_SSLCERT_BLOB, &b);
        curl_easy_setopt(c.h, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (!cfg.key_file.empty()) {
        curl_easy_setopt(c.h, CURLOPT_SSLKEY, cfg.key_file.c_str());
    }
    if (!cfg.key_data.empty()) {
        curl_blob b{const_cast<char*>(cfg.key_data.data()), cfg.key_data.size(), CURL_BLOB_COPY};
        curl_easy_setopt(c.h, CURLOPT_SSLKEY_BLOB, &b);
        curl_easy_setopt(c.h, CURLOPT_SSLKEYTYPE, "PEM");
    }
    c.headers = curl_slist_append(c.headers, "Accept: application/json");
    c.headers = curl_slist_append(c.headers, "User-Agent: sluice-controlplane");
    if (!token.empty()) {
        c.headers = curl_slist_append(c.headers, ("Authorization: Bearer " + token).c_str());
    }
    return {};
}

/// "Couldn't connect to server: Failed to connect to 127.0.0.1 port 1: Connection refused":
/// curl's generic text for the code, then its detail when there is one.
std::string curl_error(const CurlHandle& c, CURLcode rc) {
    std::string s = curl_easy_strerror(rc);
    if (c.err[0] != '\0') {
        s += ": ";
        s += c.err;
    }
    return s;
}

std::string content_type_of(CURL* h) {
    char* ct = nullptr;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    return ct ? ct : "";
}

} // namespace

Result<HttpResponse> KubeClient::request(std::string_view method, const std::string& path,
                                         const std::string& body,
                                         const std::string& content_type,
                                         std::chrono::milliseconds timeout) {
    CurlHandle c;
    const std::string token = bearer();
    if (auto r = setup(c, cfg_, path, token, timeout); !r) {
        return tl::unexpected(r.error());
    }
    const std::string m(method);
    curl_easy_setopt(c.h, CURLOPT_CUSTOMREQUEST, m.c_str());
    if (m != "GET") {
        curl_easy_setopt(c.h, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(c.h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    if (!content_type.empty()) {
        c.headers = curl_slist_append(c.headers, ("Content-Type: " + content_type).c_str());
    }
    curl_easy_setopt(c.h, CURLOPT_HTTPHEADER, c.headers);
    HttpResponse resp;
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &resp.body);
    const CURLcode rc = curl_easy_perform(c.h);
    if (rc != CURLE_OK) {
        return fail(Errc::Io, m + " " + path + ": " + curl_error(c, rc));
    }
    curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &resp.status);
    resp.content_type = content_type_of(c.h);
    if (resp.status == 401) {
        token_refused(token);
    }
    return resp;
}

Result<HttpResponse> KubeClient::watch(const std::string& path,
                                       const std::function<bool(std::string_view)>& on_line,
                                       const std::atomic<bool>& stop,
                                       std::chrono::milliseconds max_duration,
                                       std::chrono::milliseconds idle) {
    CurlHandle c;
    const std::string token = bearer();
    if (auto r = setup(c, cfg_, path, token, max_duration); !r) {
        return tl::unexpected(r.error());
    }
    curl_easy_setopt(c.h, CURLOPT_HTTPHEADER, c.headers);
    WatchState w;
    w.h = c.h;
    w.on_line = &on_line;
    w.stop = &stop;
    curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &w);
    curl_easy_setopt(c.h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c.h, CURLOPT_XFERINFOFUNCTION, watch_progress);
    curl_easy_setopt(c.h, CURLOPT_XFERINFODATA, &w);
    // No byte at all for `idle`: the connection is dead (servers send bookmarks).
    curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c.h, CURLOPT_LOW_SPEED_TIME,
                     static_cast<long>(std::max<int64_t>(1, idle.count() / 1000)));
    const CURLcode rc = curl_easy_perform(c.h);
    HttpResponse resp;
    curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, &resp.status);
    resp.content_type = content_type_of(c.h);
    resp.body = std::move(w.body);
    if (w.stopped_by_callback) {
        return resp;
    }
    if (rc != CURLE_OK) {
        if (stop.load(std::memory_order_relaxed)) {
            return fail(Errc::Io, "watch stopped");
        }
        return fail(Errc::Io, "watch " + path + ": " + curl_error(c, rc) +
                                  (w.pending.empty() ? "" : " (stream cut mid-event)"));
    }
    if (resp.status == 401) {
        token_refused(token);
    }
    return resp;
}

} // namespace sluice::cp
