#!/usr/bin/env python3
"""Bad input through the fake API server (issue 6, "Bad input"): sluice-controlplane
--kubeconfig against tests/k8s/fake_apiserver.py, its IR going to tests/k8s/fake_dataplane.py.

Faults: an invalid first list (broken JSON), objects that fail validation (a new one, and an
update of a served one), a watch event that is not JSON, a watch answered with an HTML page,
a watch stream cut mid-object, relists that get broken JSON / an HTML page / a 502 from a
proxy / a body cut half-way, an expired token (the token file is rotated and the old token
refused), and a 50,000-object list in chunks. After each: the process is alive, the log says
what happened on one line, the IR the dataplane holds and the status files are unchanged
(the last good configuration keeps serving), and the next good change still gets through
(no hang). Usage: k8s_bad_input_test.py SLUICE_CONTROLPLANE SOURCE_ROOT [--objects N]
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_apiserver as fake  # noqa: E402
from k8s_check import check, cond, failures, ours, wait, write_kubeconfig  # noqa: E402
from fake_dataplane import FakeDataplane, ir_string  # noqa: E402

CP, ROOT = sys.argv[1], sys.argv[2]
HUGE = int(sys.argv[sys.argv.index("--objects") + 1]) if "--objects" in sys.argv else 50000
S = fake.STATE


def route(name, path, backend="foo-home", ns="foo"):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"parentRefs": [{"name": "prod-web", "namespace": "default"}],
                     "hostnames": ["good.example.com"],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}}],
                                "backendRefs": [{"name": backend, "port": 8080}]}]}}


tmp = tempfile.mkdtemp(prefix="sluice-k8s-bad-")
status_dir = os.path.join(tmp, "status")
for f in sorted(glob.glob(os.path.join(ROOT, "examples/seed/*.yaml"))):
    for d in fake.load_yaml_docs(open(f).read()):
        if d:
            S.apply(d)
S.apply(route("good-route", "/good"))

srv = fake.serve(0)
port = srv.server_address[1]
dp = FakeDataplane(os.path.join(tmp, "dp.sock"))
token_file = os.path.join(tmp, "token")


def write_token(t):
    # As the kubelet does for projected volumes: the new file appears in one step.
    with open(token_file + ".new", "w") as f:
        f.write(t + "\n")
    os.rename(token_file + ".new", token_file)


write_token("token-1")
S.valid_tokens = {"token-1"}
kubeconfig = write_kubeconfig(os.path.join(tmp, "kubeconfig"),
                              f'{{server: "http://127.0.0.1:{port}"}}', "{tokenFile: token}")
log_path = os.path.join(tmp, "cp.log")
logf = open(log_path, "w")


def logtext():
    return open(log_path).read()


def alive():
    return proc.poll() is None


def status_files():
    out = {}
    for p in glob.glob(os.path.join(status_dir, "**", "*.yaml"), recursive=True):
        out[os.path.relpath(p, status_dir)] = open(p).read()
    return out


def snapshot():
    last = dp.last()
    return {"frames": dp.count(), "ir": last and last[2], "files": status_files(),
            "writes": len(S.status_writes)}


def same_config(snap, what):
    """The dataplane holds the same IR, the status files and the API statuses are unchanged."""
    last = dp.last()
    check(alive(), what + ": the controlplane is alive")
    check(last is not None and last[2] == snap["ir"],
          what + ": the dataplane's IR is unchanged (%d frame(s) since)" % (dp.count() - snap["frames"]))
    check(status_files() == snap["files"], what + ": the status files are unchanged")
    check(len(S.status_writes) == snap["writes"],
          what + ": no status written to the API (%d)" % (len(S.status_writes) - snap["writes"]))


def gets_through(path, what, timeout=15):
    """Changes good-route's path; the dataplane must get an IR holding it."""
    start = dp.count()
    S.apply(route("good-route", path))  # a whole valid spec (the status is kept)
    t0 = time.monotonic()
    fr = dp.wait_for(lambda p: ir_string(path) in p, timeout, start)
    check(fr is not None, "%s: the next change reaches the dataplane (%.2fs)" %
          (what, (fr[0] - t0) if fr else timeout))


def rss_kb(field):
    try:
        for line in open("/proc/%d/status" % proc.pid):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


