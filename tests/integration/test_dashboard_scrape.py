"""The dashboard against a real Prometheus (issue 16): Debian's prometheus
server scrapes a live netlab hub's MetricsListen while traffic flows, and
every query of packaging/grafana/wgmux.json returns series through
Prometheus's HTTP API, the main ones with the values the traffic implies.

Prometheus runs in the hub's network namespace (scraping 127.0.0.1:9586
every second, its API on 127.0.0.1:9090), from Debian's package unpacked,
not installed (no service on the machine): `make dashboard-test` fetches
it with `apt-get download` into build/prometheus and names the binary in
WGMUX_PROMETHEUS.  Not part of `make test`.
"""

import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pytest

from netlab import wait_for
from netlab.topology import standard
from netlab.traffic import ping
from harness.hub import WgmuxHub

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = os.environ.get("WGMUX_PROMETHEUS")
DASHBOARD = ROOT / "packaging" / "grafana" / "wgmux.json"
PORT = 51821

pytestmark = [pytest.mark.netlab,
              pytest.mark.skipif(not PROMETHEUS, reason="make dashboard-test runs it "
                                 "(WGMUX_PROMETHEUS: Debian's prometheus binary)")]

CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: wgmux
    static_configs:
      - targets: ["127.0.0.1:9586"]
