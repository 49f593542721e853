"""Metric names: what the Rust code exports, and what PromQL expressions use.

The code side reads the `metrics::counter!/gauge!/histogram!("name" ...)`
macros (a string literal, or a `const NAME: &str = "..."` of the same crate)
and turns them into the series names the Prometheus exporter renders
(metrics-exporter-prometheus 0.18): counters and gauges as named; histograms
as summaries by default (`name{quantile=..}`, `name_sum`, `name_count`) and
`name_bucket` too once buckets are configured (`set_buckets`).
"""

from __future__ import annotations

import re
from pathlib import Path

# Metrics that other exporters provide, with where each comes from. Anything
# else a rule or panel uses must be exported by the code.
EXTERNAL_METRICS = {
    "up": "Prometheus (one series per scrape target)",
    "kube_pod_deletion_timestamp": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kubelet_volume_stats_available_bytes": "kubelet",
    "kubelet_volume_stats_capacity_bytes": "kubelet",
    "container_cpu_usage_seconds_total": "kubelet (cAdvisor)",
    "container_memory_working_set_bytes": "kubelet (cAdvisor)",
    "redis_up": "redis_exporter (sidecar of the Redis pod)",
}

MACRO = re.compile(
    r"\b(counter|gauge|histogram)!\s*\(\s*(?:\"((?:[^\"\\]|\\.)*)\"|([A-Z_][A-Z0-9_]*))",
)
CONST = re.compile(r"const\s+([A-Z_][A-Z0-9_]*)\s*:\s*&(?:'static\s+)?str\s*=\s*\"([^\"]*)\"")


def code_metrics(src_dirs: list[Path]) -> tuple[dict[str, str], list[str]]:
    """Returns {series name: kind} exported by the code, and problems found."""
    consts: dict[str, str] = {}
    files = [p for d in src_dirs if d.is_dir() for p in sorted(d.rglob("*.rs"))]
    texts = {p: p.read_text(encoding="utf-8", errors="replace") for p in files}
    for text in texts.values():
        consts.update(CONST.findall(text))
    buckets = any("set_buckets" in t for t in texts.values())
    series: dict[str, str] = {}
    problems: list[str] = []
    for path, text in texts.items():
        for kind, literal, ident in MACRO.findall(text):
            name = literal or consts.get(ident)
            if name is None:
                problems.append(f"{path}: {kind}!({ident}) names a metric through a constant this check cannot resolve")
                continue
            if kind == "histogram":
                series[name] = "histogram (summary)"
                series[name + "_sum"] = "histogram sum"
                series[name + "_count"] = "histogram count"
                if buckets:
                    series[name + "_bucket"] = "histogram bucket"
            else:
                series[name] = kind
    return series, problems


_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_RANGE = re.compile(r"\[[^\]]*\]")
_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?[0-9a-zA-Z]+")
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,()]+(?:\{[^}]*\})?)\s*,\s*\w+\s*\)")
_IDENT = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "Inf", "NaN",
}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression (or Grafana query) selects."""
    e = _LABEL_VALUES.sub(lambda m: m.group(1), expr)
    e = re.sub(r"label_values\(\s*\w+\s*\)", "", e)
    e = _STRING.sub('""', e)
    e = _GRAFANA_VAR.sub("1", e)
    e = _RANGE.sub("", e)
    e = _MATCHERS.sub("", e)
    e = _GROUPING.sub("", e)
    e = _OFFSET.sub("", e)
    names = set()
    for name, call in _IDENT.findall(e):
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    return names


def check_names(used: dict[str, set[str]], exported: dict[str, str]) -> list[str]:
    """`used` maps a place (file: rule or panel) to the names it uses."""
    problems = []
    for place, names in sorted(used.items()):
        for name in sorted(names):
            if name not in exported and name not in EXTERNAL_METRICS:
                problems.append(f"{place}: metric `{name}` is not exported by the code and is no known external metric")
    if problems:
        problems.append("the code exports: " + (", ".join(sorted(exported)) or "nothing"))
        problems.append("known external metrics (deploy/validate/metrics.py EXTERNAL_METRICS): " + ", ".join(sorted(EXTERNAL_METRICS)))
    return problems
