"""The standard topology: a public hub and NATed sites on one "internet".

    inet (bridge br0, 198.18.0.0/24)
     ├── hub   eth0 198.18.0.254             WireGuard on HUB_PORT, 10.99.0.1
     ├── r1    wan 198.18.0.1  NAT ── r1h0 10.1.0.2   WireGuard 10.99.1.1
     └── r2    wan 198.18.0.2  NAT ── r2h0 10.2.0.2   WireGuard 10.99.2.1

IPv6 (`standard(families=...)`), per site: the same bridge carries the
IPv6 internet 2001:db8::/64 (WAN6_NET); the hub then holds 2001:db8::fe
beside 198.18.0.254 on eth0 (dual-stack), a site's router
2001:db8::<index> beside (or instead of) its IPv4 address, with an IPv6
router kind (netlab.nat.Router6Kind): FIREWALL (hosts on a global
2001:db8:<index>::/64, routed to the router by the hub, the other routers
and internet hosts), NAT66 or NAT66_SYMMETRIC (hosts on ULA
fd00:<index>::/64, translated to the router's address).  E.g. site 1
IPv4-only, site 2 IPv6-only behind a firewall:

    inet (bridge br0, 198.18.0.0/24 and 2001:db8::/64)
     ├── hub   eth0 198.18.0.254, 2001:db8::fe
     ├── r1    wan 198.18.0.1  NAT ─────────── r1h0 10.1.0.2
     └── r2    wan 2001:db8::2 firewall ────── r2h0 2001:db8:2::2

The tunnels (overlay 10.99.0.0/16) stay IPv4 whatever carries them; only
the WireGuard endpoints change family: a host's Endpoint for the hub is
`Topology.hub_endpoint(host)`, "[2001:db8::fe]:51820" for a host that
reaches the hub over IPv6.

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

`two_uplinks` is a hub with two uplinks, each to an internet of its own
(two providers, two VLANs), and a site behind each: what reaches the hub
on one interface is reflected out of the other (Interface = ["eth0",
"eth1"], docs/spec.md §4c).  Each site knows the hub by the address of its
own uplink:

    inet  bridge br0, 198.18.0.0/24 ── hub eth0 198.18.0.254
          └── r1 wan 198.18.0.1 NAT ── r1h0 10.1.0.2
    inet  bridge br1, 198.19.0.0/24 ── hub eth1 198.19.0.254
          └── r2 wan 198.19.0.2 NAT ── r2h0 10.2.0.2

`two_providers` is a hub multi-homed to two providers on one internet:
both sites reach both of its addresses, each provider forwards only the
address it gave the hub (BCP 38), and the hub's source policy routing
sends each address out by its provider (see its doc).

`two_uplinks(vlans=True)` carries both uplinks on one cable: the hub's
`eth0` and `eth1` are 802.1Q interfaces (tags 100 and 200) on its one
veth `trunk`, and the internet side splits the tags onto br0 and br1.

`two_uplinks(families=...)` makes a site, and its uplink, IPv6-only
(IPv4 and IPv6 on different NICs): site 1's segment is 2001:db8::/64
(the hub 2001:db8::fe), site 2's 2001:db8:0:1::/64 (the hub
2001:db8:0:1::fe), each site's IPv6 router of `kinds6`.  E.g.
families=("v4", "v6"): an IPv4 initiator on eth0, an IPv6-only responder
on eth1, every packet between them changing family and interface.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .lab import Lab, Node
from .nat import NatKind, Router6Kind, Site, add_site, attach
from .wireguard import WireGuard

WAN_NET = ipaddress.IPv4Network("198.18.0.0/24")   # RFC 2544 benchmarking space
HUB_IP = str(WAN_NET[254])
WAN6_NET = ipaddress.IPv6Network("2001:db8::/64")  # RFC 3849 documentation space
HUB_IP6 = str(WAN6_NET[0xfe])                      # 2001:db8::fe
# A site's families: which it has, and which its hosts reach the hub over
# (a dual-stack host prefers IPv6, as RFC 6724 has it, unless "dual-v4").
FAMILIES = {
    "v4": (("v4",), "v4"),
    "v6": (("v6",), "v6"),
    "dual": (("v4", "v6"), "v6"),
    "dual-v4": (("v4", "v6"), "v4"),
}
HUB_PORT = 51820
OVERLAY = ipaddress.IPv4Network("10.99.0.0/16")
HUB_OVERLAY_IP = "10.99.0.1"
# single_interface(): the hub's own link, behind the gateway router
HUB_LINK_NET = ipaddress.IPv4Network("198.18.1.0/24")
# two_uplinks(): the second internet, and the hub's address on it
WAN2_NET = ipaddress.IPv4Network("198.19.0.0/24")  # RFC 2544 benchmarking space too
HUB_IP2 = str(WAN2_NET[254])
WAN6_2_NET = ipaddress.IPv6Network("2001:db8:0:1::/64")  # two_uplinks' second, IPv6
HUB_IP6_2 = str(WAN6_2_NET[0xfe])                        # 2001:db8:0:1::fe
VLAN_TAGS = (100, 200)      # two_uplinks(vlans=True): eth0's tag, eth1's
# two_providers(): the hub's link to each provider, provider ::1, hub ::254
PROVIDER_NETS = (ipaddress.IPv4Network("198.18.1.0/24"), ipaddress.IPv4Network("198.18.2.0/24"))
PROVIDER_WAN_IPS = (str(WAN_NET[251]), str(WAN_NET[252]))
PROVIDER_TABLE = 102        # the hub's routing table for its second provider's address
GATEWAY_WAN_IP = str(WAN_NET[253])
GATEWAY_HUB_IP = str(HUB_LINK_NET[1])
SINGLE_HUB_IP = str(HUB_LINK_NET[254])


def endpoint(ip: str, port: int) -> str:
    """ip:port as WireGuard (and wgmux show) spell it: [v6]:port."""
    return f"[{ip}]:{port}" if ":" in str(ip) else f"{ip}:{port}"


def family_of(ip: str) -> str:
    return "v6" if ":" in str(ip) else "v4"


@dataclass
class Host:
    site: Site
    index: int
    node: Node
    lan_ip: Optional[str]                # IPv4 (None on an IPv6-only site)
    overlay_ip: Optional[str] = None
    wg: Optional[WireGuard] = None
    lan_ip6: Optional[str] = None        # IPv6 (None on an IPv4-only site)
    family: str = "v4"                   # the family it reaches the hub over

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def public_ip(self) -> str:
        """The address the hub sees this host's packets come from (over
        `family`): its router's, or its own behind an IPv6 FIREWALL."""
        return self.site.public_address(self.family, self.index)


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
    hub_ip6: Optional[str] = None        # the hub's IPv6 address (None: IPv4 only)
    # IPv6 routes every node on the internet needs: (FIREWALL site LAN, via)
    routes6: List[tuple] = field(default_factory=list)
    # two_uplinks(): site index -> the hub address that site reaches (the
    # hub's on the site's uplink, of the site's one family); a site not
    # named reaches hub_ip / hub_ip6
    site_hub_ips: Dict[int, str] = field(default_factory=dict)

    def hub_address(self, family: "str | Host") -> str:
        """The hub's address of `family` ("v4"/"v6", or a Host's family:
        for a Host, the address its site reaches the hub at)."""
        if isinstance(family, Host) and family.site.index in self.site_hub_ips \
                and family_of(self.site_hub_ips[family.site.index]) == family.family:
            return self.site_hub_ips[family.site.index]
        family = family.family if isinstance(family, Host) else family
        if family == "v6":
            if self.hub_ip6 is None:
                raise LookupError("the hub has no IPv6 address in this topology")
            return self.hub_ip6
        return self.hub_ip

    def hub_endpoint(self, family: "str | Host", port: Optional[int] = None) -> str:
        """hub:port (default the hub's WireGuard port) as a WireGuard
        Endpoint for `family` (or for a Host: the family it uses)."""
        return endpoint(self.hub_address(family), self.hub_port if port is None else port)

    def host(self, site: int, index: int = 0) -> Host:
        """Host `index` behind site `site` (sites count from 1)."""
        for h in self.hosts:
            if h.site.index == site and h.index == index:
                return h
        raise LookupError(f"no host {index} at site {site}")

    def add_internet_host(self, name: str, address_index: int, uplink: int = 1) -> Node:
        """A host with a public address on the internet segment (no NAT):
        WAN_NET[address_index], and WAN6_NET[address_index] (hex) when the
        topology has IPv6.  `uplink` 2: on two_uplinks()'s second segment
        (WAN2_NET[address_index], or WAN6_2_NET's when it is IPv6) instead."""
        if uplink == 2:
            if 2 not in self.site_hub_ips:
                raise ValueError("only two_uplinks() has a second internet segment")
            net = WAN6_2_NET if family_of(self.site_hub_ips[2]) == "v6" else WAN2_NET
            node = self.lab.add_node(name)
            attach(self.lab, node, "eth0", self.inet, "br1", f"y{address_index}",
                   f"{net[address_index]}/{net.prefixlen}")
            return node
        node = self.lab.add_node(name)
        addrs = [f"{WAN_NET[address_index]}/{WAN_NET.prefixlen}"]
        if self.hub_ip6 is not None:
            addrs.append(f"{WAN6_NET[address_index]}/{WAN6_NET.prefixlen}")
        attach(self.lab, node, "eth0", self.inet, "br0", f"x{address_index}", addrs)
        if self.gateway is not None:     # the hub's link is behind the gateway
            node.add_route(str(HUB_LINK_NET), gateway=GATEWAY_WAN_IP)
        for prefix, via in self.routes6:
            node.add_route(prefix, gateway=via)
        return node

    def describe(self) -> str:
        others = sorted(set(self.site_hub_ips.values()) - {self.hub_ip, self.hub_ip6})
        lines = [f"lab {self.lab.prefix}: hub {self.hub.netns} at {self.hub_ip}"
                 + (f" and {self.hub_ip6}" if self.hub_ip6 else "")
                 + "".join(f" and {ip}" for ip in others)
                 + (f", WireGuard {self.hub_wg.name} port {self.hub_port} "
                    f"({self.hub_wg.implementation}) key {self.hub_wg.public_key}"
                    if self.hub_wg else "")]
        for h in self.hosts:
            s = h.site
            where = []
            if s.nat:
                where.append(f"{h.lan_ip} behind {s.nat.kind.value} NAT {s.public_ip}")
            if s.nat6:
                where.append(f"{h.lan_ip6} behind IPv6 {s.nat6.kind.value} {s.public_ip6}")
            lines.append(f"  {h.node.netns}: {', '.join(where)} (hub over {h.family})"
                         + (f", WireGuard {h.wg.name} {h.overlay_ip} port {h.wg.listen_port} "
                            f"key {h.wg.public_key}" if h.wg else ""))
        return "\n".join(lines)


