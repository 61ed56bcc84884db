// sluice-controlplane: Gateway API manifests -> status + IR -> the dataplane.

#include <algorithm>
#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <malloc.h>

#include <boost/program_options.hpp>
#include <yaml-cpp/yaml.h>

#include "compile.h"
#include "controller.h"
#include "k8s_client.h"
#include "k8s_source.h"

namespace po = boost::program_options;

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

/// --dataplane-args: the node launcher's view of a GatewayClass's parameters, validated as
/// the compiler validates them (so a launcher never starts a dataplane on parameters the
/// GatewayClass reports as invalid). `path`: a ConfigMap mounted as a directory (one file
/// per key; Kubernetes' ..data links and dotfiles skipped) or a YAML ConfigMap manifest.
int print_dataplane_args(const std::string& path) {
    std::map<std::string, std::string> data;
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        for (const auto& e : std::filesystem::directory_iterator(path, ec)) {
            const std::string key = e.path().filename().string();
            if (key.empty() || key[0] == '.' || !std::filesystem::is_regular_file(e.path(), ec)) {
                continue;
            }
            std::ifstream f(e.path());
            std::stringstream ss;
            ss << f.rdbuf();
            data[key] = ss.str();
        }
        if (ec) {
            std::cerr << "sluice-controlplane: --dataplane-args " << path << ": " << ec.message()
                      << "\n";
            return 2;
        }
    } else {
        try {
            const YAML::Node doc = YAML::LoadFile(path);
            if (doc["kind"].as<std::string>("") != "ConfigMap") {
                std::cerr << "sluice-controlplane: --dataplane-args " << path
                          << ": not a ConfigMap manifest\n";
                return 2;
            }
            for (const auto& kv : doc["data"]) {
                data[kv.first.as<std::string>()] = kv.second.as<std::string>();
            }
        } catch (const YAML::Exception& e) {
            std::cerr << "sluice-controlplane: --dataplane-args " << path << ": " << e.what()
                      << "\n";
            return 2;
        }
    }
    sluice::cp::ClassParams p;
    if (const std::string why = sluice::cp::parse_class_params(data, p); !why.empty()) {
        std::cerr << "sluice-controlplane: --dataplane-args " << path << ": " << why << "\n";
        return 2;
    }
    for (const std::string& a : sluice::cp::dataplane_args(p)) {
        std::cout << a << "\n";
    }
    return 0;
}
} // namespace

