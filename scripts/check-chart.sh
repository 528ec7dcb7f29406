#!/usr/bin/env bash
# The chart checks of `make test`: the chart's CRDs match crds/, `helm lint --strict` and
# `helm template` pass for every value set (defaults and charts/…/ci/*-values.yaml), render
# for the oldest and the newest Kubernetes it supports and refuse an older one, every
# rendered object validates against Kubernetes 1.33 (scripts/check-manifests.py), the RBAC for
# `restartOnChange` appears only when asked for, the checks still catch a broken manifest, and
# deploy/ is what the chart renders with default values. Needs the tools of
# scripts/ensure-chart-tools.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

chart=charts/strapi-webhook-operator
helm=.tools/bin/helm
kubectl=.tools/bin/kubectl
python=.tools/venv/bin/python
for tool in "$helm" "$kubectl" "$python"; do
  [[ -x "$tool" ]] || { echo "error: $tool is missing: run scripts/ensure-chart-tools.sh" >&2; exit 1; }
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
# Checks a file of $work, run from there so its messages name the value set, not a temp path.
check_manifests() { (cd "$work" && "$OLDPWD/$python" "$OLDPWD/scripts/check-manifests.py" "$1"); }
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

echo "==> chart: CRDs in sync with crds/"
if ! diff -ru crds "$chart/crds" > "$work/crds.diff"; then
  cat "$work/crds.diff" >&2
  fail "$chart/crds differs from crds/: run \`make generate\`"
fi

# Value sets: the defaults, then each ci/<name>-values.yaml.
value_sets=(defaults)
for file in "$chart"/ci/*-values.yaml; do
  name="$(basename "$file" -values.yaml)"
  value_sets+=("$name")
done
values_args() { [[ "$1" == defaults ]] || echo "--values=$chart/ci/$1-values.yaml"; }

for set in "${value_sets[@]}"; do
  echo "==> chart: $set values"
  # shellcheck disable=SC2046 # values_args prints zero or one word.
  if ! "$helm" lint --strict --quiet "$chart" $(values_args "$set") > "$work/lint.txt" 2>&1; then
    cat "$work/lint.txt" >&2
    fail "helm lint --strict with $set values"
    continue
  fi
  # shellcheck disable=SC2046
  if ! "$helm" template strapi-webhook-operator "$chart" --namespace strapi-system \
      --kube-version 1.33.0 --include-crds $(values_args "$set") > "$work/$set.yaml"; then
    fail "helm template with $set values"
    continue
  fi
  check_manifests "$set.yaml" || fail "objects rendered with $set values"
done

# The minimum is 1.28, the first release with `fieldPath` in CRD validation rules; 1.32 is the
# newest release a real API server accepted the CRDs, examples and chart on (docs/install.md).
echo "==> chart: renders for Kubernetes 1.28 and 1.32, refuses 1.27"
for version in 1.28.0 1.32.0; do
  "$helm" template strapi-webhook-operator "$chart" --kube-version "$version" > /dev/null \
    || fail "helm template refused Kubernetes $version; Chart.yaml kubeVersion must say >=1.28"
done
if "$helm" template strapi-webhook-operator "$chart" --kube-version 1.27.0 > /dev/null 2>&1; then
  fail "helm template accepted Kubernetes 1.27, which lacks fieldPath in CRD validation rules"
fi

echo "==> chart: the PrometheusRule carries files/prometheus-rules.yaml unchanged"
if ! "$python" - "$work/servicemonitor.yaml" "$chart/files/prometheus-rules.yaml" <<'PY'
import sys, yaml
rendered = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o and o.get("kind") == "PrometheusRule"]
wanted = yaml.safe_load(open(sys.argv[2]))
sys.exit(0 if len(rendered) == 1 and rendered[0]["spec"] == wanted else 1)
PY
then
  fail "servicemonitor values: no PrometheusRule, or its spec differs from $chart/files/prometheus-rules.yaml"
fi

echo "==> chart: Deployment patch rights only with restartOnChange"
# Count the RBAC rules on Deployments in each render: none by default, one ClusterRole rule when
# enabled for every namespace, one Role per listed namespace otherwise.
expect_deployment_rules() {
  local set="$1" want="$2" got
  got="$(grep -c 'resources: \["deployments"\]' "$work/$set.yaml" || true)"
  [[ "$got" == "$want" ]] || fail "$set values: $got RBAC rules on deployments, expected $want"
}
expect_deployment_rules defaults 0
expect_deployment_rules restart-on-change 1
expect_deployment_rules restart-on-change-namespaced 2

echo "==> chart: the checks catch broken input"
# Each mutation of the default render (and a misspelt value) must be refused, so a check that silently stopped working
# cannot pass unnoticed.
expect_refused() {
  local what="$1" expression="$2"
  sed -e "$expression" "$work/defaults.yaml" > "$work/broken.yaml"
  if cmp -s "$work/defaults.yaml" "$work/broken.yaml"; then
    fail "mutation '$what' changed nothing; update it to the chart's output"
  elif check_manifests broken.yaml > "$work/broken.txt"; then
    fail "a render with $what passed the checks"
  else
    echo "    refused: $what ($(grep -m1 -v ' problems$' "$work/broken.txt" | sed 's/^[^:]*: //'))"
  fi
}
expect_refused "a writable root filesystem" 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/'
expect_refused "an unknown field" 's/^  revisionHistoryLimit: 3/  revisionHistoryLimits: 3/'
expect_refused "a probe on a missing port" '0,/port: admin/s//port: admin-typo/'
expect_refused "a misspelt apiVersion" 's#apiVersion: policy/v1#apiVersion: policy/v2#'

if "$helm" lint --strict --quiet "$chart" --set controller.replicass=2 > /dev/null 2>&1; then
  fail "values.schema.json accepted a misspelt key (controller.replicass)"
else
  echo "    refused: a misspelt value key (values.schema.json)"
fi

echo "==> deploy/: in sync with the chart"
scripts/render-deploy.sh "$work/deploy"
if ! diff -ru deploy "$work/deploy" > "$work/deploy.diff"; then
  cat "$work/deploy.diff" >&2
  fail "deploy/ is out of date with the chart: run \`make deploy-manifests\` and commit deploy/"
fi
# What `kubectl apply -k deploy/` would send, built by kubectl's own kustomize.
if "$kubectl" kustomize deploy > "$work/kustomized.yaml"; then
  check_manifests kustomized.yaml || fail "objects of kubectl kustomize deploy/"
else
  fail "kubectl kustomize deploy/"
fi

if ((failures > 0)); then
  echo "chart checks: $failures failed" >&2
  exit 1
fi
echo "chart checks: all passed"