def standard(lab: Lab, kinds: Sequence = (NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED),
             hosts_per_site: int = 1, wireguard: bool = False, classic: bool = False,
             hub_port: int = HUB_PORT, keepalive: int = 1,
             peer_listen_port: "int | Sequence[int] | Callable[[Host], int]" = 51820,
             tx_checksum: bool = True, amnezia=None, families: "str | Sequence[str]" = "v4",
             kinds6: "Router6Kind | str | Sequence" = Router6Kind.FIREWALL) -> Topology:
    """Build the standard topology; see the module doc.  One site per entry
    of `kinds` (its IPv4 NAT kind).

    `families`: the address families of the sites, one value for every
    site or a sequence with one per site (site 1 first):
      "v4"       IPv4 only (the default: the topology of before IPv6);
      "v6"       IPv6 only (the site's entry in `kinds` is not used);
      "dual"     both; its hosts reach the hub over IPv6;
      "dual-v4"  both; its hosts reach the hub over IPv4.
    E.g. families=("v4", "v6"): site 1 IPv4-only, site 2 IPv6-only;
    families="v6": every site IPv6-only.  The hub is dual-stack (HUB_IP and
    HUB_IP6 on eth0) as soon as one site has IPv6, else IPv4 only.
    `kinds6`: the IPv6 router kind (netlab.nat.Router6Kind or its value)
    of every site with IPv6, one for all or one per site like `kinds`.
    Host.family says which family a host reaches the hub over, Host.public_ip
    what the hub sees, Topology.hub_endpoint(host) its Endpoint for the hub.

    `peer_listen_port`: the hosts' WireGuard listen port, one for all, a
    sequence (one per host, topology order) or a function of the Host such
    as `distinct_ports()` (see host_listen_port).

    `tx_checksum=False` turns transmit checksum offload off on every veth, so
    receivers verify UDP/IP checksums in software (on veth a stale checksum
    is otherwise delivered as if it were fine).
    """
    specs = _site_families(families, len(kinds))
    v6 = any("v6" in have for have, _ in specs)
    inet = lab.add_node("inet")
    lab.bridge(inet, "br0")
    hub = lab.add_node("hub")
    attach(lab, hub, "eth0", inet, "br0", "hub",
           [f"{HUB_IP}/{WAN_NET.prefixlen}"] + ([f"{HUB_IP6}/{WAN6_NET.prefixlen}"] if v6 else []))
    topo = _with_sites(lab, inet, hub, HUB_IP, kinds, hosts_per_site, hub_port,
                       specs=specs, kinds6=kinds6)
    if not tx_checksum:
        _tx_checksum_off(topo)
    if wireguard:
        add_wireguard(topo, classic=classic, keepalive=keepalive, listen_port=peer_listen_port,
                      amnezia=amnezia)
    return topo


