#!/usr/bin/env python3
"""sluice-l7 --tls-ipsec-mb end to end on loopback (no root needed).

TLS records through the "sluice-imb" OpenSSL provider (AES-GCM on Intel ipsec-mb) must be
what every client expects: curl (HTTP/1.1 and HTTP/2), openssl s_client (TLS 1.3 with
TLS_AES_128_GCM_SHA256 and TLS_AES_256_GCM_SHA384, TLS 1.2 with ECDHE-ECDSA-AES128-GCM-SHA256
and ECDHE-RSA-AES256-GCM-SHA384), h2load and wrk. Multi-megabyte bodies both ways are
checked byte for byte, and sluice-l7's counters must show that the TLS 1.3 connections went
on on sluice's own record layer (tls_own_records) and that the provider sealed and opened
the TLS 1.2 records (tls_imb_records_sealed/opened > 0, no open failures).

usage: l7_tls_imb_test.py BUILD_DIR   (exit 77 = skipped: built without ipsec-mb, or no
curl/openssl)
"""

import hashlib
import http.server
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
CP = os.environ.get("SLUICE_CP") or os.path.join(BUILD, "controlplane", "sluice-controlplane")
L7 = os.path.join(BUILD, "dataplane", "sluice-l7")
HOST = "imb.example.com"

procs = []
failures = []


