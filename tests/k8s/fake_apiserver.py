#!/usr/bin/env python3
"""A fake Kubernetes API server for sluice's Kubernetes source tests (Python 3 stdlib only).

Speaks the parts of the wire protocol the controlplane uses, at 127.0.0.1, on plain HTTP or
on HTTPS (serve(tls=...): a server certificate, optionally requiring and verifying a client
certificate; the TLS context can be swapped while running, as a server rotating its
certificate would):
  - GET lists with metadata.resourceVersion, chunked with limit/continue
    (an expired continue token -> 410);
  - GET ?watch=1: newline-delimited JSON events ADDED/MODIFIED/DELETED/BOOKMARK from a
    resourceVersion; a resourceVersion older than the compaction point -> an ERROR event
    with a 410 Status (as the real server does), or HTTP 410 when `gone_http` is set;
  - GET of one object; 404 for unknown resources (a missing CRD);
  - PATCH .../status with application/merge-patch+json (RFC 7386) touching only .status,
    with a metadata.resourceVersion precondition (409 when stale); every write recorded;
  - Leases (coordination.k8s.io/v1): GET, POST (409 if it exists), PUT (409 on a stale
    resourceVersion).
Test hooks (Python API, used by k8s_source_test.py, k8s_faults_test.py and
perf/k8s_sync_bench.py): apply(), bulk_load() (many objects, no watch history), delete(),
compact(), drop_watches(), status_writes, `hide` (resources answered with 404),
`valid_tokens` (bearer tokens accepted; others get 401), `bookmark_rv` (per resource, the
resourceVersion of the last BOOKMARK sent), over HTTPS `tls_peers` (the
client certificate's subject CN, or None, and the TLS version of each request) and
`tls_failures` (handshakes that failed: the server's reason), and one-shot faults:
  list_faults[plural]  = [mode, ...]  the next list requests (not the limit=1 discovery) get
                                      "badjson" (200, application/json, broken JSON), "html"
                                      (200, text/html: a proxy's page), "html502" (502,
                                      text/html) or "cut" (the body stops half-way);
  watch_faults[plural] = [mode, ...]  the next watch requests get "badjson" (an event line
                                      that is not JSON), "html" (200, text/html) or "cut"
                                      (half an event, then the connection closes).
Run alone: fake_apiserver.py [--port 0] [--tls CERT KEY [CLIENT_CA]] examples/seed/*.yaml
(prints the port).
"""

import bisect
import json
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

# ---------------------------------------------------------------- a small YAML reader
# Enough YAML for Kubernetes manifests: block maps and sequences, plain/quoted scalars,
# flow sequences/maps of scalars, comments, '---'. No anchors, no multi-line scalars.


def _scalar(s):
    s = s.strip()
    if s == "" or s == "~" or s == "null":
        return None
    if s[0] == '"':
        return json.loads(s)
    if s[0] == "'":
        return s[1:-1].replace("''", "'")
    if s[0] == "[" or s[0] == "{":
        inner = s[1:-1].strip()
        if s[0] == "[":
            return [_scalar(x) for x in _split_flow(inner)] if inner else []
        out = {}
        for part in _split_flow(inner):
            k, _, v = part.partition(":")
            out[_scalar(k)] = _scalar(v)
        return out
    if s in ("true", "True"):
        return True
    if s in ("false", "False"):
        return False
    if re.fullmatch(r"-?[0-9]+", s):
        return int(s)
    return s


def _split_flow(s):
    parts, depth, cur, q = [], 0, "", None
    for c in s:
        if q:
            cur += c
            if c == q:
                q = None
        elif c in "\"'":
            q = c
            cur += c
        elif c in "[{":
            depth += 1
            cur += c
        elif c in "]}":
            depth -= 1
            cur += c
        elif c == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += c
    if cur.strip():
        parts.append(cur.strip())
    return parts


def _strip_comment(line):
    q = None
    for i, c in enumerate(line):
        if q:
            if c == q:
                q = None
        elif c in "\"'":
            q = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_kv(text):
    """'key: value' -> (key, value) or None when text is not a mapping entry."""
    m = re.match(r'^("[^"]*"|\'[^\']*\'|[^\s:"\'][^:]*?):(\s+(.*))?$', text)
    if not m:
        return None
    return _scalar(m.group(1)) if m.group(1)[0] in "\"'" else m.group(1), (m.group(3) or "")


