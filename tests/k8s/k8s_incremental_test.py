#!/usr/bin/env python3
"""Incremental == fresh, through the Kubernetes source (issue 6, ADR 0011).

Controlplane A runs against tests/k8s/fake_apiserver.py while a seeded random sequence of
watch events changes the cluster: HTTPRoute path/header/backend/weight edits (patched in
place), hostname, parent and rule-count changes, routes and EndpointSlices added and
deleted, endpoint addresses and readiness (patched), a slice moving to another Service,
Service port changes, a referenced Secret rotated, a Gateway listener changed, another
controller writing its own parent entry, and someone overwriting ours. A keeps its Store,
its compiler state and its status bookkeeping across all of it (reconcile() replaces only
the objects the watch noted; write_statuses() looks only at the statuses a patch replaced
and the objects the watch changed). At each checkpoint a fresh controlplane B starts on
the same cluster (list + full compile) and must
  - push the same IR bytes as A's last generation,
  - write the same status files (--status-dir; A writes only those a patch changed),
  - find every status A wrote to the API in place (B compares all of them: no write).
Usage: k8s_incremental_test.py SLUICE_CONTROLPLANE SOURCE_ROOT [SEED]
"""

import filecmp
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_apiserver as fake  # noqa: E402
from k8s_check import OURS, check, failures, stop, write_kubeconfig  # noqa: E402
from fake_dataplane import FakeDataplane  # noqa: E402

CP, ROOT = sys.argv[1], sys.argv[2]
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else 6
GW = "gateway.networking.k8s.io/v1"
NS = ["ns-0", "ns-1", "ns-2"]
HOSTS = ["a.example.com", "b.example.com", "*.example.com", "c.other.org", "d.example.com"]
SERVICES = 8
S = fake.STATE
rnd = random.Random(SEED)


# ---------------------------------------------------------------- the cluster


def service(s, ports=(80,)):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc-%d" % s, "namespace": NS[s % len(NS)]},
            "spec": {"ports": [{"name": "p%d" % p, "port": p, "targetPort": 8000 + p}
                               for p in ports]}}


def endpoint_slice(s, k, target=None, n=2):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "svc-%d-%d" % (s, k), "namespace": NS[s % len(NS)],
                         "labels": {"kubernetes.io/service-name": "svc-%d" % (
                             s if target is None else target)}},
            "addressType": "IPv4",
            "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"},
                      {"name": "p81", "port": 8081, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.%d.%d.%d" % (s, k, rnd.randrange(1, 250))],
                           "conditions": {"ready": rnd.random() < 0.85}} for _ in range(n)]}


class RouteState:
    """One HTTPRoute as a few parameters, so edits can keep its shape or change it."""

    def __init__(self, i):
        self.i = i
        self.ns = NS[i % len(NS)]
        self.hosts = [HOSTS[i % len(HOSTS)]] if i % 4 else []
        self.parents = [("bench-gw", None)]
        self.rules = [self.new_rule() for _ in range(1 + i % 2)]

    def new_match(self):
        m = {"path": {"type": rnd.choice(["PathPrefix", "Exact"]),
                      "value": "/r%d/%d" % (self.i, rnd.randrange(100))}}
        if rnd.random() < 0.3:
            m["headers"] = [{"name": "x-h", "value": str(rnd.randrange(5))}]
        return m

    def backend(self):
        same_ns = [s for s in range(SERVICES) if NS[s % len(NS)] == self.ns]
        b = {"name": "svc-%d" % rnd.choice(same_ns), "port": rnd.choice([80, 80, 81])}
        if rnd.random() < 0.05:
            b["name"] = "no-such-svc"
        if rnd.random() < 0.3:
            b["weight"] = rnd.randrange(1, 5)
        return b

    def new_rule(self):
        return {"matches": [self.new_match() for _ in range(rnd.randrange(1, 3))],
                "backendRefs": [self.backend() for _ in range(rnd.randrange(1, 3))]}

    def obj(self):
        spec = {"parentRefs": [], "rules": json.loads(json.dumps(self.rules))}
        for name, section in self.parents:
            ref = {"name": name, "namespace": "gw-ns"}
            if section:
                ref["sectionName"] = section
            spec["parentRefs"].append(ref)
        if self.hosts:
            spec["hostnames"] = list(self.hosts)
        return {"apiVersion": GW, "kind": "HTTPRoute",
                "metadata": {"name": "route-%d" % self.i, "namespace": self.ns}, "spec": spec}


