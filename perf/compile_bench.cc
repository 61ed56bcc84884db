// compile_bench: how long the controlplane takes to turn a large cluster into IR.
//
// Generates in memory a cluster of N HTTPRoutes (default 10,000) over 100 namespaces and
// 1,000 hostnames, with their Services, EndpointSlices, Namespaces, one GatewayClass and one
// Gateway (HTTP + HTTPS listeners), as YAML text; loads it through parse_yaml +
// load_documents; then measures the full compile (median of --runs), the IR size, the peak
// RSS, and a one-route edit followed by a recompile. The baseline, measured in the same
// process, is yaml-cpp's YAML::LoadAll of the same text: the cost of merely reading the
// input. Ratios to it are what to compare across machines; absolute times are printed too.
//
//   compile_bench [--routes N] [--runs R] [--out FILE]
//
// Writes a JSON result (default perf/results/compile-<date>.json). Exits 0 when the run is
// sound (whether or not the goals are met), 1 when the generated input does not load or
// compile cleanly, 2 when the result file would be malformed.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <yaml-cpp/yaml.h>

#include "compile.h"
#include "ir_codec.h"
#include "loader.h"
#include "yaml_doc.h"

namespace sluice::perf {
namespace {

constexpr double kGoalCompileMs = 200.0;
constexpr double kGoalPeakMb = 200.0;
constexpr double kGoalIncrementalMs = 5.0;

struct Config {
    int routes = 10000;
    int namespaces = 100;
    int hostnames = 1000;
    int services_per_ns = 20; ///< scaled down for small runs (see parse_args)
    int runs = 5;
    std::string out;
};

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
    if (v.empty()) {
        return 0.0;
    }
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/// Runs `f` `runs` times; returns every duration in ms.
std::vector<double> time_runs(int runs, const std::function<void()>& f) {
    std::vector<double> out;
    for (int i = 0; i < runs; ++i) {
        const auto t0 = Clock::now();
        f();
        out.push_back(ms_since(t0));
    }
    return out;
}

/// VmHWM (peak resident set) of this process in MB, or -1.
double peak_rss_mb() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("VmHWM:", 0) == 0) {
            return std::strtod(line.c_str() + 6, nullptr) / 1024.0; // kB
        }
    }
    return -1.0;
}

/// Resets VmHWM to the current RSS (Linux >= 4.0), so a phase's peak can be read alone.
bool reset_peak_rss() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    out.flush();
    return out.good();
}

std::string base64(const std::string& in) {
    static const char* kAlphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) |
                           (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += kAlphabet[v & 63];
    }
    if (i + 1 == in.size()) {
        const uint32_t v = static_cast<uint8_t>(in[i]) << 16;
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        const uint32_t v =
            (static_cast<uint8_t>(in[i]) << 16) | (static_cast<uint8_t>(in[i + 1]) << 8);
        out += kAlphabet[(v >> 18) & 63];
        out += kAlphabet[(v >> 12) & 63];
        out += kAlphabet[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

std::string bio_string(BIO* b) {
    char* p = nullptr;
    const long n = BIO_get_mem_data(b, &p);
    return n > 0 ? std::string(p, static_cast<size_t>(n)) : std::string();
}

/// A self-signed P-256 certificate and key (PEM), so the HTTPS listener resolves its
/// certificateRef like a real one. Empty strings when OpenSSL refuses.
std::pair<std::string, std::string> make_cert() {
    std::pair<std::string, std::string> out;
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* x = X509_new();
    BIO* cb = BIO_new(BIO_s_mem());
    BIO* kb = BIO_new(BIO_s_mem());
    if (key && x && cb && kb) {
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365);
        X509_set_pubkey(x, key);
        X509_NAME* name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                   reinterpret_cast<const unsigned char*>("*.example.com"), -1, -1,
                                   0);
        X509_set_issuer_name(x, name);
        if (X509_sign(x, key, EVP_sha256()) > 0 && PEM_write_bio_X509(cb, x) == 1 &&
            PEM_write_bio_PrivateKey(kb, key, nullptr, nullptr, 0, nullptr, nullptr) == 1) {
            out = {bio_string(cb), bio_string(kb)};
        }
    }
    BIO_free(kb);
    BIO_free(cb);
    X509_free(x);
    EVP_PKEY_free(key);
    return out;
}

std::string ns_name(int i) {
    char buf[16];
    std::snprintf(buf, sizeof(buf), "ns-%03d", i);
    return buf;
}

