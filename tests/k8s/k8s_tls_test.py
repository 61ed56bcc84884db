#!/usr/bin/env python3
"""The Kubernetes source over HTTPS (issue 6): sluice-controlplane against
tests/k8s/fake_apiserver.py speaking TLS (Python ssl), its IR going to
tests/k8s/fake_dataplane.py. A throwaway CA, a rogue CA and their certificates are made with
`openssl req`/`openssl x509` in a temporary directory. Scenarios, one controlplane each:
  1. --kubeconfig with certificate-authority-data and a bearer token: initial sync, status
     written, IR at the dataplane, and a watch event over the TLS stream;
  2. the server's certificate is signed by a CA the kubeconfig does not name, then names
     another host: refused with a log line naming the certificate problem, no request sent,
     no IR, still running and retrying; once the server presents a good certificate (a
     rotation) it syncs without a restart;
  3. mutual TLS: the server requires a client certificate (ssl.CERT_REQUIRED, verified
     against the CA; checked first with Python clients: none / a rogue one are refused);
     client-certificate-data/client-key-data, no token: every request carries the client
     certificate's CN;
  4. an exec credential plugin (ExecCredential token) over HTTPS with mutual TLS, the CA and
     the client certificate and key as files relative to the kubeconfig: the plugin runs once;
  5. (root, unshare -m) in-cluster: KUBERNETES_SERVICE_HOST/PORT and the service account's
     token, ca.crt and namespace mounted at /var/run/secrets/kubernetes.io/serviceaccount
     in a private mount namespace: sync, and the Lease lands in the namespace file's namespace;
  6. (root, unshare -m) a CA in the system store (/etc/ssl/certs, bind-mounted in a private
     mount namespace) is not trusted when the kubeconfig names the cluster's CA (as data or
     as a file): the curl CLI in the same namespace accepts the server (the control), the
     controlplane refuses it.
Scenarios 5 and 6 print SKIP without root or unshare. Every process and the temporary
directory are removed at the end, also on failure. Traffic goes to 127.0.0.1 only.
Usage: k8s_tls_test.py SLUICE_CONTROLPLANE SOURCE_ROOT
"""

import base64
import glob
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fake_apiserver as fake  # noqa: E402
from k8s_check import check, cond, failures, ours, stop, wait, write_kubeconfig  # noqa: E402
from fake_dataplane import FakeDataplane, ir_string  # noqa: E402

CP, ROOT = sys.argv[1], sys.argv[2]
CLIENT_CN = "sluice-controlplane-test"
S = fake.STATE


tmp = tempfile.mkdtemp(prefix="sluice-k8s-tls-")


def path(name):
    return os.path.join(tmp, name)


# ---------------------------------------------------------------- certificates


def openssl(*args):
    r = subprocess.run(["openssl", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, cwd=tmp)
    if r.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (" ".join(args), r.stdout))
    return r.stdout


EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(name):
    openssl("req", "-x509", *EC, "-keyout", name + ".key", "-out", name + ".crt", "-days", "2",
            "-subj", "/CN=" + name, "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_leaf(name, ca, cn, ext):
    with open(path(name + ".ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n" + ext + "\n")
    openssl("req", "-new", *EC, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".crt", "-CAkey", ca + ".key",
            "-set_serial", "0x%x" % int.from_bytes(os.urandom(8), "big"), "-days", "2",
            "-out", name + ".crt", "-extfile", name + ".ext")


def b64(name):
    return base64.b64encode(open(path(name), "rb").read()).decode()


# ---------------------------------------------------------------- processes

procs = []
dps = []


def start(name, args, env=None, pre=()):
    log = open(path(name + ".log"), "w")
    p = subprocess.Popen([*pre, CP, *args], stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, **(env or {})))
    log.close()
    procs.append((name, p))
    return p


def logtext(name):
    try:
        return open(path(name + ".log")).read()
    except OSError:
        return ""


def new_dp(name):
    dp = FakeDataplane(path(name + ".sock"))
    dps.append(dp)
    return dp


def kubeconfig(name, cluster, user):
    """A kubeconfig in the work directory (see k8s_check.write_kubeconfig)."""
    return write_kubeconfig(path(name), cluster, user)


def cp_args(kc, dp):
    return ["--kubeconfig", kc, "--status-dir", "", "--dp-socket", dp.path,
            "--no-leader-election", "--watch-timeout", "30"]


def set_path(p):
    """A new spec for tls-route (generation + 1): the path `p`."""
    S.apply(route("tls-route", p))
    return S.get("HTTPRoute", "foo", "tls-route")["metadata"]["generation"]


def route(name, p):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": "foo"},
            "spec": {"parentRefs": [{"name": "prod-web", "namespace": "default"}],
                     "hostnames": ["tls.example.com"],
                     "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": p}}],
                                "backendRefs": [{"name": "foo-home", "port": 8080}]}]}}


