"""Offline checks of deploy/ that no off-the-shelf tool makes here.

    check.py manifests NAME=RENDERED.yaml ...   rendered kustomize overlays (base, dev, prod)
    check.py rules ROOT OUTDIR                   PrometheusRule structure; writes rules for promtool
    check.py metrics ROOT                        metric names of the rules and dashboard vs the code
    check.py dashboard ROOT                      the Grafana dashboard's structure
    check.py dockerfiles ROOT                    Dockerfiles' structure (hadolint is not available)
    check.py compose ROOT                        docker-compose.yml against the files it names

Each prints what it found wrong and exits 1, or prints one line and exits 0.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import metrics  # noqa: E402

MONITORING = Path("deploy/k8s/components/monitoring")
RULE_FILE = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
CODE_DIRS = ["gateway/src", "msg-service/src", "storage/src", "proto/src"]


class Problems(list):
    def check(self, ok: bool, message: str) -> bool:
        if not ok:
            self.append(message)
        return ok


def finish(what: str, problems: list[str], summary: str) -> int:
    if problems:
        print(f"{what}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"{what}: {summary}")
    return 0


# ---------------------------------------------------------------- manifests

POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CHAT_WORKLOADS = {"gateway", "msg-service", "redis"}
QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$")


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selector_labels(selector: dict | None) -> dict:
    selector = selector or {}
    if selector.get("matchExpressions"):
        return {}
    return selector.get("matchLabels", {})


class Rendered:
    def __init__(self, name: str, docs: list[dict]):
        self.name = name
        self.docs = docs
        self.by_kind: dict[str, dict[str, dict]] = {}
        for d in docs:
            self.by_kind.setdefault(d.get("kind", "?"), {})[d.get("metadata", {}).get("name", "?")] = d

    def get(self, kind: str, name: str) -> dict | None:
        return self.by_kind.get(kind, {}).get(name)

    def all(self, kind: str) -> list[dict]:
        return list(self.by_kind.get(kind, {}).values())

    def pod_templates(self) -> list[tuple[dict, dict]]:
        return [(d, d["spec"]["template"]) for k in POD_OWNERS for d in self.all(k)]

    def operator_managed(self, labels: dict) -> bool:
        """Pods and Services the Scylla Operator makes from the ScyllaCluster."""
        return bool(self.all("ScyllaCluster")) and "scylla/cluster" in labels

    def pods_matching(self, selector: dict) -> list[dict]:
        return [t for _, t in self.pod_templates() if labels_match(selector, t["metadata"].get("labels", {}))]

    def config_value(self, key: str) -> str | None:
        for cm in self.all("ConfigMap"):
            if cm["metadata"]["name"].startswith("chat-config") and key in cm.get("data", {}):
                return cm["data"][key]
        return None


def check_structure(r: Rendered, p: Problems) -> None:
    seen = set()
    for d in r.docs:
        kind, meta = d.get("kind"), d.get("metadata", {})
        where = f"[{r.name}] {kind}/{meta.get('name')}"
        p.check(bool(d.get("apiVersion")) and bool(kind) and bool(meta.get("name")), f"{where}: apiVersion, kind and metadata.name are required")
        key = (d.get("apiVersion", "").split("/")[0], kind, meta.get("name"))
        p.check(key not in seen, f"{where}: defined twice")
        seen.add(key)
        if kind != "Namespace":
            p.check(meta.get("namespace") == "chat", f"{where}: namespace is {meta.get('namespace')!r}, expected 'chat'")


def check_references(r: Rendered, p: Problems, allow_missing: set[str]) -> None:
    def exists(kind: str, name: str) -> bool:
        return name in allow_missing or r.get(kind, name) is not None

    for owner, tmpl in r.pod_templates():
        where = f"[{r.name}] {owner['kind']}/{owner['metadata']['name']}"
        spec = tmpl["spec"]
        claim_templates = {c["metadata"]["name"] for c in owner["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            if "secret" in v and not v["secret"].get("optional"):
                p.check(exists("Secret", v["secret"]["secretName"]), f"{where}: volume {v['name']} names a missing Secret {v['secret']['secretName']}")
            if "configMap" in v and not v["configMap"].get("optional"):
                p.check(exists("ConfigMap", v["configMap"]["name"]), f"{where}: volume {v['name']} names a missing ConfigMap {v['configMap']['name']}")
            if "persistentVolumeClaim" in v:
                p.check(exists("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"]), f"{where}: volume {v['name']} names a missing PVC")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            cw = f"{where} container {c['name']}"
            for m in c.get("volumeMounts", []):
                p.check(m["name"] in volumes or m["name"] in claim_templates, f"{cw}: mounts undefined volume {m['name']}")
            for ef in c.get("envFrom", []):
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    if key in ef and not ef[key].get("optional"):
                        p.check(exists(kind, ef[key]["name"]), f"{cw}: envFrom names a missing {kind} {ef[key]['name']}")
            for e in c.get("env", []):
                vf = e.get("valueFrom", {})
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    if key not in vf or vf[key].get("optional"):
                        continue
                    ref = vf[key]
                    obj = r.get(kind, ref["name"])
                    if obj is None:
                        p.check(ref["name"] in allow_missing, f"{cw}: env {e['name']} names a missing {kind} {ref['name']}")
                    else:
                        keys = set(obj.get("data", {})) | set(obj.get("stringData", {}))
                        p.check(ref["key"] in keys, f"{cw}: env {e['name']} names key {ref['key']} that {kind} {ref['name']} lacks")
            ports = {pt.get("name") for pt in c.get("ports", [])} | {pt["containerPort"] for pt in c.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                pr = c.get(probe) or {}
                for action in ("httpGet", "tcpSocket", "grpc"):
                    if action in pr:
                        p.check(pr[action]["port"] in ports, f"{cw}: {probe} uses port {pr[action]['port']} the container does not declare")

    for svc in r.all("Service"):
        where = f"[{r.name}] Service/{svc['metadata']['name']}"
        sel = svc["spec"].get("selector", {})
        pods = r.pods_matching(sel)
        if svc["metadata"]["name"] == "no-backend":
            p.check(not pods, f"{where}: must select no pod (it is the Ingress's refusal)")
            continue
        if not pods:
            p.check(r.operator_managed(sel), f"{where}: its selector {sel} matches no pod template")
            continue
        names = {pt.get("name") for t in pods for c in t["spec"]["containers"] for pt in c.get("ports", [])}
        numbers = {pt["containerPort"] for t in pods for c in t["spec"]["containers"] for pt in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            p.check(target in names or target in numbers, f"{where}: port {port.get('name')} targets {target}, which its pods do not declare")

    for ing in r.all("Ingress"):
        where = f"[{r.name}] Ingress/{ing['metadata']['name']}"
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                b = path["backend"]["service"]
                svc = r.get("Service", b["name"])
                if not p.check(svc is not None, f"{where}: path {path['path']} goes to missing Service {b['name']}"):
                    continue
                port = b["port"]
                ok = any(sp.get("name") == port.get("name") or sp["port"] == port.get("number") for sp in svc["spec"]["ports"])
                p.check(ok, f"{where}: path {path['path']} uses a port Service {b['name']} lacks")
        ann = ing["metadata"].get("annotations", {})
        for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
            p.check(int(ann.get(key, "0")) >= 3600, f"{where}: {key} must be at least 3600 s (idle WebSockets)")

    for hpa in r.all("HorizontalPodAutoscaler"):
        t = hpa["spec"]["scaleTargetRef"]
        target = r.get(t["kind"], t["name"])
        if p.check(target is not None, f"[{r.name}] HPA/{hpa['metadata']['name']} targets missing {t['kind']}/{t['name']}"):
            p.check("replicas" not in target["spec"], f"[{r.name}] {t['kind']}/{t['name']}: set no spec.replicas when an HPA owns the count")
            for c in target["spec"]["template"]["spec"]["containers"]:
                p.check("cpu" in c.get("resources", {}).get("requests", {}), f"[{r.name}] HPA on CPU needs a CPU request in {c['name']}")
    for pdb in r.all("PodDisruptionBudget"):
        p.check(bool(r.pods_matching(selector_labels(pdb["spec"]["selector"]))), f"[{r.name}] PDB/{pdb['metadata']['name']} selects no pods")
    for np in r.all("NetworkPolicy"):
        sel = selector_labels(np["spec"]["podSelector"])
        if sel:
            p.check(bool(r.pods_matching(sel)) or r.operator_managed(sel), f"[{r.name}] NetworkPolicy/{np['metadata']['name']} selects no pods ({sel})")
        for direction in ("ingress", "egress"):
            for rule in np["spec"].get(direction, []) or []:
                for peer in rule.get("from", []) + rule.get("to", []):
                    psel = selector_labels(peer.get("podSelector")) if "namespaceSelector" not in peer else {}
                    if psel:
                        p.check(bool(r.pods_matching(psel)) or r.operator_managed(psel), f"[{r.name}] NetworkPolicy/{np['metadata']['name']}: peer {psel} matches no pods")
    for sm in r.all("ServiceMonitor"):
        where = f"[{r.name}] ServiceMonitor/{sm['metadata']['name']}"
        sel = selector_labels(sm["spec"].get("selector"))
        svcs = [s for s in r.all("Service") if labels_match(sel, s["metadata"].get("labels", {}))]
        if not svcs:
            p.check(r.operator_managed(sel), f"{where}: selector {sel} matches no Service")
            continue
        names = {sp.get("name") for s in svcs for sp in s["spec"]["ports"]}
        for ep in sm["spec"].get("endpoints", []):
            p.check(ep.get("port") in names, f"{where}: endpoint port {ep.get('port')} is not a port of the selected Service")


def check_pod_security(r: Rendered, p: Problems) -> None:
    for name in CHAT_WORKLOADS:
        d = r.get("Deployment", name)
        if not p.check(d is not None, f"[{r.name}] Deployment/{name} is missing"):
            continue
        spec = d["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        p.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, f"[{r.name}] {name}: the pod must run as a non-root UID")
        p.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"[{r.name}] {name}: seccompProfile RuntimeDefault")
        for c in spec["containers"]:
            cw = f"[{r.name}] {name}/{c['name']}"
            sc = c.get("securityContext", {})
            p.check(sc.get("readOnlyRootFilesystem") is True, f"{cw}: readOnlyRootFilesystem must be true")
            p.check(sc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation must be false")
            p.check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{cw}: drop ALL capabilities")
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    v = str(res.get(part, {}).get(what, ""))
                    p.check(bool(QUANTITY.match(v)), f"{cw}: resources.{part}.{what} is missing or malformed ({v!r})")


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", []) if "value" in e}


def check_gateway(r: Rendered, p: Problems) -> None:
    d = r.get("Deployment", "gateway")
    if d is None:
        return
    spec = d["spec"]["template"]["spec"]
    c = next(c for c in spec["containers"] if c["name"] == "gateway")
    w = f"[{r.name}] gateway"
    p.check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{w}: readiness probe must GET /readyz")
    p.check(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{w}: liveness probe must GET /healthz")
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    script = " ".join(pre)
    p.check("kill -TERM 1" in script, f"{w}: preStop must start the drain (kill -TERM 1)")
    sleep = re.search(r"sleep (\d+)", script)
    pre_secs = int(sleep.group(1)) if sleep else 0
    drain = r.config_value("CHAT_DRAIN_SECS")
    if p.check(drain is not None and drain.isdigit(), f"{w}: chat-config must set CHAT_DRAIN_SECS"):
        grace = spec.get("terminationGracePeriodSeconds", 30)
        # After the drain: up to 3 s hard stop, then up to 5 s for the HTTP server.
        need = pre_secs + int(drain) + 8
        p.check(grace > need, f"{w}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_secs} s + drain {drain} s + 8 s = {need} s")
    p.check(bool(spec.get("affinity", {}).get("podAntiAffinity")), f"{w}: podAntiAffinity spreads gateways over nodes")
    strat = d["spec"].get("strategy", {})
    p.check(strat.get("type") == "RollingUpdate" and strat.get("rollingUpdate", {}).get("maxUnavailable") == 0, f"{w}: RollingUpdate with maxUnavailable 0")
    env = env_of(c)
    p.check(env.get("CHAT_LISTEN", "").startswith("0.0.0.0:"), f"{w}: CHAT_LISTEN must listen on every interface")
    p.check(r.config_value("CHAT_MSG_SERVICE") == "http://msg-service:9090", f"{w}: CHAT_MSG_SERVICE must name the msg-service Service")
    p.check(r.config_value("CHAT_REDIS_URL") == "redis://redis:6379", f"{w}: CHAT_REDIS_URL must name the redis Service")


def check_msg_service(r: Rendered, p: Problems) -> None:
    d = r.get("Deployment", "msg-service")
    if d is None:
        return
    w = f"[{r.name}] msg-service"
    want = 1 if r.name == "dev" else 3
    p.check(d["spec"].get("replicas") == want, f"{w}: {want} replica(s) (leases and fences let several share the store)")
    strat = d["spec"].get("strategy", {})
    p.check(strat.get("type") == "RollingUpdate" and strat.get("rollingUpdate", {}).get("maxUnavailable") == 0, f"{w}: RollingUpdate with maxUnavailable 0 (a stopping replica hands its shards over)")
    p.check(not any(h["spec"]["scaleTargetRef"]["name"] == "msg-service" for h in r.all("HorizontalPodAutoscaler")), f"{w}: must not be autoscaled")
    p.check(r.config_value("CHAT_STORE") == "scylla", f"{w}: CHAT_STORE=scylla (the embedded store belongs to one process)")
    pdb = r.get("PodDisruptionBudget", "msg-service")
    p.check(pdb is not None and pdb["spec"].get("maxUnavailable") == 1, f"{w}: a PodDisruptionBudget with maxUnavailable 1")
    spec = d["spec"]["template"]["spec"]
    c = spec["containers"][0]
    env = env_of(c)
    p.check(env.get("CHAT_MSG_LISTEN", "").endswith(":9090"), f"{w}: CHAT_MSG_LISTEN must match the Service port 9090")
    p.check(env.get("CHAT_ADVERTISE_ADDR") == "$(POD_IP):9090", f"{w}: CHAT_ADVERTISE_ADDR must be the pod's own address (replicas forward to each other)")
    probe = c.get("readinessProbe", {}).get("httpGet", {})
    p.check(probe.get("path") == "/readyz" and probe.get("port") == "metrics", f"{w}: readiness is GET /readyz on the metrics port (holds its shards)")


def check_scylla(r: Rendered, p: Problems) -> None:
    for sc in r.all("ScyllaCluster"):
        w = f"[{r.name}] ScyllaCluster/{sc['metadata']['name']}"
        p.check(sc["apiVersion"] == "scylla.scylladb.com/v1", f"{w}: apiVersion scylla.scylladb.com/v1")
        spec = sc.get("spec", {})
        p.check(isinstance(spec.get("version"), str) and bool(spec["version"]), f"{w}: spec.version (a string) is required")
        dc = spec.get("datacenter", {})
        p.check(bool(dc.get("name")), f"{w}: spec.datacenter.name is required")
        racks = dc.get("racks") or []
        p.check(bool(racks), f"{w}: at least one rack")
        for rack in racks:
            rw = f"{w} rack {rack.get('name')}"
            p.check(bool(rack.get("name")), f"{rw}: name required")
            p.check(isinstance(rack.get("members"), int) and rack["members"] >= 1, f"{rw}: members >= 1")
            p.check(bool(QUANTITY.match(str(rack.get("storage", {}).get("capacity", "")))), f"{rw}: storage.capacity is a quantity")
            for part in ("requests", "limits"):
                for what in ("cpu", "memory"):
                    p.check(bool(QUANTITY.match(str(rack.get("resources", {}).get(part, {}).get(what, "")))), f"{rw}: resources.{part}.{what}")
        unknown = set(spec) - {"version", "agentVersion", "developerMode", "automaticOrphanedNodeCleanup", "datacenter",
                               "repository", "agentRepository", "sysctls", "network", "exposeOptions", "alternator",
                               "cpuset", "imagePullSecrets", "podMetadata", "genericUpgrade", "backups", "repairs",
                               "externalSeeds", "minTerminationGracePeriodSeconds", "minReadySeconds", "readinessGates",
                               "dnsDomains", "forceRedeploymentReason", "scyllaArgs", "unsupportedGenericUpgrade"}
        p.check(not unknown, f"{w}: unknown spec fields {sorted(unknown)}")


def check_overlay_expectations(r: Rendered, p: Problems) -> None:
    n = r.name
    has_op = bool(r.all("ScyllaCluster"))
    scylla_sts = r.get("StatefulSet", "scylla")
    dev_auth = r.config_value("CHAT_DEV_AUTH")
    if n == "dev":
        p.check(not has_op and scylla_sts is not None, "[dev] a single-node Scylla StatefulSet replaces the ScyllaCluster")
        if scylla_sts:
            p.check(scylla_sts["spec"]["replicas"] == 1, "[dev] one Scylla node")
        for name in CHAT_WORKLOADS:
            d = r.get("Deployment", name)
            p.check(d is not None and d["spec"].get("replicas") == 1, f"[dev] {name} runs one replica")
        p.check(not r.all("HorizontalPodAutoscaler"), "[dev] no autoscaler")
        p.check(dev_auth == "true", "[dev] dev tokens are on")
    else:
        p.check(has_op and scylla_sts is None, f"[{n}] ScyllaDB through the operator's ScyllaCluster")
        p.check(r.get("HorizontalPodAutoscaler", "gateway") is not None, f"[{n}] the gateways have an HPA")
        p.check(dev_auth == "false", f"[{n}] dev tokens must be off")
    if n == "prod":
        p.check(bool(r.all("PrometheusRule")) and len(r.all("ServiceMonitor")) >= 1, "[prod] includes the monitoring component")
        secret = next(iter(s for s in r.all("Secret") if s["metadata"]["name"].startswith("chat-jwt")), None)
        p.check(secret is not None and "hs256-secret" in secret.get("data", {}), "[prod] the chat-jwt Secret carries hs256-secret")


def cmd_manifests(args: list[str]) -> int:
    p = Problems()
    counts = []
    for arg in args:
        name, _, path = arg.partition("=")
        r = Rendered(name, load_docs(Path(path)))
        counts.append(f"{name} {len(r.docs)} objects")
        check_structure(r, p)
        check_references(r, p, allow_missing={"chat-jwt"} if name == "base" else set())
        check_pod_security(r, p)
        check_gateway(r, p)
        check_msg_service(r, p)
        check_scylla(r, p)
        check_overlay_expectations(r, p)
    return finish("manifests", p, "references, probes, drain timing, security and overlay shape hold (" + ", ".join(counts) + ")")


# ---------------------------------------------------------------- rules and metrics

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def cmd_rules(root: Path, out: Path) -> int:
    p = Problems()
    doc = yaml.safe_load((root / RULE_FILE).read_text())
    p.check(doc.get("apiVersion") == "monitoring.coreos.com/v1" and doc.get("kind") == "PrometheusRule", f"{RULE_FILE}: must be a monitoring.coreos.com/v1 PrometheusRule")
    groups = doc.get("spec", {}).get("groups") or []
    p.check(bool(groups), f"{RULE_FILE}: spec.groups is empty")
    names, alerts = set(), set()
    for g in groups:
        p.check(bool(g.get("name")) and g.get("name") not in names, f"{RULE_FILE}: group names must be set and unique ({g.get('name')})")
        names.add(g.get("name"))
        p.check(set(g) <= {"name", "interval", "rules", "limit", "partial_response_strategy"}, f"{RULE_FILE}: group {g.get('name')}: unknown keys {set(g)}")
        for rule in g.get("rules") or []:
            what = rule.get("alert") or rule.get("record")
            w = f"{RULE_FILE}: {what}"
            p.check(("alert" in rule) != ("record" in rule), f"{w}: a rule is an alert or a record")
            p.check(set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}, f"{w}: unknown keys {sorted(set(rule))}")
            p.check(isinstance(rule.get("expr"), str) and rule["expr"].strip() != "", f"{w}: expr must be a non-empty string")
            if "for" in rule:
                p.check(bool(DURATION.match(str(rule["for"]))), f"{w}: `for` must be a duration")
            if "alert" in rule:
                p.check(rule["alert"] not in alerts, f"{w}: alert defined twice")
                alerts.add(rule["alert"])
                p.check(rule.get("labels", {}).get("severity") in {"critical", "warning", "info"}, f"{w}: labels.severity must be critical, warning or info")
                ann = rule.get("annotations", {})
                p.check(bool(ann.get("summary")) and bool(ann.get("description")), f"{w}: annotations summary and description")
    out.mkdir(parents=True, exist_ok=True)
    spec = doc.get("spec", {})
    (out / "rules-full.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # The unit tests check firing and labels; annotation templates are checked
    # by `promtool check rules` on the full file.
    for g in spec.get("groups", []):
        for rule in g.get("rules", []):
            rule.pop("annotations", None)
    (out / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return finish("PrometheusRule structure", p, f"{len(alerts)} alerts in {len(groups)} groups")


def dashboard_queries(dash: dict) -> dict[str, str]:
    found: dict[str, str] = {}

    def walk(panels: list, path: str) -> None:
        for panel in panels:
            title = panel.get("title", f"panel {panel.get('id')}")
            for t in panel.get("targets", []):
                if t.get("expr"):
                    found[f"{path} panel '{title}' target {t.get('refId')}"] = t["expr"]
            walk(panel.get("panels", []), path)

    walk(dash.get("panels", []), str(DASHBOARD))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            if q:
                found[f"{DASHBOARD} variable '{var['name']}'"] = q
    return found


def cmd_metrics(root: Path) -> int:
    p = Problems()
    exported, problems = metrics.code_metrics([root / d for d in CODE_DIRS])
    p.extend(problems)
    p.check(bool(exported), f"no metrics found in {', '.join(CODE_DIRS)}: the scan is broken")
    used: dict[str, set[str]] = {}
    doc = yaml.safe_load((root / RULE_FILE).read_text())
    recorded = set()
    for g in doc["spec"]["groups"]:
        for rule in g["rules"]:
            if "record" in rule:
                recorded.add(rule["record"])
            used[f"{RULE_FILE} {rule.get('alert') or rule.get('record')}"] = metrics.promql_metric_names(rule["expr"])
    dash = json.loads((root / DASHBOARD).read_text())
    for place, expr in dashboard_queries(dash).items():
        used[place] = metrics.promql_metric_names(expr)
    for place in used:
        used[place] -= recorded
    p.extend(metrics.check_names(used, exported))
    all_used = set().union(*used.values())
    p.check(bool(all_used & set(exported)), "the rules and the dashboard use none of the code's metrics")
    unused = sorted(n for n, k in exported.items() if not n.endswith(("_sum", "_count", "_bucket")) and n not in all_used)
    note = f"; not used yet: {', '.join(unused)}" if unused else ""
    return finish(
        "metric names",
        p,
        f"{len(all_used)} names in {len(used)} rules/panels, all exported by the code ({len(all_used & set(exported))}) "
        f"or known external ({len(all_used - set(exported))}){note}",
    )


def cmd_dashboard(root: Path) -> int:
    p = Problems()
    dash = json.loads((root / DASHBOARD).read_text())
    for key in ("title", "uid", "panels", "schemaVersion"):
        p.check(key in dash, f"{DASHBOARD}: `{key}` is required")
    ids, titles = set(), set()
    for panel in dash.get("panels", []):
        pid = panel.get("id")
        p.check(pid not in ids, f"{DASHBOARD}: panel id {pid} used twice")
        ids.add(pid)
        gp = panel.get("gridPos", {})
        p.check(all(isinstance(gp.get(k), int) for k in ("h", "w", "x", "y")) and gp.get("x", 0) + gp.get("w", 0) <= 24, f"{DASHBOARD}: panel {pid} has a bad gridPos")
        if panel.get("type") != "row":
            p.check(bool(panel.get("targets")), f"{DASHBOARD}: panel '{panel.get('title')}' has no query")
            p.check(panel.get("title") not in titles, f"{DASHBOARD}: panel title '{panel.get('title')}' used twice")
            titles.add(panel.get("title"))
            for t in panel.get("targets", []):
                expr = t.get("expr", "")
                p.check(expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}") and expr.count("[") == expr.count("]"),
                        f"{DASHBOARD}: panel '{panel.get('title')}': unbalanced brackets in {expr!r}")
                ds = t.get("datasource") or panel.get("datasource") or {}
                p.check(ds.get("uid") == "${datasource}", f"{DASHBOARD}: panel '{panel.get('title')}' must use the $datasource variable")
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    p.check({"datasource", "namespace"} <= variables, f"{DASHBOARD}: variables datasource and namespace are expected")
    return finish("Grafana dashboard", p, f"{len(titles)} panels, uid {dash.get('uid')}")


# ---------------------------------------------------------------- Dockerfiles

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def cmd_dockerfiles(root: Path) -> int:
    p = Problems()
    cargo = (root / "Cargo.toml").read_text()
    members = set(re.findall(r'"([^"]+)"', re.search(r"members\s*=\s*\[([^\]]*)\]", cargo).group(1)))
    rust_min = re.search(r'rust-version\s*=\s*"([0-9.]+)"', cargo).group(1)
    uids = {}
    files = sorted((root / "deploy/docker").glob("*.Dockerfile"))
    p.check(len(files) >= 2, "deploy/docker: expected gateway.Dockerfile and msg-service.Dockerfile")
    for path in files:
        rel = path.relative_to(root)
        binary = path.name.removesuffix(".Dockerfile")
        ins = dockerfile_instructions(path)
        p.check(path.read_text().startswith("# syntax=docker/dockerfile:1"), f"{rel}: start with a `# syntax=docker/dockerfile:1.x` line")
        p.check(binary in members, f"{rel}: {binary} is not a workspace member")
        stages: list[dict] = []
        args = {}
        for word, rest in ins:
            if word == "ARG" and not stages:
                k, _, v = rest.partition("=")
                args[k] = v
            if word == "FROM":
                m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
                if not p.check(m is not None, f"{rel}: cannot parse FROM {rest}"):
                    continue
                stages.append({"image": m.group(1), "name": m.group(2), "ins": []})
                continue
            if p.check(bool(stages) or word == "ARG", f"{rel}: {word} before the first FROM"):
                if stages:
                    stages[-1]["ins"].append((word, rest))
        names = [s["name"] for s in stages]
        p.check(len(stages) >= 3, f"{rel}: a multi-stage build (toolchain, build, runtime) is expected")
        rv = args.get("RUST_VERSION", "")
        p.check(bool(rv) and tuple(map(int, rv.split("."))) >= tuple(map(int, rust_min.split("."))), f"{rel}: RUST_VERSION {rv!r} is below the workspace's rust-version {rust_min}")
        for i, st in enumerate(stages):
            base = st["image"].split(":")[0]
            p.check(base in names[:i] or ":" in st["image"] or "@" in st["image"], f"{rel}: image {st['image']} must be pinned to a tag")
            for word, rest in st["ins"]:
                if word in ("COPY", "ADD"):
                    opts = re.findall(r"--(\w+)=(\S+)", rest)
                    src = dict(opts).get("from")
                    parts = shlex.split(re.sub(r"--\w+=\S+\s*", "", rest))
                    if src:
                        p.check(src in names[:i], f"{rel}: COPY --from={src} names no earlier stage")
                    else:
                        for s in parts[:-1]:
                            p.check((root / s).exists(), f"{rel}: COPY source {s} does not exist in the build context (the repository root)")
                if word == "RUN" and "cargo build" in rest:
                    p.check(f"-p {binary}" in rest and "--locked" in rest, f"{rel}: cargo build must be --locked -p {binary}")
        builder = next((s for s in stages if any("cargo build" in r for w, r in s["ins"] if w == "RUN")), None)
        if p.check(builder is not None, f"{rel}: no stage runs cargo build"):
            steps = [(w, r) for w, r in builder["ins"]]
            cook = next((i for i, (w, r) in enumerate(steps) if w == "RUN" and "cargo chef cook" in r), None)
            copy_all = next((i for i, (w, r) in enumerate(steps) if w == "COPY" and r.split()[:2] == [".", "."]), None)
            p.check(cook is not None and copy_all is not None and cook < copy_all, f"{rel}: dependencies (cargo chef cook) must be built before the sources are copied")
        final = stages[-1] if stages else {"ins": [], "image": ""}
        fw = {w: r for w, r in final["ins"]}
        p.check(not final["image"].startswith("rust"), f"{rel}: the runtime stage must not be the Rust toolchain image")
        user = fw.get("USER", "")
        uid = user.split(":")[0]
        p.check(uid.isdigit() and uid != "0", f"{rel}: the runtime stage needs USER with a fixed non-root numeric UID (got {user!r})")
        uids[binary] = uid
        hc = fw.get("HEALTHCHECK", "")
        p.check(bool(hc) and "NONE" not in hc.split(), f"{rel}: the runtime stage needs a HEALTHCHECK")
        if "curl" in hc:
            p.check(any(w == "RUN" and "curl" in r for w, r in final["ins"]) or "curl" in final["image"], f"{rel}: HEALTHCHECK uses curl, which the runtime stage does not install")
        if "/healthz" in hc:
            p.check('"/healthz"' in (root / "gateway/src/app.rs").read_text(), f"{rel}: HEALTHCHECK uses /healthz, which the gateway does not route")
        ep = fw.get("ENTRYPOINT", "")
        p.check(ep.startswith("[") and json.loads(ep)[0].endswith("/" + binary), f"{rel}: ENTRYPOINT in exec form running {binary} (PID 1 gets SIGTERM)")
        p.check("EXPOSE" in fw, f"{rel}: EXPOSE the port")
        ignore = path.with_name(path.name + ".dockerignore")
        if p.check(ignore.exists(), f"{rel}: {ignore.name} (BuildKit's per-Dockerfile ignore file) is missing"):
            lines = {line.strip() for line in ignore.read_text().splitlines()}
            p.check(bool({"target", "target/", "/target"} & lines), f"{ignore.relative_to(root)}: must exclude target/")
    p.check(len(set(uids.values())) == 1, f"deploy/docker: the images should share one runtime UID, got {uids}")
    return finish("Dockerfiles (structural; hadolint unavailable)", p, f"{len(files)} files: stages, dependency layer, non-root UID {', '.join(sorted(set(uids.values())))}, HEALTHCHECK, exec ENTRYPOINT")


# ---------------------------------------------------------------- compose

def cmd_compose(root: Path) -> int:
    p = Problems()
    base = root / "deploy/docker"
    doc = yaml.safe_load((base / "docker-compose.yml").read_text())
    services = doc.get("services", {})
    for needed in ("haproxy", "gateway", "msg-service", "redis", "scylla"):
        p.check(needed in services, f"docker-compose.yml: service {needed} is missing")
    for name, svc in services.items():
        w = f"docker-compose.yml: {name}"
        b = svc.get("build")
        if b:
            ctx = (base / b["context"]).resolve()
            p.check(ctx.is_dir(), f"{w}: build context {b['context']} does not exist")
            p.check((ctx / b["dockerfile"]).is_file(), f"{w}: dockerfile {b['dockerfile']} does not exist")
        for dep in svc.get("depends_on", {}):
            p.check(dep in services, f"{w}: depends on unknown service {dep}")
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                p.check((base / src).exists(), f"{w}: bind mount {src} does not exist")
            else:
                p.check(src in (doc.get("volumes") or {}), f"{w}: volume {src} is not declared")
    ms = services.get("msg-service", {})
    p.check(ms.get("deploy", {}).get("replicas", 1) == 1, "docker-compose.yml: msg-service must run one replica")
    gw_env = services.get("gateway", {}).get("environment", {})
    for key, want in (("CHAT_MSG_SERVICE", "msg-service"), ("CHAT_REDIS_URL", "redis")):
        host = re.sub(r"^\w+://", "", str(gw_env.get(key, ""))).split(":")[0]
        p.check(host == want, f"docker-compose.yml: gateway {key} must name the {want} service (got {host!r})")
    hap = (base / "haproxy.cfg").read_text()
    p.check(re.search(r"server-template\s+\S+\s+\d+\s+gateway:8080", hap) is not None, "deploy/docker/haproxy.cfg: server-template must resolve the gateway service")
    grace = services.get("gateway", {}).get("stop_grace_period", "10s")
    drain = int(gw_env.get("CHAT_DRAIN_SECS", "10"))
    p.check(int(str(grace).rstrip("s")) > drain + 8, f"docker-compose.yml: gateway stop_grace_period {grace} must exceed CHAT_DRAIN_SECS {drain} + 8 s")
    return finish("docker-compose.yml (references)", p, f"{len(services)} services; build files, volumes, dependencies and addresses resolve")


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "manifests":
        return cmd_manifests(rest)
    if cmd == "rules":
        return cmd_rules(Path(rest[0]), Path(rest[1]))
    commands = {"metrics": cmd_metrics, "dashboard": cmd_dashboard, "dockerfiles": cmd_dockerfiles, "compose": cmd_compose}
    if cmd in commands:
        return commands[cmd](Path(rest[0]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
