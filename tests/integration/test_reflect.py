"""wgmux end to end: two NATed WireGuard peers through the hub, no decryption.

For port-restricted NAT on both sides and symmetric NAT on both sides, with
transmit checksum offload off everywhere (so every receiver verifies the
checksums the reflector rewrote), and with the datapath at TC ingress alone
(`Datapath = "tc"`) and with XDP in front of it (`"xdp"`, docs/spec.md §4a;
the hub's veth peer has an XDP program, so that it takes what XDP sends
back, netlab.xdp):
- without wgmux the handshake through hub:port does not complete;
- with wgmux it does; ping both ways; 10 MB each way over TCP, checksums match;
- the hub's own WireGuard does not carry that volume; a plaintext marker
  reaches the responder's tunnel and appears in no capture on the hub;
- `wgmux show` lists the session with counters that match the traffic, and
  the mode; with XDP, the driver sent the stream back out itself (XDP_TX
  at least once per transport packet reflected, none lost).

The same over IPv6 (`*_ipv6`): both peers on IPv6-only sites, behind NAT66
or behind a stateful firewall (netlab.nat.Router6Kind), reach the hub at
[2001:db8::fe] (the hub is dual-stack; its own WireGuard listens on both
families), the initiator's Endpoint for the responder is [hub]:port.
"""

import secrets

import pytest

from netlab import wait_for
from netlab.capture import Capture
from netlab.nat import NatKind, Router6Kind
from netlab.topology import endpoint, standard
from netlab.traffic import ping, send_udp
from harness.hub import WgmuxHub, handshake_fails, serving_pair, transfers_past_the_hub

pytestmark = pytest.mark.netlab

PORT = 51821
MB = 1 << 20
IP_UDP_HEADERS = {"v4": 28, "v6": 48}     # what the hub counts beyond the message
COUNT_SLACK = 2048   # a few handshake/keepalive messages


@pytest.fixture(params=["tc", "xdp"])
def mode(request):
    return request.param


@pytest.fixture(params=[NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC],
                ids=["port-restricted", "symmetric"])
def paired(request, lab, mode):
    return make_pair(lab, mode, [request.param, request.param])


@pytest.fixture(params=[Router6Kind.NAT66, Router6Kind.FIREWALL], ids=["nat66", "firewall"])
def paired6(request, lab, mode):
    return make_pair(lab, mode, families="v6", kinds6=request.param)


def make_pair(lab, mode, kinds=(NatKind.PORT_RESTRICTED,) * 2, families="v4",
              kinds6=Router6Kind.FIREWALL):
    topo = standard(lab, list(kinds), wireguard=True, tx_checksum=False, families=families,
                    kinds6=kinds6)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    if mode == "xdp":
        # the hub's eth0 is a veth: its other end (bridge port "hub") takes
        # XDP_TX frames only with an XDP program of its own (netlab.xdp)
        topo.inet.take_xdp_frames("hub")
    hub = WgmuxHub(topo, extra_config=f'Datapath = "{mode}"')
    hub.pair(initiator, responder, PORT)
    return topo, hub, initiator, responder


def test_without_wgmux_the_handshake_fails(paired):
    topo, hub, initiator, responder = paired
    handshake_fails(topo, initiator, responder, PORT)


def test_without_wgmux_the_handshake_fails_ipv6(paired6):
    topo, hub, initiator, responder = paired6
    handshake_fails(topo, initiator, responder, PORT)
    assert initiator.family == responder.family == "v6"


def test_reflects_end_to_end_without_decrypting(paired, mode):
    reflects(*paired, mode)


def test_reflects_end_to_end_without_decrypting_ipv6(paired6, mode):
    topo, hub, initiator, responder = paired6
    assert initiator.family == responder.family == "v6"
    assert "[" in initiator.wg.peer(responder.wg.public_key).endpoint
    reflects(*paired6, mode)


