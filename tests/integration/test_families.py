"""Between IPv4 and IPv6 end to end (docs/spec.md §4b): an initiator that
only has IPv4 and a responder that only has IPv6 (and the reverse) pair
through one dual-stack hub.

Site 1 (the initiator) and site 2 (the responder) each have one family
only; the v4 site is behind a port-restricted NAT, the v6 site behind a
stateful firewall that only lets replies in (netlab.nat.Router6Kind).  The
responder talks to the hub's own WireGuard over its family; the initiator
points the responder's Endpoint at hub:port over its own.  For both
pairings, with the datapath at TC alone and with XDP in front (which
passes every packet that changes family to TC, §4a):
- without wgmux the handshake through hub:port does not complete;
- with wgmux it does; ping both ways; 10 MB each way over TCP, checksums
  match, and the hub's own WireGuard does not carry that volume;
- every packet of the pair changed family at the hub (ev_translated_*
  grow by at least the transfer's packets, both ways), and `show` says
  each side's family.
"""

import pytest

from netlab import wait_for
from netlab.nat import NatKind, Router6Kind
from netlab.topology import standard
from netlab.traffic import ping
from harness.hub import WgmuxHub, handshake_fails, translated_session, transfers_past_the_hub

pytestmark = pytest.mark.netlab

PORT = 51821
MB = 1 << 20
# the largest packet of a 10 MB TCP transfer over a 1420-MTU tunnel: 1,480
# bytes as IPv4; the transfer takes at least this many one way
PACKETS_10MB = 10 * MB // 1420


@pytest.fixture(params=[("v4", "v6"), ("v6", "v4")], ids=["v4-to-v6", "v6-to-v4"])
def families(request):
    return request.param


@pytest.fixture(params=["tc", "xdp"])
def mode(request):
    return request.param


def make_pair(lab, families, mode="tc"):
    topo = standard(lab, [NatKind.PORT_RESTRICTED] * 2, wireguard=True, tx_checksum=False,
                    families=families, kinds6=Router6Kind.FIREWALL)
    initiator, responder = topo.host(1), topo.host(2)
    assert (initiator.family, responder.family) == tuple(families)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    if mode == "xdp":
        topo.inet.take_xdp_frames("hub")      # the hub's veth peer takes XDP_TX (netlab.xdp)
    hub = WgmuxHub(topo, extra_config=f'Datapath = "{mode}"')
    hub.pair(initiator, responder, PORT)
    return topo, hub, initiator, responder


def test_without_wgmux_the_handshake_fails(lab, families):
    topo, hub, initiator, responder = make_pair(lab, families)
    handshake_fails(topo, initiator, responder, PORT)


def test_pairs_across_families(lab, families, mode):
    topo, hub, initiator, responder = make_pair(lab, families, mode)
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="first ping through the hub, across families")
    assert ping(responder.node, initiator.overlay_ip, count=3)
    assert ping(initiator.node, responder.overlay_ip, count=3)

    before = hub.show()["counters"]
    forward, back = transfers_past_the_hub(topo, initiator, responder, 10 * MB)

    s = translated_session(before, hub.show(), families, PORT, PACKETS_10MB)
    assert s["i2r_bytes"] > 10 * MB and s["r2i_bytes"] > 10 * MB, s
    said = {"v4": "IPv4", "v6": "IPv6"}
    assert f"(established, {said[families[0]]} -> {said[families[1]]})" in hub.show_text()
    print(f"\n{families[0]}->{families[1]} {mode}: 10 MB forward {forward.seconds:.2f} s "
          f"({10 * 8 / forward.seconds:.0f} Mbit/s), back {back.seconds:.2f} s "
          f"({10 * 8 / back.seconds:.0f} Mbit/s)")


def test_what_no_longer_fits_is_counted_not_sent_broken(lab):
    """An IPv4 peer with a tunnel MTU above WireGuard's 1420 sends packets
    that fit its IPv4 path but not the IPv6 one after the hub (20 bytes
    more): the hub drops them, counted (drop_too_big), and a smaller one
    goes through (docs/spec.md §4b).  (With MTU 1440 WireGuard pads a
    1420-byte packet to 1424: the limit is below 1420 then.)"""
    topo, hub, initiator, responder = make_pair(lab, ("v4", "v6"))
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="first ping through the hub, across families")
    initiator.node.run(["ip", "link", "set", initiator.wg.name, "mtu", "1440"])
    fits = ["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1300",
            responder.overlay_ip]
    too_big = fits[:-2] + [str(1440 - 28), responder.overlay_ip]
    assert initiator.node.run(fits, check=False).returncode == 0
    before = hub.show()["counters"]["drop_too_big"]
    assert initiator.node.run(too_big, check=False).returncode != 0
    wait_for(lambda: hub.show()["counters"]["drop_too_big"] > before, timeout=5,
             what="drop_too_big counted")


def reset_peer(host, other, endpoint=None):
    """Forget everything `host` knows about `other` and configure it again."""
    host.wg.remove_peer(other.wg.public_key)
    host.wg.set_peer(other.wg.public_key, endpoint=endpoint,
                     allowed_ips=[f"{other.overlay_ip}/32"])


def test_responder_initiated_across_families(lab, families):
    """R starts the handshake through HubPort (docs/spec.md §9) to an
    initiator of the other family: the slow path re-sends it from the hub
    address I talks to (the session's via, §4b), and the pair works."""
    topo, hub, initiator, responder = make_pair(lab, families)
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="the first ping I -> R")
    wait_for(lambda: hub.show()["slow_path"]["initiators"], timeout=5,
             what="the hub to learn I")
    # Both drop their session state; R's endpoint for I is hub:HubPort over
    # R's family, I's for R is hub:PORT over I's.
    reset_peer(responder, initiator, endpoint=topo.hub_endpoint(responder))
    reset_peer(initiator, responder, endpoint=topo.hub_endpoint(initiator, PORT))
    before = hub.show()["counters"]
    i_hs = initiator.wg.peer(responder.wg.public_key).latest_handshake
    wait_for(lambda: ping(responder.node, initiator.overlay_ip), timeout=20,
             what="R's first ping to I, across families")
    assert initiator.wg.peer(responder.wg.public_key).latest_handshake > i_hs
    c = hub.show()["counters"]
    assert c["sp_reflect_hub_initiation"] > before["sp_reflect_hub_initiation"], c
    assert c["sp_reflect_initiation"] == before["sp_reflect_initiation"], \
        "I initiated: this was not the responder-initiated path"
    assert c["sp_drop_unreflectable"] == 0, c
    assert ping(initiator.node, responder.overlay_ip, count=3)
