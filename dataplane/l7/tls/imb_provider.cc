#include "imb_provider.h"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rand.h>

#if SLUICE_HAVE_IPSEC_MB
#include <intel-ipsec-mb.h>
#endif

namespace sluice::l7 {
namespace {

// ---- Counters: one cache line per thread (threads past kCounterSlots share a slot; the
// increments are atomic, so sharing only costs speed). Read by the stats thread.
constexpr size_t kCounterSlots = 64;

struct alignas(64) CounterSlot {
    std::atomic<uint64_t> sealed{0};
    std::atomic<uint64_t> opened{0};
    std::atomic<uint64_t> open_failures{0};
};

CounterSlot g_slots[kCounterSlots];
std::atomic<size_t> g_next_slot{0};

CounterSlot& my_slot() noexcept {
    // Relaxed: the index only has to differ between threads, it orders nothing.
    thread_local CounterSlot* slot =
        &g_slots[g_next_slot.fetch_add(1, std::memory_order_relaxed) % kCounterSlots];
    return *slot;
}

void bump(std::atomic<uint64_t>& c) noexcept {
    // Relaxed: a statistic; nothing is published through it.
    c.fetch_add(1, std::memory_order_relaxed);
}

#if SLUICE_HAVE_IPSEC_MB

constexpr size_t kTagLen = 16;
constexpr size_t kIvLen = 12;        ///< TLS nonce; other lengths go through GCM's GHASH(IV)
constexpr size_t kMaxIvLen = 64;     ///< longer IVs are refused
constexpr size_t kMaxAad = 256;      ///< AAD is buffered until the first data (TLS: 5 or 13 B)
constexpr size_t kTlsAadLen = 13;    ///< EVP_AEAD_TLS1_AAD_LEN
constexpr size_t kTlsFixedIv = 4;    ///< EVP_GCM_TLS_FIXED_IV_LEN
constexpr size_t kTlsExplicitIv = 8; ///< EVP_GCM_TLS_EXPLICIT_IV_LEN

/// The direct-API entry points of one key size (what the IMB_AES{128,256}_GCM_* macros call),
/// copied out of the manager once.
struct GcmFns {
    aes_gcm_pre_t pre = nullptr;
    aes_gcm_init_t init = nullptr;
    aes_gcm_init_var_iv_t init_var_iv = nullptr;
    aes_gcm_enc_dec_update_t enc_update = nullptr;
    aes_gcm_enc_dec_update_t dec_update = nullptr;
    aes_gcm_enc_dec_finalize_t enc_finalize = nullptr;
    aes_gcm_enc_dec_finalize_t dec_finalize = nullptr;
};

/// Written once under g_init_once, before the provider can be loaded; read-only afterwards.
struct ImbState {
    IMB_MGR* mgr = nullptr;
    GcmFns aes128;
    GcmFns aes256;
    ImbInfo info;
    std::string error; ///< non-empty: ipsec-mb is unusable
};
ImbState g_imb;
std::once_flag g_init_once;

void init_imb() {
    IMB_MGR* mgr = alloc_mb_mgr(0);
    if (mgr == nullptr) {
        g_imb.error = "alloc_mb_mgr failed";
        return;
    }
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(mgr, &arch);
    if (const int e = imb_get_errno(mgr); e != 0) {
        g_imb.error = std::string("init_mb_mgr_auto: ") + imb_get_strerror(e);
        free_mb_mgr(mgr);
        return;
    }
    switch (arch) {
    case IMB_ARCH_AVX512:
        g_imb.info.arch = "avx512";
        break;
    case IMB_ARCH_AVX2:
        g_imb.info.arch = "avx2";
        break;
    case IMB_ARCH_AVX:
        g_imb.info.arch = "avx";
        break;
    case IMB_ARCH_SSE:
        g_imb.info.arch = "sse";
        break;
    default:
        // No AES-NI: ipsec-mb's software AES would only be slower than OpenSSL's.
        g_imb.error = "no AES-NI code path on this CPU";
        free_mb_mgr(mgr);
        return;
    }
    g_imb.info.version = imb_get_version_str();
    g_imb.mgr = mgr;
    g_imb.aes128 = GcmFns{mgr->gcm128_pre,         mgr->gcm128_init,       mgr->gcm128_init_var_iv,
                          mgr->gcm128_enc_update,  mgr->gcm128_dec_update, mgr->gcm128_enc_finalize,
                          mgr->gcm128_dec_finalize};
    g_imb.aes256 = GcmFns{mgr->gcm256_pre,         mgr->gcm256_init,       mgr->gcm256_init_var_iv,
                          mgr->gcm256_enc_update,  mgr->gcm256_dec_update, mgr->gcm256_enc_finalize,
                          mgr->gcm256_dec_finalize};
}

/// One EVP_CIPHER_CTX's state. Message state: iv_set (a nonce is loaded and unused),
/// started (GCM init done: AAD is closed), tag_set (decrypt: the expected tag is known).
struct GcmCtx {
    gcm_key_data key; ///< expanded key + GHASH tables (64-byte aligned by its type)
    gcm_context_data gcm;
    const GcmFns* fns = nullptr;
    size_t keylen = 0;
    size_t ivlen = kIvLen;
    size_t taglen = kTagLen;
    size_t aad_len = 0;
    size_t tls_aad_len = 0; ///< TLS 1.2: 13 while a record's AAD waits for its update
    bool enc = true;
    bool key_set = false;
    bool iv_set = false;
    bool started = false;
    bool tag_set = false;
    bool tag_ready = false; ///< encrypt: tag holds the last message's tag
    bool tls_iv_fixed = false;
    uint8_t iv[kMaxIvLen] = {};
    uint8_t aad[kMaxAad] = {};
    uint8_t tag[kTagLen] = {};
    uint8_t tls_aad[kTlsAadLen] = {};
};

void prov_error(const char* what) {
    ERR_raise_data(ERR_LIB_PROV, ERR_R_PASSED_INVALID_ARGUMENT, "sluice-imb: %s", what);
}

template <size_t KeyLen>
const GcmFns& fns_for() noexcept {
    return KeyLen == 16 ? g_imb.aes128 : g_imb.aes256;
}

template <size_t KeyLen>
void* gcm_newctx(void* /*provctx*/) {
    auto* c = new (std::nothrow) GcmCtx{};
    if (c != nullptr) {
        c->fns = &fns_for<KeyLen>();
        c->keylen = KeyLen;
    }
    return c;
}

void gcm_freectx(void* vctx) {
    auto* c = static_cast<GcmCtx*>(vctx);
    if (c != nullptr) {
        OPENSSL_cleanse(c, sizeof *c);
        delete c;
    }
}

void* gcm_dupctx(void* vctx) {
    const auto* c = static_cast<const GcmCtx*>(vctx);
    return new (std::nothrow) GcmCtx(*c); // plain data: a byte copy is a full copy
}

/// GCM init over the nonce and the buffered AAD (once per message, at the first data).
void start_message(GcmCtx& c) noexcept {
    if (c.ivlen == kIvLen) {
        c.fns->init(&c.key, &c.gcm, c.iv, c.aad, c.aad_len);
    } else {
        c.fns->init_var_iv(&c.key, &c.gcm, c.iv, c.ivlen, c.aad, c.aad_len);
    }
    c.started = true;
}

int gcm_set_ctx_params(void* vctx, const OSSL_PARAM params[]);

int gcm_init(GcmCtx& c, bool enc, const unsigned char* key, size_t keylen, const unsigned char* iv,
             size_t ivlen, const OSSL_PARAM params[]) {
    c.enc = enc;
    if (key != nullptr) {
        if (keylen != c.keylen) {
            prov_error("wrong key length");
            return 0;
        }
        c.fns->pre(key, &c.key);
        c.key_set = true;
        c.tls_iv_fixed = false;
    }
    if (iv != nullptr) {
        if (ivlen != c.ivlen || ivlen > kMaxIvLen) {
            prov_error("wrong IV length");
            return 0;
        }
        std::memcpy(c.iv, iv, ivlen);
        c.iv_set = true;
        c.started = false;
        c.aad_len = 0;
        c.tag_ready = false;
    }
    c.tls_aad_len = 0;
    return gcm_set_ctx_params(&c, params);
}

int gcm_einit(void* vctx, const unsigned char* key, size_t keylen, const unsigned char* iv,
              size_t ivlen, const OSSL_PARAM params[]) {
    return gcm_init(*static_cast<GcmCtx*>(vctx), true, key, keylen, iv, ivlen, params);
}

int gcm_dinit(void* vctx, const unsigned char* key, size_t keylen, const unsigned char* iv,
              size_t ivlen, const OSSL_PARAM params[]) {
    return gcm_init(*static_cast<GcmCtx*>(vctx), false, key, keylen, iv, ivlen, params);
}

/// Big-endian increment of TLS 1.2's 8-byte invocation field (the explicit nonce).
void next_explicit_nonce(uint8_t* p) noexcept {
    for (int i = static_cast<int>(kTlsExplicitIv) - 1; i >= 0; --i) {
        if (++p[i] != 0) {
            break;
        }
    }
}

/// TLS 1.2 record, in place: explicit nonce (8) | payload | tag (16). Sealing writes the
/// nonce and the tag; opening verifies the tag and leaves the payload after the nonce.
/// @return bytes produced (sealing: the whole record; opening: the payload), or -1.
long long tls12_record(GcmCtx& c, unsigned char* out, const unsigned char* in, size_t len) {
    c.tls_aad_len = 0; // one record per AAD
    if (out != in || len < kTlsExplicitIv + kTagLen || !c.key_set || !c.tls_iv_fixed) {
        prov_error("TLS 1.2 record: not in place, too short, or no key / fixed IV");
        return -1;
    }
    const size_t plen = len - kTlsExplicitIv - kTagLen;
    if (c.enc) {
        // Nonce = fixed | invocation field; the field goes out as the explicit nonce and
        // counts up for the next record.
        c.fns->init(&c.key, &c.gcm, c.iv, c.tls_aad, kTlsAadLen);
        std::memcpy(out, c.iv + kTlsFixedIv, kTlsExplicitIv);
        next_explicit_nonce(c.iv + kTlsFixedIv);
        c.fns->enc_update(&c.key, &c.gcm, out + kTlsExplicitIv, in + kTlsExplicitIv, plen);
        c.fns->enc_finalize(&c.key, &c.gcm, out + kTlsExplicitIv + plen, kTagLen);
        bump(my_slot().sealed);
        return static_cast<long long>(len);
    }
    uint8_t nonce[kIvLen];
    std::memcpy(nonce, c.iv, kTlsFixedIv);
    std::memcpy(nonce + kTlsFixedIv, in, kTlsExplicitIv);
    uint8_t received[kTagLen];
    std::memcpy(received, in + kTlsExplicitIv + plen, kTagLen);
    c.fns->init(&c.key, &c.gcm, nonce, c.tls_aad, kTlsAadLen);
    c.fns->dec_update(&c.key, &c.gcm, out + kTlsExplicitIv, in + kTlsExplicitIv, plen);
    uint8_t computed[kTagLen];
    c.fns->dec_finalize(&c.key, &c.gcm, computed, kTagLen);
    if (CRYPTO_memcmp(computed, received, kTagLen) != 0) {
        OPENSSL_cleanse(out + kTlsExplicitIv, plen);
        bump(my_slot().open_failures);
        return -1;
    }
    bump(my_slot().opened);
    return static_cast<long long>(plen);
}

int gcm_update(void* vctx, unsigned char* out, size_t* outl, size_t outsize,
               const unsigned char* in, size_t inl) {
    auto& c = *static_cast<GcmCtx*>(vctx);
    *outl = 0;
    if (c.tls_aad_len != 0) {
        if (outsize < inl) {
            prov_error("output buffer too small");
            return 0;
        }
        const long long n = tls12_record(c, out, in, inl);
        if (n < 0) {
            return 0;
        }
        *outl = static_cast<size_t>(n);
        return 1;
    }
    if (!c.key_set || !c.iv_set) {
        prov_error("no key or no nonce");
        return 0;
    }
    if (out == nullptr) { // AAD
        if (c.started || inl > kMaxAad - c.aad_len) {
            prov_error("AAD after data, or more AAD than buffered");
            return 0;
        }
        if (inl != 0) {
            std::memcpy(c.aad + c.aad_len, in, inl);
        }
        c.aad_len += inl;
        *outl = inl;
        return 1;
    }
    if (outsize < inl) {
        prov_error("output buffer too small");
        return 0;
    }
    if (!c.started) {
        start_message(c);
    }
    if (inl != 0) {
        if (c.enc) {
            c.fns->enc_update(&c.key, &c.gcm, out, in, inl);
        } else {
            c.fns->dec_update(&c.key, &c.gcm, out, in, inl);
        }
    }
    *outl = inl;
    return 1;
}

int gcm_final(void* vctx, unsigned char* /*out*/, size_t* outl, size_t /*outsize*/) {
    auto& c = *static_cast<GcmCtx*>(vctx);
    *outl = 0;
    if (!c.key_set || !c.iv_set) {
        prov_error("no key or no nonce");
        return 0;
    }
    if (!c.started) {
        start_message(c);
    }
    c.iv_set = false; // a nonce seals one message
    c.started = false;
    c.aad_len = 0;
    if (c.enc) {
        c.fns->enc_finalize(&c.key, &c.gcm, c.tag, kTagLen);
        c.tag_ready = true;
        bump(my_slot().sealed);
        return 1;
    }
    if (!c.tag_set) {
        prov_error("no tag to verify");
        return 0;
    }
    c.tag_set = false;
    uint8_t computed[kTagLen];
    c.fns->dec_finalize(&c.key, &c.gcm, computed, kTagLen);
    if (CRYPTO_memcmp(computed, c.tag, c.taglen) != 0) {
        bump(my_slot().open_failures);
        return 0;
    }
    bump(my_slot().opened);
    return 1;
}

int gcm_cipher(void* vctx, unsigned char* out, size_t* outl, size_t outsize,
               const unsigned char* in, size_t inl) {
    // EVP_Cipher(): data (or AAD with out = NULL) when `in` is set, the final step when not.
    if (in == nullptr) {
        return gcm_final(vctx, out, outl, outsize);
    }
    return gcm_update(vctx, out, outl, outsize, in, inl);
}

// ---- Parameters

template <size_t KeyLen>
int gcm_get_params(OSSL_PARAM params[]) {
    OSSL_PARAM* p = nullptr;
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_MODE)) != nullptr &&
        !OSSL_PARAM_set_uint(p, EVP_CIPH_GCM_MODE)) {
        return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_KEYLEN)) != nullptr &&
        !OSSL_PARAM_set_size_t(p, KeyLen)) {
        return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_IVLEN)) != nullptr &&
        !OSSL_PARAM_set_size_t(p, kIvLen)) {
        return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_CIPHER_PARAM_BLOCK_SIZE)) != nullptr &&
        !OSSL_PARAM_set_size_t(p, 1)) {
        return 0;
    }
    const std::pair<const char*, int> flags[] = {
        {OSSL_CIPHER_PARAM_AEAD, 1},         {OSSL_CIPHER_PARAM_CUSTOM_IV, 1},
        {OSSL_CIPHER_PARAM_CTS, 0},          {OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, 0},
        {OSSL_CIPHER_PARAM_HAS_RAND_KEY, 0},
    };
    for (const auto& [name, v] : flags) {
        if ((p = OSSL_PARAM_locate(params, name)) != nullptr && !OSSL_PARAM_set_int(p, v)) {
            return 0;
        }
    }
    return 1;
}

