"""Many peers through one hub, and each pair's traffic reaches only its pair.

- one responder with three initiators on the same port, all at once;
- three responders on three ports, one initiator;
- peers behind the same NAT (distinct WireGuard listen ports): two
  responders behind one NAT with their initiators behind another, plus a
  pair whose two ends are behind the same NAT.

For every pair: concurrent TCP transfers complete intact; a marker sent
from each initiator to its responder and back is seen, on the peers'
tunnel interfaces, by its addressee only and with the right source; and on
the peers' wires, the ciphertext of each pair (datagrams of a size unique
to that pair and direction) reaches only that pair's peers.  `show` lists
one established session per pair.
"""

import threading

import pytest

from netlab import wait_for
from netlab.capture import Capture
from netlab.nat import NatKind
from netlab.topology import distinct_ports, standard
from netlab.traffic import ping, send_udp, tcp_transfer
from harness.hub import WgmuxHub

pytestmark = pytest.mark.netlab

MB = 1 << 20
MARK_PORT = 9999


def wg_size(payload: int) -> int:
    """UDP payload of the WireGuard transport packet that carries a UDP
    datagram of `payload` bytes over IPv4 (header 16 + padded plaintext +
    tag 16)."""
    inner = 20 + 8 + payload
    return 16 + (inner + 15) // 16 * 16 + 16


def check_pairs(topo, hub, pairs):
    hosts = sorted({h.name: h for p in pairs for h in (p.initiator, p.responder)}.items())
    hosts = [h for _, h in hosts]
    for p in pairs:
        wait_for(lambda: ping(p.initiator.node, p.responder.overlay_ip), timeout=40,
                 what=f"a ping {p.initiator.name} -> {p.responder.name}")

    # concurrent transfers, one per pair
    results, errors = {}, []

    def transfer(k, p):
        try:
            results[k] = tcp_transfer(p.initiator.node, p.responder.node, p.responder.overlay_ip,
                                      2 * MB, port=5400 + k, seed=f"pair{k}")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=transfer, args=(k, p)) for k, p in enumerate(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for k, p in enumerate(pairs):
        assert results[k].ok, (p, results[k])

    # markers on the tunnels, unique ciphertext sizes on the wires
    sizes = {}      # (src, dst) host names -> UDP payload size of the marker datagrams
    for k, p in enumerate(pairs):
        sizes[(p.initiator.name, p.responder.name)] = 300 + 128 * (2 * k)
        sizes[(p.responder.name, p.initiator.name)] = 300 + 128 * (2 * k + 1)
    tunnels = {h.name: Capture(h.node, h.wg.name, f"udp port {MARK_PORT}") for h in hosts}
    wires = {h.name: Capture(h.node, "eth0", f"udp and src host {topo.hub_ip}") for h in hosts}
    for cap in list(tunnels.values()) + list(wires.values()):
        cap.start()
    markers = {}
    for (src, dst), size in sizes.items():
        by_name = {h.name: h for h in hosts}
        marker = f"M-{src}-{dst}-".encode()
        markers[(src, dst)] = marker
        payload = (marker + b"x" * size)[:size].decode()
        for _ in range(3):
            send_udp(by_name[src].node, by_name[dst].overlay_ip, MARK_PORT, payload)
    wanted = {size: wg_size(size) for size in sizes.values()}
    assert len(set(wanted.values())) == len(wanted), "marker sizes must differ on the wire"
    for (src, dst), marker in markers.items():
        tunnels[dst].wait_for(lambda pk: marker in pk.payload, what=f"marker {src}->{dst}")
        # tcpdump may exit with packets still unread: wait until it wrote them
        wires[dst].wait_for(lambda pk: pk.udp and len(pk.payload) == wanted[sizes[(src, dst)]],
                            what=f"the ciphertext of marker {src}->{dst}")
    for cap in list(tunnels.values()) + list(wires.values()):
        cap.stop()

    by_name = {h.name: h for h in hosts}
    for (src, dst), marker in markers.items():
        got = {name for name, cap in tunnels.items()
               if any(marker in pk.payload and pk.dst == by_name[name].overlay_ip
                      for pk in cap.packets)}
        assert got == {dst}, f"marker {src}->{dst} received by {sorted(got)}"
        (first,) = {pk.src for pk in tunnels[dst].packets if marker in pk.payload}
        assert first == by_name[src].overlay_ip
    for name, cap in wires.items():
        seen = {len(pk.payload) for pk in cap.packets if pk.udp}
        expected = {wanted[size] for (src, dst), size in sizes.items() if dst == name}
        assert expected <= seen, f"{name} missed its pair's ciphertext"
        others = {wanted[size] for (src, dst), size in sizes.items() if dst != name}
        assert not (seen & others), f"{name} received another pair's ciphertext"

    status = hub.show()
    for p in pairs:
        mine = [s for s in status["sessions"] if s["port"] == p.port
                and s["initiator"].startswith(p.initiator.site.public_ip + ":")
                and s["responder"].startswith(p.responder.site.public_ip + ":")
                and s["state"] == "established"]
        assert mine, (p, status["sessions"])
    return status


def setup(lab, kinds, **kw):
    topo = standard(lab, kinds, wireguard=True, **kw)
    for h in topo.hosts:
        topo.hub_wg.wait_handshake(h.wg.public_key)
    return topo, WgmuxHub(topo)


def test_one_responder_three_initiators(lab):
    topo, hub = setup(lab, [NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC,
                            NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC])
    r = topo.host(1)
    pairs = [hub.pair(topo.host(n), r, 51821) for n in (2, 3, 4)]
    hub.start()
    status = check_pairs(topo, hub, pairs)
    assert [p["port"] for p in status["peers"]] == [51821]
    assert len({s["initiator"] for s in status["sessions"] if s["state"] == "established"}) == 3


def test_three_responders_on_three_ports(lab):
    topo, hub = setup(lab, [NatKind.SYMMETRIC, NatKind.PORT_RESTRICTED,
                            NatKind.SYMMETRIC, NatKind.PORT_RESTRICTED])
    i = topo.host(1)
    pairs = [hub.pair(i, topo.host(n), 51820 + n) for n in (2, 3, 4)]
    hub.start()
    status = check_pairs(topo, hub, pairs)
    assert sorted(p["port"] for p in status["peers"]) == [51822, 51823, 51824]


def test_peers_behind_the_same_nat(lab):
    # site 1: two responders behind one port-preserving NAT; site 2: their
    # initiators behind one symmetric NAT.  Distinct listen ports keep the
    # two responders' public ports apart.
    topo, hub = setup(lab, [NatKind.PORT_RESTRICTED, NatKind.SYMMETRIC], hosts_per_site=2,
                      peer_listen_port=distinct_ports(51820))
    r0, r1 = topo.host(1, 0), topo.host(1, 1)
    i0, i1 = topo.host(2, 0), topo.host(2, 1)
    assert (r0.wg.listen_port, r1.wg.listen_port) == (51820, 51821)
    pairs = [hub.pair(i0, r0, 51830), hub.pair(i1, r1, 51831),
             # both ends behind the same NAT: r0 reaches r1 through the hub
             hub.pair(r0, r1, 51831)]
    hub.start()
    status = check_pairs(topo, hub, pairs)
    endpoints = {p["port"]: p["endpoint"] for p in status["peers"]}
    assert endpoints == {51830: f"{r0.site.public_ip}:51820",
                         51831: f"{r1.site.public_ip}:51821"}
