"""Roaming / NAT rebinding of either side in the middle of a transfer.

A side moves in one of two ways while a paced TCP transfer and numbered UDP
flows run through the hub:
- `nat-flush`: its site is a SYMMETRIC NAT and its conntrack table is
  flushed: its next packet leaves from a new public port (a port-preserving
  NAT would give the old one back, so it would prove nothing);
- `listen-port`: the peer changes its WireGuard listen port (behind a
  port-restricted NAT): the new source port is a new mapping.

Every case first proves the move happened (the hub sees a new endpoint for
that side), then that traffic resumes without operator action and without a
new handshake, and that the transfer completes with matching checksums.

How the hub learns the new endpoint differs by side:
- the initiator keeps sending (it is the TCP sender), so the datapath sees
  a known index from a new source and follows it (`ev_roam`);
- the responder here only receives: after the move nothing of it reaches the
  hub on the reflected session, and what it sent would have been dropped by
  its NAT anyway.  The hub learns its new endpoint from the responder's
  keepalive to the hub's own WireGuard, and the daemon moves the sessions
  (log "moved from").  Without that, traffic would wait for something the
  responder sends to the initiator: a TCP ACK if one happens to leave after
  the move, else WireGuard's passive keepalive (10 s) or a new handshake
  (15 s).

The same over IPv6 (`*_ipv6`), both peers on IPv6-only sites reaching the
dual-stack hub over IPv6: `nat-flush` moves a side behind NAT66_SYMMETRIC
(a port-preserving NAT66 or a firewall would keep the source), the other
side is behind a stateful firewall; `listen-port` has NAT66 on one side
and the firewall on the other.
"""

import time

import pytest

from netlab import wait_for
from netlab.nat import NatKind, Router6Kind, flush
from netlab.topology import endpoint as endpoint_text
from netlab.traffic import TcpFlow, UdpSeq
from harness.hub import serving_pair

pytestmark = pytest.mark.netlab

PORT = 51821
MB = 1 << 20
NEW_LISTEN_PORT = 40123


def address_of(ep: str) -> str:
    """The address of an endpoint as show spells it (a.b.c.d:p, [v6]:p)."""
    return ep.rsplit(":", 1)[0].strip("[]")


@pytest.mark.parametrize("how", ["nat-flush", "listen-port"])
@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_roaming_mid_transfer(lab, side, how):
    moving_site = 1 if side == "initiator" else 2
    kinds = [NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED]
    if how == "nat-flush":
        kinds[moving_site - 1] = NatKind.SYMMETRIC
    roams_mid_transfer(lab, side, how, serving_pair(lab, kinds, PORT))


@pytest.mark.parametrize("how", ["nat-flush", "listen-port"])
@pytest.mark.parametrize("side", ["initiator", "responder"])
def test_roaming_mid_transfer_ipv6(lab, side, how):
    moving_site = 1 if side == "initiator" else 2
    if how == "nat-flush":
        kinds6 = [Router6Kind.FIREWALL, Router6Kind.FIREWALL]
        kinds6[moving_site - 1] = Router6Kind.NAT66_SYMMETRIC
    else:
        kinds6 = [Router6Kind.NAT66, Router6Kind.FIREWALL]
    pair = serving_pair(lab, port=PORT, families="v6", kinds6=kinds6)
    assert pair[2].family == pair[3].family == "v6"
    roams_mid_transfer(lab, side, how, pair)