const OSSL_PARAM* gcm_gettable_params(void* /*provctx*/) {
    static const OSSL_PARAM kList[] = {OSSL_PARAM_uint(OSSL_CIPHER_PARAM_MODE, nullptr),
                                       OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, nullptr),
                                       OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, nullptr),
                                       OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_BLOCK_SIZE, nullptr),
                                       OSSL_PARAM_int(OSSL_CIPHER_PARAM_AEAD, nullptr),
                                       OSSL_PARAM_int(OSSL_CIPHER_PARAM_CUSTOM_IV, nullptr),
                                       OSSL_PARAM_int(OSSL_CIPHER_PARAM_CTS, nullptr),
                                       OSSL_PARAM_int(OSSL_CIPHER_PARAM_TLS1_MULTIBLOCK, nullptr),
                                       OSSL_PARAM_int(OSSL_CIPHER_PARAM_HAS_RAND_KEY, nullptr),
                                       OSSL_PARAM_END};
    return kList;
}

/// The first parameter of each of `names` in `params` (nullptr when absent), found in one
/// pass over `params`: libssl asks for one or two values per TLS record, and
/// OSSL_PARAM_locate() per known name (a strcmp against every entry each time) cost more
/// than the record's encryption. Handlers then take them in their own fixed order.
template <class P, size_t N>
std::array<P*, N> find_params(P* params, const std::array<std::string_view, N>& names) noexcept {
    std::array<P*, N> out{};
    for (P* p = params; p != nullptr && p->key != nullptr; ++p) {
        const std::string_view k(p->key);
        for (size_t i = 0; i < N; ++i) {
            if (out[i] == nullptr && k == names[i]) {
                out[i] = p;
                break;
            }
        }
    }
    return out;
}

