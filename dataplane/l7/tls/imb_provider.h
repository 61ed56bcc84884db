#pragma once

/// @file
/// "sluice-imb": an OpenSSL 3 provider, built into sluice-l7, whose AES-128-GCM and
/// AES-256-GCM are Intel ipsec-mb's direct GCM API (init / update / finalize on one record).
/// OpenSSL stays in charge of TLS: libssl fetches the cipher by name when an SSL_CTX is made
/// and its record layer calls it for every record (TLS 1.3: per-record nonce through init,
/// the record header as AAD through update with out = NULL, update, final, the tag through
/// the AEAD tag parameter; TLS 1.2: the fixed IV and the per-record AAD as parameters, then
/// one in-place update over explicit nonce | payload | tag). Handshakes, KeyUpdate, alerts,
/// tickets and every other algorithm stay with OpenSSL's default provider.
///
/// install_imb_provider() registers the provider in a library context, loads it beside the
/// default provider and, with `prefer`, sets the context's default property query to
/// "?provider=sluice-imb": a preference, so every AES-GCM fetch gets ours and everything else
/// falls back to the default provider. It checks the provider against the default one
/// (a known-answer record, sealed and opened) before the preference is set.
///
/// The ipsec-mb manager is made once per process and only read afterwards (the direct API
/// keeps no state in it), so any number of threads may use the provider's ciphers at once,
/// each EVP_CIPHER_CTX from one thread at a time, as with any OpenSSL cipher.
///
/// Thread: install_imb_provider() at startup (any thread, before the SSL_CTXs that should
/// use it are made); imb_provider_counters() any thread.

#include <cstdint>
#include <string>

#include <openssl/types.h>

#include "result.h"

namespace sluice::l7 {

/// The provider's name (and the value of its "provider" property).
inline constexpr const char* kImbProviderName = "sluice-imb";

/// What install_imb_provider() set up.
struct ImbInfo {
    std::string arch;    ///< ipsec-mb code path in use: "avx512", "avx2", "avx", "sse"
    std::string version; ///< ipsec-mb library version, e.g. "1.3.0"
};

/// Registers and loads "sluice-imb" (and the default provider) in `libctx` (nullptr: the
/// default library context) and, if `prefer`, makes it the preferred AES-GCM (without it,
/// a fetch that names no provider may get either implementation: name one, as the tests
/// do with "provider=sluice-imb" / "provider=default"). Calling it again for the same
/// context is harmless.
/// @return the ipsec-mb code path; Errc::NotFound if sluice was built without ipsec-mb;
///   Errc::Internal if ipsec-mb cannot start (no usable CPU code path), OpenSSL refuses the
///   provider, or the known-answer check fails (nothing is preferred then: OpenSSL's own
///   AES-GCM keeps serving).
/// Thread: startup (allocates; takes OpenSSL's provider locks).
[[nodiscard]] Result<ImbInfo> install_imb_provider(OSSL_LIB_CTX* libctx, bool prefer);

/// Unloads the providers install_imb_provider() loaded (at shutdown, after the engine
/// stopped; objects still holding the provider's ciphers keep it alive until they go).
/// Thread: shutdown.
void uninstall_imb_providers() noexcept;

/// The process's ipsec-mb manager (an IMB_MGR*, untyped here so that this header needs no
/// ipsec-mb include), started on first use; nullptr when ipsec-mb is missing or cannot run
/// on this CPU. Only read after start: any thread may use its direct GCM functions.
[[nodiscard]] void* imb_manager() noexcept;

/// Records the provider's ciphers processed since start, summed over all threads.
struct ImbCounters {
    uint64_t sealed = 0;        ///< records (messages) encrypted
    uint64_t opened = 0;        ///< records decrypted whose tag verified
    uint64_t open_failures = 0; ///< records whose tag did not verify
};

/// Thread: any (relaxed reads of per-thread counters; a sum, not a snapshot).
[[nodiscard]] ImbCounters imb_provider_counters() noexcept;

} // namespace sluice::l7