def base_objects():
    out = [{"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "ours"},
            "spec": {"controllerName": OURS}},
           {"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "theirs"},
            "spec": {"controllerName": "example.com/other"}},
           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gw-ns"}},
           gateway(0),
           {"apiVersion": GW, "kind": "Gateway",
            "metadata": {"name": "other-gw", "namespace": "gw-ns"},
            "spec": {"gatewayClassName": "theirs",
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}]
    for ns in NS:
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    return out


def gateway(variant):
    listeners = [{"name": "http", "port": 80, "protocol": "HTTP",
                  "allowedRoutes": {"namespaces": {"from": "All"}}},
                 {"name": "sel", "port": 8080, "protocol": "HTTP",
                  "hostname": "*.example.com" if variant % 2 == 0 else "b.example.com",
                  "allowedRoutes": {"namespaces": {"from": "All"}}}]
    return {"apiVersion": GW, "kind": "Gateway",
            "metadata": {"name": "bench-gw", "namespace": "gw-ns"},
            "spec": {"gatewayClassName": "ours", "listeners": listeners}}


def tls_secret():
    # The seed's certificate (examples/seed): a referenced Secret whose rotation is a change.
    for f in sorted(os.listdir(os.path.join(ROOT, "examples/seed"))):
        for d in fake.load_yaml_docs(open(os.path.join(ROOT, "examples/seed", f)).read()):
            if d and d.get("kind") == "Secret":
                d["metadata"] = {"name": "cert", "namespace": "gw-ns"}
                return d
    return None


def other_status(obj, mode):
    """Another controller's write to a route's status (not counted as ours)."""
    with S.lock:
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        o = S.objects["httproutes"].get(key)
        if o is None:
            return
        o = json.loads(json.dumps(o))
        parents = (o.get("status") or {}).get("parents") or []
        if mode == "theirs":
            parents = [p for p in parents if p.get("controllerName") != "example.com/other"]
            parents.append({"parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                          "name": "other-gw", "namespace": "gw-ns"},
                            "controllerName": "example.com/other",
                            "conditions": [{"type": "Accepted", "status": "True",
                                            "reason": "Accepted", "message": str(rnd.random()),
                                            "observedGeneration": 1,
                                            "lastTransitionTime": "2020-01-01T00:00:00Z"}]})
        else:  # clobber: someone drops our entries
            parents = [p for p in parents if p.get("controllerName") != OURS]
        o["status"] = {"parents": parents}
        o["metadata"]["resourceVersion"] = S._next_rv()
        S.objects["httproutes"][key] = o
        S._event(S.rv, "httproutes", "MODIFIED", o)
        S.lock.notify_all()


# ---------------------------------------------------------------- the processes

tmp = tempfile.mkdtemp(prefix="sluice-k8s-inc-")
procs = []


def kubeconfig(port):
    return write_kubeconfig(os.path.join(tmp, "kubeconfig"), '{server: "http://127.0.0.1:%d"}' % port)


def start(name, kc, dp, status_dir):
    log = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen([CP, "--kubeconfig", kc, "--status-dir", status_dir, "--dp-socket",
                          dp.path, "--no-leader-election", "--list-limit", "7"],
                         stdout=log, stderr=subprocess.STDOUT)
    procs.append((name, p))
    return p


def logtext(name):
    return open(os.path.join(tmp, name + ".log")).read()


def settle(dp, quiet=1.0, timeout=30.0):
    """Waits until no IR reaches `dp` and no status write happens for `quiet` seconds."""
    end = time.time() + timeout
    last = (dp.count(), len(S.status_writes))
    since = time.time()
    while time.time() < end:
        time.sleep(0.1)
        now = (dp.count(), len(S.status_writes))
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            return True
    return False


def same_tree(a, b):
    """The files under a and b and their contents are the same: the differences, or []."""
    diffs = []
    for d, _, files in os.walk(a):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), a)
            other = os.path.join(b, rel)
            if not os.path.exists(other):
                diffs.append("only in A: " + rel)
            elif not filecmp.cmp(os.path.join(d, f), other, shallow=False):
                diffs.append("differs: " + rel)
    for d, _, files in os.walk(b):
        for f in files:
            rel = os.path.relpath(os.path.join(d, f), b)
            if not os.path.exists(os.path.join(a, rel)):
                diffs.append("only in B: " + rel)
    return diffs