int gcm_get_ctx_params(void* vctx, OSSL_PARAM params[]) {
    auto& c = *static_cast<GcmCtx*>(vctx);
    static constexpr std::array<std::string_view, 7> kNames = {
        OSSL_CIPHER_PARAM_IVLEN, OSSL_CIPHER_PARAM_KEYLEN,     OSSL_CIPHER_PARAM_AEAD_TAGLEN,
        OSSL_CIPHER_PARAM_AEAD_TLS1_AAD_PAD, OSSL_CIPHER_PARAM_IV, OSSL_CIPHER_PARAM_UPDATED_IV,
        OSSL_CIPHER_PARAM_AEAD_TAG};
    const auto ps = find_params(params, kNames);
    OSSL_PARAM* p = nullptr;
    if ((p = ps[0]) != nullptr && !OSSL_PARAM_set_size_t(p, c.ivlen)) {
        return 0;
    }
    if ((p = ps[1]) != nullptr && !OSSL_PARAM_set_size_t(p, c.keylen)) {
        return 0;
    }
    if ((p = ps[2]) != nullptr && !OSSL_PARAM_set_size_t(p, c.taglen)) {
        return 0;
    }
    if ((p = ps[3]) != nullptr && !OSSL_PARAM_set_size_t(p, kTagLen)) {
        return 0;
    }
    for (size_t i : {4, 5}) {
        if ((p = ps[i]) != nullptr && !OSSL_PARAM_set_octet_string(p, c.iv, c.ivlen)) {
            return 0;
        }
    }
    if ((p = ps[6]) != nullptr) {
        // Only after sealing a message; any length 1..16 (a prefix of the full tag).
        if (!c.enc || !c.tag_ready || p->data_type != OSSL_PARAM_OCTET_STRING ||
            p->data_size == 0 || p->data_size > kTagLen) {
            prov_error("no tag to return, or a wrong tag length");
            return 0;
        }
        std::memcpy(p->data, c.tag, p->data_size);
        p->return_size = p->data_size;
    }
    return 1;
}

