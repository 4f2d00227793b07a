"""`wgmux show` for a big table (docs/spec.md §11): `--summary` counts the
sessions instead of listing them, `--port` / `--peer` read one responder's
only; against a real `wgmux serve` with a live pair on one port and a second
responder with none."""

import json

import pytest

from netlab import wait_for
from netlab.traffic import ping
from harness.hub import serving_pair

pytestmark = pytest.mark.netlab

PORT = 51821
OTHER = 51822
OTHER_KEY = "YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI="


def show(topo, hub, *args, check=True):
    return topo.hub.run(hub.cli("show", "-c", str(hub.config_path), *args), check=check)


def test_show_summary_port_and_peer(lab):
    topo, hub, initiator, responder = serving_pair(lab, port=PORT)
    text = hub.config_text() + f'[[Peer]]\nPort = {OTHER}\nPublicKey = "{OTHER_KEY}"\n'
    hub.config_path.write_text(text)
    hub.reload()
    wait_for(lambda: len(hub.show()["peers"]) == 2, timeout=10, what="the second responder")
    assert ping(responder.node, initiator.overlay_ip, count=2)
    wait_for(lambda: [s for s in hub.show()["sessions"] if s["state"] == "established"],
             timeout=10, what="the established pair")

    full = hub.show()
    summary = json.loads(show(topo, hub, "--summary", "--json").stdout)
    assert "sessions" not in summary
    s = summary["sessions_summary"]
    assert (s["established"], s["half_open"]) == (1, 0), s
    assert s["entries"] >= 2 and summary["max_sessions"] == 65536
    assert list(s["by_port"]) == [str(PORT)]
    (pair,) = full["sessions"]
    port_sums = s["by_port"][str(PORT)]
    assert port_sums["i2r_packets"] >= pair["i2r_packets"] > 0
    text = show(topo, hub, "--summary").stdout
    assert "sessions: 1 established" in text and f"port {PORT}: 1 established" in text, text

    # one port: its responder and its sessions only
    mine = json.loads(show(topo, hub, "--port", str(PORT), "--json").stdout)
    assert [p["port"] for p in mine["peers"]] == [PORT]
    assert [x["port"] for x in mine["sessions"]] == [PORT]
    other = json.loads(show(topo, hub, "--port", str(OTHER), "--json").stdout)
    assert [p["port"] for p in other["peers"]] == [OTHER] and other["sessions"] == []
    by_key = json.loads(show(topo, hub, "--peer", responder.wg.public_key, "--json").stdout)
    assert [x["port"] for x in by_key["sessions"]] == [PORT]

    # the negative: a key no [[Peer]] has is named, nothing is asked
    bad = show(topo, hub, "--peer", initiator.wg.public_key, check=False)
    assert bad.returncode == 2 and "not the PublicKey of any [[Peer]]" in bad.stderr, bad
