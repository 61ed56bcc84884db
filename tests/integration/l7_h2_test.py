#!/usr/bin/env python3
"""End-to-end test of HTTP/2 and gRPC in the L7 engine, on loopback (no root needed).

sluice-controlplane compiles a Gateway (an HTTP and an HTTPS listener), HTTPRoutes and a
GRPCRoute, and sends the IR to sluice-l7. Backends: sluice-echo (HTTP/1.1, and h2c behind a
Service port with appProtocol kubernetes.io/h2c), a small HTTP/1.1 backend that hashes
request bodies and serves big and chunked answers, and two gRPC servers (python3-grpcio,
generic handlers on raw bytes). Real clients check what a user would:

- client side: h2 by ALPN (curl --http2), h2c with prior knowledge and by Upgrade, gateway
  answers over HTTP/2, request bodies with and without content-length, big and chunked
  responses, cookie crumbs, a multiplexed h2load run;
- backends: h2c (HTTP/2 and HTTP/1.1 clients);
- gRPC: unary and server-streaming calls, header-based GRPCRoute match, unknown method
  (UNIMPLEMENTED), an error status from the server (trailers relayed), a dead backend and an
  invalid backendRef (UNAVAILABLE), gRPC over TLS;
- defences: rapid reset, PING flood, CONTINUATION flood, HPACK bomb (GOAWAY each time; the
  engine keeps serving), a too-large header list (431 on the stream only), GOAWAY on stop.

usage: l7_h2_test.py BUILD_DIR
"""

import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

try:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import grpc
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
except ImportError:
    # Debian's python3-grpcio / python3-h2 live with the system interpreter; another
    # python3 first on PATH (pyenv) does not see them.
    if os.path.exists("/usr/bin/python3") and not os.environ.get("SLUICE_H2_REEXEC") and \
            os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3"):
        os.environ["SLUICE_H2_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    grpc = None
    h2 = None

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import l7_http_test as base  # noqa: E402  (helpers: processes, curl, certificates, checks)

from l7_http_test import CP, ECHO, L7, check, curl, free_port, make_cert, b64, start, wait_for  # noqa: E402

GRPC_SERVER = r'''
import sys
from concurrent import futures
import grpc
name, port = sys.argv[1], sys.argv[2]
def hello(req, ctx):
    return b"pong:" + req + b":" + name.encode()
def fail(req, ctx):
    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
def stream(req, ctx):
    for i in range(3):
        yield b"item%d:" % i + name.encode()
def big(req, ctx):
    return b"b" * (1 << 20)
h = grpc.method_handlers_generic_handler("test.Echo", {
    "Hello": grpc.unary_unary_rpc_method_handler(hello),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Big": grpc.unary_unary_rpc_method_handler(big),
})
s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
s.add_generic_rpc_handlers((h,))
s.add_insecure_port("127.0.0.1:" + port)
s.start()
print("grpc server", name, "on", port, flush=True)
s.wait_for_termination()
'''


def hash_backend(port):
    """HTTP/1.1 backend: /hash answers {len, sha256, te, cl, cookie} of the request body
    (Content-Length or chunked), /big 4 MB, /chunked a chunked body with a trailer."""

    def read_exact(conn, buf, n):
        while len(buf) < n:
            b = conn.recv(65536)
            if not b:
                raise OSError("eof")
            buf += b
        return buf

    def serve(conn):
        try:
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    b = conn.recv(65536)
                    if not b:
                        return
                    buf += b
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                path = lines[0].split(b" ")[1]
                hs = {}
                for ln in lines[1:]:
                    k, v = ln.split(b":", 1)
                    hs.setdefault(k.strip().lower().decode(), []).append(v.strip().decode())
                body = b""
                if "content-length" in hs:
                    n = int(hs["content-length"][0])
                    buf = read_exact(conn, buf, n)
                    body, buf = buf[:n], buf[n:]
                elif "transfer-encoding" in hs:
                    while True:
                        while b"\r\n" not in buf:
                            buf += conn.recv(65536)
                        size_line, buf = buf.split(b"\r\n", 1)
                        n = int(size_line.split(b";")[0], 16)
                        if n == 0:
                            while b"\r\n" not in buf:
                                buf += conn.recv(65536)
                            buf = buf.split(b"\r\n", 1)[1]  # no trailers sent by clients here
                            break
                        buf = read_exact(conn, buf, n + 2)
                        body += buf[:n]
                        buf = buf[n + 2:]
                if path.startswith(b"/hash"):
                    out = json.dumps({"len": len(body), "sha256": hashlib.sha256(body).hexdigest(),
                                      "te": hs.get("transfer-encoding"),
                                      "cl": hs.get("content-length"),
                                      "cookie": hs.get("cookie")}).encode()
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(out) + out)
                elif path.startswith(b"/big"):
                    data = b"z" * (4 << 20)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
                elif path.startswith(b"/chunked"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"6\r\nhello \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except (OSError, ValueError, IndexError):
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


def service(name, port, app_protocol=""):
    ap = f", appProtocol: {app_protocol}" if app_protocol else ""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: p, port: 8080, targetPort: {port}{ap}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: p, port: {port}{ap}}}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
