"""Metrics from a live hub: `wgmux show --metrics` and the MetricsListen endpoint."""

import sys

import pytest

from netlab import wait_for
from netlab.topology import standard
from netlab.traffic import ping
from wgmux.netlab_hub import WgmuxHub

pytestmark = pytest.mark.netlab

SCRAPE = ("import sys, urllib.request; "
          "r = urllib.request.urlopen(sys.argv[1], timeout=5); "
          "print(r.headers['Content-Type']); print(r.read().decode())")


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

    wait_for(lambda: ping(i.node, r.overlay_ip), timeout=20, what="ping through the hub")
    assert ping(i.node, r.overlay_ip, count=5)
    after = topo.hub.run([sys.executable, "-c", SCRAPE, url]).stdout
    assert value(after, 'wgmux_sessions{state="established"}') == 1
    assert value(after, 'wgmux_packets_total{verdict="reflect",reason="transport"}') >= 10
    assert value(after, 'wgmux_port_packets_total{port="51821",direction="i2r"}') >= 6

    printed = topo.hub.run(hub.cli("show", "--metrics", "-c", str(hub.config_path))).stdout
    assert value(printed, 'wgmux_sessions{state="established"}') == 1


def test_metrics_off_by_default(lab):
    topo = standard(lab, wireguard=True)
    hub = WgmuxHub(topo)
    hub.pair(topo.host(1), topo.host(2), 51821)
    hub.start()
    out = topo.hub.run([sys.executable, "-c", SCRAPE, "http://127.0.0.1:9586/metrics"],
                       check=False)
    assert out.returncode != 0 and "Connection refused" in out.stderr
