#!/usr/bin/env python3
"""End-to-end test of the L7 engine on loopback (no root needed).

sluice-controlplane compiles a Gateway with an HTTP listener and an HTTPS listener and
sends the IR to sluice-l7 (--dp-socket); echo backends (tools/echo/sluice-echo) stand in
for the pods. Real clients (curl, raw sockets) then check what a user would: routing by
host/path/header, weights, filters, redirects, TLS with SNI and 421, keep-alive reuse,
chunked bodies, smuggling attempts (400), slowloris (408), a dead backend (503), statuses
(Programmed=True only after sluice-l7's ACK), a configuration change that keeps an
established keep-alive connection, gateway-to-backend TLS (BackendTLSPolicy: trust roots,
host name and subjectAltName verification, the Gateway's client certificate, h2 over TLS,
pooled TLS connections kept across a configuration change), OCSP stapling from the
certificate Secret's tls.ocsp-staple (openssl s_client -status), and the counters.

usage: l7_http_test.py BUILD_DIR
"""

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
# SLUICE_CP: a controlplane from another build (the ASan stage only rebuilds sluice-l7).
CP = os.environ.get("SLUICE_CP") or os.path.join(BUILD, "controlplane", "sluice-controlplane")
L7 = os.path.join(BUILD, "dataplane", "sluice-l7")
ECHO = os.path.join(ROOT, "tools", "echo", "sluice-echo")

procs = []
failures = []
named = {}


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


def start(args, log):
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs.append(p)
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


def raw(port, data, timeout=3.0, read_until_close=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if not read_until_close and b"\r\n\r\n" in out:
                break
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except Exception:
        return 0


def curl(args, timeout=10):
    r = subprocess.run(["curl", "-sS", "--max-time", str(timeout)] + args,
                       capture_output=True)
    # Keep CRLF as sent (text mode would fold it into LF).
    r.stdout = r.stdout.decode(errors="replace")
    r.stderr = r.stderr.decode(errors="replace")
    return r


def bad_backend(port):
    """A misbehaving backend: /big answers 8 MB, /reset sends half a response then a TCP
    reset, anything else a small 200."""
    import threading

    def serve(conn):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                b = conn.recv(65536)
                if not b:
                    return
                data += b
            path = data.split(b" ", 2)[1]
            if path.startswith(b"/bad/big"):
                body = b"z" * (8 << 20)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif path.startswith(b"/bad/reset"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"r" * 1000)
                time.sleep(0.1)
                import struct
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        finally:
            conn.close()

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(128)

    def loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return srv


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def make_cert(work):
    key = os.path.join(work, "tls.key")
    crt = os.path.join(work, "tls.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=*.example.com",
                    "-addext", "subjectAltName=DNS:*.example.com,DNS:example.com,DNS:*.pass.example.com"],
                   check=True, capture_output=True)
    return crt, key


def make_backend_pki(work):
    """A CA, a backend certificate signed by it (DNS abc.example.com and a SPIFFE URI), a
    client certificate from the same CA, and an unrelated CA."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=work)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for ca in ("btls-ca", "other-ca"):
        run("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2",
            "-subj", f"/CN={ca}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    leaves = {"btls-srv": ("abc.example.com",
                           "DNS:abc.example.com,URI:spiffe://abc.example.com/test-identity"),
              "btls-client": ("gateway-client", "DNS:client.example.com")}
    for name, (cn, san) in leaves.items():
        with open(os.path.join(work, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "btls-ca.crt", "-CAkey", "btls-ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {n: os.path.join(work, n) for n in ("btls-ca", "other-ca", "btls-srv", "btls-client")}


def make_ocsp_pki(work):
    """A CA, a server certificate it signed (ocsp.example.com), and the CA's OCSP answer
    for it ("good", valid one day) as `openssl ocsp` writes it: the DER a tls.ocsp-staple
    Secret key holds."""
    d = os.path.join(work, "ocsp")
    os.makedirs(d)

    def run(*args):
        return subprocess.run(["openssl"] + list(args), check=True, capture_output=True,
                              cwd=d, text=True).stdout

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=ocsp-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    with open(os.path.join(d, "srv.ext"), "w") as f:
        f.write("subjectAltName=DNS:ocsp.example.com\nbasicConstraints=CA:FALSE\n")
    run("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=ocsp.example.com")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "srv.ext")
    serial = run("x509", "-in", "srv.crt", "-noout", "-serial").strip().split("=", 1)[1]
    expiry = time.strftime("%y%m%d%H%M%SZ", time.gmtime(time.time() + 2 * 86400))
    with open(os.path.join(d, "index.txt"), "w") as f:
        f.write(f"V\t{expiry}\t\t{serial}\tunknown\t/CN=ocsp.example.com\n")
    run("ocsp", "-issuer", "ca.crt", "-cert", "srv.crt", "-no_nonce", "-reqout", "req.der")
    run("ocsp", "-index", "index.txt", "-rsigner", "ca.crt", "-rkey", "ca.key", "-CA", "ca.crt",
        "-reqin", "req.der", "-respout", "resp.der", "-ndays", "1")
    # tls.crt carries the chain: the staple's CertID is checked against leaf and issuer.
    with open(os.path.join(d, "chain.crt"), "w") as f:
        f.write(open(os.path.join(d, "srv.crt")).read() + open(os.path.join(d, "ca.crt")).read())
    return {n: os.path.join(d, n) for n in ("ca.crt", "chain.crt", "srv.key", "resp.der")}


def ocsp_config(pki, port, staple):
    """A Gateway with one HTTPS listener whose Secret carries `staple` (a path, raw bytes,
    or None for no tls.ocsp-staple key)."""
    import base64
    if isinstance(staple, str):
        staple = open(staple, "rb").read()
    key = "" if staple is None else f"\n  tls.ocsp-staple: {base64.b64encode(staple).decode()}"
    return f"""apiVersion: v1