const OSSL_PARAM* gcm_gettable_ctx_params(void* /*cctx*/, void* /*provctx*/) {
    static const OSSL_PARAM kList[] = {
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_IVLEN, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_AEAD_TAGLEN, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_AEAD_TLS1_AAD_PAD, nullptr),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_IV, nullptr, 0),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_UPDATED_IV, nullptr, 0),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, nullptr, 0),
        OSSL_PARAM_END};
    return kList;
}

/// TLS 1.2 record AAD (seq | type | version | length): the length the record layer wrote
/// counts the explicit nonce (and, opening, the tag); GCM authenticates the payload length.
int set_tls_aad(GcmCtx& c, const OSSL_PARAM& p) {
    if (p.data_type != OSSL_PARAM_OCTET_STRING || p.data_size != kTlsAadLen) {
        prov_error("TLS AAD must be 13 bytes");
        return 0;
    }
    std::memcpy(c.tls_aad, p.data, kTlsAadLen);
    size_t len = (static_cast<size_t>(c.tls_aad[kTlsAadLen - 2]) << 8) | c.tls_aad[kTlsAadLen - 1];
    const size_t overhead = kTlsExplicitIv + (c.enc ? 0 : kTagLen);
    if (len < overhead) {
        prov_error("TLS record shorter than its nonce and tag");
        return 0;
    }
    len -= overhead;
    c.tls_aad[kTlsAadLen - 2] = static_cast<uint8_t>(len >> 8);
    c.tls_aad[kTlsAadLen - 1] = static_cast<uint8_t>(len);
    c.tls_aad_len = kTlsAadLen;
    return 1;
}