try:
    routes = {i: RouteState(i) for i in range(36)}
    next_route = len(routes)
    slices = {(s, k): None for s in range(SERVICES) for k in range(2)}
    svc_ports = {s: (80, 81) for s in range(SERVICES)}
    objs = base_objects()
    sec = tls_secret()
    if sec:
        objs.append(sec)
        objs[3]["spec"]["listeners"].append(
            {"name": "https", "port": 443, "protocol": "HTTPS",
             "tls": {"certificateRefs": [{"name": "cert"}]},
             "allowedRoutes": {"namespaces": {"from": "All"}}})
    for s in range(SERVICES):
        objs.append(service(s, svc_ports[s]))
    for (s, k) in slices:
        objs.append(endpoint_slice(s, k))
    for r in routes.values():
        objs.append(r.obj())
    for o in objs:
        S.apply(o)
    gw_variant = 0

    srv = fake.serve(0)
    kc = kubeconfig(srv.server_address[1])
    dp_a = FakeDataplane(os.path.join(tmp, "dp-a.sock"))
    st_a = os.path.join(tmp, "status-a")
    a = start("a", kc, dp_a, st_a)
    check(dp_a.wait_for(lambda b: True, 30) is not None and settle(dp_a),
          "A: first sync, IR acked, statuses written")

    def edit_route(kind):
        r = routes[rnd.choice(sorted(routes))]
        if kind == "path":
            rule = rnd.choice(r.rules)
            rnd.choice(rule["matches"])["path"]["value"] = "/r%d/e%d" % (r.i, rnd.randrange(1000))
        elif kind == "header":
            m = rnd.choice(rnd.choice(r.rules)["matches"])
            m["headers"] = [{"name": "x-h", "value": str(rnd.randrange(5))}]
        elif kind == "backend":
            rule = rnd.choice(r.rules)
            rule["backendRefs"][rnd.randrange(len(rule["backendRefs"]))] = r.backend()
        elif kind == "hosts":
            r.hosts = rnd.sample(HOSTS, rnd.randrange(0, 3))
        elif kind == "parents":
            r.parents = rnd.choice([[("bench-gw", None)], [("bench-gw", "sel")],
                                    [("bench-gw", "http"), ("other-gw", None)],
                                    [("bench-gw", None), ("no-gw", None)], [("other-gw", None)]])
        elif kind == "rules":
            if len(r.rules) > 1 and rnd.random() < 0.5:
                r.rules.pop(rnd.randrange(len(r.rules)))
            elif rnd.random() < 0.5:
                r.rules.append(r.new_rule())
            else:
                rnd.choice(r.rules)["matches"].append(r.new_match())
        S.apply(r.obj())
        return "route-%d %s" % (r.i, kind)

    def step():
        global next_route, gw_variant
        x = rnd.random()
        if x < 0.30:
            return edit_route(rnd.choice(["path", "path", "header", "backend"]))
        if x < 0.36:
            return edit_route(rnd.choice(["hosts", "parents", "rules"]))
        if x < 0.62:
            s, k = rnd.choice(sorted(slices))
            S.apply(endpoint_slice(s, k, slices[(s, k)], n=rnd.randrange(0, 3)))
            return "slice svc-%d-%d endpoints" % (s, k)
        if x < 0.65:
            s, k = rnd.choice(sorted(slices))
            same_ns = [t for t in range(SERVICES) if t % len(NS) == s % len(NS)]
            slices[(s, k)] = rnd.choice(same_ns)
            S.apply(endpoint_slice(s, k, slices[(s, k)]))
            return "slice svc-%d-%d -> svc-%d" % (s, k, slices[(s, k)])
        if x < 0.68:
            if rnd.random() < 0.5 and len(routes) > 20:
                i = rnd.choice(sorted(routes))
                S.delete("HTTPRoute", routes[i].ns, "route-%d" % i)
                del routes[i]
                return "route-%d deleted" % i
            routes[next_route] = RouteState(next_route)
            S.apply(routes[next_route].obj())
            next_route += 1
            return "route-%d added" % (next_route - 1)
        if x < 0.70:
            s = rnd.randrange(SERVICES)
            k = rnd.choice([2, 3])
            if (s, k) in slices:
                S.delete("EndpointSlice", NS[s % len(NS)], "svc-%d-%d" % (s, k))
                del slices[(s, k)]
                return "slice svc-%d-%d deleted" % (s, k)
            slices[(s, k)] = None
            S.apply(endpoint_slice(s, k))
            return "slice svc-%d-%d added" % (s, k)
        if x < 0.72:
            s = rnd.randrange(SERVICES)
            svc_ports[s] = rnd.choice([(80,), (80, 81), (81,)])
            S.apply(service(s, svc_ports[s]))
            return "svc-%d ports %s" % (s, svc_ports[s])
        if x < 0.85:
            r = routes[rnd.choice(sorted(routes))]
            other_status(r.obj(), "theirs" if rnd.random() < 0.6 else "clobber")
            return "route-%d status written by someone else" % r.i
        if x < 0.87 and sec:
            s2 = S.get("Secret", "gw-ns", "cert")
            s2.pop("status", None)
            s2.setdefault("metadata", {}).setdefault("annotations", {})["rotated"] = str(
                rnd.randrange(1000))
            S.apply(s2)
            return "secret rotated"
        if x < 0.89:
            gw_variant += 1
            g = gateway(gw_variant)
            if sec:
                g["spec"]["listeners"].append(
                    {"name": "https", "port": 443, "protocol": "HTTPS",
                     "tls": {"certificateRefs": [{"name": "cert"}]},
                     "allowedRoutes": {"namespaces": {"from": "All"}}})
            S.apply(g)
            return "gateway listener changed"
        return edit_route("path")

    def checkpoint(tag):
        check(settle(dp_a), tag + ": A settles")
        writes = len(S.status_writes)
        dp_b = FakeDataplane(os.path.join(tmp, "dp-b.sock"))
        st_b = os.path.join(tmp, "status-b-" + tag)
        b = start("b-" + tag, kc, dp_b, st_b)
        try:
            first = dp_b.wait_for(lambda x: True, 30)
            check(first is not None and settle(dp_b, 1.5), tag + ": B (fresh) synced")
            ir_a, ir_b = dp_a.last(), dp_b.last()
            check(ir_a and ir_b and ir_a[2] == ir_b[2],
                  tag + ": A's IR (gen %s, %d bytes) == B's full compile (%d bytes)" %
                  (ir_a and ir_a[1], len(ir_a[2]) if ir_a else 0, len(ir_b[2]) if ir_b else 0))
            diffs = same_tree(st_a, st_b)
            check(not diffs, tag + ": A's status files == B's %s" % diffs[:5])
            extra = S.status_writes[writes:]
            check(not extra, tag + ": B finds every status A wrote in place (%d writes: %s)" %
                  (len(extra), [(w[0], w[1], w[2]) for w in extra[:3]]))
        finally:
            stop(b)
            dp_b.close()
        # B may have touched nothing; A must still be settled.
        settle(dp_a, 0.5)

    checkpoint("start")
    steps = 0
    for round_ in range(6):
        for _ in range(25):
            before = dp_a.count()
            for _ in range(rnd.choice([1, 1, 1, 2, 3])):
                step()
                steps += 1
            if rnd.random() < 0.4:
                # Let this batch compile alone (on a loaded machine the debounce would
                # otherwise gather most batches into one compile, mostly a full one).
                end = time.time() + 2.0
                while dp_a.count() == before and time.time() < end:
                    time.sleep(0.01)
            else:
                time.sleep(rnd.choice([0.0, 0.02, 0.05, 0.15, 0.3]))
        checkpoint("round%d" % round_)
    patched = logtext("a").count("(patched)")
    full = logtext("a").count("(new)") + logtext("a").count("(unchanged)") - patched
    check(patched >= 10, "A patched %d generation(s) of %d changes (%d full compiles)" %
          (patched, steps, full))
    check(a.poll() is None, "A still runs")
finally:
    for name, p in procs:
        stop(p)
    if failures:
        for name, p in procs:
            print("---- log of", name)
            print(logtext(name)[-3000:])

print("%d failure(s)" % len(failures))
if not failures:
    shutil.rmtree(tmp, ignore_errors=True)
sys.exit(1 if failures else 0)