kind: Secret
metadata: {{name: ocsp-cert, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(pki["chain.crt"])}
  tls.key: {b64(pki["srv.key"])}{key}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw-ocsp, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - name: https
    protocol: HTTPS
    port: {port}
    hostname: ocsp.example.com
    tls: {{certificateRefs: [{{name: ocsp-cert}}]}}
"""


def btls_config(pki, echo_port, big_port, cc_port, need_port):
    """Backend TLS: one Service per BackendTLSPolicy variant (all on the same TLS echo pod),
    routes on the main Gateway's HTTP listener (host btls.example.com), and a second Gateway
    that presents a backend client certificate."""
    def pem_block(path):
        return "".join("    " + line for line in open(path).readlines())

    def svc(name, port, app_protocol=""):
        ap = f", appProtocol: {app_protocol}" if app_protocol else ""
        return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: https, port: 443, targetPort: {port}{ap}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: https, port: {port}}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""

    def policy(name, hostname, ca="btls-ca", sans=()):
        s = ""
        if sans:
            s = "    subjectAltNames:\n" + "".join(
                f"    - {{type: URI, uri: \"{v[4:]}\"}}\n" if v.startswith("URI:") else
                f"    - {{type: Hostname, hostname: {v[4:]}}}\n" for v in sans)
        return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  targetRefs: [{{group: "", kind: Service, name: {name}}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: {ca}}}]
    hostname: {hostname}
{s}"""

    variants = {  # service: (path, hostname, CA, subjectAltNames, appProtocol, port)
        "btls-ok": ("/ok", "abc.example.com", "btls-ca", (), "", echo_port),
        "btls-wrongca": ("/wrongca", "abc.example.com", "other-ca", (), "", echo_port),
        "btls-host": ("/host", "mismatch.example.com", "btls-ca", (), "", echo_port),
        "btls-san": ("/san", "sni.example.com", "btls-ca",
                     ("DNS:nothing.example.com", "URI:spiffe://abc.example.com/test-identity"), "",
                     echo_port),
        "btls-sanbad": ("/sanbad", "abc.example.com", "btls-ca",
                        ("URI:spiffe://def.example.com/test-identity", "DNS:def.example.com"), "",
                        echo_port),
        "btls-h2": ("/h2", "abc.example.com", "btls-ca", (), "kubernetes.io/h2c", echo_port),
        "btls-big": ("/big", "abc.example.com", "btls-ca", (), "", big_port),
        "btls-needcert": ("/needcert", "abc.example.com", "btls-ca", (), "", need_port),
    }
    out = ""
    for ca in ("btls-ca", "other-ca"):
        out += f"""---
apiVersion: v1
kind: ConfigMap
metadata: {{name: {ca}, namespace: default}}
data:
  ca.crt: |
{pem_block(pki[ca] + ".crt")}"""
    out += f"""---
apiVersion: v1
kind: Secret
metadata: {{name: btls-client, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(pki["btls-client"] + ".crt")}
  tls.key: {b64(pki["btls-client"] + ".key")}
"""
    rules = ""
    for name, (path, hostname, ca, sans, app_protocol, port) in variants.items():
        out += svc(name, port, app_protocol) + policy(name, hostname, ca, sans)
        rules += f"""  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
    backendRefs: [{{name: {name}, port: 443}}]
"""
    out += f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: btls, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  hostnames: [btls.example.com]
  rules:
{rules}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw-cc, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: http, protocol: HTTP, port: {cc_port}}}
  tls:
    backend:
      clientCertificateRef: {{group: "", kind: Secret, name: btls-client}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: btls-cc, namespace: default}}
spec:
  parentRefs: [{{name: gw-cc}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /needcert}}}}]
    backendRefs: [{{name: btls-needcert, port: 443}}]
  - backendRefs: [{{name: btls-ok, port: 443}}]
"""
    return out


def tls_big_backend(port, crt, key, size, client_ca=None):
    """An HTTP/1.1 backend over TLS whose every answer is `size` bytes (keep-alive): bodies
    larger than OpenSSL's records and the engine's buffers. With `client_ca` it requires a
    client certificate signed by that CA."""
    import threading
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    body = random.Random(7).randbytes(size)

    def serve(conn):
        try:
            t = ctx.wrap_socket(conn, server_side=True)
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    b = t.recv(65536)
                    if not b:
                        return
                    data += b
                data = data.split(b"\r\n\r\n", 1)[1]
                t.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(body) + body)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)

    def loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return body


def b64(path):
    import base64
    return base64.b64encode(open(path, "rb").read()).decode()


def config(http_port, https_port, ports, crt, key, extra_rule="", tls_port=0, more=""):
    eps = ""
    for name, port in ports.items():
        eps += f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: http, port: 8080, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""
    return f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cert, namespace: default}}
type: kubernetes.io/tls
data:
  tls.crt: {b64(crt)}
  tls.key: {b64(key)}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - name: http
    protocol: HTTP
    port: {http_port}
  - name: https-foo
    protocol: HTTPS
    port: {https_port}
    hostname: foo.example.com
    tls: {{certificateRefs: [{{name: cert}}]}}
  - name: https-any
    protocol: HTTPS
    port: {https_port}
    hostname: "*.example.com"
    tls: {{certificateRefs: [{{name: cert}}]}}
  - name: tls-pass
    protocol: TLS
    port: {tls_port}
    hostname: "*.pass.example.com"
    tls: {{mode: Passthrough}}
  - name: tls-term
    protocol: TLS
    port: {tls_port}
    hostname: "term.example.com"
    tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: pass, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: tls-pass}}]
  hostnames: [a.pass.example.com]
  rules:
  - backendRefs: [{{name: echo-tls, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: term, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: tls-term}}]
  hostnames: [term.example.com]
  rules:
  - backendRefs: [{{name: echo-b, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  hostnames: [web.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /a}}}}]
    backendRefs: [{{name: echo-a, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /b}}, headers: [{{name: x-pick, value: two}}]}}]
    backendRefs: [{{name: echo-b, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /split}}}}]
    backendRefs: [{{name: echo-a, port: 8080, weight: 50}}, {{name: echo-b, port: 8080, weight: 50}}]
  - matches: [{{path: {{type: PathPrefix, value: /filtered}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: X-Added, value: by-sluice}}]
        remove: [X-Drop]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{{name: X-Resp, value: hello}}]
    backendRefs: [{{name: echo-a, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /dead}}}}]
    backendRefs: [{{name: echo-dead, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /bad}}}}]
    backendRefs: [{{name: echo-bad, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /rewrite}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /inner}}}}
    backendRefs: [{{name: echo-b, port: 8080}}]
{extra_rule}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: https-foo}}]
  hostnames: [foo.example.com]
  rules:
  - backendRefs: [{{name: echo-a, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: secure-any, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: https-any}}]
  rules:
  - backendRefs: [{{name: echo-b, port: 8080}}]
""" + eps + more


