"""The mac1 slow path end to end: real WireGuard peers behind NATs, the real
daemon on the hub (docs/spec.md §9).

- A peer port reflects only initiations whose mac1 is valid for its
  responder: random bytes, and initiations whose mac1 is for another key,
  sent from an outside host reach nobody (captures on the responder's
  router WAN and host) and are counted; a valid one, from the same host in
  the same capture, does reach the responder, and the real pair works.
- A flood of initiations from one source is shed in the kernel (counted)
  and the real pair's handshake still goes through.
- Responder-initiated handshake: before the hub has learned the initiator's
  identity, R's initiation to I (arriving on HubPort) reaches nobody but
  the hub's stack; after one I -> R handshake, with both peers' session
  state dropped and R's endpoint for I = hub:HubPort, R pings I first and
  it works.  The hub's own handshakes with both keep working meanwhile.
- Both sides configured as initiator (each has the other's Endpoint =
  hub:port-of-the-other): handshakes started by either side work, and once
  both have been seen `wgmux show` and the log say what is configured.
- slow: the same responder-initiated handshake after really idling past
  WireGuard's 180 s session lifetime.
"""

import secrets
import sys
import time

import pytest

from netlab import wait_for
from netlab.capture import Capture
from netlab.nat import NatKind
from netlab.topology import standard
from netlab.traffic import ping
from wgmux import mac1, wire
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab

PORT = 51821
PORT_B = 51822

_SEND = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         "a=(sys.argv[1], int(sys.argv[2])); n=int(sys.argv[3]); "
         "[s.sendto(bytes.fromhex(h), a) for _ in range(n) for h in sys.argv[4:]]")


def send(node, ip: str, port: int, *payloads: bytes, repeat: int = 1):
    node.run([sys.executable, "-c", _SEND, ip, str(port), str(repeat),
              *(p.hex() for p in payloads)])


def counters(hub) -> dict:
    return hub.show()["counters"]


def wait_counter(hub, name: str, at_least: int, timeout: float = 10):
    return wait_for(lambda: counters(hub)[name] >= at_least, timeout=timeout,
                    what=f"counter {name} >= {at_least}")


def initiation(sender: int, mac1_for=None) -> bytes:
    m = wire.build_initiation(sender, ephemeral=secrets.token_bytes(32),
                              static=secrets.token_bytes(48), timestamp=secrets.token_bytes(28),
                              mac1=secrets.token_bytes(16))
    return mac1.with_mac1(m, mac1.mac1_key(mac1_for)) if mac1_for else m


def make_topo(lab, kinds=(NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED)):
    topo = standard(lab, list(kinds), wireguard=True, tx_checksum=False)
    a, b = topo.host(1), topo.host(2)
    for host in (a, b):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    return topo, a, b


def reset_peer(host, other, endpoint=None):
    """Forget everything `host` knows about `other` (sessions, handshake
    state, roamed endpoint) and configure it again, as if WireGuard had
    just started: `endpoint` as the configured Endpoint, or none."""
    host.wg.remove_peer(other.wg.public_key)
    host.wg.set_peer(other.wg.public_key, endpoint=endpoint,
                     allowed_ips=[f"{other.overlay_ip}/32"])


def reset_hub_peer(topo, host):
    """`host` forgets its session with the hub: its persistent keepalive
    makes it start a new handshake with the hub's own WireGuard at once."""
    host.wg.remove_peer(topo.hub_wg.public_key)
    host.wg.set_peer(topo.hub_wg.public_key, endpoint=f"{topo.hub_ip}:{topo.hub_port}",
                     allowed_ips=["10.99.0.1/32"], keepalive=1)


def hub_handshakes_advance(topo, hosts):
    """Recreate each host's hub peer and wait until the hub's own device
    records a newer handshake with it: the hub's own WireGuard still gets
    its initiations (and the slow path passes them)."""
    before = {h.name: topo.hub_wg.peer(h.wg.public_key).latest_handshake for h in hosts}
    time.sleep(1.1)             # handshake times have a resolution of 1 s
    for h in hosts:
        reset_hub_peer(topo, h)
    for h in hosts:
        topo.hub_wg.wait_handshake(h.wg.public_key, after=before[h.name], timeout=20)
        assert ping(h.node, "10.99.0.1")


# ---- the hub is no open reflector ------------------------------------------------

