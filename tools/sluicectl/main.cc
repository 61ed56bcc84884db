// sluicectl: validate manifests offline, explain a routing decision, show status.

#include <map>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "decide.h"
#include "ir_codec.h"
#include "manifests.h"

namespace po = boost::program_options;
using namespace sluice;

namespace {

constexpr const char* kUsage =
    "usage: sluicectl <command> [options]\n"
    "\n"
    "commands:\n"
    "  validate PATH...     print the status each object would get; exit 0 when every\n"
    "                       Gateway and Route is accepted with resolved refs, 1 otherwise,\n"
    "                       2 on unreadable input\n"
    "  explain PATH... --gateway NS/NAME --host H --path P [--port N] [--method M]\n"
    "          [--header K=V]... [--query K=V]... [--sni NAME] [--grpc] [-o json]\n"
    "                       which listener, route, rule, filters and backends a request hits\n"
    "  ir PATH...           print the compiled IR (text)\n"
    "  status [--status-dir DIR] [KIND[/NS]/NAME]\n"
    "                       print the status a running sluice-controlplane wrote\n"
    "  stats [--stats-file FILE] [-o json]\n"
    "                       live counters of a running sluice-dataplane\n"
    "\n"
    "Run 'sluicectl <command> --help' for the options of a command.\n";

int cmd_validate(const std::vector<std::string>& args) {
    po::options_description desc("sluicectl validate PATH... [options]");
    desc.add_options()("help,h", "this help")(
        "no-assume-class", "do not assume GatewayClasses missing from the input are sluice's")(
        "quiet,q", "print only diagnostics and the summary")(
        "path", po::value<std::vector<std::string>>()->multitoken(), "manifest files/dirs");
    po::positional_options_description pos;
    pos.add("path", -1);
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    if (vm.count("help") || !vm.count("path")) {
        std::cout << desc << "\nExit: 0 all accepted, 1 some object rejected or invalid, "
                             "2 unreadable input.\n";
        return vm.count("help") ? 0 : 2;
    }
    tools::Loaded in =
        tools::load_manifests(vm["path"].as<std::vector<std::string>>(), !vm.count("no-assume-class"));
    const size_t errors = tools::print_diagnostics(in.diags, std::cerr);
    for (const std::string& c : in.assumed_classes) {
        std::cerr << "note: GatewayClass " << c
                  << " is not in the input; assuming it is sluice's (controllerName "
                  << cp::kControllerName << ")\n";
    }
    if (in.unreadable) {
        std::cerr << "sluicectl: unreadable input\n";
        return 2;
    }
    cp::CompileOutput out = cp::compile(in.store, {});
    bool ok = errors == 0;
    size_t bad = 0;
    for (const cp::ObjectStatus& st : out.statuses) {
        if (!vm.count("quiet")) {
            std::cout << "---\n" << cp::status_yaml(st);
        }
        if (!cp::status_ok(st)) {
            ok = false;
            ++bad;
        }
    }
    size_t gateways = 0, routes = 0;
    for (const cp::ObjectStatus& st : out.statuses) {
        gateways += st.key.kind == "Gateway";
        routes += st.key.kind.ends_with("Route");
    }
    std::cerr << "validate: " << out.statuses.size() << " objects with status (" << gateways
              << " Gateways, " << routes << " Routes), " << bad << " not accepted/resolved, "
              << errors << " invalid manifests\n";
    std::cerr << "note: Programmed stays Pending offline; it turns True when a dataplane "
                 "confirms the configuration\n";
    return ok ? 0 : 1;
}

bool split_kv(const std::string& s, std::string& k, std::string& v) {
    const size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0) {
        return false;
    }
    k = s.substr(0, eq);
    v = s.substr(eq + 1);
    return true;
}

