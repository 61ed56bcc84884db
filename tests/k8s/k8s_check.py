"""Helpers the Kubernetes-source tests and perf/k8s_sync_bench.py share: the check/report
pattern (every test prints ok/FAIL lines and exits 1 when `failures` is not empty), polling,
our parent entry and a condition in a Route status, and stopping a controlplane."""
import signal
import subprocess
import time

OURS = "sluice.dev/gateway-controller"  # the controllerName sluice handles
failures = []  # what failed, in order; the test exits 1 if any


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def wait(pred, timeout=10.0):
    """pred()'s first truthy value within `timeout` seconds, else its last value."""
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def ours(obj):
    """sluice's entry in a Route's status.parents, or None."""
    for p in ((obj or {}).get("status") or {}).get("parents") or []:
        if p.get("controllerName") == OURS:
            return p
    return None


def cond(entry, typ):
    """The condition of type `typ` in a status entry, or None."""
    for c in (entry or {}).get("conditions") or []:
        if c["type"] == typ:
            return c
    return None


def stop(p, timeout=10):
    """SIGTERM (a clean exit), SIGKILL after `timeout` seconds; None or an ended process: no-op."""
    if p and p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def write_kubeconfig(path, cluster, user=None):
    """A kubeconfig at `path` whose current context is cluster `cluster` (its YAML value,
    e.g. '{server: "http://127.0.0.1:8080"}') and, if given, user `user` (its YAML value: a
    flow map, or a block starting with a newline and indented by four)."""
    with open(path, "w") as f:
        f.write("apiVersion: v1\nkind: Config\ncurrent-context: test\ncontexts:\n- name: test\n"
                "  context: {cluster: fake, %snamespace: sluice-system}\n"
                "clusters:\n- name: fake\n  cluster: %s\n" % ("user: u, " if user else "", cluster))
        if user:
            f.write("users:\n- name: u\n  user: %s\n" % user)
    return path