def test_peer_port_reflects_only_valid_mac1(lab):
    topo, initiator, responder = make_topo(lab)
    outsider = topo.add_internet_host("x", 100)
    hub = WgmuxHub(topo)
    hub.pair(initiator, responder, PORT)
    hub.start()
    r_key, i_key = responder.wg.public_key, initiator.wg.public_key

    garbage = {
        "random bytes": secrets.token_bytes(wire.WG_INITIATION_SIZE),
        "random bytes with the initiation type": b"\x01\0\0\0" + secrets.token_bytes(144),
        "mac1 for the initiator's own key": initiation(0x1001, mac1_for=i_key),
        "mac1 for the hub's key": initiation(0x1002, mac1_for=topo.hub_wg.public_key),
        "mac1 for a random key": initiation(0x1003, mac1_for=secrets.token_bytes(32)),
    }
    control = initiation(0x1004, mac1_for=r_key)     # valid for R: must get through
    before = counters(hub)
    r_site = responder.site.router
    with Capture(r_site, "wan", f"udp and src host {topo.hub_ip}") as wan, \
            Capture(responder.node, "eth0", "udp") as host_wire:
        send(outsider, topo.hub_ip, PORT, *garbage.values())
        wait_counter(hub, "sp_drop_mac1", before["sp_drop_mac1"] + 4)
        send(outsider, topo.hub_ip, PORT, control)
        # the control shows the captures see what the hub reflects to R
        wan.wait_for(lambda p: p.payload == control, what="the valid initiation")
        host_wire.wait_for(lambda p: p.payload == control, what="the valid initiation")
        time.sleep(0.5)
    for cap in (wan, host_wire):
        for what, payload in garbage.items():
            assert not [p for p in cap.packets if p.payload == payload], \
                f"{what} sent to hub:{PORT} reached the responder ({cap.node.name}:{cap.ifname})"
    after = counters(hub)
    delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert delta.get("drop_unclassified", 0) >= 1, delta          # random bytes: no initiation
    assert delta.get("sp_drop_mac1") == 4, delta
    assert delta.get("sp_reflect_initiation") == 1, delta         # the control
    assert "sp_reflect_hub_initiation" not in delta, delta
    assert not [s for s in hub.show()["sessions"] if s["initiator_index"] in (0x1001, 0x1002,
                                                                            0x1003)]

    # and the real pair works
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="a ping through the hub")
    assert ping(responder.node, initiator.overlay_ip, count=2)


@pytest.mark.parametrize("limit", ["default", "off"])
def test_flood_is_shed_and_the_pair_still_works(lab, limit):
    """The default HandshakeRate sheds a flood in the kernel; with
    `HandshakeRate = 0` (no limit) nothing is shed for rate: it all reaches
    the daemon (or a full ring), which judges every message it gets."""
    topo, initiator, responder = make_topo(lab)
    outsider = topo.add_internet_host("x", 100)
    hub = WgmuxHub(topo, extra_config="HandshakeRate = 0" if limit == "off" else "")
    hub.pair(initiator, responder, PORT)
    hub.start()
    assert hub.show()["slow_path"]["rate"] == (0 if limit == "off" else 250)
    flood = [initiation(i, mac1_for=secrets.token_bytes(32)) for i in range(50)]
    before = counters(hub)
    send(outsider, topo.hub_ip, PORT, *flood, repeat=60)          # 3000 initiations
    sent = len(flood) * 60

    def all_counted():
        c = counters(hub)
        n = sum(c[k] - before[k] for k in ("slow_initiation", "drop_rate_limited",
                                           "drop_slow_full", "slow_under_load",
                                           "drop_under_load"))
        return c if n == sent else None

    c = wait_for(all_counted, timeout=10, what="every flood packet counted")
    shed = c["drop_rate_limited"] - before["drop_rate_limited"]
    queued = sum(c[k] - before[k] for k in ("slow_initiation", "slow_under_load"))
    if limit == "off":
        assert shed == 0 and queued > 0, (shed, queued)
    else:
        assert shed > sent / 2, (shed, queued)
    # past the port's initiation budget (InitiationRate) the port is under
    # load: one cookie request per source and second, the rest shed
    assert c["ev_port_over_budget"] > before["ev_port_over_budget"]
    assert c["drop_under_load"] > before["drop_under_load"]
    # what reached the daemon is all judged, and none of it is reflected
    wait_for(lambda: counters(hub)["sp_drop_mac1"] - before["sp_drop_mac1"] == queued,
             timeout=10, what="the slow path to judge every queued initiation")
    assert counters(hub)["sp_reflect_initiation"] == before["sp_reflect_initiation"]
    # the flood's source is limited, the initiator is not
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="a ping through the hub after the flood")
    assert "slow path" in hub.show_text()


# ---- responder-initiated handshakes ------------------------------------------------