def _parse_block(lines, i, indent):
    """Parses the node starting at lines[i] with the given indent. Returns (node, next i)."""
    if i >= len(lines):
        return None, i
    ind, text = lines[i]
    if text.startswith("- ") or text == "-":
        seq = []
        while i < len(lines) and lines[i][0] == indent and (
                lines[i][1].startswith("- ") or lines[i][1] == "-"):
            rest = lines[i][1][2:] if lines[i][1] != "-" else ""
            if rest == "":
                node, i = _parse_block(lines, i + 1, lines[i + 1][0]) if i + 1 < len(lines) and \
                    lines[i + 1][0] > indent else (None, i + 1)
                seq.append(node)
                continue
            # "- key: value" starts a map whose indent is indent + 2
            sub = [(indent + 2, rest)]
            j = i + 1
            while j < len(lines) and lines[j][0] > indent:
                sub.append(lines[j])
                j += 1
            if _split_kv(rest) is not None and not rest.startswith(("[", "{", '"')):
                node, _ = _parse_block(sub, 0, indent + 2)
            else:
                node = _scalar(rest)
            seq.append(node)
            i = j
        return seq, i
    out = {}
    while i < len(lines) and lines[i][0] == indent:
        kv = _split_kv(lines[i][1])
        if kv is None:
            raise ValueError("cannot parse line: " + lines[i][1])
        k, v = kv
        i += 1
        if v == "":
            if i < len(lines) and (lines[i][0] > indent or (
                    lines[i][0] == indent and lines[i][1].startswith("- "))):
                out[k], i = _parse_block(lines, i, lines[i][0])
            else:
                out[k] = None
        else:
            out[k] = _scalar(v)
    return out, i


def load_yaml_docs(text):
    docs, cur = [], []
    for raw in text.split("\n") + ["---"]:
        if raw.strip() == "---" or raw.startswith("--- "):
            body = [(len(l) - len(l.lstrip(" ")), l.strip()) for l in cur]
            body = [(a, b) for a, b in body if b]
            if body:
                docs.append(_parse_block(body, 0, body[0][0])[0])
            cur = []
            continue
        line = _strip_comment(raw)
        if line.strip():
            cur.append(line)
    return docs


# ---------------------------------------------------------------- the server state

RESOURCES = {  # kind -> (plural, namespaced)
    "GatewayClass": ("gatewayclasses", False), "Gateway": ("gateways", True),
    "ListenerSet": ("listenersets", True), "HTTPRoute": ("httproutes", True),
    "GRPCRoute": ("grpcroutes", True), "TLSRoute": ("tlsroutes", True),
    "TCPRoute": ("tcproutes", True), "UDPRoute": ("udproutes", True),
    "ReferenceGrant": ("referencegrants", True), "BackendTLSPolicy": ("backendtlspolicies", True),
    "Namespace": ("namespaces", False), "Service": ("services", True),
    "EndpointSlice": ("endpointslices", True), "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True), "Lease": ("leases", True),
}
PLURALS = {p: k for k, (p, _) in RESOURCES.items()}


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    target = dict(target)
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        else:
            target[k] = merge_patch(target.get(k), v)
    return target


HTML_PAGE = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
             b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
             b"</body>\r\n</html>\r\n")


