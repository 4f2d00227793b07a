"""AmneziaWG 1.0 and 2.0 through the wgmux hub (issue 5).

Every WireGuard interface of the topology is AmneziaWG -- the two NATed
peers and the hub's own (its sessions with the peers are AmneziaWG too) --
run by netlab.amnezia: the real implementation when installed, else the
wire adapter; the test ids name which ("adapter", "amneziawg-go", ...).
Transmit checksum offload is off everywhere, so receivers verify checksums.

For a 1.0 set (Jc/Jmin/Jmax, S1/S2, single H values) and a 2.0 set (header
ranges, S3, S4 on every transport packet, an I1 packet):
- the handshake through hub:port completes, ping both ways, TCP transfers
  with SHA-256 both ways;
- a capture on the hub's interface shows only AmneziaWG on both legs: no
  datagram starts with a WireGuard type (1-4 and three zero bytes), every
  message carries its prefix and a header from its range, the reflected
  handshake bytes are the same on both legs (nothing rewritten), each
  initiation from the initiator comes after its I-packets and Jc junk, and
  no junk or I-packet was reflected (the hub counted them as unclassified);
- a hub configured without the AmneziaWG values (or with other ones) does
  not reflect, and its counters say why; its own AmneziaWG sessions work;
- the hub's junk hook (wgmux.junk) reaches the responder from HubPort
  through its NAT and is dropped there as junk.
"""

import struct

import pytest

from netlab import wait_for
from netlab.amnezia import AwgParams, implementation
from netlab.capture import Capture
from netlab.nat import NatKind
from netlab.topology import standard
from netlab.traffic import ping, tcp_transfer
from wgmux import config, wire
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab

PORT = 51821
MB = 1 << 20

# The parameter sets as a user writes them in [Interface] (and in the peers'
# AmneziaWG configs); they go through wgmux's own validation.
AWG_1_0 = """\
Jc = 4
Jmin = 40
Jmax = 70
S1 = 15
S2 = 40
H1 = 1122334455
H2 = 2233445566
H3 = 3344556677
H4 = 4055667788
"""
AWG_2_0 = """\
Jc = 3
Jmin = 64
Jmax = 200
S1 = 23
S2 = 41
S3 = 9
S4 = 12
H1 = "100000-100999"
H2 = "200000-299999"
H3 = "3000000000-3000065535"
H4 = "400000-4000000"
I1 = "<b 0xc0ffee00><r 32><rc 8><rd 4><t>"
"""
I1_PREFIX = bytes.fromhex("c0ffee00")
I1_SIZE = 4 + 32 + 8 + 4 + 4
SETS = {"1.0": AWG_1_0, "2.0": AWG_2_0}
WG_TYPES = {struct.pack("<I", t) for t in (1, 2, 3, 4)}


def params_of(snippet: str):
    text = f'[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n{snippet}'
    return config.parse(text).amnezia


def hub_config(topo, snippet: str) -> str:
    """[Interface] additions for the hub: the AmneziaWG values, and WgUtil
    for a real AmneziaWG device (the adapter's device is plain WireGuard)."""
    return snippet + (f'WgUtil = "{topo.hub_wg.tool}"\n' if topo.hub_wg.tool != "wg" else "")


IMPL = implementation()


@pytest.fixture(params=list(SETS), ids=[f"awg{v}-{IMPL}" for v in SETS])
def awg(request, lab):
    version = request.param
    params = params_of(SETS[version])
    assert params.version == version
    topo = standard(lab, [NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC], wireguard=True,
                    tx_checksum=False, amnezia=params)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)      # AmneziaWG sessions with the hub
    return version, params, topo, initiator, responder


def counters_of(hub) -> dict:
    return hub.show()["counters"]