proc = None
try:
    # ------------------------------------------------------------ the first list is broken
    S.list_faults["httproutes"] = ["badjson"]
    proc = subprocess.Popen([CP, "--kubeconfig", kubeconfig, "--status-dir", status_dir,
                             "--dp-socket", dp.path, "--no-leader-election",
                             "--watch-timeout", "30"], stdout=logf, stderr=subprocess.STDOUT)
    ok = wait(lambda: dp.wait_for(lambda p: ir_string("/good") in p, 0) and
              cond(ours(S.get("HTTPRoute", "foo", "good-route")), "Accepted"), 20)
    check(bool(ok), "initial sync after a broken first list: IR acked, routes get status")
    check("HTTPRoute: list: invalid JSON" in logtext() and
          "retrying, the last good objects stay" in logtext(),
          "a list with invalid JSON is logged on one line and retried")
    gw = wait(lambda: (S.get("Gateway", "default", "prod-web").get("status") or {})
              .get("conditions"))
    check(gw and any(c["type"] == "Programmed" and c["status"] == "True" for c in gw),
          "the Gateway is Programmed (the fake dataplane ACKed)")
    time.sleep(1.0)  # let status writes settle

    # ------------------------------------------------------------ objects that fail validation
    snap = snapshot()
    bad = route("bad-new", "/bad-new")
    bad["spec"]["rules"] = "not-a-list"
    S.apply(bad)
    upd = S.get("HTTPRoute", "foo", "good-route")
    upd.pop("status", None)
    upd["spec"]["rules"][0]["backendRefs"] = {"name": "foo-home", "port": "eighty"}
    S.apply(upd)
    check(wait(lambda: "HTTPRoute foo/bad-new (resourceVersion" in logtext() and
               "HTTPRoute foo/good-route (resourceVersion" in logtext()),
          "invalid objects are logged")
    lines = [l for l in logtext().splitlines() if "fails validation" in l]
    for l in lines:
        print("     log: " + l[:200])
    check(any("bad-new" in l and "spec.rules: must be a list" in l and "not used until it is fixed" in l
              for l in lines), "a new invalid route: the field, the reason, not used")
    check(any("good-route" in l and "backendRefs" in l and "last valid version" in l and
              "stays in force" in l for l in lines),
          "an invalid update of a served route: its last valid version stays in force")
    diag = os.path.join(status_dir, "diagnostics.txt")
    def diag_text():
        # The controlplane removes the file once nothing is refused: gone is empty (it can
        # go between an exists() and the open, as a CI run saw).
        try:
            return open(diag).read()
        except FileNotFoundError:
            return ""
    check(wait(lambda: "bad-new" in diag_text() and "good-route" in diag_text()),
          "diagnostics.txt lists both")
    time.sleep(0.8)
    same_config(snap, "invalid objects")
    e = ours(S.get("HTTPRoute", "foo", "good-route"))
    check(cond(e, "Accepted")["status"] == "True" and cond(e, "Accepted")["observedGeneration"] == 1,
          "good-route keeps Accepted=True at observedGeneration 1 (generation 2 not taken)")
    check(S.get("HTTPRoute", "foo", "bad-new").get("status") is None,
          "the invalid new route gets no status from sluice")
    S.delete("HTTPRoute", "foo", "bad-new")
    gets_through("/good-fixed", "invalid objects")
    check(wait(lambda: "bad-new" not in diag_text() and "good-route" not in diag_text()),
          "fixed/deleted objects leave diagnostics.txt")

    # ------------------------------------------------------------ a watch event that is not JSON
    time.sleep(0.5)
    snap = snapshot()
    S.watch_faults["httproutes"] = ["badjson"]
    S.drop_watches()
    check(wait(lambda: "HTTPRoute: watch: invalid JSON event" in logtext()),
          "an invalid JSON watch event is logged")
    time.sleep(0.5)
    same_config(snap, "invalid JSON event")
    gets_through("/after-bad-event", "invalid JSON event")

    # ------------------------------------------------------------ a watch answered with HTML
    time.sleep(0.5)
    snap = snapshot()
    S.watch_faults["httproutes"] = ["html"]
    S.drop_watches()
    check(wait(lambda: "HTTPRoute: watch: unexpected Content-Type 'text/html'" in logtext()),
          "a watch answered with text/html: a clear error")
    time.sleep(0.5)
    same_config(snap, "HTML watch answer")
    gets_through("/after-html-watch", "HTML watch answer")

    # ------------------------------------------------------------ a watch cut mid-object
    time.sleep(0.5)
    snap = snapshot()
    def cuts():
        return sum(1 for l in logtext().splitlines()
                   if "HTTPRoute: watch" in l and "stream cut mid-event" in l)
    n_cut = cuts()
    S.watch_faults["httproutes"] = ["cut"]
    S.drop_watches()  # this cut, then the fault's on the next watch
    check(wait(lambda: cuts() >= n_cut + 2), "a watch cut mid-object is logged as such")
    time.sleep(0.5)
    same_config(snap, "watch cut mid-object")
    gets_through("/after-cut", "watch cut mid-object")

    # ------------------------------------------------------------ broken relists
    time.sleep(0.5)
    snap = snapshot()
    S.list_faults["httproutes"] = ["badjson", "html", "html502", "cut"]
    S.compact()  # every watch gets 410: relist
    check(wait(lambda: not S.list_faults["httproutes"] and
               "HTTPRoute: listed" in logtext().split("HTTPRoute: watch expired")[-1], 20),
          "relists that fail four times in a row end in a good list")
    tail = logtext().split("HTTPRoute: watch expired")[-1]
    check("list: invalid JSON" in tail, "relist with invalid JSON: logged")
    check("list: unexpected Content-Type 'text/html'" in tail and "502 Bad Gateway" in tail,
          "relist answered 200 text/html: logged with the page's text")
    check("list: HTTP 502 (text/html)" in tail, "relist answered 502 text/html: logged")
    check("partial file" in tail or "transfer closed" in tail, "relist body cut half-way: logged")
    time.sleep(0.5)
    same_config(snap, "broken relists")
    gets_through("/after-relist", "broken relists")

    # ------------------------------------------------------------ expired token
    time.sleep(0.5)
    unauth = S.unauthorized
    write_token("token-2")
    S.valid_tokens = {"token-2"}  # the old token is refused from now on
    S.drop_watches()
    check(wait(lambda: S.unauthorized > unauth and "HTTP 401 Unauthorized" in logtext() and
               "token file" in logtext() and "changed: using the new token" in logtext()),
          "an expired token: 401 logged, the token file re-read")
    gets_through("/after-token", "expired token")
    e = wait(lambda: (lambda x: x if x and cond(x, "Accepted")["observedGeneration"] ==
                      S.get("HTTPRoute", "foo", "good-route")["metadata"]["generation"] else None)(
        ours(S.get("HTTPRoute", "foo", "good-route"))))
    check(bool(e), "status writes work with the new token")

    # ------------------------------------------------------------ a huge list
    time.sleep(0.5)
    snap = snapshot()
    objs = []
    for i in range(HUGE):
        objs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "svc-%05d" % i, "namespace": "bulk",
                                  "labels": {"app": "bulk", "n": str(i)}},
                     "spec": {"selector": {"app": "bulk-%d" % i},
                              "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    S.bulk_load(objs)
    del objs
    rss0 = rss_kb("VmRSS")
    n_listed = logtext().count("Service: listed")
    t0 = time.time()
    S.compact()  # relist everything, Services in pages of 500
    listed = wait(lambda: logtext().count("Service: listed") > n_listed, 120)
    t_list = time.time() - t0
    after = logtext().split("Service: listed")[-1]
    check(bool(listed) and (" %d object(s)" % (HUGE + 5)) in after.splitlines()[0],
          "a list of %d Services in chunks is read (%.1fs)" % (HUGE, t_list))
    # The next reconcile compiles with them: the generation line after the list.
    done = wait(lambda: "sluice-controlplane: generation" in logtext().split("Service: listed")[-1],
                120)
    t_sync = time.time() - t0
    hwm = rss_kb("VmHWM")
    print("     huge list: %d Services listed in %.1fs, compiled in %.1fs; RSS %d MB before, "
          "peak %d MB, now %d MB" % (HUGE, t_list, t_sync, rss0 // 1024, hwm // 1024,
                                     rss_kb("VmRSS") // 1024), flush=True)
    check(bool(done) and "(unchanged)" in logtext().split("Service: listed")[-1],
          "the controlplane compiles with them (unused Services: IR unchanged)")
    check(hwm < 1024 * 1024, "peak RSS under 1 GiB (%d MB)" % (hwm // 1024))
    same_config(snap, "huge list")
    gets_through("/after-huge-list", "huge list", timeout=30)

    # ------------------------------------------------------------ no crash, clean exit
    check("terminate called" not in logtext() and "Assertion" not in logtext(),
          "no abort in the log")
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(10)
    except subprocess.TimeoutExpired:
        rc = None
    check(rc == 0, "SIGTERM: clean exit within 10 s (rc %s)" % rc)
finally:
    if proc and proc.poll() is None:
        proc.kill()
        proc.wait()
    dp.close()
    if failures:
        print("---- controlplane log (tail)")
        print(logtext()[-6000:])

print("%d failure(s)" % len(failures))
if not failures:
    shutil.rmtree(tmp, ignore_errors=True)
else:
    print("kept", tmp)
sys.exit(1 if failures else 0)
