"""A standby hub beside the standard topology's hub, and a floating address
moved from one to the other: what hub failover looks like on the wire.

    inet (bridge br0, 198.18.0.0/24)
     ├── hub   eth0 198.18.0.254 (the floating address)    WireGuard K, HUB_PORT
     ├── hubb  eth0 198.18.0.253 (its own address)         WireGuard K, HUB_PORT
     ├── r1    wan 198.18.0.1  NAT ── r1h0
     └── r2    wan 198.18.0.2  NAT ── r2h0

Every peer's Endpoint names the floating address 198.18.0.254 (the
topology's HUB_IP), so nothing changes on the peers when it moves.  The
standby runs the same WireGuard as the active hub: the same private key
(peers authenticate the hub by its public key), the same listen port, the
same peers with the same allowed IPs, the same overlay address.  What it
cannot have from its configuration is where the peers are (their
endpoints): those the active hub learned from handshakes; `copy_endpoints`
is the operator's sync of them (`wg show <dev> endpoints` on the active
hub, `wg set <dev> peer K endpoint E` on the standby).

`fail_over` is hub A's failure and the standby's takeover, as keepalived
(VRRP) or a cloud's floating IP would do it: A's link goes down (A is gone
from the network, processes and all: nothing it sends arrives), the
standby adds the floating address to its interface and announces it with
gratuitous ARP, so the routers on the segment send to its MAC from then on.
IPv4 only (IPv6 would announce with an unsolicited neighbour advertisement).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from dataclasses import dataclass
from typing import Optional

from .lab import Node, wait_for
from .nat import attach
from .topology import HUB_IP, HUB_OVERLAY_IP, OVERLAY, WAN_NET, Topology
from .wireguard import WireGuard

STANDBY_IP = str(WAN_NET[253])       # the standby hub's own address

# A gratuitous ARP (a request for the address by its owner, RFC 5227's
# announcement), `count` times 0.1 s apart, from `ifname`: who holds an ARP
# entry for the address moves it to this interface's MAC.
_GARP = r"""
import socket, struct, sys, time
ifname, ip, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0x0806))
mac = s.getsockname()[4]
addr = socket.inet_aton(ip)
frame = (b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
         + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr)
for i in range(count):
    s.send(frame)
    if i + 1 < count:
        time.sleep(0.1)
"""


@dataclass
class Standby:
    """The standby hub: its node, its WireGuard (the active hub's key,
    port, peers) and a Topology view in which it is the hub (what
    harness.hub.WgmuxHub takes to run wgmux there)."""

    node: Node
    wg: WireGuard
    ip: str
    topo: Topology


def add_standby_hub(topo: Topology, name: str = "hubb", ip: str = STANDBY_IP) -> Standby:
    """A second hub on the internet segment, address `ip` on eth0, with a
    WireGuard like the topology's hub's: same private key, listen port,
    overlay address and peers (public keys, allowed IPs), no endpoints.
    The topology must have been built with wireguard=True, IPv4 only."""
    if topo.hub_wg is None:
        raise ValueError("the topology has no hub WireGuard (standard(..., wireguard=True))")
    if topo.hub_ip6 is not None or topo.gateway is not None:
        raise ValueError("a standby hub is built on the IPv4 standard topology only")
    node = topo.lab.add_node(name)
    attach(topo.lab, node, "eth0", topo.inet, "br0", name, f"{ip}/{WAN_NET.prefixlen}")
    wg = WireGuard.create(node, name, topo.hub_port, f"{HUB_OVERLAY_IP}/{OVERLAY.prefixlen}",
                          private_key=topo.hub_wg.private_key)
    for peer in topo.hub_wg.peers().values():
        wg.set_peer(peer.public_key, allowed_ips=peer.allowed_ips)
    return Standby(node, wg, ip, dataclasses.replace(topo, hub=node, hub_wg=wg))


def copy_endpoints(src: WireGuard, dst: WireGuard) -> dict:
    """The operator's endpoint sync: every endpoint `src` knows, set on the
    same peer of `dst`.  Returns {public key: endpoint} of what was set."""
    known = {key: p.endpoint for key, p in src.peers().items() if p.endpoint}
    theirs = dst.peers()
    copied = {key: ep for key, ep in known.items() if key in theirs}
    for key, ep in copied.items():
        dst.node.run([dst.tool, "set", dst.name, "peer", key, "endpoint", ep])
    return copied


def gratuitous_arp(node: Node, ifname: str, ip: str, count: int = 3):
    """Announce `ip` as `node`'s on `ifname` (gratuitous ARP, `count` times)."""
    ipaddress.IPv4Address(ip)
    node.run([sys.executable, "-c", _GARP, ifname, ip, str(count)])


def holder_mac(node: Node, ifname: str) -> str:
    """`ifname`'s MAC address in `node`."""
    link = node.ipr.link("get", index=node.index(ifname))[0]
    return link.get_attr("IFLA_ADDRESS")


def neighbour_mac(node: Node, ip: str) -> Optional[str]:
    """The MAC `node`'s ARP table holds for `ip` (None: no usable entry)."""
    for n in node.ipr.get_neighbours(dst=ip):
        mac = n.get_attr("NDA_LLADDR")
        if mac and n["state"] not in (0x20, 0x01):      # NUD_FAILED, NUD_INCOMPLETE
            return mac
    return None


def fail_over(active: Node, standby: Node, ip: str = HUB_IP, ifname: str = "eth0",
              prefixlen: int = WAN_NET.prefixlen, watchers=()):
    """Hub `active` fails (its `ifname` goes down) and `standby` takes the
    floating address `ip` over (added on its `ifname`, gratuitous ARP).
    `watchers`: nodes (the NAT routers) whose ARP entry for `ip` must then
    name the standby's MAC; waited for with a deadline."""
    active.ipr.link("set", index=active.index(ifname), state="down")
    standby.add_address(ifname, f"{ip}/{prefixlen}")
    gratuitous_arp(standby, ifname, ip)
    mac = holder_mac(standby, ifname)
    for node in watchers:
        # A node without an entry for `ip` resolves it afresh (only the
        # standby answers now); one with an entry must have taken the ARP.
        wait_for(lambda: neighbour_mac(node, ip) in (mac, None), timeout=5,
                 what=f"{node.name} to take {standby.name}'s gratuitous ARP for {ip}")
