/// @file
/// sluice-conformance: runs the Gateway API conformance data (cases.json schema) against
/// sluice's compiler and route decision, without a cluster ("decide" mode).

#include <iostream>
#include <string>
#include <vector>

#include <boost/program_options.hpp>

#include "runner.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
    sluice::conformance::RunOptions o;
    std::string mode;
    po::options_description desc(
        "Usage: sluice-conformance --mode decide --cases FILE --manifests DIR [options]\n\n"
        "Evaluates the status checks and traffic cases of a Gateway API conformance data file\n"
        "against sluice's compiled status and IR. Prints one line per test and a summary\n"
        "\"N passed, M failed, K skipped\". Exit: 0 no failures, 1 failures, 2 unreadable "
        "input.\n\n"
        "Options");
    desc.add_options()("help,h", "show this help")(
        "mode", po::value<std::string>(&mode)->default_value("decide"),
        "decide: judge from the compiled IR (no traffic)")(
        "cases", po::value<std::string>(&o.cases_file),
        "cases.json file")("manifests", po::value<std::string>(&o.manifests_dir),
                           "directory holding base/manifests.yaml and tests/*.yaml")(
        "test", po::value<std::vector<std::string>>(&o.tests), "run only this test (repeatable)")(
        "known-failures", po::value<std::string>(&o.known_failures_file),
        "file of known failures: <Test>, <case id> or <Test>:check:<index> per line")(
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
    if (mode != "decide") {
        std::cerr << "sluice-conformance: unsupported --mode " << mode << " (only: decide)\n";
        return 2;
    }
    if (o.cases_file.empty() || o.manifests_dir.empty()) {
        std::cerr << "sluice-conformance: --cases and --manifests are required\n" << desc << "\n";
        return 2;
    }
    return sluice::conformance::run(o, std::cout, std::cerr);
}