/// The whole cluster as one multi-document YAML text.
std::string generate(const Config& c, size_t& n_services) {
    std::ostringstream y;
    y << "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n"
      << "metadata: {name: sluice}\nspec: {controllerName: " << cp::kControllerName << "}\n";
    y << "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: infra}\n";
    const auto [crt, key] = make_cert();
    y << "---\napiVersion: v1\nkind: Secret\nmetadata: {name: gw-cert, namespace: infra}\n"
      << "type: kubernetes.io/tls\ndata:\n  tls.crt: " << base64(crt)
      << "\n  tls.key: " << base64(key) << "\n";
    y << R"(---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
  - name: https
    port: 443
    protocol: HTTPS
    tls:
      mode: Terminate
      certificateRefs: [{name: gw-cert}]
    allowedRoutes: {namespaces: {from: All}}
)";
    n_services = 0;
    for (int n = 0; n < c.namespaces; ++n) {
        const std::string ns = ns_name(n);
        y << "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: " << ns << ", labels: {team: t"
          << n % 10 << "}}\n";
        for (int s = 0; s < c.services_per_ns; ++s) {
            y << "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-" << s
              << ", namespace: " << ns << "}\nspec:\n  selector: {app: svc-" << s
              << "}\n  ports: [{name: http, port: 8080, targetPort: 8080}]\n";
            y << "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n"
              << "  name: svc-" << s << "-abcde\n  namespace: " << ns
              << "\n  labels: {kubernetes.io/service-name: svc-" << s << "}\n"
              << "addressType: IPv4\nendpoints:\n";
            for (int e = 0; e < 2; ++e) {
                y << "- addresses: [10." << n << "." << s << "." << e + 1
                  << "]\n  conditions: {ready: true}\n";
            }
            y << "ports: [{name: http, port: 8080, protocol: TCP}]\n";
            ++n_services;
        }
    }
    for (int i = 0; i < c.routes; ++i) {
        const std::string ns = ns_name(i % c.namespaces);
        const int s0 = i % c.services_per_ns;
        const int s1 = (i + 1) % c.services_per_ns;
        const int s2 = (i + 2) % c.services_per_ns;
        y << "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
          << "metadata: {name: route-" << i << ", namespace: " << ns << "}\nspec:\n"
          << "  parentRefs: [{name: gw, namespace: infra}]\n"
          << "  hostnames: [h" << i % c.hostnames << ".example.com]\n  rules:\n";
        y << "  - matches:\n    - path: {type: PathPrefix, value: /r" << i << "/api}\n"
          << "      headers: [{name: x-tenant, value: t" << i % 7 << "}]\n"
          << "    backendRefs:\n    - {name: svc-" << s0 << ", port: 8080, weight: 90}\n";
        if (i % 2 == 0) {
            y << "    - {name: svc-" << s1 << ", port: 8080, weight: 10}\n";
        }
        y << "  - matches:\n    - path: {type: Exact, value: /r" << i << "/login}\n"
          << "      method: POST\n"
          << "    backendRefs: [{name: svc-" << s2 << ", port: 8080}]\n";
        if (i % 3 != 2) {
            y << "  - matches:\n    - path: {type: PathPrefix, value: /r" << i << "/static}\n"
              << "    - headers: [{name: x-static, value: \"1\"}]\n"
              << "    filters:\n    - type: ResponseHeaderModifier\n"
              << "      responseHeaderModifier: {set: [{name: cache-control, value: max-age=60}]}\n"
              << "    backendRefs: [{name: svc-" << s1 << ", port: 8080}]\n";
        }
    }
    return y.str();
}

bool route_accepted(const cp::ObjectStatus& st) {
    if (st.parents.empty()) {
        return false;
    }
    for (const cp::ParentStatus& p : st.parents) {
        bool ok = false;
        for (const cp::Condition& c : p.conditions) {
            ok = ok || (c.type == "Accepted" && c.status == "True");
        }
        if (!ok) {
            return false;
        }
    }
    return true;
}

std::string today() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%d", &tm);
    return buf;
}

std::string now_iso() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

int usage(const char* argv0) {
    std::fprintf(stderr, "usage: %s [--routes N] [--runs R] [--out FILE]\n", argv0);
    return 1;
}

bool parse_args(int argc, char** argv, Config& c) {
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc) {
            return false;
        }
        const char* v = argv[++i];
        if (a == "--routes") {
            c.routes = std::atoi(v);
        } else if (a == "--runs") {
            c.runs = std::atoi(v);
        } else if (a == "--out") {
            c.out = v;
        } else {
            return false;
        }
    }
    // 20 Services per namespace at 10,000 routes; fewer (at least 3) for a smoke run.
    c.services_per_ns = std::clamp(c.routes / (c.namespaces * 5), 3, 20);
    return c.routes > 0 && c.runs > 0;
}