/// TLS 1.2 fixed (implicit) nonce part, 4 bytes; sealing draws the 8-byte invocation
/// field at random and counts up from there.
int set_tls_iv_fixed(GcmCtx& c, const OSSL_PARAM& p) {
    if (p.data_type != OSSL_PARAM_OCTET_STRING || c.ivlen != kIvLen || p.data_size != kTlsFixedIv) {
        prov_error("TLS 1.2 fixed IV must be 4 bytes of a 12-byte nonce");
        return 0;
    }
    std::memcpy(c.iv, p.data, kTlsFixedIv);
    if (c.enc && RAND_bytes(c.iv + kTlsFixedIv, static_cast<int>(kTlsExplicitIv)) <= 0) {
        return 0;
    }
    c.tls_iv_fixed = true;
    return 1;
}

int gcm_set_ctx_params(void* vctx, const OSSL_PARAM params[]) {
    auto& c = *static_cast<GcmCtx*>(vctx);
    if (params == nullptr) {
        return 1;
    }
    static constexpr std::array<std::string_view, 5> kNames = {
        OSSL_CIPHER_PARAM_AEAD_TAG, OSSL_CIPHER_PARAM_AEAD_IVLEN, OSSL_CIPHER_PARAM_KEYLEN,
        OSSL_CIPHER_PARAM_AEAD_TLS1_AAD, OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED};
    const auto ps = find_params(params, kNames);
    const OSSL_PARAM* p = nullptr;
    if ((p = ps[0]) != nullptr) {
        if (p->data_type != OSSL_PARAM_OCTET_STRING || p->data_size == 0 ||
            p->data_size > kTagLen) {
            prov_error("tag length must be 1..16");
            return 0;
        }
        if (p->data != nullptr) {
            if (c.enc) {
                prov_error("a tag is set only to open");
                return 0;
            }
            std::memcpy(c.tag, p->data, p->data_size);
            c.tag_set = true;
        }
        c.taglen = p->data_size;
    }
    if ((p = ps[1]) != nullptr) {
        size_t n = 0;
        if (!OSSL_PARAM_get_size_t(p, &n) || n == 0 || n > kMaxIvLen) {
            prov_error("IV length must be 1..64");
            return 0;
        }
        if (n != c.ivlen) {
            c.ivlen = n;
            c.iv_set = false;
        }
    }
    if ((p = ps[2]) != nullptr) {
        size_t n = 0;
        if (!OSSL_PARAM_get_size_t(p, &n) || n != c.keylen) {
            prov_error("fixed key length");
            return 0;
        }
    }
    if ((p = ps[3]) != nullptr &&
        !set_tls_aad(c, *p)) {
        return 0;
    }
    if ((p = ps[4]) != nullptr &&
        !set_tls_iv_fixed(c, *p)) {
        return 0;
    }
    // Anything else (OSSL_CIPHER_PARAM_TLS_VERSION, TLS_MAC_SIZE that libssl sets on every
    // provided cipher) does not concern an AEAD and is ignored, as in OpenSSL's own GCM.
    return 1;
}