class State:
    def __init__(self):
        self.lock = threading.Condition()
        self.rv = 100
        self.objects = {}   # plural -> {(ns, name): obj}
        self.events = {}    # plural -> [(rv, type, obj)], rv ascending
        self.event_rvs = {}  # plural -> [rv] (bisect)
        self.sorted_keys = {}  # plural -> sorted keys of objects[plural] (list cache)
        self.list_faults = {}   # plural -> [mode] consumed one per list request
        self.watch_faults = {}  # plural -> [mode] consumed one per watch request
        self.compacted = 0  # watches from an rv below this get 410
        self.hide = set()   # plurals answered with 404 (CRD not installed)
        self.status_writes = []  # (plural, ns, name, patch body, identity hint)
        self.requests = []  # (method, path)
        self.drop_gen = 0   # bump to cut every open watch
        self.gone_http = False
        self.force_conflicts = 0  # answer the next N status patches with 409
        self.watch_bookmark_s = 0.5
        self.valid_tokens = None  # set of accepted bearer tokens; None = no authentication
        self.unauthorized = 0     # 401 answers given
        self.tls_peers = []       # HTTPS: (client certificate CN or None, TLS version) per request
        self.tls_failures = []    # HTTPS: handshakes that failed (the server's reason)
        self.bookmark_rv = {}     # plural -> the resourceVersion of the last BOOKMARK sent

    def _next_rv(self):
        self.rv += 1
        return str(self.rv)

    def _event(self, rv, plural, typ, obj):
        self.events.setdefault(plural, []).append((rv, typ, json.loads(json.dumps(obj))))
        self.event_rvs.setdefault(plural, []).append(rv)

    def events_after(self, plural, rv, ns=""):
        """The events of `plural` newer than rv (caller holds the lock)."""
        i = bisect.bisect_right(self.event_rvs.get(plural, []), rv)
        evs = self.events.get(plural, [])[i:]
        return [e for e in evs if not ns or e[2]["metadata"].get("namespace") == ns]

    def take_fault(self, table, plural):
        with self.lock:
            modes = table.get(plural)
            return modes.pop(0) if modes else None

    def bulk_load(self, objs):
        """Stores many objects at once without watch history (clients list them), as if
        they had been created before the watch cache's window."""
        with self.lock:
            for obj in objs:
                plural, namespaced = RESOURCES[obj["kind"]]
                md = obj.setdefault("metadata", {})
                if namespaced:
                    md.setdefault("namespace", "default")
                md.setdefault("generation", 1)
                md.setdefault("uid", "uid-%d" % self.rv)
                md["resourceVersion"] = self._next_rv()
                self.objects.setdefault(plural, {})[(md.get("namespace", ""), md["name"])] = obj
                self.sorted_keys.pop(plural, None)
            self.compacted = self.rv + 1
            self._next_rv()
            self.lock.notify_all()
    def apply(self, obj):
        """Creates or replaces an object (spec change: generation + 1)."""
        with self.lock:
            kind = obj["kind"]
            plural, namespaced = RESOURCES[kind]
            md = obj.setdefault("metadata", {})
            if namespaced:
                md.setdefault("namespace", "default")
            key = (md.get("namespace", ""), md["name"])
            old = self.objects.setdefault(plural, {}).get(key)
            if old is not None:
                md["generation"] = old["metadata"].get("generation", 1) + 1
                if "status" in old and "status" not in obj:
                    obj["status"] = old["status"]
                typ = "MODIFIED"
            else:
                md["generation"] = md.get("generation", 1)
                md.setdefault("uid", "uid-%d" % self.rv)
                typ = "ADDED"
            md["resourceVersion"] = self._next_rv()
            self.objects[plural][key] = obj
            if old is None:
                self.sorted_keys.pop(plural, None)
            self._event(int(md["resourceVersion"]), plural, typ, obj)
            self.lock.notify_all()
            return obj

    def delete(self, kind, ns, name):
        with self.lock:
            plural = RESOURCES[kind][0]
            obj = self.objects.get(plural, {}).pop((ns, name), None)
            if obj is None:
                return False
            self.sorted_keys.pop(plural, None)
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._event(self.rv, plural, "DELETED", obj)
            self.lock.notify_all()
            return True

    def get(self, kind, ns, name):
        with self.lock:
            o = self.objects.get(RESOURCES[kind][0], {}).get((ns, name))
            return json.loads(json.dumps(o)) if o else None

    def compact(self):
        """Forgets history: every watch from an older resourceVersion now gets 410, and the
        open watches are cut, so clients must relist."""
        with self.lock:
            self.compacted = self.rv + 1
            self._next_rv()
            self.events = {}
            self.event_rvs = {}
            self.drop_gen += 1
            self.lock.notify_all()

    def drop_watches(self):
        with self.lock:
            self.drop_gen += 1
            self.lock.notify_all()


