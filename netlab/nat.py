"""NAT routers with named behaviours, built from nftables inside a node.

IPv4 NAT kinds (`NatKind`, below) and IPv6 router kinds (`Router6Kind`,
further down: a stateful firewall without NAT, NAT66); a site's router may
run one of each (dual-stack), or only one family.  A NAT router is a node with a WAN interface holding one public
address and a LAN interface facing the hosts behind it.  Its behaviour is
one of the RFC 4787 combinations that matter for UDP hole punching
(`NatKind`); the names in brackets are Tailscale natlab's:

==================  ==========================  ===============================
kind                mapping                     filtering (unsolicited inbound)
==================  ==========================  ===============================
FULL_CONE           endpoint-independent        endpoint-independent
                    (~"one2one")                (anyone may send to the mapping)
ADDRESS_RESTRICTED  endpoint-independent        address-dependent
                    ("easyaf")                  (any port of a contacted address)
PORT_RESTRICTED     endpoint-independent        address-and-port-dependent
                    ("easy", plain Linux)       (only the exact contacted ip:port)
SYMMETRIC           endpoint-dependent          address-and-port-dependent
                    ("hard")                    (a new public port per destination)
==================  ==========================  ===============================

How the rulesets work (see `ruleset()` for the text):

- Mapping is Linux conntrack SNAT to the public address.  Linux keeps the
  inside source port when the resulting tuple is unique, which is what makes
  it endpoint-independent in practice: one inside socket gets the same public
  port towards every destination.  SYMMETRIC adds `random`, which makes the
  kernel draw a fresh port for every new conntrack entry, i.e. per
  destination ip:port.
- Address-and-port-dependent filtering is what conntrack gives for free: only
  packets matching the reply tuple of an entry are translated back; anything
  else is addressed to the router itself and dropped by its input chain.
- For the two looser filters the router learns, from its own packet path,
  each public port's inside endpoint (map `portmap`) and, for
  ADDRESS_RESTRICTED, which remote addresses each public port has sent to
  (set `contacted`).  The learning chain hooks postrouting *after* srcnat, so
  it sees the translated source port and can read the inside endpoint from
  the conntrack entry.  A new inbound flow (no conntrack entry) to a learned
  public port is then DNATed to that inside endpoint - unconditionally for
  FULL_CONE, only from a contacted address for ADDRESS_RESTRICTED.

Limits (documented rather than modelled):

- UDP only for the learned (EIF/ADF) part; TCP behaves as PORT_RESTRICTED.
- Endpoint independence comes from port preservation, so it holds as long as
  no two inside hosts use the same source port towards the same remote.  If
  they do, the second one gets another port for that remote (exactly what a
  Linux home router does).  Give hosts behind one NAT distinct ports.
- SYMMETRIC draws ports at random from 1024-65535 (1-1023 for a privileged
  source port): two destinations get the same port with probability ~1/64k.
- No hairpinning: a host cannot reach another host of its own LAN through
  the public address.
- Learned entries expire `mapping_timeout` seconds after the last *outbound*
  packet (default 180 s, longer than conntrack's 30 s unreplied / 120 s
  stream UDP timeouts), independently of conntrack: flows already let in
  keep working on their conntrack entries, only new strangers are refused.
  `flush(mappings=True)` clears them at once.
- After `flush()`, the next outbound packet creates a new conntrack entry; with
  port preservation it usually gets the *same* public port again.  The
  mapping changes only for SYMMETRIC, or if the old port is taken meanwhile.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import List, Optional

from .lab import Lab, Node

TABLE = "netlab_nat"
TABLE6 = "netlab_nat6"
WAN_NET = "198.18.0.0/24"
WAN6_NET = "2001:db8::/64"     # RFC 3849 documentation space: the IPv6 internet


class NatKind(str, enum.Enum):
    """RFC 4787 mapping + filtering behaviour of a NAT router."""

    FULL_CONE = "full-cone"
    ADDRESS_RESTRICTED = "address-restricted"
    PORT_RESTRICTED = "port-restricted"
    SYMMETRIC = "symmetric"

    @property
    def endpoint_independent_mapping(self) -> bool:
        return self is not NatKind.SYMMETRIC

    @property
    def filtering(self) -> str:
        """RFC 4787 filtering: "endpoint", "address" or "address+port"."""
        return {NatKind.FULL_CONE: "endpoint",
                NatKind.ADDRESS_RESTRICTED: "address"}.get(self, "address+port")

    @classmethod
    def parse(cls, name: "str | NatKind") -> "NatKind":
        """Accept a kind, its value, its member name or a natlab alias."""
        if isinstance(name, cls):
            return name
        key = str(name).strip().lower().replace("_", "-")
        if key in _ALIASES:
            return _ALIASES[key]
        for kind in cls:
            if key in (kind.value, kind.name.lower().replace("_", "-")):
                return kind
        raise ValueError(f"unknown NAT kind {name!r}; known: "
                         f"{', '.join(k.value for k in cls)} or {', '.join(_ALIASES)}")


# Tailscale natlab (tstest/natlab/vnet) names.  "one2one" there is a static
# 1:1 NAT with every port open; FULL_CONE is the closest single-address
# behaviour (open only on ports an inside host has used).
_ALIASES = {
    "one2one": NatKind.FULL_CONE,
    "easyaf": NatKind.ADDRESS_RESTRICTED,
    "easy": NatKind.PORT_RESTRICTED,
    "hard": NatKind.SYMMETRIC,
}


def ruleset(kind: NatKind, wan_if: str, lan_if: str, public_ip: str,
            mapping_timeout: int = 180) -> str:
    """The nftables script that turns a router into a NAT of `kind`.

    It replaces any previous `netlab_nat` table atomically (one transaction),
    so it can be re-applied to change a router's kind.
    """
    kind = NatKind.parse(kind)
    ipaddress.IPv4Address(public_ip)  # IPv4 only: fail early, not inside nft
    wan, lan = json.dumps(wan_if), json.dumps(lan_if)
    learns = kind in (NatKind.FULL_CONE, NatKind.ADDRESS_RESTRICTED)

    sets, dnat, learn = [], [], []
    if learns:
        sets.append(
            # public port -> inside ip . port, refreshed by every outbound packet
            f"map portmap {{ type inet_service : ipv4_addr . inet_service; "
            f"flags dynamic,timeout; timeout {mapping_timeout}s; }}")
        # Original direction: the inside host opened the flow.  Reply
        # direction: a flow let in by the DNAT below; the inside endpoint is
        # then the reply tuple's source.  Both keep the mapping alive.
        learn += [
            f"iifname {lan} oifname {wan} ct direction original "
            f"update @portmap {{ udp sport : ct original ip saddr . ct original proto-src }}",
            f"iifname {lan} oifname {wan} ct direction reply "
            f"update @portmap {{ udp sport : ct reply ip saddr . ct reply proto-src }}",
        ]
        # Only flows without a conntrack entry reach a nat chain, so this
        # sees exactly the unsolicited inbound packets.  A missing key ends
        # the rule (no match) and the packet stays addressed to the router.
        match = ""
        if kind is NatKind.ADDRESS_RESTRICTED:
            sets.append(
                # remote address . public port the inside has sent from
                f"set contacted {{ type ipv4_addr . inet_service; "
                f"flags dynamic,timeout; timeout {mapping_timeout}s; }}")
            learn.append(f"iifname {lan} oifname {wan} "
                         f"update @contacted {{ ip daddr . udp sport }}")
            match = "ip saddr . udp dport @contacted "
        dnat.append(f"iifname {wan} {match}dnat ip to udp dport map @portmap")

    snat = f"iifname {lan} oifname {wan} snat ip to {public_ip}"
    if kind is NatKind.SYMMETRIC:
        snat += " random"  # skip port preservation: a new port per conntrack entry

    def block(lines):
        return "".join(f"\n        {line}" for line in lines)

    return f"""\
