#!/usr/bin/env python3
"""Drives sluice-controlplane --kubeconfig against tests/k8s/fake_apiserver.py (issue 6).

Covers: initial sync of examples/seed/*.yaml with chunked lists, status write-back
(Accepted/ResolvedRefs, observedGeneration), another controller's parent entry left alone,
no rewrite when nothing changed, an update, a delete, a status patch conflict (409), a watch
that expires (410 -> relist, no status flap), a server that cuts the watch mid-event, watches
resumed from a bookmark's resourceVersion after the history before it is forgotten, a
missing CRD, Secrets and ConfigMaps kept only when referenced (big unreferenced ones are
dropped; a Secret referenced later is read and used), and leader election with two replicas
(kill the leader -> the standby takes over within the lease duration).
Usage: k8s_source_test.py SLUICE_CONTROLPLANE SOURCE_ROOT
"""

import base64
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

CP, ROOT = sys.argv[1], sys.argv[2]
LEASE_S = 2
S = fake.STATE


tmp = tempfile.mkdtemp(prefix="sluice-k8s-")
for f in sorted(glob.glob(os.path.join(ROOT, "examples/seed/*.yaml"))):
    for d in fake.load_yaml_docs(open(f).read()):
        if d:
            S.apply(d)
# Another controller already reports on foo-route (a parent it owns).
other = {"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                       "name": "other-gw", "namespace": "foo"},
         "controllerName": "example.com/other",
         "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                         "message": "", "observedGeneration": 1,
                         "lastTransitionTime": "2020-01-01T00:00:00Z"}]}
fr = S.get("HTTPRoute", "foo", "foo-route")
fr["status"] = {"parents": [other]}
S.objects["httproutes"][("foo", "foo-route")] = fr
S.hide.add("tlsroutes")  # an older cluster without the TLSRoute CRD
# Secrets and ConfigMaps nothing references, with big payloads: not to be kept. late-cert
# (the seed's certificate under another name) becomes referenced later.
BIG = 8 << 20
for i in range(3):
    S.apply({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
             "metadata": {"name": "unused-%d" % i, "namespace": "default"},
             "data": {"blob": base64.b64encode(os.urandom(BIG)).decode()}})
S.apply({"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "unused-cm", "namespace": "default"},
         "data": {"blob": "x" * BIG}})
late = S.get("Secret", "default", "admin-controlled-cert")
late["metadata"] = {"name": "late-cert", "namespace": "default"}
S.apply(late)

srv = fake.serve(0)
port = srv.server_address[1]
# The user's credential comes from an exec plugin (client.authentication.k8s.io): each run
# hands out the next token; the server accepts only the current one.
plugin = os.path.join(tmp, "cred-plugin.sh")
with open(plugin, "w") as f:
    f.write("""#!/bin/sh
n=$(cat "$CRED_DIR/n" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$CRED_DIR/n"
case "$KUBERNETES_EXEC_INFO" in *ExecCredential*) ;; *) exit 3 ;; esac
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
printf '"status":{"token":"exec-token-%s","expirationTimestamp":"2099-01-01T00:00:00Z"}}' $n
""")
os.chmod(plugin, 0o755)
S.valid_tokens = {"exec-token-1"}
kubeconfig = write_kubeconfig(os.path.join(tmp, "kubeconfig"),
                              f'{{server: "http://127.0.0.1:{port}"}}', f"""
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./cred-plugin.sh
      env: [{{name: CRED_DIR, value: "{tmp}"}}]
      interactiveMode: Never""")

procs = {}


def start(ident):
    log = open(os.path.join(tmp, ident + ".log"), "w")
    p = subprocess.Popen([CP, "--kubeconfig", kubeconfig, "--status-dir", "", "--identity", ident,
                          "--lease-duration", str(LEASE_S), "--list-limit", "2",
                          "--watch-timeout", "5"], stdout=log, stderr=subprocess.STDOUT)
    procs[ident] = p
    return p


def logtext(ident):
    return open(os.path.join(tmp, ident + ".log")).read()


def rss_mb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def holder():
    le = S.objects.get("leases", {}).get(("sluice-system", "sluice-controlplane"))
    return le and le["spec"].get("holderIdentity")


