#pragma once

/// @file
/// The file-source controller behind `sluice-controlplane --config-dir`: load the manifest
/// directory, compile, publish the IR to the dataplane, write status files. Broken input
/// (any error diagnostic) never replaces the last good configuration: the controller keeps
/// serving it and reports the errors. Thread: one owner thread (run() blocks).

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <memory>
#include <vector>

#include "compile.h"
#include "dp_link.h"
#include "yaml_doc.h"

namespace sluice::cp {

struct ControllerOptions {
    std::string config_dir;
    std::string status_dir;  ///< "" = do not write status files
    /// IR consumers: sluice-dataplane (L4) and sluice-l7 (HTTP/TLS engine) each run a
    /// dp-control socket. Programmed=True needs an ACK from every one; a listener counts as
    /// served when any consumer serves it. Empty = no dataplane (Programmed stays Pending).
    std::vector<std::string> dp_sockets;
    CompileOptions compile;
    LoadLimits limits;
    int debounce_ms = 150;
    int retry_ms = 2000; ///< retry a dataplane that did not answer
    /// true (files): any error diagnostic keeps the last good configuration.
    /// false (Kubernetes): objects with errors are dropped and reported, the rest compiles,
    /// as one bad object in a cluster must not freeze every other change.
    bool strict = true;
};

struct ReconcileResult {
    bool accepted_input = false; ///< the new input was used (no error diagnostics)
    bool changed = false;        ///< the IR differs from the last published one
    bool published = false;      ///< sent to a dataplane
    bool acked = false;          ///< the dataplane confirmed it
    size_t errors = 0, warnings = 0;
    uint64_t generation = 0; ///< IR generation in force
    uint64_t hash = 0;       ///< hash of the IR in force
    std::string message;
    /// Which statuses of the configuration now in force (current()) can differ from those
    /// of the one in force before the call: every one (a full compile, another answer of
    /// the dataplane, input refused), or only those at `statuses_changed` (indices into
    /// current()->statuses, ascending; a patch, ADR 0011). Status write-back looks at these.
    bool statuses_all = true;
    std::vector<size_t> statuses_changed;
};

/// Applies a dataplane ACK note (msg.h): listeners accepted but not served get
/// Programmed=False(Pending) with the dataplane's reason. Thread: any.
void mark_unserved(CompileOutput& out, const std::string& note);

class Controller {
public:
    explicit Controller(ControllerOptions opts);

    /// One pass: load, compile, publish, write status.
    ReconcileResult reconcile();

    /// The same pass for documents that come from elsewhere (the Kubernetes source).
    /// `diags` carries what was found while producing `docs`.
    ReconcileResult reconcile_documents(const std::vector<Document>& docs, Diagnostics diags);

    /// The same pass for objects already loaded (the Kubernetes source keeps each object's
    /// model). `store` is read (generations may be assigned) and left to the caller.
    /// With `delta` (what changed in this same Store object since the last call, which
    /// must have had a delta too), the compile may patch the configuration in force
    /// instead of compiling everything (IncrementalCompiler, ADR 0011); the caller keeps
    /// `store` alive and in place between calls.
    ReconcileResult reconcile_store(Store& store, Diagnostics diags,
                                    const StoreDelta* delta = nullptr);

    /// Full compiles and patches done by reconcile_store with a delta (tests, logs).
    [[nodiscard]] const IncrementalCompiler& incremental() const noexcept { return inc_; }

    /// Re-sends the IR in force to a dataplane that did not answer (no recompile).
    /// Looks (without blocking) for dataplanes that went away after they ACKed: such a link
    /// counts as unacknowledged again, so needs_retry() holds and the next reconcile pushes
    /// the IR in force to the dataplane once it is back (a restarted sluice-dataplane or
    /// sluice-l7 gets its configuration without a manifest change). True when one was found.
    /// Thread: the thread that reconciles.
    bool check_links();
    [[nodiscard]] bool needs_retry() const noexcept {
        return !links_.empty() && current_ && !all_acked() && nack_reason().empty();
    }

    /// Watches config_dir with inotify and reconciles on change until `stop` is set.
    /// Returns 0, or 1 when the directory cannot be watched.
    int run(const std::atomic<bool>& stop);

    /// The configuration in force (last good), if any.
    [[nodiscard]] const CompileOutput* current() const noexcept {
        return current_ ? &*current_ : nullptr;
    }

private:
    /// Sends `out`'s IR when it changed and applies the answer (apply_answer).
    void publish(CompileOutput& out, ReconcileResult& r, const std::vector<size_t>* only = nullptr);
    /// Sets the Programmed conditions of `out` from the dataplanes' last answers: of every
    /// status, or with `only` of the statuses at these indices (the others already carry
    /// this answer's).
    void apply_answer(CompileOutput& out, ReconcileResult& r,
                      const std::vector<size_t>* only = nullptr);
    /// Every dataplane ACKed the IR in force, serving every listener: the statuses in
    /// force are the compiled ones with each Programmed condition True.
    [[nodiscard]] bool clean_answer() const;
    /// Writes the status files (and diagnostics.txt): of every status, or with `only` of
    /// those at these indices (the set of files written last time must be the same).
    void write_status(const CompileOutput& out, const Diagnostics& diags, const std::string& note,
                      const std::vector<size_t>* only = nullptr);

    ControllerOptions opts_;
    std::optional<CompileOutput> current_;
    IncrementalCompiler inc_;
    std::string ir_bytes_; ///< the last IR encoded (its buffer is reused)
    bool current_from_inc_ = false; ///< current_ is inc_'s last output (patch() may apply)
    uint64_t generation_ = 0;
    uint64_t pushed_hash_ = 0;
    struct Link {
        std::unique_ptr<DpLink> link;
        bool acked = false;
        std::string nack_reason;
        std::string ack_note; ///< listeners this consumer accepted but does not serve
    };
    std::vector<Link> links_;
    [[nodiscard]] bool all_acked() const noexcept;
    [[nodiscard]] std::string nack_reason() const;
    [[nodiscard]] std::string unserved_by_all() const;
    std::vector<std::string> written_; ///< status files written last time
    bool status_files_stale_ = false;  ///< a status file write failed: write all next time
    /// File source: objects carry no metadata.generation, so it is kept here and bumped
    /// whenever an object's content changes (as the API server does for spec changes).
    std::map<ObjectKey, std::pair<uint64_t, int64_t>> generations_;
    /// Sets the generations of `store`'s objects (with a `delta`: of the objects it names);
    /// returns the map to keep if it is accepted.
    std::map<ObjectKey, std::pair<uint64_t, int64_t>> assign_generations(
        Store& store, const StoreDelta* delta = nullptr) const;
};

} // namespace sluice::cp