table ip {TABLE}
delete table ip {TABLE}
table ip {TABLE} {{{block(sets)}
    chain nat_in {{
        type nat hook prerouting priority dstnat; policy accept;{block(dnat)}
    }}
    chain nat_out {{
        type nat hook postrouting priority srcnat; policy accept;{block([snat])}
    }}
    # After srcnat, so the packet carries its public source port.
    chain learn {{
        type filter hook postrouting priority srcnat + 10; policy accept;{block(learn)}
    }}
    # Unsolicited packets that found no mapping end here: drop them silently,
    # as home routers do, instead of answering with ICMP port unreachable.
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname {wan} ct state established,related accept
        iifname {wan} icmp type echo-request accept
        iifname {wan} drop
    }}
    # Keep the outside from routing straight into the LAN: only replies and
    # flows this NAT chose to DNAT may pass inwards.
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname {wan} ct state established,related accept
        iifname {wan} ct status dnat accept
        iifname {wan} drop
    }}
}}
"""


@dataclass(frozen=True)
class Mapping:
    """One conntrack entry seen from the NAT: inside -> public, towards remote."""

    proto: str
    inside: tuple   # (ip, port) on the LAN
    public: tuple   # (ip, port) as the remote sees it
    remote: tuple   # (ip, port) outside


class NatRouter:
    """A NAT of one `NatKind` on `node`, between `wan_if` and `lan_if`.

    Constructing it applies the ruleset; `apply()` re-applies (e.g. after
    changing `kind`).  The node must forward IPv4.
    """

    def __init__(self, node: Node, kind, wan_if: str, lan_if: str, public_ip: str,
                 mapping_timeout: int = 180):
        self.node = node
        self.kind = NatKind.parse(kind)
        self.wan_if, self.lan_if = wan_if, lan_if
        self.public_ip = str(ipaddress.IPv4Address(public_ip))
        self.mapping_timeout = mapping_timeout
        self.apply()

    def __repr__(self):
        return f"<NatRouter {self.node.name} {self.kind.value} {self.public_ip}>"

    def ruleset(self) -> str:
        return ruleset(self.kind, self.wan_if, self.lan_if, self.public_ip,
                       self.mapping_timeout)

    def apply(self, kind=None):
        if kind is not None:
            self.kind = NatKind.parse(kind)
        self.node.run(["nft", "-f", "-"], input=self.ruleset())

    def flush(self, mappings: bool = False):
        """Forget every conntrack entry (what a NAT reboot or timeout does).

        With `mappings`, also forget the learned public ports (FULL_CONE and
        ADDRESS_RESTRICTED), so unsolicited inbound packets are dropped until
        the inside sends again.
        """
        self.node.run(["conntrack", "-F"], check=False)  # exits 1 on an empty table
        if mappings and self.kind in (NatKind.FULL_CONE, NatKind.ADDRESS_RESTRICTED):
            names = [("map", "portmap")]
            if self.kind is NatKind.ADDRESS_RESTRICTED:
                names.append(("set", "contacted"))
            self.node.run(["nft", "-f", "-"], input="".join(
                f"flush {what} ip {TABLE} {name}\n" for what, name in names))

    def mappings(self, proto: str = "udp") -> List[Mapping]:
        """Current translations, read from the router's conntrack table.

        Covers flows opened from inside (SNAT) and flows let in by the
        learned map (DNAT); each is reported from the inside host's view.
        Port-based protocols only (udp, tcp).
        """
        out = self.node.run(["conntrack", "-L", "-p", proto], check=False).stdout
        found = []
        for line in out.splitlines():
            kv = re.findall(r"\b(src|dst|sport|dport)=(\S+)", line)
            if len(kv) < 8:
                continue
            o, r = dict(kv[:4]), dict(kv[4:8])  # original tuple, then reply tuple
            if o["src"] != self.public_ip and r["dst"] == self.public_ip:
                # inside opened it: inside -> remote, replies come to public
                found.append(Mapping(proto, (o["src"], int(o["sport"])),
                                     (r["dst"], int(r["dport"])),
                                     (o["dst"], int(o["dport"]))))
            elif o["dst"] == self.public_ip and r["src"] != self.public_ip:
                # let in: remote -> public, DNATed to the inside host
                found.append(Mapping(proto, (r["src"], int(r["sport"])),
                                     (o["dst"], int(o["dport"])),
                                     (o["src"], int(o["sport"]))))
        return found

    def learned(self) -> dict:
        """The learned public port -> (inside ip, port) map; {} for kinds without one."""
        if self.kind not in (NatKind.FULL_CONE, NatKind.ADDRESS_RESTRICTED):
            return {}
        out = self.node.run(["nft", "-j", "list", "map", "ip", TABLE, "portmap"]).stdout
        table = {}
        for item in json.loads(out)["nftables"]:
            for elem in item.get("map", {}).get("elem", ()):
                key, value = elem
                if isinstance(key, dict):  # {"elem": {"val": port, "timeout": ..}}
                    key = key["elem"]["val"]
                ip, port = value["concat"]
                table[int(key)] = (ip, int(port))
        return table


class Router6Kind(str, enum.Enum):
    """What a site's router does to IPv6 (there is no RFC 4787 zoo here:
    both kinds filter like conntrack, address-and-port-dependent).

    ================  ==============================  ============================
    kind              source seen outside             unsolicited inbound
    ================  ==============================  ============================
    FIREWALL          the host's own (global)         dropped; only replies pass
                      address and port, untouched     (ct established,related)
    NAT66             the router's WAN address, the   dropped; only replies pass
                      host's port kept when free
                      (endpoint-independent, like
                      PORT_RESTRICTED)
    NAT66_SYMMETRIC   the router's WAN address, a     dropped; only replies pass
                      new random port per remote
                      ip:port (like SYMMETRIC)
    ================  ==============================  ============================

    FIREWALL is the common home router (RFC 6092's recommendation, what
    CPE ship): hosts have global addresses from a routed prefix, the router
    lets in only what answers something sent out.  NAT66 is `snat ip6 to`
    the WAN address (hosts hold ULA addresses the outside cannot route to).
    """

    FIREWALL = "firewall"
    NAT66 = "nat66"
    NAT66_SYMMETRIC = "nat66-symmetric"

    @property
    def translates(self) -> bool:
        return self is not Router6Kind.FIREWALL

    @property
    def endpoint_independent_mapping(self) -> bool:
        return self is not Router6Kind.NAT66_SYMMETRIC

    @property
    def filtering(self) -> str:
        return "address+port"

    @classmethod
    def parse(cls, name: "str | Router6Kind") -> "Router6Kind":
        if isinstance(name, cls):
            return name
        key = str(name).strip().lower().replace("_", "-")
        for kind in cls:
            if key in (kind.value, kind.name.lower().replace("_", "-")):
                return kind
        raise ValueError(f"unknown IPv6 router kind {name!r}; known: "
                         f"{', '.join(k.value for k in cls)}")


def lan6_of(index: int, kind6) -> ipaddress.IPv6Network:
    """Site `index`'s IPv6 LAN: a ULA fd00:<index>::/64 behind NAT66 (nobody
    outside can route to it), a global 2001:db8:<index>::/64 behind a
    FIREWALL (the internet routes it to the router's WAN address)."""
    kind6 = Router6Kind.parse(kind6)
    return ipaddress.IPv6Network(f"{'fd00' if kind6.translates else '2001:db8'}:{index:x}::/64")


def ruleset6(kind6, wan_if: str, lan_if: str, public_ip6: str) -> str:
    """The nftables script (table ip6 netlab_nat6) for an IPv6 router of
    `kind6`; like ruleset(), it replaces a previous one atomically."""
    kind6 = Router6Kind.parse(kind6)
    ipaddress.IPv6Address(public_ip6)
    wan, lan = json.dumps(wan_if), json.dumps(lan_if)
    nat = ""
    if kind6.translates:
        snat = f"iifname {lan} oifname {wan} snat ip6 to {public_ip6}"
        if kind6 is Router6Kind.NAT66_SYMMETRIC:
            snat += " random"
        nat = f"""
    chain nat_out {{
        type nat hook postrouting priority srcnat; policy accept;
        {snat}
    }}"""
    return f"""\
table ip6 {TABLE6}
delete table ip6 {TABLE6}
table ip6 {TABLE6} {{{nat}
    # The router itself: replies, neighbour discovery (without it nothing
    # on the WAN could find the router) and ping; the rest silently dropped.
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname {wan} ct state established,related accept
        iifname {wan} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert, echo-request }} accept
        iifname {wan} drop
    }}
    # Inwards only what answers something sent out (and its ICMPv6
    # errors, "related": packet too big); new inbound flows are dropped.
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname {wan} ct state established,related accept
        iifname {wan} drop
    }}
}}
"""


class Router6:
    """An IPv6 router of one `Router6Kind` on `node` (WAN `wan_if` holding
    `public_ip6`, LAN `lan_if`); constructing it applies the ruleset.  The
    node must forward IPv6."""

    def __init__(self, node: Node, kind6, wan_if: str, lan_if: str, public_ip6: str):
        self.node = node
        self.kind = Router6Kind.parse(kind6)
        self.wan_if, self.lan_if = wan_if, lan_if
        self.public_ip6 = str(ipaddress.IPv6Address(public_ip6))
        self.apply()

    def __repr__(self):
        return f"<Router6 {self.node.name} {self.kind.value} {self.public_ip6}>"

    def ruleset(self) -> str:
        return ruleset6(self.kind, self.wan_if, self.lan_if, self.public_ip6)

    def apply(self, kind6=None):
        if kind6 is not None:
            self.kind = Router6Kind.parse(kind6)
        self.node.run(["nft", "-f", "-"], input=self.ruleset())

    def flush(self, mappings: bool = False):
        """Forget every IPv6 conntrack entry (`mappings`: nothing more to forget)."""
        self.node.run(["conntrack", "-F", "-f", "ipv6"], check=False)

    def mappings(self, proto: str = "udp") -> List[Mapping]:
        """Flows opened from inside, from the IPv6 conntrack table: inside
        -> public (the same address and port behind a FIREWALL) -> remote."""
        out = self.node.run(["conntrack", "-L", "-f", "ipv6", "-p", proto], check=False).stdout
        found = []
        for line in out.splitlines():
            kv = re.findall(r"\b(src|dst|sport|dport)=(\S+)", line)
            if len(kv) < 8:
                continue
            o, r = dict(kv[:4]), dict(kv[4:8])
            if o["src"] == self.public_ip6:
                continue                      # the router's own
            found.append(Mapping(proto, (o["src"], int(o["sport"])),
                                 (r["dst"], int(r["dport"])), (o["dst"], int(o["dport"]))))
        return found


def flush(router: "NatRouter | Router6 | Site", mappings: bool = False):
    """`flush` of a router, or of every router of a site (conntrack -F in
    the router, IPv4 and IPv6)."""
    routers = [r for r in (router.nat, router.nat6) if r] if isinstance(router, Site) else [router]
    for r in routers:
        r.flush(mappings=mappings)


@dataclass
class Site:
    """A site: a router with public addresses and hosts behind it.

    IPv4 (`nat`, `public_ip`, `lan`, `host_ips`) and IPv6 (`nat6`,
    `public_ip6`, `lan6`, `host_ips6`) are each None / empty when the site
    does not have that family."""

    index: int
    router: Node
    nat: Optional[NatRouter]
    public_ip: Optional[str]
    lan: Optional[ipaddress.IPv4Network]
    hosts: List[Node] = field(default_factory=list)
    host_ips: List[str] = field(default_factory=list)
    nat6: Optional[Router6] = None
    public_ip6: Optional[str] = None     # the router's WAN address
    lan6: Optional[ipaddress.IPv6Network] = None
    host_ips6: List[str] = field(default_factory=list)

    @property
    def kind(self) -> "NatKind | Router6Kind":
        """The IPv4 NAT kind; the IPv6 router kind of an IPv6-only site."""
        return self.nat.kind if self.nat else self.nat6.kind

    @property
    def kind6(self) -> Optional[Router6Kind]:
        return self.nat6.kind if self.nat6 else None

    @property
    def families(self) -> tuple:
        """("v4",), ("v6",) or ("v4", "v6")."""
        return tuple(f for f, r in (("v4", self.nat), ("v6", self.nat6)) if r)

    def public_address(self, family: str, host: int = 0) -> str:
        """The source address the outside sees from host `host` over
        `family` ("v4"/"v6"): the router's, or the host's own behind an
        IPv6 FIREWALL."""
        if family == "v4":
            return self.public_ip
        return self.public_ip6 if self.nat6.kind.translates else self.host_ips6[host]


def attach(lab: Lab, node: Node, ifname: str, inet: Node, bridge: str, port: str,
           cidr: "Optional[str | list]" = None):
    """Plug `node` into the `inet` bridge with a veth (`port` is the bridge
    end); `cidr`: an address or a list of them."""
    lab.link(node, ifname, inet, port, a_addr=cidr)
    lab.enslave(inet, port, bridge)


def add_site(lab: Lab, inet: Node, bridge: str, index: int, kind, hosts: int = 1,
             wan_net: str = WAN_NET, gateway: Optional[str] = None,
             mapping_timeout: int = 180, kind6=None, wan6_net: str = WAN6_NET) -> Site:
    """Build site `index`: router r<index>, hosts r<index>h0.., IPv4 NAT of
    `kind` (None: no IPv4) and IPv6 router of `kind6` (None: no IPv6).

    IPv4: the router's WAN `wan` is the `index`-th address of `wan_net`
    (198.18.0.<index>), plugged into `bridge` on `inet` through the bridge
    port `s<index>` (keep other bridge ports off that pattern).  Its LAN is
    a bridge `lan` holding 10.<index>.0.1/24; host j is 10.<index>.0.<j+2>/24
    on `eth0` with a default route via the router.  Everything on `wan_net` is on-link for the router; give `gateway` for a
    default route beyond it.

    IPv6: the WAN also holds the `index`-th address of `wan6_net`
    (2001:db8::<index>/64, hex), the LAN `lan6_of(index, kind6)` (::1 the
    router, ::<j+2> host j, default route via ::1).  A FIREWALL site's LAN
    is global: whoever must reach its hosts needs a route to `lan6` via
    `public_ip6` (netlab.topology adds them).
    """
    if kind is None and kind6 is None:
        raise ValueError(f"site {index} has neither IPv4 (kind) nor IPv6 (kind6)")
    if not 1 <= hosts <= 253:
        raise ValueError(f"a site holds 1..253 hosts, not {hosts}")
    wan_addrs, lan_addrs = [], []
    public_ip = lan = public_ip6 = lan6 = None
    if kind is not None:
        kind = NatKind.parse(kind)
        net = ipaddress.IPv4Network(wan_net)
        if not 1 <= index <= min(254, net.num_addresses - 2):
            raise ValueError(f"site index {index} out of range for {wan_net} and 10.<index>.0.0/24")
        public_ip = str(net[index])
        lan = ipaddress.IPv4Network(f"10.{index}.0.0/24")
        wan_addrs.append(f"{public_ip}/{net.prefixlen}")
        lan_addrs.append(f"{lan[1]}/{lan.prefixlen}")
    if kind6 is not None:
        kind6 = Router6Kind.parse(kind6)
        net6 = ipaddress.IPv6Network(wan6_net)
        if not 1 <= index <= 0xfffe:
            raise ValueError(f"site index {index} out of range for IPv6 LAN prefixes")
        public_ip6 = str(net6[index])
        lan6 = lan6_of(index, kind6)
        wan_addrs.append(f"{public_ip6}/{net6.prefixlen}")
        lan_addrs.append(f"{lan6[1]}/{lan6.prefixlen}")

    router = lab.add_node(f"r{index}", forwarding=True)
    attach(lab, router, "wan", inet, bridge, f"s{index}", wan_addrs)
    if gateway:
        router.add_route("default", gateway=gateway)
    lab.bridge(router, "lan")
    for cidr in lan_addrs:
        router.add_address("lan", cidr)
    nat = NatRouter(router, kind, "wan", "lan", public_ip, mapping_timeout) if kind else None
    nat6 = Router6(router, kind6, "wan", "lan", public_ip6) if kind6 else None

    site = Site(index, router, nat, public_ip, lan, nat6=nat6, public_ip6=public_ip6, lan6=lan6)
    for j in range(hosts):
        host = lab.add_node(f"r{index}h{j}")
        port = f"lan{j}"
        addrs = ([f"{lan[j + 2]}/{lan.prefixlen}"] if lan else []) \
            + ([f"{lan6[j + 2]}/{lan6.prefixlen}"] if lan6 else [])
        lab.link(router, port, host, "eth0", b_addr=addrs)
        lab.enslave(router, port, "lan")
        site.hosts.append(host)
        if lan:
            host.add_route("default", gateway=str(lan[1]))
            site.host_ips.append(str(lan[j + 2]))
        if lan6:
            host.add_route("default", gateway=str(lan6[1]))
            site.host_ips6.append(str(lan6[j + 2]))
    return site
