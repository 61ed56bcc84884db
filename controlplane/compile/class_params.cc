// GatewayClass parameters (docs/configuration.md, "GatewayClass parameters"): validation,
// shared by the compiler (a GatewayClass's parametersRef) and `sluice-controlplane
// --dataplane-args` (the node launcher's arguments for sluice-dataplane).

#include "compile.h"

#include <arpa/inet.h>

#include <cctype>
#include <set>

namespace sluice::cp {

namespace {

bool valid_cidr4(const std::string& cidr) {
    const size_t slash = cidr.find('/');
    in_addr a{};
    if (slash == std::string::npos || inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &a) != 1) {
        return false;
    }
    const std::string bits = cidr.substr(slash + 1);
    if (bits.empty() || bits.size() > 2 ||
        bits.find_first_not_of("0123456789") != std::string::npos) {
        return false;
    }
    const int b = std::stoi(bits);
    return b >= 8 && b <= 30;
}

/// A port as DPDK names it: a PCI address ([DDDD:]BB:DD.F) or a vdev string
/// (net_<driver>[<n>][,key=value...]).
bool valid_port(const std::string& p) {
    auto hex = [](const std::string& x, size_t n) {
        return x.size() == n && x.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
    };
    if (p.rfind("net_", 0) == 0) {
        return p.size() > 4 && p.find_first_of(" \t\n\"'`$;|&<>") == std::string::npos;
    }
    std::string rest = p;
    const size_t c1 = rest.find(':');
    if (c1 != std::string::npos && rest.find(':', c1 + 1) != std::string::npos) {
        if (!hex(rest.substr(0, c1), 4)) {
            return false;
        }
        rest = rest.substr(c1 + 1); // BB:DD.F
    }
    const size_t c = rest.find(':'), d = rest.find('.');
    return c == 2 && d == 5 && rest.size() == 7 && hex(rest.substr(0, 2), 2) &&
           hex(rest.substr(3, 2), 2) && rest[6] >= '0' && rest[6] <= '7';
}

/// DPDK's -l syntax: numbers and ranges separated by commas ("1", "1-3,6").
bool valid_lcores(const std::string& l) {
    if (l.empty() || l.size() > 256) {
        return false;
    }
    size_t i = 0;
    while (i < l.size()) {
        const size_t start = i;
        while (i < l.size() && std::isdigit(static_cast<unsigned char>(l[i]))) {
            ++i;
        }
        if (i == start || i - start > 4) {
            return false;
        }
        if (i < l.size() && l[i] == '-') {
            const size_t s2 = ++i;
            while (i < l.size() && std::isdigit(static_cast<unsigned char>(l[i]))) {
                ++i;
            }
            if (i == s2 || i - s2 > 4 || std::stoi(l.substr(s2, i - s2)) <
                                             std::stoi(l.substr(start, s2 - 1 - start))) {
                return false;
            }
        }
        if (i < l.size() && l[i] != ',') {
            return false;
        }
        if (i < l.size() && ++i == l.size()) {
            return false; // trailing comma
        }
    }
    return true;
}

} // namespace

std::string parse_class_params(const std::map<std::string, std::string>& data, ClassParams& out) {
    static const std::set<std::string> known = {"addressPool", "forwardingMode", "ports",
                                                "lcores", "exceptionInterface"};
    for (const auto& [k, v] : data) {
        if (!known.count(k)) {
            return "unknown key \"" + k +
                   "\" (known: addressPool, forwardingMode, ports, lcores, exceptionInterface)";
        }
    }
    auto get = [&](const char* k) -> std::string {
        auto it = data.find(k);
        if (it == data.end()) {
            return {};
        }
        const std::string& v = it->second;
        const size_t b = v.find_first_not_of(" \t\n"), e = v.find_last_not_of(" \t\n");
        return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
    };
    out.address_pool = get("addressPool");
    if (!out.address_pool.empty() && !valid_cidr4(out.address_pool)) {
        return "addressPool \"" + out.address_pool +
               "\" is not an IPv4 CIDR with a prefix length of 8 to 30";
    }
    if (const std::string m = get("forwardingMode"); !m.empty() && !ir::parse_fwd_mode(m, out.fwd_mode)) {
        return "forwardingMode \"" + m + "\" is not one of full-nat, dsr-ipip, dsr-gue";
    }
    std::string ports = get("ports");
    for (char& ch : ports) {
        ch = ch == '\n' || ch == '\t' ? ' ' : ch; // (vdev strings hold commas)
    }
    size_t i = 0;
    while (i < ports.size()) {
        const size_t b = ports.find_first_not_of(' ', i);
        if (b == std::string::npos) {
            break;
        }
        size_t e = ports.find(' ', b);
        e = e == std::string::npos ? ports.size() : e;
        const std::string p = ports.substr(b, e - b);
        if (!valid_port(p)) {
            return "ports: \"" + p + "\" is neither a PCI address (0000:3b:00.0) nor a DPDK " +
                   "vdev (net_...)";
        }
        out.ports.push_back(p);
        i = e;
    }
    out.lcores = get("lcores");
    if (!out.lcores.empty() && !valid_lcores(out.lcores)) {
        return "lcores \"" + out.lcores + "\" is not a DPDK lcore list (e.g. 1 or 1-3,6)";
    }
    out.exception_interface = get("exceptionInterface");
    if (const std::string& x = out.exception_interface;
        !x.empty() && (x.size() > 15 || x.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                            "0123456789_.-") != std::string::npos)) {
        return "exceptionInterface \"" + x +
               "\" is not an interface name (at most 15 of A-Z a-z 0-9 _ . -)";
    }
    return "";
}

std::vector<std::string> dataplane_args(const ClassParams& p) {
    std::vector<std::string> a;
    if (!p.exception_interface.empty()) {
        a.push_back("--exception-tap");
        a.push_back(p.exception_interface);
    }
    a.push_back("--");
    if (!p.lcores.empty()) {
        a.push_back("-l");
        a.push_back(p.lcores);
    }
    for (const std::string& port : p.ports) {
        if (port.rfind("net_", 0) == 0) {
            a.push_back("--vdev=" + port);
        } else {
            a.push_back("-a");
            a.push_back(port);
        }
    }
    return a;
}

} // namespace sluice::cp