"""
QUERY = ("import sys, json, urllib.request, urllib.parse; "
         "u = 'http://127.0.0.1:9090/api/v1/query?' + urllib.parse.urlencode({'query': sys.argv[1]}); "
         "print(urllib.request.urlopen(u, timeout=10).read().decode())")
# what Grafana would put for the dashboard's variables
VARIABLES = {"$__rate_interval": "10s", "$__range": "2m", "$job": "wgmux", "$instance": ".*"}


def dashboard_queries():
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["legendFormat"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def grafana(expr: str) -> str:
    for var, value in VARIABLES.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


@pytest.fixture(scope="module")
def scraped():
    from netlab import Lab

    with Lab() as lab:
        yield from _scraped(lab)


def _scraped(lab):
    topo = standard(lab, wireguard=True)
    i, r = topo.host(1), topo.host(2)
    for h in (i, r):
        topo.hub_wg.wait_handshake(h.wg.public_key)
    hub = WgmuxHub(topo, extra_config='MetricsListen = "127.0.0.1:9586"')
    hub.pair(i, r, PORT)
    hub.start()
    work = Path(tempfile.mkdtemp(prefix="wgmux-prometheus-"))
    (work / "prometheus.yml").write_text(CONFIG)
    prom = topo.hub.popen([PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
                           f"--storage.tsdb.path={work / 'data'}",
                           "--web.listen-address=127.0.0.1:9090", "--log.level=warn"],
                          stdout=open(work / "prometheus.log", "w"), stderr=open(work / "prometheus.err", "w"))

    def query(expr):
        out = topo.hub.run([sys.executable, "-c", QUERY, expr], check=False)
        if out.returncode != 0:
            return None
        answer = json.loads(out.stdout)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    wait_for(lambda: query('up{job="wgmux"}'), timeout=30, what="prometheus's first scrape")
    wait_for(lambda: ping(i.node, r.overlay_ip), timeout=30, what="a ping through the hub")
    # ~12 s of traffic, both ways (30 s for the picture)
    ping(i.node, r.overlay_ip, count=150 if PNG else 60, interval=0.2)
    time.sleep(2)
    yield query, hub
    prom.terminate()
    prom.wait(timeout=10)
    hub.stop()


def test_every_panel_query_returns_series(scraped):
    query, _ = scraped
    empty = []
    for title, legend, expr in dashboard_queries():
        result = query(grafana(expr))
        assert result is not None, (title, expr)
        if not result:
            empty.append(f"{title}: {legend}: {grafana(expr)}")
    assert not empty, "\n".join(empty)


def values(result, label=None):
    return {(r["metric"].get(label) if label else None): float(r["value"][1]) for r in result}


def test_the_values_follow_the_traffic(scraped):
    query, _ = scraped
    q = {(title, legend): grafana(expr) for title, legend, expr in dashboard_queries()}
    assert values(query(q[("Daemon up", "{{instance}}")])) == {None: 1.0}
    sessions = values(query(q[("Sessions", "{{state}}")]), "state")
    assert sessions["established"] == 1 and sessions["half-open"] == 0, sessions
    assert values(query(q[("Half-open share", "half-open / all")])) == {None: 0.0}
    for title in ("Reflected packets per port", "Reflected bytes per port"):
        result = query(q[(title, "port {{port}} {{direction}}")])
        got = {(r["metric"]["port"], r["metric"]["direction"]): float(r["value"][1]) for r in result}
        # ping -i 0.2: ~5 packets/s each way through the port
        assert set(got) == {(str(PORT), "i2r"), (str(PORT), "r2i")}, got
        assert all(v > 0 for v in got.values()), (title, got)
    pps = values(query(q[("Reflected packets per port", "port {{port}} {{direction}}")].replace(
        "sum by (port, direction)", "sum")))
    assert 4 <= pps[None] <= 20, pps
    verdicts = values(query(q[("Datapath verdicts", "{{verdict}}")]), "verdict")
    assert verdicts["reflect"] > 0, verdicts
    datapath = query(q[("Datapath", "{{mode}} (setting {{setting}})")])
    assert [r["metric"]["mode"] for r in datapath] == ["tc"]          # a veth: TC alone
    assert values(query(q[("Restarts (range)", "{{instance}}")])) == {None: 0.0}
    assert values(query(q[("Responders", "{{state}}")]), "state") == {"known": 1.0, "unknown": 0.0}
    uptime = values(query(q[("Uptime", "{{instance}}")]))[None]
    assert 5 < uptime < 300, uptime


# -- docs/dashboard.png (make dashboard-png) ----------------------------------
PNG = os.environ.get("WGMUX_DASHBOARD_PNG")
RANGE = ("import sys, json, urllib.request, urllib.parse; "
         "u = 'http://127.0.0.1:9090/api/v1/query_range?' + urllib.parse.urlencode("
         "{'query': sys.argv[1], 'start': sys.argv[2], 'end': sys.argv[3], 'step': '1'}); "
         "print(urllib.request.urlopen(u, timeout=10).read().decode())")


def _legend(fmt: str, metric: dict) -> str:
    return re.sub(r"\{\{(\w+)\}\}", lambda m: metric.get(m.group(1), ""), fmt)


@pytest.mark.skipif(not PNG, reason="make dashboard-png draws it (WGMUX_DASHBOARD_PNG)")
def test_draw_the_dashboard(scraped):
    """The dashboard's panels, each query over the run, drawn with
    matplotlib the way Grafana lays them out (Grafana is no Debian package)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    query, hub = scraped
    topo = hub.topo
    end = time.time()
    start = end - 45
    dash = json.loads(DASHBOARD.read_text())
    fig = plt.figure(figsize=(16, 13), facecolor="#111217")
    grid = fig.add_gridspec(36, 24, hspace=0.2, wspace=0.5)
    for panel in dash["panels"]:
        g = panel["gridPos"]
        ax = fig.add_subplot(grid[g["y"] + 1:g["y"] + g["h"], g["x"]:g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#ccccdc", labelsize=7)
        ax.set_title(panel["title"], color="#ccccdc", fontsize=9, loc="left")
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        stats, quiet = [], 0
        for target in panel["targets"]:
            out = topo.hub.run([sys.executable, "-c", RANGE, grafana(target["expr"]),
                                str(start), str(end)])
            for series in json.loads(out.stdout)["data"]["result"]:
                xs = [float(t) - end for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = _legend(target["legendFormat"], series["metric"])
                if panel["type"] == "stat":
                    value = f"{ys[-1]:.0f}" + (" s" if unit == "s" else "")
                    stats.append(label if "mode" in series["metric"] else
                                 value if label in ("", "{{instance}}") or "instance" in
                                 target["legendFormat"] else f"{label} {value}")
                elif any(ys):
                    ax.plot(xs, ys, label=label, linewidth=1.2)
                else:
                    ax.plot(xs, ys, color="#56a64b", linewidth=0.8)
                    quiet += 1
        if panel["type"] == "stat":
            ax.text(0.5, 0.45, " / ".join(stats), color="#73bf69",
                    fontsize=18 if len(stats) == 1 else 13, ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_ylabel(unit, color="#ccccdc", fontsize=7)
            if quiet:
                ax.plot([], [], color="#56a64b", label=f"{quiet} series at 0")
            ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", labelcolor="#ccccdc",
                      edgecolor="#2c3235")
    fig.suptitle("wgmux (packaging/grafana/wgmux.json): a netlab hub, ping through one "
                 "responder port, Prometheus 2.42 from Debian; seconds before now",
                 color="#ccccdc", fontsize=10)
    fig.savefig(PNG, dpi=80, facecolor=fig.get_facecolor())
    assert Path(PNG).stat().st_size > 10_000
