#!/usr/bin/python3
"""Helpers of the deploy tests that work on the project's Prometheus, prometheus-adapter and
Grafana files.

  prom_tools.py config --out DIR --target HOST:PORT [--decoy HOST:PORT] [--interval 1s]
      Writes DIR/prometheus.yml: deploy/prometheus/prometheus.yml with each Kubernetes
      service discovery block replaced by a static target carrying the discovery labels
      that the job's relabelling reads (so the project's job names and relabelling run
      unchanged), plus its rule files. Debian's Prometheus has no Kubernetes discovery.
  prom_tools.py exprs --out FILE
      Writes a rules file with one recording rule per Grafana panel query and per
      prometheus-adapter metricsQuery (templates filled in), for `promtool check rules`.
  prom_tools.py check --prom URL --images N --since UNIX_TIME
      Asserts, through Prometheus's HTTP API, what the end-to-end test expects.
"""
import argparse
import glob
import json
import os
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request

import yaml

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROMETHEUS_YML = os.path.join(REPO, "deploy/prometheus/prometheus.yml")
DASHBOARD = os.path.join(REPO, "deploy/grafana/tcm-serve-dashboard.json")
ADAPTER_RULES = os.path.join(REPO, "deploy/k8s/components/autoscaling/prometheus-adapter-rules.yaml")

NAMESPACE, POD = "e2e", "tcm-serve-e2e"
# What Kubernetes pod discovery would attach to the e2e server's metrics port.
POD_META = {
    "__meta_kubernetes_namespace": NAMESPACE,
    "__meta_kubernetes_pod_name": POD,
    "__meta_kubernetes_pod_phase": "Running",
    "__meta_kubernetes_pod_node_name": "node-e2e",
    "__meta_kubernetes_pod_container_name": "tcm-server",
    "__meta_kubernetes_pod_label_app_kubernetes_io_name": "tcm-serve",
    "__meta_kubernetes_pod_container_port_name": "metrics",
    # The overlays' size labels, here tcm-server's defaults, which the e2e server runs with.
    "__meta_kubernetes_pod_label_tcm_serve_max_batch_size": "16",
    "__meta_kubernetes_pod_label_tcm_serve_max_queue_size": "256",
}