def synced(what, dp, p, gen, timeout=20):
    """The dataplane gets an IR holding path p, and tls-route's status is at generation gen."""
    t0 = time.monotonic()
    fr = dp.wait_for(lambda b: ir_string(p) in b, timeout)
    check(fr is not None, "%s: the dataplane gets the IR with %s (%.1fs)" %
          (what, p, (fr[0] - t0) if fr else timeout))
    e = wait(lambda: (lambda x: x if cond(x, "Accepted") and
                      cond(x, "Accepted")["observedGeneration"] == gen else None)(
        ours(S.get("HTTPRoute", "foo", "tls-route"))), timeout)
    check(e and cond(e, "Accepted")["status"] == "True",
          "%s: tls-route's status written over HTTPS: Accepted=True at generation %d" % (what, gen))


def peers_since(i):
    with S.lock:
        return list(S.tls_peers[i:])


def refused(name, text, rounds=2, timeout=20):
    """`rounds` or more log lines of one kind (GatewayClass) naming `text`."""
    return wait(lambda: sum(1 for l in logtext(name).splitlines()
                            if l.startswith("sluice-controlplane: k8s: GatewayClass:") and
                            text in l) >= rounds, timeout)


def can_unshare():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# In a private mount namespace (unshare -m: nothing leaks to the host's mounts), bind-mount
# $1 on $2 (made on a tmpfs over its parent $3 when it does not exist), then run the rest.
MOUNT_SH = ('set -e; if [ ! -d "$2" ]; then mount -t tmpfs tmpfs "$3"; mkdir -p "$2"; fi; '
            'mount --bind "$1" "$2"; shift 3; exec "$@"')


def in_mount_ns(src, dst, parent):
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", MOUNT_SH, "sh", src, dst,
            parent]


