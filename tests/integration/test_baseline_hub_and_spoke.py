"""The setup wgmux replaces: a hub-and-spoke WireGuard VPN.

Two NATed peers reach each other through the hub, which decrypts every
packet, routes it and encrypts it again: a plaintext marker sent between
the peers is readable in a capture on the hub's WireGuard interface.  Later
suites show the opposite for wgmux.
"""

import secrets

import pytest

from netlab import wait_for
from netlab.capture import Capture
from netlab.nat import NatKind
from netlab.topology import standard
from netlab.traffic import ping, send_udp

pytestmark = pytest.mark.netlab


@pytest.mark.parametrize("kinds", [(NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED),
                                   (NatKind.SYMMETRIC, NatKind.SYMMETRIC)],
                         ids=["port-restricted", "symmetric"])
def test_classic_hub_sees_plaintext(lab, kinds):
    topo = standard(lab, kinds, wireguard=True, classic=True)
    a, b = topo.host(1), topo.host(2)
    for host in (a, b):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    wait_for(lambda: ping(a.node, b.overlay_ip), timeout=15, what="ping a -> b through the hub")
    assert ping(b.node, a.overlay_ip)

    marker = "PLAINTEXT-" + secrets.token_hex(8)
    with Capture(topo.hub, topo.hub_wg.name, "udp port 9999") as cap:
        send_udp(a.node, b.overlay_ip, 9999, marker)
        cap.wait_for(lambda p: marker.encode() in p.payload, what="the marker")
    # The hub forwarded it in the clear between two tunnels.
    assert any(p.src == a.overlay_ip and p.dst == b.overlay_ip and marker.encode() in p.payload
               for p in cap.packets)