std::string filters_text(const ir::Filters& f) {
    std::ostringstream o;
    for (const auto& [k, v] : f.request_headers.set) {
        o << "      request header set " << k << ": " << v << "\n";
    }
    for (const auto& [k, v] : f.request_headers.add) {
        o << "      request header add " << k << ": " << v << "\n";
    }
    for (const auto& k : f.request_headers.remove) {
        o << "      request header remove " << k << "\n";
    }
    for (const auto& [k, v] : f.response_headers.set) {
        o << "      response header set " << k << ": " << v << "\n";
    }
    for (const auto& [k, v] : f.response_headers.add) {
        o << "      response header add " << k << ": " << v << "\n";
    }
    for (const auto& k : f.response_headers.remove) {
        o << "      response header remove " << k << "\n";
    }
    if (f.rewrite) {
        o << "      rewrite" << (f.rewrite_host.empty() ? "" : " host=" + f.rewrite_host)
          << (f.rewrite_path.type == ir::PathModType::None
                  ? ""
                  : (f.rewrite_path.type == ir::PathModType::Full ? " path=" : " prefix=") +
                        f.rewrite_path.value)
          << "\n";
    }
    if (f.cors) {
        o << "      CORS policy (" << f.cors_policy.allow_origins.size() << " origins)\n";
    }
    return o.str();
}

