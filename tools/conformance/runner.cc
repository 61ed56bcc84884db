#include "runner.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api_input.h"
#include "cases.h"
#include "checks.h"
#include "compile.h"
#include "fixtures.h"
#include "live.h"
#include "live_cases.h"
#include "loader.h"
#include "mutations.h"
#include "traffic.h"
#include "yaml_doc.h"

namespace sluice::conformance {

namespace {

constexpr const char* kClassName = "sluice";
constexpr int64_t kBaseTime = 1767225600; // 2026-01-01T00:00:00Z

struct Counts {
    int passed = 0, failed = 0, skipped = 0, xfail = 0, xpass = 0;
};

struct KnownFailures {
    std::set<std::string> items;
    [[nodiscard]] bool has(const std::string& k) const { return items.count(k) > 0; }
};

std::optional<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
        return std::nullopt;
    }
    return ss.str();
}

std::optional<KnownFailures> load_known_failures(const std::string& path) {
    KnownFailures kf;
    if (path.empty()) {
        return kf;
    }
    auto text = read_file(path);
    if (!text) {
        return std::nullopt;
    }
    std::istringstream in(*text);
    std::string line;
    while (std::getline(in, line)) {
        // A '#' preceded by a letter or digit belongs to a case id ("Test#3"); a comment
        // starts at a '#' at the start of the line or after whitespace.
        for (size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '#' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t')) {
                line.resize(i);
                break;
            }
        }
        while (!line.empty() &&
               (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
            line.pop_back();
        }
        size_t start = 0;
        while (start < line.size() && (line[start] == ' ' || line[start] == '\t')) {
            ++start;
        }
        if (start < line.size()) {
            kf.items.insert(line.substr(start));
        }
    }
    return kf;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
    size_t pos = 0;
    while ((pos = s.find(from, pos)) != std::string::npos) {
        s.replace(pos, from.size(), to);
        pos += to.size();
    }
    return s;
}

// ------------------------------------------------------------------ traffic mode helpers

/// Splits manifest text into documents and names each (kind, namespace, name).
std::vector<TextDoc> split_docs(const std::string& text, const std::string& label) {
    std::vector<TextDoc> out;
    std::vector<std::string> chunks(1);
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.starts_with("---")) {
            chunks.emplace_back();
            continue;
        }
        chunks.back() += line + "\n";
    }
    for (std::string& c : chunks) {
        cp::Diagnostics diags;
        const auto docs = cp::parse_yaml(c, label, cp::LoadLimits{}, diags);
        if (docs.empty()) {
            continue; // comments only
        }
        TextDoc d;
        const cp::Node& root = docs.front().root;
        if (const cp::Node* k = root.get("kind"); k && k->is_scalar()) {
            d.kind = k->scalar;
        }
        if (const cp::Node* md = root.get("metadata"); md && md->is_map()) {
            if (const cp::Node* n = md->get("name"); n && n->is_scalar()) {
                d.name = n->scalar;
            }
            if (const cp::Node* n = md->get("namespace"); n && n->is_scalar()) {
                d.ns = n->scalar;
            }
        }
        d.text = std::move(c);
        out.push_back(std::move(d));
    }
    return out;
}

std::string join_docs(const std::vector<TextDoc>& docs) {
    std::string out;
    for (const TextDoc& d : docs) {
        out += "---\n" + d.text;
        if (!d.text.ends_with("\n")) {
            out += "\n";
        }
    }
    return out;
}

bool selects(const std::map<std::string, std::string>& selector,
             const std::map<std::string, std::string>& labels) {
    return !selector.empty() && std::all_of(selector.begin(), selector.end(), [&](const auto& kv) {
        auto it = labels.find(kv.first);
        return it != labels.end() && it->second == kv.second;
    });
}

/// Kubernetes-looking name suffix ("7c9d8f6b5d", "x2k4p"), stable for `seed`.
std::string k8s_suffix(const std::string& seed, size_t n) {
    static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
    uint64_t h = 1469598103934665603ULL;
    for (char c : seed) {
        h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
    }
    std::string out;
    for (size_t i = 0; i < n; ++i) {
        out += kAlphabet[h % (sizeof kAlphabet - 1)];
        h = h / (sizeof kAlphabet - 1) * 2654435761ULL + i + 1;
    }
    return out;
}

