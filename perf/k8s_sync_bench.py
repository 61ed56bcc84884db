#!/usr/bin/env python3
"""Kubernetes source sync benchmark (issue 6, "Performance").

sluice-controlplane --kubeconfig against tests/k8s/fake_apiserver.py (in this process)
holding one GatewayClass, one Gateway (an HTTP listener that admits every namespace),
ROUTES HTTPRoutes over 100 namespaces and 1,000 hostnames, SLICES/2 Services and SLICES
EndpointSlices (two per Service, two endpoints each). The IR goes to
tests/k8s/fake_dataplane.py, which ACKs every generation at once.

  perf/k8s_sync_bench.py [--smoke] [--build DIR] [--out FILE] [--routes N] [--slices N]
                         [--updates N] [--file-updates N] [--status-files] [--keep]

Figures:
  first sync   from the controlplane's start to the first IR ACKed, to the Gateway
               Programmed=True, and to every route Accepted=True in the API (its status
               written through the fake);
  updates      UPDATES changes one at a time (alternately an HTTPRoute path edit and an
               EndpointSlice endpoint address edit): from the change in the API server to
               the dataplane's receipt (= ACK: the fake answers at once) of the first
               generation that contains it (found by its string in the IR bytes); p50, p90,
               p99, max;
  baseline     the same objects as files (--config-dir, 100 files) in the same invocation:
               start to first ACK, and FILE_UPDATES one-route file edits to the ACK.
Also the controlplane's CPU time and peak RSS per phase.
--status-files: the Kubernetes run also writes status files (--status-dir in the work
directory, as deploy/k8s does); default off (--status-dir "").
--smoke: 200 routes, 400 slices, 20 updates, 3 file updates; checks that every figure is
there (no speed assertions; for meson test --suite perf-smoke).
--out: JSON file (default perf/results/k8s-sync-<UTC date>-<short git hash>.json).
"""

import argparse
import datetime
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "k8s"))
import fake_apiserver as fake  # noqa: E402
from k8s_check import stop, write_kubeconfig  # noqa: E402
from fake_dataplane import FakeDataplane, ir_string  # noqa: E402

OURS = "sluice.dev/gateway-controller"
NAMESPACES = 100
HOSTNAMES = 1000


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out")
    ap.add_argument("--routes", type=int)
    ap.add_argument("--slices", type=int)
    ap.add_argument("--updates", type=int)
    ap.add_argument("--file-updates", type=int)
    ap.add_argument("--status-files", action="store_true")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    d = (200, 400, 20, 3) if a.smoke else (10000, 20000, 1000, 20)
    a.routes = a.routes or d[0]
    a.slices = a.slices or d[1]
    a.updates = a.updates if a.updates is not None else d[2]
    a.file_updates = a.file_updates if a.file_updates is not None else d[3]
    return a


# ---------------------------------------------------------------- the objects


def addr(n):
    """A unique IPv4 literal for endpoint n (10.64.0.0/10)."""
    n += 1
    return "10.%d.%d.%d" % (64 + (n >> 16), (n >> 8) & 255, n & 255)


def objects(routes, slices):
    services = max(1, slices // 2)
    out = [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "bench"}, "spec": {"controllerName": OURS}},
           {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bench"}},
           {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "bench-gw", "namespace": "bench"},
            "spec": {"gatewayClassName": "bench",
                     "listeners": [{"name": "http", "port": 80, "protocol": "HTTP",
                                    "allowedRoutes": {"namespaces": {"from": "All"}}}]}}]
    for n in range(NAMESPACES):
        out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-%d" % n}})
    ep = 0
    for s in range(services):
        ns = "ns-%d" % (s % NAMESPACES)
        out.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "svc-%d" % s, "namespace": ns},
                    "spec": {"selector": {"app": "svc-%d" % s},
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
        for k in range(2):
            eps = []
            for _ in range(2):
                eps.append({"addresses": [addr(ep)], "conditions": {"ready": True}})
                ep += 1
            out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": "svc-%d-%d" % (s, k), "namespace": ns,
                                     "labels": {"kubernetes.io/service-name": "svc-%d" % s}},
                        "addressType": "IPv4",
                        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                        "endpoints": eps})
    for r in range(routes):
        s = r % services
        out.append(route(r, s, "/r%d" % r))
    return out, ep