int cmd_explain(const std::vector<std::string>& args) {
    po::options_description desc("sluicectl explain PATH... [options]");
    desc.add_options()("help,h", "this help")("gateway", po::value<std::string>(),
                                               "Gateway as NAMESPACE/NAME (required)")(
        "port", po::value<int>(), "listener port (default: 443 with --sni, else 80, else the "
                                  "Gateway's first listener of that kind)")(
        "host", po::value<std::string>()->default_value(""), "Host header")(
        "path", po::value<std::string>()->default_value("/"), "request path (may hold ?query)")(
        "method", po::value<std::string>()->default_value("GET"), "HTTP method")(
        "header", po::value<std::vector<std::string>>()->composing(), "request header K=V")(
        "query", po::value<std::vector<std::string>>()->composing(), "query parameter K=V")(
        "sni", po::value<std::string>(), "TLS server name (implies https)")(
        "grpc", "treat the request as gRPC (path /service/method)")(
        "output,o", po::value<std::string>()->default_value("text"), "text | json")(
        "no-assume-class", "do not assume missing GatewayClasses are sluice's")(
        "path-arg", po::value<std::vector<std::string>>()->multitoken(), "manifest files/dirs");
    po::positional_options_description pos;
    pos.add("path-arg", -1);
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
        std::cout << desc;
        return 0;
    }
    if (!vm.count("path-arg") || !vm.count("gateway")) {
        std::cerr << "sluicectl explain: manifest paths and --gateway NS/NAME are required\n"
                  << desc;
        return 2;
    }
    tools::Loaded in = tools::load_manifests(vm["path-arg"].as<std::vector<std::string>>(),
                                             !vm.count("no-assume-class"));
    tools::print_diagnostics(in.diags, std::cerr);
    if (in.unreadable) {
        return 2;
    }
    cp::CompileOutput out = cp::compile(in.store, {});
    route::Request req;
    const std::string gw = vm["gateway"].as<std::string>();
    const size_t slash = gw.find('/');
    req.gateway_ns = slash == std::string::npos ? "default" : gw.substr(0, slash);
    req.gateway_name = slash == std::string::npos ? gw : gw.substr(slash + 1);
    req.host = vm["host"].as<std::string>();
    req.method = vm["method"].as<std::string>();
    req.target = vm["path"].as<std::string>();
    req.grpc = vm.count("grpc") > 0;
    if (vm.count("sni")) {
        req.sni = vm["sni"].as<std::string>();
        req.scheme = "https";
        if (req.host.empty()) {
            req.host = req.sni;
        }
    }
    if (vm.count("query")) {
        for (const std::string& kv : vm["query"].as<std::vector<std::string>>()) {
            req.target += (req.target.find('?') == std::string::npos ? "?" : "&") + kv;
        }
    }
    if (vm.count("header")) {
        for (const std::string& kv : vm["header"].as<std::vector<std::string>>()) {
            std::string k, v;
            if (!split_kv(kv, k, v)) {
                std::cerr << "sluicectl explain: --header wants K=V, got '" << kv << "'\n";
                return 2;
            }
            req.headers.push_back({k, v});
        }
    }
    const ir::Gateway* g = nullptr;
    for (const ir::Gateway& x : out.ir.gateways) {
        if (x.ns == req.gateway_ns && x.name == req.gateway_name) {
            g = &x;
        }
    }
    if (!g) {
        std::cerr << "sluicectl explain: Gateway " << gw
                  << " is not programmable (missing, not a sluice class, or not accepted); see "
                     "'sluicectl validate'\n";
        return 1;
    }
    if (vm.count("port")) {
        req.port = static_cast<uint16_t>(vm["port"].as<int>());
    } else {
        const ir::Protocol want = req.scheme == "https" ? ir::Protocol::HTTPS : ir::Protocol::HTTP;
        req.port = req.scheme == "https" ? 443 : 80;
        bool have_default = false;
        uint16_t first = 0;
        for (uint32_t li : g->listeners) {
            if (out.ir.listeners[li].protocol == want) {
                have_default |= out.ir.listeners[li].port == req.port;
                first = first ? first : out.ir.listeners[li].port;
            }
        }
        if (!have_default && first) {
            req.port = first;
        }
    }
    if (req.host.empty()) {
        req.host = g->addresses.empty() ? "localhost" : g->addresses[0];
    }
    const route::Match m = route::match(out.ir, req);
    nlohmann::json j;
    std::ostringstream t;
    j["request"] = {{"gateway", gw},     {"port", req.port},     {"scheme", req.scheme},
                    {"host", req.host},  {"method", req.method}, {"target", req.target},
                    {"sni", req.sni}};
    t << "request: " << req.method << " " << req.scheme << "://" << req.host << ":" << req.port
      << req.target << (req.sni.empty() ? "" : " (SNI " + req.sni + ")") << "\n";
    if (m.listener != ir::kNone) {
        const ir::Listener& l = out.ir.listeners[m.listener];
        j["listener"] = l.name;
        t << "listener: " << l.name << " (" << ir::protocol_name(l.protocol) << " " << l.port
          << (l.hostname.empty() ? "" : ", hostname " + l.hostname) << ")\n";
    } else {
        j["listener"] = nullptr;
        t << "listener: none\n";
    }
    if (m.outcome != route::Outcome::Forward) {
        j["outcome"] = m.outcome == route::Outcome::NoListener ? "no-listener" : "respond";
        j["status"] = m.status;
        j["reason"] = std::string(m.why);
        t << "answer: " << (m.outcome == route::Outcome::NoListener
                                ? std::string("connection refused")
                                : "the gateway answers " + std::to_string(m.status))
          << " (" << m.why << ")\n";
    } else {
        const ir::Listener& l = out.ir.listeners[m.listener];
        const ir::Rule& rule = out.ir.rules[m.rule];
        j["route"] = rule.route_ns + "/" + rule.route_name;
        j["rule"] = rule.index;
        if (!rule.name.empty()) {
            j["rule_name"] = rule.name;
        }
        t << "route: " << rule.route_ns << "/" << rule.route_name << " rule " << rule.index
          << (rule.name.empty() ? "" : " (" + rule.name + ")") << "\n";
        if (!req.grpc) {
            const ir::HttpMatch& hm = l.http_matches[m.match];
            t << "match: " << (hm.path_type == ir::PathType::Exact    ? "Exact "
                               : hm.path_type == ir::PathType::Prefix ? "PathPrefix "
                                                                      : "RegularExpression ")
              << hm.path << (hm.method.empty() ? "" : " method " + hm.method)
              << (hm.headers.empty() ? "" : " + " + std::to_string(hm.headers.size()) + " header(s)")
              << (hm.query.empty() ? "" : " + " + std::to_string(hm.query.size()) + " query param(s)")
              << "\n";
        }
        const route::Decision d = route::decide(out.ir, req, 0);
        const std::string ft = filters_text(out.ir.filters_at(rule.filters));
        if (!ft.empty()) {
            t << "filters:\n" << ft;
        }
        if (d.outcome == route::Outcome::Redirect) {
            j["outcome"] = "redirect";
            j["status"] = d.status;
            j["location"] = d.location;
            t << "answer: " << d.status << " redirect, Location: " << d.location << "\n";
        } else if (d.outcome == route::Outcome::Respond && (rule.backends.empty() ||
                                                            out.ir.filters_at(rule.filters).fixed_status ||
                                                            route::total_weight(rule) == 0 ||
                                                            d.status == 200)) {
            j["outcome"] = "respond";
            j["status"] = d.status;
            t << "answer: the gateway answers " << d.status
              << (d.status == 200 ? " (CORS preflight)" : " (rule has no usable backend)") << "\n";
        } else {
            j["outcome"] = "forward";
            t << "forwarded as: " << d.fwd.method << " " << d.fwd.path << " Host: " << d.fwd.host
              << "\n";
            nlohmann::json bs = nlohmann::json::array();
            const uint64_t total = route::total_weight(rule);
            t << "backends:\n";
            for (const ir::Backend& b : rule.backends) {
                nlohmann::json bj;
                bj["weight"] = b.weight;
                const double share = total ? 100.0 * b.weight / static_cast<double>(total) : 0;
                std::ostringstream pct;
                pct.precision(3);
                pct << share;
                if (b.status != 0) {
                    bj["status"] = b.status;
                    bj["reason"] = b.reason;
                    t << "  - (invalid) weight " << b.weight << " (" << pct.str()
                      << "%): answers " << b.status << ": " << b.reason << "\n";
                } else {
                    const ir::BackendGroup& grp = out.ir.groups[b.group];
                    bj["service"] = grp.ns + "/" + grp.name;
                    bj["port"] = grp.port;
                    bj["endpoints"] = grp.endpoints.size();
                    t << "  - " << grp.ns << "/" << grp.name << ":" << grp.port << " weight "
                      << b.weight << " (" << pct.str() << "%), " << grp.endpoints.size()
                      << " endpoint(s)" << (grp.tls ? ", TLS to backend (SNI " + grp.tls_sni + ")" : "")
                      << "\n";
                    const std::string bft = filters_text(out.ir.filters_at(b.filters));
                    if (!bft.empty()) {
                        t << bft;
                    }
                }
                bs.push_back(bj);
            }
            j["backends"] = bs;
            if (!d.fwd.mirrors.empty()) {
                nlohmann::json ms = nlohmann::json::array();
                for (uint32_t gi : d.fwd.mirrors) {
                    ms.push_back(out.ir.groups[gi].ns + "/" + out.ir.groups[gi].name);
                    t << "mirror: " << out.ir.groups[gi].ns << "/" << out.ir.groups[gi].name << "\n";
                }
                j["mirrors"] = ms;
            }
            nlohmann::json hs = nlohmann::json::array();
            for (const route::Header& h : d.fwd.headers) {
                hs.push_back({h.name, h.value});
            }
            j["forwarded"] = {{"method", d.fwd.method}, {"path", d.fwd.path},
                              {"host", d.fwd.host}, {"headers", hs}};
        }
    }
    if (vm["output"].as<std::string>() == "json") {
        std::cout << j.dump(2) << "\n";
    } else {
        std::cout << t.str();
    }
    return 0;
}