bool ipv6_loopback_usable() {
    const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    sockaddr_in6 a{};
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

/// The Deployment whose echo pod also answers on [::1] (HTTPRouteServiceTypes patches
/// IPv6 EndpointSlices with its pod IPs).
constexpr const char* kV6Deployment = "gateway-conformance-infra/infra-backend-v1";

/// What a Deployment's echo-basic container is configured for, by its environment:
/// GRPC_ECHO_SERVER (the gRPC echo on HTTP_PORT), TCP_ECHO_SERVER (the TCP echo on
/// TCP_PORT, and on TLS_PORT over TLS), TLS_SERVER_CERT (HTTPS on HTTPS_PORT, or the
/// TCP echo's TLS port) with the Secret mounted for it, TLS_CLIENT_CACERTS (client
/// certificates requested and verified) with the ConfigMap mounted for it.
struct EchoMode {
    bool grpc = false, tcp = false;
    std::string tls_secret; ///< "ns/name" of the serving certificate, or ""
    std::string client_ca;  ///< "ns/name" of the client CA ConfigMap, or ""
};

/// The echo-basic TLS port (HTTPS_PORT and TLS_PORT default to 8443 in the suite's image).
constexpr int kEchoTlsPort = 8443;

std::map<std::string, EchoMode> echo_modes(const std::vector<cp::Document>& docs) {
    std::map<std::string, EchoMode> out;
    auto scalar = [](const cp::Node* n) { return n && n->is_scalar() ? n->scalar : ""; };
    for (const cp::Document& d : docs) {
        const cp::Node& root = d.root;
        if (scalar(root.get("kind")) != "Deployment") {
            continue;
        }
        const cp::Node* md = root.get("metadata");
        const cp::Node* spec = root.get("spec");
        const cp::Node* tmpl = spec ? spec->get("template") : nullptr;
        const cp::Node* pod = tmpl ? tmpl->get("spec") : nullptr;
        if (!md || !pod) {
            continue;
        }
        const std::string ns = scalar(md->get("namespace")).empty() ? std::string("default")
                                                                    : scalar(md->get("namespace"));
        EchoMode m;
        bool tls_env = false, client_ca_env = false;
        if (const cp::Node* cs = pod->get("containers"); cs && cs->is_seq()) {
            for (const cp::Node& c : cs->items) {
                const cp::Node* env = c.get("env");
                if (!env || !env->is_seq()) {
                    continue;
                }
                for (const cp::Node& e : env->items) {
                    const std::string name = scalar(e.get("name"));
                    m.grpc = m.grpc || name == "GRPC_ECHO_SERVER";
                    m.tcp = m.tcp || name == "TCP_ECHO_SERVER";
                    tls_env = tls_env || name == "TLS_SERVER_CERT";
                    client_ca_env = client_ca_env || name == "TLS_CLIENT_CACERTS";
                }
            }
        }
        if (const cp::Node* vs = pod->get("volumes"); tls_env && vs && vs->is_seq()) {
            for (const cp::Node& v : vs->items) {
                const cp::Node* sec = v.get("secret");
                if (sec && m.tls_secret.empty() && !scalar(sec->get("secretName")).empty()) {
                    m.tls_secret = ns + "/" + scalar(sec->get("secretName"));
                }
                const cp::Node* cm = v.get("configMap");
                if (client_ca_env && cm && m.client_ca.empty() &&
                    !scalar(cm->get("name")).empty()) {
                    m.client_ca = ns + "/" + scalar(cm->get("name"));
                }
            }
        }
        out[ns + "/" + scalar(md->get("name"))] = m;
    }
    return out;
}

/// One echo pod per Deployment replica, each on its own loopback address, listening on
/// the target ports of the Services that select it, in the mode its Deployment asks for
/// (HTTP with h2c on the kubernetes.io/h2c ports and HTTPS on the TLS port, gRPC echo, or
/// TCP echo), with the serving certificate of the Secret it mounts.
std::vector<EchoPod> make_pods(const cp::Store& s, bool v6,
                               const std::map<std::string, EchoMode>& modes, const Fixtures& fx) {
    std::vector<const cp::Deployment*> ds;
    for (const cp::Deployment& d : s.deployments) {
        ds.push_back(&d);
    }
    std::sort(ds.begin(), ds.end(), [](const cp::Deployment* a, const cp::Deployment* b) {
        return std::tie(a->meta.ns, a->meta.name) < std::tie(b->meta.ns, b->meta.name);
    });
    std::vector<EchoPod> out;
    for (size_t i = 0; i < ds.size() && i < 250; ++i) {
        const cp::Deployment& d = *ds[i];
        EchoMode mode;
        if (auto it = modes.find(d.meta.ns + "/" + d.meta.name); it != modes.end()) {
            mode = it->second;
        }
        auto cert = fx.cert_pem.find(mode.tls_secret);
        auto key = fx.key_pem.find(mode.tls_secret);
        const bool tls = cert != fx.cert_pem.end() && key != fx.key_pem.end();
        std::set<int> http, h2c, https, grpc, tcp, tcp_tls;
        for (const cp::Service& svc : s.services) {
            if (svc.meta.ns != d.meta.ns || !selects(svc.selector, d.pod_labels)) {
                continue;
            }
            for (const cp::ServicePort& sp : svc.ports) {
                if (sp.protocol == "UDP" || sp.protocol == "SCTP") {
                    continue;
                }
                const int port = sp.target_port ? sp.target_port
                                                : (sp.target_port_name.empty() ? sp.port : 3000);
                if (port <= 0 || port > 65535) {
                    continue;
                }
                if (tls && port == kEchoTlsPort) {
                    (mode.tcp ? tcp_tls : https).insert(port);
                } else if (mode.grpc) {
                    grpc.insert(port);
                } else if (mode.tcp) {
                    tcp.insert(port);
                } else {
                    (sp.app_protocol == "kubernetes.io/h2c" ? h2c : http).insert(port);
                }
            }
        }
        for (int p : h2c) {
            http.erase(p);
        }
        if (http.empty() && h2c.empty() && https.empty() && grpc.empty() && tcp.empty() &&
            tcp_tls.empty()) {
            http.insert(3000);
        }
        const std::string rs = k8s_suffix(d.meta.ns + "/" + d.meta.name, 10);
        for (int r = 0; r < std::max(1, std::min(d.replicas, 200)); ++r) {
            EchoPod p;
            p.ns = d.meta.ns;
            p.deployment = d.meta.name;
            p.pod = d.meta.name + "-" + rs + "-" +
                    k8s_suffix(d.meta.ns + "/" + d.meta.name + "#" + std::to_string(r), 5);
            p.address = "127.2." + std::to_string(i) + "." + std::to_string(r + 1);
            p.http_ports.assign(http.begin(), http.end());
            p.h2c_ports.assign(h2c.begin(), h2c.end());
            p.tls_ports.assign(https.begin(), https.end());
            p.grpc_ports.assign(grpc.begin(), grpc.end());
            p.tcp_ports.assign(tcp.begin(), tcp.end());
            p.tcp_tls_ports.assign(tcp_tls.begin(), tcp_tls.end());
            if (tls) {
                p.cert_pem = cert->second;
                p.key_pem = key->second;
                if (auto ca = fx.cert_pem.find(mode.client_ca); ca != fx.cert_pem.end()) {
                    p.client_ca_pem = ca->second;
                }
            }
            if (v6 && r == 0 && d.meta.ns + "/" + d.meta.name == kV6Deployment &&
                !p.http_ports.empty()) {
                p.extra_listen = "[::1]:" + std::to_string(p.http_ports.front());
            }
            out.push_back(std::move(p));
        }
    }
    return out;
}

/// EndpointSlices for the Services (chosen by `pick`) whose selector matches echo pods:
/// the endpoint controller's part, with the pods' real addresses.
std::string endpoint_slices(const cp::Store& s, const std::vector<EchoPod>& pods,
                            const std::function<bool(const cp::Service&)>& pick) {
    std::string out;
    for (const cp::Service& svc : s.services) {
        if (svc.selector.empty() || !pick(svc)) {
            continue;
        }
        std::vector<std::string> addrs;
        for (const cp::Deployment& d : s.deployments) {
            if (d.meta.ns != svc.meta.ns || !selects(svc.selector, d.pod_labels)) {
                continue;
            }
            for (const EchoPod& p : pods) {
                if (p.ns == d.meta.ns && p.deployment == d.meta.name) {
                    addrs.push_back(p.address);
                }
            }
        }
        if (addrs.empty()) {
            continue;
        }
        std::string y = "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
                        "  name: " +
                        svc.meta.name + "-echo\n  namespace: " + svc.meta.ns +
                        "\n  labels:\n    kubernetes.io/service-name: " + svc.meta.name +
                        "\naddressType: IPv4\nports:\n";
        for (const cp::ServicePort& sp : svc.ports) {
            const int port =
                sp.target_port ? sp.target_port : (sp.target_port_name.empty() ? sp.port : 3000);
            y += "- port: " + std::to_string(port) + "\n  protocol: " + sp.protocol + "\n";
            if (!sp.name.empty()) {
                y += "  name: " + sp.name + "\n";
            }
        }
        y += "endpoints:\n";
        for (const std::string& a : addrs) {
            y += "- addresses: [\"" + a + "\"]\n  conditions: {ready: true}\n";
        }
        out += y;
    }
    return out;
}

/// One item of a test's timeline: a status check or a traffic case.
struct Item {
    bool is_check = true;
    int index = 0;     ///< check index (checks) or position in `cases` (cases)
    std::string key;   ///< "<Test>:check:<i>" or the case id
    std::string label; ///< for reports
    int phase = 0;     ///< how many mutations precede it
    Outcome outcome;
};

/// The state after k mutations: the store and its compile output.
struct Phase {
    cp::Store store;
    std::unique_ptr<cp::CompileOutput> out;
    std::string broken; ///< a mutation up to here could not be applied
};

class Runner {
public:
    Runner(const RunOptions& o, std::ostream& out, std::ostream& err)
        : o_(o)
        , out_(out)
        , err_(err) {}

    int run() {
        auto cf = load_case_file(o_.cases_file);
        if (!cf) {
            err_ << "sluice-conformance: " << cf.error().message << "\n";
            return 2;
        }
        auto kf = load_known_failures(o_.known_failures_file);
        if (!kf) {
            err_ << "sluice-conformance: cannot read " << o_.known_failures_file << "\n";
            return 2;
        }
        kf_ = *kf;
        const std::string base_path = o_.manifests_dir + "/base/manifests.yaml";
        auto base = read_file(base_path);
        if (!base) {
            err_ << "sluice-conformance: cannot read " << base_path << "\n";
            return 2;
        }
        cp::Diagnostics diags;
        base_docs_ = cp::parse_yaml(*base, base_path, cp::LoadLimits{}, diags);
        if (o_.input == "api") {
            base_docs_ = through_api(base_docs_);
        }
        if (diags.errors() > 0) {
            for (const cp::Diagnostic& d : diags.items()) {
                err_ << d.str() << "\n";
            }
            return 2;
        }
        auto fx = make_fixtures();
        if (!fx) {
            err_ << "sluice-conformance: fixtures: " << fx.error().message << "\n";
            return 2;
        }
        fx_ = std::move(*fx);
        const std::string klass = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n"
                                  "metadata:\n  name: " +
                                  std::string(kClassName) +
                                  "\nspec:\n  controllerName: " + cp::kControllerName + "\n";
        fixture_docs_ = cp::parse_yaml(klass + "---\n" + fx_.yaml, "<runner fixtures>",
                                       cp::LoadLimits{}, diags);
        if (o_.input == "api") {
            fixture_docs_ = through_api(fixture_docs_);
        }
        if (diags.errors() > 0) {
            for (const cp::Diagnostic& d : diags.items()) {
                err_ << d.str() << "\n";
            }
            return 2;
        }
        for (const std::string& f : cp::supported_features()) {
            features_.insert(f);
        }
        std::optional<std::regex> run_re;
        if (!o_.run_regex.empty()) {
            try {
                run_re.emplace(o_.run_regex, std::regex::ECMAScript);
            } catch (const std::regex_error& e) {
                err_ << "sluice-conformance: bad --run regex: " << e.what() << "\n";
                return 2;
            }
        }
        for (const std::string& t : o_.tests) {
            if (!cf->tests.count(t)) {
                err_ << "sluice-conformance: no test " << t << " in " << o_.cases_file << "\n";
                unreadable_ = true;
            }
        }
        std::vector<const TestSpec*> selected;
        for (const auto& [name, spec] : cf->tests) {
            if (!o_.tests.empty() &&
                std::find(o_.tests.begin(), o_.tests.end(), name) == o_.tests.end()) {
                continue;
            }
            if (run_re && !std::regex_search(name, *run_re)) {
                continue;
            }
            selected.push_back(&spec);
        }
        if (o_.mode == "traffic") {
            if (int rc = start_live(*base, selected); rc != 0) {
                return rc;
            }
        }
        for (const TestSpec* sp : selected) {
            const std::string& name = sp->name;
            const TestSpec& spec = *sp;
            std::vector<const CaseSpec*> cases;
            for (const CaseSpec& c : cf->cases) {
                if (c.test == name) {
                    cases.push_back(&c);
                }
            }
            run_test(spec, cases);
        }
        if (live_) {
            live_->stop();
        }
        out_ << c_.xfail << " xfail, " << c_.xpass << " xpass\n";
        out_ << c_.passed << " passed, " << c_.failed << " failed, " << c_.skipped << " skipped\n";
        if (unreadable_) {
            return 2;
        }
        return c_.failed > 0 ? 1 : 0;
    }

private:
    /// Traffic mode: starts the echo pods, sluice-l7 and the controlplane with the base
    /// manifests. The Deployments of the selected tests' own manifests get their echo pods
    /// now too (their EndpointSlices come with the test's manifests). Returns 0, or the
    /// exit status to end with.
    int start_live(const std::string& base_text, const std::vector<const TestSpec*>& tests) {
        if (::geteuid() != 0) {
            std::ifstream in("/proc/sys/net/ipv4/ip_unprivileged_port_start");
            int start = 1024;
            in >> start;
            if (start > 80) {
                out_ << "SKIP traffic mode: the Gateways listen on ports 80 and 443; run as root "
                        "or lower net.ipv4.ip_unprivileged_port_start (now "
                     << start << ")\n";
                return 77;
            }
        }
        cp::LoadOptions lo;
        lo.gateway_class_name = kClassName;
        lo.controller_name = cp::kControllerName;
        cp::Diagnostics diags;
        cp::Store base;
        cp::load_documents(base_docs_, lo, base, diags);
        cp::load_documents(fixture_docs_, lo, base, diags);
        cp::Store with_tests = base;
        std::map<std::string, EchoMode> modes = echo_modes(base_docs_);
        add_test_deployments(tests, lo, with_tests, modes);
        pods_ = make_pods(with_tests, ipv6_loopback_usable(), modes, fx_);
        const std::string klass = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n"
                                  "metadata:\n  name: " +
                                  std::string(kClassName) +
                                  "\nspec:\n  controllerName: " + cp::kControllerName + "\n";
        const std::string base_yaml =
            "# sluice-conformance --mode traffic: GatewayClass, runtime fixtures, the suite's "
            "base manifests and the EndpointSlices of the echo pods\n" +
            klass + "---\n" + fx_.yaml + "---\n" +
            replace_all(base_text, "{GATEWAY_CLASS_NAME}", kClassName) + "\n" +
            endpoint_slices(base, pods_, [](const cp::Service&) { return true; });
        LiveOptions lopt;
        lopt.build_dir = o_.build_dir;
        lopt.source_dir = o_.source_dir;
        lopt.keep = o_.keep_temp;
        live_ = std::make_unique<Live>(lopt);
        if (auto r = live_->start(base_yaml, pods_, err_); !r) {
            err_ << "sluice-conformance: traffic mode: " << r.error().message << "\n";
            live_->stop();
            return 2;
        }
        pods_ = live_->pods();
        return 0;
    }

    /// The Deployments in the manifests of `tests` (not the L4 ones: their traffic is not
    /// sent) and the Services of the same files that select them, added to `store`, with
    /// their echo modes. A Deployment already known (the base's) is left alone.
    void add_test_deployments(const std::vector<const TestSpec*>& tests, const cp::LoadOptions& lo,
                              cp::Store& store, std::map<std::string, EchoMode>& modes) {
        std::set<std::string> files;
        for (const TestSpec* t : tests) {
            const bool l4 = std::any_of(t->features.begin(), t->features.end(), [](const auto& f) {
                return f == "TCPRoute" || f == "UDPRoute";
            });
            if (!l4) {
                files.insert(t->manifests.begin(), t->manifests.end());
            }
        }
        for (const std::string& m : files) {
            const std::string path = o_.manifests_dir + "/tests/" + m;
            auto text = read_file(path);
            if (!text || text->find("kind: Deployment") == std::string::npos) {
                continue;
            }
            cp::Diagnostics diags;
            auto docs = cp::parse_yaml(*text, path, cp::LoadLimits{}, diags);
            cp::Store file;
            cp::load_documents(docs, lo, file, diags);
            for (const auto& [key, mode] : echo_modes(docs)) {
                modes.emplace(key, mode);
            }
            for (const cp::Deployment& d : file.deployments) {
                const bool known =
                    std::any_of(store.deployments.begin(), store.deployments.end(),
                                [&](const cp::Deployment& o) {
                                    return o.meta.ns == d.meta.ns && o.meta.name == d.meta.name;
                                });
                if (known) {
                    continue;
                }
                store.deployments.push_back(d);
                for (const cp::Service& svc : file.services) {
                    if (svc.meta.ns == d.meta.ns && selects(svc.selector, d.pod_labels)) {
                        store.services.push_back(svc);
                    }
                }
            }
        }
    }

    std::vector<std::string> pod_addresses(const std::string& ns, const std::string& deployment,
                                           bool v6) const {
        std::vector<std::string> out;
        for (const EchoPod& p : pods_) {
            if (p.ns != ns || p.deployment != deployment) {
                continue;
            }
            if (!v6) {
                out.push_back(p.address);
            } else if (!p.extra_listen.empty()) {
                out.push_back(p.extra_listen.substr(1, p.extra_listen.find(']') - 1));
            }
        }
        return out;
    }

    /// Traffic mode's evaluation of one test: each phase's manifests go to the
    /// controlplane's config directory; its status checks are polled on the status files
    /// until they hold (or the time is up), sluice-l7 must have the generation in force,
    /// then the cases are sent.
    void run_live(const TestSpec& t, const std::vector<const CaseSpec*>& cases,
                  std::vector<Item>& items, std::vector<Phase>& phases,
                  const std::vector<Mutation>& muts, std::vector<TextDoc> docs,
                  const std::set<std::string>& test_files) {
        // Cases this runner cannot send, and tests with nothing to send at all.
        std::map<int, std::string> case_skip;
        std::string first_reason;
        for (const Item& it : items) {
            if (!it.is_check) {
                std::string why = live_skip_reason(cases[static_cast<size_t>(it.index)]->raw, t);
                if (!why.empty()) {
                    case_skip[it.index] = why;
                    if (first_reason.empty()) {
                        first_reason = why;
                    }
                }
            }
        }
        if (cases.empty() || case_skip.size() == cases.size()) {
            const std::string why =
                cases.empty() ? "status checks only, no traffic (see --mode decide)" : first_reason;
            for (Item& it : items) {
                it.outcome = skipped(why);
            }
            return;
        }
        if (!dead_.empty()) {
            for (Item& it : items) {
                it.outcome = failed("the live processes are gone: " + dead_);
            }
            return;
        }
        const auto t0 = Clock::now();
        std::string live_broken;
        for (size_t k = 0; k < phases.size(); ++k) {
            std::vector<Item*> checks, case_items;
            for (Item& it : items) {
                if (it.phase == static_cast<int>(k)) {
                    (it.is_check ? checks : case_items).push_back(&it);
                }
            }
            if (k > 0 && live_broken.empty()) {
                const Mutation& m = muts[k - 1];
                if (!m.live) {
                    live_broken = "step \"" + m.what + "\" is not replayed over traffic";
                } else {
                    LiveMutEnv env{docs,
                                   [this](const std::string& ns, const std::string& d, bool v6) {
                                       return pod_addresses(ns, d, v6);
                                   },
                                   &fx_};
                    if (std::string why = m.live(env); !why.empty()) {
                        live_broken = "step \"" + m.what + "\" failed: " + why;
                    }
                }
            }
            const std::string broken = !phases[k].broken.empty() ? phases[k].broken : live_broken;
            if (!broken.empty() || (checks.empty() && case_items.empty())) {
                for (Item* it : checks) {
                    it->outcome = skipped(broken);
                }
                for (Item* it : case_items) {
                    it->outcome = skipped(broken);
                }
                continue;
            }
            std::string why;
            if (!live_->alive(why)) {
                dead_ = why;
                for (Item* it : checks) {
                    it->outcome = failed("the live processes are gone: " + why);
                }
                for (Item* it : case_items) {
                    it->outcome = failed("the live processes are gone: " + why);
                }
                continue;
            }
            // ---- apply this phase's manifests and wait until they are in force
            const size_t since = live_->write_test_config(
                "# " + t.name + " (step " + std::to_string(k) + ")\n" + join_docs(docs));
            const auto deadline = Clock::now() + std::chrono::milliseconds(o_.ready_ms);
            const Reconcile r = live_->wait_reconcile(since, deadline);
            std::string not_ready;
            if (!r.seen) {
                not_ready = "the controlplane logged no reconcile within " +
                            std::to_string(o_.ready_ms / 1000) + " s";
            } else if (r.refused) {
                std::string first;
                std::istringstream in(r.diagnostics);
                std::string line;
                while (std::getline(in, line) && first.size() < 600) {
                    if (line.find("error") != std::string::npos) {
                        first += (first.empty() ? "" : " | ") + line;
                    }
                }
                not_ready = "the controlplane refused the configuration: " +
                            (first.empty() ? r.line : first);
            }
            cp::CompileOutput status;
            std::optional<uint64_t> l7gen;
            World w;
            w.store = &phases[k].store;
            w.test_files = test_files;
            for (;;) {
                status = live_->read_status();
                w.out = &status;
                bool all = true;
                for (Item* it : checks) {
                    it->outcome = evaluate_check(t.checks[static_cast<size_t>(it->index)], w);
                    all = all && it->outcome.verdict != Verdict::Fail;
                }
                l7gen = live_->l7_generation();
                const bool gen_ok = !r.seen || (l7gen && *l7gen >= r.generation);
                if ((all && gen_ok) || Clock::now() >= deadline) {
                    break;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            if (o_.verbose) {
                err_ << "  " << t.name << " step " << k << ": " << r.line
                     << "; sluice-l7 generation "
                     << (l7gen ? std::to_string(*l7gen) : std::string("?")) << "\n";
            }
            if (r.seen && !r.refused && !r.programmed) {
                not_ready = not_ready.empty() ? "sluice-l7 did not acknowledge generation " +
                                                    std::to_string(r.generation)
                                              : not_ready;
            }
            if (!not_ready.empty()) {
                for (Item* it : checks) {
                    if (it->outcome.verdict == Verdict::Fail) {
                        it->outcome.why += " (" + not_ready + ")";
                    }
                }
            }
            LiveCaseEnv env;
            env.status = &status;
            env.pods = &pods_;
            env.fixtures = &fx_;
            env.test = t.name;
            env.consistency = std::chrono::milliseconds(o_.consistency_ms);
            for (Item* it : case_items) {
                if (auto s = case_skip.find(it->index); s != case_skip.end()) {
                    it->outcome = skipped(s->second);
                    continue;
                }
                it->outcome = evaluate_live_case(cases[static_cast<size_t>(it->index)]->raw, env);
                if (it->outcome.verdict == Verdict::Fail && !not_ready.empty()) {
                    it->outcome.why += " (" + not_ready + ")";
                }
            }
        }
        if (o_.verbose) {
            const auto ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
            err_ << "  " << t.name << ": " << ms << " ms\n";
        }
    }

    void run_test(const TestSpec& t, const std::vector<const CaseSpec*>& cases) {
        const int n_items = static_cast<int>(t.checks.size() + cases.size());
        for (const std::string& f : t.features) {
            if (!features_.count(f)) {
                out_ << "SKIP " << t.name << ": needs feature " << f << "\n";
                c_.skipped += n_items;
                return;
            }
        }
        // Negative tests that the upstream suite skips when the implementation claims the
        // feature they probe for absence (their Go code returns early; the data cannot
        // say so in `features`).
        static const std::map<std::string, std::string> kSkipWhenClaimed = {
            {"TLSRouteListenerTerminateNotSupported", "TLSRouteModeTerminate"},
            {"TLSRouteListenerMixedTerminationNotSupported", "TLSRouteModeMixed"},
        };
        if (auto it = kSkipWhenClaimed.find(t.name);
            it != kSkipWhenClaimed.end() && features_.count(it->second)) {
            out_ << "SKIP " << t.name << ": only for implementations without " << it->second
                 << "\n";
            c_.skipped += n_items;
            return;
        }
        // ---------------------------------------------------------- the Store
        cp::LoadOptions lo;
        lo.gateway_class_name = kClassName;
        lo.controller_name = cp::kControllerName;
        cp::Diagnostics diags;
        Phase p0;
        cp::load_documents(base_docs_, lo, p0.store, diags);
        cp::load_documents(fixture_docs_, lo, p0.store, diags);
        stamp_creation(p0.store, kBaseTime);
        std::set<std::string> test_files;
        std::vector<TextDoc> live_docs;
        bool placeholders = false;
        for (const std::string& m : t.manifests) {
            const std::string path = o_.manifests_dir + "/tests/" + m;
            auto text = read_file(path);
            if (!text) {
                out_ << "ERROR " << t.name << ": cannot read " << path << "\n";
                err_ << "sluice-conformance: cannot read " << path << "\n";
                unreadable_ = true;
                c_.skipped += n_items;
                return;
            }
            if (text->find("PLACEHOLDER_") != std::string::npos) {
                placeholders = true;
                *text = replace_all(*text, "PLACEHOLDER_USABLE_ADDRS", kUsableAddress);
                *text = replace_all(*text, "PLACEHOLDER_UNUSABLE_ADDRS", kUnusableAddress);
            }
            test_files.insert(path);
            if (live_) {
                for (TextDoc& d :
                     split_docs(replace_all(*text, "{GATEWAY_CLASS_NAME}", kClassName), path)) {
                    live_docs.push_back(std::move(d));
                }
            }
            const size_t before = diags.size();
            auto docs = cp::parse_yaml(*text, path, cp::LoadLimits{}, diags);
            if (o_.input == "api") {
                docs = through_api(docs);
            }
            for (size_t i = before; i < diags.size(); ++i) {
                if (diags.items()[i].object.empty() &&
                    diags.items()[i].severity == cp::Severity::Error) {
                    out_ << "ERROR " << t.name << ": " << diags.items()[i].str() << "\n";
                    unreadable_ = true;
                }
            }
            cp::load_documents(docs, lo, p0.store, diags);
        }
        stamp_creation(p0.store, kBaseTime + 60);
        if (o_.verbose) {
            for (const cp::Diagnostic& d : diags.items()) {
                out_ << "  diag: " << d.str() << "\n";
            }
        }
        cp::CompileOptions copts;
        if (placeholders) {
            copts.usable_addresses = copts.default_addresses;
            copts.usable_addresses.push_back(kUsableAddress);
        }

        // ---------------------------------------------------------- the timeline
        std::vector<Item> items;
        for (size_t i = 0; i < t.checks.size(); ++i) {
            Item it;
            it.is_check = true;
            it.index = static_cast<int>(i);
            it.key = t.name + ":check:" + std::to_string(i);
            it.label = "check " + std::to_string(i) + " " + describe_check(t.checks[i]);
            items.push_back(std::move(it));
        }
        for (size_t i = 0; i < cases.size(); ++i) {
            Item it;
            it.is_check = false;
            it.index = static_cast<int>(i);
            it.key = cases[i]->id;
            it.label = "case " + cases[i]->id;
            items.push_back(std::move(it));
        }
        const std::vector<Mutation> muts = mutations_for(t.name);
        std::vector<std::string> unplaced(muts.size());
        for (size_t k = 0; k < muts.size(); ++k) {
            const Mutation& m = muts[k];
            int at = -1; // first check index that sees the mutation
            const std::string& anchor = m.after_check.empty() ? m.before_check : m.after_check;
            if (!anchor.empty()) {
                int seen = 0;
                for (size_t i = 0; i < t.checks.size(); ++i) {
                    if (jstr(t.checks[i], "check") == anchor && ++seen == m.nth) {
                        at = static_cast<int>(i) + (m.after_check.empty() ? 0 : 1);
                        break;
                    }
                }
                if (at < 0) {
                    unplaced[k] = "cannot place step \"" + m.what + "\": no check #" +
                                  std::to_string(m.nth) + " named " + anchor;
                }
            }
            for (Item& it : items) {
                bool after = false;
                if (it.is_check) {
                    after = at >= 0 && it.index >= at;
                } else {
                    for (const std::string& c : m.cases) {
                        after = after || c == "*" || c == it.key ||
                                (c.starts_with("#") && it.key == t.name + c);
                    }
                }
                if (after) {
                    it.phase = static_cast<int>(k) + 1;
                }
                if (!unplaced[k].empty() && it.is_check && at < 0 && !anchor.empty()) {
                    // Checks we cannot place relative to the step: judged at the end state.
                    it.phase = std::max(it.phase, static_cast<int>(k) + 1);
                }
            }
        }

        // ---------------------------------------------------------- phases
        std::vector<Phase> phases;
        phases.push_back(std::move(p0));
        for (size_t k = 0; k < muts.size(); ++k) {
            Phase next;
            next.store = phases.back().store;
            next.broken = phases.back().broken;
            if (next.broken.empty()) {
                next.broken = unplaced[k];
            }
            if (next.broken.empty()) {
                MutEnv env{next.store,
                           test_files,
                           lo,
                           diags,
                           kBaseTime + 120 + 10 * static_cast<int64_t>(k),
                           fx_};
                const std::string why = muts[k].apply(env);
                if (!why.empty()) {
                    next.broken = "step \"" + muts[k].what + "\" failed: " + why;
                }
            }
            phases.push_back(std::move(next));
        }
        auto compiled = [&](int k) -> const cp::CompileOutput& {
            Phase& p = phases[static_cast<size_t>(k)];
            if (!p.out) {
                p.out = std::make_unique<cp::CompileOutput>(cp::compile(p.store, copts));
                cp::set_programmed(*p.out, true);
            }
            return *p.out;
        };

        // ---------------------------------------------------------- evaluate
        if (live_) {
            // The endpoint controller's part for the test's own Services with a selector.
            const std::string slices =
                endpoint_slices(phases[0].store, pods_, [&](const cp::Service& s) {
                    return test_files.count(s.meta.source.file) > 0;
                });
            for (TextDoc& d : split_docs(slices, "<runner: EndpointSlices>")) {
                live_docs.push_back(std::move(d));
            }
            run_live(t, cases, items, phases, muts, std::move(live_docs), test_files);
            report(t, items);
            return;
        }
        for (Item& it : items) {
            Phase& p = phases[static_cast<size_t>(it.phase)];
            if (!p.broken.empty()) {
                it.outcome = skipped(p.broken);
                continue;
            }
            World w;
            w.store = &p.store;
            w.out = &compiled(it.phase);
            w.test_files = test_files;
            it.outcome = it.is_check
                             ? evaluate_check(t.checks[static_cast<size_t>(it.index)], w)
                             : evaluate_case(cases[static_cast<size_t>(it.index)]->raw, w, fx_);
        }
        report(t, items);
    }

    void report(const TestSpec& t, const std::vector<Item>& items) {
        const bool test_known = kf_.has(t.name);
        int checks = 0, checks_ok = 0, cases = 0, cases_ok = 0, skips = 0;
        int fails = 0, xfails = 0;
        std::vector<std::string> lines;
        std::string first_skip;
        for (const Item& it : items) {
            (it.is_check ? checks : cases) += 1;
            const bool known = test_known || kf_.has(it.key);
            switch (it.outcome.verdict) {
            case Verdict::Pass:
                (it.is_check ? checks_ok : cases_ok) += 1;
                ++c_.passed;
                if (kf_.has(it.key)) {
                    ++c_.xpass;
                    lines.push_back("  XPASS " + it.label + " (listed as a known failure)");
                } else if (o_.verbose) {
                    lines.push_back("  ok    " + it.label);
                }
                break;
            case Verdict::Skip:
                ++skips;
                ++c_.skipped;
                if (first_skip.empty()) {
                    first_skip = it.outcome.why;
                }
                if (o_.verbose) {
                    lines.push_back("  skip  " + it.label + ": " + it.outcome.why);
                }
                break;
            case Verdict::Fail:
                if (known) {
                    ++xfails;
                    ++c_.xfail;
                    lines.push_back("  XFAIL " + it.label + ": " + it.outcome.why);
                } else {
                    ++fails;
                    ++c_.failed;
                    lines.push_back("  " + it.label + ": " + it.outcome.why);
                }
                break;
            }
        }
        const std::string figures = "(checks " + std::to_string(checks_ok) + "/" +
                                    std::to_string(checks) + ", cases " + std::to_string(cases_ok) +
                                    "/" + std::to_string(cases) +
                                    (skips ? ", " + std::to_string(skips) + " skipped" : "") +
                                    (xfails ? ", " + std::to_string(xfails) + " xfail" : "") + ")";
        if (fails > 0) {
            out_ << "FAIL " << t.name << " " << figures << "\n";
        } else if (skips == static_cast<int>(items.size()) && !items.empty()) {
            out_ << "SKIP " << t.name << ": " << first_skip << "\n";
        } else if (xfails > 0) {
            out_ << "XFAIL " << t.name << " " << figures << "\n";
        } else {
            out_ << (test_known ? "XPASS " : "PASS ") << t.name << " " << figures << "\n";
            if (test_known) {
                ++c_.xpass;
            }
        }
        for (const std::string& l : lines) {
            out_ << l << "\n";
        }
    }

    const RunOptions& o_;
    std::ostream& out_;
    std::ostream& err_;
    KnownFailures kf_;
    std::vector<cp::Document> base_docs_, fixture_docs_;
    Fixtures fx_;
    std::set<std::string> features_;
    Counts c_;
    bool unreadable_ = false;
    // traffic mode
    std::unique_ptr<Live> live_;
    std::vector<EchoPod> pods_;
    std::string dead_; ///< why the live processes are gone ("" while they run)
};

} // namespace

int run(const RunOptions& opts, std::ostream& out, std::ostream& err) {
    Runner r(opts, out, err);
    return r.run();
}

} // namespace sluice::conformance