def route(r, s, path):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "route-%d" % r, "namespace": "ns-%d" % (s % NAMESPACES)},
            "spec": {"parentRefs": [{"name": "bench-gw", "namespace": "bench"}],
                     "hostnames": ["h%d.bench.example.com" % (r % HOSTNAMES)],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": path}},
                                            {"path": {"type": "Exact", "value": path + "/x"},
                                             "headers": [{"name": "x-bench", "value": "1"}]}],
                                "backendRefs": [{"name": "svc-%d" % s, "port": 80}]}]}}


# ---------------------------------------------------------------- process figures


def proc_cpu_s(pid):
    try:
        f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return 0.0


def proc_kb(pid, field):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def summary(lat_ms):
    return {"n": len(lat_ms), "p50_ms": pct(lat_ms, 50), "p90_ms": pct(lat_ms, 90),
            "p99_ms": pct(lat_ms, 99), "max_ms": max(lat_ms) if lat_ms else None,
            "mean_ms": statistics.mean(lat_ms) if lat_ms else None}


def git_hash():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                       stderr=subprocess.DEVNULL).decode().strip()
    except (OSError, subprocess.CalledProcessError):
        return "nogit"


# ---------------------------------------------------------------- the two runs


def run_k8s(a, cp, work, objs, n_eps, res):
    S = fake.STATE
    S.bulk_load(json.loads(json.dumps(objs)))
    srv = fake.serve(0)
    kubeconfig = write_kubeconfig(os.path.join(work, "kubeconfig"),
                                  '{server: "http://127.0.0.1:%d"}' % srv.server_address[1])
    dp = FakeDataplane(os.path.join(work, "dp-k8s.sock"))
    log = open(os.path.join(work, "cp-k8s.log"), "w")
    t0 = time.monotonic()
    status_dir = os.path.join(work, "status-k8s") if a.status_files else ""
    p = subprocess.Popen([cp, "--kubeconfig", kubeconfig, "--status-dir", status_dir, "--dp-socket",
                          dp.path, "--no-leader-election"], stdout=log, stderr=subprocess.STDOUT)
    try:
        routes = S.objects.get("httproutes", {})
        pending = set(routes)  # routes not seen Accepted yet (the poll stays cheap)

        def all_accepted():
            for key in list(pending):
                o = routes[key]
                for e in (o.get("status") or {}).get("parents") or []:
                    if e.get("controllerName") == OURS and any(
                            c["type"] == "Accepted" and c["status"] == "True"
                            for c in e.get("conditions", [])):
                        pending.discard(key)
            return not pending

        def programmed():
            gw = S.objects["gateways"][("bench", "bench-gw")]
            return any(c["type"] == "Programmed" and c["status"] == "True"
                       for c in (gw.get("status") or {}).get("conditions", []))

        first = dp.wait_for(lambda b: True, 600)
        if first is None:
            raise RuntimeError("no IR reached the fake dataplane in 600 s")
        t_ir = first[0] - t0
        cpu_ir = proc_cpu_s(p.pid)
        t_prog = t_acc = None
        end = time.monotonic() + 900
        while time.monotonic() < end and (t_prog is None or t_acc is None):
            if p.poll() is not None:
                raise RuntimeError("the controlplane exited (rc %s)" % p.returncode)
            if t_prog is None and programmed():
                t_prog = time.monotonic() - t0
            if t_acc is None and all_accepted():
                t_acc = time.monotonic() - t0
            time.sleep(0.05 if a.smoke else 0.2)
        if t_acc is None or t_prog is None:
            raise RuntimeError("first sync did not finish in 900 s")
        res["first_sync"] = {"ir_acked_s": round(t_ir, 3), "gateway_programmed_s": round(t_prog, 3),
                             "routes_accepted_s": round(t_acc, 3),
                             "status_writes": len(S.status_writes),
                             "cpu_s": round(proc_cpu_s(p.pid), 2), "cpu_to_first_ir_s": round(cpu_ir, 2),
                             "peak_rss_mb": proc_kb(p.pid, "VmHWM") // 1024,
                             "ir_bytes": len(first[2])}
        print("k8s first sync: IR acked %.2fs, Gateway Programmed %.2fs, %d routes Accepted %.2fs "
              "(%d status writes), controlplane CPU %.1fs, peak RSS %d MB, IR %d bytes" %
              (t_ir, t_prog, a.routes, t_acc, len(S.status_writes), res["first_sync"]["cpu_s"],
               res["first_sync"]["peak_rss_mb"], len(first[2])), flush=True)
        time.sleep(2.0 if not a.smoke else 0.5)  # status echoes settle

        # ---- updates, one at a time
        rnd = random.Random(6)
        services = max(1, a.slices // 2)
        lat = {"route": [], "slice": []}
        order = []  # every latency, in the order of the changes
        cpu0 = proc_cpu_s(p.pid)
        tu0 = time.monotonic()
        missed = 0
        for i in range(a.updates):
            start = dp.count()
            if i % 2 == 0:
                r = rnd.randrange(a.routes)
                s = r % services
                path = "/u%d-r%d" % (i, r)
                o = route(r, s, path)
                marker = ir_string(path)
                kind = "route"
                t = time.monotonic()
                S.apply(o)
            else:
                s = rnd.randrange(services)
                k = rnd.randrange(2)
                ns = "ns-%d" % (s % NAMESPACES)
                o = S.get("EndpointSlice", ns, "svc-%d-%d" % (s, k))
                new = addr(n_eps + i)
                o["endpoints"][0]["addresses"] = [new]
                marker = ir_string(new)
                kind = "slice"
                t = time.monotonic()
                S.apply(o)
            fr = dp.wait_for(lambda b: marker in b, 30, start)
            if fr is None:
                missed += 1
                print("update %d (%s): not seen in 30 s" % (i, kind), flush=True)
                continue
            lat[kind].append((fr[0] - t) * 1000.0)
            order.append(lat[kind][-1])
        tu = time.monotonic() - tu0
        both = lat["route"] + lat["slice"]
        res["updates"] = {"count": a.updates, "missed": missed, "all": summary(both),
                          "route_path_edit": summary(lat["route"]),
                          "endpointslice_edit": summary(lat["slice"]),
                          "wall_s": round(tu, 2), "cpu_s": round(proc_cpu_s(p.pid) - cpu0, 2),
                          "generations": dp.count(),
                          "latencies_ms": [round(x, 1) for x in order],
                          "peak_rss_mb": proc_kb(p.pid, "VmHWM") // 1024}
        s = res["updates"]["all"]
        if s["n"]:
            print("k8s updates: %d changes, p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; "
                  "controlplane CPU %.1fs over %.1fs" %
                  (s["n"], s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"],
                   res["updates"]["cpu_s"], tu), flush=True)
    finally:
        stop(p, timeout=20)
        srv.shutdown()
        dp.close()
    return res


def yaml_docs(objs):
    # JSON is YAML: one object per document.
    return "".join("---\n" + json.dumps(o) + "\n" for o in objs)


def run_files(a, cp, work, objs, res):
    d = os.path.join(work, "config")
    os.makedirs(d)
    groups = {}
    for o in objs:
        ns = o["metadata"].get("namespace", "")
        if o["kind"] == "HTTPRoute":
            groups.setdefault("routes-%s.yaml" % ns, []).append(o)
        else:
            groups.setdefault("base-%s.yaml" % o["kind"].lower(), []).append(o)
    for name, group in groups.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(yaml_docs(group))
    dp = FakeDataplane(os.path.join(work, "dp-files.sock"))
    log = open(os.path.join(work, "cp-files.log"), "w")
    t0 = time.monotonic()
    p = subprocess.Popen([cp, "--config-dir", d, "--status-dir", "", "--dp-socket", dp.path],
                         stdout=log, stderr=subprocess.STDOUT)
    try:
        first = dp.wait_for(lambda b: True, 600)
        if first is None:
            raise RuntimeError("file source: no IR in 600 s")
        t_ir = first[0] - t0
        res["baseline_files"] = {"ir_acked_s": round(t_ir, 3), "cpu_s": round(proc_cpu_s(p.pid), 2),
                                 "peak_rss_mb": proc_kb(p.pid, "VmHWM") // 1024}
        lat = []
        by_ns = {}
        for o in objs:
            if o["kind"] == "HTTPRoute":
                by_ns.setdefault(o["metadata"]["namespace"], []).append(o)
        rnd = random.Random(7)
        for i in range(a.file_updates):
            ns = rnd.choice(sorted(by_ns))
            group = by_ns[ns]
            j = rnd.randrange(len(group))
            path = "/f%d" % i
            group[j]["spec"]["rules"][0]["matches"][0]["path"]["value"] = path
            marker = ir_string(path)
            start = dp.count()
            tmp = os.path.join(work, "routes.tmp")
            with open(tmp, "w") as f:
                f.write(yaml_docs(group))
            t = time.monotonic()
            os.rename(tmp, os.path.join(d, "routes-%s.yaml" % ns))
            fr = dp.wait_for(lambda b: marker in b, 60, start)
            if fr is not None:
                lat.append((fr[0] - t) * 1000.0)
        res["baseline_files"]["updates"] = summary(lat)
        s = res["baseline_files"]["updates"]
        print("file source (baseline): IR acked %.2fs after start; %d file edits: p50 %s ms, "
              "max %s ms" % (t_ir, s["n"], s["p50_ms"] and round(s["p50_ms"], 1),
                             s["max_ms"] and round(s["max_ms"], 1)), flush=True)
    finally:
        stop(p, timeout=20)
        dp.close()
    return res


def main():
    a = parse_args()
    cp = os.path.join(a.build, "controlplane", "sluice-controlplane")
    if not os.access(cp, os.X_OK):
        print("k8s_sync_bench: %s missing: ninja -C build controlplane/sluice-controlplane" % cp,
              file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="sluice-k8s-bench-")
    objs, n_eps = objects(a.routes, a.slices)
    res = {"benchmark": "k8s_sync", "date": datetime.datetime.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
           "git": git_hash(), "smoke": a.smoke, "routes": a.routes, "endpointslices": a.slices,
           "status_files": a.status_files,
           "services": max(1, a.slices // 2), "endpoints": n_eps, "objects": len(objs),
           "machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
           "goal": {"update_p99_ms": 100.0}}
    ok = False
    try:
        run_k8s(a, cp, work, objs, n_eps, res)
        if a.file_updates >= 0:
            run_files(a, cp, work, objs, res)
        u = res["updates"]["all"]
        res["goal_met"] = {"update_p99_ms": bool(u["p99_ms"] is not None and u["p99_ms"] < 100.0)}
        if u["p99_ms"] is not None and res["baseline_files"]["updates"]["p50_ms"]:
            res["ratio_update_p50_to_files"] = u["p50_ms"] / res["baseline_files"]["updates"]["p50_ms"]
        res["ratio_first_ir_to_files"] = (res["first_sync"]["ir_acked_s"] /
                                          res["baseline_files"]["ir_acked_s"])
        ok = res["updates"]["missed"] == 0 and u["n"] == a.updates and \
            res["baseline_files"]["updates"]["n"] == a.file_updates
    except RuntimeError as e:
        print("k8s_sync_bench: " + str(e), file=sys.stderr)
        for f in ("cp-k8s.log", "cp-files.log"):
            pth = os.path.join(work, f)
            if os.path.exists(pth):
                print("---- " + f, file=sys.stderr)
                print(open(pth).read()[-3000:], file=sys.stderr)
    out = a.out
    if not out:
        if a.smoke:
            out = os.path.join(work, "result.json")
        else:
            out = os.path.join(ROOT, "perf", "results", "k8s-sync-%s-%s.json" % (
                datetime.datetime.utcnow().strftime("%Y-%m-%d"), res["git"]))
    with open(out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    json.load(open(out))  # well formed
    print("k8s_sync_bench: %s -> %s" % ("ok" if ok else "FAILED", out))
    if a.keep or not ok:
        print("k8s_sync_bench: work dir kept: " + work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
