"""packaging/grafana/wgmux.json: every metric a panel queries is one wgmux
exports (wgmux/metrics.py's render() of a full status), and every label
matcher in a query selects a series that exists."""

import json
import re
from pathlib import Path

import pytest

from wgmux.datapath import COUNTERS
from wgmux.metrics import render

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging" / "grafana" / "wgmux.json"
# series Prometheus makes itself for every scrape target
SYNTHETIC = {"up"}
# labels Prometheus attaches to every series of a target
TARGET_LABELS = {"job", "instance"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "and", "or", "unless", "offset"}

# a status with every counter, both session states, a port, peers both ways
STATUS = {
    "started": 1700000000.0, "reloads": 1, "stale_sessions": 0,
    "counters": {name: 1 for name in COUNTERS},
    "sessions": [
        {"port": 51821, "state": "established", "i2r_bytes": 1, "r2i_bytes": 1,
         "i2r_packets": 1, "r2i_packets": 1},
        {"port": 51821, "state": "half-open", "i2r_bytes": 0, "r2i_bytes": 1,
         "i2r_packets": 0, "r2i_packets": 1},
    ],
    "peers": [{"endpoint": "198.18.0.2:51820"}, {"endpoint": None}],
    "slow_path": {"initiators": [{"port": 51821}]},
    "datapath": "tc", "datapath_setting": "auto",
}
SAMPLE = re.compile(r'^([a-z_:][a-z0-9_:]*)(?:\{(.*)\})? \S+$')
LABEL = re.compile(r'([a-z_]+)="((?:[^"\\]|\\.)*)"')


def exported():
    """metric name -> [label dict of each series]."""
    series = {}
    for line in render(STATUS).splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        series.setdefault(m.group(1), []).append(dict(LABEL.findall(m.group(2) or "")))
    return series


def queries():
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            out.append((f"variable {var['name']}", q["query"]))
    return out


SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?')
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def selectors(expr: str):
    """(metric, [(label, op, value)]) of every vector selector in a PromQL
    expression (enough of PromQL for a dashboard's queries)."""
    # grouping clauses, range/duration brackets and function names are not selectors
    text = re.sub(r'\b(by|without|on|ignoring)\s*\([^)]*\)', " ", expr)
    text = re.sub(r'\[[^\]]*\]', " ", text)
    text = re.sub(r'label_values\(', "(", text)
    found = []
    for m in SELECTOR.finditer(text):
        name, braces = m.group(1), m.group(2)
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or name in PROMQL_WORDS or name.startswith("$"):
            continue          # a function call, a keyword
        if text[max(0, m.start() - 1)] in "$\"":
            continue          # a variable, a string
        if re.fullmatch(r'[0-9.]+', name):
            continue
        found.append((name, MATCHER.findall(braces or "")))
    return found


def test_the_dashboard_is_grafana_json():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] == "wgmux" and dash["panels"]
    titles = [p["title"] for p in dash["panels"]]
    assert len(set(titles)) == len(titles)
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize("title, expr", queries())
def test_every_queried_metric_is_exported(title, expr):
    series = exported()
    expr = re.sub(r'label_values\(([^,]+),\s*[a-z_]+\)', r'\1', expr)   # variable queries
    found = selectors(expr)
    assert found, (title, expr)
    for name, matchers in found:
        if name in SYNTHETIC:
            continue
        assert name in series, f"{title}: {name} is not a metric wgmux exports"
        for label, op, value in matchers:
            if label in TARGET_LABELS:
                continue
            values = [s.get(label) for s in series[name]]
            assert any(v is not None for v in values), f"{title}: {name} has no label {label}"
            if op == "=":
                assert value in values, f"{title}: no {name}{{{label}={value!r}}} series"
            elif op == "=~":
                assert any(re.fullmatch(value, v or "") for v in values), \
                    f"{title}: no {name} series with {label} matching {value!r}"


def test_the_panels_the_issue_asks_for():
    exprs = " ".join(e for _, e in queries())
    for needed in ("wgmux_sessions", "wgmux_port_packets_total", "wgmux_port_bytes_total",
                   'verdict="drop"', 'event="slow_initiation"', 'event="sp_cookie_sent"',
                   'state="half-open"', "up{", "wgmux_start_time_seconds"):
        assert needed in exprs, needed


def test_the_parser_sees_a_wrong_name():
    """The check itself: a misspelt metric or label value is caught."""
    assert selectors('sum by (port) (rate(wgmux_port_byte_total{job=~"$job"}[5m]))') == \
        [("wgmux_port_byte_total", [("job", "=~", "$job")])]
    assert ("wgmux_events_total", [("event", "=", "sp_cookies_sent")]) in \
        selectors('rate(wgmux_events_total{event="sp_cookies_sent"}[1m]) / 2')
