// aead_bench: TLS 1.3 record encryption (AES-GCM, 5-byte record header as AAD, 12-byte
// per-record nonce, 16-byte tag) with OpenSSL 3 EVP — what sluice-l7 uses today, the
// baseline — beside Intel ipsec-mb's direct GCM API and its burst job API (32 records of 32
// connections, each with its own key, per submit: the "batch records of many connections"
// design issue 5 proposes), in one invocation, on one core. Prints GB/s and TSC cycles per
// byte per record size and the ratio of each ipsec-mb mode to EVP; checks first that all
// three produce the same ciphertext and tag.
//
//   aead_bench [--seconds S] [--out FILE] [--smoke]
//
// --smoke: 0.02 s per measurement (CI: checks it runs, agrees and writes JSON; no speeds).

#include <intel-ipsec-mb.h>
#include <openssl/evp.h>
#include <x86intrin.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr size_t kConns = 32; ///< connections (keys) in a burst
constexpr size_t kAad = 5;    ///< TLS 1.3 record header
constexpr size_t kTag = 16;
constexpr size_t kSizes[] = {64, 256, 1024, 1420, 4096, 16384};

struct Conn {
    std::array<uint8_t, 32> key{};
    std::array<uint8_t, 12> iv{};
    EVP_CIPHER_CTX* evp = nullptr;
    alignas(64) gcm_key_data imb_key{};
    gcm_context_data imb_ctx{};
};

struct Figures {
    double gbps = 0;
    double cycles_per_byte = 0;
};

using Clock = std::chrono::steady_clock;

/// Runs `one()` (which processes `bytes` bytes) for `seconds`, returns throughput.
template <class F>
Figures measure(double seconds, size_t bytes, F&& one) {
    for (int i = 0; i < 50; ++i) {
        one(); // warm
    }
    uint64_t n = 0;
    const auto t0 = Clock::now();
    const uint64_t c0 = __rdtsc();
    const auto until = t0 + std::chrono::duration<double>(seconds);
    while (true) {
        for (int i = 0; i < 64; ++i) {
            one();
        }
        n += 64;
        if (Clock::now() >= until) {
            break;
        }
    }
    const uint64_t c1 = __rdtsc();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    const double total = static_cast<double>(n) * static_cast<double>(bytes);
    return {total / s / 1e9, static_cast<double>(c1 - c0) / total};
}

bool evp_seal(Conn& c, const uint8_t* aad, const uint8_t* in, size_t len, uint8_t* out,
              uint8_t* tag) {
    int l = 0;
    return EVP_EncryptInit_ex(c.evp, nullptr, nullptr, nullptr, c.iv.data()) == 1 &&
           EVP_EncryptUpdate(c.evp, nullptr, &l, aad, static_cast<int>(kAad)) == 1 &&
           EVP_EncryptUpdate(c.evp, out, &l, in, static_cast<int>(len)) == 1 &&
           EVP_EncryptFinal_ex(c.evp, out + l, &l) == 1 &&
           EVP_CIPHER_CTX_ctrl(c.evp, EVP_CTRL_GCM_GET_TAG, kTag, tag) == 1;
}

} // namespace

