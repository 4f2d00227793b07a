"""The standard topology: a public hub and NATed sites on one "internet".

    inet (bridge br0, 198.18.0.0/24)
     ├── hub   eth0 198.18.0.254             WireGuard on HUB_PORT, 10.99.0.1
     ├── r1    wan 198.18.0.1  NAT ── r1h0 10.1.0.2   WireGuard 10.99.1.1
     └── r2    wan 198.18.0.2  NAT ── r2h0 10.2.0.2   WireGuard 10.99.2.1

With `wireguard=True` every host gets one WireGuard interface with the hub as
a peer (endpoint hub:HUB_PORT, persistent keepalive), the way every wgmux
peer keeps its NAT mapping towards the hub open.  `classic=True` makes it the
hub-and-spoke VPN wgmux replaces: hosts route the whole overlay through the
hub, and the hub decrypts and forwards.  `amnezia=params` makes every one of
those interfaces (the hub's too) AmneziaWG with the same parameters (see
netlab.amnezia).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from .lab import Lab, Node
from .nat import NatKind, Site, add_site, attach
from .wireguard import WireGuard

WAN_NET = ipaddress.IPv4Network("198.18.0.0/24")   # RFC 2544 benchmarking space
HUB_IP = str(WAN_NET[254])
HUB_PORT = 51820
OVERLAY = ipaddress.IPv4Network("10.99.0.0/16")
HUB_OVERLAY_IP = "10.99.0.1"


@dataclass
class Host:
    site: Site
    index: int
    node: Node
    lan_ip: str
    overlay_ip: Optional[str] = None
    wg: Optional[WireGuard] = None

    @property
    def name(self) -> str:
        return self.node.name


@dataclass
class Topology:
    lab: Lab
    inet: Node
    hub: Node
    hub_ip: str
    sites: List[Site]
    hosts: List[Host] = field(default_factory=list)
    hub_wg: Optional[WireGuard] = None
    hub_port: int = HUB_PORT

    def host(self, site: int, index: int = 0) -> Host:
        """Host `index` behind site `site` (sites count from 1)."""
        for h in self.hosts:
            if h.site.index == site and h.index == index:
                return h
        raise LookupError(f"no host {index} at site {site}")

    def add_internet_host(self, name: str, address_index: int) -> Node:
        """A host with a public address on the internet segment (no NAT)."""
        node = self.lab.add_node(name)
        attach(self.lab, node, "eth0", self.inet, "br0", f"x{address_index}",
               f"{WAN_NET[address_index]}/{WAN_NET.prefixlen}")
        return node

    def describe(self) -> str:
        lines = [f"lab {self.lab.prefix}: hub {self.hub.netns} at {self.hub_ip}"
                 + (f", WireGuard {self.hub_wg.name} port {self.hub_port} "
                    f"({self.hub_wg.implementation}) key {self.hub_wg.public_key}"
                    if self.hub_wg else "")]
        for h in self.hosts:
            lines.append(f"  {h.node.netns}: {h.lan_ip} behind {h.site.kind.value} NAT "
                         f"{h.site.public_ip}"
                         + (f", WireGuard {h.wg.name} {h.overlay_ip} port {h.wg.listen_port} "
                            f"key {h.wg.public_key}" if h.wg else ""))
        return "\n".join(lines)


def standard(lab: Lab, kinds: Sequence = (NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED),
             hosts_per_site: int = 1, wireguard: bool = False, classic: bool = False,
             hub_port: int = HUB_PORT, keepalive: int = 1,
             peer_listen_port: "int | Sequence[int] | Callable[[Host], int]" = 51820,
             tx_checksum: bool = True, amnezia=None) -> Topology:
    """Build the standard topology; see the module doc.

    `peer_listen_port`: the hosts' WireGuard listen port, one for all, a
    sequence (one per host, topology order) or a function of the Host such
    as `distinct_ports()` (see host_listen_port).

    `tx_checksum=False` turns transmit checksum offload off on every veth, so
    receivers verify UDP/IP checksums in software (on veth a stale checksum
    is otherwise delivered as if it were fine).
    """
    inet = lab.add_node("inet")
    lab.bridge(inet, "br0")
    hub = lab.add_node("hub")
    attach(lab, hub, "eth0", inet, "br0", "hub", f"{HUB_IP}/{WAN_NET.prefixlen}")
    sites = [add_site(lab, inet, "br0", i + 1, kind, hosts=hosts_per_site)
             for i, kind in enumerate(kinds)]
    topo = Topology(lab, inet, hub, HUB_IP, sites, hub_port=hub_port)
    for site in sites:
        for j, (node, ip) in enumerate(zip(site.hosts, site.host_ips)):
            topo.hosts.append(Host(site, j, node, ip))
    if not tx_checksum:
        for node, ifnames in [(hub, ["eth0"])] + [(s.router, ["wan"]) for s in sites] \
                + [(h.node, ["eth0"]) for h in topo.hosts]:
            for ifname in ifnames:
                node.set_tx_checksum(ifname, False)
    if wireguard:
        add_wireguard(topo, classic=classic, keepalive=keepalive, listen_port=peer_listen_port,
                      amnezia=amnezia)
    return topo


def host_listen_port(listen_port, n: int, host: Host) -> int:
    """The WireGuard listen port of the `n`-th host (topology order: site 1
    host 0, site 1 host 1, ..., site 2 host 0, ...): `listen_port` is one
    port for every host, a sequence of ports in that order, or a function
    of the Host."""
    if callable(listen_port):
        return int(listen_port(host))
    if isinstance(listen_port, int):
        return listen_port
    ports = list(listen_port)
    if n >= len(ports):
        raise ValueError(f"{len(ports)} listen ports for more hosts (host {n}: {host.name})")
    return int(ports[n])


def distinct_ports(base: int = 51820) -> Callable[[Host], int]:
    """Listen ports for `peer_listen_port` that differ between the hosts of
    one site (base + host index): what two WireGuard peers behind one NAT
    need so that a port-preserving NAT keeps their public ports apart."""
    return lambda host: base + host.index


def add_wireguard(topo: Topology, classic: bool = False, keepalive: int = 1,
                  listen_port: int = 51820, amnezia=None):
    """A WireGuard interface on the hub and on every host, each host peered with the hub."""
    topo.hub_wg = WireGuard.create(topo.hub, "hub", topo.hub_port, f"{HUB_OVERLAY_IP}/16",
                                   amnezia=amnezia)
    if classic:
        topo.hub.sysctl("net.ipv4.ip_forward", 1)
    for n, host in enumerate(topo.hosts):
        host.overlay_ip = str(OVERLAY[host.site.index * 256 + host.index + 1])
        host.wg = WireGuard.create(host.node, f"s{host.site.index}h{host.index}",
                                   host_listen_port(listen_port, n, host),
                                   f"{host.overlay_ip}/16", amnezia=amnezia)
        topo.hub_wg.set_peer(host.wg.public_key, allowed_ips=[f"{host.overlay_ip}/32"])
        host.wg.set_peer(topo.hub_wg.public_key, endpoint=f"{topo.hub_ip}:{topo.hub_port}",
                         allowed_ips=[str(OVERLAY) if classic else f"{HUB_OVERLAY_IP}/32"],
                         keepalive=keepalive)
    return topo
