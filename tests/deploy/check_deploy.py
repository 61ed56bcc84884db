#!/usr/bin/env python3
"""Checks deploy/ without a cluster (meson test deploy_check).

usage: check_deploy.py BUILD_ROOT SOURCE_ROOT [--deploy-dir=DIR] [--no-self-test]

What it verifies (deploy/README.md, "What CI checks"):
- Gateway API objects: `sluicectl validate --no-assume-class` on deploy/baremetal/config and
  on the Gateway API objects of deploy/k8s (gatewayclass.yaml) must exit 0, print no warning,
  and give every GatewayClass, Gateway (and each listener) and Route Accepted/ResolvedRefs.
- Kubernetes YAML in deploy/k8s (recursively): apiVersion/kind/metadata.name; namespaces
  exist; Deployment/DaemonSet selectors match their template labels; every container runs a
  sluice binary (directly or `sh -c '... exec BIN ...'`) whose options exist in that binary's
  --help, with a value when --help says `arg`, including the options coming from ConfigMap
  keys; $VARs are defined; ConfigMap keys referenced exist; volumeMounts name declared
  volumes; probes agree with the options (stats file, --admin port); the controlplane's
  --dp-socket list equals the sockets of the pod's consumers, on a shared volume; hugepage
  pods are Guaranteed and the EAL's -m fits the hugepage limit; security contexts (non-root
  controlplane, read-only root fs, privileged only for the DPDK dataplane); the API token
  reaches the controlplane; RBAC: read verbs only, except patch/update on */status and
  create/update on Leases (in a namespaced Role, limited to the Lease the controlplane uses),
  no wildcards, and every kind the Kubernetes source lists (controlplane/source/k8s_source.cc)
  readable; bindings name existing roles and service accounts.
- systemd units in deploy/systemd: ExecStart runs a build target (by its installed name)
  with options from its --help, $VARs from the unit's EnvironmentFile (its example in
  deploy/systemd/env/), Restart=on-failure, LimitNOFILE, CPUAffinity, RuntimeDirectory=sluice
  shared with RuntimeDirectoryPreserve=yes, the controlplane ordered after the consumers and
  its --dp-socket list equal to theirs; `systemd-analyze verify` when it is installed.
- deploy/docker/Dockerfile: its install prefix is the one of the binary paths in the pods.
- Self-test: the same checks on copies of deploy/ with one deliberate fault each must fail
  (a check that cannot fail proves nothing).
Needs python3-yaml (tools/install-deps.sh).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("check_deploy: python3-yaml is missing (tools/install-deps.sh installs it)",
          file=sys.stderr)
    sys.exit(1)

GW_GROUP = "gateway.networking.k8s.io"
ROUTE_KINDS = {"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute", "UDPRoute"}
READ_VERBS = {"get", "list", "watch"}
STATUS_VERBS = READ_VERBS | {"patch", "update"}
LEASE_VERBS = {"get", "create", "update", "patch"}
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Options a binary refuses to start without (docs/configuration.md).
REQUIRED = {
    "sluice-controlplane": [("--config-dir", "--kubernetes", "--kubeconfig")],
    "sluice-dataplane": [("--snat",)],
}
VAR_RE = re.compile(r"\$(?:\{(\w+)\}|\((\w+)\)|(\w+))")
OPT_LINE_RE = re.compile(
    r"^\s{1,4}(?:-(\w) \[ )?--([A-Za-z0-9][\w-]*)(?: \])?( arg)?(?: \(=(.*?)\))?(?:\s|$)")


class Binaries:
    """The build's executables (meson-info) and the options of their --help."""

    def __init__(self, build_root):
        info = os.path.join(build_root, "meson-info", "intro-targets.json")
        with open(info) as f:
            targets = json.load(f)
        self.path = {t["name"]: t["filename"][0] for t in targets
                     if t["type"] == "executable" and t["filename"]}
        self._opts = {}

    def options(self, name):
        """{long name: (takes_arg, default)} plus {'-x': long} for short names."""
        if name not in self._opts:
            argv = [self.path[name], "--help"]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            opts = {}
            for line in (r.stdout + r.stderr).splitlines():
                m = OPT_LINE_RE.match(line)  # boost: "  -h [ --help ]", "  --x arg (=default)"
                if not m:
                    continue
                opts["--" + m.group(2)] = (bool(m.group(3)), m.group(4))
                if m.group(1):
                    opts["-" + m.group(1)] = "--" + m.group(2)
            if not opts:
                raise RuntimeError(f"{' '.join(argv)}: no options found in its help")
            self._opts[name] = opts
        return self._opts[name]


class Env:
    """What a $VAR stands for: a string (split into words), or opaque (runtime value)."""

    OPAQUE = object()

    def __init__(self):
        self.values = {}   # name -> str | OPAQUE
        self.flags = {}    # opaque script variable -> option names assigned into it

    def define(self, name, value):
        self.values[name] = value


