/// @file
/// sluice-conformance: runs the Gateway API conformance data (cases.json schema) against
/// sluice: against the compiler and the route decision without any process ("decide"
/// mode), or as real HTTP through sluice-controlplane, sluice-l7 and echo backends on
/// loopback ("traffic" mode).

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "runner.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace {

/// The build directory this binary belongs to: <build>/tools/conformance/sluice-conformance.
std::string own_build_dir() {
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (ec) {
        return "";
    }
    const fs::path build = exe.parent_path().parent_path().parent_path();
    return fs::exists(build / "meson-info", ec) ? build.string() : "";
}

/// The source directory a meson build directory was configured from.
std::string source_of_build(const std::string& build) {
    std::ifstream in(build + "/meson-info/meson-info.json");
    if (!in) {
        return "";
    }
    const auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.contains("directories") || !j["directories"].is_object()) {
        return "";
    }
    const auto& d = j["directories"];
    return d.contains("source") && d["source"].is_string() ? d["source"].get<std::string>() : "";
}

} // namespace

int main(int argc, char** argv) {
    sluice::conformance::RunOptions o;
    double consistency_s = 10, ready_s = 10;
    po::options_description desc(
        "Usage: sluice-conformance --mode decide|traffic --cases FILE --manifests DIR [options]\n\n"
        "decide:  evaluates the status checks and traffic cases of a Gateway API conformance\n"
        "         data file against sluice's compiled status and IR (no process, no traffic).\n"
        "traffic: starts sluice-controlplane, sluice-l7 and one echo backend per Deployment\n"
        "         replica on loopback, writes each test's manifests to the controlplane's\n"
        "         config directory, waits for the status files and sluice-l7 to follow, then\n"
        "         sends every case as real HTTP/1.1 (needs root, or ports 80/443 unprivileged).\n"
        "Prints one line per test and a summary \"N passed, M failed, K skipped\".\n"
        "Exit: 0 no failures (known failures excluded), 1 failures, 2 unreadable input or\n"
        "processes that would not start, 77 traffic mode cannot bind port 80.\n\n"
        "Options");
    desc.add_options()("help,h", "show this help")(
        "mode", po::value<std::string>(&o.mode)->default_value("decide"),
        "decide: judge from the compiled IR; traffic: real HTTP through the engine")(
        "cases", po::value<std::string>(&o.cases_file),
        "cases.json file")("manifests", po::value<std::string>(&o.manifests_dir),
                           "directory holding base/manifests.yaml and tests/*.yaml")(
        "test", po::value<std::vector<std::string>>(&o.tests), "run only this test (repeatable)")(
        "run", po::value<std::string>(&o.run_regex),
        "run only the tests whose name matches this regular expression")(
        "known-failures", po::value<std::string>(&o.known_failures_file),
        "file of known failures: <Test>, <case id> or <Test>:check:<index> per line")(
        "build", po::value<std::string>(&o.build_dir),
        "traffic: meson build directory with controlplane/sluice-controlplane and "
        "dataplane/sluice-l7 (default: the one this binary was built in)")(
        "source", po::value<std::string>(&o.source_dir),
        "traffic: source tree with tools/echo/sluice-echo (default: $SLUICE_SOURCE_DIR, else "
        "the source directory the build directory was configured from)")(
        "input", po::value<std::string>(&o.input)->default_value("files"),
        "decide: files (as the file source loads them) or api (as the Kubernetes API source "
        "receives them: JSON objects with server metadata)")(
        "consistency-timeout", po::value<double>(&consistency_s)->default_value(10),
        "traffic: seconds a case has to answer as expected 3 times in a row")(
        "ready-timeout", po::value<double>(&ready_s)->default_value(10),
        "traffic: seconds a configuration has to show in the status files and sluice-l7")(
        "keep", po::bool_switch(&o.keep_temp),
        "traffic: keep the temporary directory (config, status, process logs)")(
        "verbose,v", po::bool_switch(&o.verbose), "print every check and case");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "sluice-conformance: " << e.what() << "\n" << desc << "\n";
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    if (o.input != "files" && o.input != "api") {
        std::cerr << "sluice-conformance: --input files|api\n";
        return 2;
    }
    if (o.mode != "decide" && o.mode != "traffic") {
        std::cerr << "sluice-conformance: unsupported --mode " << o.mode
                  << " (decide or traffic)\n";
        return 2;
    }
    if (o.cases_file.empty() || o.manifests_dir.empty()) {
        std::cerr << "sluice-conformance: --cases and --manifests are required\n" << desc << "\n";
        return 2;
    }
    if (o.mode == "traffic") {
        if (o.build_dir.empty()) {
            o.build_dir = own_build_dir();
        }
        if (o.build_dir.empty()) {
            std::cerr << "sluice-conformance: --build is required (this binary is not in a "
                         "meson build directory)\n";
            return 2;
        }
        if (o.source_dir.empty()) {
            if (const char* env = std::getenv("SLUICE_SOURCE_DIR"); env && *env) {
                o.source_dir = env;
            } else {
                o.source_dir = source_of_build(o.build_dir);
            }
        }
        if (o.source_dir.empty()) {
            std::cerr << "sluice-conformance: --source is required (cannot tell the source "
                         "directory of "
                      << o.build_dir << ")\n";
            return 2;
        }
        o.consistency_ms = static_cast<int>(consistency_s * 1000);
        o.ready_ms = static_cast<int>(ready_s * 1000);
    }
    return sluice::conformance::run(o, std::cout, std::cerr);
}
