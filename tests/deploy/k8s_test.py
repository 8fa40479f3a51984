#!/usr/bin/python3
"""Structural checks of the Kubernetes manifests, on the output of `kubectl kustomize`.

  k8s_test.py --server build/bin/tcm-server --overlay deploy/k8s/overlays/cpu --expect cpu
  k8s_test.py --server build/bin/tcm-server --self-test

Checks that the pieces agree with each other and with tcm-server: the flags in the
ConfigMap are valid tcm-server flags (`--only_check_args`), the probes and Services use
its ports, the drain fits in the termination grace period, the pod runs locked down,
a CPU variant asks for no GPU and a GPU variant for one, the autoscaler scales the
Deployment on metrics the prometheus-adapter rules serve. --self-test breaks a rendered
overlay in known ways and expects each break to be reported.

Exit status: 0 passed, 1 failed, 77 skipped (no kubectl with kustomize 4 or later).
"""
import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADAPTER_RULES = os.path.join(REPO, "deploy/k8s/components/autoscaling/prometheus-adapter-rules.yaml")
SERVER_EXIT_GRACE_S = 2  # tcm-server gives the last responses up to 2 s after draining
SKIP = 77


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
        return self.errors

    def flags(self, c, spec):
        """The flagfile the container reads, from the ConfigMap mounted where --flagfile points."""
        errors_before = len(self.errors)
        flagfiles = [a.split("=", 1)[1] for a in c.get("args", []) if a.startswith("--flagfile=")]
        if len(flagfiles) != 1:
            self.errors.append(f"expected one --flagfile argument, got {c.get('args')}")
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
        with tempfile.NamedTemporaryFile("w", suffix=".flags", delete=False) as f:
            f.write(text)
        try:
            out = subprocess.run([self.server, f"--flagfile={f.name}", "--only_check_args"],
                                 capture_output=True, text=True)
        finally:
            os.unlink(f.name)
        self.check(out.returncode == 0, f"tcm-server rejects the ConfigMap flags: {out.stderr.strip()}")
        try:
            flags = parse_flags(text)
        except ValueError as e:
            self.errors.append(str(e))
            return None
        for name in ("port", "metrics_port", "drain_timeout", "model_repository", "device"):
            self.check(name in flags, f"the ConfigMap flags do not set --{name} (the checks need it explicit)")
        return flags if len(self.errors) == errors_before else None

    def ports_and_probes(self, c, flags):
        port, metrics_port = int(flags["port"]), int(flags["metrics_port"])
        named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        self.check(named.get("grpc") == port, f"container port 'grpc' {named.get('grpc')} != --port {port}")
        self.check(named.get("metrics") == metrics_port,
                   f"container port 'metrics' {named.get('metrics')} != --metrics_port {metrics_port}")
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
        port, metrics_port = int(flags["port"]), int(flags["metrics_port"])
        grpc_svcs, metrics_svcs = [], []
        for s in self.of_kind("Service"):
            self.check(selects(s["spec"].get("selector"), pod_labels),
                       f"Service {s['metadata']['name']} does not select the pods")
            for p in s["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                if target in ("grpc", port):
                    grpc_svcs.append((s, p))
                elif target in ("metrics", metrics_port):
                    metrics_svcs.append((s, p))
                else:
                    self.errors.append(f"Service {s['metadata']['name']} port {p} targets no server port")
        self.check(any(s["spec"].get("clusterIP") == "None" for s, _ in grpc_svcs),
                   "no headless Service (clusterIP: None) for gRPC: callers could not balance per call")
        self.check(all(p["port"] == port for _, p in grpc_svcs),
                   f"a gRPC Service port differs from --port {port}: dns:/// targets would miss")
        self.check(any(s["spec"].get("clusterIP") != "None" for s, _ in metrics_svcs),
                   "no ClusterIP Service for the metrics port")

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
            if "cpu" in res.get("limits", {}):
                threads = int(flags.get("workers", 1)) * int(flags.get("intra_op_threads", 0))
                limit = cpu_quantity(res["limits"]["cpu"])
                self.check(0 < threads <= limit, f"--workers x --intra_op_threads = {threads} threads for a "
                                                 f"CPU limit of {limit:g} (0 = the node's cores)")
        else:
            self.check(device == "cuda", f"GPU variant runs --device={device}")
            self.check(gpus >= 1, "GPU variant has no nvidia.com/gpu limit")
            self.check(any(t.get("key") == "nvidia.com/gpu" and t.get("effect") in (None, "NoSchedule")
                           for t in spec.get("tolerations", [])), "GPU variant does not tolerate the GPU taint")
            self.check(bool(spec.get("nodeSelector")), "GPU variant has no nodeSelector")
            self.check(c["image"].endswith(":gpu"), f"GPU variant uses image {c['image']}")

    def models(self, c, spec, flags):
        repo = flags["model_repository"].rstrip("/")
        mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"].rstrip("/") == repo]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {d["metadata"]["name"] for d in self.of_kind("PersistentVolumeClaim")}
        if self.expect_pvc:
            self.check(len(mounts) == 1, f"nothing mounted at --model_repository {repo}")
            for m in mounts:
                pvc = volumes.get(m["name"], {}).get("persistentVolumeClaim", {})
                self.check(pvc.get("claimName") in claims, f"{repo} is not a PersistentVolumeClaim of the output")
                self.check(m.get("readOnly") is True, f"{repo} is mounted writable")
        else:
            self.check(not mounts, f"a volume hides the image's models at {repo}")
            self.check(flags.get("default_model") == "fashion-mnist-tcm",
                       "the image's models are served without --default_model=fashion-mnist-tcm: calls that name "
                       "no model would get the first by name (stage 1)")

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


def self_test(server):
    """Breaks the CPU overlay's output in known ways; each break must be reported."""
    docs = render(os.path.join(REPO, "deploy/k8s/overlays/cpu"))
    errors = check(docs, server, "cpu", False)
    if errors:
        print("the CPU overlay itself fails:\n  " + "\n  ".join(errors))
        return 1

    def set_flag(name, value):
        def mutate(d):
            cm = flags_cm(d)
            key = next(iter(cm["data"]))
            cm["data"][key] += f"--{name}={value}\n"
        return mutate

    cases = {
        "grace shorter than preStop + drain": (lambda d: deployment(d)["spec"]["template"]["spec"].update(
            terminationGracePeriodSeconds=35)),
        "drain timeout beyond the grace period": set_flag("drain_timeout", 60),
        "--port moved, probes not": set_flag("port", 50052),
        "--metrics_port moved, container port not": set_flag("metrics_port", 9465),
        "unknown flag in the ConfigMap": set_flag("no_such_flag", 1),
        "GPU requested by the CPU variant": (lambda d: container(d)["resources"]["limits"].update(
            {"nvidia.com/gpu": 1})),
        "threads beyond the CPU limit": set_flag("intra_op_threads", 8),
        "writable root filesystem": (lambda d: container(d)["securityContext"].update(
            readOnlyRootFilesystem=False)),
        "gRPC Service with a cluster IP": (lambda d: next(
            s for s in d if s["kind"] == "Service" and s["metadata"]["name"].endswith("grpc"))["spec"].pop(
            "clusterIP")),
        "replicas set under the autoscaler": (lambda d: deployment(d)["spec"].update(replicas=3)),
        "default model left to the first by name": (lambda d: flags_cm(d)["data"].update(
            {k: v.replace("--default_model=fashion-mnist-tcm\n", "") for k, v in flags_cm(d)["data"].items()})),
        "models volume over the image's models": (lambda d: container(d)["volumeMounts"].append(
            {"name": "tmp", "mountPath": "/models"})),
    }
    failed = 0
    for name, mutate in cases.items():
        broken = copy.deepcopy(docs)
        mutate(broken)
        errors = check(broken, server, "cpu", False)
        print(f"{'ok  ' if errors else 'MISS'} {name}: {errors[0] if errors else 'not reported'}")
        failed += not errors
    gpu_as_cpu = check(render(os.path.join(REPO, "deploy/k8s/overlays/gpu")), server, "cpu", False)
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

    version = kustomize_version()
    if not version or version < (4, 0):
        print(f"SKIP: needs kubectl with kustomize 4 or later (components); found "
              f"{'no kubectl' if version is None else 'an older one'}")
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
