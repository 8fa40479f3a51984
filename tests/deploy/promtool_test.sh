#!/usr/bin/env bash
# promtool on the project's Prometheus files: the alert rules and their unit tests, the
# scrape configuration, the PromQL of the Grafana dashboard and of the prometheus-adapter
# rules, and the PrometheusRule that docs/DEPLOY.md makes from alerts.yml.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
prom="$repo/deploy/prometheus"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

run() {  # run DESCRIPTION COMMAND...: ok if the command exits 0
  local what="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    echo "ok   $what"; passed=$((passed + 1))
  else
    echo "FAIL $what"; echo "$out" | sed 's/^/     /'; failed=$((failed + 1))
  fi
}

run "promtool check rules alerts.yml" promtool check rules "$prom/alerts.yml"
run "promtool test rules alerts_test.yml" promtool test rules "$prom/alerts_test.yml"

# Debian's Prometheus is built without Kubernetes service discovery, so its promtool
# rejects kubernetes_sd_configs: that must be all it rejects, and the configuration with a
# static target in its place (labels and relabelling unchanged) must pass.
only_k8s_sd() {
  local out
  out="$(promtool check config "$prom/prometheus.yml" 2>&1)" && return 0
  # The objections are YAML unmarshal errors, one "line N: ..." each.
  grep -Eq '^ *line [0-9]+: field kubernetes_sd_configs not found' <<< "$out" || { echo "$out"; return 1; }
  ! grep -E '^ *line [0-9]+:' <<< "$out" | grep -v 'field kubernetes_sd_configs not found' || { echo "$out"; return 1; }
}
run "prometheus.yml: promtool objects to nothing but the Kubernetes discovery" only_k8s_sd
/usr/bin/python3 "$here/prom_tools.py" config --out "$tmp/prom" --target 127.0.0.1:9464
run "promtool check config prometheus.yml (static target for the Kubernetes discovery)" \
  promtool check config "$tmp/prom/prometheus.yml"

/usr/bin/python3 "$here/prom_tools.py" exprs --out "$tmp/queries.yml" > /dev/null
run "Grafana dashboard and prometheus-adapter queries parse (promtool check rules)" \
  promtool check rules "$tmp/queries.yml"

# The PrometheusRule of docs/DEPLOY.md holds exactly the rules of alerts.yml.
{ printf 'apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata:\n  name: tcm-serve\nspec:\n'
  sed 's/^/  /' "$prom/alerts.yml"; } > "$tmp/prometheusrule.yaml"
same_rules() {
  /usr/bin/python3 - "$tmp/prometheusrule.yaml" "$prom/alerts.yml" <<'PY'
import sys, yaml
wrapped, plain = (yaml.safe_load(open(p)) for p in sys.argv[1:])
sys.exit(0 if wrapped["spec"]["groups"] == plain["groups"] else "PrometheusRule differs from alerts.yml")
PY
}
run "PrometheusRule made from alerts.yml holds the same rules" same_rules

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
