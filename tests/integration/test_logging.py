"""The daemon's log: one line per event that matters, drops summarised."""

import pytest

from netlab import wait_for
from netlab.topology import standard
from netlab.traffic import ping, send_udp
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab


def test_session_up_and_drop_summary(lab):
    topo = standard(lab, wireguard=True)
    i, r = topo.host(1), topo.host(2)
    for h in (i, r):
        topo.hub_wg.wait_handshake(h.wg.public_key)
    hub = WgmuxHub(topo)
    hub.pair(i, r, 51821)
    hub.start()
    assert "session up" not in hub.log()
    wait_for(lambda: ping(i.node, r.overlay_ip), timeout=20, what="ping through the hub")
    wait_for(lambda: "session up: port 51821, initiator 198.18.0.1:" in hub.log(), timeout=15,
             what="the session-up log line")
    for _ in range(3):
        send_udp(i.node, topo.hub_ip, 51821, "not wireguard")
    wait_for(lambda: hub.show()["counters"]["drop_unclassified"] == 3, timeout=5,
             what="three junk datagrams counted")
    assert hub.stop() == 0
    log = hub.log()
    summaries = [line for line in log.splitlines() if "dropped since the last summary" in line]
    assert len(summaries) == 1, log
    assert "drop_unclassified=3" in summaries[0]