const OSSL_PARAM* gcm_settable_ctx_params(void* /*cctx*/, void* /*provctx*/) {
    static const OSSL_PARAM kList[] = {
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, nullptr, 0),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, nullptr),
        OSSL_PARAM_size_t(OSSL_CIPHER_PARAM_KEYLEN, nullptr),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TLS1_AAD, nullptr, 0),
        OSSL_PARAM_octet_string(OSSL_CIPHER_PARAM_AEAD_TLS1_IV_FIXED, nullptr, 0),
        OSSL_PARAM_END};
    return kList;
}

// ---- Dispatch tables and the provider

using Fn = void (*)();

template <size_t KeyLen>
const OSSL_DISPATCH kGcmFunctions[] = {
    {OSSL_FUNC_CIPHER_NEWCTX, reinterpret_cast<Fn>(&gcm_newctx<KeyLen>)},
    {OSSL_FUNC_CIPHER_FREECTX, reinterpret_cast<Fn>(&gcm_freectx)},
    {OSSL_FUNC_CIPHER_DUPCTX, reinterpret_cast<Fn>(&gcm_dupctx)},
    {OSSL_FUNC_CIPHER_ENCRYPT_INIT, reinterpret_cast<Fn>(&gcm_einit)},
    {OSSL_FUNC_CIPHER_DECRYPT_INIT, reinterpret_cast<Fn>(&gcm_dinit)},
    {OSSL_FUNC_CIPHER_UPDATE, reinterpret_cast<Fn>(&gcm_update)},
    {OSSL_FUNC_CIPHER_FINAL, reinterpret_cast<Fn>(&gcm_final)},
    {OSSL_FUNC_CIPHER_CIPHER, reinterpret_cast<Fn>(&gcm_cipher)},
    {OSSL_FUNC_CIPHER_GET_PARAMS, reinterpret_cast<Fn>(&gcm_get_params<KeyLen>)},
    {OSSL_FUNC_CIPHER_GETTABLE_PARAMS, reinterpret_cast<Fn>(&gcm_gettable_params)},
    {OSSL_FUNC_CIPHER_GET_CTX_PARAMS, reinterpret_cast<Fn>(&gcm_get_ctx_params)},
    {OSSL_FUNC_CIPHER_GETTABLE_CTX_PARAMS, reinterpret_cast<Fn>(&gcm_gettable_ctx_params)},
    {OSSL_FUNC_CIPHER_SET_CTX_PARAMS, reinterpret_cast<Fn>(&gcm_set_ctx_params)},
    {OSSL_FUNC_CIPHER_SETTABLE_CTX_PARAMS, reinterpret_cast<Fn>(&gcm_settable_ctx_params)},
    {0, nullptr}};

constexpr const char* kProps = "provider=sluice-imb";

const OSSL_ALGORITHM kCiphers[] = {{"AES-128-GCM:id-aes128-GCM:2.16.840.1.101.3.4.1.6", kProps,
                                    kGcmFunctions<16>, "AES-128-GCM, Intel ipsec-mb"},
                                   {"AES-256-GCM:id-aes256-GCM:2.16.840.1.101.3.4.1.46", kProps,
                                    kGcmFunctions<32>, "AES-256-GCM, Intel ipsec-mb"},
                                   {nullptr, nullptr, nullptr, nullptr}};