"""


def config(http_port, https_port, ports, crt, key):
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
  - name: https
    protocol: HTTPS
    port: {https_port}
    hostname: "*.example.com"
    tls: {{certificateRefs: [{{name: cert}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}, {{name: gw, sectionName: https}}]
  hostnames: [web.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /a}}}}]
    backendRefs: [{{name: echo-a, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /h2c}}}}]
    backendRefs: [{{name: echo-h2c, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /hash}}}}, {{path: {{type: PathPrefix, value: /big}}}},
              {{path: {{type: PathPrefix, value: /chunked}}}}]
    backendRefs: [{{name: hash, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /slow}}}}]
    timeouts: {{request: 500ms}}
    backendRefs: [{{name: echo-a, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /resp}}}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{{name: X-Resp, value: hello}}]
    backendRefs: [{{name: echo-a, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: load, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  hostnames: [load.example.com]
  rules:
  - backendRefs: [{{name: echo-a, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: rpc, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}, {{name: gw, sectionName: https}}]
  hostnames: [grpc.example.com]
  rules:
  - matches:
    - method: {{service: test.Echo, method: Hello}}
      headers: [{{name: x-pick, value: b}}]
    backendRefs: [{{name: grpc-b, port: 8080}}]
  - matches:
    - method: {{service: test.Echo, method: Hello}}
    - method: {{service: test.Echo, method: Fail}}
    - method: {{service: test.Echo, method: Stream}}
    - method: {{service: test.Echo, method: Big}}
    backendRefs: [{{name: grpc-a, port: 8080}}]
  - matches: [{{method: {{service: test.Echo, method: Dead}}}}]
    backendRefs: [{{name: grpc-dead, port: 8080}}]
  - matches: [{{method: {{service: test.Echo, method: Invalid}}}}]
    backendRefs: [{{name: no-such-service, port: 8080}}]
""" + service("echo-a", ports["echo-a"]) + \
        service("echo-h2c", ports["echo-h2c"], "kubernetes.io/h2c") + \
        service("hash", ports["hash"]) + \
        service("grpc-a", ports["grpc-a"], "kubernetes.io/h2c") + \
        service("grpc-b", ports["grpc-b"], "kubernetes.io/h2c") + \
        service("grpc-dead", ports["grpc-dead"], "kubernetes.io/h2c")


# ---------------------------------------------------------------- raw HTTP/2 helpers

def frames(data):
    """(type, flags, stream, payload) of every complete frame in `data`."""
    out = []
    i = 0
    while i + 9 <= len(data):
        n = int.from_bytes(data[i:i + 3], "big")
        t, fl = data[i + 3], data[i + 4]
        sid = int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
        if i + 9 + n > len(data):
            break
        out.append((t, fl, sid, data[i + 9:i + 9 + n]))
        i += 9 + n
    return out