int cmd_ir(const std::vector<std::string>& args) {
    if (args.empty() || args[0] == "--help" || args[0] == "-h") {
        std::cout << "sluicectl ir PATH...: print the compiled IR as text, with its hash\n";
        return args.empty() ? 2 : 0;
    }
    tools::Loaded in = tools::load_manifests(args, true);
    tools::print_diagnostics(in.diags, std::cerr);
    if (in.unreadable) {
        return 2;
    }
    cp::CompileOutput out = cp::compile(in.store, {});
    const std::string bytes = ir::encode(out.ir);
    std::cout << ir::to_text(out.ir) << "bytes " << bytes.size() << " hash " << std::hex
              << ir::hash_of(bytes) << std::dec << "\n";
    return 0;
}

int cmd_status(const std::vector<std::string>& args) {
    po::options_description desc("sluicectl status [KIND[/NS]/NAME] [options]");
    desc.add_options()("help,h", "this help")(
        "status-dir", po::value<std::string>()->default_value("/run/sluice/status"),
        "where sluice-controlplane writes status")("object", po::value<std::string>(), "");
    po::positional_options_description pos;
    pos.add("object", 1);
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).positional(pos).run(), vm);
    if (vm.count("help")) {
        std::cout << desc;
        return 0;
    }
    namespace fs = std::filesystem;
    const fs::path dir = vm["status-dir"].as<std::string>();
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
        std::cerr << "sluicectl status: " << dir << " does not exist (is sluice-controlplane "
                                                    "running with --status-dir?)\n";
        return 2;
    }
    std::vector<fs::path> files;
    for (const auto& e : fs::recursive_directory_iterator(dir, ec)) {
        if (e.is_regular_file() && e.path().extension() == ".yaml") {
            files.push_back(e.path());
        }
    }
    std::sort(files.begin(), files.end());
    const std::string want = vm.count("object") ? vm["object"].as<std::string>() : "";
    int shown = 0;
    for (const fs::path& f : files) {
        const std::string rel = fs::relative(f, dir).replace_extension("").string();
        if (!want.empty() && rel != want && rel.find(want) == std::string::npos) {
            continue;
        }
        std::ifstream in(f);
        std::cout << "--- # " << rel << "\n" << in.rdbuf();
        ++shown;
    }
    if (shown == 0) {
        std::cerr << "sluicectl status: nothing matches '" << want << "'\n";
        return 1;
    }
    return 0;
}