int main(int argc, char** argv) {
    po::options_description desc(
        "sluice-controlplane: watches Gateway API manifests, computes their status, compiles "
        "the IR and sends it to sluice-dataplane.\n\nOptions");
    desc.add_options()("help,h", "this help")(
        "config-dir", po::value<std::string>(), "directory of manifests, watched with inotify")(
        "status-dir", po::value<std::string>()->default_value("/run/sluice/status"),
        "where the status of every object is written (one YAML file per object); '' = off")(
        "dp-socket", po::value<std::vector<std::string>>()->composing(),
        "unix socket of an IR consumer's dp-control thread (sluice-dataplane, sluice-l7); "
        "repeatable: Programmed needs every one's ACK; none = Programmed stays Pending")(
        "controller-name", po::value<std::string>()->default_value(sluice::cp::kControllerName),
        "GatewayClass spec.controllerName that sluice handles")(
        "address", po::value<std::vector<std::string>>()->composing(),
        "address given to Gateways that request none (repeatable; default 127.0.0.1)")(
        "address-pool", po::value<std::string>()->default_value(""),
        "IPv4 CIDR: each Gateway that requests no address gets its own from this pool "
        "(instead of --address)")(
        "once", "reconcile once and exit (exit 1 when the configuration has errors)")(
        "dataplane-args", po::value<std::string>(),
        "print, one per line, the sluice-dataplane arguments of a GatewayClass's parameters "
        "(ports, lcores, exceptionInterface) and exit: PATH is the parameters ConfigMap as a "
        "mounted directory (a file per key) or a YAML manifest; invalid parameters exit 2 with "
        "the GatewayClass's message")(
        "kubernetes", "use the Kubernetes API as the source: in-cluster service account, or "
                      "--kubeconfig")(
        "kubeconfig", po::value<std::string>(),
        "kubeconfig file (its current-context: server, CA, token, client certificate or an "
        "exec credential plugin); implies --kubernetes")(
        "lease-name", po::value<std::string>()->default_value("sluice-controlplane"),
        "coordination.k8s.io/v1 Lease used for leader election")(
        "lease-namespace", po::value<std::string>()->default_value(""),
        "namespace of the Lease; '' = the service account's (or context's) namespace")(
        "identity", po::value<std::string>()->default_value(""),
        "this replica's identity in the Lease; '' = hostname_pid")(
        "lease-duration", po::value<int>()->default_value(15),
        "seconds after the last renewal before a standby takes over")(
        "no-leader-election", "write status without a Lease (a single replica)")(
        "list-limit", po::value<int>()->default_value(500), "page size of chunked lists")(
        "watch-timeout", po::value<int>()->default_value(300),
        "timeoutSeconds of each watch request");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "sluice-controlplane: " << e.what() << "\n" << desc;
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc;
        return 0;
    }
    if (vm.count("dataplane-args")) {
        return print_dataplane_args(vm["dataplane-args"].as<std::string>());
    }
    const bool kube = vm.count("kubernetes") || vm.count("kubeconfig");
    if (kube && vm.count("config-dir")) {
        std::cerr << "sluice-controlplane: --config-dir and --kubernetes exclude each other\n";
        return 2;
    }
    if (!kube && !vm.count("config-dir")) {
        std::cerr << "sluice-controlplane: --config-dir is required\n" << desc;
        return 2;
    }
    sluice::cp::ControllerOptions opts;
    if (!kube) {
        opts.config_dir = vm["config-dir"].as<std::string>();
    }
    opts.status_dir = vm["status-dir"].as<std::string>();
    if (vm.count("dp-socket")) {
        for (const std::string& s : vm["dp-socket"].as<std::vector<std::string>>()) {
            if (!s.empty()) {
                opts.dp_sockets.push_back(s);
            }
        }
    }
    opts.compile.controller_name = vm["controller-name"].as<std::string>();
    opts.compile.address_pool = vm["address-pool"].as<std::string>();
    if (vm.count("address")) {
        opts.compile.default_addresses = vm["address"].as<std::vector<std::string>>();
    }
    if (kube) {
        auto cfg = vm.count("kubeconfig")
                       ? sluice::cp::load_kubeconfig(vm["kubeconfig"].as<std::string>())
                       : sluice::cp::in_cluster_config();
        if (!cfg) {
            std::cerr << "sluice-controlplane: " << cfg.error().message << "\n";
            return 2;
        }
        opts.strict = false; // one bad object must not freeze the cluster's other changes
        // Big list pages and Secrets pass through the watch threads' malloc arenas. glibc
        // raises its mmap threshold to the largest block freed, after which such buffers
        // come from an arena and may stay resident once freed; a fixed threshold keeps
        // buffers of 4 MiB and more in their own mappings, given back when freed.
        mallopt(M_MMAP_THRESHOLD, 4 << 20);
        sluice::cp::K8sSourceOptions ko;
        ko.controller_name = opts.compile.controller_name;
        ko.leader_election = !vm.count("no-leader-election");
        ko.lease_name = vm["lease-name"].as<std::string>();
        ko.lease_namespace = vm["lease-namespace"].as<std::string>();
        ko.identity = vm["identity"].as<std::string>();
        ko.lease_duration_s = std::max(1, vm["lease-duration"].as<int>());
        ko.list_limit = std::max(1, vm["list-limit"].as<int>());
        ko.watch_timeout_s = std::max(1, vm["watch-timeout"].as<int>());
        sluice::cp::KubeClient client(*cfg);
        sluice::cp::Controller c(opts);
        sluice::cp::K8sSource src(client, c, ko);
        std::signal(SIGINT, on_signal);
        std::signal(SIGTERM, on_signal);
        return src.run(g_stop);
    }
    sluice::cp::Controller c(opts);
    if (vm.count("once")) {
        const auto r = c.reconcile();
        return r.errors == 0 ? 0 : 1;
    }
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    return c.run(g_stop);
}