# meson's timeout sends SIGTERM: end through the finally below (processes, temp dir).
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
srv = None
try:
    make_ca("ca")
    make_ca("rogue-ca")
    make_leaf("server", "ca", "fake-apiserver",
              "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1")
    make_leaf("server-rogue", "rogue-ca", "fake-apiserver",
              "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1")
    make_leaf("server-otherhost", "ca", "fake-apiserver",
              "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:apiserver.other.example")
    make_leaf("client", "ca", CLIENT_CN, "extendedKeyUsage=clientAuth")
    make_leaf("client-rogue", "rogue-ca", CLIENT_CN, "extendedKeyUsage=clientAuth")

    tls_server = fake.tls_context(path("server.crt"), path("server.key"))
    tls_rogue = fake.tls_context(path("server-rogue.crt"), path("server-rogue.key"))
    tls_otherhost = fake.tls_context(path("server-otherhost.crt"), path("server-otherhost.key"))
    tls_mutual = fake.tls_context(path("server.crt"), path("server.key"), path("ca.crt"))

    for f in sorted(glob.glob(os.path.join(ROOT, "examples/seed/*.yaml"))):
        for d in fake.load_yaml_docs(open(f).read()):
            if d:
                S.apply(d)
    S.apply(route("tls-route", "/initial"))
    srv = fake.serve(0, tls_server)
    port = srv.server_address[1]
    server = f'"https://127.0.0.1:{port}"'

    # ------------------------------------------------------------ 1. CA data + bearer token
    S.valid_tokens = {"tls-token"}
    kc1 = kubeconfig("kc-token", f'{{server: {server}, certificate-authority-data: {b64("ca.crt")}}}',
                     "{token: tls-token}")
    dp = new_dp("dp1")
    gen = set_path("/sc1")
    i0, unauth = len(S.tls_peers), S.unauthorized
    p1 = start("cp1", cp_args(kc1, dp))
    synced("1. CA data + token", dp, "/sc1", gen)
    check("initial sync complete" in logtext("cp1"), "1. the log says the initial sync completed")
    gc = S.get("GatewayClass", "", "acme-lb")
    check(any(c["type"] == "Accepted" and c["status"] == "True"
              for c in (gc.get("status") or {}).get("conditions", [])),
          "1. GatewayClass acme-lb: Accepted=True")
    peers = peers_since(i0)
    check(peers and all(v and v.startswith("TLSv1.") for _, v in peers),
          "1. every request came over TLS (%d requests, %s)" % (len(peers),
                                                               sorted({v for _, v in peers})))
    check(S.unauthorized == unauth, "1. the bearer token is accepted (no 401)")
    gen = set_path("/sc1-watch")
    synced("1. a watch event over the TLS stream", dp, "/sc1-watch", gen, 10)
    stop(p1)
    check(p1.returncode == 0, "1. SIGTERM: clean exit (rc %s)" % p1.returncode)

    # ------------------------------------------------------------ 2. wrong CA, wrong host
    srv.ssl_ctx = tls_rogue  # signed by a CA the kubeconfig does not name
    dp = new_dp("dp2")
    gen = set_path("/sc2")
    n_req, n_fail = len(S.requests), len(S.tls_failures)
    p2 = start("cp2", cp_args(kc1, dp))
    check(refused("cp2", "SSL certificate problem: unable to get local issuer certificate"),
          "2. a server certificate from an unknown CA: refused, the log names the problem "
          "(twice: retried)")
    lines = [l for l in logtext("cp2").splitlines() if "certificate problem" in l]
    print("     log: " + (lines[0][:220] if lines else "(none)"))
    check(p2.poll() is None, "2. the controlplane is alive")
    check(len(S.requests) == n_req, "2. no HTTP request reached the server (%d)" %
          (len(S.requests) - n_req))
    check(len(S.tls_failures) > n_fail, "2. the server saw the client abort the handshake (%s)" %
          (S.tls_failures[-1] if len(S.tls_failures) > n_fail else "-"))
    check(dp.count() == 0 and "initial sync complete" not in logtext("cp2"),
          "2. nothing synced, no IR sent")
    srv.ssl_ctx = tls_otherhost  # the right CA, but a certificate for another name
    check(refused("cp2", "no alternative certificate subject name matches target host name "
                  "'127.0.0.1'", 1),
          "2. a certificate for another host name: refused, the log says so")
    check(p2.poll() is None and dp.count() == 0, "2. still alive, still no IR")
    srv.ssl_ctx = tls_server  # the server's certificate is fixed: retried, it syncs
    synced("2. after the server presents a good certificate (no restart)", dp, "/sc2", gen, 40)
    stop(p2)

    # ------------------------------------------------------------ 3. mutual TLS (data)
    srv.ssl_ctx = tls_mutual
    S.valid_tokens = None  # the client certificate is the credential

    def python_client(cert=None):
        """Sends a GET with an optional client certificate; True when it got an HTTP answer."""
        ctx = ssl.create_default_context(cafile=path("ca.crt"))
        if cert:
            ctx.load_cert_chain(path(cert + ".crt"), path(cert + ".key"))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")
                    return s.recv(64).startswith(b"HTTP/1.1 200")
        except (ssl.SSLError, OSError):
            return False

    check(not python_client(), "3. (control) the server refuses a client without a certificate")
    check(not python_client("client-rogue"),
          "3. (control) the server refuses a client certificate from another CA")
    check(python_client("client"), "3. (control) the server accepts the client certificate")
    kc3 = kubeconfig("kc-mtls", f'{{server: {server}, certificate-authority-data: {b64("ca.crt")}}}',
                     f'{{client-certificate-data: {b64("client.crt")}, '
                     f'client-key-data: {b64("client.key")}}}')
    dp = new_dp("dp3")
    gen = set_path("/sc3")
    i0 = len(S.tls_peers)
    p3 = start("cp3", cp_args(kc3, dp))
    synced("3. client-certificate-data/client-key-data", dp, "/sc3", gen)
    peers = peers_since(i0)
    check(peers and all(cn == CLIENT_CN for cn, _ in peers),
          "3. every request carried the client certificate (CN %s; %d requests)" %
          (CLIENT_CN, len(peers)))
    stop(p3)

    # ------------------------------------------------------------ 4. exec plugin + files
    os.mkdir(path("kc"))
    for f in ("ca.crt", "client.crt", "client.key"):
        shutil.copy(path(f), path("kc/" + f))
    with open(path("kc/cred.sh"), "w") as f:
        f.write("""#!/bin/sh
n=$(cat "$CRED_DIR/runs" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "$CRED_DIR/runs"
case "$KUBERNETES_EXEC_INFO" in *ExecCredential*) ;; *) exit 3 ;; esac
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential",'
printf '"status":{"token":"exec-tls-%s","expirationTimestamp":"2099-01-01T00:00:00Z"}}' $n
""")
    os.chmod(path("kc/cred.sh"), 0o755)
    S.valid_tokens = {"exec-tls-1"}
    kc4 = kubeconfig("kc/kubeconfig", f"{{server: {server}, certificate-authority: ca.crt}}", f"""
    client-certificate: client.crt
    client-key: client.key
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./cred.sh
      env: [{{name: CRED_DIR, value: "{tmp}"}}]
      interactiveMode: Never""")
    dp = new_dp("dp4")
    gen = set_path("/sc4")
    i0, unauth = len(S.tls_peers), S.unauthorized
    p4 = start("cp4", cp_args(kc4, dp))
    synced("4. exec plugin, CA and client certificate files", dp, "/sc4", gen)
    peers = peers_since(i0)
    check(peers and all(cn == CLIENT_CN for cn, _ in peers),
          "4. every request carried the client certificate from client-certificate/client-key")
    check(S.unauthorized == unauth, "4. the exec plugin's token is accepted (no 401)")
    runs = open(path("runs")).read().strip() if os.path.exists(path("runs")) else "0"
    check(runs == "1", "4. the exec plugin ran once (%s)" % runs)
    stop(p4)

    # ------------------------------------------------------------ 5. in-cluster
    srv.ssl_ctx = tls_server
    if not can_unshare():
        print("SKIP 5. in-cluster and 6. system CA store: needs root and unshare -m")
    else:
        sa = path("sa")
        os.mkdir(sa)
        shutil.copy(path("ca.crt"), os.path.join(sa, "ca.crt"))
        with open(os.path.join(sa, "token"), "w") as f:
            f.write("sa-token-1\n")
        with open(os.path.join(sa, "namespace"), "w") as f:
            f.write("sluice-ns")
        S.valid_tokens = {"sa-token-1"}
        dp = new_dp("dp5")
        gen = set_path("/sc5")
        unauth = S.unauthorized
        # /var/run is /run on Debian; /run/secrets does not exist on the host: a tmpfs over
        # /run in the private namespace holds the mount point.
        p5 = start("cp5", ["--kubernetes", "--status-dir", "", "--dp-socket", dp.path,
                           "--identity", "in-cluster", "--lease-duration", "2",
                           "--watch-timeout", "30"],
                   env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port)},
                   pre=in_mount_ns(sa, "/var/run/secrets/kubernetes.io/serviceaccount", "/run"))
        synced("5. in-cluster service account", dp, "/sc5", gen)
        check(("API server https://127.0.0.1:%d;" % port) in logtext("cp5"),
              "5. the API server comes from KUBERNETES_SERVICE_HOST/PORT (https)")
        check(S.unauthorized == unauth, "5. the token file's token is accepted (no 401)")
        lease = wait(lambda: S.objects.get("leases", {}).get(("sluice-ns", "sluice-controlplane")))
        check(lease and lease["spec"].get("holderIdentity") == "in-cluster",
              "5. the Lease is in the namespace file's namespace (sluice-ns)")
        stop(p5)

        # -------------------------------------------------------- 6. system CA store
        store = path("system-certs")
        os.mkdir(store)
        shutil.copy(path("rogue-ca.crt"), os.path.join(store, "ca-certificates.crt"))
        h = openssl("x509", "-hash", "-noout", "-in", "rogue-ca.crt").strip()
        shutil.copy(path("rogue-ca.crt"), os.path.join(store, h + ".0"))
        srv.ssl_ctx = tls_rogue
        S.valid_tokens = {"tls-token"}
        if shutil.which("curl"):
            r = subprocess.run(in_mount_ns(store, "/etc/ssl/certs", "/etc/ssl") +
                               ["curl", "-sS", "-o", "/dev/null", "-H",
                                "Authorization: Bearer tls-token",
                                "https://127.0.0.1:%d/api/v1/namespaces" % port],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            check(r.returncode == 0, "6. (control) with the rogue CA in the system store, "
                  "curl's defaults trust the server (rc %d %s)" % (r.returncode, r.stdout.strip()))
        shutil.copy(path("ca.crt"), path("kc/ca.crt"))
        kc6 = kubeconfig("kc/kc-cafile", f"{{server: {server}, certificate-authority: ca.crt}}",
                         "{token: tls-token}")
        dp6a, dp6b = new_dp("dp6a"), new_dp("dp6b")
        n_req = len(S.requests)
        p6a = start("cp6a", cp_args(kc1, dp6a), pre=in_mount_ns(store, "/etc/ssl/certs", "/etc/ssl"))
        p6b = start("cp6b", cp_args(kc6, dp6b), pre=in_mount_ns(store, "/etc/ssl/certs", "/etc/ssl"))
        for name, how, d, p in (("cp6a", "certificate-authority-data", dp6a, p6a),
                                ("cp6b", "certificate-authority (file)", dp6b, p6b)):
            check(refused(name, "SSL certificate problem: unable to get local issuer certificate"),
                  "6. %s: a server certificate from a CA in the system store only: refused" % how)
            check(p.poll() is None and d.count() == 0, "6. %s: alive, no IR" % how)
        check(len(S.requests) == n_req, "6. no HTTP request reached the server")
        stop(p6a)
        stop(p6b)

    for name, p in procs:
        check("terminate called" not in logtext(name) and "Assertion" not in logtext(name) and
              p.returncode in (0, None), "%s: no abort, exit %s" % (name, p.returncode))
finally:
    for name, p in procs:
        stop(p)
    for dp in dps:
        dp.close()
    if srv:
        srv.shutdown()
        srv.server_close()
    if failures:
        for name, _ in procs:
            print("---- log of %s (tail)" % name)
            print(logtext(name)[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)

print("%d failure(s)" % len(failures))
sys.exit(1 if failures else 0)