def reflects(topo, hub, initiator, responder, mode):
    hub.start()
    assert hub.show()["datapath"] == mode
    said = {"tc": "attached to eth0 (TC ingress)",
            "xdp": "attached to eth0 (XDP in the driver, in front of TC ingress)"}[mode]
    assert said in hub.log(), hub.log()

    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
             what="first ping through the hub")
    initiator.wg.wait_handshake(responder.wg.public_key)
    responder.wg.wait_handshake(initiator.wg.public_key)
    assert ping(responder.node, initiator.overlay_ip, count=3)
    assert ping(initiator.node, responder.overlay_ip, count=3)

    xdp_before = topo.hub.xdp_stats("eth0")
    transfers_past_the_hub(topo, initiator, responder, 10 * MB)
    xdp_after = topo.hub.xdp_stats("eth0")

    marker = "PLAINTEXT-" + secrets.token_hex(8)
    # The hub's wire is watched from its other end: what XDP sends back
    # never reaches the hub's own taps (it leaves before the stack sees it).
    with Capture(topo.inet, "hub", "udp") as hub_wire, \
            Capture(topo.hub, "eth0", "udp") as hub_eth0, \
            Capture(topo.hub, topo.hub_wg.name, "") as hub_tunnel, \
            Capture(responder.node, responder.wg.name, "udp port 9999") as responder_tunnel:
        send_udp(initiator.node, responder.overlay_ip, 9999, marker)
        responder_tunnel.wait_for(lambda p: marker.encode() in p.payload, what="the marker")
        # The reflected ciphertext crossed the hub's wire meanwhile.
        hub_wire.wait_for(lambda p: p.sport == PORT or p.dport == PORT, what="reflected packets")
    for cap in (hub_wire, hub_eth0, hub_tunnel):
        assert not [p for p in cap.packets if marker.encode() in p.l3], \
            f"plaintext marker visible on the hub ({cap.ifname})"

    status = hub.show()
    sessions = [s for s in status["sessions"] if s["port"] == PORT]
    assert len(sessions) == 1, status["sessions"]
    s = sessions[0]
    assert s["state"] == "established"
    # from the address the hub sees each at (its router's, or its own
    # behind an IPv6 firewall), in show's spelling ([v6]:port)
    assert s["initiator"] == endpoint(initiator.public_ip, s["initiator"].rsplit(":", 1)[1])
    assert s["responder"] == endpoint(responder.public_ip, s["responder"].rsplit(":", 1)[1])
    # The hub's per-direction counters match what the sending peer's own
    # WireGuard counted (the hub counts IP bytes: the message plus 28 bytes
    # of IPv4 and UDP headers each, 48 over IPv6), to within a handshake or
    # keepalive.
    # (Not the receiver's count: a loaded receiver drops some datagrams
    # after the hub, and TCP resends them.)
    i_view = initiator.wg.peer(responder.wg.public_key)
    r_view = responder.wg.peer(initiator.wg.public_key)
    headers = IP_UDP_HEADERS[initiator.family]
    i2r = s["i2r_bytes"] - headers * s["i2r_packets"]
    r2i = s["r2i_bytes"] - headers * s["r2i_packets"]
    assert i2r > 10 * MB and r2i > 10 * MB, s
    assert abs(i2r - i_view.tx_bytes) < COUNT_SLACK, (i2r, i_view.tx_bytes, s)
    assert abs(r2i - r_view.tx_bytes) < COUNT_SLACK, (r2i, r_view.tx_bytes, s)
    text = hub.show_text()
    assert f"port {PORT}:" in text and s["initiator"] in text
    assert f'Datapath = "{mode}"' in text
    # Who reflected the stream: XDP_TX in the driver, or no XDP at all.
    sent_back = xdp_after.get("xdp_tx", 0) - xdp_before.get("xdp_tx", 0)
    if mode == "xdp":
        assert sent_back > 10 * MB // 1500, (xdp_before, xdp_after)
        assert xdp_after.get("xdp_tx_errors", 0) == 0, xdp_after
        c = status["counters"]
        assert sent_back <= c["reflect_transport"] + c["reflect_cookie"], (sent_back, c)
    else:
        assert xdp_after.get("xdp_packets", 0) == 0, xdp_after