int cmd_stats(const std::vector<std::string>& args) {
    po::options_description desc("sluicectl stats [options]");
    desc.add_options()("help,h", "this help")(
        "stats-file", po::value<std::string>()->default_value("/run/sluice/dataplane-stats.json"),
        "the file sluice-dataplane or sluice-l7 --stats-file writes")(
        "output,o", po::value<std::string>()->default_value("text"), "text | json");
    po::variables_map vm;
    po::store(po::command_line_parser(args).options(desc).run(), vm);
    if (vm.count("help")) {
        std::cout << desc;
        return 0;
    }
    std::ifstream in(vm["stats-file"].as<std::string>());
    if (!in) {
        std::cerr << "sluicectl stats: cannot read " << vm["stats-file"].as<std::string>()
                  << " (is sluice-dataplane running with --stats-file?)\n";
        return 2;
    }
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !(j.contains("lcores") || j.contains("l7"))) {
        std::cerr << "sluicectl stats: the stats file is not valid\n";
        return 2;
    }
    if (vm["output"].as<std::string>() == "json") {
        std::cout << j.dump(2) << "\n";
        return 0;
    }
    std::cout << "IR generation in force: " << j.value("generation", 0) << "\n";
    if (j.contains("l7")) {
        std::cout << "L7 engine\n";
        for (const auto& [k, v] : j["l7"].items()) {
            std::cout << "  " << k << " " << v.get<uint64_t>() << "\n";
        }
        return 0;
    }
    if (j["lcores"].size() > 1) {
        // The sums first (scripts read the first "new_flows" line), then each worker.
        std::map<std::string, uint64_t> sum;
        for (const auto& l : j["lcores"]) {
            for (const auto& [k, v] : l["counters"].items()) {
                sum[k] += v.get<uint64_t>();
            }
        }
        std::cout << "all " << j["lcores"].size() << " workers\n";
        for (const auto& [k, v] : sum) {
            if (v != 0) {
                std::cout << "  " << k << " " << v << "\n";
            }
        }
    }
    for (const auto& l : j["lcores"]) {
        std::cout << "lcore " << l.value("lcore", 0) << "\n";
        for (const auto& [k, v] : l["counters"].items()) {
            if (v.get<uint64_t>() != 0) {
                std::cout << "  " << k << " " << v.get<uint64_t>() << "\n";
            }
        }
        for (const auto& [k, v] : l["drops"].items()) {
            if (v.get<uint64_t>() != 0) {
                std::cout << "  drop " << k << " " << v.get<uint64_t>() << "\n";
            }
        }
        const auto& f = l["flows"];
        std::cout << "  flows " << f.value("entries", 0) << " of " << f.value("capacity", 0)
                  << " (half-open " << f.value("half_open", 0) << ", refused full "
                  << f.value("insert_full", 0) << ", refused budget "
                  << f.value("insert_budget", 0) << ", in a third bucket "
                  << f.value("inserts_third", 0) << ")\n";
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
        std::string(argv[1]) == "help") {
        std::cout << kUsage;
        return argc < 2 ? 2 : 0;
    }
    const std::string cmd = argv[1];
    const std::vector<std::string> args(argv + 2, argv + argc);
    try {
        if (cmd == "validate") {
            return cmd_validate(args);
        }
        if (cmd == "explain") {
            return cmd_explain(args);
        }
        if (cmd == "ir") {
            return cmd_ir(args);
        }
        if (cmd == "status") {
            return cmd_status(args);
        }
        if (cmd == "stats") {
            return cmd_stats(args);
        }
    } catch (const po::error& e) {
        // Boost.Program_options reports bad options by exception: converted here.
        std::cerr << "sluicectl " << cmd << ": " << e.what() << "\n";
        return 2;
    }
    std::cerr << "sluicectl: unknown command '" << cmd << "'\n" << kUsage;
    return 2;
}
