#!/usr/bin/python3
"""Structural checks of the Kubernetes manifests, on the output of `kubectl kustomize`.

  k8s_test.py --server build/bin/tcm-server --overlay deploy/k8s/overlays/cpu --expect cpu
  k8s_test.py --server build/bin/tcm-server --self-test

Checks that the pieces agree with each other and with tcm-server: the flags the container
gets (the ConfigMap's flagfile, then its other args, $(VAR)s resolved) are valid tcm-server
flags (`--only_check_args`), the probes and Services use its ports, the drain fits in the
termination grace period, the pod runs locked down, a CPU variant asks for no GPU and a GPU
variant for one, --intra_op_threads equals the CPU limit, the default model is one the
overlay serves (the image's models/, or what its claim declares), the autoscaler scales the
Deployment on metrics the prometheus-adapter rules serve, and the overlay's batch and queue
sizes reach everything derived from them: the pod labels, the autoscaler's queue target
(one batch), and the recorded limits that alerts.yml's queue alert (3/4 of the queue) and
the dashboard use, run through `promtool test rules` with alerts.yml. --self-test breaks
rendered overlays in known ways and expects each break to be reported.

Exit status: 0 passed, 1 failed, 77 skipped (no kubectl with kustomize 4 or later, or no
promtool).
"""
import argparse
import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADAPTER_RULES = os.path.join(REPO, "deploy/k8s/components/autoscaling/prometheus-adapter-rules.yaml")
ALERTS = os.path.join(REPO, "deploy/prometheus/alerts.yml")
PROMETHEUS_YML = os.path.join(REPO, "deploy/prometheus/prometheus.yml")
IMAGE_MODELS = os.path.join(REPO, "models")  # what the images serve at /models
SERVER_EXIT_GRACE_S = 2  # tcm-server gives the last responses up to 2 s after draining
SKIP = 77

# Flags the flagfile must leave to the Deployment's args, and what sets them there.
ARG_FLAGS = {"max_batch_size": "the overlay's sizing.yaml", "max_queue_size": "the overlay's sizing.yaml",
             "intra_op_threads": "the CPU limit"}
# Pod labels carrying the sizes; Prometheus copies them onto the pod's series.
SIZE_LABELS = {"max_batch_size": "tcm-serve/max-batch-size", "max_queue_size": "tcm-serve/max-queue-size"}
LIMITS_RULE = "tcm-serve-limits"  # the overlay's PrometheusRule recording the sizes
QUEUE_ALERT_FRACTION = 0.75  # TcmServeQueueSaturated fires above this share of --max_queue_size
MODELS_ANNOTATION = "tcm-serve/models"  # on a models claim: the model names it holds, comma-separated


def kustomize_version():
    """The kustomize version built into kubectl, as a tuple, or None without kubectl."""
    if shutil.which("kubectl") is None:
        return None
    out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True)
    try:
        version = json.loads(out.stdout).get("kustomizeVersion", "")
    except json.JSONDecodeError:
        return ()
    m = re.match(r"v?(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else ()


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def parse_flags(text):
    """absl flagfile text -> {name: value}; later lines win, as in absl."""
    flags = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"--?([A-Za-z0-9_]+)(?:=(.*))?", line)
        if not m:
            raise ValueError(f"not a flag line: {line!r}")
        flags[m.group(1)] = m.group(2) if m.group(2) is not None else "true"
    return flags


def cpu_quantity(q):
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def prometheus_label(name):
    """A Kubernetes label name as Prometheus discovery and the Prometheus Operator write it."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def image_models():
    """Names of the models in models/: config.pbtxt's top-level name, else the directory's."""
    names = set()
    for entry in sorted(os.listdir(IMAGE_MODELS)):
        config = os.path.join(IMAGE_MODELS, entry, "config.pbtxt")
        if os.path.isfile(config):
            with open(config) as f:
                m = re.search(r'^name:\s*"([^"]*)"', f.read(), re.M)
            names.add(m.group(1) if m and m.group(1) else entry)
    return names


_defaults = {}


def server_defaults(server):
    """{flag: default} of tcm-server's size flags, from its --help."""
    if server not in _defaults:
        out = subprocess.run([server, "--help"], capture_output=True, text=True).stdout
        _defaults[server] = {}
        for name in SIZE_LABELS:
            m = re.search(rf"--{name} \(.*?\); default: (\d+);", out, re.S)
            if m:
                _defaults[server][name] = int(m.group(1))
    return _defaults[server]