STATE = State()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            # The handshake runs here, in the connection's thread (not in the accept loop),
            # bounded so that a client that never finishes it does not keep the thread.
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                with STATE.lock:
                    STATE.tls_failures.append(getattr(e, "reason", None) or str(e))
                raise
            self.request.settimeout(None)
        super().setup()

    def parse_request(self):
        if not super().parse_request():
            return False
        if isinstance(self.request, ssl.SSLSocket):
            cert = self.request.getpeercert() or {}
            cn = None
            for rdn in cert.get("subject", ()):
                for k, v in rdn:
                    if k == "commonName":
                        cn = v
            with STATE.lock:
                STATE.tls_peers.append((cn, self.request.version()))
        return True

    def _send(self, code, obj, ctype="application/json"):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code, reason, msg=""):
        self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "code": code, "reason": reason, "message": msg})

    def _authorized(self):
        if STATE.valid_tokens is None:
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in STATE.valid_tokens:
            return True
        STATE.unauthorized += 1
        self._status(401, "Unauthorized", "Unauthorized")
        return False

    def _route(self):
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        parts = [p for p in u.path.split("/") if p]
        # /api/v1/... or /apis/group/version/...
        if parts[:1] == ["api"]:
            rest = parts[2:]
        elif parts[:1] == ["apis"]:
            rest = parts[3:]
        else:
            return None
        ns = ""
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
            ns, rest = rest[1], rest[2:]
        elif rest == ["namespaces"] or (len(rest) == 2 and rest[0] == "namespaces"):
            pass
        if not rest:
            return None
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        return plural, ns, name, sub, q

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        if not self._authorized():
            return
        STATE.requests.append(("GET", self.path))
        r = self._route()
        if r is None or r[0] not in PLURALS or r[0] in STATE.hide:
            return self._status(404, "NotFound", "the server could not find the requested resource")
        plural, ns, name, sub, q = r
        if name:
            with STATE.lock:
                o = STATE.objects.get(plural, {}).get((ns, name))
            return self._send(200, o) if o else self._status(404, "NotFound", name)
        if q.get("watch") in ("1", "true"):
            return self._watch(plural, ns, q)
        limit = int(q.get("limit", "0") or 0)
        fault = STATE.take_fault(STATE.list_faults, plural) if limit != 1 else None
        if fault == "badjson":
            return self._send(200, b'{"kind":"List","apiVersion":"v1","metadata":{},"items":[{"me'
                                   b'tadata":{"name":"x",}}]}')
        if fault == "html":
            return self._send(200, HTML_PAGE, "text/html")
        if fault == "html502":
            return self._send(502, HTML_PAGE, "text/html")
        with STATE.lock:
            objs = STATE.objects.get(plural, {})
            keys = STATE.sorted_keys.get(plural)
            if keys is None:
                keys = STATE.sorted_keys[plural] = sorted(objs)
            if ns:
                keys = [k for k in keys if k[0] == ns]
            rv = str(STATE.rv)
            start = 0
            cont = q.get("continue")
            if cont:
                crv, _, off = cont.partition(":")
                if int(crv) < STATE.compacted:
                    return self._status(410, "Expired", "continue token expired")
                start, rv = int(off), crv
            md = {"resourceVersion": rv}
            end = len(keys)
            if limit and start + limit < len(keys):
                md["continue"] = "%s:%d" % (rv, start + limit)
                end = start + limit
            items = [json.loads(json.dumps(objs[k])) for k in keys[start:end] if k in objs]
        for o in items:  # as the real server: list items carry no kind/apiVersion
            if "x-k8s.io" not in o.get("apiVersion", ""):  # (the seed's v1alpha1 keeps its own)
                o.pop("kind", None)
                o.pop("apiVersion", None)
        body = json.dumps({"kind": PLURALS[plural] + "List", "apiVersion": "v1", "metadata": md,
                           "items": items}).encode()
        if fault == "cut":
            # Promise the whole body, send half of it, hang up.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(200, body)

    def _watch(self, plural, ns, q):
        rv = int(q.get("resourceVersion") or STATE.rv)
        timeout = float(q.get("timeoutSeconds", "300"))
        if rv < STATE.compacted and STATE.gone_http:
            return self._status(410, "Expired", "too old resource version")
        fault = STATE.take_fault(STATE.watch_faults, plural)
        if fault == "html":
            return self._send(200, HTML_PAGE, "text/html")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(obj):
            data = (json.dumps(obj) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        try:
            if fault == "badjson":
                bad = b'{"type":"MODIFIED","object":{"metadata":{"name":"x"}} oops\n'
                self.wfile.write(b"%x\r\n%s\r\n" % (len(bad), bad))
                self.wfile.flush()
            if rv < STATE.compacted:
                chunk({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                                                   "status": "Failure", "code": 410,
                                                   "reason": "Expired",
                                                   "message": "too old resource version"}})
                self.wfile.write(b"0\r\n\r\n")
                return
            deadline = time.time() + timeout
            gen = STATE.drop_gen
            last_bm = time.time()
            while time.time() < deadline:
                with STATE.lock:
                    evs = STATE.events_after(plural, rv, ns)
                    if not evs and STATE.drop_gen == gen and fault != "cut":
                        STATE.lock.wait(0.1)
                        evs = STATE.events_after(plural, rv, ns)
                    cur = STATE.rv
                    dropped = STATE.drop_gen != gen or fault == "cut"
                if dropped:
                    # Cut mid-event: half an object, then close without the final chunk.
                    data = b'{"type":"MODIFIED","object":{"kind":'
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for e in evs:
                    chunk({"type": e[1], "object": e[2]})
                rv = max(rv, cur)  # every event of this resource up to cur was sent
                if time.time() - last_bm > STATE.watch_bookmark_s:
                    last_bm = time.time()
                    chunk({"type": "BOOKMARK", "object": {
                        "kind": PLURALS[plural], "metadata": {"resourceVersion": str(rv)}}})
                    with STATE.lock:
                        STATE.bookmark_rv[plural] = max(rv, STATE.bookmark_rv.get(plural, 0))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_PATCH(self):
        if not self._authorized():
            return
        STATE.requests.append(("PATCH", self.path))
        r = self._route()
        if r is None or r[0] not in PLURALS:
            return self._status(404, "NotFound")
        plural, ns, name, sub, q = r
        if self.headers.get("Content-Type") != "application/merge-patch+json":
            return self._status(415, "UnsupportedMediaType", self.headers.get("Content-Type", ""))
        patch = self._body()
        with STATE.lock:
            o = STATE.objects.get(plural, {}).get((ns, name))
            if o is None:
                return self._status(404, "NotFound", name)
            want = (patch.get("metadata") or {}).get("resourceVersion")
            if STATE.force_conflicts > 0:
                # Another writer got there first: bump the object, answer 409.
                STATE.force_conflicts -= 1
                o["metadata"]["resourceVersion"] = STATE._next_rv()
                return self._status(409, "Conflict", "the object has been modified")
            if want and want != o["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", "the object has been modified")
            if sub != "status":
                return self._status(405, "MethodNotAllowed", "only the status subresource")
            o = json.loads(json.dumps(o))
            o["status"] = merge_patch(o.get("status") or {}, patch.get("status") or {})
            o["metadata"]["resourceVersion"] = STATE._next_rv()
            STATE.objects[plural][(ns, name)] = o
            STATE._event(STATE.rv, plural, "MODIFIED", o)
            STATE.status_writes.append((plural, ns, name, patch, self.headers.get("User-Agent")))
            STATE.lock.notify_all()
        self._send(200, o)

    def do_POST(self):
        if not self._authorized():
            return
        STATE.requests.append(("POST", self.path))
        r = self._route()
        if r is None or r[0] != "leases":
            return self._status(405, "MethodNotAllowed")
        obj = self._body()
        with STATE.lock:
            key = (r[1], obj["metadata"]["name"])
            if key in STATE.objects.setdefault("leases", {}):
                return self._status(409, "AlreadyExists", key[1])
            obj["metadata"]["resourceVersion"] = STATE._next_rv()
            STATE.objects["leases"][key] = obj
        self._send(201, obj)

    def do_PUT(self):
        if not self._authorized():
            return
        STATE.requests.append(("PUT", self.path))
        r = self._route()
        if r is None or r[0] != "leases" or not r[2]:
            return self._status(405, "MethodNotAllowed")
        obj = self._body()
        with STATE.lock:
            key = (r[1], r[2])
            cur = STATE.objects.setdefault("leases", {}).get(key)
            if cur is None:
                return self._status(404, "NotFound", r[2])
            if obj.get("metadata", {}).get("resourceVersion") != cur["metadata"]["resourceVersion"]:
                return self._status(409, "Conflict", "the object has been modified")
            obj["metadata"]["resourceVersion"] = STATE._next_rv()
            STATE.objects["leases"][key] = obj
        self._send(200, obj)