def test_responder_initiated_handshake(lab):
    topo, initiator, responder = make_topo(lab, (NatKind.SYMMETRIC, NatKind.PORT_RESTRICTED))
    hub = WgmuxHub(topo)
    hub.pair(initiator, responder, PORT)
    hub_ep = f"{topo.hub_ip}:{topo.hub_port}"
    i_key = initiator.wg.public_key
    hub.start()

    # Negative: the hub has never seen a handshake I -> R, so it does not
    # know I.  R's initiation for I, sent to hub:HubPort, goes to the
    # hub's own WireGuard only (which drops it: its mac1 is not the hub's).
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
    assert learned[0]["endpoint"].startswith(initiator.site.public_ip + ":")

    # Both peers drop their session state.  R's endpoint for I is
    # hub:HubPort (where it had roamed it), I's for R is hub:PORT.
    reset_peer(responder, initiator, endpoint=hub_ep)
    reset_peer(initiator, responder, endpoint=f"{topo.hub_ip}:{PORT}")
    before = counters(hub)
    i_hs = initiator.wg.peer(responder.wg.public_key).latest_handshake
    wait_for(lambda: ping(responder.node, initiator.overlay_ip), timeout=20,
             what="R's first ping to I")
    assert initiator.wg.peer(responder.wg.public_key).latest_handshake > i_hs
    c = counters(hub)
    assert c["sp_reflect_hub_initiation"] > before["sp_reflect_hub_initiation"]
    assert c["sp_reflect_initiation"] == before["sp_reflect_initiation"], \
        "I initiated: this was not the responder-initiated path"
    assert ping(initiator.node, responder.overlay_ip, count=3)
    # the pair is listed under its port, both indices known
    wait_for(lambda: [s for s in hub.show()["sessions"]
                      if s["port"] == PORT and s["state"] == "established"],
             timeout=5, what="the established session in show")

    # the hub's own handshakes with both peers keep working (their
    # initiations to HubPort go through the slow path too, and pass)
    before = counters(hub)
    hub_handshakes_advance(topo, [initiator, responder])
    assert counters(hub)["sp_pass_hub"] > before["sp_pass_hub"]
    # and the pair is unaffected
    assert ping(responder.node, initiator.overlay_ip, count=2)


# ---- both sides configured as initiator ------------------------------------------------

def test_both_sides_configured_as_initiator(lab):
    topo, a, b = make_topo(lab)
    hub = WgmuxHub(topo)
    hub.pair(a, b, PORT_B)          # A: Endpoint = hub:PORT_B (B's port)
    hub.pair(b, a, PORT)            # B: Endpoint = hub:PORT (A's port)
    hub.start()
    ep_a, ep_b = f"{topo.hub_ip}:{PORT}", f"{topo.hub_ip}:{PORT_B}"

    # A starts: through B's port
    wait_for(lambda: ping(a.node, b.overlay_ip), timeout=20, what="a ping A -> B")
    assert ping(b.node, a.overlay_ip, count=2)
    st = hub.show()
    assert [(x["port"], x["public_key"]) for x in st["slow_path"]["initiators"]] == [
        (PORT_B, a.wg.public_key)]
    assert st["slow_path"]["warnings"] == []      # so far an ordinary pair
    assert "both configured as initiator" not in hub.show_text()

    # B starts (fresh state on both, each with its configured Endpoint):
    # through A's port
    reset_peer(a, b, endpoint=ep_b)
    reset_peer(b, a, endpoint=ep_a)
    before = counters(hub)
    wait_for(lambda: ping(b.node, a.overlay_ip), timeout=20, what="a ping B -> A")
    assert ping(a.node, b.overlay_ip, count=2)
    assert counters(hub)["sp_reflect_initiation"] > before["sp_reflect_initiation"]

    # now the hub has seen both directions and says so
    st = wait_for(lambda: (lambda s: s if s["slow_path"]["warnings"] else None)(hub.show()),
                  timeout=5, what="the both-initiator warning")
    (w,) = st["slow_path"]["warnings"]
    assert "both configured as initiator" in w and str(PORT) in w and str(PORT_B) in w
    assert "both configured as initiator" in hub.show_text()
    assert "both configured as initiator" in hub.log()

    # A starts again, through HubPort: its endpoint for B had roamed there
    reset_peer(a, b, endpoint=f"{topo.hub_ip}:{topo.hub_port}")
    reset_peer(b, a, endpoint=ep_a)
    before = counters(hub)
    wait_for(lambda: ping(a.node, b.overlay_ip), timeout=20, what="A -> B again")
    assert ping(b.node, a.overlay_ip, count=2)
    c = counters(hub)
    assert c["sp_reflect_hub_initiation"] > before["sp_reflect_hub_initiation"]


# ---- the real thing: idle past WireGuard's session lifetime --------------------------

@pytest.mark.slow
def test_responder_initiated_after_idling_past_session_expiry(lab):
    topo, initiator, responder = make_topo(lab)
    # I's NAT must keep I's mapping towards hub:PORT over the idle time (a
    # NAT with a long UDP timeout, as many are; Linux's default is 120 s):
    # it is the only way in for R's initiation.
    for key in ("net.netfilter.nf_conntrack_udp_timeout",
                "net.netfilter.nf_conntrack_udp_timeout_stream"):
        initiator.site.router.sysctl(key, 600)
    hub = WgmuxHub(topo)
    hub.pair(initiator, responder, PORT)
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="the first ping I -> R")
    assert ping(responder.node, initiator.overlay_ip)
    first = responder.wg.peer(initiator.wg.public_key).latest_handshake

    time.sleep(190)     # REJECT_AFTER_TIME (180 s): both sides' keys are dead

    before = counters(hub)
    wait_for(lambda: ping(responder.node, initiator.overlay_ip), timeout=20,
             what="R's ping to I after the session expired")
    assert responder.wg.peer(initiator.wg.public_key).latest_handshake > first
    c = counters(hub)
    assert c["sp_reflect_hub_initiation"] > before["sp_reflect_hub_initiation"]
    assert c["sp_reflect_initiation"] == before["sp_reflect_initiation"]
    assert ping(initiator.node, responder.overlay_ip, count=2)
