#include "fixtures.h"

#include <memory>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

namespace sluice::conformance {

namespace {

struct KeyFree {
    void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
struct CertFree {
    void operator()(X509* x) const noexcept { X509_free(x); }
};
struct BioFree {
    void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using CertPtr = std::unique_ptr<X509, CertFree>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

struct Issued {
    KeyPtr key;
    CertPtr cert;
    std::string cert_pem, key_pem;
};

std::string bio_string(BIO* b) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(b, &data);
    return n > 0 && data ? std::string(data, static_cast<size_t>(n)) : std::string();
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
    if (!ext) {
        return false;
    }
    const bool ok = X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/// Issues a certificate for `cn` with subjectAltNames `sans` ("DNS:x", "URI:y"), signed
/// by `ca` (or self-signed when ca is null). `is_ca` adds basicConstraints CA:TRUE.
Result<Issued> issue(const std::string& cn, const std::vector<std::string>& sans, const Issued* ca,
                     bool is_ca, long serial) {
    Issued out;
    out.key.reset(EVP_EC_gen("P-256"));
    if (!out.key) {
        return fail(Errc::Internal, "EC key generation failed");
    }
    out.cert.reset(X509_new());
    X509* x = out.cert.get();
    if (!x) {
        return fail(Errc::Internal, "X509_new failed");
    }
    bool ok =
        X509_set_version(x, 2) == 1 && ASN1_INTEGER_set(X509_get_serialNumber(x), serial) == 1;
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -3600) != nullptr;
    ok = ok && X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365) != nullptr;
    ok = ok && X509_set_pubkey(x, out.key.get()) == 1;
    X509_NAME* name = X509_get_subject_name(x);
    ok = ok && X509_NAME_add_entry_by_txt(
                   name, "O", MBSTRING_ASC,
                   reinterpret_cast<const unsigned char*>("sluice conformance"), -1, -1, 0) == 1;
    ok = ok && X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                          reinterpret_cast<const unsigned char*>(cn.c_str()), -1,
                                          -1, 0) == 1;
    X509* issuer = ca ? ca->cert.get() : x;
    ok = ok && X509_set_issuer_name(x, X509_get_subject_name(issuer)) == 1;
    if (is_ca) {
        ok = ok && add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
        ok = ok &&
             add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
    } else {
        ok = ok && add_ext(x, issuer, NID_basic_constraints, "CA:FALSE");
    }
    ok = ok && add_ext(x, issuer, NID_subject_key_identifier, "hash");
    if (!sans.empty()) {
        std::string v;
        for (const std::string& s : sans) {
            v += (v.empty() ? "" : ",") + s;
        }
        ok = ok && add_ext(x, issuer, NID_subject_alt_name, v);
    }
    EVP_PKEY* signer = ca ? ca->key.get() : out.key.get();
    ok = ok && X509_sign(x, signer, EVP_sha256()) > 0;
    if (!ok) {
        return fail(Errc::Internal, "certificate generation failed for " + cn);
    }
    BioPtr cb(BIO_new(BIO_s_mem()));
    BioPtr kb(BIO_new(BIO_s_mem()));
    if (!cb || !kb || PEM_write_bio_X509(cb.get(), x) != 1 ||
        PEM_write_bio_PrivateKey(kb.get(), out.key.get(), nullptr, nullptr, 0, nullptr, nullptr) !=
            1) {
        return fail(Errc::Internal, "PEM encoding failed for " + cn);
    }
    out.cert_pem = bio_string(cb.get());
    out.key_pem = bio_string(kb.get());
    return out;
}

std::string base64(const std::string& s) {
    std::string out(4 * ((s.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                  reinterpret_cast<const unsigned char*>(s.data()),
                                  static_cast<int>(s.size()));
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
}

std::string secret_yaml(const std::string& ns, const std::string& name, const Issued& c) {
    return "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: " + name +
           "\n  namespace: " + ns +
           "\ntype: kubernetes.io/tls\ndata:\n  tls.crt: " + base64(c.cert_pem) +
           "\n  tls.key: " + base64(c.key_pem) + "\n";
}

std::string config_map_yaml(const std::string& ns, const std::string& name,
                            const std::string& pem) {
    std::string out = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name +
                      "\n  namespace: " + ns + "\ndata:\n  ca.crt: |\n";
    size_t start = 0;
    while (start < pem.size()) {
        size_t nl = pem.find('\n', start);
        if (nl == std::string::npos) {
            nl = pem.size();
        }
        out += "    " + pem.substr(start, nl - start) + "\n";
        start = nl + 1;
    }
    return out;
}

} // namespace

Result<Fixtures> make_fixtures() {
    const std::string infra = "gateway-conformance-infra";
    const std::string web = "gateway-conformance-web-backend";
    const std::string app = "gateway-conformance-app-backend";
    Fixtures f;
    long serial = 1;
    auto self_signed = [&](const std::string& ns, const std::string& name,
                           const std::vector<std::string>& hosts) -> Result<void> {
        std::vector<std::string> sans;
        for (const std::string& h : hosts) {
            sans.push_back("DNS:" + h);
        }
        auto c = issue(hosts.empty() ? name : hosts.front(), sans, nullptr, false, serial++);
        if (!c) {
            return tl::unexpected<Error>(c.error());
        }
        f.yaml += secret_yaml(ns, name, *c);
        f.cert_pem[ns + "/" + name] = c->cert_pem;
        f.key_pem[ns + "/" + name] = c->key_pem;
        return {};
    };
    auto ca_map = [&](const std::string& ns, const std::string& name) -> Result<Issued> {
        auto ca = issue(name, {}, nullptr, true, serial++);
        if (!ca) {
            return ca;
        }
        f.yaml += config_map_yaml(ns, name, ca->cert_pem);
        f.cert_pem[ns + "/" + name] = ca->cert_pem;
        return ca;
    };
    auto signed_by = [&](const Issued& ca, const std::string& ns, const std::string& name,
                         const std::vector<std::string>& sans) -> Result<void> {
        auto c = issue(name, sans, &ca, false, serial++);
        if (!c) {
            return tl::unexpected<Error>(c.error());
        }
        f.yaml += secret_yaml(ns, name, *c);
        f.cert_pem[ns + "/" + name] = c->cert_pem;
        f.key_pem[ns + "/" + name] = c->key_pem;
        return {};
    };

    std::vector<Result<void>> steps;
    steps.push_back(self_signed(web, "certificate", {"*"}));
    steps.push_back(
        self_signed(infra, "tls-validity-checks-certificate", {"*", "*.org", "*.wildcard.org"}));
    for (const Result<void>& r : steps) {
        if (!r) {
            return tl::unexpected<Error>(r.error());
        }
    }
    auto web_cm = ca_map(web, "web-backend-cm");
    auto validity = ca_map(infra, "tls-validity-checks-ca-certificate");
    auto per_port = ca_map(infra, "tls-validity-checks-per-port-ca-certificate");
    auto checks = ca_map(infra, "tls-checks-ca-certificate");
    auto mismatch = ca_map(infra, "mismatch-ca-certificate");
    for (const auto* r : {&web_cm, &validity, &per_port, &checks, &mismatch}) {
        if (!*r) {
            return tl::unexpected<Error>(r->error());
        }
    }
    steps.clear();
    steps.push_back(signed_by(*validity, infra, "tls-validity-checks-client-certificate",
                              {"DNS:client.example.org"}));
    steps.push_back(signed_by(*per_port, infra, "tls-validity-checks-per-port-client-certificate",
                              {"DNS:client.example.org"}));
    steps.push_back(signed_by(*checks, infra, "tls-checks-certificate",
                              {"DNS:abc.example.com", "URI:spiffe://abc.example.com/test-identity",
                               "DNS:other.example.com"}));
    steps.push_back(
        signed_by(*checks, infra, "tls-checks-client-certificate", {"DNS:client.example.com"}));
    // The TLSRoute clients verify the terminating listener's and the passthrough
    // backend's certificates against tls-checks-ca-certificate.
    steps.push_back(
        signed_by(*checks, infra, "tls-passthrough-checks-certificate", {"DNS:abc.example.com"}));
    steps.push_back(
        signed_by(*checks, app, "tls-passthrough-checks-certificate", {"DNS:abc.example.com"}));
    steps.push_back(
        signed_by(*checks, infra, "tls-terminate-checks-certificate", {"DNS:tls.example.com"}));
    for (const Result<void>& r : steps) {
        if (!r) {
            return tl::unexpected<Error>(r.error());
        }
    }
    return f;
}

bool cert_verifies(const std::string& cert_pem, const std::vector<std::string>& ca_pems) {
    BioPtr cb(BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
    if (!cb) {
        return false;
    }
    CertPtr leaf(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    if (!leaf) {
        return false;
    }
    X509_STORE* store = X509_STORE_new();
    if (!store) {
        return false;
    }
    int added = 0;
    for (const std::string& pem : ca_pems) {
        BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
        while (b) {
            X509* ca = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr);
            if (!ca) {
                break;
            }
            if (X509_STORE_add_cert(store, ca) == 1) {
                ++added;
            }
            X509_free(ca);
        }
    }
    bool ok = false;
    X509_STORE_CTX* ctx = X509_STORE_CTX_new();
    if (ctx && added > 0 && X509_STORE_CTX_init(ctx, store, leaf.get(), nullptr) == 1) {
        ok = X509_verify_cert(ctx) == 1;
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return ok;
}

} // namespace sluice::conformance