/// Every number the result must carry, finite and not negative.
bool well_formed(const nlohmann::json& j) {
    static const char* kNumbers[] = {"routes",
                                     "objects",
                                     "yaml_bytes",
                                     "load_ms",
                                     "compile_ms",
                                     "incremental_ms",
                                     "ir_bytes",
                                     "peak_rss_mb",
                                     "baseline_yaml_loadall_ms",
                                     "ratio_compile_to_baseline",
                                     "ratio_load_to_baseline",
                                     "ratio_incremental_to_baseline"};
    for (const char* k : kNumbers) {
        if (!j.contains(k) || !j[k].is_number() || !std::isfinite(j[k].get<double>()) ||
            j[k].get<double>() < 0) {
            std::fprintf(stderr, "compile_bench: result field '%s' missing or not a number\n", k);
            return false;
        }
    }
    return j.contains("goals") && j["goals"].is_object() && j.contains("compile_ms_runs") &&
           j["compile_ms_runs"].is_array();
}

int run(const Config& cfg) {
    std::printf("compile_bench: %d routes, %d namespaces, %d hostnames, %d runs per figure\n",
                cfg.routes, cfg.namespaces, cfg.hostnames, cfg.runs);
    size_t n_services = 0;
    const auto tg = Clock::now();
    const std::string text = generate(cfg, n_services);
    const double gen_ms = ms_since(tg);
    std::printf("  generated %.1f MB of YAML in %.0f ms\n", text.size() / 1e6, gen_ms);

    // Load: parse_yaml + load_documents into a fresh Store each run.
    const bool hwm_resettable = reset_peak_rss();
    cp::Store store;
    cp::Diagnostics diags;
    const std::vector<double> load_runs = time_runs(cfg.runs, [&] {
        store = cp::Store{};
        diags.clear();
        const std::vector<cp::Document> docs =
            cp::parse_yaml(text, "generated.yaml", cp::LoadLimits{}, diags);
        cp::load_documents(docs, cp::LoadOptions{}, store, diags);
    });
    const double load_peak = peak_rss_mb();
    if (diags.errors() > 0 || store.routes.size() != static_cast<size_t>(cfg.routes)) {
        std::fprintf(stderr, "compile_bench: generated input did not load cleanly (%zu routes):\n",
                     store.routes.size());
        for (size_t i = 0; i < diags.items().size() && i < 10; ++i) {
            std::fprintf(stderr, "  %s\n", diags.items()[i].str().c_str());
        }
        return 1;
    }

    // Full compile.
    if (hwm_resettable) {
        reset_peak_rss();
    }
    cp::CompileOutput out;
    const std::vector<double> compile_runs =
        time_runs(cfg.runs, [&] { out = cp::compile(store, cp::CompileOptions{}); });
    const std::string ir_bytes = ir::encode(out.ir);
    const uint64_t ir_hash = ir::hash_of(ir_bytes);
    size_t accepted = 0;
    for (const cp::ObjectStatus& st : out.statuses) {
        accepted += st.key.kind == "HTTPRoute" && route_accepted(st) ? 1 : 0;
    }
    if (accepted != static_cast<size_t>(cfg.routes) || out.ir.listeners.empty()) {
        std::fprintf(stderr, "compile_bench: only %zu of %d routes Accepted; %zu IR listeners\n",
                     accepted, cfg.routes, out.ir.listeners.size());
        return 1;
    }

    // Incremental: one route changes one path, then the whole store is recompiled.
    const size_t victim = store.routes.size() / 2;
    std::vector<double> incr_runs;
    bool ir_changed = true;
    for (int r = 0; r < cfg.runs; ++r) {
        store.routes[victim].http_rules[0].matches[0].path = "/edited-" + std::to_string(r);
        const auto t0 = Clock::now();
        out = cp::compile(store, cp::CompileOptions{});
        incr_runs.push_back(ms_since(t0));
        ir_changed = ir_changed && ir::hash_of(ir::encode(out.ir)) != ir_hash;
    }
    const double compile_peak = peak_rss_mb();
    if (!ir_changed) {
        std::fprintf(stderr, "compile_bench: editing a route's path did not change the IR\n");
        return 1;
    }
    out = cp::CompileOutput{};
    // The peak of the whole controlplane work (text, store, output) before the baseline.
    const double peak = hwm_resettable ? std::max(load_peak, compile_peak) : peak_rss_mb();

    // Baseline: yaml-cpp reading the same text into its own node tree, nothing else.
    std::vector<double> base_runs;
    size_t base_docs = 0;
    for (int r = 0; r < cfg.runs; ++r) {
        const auto t0 = Clock::now();
        try {
            base_docs = YAML::LoadAll(text).size();
        } catch (const YAML::Exception& e) {
            std::fprintf(stderr, "compile_bench: yaml-cpp refused the text: %s\n", e.what());
            return 1;
        }
        base_runs.push_back(ms_since(t0));
    }

    const double load_ms = median(load_runs);
    const double compile_ms = median(compile_runs);
    const double incr_ms = median(incr_runs);
    const double base_ms = median(base_runs);
    const auto ratio = [&](double x) { return base_ms > 0 ? x / base_ms : 0.0; };
    auto goal = [](double v, double g) { return v < g ? "met" : "NOT met"; };

    std::printf("  objects: %zu (%zu Services, %zu documents in the baseline parse)\n",
                store.size(), n_services, base_docs);
    std::printf("  baseline  YAML::LoadAll      %9.1f ms  (median of %d)\n", base_ms, cfg.runs);
    std::printf("  load      parse+load         %9.1f ms  = %.2fx baseline\n", load_ms,
                ratio(load_ms));
    std::printf("  compile   full               %9.1f ms  = %.2fx baseline   goal < %.0f ms: %s\n",
                compile_ms, ratio(compile_ms), kGoalCompileMs, goal(compile_ms, kGoalCompileMs));
    std::printf("  compile   after 1-route edit %9.1f ms  = %.2fx baseline   goal < %.0f ms: %s"
                "  (full recompute today)\n",
                incr_ms, ratio(incr_ms), kGoalIncrementalMs, goal(incr_ms, kGoalIncrementalMs));
    std::printf("  IR        %zu bytes (%.1f MB)\n", ir_bytes.size(), ir_bytes.size() / 1e6);
    std::printf("  peak RSS  %.1f MB (load %.1f, compile %.1f)%s   goal < %.0f MB: %s\n", peak,
                load_peak, compile_peak, hwm_resettable ? "" : " [process peak]", kGoalPeakMb,
                goal(peak, kGoalPeakMb));

    nlohmann::json j;
    j["benchmark"] = "compile";
    j["date"] = now_iso();
    j["routes"] = cfg.routes;
    j["namespaces"] = cfg.namespaces;
    j["hostnames"] = std::min(cfg.hostnames, cfg.routes);
    j["services"] = n_services;
    j["objects"] = store.size();
    j["yaml_bytes"] = text.size();
    j["runs"] = cfg.runs;
    j["load_ms"] = load_ms;
    j["load_ms_runs"] = load_runs;
    j["compile_ms"] = compile_ms;
    j["compile_ms_runs"] = compile_runs;
    j["incremental_ms"] = incr_ms;
    j["incremental_ms_runs"] = incr_runs;
    j["incremental_is_full_recompute"] = true;
    j["ir_bytes"] = ir_bytes.size();
    j["peak_rss_mb"] = peak;
    j["peak_rss_load_mb"] = load_peak;
    j["peak_rss_compile_mb"] = compile_peak;
    j["peak_rss_per_phase"] = hwm_resettable;
    j["baseline_yaml_loadall_ms"] = base_ms;
    j["baseline_yaml_loadall_ms_runs"] = base_runs;
    j["ratio_load_to_baseline"] = ratio(load_ms);
    j["ratio_compile_to_baseline"] = ratio(compile_ms);
    j["ratio_incremental_to_baseline"] = ratio(incr_ms);
    j["goals"] = {{"compile_ms", kGoalCompileMs},
                  {"peak_rss_mb", kGoalPeakMb},
                  {"incremental_ms", kGoalIncrementalMs}};
    j["goals_met"] = {{"compile_ms", compile_ms < kGoalCompileMs},
                      {"peak_rss_mb", peak < kGoalPeakMb},
                      {"incremental_ms", incr_ms < kGoalIncrementalMs}};

    const std::string path =
        cfg.out.empty() ? "perf/results/compile-" + today() + ".json" : cfg.out;
    std::error_code ec;
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
        std::filesystem::create_directories(parent, ec);
    }
    {
        std::ofstream f(path);
        f << j.dump(2) << "\n";
        if (!f.good()) {
            std::fprintf(stderr, "compile_bench: cannot write %s\n", path.c_str());
            return 2;
        }
    }
    // Read the file back: what was written must parse and carry every figure.
    std::ifstream back(path);
    const nlohmann::json parsed = nlohmann::json::parse(back, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded() || !well_formed(parsed)) {
        std::fprintf(stderr, "compile_bench: %s is malformed\n", path.c_str());
        return 2;
    }
    std::printf("  wrote %s\n", path.c_str());
    return 0;
}

} // namespace
} // namespace sluice::perf

int main(int argc, char** argv) {
    sluice::perf::Config cfg;
    if (!sluice::perf::parse_args(argc, argv, cfg)) {
        return sluice::perf::usage(argv[0]);
    }
    return sluice::perf::run(cfg);
}
