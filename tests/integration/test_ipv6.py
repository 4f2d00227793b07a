"""IPv6 end to end: what the IPv4 suite shows for the handshake slow path,
with both peers on IPv6-only sites reaching the dual-stack hub over IPv6
(the reflect, roaming and restart tests have their `*_ipv6` twins in
test_reflect.py, test_roaming.py and test_restart.py).

- Responder-initiated handshake (test_slowpath's, over IPv6): before the
  hub has learned the initiator's identity, R's initiation for I (sent to
  [hub]:HubPort) reaches nobody but the hub's stack; after one I -> R
  handshake, with both peers' session state dropped and R's endpoint for I
  = [hub]:HubPort, R pings I first and it works; the hub's own handshakes
  with both keep working.  The initiator is behind NAT66_SYMMETRIC, the
  responder behind the stateful firewall.
- A dual-stack site's peer reaches the hub over IPv6 (its preferred
  family) while the other peer is IPv6-only: the pair is reflected, and
  the IPv4 path of the dual-stack site is not what carries it.
"""

import time

import pytest

from netlab import wait_for
from netlab.capture import Capture
from netlab.nat import NatKind, Router6Kind
from netlab.topology import standard
from netlab.traffic import ping, tcp_transfer
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab

PORT = 51821
MB = 1 << 20


def counters(hub) -> dict:
    return hub.show()["counters"]


def wait_counter(hub, name: str, at_least: int, timeout: float = 10):
    return wait_for(lambda: counters(hub)[name] >= at_least, timeout=timeout,
                    what=f"counter {name} >= {at_least}")


def make_topo(lab, kinds6, families="v6"):
    topo = standard(lab, [NatKind.PORT_RESTRICTED] * 2, wireguard=True, tx_checksum=False,
                    families=families, kinds6=kinds6)
    a, b = topo.host(1), topo.host(2)
    for host in (a, b):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    return topo, a, b


def reset_peer(host, other, endpoint=None):
    """Forget everything `host` knows about `other` and configure it again
    (test_slowpath.reset_peer)."""
    host.wg.remove_peer(other.wg.public_key)
    host.wg.set_peer(other.wg.public_key, endpoint=endpoint,
                     allowed_ips=[f"{other.overlay_ip}/32"])


def hub_handshakes_advance(topo, hosts):
    """Each host forgets its session with the hub; the hub's own device
    records a newer handshake with it (over IPv6) and pings work."""
    before = {h.name: topo.hub_wg.peer(h.wg.public_key).latest_handshake for h in hosts}
    time.sleep(1.1)             # handshake times have a resolution of 1 s
    for h in hosts:
        h.wg.remove_peer(topo.hub_wg.public_key)
        h.wg.set_peer(topo.hub_wg.public_key, endpoint=topo.hub_endpoint(h),
                      allowed_ips=["10.99.0.1/32"], keepalive=1)
    for h in hosts:
        state = topo.hub_wg.wait_handshake(h.wg.public_key, after=before[h.name], timeout=20)
        assert state.endpoint.startswith(f"[{h.public_ip}]:"), state
        assert ping(h.node, "10.99.0.1")