const OSSL_ALGORITHM* prov_query(void* /*provctx*/, int operation_id, int* no_cache) {
    *no_cache = 0;
    return operation_id == OSSL_OP_CIPHER ? kCiphers : nullptr;
}

int prov_get_params(void* /*provctx*/, OSSL_PARAM params[]) {
    OSSL_PARAM* p = nullptr;
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME)) != nullptr &&
        !OSSL_PARAM_set_utf8_ptr(p, "sluice AES-GCM on Intel ipsec-mb")) {
        return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_VERSION)) != nullptr &&
        !OSSL_PARAM_set_utf8_ptr(p, g_imb.info.version.c_str())) {
        return 0;
    }
    if ((p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS)) != nullptr &&
        !OSSL_PARAM_set_int(p, 1)) {
        return 0;
    }
    return 1;
}

const OSSL_PARAM* prov_gettable_params(void* /*provctx*/) {
    static const OSSL_PARAM kList[] = {OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, nullptr, 0),
                                       OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_VERSION, nullptr, 0),
                                       OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, nullptr),
                                       OSSL_PARAM_END};
    return kList;
}

void prov_teardown(void* /*provctx*/) {}

const OSSL_DISPATCH kProviderFunctions[] = {
    {OSSL_FUNC_PROVIDER_QUERY_OPERATION, reinterpret_cast<Fn>(&prov_query)},
    {OSSL_FUNC_PROVIDER_GET_PARAMS, reinterpret_cast<Fn>(&prov_get_params)},
    {OSSL_FUNC_PROVIDER_GETTABLE_PARAMS, reinterpret_cast<Fn>(&prov_gettable_params)},
    {OSSL_FUNC_PROVIDER_TEARDOWN, reinterpret_cast<Fn>(&prov_teardown)},
    {0, nullptr}};

int prov_init(const OSSL_CORE_HANDLE* /*handle*/, const OSSL_DISPATCH* /*in*/,
              const OSSL_DISPATCH** out, void** provctx) {
    if (g_imb.mgr == nullptr) {
        return 0;
    }
    *out = kProviderFunctions;
    *provctx = &g_imb;
    return 1;
}

std::string ossl_errors() {
    std::string s;
    char buf[256];
    while (const unsigned long e = ERR_get_error()) {
        ERR_error_string_n(e, buf, sizeof buf);
        s += s.empty() ? "" : "; ";
        s += buf;
    }
    return s.empty() ? "no OpenSSL error" : s;
}

/// Seals a record with `a` and opens it with `b` (TLS 1.3 style), and compares the sealed
/// bytes with `b`'s own: true when both agree.
bool cross_check(const EVP_CIPHER* a, const EVP_CIPHER* b) {
    uint8_t key[32], iv[12], aad[5] = {0x17, 0x03, 0x03, 0x00, 0x52}, pt[66], ct[2][66], tag[2][16],
                             back[66];
    for (size_t i = 0; i < sizeof key; ++i) {
        key[i] = static_cast<uint8_t>(i * 7 + 1);
    }
    for (size_t i = 0; i < sizeof iv; ++i) {
        iv[i] = static_cast<uint8_t>(0xa0 + i);
    }
    for (size_t i = 0; i < sizeof pt; ++i) {
        pt[i] = static_cast<uint8_t>(i * 13);
    }
    bool ok = true;
    const EVP_CIPHER* ciphers[2] = {a, b};
    for (int k = 0; k < 2 && ok; ++k) {
        EVP_CIPHER_CTX* x = EVP_CIPHER_CTX_new();
        int l = 0, f = 0;
        ok = x != nullptr && EVP_EncryptInit_ex(x, ciphers[k], nullptr, key, iv) == 1 &&
             EVP_EncryptUpdate(x, nullptr, &l, aad, sizeof aad) == 1 &&
             EVP_EncryptUpdate(x, ct[k], &l, pt, sizeof pt) == 1 &&
             EVP_EncryptFinal_ex(x, ct[k] + l, &f) == 1 &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, tag[k]) == 1;
        EVP_CIPHER_CTX_free(x);
    }
    if (!ok || std::memcmp(ct[0], ct[1], sizeof pt) != 0 || std::memcmp(tag[0], tag[1], 16) != 0) {
        return false;
    }
    EVP_CIPHER_CTX* x = EVP_CIPHER_CTX_new();
    int l = 0, f = 0;
    ok = x != nullptr && EVP_DecryptInit_ex(x, a, nullptr, key, iv) == 1 &&
         EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, 16, tag[1]) == 1 &&
         EVP_DecryptUpdate(x, nullptr, &l, aad, sizeof aad) == 1 &&
         EVP_DecryptUpdate(x, back, &l, ct[1], sizeof pt) == 1 &&
         EVP_DecryptFinal_ex(x, back + l, &f) == 1 && std::memcmp(back, pt, sizeof pt) == 0;
    EVP_CIPHER_CTX_free(x);
    return ok;
}