def roams_mid_transfer(lab, side, how, pair):
    topo, hub, initiator, responder = pair
    mover = initiator if side == "initiator" else responder

    # Flows towards the moving side show when it is reachable again.  The
    # responder case has no flow from the responder: it must stay silent.
    flows = [UdpSeq(initiator.node, responder.node, responder.overlay_ip, 7001)]
    if side == "initiator":
        flows.append(UdpSeq(responder.node, initiator.node, initiator.overlay_ip, 7002))
    tcp = TcpFlow(initiator.node, responder.node, responder.overlay_ip, 5 * MB, 512 * 1024,
                   port=5301)
    for f in flows + [tcp]:
        f.start()
        lab.on_close(f.stop)
    for f in flows:
        f.wait_flowing()
    tcp.wait_bytes(MB // 2)
    before = hub.show()
    (session,) = [s for s in before["sessions"] if s["port"] == PORT]
    old_endpoint = session[side]
    handshakes = (initiator.wg.peer(responder.wg.public_key).latest_handshake,
                  responder.wg.peer(initiator.wg.public_key).latest_handshake)
    mark = hub.log_size()

    moved = time.monotonic()
    if how == "nat-flush":
        flush(mover.site)
    else:
        mover.node.run(["wg", "set", mover.wg.name, "listen-port", str(NEW_LISTEN_PORT)])

    def new_endpoint():
        s = [x for x in hub.show()["sessions"] if x["port"] == PORT]
        return s and s[0][side] != old_endpoint and s[0][side]

    endpoint = wait_for(new_endpoint, timeout=10, what=f"the hub to see the {side} move")
    assert address_of(endpoint) == mover.public_ip
    if how == "listen-port":
        assert endpoint == endpoint_text(mover.public_ip, NEW_LISTEN_PORT)

    for f in flows:
        f.wait_flowing(n=10, after=moved, timeout=20)
        gap, at = f.largest_gap(moved - 0.5)
        assert gap < 4.0, (f"{f.src.name}->{f.dst.name}: nothing for {gap:.1f}s after the move, "
                           f"from +{at - moved:.1f}s\n"
                           + move_diagnostics(hub, mover, moved, mark))
    result = tcp.result()
    assert result.ok, result
    assert (initiator.wg.peer(responder.wg.public_key).latest_handshake,
            responder.wg.peer(initiator.wg.public_key).latest_handshake) == handshakes, \
        "recovered by a new handshake, not by roaming"

    after = hub.show()
    roamed = after["counters"]["ev_roam"] > before["counters"]["ev_roam"]
    followed = f"responder on port {PORT} moved from {old_endpoint}" in hub.log(mark)
    if side == "initiator":
        assert roamed
    else:
        # Usually the daemon moves the sessions first; a TCP ACK the
        # responder happened to send just after the move makes the datapath
        # do it instead.  tests/unit/test_sessions_gc.py pins the daemon's
        # part down deterministically.
        assert followed or roamed, hub.log(mark)


def test_silent_responder_is_followed_from_the_hub_device(lab):
    """The daemon's part, isolated: a responder that sends nothing to its
    initiator moves; only its keepalives to the hub's own WireGuard tell
    where it went.  Traffic to it resumes through the hub anyway, before
    anything of it crossed the reflected session (no ev_roam) and long
    before WireGuard would handshake again."""
    silent_responder_is_followed(lab, serving_pair(
        lab, [NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC], PORT))


def test_silent_responder_is_followed_from_the_hub_device_ipv6(lab):
    pair = serving_pair(lab, port=PORT, families="v6",
                        kinds6=[Router6Kind.FIREWALL, Router6Kind.NAT66_SYMMETRIC])
    silent_responder_is_followed(lab, pair)


def move_diagnostics(hub, mover, moved, mark) -> str:
    """What tells a failed recovery apart: where the hub sends the pair, what
    the mover's NAT maps now, the hub's handshakes and roam counters, and
    the daemon's log since the move."""
    status = hub.show()
    nat = mover.site.nat or mover.site.nat6
    lines = [f"at +{time.monotonic() - moved:.1f}s"]
    lines += [f"session {s['initiator']} <-> {s['responder']}" for s in status["sessions"]
              if s["port"] == PORT]
    lines.append("counters: " + ", ".join(
        f"{c} {n}" for c, n in status["counters"].items()
        if n and (c.startswith("ev_") or "roam" in c or "expect" in c)))
    lines += [f"mover's NAT: {m.inside} as {m.public} -> {m.remote}" for m in nat.mappings()]
    return "\n".join(lines) + "\nhub log since the move:\n" + hub.log(mark)


def silent_responder_is_followed(lab, pair):
    topo, hub, initiator, responder = pair

    def r2i_packets():
        (s,) = [x for x in hub.show()["sessions"] if x["port"] == PORT]
        return s["r2i_packets"]

    # The responder answered the ping (data after data received: no passive
    # keepalive pending); the initiator's keepalive that follows is not
    # data, so the responder does not answer it.  It is silent from here
    # until it receives data again, and then for 10 s (KEEPALIVE_TIMEOUT).
    silent = r2i_packets()
    old = [s for s in hub.show()["sessions"] if s["port"] == PORT][0]["responder"]
    roams = hub.show()["counters"]["ev_roam"]
    mark = hub.log_size()

    moved = time.monotonic()
    flush(responder.site)
    flow = UdpSeq(initiator.node, responder.node, responder.overlay_ip, 7001).start()
    lab.on_close(flow.stop)
    first = flow.wait_flowing(n=1, after=moved, timeout=8,
                              what="traffic to the moved responder")
    status = hub.show()
    (s,) = [x for x in status["sessions"] if x["port"] == PORT]
    assert s["responder"] != old and address_of(s["responder"]) == responder.public_ip
    assert s["r2i_packets"] == silent, "the responder spoke first: not the case under test"
    assert status["counters"]["ev_roam"] == roams
    assert f"responder on port {PORT} moved from {old}: 2 session entries follow" in \
        hub.log(mark), hub.log(mark)
    assert first - moved < 4.0