_runs = {}


def run_cached(files, command, both=False):
    """(exit status, stderr, or stdout + stderr with both) of command, run in a temporary
    directory holding files ({name: text}); once per files and command (the self-test
    checks the same things often)."""
    key = (tuple(sorted(files.items())), tuple(command), both)
    if key not in _runs:
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in files.items():
                with open(os.path.join(tmp, name), "w") as f:
                    f.write(text)
            out = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        _runs[key] = (out.returncode, out.stdout + out.stderr if both else out.stderr)
    return _runs[key]


def series(name, labels):
    return name + "{" + ", ".join(f"{k}={json.dumps(str(v))}" for k, v in labels.items()) + "}"


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


class Checker:
    def __init__(self, docs, server, expect):
        self.docs, self.server, self.expect = docs, server, expect
        self.errors = []

    def check(self, ok, message):
        if not ok:
            self.errors.append(message)

    def of_kind(self, kind):
        return [d for d in self.docs if d.get("kind") == kind]

    def run(self):
        deployments = self.of_kind("Deployment")
        if len(deployments) != 1:
            self.errors.append(f"expected one Deployment, got {len(deployments)}")
            return self.errors
        dep = deployments[0]
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        pod_labels = pod["metadata"].get("labels", {})
        self.check(selects(dep["spec"]["selector"].get("matchLabels"), pod_labels),
                   "Deployment selector does not match its pod labels")
        containers = [c for c in spec["containers"] if c["name"] == "tcm-server"]
        if len(containers) != 1:
            self.errors.append("no container named tcm-server")
            return self.errors
        c = containers[0]
        flags = self.flags(c, spec)
        if flags is None:
            return self.errors
        self.ports_and_probes(c, flags)
        self.services(flags, pod_labels)
        self.shutdown(c, spec, flags)
        self.security(c, spec)
        self.resources(c, spec, flags)
        self.models(c, spec, flags)
        self.disruption_and_scaling(dep, pod_labels)
        self.sizes(pod_labels, flags)
        return self.errors

    def flags(self, c, spec):
        """The flags the container gets: the flagfile (from the ConfigMap mounted where --flagfile
        points), then the other args with $(VAR) resolved as the kubelet would; the last value wins."""
        errors_before = len(self.errors)
        args = c.get("args", [])
        flagfiles = [a.split("=", 1)[1] for a in args if a.startswith("--flagfile=")]
        if len(flagfiles) != 1 or not args[0].startswith("--flagfile="):
            self.errors.append(f"expected one --flagfile argument, first (flags before it lose to it), got {args}")
            return None
        path = flagfiles[0]
        mounts = [m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
        if len(mounts) != 1:
            self.errors.append(f"--flagfile {path} is not on a mounted volume")
            return None
        volume = next((v for v in spec.get("volumes", []) if v["name"] == mounts[0]["name"]), {})
        cm_name = volume.get("configMap", {}).get("name")
        cms = [d for d in self.of_kind("ConfigMap") if d["metadata"]["name"] == cm_name]
        key = os.path.relpath(path, mounts[0]["mountPath"])
        if len(cms) != 1 or key not in cms[0].get("data", {}):
            self.errors.append(f"--flagfile {path}: no ConfigMap {cm_name} with key {key} in the output")
            return None
        text = cms[0]["data"][key]
        rest = [self.expand(a, c) for a in args[1:]]
        if None in rest:
            return None
        rc, stderr = run_cached({"f.flags": text}, [self.server, "--flagfile=f.flags", *rest, "--only_check_args"])
        self.check(rc == 0, f"tcm-server rejects the container's flags: {stderr.strip()}")
        try:
            in_file = parse_flags(text)
            flags = dict(in_file, **parse_flags("\n".join(rest)))
        except ValueError as e:
            self.errors.append(str(e))
            return None
        for name, owner in ARG_FLAGS.items():
            self.check(name not in in_file, f"the flagfile sets --{name}, which {owner} sets in the args")
        for name in ("port", "metrics_port", "http_port", "drain_timeout", "model_repository", "device", *ARG_FLAGS):
            self.check(name in flags, f"the container's flags do not set --{name} (the checks need it explicit)")
        for name in ("intra_op_threads", *SIZE_LABELS):
            try:
                self.check(int(flags[name]) >= 1, f"--{name}={flags[name]}: must be at least 1")
            except (KeyError, ValueError):
                pass  # reported above
        return flags if len(self.errors) == errors_before else None

    def expand(self, arg, c):
        """arg with each $(VAR) replaced by the container's env VAR (a value, or a CPU
        resourceFieldRef: the quantity over the divisor, rounded up); None after an error."""
        env = {e["name"]: e for e in c.get("env", [])}

        def value(m):
            e = env.get(m.group(1))
            if e is None:
                raise LookupError(f"arg {arg}: no env {m.group(1)} (the kubelet would pass it unexpanded)")
            if "value" in e:
                return str(e["value"])
            ref = e.get("valueFrom", {}).get("resourceFieldRef", {})
            own = ref.get("containerName", c["name"]) == c["name"]
            if own and ref.get("resource") in ("limits.cpu", "requests.cpu"):
                q = c.get("resources", {}).get(ref["resource"].split(".")[0], {}).get("cpu")
                if q is None:
                    raise LookupError(f"env {e['name']}: the container sets no {ref['resource']}")
                return str(math.ceil(cpu_quantity(q) / cpu_quantity(ref.get("divisor", "1")) - 1e-9))
            raise LookupError(f"env {e['name']}: cannot resolve {e.get('valueFrom')}")

        try:
            return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value, arg)
        except LookupError as e:
            self.errors.append(str(e))
            return None

    def ports_and_probes(self, c, flags):
        port, metrics_port = int(flags["port"]), int(flags["metrics_port"])
        named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        self.check(named.get("grpc") == port, f"container port 'grpc' {named.get('grpc')} != --port {port}")
        self.check(named.get("metrics") == metrics_port,
                   f"container port 'metrics' {named.get('metrics')} != --metrics_port {metrics_port}")
        http_port = int(flags["http_port"])
        self.check(named.get("http") == http_port, f"container port 'http' {named.get('http')} != --http_port {http_port}")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = c.get(probe)
            if not p:
                self.errors.append(f"no {probe}")
                continue
            self.check("grpc" in p, f"{probe} is not a gRPC health probe")
            self.check(p.get("grpc", {}).get("port") == port,
                       f"{probe} port {p.get('grpc', {}).get('port')} != --port {port}")
        readiness = c.get("readinessProbe", {})
        self.check(readiness.get("failureThreshold", 3) * readiness.get("periodSeconds", 10) <= 30,
                   "readiness takes more than 30 s to notice a draining pod")

    def services(self, flags, pod_labels):
        port, metrics_port, http_port = int(flags["port"]), int(flags["metrics_port"]), int(flags["http_port"])
        grpc_svcs, metrics_svcs, http_svcs = [], [], []
        for s in self.of_kind("Service"):
            self.check(selects(s["spec"].get("selector"), pod_labels),
                       f"Service {s['metadata']['name']} does not select the pods")
            for p in s["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                if target in ("grpc", port):
                    grpc_svcs.append((s, p))
                elif target in ("metrics", metrics_port):
                    metrics_svcs.append((s, p))
                elif target in ("http", http_port):
                    http_svcs.append((s, p))
                else:
                    self.errors.append(f"Service {s['metadata']['name']} port {p} targets no server port")
        self.check(any(s["spec"].get("clusterIP") == "None" for s, _ in grpc_svcs),
                   "no headless Service (clusterIP: None) for gRPC: callers could not balance per call")
        self.check(all(p["port"] == port for _, p in grpc_svcs),
                   f"a gRPC Service port differs from --port {port}: dns:/// targets would miss")
        self.check(any(s["spec"].get("clusterIP") != "None" for s, _ in metrics_svcs),
                   "no ClusterIP Service for the metrics port")
        self.check(any(s["spec"].get("clusterIP") != "None" for s, _ in http_svcs),
                   "no ClusterIP Service for the HTTP port (--http_port)")

    def shutdown(self, c, spec, flags):
        grace = spec.get("terminationGracePeriodSeconds", 30)
        drain = float(flags["drain_timeout"])
        pre_stop = 0.0
        hook = c.get("lifecycle", {}).get("preStop", {})
        command = hook.get("exec", {}).get("command", [])
        if command[:1] == ["sleep"] and len(command) == 2:
            pre_stop = float(command[1])
        elif "sleep" in hook:
            pre_stop = float(hook["sleep"]["seconds"])
        elif hook:
            self.errors.append(f"preStop hook {hook} is not a plain sleep: cannot bound its length")
        self.check(pre_stop > 0, "no preStop sleep: clients may still be sent here after SIGTERM")
        need = pre_stop + drain + SERVER_EXIT_GRACE_S
        self.check(grace > need, f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop:g} s + "
                                 f"--drain_timeout {drain:g} s + {SERVER_EXIT_GRACE_S} s: queued work would be killed")

    def security(self, c, spec):
        pod_sc, sc = spec.get("securityContext", {}), c.get("securityContext", {})
        self.check(sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, "runAsNonRoot is not set")
        self.check(sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, "runs as uid 0")
        self.check(sc.get("readOnlyRootFilesystem") is True, "root filesystem is writable")
        self.check(sc.get("allowPrivilegeEscalation") is False, "privilege escalation is allowed")
        self.check(not sc.get("privileged", False), "privileged container")
        self.check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities are not all dropped")
        if sc.get("readOnlyRootFilesystem"):
            self.check(any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])),
                       "read-only root filesystem without a writable /tmp")
        self.check(spec.get("automountServiceAccountToken") is False,
                   "the pod mounts a service account token it does not need")

    def resources(self, c, spec, flags):
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                self.check(r in res.get(kind, {}), f"no {r} {kind}")
        gpus = int(res.get("limits", {}).get("nvidia.com/gpu", 0))
        device = flags["device"]
        if self.expect == "cpu":
            self.check(device == "cpu", f"CPU variant runs --device={device}")
            self.check(gpus == 0 and "nvidia.com/gpu" not in res.get("requests", {}), "CPU variant requests a GPU")
            self.check(not any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", [])),
                       "CPU variant tolerates the GPU taint: it would take GPU nodes")
        else:
            self.check(device == "cuda", f"GPU variant runs --device={device}")
            self.check(gpus >= 1, "GPU variant has no nvidia.com/gpu limit")
            self.check(any(t.get("key") == "nvidia.com/gpu" and t.get("effect") in (None, "NoSchedule")
                           for t in spec.get("tolerations", [])), "GPU variant does not tolerate the GPU taint")
            self.check(bool(spec.get("nodeSelector")), "GPU variant has no nodeSelector")
            self.check(c["image"].endswith(":gpu"), f"GPU variant uses image {c['image']}")
        # One worker per pod (--workers on a CPU, one per GPU on cuda), whose LibTorch threads
        # are as many as the container's CPUs.
        if "cpu" in res.get("limits", {}):
            limit = cpu_quantity(res["limits"]["cpu"])
            threads = int(flags["intra_op_threads"])
            workers = gpus if device == "cuda" else int(flags.get("workers", 1))
            self.check(limit == int(limit), f"CPU limit {res['limits']['cpu']} is not whole CPUs: --intra_op_threads "
                                            "cannot equal it")
            self.check(threads == limit, f"--intra_op_threads={threads} != the container's CPU limit {limit:g}")
            self.check(workers == 1, f"{workers} workers of --intra_op_threads={threads} each: {workers * threads} "
                                     f"threads on a CPU limit of {limit:g}")

    def models(self, c, spec, flags):
        repo = flags["model_repository"].rstrip("/")
        mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == repo]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {d["metadata"]["name"]: d for d in self.of_kind("PersistentVolumeClaim")}
        default = flags.get("default_model", "")
        if self.expect_pvc:
            # What the claim holds is known only from its declaration; no default is always safe.
            self.check(len(mounts) == 1, f"nothing mounted at --model_repository {repo}")
            for m in mounts:
                pvc = volumes.get(m["name"], {}).get("persistentVolumeClaim", {})
                claim = claims.get(pvc.get("claimName"))
                self.check(claim is not None, f"{repo} is not a PersistentVolumeClaim of the output")
                self.check(m.get("readOnly") is True, f"{repo} is mounted writable")
                if claim is None or not default:
                    continue
                declared = claim["metadata"].get("annotations", {}).get(MODELS_ANNOTATION)
                names = [n.strip() for n in (declared or "").split(",") if n.strip()]
                self.check(default in names,
                           f"--default_model={default} is not among the models claim {claim['metadata']['name']} "
                           f"declares ({MODELS_ANNOTATION}: {declared!r}): the server would not start; declare it "
                           "or name no default")
        else:
            self.check(not mounts, f"a volume hides the image's models at {repo}")
            served = image_models()
            self.check(default != "", "the image's models are served without --default_model: calls that name no "
                                      "model would get the first by name (stage 1)")
            self.check(not default or default in served,
                       f"--default_model={default} is not a model of the image ({', '.join(sorted(served))}): "
                       "the server would not start")

    def disruption_and_scaling(self, dep, pod_labels):
        pdbs = self.of_kind("PodDisruptionBudget")
        self.check(any(selects(p["spec"].get("selector", {}).get("matchLabels"), pod_labels) for p in pdbs),
                   "no PodDisruptionBudget selects the pods")
        hpas = self.of_kind("HorizontalPodAutoscaler")
        if not hpas:
            return
        hpa = hpas[0]
        ref = hpa["spec"]["scaleTargetRef"]
        self.check(ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"],
                   f"the autoscaler scales {ref}, not the Deployment")
        self.check("replicas" not in dep["spec"], "Deployment sets replicas under an autoscaler: apply resets it")
        self.check(hpa["spec"].get("minReplicas", 1) >= 2, "minReplicas < 2: a single pod cannot be drained safely")
        with open(ADAPTER_RULES) as f:
            served = {r["name"]["as"] for r in yaml.safe_load(f)["rules"]}
        for m in hpa["spec"].get("metrics", []):
            if m["type"] == "Pods":
                name = m["pods"]["metric"]["name"]
                self.check(name in served, f"autoscaler metric {name} is not served by prometheus-adapter-rules.yaml")
        svcs = {s["metadata"]["name"]: s for s in self.of_kind("Service")}
        for sm in self.of_kind("ServiceMonitor"):
            chosen = [s for s in svcs.values()
                      if selects(sm["spec"]["selector"].get("matchLabels"), s["metadata"].get("labels", {}))]
            ports = {p.get("name") for s in chosen for p in s["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                self.check(ep.get("port") in ports, f"ServiceMonitor port {ep.get('port')} is on no selected Service")
            job_label = sm["spec"].get("jobLabel")
            self.check(all(s["metadata"].get("labels", {}).get(job_label) == "tcm-serve"
                           for s in chosen if "metrics" in {p.get("name") for p in s["spec"]["ports"]}),
                       "the ServiceMonitor's job would not be 'tcm-serve' (alerts and dashboard expect it)")

    def sizes(self, pod_labels, flags):
        """The overlay's --max_batch_size and --max_queue_size reach the pod labels, the
        autoscaler's queue target and the recorded limits behind the alerts and the dashboard."""
        batch, queue = int(flags["max_batch_size"]), int(flags["max_queue_size"])
        self.check(queue >= batch, f"--max_queue_size={queue} holds no batch of --max_batch_size={batch}: "
                                   "tcm-server would not start")
        for name, label in SIZE_LABELS.items():
            self.check(pod_labels.get(label) == flags[name],
                       f"pod label {label}={pod_labels.get(label)!r} != --{name}={flags[name]}: the recorded "
                       "limits would not be the server's")
        for hpa in self.of_kind("HorizontalPodAutoscaler"):
            targets = [m["pods"]["target"] for m in hpa["spec"].get("metrics", [])
                       if m["type"] == "Pods" and m["pods"]["metric"]["name"] == "tcm_queue_depth"]
            self.check(len(targets) == 1, "the autoscaler has no tcm_queue_depth target")
            for t in targets:
                value = str(t.get("averageValue"))
                self.check(t.get("type") == "AverageValue" and re.fullmatch(r"\d+(\.\d+)?m?", value)
                           and cpu_quantity(value) == batch,
                           f"autoscaler queue target {value} per pod != one batch, --max_batch_size={batch}")
        monitors = self.of_kind("ServiceMonitor")
        for sm in monitors:
            missing = set(SIZE_LABELS.values()) - set(sm["spec"].get("podTargetLabels", []))
            self.check(not missing, f"the ServiceMonitor does not copy pod labels {sorted(missing)} onto the series")
        self.prometheus_yml_copies_size_labels()
        if monitors or self.of_kind("PrometheusRule"):
            self.limits_rules(pod_labels, batch, queue)

    def prometheus_yml_copies_size_labels(self):
        """deploy/prometheus/prometheus.yml maps the size labels as the ServiceMonitor does."""
        with open(PROMETHEUS_YML) as f:
            jobs = {j["job_name"]: j for j in yaml.safe_load(f)["scrape_configs"]}
        maps = [r for r in jobs.get("tcm-serve", {}).get("relabel_configs", []) if r.get("action") == "labelmap"]
        for label in SIZE_LABELS.values():
            meta = "__meta_kubernetes_pod_label_" + prometheus_label(label)
            got = []
            for r in maps:
                m = re.fullmatch(r["regex"], meta)
                if m:  # Prometheus writes $1 or ${1} for \1
                    got.append(m.expand(re.sub(r"\$\{?(\d+)\}?", r"\\\1", r.get("replacement", "$1"))))
            self.check(got == [prometheus_label(label)],
                       f"prometheus.yml's tcm-serve job maps {meta} to {got}, not [{prometheus_label(label)}]")

    def limits_rules(self, pod_labels, batch, queue):
        """The overlay's PrometheusRule with alerts.yml under `promtool test rules`: for pods with this
        overlay's labels the recorded limits are its flags' and TcmServeQueueSaturated fires above
        QUEUE_ALERT_FRACTION of --max_queue_size, not at it; a pod without them gets the server's defaults."""
        rules = [d for d in self.of_kind("PrometheusRule") if d["metadata"]["name"] == LIMITS_RULE]
        if len(rules) != 1:
            self.errors.append(f"expected one PrometheusRule {LIMITS_RULE}, got {len(rules)}: the queue alert "
                               "would hold these pods to tcm-server's default sizes")
            return
        defaults = server_defaults(self.server)
        if set(defaults) != set(SIZE_LABELS):
            self.errors.append(f"cannot read the defaults of --max_batch_size and --max_queue_size from "
                               f"{self.server} --help")
            return
        sized = {prometheus_label(label): pod_labels.get(label, "") for label in SIZE_LABELS.values()}
        at = math.floor(QUEUE_ALERT_FRACTION * queue)
        depths = {"over": (at + 1, sized), "at": (at, sized), "plain": (0, {})}
        inputs = [{"series": series("tcm_queue_depth", dict(job="tcm-serve", namespace="ns", pod=pod, model="m",
                                                            priority="1", **labels)),
                   "values": f"{value}x30"} for pod, (value, labels) in depths.items()]
        expected = {"tcm_serve:max_batch_size": {"over": batch, "at": batch, "plain": defaults["max_batch_size"]},
                    "tcm_serve:max_queue_size": {"over": queue, "at": queue, "plain": defaults["max_queue_size"]}}
        expected["tcm_serve:queue_alert_depth"] = {pod: QUEUE_ALERT_FRACTION * v
                                                   for pod, v in expected["tcm_serve:max_queue_size"].items()}
        exprs = [{"expr": name, "eval_time": "2m",
                  "exp_samples": [{"labels": series(name, dict(namespace="ns", pod=pod)), "value": v}
                                  for pod, v in values.items()]} for name, values in expected.items()]
        exprs.append({"expr": 'count by (pod) (ALERTS{alertname="TcmServeQueueSaturated", alertstate="firing"})',
                      "eval_time": "20m", "exp_samples": [{"labels": '{pod="over"}', "value": 1}]})
        files = {"limits.yml": yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, sort_keys=False),
                 "test.yml": yaml.safe_dump({"rule_files": ["limits.yml", ALERTS], "evaluation_interval": "1m",
                                             "tests": [{"interval": "1m", "input_series": inputs,
                                                        "promql_expr_test": exprs}]}, sort_keys=False)}
        rc, output = run_cached(files, ["promtool", "test", "rules", "test.yml"], both=True)
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        self.check(rc == 0,
                   f"PrometheusRule {LIMITS_RULE} with alerts.yml does not give pods labelled "
                   f"{ {k: v for k, v in pod_labels.items() if k in SIZE_LABELS.values()} } --max_batch_size={batch}, "
                   f"--max_queue_size={queue} and a queue alert above {QUEUE_ALERT_FRACTION:g} of it: "
                   + " | ".join(lines[1:12]))


def check(docs, server, expect, expect_pvc):
    checker = Checker(docs, server, expect)
    checker.expect_pvc = expect_pvc
    return checker.run()


def deployment(docs):
    return next(d for d in docs if d["kind"] == "Deployment")


def container(docs):
    return deployment(docs)["spec"]["template"]["spec"]["containers"][0]


def flags_cm(docs):
    return next(d for d in docs if d["kind"] == "ConfigMap")


def kind(docs, k):
    return next(d for d in docs if d["kind"] == k)


def self_test(server):
    """Breaks the overlays' output in known ways; each break must be reported."""
    overlays = {name: (render(os.path.join(REPO, "deploy/k8s/overlays", name)), expect, pvc)
                for name, expect, pvc in (("cpu", "cpu", False), ("gpu", "gpu", False), ("gpu-imagenet", "gpu", True))}
    for name, (docs, expect, pvc) in overlays.items():
        errors = check(docs, server, expect, pvc)
        if errors:
            print(f"the {name} overlay itself fails:\n  " + "\n  ".join(errors))
            return 1

    def set_flag(name, value):  # appended to the flagfile
        def mutate(d):
            cm = flags_cm(d)
            key = next(iter(cm["data"]))
            cm["data"][key] += f"--{name}={value}\n"
        return mutate

    def set_arg(name, value):  # appended to the args, so it wins
        return lambda d: container(d)["args"].append(f"--{name}={value}")

    def drop_args(prefix):
        def mutate(d):
            c = container(d)
            c["args"] = [a for a in c["args"] if not a.startswith(prefix)]
        return mutate

    def set_label(label, value):
        return lambda d: deployment(d)["spec"]["template"]["metadata"]["labels"].update({label: value})

    def set_rule_expr(record, old, new):
        def mutate(d):
            for g in kind(d, "PrometheusRule")["spec"]["groups"]:
                for r in g["rules"]:
                    if r.get("record") == record:
                        r["expr"] = r["expr"].replace(old, new)
        return mutate

    def hpa_queue_target(value):
        return lambda d: kind(d, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]["target"].update(
            averageValue=value)

    def set_cpu_limit(value):
        def mutate(d):
            res = container(d)["resources"]
            res["limits"]["cpu"] = res["requests"]["cpu"] = value
        return mutate

    def then(*mutations):
        def mutate(d):
            for m in mutations:
                m(d)
        return mutate

    cases = {  # name: (overlay, mutation)
        "grace shorter than preStop + drain": ("cpu", lambda d: deployment(d)["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=35)),
        "drain timeout beyond the grace period": ("cpu", set_flag("drain_timeout", 60)),
        "--port moved, probes not": ("cpu", set_flag("port", 50052)),
        "--metrics_port moved, container port not": ("cpu", set_flag("metrics_port", 9465)),
        "--http_port moved, container port not": ("cpu", set_flag("http_port", 8001)),
        "unknown flag in the ConfigMap": ("cpu", set_flag("no_such_flag", 1)),
        "unknown flag in the args": ("cpu", set_arg("no_such_flag", 1)),
        "GPU requested by the CPU variant": ("cpu", lambda d: container(d)["resources"]["limits"].update(
            {"nvidia.com/gpu": 1})),
        "threads beyond the CPU limit": ("cpu", set_arg("intra_op_threads", 8)),
        "threads below the GPU pod's CPU limit (the CPU's 2)": ("gpu", set_arg("intra_op_threads", 2)),
        "threads in the flagfile as well as the args": ("cpu", set_flag("intra_op_threads", 2)),
        "CPU limit in millicores": ("gpu", set_cpu_limit("3500m")),
        "two workers, each with the CPU limit's threads": ("cpu", set_flag("workers", 2)),
        "args reading an env the container lacks": ("cpu", lambda d: container(d).pop("env")),
        "writable root filesystem": ("cpu", lambda d: container(d)["securityContext"].update(
            readOnlyRootFilesystem=False)),
        "gRPC Service with a cluster IP": ("cpu", lambda d: next(
            s for s in d if s["kind"] == "Service" and s["metadata"]["name"].endswith("grpc"))["spec"].pop(
            "clusterIP")),
        "replicas set under the autoscaler": ("cpu", lambda d: deployment(d)["spec"].update(replicas=3)),
        "default model left to the first by name": ("cpu", lambda d: flags_cm(d)["data"].update(
            {k: v.replace("--default_model=fashion-mnist-tcm\n", "") for k, v in flags_cm(d)["data"].items()})),
        "default model not in the image": ("gpu", set_arg("default_model", "tcm-edm2-s")),
        "models volume over the image's models": ("cpu", lambda d: container(d)["volumeMounts"].append(
            {"name": "tmp", "mountPath": "/models"})),
        # The claim does not hold the gpu flagfile's built-in default: the pods would crash-loop.
        "claim served with the flagfile's default (fashion-mnist-tcm)": ("gpu-imagenet",
                                                                         drop_args("--default_model=")),
        "default model the claim does not declare": ("gpu-imagenet", set_arg("default_model", "tcm-edm2-xl")),
        "claim declaring no models, default named": ("gpu-imagenet", lambda d: kind(
            d, "PersistentVolumeClaim")["metadata"].pop("annotations")),
        "queue smaller than a batch": ("cpu", set_arg("max_queue_size", 8)),
        "batch size in the flagfile as well as the args": ("gpu", set_flag("max_batch_size", 64)),
        "GPU autoscaler on the CPU's target (16)": ("gpu", hpa_queue_target("16")),
        "--max_batch_size changed in the args alone": ("gpu", set_arg("max_batch_size", 32)),
        "pod label with another queue size": ("gpu", set_label(SIZE_LABELS["max_queue_size"], "256")),
        "ServiceMonitor not copying the size labels": ("cpu", lambda d: kind(d, "ServiceMonitor")["spec"].pop(
            "podTargetLabels")),
        "no PrometheusRule recording the sizes": ("gpu", lambda d: d.remove(kind(d, "PrometheusRule"))),
        "recorded queue size not the flags' (CPU's 256 on the GPU)": ("gpu", set_rule_expr(
            "tcm_serve:configured_max_queue_size", "512 * ", "256 * ")),
        "recorded sizes matching another label value": ("gpu", set_rule_expr(
            "tcm_serve:configured_max_queue_size", '="512"', '="256"')),
        "label, rule and flag changed together, autoscaler not": ("gpu", then(
            set_arg("max_batch_size", 32), set_label(SIZE_LABELS["max_batch_size"], "32"),
            set_rule_expr("tcm_serve:configured_max_batch_size", "64", "32"))),
    }
    failed = 0
    for name, (overlay, mutate) in cases.items():
        docs, expect, pvc = overlays[overlay]
        broken = copy.deepcopy(docs)
        mutate(broken)
        errors = check(broken, server, expect, pvc)
        print(f"{'ok  ' if errors else 'MISS'} [{overlay}] {name}: {errors[0] if errors else 'not reported'}")
        failed += not errors
    gpu_as_cpu = check(overlays["gpu"][0], server, "cpu", False)
    print(f"{'ok  ' if gpu_as_cpu else 'MISS'} GPU overlay checked as a CPU variant: "
          f"{gpu_as_cpu[0] if gpu_as_cpu else 'not reported'}")
    failed += not gpu_as_cpu
    print(f"{len(cases) + 1 - failed} passed, {failed} failed")
    return 1 if failed else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True, help="tcm-server binary (validates the ConfigMap flags)")
    parser.add_argument("--overlay", help="kustomize directory to render and check")
    parser.add_argument("--expect", choices=["cpu", "gpu"], help="the device the overlay is for")
    parser.add_argument("--expect-pvc", action="store_true", help="models come from a PersistentVolumeClaim")
    parser.add_argument("--self-test", action="store_true", help="check that broken manifests are caught")
    args = parser.parse_args()
    if os.sep in args.server:  # the checks run it from temporary directories
        args.server = os.path.abspath(args.server)

    version = kustomize_version()
    if not version or version < (4, 0):
        print(f"SKIP: needs kubectl with kustomize 4 or later (components); found "
              f"{'no kubectl' if version is None else 'an older one'}")
        return SKIP
    if shutil.which("promtool") is None:
        print("SKIP: needs promtool (the overlays' recorded limits are checked with `promtool test rules`)")
        return SKIP
    if args.self_test:
        return self_test(args.server)
    if not args.overlay or not args.expect:
        parser.error("--overlay and --expect, or --self-test")
    docs = render(args.overlay)
    errors = check(docs, args.server, args.expect, args.expect_pvc)
    kinds = sorted({d["kind"] for d in docs})
    if errors:
        print(f"{args.overlay}: {len(errors)} problem(s):\n  " + "\n  ".join(errors))
        return 1
    print(f"{args.overlay}: {len(docs)} objects ({', '.join(kinds)}), all checks hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
