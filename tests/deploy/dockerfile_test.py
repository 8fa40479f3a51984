#!/usr/bin/python3
"""Checks of the container recipes that need no container engine.

  dockerfile_test.py --server build/bin/tcm-server --client build/bin/tcm-client

Dockerfile (CPU): the runtime stage installs the Debian package of every shared library
that tcm-server and tcm-client need (their NEEDED entries, resolved here and mapped to
packages with dpkg -S), and only real, installed package names; the build stage builds
with the project's own steps. Both Dockerfiles: ENTRYPOINT and HEALTHCHECK arguments are
flags the built binaries accept (--only_check_args), the exposed ports are the ones the
entrypoint serves on, the user is the non-root uid the Kubernetes pod runs as.
.dockerignore keeps build trees and .git out of the build context.
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# Packages every Debian image has (Priority: required), so no need to install them.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def instructions(path):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, current = [], ""
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if not current and (not stripped or stripped.startswith("#")):
                continue
            if stripped.startswith("#"):
                continue
            current += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
            if not stripped.endswith("\\"):
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
                current = ""
    return out


def stages(insts):
    result = []
    for word, rest in insts:
        if word == "FROM":
            result.append([])
        if result:
            result[-1].append((word, rest))
    return result


def exec_form(rest):
    return json.loads(rest) if rest.startswith("[") else shlex.split(rest)


def apt_packages(stage):
    pkgs = []
    for word, rest in stage:
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            tokens = shlex.split(command)
            if tokens[:2] == ["apt-get", "install"]:
                pkgs += [t for t in tokens[2:] if not t.startswith("-")]
    return pkgs


def needed_packages(binary):
    """{soname: Debian package} of the binary's direct NEEDED libraries."""
    dyn = subprocess.run(["readelf", "-d", binary], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn)
    paths = {}
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            paths[m.group(1)] = m.group(2)
    result = {}
    for soname in needed:
        path = paths.get(soname)
        if not path:
            result[soname] = None
            continue
        owner = None
        for candidate in (path, os.path.realpath(path)):
            out = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if out.returncode == 0:
                owner = out.stdout.split(":")[0]
                break
        result[soname] = owner
    return result


def flags_ok(binary, args):
    out = subprocess.run([binary] + args + ["--only_check_args"], capture_output=True, text=True)
    return out.returncode == 0, out.stderr.strip()


def flag_value(args, name):
    for i, a in enumerate(args):
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return None


