// sluice-decap: attaches (or detaches) sluice's DSR decapsulation XDP program
// (decap.bpf.o) to a backend's interface. The attachment outlives this process; run
// `--detach` to remove it. Usage: sluice-decap --iface eth0 --attach
//
// Note (PLATFORM.md): <bpf/libbpf.h> and <pcap/pcap.h> cannot share a translation unit.

#include <net/if.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <boost/program_options.hpp>
#include <linux/if_link.h>

#ifndef SLUICE_BPF_DIR
#define SLUICE_BPF_DIR "/usr/local/lib/sluice"
#endif

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

constexpr const char* kObject = "decap.bpf.o";
constexpr const char* kProgName = "sluice_decap";

int die(const std::string& msg) {
    std::cerr << "sluice-decap: " << msg << std::endl;
    return 1;
}

std::string err(int rc) { return std::strerror(rc < 0 ? -rc : rc); }

/// --obj, else decap.bpf.o beside this executable (build tree), else the installed one.
std::string find_object(const std::string& given) {
    if (!given.empty()) {
        return given;
    }
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (!ec && fs::exists(self.parent_path() / kObject)) {
        return (self.parent_path() / kObject).string();
    }
    return std::string(SLUICE_BPF_DIR) + "/" + kObject;
}

/// Name of the XDP program attached to ifindex ("" if none), and its mode flag.
std::string attached(int ifindex, uint32_t& mode_flag) {
    bpf_xdp_query_opts q{};
    q.sz = sizeof(q);
    mode_flag = 0;
    if (bpf_xdp_query(ifindex, 0, &q) != 0 || q.prog_id == 0) {
        return "";
    }
    mode_flag = q.attach_mode == XDP_ATTACHED_SKB ? XDP_FLAGS_SKB_MODE
              : q.attach_mode == XDP_ATTACHED_HW  ? XDP_FLAGS_HW_MODE
                                                  : XDP_FLAGS_DRV_MODE;
    const int fd = bpf_prog_get_fd_by_id(q.prog_id);
    if (fd < 0) {
        return "?";
    }
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    std::string name = "?";
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) {
        name = info.name;
    }
    close(fd);
    return name;
}

int attach(int ifindex, const std::string& iface, const std::string& path, const std::string& mode,
           bool force) {
    uint32_t cur_mode = 0;
    const std::string cur = attached(ifindex, cur_mode);
    if (!cur.empty() && cur != kProgName && !force) {
        return die(iface + " already has XDP program '" + cur + "' (use --force to replace it)");
    }
    libbpf_set_print(nullptr); // libbpf's debug chatter; errors are reported below
    bpf_object* obj = bpf_object__open_file(path.c_str(), nullptr);
    if (!obj) {
        return die("cannot open " + path + ": " + err(errno));
    }
    if (const int rc = bpf_object__load(obj); rc != 0) {
        bpf_object__close(obj);
        return die("cannot load " + path + " (verifier or permissions): " + err(rc));
    }
    bpf_program* prog = bpf_object__find_program_by_name(obj, kProgName);
    if (!prog) {
        bpf_object__close(obj);
        return die(path + " has no program " + kProgName);
    }
    const int fd = bpf_program__fd(prog);
    if (!cur.empty()) {
        (void)bpf_xdp_detach(ifindex, cur_mode, nullptr); // replace ours (maybe other mode)
    }
    int rc = -EINVAL;
    std::string used;
    if (mode == "native" || mode == "auto") {
        rc = bpf_xdp_attach(ifindex, fd, XDP_FLAGS_DRV_MODE, nullptr);
        used = "native";
    }
    if (rc != 0 && (mode == "generic" || mode == "auto")) {
        rc = bpf_xdp_attach(ifindex, fd, XDP_FLAGS_SKB_MODE, nullptr);
        used = "generic";
    }
    bpf_object__close(obj); // the link keeps the program alive
    if (rc != 0) {
        return die("cannot attach to " + iface + " (" + mode + "): " + err(rc));
    }
    std::cout << "sluice-decap: " << kProgName << " attached to " << iface << " (" << used
              << " XDP) from " << path << std::endl;
    return 0;
}

int detach(int ifindex, const std::string& iface, bool force) {
    uint32_t mode = 0;
    const std::string cur = attached(ifindex, mode);
    if (cur.empty()) {
        std::cout << "sluice-decap: no XDP program on " << iface << std::endl;
        return 0;
    }
    if (cur != kProgName && !force) {
        return die(iface + " runs XDP program '" + cur + "', not ours (use --force)");
    }
    if (const int rc = bpf_xdp_detach(ifindex, mode, nullptr); rc != 0) {
        return die("cannot detach from " + iface + ": " + err(rc));
    }
    std::cout << "sluice-decap: detached from " << iface << std::endl;
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    std::string iface, obj, mode = "auto";
    po::options_description desc(
        "sluice-decap: DSR decapsulation (IPIP, IPv6-in-IPv6, GUE on UDP 6080) for a backend of\n"
        "a sluice Gateway in forwarding mode dsr-ipip or dsr-gue. Attaches an XDP program to\n"
        "the backend's interface that strips the outer headers sluice added and passes the\n"
        "inner packet (to the VIP, which the backend holds on lo) to the kernel.\n"
        "usage: sluice-decap --iface IF (--attach | --detach) [options]\n\nOptions");
    desc.add_options()("help,h", "this help")("iface,i", po::value(&iface), "interface")(
        "attach", "attach the program (replaces an earlier sluice-decap attachment)")(
        "detach", "remove the program")(
        "mode", po::value(&mode)->default_value(mode),
        "XDP mode: auto (native, else generic), native or generic")(
        "obj", po::value(&obj), "path of decap.bpf.o (default: beside this binary, else " SLUICE_BPF_DIR ")")(
        "force", "replace or remove an XDP program that is not sluice-decap's");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "sluice-decap: " << e.what() << "\n" << desc;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\nBackend preparation (VIP 192.0.2.10):\n"
                             "  ip addr add 192.0.2.10/32 dev lo\n"
                             "  sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2\n"
                             "  sluice-decap --iface eth0 --attach\n";
        return 0;
    }
    if (iface.empty() || vm.count("attach") == vm.count("detach")) {
        std::cerr << "sluice-decap: give --iface and exactly one of --attach, --detach\n" << desc;
        return 2;
    }
    if (mode != "auto" && mode != "native" && mode != "generic") {
        return die("--mode must be auto, native or generic");
    }
    const int ifindex = static_cast<int>(if_nametoindex(iface.c_str()));
    if (ifindex == 0) {
        return die("no interface " + iface);
    }
    const bool force = vm.count("force") != 0;
    return vm.count("attach") ? attach(ifindex, iface, find_object(obj), mode, force)
                              : detach(ifindex, iface, force);
}