#endif // SLUICE_HAVE_IPSEC_MB

} // namespace

namespace {
/// Provider handles install_imb_provider() loaded, unloaded by uninstall_imb_providers().
std::mutex g_loaded_mu;
std::vector<OSSL_PROVIDER*> g_loaded;
} // namespace

void uninstall_imb_providers() noexcept {
    const std::lock_guard<std::mutex> lock(g_loaded_mu);
    for (auto it = g_loaded.rbegin(); it != g_loaded.rend(); ++it) {
        OSSL_PROVIDER_unload(*it);
    }
    g_loaded.clear();
}

Result<ImbInfo> install_imb_provider(OSSL_LIB_CTX* libctx, bool prefer) {
#if SLUICE_HAVE_IPSEC_MB
    std::call_once(g_init_once, init_imb);
    if (g_imb.mgr == nullptr) {
        return fail(Errc::Internal, "ipsec-mb: " + g_imb.error);
    }
    // The default provider first: loading any provider explicitly turns off the automatic
    // loading of the default one, and everything but AES-GCM still comes from it.
    OSSL_PROVIDER* dflt = OSSL_PROVIDER_load(libctx, "default");
    if (dflt == nullptr) {
        return fail(Errc::Internal, "OpenSSL default provider: " + ossl_errors());
    }
    {
        const std::lock_guard<std::mutex> lock(g_loaded_mu);
        g_loaded.push_back(dflt);
    }
    OSSL_PROVIDER* loaded = nullptr; // made by this call (unloaded again if the check fails)
    if (!OSSL_PROVIDER_available(libctx, kImbProviderName)) {
        if (OSSL_PROVIDER_add_builtin(libctx, kImbProviderName, &prov_init) != 1 ||
            (loaded = OSSL_PROVIDER_load(libctx, kImbProviderName)) == nullptr) {
            return fail(Errc::Internal, std::string("OpenSSL refused provider ") +
                                            kImbProviderName + ": " + ossl_errors());
        }
    }
    for (const char* name : {"AES-128-GCM", "AES-256-GCM"}) {
        EVP_CIPHER* ours = EVP_CIPHER_fetch(libctx, name, kProps);
        EVP_CIPHER* theirs = EVP_CIPHER_fetch(libctx, name, "provider=default");
        const bool ok = ours != nullptr && theirs != nullptr && cross_check(ours, theirs);
        EVP_CIPHER_free(ours);
        EVP_CIPHER_free(theirs);
        if (!ok) {
            ERR_clear_error();
            // Unloaded, or a fetch that names no provider could still pick the broken one.
            if (loaded != nullptr) {
                OSSL_PROVIDER_unload(loaded);
            }
            return fail(Errc::Internal,
                        std::string(name) + ": ipsec-mb and OpenSSL disagree on a known record");
        }
    }
    if (loaded != nullptr) {
        const std::lock_guard<std::mutex> lock(g_loaded_mu);
        g_loaded.push_back(loaded);
    }
    if (prefer && EVP_set_default_properties(libctx, "?provider=sluice-imb") != 1) {
        return fail(Errc::Internal, "EVP_set_default_properties: " + ossl_errors());
    }
    return g_imb.info;
#else
    (void)libctx;
    (void)prefer;
    return fail(Errc::NotFound, "sluice-l7 was built without Intel ipsec-mb (libipsec-mb-dev)");
#endif
}

void* imb_manager() noexcept {
#if SLUICE_HAVE_IPSEC_MB
    std::call_once(g_init_once, init_imb);
    return g_imb.error.empty() ? g_imb.mgr : nullptr;
#else
    return nullptr;
#endif
}

ImbCounters imb_provider_counters() noexcept {
    ImbCounters s;
    for (const auto& slot : g_slots) {
        s.sealed += slot.sealed.load(std::memory_order_relaxed);
        s.opened += slot.opened.load(std::memory_order_relaxed);
        s.open_failures += slot.open_failures.load(std::memory_order_relaxed);
    }
    return s;
}

} // namespace sluice::l7