try:
    # ------------------------------------------------------------ initial sync
    start("a")
    t0 = time.time()
    ok = wait(lambda: cond(ours(S.get("HTTPRoute", "bar", "bar-route")), "ResolvedRefs") and
              cond(ours(S.get("HTTPRoute", "foo", "foo-route")), "Accepted"), 15)
    check(bool(ok), "initial sync: routes get status within %.1fs" % (time.time() - t0))
    for ns, name in (("foo", "foo-route"), ("bar", "bar-route")):
        e = ours(S.get("HTTPRoute", ns, name))
        check(cond(e, "Accepted") and cond(e, "Accepted")["status"] == "True" and
              cond(e, "ResolvedRefs")["status"] == "True" and
              cond(e, "Accepted")["observedGeneration"] == 1 and
              cond(e, "Accepted").get("lastTransitionTime"),
              f"HTTPRoute {ns}/{name}: Accepted=True ResolvedRefs=True observedGeneration=1")
    gc = S.get("GatewayClass", "", "acme-lb")
    check(any(c["type"] == "Accepted" and c["status"] == "True"
              for c in gc.get("status", {}).get("conditions", [])) and
          gc["status"].get("supportedFeatures"),
          "GatewayClass acme-lb: Accepted=True with supportedFeatures")
    gw = wait(lambda: S.get("Gateway", "default", "prod-web").get("status"))
    check(gw and gw["listeners"][0]["attachedRoutes"] == 2, "Gateway prod-web: 2 attached routes")
    fr = S.get("HTTPRoute", "foo", "foo-route")
    check(other in fr["status"]["parents"] and len(fr["status"]["parents"]) == 2,
          "another controller's parent entry is left untouched")
    check(any("continue=" in p for m, p in S.requests if m == "GET"),
          "lists are chunked (limit/continue)")
    check("TLSRoute: not served" in logtext("a"), "a missing CRD (TLSRoute) is tolerated and reported")
    check("Secret: listed 5 object(s) at resourceVersion" in logtext("a") and
          "1 referenced of 5 kept (the data of the others is dropped)" in logtext("a"),
          "Secrets: only the referenced one of 5 is kept (log)")
    check("ConfigMap: listed 1 object(s)" in logtext("a") and "0 referenced of 1 kept" in logtext("a"),
          "ConfigMaps: the unreferenced one is not kept (log)")
    rss = rss_mb(procs["a"].pid)
    check(rss < 3 * BIG / (1 << 20),
          "RSS %d MB: less than the %d MB of unreferenced Secret data" % (rss, 3 * BIG >> 20))
    check(wait(lambda: holder() == "a"), "replica a holds the lease")

    check(S.unauthorized == 0, "exec credential plugin: its token is accepted from the start")

    # ------------------------------------------------------------ token rotated (401)
    S.valid_tokens = {"exec-token-2"}  # the server no longer takes exec-token-1
    S.drop_watches()
    check(wait(lambda: S.unauthorized > 0 and
               any(m == "GET" for m, p in S.requests[-5:]) and
               open(os.path.join(tmp, "n")).read().strip() == "2", 10),
          "a 401 makes the controlplane run the exec plugin again (token 2)")
    n_req = len(S.requests)  # (only authorized requests are recorded)
    wait(lambda: len(S.requests) >= n_req + 16, 10)  # the watches are back, with token 2
    time.sleep(0.5)
    runs = open(os.path.join(tmp, "n")).read().strip()
    check(runs == "2", "the exec plugin ran once for the 401s of all the requests in flight "
          "with token 1 (runs: %s)" % runs)
    S.valid_tokens = {"exec-token-%d" % i for i in range(2, 50)}  # later replicas run it again

    # ------------------------------------------------------------ no rewrite when unchanged
    n = len(S.status_writes)
    time.sleep(1.5)
    check(len(S.status_writes) == n, "no status write when nothing changed (%d writes)" % n)

    # ------------------------------------------------------------ update
    br = S.get("HTTPRoute", "bar", "bar-route")
    br.pop("status", None)
    br["spec"]["rules"][0]["forwardTo"][0]["serviceName"] = "no-such-svc"
    S.apply(br)
    e = wait(lambda: (lambda x: x if cond(x, "ResolvedRefs") and
                      cond(x, "ResolvedRefs")["status"] == "False" else None)(
        ours(S.get("HTTPRoute", "bar", "bar-route"))))
    check(e and cond(e, "ResolvedRefs")["observedGeneration"] == 2,
          "update: edited route gets ResolvedRefs=False with observedGeneration 2")

    # ------------------------------------------------------------ status patch conflict
    S.force_conflicts = 1
    br = S.get("HTTPRoute", "bar", "bar-route")
    br["spec"]["rules"][0]["forwardTo"][0]["serviceName"] = "bar-v1"
    S.apply(br)
    e = wait(lambda: (lambda x: x if cond(x, "ResolvedRefs") and
                      cond(x, "ResolvedRefs")["status"] == "True" else None)(
        ours(S.get("HTTPRoute", "bar", "bar-route"))))
    check(e and "conflict (409)" in logtext("a"),
          "status patch conflict (409): re-read and written on retry")

    # ------------------------------------------------------------ delete
    S.delete("HTTPRoute", "foo", "foo-route")
    check(wait(lambda: (S.get("Gateway", "default", "prod-web").get("status", {})
                        .get("listeners", [{}])[0].get("attachedRoutes") == 1)), "delete: the Gateway's attachedRoutes drops to 1")

    # ------------------------------------------------------------ 410 Gone -> relist
    n = len(S.status_writes)
    S.compact()
    check(wait(lambda: "410 Gone" in logtext("a")), "an expired watch (410) is noticed")
    time.sleep(1.0)
    check(len(S.status_writes) == n, "relist after 410 does not flap status")
    fr = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
          "metadata": {"name": "new-route", "namespace": "foo"},
          "spec": {"parentRefs": [{"name": "prod-web", "namespace": "default"}],
                   "rules": [{"backendRefs": [{"name": "foo-home", "port": 8080}]}]}}
    S.apply(fr)
    check(wait(lambda: cond(ours(S.get("HTTPRoute", "foo", "new-route")), "Accepted")),
          "after the relist, a new route (v1) gets status")

    # ------------------------------------------------------------ connection dropped mid-watch
    S.drop_watches()
    time.sleep(0.3)
    fr = S.get("HTTPRoute", "foo", "new-route")
    fr["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing"
    fr.pop("status")
    S.apply(fr)
    e = wait(lambda: (lambda x: x if cond(x, "ResolvedRefs") and
                      cond(x, "ResolvedRefs")["status"] == "False" else None)(
        ours(S.get("HTTPRoute", "foo", "new-route"))))
    check(bool(e), "a watch cut mid-event resumes and delivers the next change")

    # ------------------------------------------------------------ bookmarks
    # Quiet kinds (no event since their list) learn the current resourceVersion only from
    # BOOKMARK events. The server then forgets the history before now and cuts the watches:
    # a watch resumed from a bookmark's resourceVersion is still valid; one resumed from the
    # last list's would get 410 and relist.
    check(all("allowWatchBookmarks=true" in p for m, p in S.requests if "watch=1" in p),
          "watches ask for bookmarks (allowWatchBookmarks=true)")
    rv0 = S.rv  # (Lease renewals move it on all the time)
    watched = {p.split("?")[0].rstrip("/").split("/")[-1] for m, p in S.requests if "watch=1" in p}
    # Every watch has been sent a bookmark at rv0 or later (a kind still relisting after the
    # 410 above, e.g. the big Secrets, would watch from its list's older resourceVersion).
    check(wait(lambda: all(S.bookmark_rv.get(p, 0) >= rv0 for p in watched), 30),
          "every watch (%d kinds) gets bookmarks" % len(watched))
    n_gone = logtext("a").count("410 Gone")
    with S.lock:
        S.compacted = rv0  # a watch from an older resourceVersion gets 410
        S.drop_gen += 1    # cut every watch: they resume
        S.lock.notify_all()
    fr = S.get("HTTPRoute", "foo", "new-route")
    fr["spec"]["rules"][0]["backendRefs"][0]["name"] = "foo-home"
    fr.pop("status")
    time.sleep(0.5)
    gen = S.apply(fr)["metadata"]["generation"]
    check(wait(lambda: (lambda c: c and c["status"] == "True" and c["observedGeneration"] == gen)(
        cond(ours(S.get("HTTPRoute", "foo", "new-route")), "ResolvedRefs"))),
          "after a cut, the watches resume and deliver the next change")
    check(logtext("a").count("410 Gone") == n_gone,
          "watches resume from their bookmarks' resourceVersion: no 410, no relist")

    # ------------------------------------------------------------ a Secret referenced later
    def listener_cond(typ):
        st = S.get("Gateway", "default", "prod-web").get("status") or {}
        return cond((st.get("listeners") or [{}])[0], typ)

    check(listener_cond("ResolvedRefs") and listener_cond("ResolvedRefs")["status"] == "True",
          "the Gateway's listener resolves admin-controlled-cert")
    gw = S.get("Gateway", "default", "prod-web")
    gw.pop("status")
    gw["spec"]["listeners"][0]["tls"]["certificateRef"]["name"] = "late-cert"
    S.apply(gw)
    check(wait(lambda: "Secret default/late-cert is now referenced: read it" in logtext("a")),
          "a Secret that becomes referenced is read (log)")
    check(wait(lambda: "Secret default/admin-controlled-cert is no longer referenced" in
               logtext("a")), "the Secret no longer referenced is dropped (log)")
    time.sleep(1.0)
    c = wait(lambda: (lambda x: x if x and x["observedGeneration"] == 2 else None)(
        listener_cond("ResolvedRefs")))
    check(c and c["status"] == "True",
          "the listener now uses late-cert: ResolvedRefs=True at generation 2 (%s)" %
          (c and c.get("reason")))
    gw = S.get("Gateway", "default", "prod-web")
    gw.pop("status")
    gw["spec"]["listeners"][0]["tls"]["certificateRef"]["name"] = "no-such-cert"
    S.apply(gw)
    c = wait(lambda: (lambda x: x if x and x["observedGeneration"] == 3 else None)(
        listener_cond("ResolvedRefs")))
    check(c and c["status"] == "False", "a missing Secret: ResolvedRefs=False (%s)" %
          (c and c.get("reason")))
    gw = S.get("Gateway", "default", "prod-web")
    gw.pop("status")
    gw["spec"]["listeners"][0]["tls"]["certificateRef"]["name"] = "admin-controlled-cert"
    S.apply(gw)
    c = wait(lambda: (lambda x: x if x and x["observedGeneration"] == 4 else None)(
        listener_cond("ResolvedRefs")))
    check(c and c["status"] == "True", "referenced again: read again and used")

    # ------------------------------------------------------------ leader election
    start("b")
    time.sleep(LEASE_S + 1)
    check(holder() == "a" and "became the leader" not in logtext("b"),
          "standby b does not take the lease while a renews it")
    fr = S.get("HTTPRoute", "foo", "new-route")
    fr["spec"]["rules"][0]["backendRefs"][0]["name"] = "foo-home"
    fr.pop("status")
    S.apply(fr)
    wait(lambda: cond(ours(S.get("HTTPRoute", "foo", "new-route")), "ResolvedRefs")["status"] == "True")
    check("status: wrote" not in logtext("b"), "only the leader writes status")
    procs["a"].send_signal(signal.SIGKILL)
    procs["a"].wait()
    t_kill = time.time()
    took = wait(lambda: holder() == "b", LEASE_S * 3)
    dt = time.time() - t_kill
    # The lease expires at most LEASE_S after a's last renewal; b notices at its next retry.
    # On a loaded 2-core machine (CI) that plus the fake server's own delays reached 3.9 s.
    check(took and dt <= 2 * LEASE_S + 0.5, "b takes over %.1fs after a dies (lease %ds)" % (dt, LEASE_S))
    fr = S.get("HTTPRoute", "foo", "new-route")
    fr["spec"]["rules"][0]["backendRefs"][0]["name"] = "gone-again"
    fr.pop("status")
    S.apply(fr)
    check(wait(lambda: cond(ours(S.get("HTTPRoute", "foo", "new-route")),
                            "ResolvedRefs")["status"] == "False"),
          "the new leader b writes status")
finally:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
    if failures:
        for ident in procs:
            print("---- log of", ident)
            print(logtext(ident)[-4000:])

print("%d failure(s)" % len(failures))
if not failures:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(1 if failures else 0)
