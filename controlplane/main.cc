// sluice-controlplane: Gateway API manifests -> status + IR -> the dataplane.

#include <atomic>
#include <csignal>
#include <iostream>

#include <boost/program_options.hpp>

#include "controller.h"

namespace po = boost::program_options;

namespace {
std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true, std::memory_order_relaxed); }
} // namespace

int main(int argc, char** argv) {
    po::options_description desc(
        "sluice-controlplane: watches Gateway API manifests, computes their status, compiles "
        "the IR and sends it to sluice-dataplane.\n\nOptions");
    desc.add_options()("help,h", "this help")(
        "config-dir", po::value<std::string>(), "directory of manifests, watched with inotify")(
        "status-dir", po::value<std::string>()->default_value("/run/sluice/status"),
        "where the status of every object is written (one YAML file per object); '' = off")(
        "dp-socket", po::value<std::string>()->default_value(""),
        "unix socket of sluice-dataplane's dp-control thread; '' = no dataplane "
        "(Programmed stays Pending)")(
        "controller-name", po::value<std::string>()->default_value(sluice::cp::kControllerName),
        "GatewayClass spec.controllerName that sluice handles")(
        "address", po::value<std::vector<std::string>>()->composing(),
        "address given to Gateways that request none (repeatable; default 127.0.0.1)")(
        "once", "reconcile once and exit (exit 1 when the configuration has errors)")(
        "kubernetes", "use the Kubernetes API as the source (not available yet: see issue 6)");
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
    if (vm.count("kubernetes")) {
        std::cerr << "sluice-controlplane: --kubernetes is not implemented yet; use --config-dir\n";
        return 2;
    }
    if (!vm.count("config-dir")) {
        std::cerr << "sluice-controlplane: --config-dir is required\n" << desc;
        return 2;
    }
    sluice::cp::ControllerOptions opts;
    opts.config_dir = vm["config-dir"].as<std::string>();
    opts.status_dir = vm["status-dir"].as<std::string>();
    opts.dp_socket = vm["dp-socket"].as<std::string>();
    opts.compile.controller_name = vm["controller-name"].as<std::string>();
    if (vm.count("address")) {
        opts.compile.default_addresses = vm["address"].as<std::vector<std::string>>();
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