class Checker:
    def __init__(self, build_root, source_root, deploy_dir, bins):
        self.build_root = build_root
        self.source_root = source_root
        self.deploy = deploy_dir
        self.bins = bins
        self.errors = []
        self.notes = []
        self.counts = {"command lines": 0, "Gateway API objects": 0, "Kubernetes objects": 0,
                       "systemd units": 0}

    # ------------------------------------------------------------------ helpers
    def err(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def rel(self, path):
        return os.path.relpath(path, os.path.dirname(self.deploy))

    def binary_of(self, path_token):
        """The build target a program path names, or None."""
        name = os.path.basename(path_token)
        return name if name in self.bins.path else None

    # ------------------------------------------------------ command line checks
    def check_cmdline(self, where, binary, tokens, env):
        """Options of one invocation of a sluice binary (tokens after the program)."""
        try:
            opts = self.bins.options(binary)
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            self.err(where, f"cannot read {binary} --help: {e}")
            return {}
        # Expand variables; words from an opaque variable are unknown.
        words = []  # (word, origin) ; word None = unknown extent
        opaque_flags = set()  # options a script variable carries (values known at run time)
        after_dashdash = False
        for t in tokens:
            if t == "--":
                after_dashdash = True
            for m in VAR_RE.finditer(t):
                name = next(g for g in m.groups() if g)
                if name not in env.values:
                    self.err(where, f"${name} is not defined (env, ConfigMap or script)")
            if after_dashdash:
                continue  # EAL arguments: not ours
            m = VAR_RE.fullmatch(t)
            if m:
                name = next(g for g in m.groups() if g)
                val = env.values.get(name)
                braced = t.startswith("${")
                if val is None:
                    continue
                if val is Env.OPAQUE:
                    for flag in env.flags.get(name, []):
                        if flag not in opts:
                            self.err(where, f"{binary} has no option {flag} (assigned to ${name})")
                        opaque_flags.add(flag)
                    words.append((None, name))
                elif braced:
                    words.append((val, name))
                else:
                    words.extend((w, name) for w in val.split())
            else:
                words.append((t, None))
        values = {}
        i = 0
        while i < len(words):
            w, origin = words[i]
            src = f" (from ${origin})" if origin else ""
            i += 1
            if w is None:
                continue
            if w.startswith("--"):
                name, eq, val = w.partition("=")
                spec = opts.get(name)
                if spec is None or not isinstance(spec, tuple):
                    self.err(where, f"{binary} has no option {name}{src}")
                    continue
                takes_arg, _ = spec
                if takes_arg and not eq:
                    if i >= len(words):
                        self.err(where, f"{name} needs a value{src}")
                        continue
                    nxt = words[i][0]
                    if nxt is not None and nxt.startswith("--"):
                        self.err(where, f"{name} needs a value, got {nxt}{src}")
                        continue
                    val = nxt
                    i += 1
                elif not takes_arg and eq:
                    self.err(where, f"{name} takes no value{src}")
                values.setdefault(name, []).append(val if takes_arg else True)
            elif w.startswith("-") and w != "-":
                if w[:2] not in opts:
                    self.err(where, f"{binary} has no option {w[:2]}{src}")
            else:
                self.err(where, f"unexpected argument {w!r}{src} ({binary} takes options only)")
        for flag in opaque_flags:
            values.setdefault(flag, [None])
        for alternatives in REQUIRED.get(binary, []):
            if not any(a in values for a in alternatives):
                self.err(where, f"{binary} needs {' or '.join(alternatives)}")
        self.counts["command lines"] += 1
        return values

    @staticmethod
    def naive_values(tokens, env):
        """--opt VALUE pairs before `--`, for a binary this build lacks (no --help to ask)."""
        words = []
        for t in tokens:
            if t == "--":
                break
            m = VAR_RE.fullmatch(t)
            if not m:
                words.append(t)
                continue
            v = env.values.get(next(g for g in m.groups() if g))
            if isinstance(v, str):
                words += v.split()
        out = {}
        for i, w in enumerate(words):
            if w.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
                out.setdefault(w, []).append(words[i + 1])
        return out

    def option_value(self, binary, values, name):
        """Values of an option as given, else its --help default (as a one-item list)."""
        if name in values:
            return values[name]
        if binary not in self.bins.path:
            return []
        spec = self.bins.options(binary).get(name)
        return [spec[1]] if spec and spec[1] is not None else []

    # ------------------------------------------------------------ Gateway API
    def validate_dir(self, where, path, expected):
        """sluicectl validate on PATH; expected: [(kind, ns, name)] of the input."""
        r = subprocess.run([self.bins.path["sluicectl"], "validate", "--no-assume-class", path],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.err(where, f"sluicectl validate exited {r.returncode}")
        for line in r.stderr.splitlines():
            if "warning:" in line or "error:" in line:
                self.err(where, "sluicectl validate: " + line.strip())
        m = re.search(r"(\d+) not accepted/resolved, (\d+) invalid manifests", r.stderr)
        if not m:
            self.err(where, "no summary line from sluicectl validate")
        elif m.group(1) != "0" or m.group(2) != "0":
            self.err(where, "sluicectl validate: " + m.group(0))
        try:
            docs = [d for d in yaml.safe_load_all(r.stdout) if d]
        except yaml.YAMLError as e:
            self.err(where, f"cannot parse the output of sluicectl validate: {e}")
            return
        got = {}
        for d in docs:
            md = d.get("metadata", {})
            got[(d.get("kind"), md.get("namespace"), md.get("name"))] = d.get("status") or {}
        for key in expected:
            kind, ns, name = key
            label = f"{kind} {ns + '/' if ns else ''}{name}"
            if key not in got:
                self.err(where, f"{label}: no status (not handled by sluice: wrong "
                                "controllerName or gatewayClassName?)")
                continue
            self.counts["Gateway API objects"] += 1
            st = got[key]
            if kind in ("GatewayClass", "Gateway"):
                self.need_conditions(where, label, st.get("conditions"), {"Accepted": "True"})
            if kind == "Gateway":
                for li in st.get("listeners") or []:
                    self.need_conditions(where, f"{label} listener {li.get('name')}",
                                         li.get("conditions"),
                                         {"Accepted": "True", "ResolvedRefs": "True",
                                          "Conflicted": "False"})
            if kind in ROUTE_KINDS:
                parents = st.get("parents") or []
                if not parents:
                    self.err(where, f"{label}: attached to no parent")
                for p in parents:
                    self.need_conditions(where, f"{label} parent {p.get('parentRef', {}).get('name')}",
                                         p.get("conditions"),
                                         {"Accepted": "True", "ResolvedRefs": "True"})

    def need_conditions(self, where, label, conds, want):
        have = {c.get("type"): c for c in conds or []}
        for t, s in want.items():
            c = have.get(t)
            if c is None:
                self.err(where, f"{label}: no {t} condition")
            elif c.get("status") != s:
                self.err(where, f"{label}: {t}={c.get('status')} ({c.get('reason')}: "
                                f"{c.get('message', '')})")

    @staticmethod
    def gateway_objects(docs):
        out = []
        for d in docs:
            if not isinstance(d, dict):
                continue
            group = str(d.get("apiVersion", "")).split("/")[0]
            kind = d.get("kind")
            if group == GW_GROUP and (kind in ("GatewayClass", "Gateway") or kind in ROUTE_KINDS):
                md = d.get("metadata") or {}
                out.append((kind, md.get("namespace"), md.get("name")))
        return out

    def check_config_dir(self, path):
        docs = []
        for root, _, files in os.walk(path):
            for f in sorted(files):
                if f.endswith((".yaml", ".yml")):
                    docs += self.load_yaml(os.path.join(root, f))
        expected = self.gateway_objects(docs)
        if not expected:
            self.err(self.rel(path), "no Gateway API objects")
        self.validate_dir(self.rel(path), path, expected)

    # ------------------------------------------------------------ Kubernetes
    def load_yaml(self, path):
        try:
            with open(path) as f:
                return [d for d in yaml.safe_load_all(f) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            self.err(self.rel(path), f"cannot parse: {e}")
            return []

    def check_k8s(self):
        k8s = os.path.join(self.deploy, "k8s")
        objs = []  # (file, doc)
        for root, _, files in os.walk(k8s):
            for f in sorted(files):
                if f.endswith((".yaml", ".yml")):
                    p = os.path.join(root, f)
                    objs += [(self.rel(p), d) for d in self.load_yaml(p)]
        if not objs:
            self.err(self.rel(k8s), "no manifests")
            return
        index = {}
        self.counts["Kubernetes objects"] += len(objs)
        for where, d in objs:
            if not isinstance(d, dict):
                self.err(where, "a document that is not a mapping")
                continue
            md = d.get("metadata") or {}
            for k, v in (("apiVersion", d.get("apiVersion")), ("kind", d.get("kind")),
                         ("metadata.name", md.get("name"))):
                if not v:
                    self.err(where, f"{d.get('kind', '?')}: {k} missing")
            index[(d.get("kind"), md.get("namespace"), md.get("name"))] = d
        namespaces = {n for (k, _, n) in index if k == "Namespace"}
        cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "GatewayClass"}
        for where, d in objs:
            md = d.get("metadata") or {}
            kind = d.get("kind")
            if kind in cluster_scoped:
                if md.get("namespace"):
                    self.err(where, f"{kind} {md.get('name')} is cluster-scoped but has a namespace")
            elif md.get("namespace") not in namespaces:
                self.err(where, f"{kind} {md.get('name')}: namespace {md.get('namespace')!r} "
                                "is not created by deploy/k8s")
        # Gateway API objects: through sluicectl validate.
        gw_docs = [d for _, d in objs if str(d.get("apiVersion", "")).startswith(GW_GROUP + "/")]
        if gw_docs:
            with tempfile.TemporaryDirectory(prefix="sluice-deploy-") as tmp:
                with open(os.path.join(tmp, "objects.yaml"), "w") as f:
                    yaml.safe_dump_all(gw_docs, f)
                self.validate_dir("deploy/k8s (Gateway API objects)", tmp,
                                  self.gateway_objects(gw_docs))
        self.cm_used = set()
        workloads = []
        for where, d in objs:
            kind = d.get("kind")
            if kind in ("Deployment", "DaemonSet", "StatefulSet"):
                workloads.append((where, d))
                self.check_workload(where, d, index)
        for where, d in objs:
            if d.get("kind") == "PodDisruptionBudget":
                sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                if not any(self.labels_match(sel, w) for _, w in workloads):
                    self.err(where, f"PodDisruptionBudget {d['metadata'].get('name')}: selects no "
                                    "workload's pods")
            if d.get("kind") == "ConfigMap":
                name = d["metadata"].get("name")
                for key in (d.get("data") or {}):
                    if key.startswith("SLUICE_") and (name, key) not in self.cm_used:
                        self.err(where, f"ConfigMap {name}: key {key} is used by no container")
        self.check_rbac(objs, index)

    @staticmethod
    def labels_match(sel, workload):
        labels = (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}) \
            .get("labels") or {}
        return bool(sel) and all(labels.get(k) == v for k, v in sel.items())

    def configmap(self, index, ns, name):
        return index.get(("ConfigMap", ns, name))

    def container_env(self, where, c, ns, index):
        env = Env()
        for e in c.get("env") or []:
            name = e.get("name")
            if "value" in e:
                env.define(name, str(e["value"]))
            elif "valueFrom" in e:
                ref = e["valueFrom"].get("configMapKeyRef")
                if ref:
                    cm = self.configmap(index, ns, ref.get("name"))
                    data = (cm or {}).get("data") or {}
                    if cm is None:
                        self.err(where, f"env {name}: ConfigMap {ref.get('name')} not in deploy/k8s")
                    elif ref.get("key") not in data:
                        self.err(where, f"env {name}: ConfigMap {ref.get('name')} has no key "
                                        f"{ref.get('key')}")
                    else:
                        self.cm_used.add((ref.get("name"), ref.get("key")))
                        env.define(name, str(data[ref["key"]]))
                        continue
                    env.define(name, Env.OPAQUE)
                else:
                    env.define(name, Env.OPAQUE)
        for ef in c.get("envFrom") or []:
            ref = ef.get("configMapRef")
            if ref:
                cm = self.configmap(index, ns, ref.get("name"))
                if cm is None:
                    self.err(where, f"envFrom: ConfigMap {ref.get('name')} not in deploy/k8s")
                    continue
                for k, v in (cm.get("data") or {}).items():
                    self.cm_used.add((ref.get("name"), k))
                    env.define(ef.get("prefix", "") + k, str(v))
        return env

    def invocations(self, where, c, env):
        """[(binary, tokens after the program)] a container runs."""
        argv = list(c.get("command") or []) + list(c.get("args") or [])
        if not argv:
            self.err(where, "no command (the image's entrypoint is the controlplane's)")
            return []
        if os.path.basename(argv[0]) in ("sh", "bash") and len(argv) >= 3 and argv[1] == "-c":
            script = argv[2]
            sh = shutil.which(os.path.basename(argv[0])) or shutil.which("sh")
            r = subprocess.run([sh, "-n", "-c", script], capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                self.err(where, f"{os.path.basename(argv[0])} -n: {r.stderr.strip()}")
            # Variables the script assigns (name=..., for name in ...): opaque values.
            for m in re.finditer(r"(?m)(?:^|[\s;])(?:for\s+)?([A-Za-z_]\w*)(?:=|\s+in\s)", script):
                env.define(m.group(1), Env.OPAQUE)
                env.flags.setdefault(m.group(1), [])
            for m in re.finditer(r"(?m)(?:^|[\s;])([A-Za-z_]\w*)=(.*)$", script):
                env.flags[m.group(1)] += re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", m.group(2))
            joined = re.sub(r"\\\n", " ", script)
            out = []
            for line in joined.splitlines():
                line = line.strip()
                if not line.startswith("exec "):
                    continue
                try:
                    toks = shlex.split(line)
                except ValueError as e:
                    self.err(where, f"cannot split the exec line: {e}")
                    continue
                out.append((toks[1], toks[2:]))
            if not out:
                self.err(where, "sh -c script without an `exec PROGRAM ...` line")
            return out
        return [(argv[0], argv[1:])]

    def check_workload(self, where, d, index):
        md = d.get("metadata") or {}
        ns = md.get("namespace")
        label = f"{d.get('kind')} {md.get('name')}"
        where = f"{where}: {label}"
        spec = d.get("spec") or {}
        sel = (spec.get("selector") or {}).get("matchLabels") or {}
        if not sel:
            self.err(where, "spec.selector.matchLabels missing")
        elif not self.labels_match(sel, d):
            self.err(where, f"selector {sel} does not match the template labels")
        pod = (spec.get("template") or {}).get("spec") or {}
        sa = pod.get("serviceAccountName")
        if sa and ("ServiceAccount", ns, sa) not in index:
            self.err(where, f"serviceAccountName {sa}: no such ServiceAccount in {ns}")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for v in volumes.values():
            cmv = v.get("configMap")
            # An optional ConfigMap (the GatewayClass parameters a cluster may add) need not
            # ship here; a required one must.
            if cmv and cmv.get("name") != "kube-root-ca.crt" and not cmv.get("optional"):
                if self.configmap(index, ns, cmv.get("name")) is None:
                    self.err(where, f"volume {v['name']}: ConfigMap {cmv.get('name')} not in deploy/k8s")
                else:
                    # Mounted as files: the per-node keys. The SLUICE_* keys are options, used
                    # only when an env entry takes them (so an orphaned one is noticed).
                    for k in (self.configmap(index, ns, cmv["name"]).get("data") or {}):
                        if not k.startswith("SLUICE_"):
                            self.cm_used.add((cmv["name"], k))
        pod_sc = pod.get("securityContext") or {}
        containers = pod.get("containers") or []
        if not containers:
            self.err(where, "no containers")
        runs = []  # (container, binary, values, mounts)
        hugepages = False
        for c in containers:
            cw = f"{where} container {c.get('name')}"
            if not c.get("image"):
                self.err(cw, "no image")
            mounts = {}
            for vm in c.get("volumeMounts") or []:
                if vm.get("name") not in volumes:
                    self.err(cw, f"volumeMount {vm.get('name')} names no volume of the pod")
                mounts[vm.get("mountPath")] = vm.get("name")
            res = c.get("resources") or {}
            if not res.get("limits") or not res.get("requests"):
                self.err(cw, "resources.requests/limits missing")
            if any(k.startswith("hugepages-") for k in (res.get("limits") or {})):
                hugepages = True
            env = self.container_env(cw, c, ns, index)
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                self.err(cw, "securityContext.readOnlyRootFilesystem is not true")
            for prog, toks in self.invocations(cw, c, env):
                binary = self.binary_of(prog)
                if binary is None:
                    if os.path.basename(prog) == "sluice-dataplane":
                        self.notes.append(f"{cw}: sluice-dataplane is not built here (no DPDK): "
                                          "its options are not checked")
                        runs.append((c, "sluice-dataplane", self.naive_values(toks, env), mounts))
                        continue
                    self.err(cw, f"runs {prog}, which is no executable of the build")
                    continue
                if not prog.startswith("/") or not prog.endswith("/bin/" + binary):
                    self.err(cw, f"{prog}: not an installed path (PREFIX/bin/{binary})")
                self.binary_prefixes.add(prog[: -len("/bin/" + binary)])
                values = self.check_cmdline(cw, binary, toks, env)
                runs.append((c, binary, values, mounts))
                if binary == "sluice-controlplane" and "--kubernetes" in values:
                    self.lease_names.update(self.option_value(binary, values, "--lease-name"))
                self.check_container_security(cw, binary, c, sc, pod_sc, pod, mounts, values)
                if binary == "sluice-dataplane":
                    self.check_dpdk_container(cw, c, toks, env, volumes, mounts)
                    if sc.get("runAsUser", pod_sc.get("runAsUser")) != 0:
                        self.err(cw, "sluice-dataplane must run as root (runAsUser: 0; the "
                                     "image's USER is the controlplane's 65532)")
                self.check_probes(cw, c, binary, values)
        if hugepages:
            for c in containers:
                res = c.get("resources") or {}
                for r in ("cpu", "memory"):
                    rq, lm = (res.get("requests") or {}).get(r), (res.get("limits") or {}).get(r)
                    if rq is None or str(rq) != str(lm):
                        self.err(f"{where} container {c.get('name')}",
                                 f"{r} requests != limits: the hugepage pod is not Guaranteed QoS "
                                 "(CPU pinning needs it)")
        self.check_ir_sockets(where, runs)

    def check_container_security(self, cw, binary, c, sc, pod_sc, pod, mounts, values):
        if sc.get("privileged") and binary != "sluice-dataplane":
            self.err(cw, "privileged, but only the DPDK dataplane needs it")
        if binary == "sluice-controlplane":
            non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            if not non_root or not uid:
                self.err(cw, "sluice-controlplane must run as non-root (runAsNonRoot + runAsUser)")
            if sc.get("allowPrivilegeEscalation") is not False:
                self.err(cw, "allowPrivilegeEscalation is not false")
            if "--kubernetes" in values and pod.get("automountServiceAccountToken") is False \
                    and SA_TOKEN_DIR not in mounts:
                self.err(cw, f"--kubernetes without a service account token ({SA_TOKEN_DIR})")
        if binary != "sluice-dataplane":
            caps = (sc.get("capabilities") or {})
            if "ALL" not in (caps.get("drop") or []):
                self.err(cw, "capabilities.drop is not [ALL]")
            extra = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
            if extra:
                self.err(cw, f"capabilities beyond NET_BIND_SERVICE: {sorted(extra)}")

    def check_dpdk_container(self, cw, c, toks, env, volumes, mounts):
        limits = (c.get("resources") or {}).get("limits") or {}
        huge = {k: v for k, v in limits.items() if k.startswith("hugepages-")}
        if not huge:
            self.err(cw, "sluice-dataplane without a hugepages-* limit")
            return
        media = {n: (v.get("emptyDir") or {}).get("medium", "") for n, v in volumes.items()}
        huge_mounts = [p for p, n in mounts.items() if str(media.get(n, "")).startswith("HugePages")]
        if not huge_mounts:
            self.err(cw, "no emptyDir with medium HugePages* mounted")
        # EAL words after `--`, variables expanded.
        eal = []
        if "--" in toks:
            for t in toks[toks.index("--") + 1:]:
                m = VAR_RE.fullmatch(t)
                if m:
                    v = env.values.get(next(g for g in m.groups() if g))
                    eal += v.split() if isinstance(v, str) else []
                else:
                    eal.append(t)
        if "--huge-dir" in eal:
            hd = eal[eal.index("--huge-dir") + 1] if eal.index("--huge-dir") + 1 < len(eal) else ""
            if hd not in huge_mounts:
                self.err(cw, f"--huge-dir {hd} is not the HugePages volume's mount {huge_mounts}")
        if "-m" in eal and eal.index("-m") + 1 < len(eal):
            arg = eal[eal.index("-m") + 1]
            if not arg.isdigit():
                self.err(cw, f"EAL -m {arg}: not a number of MB")
                return
            mb = int(arg)
            total = sum(self.quantity_mb(v) for v in huge.values())
            if mb > total:
                self.err(cw, f"EAL -m {mb} exceeds the hugepage limit ({total} MB): SIGBUS")
        elif not any(w in eal for w in ("-m", "--socket-mem")):
            self.err(cw, "no EAL -m/--socket-mem: the EAL would take every free hugepage")

    @staticmethod
    def quantity_mb(q):
        m = re.fullmatch(r"(\d+)(Gi|Mi)", str(q))
        if not m:
            return 0
        return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)

    def check_probes(self, cw, c, binary, values):
        for pname in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(pname)
            if not p:
                continue
            if "exec" in p:
                text = " ".join(p["exec"].get("command") or [])
                for path in re.findall(r"/run/sluice/[\w./-]+", text):
                    given = [v for vs in values.values() for v in vs if isinstance(v, str)]
                    if path not in given:
                        self.err(cw, f"{pname} reads {path}, which no option of {binary} names")
            if "httpGet" in p:
                port = str(p["httpGet"].get("port"))
                admin = [v for v in values.get("--admin", []) if isinstance(v, str)]
                if not admin or not any(a.rsplit(":", 1)[-1] == port for a in admin):
                    self.err(cw, f"{pname} probes port {port}, but {binary} --admin is {admin}")

    def check_ir_sockets(self, where, runs):
        """In a pod with a controlplane and consumers: the same sockets, on a shared volume."""
        cps = [r for r in runs if r[1] == "sluice-controlplane"]
        consumers = [r for r in runs if r[1] in ("sluice-dataplane", "sluice-l7")]
        if not cps or not consumers:
            return
        for c, _, values, mounts in cps:
            want = set(values.get("--dp-socket", []))
            have = {}
            for cc, b, v, m in consumers:
                for s in self.option_value(b, v, "--dp-socket"):
                    have[s] = (cc, m)
            if want != set(have):
                self.err(where, f"controlplane --dp-socket {sorted(want)} != the consumers' "
                                f"sockets {sorted(have)}")
            for s, (cc, m) in have.items():
                d = os.path.dirname(s)
                if mounts.get(d) is None or mounts.get(d) != m.get(d):
                    self.err(where, f"{s}: its directory is not one volume mounted in both "
                                    f"{c.get('name')} and {cc.get('name')}")

    # ------------------------------------------------------------------ RBAC
    def source_resources(self):
        """(group, plural) the Kubernetes source lists: controlplane/source/k8s_source.cc."""
        path = os.path.join(self.source_root, "controlplane", "source", "k8s_source.cc")
        with open(path) as f:
            text = f.read()
        out = []
        for m in re.finditer(r'\{"(\w+)", (gw|"[\w.]*"), "(\w+)", \{', text):
            group = GW_GROUP if m.group(2) == "gw" else m.group(2).strip('"')
            out.append((group, m.group(3)))
        if len(out) < 10:
            self.err(self.rel(path), f"found only {len(out)} resource definitions in "
                                     "k8s_source.cc: update source_resources() in this check")
        return out

    def check_rbac(self, objs, index):
        roles = {}
        for where, d in objs:
            kind = d.get("kind")
            if kind not in ("Role", "ClusterRole"):
                continue
            label = f"{where}: {kind} {d['metadata'].get('name')}"
            roles[(kind, d["metadata"].get("namespace"), d["metadata"].get("name"))] = d
            for rule in d.get("rules") or []:
                groups = rule.get("apiGroups") or []
                resources = rule.get("resources") or []
                verbs = set(rule.get("verbs") or [])
                if "*" in groups or "*" in resources or "*" in verbs:
                    self.err(label, f"wildcard in {rule}")
                    continue
                for res in resources:
                    if res.endswith("/status"):
                        allowed = STATUS_VERBS
                    elif res == "leases" and groups == ["coordination.k8s.io"]:
                        allowed = LEASE_VERBS
                        if kind != "Role":
                            self.err(label, "Leases in a ClusterRole: keep them in a namespaced Role")
                    else:
                        allowed = READ_VERBS
                    if verbs - allowed:
                        self.err(label, f"{res}: verbs {sorted(verbs - allowed)} beyond "
                                        f"{sorted(allowed)}")
        # What the controlplane's service account may do.
        sa_rules = []
        for where, d in objs:
            if d.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            ref = d.get("roleRef") or {}
            ns = d["metadata"].get("namespace") if ref.get("kind") == "Role" else None
            role = roles.get((ref.get("kind"), ns, ref.get("name")))
            if role is None:
                self.err(where, f"{d['kind']} {d['metadata'].get('name')}: roleRef "
                                f"{ref.get('kind')} {ref.get('name')} not in deploy/k8s")
                continue
            for s in d.get("subjects") or []:
                if s.get("kind") == "ServiceAccount":
                    if ("ServiceAccount", s.get("namespace"), s.get("name")) not in index:
                        self.err(where, f"subject ServiceAccount {s.get('namespace')}/"
                                        f"{s.get('name')} not in deploy/k8s")
                    if s.get("name") == "sluice-controlplane":
                        sa_rules += [(role["kind"], r) for r in role.get("rules") or []]

        def allowed(group, resource, verb, kind=None, name=None):
            for rkind, r in sa_rules:
                if kind and rkind != kind:
                    continue
                if group in (r.get("apiGroups") or []) and resource in (r.get("resources") or []) \
                        and verb in (r.get("verbs") or []):
                    if name is None or not r.get("resourceNames") or name in r["resourceNames"]:
                        return True
            return False

        for group, plural in self.source_resources():
            for verb in sorted(READ_VERBS):
                if not allowed(group, plural, verb):
                    self.err("deploy/k8s rbac", f"the controlplane lists {group or 'core'}/{plural} "
                                                f"but may not {verb} it")
            if group == GW_GROUP and plural != "referencegrants" \
                    and not allowed(group, plural + "/status", "patch"):
                self.err("deploy/k8s rbac", f"no patch on {plural}/status")
        for lease in sorted(self.lease_names):
            for verb in ("get", "create", "update"):
                if not allowed("coordination.k8s.io", "leases", verb, "Role",
                               None if verb == "create" else lease):
                    self.err("deploy/k8s rbac", f"the controlplane may not {verb} the Lease {lease}")

    # --------------------------------------------------------------- systemd
    @staticmethod
    def parse_unit(path):
        sections, cur = {}, None
        with open(path) as f:
            text = re.sub(r"\\\n", " ", f.read())
        for line in text.splitlines():
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                cur = sections.setdefault(line[1:-1], {})
                continue
            k, _, v = line.partition("=")
            cur.setdefault(k.strip(), []).append(v.strip())
        return sections

    @staticmethod
    def parse_env_file(path):
        env = Env()
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line or line[0] in "#;":
                    continue
                k, _, v = line.partition("=")
                v = v.strip()
                if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
                    v = v[1:-1]
                env.define(k.strip(), v)
        return env

    def check_systemd(self):
        sd = os.path.join(self.deploy, "systemd")
        units = {}
        for f in sorted(os.listdir(sd)):
            if f.endswith(".service"):
                units[f] = self.parse_unit(os.path.join(sd, f))
        if not units:
            self.err(self.rel(sd), "no units")
            return
        by_binary = {}
        self.counts["systemd units"] += len(units)
        for f, u in units.items():
            where = f"{self.rel(sd)}/{f}"
            svc = u.get("Service", {})
            for key, want in (("Restart", "on-failure"), ("RuntimeDirectory", "sluice"),
                              ("RuntimeDirectoryPreserve", "yes")):
                if want not in svc.get(key, []):
                    self.err(where, f"{key}={want} missing")
            for key in ("LimitNOFILE", "CPUAffinity", "EnvironmentFile"):
                if not svc.get(key):
                    self.err(where, f"{key}= missing")
            env = Env()
            for ef in svc.get("EnvironmentFile", []):
                ef = ef.lstrip("-")
                m = re.fullmatch(r"/etc/sluice/([\w.-]+\.env)", ef)
                example = os.path.join(sd, "env", m.group(1)) if m else None
                if not example or not os.path.exists(example):
                    self.err(where, f"EnvironmentFile={ef}: no example deploy/systemd/env/"
                                    f"{os.path.basename(ef)}")
                    continue
                env.values.update(self.parse_env_file(example).values)
            execs = svc.get("ExecStart", [])
            if len(execs) != 1:
                self.err(where, "needs exactly one ExecStart=")
                continue
            toks = shlex.split(execs[0].lstrip("-@:+!"))
            binary = self.binary_of(toks[0])
            if binary is None:
                if os.path.basename(toks[0]) == "sluice-dataplane":
                    self.notes.append(f"{where}: sluice-dataplane is not built here (no DPDK): "
                                      "its options are not checked")
                    by_binary["sluice-dataplane"] = (f, u, self.naive_values(toks[1:], env))
                    continue
                self.err(where, f"ExecStart runs {toks[0]}, which is no executable of the build")
                continue
            if not toks[0].endswith("/bin/" + binary):
                self.err(where, f"{toks[0]}: not an installed path (PREFIX/bin/{binary})")
            values = self.check_cmdline(where, binary, toks[1:], env)
            by_binary[binary] = (f, u, values)
            for opt, vs in values.items():
                for v in vs:
                    if isinstance(v, str) and v.startswith("/run/") and \
                            not v.startswith("/run/" + svc.get("RuntimeDirectory", ["?"])[0] + "/"):
                        self.err(where, f"{opt} {v} is outside RuntimeDirectory")
        cp = by_binary.get("sluice-controlplane")
        if cp:
            after = " ".join(cp[1].get("Unit", {}).get("After", [])).split()
            want, have = set(cp[2].get("--dp-socket", [])), set()
            for b in ("sluice-dataplane", "sluice-l7"):
                if b not in by_binary:
                    self.err(self.rel(sd), f"no unit runs {b}")
                    continue
                if by_binary[b][0] not in after:
                    self.err(f"{self.rel(sd)}/{cp[0]}", f"not ordered After={by_binary[b][0]}")
                have |= set(self.option_value(b, by_binary[b][2], "--dp-socket"))
            if want != have:
                self.err(f"{self.rel(sd)}/{cp[0]}", f"--dp-socket {sorted(want)} != the "
                                                    f"consumers' sockets {sorted(have)}")
        self.systemd_analyze(sd, units)

    def systemd_analyze(self, sd, units):
        tool = shutil.which("systemd-analyze")
        if not tool:
            self.notes.append("systemd-analyze not installed: unit syntax not verified")
            return
        with tempfile.TemporaryDirectory(prefix="sluice-units-") as tmp:
            for f in units:
                with open(os.path.join(sd, f)) as src:
                    text = src.read()
                # The binaries are not installed here: verify the unit, not the install.
                text = re.sub(r"(?m)^(ExecStart=[-@:+!]*)\S+", r"\1/bin/true", text)
                with open(os.path.join(tmp, f), "w") as dst:
                    dst.write(text)
            try:
                r = subprocess.run([tool, "verify", "--man=no"] +
                                   [os.path.join(tmp, f) for f in units],
                                   capture_output=True, text=True, timeout=120)
            except subprocess.TimeoutExpired:
                self.notes.append("systemd-analyze verify timed out: unit syntax not verified")
                return
            for line in (r.stdout + r.stderr).splitlines():
                if tmp in line:
                    self.err(self.rel(sd), "systemd-analyze: " + line.replace(tmp + "/", ""))

    # ---------------------------------------------------------------- docker
    def check_docker(self):
        path = os.path.join(self.deploy, "docker", "Dockerfile")
        if not os.path.exists(path):
            self.err("deploy/docker", "no Dockerfile")
            return
        with open(path) as f:
            text = f.read()
        m = re.search(r"--prefix[= ](\S+)", text)
        prefix = m.group(1) if m else "/usr/local"
        for p in sorted(self.binary_prefixes):
            if p != prefix:
                self.err(self.rel(path), f"installs to {prefix}, the pods run {p}/bin/...")
        m = re.search(r'ENTRYPOINT \["([^"]+)"', text)
        if m and self.binary_of(m.group(1)) is None:
            self.err(self.rel(path), f"ENTRYPOINT {m.group(1)} is no executable of the build")

    # ------------------------------------------------------------------ run
    def run(self):
        self.binary_prefixes = set()
        self.lease_names = set()  # --lease-name of every controlplane pod (or its default)
        self.check_config_dir(os.path.join(self.deploy, "baremetal", "config"))
        self.check_k8s()
        self.check_systemd()
        self.check_docker()
        return not self.errors


# ----------------------------------------------------------------- self-test
# Each fault is (description, file under deploy/, old text, new text); the check must fail
# on every one. Keep them on the kinds of drift the check exists for.
FAULTS = [
    ("a renamed controlplane option in a pod", "k8s/dataplane-daemonset.yaml",
     "--status-dir /run/sluice/status", "--status-directory /run/sluice/status"),
    ("an unknown option in the ConfigMap", "k8s/configmap.yaml",
     "--lease-duration 15", "--lease-seconds 15"),
    ("an option without its value", "k8s/configmap.yaml",
     "--address-pool 192.0.2.0/24", "--address-pool"),
    ("a volumeMount without a volume", "k8s/dataplane-daemonset.yaml",
     "- name: run-sluice\n        emptyDir: {}", "- name: run-sluicex\n        emptyDir: {}"),
    ("a selector that misses the template", "k8s/status-only/controlplane-deployment.yaml",
     "  selector:\n    matchLabels:\n      app.kubernetes.io/name: sluice-controlplane\n  strategy",
     "  selector:\n    matchLabels:\n      app.kubernetes.io/name: controlplane\n  strategy"),
    ("RBAC write on a non-status resource", "k8s/rbac.yaml",
     "resources: [namespaces, services, secrets, configmaps]\n  verbs: [get, list, watch]",
     "resources: [namespaces, services, secrets, configmaps]\n  verbs: [get, list, watch, update]"),
    ("a kind the controlplane lists, unreadable", "k8s/rbac.yaml",
     "tcproutes, udproutes, referencegrants", "tcproutes, udproutes"),
    ("a GatewayClass of another controller", "k8s/gatewayclass.yaml",
     "controllerName: sluice.dev/gateway-controller", "controllerName: example.com/other"),
    ("a route to a missing Service", "baremetal/config/shop.yaml",
     "    - name: shop-api\n      port: 8080", "    - name: shop-apj\n      port: 8080"),
    ("an unknown option in a systemd env file", "systemd/env/l7.env",
     "--workers 2", "--worker 2"),
    ("an ExecStart program that is not built", "systemd/sluice-l7.service",
     "/usr/local/bin/sluice-l7 ", "/usr/local/bin/sluice-l8 "),
    ("a probe on the wrong admin port", "k8s/dataplane-daemonset.yaml",
     "            path: /stats\n            port: 9901\n          periodSeconds: 10\n        livenessProbe",
     "            path: /stats\n            port: 9902\n          periodSeconds: 10\n        livenessProbe"),
]


def self_test(build_root, source_root, deploy, bins):
    failures = []
    for desc, rel, old, new in FAULTS:
        with tempfile.TemporaryDirectory(prefix="sluice-deploy-fault-") as tmp:
            copy_dir = os.path.join(tmp, "deploy")
            shutil.copytree(deploy, copy_dir)
            path = os.path.join(copy_dir, rel)
            with open(path) as f:
                text = f.read()
            if text.count(old) != 1:
                failures.append(f"self-test '{desc}': {rel} does not contain the text to break "
                                "exactly once (update FAULTS in tests/deploy/check_deploy.py)")
                continue
            with open(path, "w") as f:
                f.write(text.replace(old, new))
            c = Checker(build_root, source_root, copy_dir, bins)
            c.systemd_analyze = lambda *a: None  # slow and covered by the real run
            if c.run():
                failures.append(f"self-test '{desc}' ({rel}): the check did not fail")
            else:
                print(f"  self-test ok: {desc} -> {c.errors[0]}")
    return failures


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    build_root, source_root = map(os.path.abspath, args[:2])
    deploy = os.path.join(source_root, "deploy")
    for a in sys.argv[1:]:
        if a.startswith("--deploy-dir="):
            deploy = os.path.abspath(a.split("=", 1)[1])
    bins = Binaries(build_root)
    for need in ("sluicectl", "sluice-controlplane", "sluice-l7"):
        if need not in bins.path:
            print(f"check_deploy: {need} is not a target of {build_root}", file=sys.stderr)
            return 1
    c = Checker(build_root, source_root, deploy, bins)
    ok = c.run()
    for n in c.notes:
        print("note: " + n)
    for e in c.errors:
        print("FAIL: " + e)
    print("check_deploy: checked " + ", ".join(f"{n} {k}" for k, n in c.counts.items()) +
          f"; {len(c.errors)} problem(s)")
    if not ok:
        return 1
    if "--no-self-test" not in sys.argv:
        failures = self_test(build_root, source_root, deploy, bins)
        for f in failures:
            print("FAIL: " + f)
        print(f"check_deploy: self-test {len(FAULTS) - len(failures)}/{len(FAULTS)} faults caught")
        if failures:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