def _site_families(families, n: int) -> list:
    """(families the site has, family its hosts reach the hub over), per site."""
    values = [families] * n if isinstance(families, str) else list(families)
    if len(values) != n:
        raise ValueError(f"{len(values)} families for {n} sites: {families!r}")
    try:
        return [FAMILIES[v] for v in values]
    except KeyError as e:
        raise ValueError(f"unknown family {e.args[0]!r}; known: {', '.join(FAMILIES)}") from None


def _per_site(value, n: int, what: str) -> list:
    if isinstance(value, (str, Router6Kind)):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise ValueError(f"{len(values)} {what} for {n} sites")
    return values


def _with_sites(lab: Lab, inet: Node, hub: Node, hub_ip: str, kinds: Sequence,
                hosts_per_site: int, hub_port: int, gateway: Optional[Node] = None,
                specs: Optional[list] = None,
                kinds6: "Router6Kind | Sequence" = Router6Kind.FIREWALL) -> Topology:
    """The NATed sites on the internet segment (default route via
    `gateway`'s WAN address when given) and the Topology holding them;
    `specs`: each site's families (_site_families), default IPv4 only."""
    n = len(kinds)
    specs = specs or _site_families("v4", n)
    kinds6 = _per_site(kinds6, n, "IPv6 kinds")
    sites = [add_site(lab, inet, "br0", i + 1, kind if "v4" in have else None,
                      hosts=hosts_per_site,
                      gateway=GATEWAY_WAN_IP if gateway is not None else None,
                      kind6=kinds6[i] if "v6" in have else None)
             for i, (kind, (have, _)) in enumerate(zip(kinds, specs))]
    v6 = any(s.nat6 for s in sites)
    topo = Topology(lab, inet, hub, hub_ip, sites, hub_port=hub_port, gateway=gateway,
                    hub_ip6=HUB_IP6 if v6 else None)
    if v6 and gateway is not None:
        raise ValueError("IPv6 sites behind the gateway topology are not built")
    # A FIREWALL site's LAN is global: the hub, the other routers (and
    # internet hosts added later) route it to the site's router.
    topo.routes6 = [(str(s.lan6), s.public_ip6) for s in sites
                    if s.nat6 and not s.nat6.kind.translates]
    for prefix, via in topo.routes6:
        for node in [hub] + [s.router for s in sites if s.nat6 and s.public_ip6 != via]:
            node.add_route(prefix, gateway=via)
    for site, (_, family) in zip(sites, specs):
        for j, node in enumerate(site.hosts):
            topo.hosts.append(Host(site, j, node, site.host_ips[j] if site.nat else None,
                                   lan_ip6=site.host_ips6[j] if site.nat6 else None,
                                   family=family))
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