int main(int argc, char** argv) {
    double seconds = 1.0;
    std::string out_path;
    bool smoke = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--seconds" && i + 1 < argc) {
            seconds = std::stod(argv[++i]);
        } else if (a == "--out" && i + 1 < argc) {
            out_path = argv[++i];
        } else if (a == "--smoke") {
            smoke = true;
        } else {
            std::fprintf(stderr, "usage: aead_bench [--seconds S] [--out FILE] [--smoke]\n");
            return 2;
        }
    }
    if (smoke) {
        seconds = 0.02;
    }
    IMB_MGR* mgr = alloc_mb_mgr(0);
    if (mgr == nullptr) {
        std::fprintf(stderr, "aead_bench: ipsec-mb: alloc_mb_mgr failed\n");
        return 1;
    }
    IMB_ARCH arch = IMB_ARCH_NONE;
    init_mb_mgr_auto(mgr, &arch);
    const char* arch_name = arch == IMB_ARCH_AVX512 ? "avx512"
                            : arch == IMB_ARCH_AVX2 ? "avx2"
                            : arch == IMB_ARCH_AVX  ? "avx"
                            : arch == IMB_ARCH_SSE  ? "sse"
                                                    : "other";
    std::printf("aead_bench: OpenSSL %s vs ipsec-mb %s (%s code path), %.2f s per figure\n",
                OpenSSL_version(OPENSSL_VERSION_STRING), imb_get_version_str(), arch_name,
                seconds);

    std::string json = "{\"benchmark\":\"aead\",\"openssl\":\"" +
                       std::string(OpenSSL_version(OPENSSL_VERSION_STRING)) +
                       "\",\"ipsec_mb\":\"" + imb_get_version_str() + "\",\"ipsec_mb_arch\":\"" +
                       arch_name + "\",\"seconds\":" + std::to_string(seconds) + ",\"runs\":[";
    bool first_run = true;
    bool agree = true;
    for (const int key_bits : {128, 256}) {
        std::vector<std::unique_ptr<Conn>> conns;
        for (size_t i = 0; i < kConns; ++i) {
            auto c = std::make_unique<Conn>();
            for (size_t b = 0; b < c->key.size(); ++b) {
                c->key[b] = static_cast<uint8_t>(i * 31 + b * 7 + 1);
            }
            for (size_t b = 0; b < c->iv.size(); ++b) {
                c->iv[b] = static_cast<uint8_t>(i + b * 3);
            }
            c->evp = EVP_CIPHER_CTX_new();
            EVP_EncryptInit_ex(c->evp, key_bits == 128 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(),
                               nullptr, c->key.data(), nullptr);
            if (key_bits == 128) {
                IMB_AES128_GCM_PRE(mgr, c->key.data(), &c->imb_key);
            } else {
                IMB_AES256_GCM_PRE(mgr, c->key.data(), &c->imb_key);
            }
            conns.push_back(std::move(c));
        }
        const uint8_t aad[kAad] = {0x17, 0x03, 0x03, 0x40, 0x11};
        for (const size_t size : kSizes) {
            std::vector<uint8_t> in(size * kConns), out_evp(size * kConns), out_imb(size * kConns);
            for (size_t i = 0; i < in.size(); ++i) {
                in[i] = static_cast<uint8_t>(i * 13 + 5);
            }
            std::vector<uint8_t> tags_evp(kTag * kConns), tags_imb(kTag * kConns),
                tags_burst(kTag * kConns), out_burst(size * kConns);
            // Agreement: every connection's record sealed three ways.
            for (size_t i = 0; i < kConns; ++i) {
                Conn& c = *conns[i];
                evp_seal(c, aad, &in[i * size], size, &out_evp[i * size], &tags_evp[i * kTag]);
                if (key_bits == 128) {
                    IMB_AES128_GCM_ENC(mgr, &c.imb_key, &c.imb_ctx, &out_imb[i * size], &in[i * size],
                                       size, c.iv.data(), aad, kAad, &tags_imb[i * kTag], kTag);
                } else {
                    IMB_AES256_GCM_ENC(mgr, &c.imb_key, &c.imb_ctx, &out_imb[i * size], &in[i * size],
                                       size, c.iv.data(), aad, kAad, &tags_imb[i * kTag], kTag);
                }
            }
            auto burst = [&]() -> size_t {
                IMB_JOB* jobs[kConns];
                size_t got = 0;
                while (got < kConns) {
                    got = IMB_GET_NEXT_BURST(mgr, kConns, jobs);
                    if (got < kConns) {
                        IMB_FLUSH_BURST(mgr, kConns, jobs);
                    }
                }
                for (size_t i = 0; i < kConns; ++i) {
                    Conn& c = *conns[i];
                    IMB_JOB* j = jobs[i];
                    j->cipher_mode = IMB_CIPHER_GCM;
                    j->hash_alg = IMB_AUTH_AES_GMAC;
                    j->cipher_direction = IMB_DIR_ENCRYPT;
                    j->chain_order = IMB_ORDER_CIPHER_HASH;
                    j->enc_keys = &c.imb_key;
                    j->dec_keys = &c.imb_key;
                    j->key_len_in_bytes = key_bits / 8;
                    j->src = &in[i * size];
                    j->dst = &out_burst[i * size];
                    j->cipher_start_src_offset_in_bytes = 0;
                    j->msg_len_to_cipher_in_bytes = size;
                    j->hash_start_src_offset_in_bytes = 0;
                    j->msg_len_to_hash_in_bytes = size;
                    j->iv = c.iv.data();
                    j->iv_len_in_bytes = c.iv.size();
                    j->u.GCM.aad = aad;
                    j->u.GCM.aad_len_in_bytes = kAad;
                    j->auth_tag_output = &tags_burst[i * kTag];
                    j->auth_tag_output_len_in_bytes = kTag;
                }
                size_t done = IMB_SUBMIT_BURST(mgr, kConns, jobs);
                while (done < kConns) {
                    done += IMB_FLUSH_BURST(mgr, kConns - done, jobs);
                }
                return done;
            };
            (void)burst();
            const bool same = out_evp == out_imb && tags_evp == tags_imb && out_evp == out_burst &&
                              tags_evp == tags_burst;
            if (!same) {
                std::fprintf(stderr, "aead_bench: AES-%d-GCM %zu B: the implementations disagree\n",
                             key_bits, size);
                agree = false;
            }
            size_t k = 0;
            const Figures evp = measure(seconds, size, [&] {
                Conn& c = *conns[k++ % kConns];
                evp_seal(c, aad, &in[0], size, &out_evp[0], &tags_evp[0]);
            });
            k = 0;
            const Figures imb = measure(seconds, size, [&] {
                Conn& c = *conns[k++ % kConns];
                if (key_bits == 128) {
                    IMB_AES128_GCM_ENC(mgr, &c.imb_key, &c.imb_ctx, &out_imb[0], &in[0], size,
                                       c.iv.data(), aad, kAad, &tags_imb[0], kTag);
                } else {
                    IMB_AES256_GCM_ENC(mgr, &c.imb_key, &c.imb_ctx, &out_imb[0], &in[0], size,
                                       c.iv.data(), aad, kAad, &tags_imb[0], kTag);
                }
            });
            const Figures bur = measure(seconds, size * kConns, [&] { (void)burst(); });
            std::printf("AES-%d-GCM %5zu B records: EVP %6.2f GB/s %5.2f c/B | ipsec-mb direct %6.2f "
                        "GB/s %5.2f c/B (x%.2f) | burst of %zu %6.2f GB/s %5.2f c/B (x%.2f)\n",
                        key_bits, size, evp.gbps, evp.cycles_per_byte, imb.gbps,
                        imb.cycles_per_byte, imb.gbps / evp.gbps, kConns, bur.gbps,
                        bur.cycles_per_byte, bur.gbps / evp.gbps);
            char buf[512];
            std::snprintf(buf, sizeof buf,
                          "%s{\"key_bits\":%d,\"record_bytes\":%zu,\"agree\":%s,"
                          "\"evp\":{\"gbps\":%.3f,\"cycles_per_byte\":%.3f},"
                          "\"ipsec_mb_direct\":{\"gbps\":%.3f,\"cycles_per_byte\":%.3f,\"ratio\":%.3f},"
                          "\"ipsec_mb_burst\":{\"gbps\":%.3f,\"cycles_per_byte\":%.3f,\"ratio\":%.3f}}",
                          first_run ? "" : ",", key_bits, size, same ? "true" : "false", evp.gbps,
                          evp.cycles_per_byte, imb.gbps, imb.cycles_per_byte, imb.gbps / evp.gbps,
                          bur.gbps, bur.cycles_per_byte, bur.gbps / evp.gbps);
            json += buf;
            first_run = false;
        }
        for (auto& c : conns) {
            EVP_CIPHER_CTX_free(c->evp);
        }
    }
    json += std::string("],\"agree\":") + (agree ? "true" : "false") + "}\n";
    free_mb_mgr(mgr);
    if (!out_path.empty()) {
        std::ofstream(out_path) << json;
    }
    return agree ? 0 : 1;
}