def main():
    for b in (CP, L7):
        if not os.path.exists(b):
            print(f"missing {b}: build first", file=sys.stderr)
            return 1
    if not shutil.which("curl") or not shutil.which("openssl"):
        print("curl/openssl missing: skipped")
        return 77
    work = tempfile.mkdtemp(prefix="sluice-l7-test.")
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
        # A clean stop, and no sanitizer report (the suite also runs on an ASan build).
        l7_rc = named["l7"].returncode if "l7" in named else None
        text = open(os.path.join(work, "procs.log"), errors="replace").read()
        sanitizer = any(m in text for m in ("AddressSanitizer", "LeakSanitizer", "runtime error:"))
        check(l7_rc == 0 and not sanitizer,
              f"sluice-l7 stops cleanly on SIGTERM (exit {l7_rc}), no sanitizer report")
        if failures:
            rc = 1
        if failures:
            print("---- process log (tail)")
            print("".join(open(os.path.join(work, "procs.log")).readlines()[-60:]))
        if os.environ.get("SLUICE_KEEP_WORK"):
            print("work dir kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


def run(work, log):
    crt, key = make_cert(work)
    http_port, https_port, admin_port = free_port(), free_port(), free_port()
    ports = {"echo-a": free_port(), "echo-b": free_port(), "echo-dead": free_port(),
             "echo-bad": free_port(), "echo-tls": free_port()}
    tls_port = free_port()
    pki = make_backend_pki(work)
    btls_port, big_port, cc_port, need_port = free_port(), free_port(), free_port(), free_port()
    start([sys.executable, ECHO, "--tls-listen", f"127.0.0.1:{btls_port}",
           "--cert", pki["btls-srv"] + ".crt", "--key", pki["btls-srv"] + ".key",
           "--client-ca", pki["btls-ca"] + ".crt", "--pod", "echo-btls-pod",
           "--namespace", "default"], log)
    big_body = tls_big_backend(big_port, pki["btls-srv"] + ".crt", pki["btls-srv"] + ".key",
                               3 << 20)
    tls_big_backend(need_port, pki["btls-srv"] + ".crt", pki["btls-srv"] + ".key", 2,
                    client_ca=pki["btls-ca"] + ".crt")
    btls = btls_config(pki, btls_port, big_port, cc_port, need_port)
    # A second Gateway whose route has no hostnames: requests without a Host reach it.
    plain_port = free_port()
    btls += f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: plain, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners:
  - {{name: http, protocol: HTTP, port: {plain_port}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: plain, namespace: default}}
spec:
  parentRefs: [{{name: plain}}]
  rules:
  - backendRefs: [{{name: echo-a, port: 8080}}]
"""
    start([sys.executable, ECHO, "--listen", f"127.0.0.1:{free_port()}", "--tls-listen",
           f"127.0.0.1:{ports['echo-tls']}", "--cert", crt, "--key", key, "--pod", "echo-tls-pod",
           "--namespace", "default"], log)
    bad_backend(ports["echo-bad"])
    for name in ("echo-a", "echo-b"):
        start([sys.executable, ECHO, "--listen", f"127.0.0.1:{ports[name]}", "--pod",
               name + "-pod", "--namespace", "default"], log)
    cfg = os.path.join(work, "config")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "gw.yaml"), "w") as f:
        f.write(config(http_port, https_port, ports, crt, key, tls_port=tls_port, more=btls))
    ocsp_pki, ocsp_port = make_ocsp_pki(work), free_port()
    with open(os.path.join(cfg, "ocsp.yaml"), "w") as f:
        f.write(ocsp_config(ocsp_pki, ocsp_port, ocsp_pki["resp.der"]))
    sock = os.path.join(work, "l7.sock")
    status = os.path.join(work, "status")
    named["l7"] = start([L7, "--dp-socket", sock, "--stats-file", os.path.join(work, "l7-stats.json"),
           "--admin", f"127.0.0.1:{admin_port}", "--header-timeout-ms", "700",
           "--access-log", os.path.join(work, "access.log")], log)
    wait_for(lambda: os.path.exists(sock))
    start([CP, "--config-dir", cfg, "--status-dir", status, "--dp-socket", sock,
           "--address", "127.0.0.1"], log)
    gw_status = os.path.join(status, "Gateway", "default", "gw.yaml")
    check(wait_for(lambda: "Programmed" in open(gw_status).read() and
                   'status: "True"' in open(gw_status).read().split("Programmed")[1][:200]),
          "Gateway Programmed=True once sluice-l7 acknowledged the IR")
    for name in ("echo-a", "echo-b"):
        wait_for(lambda: socket.create_connection(("127.0.0.1", ports[name]), timeout=1).close() is None)
    check(wait_for(lambda: curl([f"http://127.0.0.1:{http_port}/a", "-H", "Host: web.example.com"]).returncode == 0),
          "engine answers on the HTTP listener")

    def get(path, host="web.example.com", headers=(), extra=()):
        args = ["-i", f"http://127.0.0.1:{http_port}{path}", "-H", f"Host: {host}"]
        for h in headers:
            args += ["-H", h]
        return curl(args + list(extra))

    def body_json(r):
        try:
            return json.loads(r.stdout.split("\r\n\r\n", 1)[1])
        except (IndexError, ValueError):
            print("    (unexpected answer: rc=%d %r %r)" % (r.returncode, r.stdout[:300], r.stderr[:300]))
            return {"pod": None, "path": None, "headers": {}}

    r = get("/a/x?q=1")
    j = body_json(r)
    check(" 200 " in r.stdout.split("\r\n")[0] and j["pod"] == "echo-a-pod" and j["path"] == "/a/x?q=1",
          "PathPrefix /a -> echo-a with path and query intact")
    r = get("/b", headers=["X-Pick: two"])
    check(body_json(r)["pod"] == "echo-b-pod", "header match x-pick: two -> echo-b")
    r = get("/b")
    check(" 404 " in r.stdout.split("\r\n")[0], "no rule matches -> 404")
    r = get("/a", host="other.example.org")
    check(" 404 " in r.stdout.split("\r\n")[0], "unknown host -> 404")
    # HTTP/1.0 without Host (openssl s_time sends such requests): the backend, spoken to in
    # HTTP/1.1, gets the authority the client reached (RFC 9112 3.3), not an empty Host that
    # nginx answers with 400 and a close.
    def raw_json(req):
        out = raw(plain_port, req)
        try:
            return status_of(out), json.loads(out.split(b"\r\n\r\n", 1)[1])
        except (IndexError, ValueError):
            return status_of(out), {}
    for _ in range(2):
        st, j = raw_json(b"GET /no-host HTTP/1.0\r\n\r\n")
        check(st == 200 and j.get("host") == f"127.0.0.1:{plain_port}" and j.get("pod") == "echo-a-pod",
              f"HTTP/1.0 without Host -> Host 127.0.0.1:{plain_port} upstream ({st}, {j.get('host')!r})")
    st, j = raw_json(b"GET /h HTTP/1.0\r\nHost: given.example\r\n\r\n")
    check(st == 200 and j.get("host") == "given.example", f"HTTP/1.0 with a Host keeps it ({j.get('host')!r})")
    r = get("/filtered", headers=["X-Drop: 1", "X-Keep: 2"])
    j = body_json(r)
    hs = {k.lower(): v for k, v in j["headers"].items()}
    check(hs.get("x-added") == ["by-sluice"] and "x-drop" not in hs and hs.get("x-keep") == ["2"],
          "RequestHeaderModifier set/remove reach the backend")
    check("x-resp: hello" in r.stdout.lower(), "ResponseHeaderModifier adds X-Resp")
    check(hs.get("x-forwarded-for") == ["127.0.0.1"] and hs.get("x-forwarded-proto") == ["http"],
          "X-Forwarded-For / -Proto set")
    r = get("/old/page")
    head = r.stdout.split("\r\n\r\n")[0].lower()
    check(" 301 " in r.stdout.split("\r\n")[0] and f"location: http://web.example.com:{http_port}/new/page" in head,
          "RequestRedirect ReplacePrefixMatch 301 -> /new/page")
    r = get("/rewrite/x")
    check(body_json(r)["path"] == "/inner/x", "URLRewrite ReplacePrefixMatch -> /inner/x")
    r = get("/dead")
    check(" 503 " in r.stdout.split("\r\n")[0], "backend that refuses connections -> 503")

    # Weighted split over 400 requests, each on a new connection.
    counts = {"echo-a-pod": 0, "echo-b-pod": 0}
    args = []
    for i in range(400):
        if i:
            args.append("--next")
        args += [f"http://127.0.0.1:{http_port}/split", "-H", "Host: web.example.com"]
    r = curl(args, timeout=60)
    import re
    for pod in re.findall(r'"pod"\s*:\s*"([^"]+)"', r.stdout):
        counts[pod] = counts.get(pod, 0) + 1
    check(sum(counts.values()) == 400 and 140 <= counts["echo-a-pod"] <= 260,
          f"50/50 weights over 400 requests: {counts}")

    # Keep-alive: several requests on one connection, backend connections pooled.
    r = curl(["-v", f"http://127.0.0.1:{http_port}/a/1", "-H", "Host: web.example.com",
              f"http://127.0.0.1:{http_port}/a/2", "-H", "Host: web.example.com"])
    check("Re-using existing connection" in r.stderr or "Reusing existing connection" in r.stderr,
          "client keep-alive: curl reuses its connection")

    # Pipelining: two requests in one write, two answers in order.
    out = raw(http_port, b"GET /a/p1 HTTP/1.1\r\nHost: web.example.com\r\n\r\n"
                         b"GET /b/p2 HTTP/1.1\r\nHost: web.example.com\r\nX-Pick: two\r\n"
                         b"Connection: close\r\n\r\n")
    check(out.count(b"HTTP/1.1 200") == 2 and out.find(b"/a/p1") < out.find(b"/b/p2") and
          b"echo-a-pod" in out and b"echo-b-pod" in out, "pipelined requests answered in order")

    # Chunked request body streamed to the backend.
    out = raw(http_port, b"POST /a/up HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    check(status_of(out) == 200 and b'"method": "POST"' in out.replace(b'":"', b'": "'),
          "chunked POST forwarded (200)")
    body = b"x" * 300000
    out = raw(http_port, b"POST /a/big HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(body) + body, timeout=10)
    check(status_of(out) == 200, "300 kB Content-Length body streamed (200)")

    # Smuggling and malformed requests: 400 and the connection closed.
    bad = {
        "CL+TE": b"POST /a HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "two different CL": b"POST /a HTTP/1.1\r\nHost: web.example.com\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
        "obs-fold": b"GET /a HTTP/1.1\r\nHost: web.example.com\r\nX-A: 1\r\n  folded\r\n\r\n",
        "bare LF": b"GET /a HTTP/1.1\nHost: web.example.com\n\n",
        "duplicate Host": b"GET /a HTTP/1.1\r\nHost: web.example.com\r\nHost: evil.example.com\r\n\r\n",
        "space before colon": b"GET /a HTTP/1.1\r\nHost : web.example.com\r\n\r\n",
        "TE not chunked-last": b"POST /a HTTP/1.1\r\nHost: web.example.com\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "absolute-form mismatch": b"GET http://other.example.com/a HTTP/1.1\r\nHost: web.example.com\r\n\r\n",
    }
    for what, req in bad.items():
        out = raw(http_port, req)
        check(status_of(out) == 400, f"smuggling/malformed: {what} -> 400 ({status_of(out)})")
    out = raw(http_port, b"GET /a HTTP/1.1\r\nHost: web.example.com\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n")
    check(status_of(out) == 431, f"20 kB header -> 431 ({status_of(out)})")

    # Slowloris: a head that never completes gets 408 after --header-timeout-ms.
    s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
    s.sendall(b"GET /a HTTP/1.1\r\nHost: web.exa")
    t0 = time.time()
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
    except socket.timeout:
        pass
    s.close()
    check(status_of(got) == 408 and time.time() - t0 < 4, "slow request head -> 408 after the header timeout")

    # HTTPS: SNI picks the listener; Host that selects another listener -> 421.
    def https(sni, path="/", host=None):
        args = ["-i", "--cacert", crt, "--resolve", f"{sni}:{https_port}:127.0.0.1",
                f"https://{sni}:{https_port}{path}"]
        if host:
            args += ["-H", f"Host: {host}"]
        return curl(args)
    r = https("foo.example.com")
    check(r.returncode == 0 and body_json(r)["pod"] == "echo-a-pod", "HTTPS foo.example.com (exact listener) -> echo-a")
    r = https("bar.example.com")
    check(r.returncode == 0 and body_json(r)["pod"] == "echo-b-pod", "HTTPS bar.example.com (wildcard listener) -> echo-b")
    r = https("bar.example.com", host="foo.example.com")
    check(" 421 " in r.stdout.split("\r\n")[0], "SNI bar + Host foo (another listener) -> 421")
    j = body_json(https("foo.example.com"))
    hs = {k.lower(): v for k, v in j["headers"].items()}
    check(hs.get("x-forwarded-proto") == ["https"], "X-Forwarded-Proto: https over TLS")
    ctx = ssl.create_default_context(cafile=crt)
    try:
        with socket.create_connection(("127.0.0.1", https_port), timeout=3) as s:
            with ctx.wrap_socket(s, server_hostname="nothing.example.org") as t:
                t.sendall(b"GET / HTTP/1.1\r\nHost: nothing.example.org\r\n\r\n")
                t.recv(100)
        refused = False
    except (ssl.SSLError, ConnectionError, OSError):
        refused = True
    check(refused, "SNI no listener accepts -> handshake refused")

    # Idle keep-alive TLS connections hand OpenSSL's record buffers (~34 KiB) back after a
    # second, and serve the next request as before (OpenSSL allocates them again).
    def l7_stat(name):
        return json.loads(curl([f"http://127.0.0.1:{admin_port}/stats"]).stdout)["l7"].get(name, 0)
    freed0 = l7_stat("tls_buffers_freed")
    conns = []
    try:
        for _ in range(5):
            t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port), timeout=3),
                                server_hostname="foo.example.com")
            t.sendall(b"GET /a HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
            t.recv(65536)
            conns.append(t)
        released = wait_for(lambda: l7_stat("tls_buffers_freed") - freed0 >= 5, timeout=5)
        again = 0
        for t in conns:
            t.sendall(b"GET /a HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
            again += b" 200 " in t.recv(65536).split(b"\r\n")[0]
        check(released and again == 5,
              f"idle TLS connections: record buffers released ({l7_stat('tls_buffers_freed') - freed0}), "
              f"then {again}/5 served again")
    finally:
        for t in conns:
            t.close()

    # TLSRoute: passthrough (the backend terminates; sluice reads only the SNI), terminate
    # (sluice terminates and relays the plaintext), and an SNI without a route (reset).
    def tls_get(name):
        return curl(["-i", "--cacert", crt, "--resolve", f"{name}:{tls_port}:127.0.0.1",
                     f"https://{name}:{tls_port}/t"])
    r = tls_get("a.pass.example.com")
    j = body_json(r) if r.returncode == 0 else {}
    if not j.get("pod"):
        print("    (passthrough answer: rc=%d %r %r)" % (r.returncode, r.stdout[:200], r.stderr[:300]))
    check(j.get("pod") == "echo-tls-pod" and (j.get("tls") or {}).get("serverName") == "a.pass.example.com",
          "TLSRoute passthrough: the backend itself terminates TLS and sees the SNI")
    r = tls_get("term.example.com")
    j = body_json(r) if r.returncode == 0 else {}
    check(j.get("pod") == "echo-b-pod" and "tls" not in j,
          "TLSRoute terminate: sluice terminates, the backend gets plaintext")
    r = tls_get("b.pass.example.com")
    check(r.returncode != 0, f"TLS listener, SNI without a TLSRoute: connection reset (curl rc {r.returncode})")
    out = raw(tls_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check(out == b"", "plaintext on a TLS listener: closed without an answer")

    # TLS bad input (issue 5): refused cleanly and counted; the engine keeps serving.
    def tls_failures():
        return json.loads(curl([f"http://127.0.0.1:{admin_port}/stats"]).stdout)["l7"].get("tls_failures", 0)
    fails0 = tls_failures()
    t0 = time.time()
    out = raw(https_port, bytes(random.getrandbits(8) for _ in range(3000)), timeout=8)
    check(len(out) < 64 and time.time() - t0 < 6,
          f"garbage instead of a ClientHello: closed in {time.time() - t0:.1f}s ({len(out)} bytes back)")
    t0 = time.time()
    out = raw(https_port, b"\x16\x03\x01\xff\xff\x01" + b"\x00" * 200, timeout=8)
    check(len(out) < 64 and time.time() - t0 < 6,
          f"a 64 KiB TLS record announced (over the 16 KiB limit): closed in {time.time() - t0:.1f}s")
    t0 = time.time()
    out = raw(tls_port, b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00", timeout=8)
    check(len(out) < 64 and time.time() - t0 < 6,
          f"a truncated ClientHello on the passthrough listener: closed in {time.time() - t0:.1f}s")
    check(wait_for(lambda: tls_failures() >= fails0 + 2, 3),
          f"TLS failures counted ({fails0} -> {tls_failures()})")

    def split_hello(port, sni, path, chunk=7, reqs=1):
        """Handshake whose ClientHello goes out in `chunk`-byte TCP segments; returns the answer.
        reqs > 1: that many requests, each its own TLS record, sent in one segment together
        with the client's Finished (what read-ahead must not leave waiting in OpenSSL)."""
        ctx = ssl.create_default_context(cafile=crt)
        inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, outg, server_hostname=sni)
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        first = True
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    data = outg.read()
                    if first:
                        for i in range(0, len(data), chunk):
                            s.sendall(data[i:i + chunk])
                            time.sleep(0.002)
                        first = False
                    elif data:
                        s.sendall(data)
                    got = s.recv(65536)
                    if not got:
                        return b""
                    inc.write(got)
            flight = outg.read() if outg.pending else b""
            for i in range(reqs):
                last = i == reqs - 1
                obj.write(f"GET {path} HTTP/1.1\r\nHost: {sni}\r\n{'Connection: close' if last else 'X-N: ' + str(i)}\r\n\r\n".encode())
            if reqs == 1 and flight:
                s.sendall(flight)
                flight = b""
            s.sendall(flight + outg.read())
            resp = b""
            while True:
                try:
                    chunk_in = obj.read(65536)
                    if not chunk_in:
                        break  # close_notify: the answer is complete
                    resp += chunk_in
                except ssl.SSLWantReadError:
                    got = s.recv(65536)
                    if not got:
                        break
                    inc.write(got)
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
            return resp
        except (OSError, ssl.SSLError) as e:
            print(f"    (split ClientHello to port {port}: {e})")
            return b""
        finally:
            s.close()
    resp = split_hello(https_port, "foo.example.com", "/a/split-hello")
    check(status_of(resp) == 200 and b"echo-a-pod" in resp,
          "a ClientHello split over ~80 TCP segments: terminated, routed by its SNI")
    resp = split_hello(https_port, "foo.example.com", "/a/records", chunk=4096, reqs=3)
    check(resp.count(b"HTTP/1.1 200") == 3 and resp.count(b"echo-a-pod") == 3,
          f"3 requests in 3 TLS records in one segment with the Finished: 3 answers ({resp.count(b'HTTP/1.1 200')})")
    resp = split_hello(tls_port, "a.pass.example.com", "/t")
    check(status_of(resp) == 200 and b"echo-tls-pod" in resp,
          "the same on the passthrough listener: the SNI peeker reassembles it")
    rn = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{https_port}", "-servername",
                         "foo.example.com", "-tls1_2", "-CAfile", crt, "-msg"],
                        input="R\n", capture_output=True, text=True, timeout=10)
    rtext = (rn.stdout + rn.stderr).lower()
    # -msg traces every record: a refused renegotiation shows the server's no_renegotiation
    # alert; an accepted one would carry on with a second handshake and no such alert.
    refused = "renegotiating" in rtext and "no_renegotiation" in rtext
    check(refused, "a TLS 1.2 renegotiation attempt is refused (no second handshake)")
    if not refused:
        print("    (s_client said: %r)" % (rn.stdout[-1500:] + rn.stderr[-600:]))
    r = curl(["-i", "--cacert", crt, "--resolve", f"foo.example.com:{https_port}:127.0.0.1",
              f"https://foo.example.com:{https_port}/"])
    check(r.returncode == 0 and " 200 " in r.stdout.split("\r\n")[0], "HTTPS still served after the bad input")

    # OCSP stapling (issue 5): the Secret's tls.ocsp-staple is stapled when the client asks;
    # a changed Secret (staple removed, then an invalid one) takes effect for new handshakes.
    def ocsp_status():
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{ocsp_port}",
                            "-servername", "ocsp.example.com", "-status",
                            "-CAfile", ocsp_pki["ca.crt"]],
                           input="", capture_output=True, text=True, timeout=10)
        return r.stdout + r.stderr

    def l7_now():
        return json.loads(curl([f"http://127.0.0.1:{admin_port}/stats"]).stdout)["l7"]

    def set_ocsp(staple):
        tmp = os.path.join(cfg, "ocsp.yaml.tmp")
        with open(tmp, "w") as f:
            f.write(ocsp_config(ocsp_pki, ocsp_port, staple))
        os.rename(tmp, os.path.join(cfg, "ocsp.yaml"))

    stapled = lambda out: ("OCSP Response Status: successful" in out and
                           "Cert Status: good" in out and "Verify return code: 0 (ok)" in out)
    out = ""
    ok = wait_for(lambda: stapled(ocsp_status()), timeout=10)
    out = ocsp_status()
    check(ok and l7_now().get("ocsp_staples") == 1 and l7_now().get("ocsp_staples_refused") == 0,
          "OCSP staple from the Secret: openssl s_client -status shows 'OCSP Response Status: "
          "successful' and 'Cert Status: good' (ocsp_staples 1)")
    if not ok:
        print("    (s_client said: %r)" % out[-1500:])
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{ocsp_port}",
                        "-servername", "ocsp.example.com", "-CAfile", ocsp_pki["ca.crt"]],
                       input="", capture_output=True, text=True, timeout=10)
    check("OCSP response" not in r.stdout and "Verify return code: 0 (ok)" in r.stdout,
          "a client that does not ask (no -status) gets no OCSP response")
    set_ocsp(None)
    nothing = lambda out: "OCSP response: no response sent" in out
    ok = wait_for(lambda: nothing(ocsp_status()), timeout=10)
    check(ok and l7_now().get("ocsp_staples") == 0,
          "Secret changed, tls.ocsp-staple removed: 'OCSP response: no response sent'")
    set_ocsp(b"not an OCSP response")
    said = "certificate default/ocsp-cert: OCSP staple (tls.ocsp-staple) not stapled: "
    ok = wait_for(lambda: said in open(os.path.join(work, "procs.log"), errors="replace").read() and
                  l7_now().get("ocsp_staples_refused") == 1, timeout=10)
    out = ocsp_status()
    line = next((x for x in open(os.path.join(work, "procs.log"), errors="replace").read().splitlines()
                 if said in x), "")
    check(ok and nothing(out) and "Verify return code: 0 (ok)" in out,
          f"an invalid staple: not stapled, the listener still serves, logged and counted ({line})")
    set_ocsp(ocsp_pki["resp.der"])
    ok = wait_for(lambda: stapled(ocsp_status()), timeout=10)
    check(ok and 'sluice_l7_ocsp_staples{state="stapled"} 1' in
          curl([f"http://127.0.0.1:{admin_port}/metrics"]).stdout,
          "the valid staple back: stapled again, sluice_l7_ocsp_staples{state=\"stapled\"} 1")

    # A backend that resets in the middle of a response: the client sees a short response
    # and a closed connection; the engine keeps serving.
    out = raw(http_port, b"GET /bad/reset HTTP/1.1\r\nHost: web.example.com\r\n\r\n", timeout=5)
    check(status_of(out) == 200 and len(out) < 100000, "backend reset mid-response: truncated answer, connection closed")
    r = get("/a/after-reset")
    check(" 200 " in r.stdout.split("\r\n")[0], "engine serves after a backend reset")

    # A client that never reads an 8 MB response: buffers stay bounded.
    l7pid = named["l7"].pid
    before = rss_kb(l7pid)
    lazy = []
    for _ in range(8):
        s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /bad/big HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
        lazy.append(s)
    time.sleep(1.5)
    grown = rss_kb(l7pid) - before
    check(grown < 16 * 1024, f"8 clients not reading 8 MB answers: engine memory grew {grown} kB (< 16 MB)")
    r = get("/a/while-lazy")
    check(" 200 " in r.stdout.split("\r\n")[0], "engine serves others meanwhile")
    for s in lazy:
        s.close()

    # 10,000 idle connections: all held, and a request still gets through.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 10000
    if hard >= want + 2000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want + 4000), hard))
        idle = []
        before = rss_kb(l7pid)

        def l7s():
            return json.load(open(os.path.join(work, "l7-stats.json")))["l7"]
        accepted0 = l7s()["connections"]
        try:
            t0 = time.time()
            for _ in range(want):
                idle.append(socket.create_connection(("127.0.0.1", http_port), timeout=5))
            opened = time.time() - t0
            peak_kb = rss_kb(l7pid) - before
            r = get("/a/with-10k-idle")
            served = " 200 " in r.stdout.split("\r\n")[0]
            # Connections that never send a request are closed after the header timeout.
            reaped = wait_for(lambda: l7s()["connections"] - accepted0 >= want and
                              l7s()["active_connections"] == 0, timeout=10)
            check(served and reaped and peak_kb < 64 * 1024,
                  f"10,000 idle connections ({opened:.1f} s to open): accepted, a request served "
                  f"meanwhile, memory +{peak_kb} kB, all reaped by the header timeout")
        finally:
            for s in idle:
                s.close()
    else:
        print(f"  skip  10,000 idle connections (descriptor limit {hard})")

    # Gateway-to-backend TLS (BackendTLSPolicy).
    def admin_stats():
        return json.loads(curl([f"http://127.0.0.1:{admin_port}/stats"]).stdout)["l7"]

    def btls_get(path, port=None, host="btls.example.com"):
        return curl(["-i", f"http://127.0.0.1:{port or http_port}{path}", "-H", f"Host: {host}"])

    def code(r):
        try:
            return int(r.stdout.split("\r\n", 1)[0].split(" ")[1])
        except (IndexError, ValueError):
            return 0

    before = admin_stats()
    check(wait_for(lambda: code(btls_get("/ok")) == 200, timeout=10), "backend TLS: /ok answers 200")
    j = body_json(btls_get("/ok"))
    tls = j.get("tls") or {}
    check(j.get("pod") == "echo-btls-pod" and tls.get("serverName") == "abc.example.com" and
          tls.get("negotiatedProtocol") == "http/1.1" and not tls.get("peerCertificates"),
          f"right CA + hostname: the backend sees TLS with SNI abc.example.com, ALPN http/1.1, "
          f"no client certificate ({tls})")
    for path, what in (("/wrongca", "a CA that did not sign the backend's certificate"),
                       ("/host", "a hostname the certificate does not carry"),
                       ("/sanbad", "subjectAltNames the certificate does not carry")):
        r = btls_get(path)
        check(500 <= code(r) < 600 and "certificate verify failed" in r.stdout,
              f"backend TLS with {what} -> {code(r)} ({r.stdout.splitlines()[-1][:120] if r.stdout else r.stderr})")
    j = body_json(btls_get("/san"))
    check(j.get("pod") == "echo-btls-pod" and (j.get("tls") or {}).get("serverName") == "sni.example.com",
          "subjectAltNames (URI) verify instead of the hostname, which stays the SNI")
    j = body_json(btls_get("/h2"))
    check(j.get("proto") == "HTTP/2.0" and (j.get("tls") or {}).get("negotiatedProtocol") == "h2",
          f"appProtocol kubernetes.io/h2c under a BackendTLSPolicy: HTTP/2 over TLS (ALPN h2): "
          f"{j.get('proto')} {(j.get('tls') or {}).get('negotiatedProtocol')}")
    want_pem = open(pki["btls-client"] + ".crt").read().strip()
    wait_for(lambda: code(btls_get("/", port=cc_port)) == 200, timeout=10)
    j = body_json(btls_get("/", port=cc_port))
    seen = [p.strip() for p in (j.get("tls") or {}).get("peerCertificates") or []]
    check(j.get("pod") == "echo-btls-pod" and want_pem in seen,
          "Gateway spec.tls.backend.clientCertificateRef: the backend receives the client certificate")
    f0 = admin_stats()["backend_tls_failures"]
    r = btls_get("/needcert", port=cc_port)
    check(code(r) == 200, f"a backend that requires a client certificate: 200 with the Gateway's ({code(r)})")
    r = btls_get("/needcert")
    check(500 <= code(r) < 600 and admin_stats()["backend_tls_failures"] > f0,
          f"... and {code(r)} without one, counted in backend_tls_failures "
          f"({r.stdout.splitlines()[-1][:100] if r.stdout else r.stderr})")
    # Pooled TLS connections: sequential requests share one handshake.
    s0 = admin_stats()
    oks = sum(code(btls_get("/ok")) == 200 for _ in range(6))
    s1 = admin_stats()
    hs = s1["backend_tls_handshakes"] - s0["backend_tls_handshakes"]
    check(oks == 6 and hs <= 1 and s1["upstream_reused"] - s0["upstream_reused"] >= 5,
          f"6 requests over pooled TLS connections: {hs} new handshake(s)")
    # A body larger than TLS records and the engine's buffers, both ways.
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "-o", "-",
                        f"http://127.0.0.1:{http_port}/big", "-H", "Host: btls.example.com"],
                       capture_output=True)
    check(r.stdout == big_body, f"3 MB response over backend TLS arrives intact ({len(r.stdout)} bytes)")
    upload = b"u" * 700000
    out = raw(http_port, b"POST /ok/up HTTP/1.1\r\nHost: btls.example.com\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % len(upload) + upload, timeout=10)
    check(status_of(out) == 200, "700 kB request body over backend TLS (200)")
    after = admin_stats()
    check(after["backend_tls_failures"] - before["backend_tls_failures"] >= 3 and
          "sluice_l7_backend_tls_failures_total" in curl([f"http://127.0.0.1:{admin_port}/metrics"]).stdout,
          f"backend_tls_handshakes / backend_tls_failures counted ({after['backend_tls_handshakes']}/"
          f"{after['backend_tls_failures']})")
    btls_before_change = admin_stats()["backend_tls_handshakes"]
    check(code(btls_get("/ok")) == 200, "backend TLS: a pooled connection before the change")

    # Configuration change: a keep-alive connection stays up and sees the new rule.
    # A TLS session ticket taken before the config change (openssl s_client -sess_out).
    sess = os.path.join(work, "tls.sess")

    def s_client(*more):
        # A whole request with Connection: close and -ign_eof: s_client reads until the
        # server closes, so the TLS 1.3 ticket (sent after the handshake) is always received,
        # however slow the engine (an ASan build) is.
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{https_port}",
                               "-servername", "foo.example.com", "-CAfile", crt, "-ign_eof", *more],
                              input="GET / HTTP/1.1\r\nHost: foo.example.com\r\nConnection: close\r\n\r\n",
                              capture_output=True, text=True, timeout=15).stdout
    s_client("-sess_out", sess)
    s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
    s.sendall(b"GET /a/before HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
    first = s.recv(65536)
    extra = """  - matches: [{path: {type: PathPrefix, value: /new-rule}}]
    backendRefs: [{name: echo-b, port: 8080}]
"""
    with open(os.path.join(cfg, "gw.yaml.tmp"), "w") as f:
        f.write(config(http_port, https_port, ports, crt, key, extra, tls_port=tls_port, more=btls))
    os.rename(os.path.join(cfg, "gw.yaml.tmp"), os.path.join(cfg, "gw.yaml"))
    ok = wait_for(lambda: b"echo-b-pod" in raw(http_port, b"GET /new-rule HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n"), timeout=10)
    s.sendall(b"GET /new-rule/on-old-conn HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
    second = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            second += b
    except socket.timeout:
        pass
    s.close()
    check(status_of(first) == 200 and ok and status_of(second) == 200 and b"echo-b-pod" in second,
          "config change: new rule served; the established keep-alive connection keeps working")
    r = curl(["-i", f"http://127.0.0.1:{http_port}/ok", "-H", "Host: btls.example.com"])
    hs = admin_stats()["backend_tls_handshakes"] - btls_before_change
    check(" 200 " in r.stdout.split("\r\n")[0] and hs == 0,
          f"config change without a policy change: the TLS context and its pooled backend "
          f"connection are reused ({hs} new handshake(s))")
    out = s_client("-sess_in", sess) if os.path.exists(sess) else ""
    check("Reused, TLSv1.3" in out,
          "a TLS session ticket issued before the config change resumes after it (openssl s_client)")

    # Counters: stats file and Prometheus text.
    def l7_stats():
        return json.load(open(os.path.join(work, "l7-stats.json"))).get("l7", {})

    def counted(l7):
        return (l7.get("requests", 0) > 400 and l7.get("status_2xx", 0) > 400 and
                l7.get("bad_requests", 0) >= 8 and l7.get("tls_handshakes", 0) >= 3 and
                l7.get("upstream_reused", 0) > 0)
    wait_for(lambda: counted(l7_stats()), timeout=4)
    l7 = l7_stats()
    check(counted(l7), f"stats file counts requests, 2xx, bad requests, TLS, pooled backend reuse: {l7}")
    m = curl([f"http://127.0.0.1:{admin_port}/metrics"]).stdout
    check('sluice_l7_responses_total{class="2xx"}' in m, "Prometheus /metrics on the admin port")
    series = 'sluice_l7_route_duration_seconds_count{route="default/web",rule="2",backend="default/echo-a:8080"}'
    wait_for(lambda: series in curl([f"http://127.0.0.1:{admin_port}/metrics"]).stdout, timeout=3)
    m = curl([f"http://127.0.0.1:{admin_port}/metrics"]).stdout
    line = next((x for x in m.splitlines() if x.startswith(series)), "")
    check(line and int(line.split()[-1]) >= 140 and
          'sluice_l7_route_responses_total{route="default/web",rule="2",backend="default/echo-b:8080",class="2xx"}' in m,
          f"per route/backend metrics with a latency histogram ({line})")
    acc = open(os.path.join(work, "access.log")).read()
    check("GET web.example.com /a/x?q=1 200" in acc, "access log line per request")

    return 1 if failures else 0


if __name__ == "__main__":
    code = main()
    print(f"l7_http: {len(failures)} failure(s)")
    sys.exit(code)
