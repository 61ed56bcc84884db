#pragma once

/// @file
/// A small Kubernetes API client over libcurl: request/response calls (GET, PATCH, PUT,
/// POST) and streaming watches, with TLS verified against the cluster CA and a bearer token
/// or a client certificate. Configuration comes from the in-cluster service account or from
/// a kubeconfig (current-context), with exec credential plugins; auth-provider entries are
/// refused with a clear error. A token file is re-read every minute and after a 401.
/// Thread: a KubeClient may be used from several threads at once (each call uses its own curl
/// handle); calls block, bounded by timeouts.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "result.h"

namespace sluice::cp {

struct KubeConfig {
    std::string server;       ///< https://host:port (http:// only for tests)
    std::string ca_file;      ///< PEM bundle file, or
    std::string ca_data;      ///< PEM bundle (decoded certificate-authority-data)
    std::string cert_file, cert_data; ///< client certificate (PEM)
    std::string key_file, key_data;   ///< client key (PEM)
    std::string token;        ///< bearer token (fixed), or
    std::string token_file;   ///< re-read periodically (projected service-account tokens)
    std::string ns = "default"; ///< the namespace of the pod / context
    bool insecure = false;    ///< insecure-skip-tls-verify (kubeconfig only)
    /// users[].user.exec: a credential plugin (client.authentication.k8s.io ExecCredential)
    /// run for a bearer token: at start, when the token it gave expires, and after a 401.
    struct Exec {
        std::string command; ///< resolved against the kubeconfig's directory if relative
        std::vector<std::string> args;
        std::vector<std::pair<std::string, std::string>> env;
        std::string api_version = "client.authentication.k8s.io/v1";
    };
    std::optional<Exec> exec;
};

/// Runs an exec credential plugin and returns its status.token and the expiry (seconds
/// since the epoch, 0 = none). Errors name the plugin and what it printed.
/// Thread: any; blocks up to `timeout`.
[[nodiscard]] Result<std::pair<std::string, int64_t>> run_exec_plugin(
    const KubeConfig::Exec& e, std::chrono::milliseconds timeout = std::chrono::seconds(20));

/// The in-cluster service account: KUBERNETES_SERVICE_HOST/PORT and
/// /var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}.
/// `sa_dir` overrides the directory (tests). Thread: any.
[[nodiscard]] Result<KubeConfig> in_cluster_config(
    const std::string& sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount");

/// The kubeconfig's current context (cluster server and CA, user token or client cert).
/// Relative file paths are resolved against the kubeconfig's directory. Thread: any.
[[nodiscard]] Result<KubeConfig> load_kubeconfig(const std::string& path);

struct HttpResponse {
    long status = 0;
    std::string content_type;
    std::string body;
};

class KubeClient {
public:
    explicit KubeClient(KubeConfig cfg);
    ~KubeClient();
    KubeClient(const KubeClient&) = delete;
    KubeClient& operator=(const KubeClient&) = delete;

    /// One request. `path` starts with '/' (it is appended to the server URL). Transport
    /// failures are errors; any HTTP status is a response. Thread: any; blocks.
    [[nodiscard]] Result<HttpResponse> request(std::string_view method, const std::string& path,
                                               const std::string& body = "",
                                               const std::string& content_type = "",
                                               std::chrono::milliseconds timeout =
                                                   std::chrono::seconds(30));

    /// Streams a watch: `on_line` gets each complete newline-terminated line of the body
    /// (one JSON event). It returns false to stop the watch. The call returns the HTTP
    /// status when the server ends the stream (200 for a normal end of a watch), an error
    /// on transport failures (including `idle` without any byte and `stop` being set).
    /// Thread: any; blocks up to `max_duration` (the watch's timeoutSeconds plus slack).
    [[nodiscard]] Result<HttpResponse> watch(const std::string& path,
                                             const std::function<bool(std::string_view)>& on_line,
                                             const std::atomic<bool>& stop,
                                             std::chrono::milliseconds max_duration,
                                             std::chrono::milliseconds idle);

    [[nodiscard]] const KubeConfig& config() const noexcept { return cfg_; }

private:
    std::string bearer();
    /// A 401 for a request sent with `used`: reload the credential (token file or exec
    /// plugin) before the next request, unless `used` was replaced already (requests in
    /// flight with the old token answer 401 after the reload: the new token stays).
    void token_refused(const std::string& used);

    KubeConfig cfg_;
    std::mutex token_mu_;
    std::string token_;
    std::chrono::steady_clock::time_point token_read_{};
    int64_t token_expiry_ = 0;  ///< exec plugin: epoch seconds, 0 = unknown
    bool token_stale_ = false;  ///< exec plugin: a 401 was seen; run it again
    bool refused_ = false;      ///< a 401 was seen since the credential was last loaded
    std::chrono::steady_clock::time_point refused_log_{}; ///< rate limit of the 401 log lines
};

/// Decodes standard base64 (kubeconfig *-data fields); whitespace is ignored.
[[nodiscard]] Result<std::string> base64_decode(std::string_view in);

} // namespace sluice::cp
