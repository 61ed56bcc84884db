#include "controller.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "ir_codec.h"
#include "loader.h"

namespace sluice::cp {

namespace fs = std::filesystem;

Controller::Controller(ControllerOptions opts)
    : opts_(std::move(opts)) {
    for (const std::string& path : opts_.dp_sockets) {
        links_.push_back(Link{std::make_unique<DpLink>(path), false, {}, {}});
    }
}

bool Controller::all_acked() const noexcept {
    for (const Link& l : links_) {
        if (!l.acked) {
            return false;
        }
    }
    return !links_.empty();
}

std::string Controller::nack_reason() const {
    for (const Link& l : links_) {
        if (!l.nack_reason.empty()) {
            return l.nack_reason;
        }
    }
    return {};
}

namespace {

/// Writes `content` to `path` atomically, and only when it differs. False when it could
/// not be written.
bool write_if_changed(const fs::path& path, const std::string& content) {
    std::error_code ec;
    {
        std::ifstream in(path, std::ios::binary);
        if (in) {
            std::string old((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
            if (old == content) {
                return true;
            }
        }
    }
    fs::create_directories(path.parent_path(), ec);
    const fs::path tmp = path.string() + ".tmp";
    bool ok = false;
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << content;
        out.flush();
        ok = static_cast<bool>(out);
    }
    fs::rename(tmp, path, ec);
    return ok && !ec;
}

std::string status_file(const ObjectKey& k) {
    return k.kind + "/" + (k.ns.empty() ? "" : k.ns + "/") + k.name + ".yaml";
}

void log(const std::string& msg) {
    // Control path: one line per reconcile, to stderr (journald / kubectl logs).
    std::cerr << "sluice-controlplane: " << msg << std::endl;
}

} // namespace

void Controller::publish(CompileOutput& out, ReconcileResult& r, const std::vector<size_t>* only) {
    ir::encode_into(out.ir, ir_bytes_);
    const std::string& bytes = ir_bytes_;
    r.hash = ir::body_hash(bytes); // (equal bodies, equal bytes: no second pass over them)
    r.changed = r.hash != pushed_hash_ || generation_ == 0;
    if (r.changed) {
        ++generation_;
        pushed_hash_ = r.hash;
        for (Link& l : links_) {
            l.acked = false;
            l.nack_reason.clear();
        }
    }
    r.generation = generation_;
    if (links_.empty()) {
        return; // no dataplane configured: Programmed stays Pending
    }
    for (size_t i = 0; i < links_.size(); ++i) {
        Link& l = links_[i];
        if (l.acked || !l.nack_reason.empty()) {
            continue;
        }
        auto res = l.link->push(generation_, bytes);
        r.published = true;
        if (!res) {
            r.message = "dataplane " + opts_.dp_sockets[i] + ": " + res.error().message +
                        " (Programmed stays Pending)";
        } else if (res->acked) {
            l.acked = true;
            l.ack_note = res->reason;
        } else {
            l.nack_reason = res->reason.empty() ? "no reason given" : res->reason;
        }
    }
    apply_answer(out, r, only);
}

bool Controller::check_links() {
    bool lost = false;
    for (size_t i = 0; i < links_.size(); ++i) {
        Link& l = links_[i];
        if (l.link->peer_gone()) {
            if (l.acked) {
                log("dataplane " + opts_.dp_sockets[i] +
                    " went away: the IR in force is sent again once it is back");
            }
            l.acked = false;
            l.nack_reason.clear();
            lost = true;
        }
    }
    return lost;
}

bool Controller::clean_answer() const {
    return all_acked() && nack_reason().empty() && unserved_by_all().empty();
}

void Controller::apply_answer(CompileOutput& out, ReconcileResult& r,
                              const std::vector<size_t>* only) {
    auto programmed = [&](bool acked, const std::string& why) {
        if (!only) {
            set_programmed(out, acked, why);
            return;
        }
        for (size_t i : *only) {
            if (i < out.statuses.size()) {
                set_programmed(out.statuses[i], acked, why);
            }
        }
    };
    const std::string nack = nack_reason();
    if (!nack.empty()) {
        programmed(false, nack);
        r.message = "dataplane refused generation " + std::to_string(generation_) + ": " + nack;
    } else if (all_acked()) {
        programmed(true, "");
        mark_unserved(out, unserved_by_all());
        r.acked = true;
    }
}

namespace {

struct NoteLine {
    std::string id;   ///< ns/gateway/listener
    std::string why;  ///< the consumer's reason
    std::string line; ///< as received
};

/// The lines of an ACK note (msg.h): "ns/gateway/listener<TAB>reason" each.
std::vector<NoteLine> note_lines(const std::string& note) {
    std::vector<NoteLine> out;
    size_t pos = 0;
    while (pos < note.size()) {
        size_t end = note.find('\n', pos);
        if (end == std::string::npos) {
            end = note.size();
        }
        std::string line = note.substr(pos, end - pos);
        pos = end + 1;
        const size_t tab = line.find('\t');
        NoteLine n{line.substr(0, tab), tab == std::string::npos ? "" : line.substr(tab + 1), line};
        out.push_back(std::move(n));
    }
    return out;
}

} // namespace

std::string Controller::unserved_by_all() const {
    // A listener is unserved when no consumer serves it: keep the lines of the first
    // consumer's note whose listener id every other note also lists.
    if (links_.empty()) {
        return {};
    }
    std::string result;
    for (const auto& [id, why, line] : note_lines(links_[0].ack_note)) {
        bool everywhere = true;
        for (size_t i = 1; i < links_.size() && everywhere; ++i) {
            bool found = false;
            for (const NoteLine& other : note_lines(links_[i].ack_note)) {
                found = found || other.id == id;
            }
            everywhere = found;
        }
        if (everywhere) {
            result += line + "\n";
        }
    }
    return result;
}

void mark_unserved(CompileOutput& out, const std::string& note) {
    // "ns/gateway/listener<TAB>reason" per line: Programmed=False(Pending) for those.
    for (const auto& [id, why, line] : note_lines(note)) {
        const size_t a = id.find('/'), b = id.rfind('/');
        if (a == std::string::npos || a == b) {
            continue;
        }
        ObjectStatus* st = out.find({"Gateway", id.substr(0, a), id.substr(a + 1, b - a - 1)});
        if (!st) {
            continue;
        }
        for (ListenerStatus& l : st->listeners) {
            if (l.name != id.substr(b + 1)) {
                continue;
            }
            for (Condition& c : l.conditions) {
                if (c.type == "Programmed" && c.status == "True") {
                    c.status = "False";
                    c.reason = "Pending";
                    c.message = why.empty() ? "the dataplane does not serve this listener" : why;
                }
            }
        }
    }
}

std::map<ObjectKey, std::pair<uint64_t, int64_t>> Controller::assign_generations(
    Store& store, const StoreDelta* delta) const {
    std::map<ObjectKey, std::pair<uint64_t, int64_t>> next;
    auto one = [&](const std::string& kind, Meta& m) {
        if (m.generation_given) {
            return; // the API server's generation is authoritative
        }
        const ObjectKey key{kind, m.ns, m.name};
        int64_t gen = 1;
        if (auto it = generations_.find(key); it != generations_.end()) {
            gen = it->second.first == m.spec_hash ? it->second.second : it->second.second + 1;
        }
        m.generation = gen;
        next[key] = {m.spec_hash, gen};
    };
    if (delta && !delta->other && current_from_inc_) {
        // Only these routes changed (the slices carry no generation): the others keep
        // theirs. (Objects from the API server bring their own, and the map stays empty.)
        next = generations_;
        for (size_t i : delta->routes) {
            if (i < store.routes.size()) {
                one(route_kind_name(store.routes[i].kind), store.routes[i].meta);
            }
        }
        return next;
    }
    for (auto& o : store.classes) one("GatewayClass", o.meta);
    for (auto& o : store.gateways) one("Gateway", o.meta);
    for (auto& o : store.listener_sets) one("ListenerSet", o.meta);
    for (auto& o : store.routes) one(route_kind_name(o.kind), o.meta);
    for (auto& o : store.grants) one("ReferenceGrant", o.meta);
    for (auto& o : store.tls_policies) one("BackendTLSPolicy", o.meta);
    return next;
}

ReconcileResult Controller::reconcile() {
    Diagnostics diags;
    std::vector<Document> docs = load_path(opts_.config_dir, opts_.limits, diags);
    return reconcile_documents(docs, std::move(diags));
}

ReconcileResult Controller::reconcile_documents(const std::vector<Document>& docs,
                                                Diagnostics diags) {
    Store store;
    LoadOptions lo;
    lo.controller_name = opts_.compile.controller_name;
    load_documents(docs, lo, store, diags);
    return reconcile_store(store, std::move(diags));
}

ReconcileResult Controller::reconcile_store(Store& store, Diagnostics diags,
                                            const StoreDelta* delta) {
    ReconcileResult r;
    auto generations = assign_generations(store, delta);
    r.errors = diags.errors();
    r.warnings = diags.size() - r.errors;
    if (r.errors > 0 && opts_.strict) {
        r.message = std::to_string(r.errors) +
                    " error(s) in the configuration; keeping the last good configuration";
        if (current_) {
            r.generation = generation_;
            r.hash = pushed_hash_;
            r.acked = all_acked();
        }
        current_from_inc_ = false; // the next delta does not start from current_
        inc_.reset();
        write_status(current_ ? *current_ : CompileOutput{}, diags, r.message);
        for (const Diagnostic& d : diags.items()) {
            log(d.str());
        }
        log(r.message);
        return r;
    }
    r.accepted_input = true;
    generations_ = std::move(generations); // the generations of the configuration in force
    // A patch starts from the configuration in force, whose Programmed conditions were set
    // by the last answer: only when that answer was a clean ACK are they what a compile
    // plus set_programmed(true) gives (patches never touch a Programmed condition).
    bool patched = false;
    if (delta && current_ && current_from_inc_ && clean_answer()) {
        patched = inc_.patch(store, *delta, *current_);
    }
    if (patched) {
        // The answer before was clean: only the statuses the patch replaced can be without
        // their Programmed conditions (if this answer is not clean, a full compile follows).
        publish(*current_, r, &inc_.patched_statuses());
        if (!clean_answer()) {
            // Programmed depends on this answer: take the statuses from a full compile.
            CompileOutput out = inc_.compile(store, opts_.compile);
            if (!links_.empty()) {
                apply_answer(out, r);
            }
            current_ = std::move(out);
        } else {
            // Clean before and after: the Programmed conditions are as they were, and only
            // the statuses the patch replaced can differ.
            r.statuses_all = false;
            r.statuses_changed = inc_.patched_statuses();
        }
    } else {
        CompileOutput out = delta ? inc_.compile(store, opts_.compile) : compile(store, opts_.compile);
        if (!delta) {
            inc_.reset();
        }
        publish(out, r);
        current_ = std::move(out);
    }
    current_from_inc_ = delta != nullptr;
    write_status(*current_, diags, r.message, r.statuses_all ? nullptr : &r.statuses_changed);
    for (const Diagnostic& d : diags.items()) {
        log(d.str());
    }
    std::ostringstream m;
    m << "generation " << r.generation << (r.changed ? " (new)" : " (unchanged)") << ": "
      << current_->ir.gateways.size() << " gateway(s), " << current_->ir.listeners.size()
      << " listener(s), " << current_->statuses.size() << " object status(es)"
      << (r.acked ? ", programmed" : links_.empty() ? ", no dataplane configured" : "")
      << (patched ? " (patched)" : "")
      << (r.message.empty() ? "" : "; " + r.message);
    log(m.str());
    return r;
}

void Controller::write_status(const CompileOutput& out, const Diagnostics& diags,
                              const std::string& note, const std::vector<size_t>* only) {
    if (opts_.status_dir.empty()) {
        return;
    }
    const fs::path dir = opts_.status_dir;
    std::error_code ec;
    bool ok = true;
    if (only && !status_files_stale_) {
        // A patch: the same objects as last time, and only these statuses can differ (a
        // change costs the files of the objects it touched, not one read per object).
        for (size_t i : *only) {
            if (i < out.statuses.size()) {
                const ObjectStatus& st = out.statuses[i];
                ok &= write_if_changed(dir / status_file(st.key), status_yaml(st));
            }
        }
    } else {
        std::vector<std::string> now;
        for (const ObjectStatus& st : out.statuses) {
            const std::string rel = status_file(st.key);
            ok &= write_if_changed(dir / rel, status_yaml(st));
            now.push_back(rel);
        }
        std::set<std::string> keep(now.begin(), now.end());
        for (const std::string& old : written_) {
            if (!keep.count(old)) {
                fs::remove(dir / old, ec);
            }
        }
        written_ = std::move(now);
    }
    status_files_stale_ = !ok; // a failed write is retried with all of them next time
    std::string diag_text;
    for (const Diagnostic& d : diags.items()) {
        diag_text += d.str() + "\n";
    }
    if (!note.empty()) {
        diag_text += note + "\n";
    }
    if (diag_text.empty()) {
        fs::remove(dir / "diagnostics.txt", ec);
    } else {
        write_if_changed(dir / "diagnostics.txt", diag_text);
    }
}

int Controller::run(const std::atomic<bool>& stop) {
    const int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (in < 0) {
        log(std::string("inotify_init1: ") + strerror(errno));
        return 1;
    }
    constexpr uint32_t kMask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                               IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ATTRIB;
    auto watch_all = [&]() {
        std::error_code ec;
        if (inotify_add_watch(in, opts_.config_dir.c_str(), kMask) < 0) {
            return false;
        }
        for (fs::recursive_directory_iterator it(opts_.config_dir, ec), end; it != end;
             it.increment(ec)) {
            if (ec) {
                break;
            }
            if (it->is_directory()) {
                inotify_add_watch(in, it->path().c_str(), kMask);
            }
        }
        return true;
    };
    if (!watch_all()) {
        log("cannot watch " + opts_.config_dir + ": " + strerror(errno));
        ::close(in);
        return 1;
    }
    ReconcileResult last = reconcile();
    using Clock = std::chrono::steady_clock;
    auto pending_since = Clock::time_point::max();
    auto last_try = Clock::now();
    char buf[64 * 1024];
    while (!stop.load(std::memory_order_relaxed)) {
        pollfd p{in, POLLIN, 0};
        const int r = poll(&p, 1, 200);
        if (r > 0) {
            bool new_dir = false;
            for (;;) {
                const ssize_t n = ::read(in, buf, sizeof buf);
                if (n <= 0) {
                    break;
                }
                for (ssize_t off = 0; off < n;) {
                    const auto* ev = reinterpret_cast<const inotify_event*>(buf + off);
                    new_dir |= (ev->mask & IN_ISDIR) && (ev->mask & (IN_CREATE | IN_MOVED_TO));
                    off += static_cast<ssize_t>(sizeof(inotify_event) + ev->len);
                }
            }
            if (new_dir) {
                watch_all();
            }
            if (pending_since == Clock::time_point::max()) {
                pending_since = Clock::now();
            }
        }
        const auto now = Clock::now();
        if (check_links()) {
            last.acked = false; // retried every retry_ms until the dataplane is back
            last_try = now - std::chrono::milliseconds(opts_.retry_ms);
        }
        const bool due = pending_since != Clock::time_point::max() &&
                         now - pending_since >= std::chrono::milliseconds(opts_.debounce_ms);
        const bool retry = !links_.empty() && last.accepted_input && !last.acked &&
                           now - last_try >= std::chrono::milliseconds(opts_.retry_ms);
        if (due || retry) {
            pending_since = Clock::time_point::max();
            last_try = now;
            last = reconcile();
        }
    }
    ::close(in);
    return 0;
}

} // namespace sluice::cp