def test_reflects_amnezia_end_to_end(awg):
    version, params, topo, initiator, responder = awg
    hub = WgmuxHub(topo, extra_config=hub_config(topo, SETS[version]))
    hub.pair(initiator, responder, PORT)
    classifier = wire.Classifier.from_params(params)
    awgp = AwgParams.of(params)

    with Capture(topo.hub, "eth0", "udp") as cap:
        hub.start()
        wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=25,
                 what="first ping through the hub")
        initiator.wg.wait_handshake(responder.wg.public_key)
        responder.wg.wait_handshake(initiator.wg.public_key)
        assert ping(responder.node, initiator.overlay_ip, count=3)
        assert ping(initiator.node, responder.overlay_ip, count=3)
        forward = tcp_transfer(initiator.node, responder.node, responder.overlay_ip, 3 * MB,
                               port=5001)
        assert forward.ok, forward
        back = tcp_transfer(responder.node, initiator.node, initiator.overlay_ip, 1 * MB,
                            port=5002)
        assert back.ok, back

    hub_ip, i_ip, r_ip = topo.hub_ip, initiator.site.public_ip, responder.site.public_ip
    ours = [p for p in cap.packets if p.udp and {p.sport, p.dport} & {topo.hub_port, PORT}]
    assert ours, "nothing captured"

    # 1. No plain WireGuard anywhere on the hub's wire, every message in AWG form.
    kinds = {}
    for p in ours:
        assert p.payload[:4] not in WG_TYPES, f"plain WireGuard type on the wire: {p}"
        kind, off = classifier.classify(p.payload)
        if kind is None:
            continue            # junk or I-packet
        assert off == params.prefixes[kind], (p, kind)
        if kind is not wire.MessageType.TRANSPORT:       # exact size: the prefix is there
            assert len(p.payload) == params.prefixes[kind] + kind.size, (p, kind)
        lo, hi = params.headers[kind]
        assert lo <= struct.unpack_from("<I", p.payload, off)[0] <= hi
        assert wire.WIREGUARD.classify(p.payload)[0] is None
        leg = ("i-hub" if i_ip in (p.src, p.dst) and PORT in (p.sport, p.dport)
               else "hub-r" if r_ip in (p.src, p.dst) else "other")
        kinds.setdefault((leg, kind), []).append(p)
    I, R, T = (wire.MessageType.INITIATION, wire.MessageType.RESPONSE,
               wire.MessageType.TRANSPORT)
    for leg in ("i-hub", "hub-r"):
        for kind in (I, R, T):
            assert kinds.get((leg, kind)), f"no {kind.name} on leg {leg}"
    if params.s4:
        # S4 random bytes before every transport packet (keepalives too)
        for p in kinds[("i-hub", T)] + kinds[("hub-r", T)]:
            assert (len(p.payload) - params.s4 - wire.WG_TRANSPORT_MIN_SIZE) % 16 == 0, p

    # 2. The reflected handshake is byte-for-byte the same on both legs.
    inits_in = [p for p in kinds[("i-hub", I)] if p.dst == hub_ip and p.dport == PORT]
    inits_out = {p.payload for p in kinds[("hub-r", I)]
                 if p.src == hub_ip and p.sport == topo.hub_port and p.dst == r_ip}
    assert inits_in and any(p.payload in inits_out for p in inits_in)
    resps_in = {p.payload for p in kinds[("hub-r", R)] if p.dst == hub_ip}
    resps_out = [p for p in kinds[("i-hub", R)] if p.src == hub_ip and p.sport == PORT]
    assert resps_out and all(p.payload in resps_in for p in resps_out)

    # 3. Each initiation to hub:PORT follows its I-packets and Jc junk.
    flow = [p for p in ours if p.src == i_ip and p.dst == hub_ip and p.dport == PORT]
    first = next(n for n, p in enumerate(flow) if classifier.classify(p.payload)[0] is I)
    n_special = len(awgp.specials)
    before = flow[first - params.jc - n_special:first]
    assert len(before) == params.jc + n_special, flow[:first + 1]
    for p in before[:n_special]:
        assert p.payload.startswith(I1_PREFIX) and len(p.payload) == I1_SIZE
    for p in before[n_special:]:
        assert params.jmin <= len(p.payload) < params.jmax, p
        assert classifier.classify(p.payload)[0] is None

    # 4. Junk and I-packets reached the hub and were not reflected.
    junk = {p.payload for p in flow if classifier.classify(p.payload)[0] is None}
    assert len(junk) >= params.jc + n_special
    to_r = {p.payload for p in ours if p.src == hub_ip and p.dst == r_ip}
    assert not junk & to_r, "the hub reflected junk"
    c = counters_of(hub)
    assert c["drop_unclassified"] >= len(junk), c
    assert c["reflect_response"] >= 1 and c["reflect_transport"] > 1000, c
    assert c.get("reflect_initiation", 0) + c.get("sp_reflect_initiation", 0) >= 1, c

    # 5. The hub sent its own Jc junk toward R right before the reflected
    #    initiation, so the second leg looks like the first (wgmux.junk).
    leg2 = [p for p in ours if p.src == hub_ip and p.sport == topo.hub_port and p.dst == r_ip]
    reflected = {p.payload for p in inits_in}
    at = next(n for n, p in enumerate(leg2) if p.payload in reflected)
    hub_junk = leg2[at - params.jc:at]
    assert len(hub_junk) == params.jc, leg2[:at + 1]
    for p in hub_junk:
        assert params.jmin <= len(p.payload) < max(params.jmax, params.jmin + 1), p
        assert classifier.classify(p.payload)[0] is None, p
        assert p.payload not in junk, "the hub's junk is its own, not the initiator's"

    # 6. The hub's own AmneziaWG sessions carried none of it (it never decrypted).
    for host in (initiator, responder):
        assert topo.hub_wg.peer(host.wg.public_key).rx_bytes < MB
    sessions = [s for s in hub.show()["sessions"] if s["port"] == PORT]
    assert sessions and sessions[0]["state"] == "established", sessions


@pytest.mark.parametrize("hub_values", ["none", "other"])
def test_hub_without_matching_values_does_not_reflect(awg, hub_values):
    version, params, topo, initiator, responder = awg
    other = SETS["2.0" if version == "1.0" else "1.0"]
    snippet = "" if hub_values == "none" else other
    hub = WgmuxHub(topo, extra_config=hub_config(topo, snippet))
    hub.pair(initiator, responder, PORT)
    hub.start()
    with pytest.raises(TimeoutError):
        wait_for(lambda: ping(initiator.node, responder.overlay_ip, timeout=1), timeout=7,
                 what="a ping that must not get through")
    assert initiator.wg.peer(responder.wg.public_key).latest_handshake == 0
    assert responder.wg.peer(initiator.wg.public_key).latest_handshake == 0
    c = counters_of(hub)
    assert c["drop_unclassified"] > 0, c
    assert not any(v for k, v in c.items() if "reflect" in k), c
    # The hub's own AmneziaWG sessions are unaffected.
    assert ping(initiator.node, "10.99.0.1", count=2)