@pytest.mark.parametrize("forwarding", [True, False], ids=["forwarding", "no-forwarding"])
def test_forwarding_chooses_the_path_and_off_is_said(lab, forwarding):
    """Forwarding on Interface lets bpf_fib_lookup() route reflected packets
    (the fast path, cached MACs); without it every packet takes the kernel's
    neighbour path: it still works, the counter shows it and serve says so."""
    topo, hub, initiator, responder = serving_pair(
        lab, [NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED], PORT, forwarding=forwarding)
    assert ping(responder.node, initiator.overlay_ip, count=3)
    said = "forwarding is off on 'eth0'" in hub.log()
    neigh_path = hub.show()["counters"]["ev_nh_fwd_disabled"]
    assert said == (not forwarding), hub.log()
    assert (neigh_path > 0) == (not forwarding), neigh_path


def test_restart_changes_the_datapath_and_keeps_the_session(lab):
    """Datapath changes on a restart, not a reload (docs/spec.md §4a, §10):
    with --keep-attached each start takes over what the last one left (XDP
    replaced, or removed when it keeps to TC) on the same pinned maps, and
    the pair goes on without a new handshake."""
    # (tx checksum offload off: XDP leaves partial checksums to TC, §4a)
    topo = standard(lab, [NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED], wireguard=True,
                    tx_checksum=False)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    topo.inet.take_xdp_frames("hub")
    hub = WgmuxHub(topo, extra_config='Datapath = "tc"', serve_args=["--keep-attached"])
    hub.pair(initiator, responder, PORT)
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="the first ping through the hub")
    handshake = initiator.wg.peer(responder.wg.public_key).latest_handshake
    assert handshake

    mark = hub.log_size()
    hub.extra_config = 'Datapath = "xdp"'
    hub.write_config()
    assert "reload rejected" in hub.reload() and hub.show()["datapath"] == "tc"
    for mode in ("xdp", "xdp", "tc", "xdp"):
        hub.extra_config = f'Datapath = "{mode}"'
        hub.stop()
        hub.start()
        st = hub.show()
        assert st["datapath"] == mode and st["reused_pinned_state"], st
        attached = topo.hub.run(["ip", "link", "show", "eth0"]).stdout
        assert ("prog/xdp" in attached and "wgmux_xdp" in attached) == (mode == "xdp"), attached
        before = topo.hub.xdp_stats("eth0").get("xdp_tx", 0)
        assert ping(initiator.node, responder.overlay_ip, count=3)
        assert ping(responder.node, initiator.overlay_ip, count=3)
        sent_back = topo.hub.xdp_stats("eth0").get("xdp_tx", 0) - before
        assert (sent_back >= 6) == (mode == "xdp"), sent_back
    log = hub.log(mark)
    assert "took over from the XDP program a previous wgmux left attached" in log, log
    assert "removed the XDP program wgmux_xdp" in log, log
    assert initiator.wg.peer(responder.wg.public_key).latest_handshake == handshake
    # stopped for good: `wgmux detach` removes both programs
    hub.stop()
    assert "wgmux_xdp" in topo.hub.run(["ip", "link", "show", "eth0"]).stdout
    out = topo.hub.run(hub.cli("detach", "-c", str(hub.config_path))).stdout
    assert "removed XDP program wgmux_xdp" in out and "removed TC filter" in out, out
    assert "xdp" not in topo.hub.run(["ip", "link", "show", "eth0"]).stdout


@pytest.mark.parametrize("forwarding6", [True, False], ids=["forwarding", "no-forwarding"])
def test_forwarding_chooses_the_path_ipv6(lab, forwarding6):
    """IPv6 peers: IPv6 forwarding on Interface is what lets
    bpf_fib_lookup() route their reflected packets (IPv4 forwarding on in
    both cases); without it they take the neighbour path and still work."""
    topo = standard(lab, wireguard=True, families="v6")
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    hub = WgmuxHub(topo)              # forwarding on, both families
    if not forwarding6:
        topo.hub.sysctls({"net.ipv6.conf.all.forwarding": 0,
                          "net.ipv6.conf.eth0.forwarding": 0})
    assert topo.hub.run(["sysctl", "-n", "net.ipv4.conf.eth0.forwarding"]).stdout.strip() == "1"
    hub.pair(initiator, responder, PORT)
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="the first ping through the hub")
    assert ping(responder.node, initiator.overlay_ip, count=3)
    neigh_path = hub.show()["counters"]["ev_nh_fwd_disabled"]
    assert (neigh_path > 0) == (not forwarding6), neigh_path