def frame(t, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    data = b""
    end = time.time() + timeout
    try:
        while time.time() < end:
            b = s.recv(65536)
            if not b:
                break
            data += b
    except (socket.timeout, ConnectionResetError):
        pass
    return data


def goaway_code(data):
    """Error code of the first GOAWAY in `data` (a server's byte stream), or None."""
    for t, _, _, p in frames(data):
        if t == 7 and len(p) >= 8:
            return int.from_bytes(p[4:8], "big")
    return None


class H2Client:
    """A python-h2 client connection over a plain socket (h2c prior knowledge)."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.c.initiate_connection()
        self.send()
        self.events = []
        self.closed = False

    def send(self):
        data = self.c.data_to_send()
        if data:
            try:
                self.s.sendall(data)
            except OSError:
                self.closed = True

    def pump(self, until, timeout=5.0):
        end = time.time() + timeout
        self.s.settimeout(0.5)
        while time.time() < end and not until(self.events) and not self.closed:
            try:
                data = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                evs = self.c.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            for e in evs:
                if isinstance(e, h2.events.DataReceived):
                    self.c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            self.events += evs
            self.send()
        return self.events

    def request(self, headers, body=None, end=True):
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            # respect the peer's windows: send in pieces, pumping in between
            off = 0
            while off < len(body):
                win = self.c.local_flow_control_window(sid)
                if win <= 0:
                    self.send()
                    self.pump(lambda ev: self.c.local_flow_control_window(sid) > 0, timeout=5)
                    continue
                n = min(win, self.c.max_outbound_frame_size, len(body) - off)
                self.c.send_data(sid, body[off:off + n])
                off += n
                self.send()
            if end:
                self.c.end_stream(sid)
        self.send()
        return sid

    def response(self, sid, timeout=5.0):
        def done(ev):
            return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and
                       e.stream_id == sid for e in ev)
        self.pump(done, timeout)
        status, hs, body = None, {}, b""
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                hs = dict(e.headers)
                status = int(hs.get(":status", 0))
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
            elif isinstance(e, h2.events.StreamReset):
                status = -e.error_code
        return status, hs, body

    def goaway(self):
        for e in self.events:
            if isinstance(e, h2.events.ConnectionTerminated):
                return e.error_code
        return None

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def hreq(path, authority="web.example.com", method="GET", extra=()):
    return [(":method", method), (":scheme", "http"), (":authority", authority),
            (":path", path)] + list(extra)


def no_h2_checks(work, log, crt, key, ports):
    http_port, https_port = free_port(), free_port()
    cfg = os.path.join(work, "config-no-h2")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "gw.yaml"), "w") as f:
        f.write(config(http_port, https_port, ports, crt, key))
    sock = os.path.join(work, "l7-no-h2.sock")
    p = start([L7, "--dp-socket", sock, "--stats-file", "", "--no-h2"], log)
    wait_for(lambda: os.path.exists(sock))
    start([CP, "--config-dir", cfg, "--status-dir", os.path.join(work, "status-no-h2"),
           "--dp-socket", sock, "--address", "127.0.0.1"], log)
    wait_for(lambda: curl([f"http://127.0.0.1:{http_port}/a", "-H", "Host: web.example.com"]).returncode == 0)
    r = curl(["-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--http2", "--cacert", crt,
              "--resolve", f"web.example.com:{https_port}:127.0.0.1", f"https://web.example.com:{https_port}/a"])
    check(r.stdout == "200 1.1", f"--no-h2: ALPN offers no h2, curl --http2 over TLS gets HTTP/1.1 ({r.stdout})")
    r = curl(["-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--http2",
              f"http://127.0.0.1:{http_port}/a", "-H", "Host: web.example.com"])
    check(r.stdout == "200 1.1", f"--no-h2: Upgrade: h2c ignored, answered over HTTP/1.1 ({r.stdout})")
    r = curl(["-o", "/dev/null", "-w", "%{http_version}", "--http2-prior-knowledge",
              f"http://127.0.0.1:{http_port}/a", "-H", "Host: web.example.com"])
    check(r.stdout != "2", f"--no-h2: no h2c with prior knowledge (curl rc {r.returncode})")
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def main():
    for b in (CP, L7):
        if not os.path.exists(b):
            print(f"missing {b}: build first", file=sys.stderr)
            return 1
    import shutil
    import tempfile
    if not shutil.which("curl") or not shutil.which("openssl"):
        print("curl/openssl missing: skipped")
        return 77
    work = tempfile.mkdtemp(prefix="sluice-l7-h2-test.")
    log = open(os.path.join(work, "procs.log"), "w")
    rc = 1
    try:
        rc = run(work, log)
    finally:
        for p in base.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in base.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()
        l7_rc = base.named["l7"].returncode if "l7" in base.named else None
        text = open(os.path.join(work, "procs.log"), errors="replace").read()
        sanitizer = any(m in text for m in ("AddressSanitizer", "LeakSanitizer", "runtime error:"))
        check(l7_rc == 0 and not sanitizer,
              f"sluice-l7 stops cleanly on SIGTERM (exit {l7_rc}), no sanitizer report")
        if base.failures:
            rc = 1
            print("---- process log (tail)")
            print("".join(open(os.path.join(work, "procs.log"), errors="replace").readlines()[-60:]))
        if os.environ.get("SLUICE_KEEP_WORK"):
            print("work dir kept:", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


def run(work, log):
    crt, key = make_cert(work)
    http_port, https_port, admin_port = free_port(), free_port(), free_port()
    ports = {n: free_port() for n in ("echo-a", "echo-h2c", "hash", "grpc-a", "grpc-b", "grpc-dead")}
    start([sys.executable, ECHO, "--listen", f"127.0.0.1:{ports['echo-a']}", "--pod", "echo-a-pod",
           "--namespace", "default"], log)
    start([sys.executable, ECHO, "--listen", f"127.0.0.1:{free_port()}", "--h2c-listen",
           f"127.0.0.1:{ports['echo-h2c']}", "--pod", "echo-h2c-pod", "--namespace", "default"], log)
    hash_backend(ports["hash"])
    if grpc:
        server_py = os.path.join(work, "grpc_server.py")
        with open(server_py, "w") as f:
            f.write(GRPC_SERVER)
        for name in ("grpc-a", "grpc-b"):
            start([sys.executable, server_py, name, str(ports[name])], log)
    cfg = os.path.join(work, "config")
    os.makedirs(cfg)
    with open(os.path.join(cfg, "gw.yaml"), "w") as f:
        f.write(config(http_port, https_port, ports, crt, key))
    sock = os.path.join(work, "l7.sock")
    status = os.path.join(work, "status")
    stats_file = os.path.join(work, "l7-stats.json")
    base.named["l7"] = start([L7, "--dp-socket", sock, "--stats-file", stats_file,
                              "--admin", f"127.0.0.1:{admin_port}",
                              "--access-log", os.path.join(work, "access.log")], log)
    wait_for(lambda: os.path.exists(sock))
    start([CP, "--config-dir", cfg, "--status-dir", status, "--dp-socket", sock,
           "--address", "127.0.0.1"], log)
    for name in ("echo-a", "echo-h2c", "grpc-a", "grpc-b") if grpc else ("echo-a", "echo-h2c"):
        wait_for(lambda: socket.create_connection(("127.0.0.1", ports[name]), timeout=1).close() is None)
    check(wait_for(lambda: curl([f"http://127.0.0.1:{http_port}/a", "-H", "Host: web.example.com"]).returncode == 0),
          "engine answers on the HTTP listener")

    def l7_stats():
        return json.load(open(stats_file)).get("l7", {})

    def h2c(path, host="web.example.com", extra=(), prior=True):
        args = ["-i", "-w", "\n%{http_version}", "--http2-prior-knowledge" if prior else "--http2",
                f"http://127.0.0.1:{http_port}{path}", "-H", f"Host: {host}"] + list(extra)
        return curl(args)

    def https(path, sni="web.example.com", extra=()):
        args = ["-i", "-w", "\n%{http_version}", "--http2", "--cacert", crt, "--resolve",
                f"{sni}:{https_port}:127.0.0.1", f"https://{sni}:{https_port}{path}"] + list(extra)
        return curl(args)

    def split(r):
        """(status, headers lower-case, body, http_version) of a curl -i -w answer."""
        out = r.stdout
        version = out.rsplit("\n", 1)[-1] if "\n" in out else ""
        out = out.rsplit("\n", 1)[0] if "\n" in out else out
        if "\r\n\r\n" not in out:
            return 0, {}, "", version
        # skip interim heads (101 of an upgrade, 100 Continue)
        while out.startswith("HTTP/") and out.split(" ", 2)[1].startswith("1") and "\r\n\r\n" in out:
            out = out.split("\r\n\r\n", 1)[1]
        head, body = out.split("\r\n\r\n", 1)
        lines = head.split("\r\n")
        try:
            st = int(lines[0].split(" ")[1])
        except (IndexError, ValueError):
            st = 0
        hs = {}
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hs[k.strip().lower()] = v.strip()
        return st, hs, body, version

    def pod(body):
        try:
            return json.loads(body).get("pod")
        except ValueError:
            return None

    # ---- 1. HTTP/2 from clients
    print("HTTP/2 from clients")
    st, hs, body, ver = split(https("/a/tls"))
    check(st == 200 and ver == "2" and pod(body) == "echo-a-pod",
          f"h2 by ALPN (curl --http2 over TLS) -> echo-a (status {st}, HTTP/{ver})")
    st, hs, body, ver = split(h2c("/a/pk?x=1"))
    j = json.loads(body) if st == 200 else {}
    check(st == 200 and ver == "2" and j.get("pod") == "echo-a-pod" and j.get("path") == "/a/pk?x=1",
          f"h2c with prior knowledge -> echo-a, path and query intact (status {st}, HTTP/{ver})")
    fwd = {k.lower(): v for k, v in j.get("headers", {}).items()}
    check(fwd.get("x-forwarded-proto") == ["http"] and fwd.get("x-forwarded-for") == ["127.0.0.1"] and
          j.get("host") == "web.example.com",
          "backend sees Host from :authority and X-Forwarded-*")
    r = curl(["-v", "-i", "-w", "\n%{http_version}", "--http2", f"http://127.0.0.1:{http_port}/a/up",
              "-H", "Host: web.example.com"])
    st, hs, body, ver = split(r)
    check(st == 200 and ver == "2" and "101" in r.stderr and pod(body) == "echo-a-pod",
          f"Upgrade: h2c -> 101 then HTTP/2 (status {st}, HTTP/{ver})")
    st, hs, body, ver = split(h2c("/nothing-here"))
    check(st == 404 and ver == "2", f"no route over HTTP/2 -> 404 ({st})")
    st, hs, body, ver = split(h2c("/old/page"))
    check(st == 301 and hs.get("location", "").endswith("/new/page"), f"redirect over HTTP/2 -> 301 ({st} {hs.get('location')})")
    st, hs, body, ver = split(https("/a", sni="other.example.com", extra=["-H", "Host: web.example.com"]))
    check(st == 200 and ver == "2", f"h2 over TLS, SNI other.example.com, :authority web.example.com on the same listener -> 200 ({st})")
    t0 = time.time()
    st, hs, body, ver = split(h2c("/slow?delay=3s"))
    check(st == 504 and time.time() - t0 < 2.5, f"route timeout over HTTP/2 -> 504 ({st}, {time.time() - t0:.1f} s)")
    st, hs, body, ver = split(h2c("/resp"))
    check(st == 200 and hs.get("x-resp") == "hello", "ResponseHeaderModifier over HTTP/2")

    blob = os.urandom(300000)
    blob_file = os.path.join(work, "blob")
    open(blob_file, "wb").write(blob)
    sha = hashlib.sha256(blob).hexdigest()
    st, hs, body, ver = split(h2c("/hash", extra=["--data-binary", f"@{blob_file}"]))
    j = json.loads(body) if st == 200 else {}
    check(st == 200 and j.get("len") == len(blob) and j.get("sha256") == sha and j.get("cl") == [str(len(blob))],
          f"300 kB POST over h2c with content-length reaches an HTTP/1.1 backend intact ({j.get('len')})")
    st, hs, body, ver = split(https("/hash", extra=["--data-binary", f"@{blob_file}"]))
    j = json.loads(body) if st == 200 else {}
    check(st == 200 and j.get("sha256") == sha, "300 kB POST over h2 (TLS) intact")
    r = curl(["-o", os.path.join(work, "big.out"), "-w", "%{http_code} %{size_download} %{http_version}",
              "--http2-prior-knowledge", f"http://127.0.0.1:{http_port}/big", "-H", "Host: web.example.com"], timeout=30)
    check(r.stdout == f"200 {4 << 20} 2", f"4 MB response over HTTP/2 ({r.stdout})")
    t0 = time.time()
    r = h2c("/a/expect", extra=["--data-binary", f"@{blob_file}", "-H", "Expect: 100-continue",
                                "--expect100-timeout", "10"])
    st, hs, body, ver = split(r)
    check(st == 200 and time.time() - t0 < 5,
          f"Expect: 100-continue over HTTP/2: the backend's 100 reaches the client ({st}, {time.time() - t0:.1f} s)")
    st, hs, body, ver = split(h2c("/chunked"))
    check(st == 200 and body == "hello world" and "transfer-encoding" not in hs,
          f"chunked HTTP/1.1 response de-chunked into DATA frames ({st} {body!r})")

    if h2:
        c = H2Client(http_port)
        sid = c.request(hreq("/hash", method="POST", extra=[("cookie", "a=1"), ("cookie", "b=2")]),
                        body=blob)
        st, hs, body = c.response(sid)
        j = json.loads(body) if st == 200 else {}
        check(st == 200 and j.get("sha256") == sha and j.get("te") == ["chunked"] and j.get("cookie") == ["a=1; b=2"],
              f"POST without content-length -> chunked to the HTTP/1.1 backend, cookie crumbs joined ({st} {j.get('te')} {j.get('cookie')})")
        sid = c.request(hreq("/a", extra=[("x-big", "y" * 20000)]))
        st, hs, body = c.response(sid)
        sid2 = c.request(hreq("/a/after"))
        st2, _, _ = c.response(sid2)
        check(st == 431 and st2 == 200 and c.goaway() is None,
              f"header list over the limit -> 431 on that stream; the connection goes on ({st}, {st2})")
        c.close()
    else:
        print("  skip  python3-h2 missing: raw HTTP/2 checks")

    if __import__("shutil").which("h2load"):
        r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "32",
                            f"--connect-to=127.0.0.1:{http_port}",
                            f"http://load.example.com:{http_port}/load"],
                           capture_output=True, text=True, timeout=120)
        ok = "2000 succeeded, 0 failed, 0 errored" in r.stdout and "status codes: 2000 2xx" in r.stdout
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("requests:")), r.stdout[-300:])
        check(ok, f"h2load 2000 requests, 4 connections x 32 streams: all 2xx ({line.strip()})")
    else:
        print("  skip  h2load missing (nghttp2-client)")

    # ---- 2. h2c backends
    print("h2c backends")
    st, hs, body, ver = split(h2c("/h2c/x"))
    j = json.loads(body) if st == 200 else {}
    check(st == 200 and j.get("pod") == "echo-h2c-pod" and j.get("proto") == "HTTP/2.0",
          f"HTTP/2 client -> h2c backend (appProtocol kubernetes.io/h2c) ({st} {j.get('proto')})")
    r = curl(["-i", "-w", "\n%{http_version}", f"http://127.0.0.1:{http_port}/h2c/y", "-H", "Host: web.example.com"])
    st, hs, body, ver = split(r)
    j = json.loads(body) if st == 200 else {}
    check(st == 200 and j.get("pod") == "echo-h2c-pod" and j.get("proto") == "HTTP/2.0" and
          j.get("path") == "/h2c/y", f"HTTP/1.1 client -> h2c backend ({st} {j.get('proto')})")
    r = curl(["-i", "-w", "\n%{http_version}", f"http://127.0.0.1:{http_port}/h2c/post", "-H", "Host: web.example.com",
              "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{blob_file}"])
    st, hs, body, ver = split(r)
    check(st == 200, f"HTTP/1.1 chunked POST -> h2c backend ({st})")
    r = curl([f"http://127.0.0.1:{http_port}/h2c/a", "-H", "Host: web.example.com", "--next",
              f"http://127.0.0.1:{http_port}/h2c/b", "-H", "Host: web.example.com"])
    check(r.stdout.count("echo-h2c-pod") == 2, "two requests in a row on the h2c backend connection")

    # ---- 3. gRPC
    if grpc:
        print("gRPC")
        ch = grpc.insecure_channel(f"127.0.0.1:{http_port}",
                                   options=[("grpc.default_authority", "grpc.example.com")])

        def call(method, payload=b"ping", md=None, channel=None):
            try:
                resp = (channel or ch).unary_unary(f"/test.Echo/{method}")(payload, timeout=10, metadata=md)
                return grpc.StatusCode.OK, resp, ""
            except grpc.RpcError as e:
                return e.code(), None, e.details()

        code, resp, _ = call("Hello")
        check(code == grpc.StatusCode.OK and resp == b"pong:ping:grpc-a",
              f"unary gRPC call through sluice (h2c) -> grpc-a ({code} {resp!r})")
        code, resp, _ = call("Hello", md=[("x-pick", "b")])
        check(code == grpc.StatusCode.OK and resp == b"pong:ping:grpc-b",
              f"GRPCRoute header match x-pick: b -> grpc-b ({code} {resp!r})")
        code, resp, _ = call("Nope")
        check(code == grpc.StatusCode.UNIMPLEMENTED, f"unknown method -> UNIMPLEMENTED ({code})")
        code, resp, details = call("Fail")
        check(code == grpc.StatusCode.INVALID_ARGUMENT and details == "bad input",
              f"server error status relayed in trailers ({code} {details!r})")
        code, resp, _ = call("Dead")
        check(code == grpc.StatusCode.UNAVAILABLE, f"backend refusing connections -> UNAVAILABLE ({code})")
        code, resp, _ = call("Invalid")
        check(code == grpc.StatusCode.UNAVAILABLE, f"invalid backendRef -> UNAVAILABLE ({code})")
        try:
            items = list(ch.unary_stream("/test.Echo/Stream")(b"s", timeout=10))
        except grpc.RpcError as e:
            items = [str(e.code())]
        check(items == [b"item0:grpc-a", b"item1:grpc-a", b"item2:grpc-a"], f"server-streaming call ({items})")
        code, resp, _ = call("Big")
        check(code == grpc.StatusCode.OK and resp is not None and len(resp) == 1 << 20,
              "1 MB gRPC answer (flow control both ways)")
        # many concurrent calls on one channel (one HTTP/2 connection to sluice)
        futs = [ch.unary_unary("/test.Echo/Hello").future(b"m%d" % i, timeout=20) for i in range(200)]
        oks = sum(1 for i, f in enumerate(futs) if f.result() == b"pong:m%d:grpc-a" % i)
        check(oks == 200, f"200 concurrent unary calls multiplexed on one connection: {oks} OK")
        ch.close()
        tls = grpc.secure_channel(f"127.0.0.1:{https_port}",
                                  grpc.ssl_channel_credentials(root_certificates=open(crt, "rb").read()),
                                  options=[("grpc.ssl_target_name_override", "grpc.example.com"),
                                           ("grpc.default_authority", "grpc.example.com")])
        code, resp, _ = call("Hello", channel=tls)
        check(code == grpc.StatusCode.OK and resp == b"pong:ping:grpc-a", f"gRPC over TLS (h2 by ALPN) ({code})")
        tls.close()
    else:
        print("  skip  python3-grpcio missing: gRPC checks")

    # ---- defences
    if h2:
        print("HTTP/2 defences")
        abuse0 = l7_stats().get("h2_abuse", 0)
        c = H2Client(http_port)
        for i in range(400):
            if c.closed:
                break
            sid = c.c.get_next_available_stream_id()
            c.c.send_headers(sid, hreq(f"/a/rr{i}"), end_stream=True)
            c.c.reset_stream(sid, error_code=8)
            if i % 20 == 19:
                c.send()
        c.send()
        c.pump(lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev), timeout=5)
        check(c.goaway() == 11, f"rapid reset (HEADERS + RST_STREAM x400) -> GOAWAY ENHANCE_YOUR_CALM ({c.goaway()})")
        c.close()
        st, hs, body, ver = split(h2c("/a/after-rapid-reset"))
        check(st == 200, "engine serves others after the rapid reset")

        c = H2Client(http_port)
        for i in range(1500):
            c.c.ping(b"%08d" % i)
        c.send()
        c.pump(lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev), timeout=5)
        check(c.goaway() == 11, f"PING flood (1500) -> GOAWAY ENHANCE_YOUR_CALM ({c.goaway()})")
        c.close()

        # CONTINUATION flood, framed by hand: HEADERS without END_HEADERS, then CONTINUATIONs.
        s = socket.create_connection(("127.0.0.1", http_port), timeout=5)
        block = b"\x82\x86\x84" + b"\x01\x0fweb.example.com"  # GET, http, /, :authority
        lit = b"\x00\x03x-c\x01v"                                # literal x-c: v (not indexed)
        data = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)
        data += frame(1, 0x1, 1, block)  # HEADERS: END_STREAM, no END_HEADERS
        for _ in range(50):
            data += frame(9, 0, 1, lit)
        try:
            s.sendall(data)
        except OSError:
            pass
        got = read_all(s, timeout=3)
        s.close()
        check(goaway_code(got) is not None, f"CONTINUATION flood -> GOAWAY ({goaway_code(got)})")

        # HPACK bomb: one 4 kB field, indexed, then referenced by index many times.
        c = H2Client(http_port)
        hdrs = hreq("/a/bomb") + [("x-b", "q" * 4000)] * 40
        try:
            c.c.send_headers(c.c.get_next_available_stream_id(), hdrs, end_stream=True)
            c.send()
        except Exception as e:  # noqa: BLE001  (a client library refusing is not a result)
            print("    (h2 refused to send the bomb:", e, ")")
        c.pump(lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev), timeout=5)
        check(c.goaway() == 11, f"HPACK bomb (160 kB decoded from ~4 kB) -> GOAWAY ENHANCE_YOUR_CALM ({c.goaway()})")
        c.close()
        st, hs, body, ver = split(h2c("/a/after-floods"))
        check(st == 200, "engine serves others after the floods")
        wait_for(lambda: l7_stats().get("h2_abuse", 0) - abuse0 >= 4, timeout=3)
        check(l7_stats().get("h2_abuse", 0) - abuse0 >= 4,
              f"h2_abuse counts the connections closed by a defence ({l7_stats().get('h2_abuse', 0) - abuse0})")

    st_ = l7_stats()
    check(st_.get("h2_connections", 0) > 5 and st_.get("h2_streams", 0) > 2000,
          f"stats count HTTP/2 connections and streams ({st_.get('h2_connections')}, {st_.get('h2_streams')})")
    m = curl([f"http://127.0.0.1:{admin_port}/metrics"]).stdout
    check("sluice_l7_h2_streams_total" in m, "HTTP/2 counters on /metrics")

    # ---- --no-h2: a second engine (and controlplane) on other ports
    no_h2_checks(work, log, crt, key, ports)

    # ---- GOAWAY on stop (last: it stops the engine)
    if h2:
        c = H2Client(http_port)
        sid = c.request(hreq("/a/before-stop"))
        st, _, _ = c.response(sid)
        os.kill(base.named["l7"].pid, signal.SIGTERM)
        c.pump(lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev), timeout=5)
        check(st == 200 and c.goaway() == 0, f"engine stop -> GOAWAY NO_ERROR to open HTTP/2 connections ({c.goaway()})")
        c.close()
        try:
            base.named["l7"].wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    return 1 if base.failures else 0


if __name__ == "__main__":
    code = main()
    print(f"l7_h2: {len(base.failures)} failure(s)")
    sys.exit(code)
