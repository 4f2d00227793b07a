"""Metrics from a live hub: `wgmux show --metrics` and the MetricsListen endpoint."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest

from netlab import wait_for
from netlab.topology import standard
from netlab.traffic import ping
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab

SCRAPE = ("import sys, urllib.request; "
          "r = urllib.request.urlopen(sys.argv[1], timeout=5); "
          "print(r.headers['Content-Type']); print(r.read().decode())")


def _unit():
    """tests/unit/test_metrics.py: its exposition parser and its JSON -> sample contract."""
    path = Path(__file__).resolve().parents[1] / "unit" / "test_metrics.py"
    spec = importlib.util.spec_from_file_location("wgmux_unit_test_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process_start(pid: int) -> float:
    """Wall-clock start of a process, in seconds since the epoch, from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[19])                       # field 22, starttime, since boot
    btime = next(int(line.split()[1]) for line in open("/proc/stat")
                 if line.startswith("btime "))
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def value(text, sample):
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in metrics")


def test_metrics_follow_traffic(lab):
    topo = standard(lab, wireguard=True)
    i, r = topo.host(1), topo.host(2)
    for h in (i, r):
        topo.hub_wg.wait_handshake(h.wg.public_key)
    hub = WgmuxHub(topo, extra_config='MetricsListen = "127.0.0.1:9586"')
    hub.pair(i, r, 51821)
    hub.start()
    url = "http://127.0.0.1:9586/metrics"

    before = topo.hub.run([sys.executable, "-c", SCRAPE, url]).stdout
    assert before.startswith("text/plain; version=0.0.4")
    assert value(before, 'wgmux_sessions{state="established"}') == 0
    assert value(before, 'wgmux_responders{state="known"}') == 1
    # the default on a veth: TC ingress alone (docs/spec.md §4a)
    assert value(before, 'wgmux_datapath_info{mode="tc",setting="auto"}') == 1

    wait_for(lambda: ping(i.node, r.overlay_ip), timeout=20, what="ping through the hub")
    assert ping(i.node, r.overlay_ip, count=5)
    after = topo.hub.run([sys.executable, "-c", SCRAPE, url]).stdout
    assert value(after, 'wgmux_sessions{state="established"}') == 1
    assert value(after, 'wgmux_packets_total{verdict="reflect",reason="transport"}') >= 10
    assert value(after, 'wgmux_port_packets_total{port="51821",direction="i2r"}') >= 6

    printed = topo.hub.run(hub.cli("show", "--metrics", "-c", str(hub.config_path))).stdout
    assert value(printed, 'wgmux_sessions{state="established"}') == 1

    # every sample of both outlets equals the JSON it comes from: between two
    # identical `show --json` (nothing moved), exactly
    unit = _unit()

    def status():
        return json.loads(topo.hub.run(hub.cli("show", "--json", "-c",
                                               str(hub.config_path))).stdout)

    for outlet in ("MetricsListen", "show --metrics"):
        for _ in range(20):
            st = status()
            text = (topo.hub.run([sys.executable, "-c", SCRAPE, url]).stdout.split("\n", 1)[1]
                    if outlet == "MetricsListen" else
                    topo.hub.run(hub.cli("show", "--metrics", "-c", str(hub.config_path))).stdout)
            want = unit.expected_samples(st)
            if unit.expected_samples(status()) == want:
                break
            time.sleep(0.5)           # a keepalive moved a counter: again
        else:
            raise AssertionError(f"{outlet}: the status never held still for a scrape")
        got = unit.parse(text)
        assert set(got) == set(want), (outlet, set(got) ^ set(want))
        for key, expected in want.items():
            assert type(got[key]) is type(expected) and got[key] == expected, \
                (outlet, key, got[key], expected)
        assert got[("wgmux_start_time_seconds", frozenset())] == st["started"]
        # the real start: when the daemon's process began (its /proc start
        # time), give or take its imports
        assert abs(st["started"] - process_start(st["pid"])) < 5, st["started"]


def test_metrics_off_by_default(lab):
    topo = standard(lab, wireguard=True)
    hub = WgmuxHub(topo)
    hub.pair(topo.host(1), topo.host(2), 51821)
    hub.start()
    out = topo.hub.run([sys.executable, "-c", SCRAPE, "http://127.0.0.1:9586/metrics"],
                       check=False)
    assert out.returncode != 0 and "Connection refused" in out.stderr
