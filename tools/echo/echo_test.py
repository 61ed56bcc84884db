#!/usr/bin/env python3
"""Self-contained test of tools/echo/sluice-echo.

Starts the server on 127.0.0.1 ephemeral ports (port 0; the bound ports are read from the
"sluice-echo: listening on ..." line) and checks each behaviour over raw sockets,
http.client and ssl.  Standard library only; TLS tests need the openssl CLI, and the curl
cross-checks need a curl built with HTTP/2 (both are skipped when missing).

Run: python3 tools/echo/echo_test.py [-v]
"""

import atexit
import asyncio
import base64
import hashlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from importlib.machinery import SourceFileLoader

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "sluice-echo")
POD = "infra-backend-v1-7d9f8c6b5-x2x7q"
NS = "gateway-conformance-infra"
TIMEOUT = 10


def load_module():
    sys.dont_write_bytecode = True      # keep the source tree clean
    loader = SourceFileLoader("sluice_echo", SCRIPT)
    spec = importlib.util.spec_from_loader("sluice_echo", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


echo = load_module()

_PROCS = []


def _kill_all():
    for proc in _PROCS:
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


class Server:
    """One sluice-echo process; stdout (the request log) goes to a file."""

    def __init__(self, args, env=None, tmpdir=None):
        if tmpdir is None:
            tmpdir = tempfile.mkdtemp(prefix="sluice-echo-test-")
            # Removed when the test process ends (logs may be read after stop()).
            atexit.register(shutil.rmtree, tmpdir, True)
        self.tmpdir = tmpdir
        self.stdout_path = os.path.join(self.tmpdir, "stdout-%s.log" % uuid.uuid4().hex[:8])
        self.stdout = open(self.stdout_path, "wb")
        full_env = dict(os.environ)
        full_env.pop("POD_NAME", None)
        full_env.pop("NAMESPACE", None)
        full_env.update(env or {})
        self.drainer = None
        self.proc = subprocess.Popen([sys.executable, SCRIPT] + args, stdout=self.stdout,
                                     stderr=subprocess.PIPE, env=full_env)
        _PROCS.append(self.proc)
        self.ready_line = self._read_ready()
        self.urls = re.findall(r"(\w+)://(\[[^\]]+\]|[^ :]+):(\d+)", self.ready_line)

    def _read_ready(self):
        result = []

        def reader():
            result.append(self.proc.stderr.readline().decode())

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(TIMEOUT)
        if not result or "listening on" not in result[0]:
            self.stop()
            raise RuntimeError("sluice-echo did not start: %r" % (result,))
        # Keep draining stderr so the child can never block on it.
        self.drainer = threading.Thread(target=self._drain, daemon=True)
        self.drainer.start()
        return result[0]

    def _drain(self):
        self.stderr_rest = b""
        try:
            for line in self.proc.stderr:
                self.stderr_rest += line
        except (OSError, ValueError):
            pass

    def port(self, scheme, index=0):
        ports = [int(p) for s, h, p in self.urls if s == scheme]
        return ports[index]

    def host(self, scheme, index=0):
        hosts = [h.strip("[]") for s, h, p in self.urls if s == scheme]
        return hosts[index]

    def log_text(self):
        self.stdout.flush()
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.drainer is not None:
            self.drainer.join(5)
        self.proc.stderr.close()
        self.stdout.close()


# ---------------------------------------------------------------------------
# Client helpers
# ---------------------------------------------------------------------------

def connect(port, host="127.0.0.1"):
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


class RawHttp:
    """Reads HTTP/1.x responses off a raw socket (for pipelining / malformed requests)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_until(self, sep):
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_request=False):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers.setdefault(k.strip().lower(), []).append(v.strip())
        body = b""
        if "content-length" in headers and not head_request:
            body = self.read_exact(int(headers["content-length"][0]))
        return status, headers, body

    def closed(self):
        """True when the peer has closed (EOF or reset) with nothing more to read."""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def get(port, path, headers=None, method="GET", body=None, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp, data
    finally:
        conn.close()


def get_json(port, path, headers=None, **kw):
    status, resp, data = get(port, path, headers, **kw)
    return status, resp, (json.loads(data) if data else None)


# -- WebSocket client ---------------------------------------------------------

def ws_handshake(port, path="/ws", extra=""):
    s = connect(port)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Origin: ws://gateway/test\r\n%s\r\n" % (path, key, extra)).encode())
    r = RawHttp(s)
    status, headers, _ = r.response(head_request=True)
    return s, r, status, headers, key


def ws_send(sock, opcode, payload, fin=True, mask=True):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, (0x80 if mask else 0) | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", b0, (0x80 if mask else 0) | 127, n)
    if mask:
        key = os.urandom(4)
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        head += key
    sock.sendall(head + payload)


def ws_recv(r):
    b0, b1 = r.read_exact(2)
    assert not b1 & 0x80, "server frames must not be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", r.read_exact(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", r.read_exact(8))
    return bool(b0 & 0x80), b0 & 0x0F, r.read_exact(n)


# -- HTTP/2 client ------------------------------------------------------------

class H2Client:
    """Just enough HTTP/2 to test the server: HPACK with Huffman and the dynamic table."""

    def __init__(self, sock, send_preface=True):
        self.sock = sock
        self.r = RawHttp(sock)
        self.decoder = echo.HpackDecoder()
        if send_preface:
            sock.sendall(echo.H2_PREFACE + echo.h2_frame(echo.F_SETTINGS, 0, 0, b""))

    def send(self, ftype, flags, sid, payload=b""):
        self.sock.sendall(echo.h2_frame(ftype, flags, sid, payload))

    def frame(self):
        head = self.r.read_exact(9)
        length = int.from_bytes(head[:3], "big")
        sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        return head[3], head[4], sid, self.r.read_exact(length)

    def read_response(self, sid):
        """Returns (headers list, body, frames seen) for stream sid."""
        headers = []
        body = b""
        block = b""
        while True:
            ftype, flags, fsid, payload = self.frame()
            if ftype == echo.F_SETTINGS and not flags & 1:
                self.send(echo.F_SETTINGS, 1, 0)
                continue
            if fsid != sid:
                continue
            if ftype in (echo.F_HEADERS, echo.F_CONT):
                block += payload
                if flags & echo.FL_END_HEADERS:
                    headers.extend(self.decoder.decode(block))
                    block = b""
            elif ftype == echo.F_DATA:
                body += payload
            elif ftype == echo.F_RST:
                return headers, body, ("rst", struct.unpack("!I", payload)[0])
            if flags & echo.FL_END_STREAM and ftype in (echo.F_HEADERS, echo.F_DATA):
                return headers, body, None


def h2_get_block(path, authority, extra=b""):
    """A request header block mixing the representations a real client uses."""
    out = bytes([0x82, 0x86])                        # :method GET, :scheme http (indexed)
    out += bytes([0x04]) + echo.hpack_string(path.encode(), huffman=True)   # :path literal
    out += bytes([0x41]) + echo.hpack_string(authority.encode(), huffman=True)  # :authority, indexed
    return out + extra


# ---------------------------------------------------------------------------
# TLS material (openssl CLI)
# ---------------------------------------------------------------------------

def make_certs(tmpdir):
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=tmpdir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=sluice-echo test CA")
    for name, cn in (("server", "abc.example.com"), ("client", "client.example.com")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
            name + ".csr", "-subj", "/CN=" + cn)
        with open(os.path.join(tmpdir, name + ".ext"), "w") as f:
            f.write("subjectAltName=DNS:%s\n" % cn)
            f.write("extendedKeyUsage=%s\n" % ("serverAuth" if name == "server" else "clientAuth"))
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")
    return {k: os.path.join(tmpdir, v) for k, v in (
        ("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"),
        ("client_cert", "client.pem"), ("client_key", "client.key"))}


HAVE_OPENSSL = shutil.which("openssl") is not None


def curl_has_http2():
    curl = shutil.which("curl")
    if not curl:
        return False
    try:
        out = subprocess.run([curl, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "HTTP2" in out.stdout


HAVE_CURL_H2 = curl_has_http2()


def ipv6_loopback():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Unit tests of internals (no server process)
# ---------------------------------------------------------------------------

class UnitTest(unittest.TestCase):
    def test_canonical_key(self):
        cases = {"x-foo-bar": "X-Foo-Bar", "CONTENT-TYPE": "Content-Type", "host": "Host",
                 "x_foo": "X_foo", "foo bar": "foo bar", "a--b": "A--B",
                 "X-Echo-Set-Header": "X-Echo-Set-Header"}
        for raw, want in cases.items():
            self.assertEqual(echo.canonical_key(raw), want, raw)

    def test_go_duration(self):
        self.assertEqual(echo.parse_go_duration("1s"), 1.0)
        self.assertAlmostEqual(echo.parse_go_duration("500ms"), 0.5)
        self.assertAlmostEqual(echo.parse_go_duration("1h2m3.5s"), 3723.5)
        self.assertAlmostEqual(echo.parse_go_duration("1.5us"), 1.5e-6)
        self.assertEqual(echo.parse_go_duration("0"), 0.0)
        self.assertEqual(echo.parse_go_duration("-1s"), -1.0)
        for bad, msg in (("1", 'time: missing unit in duration "1"'),
                         ("1x", 'time: unknown unit "x" in duration "1x"'),
                         ("", 'time: invalid duration ""'),
                         ("xyz", 'time: invalid duration "xyz"')):
            with self.assertRaises(echo.DurationError) as cm:
                echo.parse_go_duration(bad)
            self.assertEqual(str(cm.exception), msg)

    def test_huffman_rfc7541_vectors(self):
        # RFC 7541 C.4 / C.6 string literals.
        vectors = {
            "f1e3c2e5f23a6ba0ab90f4ff": b"www.example.com",
            "a8eb10649cbf": b"no-cache",
            "25a849e95ba97d7f": b"custom-key",
            "25a849e95bb8e8b4bf": b"custom-value",
            "6402": b"302",
            "aec3771a4b": b"private",
            "d07abe941054d444a8200595040b8166e082a62d1bff": b"Mon, 21 Oct 2013 20:13:21 GMT",
            "9d29ad171863c78f0b97c8e9ae82ae43d3": b"https://www.example.com",
        }
        for hexstr, text in vectors.items():
            self.assertEqual(echo.huffman_decode(bytes.fromhex(hexstr)), text)
            self.assertEqual(echo.huffman_encode(text).hex(), hexstr)
        every = bytes(range(256))
        self.assertEqual(echo.huffman_decode(echo.huffman_encode(every)), every)
        for bad in ("ff", "00", "fffffffc", "f1e3c2e5f23a6ba0ab90f4fe"):
            with self.assertRaises(echo.HpackError):
                echo.huffman_decode(bytes.fromhex(bad))

    def test_hpack_rfc7541_request_and_response_sequences(self):
        d = echo.HpackDecoder()
        blocks = ["828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
                  "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"]
        got = [d.decode(bytes.fromhex(b)) for b in blocks]
        self.assertEqual(got[0][3], (b":authority", b"www.example.com"))
        self.assertEqual(got[1][4], (b"cache-control", b"no-cache"))
        self.assertEqual(got[2][4], (b"custom-key", b"custom-value"))
        self.assertEqual(d.size, 164)
        d = echo.HpackDecoder(256)
        d.decode(bytes.fromhex("488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e0"
                               "82a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3"))
        self.assertEqual(d.decode(bytes.fromhex("4883640effc1c0bf"))[0], (b":status", b"307"))
        last = d.decode(bytes.fromhex(
            "88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2"
            "e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007"))
        self.assertEqual(last[-1], (b"set-cookie",
                                    b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"))
        self.assertEqual(d.size, 215)
        with self.assertRaises(echo.HpackError):
            echo.HpackDecoder().decode(bytes([0xBE]))      # index past the table

    def test_parse_addr(self):
        self.assertEqual(echo.parse_addr("127.0.0.1:80"), ("127.0.0.1", 80))
        self.assertEqual(echo.parse_addr("[::1]:8080"), ("::1", 8080))
        self.assertEqual(echo.parse_addr(":3000"), (None, 3000))
        for bad in ("::1:80", "127.0.0.1", "[::1]80", "host:99999"):
            with self.assertRaises(Exception):
                echo.parse_addr(bad)


# ---------------------------------------------------------------------------
# Behaviour tests against a running server
# ---------------------------------------------------------------------------

class EchoServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.mkdtemp(prefix="sluice-echo-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmpdir, True)
        args = ["--listen", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--h2c-listen",
                "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--pod", POD, "--namespace", NS]
        cls.certs = None
        if HAVE_OPENSSL:
            cls.certs = make_certs(cls.tmpdir)
            args += ["--tls-listen", "127.0.0.1:0", "--cert", cls.certs["cert"], "--key",
                     cls.certs["key"], "--client-ca", cls.certs["ca"]]
        cls.server = Server(args, tmpdir=cls.tmpdir)
        cls.addClassCleanup(cls.server.stop)
        cls.http = cls.server.port("http")
        cls.http2nd = cls.server.port("http", 1)
        cls.h2c = cls.server.port("h2c")
        cls.ws = cls.server.port("ws")
        cls.tls = cls.server.port("https") if HAVE_OPENSSL else None

    def tearDown(self):
        self.assertIsNone(self.server.proc.poll(), "server process died")

    # -- the echo JSON ----------------------------------------------------
    def test_ready_line(self):
        self.assertTrue(self.server.ready_line.startswith("sluice-echo: listening on http://"))

    def test_echo_json_fields(self):
        status, resp, body = get_json(self.http, "/foo/bar?x=1&y=%20z",
                                      {"X-Custom": "v1", "Host": "example.com"})
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertEqual(resp.getheader("X-Content-Type-Options"), "nosniff")
        self.assertEqual(body["path"], "/foo/bar?x=1&y=%20z")   # request-URI incl. query
        self.assertEqual(body["host"], "example.com")
        self.assertEqual(body["method"], "GET")
        self.assertEqual(body["proto"], "HTTP/1.1")
        self.assertEqual(body["namespace"], NS)
        self.assertEqual(body["pod"], POD)
        self.assertEqual(body["httpPort"], str(self.http))
        self.assertEqual(body["headers"]["X-Custom"], ["v1"])
        self.assertNotIn("Host", body["headers"])
        self.assertNotIn("tls", body)
        self.assertEqual(list(body)[:5], ["path", "host", "method", "proto", "headers"])
        # The second --listen reports its own port.
        _, _, body2 = get_json(self.http2nd, "/")
        self.assertEqual(body2["httpPort"], str(self.http2nd))

    def test_header_canonicalisation_and_multi_values(self):
        s = connect(self.http)
        s.sendall(b"POST /m HTTP/1.1\r\nhost: very.specific.com:1234\r\nx-foo-bar: 1\r\n"
                  b"X-MULTI: a\r\nx-multi: b\r\ncontent-length: 3\r\n\r\nabc")
        status, _, data = RawHttp(s).response()
        s.close()
        body = json.loads(data)
        self.assertEqual(status, 200)
        self.assertEqual(body["host"], "very.specific.com:1234")
        self.assertEqual(body["method"], "POST")
        self.assertEqual(body["headers"]["X-Foo-Bar"], ["1"])
        self.assertEqual(body["headers"]["X-Multi"], ["a", "b"])
        self.assertEqual(body["headers"]["Content-Length"], ["3"])
        self.assertEqual(sorted(body["headers"]), list(body["headers"]))

    def test_echo_set_header(self):
        status, resp, _ = get_json(self.http, "/set", {
            "X-Echo-Set-Header": "X-Foo: bar, x-lower:  v2 , X-Foo: baz"})
        self.assertEqual(status, 200)
        self.assertEqual(resp.getheader("X-Foo"), "bar,baz")
        self.assertEqual(resp.getheader("x-lower"), "v2")
        # The suite always sends the header, empty when nothing is to be set.
        status, resp, body = get_json(self.http, "/set", {"X-Echo-Set-Header": ""})
        self.assertEqual(status, 200)
        self.assertEqual(body["headers"]["X-Echo-Set-Header"], [""])
        # Set-Header values with a leading/trailing space come back trimmed (Go does that).
        status, resp, _ = get_json(self.http, "/set", {
            "X-Echo-Set-Header": "Set-Cookie:a=b,Cache-Control: no-store"})
        self.assertEqual(resp.getheader("Set-Cookie"), "a=b")
        self.assertEqual(resp.getheader("Cache-Control"), "no-store")

    def test_delay(self):
        t0 = time.monotonic()
        status, _, body = get_json(self.http, "/slow?delay=600ms")
        elapsed = time.monotonic() - t0
        self.assertEqual(status, 200)
        self.assertGreaterEqual(elapsed, 0.55)
        self.assertEqual(body["path"], "/slow?delay=600ms")
        status, resp, body = get_json(self.http, "/?delay=xyz")
        self.assertEqual(status, 500)
        self.assertEqual(body, {"message": 'time: invalid duration "xyz"'})

    def test_status(self):
        for code in (200, 201, 302, 404, 418, 500, 503, 599):
            status, resp, data = get(self.http, "/status/%d" % code)
            self.assertEqual(status, code)
            self.assertEqual(data, b"")
        status, resp, _ = get(self.http, "/status/204")
        self.assertEqual(status, 204)
        self.assertIsNone(resp.getheader("Content-Length"))
        for bad in ("/status/abc", "/status/5000", "/status/500?x=1", "/status/"):
            self.assertEqual(get(self.http, bad)[0], 400, bad)
        status, resp, _ = get(self.http, "/status")
        self.assertEqual(status, 301)
        self.assertEqual(resp.getheader("Location"), "/status/")
        # /status/1xx: an informational response, then the implicit 200.
        s = connect(self.http)
        s.sendall(b"GET /status/103 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = RawHttp(s)
        self.assertEqual(r.response(head_request=True)[0], 103)
        self.assertEqual(r.response()[0], 200)
        s.close()
        # /status/0xx makes echo-basic's handler panic: the connection is dropped.
        s = connect(self.http)
        s.sendall(b"GET /status/042 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = RawHttp(s)
        self.assertTrue(r.closed())
        self.assertEqual(r.buf, b"")
        s.close()
        self.assertEqual(get(self.http, "/health")[2], b"OK")

    def test_retry(self):
        uid = uuid.uuid4().hex
        path = "/retry/code-500?responseCode=500&succeedAfter=2&uuid=" + uid
        self.assertEqual(get(self.http, path)[0], 500)
        self.assertEqual(get(self.http, path)[0], 500)
        status, _, body = get_json(self.http, path)
        self.assertEqual(status, 200)
        self.assertEqual(body["path"], path)
        self.assertEqual(get(self.http, path)[0], 200)
        # Attempts are counted per uuid, across listeners.
        uid2 = uuid.uuid4().hex
        path2 = "/retry/x?responseCode=503&succeedAfter=1&uuid=" + uid2
        self.assertEqual(get(self.http2nd, path2)[0], 503)
        self.assertEqual(get(self.http, path2)[0], 200)
        # No responseCode: the failing attempts are TCP resets.
        path3 = "/retry/conn?succeedAfter=1&uuid=" + uuid.uuid4().hex
        s = connect(self.http)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path3).encode())
        with self.assertRaises(ConnectionResetError):
            while s.recv(4096):
                pass
        s.close()
        self.assertEqual(get(self.http, path3)[0], 200)
        # delayRetry stalls only the failing attempts.
        path4 = "/retry/d?responseCode=500&succeedAfter=1&delayRetry=400ms&uuid=" + uuid.uuid4().hex
        t0 = time.monotonic()
        self.assertEqual(get(self.http, path4)[0], 500)
        self.assertGreaterEqual(time.monotonic() - t0, 0.35)
        t0 = time.monotonic()
        self.assertEqual(get(self.http, path4)[0], 200)
        self.assertLess(time.monotonic() - t0, 0.35)
        self.assertEqual(get(self.http, "/retry/x?succeedAfter=abc")[0], 400)

    def test_mirror_log_line(self):
        rid = uuid.uuid4()
        path = "/mirror?gateway-api-conformance-request-id=%s" % rid
        s = connect(self.http)
        local_port = s.getsockname()[1]
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        self.assertEqual(RawHttp(s).response()[0], 200)
        s.close()
        want = "Echoing back request made to %s to client (127.0.0.1:%d)\n" % (path, local_port)
        deadline = time.monotonic() + 5
        while want not in self.server.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertIn(want, self.server.log_text())
        # Nothing but those lines is logged.
        for line in self.server.log_text().splitlines():
            self.assertTrue(line.startswith("Echoing back request made to "), line)

    # -- HTTP/1.1 connection handling -------------------------------------
    def test_keepalive_and_pipelining(self):
        s = connect(self.http)
        s.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                  b"PUT /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"
                  b"HEAD /four HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /five?delay=50ms HTTP/1.1\r\nHost: x\r\n\r\n")
        r = RawHttp(s)
        paths = []
        for i in range(5):
            status, headers, body = r.response(head_request=(i == 3))
            self.assertEqual(status, 200)
            if i == 3:
                self.assertGreater(int(headers["content-length"][0]), 0)
                continue
            j = json.loads(body)
            paths.append(j["path"])
            if i == 2:
                self.assertNotIn("Transfer-Encoding", j["headers"])
        self.assertEqual(paths, ["/one", "/two", "/three", "/five?delay=50ms"])
        s.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, headers, _ = r.response()
        self.assertEqual(headers["connection"], ["close"])
        self.assertTrue(r.closed())
        s.close()

    def test_http10(self):
        s = connect(self.http)
        s.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        r = RawHttp(s)
        status, headers, body = r.response()
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["proto"], "HTTP/1.0")
        self.assertEqual(json.loads(body)["host"], "")
        self.assertTrue(r.closed())
        s.close()
        s = connect(self.http)
        s.sendall(b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = RawHttp(s)
        self.assertEqual(r.response()[1]["connection"], ["keep-alive"])
        s.sendall(b"GET /ka2 HTTP/1.0\r\n\r\n")
        self.assertEqual(json.loads(r.response()[2])["path"], "/ka2")
        s.close()

    def test_expect_100_continue(self):
        s = connect(self.http)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        r = RawHttp(s)
        self.assertEqual(r.response(head_request=True)[0], 100)
        s.sendall(b"data")
        self.assertEqual(r.response()[0], 200)
        s.close()

    def test_large_body(self):
        payload = os.urandom(3 << 20)
        status, _, body = get_json(self.http, "/big", method="POST", body=payload)
        self.assertEqual(status, 200)
        self.assertEqual(body["headers"]["Content-Length"], [str(len(payload))])

    def test_absolute_form_target(self):
        s = connect(self.http)
        s.sendall(b"GET http://abs.example.com/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n")
        body = json.loads(RawHttp(s).response()[2])
        s.close()
        self.assertEqual(body["path"], "http://abs.example.com/p?q=1")
        self.assertEqual(body["host"], "abs.example.com")

    def test_malformed_requests(self):
        cases = [
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),                          # no Host
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
            (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET nopath HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n", 417),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1100 * 1024) + b"\r\n\r\n", 431),
        ]
        for raw, want in cases:
            s = connect(self.http)
            try:
                s.sendall(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = RawHttp(s)
            status, headers, _ = r.response()
            self.assertEqual(status, want, raw[:60])
            self.assertEqual(headers.get("connection"), ["close"], raw[:60])
            self.assertTrue(r.closed(), raw[:60])
            s.close()
        # Truncated request then EOF: closed quietly; the server keeps serving.
        s = connect(self.http)
        s.sendall(b"GET / HTTP/1.1\r\nHost")
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(RawHttp(s).closed())
        s.close()
        self.assertEqual(get(self.http, "/still-alive")[0], 200)

    def test_options_star(self):
        s = connect(self.http)
        s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(RawHttp(s).response()[0], 200)
        s.close()

    @unittest.skipUnless(ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_listener(self):
        srv = Server(["--listen", "[::1]:0", "--pod", "p6", "--namespace", "n6"])
        try:
            self.assertIn("http://[::1]:", srv.ready_line)
            status, _, body = get_json(srv.port("http"), "/v6", host="::1")
            self.assertEqual(status, 200)
            self.assertEqual(body["pod"], "p6")
            deadline = time.monotonic() + 5
            while "to client ([::1]:" not in srv.log_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertIn("to client ([::1]:", srv.log_text())
        finally:
            srv.stop()

    def test_env_fallbacks_and_log_file(self):
        log = os.path.join(self.tmpdir, "mirror.log")
        srv = Server(["--listen", "127.0.0.1:0", "--log", log],
                     env={"POD_NAME": "env-pod", "NAMESPACE": "env-ns"})
        try:
            _, _, body = get_json(srv.port("http"), "/env?a=b")
            self.assertEqual((body["pod"], body["namespace"]), ("env-pod", "env-ns"))
            with open(log) as f:
                self.assertIn("Echoing back request made to /env?a=b to client (127.0.0.1:",
                              f.read())
            self.assertEqual(srv.log_text(), "")
        finally:
            srv.stop()

    # -- WebSocket ----------------------------------------------------------
    def check_ws_session(self, port, path):
        s, r, status, headers, key = ws_handshake(port, path, "Sec-WebSocket-Protocol: chat, x\r\n")
        self.assertEqual(status, 101)
        want = base64.b64encode(hashlib.sha1(key.encode() + echo.WS_GUID).digest()).decode()
        self.assertEqual(headers["sec-websocket-accept"], [want])
        self.assertEqual(headers["sec-websocket-protocol"], ["chat"])
        ws_send(s, 1, "Websocket Support!".encode())
        self.assertEqual(ws_recv(r), (True, 1, b"Websocket Support!"))
        ws_send(s, 2, bytes([1, 2, 3, 4, 5, 6, 7]))
        self.assertEqual(ws_recv(r), (True, 2, bytes([1, 2, 3, 4, 5, 6, 7])))
        big = os.urandom(70000)
        ws_send(s, 2, big)
        self.assertEqual(ws_recv(r), (True, 2, big))
        ws_send(s, 1, b"frag", fin=False)
        ws_send(s, 9, b"ping!")                     # control frame between fragments
        self.assertEqual(ws_recv(r), (True, 10, b"ping!"))
        ws_send(s, 0, b"mented", fin=True)
        self.assertEqual(ws_recv(r), (True, 1, b"fragmented"))
        ws_send(s, 8, struct.pack("!H", 1000) + b"bye")
        self.assertEqual(ws_recv(r), (True, 8, struct.pack("!H", 1000)))
        self.assertTrue(r.closed())
        s.close()

    def test_websocket_main_port(self):
        self.check_ws_session(self.http, "/ws")

    def test_websocket_ws_listener_any_path(self):
        self.check_ws_session(self.ws, "/anything?x=1")
        # Plain requests on the ws listener are echoed.
        self.assertEqual(get_json(self.ws, "/plain")[2]["path"], "/plain")

    def test_websocket_handshake_errors(self):
        self.assertEqual(get(self.http, "/ws")[0], 400)           # not an upgrade
        s = connect(self.http)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n")
        status, headers, _ = RawHttp(s).response()
        s.close()
        self.assertEqual(status, 400)
        self.assertEqual(headers["sec-websocket-version"], ["13"])
        # RFC 6455 1.3 sample key.
        s = connect(self.ws)
        s.sendall(b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        r = RawHttp(s)
        status, headers, _ = r.response(head_request=True)
        self.assertEqual(headers["sec-websocket-accept"], ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="])
        ws_send(s, 1, b"unmasked", mask=False)     # protocol error -> close 1002
        self.assertEqual(ws_recv(r), (True, 8, struct.pack("!H", 1002)))
        s.close()

    # -- HTTP/2 -------------------------------------------------------------
    def test_h2c_prior_knowledge(self):
        s = connect(self.h2c)
        c = H2Client(s)
        # Stream 1: Huffman strings, :authority added to the dynamic table, a literal
        # header with incremental indexing, and two cookie crumbs.
        extra = (bytes([0x40]) + echo.hpack_string(b"x-dyn", True) + echo.hpack_string(b"v1", True)
                 + bytes([0x00]) + echo.hpack_string(b"x-echo-set-header")
                 + echo.hpack_string(b"X-H2: yes")
                 + bytes([0x0F, 0x11]) + echo.hpack_string(b"a=1")      # cookie (index 32)
                 + bytes([0x0F, 0x11]) + echo.hpack_string(b"b=2"))
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 1,
               h2_get_block("/h2?x=1", "gw.example.com", extra))
        headers, body, err = c.read_response(1)
        self.assertIsNone(err)
        hd = dict(headers)
        self.assertEqual(hd[b":status"], b"200")
        self.assertEqual(hd[b"content-type"], b"application/json")
        self.assertEqual(hd[b"x-h2"], b"yes")
        j = json.loads(body)
        self.assertEqual(j["proto"], "HTTP/2.0")
        self.assertEqual(j["path"], "/h2?x=1")
        self.assertEqual(j["host"], "gw.example.com")
        self.assertEqual(j["headers"]["X-Dyn"], ["v1"])
        self.assertEqual(j["headers"]["Cookie"], ["a=1; b=2"])
        self.assertEqual(j["pod"], POD)
        # Stream 3 reuses dynamic entries: 62 = x-dyn: v1, 63 = :authority gw.example.com.
        block = bytes([0x82, 0x86, 0x04]) + echo.hpack_string(b"/second") + bytes([0xBF, 0xBE])
        # ... sent in two pieces (HEADERS + CONTINUATION), with a PING in between streams.
        c.send(echo.F_PING, 0, 0, b"12345678")
        c.send(echo.F_HEADERS, echo.FL_END_STREAM, 3, block[:3])
        c.send(echo.F_CONT, echo.FL_END_HEADERS, 3, block[3:])
        saw_ping = False
        headers = body = None
        while True:
            ftype, flags, sid, payload = c.frame()
            if ftype == echo.F_PING:
                self.assertEqual((flags, payload), (1, b"12345678"))
                saw_ping = True
            elif sid == 3 and ftype == echo.F_HEADERS:
                headers = c.decoder.decode(payload)
            elif sid == 3 and ftype == echo.F_DATA:
                body = (body or b"") + payload
                if flags & 1:
                    break
        self.assertTrue(saw_ping)
        j = json.loads(body)
        self.assertEqual((j["path"], j["host"], j["headers"]["X-Dyn"]),
                         ("/second", "gw.example.com", ["v1"]))
        # Stream 5: POST with a body in DATA frames, /status/503 and HEAD.
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS, 5,
               bytes([0x83, 0x86, 0x04]) + echo.hpack_string(b"/post") + bytes([0xBE]))
        c.send(echo.F_DATA, 0, 5, b"x" * 1000)
        c.send(echo.F_DATA, echo.FL_END_STREAM, 5, b"y" * 10)
        headers, body, err = c.read_response(5)
        self.assertEqual(json.loads(body)["method"], "POST")
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 7,
               bytes([0x82, 0x86, 0x04]) + echo.hpack_string(b"/status/503") + bytes([0xBE]))
        headers, body, err = c.read_response(7)
        self.assertEqual(dict(headers)[b":status"], b"503")
        self.assertEqual(body, b"")
        # Uppercase header names are a stream error (RST_STREAM PROTOCOL_ERROR) ...
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 9,
               h2_get_block("/bad", "x", bytes([0x00]) + echo.hpack_string(b"X-Upper")
                            + echo.hpack_string(b"1")))
        _, _, err = c.read_response(9)
        self.assertEqual(err, ("rst", echo.E_PROTOCOL))
        # ... and the connection still works afterwards.
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 11,
               h2_get_block("/after", "x"))
        headers, body, err = c.read_response(11)
        self.assertEqual(json.loads(body)["path"], "/after")
        c.send(echo.F_GOAWAY, 0, 0, struct.pack("!II", 0, 0))
        s.close()

    def test_h2c_multiplexing(self):
        # A slow stream must not hold back a fast one on the same connection.
        s = connect(self.h2c)
        c = H2Client(s)
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 1,
               h2_get_block("/slow?delay=500ms", "x"))
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 3,
               h2_get_block("/fast", "x"))
        order = []
        while len(order) < 2:
            ftype, flags, sid, _ = c.frame()
            if ftype == echo.F_DATA and flags & echo.FL_END_STREAM:
                order.append(sid)
        self.assertEqual(order, [3, 1])
        # A request whose body is still coming when the response is done gets
        # RST_STREAM(NO_ERROR); later DATA on it is ignored, not an error.
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS, 5,
               bytes([0x83, 0x86, 0x04]) + echo.hpack_string(b"/partial") + bytes([0xBE]))
        _, body, err = c.read_response(5)
        self.assertEqual(json.loads(body)["path"], "/partial")
        ftype, flags, sid, payload = c.frame()
        self.assertEqual((ftype, sid, payload), (echo.F_RST, 5, struct.pack("!I", 0)))
        c.send(echo.F_DATA, echo.FL_END_STREAM, 5, b"late")
        c.send(echo.F_PING, 0, 0, b"pingpong")
        while True:
            ftype, flags, sid, payload = c.frame()
            self.assertNotEqual(ftype, echo.F_RST)
            if ftype == echo.F_PING:
                break
        s.close()

    def test_h2c_flow_control(self):
        # A tiny peer window forces the server to wait for WINDOW_UPDATEs.
        s = connect(self.h2c)
        s.sendall(echo.H2_PREFACE + echo.h2_frame(echo.F_SETTINGS, 0, 0, struct.pack("!HI", 4, 100)))
        c = H2Client(s, send_preface=False)
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 1, h2_get_block("/fc", "x"))
        body = b""
        while True:
            ftype, flags, sid, payload = c.frame()
            if ftype == echo.F_DATA:
                self.assertLessEqual(len(payload), 100)
                body += payload
                if flags & 1:
                    break
                c.send(echo.F_WINDOW, 0, 1, struct.pack("!I", len(payload)))
                c.send(echo.F_WINDOW, 0, 0, struct.pack("!I", len(payload)))
        self.assertEqual(json.loads(body)["path"], "/fc")
        s.close()

    def test_h2c_connection_errors(self):
        s = connect(self.h2c)
        c = H2Client(s)
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS, 2, h2_get_block("/", "x"))   # even id
        while True:
            ftype, _, _, payload = c.frame()
            if ftype == echo.F_GOAWAY:
                self.assertEqual(struct.unpack("!I", payload[4:8])[0], echo.E_PROTOCOL)
                break
        s.close()
        s = connect(self.h2c)
        c = H2Client(s)
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS, 1, b"\xff\xff\xff\xff\x0f")   # bad HPACK
        while True:
            ftype, _, _, payload = c.frame()
            if ftype == echo.F_GOAWAY:
                self.assertEqual(struct.unpack("!I", payload[4:8])[0], echo.E_COMPRESSION)
                break
        s.close()

    def test_h2c_upgrade(self):
        s = connect(self.h2c)
        settings = base64.urlsafe_b64encode(struct.pack("!HI", 4, 65535)).rstrip(b"=")
        s.sendall(b"GET /upgraded?u=1 HTTP/1.1\r\nHost: up.example.com\r\n"
                  b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: " + settings + b"\r\nX-Up: 1\r\n\r\n")
        c = H2Client(s, send_preface=False)
        status, headers, _ = c.r.response(head_request=True)
        self.assertEqual(status, 101)
        s.sendall(echo.H2_PREFACE + echo.h2_frame(echo.F_SETTINGS, 0, 0, b""))
        headers, body, err = c.read_response(1)
        j = json.loads(body)
        self.assertEqual((j["proto"], j["path"], j["host"]), ("HTTP/2.0", "/upgraded?u=1",
                                                              "up.example.com"))
        self.assertEqual(j["headers"]["X-Up"], ["1"])
        self.assertNotIn("Http2-Settings", j["headers"])
        s.close()

    def test_h2c_port_rejects_plain_http1(self):
        status, _, data = get(self.h2c, "/")
        self.assertEqual((status, data), (400, b"Expected h2c request"))

    @unittest.skipUnless(HAVE_CURL_H2, "curl with HTTP/2 not available")
    def test_curl_h2c_cross_check(self):
        for flag in ("--http2-prior-knowledge", "--http2"):
            out = subprocess.run(["curl", "-sS", flag, "-H", "X-Echo-Set-Header: X-C: 1",
                                  "-D", "-", "http://127.0.0.1:%d/curl?delay=10ms" % self.h2c],
                                 capture_output=True, text=True, timeout=TIMEOUT)
            self.assertEqual(out.returncode, 0, out.stderr)
            head, _, body = out.stdout.replace("\r\n", "\n").rpartition("\n\n")
            self.assertIn("HTTP/2 200", head)
            self.assertIn("x-c: 1", head)
            self.assertEqual(json.loads(body)["proto"], "HTTP/2.0")

    # -- TLS ------------------------------------------------------------------
    def tls_context(self, alpn=("http/1.1",), client_cert=False):
        ctx = ssl.create_default_context(cafile=self.certs["ca"])
        ctx.set_alpn_protocols(list(alpn))
        if client_cert:
            ctx.load_cert_chain(self.certs["client_cert"], self.certs["client_key"])
        return ctx

    def tls_get(self, ctx, sni, path="/tls"):
        raw = socket.create_connection(("127.0.0.1", self.tls), timeout=TIMEOUT)
        if sni is None:
            ctx.check_hostname = False
        s = ctx.wrap_socket(raw, server_hostname=sni)
        s.sendall(("GET %s HTTP/1.1\r\nHost: abc.example.com\r\nConnection: close\r\n\r\n"
                   % path).encode())
        status, _, body = RawHttp(s).response()
        s.close()
        return status, json.loads(body)

    @unittest.skipUnless(HAVE_OPENSSL, "openssl CLI not available")
    def test_tls_state(self):
        status, j = self.tls_get(self.tls_context(), "abc.example.com")
        self.assertEqual(status, 200)
        self.assertIn(j["tls"]["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(j["tls"]["serverName"], "abc.example.com")
        self.assertEqual(j["tls"]["negotiatedProtocol"], "http/1.1")
        self.assertTrue(j["tls"]["cipherSuite"].startswith("TLS_"))
        self.assertNotIn("peerCertificates", j["tls"])
        self.assertEqual(j["sni"], "abc.example.com")
        self.assertEqual(j["httpPort"], str(self.http))
        # No SNI at all.
        ctx = self.tls_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        status, j = self.tls_get(ctx, None)
        self.assertEqual(j["tls"]["serverName"], "")

    @unittest.skipUnless(HAVE_OPENSSL, "openssl CLI not available")
    def test_tls_client_certificate(self):
        status, j = self.tls_get(self.tls_context(client_cert=True), "abc.example.com")
        with open(self.certs["client_cert"]) as f:
            pem = f.read()
        self.assertEqual(status, 200)
        self.assertEqual(j["tls"]["peerCertificates"], [pem])

    @unittest.skipUnless(HAVE_OPENSSL, "openssl CLI not available")
    def test_tls_h2(self):
        raw = socket.create_connection(("127.0.0.1", self.tls), timeout=TIMEOUT)
        s = self.tls_context(alpn=("h2", "http/1.1")).wrap_socket(
            raw, server_hostname="abc.example.com")
        self.assertEqual(s.selected_alpn_protocol(), "h2")
        c = H2Client(s)
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS | echo.FL_END_STREAM, 1,
               bytes([0x82, 0x87, 0x04]) + echo.hpack_string(b"/over-tls")
               + bytes([0x41]) + echo.hpack_string(b"abc.example.com"))
        headers, body, err = c.read_response(1)
        j = json.loads(body)
        s.close()
        self.assertEqual((j["proto"], j["tls"]["negotiatedProtocol"], j["tls"]["serverName"]),
                         ("HTTP/2.0", "h2", "abc.example.com"))

    @unittest.skipUnless(HAVE_OPENSSL, "openssl CLI not available")
    def test_tls_bad_handshake_does_not_hurt(self):
        s = connect(self.tls)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")     # plaintext to the TLS port
        RawHttp(s).closed()
        s.close()
        status, j = self.tls_get(self.tls_context(), "abc.example.com")
        self.assertEqual(status, 200)

    # -- load -------------------------------------------------------------------
    def test_1000_concurrent_connections(self):
        try:
            import resource
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            want = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
            if soft < want:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, ValueError, OSError):
            soft = 1024
        n = min(1000, max(10, soft - 100))

        async def one(i, opened, go):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.http)
            opened.append(1)
            await go.wait()                 # every connection is open before any request
            writer.write(b"GET /c/%d?delay=100ms HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
            body = json.loads(await reader.readexactly(length))
            writer.close()
            return head.split(b" ")[1] == b"200" and body["path"] == "/c/%d?delay=100ms" % i

        async def run():
            opened = []
            go = asyncio.Event()
            tasks = [asyncio.ensure_future(one(i, opened, go)) for i in range(n)]
            while len(opened) < n and not any(t.done() for t in tasks):
                await asyncio.sleep(0.01)
            go.set()
            return await asyncio.wait_for(asyncio.gather(*tasks), 60)

        results = asyncio.run(run())
        self.assertEqual(sum(results), n)
        self.assertEqual(get(self.http, "/after-load")[0], 200)


def pb_fields(data):
    """Decodes the length-delimited fields of a protobuf message: [(field, bytes)]."""
    out, pos = [], 0

    def varint():
        nonlocal pos
        value, shift = 0, 0
        while True:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while pos < len(data):
        key = varint()
        assert key & 7 == 2, "only length-delimited fields are expected"
        n = varint()
        out.append((key >> 3, data[pos:pos + n]))
        pos += n
    return out


class EchoModesTest(unittest.TestCase):
    """echo-basic's other modes: GRPC_ECHO_SERVER and TCP_ECHO_SERVER."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.mkdtemp(prefix="sluice-echo-test-")
        cls.addClassCleanup(shutil.rmtree, cls.tmpdir, True)
        args = ["--grpc-listen", "127.0.0.1:0", "--tcp-listen", "127.0.0.1:0",
                "--pod", POD, "--namespace", NS]
        cls.certs = None
        if HAVE_OPENSSL:
            cls.certs = make_certs(cls.tmpdir)
            args += ["--tcp-tls-listen", "127.0.0.1:0", "--cert", cls.certs["cert"], "--key",
                     cls.certs["key"]]
        cls.server = Server(args, tmpdir=cls.tmpdir)
        cls.addClassCleanup(cls.server.stop)
        cls.grpc = cls.server.port("grpc")
        cls.tcp = cls.server.port("tcp")
        cls.tcptls = cls.server.port("tcptls") if HAVE_OPENSSL else None

    def tearDown(self):
        self.assertIsNone(self.server.proc.poll(), "server process died")

    def grpc_call(self, method, metadata=()):
        s = connect(self.grpc)
        c = H2Client(s)
        path = "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/" + method
        block = bytes([0x83, 0x86, 0x04]) + echo.hpack_string(path.encode())
        block += bytes([0x01]) + echo.hpack_string(b"grpc.example.com")        # :authority
        for name, value in (("content-type", "application/grpc"), ("te", "trailers")) + \
                tuple(metadata):
            block += bytes([0x00]) + echo.hpack_string(name.encode()) + \
                echo.hpack_string(value.encode())
        c.send(echo.F_HEADERS, echo.FL_END_HEADERS, 1, block)
        c.send(echo.F_DATA, echo.FL_END_STREAM, 1, b"\x00\x00\x00\x00\x00")
        headers, body, err = c.read_response(1)
        s.close()
        self.assertIsNone(err)
        return dict(headers), body

    def test_grpc_echo(self):
        headers, body = self.grpc_call("EchoTwo", [("version", "two")])
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(headers[b"content-type"], b"application/grpc")
        self.assertEqual(headers[b"grpc-status"], b"0")          # in the trailers
        self.assertEqual(body[0], 0)
        self.assertEqual(struct.unpack("!I", body[1:5])[0], len(body) - 5)
        (field, assertions), = pb_fields(body[5:])                # EchoResponse.assertions
        self.assertEqual(field, 1)
        fields = pb_fields(assertions)
        self.assertEqual(fields[0], (1, b"/gateway_api_conformance.echo_basic.grpcecho."
                                        b"GrpcEcho/EchoTwo"))
        heads = [tuple(v for _, v in pb_fields(h)) for f, h in fields if f == 2]
        self.assertIn((b":authority", b"grpc.example.com"), heads)
        self.assertIn((b"version", b"two"), heads)
        self.assertNotIn((b"te", b"trailers"), heads)
        self.assertIn((3, b"grpc.example.com"), fields)
        context = dict(pb_fields(dict(fields)[4]))
        self.assertEqual(context[1], NS.encode())
        self.assertEqual(context[4], POD.encode())

    def test_grpc_unimplemented(self):
        headers, body = self.grpc_call("EchoThree")
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(headers[b"grpc-status"], b"12")          # trailers-only answer
        self.assertIn(b"EchoThree", headers[b"grpc-message"])
        self.assertEqual(body, b"")

    def tcp_dialogue(self, sock):
        r = sock.makefile("rb")
        self.assertEqual(r.readline(), b"Gateway API Test TCP Server\n")
        sock.sendall(b"PING\nIS_TLS\nNOPE\nTEST\n")
        self.assertEqual(r.readline(), b"PONG\n")
        is_tls = r.readline()
        return is_tls, json.loads(r.readline())

    def test_tcp_echo(self):
        s = connect(self.tcp)
        is_tls, body = self.tcp_dialogue(s)
        s.close()
        self.assertEqual(is_tls, b"false\n")
        self.assertEqual(body["pod"], POD)
        self.assertEqual(body["namespace"], NS)
        self.assertEqual(body["tcpport"], str(self.tcp))
        self.assertFalse(body["isTLS"])
        self.assertNotIn("tls", body)

    @unittest.skipUnless(HAVE_OPENSSL, "needs the openssl CLI")
    def test_tcp_echo_tls(self):
        ctx = ssl.create_default_context(cafile=self.certs["ca"])
        s = ctx.wrap_socket(connect(self.tcptls), server_hostname="abc.example.com")
        is_tls, body = self.tcp_dialogue(s)
        s.close()
        self.assertEqual(is_tls, b"true\n")
        self.assertTrue(body["isTLS"])
        self.assertEqual(body["tlsport"], str(self.tcptls))
        self.assertEqual(body["tls"]["serverName"], "abc.example.com")
        self.assertNotIn("negotiatedProtocol", body["tls"])


if __name__ == "__main__":
    try:
        unittest.main(verbosity=2 if "-v" in sys.argv else 1)
    finally:
        _kill_all()
