"""Validates a rendered set of Kubernetes manifests (one multi-document YAML file).

Run with the interpreter of .tools/venv (scripts/ensure-chart-tools.sh), which holds
kubernetes-validate, PyYAML and jsonschema:

    .tools/venv/bin/python scripts/check-manifests.py rendered.yaml

Each object is checked on its own first: core kinds against the Kubernetes 1.33 OpenAPI schema
with kubernetes-validate in strict mode (unknown fields fail), ServiceMonitor and PrometheusRule
against the structural subsets below, anything else fails. The library is called rather than its command
line because the command line only warns about a kind it has no schema for, which would let a
misspelt apiVersion through. Then the objects are checked together, for the mistakes an API
server accepts but that break the install at run time: a Service that selects no pod, a probe on
a port the container lacks, a binding to a missing role, a pod that the `restricted` Pod Security
Standard would refuse.

Prints one line per problem and exits 1 when there is any.
"""

import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

KUBERNETES_VERSION = "1.33.0"

# The fields of monitoring.coreos.com/v1 ServiceMonitor the chart uses, closed to anything else so
# a typo fails here rather than being pruned silently by the API server.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
                "namespace": {"type": "string", "minLength": 1},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["matchLabels"],
                    "properties": {
                        "matchLabels": {
                            "type": "object",
                            "minProperties": 1,
                            "additionalProperties": {"type": "string"},
                        }
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}

# The fields of monitoring.coreos.com/v1 PrometheusRule, closed like the ServiceMonitor's; the
# rules themselves are checked by `promtool` in scripts/test.sh.
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": SERVICE_MONITOR_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": {"type": "string", "minLength": 1},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}

# Verbs that let a subject delete data or gain rights it was not given; least privilege needs none.
FORBIDDEN_VERBS = {"*", "delete", "deletecollection", "escalate", "bind", "impersonate"}
READ_VERBS = {"get", "list", "watch"}