def check(cond, what):
    print(("  ok    " if cond else "  FAIL  ") + what, flush=True)
    if not cond:
        failures.append(what)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(pred, timeout=10.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(step)
    return False


_bodies = {}


def body(n):
    """The deterministic body of GET /big/<n>."""
    if n not in _bodies:
        _bodies[n] = random.Random(n).randbytes(n)
    return _bodies[n]


class Backend(http.server.BaseHTTPRequestHandler):
    """GET /big/<n>: n known bytes; POST /sum: sha256 of the request body (hex)."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, data, ctype="application/octet-stream"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        m = re.match(r"/big/(\d+)$", self.path)
        self.reply(body(int(m.group(1))) if m else b"ok")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        while n > 0:
            chunk = self.rfile.read(min(n, 1 << 16))
            if not chunk:
                break
            h.update(chunk)
            n -= len(chunk)
        self.reply(h.hexdigest().encode(), "text/plain")


def make_certs(work):
    out = {}
    for kind, args in (("ec", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]),
                       ("rsa", ["-newkey", "rsa:2048"])):
        key, crt = os.path.join(work, kind + ".key"), os.path.join(work, kind + ".crt")
        subprocess.run(["openssl", "req", "-x509", *args, "-nodes", "-keyout", key, "-out", crt,
                        "-days", "2", "-subj", "/CN=" + HOST,
                        "-addext", "subjectAltName=DNS:" + HOST],
                       check=True, capture_output=True)
        out[kind] = (crt, key)
    return out


def b64(path):
    import base64
    return base64.b64encode(open(path, "rb").read()).decode()


def config(https_port, backend_port, certs):
    secrets = ""
    for kind, (crt, key) in certs.items():
        secrets += f"""---
apiVersion: v1
kind: Secret
metadata: {{name: cert-{kind}, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(crt)}
  tls.key: {b64(key)}
"""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
{secrets}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - name: https
    protocol: HTTPS
    port: {https_port}
    tls: {{certificateRefs: [{{name: cert-ec}}, {{name: cert-rsa}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{name: big, port: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: big, namespace: default}}
spec:
  ports: [{{name: http, port: 8080, targetPort: {backend_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-1
  namespace: default
  labels: {{kubernetes.io/service-name: big}}
addressType: IPv4
ports: [{{name: http, port: {backend_port}}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""


def http_body(raw):
    """Status, body of the first HTTP/1.1 response in `raw` (s_client output around it)."""
    i = raw.find(b"HTTP/1.1 ")
    if i < 0:
        return 0, b""
    head_end = raw.find(b"\r\n\r\n", i)
    head = raw[i:head_end].decode(errors="replace")
    m = re.search(r"(?i)content-length:\s*(\d+)", head)
    n = int(m.group(1)) if m else 0
    return int(head.split(" ", 2)[1]), raw[head_end + 4:head_end + 4 + n]


def run(work, log):
    certs = make_certs(work)
    https_port, backend_port, admin_port = free_port(), free_port(), free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", backend_port), Backend)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = os.path.join(work, "config")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "gw.yaml"), "w") as f:
        f.write(config(https_port, backend_port, certs))
    sock = os.path.join(work, "l7.sock")
    l7_log = os.path.join(work, "l7.log")
    # Two workers: the ipsec-mb manager and the provider are shared by every thread.
    l7 = subprocess.Popen([L7, "--tls-ipsec-mb", "--workers", "2", "--dp-socket", sock,
                           "--stats-file", "",
                           "--admin", f"127.0.0.1:{admin_port}"],
                          stdout=open(l7_log, "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)
    procs.append(l7)
    wait_for(lambda: os.path.exists(sock))
    procs.append(subprocess.Popen([CP, "--config-dir", cfg, "--status-dir",
                                   os.path.join(work, "status"), "--dp-socket", sock,
                                   "--address", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True))
    check(wait_for(lambda: "in force" in open(l7_log).read()), "sluice-l7 took the IR")
    start_log = open(l7_log).read()
    if "built without Intel ipsec-mb" in start_log:
        print("sluice-l7 built without ipsec-mb: skipped")
        return 77
    check("on Intel ipsec-mb" in start_log,
          "start log names ipsec-mb and its code path: " +
          next((l for l in start_log.splitlines() if "ipsec-mb" in l), "(no line)"))

    def stats():
        r = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{admin_port}/stats"],
                           capture_output=True, text=True)
        return json.loads(r.stdout)["l7"]

    base = f"https://{HOST}:{https_port}"
    resolve = ["--resolve", f"{HOST}:{https_port}:127.0.0.1", "-k"]
    check(wait_for(lambda: subprocess.run(["curl", "-sSf", *resolve, base + "/"],
                                          capture_output=True).returncode == 0),
          "HTTPS listener answers")
    s0 = stats()
    check(s0.get("tls_ipsec_mb") == 1, "stats: tls_ipsec_mb = 1")

    big = 5 << 20
    up = random.Random(99).randbytes(3 << 20)
    up_file = os.path.join(work, "up.bin")
    open(up_file, "wb").write(up)
    for proto, flag in (("HTTP/1.1", "--http1.1"), ("HTTP/2", "--http2")):
        out = os.path.join(work, "down.bin")
        r = subprocess.run(["curl", "-sS", flag, *resolve, "-o", out, "-w", "%{http_version}",
                            f"{base}/big/{big}"], capture_output=True, text=True)
        got = open(out, "rb").read() if os.path.exists(out) else b""
        check(r.returncode == 0 and r.stdout == ("1.1" if flag == "--http1.1" else "2")
              and got == body(big),
              f"curl {proto}: 5 MiB download byte for byte (rc {r.returncode}, "
              f"version {r.stdout}, {len(got)} bytes)")
        r = subprocess.run(["curl", "-sS", flag, *resolve, "--data-binary", "@" + up_file,
                            "-H", "Content-Type: application/octet-stream", f"{base}/sum"],
                           capture_output=True, text=True)
        check(r.stdout.strip() == hashlib.sha256(up).hexdigest(),
              f"curl {proto}: 3 MiB upload arrives intact (sha256 {r.stdout.strip()[:16]}...)")

    # openssl s_client, each cipher the issue names (the RSA suite needs the RSA certificate).
    cases = [("-tls1_3", ["-ciphersuites", "TLS_AES_256_GCM_SHA384"], "TLSv1.3",
              "TLS_AES_256_GCM_SHA384"),
             ("-tls1_3", ["-ciphersuites", "TLS_AES_128_GCM_SHA256"], "TLSv1.3",
              "TLS_AES_128_GCM_SHA256"),
             ("-tls1_2", ["-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"], "TLSv1.2",
              "ECDHE-ECDSA-AES128-GCM-SHA256"),
             ("-tls1_2", ["-cipher", "ECDHE-RSA-AES256-GCM-SHA384"], "TLSv1.2",
              "ECDHE-RSA-AES256-GCM-SHA384")]
    n = 2 << 20
    for version, cipher, proto, name in cases:
        req = (f"GET /big/{n} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").encode()
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{https_port}",
                            "-servername", HOST, version, *cipher, "-ign_eof"],
                           input=req, capture_output=True, timeout=30)
        status, got = http_body(r.stdout)
        text = r.stdout.decode(errors="replace")
        negotiated = re.search(r"New, (TLSv1\.[23]), Cipher is (\S+)", text)
        check(negotiated is not None and negotiated.groups() == (proto, name) and status == 200
              and got == body(n),
              f"s_client {version} {name}: negotiated "
              f"{negotiated.groups() if negotiated else None}, 2 MiB body byte for byte "
              f"({len(got)} bytes)")

    # KeyUpdate on a connection that is on sluice's record layer: s_client's "K" asks for
    # ours too (RFC 8446 4.6.3), "k" does not; requests keep being answered after each.
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{https_port}",
                          "-servername", HOST, "-tls1_3"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    got = []
    reader = threading.Thread(target=lambda: got.append(p.stdout.read()))
    reader.start()
    req = f"GET /big/100 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    try:
        for chunk in (b"K\n", req, b"k\n", req, b"K\n", req):
            time.sleep(0.4)
            p.stdin.write(chunk)
            p.stdin.flush()
        time.sleep(0.8)
    finally:
        p.stdin.close()
        reader.join(10)
        if p.poll() is None:
            p.kill()
        p.wait()
    text = got[0].decode(errors="replace") if got else ""
    check(text.count("HTTP/1.1 200") == 3 and text.count("KEYUPDATE") == 3,
          f"s_client KeyUpdate (requested, not, requested): {text.count('HTTP/1.1 200')} of 3 "
          f"requests answered after them")

    if shutil.which("h2load"):
        r = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "4",
                            f"https://127.0.0.1:{https_port}/big/65536"],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed",
                      r.stdout)
        proto = re.search(r"Application protocol: (\S+)", r.stdout)
        check(m is not None and m.groups() == ("400", "400", "0") and proto is not None
              and proto.group(1) == "h2",
              f"h2load (h2 over TLS, 400 x 64 KiB): {m.group(0) if m else r.stdout[-300:]}")
    else:
        print("  skip  h2load missing")
    if shutil.which("wrk"):
        r = subprocess.run(["wrk", "-t1", "-c8", "-d2s",
                            f"https://127.0.0.1:{https_port}/big/65536"],
                           capture_output=True, text=True, timeout=60)
        m = re.search(r"(\d+) requests in", r.stdout)
        bad = re.search(r"Non-2xx|Socket errors", r.stdout)
        check(m is not None and int(m.group(1)) > 10 and bad is None,
              f"wrk (HTTP/1.1 over TLS, 64 KiB): {m.group(0) if m else ''} "
              f"{bad.group(0) if bad else 'no errors'}")
    else:
        print("  skip  wrk missing")

    s1 = stats()
    # TLS 1.3 connections (curl x4, s_client x2, h2load x4, wrk x8) continue on sluice's own
    # record layer after the handshake; TLS 1.2 ones (s_client x2, 2 MiB each) and every
    # handshake's records stay with OpenSSL, through the provider.
    own = s1.get("tls_own_records", 0) - s0.get("tls_own_records", 0)
    check(own >= 10, f"{own} TLS 1.3 connections on sluice's record layer (>= 10)")
    sealed = s1.get("tls_imb_records_sealed", 0) - s0.get("tls_imb_records_sealed", 0)
    opened = s1.get("tls_imb_records_opened", 0) - s0.get("tls_imb_records_opened", 0)
    served = 2 * n  # the TLS 1.2 s_client bodies
    check(sealed >= served // 16384 and opened >= 2 and
          s1.get("tls_imb_open_failures", 1) == 0,
          f"the provider sealed {sealed} records (>= {served // 16384}) and opened {opened} "
          f"(>= 2), {s1.get('tls_imb_open_failures')} open failures")
    prom = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{admin_port}/metrics"],
                          capture_output=True, text=True).stdout
    check("sluice_l7_tls_imb_records_sealed_total" in prom, "Prometheus exports the counters")
    srv.shutdown()
    return 0


def main():
    for b in (CP, L7):
        if not os.path.exists(b):
            print(f"missing {b}: build first", file=sys.stderr)
            return 1
    if not shutil.which("curl") or not shutil.which("openssl"):
        print("curl/openssl missing: skipped")
        return 77
    help_text = subprocess.run([L7, "--help"], capture_output=True, text=True).stdout
    if "tls-ipsec-mb" not in help_text:
        print("sluice-l7 has no --tls-ipsec-mb: skipped")
        return 77
    work = tempfile.mkdtemp(prefix="sluice-imb-test.")
    log = open(os.path.join(work, "procs.log"), "w")
    rc = 1
    try:
        rc = run(work, log)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()
        # No sanitizer report either (tools/run-tests.sh also runs this on an ASan+UBSan
        # build: the provider's record paths under the sanitizers).
        text = ""
        for name in ("l7.log", "procs.log"):
            try:
                text += open(os.path.join(work, name), errors="replace").read()
            except OSError:
                pass
        sanitizer = any(m in text for m in ("AddressSanitizer", "LeakSanitizer", "runtime error:"))
        check(procs and procs[0].returncode == 0 and not sanitizer,
              "sluice-l7 stops cleanly on SIGTERM, no sanitizer report")
        if failures:
            for name in ("l7.log", "procs.log"):
                print(f"---- {name} (tail)")
                print("".join(open(os.path.join(work, name), errors="replace").readlines()[-40:]))
        if os.environ.get("SLUICE_KEEP_WORK"):
            print("work dir kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else rc


if __name__ == "__main__":
    sys.exit(main())
