// libFuzzer target: the ClientHello SNI reader of TLS listeners (bytes straight from the
// network, before any TLS library sees them).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "client_hello.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static std::vector<char> scratch(sluice::l7::kMaxClientHello);
    const std::string_view in(reinterpret_cast<const char*>(data), size);
    std::string_view sni;
    const auto st = sluice::l7::parse_client_hello(in, scratch.data(), sni);
    if (st == sluice::l7::HelloStatus::Ok && !sni.empty()) {
        // The name lies inside the scratch buffer and is a plausible host name.
        if (sni.data() < scratch.data() || sni.data() + sni.size() > scratch.data() + scratch.size() ||
            sni.size() > 253) {
            std::abort();
        }
    }
    // Every prefix of an input that parses must be Incomplete or parse the same way.
    if (st == sluice::l7::HelloStatus::Ok && size > 0) {
        std::string_view sni2;
        const auto st2 = sluice::l7::parse_client_hello(in.substr(0, size - 1), scratch.data(), sni2);
        if (st2 == sluice::l7::HelloStatus::NotTls) {
            std::abort();
        }
    }
    return 0;
}