def two_uplinks(lab: Lab, kinds: Sequence = (NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED),
                wireguard: bool = False, hub_port: int = HUB_PORT, keepalive: int = 1,
                peer_listen_port: "int | Sequence[int] | Callable[[Host], int]" = 51820,
                tx_checksum: bool = True, families: Sequence[str] = ("v4", "v4"),
                kinds6: "Router6Kind | str | Sequence" = Router6Kind.NAT66,
                vlans: bool = False) -> Topology:
    """The hub with two uplinks (`eth0` on 198.18.0.0/24, `eth1` on
    198.19.0.0/24, each its own internet segment), site 1 behind a NAT on
    the first and site 2 on the second; see the module doc.  Nothing
    routes between the two segments but the hub, and the hub does not
    forward (as standard()'s): only wgmux carries a packet from one to the
    other.

    `families`: per site (and so per uplink) "v4" or "v6": an IPv6 site
    sits behind an IPv6 router of `kinds6` (one for all or one per site)
    on an IPv6-only segment (2001:db8::/64, 2001:db8:0:1::/64), and the
    hub's uplink there has only IPv6.  `vlans`: eth0 and eth1 are VLANs
    (VLAN_TAGS) on one veth, `trunk`, instead of two veths.  The other
    parameters are standard()'s."""
    if len(kinds) != 2:
        raise ValueError(f"two_uplinks has two sites, one per uplink, not {len(kinds)}")
    families = list(families)
    if len(families) != 2 or not set(families) <= {"v4", "v6"}:
        raise ValueError(f"two_uplinks takes a family per site, each \"v4\" or \"v6\", "
                         f"not {families!r}")
    kinds6 = _per_site(kinds6, 2, "IPv6 kinds")
    inet = lab.add_node("inet")
    hub = lab.add_node("hub")
    if vlans:
        lab.link(hub, "trunk", inet, "hubtrunk")
    sites, hub_ips = [], {}
    for index, (bridge, wan, wan6, ifname, port) in enumerate(
            (("br0", WAN_NET, WAN6_NET, "eth0", "hub"),
             ("br1", WAN2_NET, WAN6_2_NET, "eth1", "hub1")), start=1):
        v6 = families[index - 1] == "v6"
        net = wan6 if v6 else wan
        hub_ips[index] = str(net[0xfe if v6 else 254])
        lab.bridge(inet, bridge)
        if vlans:
            tag = VLAN_TAGS[index - 1]
            lab.vlan(hub, "trunk", ifname, tag, f"{hub_ips[index]}/{net.prefixlen}")
            lab.vlan(inet, "hubtrunk", f"hubtrunk.{tag}", tag)
            lab.enslave(inet, f"hubtrunk.{tag}", bridge)
        else:
            attach(lab, hub, ifname, inet, bridge, port, f"{hub_ips[index]}/{net.prefixlen}")
        sites.append(add_site(lab, inet, bridge, index, None if v6 else kinds[index - 1],
                              wan_net=str(wan), kind6=kinds6[index - 1] if v6 else None,
                              wan6_net=str(wan6)))
    v4_ips = [ip for ip in hub_ips.values() if family_of(ip) == "v4"]
    v6_ips = [ip for ip in hub_ips.values() if family_of(ip) == "v6"]
    topo = Topology(lab, inet, hub, v4_ips[0] if v4_ips else v6_ips[0], sites,
                    hub_port=hub_port, hub_ip6=v6_ips[0] if v6_ips else None,
                    site_hub_ips=hub_ips)
    for site, family in zip(sites, families):
        if site.nat6 and not site.nat6.kind.translates:   # a FIREWALL's global LAN
            hub.add_route(str(site.lan6), gateway=site.public_ip6)
            topo.routes6.append((str(site.lan6), site.public_ip6))
        for j, node in enumerate(site.hosts):
            topo.hosts.append(Host(site, j, node, site.host_ips[j] if site.nat else None,
                                   lan_ip6=site.host_ips6[j] if site.nat6 else None,
                                   family=family))
    if not tx_checksum:
        _tx_checksum_off(topo, [(hub, "eth1")] + ([(hub, "trunk")] if vlans else []))
    if wireguard:
        add_wireguard(topo, keepalive=keepalive, listen_port=peer_listen_port)
    return topo


