#include "ocsp.h"

#include <climits>
#include <cstring>
#include <memory>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>

namespace sluice::l7::ocsp {

namespace {

struct ResponseFree {
    void operator()(OCSP_RESPONSE* r) const noexcept { OCSP_RESPONSE_free(r); }
};
struct BasicFree {
    void operator()(OCSP_BASICRESP* b) const noexcept { OCSP_BASICRESP_free(b); }
};
struct CertIdFree {
    void operator()(OCSP_CERTID* c) const noexcept { OCSP_CERTID_free(c); }
};
using ResponsePtr = std::unique_ptr<OCSP_RESPONSE, ResponseFree>;
using BasicPtr = std::unique_ptr<OCSP_BASICRESP, BasicFree>;
using CertIdPtr = std::unique_ptr<OCSP_CERTID, CertIdFree>;

/// Errc::Invalid with `why`, and an empty OpenSSL error queue for the caller's thread.
tl::unexpected<Error> refuse(std::string why) {
    ERR_clear_error();
    return fail(Errc::Invalid, std::move(why));
}

bool to_time_t(const ASN1_TIME* t, time_t& out) {
    struct tm tm {};
    if (ASN1_TIME_to_tm(t, &tm) != 1) {
        return false;
    }
    out = timegm(&tm);
    return true;
}

/// Does `cid` name `leaf`? With its issuer: the whole CertID (hash algorithm, issuer name
/// and key hashes, serial). Without: the serial and the issuer-name hash only.
Result<bool> names_leaf(const OCSP_CERTID* cid, X509* leaf, X509* issuer) {
    ASN1_OCTET_STRING* name_hash = nullptr;
    ASN1_OBJECT* md_obj = nullptr;
    ASN1_INTEGER* serial = nullptr;
    // const_cast: OCSP_id_get0_info only reads `cid` (its prototype predates const).
    if (OCSP_id_get0_info(&name_hash, &md_obj, nullptr, &serial, const_cast<OCSP_CERTID*>(cid)) !=
        1) {
        return refuse("unreadable CertID");
    }
    const EVP_MD* md = EVP_get_digestbyobj(md_obj);
    if (md == nullptr) {
        return refuse("CertID hash algorithm not supported");
    }
    if (issuer != nullptr) {
        CertIdPtr mine(OCSP_cert_to_id(md, leaf, issuer));
        if (!mine) {
            return refuse("cannot compute the certificate's CertID");
        }
        return OCSP_id_cmp(mine.get(), cid) == 0;
    }
    if (ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(leaf)) != 0) {
        return false;
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_NAME_digest(X509_get_issuer_name(leaf), md, digest, &n) != 1) {
        return refuse("cannot hash the certificate's issuer name");
    }
    return name_hash != nullptr && static_cast<unsigned int>(ASN1_STRING_length(name_hash)) == n &&
           std::memcmp(ASN1_STRING_get0_data(name_hash), digest, n) == 0;
}

} // namespace

Result<StapleInfo> check_staple(std::string_view der, const std::vector<pem::X509Ptr>& certs,
                                time_t now) {
    if (certs.empty() || !certs.front()) {
        return refuse("no certificate");
    }
    if (der.empty()) {
        return refuse("empty");
    }
    if (der.size() > kMaxStapleBytes) {
        return refuse(std::to_string(der.size()) + " bytes, more than " +
                      std::to_string(kMaxStapleBytes));
    }
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    const unsigned char* const end = p + der.size();
    ResponsePtr resp(d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(der.size())));
    if (!resp) {
        return refuse("not a DER OCSP response");
    }
    if (p != end) {
        return refuse("trailing bytes after the DER OCSP response");
    }
    const int rs = OCSP_response_status(resp.get());
    if (rs != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        return refuse(std::string("response status ") + OCSP_response_status_str(rs) + " (" +
                      std::to_string(rs) + "), not successful");
    }
    BasicPtr basic(OCSP_response_get1_basic(resp.get()));
    if (!basic) {
        return refuse("not a basic OCSP response");
    }
    const int count = OCSP_resp_count(basic.get());
    if (count != 1) {
        return refuse(std::to_string(count) + " certificate statuses, not 1");
    }
    OCSP_SINGLERESP* single = OCSP_resp_get0(basic.get(), 0);
    if (single == nullptr) {
        return refuse("unreadable certificate status");
    }

    X509* leaf = certs.front().get();
    X509* issuer = nullptr;
    for (size_t i = 1; i < certs.size(); ++i) {
        if (X509_check_issued(certs[i].get(), leaf) == X509_V_OK) {
            issuer = certs[i].get();
            break;
        }
    }
    auto same = names_leaf(OCSP_SINGLERESP_get0_id(single), leaf, issuer);
    if (!same) {
        return tl::unexpected(std::move(same.error()));
    }
    if (!*same) {
        return refuse(std::string("about another certificate (CertID does not match the ") +
                      (issuer ? "certificate and its issuer" : "certificate's serial and issuer") +
                      ")");
    }

    StapleInfo info;
    int reason = 0;
    ASN1_GENERALIZEDTIME* revoked_at = nullptr;
    ASN1_GENERALIZEDTIME* this_update = nullptr;
    ASN1_GENERALIZEDTIME* next_update = nullptr;
    info.cert_status =
        OCSP_single_get0_status(single, &reason, &revoked_at, &this_update, &next_update);
    if (info.cert_status < 0 || this_update == nullptr) {
        return refuse("unreadable certificate status");
    }
    time_t t = 0;
    if (!to_time_t(this_update, t)) {
        return refuse("unreadable thisUpdate");
    }
    if (t > now && t - now > kClockSkewS) {
        return refuse("thisUpdate " + format_time(t) + " is in the future");
    }
    if (next_update != nullptr) {
        if (!to_time_t(next_update, info.next_update)) {
            return refuse("unreadable nextUpdate");
        }
        if (info.next_update <= now) {
            return refuse("expired (nextUpdate " + format_time(info.next_update) + ")");
        }
    }
    ERR_clear_error();
    return info;
}

std::string format_time(time_t t) {
    if (t == kNoNextUpdate) {
        return "never";
    }
    struct tm tm {};
    char buf[32];
    if (gmtime_r(&t, &tm) == nullptr ||
        std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        return std::to_string(static_cast<long long>(t));
    }
    return buf;
}

const char* cert_status_name(int status) noexcept {
    switch (status) {
    case V_OCSP_CERTSTATUS_GOOD:
        return "good";
    case V_OCSP_CERTSTATUS_REVOKED:
        return "revoked";
    default:
        return "unknown";
    }
}

} // namespace sluice::l7::ocsp
