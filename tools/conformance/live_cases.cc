#include "live_cases.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "traffic.h"

namespace sluice::conformance {

namespace {

constexpr const char* kRequestIdParam = "gateway-api-conformance-request-id";
constexpr const char* kFreshUuid = "<fresh-uuid-per-attempt>";

std::string lower(std::string s) {
    for (char& c : s) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return s;
}

/// Replaces `from` in every string of `j`.
void substitute(Json& j, const std::string& from, const std::string& to) {
    if (j.is_string()) {
        std::string s = j.get<std::string>();
        size_t pos = 0;
        bool changed = false;
        while ((pos = s.find(from, pos)) != std::string::npos) {
            s.replace(pos, from.size(), to);
            pos += to.size();
            changed = true;
        }
        if (changed) {
            j = s;
        }
    } else if (j.is_object() || j.is_array()) {
        for (auto& v : j) {
            substitute(v, from, to);
        }
    }
}

bool mentions(const Json& j, const std::string& what) {
    return j.dump().find(what) != std::string::npos;
}

/// Where to send a case, and how.
struct Target {
    std::string address; ///< the Gateway's status address
    uint16_t port = 80;
    std::string scheme = "http";
    std::string protocol = "HTTP"; ///< the case's request.protocol
    std::string default_host;      ///< address[:port] as Go's client puts it in Host
    bool tls = false;              ///< HTTPS, H2 or TLS: the connection is TLS
    TlsOptions tls_opts;
};

/// "secret ns/name (tls.crt ...)" or "configmap ns/name ca.crt" -> "ns/name".
std::string fixture_ref(const std::string& text) {
    std::istringstream in(text);
    std::string kind, ref;
    in >> kind >> ref;
    return ref;
}

/// The client TLS configuration of a case: SNI, the trust root it names, the client
/// certificate it presents. Returns "" or why it cannot be built.
std::string tls_options(const Json& req, const LiveCaseEnv& env, TlsOptions& o) {
    const Json* tls = jget(req, "tls");
    o.sni = tls ? jstr(*tls, "server_name") : "";
    if (o.sni.empty()) {
        o.sni = jstr(req, "sni");
    }
    if (!tls) {
        return "";
    }
    if (const std::string ca = jstr(*tls, "trusted_ca"); !ca.empty()) {
        const std::string ref = fixture_ref(ca);
        if (!env.fixtures || !env.fixtures->cert_pem.count(ref)) {
            return "no runtime fixture " + ref + " for the trusted CA";
        }
        o.trusted_ca_pems = {env.fixtures->cert_pem.at(ref)};
    }
    if (const std::string cc = jstr(*tls, "client_certificate"); !cc.empty()) {
        const std::string ref = fixture_ref(cc);
        if (!env.fixtures || !env.fixtures->cert_pem.count(ref) ||
            !env.fixtures->key_pem.count(ref)) {
            return "no runtime fixture " + ref + " for the client certificate";
        }
        o.client_cert_pem = env.fixtures->cert_pem.at(ref);
        o.client_key_pem = env.fixtures->key_pem.at(ref);
    }
    return "";
}

std::string find_target(const Json& c, const LiveCaseEnv& env, Target& t) {
    const NsName gw = split_ns_name(jstr(c, "gateway"));
    const Json* req = jget(c, "request");
    t.protocol = req ? jstr(*req, "protocol", "HTTP") : "HTTP";
    const bool https = t.protocol == "HTTPS" || t.protocol == "H2";
    t.scheme = req ? jstr(*req, "scheme", https ? "https" : "http") : "http";
    t.tls = t.scheme == "https" || t.protocol == "TLS";
    const int def_port = t.tls ? 443 : 80;
    const auto port = jint(c, "port");
    t.port = static_cast<uint16_t>(port ? *port : def_port);
    if (t.tls && req) {
        if (std::string why = tls_options(*req, env, t.tls_opts); !why.empty()) {
            return why;
        }
        // H2: HTTP/2 by ALPN. HTTPS: the suite's http.Transport with its own TLS config
        // speaks HTTP/1.1 and offers no ALPN; nor does its TLS dialer for TLSRoutes.
        if (t.protocol == "H2") {
            t.tls_opts.alpn = {"h2"};
        }
    }
    const cp::ObjectStatus* st = env.status->find(cp::ObjectKey{"Gateway", gw.ns, gw.name});
    if (!st) {
        return "no status file for Gateway " + gw.ns + "/" + gw.name;
    }
    for (const cp::GatewayAddress& a : st->addresses) {
        if (!a.type.empty() && !a.value.empty()) {
            t.address = a.value;
            break;
        }
    }
    if (t.address.empty()) {
        return "Gateway " + gw.ns + "/" + gw.name + " has no status address with a type";
    }
    const bool v6 = t.address.find(':') != std::string::npos;
    t.default_host = v6 ? "[" + t.address + "]" : t.address;
    if (t.port != def_port) {
        t.default_host += ":" + std::to_string(t.port);
    }
    return "";
}

/// The request line and headers of a case, and what the comparison needs to know of it.
struct Built {
    std::string wire;  ///< HTTP/1.1
    HeaderList fields; ///< the same headers, for HTTP/2 (no Host, no Connection)
    std::string body;
    LiveExchange sent;
};

Built build(const Json& req, const Target& t,
            const std::vector<std::pair<std::string, std::string>>& extra_headers = {}) {
    Built b;
    b.sent.scheme = t.scheme;
    b.sent.method = jstr(req, "method", "GET");
    b.sent.target = jstr(req, "path", "/");
    b.sent.host = jstr(req, "host", t.default_host);
    std::string w =
        b.sent.method + " " + b.sent.target + " HTTP/1.1\r\nHost: " + b.sent.host + "\r\n";
    auto add = [&](const std::string& k, const std::string& v) {
        w += k + ": " + v + "\r\n";
        b.fields.emplace_back(k, v);
    };
    if (const Json* hs = jget(req, "headers"); hs && hs->is_object()) {
        for (auto it = hs->begin(); it != hs->end(); ++it) {
            if (it.value().is_string()) {
                add(it.key(), it.value().get<std::string>());
            } else if (it.value().is_array()) {
                for (const Json& v : it.value()) {
                    if (v.is_string()) {
                        add(it.key(), v.get<std::string>());
                    }
                }
            }
        }
    }
    for (const auto& [k, v] : extra_headers) {
        add(k, v);
    }
    std::string echo;
    if (const Json* es = jget(req, "echo_set_response_headers"); es && es->is_object()) {
        for (auto it = es->begin(); it != es->end(); ++it) {
            if (it.value().is_string()) {
                echo += (echo.empty() ? "" : ",") + it.key() + ":" + it.value().get<std::string>();
            }
        }
    }
    add("X-Echo-Set-Header", echo);
    const std::string body = jstr(req, "body");
    if (!body.empty()) {
        w += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    w += "Connection: close\r\n\r\n" + body;
    b.wire = std::move(w);
    b.body = body;
    return b;
}

/// Reads the echo backend's view of the request from an answer's JSON body.
void read_echo(const HeaderList& headers, const std::string& body, LiveExchange& x) {
    bool json = false;
    for (const auto& [k, v] : headers) {
        json = json || (lower(k) == "content-type" && v.find("json") != std::string::npos);
    }
    if (!json || body.empty()) {
        return;
    }
    const Json j = Json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !jget(j, "pod") || !jget(j, "path")) {
        return;
    }
    x.echoed = true;
    x.pod = jstr(j, "pod");
    x.ns = jstr(j, "namespace");
    x.backend_method = jstr(j, "method");
    x.backend_path = jstr(j, "path");
    x.backend_host = jstr(j, "host");
    if (const Json* hs = jget(j, "headers"); hs && hs->is_object()) {
        for (auto it = hs->begin(); it != hs->end(); ++it) {
            if (it.value().is_array()) {
                for (const Json& v : it.value()) {
                    if (v.is_string()) {
                        x.backend_headers.emplace_back(it.key(), v.get<std::string>());
                    }
                }
            } else if (it.value().is_string()) {
                x.backend_headers.emplace_back(it.key(), it.value().get<std::string>());
            }
        }
    }
    // echo-basic's TLS state (present only on TLS connections): what the gateway's
    // backend connection carried (BackendTLSPolicy SNI, the Gateway's client certificate).
    if (const Json* tls = jget(j, "tls"); tls && tls->is_object()) {
        x.backend_tls = true;
        x.backend_sni = jstr(*tls, "serverName");
        if (const Json* pc = jget(*tls, "peerCertificates"); pc && pc->is_array()) {
            for (const Json& pem : *pc) {
                if (pem.is_string()) {
                    x.backend_peer_certs.push_back(pem.get<std::string>());
                }
            }
        }
    }
}

/// Sends one request (HTTP/1.1, over TLS for https, or HTTP/2 for H2 and
/// H2C_PRIOR_KNOWLEDGE) and reads the echo backend's view of it from the answer.
LiveExchange exchange(const Target& t, const Built& b, std::chrono::milliseconds timeout) {
    LiveExchange x = b.sent;
    const std::string where = t.address + ":" + std::to_string(t.port);
    if (t.protocol == "H2" || t.protocol == "H2C_PRIOR_KNOWLEDGE") {
        H2Request r;
        r.method = b.sent.method;
        r.scheme = t.scheme;
        r.authority = b.sent.host;
        r.path = b.sent.target;
        r.headers = b.fields;
        r.body = b.body;
        const H2Response h =
            h2_exchange(t.address, t.port, t.tls ? &t.tls_opts : nullptr, r, timeout);
        if (!h.ok) {
            x.transport_error = true;
            x.error = "no HTTP/2 answer from " + where + ": " + h.error;
            return x;
        }
        x.status = h.status;
        x.headers = h.headers;
        read_echo(h.headers, h.body, x);
        return x;
    }
    const HttpResponse r =
        http_exchange(t.address, t.port, b.wire, timeout, t.tls ? &t.tls_opts : nullptr);
    if (!r.ok) {
        x.transport_error = true;
        x.error = "no HTTP answer from " + where + ": " + r.error;
        return x;
    }
    x.status = r.status;
    x.headers = r.headers;
    read_echo(r.headers, r.body, x);
    return x;
}

std::string describe(const LiveExchange& x) {
    if (x.transport_error) {
        return x.error;
    }
    std::string s = std::to_string(x.status);
    if (x.echoed) {
        s += " from " + x.ns + "/" + x.pod;
    }
    return s;
}

/// "infra-backend-v1-7c9d8f6b5d-x2k4p" -> "infra-backend-v1" (the suite's rule).
std::string backend_of_pod(const std::string& pod) {
    size_t cut = pod.size();
    for (int i = 0; i < 2; ++i) {
        const size_t d = pod.rfind('-', cut - 1);
        if (d == std::string::npos || d == 0) {
            return pod;
        }
        cut = d;
    }
    return pod.substr(0, cut);
}

void sleep_until_or(Clock::time_point when, Clock::time_point deadline) {
    std::this_thread::sleep_until(std::min(when, deadline));
}

/// Appends a query parameter to a request-URI.
std::string with_param(const std::string& target, const std::string& kv) {
    return target + (target.find('?') == std::string::npos ? "?" : "&") + kv;
}

// ------------------------------------------------------------------ mirrors

std::vector<const EchoPod*> mirror_pods(const LiveCaseEnv& env, const std::string& name,
                                        const std::string& ns) {
    std::vector<const EchoPod*> out;
    for (const EchoPod& p : *env.pods) {
        if (p.pod.starts_with(name) && (ns.empty() || p.ns == ns)) {
            out.push_back(&p);
        }
    }
    return out;
}

/// The request-URIs the pods logged ("Echoing back request made to <uri> to client").
std::vector<std::string> logged_uris(const std::vector<const EchoPod*>& pods) {
    std::vector<std::string> out;
    const std::string head = "Echoing back request made to ";
    for (const EchoPod* p : pods) {
        std::ifstream in(p->log);
        std::string line;
        while (std::getline(in, line)) {
            const size_t at = line.find(head);
            if (at == std::string::npos) {
                continue;
            }
            const size_t start = at + head.size();
            const size_t end = line.rfind(" to client");
            if (end == std::string::npos || end < start) {
                continue;
            }
            out.push_back(line.substr(start, end - start));
        }
    }
    return out;
}

Outcome check_mirror_logs(const Json& exp, const LiveCaseEnv& env, const std::string& uri) {
    const Json* mt = jget(exp, "mirrored_to");
    if (!mt || !mt->is_array()) {
        return pass();
    }
    for (const Json& m : *mt) {
        if (jnum(m, "percent")) {
            continue; // judged over 500 requests
        }
        const std::string name = jstr(m, "name");
        const std::string ns = jstr(m, "namespace");
        const auto pods = mirror_pods(env, name, ns);
        if (pods.empty()) {
            return failed("no echo pod " + ns + "/" + name + "* to read the mirror log of");
        }
        const auto deadline = Clock::now() + std::chrono::seconds(5);
        for (;;) {
            const auto uris = logged_uris(pods);
            if (std::find(uris.begin(), uris.end(), uri) != uris.end()) {
                break;
            }
            if (Clock::now() > deadline) {
                return failed("mirror " + ns + "/" + name + " never logged a request to " + uri);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    }
    return pass();
}

// ------------------------------------------------------------------ samples

/// Runs one(i) for every i in [0, n), `conc` at a time, on worker threads.
template <class One>
void parallel(int n, int conc, One one) {
    std::atomic<int> next{0};
    std::vector<std::thread> ths;
    for (int k = 0; k < std::max(1, conc); ++k) {
        ths.emplace_back([&] {
            for (;;) {
                const int i = next.fetch_add(1);
                if (i >= n) {
                    return;
                }
                one(i);
            }
        });
    }
    for (std::thread& th : ths) {
        th.join();
    }
}

/// Sends `n` requests, `conc` at a time; `make(i)` builds request i, `seen(i, x)` gets the
/// answer (called under a lock).
template <class Make, class Seen>
void sample(const Target& t, int n, int conc, std::chrono::milliseconds timeout, Make make,
            Seen seen) {
    std::mutex mu;
    parallel(n, conc, [&](int i) {
        const Built b = make(i);
        const LiveExchange x = exchange(t, b, timeout);
        std::lock_guard<std::mutex> lock(mu);
        seen(i, x);
    });
}

/// One request of a distribution: the answering pod, or "" and what came instead.
using Probe = std::function<std::pair<std::string, std::string>()>;

/// The weighted-distribution rule (REFERENCE.md section 6.7): `probe` is asked n times,
/// `conc` at a time; each backend's share within the tolerance, none for weight 0, up to
/// max_attempts rounds.
Outcome weighted(const Json& c, const Probe& probe) {
    const Json* exp = jget(c, "expect");
    const Json* ws = exp ? jget(*exp, "weights") : nullptr;
    if (!ws || !ws->is_object()) {
        return pass();
    }
    int n = 500, conc = 10, attempts = 10;
    double tol = 0.05;
    if (const Json* d = jget(*exp, "distribution"); d) {
        n = static_cast<int>(jint(*d, "requests").value_or(n));
        conc = static_cast<int>(jint(*d, "concurrency").value_or(conc));
        attempts = static_cast<int>(jint(*d, "max_attempts").value_or(attempts));
        tol = jnum(*d, "tolerance_abs_fraction").value_or(tol);
    }
    std::string last;
    for (int a = 0; a < attempts; ++a) {
        std::map<std::string, int> counts;
        std::map<std::string, int> errors;
        std::mutex mu;
        parallel(n, conc, [&](int) {
            const auto [pod, what] = probe();
            std::lock_guard<std::mutex> lock(mu);
            if (!pod.empty()) {
                ++counts[backend_of_pod(pod)];
            } else {
                ++errors[what];
            }
        });
        std::string got;
        for (const auto& [k, v] : counts) {
            got += (got.empty() ? "" : ", ") + k + "=" + std::to_string(v);
        }
        for (const auto& [k, v] : errors) {
            got += (got.empty() ? "" : ", ") + std::string("error ") + k + " x" + std::to_string(v);
        }
        std::string why;
        if (!errors.empty()) {
            why = "not every request was answered by a backend";
        }
        std::set<std::string> expected;
        for (auto it = ws->begin(); it != ws->end() && why.empty(); ++it) {
            if (!it.value().is_number()) {
                continue;
            }
            expected.insert(it.key());
            const double want = it.value().get<double>();
            const int have_n = counts.count(it.key()) ? counts[it.key()] : 0;
            const double have = static_cast<double>(have_n) / n;
            if (want == 0 && have_n != 0) {
                why = it.key() + " has weight 0 but got " + std::to_string(have_n) + " requests";
            } else if (std::fabs(have - want) > tol + 1e-9) {
                char buf[160];
                std::snprintf(buf, sizeof buf, "share of %s %.3f, expected %.3f +/- %.2f",
                              it.key().c_str(), have, want, tol);
                why = buf;
            }
        }
        for (const auto& [k, v] : counts) {
            if (why.empty() && !expected.count(k) && v > 0) {
                why = "traffic to unexpected backend " + k;
            }
        }
        if (why.empty()) {
            return pass();
        }
        last = why + " over " + std::to_string(n) + " requests [" + got + "]";
    }
    return failed(last + " (" + std::to_string(attempts) + " attempts)");
}

/// The HTTP probe of a distribution: the case's request, half of them with an X-Jitter
/// header (as the suite sends them).
Probe http_probe(const Json& req, const Target& t, const LiveCaseEnv& env) {
    return [&req, &t, timeout = env.request_timeout]() -> std::pair<std::string, std::string> {
        thread_local std::mt19937 g(std::random_device{}());
        const uint32_t j = g() % 20000; // >= 10000: no X-Jitter header
        const Built b =
            j >= 10000 ? build(req, t) : build(req, t, {{"X-Jitter", std::to_string(j)}});
        const LiveExchange x = exchange(t, b, timeout);
        if (x.echoed && x.status == 200) {
            return {x.pod, ""};
        }
        return {"", describe(x)};
    };
}

Outcome percent_mirrors(const Json& c, const Json& req, const Target& t, const LiveCaseEnv& env) {
    const Json* exp = jget(c, "expect");
    const Json* mt = exp ? jget(*exp, "mirrored_to") : nullptr;
    if (!mt || !mt->is_array()) {
        return pass();
    }
    for (const Json& m : *mt) {
        const auto pct = jnum(m, "percent");
        if (!pct) {
            continue;
        }
        const std::string name = jstr(m, "name");
        const std::string ns = jstr(m, "namespace");
        const auto pods = mirror_pods(env, name, ns);
        if (pods.empty()) {
            return failed("no echo pod " + ns + "/" + name + "* to read the mirror log of");
        }
        const int n = 500;
        const double p = *pct / 100.0;
        const double mean = n * p;
        const double sigma = std::sqrt(n * p * (1 - p));
        std::string last;
        for (int a = 0; a < 5; ++a) {
            std::vector<std::string> ids(n);
            for (std::string& id : ids) {
                id = uuid4();
            }
            const std::set<std::string> idset(ids.begin(), ids.end());
            int bad = 0;
            std::string bad_what;
            sample(
                t, n, 10, env.request_timeout,
                [&](int i) {
                    Json r = req;
                    r["path"] =
                        with_param(jstr(req, "path", "/"), std::string(kRequestIdParam) + "=" +
                                                               ids[static_cast<size_t>(i)]);
                    return build(r, t);
                },
                [&](int, const LiveExchange& x) {
                    if (x.transport_error || x.status != 200) {
                        ++bad;
                        bad_what = describe(x);
                    }
                });
            if (bad > 0) {
                last = std::to_string(bad) + " of " + std::to_string(n) +
                       " requests failed (last: " + bad_what + ")";
                continue;
            }
            // Mirrors are fire-and-forget: wait until the count stops moving.
            auto count = [&] {
                int k = 0;
                for (const std::string& uri : logged_uris(pods)) {
                    const size_t at = uri.find(std::string(kRequestIdParam) + "=");
                    if (at != std::string::npos &&
                        idset.count(uri.substr(at + std::string(kRequestIdParam).size() + 1, 36))) {
                        ++k;
                    }
                }
                return k;
            };
            int seen = count();
            auto stable_since = Clock::now();
            const auto deadline = Clock::now() + std::chrono::seconds(5);
            while (Clock::now() < deadline &&
                   Clock::now() - stable_since < std::chrono::milliseconds(400)) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
                const int now = count();
                if (now != seen) {
                    seen = now;
                    stable_since = Clock::now();
                }
            }
            if (std::fabs(seen - mean) <= 3 * sigma) {
                last.clear();
                break;
            }
            char buf[200];
            std::snprintf(buf, sizeof buf,
                          "%d of %d requests mirrored to %s, expected %.0f +/- %.1f (%g%%)", seen,
                          n, name.c_str(), mean, 3 * sigma, *pct);
            last = buf;
        }
        if (!last.empty()) {
            return failed(last + " (5 attempts)");
        }
    }
    return pass();
}

// ------------------------------------------------------------------ assertions

Outcome eventually(const Json& c0, const Target& t, const LiveCaseEnv& env) {
    Json c = c0;
    Json& req = c["request"];
    Json& exp = c["expect"];
    const bool weights = jget(exp, "weights") != nullptr;
    if (weights) {
        exp.erase("backend"); // one request names no single backend
    }
    // Mirror cases carry a request id, so the mirror pod's log line is this case's.
    std::string mirror_uri;
    if (const Json* mt = jget(exp, "mirrored_to"); mt && mt->is_array() && !mt->empty()) {
        const std::string kv = std::string(kRequestIdParam) + "=" + uuid4();
        req["path"] = with_param(jstr(req, "path", "/"), kv);
        if (Json* br = exp.contains("backend_request") ? &exp["backend_request"] : nullptr;
            br && br->is_object() && br->contains("path") && (*br)["path"].is_string() &&
            !(*br)["path"].get<std::string>().empty()) {
            (*br)["path"] = with_param((*br)["path"].get<std::string>(), kv);
        }
        mirror_uri = req["path"].get<std::string>();
    }
    const bool fresh = mentions(c, kFreshUuid);
    const auto start = Clock::now();
    const auto deadline = start + env.consistency;
    int streak = 0, attempts = 0;
    std::string last_fail;
    for (;;) {
        Json cc = c;
        if (fresh) {
            substitute(cc, kFreshUuid, uuid4());
        }
        const Built b = build(cc["request"], t);
        const LiveExchange x = exchange(t, b, env.request_timeout);
        ++attempts;
        const Outcome o = compare_live(cc, x, env.fixtures);
        if (o.verdict == Verdict::Skip) {
            return o;
        }
        if (o.verdict == Verdict::Pass) {
            if (++streak >= 3) {
                break;
            }
            continue;
        }
        streak = 0;
        last_fail = o.why;
        if (Clock::now() >= deadline) {
            const auto secs =
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
            return failed(last_fail + " [" + std::to_string(attempts) + " requests in " +
                          std::to_string(secs / 1000) + "." + std::to_string(secs % 1000 / 100) +
                          " s]");
        }
        sleep_until_or(Clock::now() + std::chrono::seconds(1), deadline);
    }
    if (!mirror_uri.empty()) {
        Outcome o = check_mirror_logs(exp, env, mirror_uri);
        if (o.verdict != Verdict::Pass) {
            return o;
        }
        o = percent_mirrors(c0, *jget(c0, "request"), t, env); // fresh ids, not this one
        if (o.verdict != Verdict::Pass) {
            return o;
        }
    }
    if (weights) {
        return weighted(c0, http_probe(c0["request"], t, env));
    }
    return pass();
}

Outcome never_200(const Json& c, const Target& t, const LiveCaseEnv& env) {
    const Json& req = *jget(c, "request");
    const auto deadline = Clock::now() + env.consistency;
    int streak = 0;
    std::string last;
    for (;;) {
        const LiveExchange x = exchange(t, build(req, t), env.request_timeout);
        if (!x.transport_error && x.status == 200) {
            return failed("expected never 200, got " + describe(x));
        }
        if (x.transport_error || x.status == 408 || x.status == 504) {
            streak = 0;
            last = describe(x);
        } else if (++streak >= 5) {
            return pass();
        }
        if (Clock::now() >= deadline) {
            return failed("no 5 non-200 HTTP answers in a row; last: " + last);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
}

Outcome websocket(const Json& c, const Target& t, const LiveCaseEnv& env) {
    const Json& req = *jget(c, "request");
    std::string path = "/ws";
    const std::string url = jstr(req, "url");
    if (const size_t s = url.find("://"); s != std::string::npos) {
        const size_t slash = url.find('/', s + 3);
        path = slash == std::string::npos ? "/" : url.substr(slash);
    }
    std::string origin = jstr(req, "origin");
    if (const size_t at = origin.find("<test name>"); at != std::string::npos) {
        origin.replace(at, 11, env.test);
    }
    std::vector<std::pair<int, std::string>> frames;
    for (const std::string& f : jstrs(req, "frames")) {
        if (f.starts_with("text ")) {
            std::string payload = f.substr(5);
            if (payload.size() >= 2 && payload.front() == '"' && payload.back() == '"') {
                payload = payload.substr(1, payload.size() - 2);
            }
            frames.emplace_back(1, payload);
        } else if (f.starts_with("binary ")) {
            std::string payload;
            const Json arr = Json::parse(f.substr(7), nullptr, false);
            if (arr.is_array()) {
                for (const Json& v : arr) {
                    if (v.is_number_integer()) {
                        payload += static_cast<char>(v.get<int>() & 0xff);
                    }
                }
            }
            frames.emplace_back(2, payload);
        } else {
            return skipped("WebSocket frame \"" + f + "\" is not understood");
        }
    }
    const std::string host = jstr(req, "host", t.default_host);
    const auto deadline = Clock::now() + env.consistency;
    int streak = 0;
    std::string last;
    for (;;) {
        const std::string err =
            websocket_echo(t.address, t.port, path, host, origin, frames, env.request_timeout);
        if (err.empty()) {
            if (++streak >= 3) {
                return pass();
            }
            continue;
        }
        streak = 0;
        last = err;
        if (Clock::now() >= deadline) {
            return failed("WebSocket echo: " + last);
        }
        sleep_until_or(Clock::now() + std::chrono::seconds(1), deadline);
    }
}

// ------------------------------------------------------------------ gRPC

/// One unary call of a gRPC case and what the echo server said about itself.
struct GrpcAnswer {
    bool ok = false; ///< a gRPC status arrived
    std::string error;
    int code = -1;
    std::string message;
    std::string pod, ns;
};

GrpcAnswer grpc_call(const Json& req, const Target& t, std::chrono::milliseconds timeout) {
    GrpcAnswer a;
    const std::string path = jstr(req, "rpc", jstr(req, "path", "/"));
    std::string authority = jstr(req, "authority");
    if (authority.empty()) {
        // grpc-go puts its dial target, the Gateway's "address:port", in :authority.
        const bool v6 = t.address.find(':') != std::string::npos;
        authority = (v6 ? "[" + t.address + "]" : t.address) + ":" + std::to_string(t.port);
    }
    HeaderList md;
    if (const Json* m = jget(req, "metadata"); m && m->is_object()) {
        for (auto it = m->begin(); it != m->end(); ++it) {
            if (it.value().is_string()) {
                md.emplace_back(it.key(), it.value().get<std::string>());
            }
        }
    }
    const GrpcResult r = grpc_unary(t.address, t.port, authority, path, md, timeout);
    if (!r.ok) {
        a.error =
            "no gRPC answer from " + t.address + ":" + std::to_string(t.port) + ": " + r.error;
        return a;
    }
    a.ok = true;
    a.code = r.grpc_status;
    a.message = r.grpc_message;
    // EchoResponse{1: Assertions{4: Context{1: namespace, 4: pod}}}
    bool found = false;
    const std::string_view assertions = pb_field(r.message, 1, found);
    const std::string_view context = found ? pb_field(assertions, 4, found) : std::string_view{};
    if (found) {
        a.ns = std::string(pb_field(context, 1, found));
        a.pod = std::string(pb_field(context, 4, found));
    }
    return a;
}

Outcome compare_grpc(const Json& exp, const GrpcAnswer& a) {
    if (!a.ok) {
        return failed(a.error);
    }
    const std::string want_name = jstr(exp, "grpc_code", "OK");
    const int want = grpc_code(want_name);
    if (want < 0) {
        return skipped("gRPC code " + want_name + " is not known to this runner");
    }
    if (a.code != want) {
        return failed("gRPC status " + std::to_string(a.code) +
                      (a.message.empty() ? "" : " (" + a.message + ")") + ", expected " +
                      want_name + " (" + std::to_string(want) + ")");
    }
    if (want != 0) {
        return pass();
    }
    if (auto ns = jopt_str(exp, "namespace"); ns && *ns != a.ns) {
        return failed("answered from namespace \"" + a.ns + "\", expected \"" + *ns + "\"");
    }
    if (auto b = jopt_str(exp, "backend"); b && !a.pod.starts_with(*b)) {
        return failed("answered by " + a.ns + "/" + a.pod + ", expected " + *b);
    }
    return pass();
}

/// Repeats `attempt` until it passes 3 times in a row (1 s after a failure, within the
/// consistency time). An attempt that is skipped ends it.
template <class Attempt>
Outcome consistently(const LiveCaseEnv& env, Attempt attempt) {
    const auto start = Clock::now();
    const auto deadline = start + env.consistency;
    int streak = 0, attempts = 0;
    for (;;) {
        const Outcome o = attempt();
        ++attempts;
        if (o.verdict == Verdict::Skip) {
            return o;
        }
        if (o.verdict == Verdict::Pass) {
            if (++streak >= 3) {
                return pass();
            }
            continue;
        }
        streak = 0;
        if (Clock::now() >= deadline) {
            const auto ms =
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
            return failed(o.why + " [" + std::to_string(attempts) + " attempts in " +
                          std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100) +
                          " s]");
        }
        sleep_until_or(Clock::now() + std::chrono::seconds(1), deadline);
    }
}

Outcome grpc_case(const Json& c, const Target& t, const LiveCaseEnv& env) {
    const Json& req = *jget(c, "request");
    Json exp = *jget(c, "expect");
    const bool weights = jget(exp, "weights") != nullptr;
    if (weights) {
        exp.erase("backend"); // one call names no single backend
    }
    Outcome o = consistently(
        env, [&] { return compare_grpc(exp, grpc_call(req, t, env.request_timeout)); });
    if (o.verdict != Verdict::Pass || !weights) {
        return o;
    }
    return weighted(c, [&req, &t, timeout = env.request_timeout]() {
        const GrpcAnswer a = grpc_call(req, t, timeout);
        if (a.ok && a.code == 0 && !a.pod.empty()) {
            return std::pair<std::string, std::string>{a.pod, ""};
        }
        return std::pair<std::string, std::string>{
            "", a.ok ? "grpc-status " + std::to_string(a.code) : a.error};
    });
}

// ------------------------------------------------------------------ TLS

/// expect_request_error: the round trip must fail (handshake or connection); any HTTP
/// answer fails the case. Sent three times.
Outcome request_error(const Json& c, const Target& t, const LiveCaseEnv& env) {
    const Json& req = *jget(c, "request");
    for (int i = 0; i < 3; ++i) {
        const LiveExchange x = exchange(t, build(req, t), env.request_timeout);
        if (!x.transport_error) {
            return failed("expected the request to fail (TLS handshake or connection), got HTTP " +
                          describe(x));
        }
    }
    return pass();
}

/// tcp_eventually_valid (TLSRoute): the suite's TCP echo dialogue through the listener;
/// IS_TLS tells whether the backend's side of the connection is TLS, TEST names the pod
/// and, over TLS, the SNI the backend saw.
Outcome tcp_answer(const Json& exp, const TcpEchoResult& r) {
    if (!r.ok) {
        return failed(r.error);
    }
    const bool want_tls = jbool(exp, "backend_is_tls");
    if (r.is_tls != (want_tls ? "true" : "false")) {
        return failed("the backend answered IS_TLS " + r.is_tls + ", expected " +
                      (want_tls ? "true" : "false"));
    }
    const Json j = Json::parse(r.test_json, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return failed("TEST answer is not JSON: " + r.test_json.substr(0, 120));
    }
    const std::string pod = jstr(j, "pod");
    const std::string ns = jstr(j, "namespace");
    if (auto want = jopt_str(exp, "namespace"); want && *want != ns) {
        return failed("answered from namespace \"" + ns + "\", expected \"" + *want + "\"");
    }
    if (auto want = jopt_str(exp, "backend"); want && !pod.starts_with(*want + "-")) {
        return failed("answered by " + ns + "/" + pod + ", expected " + *want);
    }
    const Json* tls = jget(j, "tls");
    if (auto want = jopt_str(exp, "backend_observed_sni"); want && !want->empty()) {
        const std::string got = tls ? jstr(*tls, "serverName") : "";
        if (!tls) {
            return failed("the backend saw no TLS, expected SNI " + *want);
        }
        if (got != *want) {
            return failed("the backend saw SNI \"" + got + "\", expected " + *want);
        }
    }
    if (auto want = jopt_str(exp, "tls_protocol"); want && !want->empty()) {
        const std::string got = tls ? jstr(*tls, "negotiatedProtocol") : "";
        if (got != *want) {
            return failed("the backend negotiated ALPN \"" + got + "\", expected " + *want);
        }
    }
    return pass();
}

Outcome tcp_valid(const Json& c, const Target& t, const LiveCaseEnv& env) {
    const Json& exp = *jget(c, "expect");
    return consistently(env, [&] {
        return tcp_answer(
            exp, tcp_echo(t.address, t.port, t.tls ? &t.tls_opts : nullptr, env.request_timeout));
    });
}

/// tls_connection_rejected: a TLS dial with the case's SNI must end in EOF or a reset
/// (not in an alert, and not in a completed handshake).
Outcome tls_rejected(const Target& t, const LiveCaseEnv& env) {
    TlsOptions o = t.tls_opts;
    o.trusted_ca_pems.clear(); // the suite's dial does not verify the certificate
    const auto deadline = Clock::now() + env.consistency;
    std::string last;
    for (;;) {
        std::string err;
        ConnFail why = ConnFail::None;
        const auto conn =
            Conn::open(t.address, t.port, &o, Clock::now() + env.request_timeout, err, &why);
        if (!conn && (why == ConnFail::Eof || why == ConnFail::Reset)) {
            return pass();
        }
        last = conn ? std::string("the TLS handshake completed")
                    : err + " (" + conn_fail_name(why) + ")";
        if (Clock::now() >= deadline) {
            return failed("expected the connection to be closed or reset (EOF, ECONNRESET); "
                          "last: " +
                          last);
        }
        sleep_until_or(Clock::now() + std::chrono::seconds(1), deadline);
    }
}

} // namespace

std::string live_skip_reason(const Json& c, const TestSpec& /*t*/) {
    const Json* req = jget(c, "request");
    const Json* exp = jget(c, "expect");
    if (!req || !exp) {
        return "case without request or expect object";
    }
    const std::string protocol = jstr(*req, "protocol", "HTTP");
    const std::string assertion = jstr(c, "assertion", "eventually_consistent");
    if (assertion.starts_with("mesh")) {
        return "mesh cases are not applicable to an edge gateway";
    }
    if (protocol == "TCP" || protocol == "UDP") {
        return "L4 dataplane (TCPRoute/UDPRoute traffic is sluice-dataplane's, not sluice-l7's)";
    }
    static const std::set<std::string> kProtocols = {"HTTP", "HTTPS", "H2", "H2C_PRIOR_KNOWLEDGE",
                                                     "GRPC", "TLS",   "WS"};
    if (!kProtocols.count(protocol)) {
        return "protocol " + protocol + " is not sent by this runner";
    }
    if (protocol == "TLS") {
        if (assertion != "tcp_eventually_valid" && assertion != "tls_connection_rejected") {
            return "assertion " + assertion + " is not sent over TLS by this runner";
        }
        return "";
    }
    if (assertion != "eventually_consistent" && assertion != "expect_failure_not_200" &&
        assertion != "websocket_echo" && assertion != "expect_request_error" &&
        assertion.find("weighted_distribution") == std::string::npos) {
        return "assertion " + assertion + " is not sent by this runner";
    }
    return "";
}

Outcome evaluate_live_case(const Json& c, const LiveCaseEnv& env) {
    try {
        Target t;
        if (std::string why = find_target(c, env, t); !why.empty()) {
            return failed(why);
        }
        const Json& req = *jget(c, "request");
        const std::string assertion = jstr(c, "assertion", "eventually_consistent");
        const std::string protocol = jstr(req, "protocol", "HTTP");
        if (assertion == "tls_connection_rejected") {
            return tls_rejected(t, env);
        }
        if (assertion == "tcp_eventually_valid") {
            return tcp_valid(c, t, env);
        }
        if (protocol == "GRPC") {
            return grpc_case(c, t, env);
        }
        if (protocol == "WS" || assertion == "websocket_echo") {
            return websocket(c, t, env);
        }
        if (assertion == "expect_request_error") {
            return request_error(c, t, env);
        }
        if (assertion == "expect_failure_not_200") {
            return never_200(c, t, env);
        }
        return eventually(c, t, env);
    } catch (const Json::exception& e) {
        return skipped(std::string("malformed case: ") + e.what());
    }
}

} // namespace sluice::conformance