def two_providers(lab: Lab, kinds: Sequence = (NatKind.PORT_RESTRICTED,
                                               NatKind.PORT_RESTRICTED),
                  wireguard: bool = False, hub_port: int = HUB_PORT, keepalive: int = 1,
                  tx_checksum: bool = True, policy_routing: bool = True) -> Topology:
    """A hub multi-homed to two providers, as on the internet: both sites
    sit on the one internet segment (br0, as in standard()) and reach both
    of the hub's addresses; what tells the hub's uplinks apart is routing.

        inet br0 198.18.0.0/24 ── r1, r2 (NATed sites, as standard())
          ├── pA wan 198.18.0.251 ── 198.18.1.1  ── hub eth0 198.18.1.254
          └── pB wan 198.18.0.252 ── 198.18.2.1  ── hub eth1 198.18.2.254

    Each provider forwards from the hub only packets from the address it
    gave it (BCP 38: a packet from 198.18.2.254 sent to pA is dropped,
    counted in pA's nftables `netlab_bcp38`).  The hub's main table has
    the default route via pA; with `policy_routing` (what a multi-homed
    host needs), packets from 198.18.2.254 use table PROVIDER_TABLE, whose
    default route is via pB.  Site 1 knows the hub by 198.18.1.254 (pA),
    site 2 by 198.18.2.254 (pB).  The other parameters are standard()'s."""
    inet = lab.add_node("inet")
    lab.bridge(inet, "br0")
    hub = lab.add_node("hub")
    hub_ips = {}
    for n, (net, wan_ip, ifname) in enumerate(zip(PROVIDER_NETS, PROVIDER_WAN_IPS,
                                                  ("eth0", "eth1")), start=1):
        provider = lab.add_node(f"p{'AB'[n - 1]}", forwarding=True)
        attach(lab, provider, "wan", inet, "br0", f"p{n}", f"{wan_ip}/{WAN_NET.prefixlen}")
        hub_ips[n] = str(net[254])
        lab.link(provider, "hub0", hub, ifname, a_addr=f"{net[1]}/{net.prefixlen}",
                 b_addr=f"{hub_ips[n]}/{net.prefixlen}")
        provider.sysctl("net.ipv4.conf.all.send_redirects", 0)
        provider.run(["nft", "-f", "-"], input=(
            "table inet netlab_bcp38 {\n  chain forward {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f'    iifname "hub0" ip saddr != {net} counter drop\n  }}\n}}\n'))
    hub.add_route("default", gateway=str(PROVIDER_NETS[0][1]))
    if policy_routing:
        hub.ipr.route("add", dst="0.0.0.0/0", gateway=str(PROVIDER_NETS[1][1]),
                      table=PROVIDER_TABLE)
        hub.ipr.rule("add", src=hub_ips[2], src_len=32, table=PROVIDER_TABLE, priority=100)
    topo = _with_sites(lab, inet, hub, hub_ips[1], kinds, 1, hub_port)
    topo.site_hub_ips = hub_ips
    for site in topo.sites:
        for net, wan_ip in zip(PROVIDER_NETS, PROVIDER_WAN_IPS):
            site.router.add_route(str(net), gateway=wan_ip)
    if not tx_checksum:
        _tx_checksum_off(topo, [(hub, "eth1")])
    if wireguard:
        add_wireguard(topo, keepalive=keepalive)
    return topo


def bcp38_drops(topo: Topology) -> Dict[str, int]:
    """two_providers(): per provider ("pA", "pB"), the packets from the hub
    it dropped for a source address it did not give the hub."""
    out = {}
    for name in ("pA", "pB"):
        text = topo.lab.nodes[name].run(["nft", "list", "table", "inet", "netlab_bcp38"]).stdout
        out[name] = sum(int(n) for n in re.findall(r"counter packets (\d+)", text))
    return out


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
        host.wg.set_peer(topo.hub_wg.public_key, endpoint=topo.hub_endpoint(host),
                         allowed_ips=[str(OVERLAY) if classic else f"{HUB_OVERLAY_IP}/32"],
                         keepalive=keepalive)
    return topo
