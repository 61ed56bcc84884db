#pragma once

/// @file
/// The Kubernetes API source behind `sluice-controlplane --kubernetes`: list+watch of every
/// kind sluice reads (resourceVersion resume, bookmarks, 410 Gone -> relist, chunked lists,
/// backoff with jitter, missing CRDs tolerated), an in-memory object map turned into
/// Documents for the same load_documents + compile as the file source (Controller), status
/// write-back through the status subresource (JSON merge patch guarded by resourceVersion,
/// only when it changes, other controllers' Route parent entries kept), and leader election
/// with a coordination.k8s.io/v1 Lease. Every replica compiles and pushes the IR to its own
/// dataplane (so dataplanes keep forwarding through a leader change); only the leader
/// writes status. Thread: run() blocks on its caller's thread and starts one watch thread per
/// kind and one lease thread; nlohmann::json exceptions are caught in this file.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller.h"
#include "k8s_client.h"

namespace sluice::cp {

struct K8sSourceOptions {
    std::string controller_name = kControllerName;
    bool leader_election = true;
    std::string lease_name = "sluice-controlplane";
    std::string lease_namespace; ///< "" = the namespace of the service account / context
    std::string identity;        ///< "" = hostname + pid
    int lease_duration_s = 15;   ///< a standby takes over this long after the last renewal
    int list_limit = 500;        ///< page size of chunked lists (limit/continue)
    int watch_timeout_s = 300;   ///< timeoutSeconds of each watch request
    int idle_timeout_s = 120;    ///< no byte for this long: the watch connection is dead
    int backoff_min_ms = 250, backoff_max_ms = 30000;
    int missing_retry_s = 60; ///< re-check a kind whose CRD is not installed
    int debounce_ms = 100;    ///< at most this long from the first change to the compile;
                              ///< a change this long after the last compile: at once
    int quiet_ms = 10;        ///< compile once no change came for this long
    int status_writers = 4;   ///< status PATCH requests in flight at once (many to write)
};

class K8sSource {
public:
    K8sSource(KubeClient& client, Controller& controller, K8sSourceOptions opts);
    ~K8sSource();
    K8sSource(const K8sSource&) = delete;
    K8sSource& operator=(const K8sSource&) = delete;

    /// Runs until `stop` is set. Returns 0 (errors are retried, never fatal).
    int run(const std::atomic<bool>& stop);

    [[nodiscard]] bool is_leader() const noexcept {
        return leader_.load(std::memory_order_acquire);
    }

    struct Resource; ///< one watched kind (k8s_source.cc)
    struct Entry;    ///< one object of a kind (k8s_source.cc)

private:
    void watch_loop(Resource& r, const std::atomic<bool>& stop);
    void lease_loop(const std::atomic<bool>& stop);
    void release_lease();
    void reconcile();
    /// Rebuilds store_ from every entry (an object added or deleted, a list): the walk
    /// reconcile() avoids for in-place changes. Thread: the run() thread, holding mu_.
    void reassemble_locked(StoreDelta& delta);
    /// Moves the one object of `one` to index `pos` of vector `slot` of store_, keeping
    /// its sequence, and notes the change in `delta`. Thread: the run() thread, holding mu_.
    void move_model(Store& one, int slot, size_t pos, StoreDelta& delta);
    void write_statuses();
    bool patch_status(Resource& r, const std::string& key, const nlohmann::json& patch,
                      const std::string& rv, const std::string& obj_path);
    void mark(bool compile);
    [[nodiscard]] Resource* resource(const std::string& kind) const;
    /// Secrets/ConfigMaps named by our GatewayClasses' and Gateways' and by all
    /// ListenerSets' and BackendTLSPolicies' reference fields -> refs_. Caller holds mu_.
    void collect_refs_locked();
    /// Notes that object `key` of `r` got a new model (spec change) or that the set of
    /// objects changed (`structural`: added, deleted, a list, a GatewayClass), for
    /// reconcile(). Caller holds mu_.
    void store_changed_locked(Resource& r, const std::string& key, bool structural);
    [[nodiscard]] bool referenced_locked(const Resource& r, const std::string& key) const;
    /// Brings the kept Secrets/ConfigMaps in line with refs_: drops the data of those no
    /// longer referenced, reads (GET) those newly referenced. Thread: the run() thread.
    void sync_referenced();
    /// Validates an object the server sent (alone, as the loader would, into `model`). On
    /// errors: logs
    /// them, records them in r.rejected and returns them; the caller keeps the previous
    /// version. Thread: a watch thread; takes mu_.
    std::vector<Diagnostic> admit(Resource& r, const std::string& key, const nlohmann::json& obj,
                                  Store& model);
    bool sleep_for(int ms, const std::atomic<bool>& stop);

    KubeClient& client_;
    Controller& ctl_;
    K8sSourceOptions opts_;
    std::vector<std::unique_ptr<Resource>> resources_;

    std::mutex mu_; ///< guards every Resource's objects/rv/state and the flags below
    std::condition_variable cv_;
    bool compile_dirty_ = false; ///< an object's spec/data changed: recompile
    bool status_dirty_ = false;  ///< only status changed, or leadership: re-check status
    uint64_t dirty_seq_ = 0;     ///< counts the changes flagged (the debounce's quiet test)
    void dirty_locked(bool compile, bool status) {
        compile_dirty_ |= compile;
        status_dirty_ |= status;
        dirty_seq_ += compile || status ? 1 : 0;
    }
    std::atomic<bool> leader_{false};
    /// The Store compiled by reconcile(), kept assembled between compiles (run thread), and
    /// which entry each of its objects came from, in order.
    Store store_;
    struct Assembled {
        Resource* r;
        std::string key;
        int slot; ///< which vector of the Store
    };
    std::vector<Assembled> assembled_;
    /// kind + "/" + "ns/name" -> (vector of the Store, index in it) of each assembled object
    /// (run thread; rebuilt with assembled_).
    std::unordered_map<std::string, std::pair<int, size_t>> assembled_at_;
    /// Entries given a new model since the last reconcile() (their place in store_ is
    /// known: replaced in place, no walk over every object), and whether the set of
    /// objects changed (store_ re-assembled from every entry). Guarded by mu_.
    std::vector<std::pair<Resource*, std::string>> store_changed_;
    bool store_rebuild_ = true;
    /// Object (key hash) -> fingerprint of our status found in place (write_statuses; run
    /// thread).
    std::unordered_map<uint64_t, uint64_t> status_fp_;
    /// What write_statuses() looks at (mu_): (kind, "ns/name") -> true when the watch
    /// changed the object (compare with it whatever the fingerprint says), false when
    /// only its computed status may have changed (a patch); or every status:
    /// status_all_touched_ (a relist, a new leader: compare every object) or
    /// status_all_compiled_ (a full compile: every computed status may have changed).
    std::map<std::pair<std::string, std::string>, bool> status_pending_;
    bool status_all_touched_ = true;
    bool status_all_compiled_ = true;
    uint64_t status_context_ = 0; ///< our classes and gateways at the last write (run thread)
    /// "Secret"/"ConfigMap" -> {"ns/name"} referenced (collect_refs_locked). Guarded by mu_.
    std::map<std::string, std::set<std::string>> refs_;
    /// A kind that references Secrets/ConfigMaps changed (or a read failed): sync_referenced
    /// has work. Guarded by mu_.
    bool refs_dirty_ = true;
    std::string lease_rv_;
};

/// Builds a loader Document from an API object (status and managedFields dropped). Thread: any.
[[nodiscard]] Document json_to_document(const nlohmann::json& obj, const std::string& file);

} // namespace sluice::cp