class Server(ThreadingHTTPServer):
    ssl_ctx = None  # HTTPS when set; read for each new connection (swap it to rotate)

    def get_request(self):
        sock, addr = super().get_request()
        ctx = self.ssl_ctx
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # clients that hang up mid-watch are expected


def tls_context(cert, key, client_ca=None):
    """A server TLS context: the certificate chain and key (PEM files); with client_ca, a
    client certificate signed by it is required (ssl.CERT_REQUIRED) and verified."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


def serve(port=0, tls=None):
    """Serves STATE on 127.0.0.1:port (0 = any) in a thread; tls: an SSLContext
    (tls_context()) for HTTPS, None for plain HTTP."""
    srv = Server(("127.0.0.1", port), Handler)
    srv.ssl_ctx = tls
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


if __name__ == "__main__":
    args = sys.argv[1:]
    port, tls = 0, None
    if args[:1] == ["--port"]:
        port, args = int(args[1]), args[2:]
    if args[:1] == ["--tls"]:
        n = 4 if len(args) > 3 and not args[3].endswith(".yaml") else 3
        tls, args = tls_context(*args[1:n]), args[n:]
    for f in args:
        for d in load_yaml_docs(open(f).read()):
            if d:
                STATE.apply(d)
    s = serve(port, tls)
    print(s.server_address[1], flush=True)
    while True:
        time.sleep(3600)
