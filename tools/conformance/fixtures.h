#pragma once

/// @file
/// The runtime fixtures the upstream suite creates programmatically before any test
/// (REFERENCE.md section 6): kubernetes.io/tls Secrets and CA ConfigMaps. Certificates are
/// generated at run time with OpenSSL (EC P-256, which the suite's RSA-2048 stands in
/// for), rendered as YAML and loaded like any manifest. The TLSRoute certificates
/// (tls-passthrough-checks-certificate, tls-terminate-checks-certificate) are issued by
/// the tls-checks-ca-certificate CA, which the suite's TLSRoute clients trust.

#include <map>
#include <string>
#include <vector>

#include "result.h"

namespace sluice::conformance {

struct Fixtures {
    std::string yaml; ///< every Secret and ConfigMap, as multi-document YAML
    /// PEM by "ns/name": certificates of tls Secrets (tls.crt) and of CA ConfigMaps (ca.crt).
    std::map<std::string, std::string> cert_pem;
    /// PEM private keys of the tls Secrets (tls.key), by "ns/name".
    std::map<std::string, std::string> key_pem;
};

/// Generates the fixtures. Thread: any.
[[nodiscard]] Result<Fixtures> make_fixtures();

/// True when the certificate `cert_pem` chains to one of the CA certificates in
/// `ca_pems` (each may hold several PEM blocks). Thread: any.
[[nodiscard]] bool cert_verifies(const std::string& cert_pem,
                                 const std::vector<std::string>& ca_pems);

} // namespace sluice::conformance