def derived_config(target, decoy=None, interval=None, drop_jobs=()):
    with open(PROMETHEUS_YML) as f:
        config = yaml.safe_load(f)
    if interval:
        config["global"]["scrape_interval"] = interval
        config["global"]["evaluation_interval"] = interval
        config["global"]["scrape_timeout"] = interval
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in drop_jobs:
            continue
        if "kubernetes_sd_configs" in job:
            del job["kubernetes_sd_configs"]
            groups = [{"targets": [target], "labels": dict(POD_META)}]
            if decoy:
                # The same pod's gRPC port: the relabelling must not scrape it.
                groups.append({"targets": [decoy],
                               "labels": dict(POD_META, __meta_kubernetes_pod_container_port_name="grpc")})
            job["static_configs"] = groups
        jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def cmd_config(args):
    os.makedirs(args.out, exist_ok=True)
    config = derived_config(args.target, args.decoy, args.interval, args.drop_job or ())
    for pattern in config.get("rule_files", []):  # globs, as Prometheus reads them
        for rule_file in glob.glob(os.path.join(os.path.dirname(PROMETHEUS_YML), pattern)):
            shutil.copy(rule_file, args.out)
    with open(os.path.join(args.out, "prometheus.yml"), "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    return 0


def dashboard_queries(rate_interval):
    """(panel title, expr) of every dashboard target, Grafana variables filled in."""
    with open(DASHBOARD) as f:
        dash = json.load(f)
    names = {v["name"] for v in dash["templating"]["list"]}
    out = []
    for panel in dash["panels"]:
        for t in panel["targets"]:
            expr = t["expr"].replace("$__rate_interval", rate_interval)
            for name in names:
                expr = expr.replace("$" + name, ".*")
            if "$" in expr:
                raise SystemExit(f"panel {panel['title']!r}: unknown variable in {expr}")
            out.append((panel["title"], t.get("legendFormat", ""), expr))
    return out


def adapter_queries(matchers, group_by):
    """(metric name served, expr) of every prometheus-adapter rule, templates filled in."""
    with open(ADAPTER_RULES) as f:
        rules = yaml.safe_load(f)["rules"]
    out = []
    for r in rules:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", r["seriesQuery"]).group(0)
        expr = (r["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
                .replace("<<.GroupBy>>", group_by))
        out.append((r["name"]["as"], expr))
    return out


def cmd_exprs(args):
    rules = [{"record": f"dashboard:panel_{i}", "expr": e}
             for i, (_, _, e) in enumerate(dashboard_queries("5m"))]
    rules += [{"record": f"adapter:{name}", "expr": e}
              for name, e in adapter_queries('namespace="ns",pod="p"', "namespace,pod")]
    with open(args.out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "deploy-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"{len(rules)} queries written to {args.out}")
    return 0


class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr):
        return self.get("/api/v1/query", query=expr)["result"]

    def scalar(self, expr):
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def cmd_check(args):
    prom = Prometheus(args.prom)
    failures = []
    passed = 0

    def expect(ok, what):
        nonlocal passed
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if ok:
            passed += 1
        else:
            failures.append(what)

    # The relabelling kept the metrics port, dropped the gRPC port and named the pod.
    up = prom.query('up{job="tcm-serve"}')
    expect(len(up) == 1 and up[0]["metric"].get("pod") == POD and up[0]["metric"].get("namespace") == NAMESPACE
           and up[0]["value"][1] == "1",
           f"one tcm-serve target, up, labelled namespace/pod by the relabelling: {[u['metric'] for u in up]}")

    # The relabelling copied the pod's size labels onto its series (the overlays' tcm-serve-limits
    # rules match on them); with no such rule loaded, the recorded limits are the server's defaults.
    depth = prom.query('tcm_queue_depth{job="tcm-serve"}')
    expect(bool(depth) and all(r["metric"].get("tcm_serve_max_batch_size") == "16"
                               and r["metric"].get("tcm_serve_max_queue_size") == "256" for r in depth),
           f"tcm_queue_depth carries the pod's size labels: {[r['metric'] for r in depth[:1]]}")
    limits = {name: prom.scalar(f'{name}{{namespace="{NAMESPACE}", pod="{POD}"}}')
              for name in ("tcm_serve:max_batch_size", "tcm_serve:max_queue_size", "tcm_serve:queue_alert_depth")}
    expect(limits == {"tcm_serve:max_batch_size": 16, "tcm_serve:max_queue_size": 256,
                      "tcm_serve:queue_alert_depth": 192},
           f"recorded limits of a pod no overlay rule covers are the defaults: {limits}")

    # Counts: the counter moved by exactly the images sent since the traffic began.
    window = max(1, int(time.time() - args.since))
    total = prom.scalar('sum(tcm_images_generated_total{job="tcm-serve"})')
    before = prom.scalar(f'sum(tcm_images_generated_total{{job="tcm-serve"}} offset {window}s)') or 0.0
    expect(total is not None and total - before == args.images,
           f"images counted since the traffic began: {None if total is None else total - before:g} "
           f"(sent {args.images})")
    by_steps = prom.query('sum by (steps) (tcm_images_generated_total{job="tcm-serve"})')
    expect({r["metric"]["steps"] for r in by_steps} == {"1", "2"}, f"images by steps: {by_steps}")
    bad = prom.scalar('sum(tcm_requests_total{job="tcm-serve", code="INVALID_ARGUMENT"})')
    expect(bad == 1, f"the bad request counted as INVALID_ARGUMENT: {bad}")

    # Images/s as the dashboard computes it.
    rate_window = f"{window + 5}s"
    panels = dashboard_queries(rate_window)
    images_per_s = [e for title, _, e in panels if title == "Images/s"]
    rate = prom.scalar(images_per_s[0]) if images_per_s else None
    expect(rate is not None and rate > 0, f"dashboard Images/s over {rate_window}: {rate}")

    # Every dashboard query evaluates; all but those documented as empty without failures have data.
    may_be_empty = {"Server-side error ratio", "Images dropped /s"}
    for title, legend, expr in panels:
        try:
            result = prom.query(expr)
        except Exception as e:  # a query Prometheus rejects
            expect(False, f"dashboard {title} [{legend}]: {e}")
            continue
        expect(bool(result) or title in may_be_empty,
               f"dashboard {title} [{legend}]: {len(result)} series")

    # The autoscaler's metrics, as prometheus-adapter would ask for them for this pod.
    for name, expr in adapter_queries(f'namespace="{NAMESPACE}",pod=~"{POD}"', "pod"):
        result = prom.query(expr)
        pods = {r["metric"].get("pod") for r in result}
        expect(pods == {POD}, f"adapter metric {name} for pod {POD}: {[r['value'][1] for r in result]}")

    # The alert rules loaded and evaluate without errors; none fires on a healthy server.
    groups = prom.get("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    expect(len(rules) > 0 and all(r.get("health") == "ok" for r in rules),
           f"{len(rules)} alert rules loaded, health {sorted({r.get('health') for r in rules})}")
    # (Latency and queue alerts depend on this machine's speed: not asserted.)
    speed_dependent = {"TcmServeHighLatencyP99", "TcmServeQueueSaturated"}
    firing = [a["labels"]["alertname"] for a in prom.get("/api/v1/alerts")["alerts"]
              if a["labels"]["alertname"] not in speed_dependent]
    expect(not firing, f"no error or availability alert pending or firing: {firing}")

    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("config")
    p.add_argument("--out", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--decoy")
    p.add_argument("--interval")
    p.add_argument("--drop-job", action="append")
    p = sub.add_parser("exprs")
    p.add_argument("--out", required=True)
    p = sub.add_parser("check")
    p.add_argument("--prom", required=True)
    p.add_argument("--images", type=int, required=True)
    p.add_argument("--since", type=float, required=True)
    args = parser.parse_args()
    return {"config": cmd_config, "exprs": cmd_exprs, "check": cmd_check}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
