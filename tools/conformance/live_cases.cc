#include "live_cases.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <fstream>
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

/// Where to send a case.
struct Target {
    std::string address; ///< the Gateway's status address
    uint16_t port = 80;
    std::string scheme = "http";
    std::string default_host; ///< address[:port] as Go's client puts it in Host
};

std::string find_target(const Json& c, const LiveCaseEnv& env, Target& t) {
    const NsName gw = split_ns_name(jstr(c, "gateway"));
    const Json* req = jget(c, "request");
    t.scheme = req ? jstr(*req, "scheme", "http") : "http";
    const int def_port = t.scheme == "https" ? 443 : 80;
    const auto port = jint(c, "port");
    t.port = static_cast<uint16_t>(port ? *port : def_port);
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
    std::string wire;
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
    if (const Json* hs = jget(req, "headers"); hs && hs->is_object()) {
        for (auto it = hs->begin(); it != hs->end(); ++it) {
            if (it.value().is_string()) {
                w += it.key() + ": " + it.value().get<std::string>() + "\r\n";
            } else if (it.value().is_array()) {
                for (const Json& v : it.value()) {
                    if (v.is_string()) {
                        w += it.key() + ": " + v.get<std::string>() + "\r\n";
                    }
                }
            }
        }
    }
    for (const auto& [k, v] : extra_headers) {
        w += k + ": " + v + "\r\n";
    }
    std::string echo;
    if (const Json* es = jget(req, "echo_set_response_headers"); es && es->is_object()) {
        for (auto it = es->begin(); it != es->end(); ++it) {
            if (it.value().is_string()) {
                echo += (echo.empty() ? "" : ",") + it.key() + ":" + it.value().get<std::string>();
            }
        }
    }
    w += "X-Echo-Set-Header: " + echo + "\r\n";
    const std::string body = jstr(req, "body");
    if (!body.empty()) {
        w += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    w += "Connection: close\r\n\r\n" + body;
    b.wire = std::move(w);
    return b;
}

/// Sends one request and reads the echo backend's view of it from the answer.
LiveExchange exchange(const Target& t, const Built& b, std::chrono::milliseconds timeout) {
    LiveExchange x = b.sent;
    const HttpResponse r = http_exchange(t.address, t.port, b.wire, timeout);
    if (!r.ok) {
        x.transport_error = true;
        x.error =
            "no HTTP answer from " + t.address + ":" + std::to_string(t.port) + ": " + r.error;
        return x;
    }
    x.status = r.status;
    x.headers = r.headers;
    bool json = false;
    for (const auto& [k, v] : r.headers) {
        json = json || (lower(k) == "content-type" && v.find("json") != std::string::npos);
    }
    if (json && !r.body.empty()) {
        const Json j = Json::parse(r.body, nullptr, false);
        if (!j.is_discarded() && j.is_object() && jget(j, "pod") && jget(j, "path")) {
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
        }
    }
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

/// Sends `n` requests, `conc` at a time; `make(i)` builds request i, `seen(i, x)` gets the
/// answer (called under a lock).
template <class Make, class Seen>
void sample(const Target& t, int n, int conc, std::chrono::milliseconds timeout, Make make,
            Seen seen) {
    std::atomic<int> next{0};
    std::mutex mu;
    std::vector<std::thread> ths;
    for (int k = 0; k < std::max(1, conc); ++k) {
        ths.emplace_back([&] {
            for (;;) {
                const int i = next.fetch_add(1);
                if (i >= n) {
                    return;
                }
                const Built b = make(i);
                const LiveExchange x = exchange(t, b, timeout);
                std::lock_guard<std::mutex> lock(mu);
                seen(i, x);
            }
        });
    }
    for (std::thread& th : ths) {
        th.join();
    }
}

Outcome weighted(const Json& c, const Json& req, const Target& t, const LiveCaseEnv& env) {
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
        std::vector<uint32_t> jitter(static_cast<size_t>(n));
        {
            std::mt19937 g(std::random_device{}());
            for (uint32_t& j : jitter) {
                j = g() % 20000; // >= 10000: no X-Jitter header
            }
        }
        sample(
            t, n, conc, env.request_timeout,
            [&](int i) {
                const uint32_t j = jitter[static_cast<size_t>(i)];
                if (j >= 10000) {
                    return build(req, t);
                }
                return build(req, t, {{"X-Jitter", std::to_string(j)}});
            },
            [&](int, const LiveExchange& x) {
                if (x.echoed && x.status == 200) {
                    ++counts[backend_of_pod(x.pod)];
                } else {
                    ++errors[describe(x)];
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
        const Outcome o = compare_live(cc, x);
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
        return weighted(c0, c0["request"], t, env);
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

} // namespace

std::string live_skip_reason(const Json& c, const TestSpec& t) {
    const Json* req = jget(c, "request");
    if (!req || !jget(c, "expect")) {
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
    if (protocol == "TLS" || protocol == "HTTPS" || protocol == "H2" ||
        jstr(*req, "scheme") == "https" || jget(*req, "tls")) {
        return "needs TLS traffic: issue 5";
    }
    if (protocol == "GRPC") {
        return "needs HTTP/2 (gRPC)";
    }
    if (protocol == "H2C_PRIOR_KNOWLEDGE") {
        return "needs HTTP/2 (h2c prior knowledge)";
    }
    for (const std::string& f : t.features) {
        if (f == "BackendTLSPolicy" || f == "GatewayBackendClientCertificate") {
            return "needs TLS traffic: issue 5 (gateway to backend TLS)";
        }
    }
    if (protocol != "HTTP" && protocol != "WS") {
        return "protocol " + protocol + " is not sent by this runner";
    }
    if (assertion != "eventually_consistent" && assertion != "expect_failure_not_200" &&
        assertion != "websocket_echo" &&
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
        if (jstr(req, "protocol", "HTTP") == "WS" || assertion == "websocket_echo") {
            return websocket(c, t, env);
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