def test_responder_initiated_handshake_ipv6(lab):
    topo, initiator, responder = make_topo(
        lab, [Router6Kind.NAT66_SYMMETRIC, Router6Kind.FIREWALL])
    hub = WgmuxHub(topo)
    hub.pair(initiator, responder, PORT)
    hub_ep = topo.hub_endpoint(responder)
    assert hub_ep == f"[{topo.hub_ip6}]:{topo.hub_port}"
    i_key = initiator.wg.public_key
    hub.start()

    # Negative: the hub has never seen a handshake I -> R, so it does not
    # know I; R's initiation for I goes to the hub's own WireGuard only.
    reset_peer(responder, initiator, endpoint=hub_ep)
    before = counters(hub)
    with Capture(initiator.node, "eth0", f"udp and src port {PORT}") as i_wire:
        assert not ping(responder.node, initiator.overlay_ip, count=3, timeout=1)
        wait_counter(hub, "sp_pass_hub", before["sp_pass_hub"] + 1)
    assert not i_wire.packets, "R's initiation reached I without the hub knowing I"
    c = counters(hub)
    assert c["sp_reflect_hub_initiation"] == before["sp_reflect_hub_initiation"]
    assert c["slow_hub_initiation"] > before["slow_hub_initiation"]
    assert hub.show()["slow_path"]["initiators"] == []

    # I -> R once: the response R sends back teaches the hub I's identity
    reset_peer(responder, initiator)
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="the first ping I -> R")
    learned = wait_for(lambda: hub.show()["slow_path"]["initiators"], timeout=5,
                       what="the hub to learn I")
    assert [(x["port"], x["public_key"]) for x in learned] == [(PORT, i_key)]
    assert learned[0]["endpoint"].startswith(f"[{initiator.public_ip}]:"), learned

    # Both drop their session state; R's endpoint for I is [hub]:HubPort.
    reset_peer(responder, initiator, endpoint=hub_ep)
    reset_peer(initiator, responder, endpoint=topo.hub_endpoint(initiator, PORT))
    before = counters(hub)
    i_hs = initiator.wg.peer(responder.wg.public_key).latest_handshake
    with Capture(topo.hub, "eth0", f"udp and dst port {topo.hub_port}") as hub_wire:
        wait_for(lambda: ping(responder.node, initiator.overlay_ip), timeout=20,
                 what="R's first ping to I")
    assert initiator.wg.peer(responder.wg.public_key).latest_handshake > i_hs
    c = counters(hub)
    assert c["sp_reflect_hub_initiation"] > before["sp_reflect_hub_initiation"]
    assert c["sp_reflect_initiation"] == before["sp_reflect_initiation"], \
        "I initiated: this was not the responder-initiated path"
    # R's initiation came to the hub over IPv6, from R's own address
    # (the firewall does not translate)
    assert [p for p in hub_wire.packets if p.version == 6 and p.src == responder.public_ip
            and len(p.payload) == 148 and p.payload[0] == 1], (hub_wire.packets, hub_wire._stderr)
    assert not [p for p in hub_wire.packets if p.version == 4]
    assert ping(initiator.node, responder.overlay_ip, count=3)
    wait_for(lambda: [s for s in hub.show()["sessions"]
                      if s["port"] == PORT and s["state"] == "established"],
             timeout=5, what="the established session in show")

    before = counters(hub)
    hub_handshakes_advance(topo, [initiator, responder])
    assert counters(hub)["sp_pass_hub"] > before["sp_pass_hub"]
    assert ping(responder.node, initiator.overlay_ip, count=2)


@pytest.mark.parametrize("with_wgmux", [True, False], ids=["wgmux", "without-wgmux"])
def test_dual_stack_peer_uses_ipv6(lab, with_wgmux):
    """Site 1 dual-stack (IPv4 NAT and an IPv6 firewall; its peer prefers
    IPv6), site 2 IPv6-only behind NAT66: the pair goes through the hub
    over IPv6 and carries 10 MB intact; without wgmux nothing does."""
    topo, initiator, responder = make_topo(
        lab, [Router6Kind.FIREWALL, Router6Kind.NAT66], families=["dual", "v6"])
    assert initiator.site.families == ("v4", "v6") and initiator.family == "v6"
    assert initiator.lan_ip and initiator.lan_ip6
    hub = WgmuxHub(topo)
    hub.pair(initiator, responder, PORT)
    assert initiator.wg.peer(responder.wg.public_key).endpoint == f"[{topo.hub_ip6}]:{PORT}"
    if not with_wgmux:
        with pytest.raises(TimeoutError):
            wait_for(lambda: ping(initiator.node, responder.overlay_ip, timeout=1),
                     timeout=6, what="a ping that must not get through")
        assert initiator.wg.peer(responder.wg.public_key).latest_handshake == 0
        return
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="first ping through the hub")
    assert ping(responder.node, initiator.overlay_ip, count=3)
    with Capture(topo.hub, "eth0", f"udp port {PORT}") as cap:
        result = tcp_transfer(initiator.node, responder.node, responder.overlay_ip, 10 * MB,
                              port=5001)
    assert result.ok, result
    assert cap.packets and all(p.version == 6 for p in cap.packets), \
        {p.version for p in cap.packets}
    (s,) = [x for x in hub.show()["sessions"] if x["port"] == PORT]
    assert s["initiator"].startswith(f"[{initiator.lan_ip6}]:"), s
    assert s["responder"].startswith(f"[{responder.site.public_ip6}]:"), s
