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

`single_interface` is the VPS case: the hub has one interface, on a link
to one router, and everything it talks to is reached through that router,
so every packet it reflects leaves through the interface it arrived on
(what XDP_TX needs):

    inet (bridge br0, 198.18.0.0/24)
     ├── gw    wan 198.18.0.253 ── hub0 198.18.1.1/24 ── hub eth0 198.18.1.254/24
     ├── r1    wan 198.18.0.1  NAT (default via gw) ── r1h0 10.1.0.2
     └── r2    wan 198.18.0.2  NAT (default via gw) ── r2h0 10.2.0.2
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
# single_interface(): the hub's own link, behind the gateway router
HUB_LINK_NET = ipaddress.IPv4Network("198.18.1.0/24")
GATEWAY_WAN_IP = str(WAN_NET[253])
GATEWAY_HUB_IP = str(HUB_LINK_NET[1])
SINGLE_HUB_IP = str(HUB_LINK_NET[254])


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
    # single_interface(): the router in front of the hub (None: the hub
    # sits on the internet segment itself, as in standard())
    gateway: Optional[Node] = None

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
        if self.gateway is not None:     # the hub's link is behind the gateway
            node.add_route(str(HUB_LINK_NET), gateway=GATEWAY_WAN_IP)
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
    topo = _with_sites(lab, inet, hub, HUB_IP, kinds, hosts_per_site, hub_port)
    if not tx_checksum:
        _tx_checksum_off(topo)
    if wireguard:
        add_wireguard(topo, classic=classic, keepalive=keepalive, listen_port=peer_listen_port,
                      amnezia=amnezia)
    return topo


def _with_sites(lab: Lab, inet: Node, hub: Node, hub_ip: str, kinds: Sequence,
                hosts_per_site: int, hub_port: int, gateway: Optional[Node] = None) -> Topology:
    """The NATed sites on the internet segment (default route via
    `gateway`'s WAN address when given) and the Topology holding them."""
    sites = [add_site(lab, inet, "br0", i + 1, kind, hosts=hosts_per_site,
                      gateway=GATEWAY_WAN_IP if gateway is not None else None)
             for i, kind in enumerate(kinds)]
    topo = Topology(lab, inet, hub, hub_ip, sites, hub_port=hub_port, gateway=gateway)
    for site in sites:
        for j, (node, ip) in enumerate(zip(site.hosts, site.host_ips)):
            topo.hosts.append(Host(site, j, node, ip))
    return topo


def _tx_checksum_off(topo: Topology, more=()):
    """Transmit checksum offload off on the hub's, the routers' and the
    hosts' interfaces (and `more`: (node, ifname) pairs)."""
    for node, ifname in [(topo.hub, "eth0")] + [(s.router, "wan") for s in topo.sites] \
            + [(h.node, "eth0") for h in topo.hosts] + list(more):
        node.set_tx_checksum(ifname, False)


def single_interface(lab: Lab, kinds: Sequence = (NatKind.PORT_RESTRICTED,
                                                  NatKind.PORT_RESTRICTED),
                     hosts_per_site: int = 1, wireguard: bool = False,
                     hub_port: int = HUB_PORT, keepalive: int = 1,
                     peer_listen_port: "int | Sequence[int] | Callable[[Host], int]" = 51820,
                     tx_checksum: bool = True, napi: bool = True) -> Topology:
    """The hub with one interface (`eth0`) behind one router (`gw`), both
    NATed sites reached through that router; see the module doc.  The
    other parameters are standard()'s.

    `napi` makes both ends of the hub's link (hub `eth0`, gw `hub0`)
    receive through NAPI, as a VPS's NIC does: GRO on (veth has NAPI only
    then, or with an XDP program) and TSO off (veth hands a packet to the
    peer's NAPI only if GRO could merge it, which for a sender with TSO on
    excludes forwarded UDP); and gw's end takes what the hub's XDP sends
    back (XDP_TX), which a veth does only with an XDP program of its own
    (netlab.xdp).  The hub's receive path then runs in NAPI whatever the
    hub runs, in a thread of its own when threaded NAPI is on
    (harness.bench_modes pins it to a core).  GRO does not merge
    forwarded UDP (no UDP GRO forwarding), so packets stay as sent.
    """
    inet = lab.add_node("inet")
    lab.bridge(inet, "br0")
    gw = lab.add_node("gw", forwarding=True)
    attach(lab, gw, "wan", inet, "br0", "gw", f"{GATEWAY_WAN_IP}/{WAN_NET.prefixlen}")
    hub = lab.add_node("hub")
    lab.link(gw, "hub0", hub, "eth0", a_addr=f"{GATEWAY_HUB_IP}/{HUB_LINK_NET.prefixlen}",
             b_addr=f"{SINGLE_HUB_IP}/{HUB_LINK_NET.prefixlen}")
    hub.add_route("default", gateway=GATEWAY_HUB_IP)
    # the hub's link is one hop: no ICMP redirects from the gateway
    gw.sysctl("net.ipv4.conf.all.send_redirects", 0)
    gw.sysctl("net.ipv4.conf.hub0.send_redirects", 0)
    if napi:
        for node, ifname in ((gw, "hub0"), (hub, "eth0")):
            node.run(["ethtool", "-K", ifname, "gro", "on", "tso", "off"])
        gw.take_xdp_frames("hub0")
    topo = _with_sites(lab, inet, hub, SINGLE_HUB_IP, kinds, hosts_per_site, hub_port, gw)
    if not tx_checksum:
        _tx_checksum_off(topo, [(gw, "wan"), (gw, "hub0")])
    if wireguard:
        add_wireguard(topo, keepalive=keepalive, listen_port=peer_listen_port)
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