def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def selects(selector, labels):
    """Whether a matchLabels selector picks an object with these labels (empty picks nothing)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def validate_one(obj):
    """Problems of one object against the schema of its kind."""
    schema = {
        "ServiceMonitor": SERVICE_MONITOR_SCHEMA,
        "PrometheusRule": PROMETHEUS_RULE_SCHEMA,
    }.get(obj.get("kind"))
    if schema:
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{name_of(obj)}: {'.'.join(map(str, e.path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{name_of(obj)}: {'.'.join(map(str, e.path))}: {e.message}"]
    except SchemaNotFoundError:
        return [
            f"{name_of(obj)}: no Kubernetes {KUBERNETES_VERSION} schema for "
            f"{obj.get('apiVersion')} {obj.get('kind')} (misspelt, or a kind this check "
            "does not know)"
        ]
    return []


def check_pod(owner, pod_spec, service_accounts):
    """Problems of a pod template: the restricted Pod Security rules, probes, mounts, account."""
    problems = []
    where = name_of(owner)
    pod_sc = pod_spec.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True:
        problems.append(f"{where}: pod securityContext.runAsNonRoot must be true")
    if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{where}: pod seccompProfile must be RuntimeDefault")
    account = pod_spec.get("serviceAccountName")
    if account not in service_accounts:
        problems.append(f"{where}: serviceAccountName {account!r} is not rendered")
    volumes = {v["name"] for v in pod_spec.get("volumes", [])}
    for container in pod_spec.get("containers", []) + pod_spec.get("initContainers", []):
        cwhere = f"{where} container {container['name']}"
        sc = container.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cwhere}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cwhere}: readOnlyRootFilesystem must be true")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{cwhere}: capabilities must drop ALL")
        if not container.get("resources", {}).get("requests"):
            problems.append(f"{cwhere}: resource requests are missing")
        ports = {p["name"] for p in container.get("ports", []) if "name" in p}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                problems.append(f"{cwhere}: {probe} uses port {port!r}, not a container port")
        if "livenessProbe" not in container or "readinessProbe" not in container:
            problems.append(f"{cwhere}: liveness and readiness probes are required")
        for mount in container.get("volumeMounts", []):
            if mount["name"] not in volumes:
                problems.append(f"{cwhere}: mounts undeclared volume {mount['name']!r}")
    return problems


def check_together(objects):
    """Problems between objects: what points at what must exist and match."""
    problems = []
    by_kind = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], []).append(obj)

    def namespaced(kind, namespace):
        return [o for o in by_kind.get(kind, []) if o["metadata"].get("namespace") == namespace]

    service_accounts = {o["metadata"]["name"] for o in by_kind.get("ServiceAccount", [])}
    deployments = by_kind.get("Deployment", [])

    def pods_of(namespace, selector):
        return [
            d
            for d in namespaced("Deployment", namespace)
            if selects(selector, d["spec"]["template"]["metadata"].get("labels", {}))
        ]

    def container_ports(deployment):
        return {
            p["name"]
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
            if "name" in p
        }

    for d in deployments:
        selector = d["spec"]["selector"].get("matchLabels", {})
        if not selects(selector, d["spec"]["template"]["metadata"].get("labels", {})):
            problems.append(f"{name_of(d)}: selector does not match its pod template's labels")
        problems += check_pod(d, d["spec"]["template"]["spec"], service_accounts)

    for svc in by_kind.get("Service", []):
        ns = svc["metadata"].get("namespace")
        targets = pods_of(ns, svc["spec"].get("selector", {}))
        if len(targets) != 1:
            problems.append(f"{name_of(svc)}: selects {len(targets)} Deployments, expected 1")
            continue
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort")
            if isinstance(target, str) and target not in container_ports(targets[0]):
                problems.append(
                    f"{name_of(svc)}: targetPort {target!r} is not a port of {name_of(targets[0])}"
                )

    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for obj in by_kind.get(kind, []):
            selector = obj["spec"].get("selector") or obj["spec"].get("podSelector") or {}
            targets = pods_of(obj["metadata"].get("namespace"), selector.get("matchLabels", {}))
            if len(targets) != 1:
                problems.append(f"{name_of(obj)}: selects {len(targets)} Deployments, expected 1")
            elif kind == "NetworkPolicy":
                for rule in obj["spec"].get("ingress", []):
                    for port in rule.get("ports", []):
                        if isinstance(port.get("port"), str) and port[
                            "port"
                        ] not in container_ports(targets[0]):
                            problems.append(
                                f"{name_of(obj)}: port {port['port']!r} is not a "
                                f"port of {name_of(targets[0])}"
                            )

    for monitor in by_kind.get("ServiceMonitor", []):
        ns = monitor["metadata"]["namespace"]
        selected = [
            s
            for s in namespaced("Service", ns)
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        names = {p.get("name") for s in selected for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint["port"] not in names:
                problems.append(
                    f"{name_of(monitor)}: no selected Service has a port named {endpoint['port']!r}"
                )

    roles = {
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        for o in by_kind.get("Role", []) + by_kind.get("ClusterRole", [])
    }
    for binding in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", []):
        ref = binding["roleRef"]
        ns = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        if (ref["kind"], ns, ref["name"]) not in roles:
            problems.append(f"{name_of(binding)}: binds {ref['kind']}/{ref['name']}, not rendered")
        for subject in binding["subjects"]:
            if subject["kind"] == "ServiceAccount" and subject["name"] not in service_accounts:
                problems.append(
                    f"{name_of(binding)}: ServiceAccount {subject['name']!r} is not rendered"
                )
    for role in by_kind.get("Role", []) + by_kind.get("ClusterRole", []):
        component = role["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        for rule in role.get("rules", []):
            verbs = set(rule["verbs"])
            if verbs & FORBIDDEN_VERBS:
                problems.append(f"{name_of(role)}: grants {sorted(verbs & FORBIDDEN_VERBS)}")
            if "*" in rule.get("resources", []) or "*" in rule.get("apiGroups", []):
                problems.append(f"{name_of(role)}: uses a wildcard resource or API group")
            if component == "receiver" and not verbs <= READ_VERBS:
                problems.append(
                    f"{name_of(role)}: the receiver must be read-only, "
                    f"grants {sorted(verbs - READ_VERBS)}"
                )
    return problems


def main(path):
    with open(path) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    if not objects:
        print(f"{path}: no objects")
        return 1
    problems = []
    for obj in objects:
        problems += validate_one(obj)
    if not problems:
        problems = check_together(objects)
    for problem in problems:
        print(f"{path}: {problem}")
    kinds = sorted({o["kind"] for o in objects})
    print(f"{path}: {len(objects)} objects ({', '.join(kinds)}), {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: check-manifests.py RENDERED.yaml")
    sys.exit(main(sys.argv[1]))