class Report:
    def __init__(self):
        self.passed, self.failed = 0, 0

    def expect(self, ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if ok:
            self.passed += 1
        else:
            self.failed += 1


def check_common(name, insts, server, client, pod_uid, report):
    final = stages(insts)[-1]
    entry = [exec_form(rest) for word, rest in final if word == "ENTRYPOINT"]
    report.expect(len(entry) == 1 and entry[0][0] == "tcm-server", f"{name}: ENTRYPOINT runs tcm-server")
    if entry:
        ok, err = flags_ok(server, entry[0][1:])
        report.expect(ok, f"{name}: tcm-server accepts the ENTRYPOINT flags {entry[0][1:]} {err}")
        ports = {flag_value(entry[0], "port"), flag_value(entry[0], "metrics_port"), flag_value(entry[0], "http_port")}
        exposed = {p for word, rest in final if word == "EXPOSE" for p in rest.split()}
        report.expect(ports == exposed == {"50051", "9464", "8000"},
                      f"{name}: EXPOSE {sorted(exposed)} = the entrypoint's ports {sorted(ports, key=str)}")
        repo = flag_value(entry[0], "model_repository")
        copies_models = any(word == "COPY" and rest.split()[-1].rstrip("/") == repo for word, rest in final) or any(
            word == "RUN" and f"mkdir -p {repo}" in rest for word, rest in final)
        report.expect(copies_models, f"{name}: the image puts models at --model_repository {repo}")
        report.expect(flag_value(entry[0], "default_model") == "fashion-mnist-tcm",
                      f"{name}: calls that name no model get fashion-mnist-tcm (--default_model)")
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    report.expect(len(health) == 1, f"{name}: one HEALTHCHECK")
    if health:
        cmd = exec_form(health[0].split("CMD", 1)[1].strip())
        report.expect(cmd[0] == "tcm-client" and "--health" in cmd and flag_value(cmd, "server") == "localhost:50051",
                      f"{name}: HEALTHCHECK asks tcm-client --health of localhost:50051")
        ok, err = flags_ok(client, cmd[1:])
        report.expect(ok, f"{name}: tcm-client accepts the HEALTHCHECK flags {err}")
    users = [rest for word, rest in final if word == "USER"]
    uid = users[-1].split(":")[0] if users else "0"
    report.expect(uid.isdigit() and int(uid) != 0, f"{name}: runs as numeric non-root uid {uid}")
    report.expect(uid == str(pod_uid), f"{name}: uid {uid} = the Kubernetes pod's runAsUser {pod_uid}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    args = parser.parse_args()
    report = Report()
    with open(os.path.join(REPO, "deploy/k8s/base/deployment.yaml")) as f:
        pod_uid = yaml.safe_load(f)["spec"]["template"]["spec"]["securityContext"]["runAsUser"]

    cpu = instructions(os.path.join(REPO, "Dockerfile"))
    cpu_stages = stages(cpu)
    report.expect(len(cpu_stages) == 2, f"Dockerfile: two stages (build, runtime), got {len(cpu_stages)}")
    build_runs = " && ".join(rest for word, rest in cpu_stages[0] if word == "RUN")
    report.expect("scripts/install-deps.sh" in build_runs and "make build" in build_runs,
                  "Dockerfile: the build stage runs scripts/install-deps.sh and make build")
    report.expect(all(rest.split()[0].startswith("debian:") and "bookworm" in "".join(
        r for w, r in cpu if w == "ARG") for word, rest in cpu if word == "FROM"),
        "Dockerfile: both stages on Debian 12 (bookworm)")
    runtime = apt_packages(cpu_stages[-1])
    for pkg in runtime:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        report.expect("install ok installed" in out.stdout, f"Dockerfile: runtime package {pkg} is a Debian 12 "
                                                            f"package (installed here)")
    report.expect("libopenblas0-pthread" in runtime, "Dockerfile: OpenBLAS (pthread) is LibTorch's BLAS")
    for binary in (args.server, args.client):
        needed = needed_packages(binary)
        missing = {so: pkg for so, pkg in needed.items() if pkg not in runtime and pkg not in BASE_PACKAGES}
        report.expect(not missing, f"Dockerfile: the {len(needed)} libraries {os.path.basename(binary)} needs come "
                                   f"from {sorted(set(needed.values()), key=str)}, installed or in the base image"
                                   + (f"; missing: {missing}" if missing else ""))
    check_common("Dockerfile", cpu, args.server, args.client, pod_uid, report)

    gpu = instructions(os.path.join(REPO, "Dockerfile.gpu"))
    gpu_runs = " && ".join(rest for word, rest in gpu if word == "RUN")
    report.expect(any(w == "ARG" and "nvcr.io/nvidia/pytorch:" in r for w, r in gpu),
                  "Dockerfile.gpu: based on an NVIDIA PyTorch image")
    report.expect("-DTCM_WITH_CUDA=ON" in gpu_runs and "torch.utils.cmake_prefix_path" in gpu_runs,
                  "Dockerfile.gpu: builds with -DTCM_WITH_CUDA=ON against the image's LibTorch")
    entry = [exec_form(r) for w, r in gpu if w == "ENTRYPOINT"]
    report.expect(bool(entry) and flag_value(entry[0], "device") == "cuda", "Dockerfile.gpu: serves --device cuda")
    check_common("Dockerfile.gpu", gpu, args.server, args.client, pod_uid, report)

    with open(os.path.join(REPO, ".dockerignore")) as f:
        ignored = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    report.expect({"build", "build-*", ".git"} <= ignored, ".dockerignore: build trees and .git stay out")

    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
