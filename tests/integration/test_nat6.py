"""netlab's IPv6 routers behave as netlab.nat.Router6Kind says, and the
standard topology builds IPv4, IPv6 and dual-stack sites.

Like test_nat.py, with plain UDP sockets (netlab.traffic.UdpAgent): an
"internet" bridge carrying 2001:db8::/64, one site (router 2001:db8::2)
and three outside hosts A, B, C.  The inside host sends from UDP port 4000
to A and B; what they see is the mapping (the host's own address behind a
FIREWALL, the router's behind NAT66).  Then C (never contacted), A from
another port, and A from the contacted port send to it: only the last gets
in, and the answer to it leaves through the same mapping.
"""

from __future__ import annotations

import ipaddress

import pytest

from netlab.lab import have_binary
from netlab.nat import Mapping, NatKind, Router6Kind, add_site, attach, flush
from netlab.topology import HUB_IP, HUB_IP6, WAN6_NET, standard
from netlab.traffic import UdpAgent, ping


def netlab(test):
    test = pytest.mark.skipif(not (have_binary("nft") and have_binary("conntrack")),
                              reason="needs nft and conntrack")(test)
    return pytest.mark.netlab(test)


A_IP, B_IP, C_IP = (str(WAN6_NET[n]) for n in (0x101, 0x102, 0x103))
A_IP4 = "198.18.0.101"
INSIDE_PORT, OUTSIDE_PORT, OTHER_PORT = 4000, 5000, 5001
ABSENT = 1.0    # how long to wait before believing a datagram was dropped
# what wgmux (bpf/wgmux.c martian6) refuses as a peer's source
MARTIANS6 = [ipaddress.IPv6Network(n) for n in ("::/64", "fe80::/10", "ff00::/8")]


def outside_host(lab, inet, site, name: str, ip: str, ip4=None):
    node = lab.add_node(name)
    attach(lab, node, "eth0", inet, "br0", f"o{name}",
           [f"{ip}/64"] + ([f"{ip4}/24"] if ip4 else []))
    if site.nat6 and not site.nat6.kind.translates:       # a routed (global) LAN
        node.add_route(str(site.lan6), gateway=site.public_ip6)
    return node


def build(lab, kind6, kind=None):
    inet = lab.add_node("inet")
    lab.bridge(inet, "br0")
    site = add_site(lab, inet, "br0", 2, kind, kind6=kind6)
    hosts = {name: outside_host(lab, inet, site, name, ip, A_IP4 if name == "a" else None)
             for name, ip in (("a", A_IP), ("b", B_IP), ("c", C_IP))}
    return site, hosts


@netlab
@pytest.mark.parametrize("kind6", list(Router6Kind), ids=lambda k: k.value)
def test_mapping_and_filtering(lab, kind6):
    site, out = build(lab, kind6)
    inside_ip = site.host_ips6[0]
    assert not any(ipaddress.ip_address(x) in n for x in (inside_ip, site.public_ip6)
                   for n in MARTIANS6)
    inside = UdpAgent(site.hosts[0], "::", INSIDE_PORT)
    a = UdpAgent(out["a"], A_IP, OUTSIDE_PORT)
    b = UdpAgent(out["b"], B_IP, OUTSIDE_PORT)

    assert inside.send(A_IP, OUTSIDE_PORT, "hello-a")
    assert inside.send(B_IP, OUTSIDE_PORT, "hello-b")
    seen_a, seen_b = a.source_of("hello-a"), b.source_of("hello-b")
    assert seen_a and seen_b, "the inside host could not reach the outside"
    # Source: the router's address (NAT66), or the host's own (firewall).
    public = site.public_ip6 if kind6.translates else inside_ip
    assert seen_a[0] == seen_b[0] == public, (seen_a, seen_b)
    assert site.public_address("v6") == public
    if kind6.endpoint_independent_mapping:
        assert seen_a == seen_b == (public, INSIDE_PORT), \
            f"{kind6.value}: port not kept, or mapping depends on the destination"
    else:
        assert seen_a != seen_b, f"{kind6.value}: same mapping towards A and B"
    assert Mapping("udp", (inside_ip, INSIDE_PORT), seen_a, (A_IP, OUTSIDE_PORT)) \
        in site.nat6.mappings(), site.nat6.mappings()

    # Filtering: only the exact contacted ip:port gets in; it goes last, so
    # a drop before it cannot be a dead path in disguise.
    probes = [  # sender, payload, let in?
        (UdpAgent(out["c"], C_IP, 6000), "from-c", False),
        (UdpAgent(out["a"], A_IP, OTHER_PORT), "from-a-other-port", False),
        (a, "from-a", True),
    ]
    for sender, payload, allowed in probes:
        assert sender.send(*seen_a, payload)
        src = inside.source_of(payload, None if allowed else ABSENT)
        if not allowed:
            assert src is None, f"{kind6.value}: {payload} got through"
            continue
        assert src == sender.address, f"{kind6.value}: {payload} not let in (or rewritten)"
        inside.send(*src, f"re-{payload}")
        assert sender.source_of(f"re-{payload}") == seen_a, \
            f"{kind6.value}: reply to {payload} left from another mapping"
    assert {d for d, _ in inside.received} == {"from-a"}, inside.received

    # A port nobody inside ever sent from is closed too, even with a socket
    # behind it (the firewall's whole point); once it sends, replies pass.
    quiet = UdpAgent(site.hosts[0], "::", INSIDE_PORT + 1)
    c = probes[0][0]
    target = (public, INSIDE_PORT + 1)
    assert c.send(*target, "unsolicited")
    assert quiet.source_of("unsolicited", ABSENT) is None, "unsolicited inbound got through"
    assert quiet.send(C_IP, 6000, "out")
    opened = c.source_of("out")
    assert opened and opened[0] == public
    assert c.send(*opened, "reply")
    assert quiet.source_of("reply") == (C_IP, 6000)


@netlab
@pytest.mark.parametrize("kind6", [Router6Kind.FIREWALL, Router6Kind.NAT66],
                         ids=lambda k: k.value)
def test_flush(lab, kind6):
    """Flushing the router's conntrack closes what was open; the next
    packet out opens it again, on the same port (no symmetric NAT here)."""
    site, out = build(lab, kind6)
    inside = UdpAgent(site.hosts[0], "::", INSIDE_PORT)
    a = UdpAgent(out["a"], A_IP, OUTSIDE_PORT)
    inside.send(A_IP, OUTSIDE_PORT, "hello")
    seen = a.source_of("hello")
    assert seen and site.nat6.mappings(), "no mapping to flush"

    flush(site)
    assert site.nat6.mappings() == [], "conntrack table not flushed"
    a.send(*seen, "after-flush")
    assert inside.source_of("after-flush", ABSENT) is None, "let in after the flush"

    inside.send(A_IP, OUTSIDE_PORT, "hello-again")
    assert a.source_of("hello-again") == seen, "mapping changed after flush"
    a.send(*seen, "after-reopen")
    assert inside.source_of("after-reopen") == a.address, "did not reopen"


@netlab
def test_dual_stack_site(lab):
    """One router, both families: IPv4 NATed (port-restricted), IPv6
    behind the firewall, each with its own behaviour; each host's address
    and routes are of the site's families only."""
    site, out = build(lab, Router6Kind.FIREWALL, kind=NatKind.PORT_RESTRICTED)
    assert site.families == ("v4", "v6")
    inside4 = UdpAgent(site.hosts[0], "0.0.0.0", INSIDE_PORT)
    inside6 = UdpAgent(site.hosts[0], "::", INSIDE_PORT)
    a4 = UdpAgent(out["a"], A_IP4, OUTSIDE_PORT)
    a6 = UdpAgent(out["a"], A_IP, OUTSIDE_PORT)
    inside4.send(A_IP4, OUTSIDE_PORT, "v4")
    inside6.send(A_IP, OUTSIDE_PORT, "v6")
    assert a4.source_of("v4") == (site.public_ip, INSIDE_PORT)
    assert a6.source_of("v6") == (site.host_ips6[0], INSIDE_PORT)
    a4.send(site.public_ip, INSIDE_PORT, "r4")
    a6.send(site.host_ips6[0], INSIDE_PORT, "r6")
    assert inside4.source_of("r4") == (A_IP4, OUTSIDE_PORT)
    assert inside6.source_of("r6") == (A_IP, OUTSIDE_PORT)
    # each family's state is its own: flushing conntrack forgets both
    flush(site)
    a4.send(site.public_ip, INSIDE_PORT, "late4")
    a6.send(site.host_ips6[0], INSIDE_PORT, "late6")
    assert inside4.source_of("late4", ABSENT) is None
    assert inside6.source_of("late6", ABSENT) is None


@netlab
def test_standard_per_site_families(lab):
    """standard(families=("v4", "v6")): site 1 IPv4-only, site 2 IPv6-only
    (firewall), the hub dual-stack; each host has a session with the hub's
    own WireGuard over its own family, and cannot reach the hub over the
    other one (it has no address of it)."""
    topo = standard(lab, wireguard=True, families=("v4", "v6"))
    h1, h2 = topo.host(1), topo.host(2)
    assert (h1.family, h2.family) == ("v4", "v6")
    assert (topo.hub_ip, topo.hub_ip6) == (HUB_IP, HUB_IP6)
    hub_addrs = set(topo.hub.addresses("eth0"))
    assert {HUB_IP, HUB_IP6} <= hub_addrs, hub_addrs
    assert h1.lan_ip6 is None and h2.lan_ip is None
    assert topo.hub_endpoint(h2) == f"[{HUB_IP6}]:{topo.hub_port}"
    for h, ip in ((h1, topo.sites[0].public_ip), (h2, h2.lan_ip6)):
        state = topo.hub_wg.wait_handshake(h.wg.public_key)
        assert state.endpoint.rsplit(":", 1)[0].strip("[]") == ip == h.public_ip, state
        assert ping(h.node, "10.99.0.1")
    assert ping(h1.node, HUB_IP) and not ping(h1.node, HUB_IP6)
    assert ping(h2.node, HUB_IP6) and not ping(h2.node, HUB_IP)
    # the hub reaches the firewalled site's global prefix only through the
    # firewall (a route), and gets no new flow in
    assert not ping(topo.hub, h2.lan_ip6)
    for a in [HUB_IP6, h2.lan_ip6, topo.sites[1].public_ip6]:
        assert not any(ipaddress.ip_address(a) in n for n in MARTIANS6), a


@netlab
def test_standard_v6_only_has_no_ipv4_paths(lab):
    """families="v6", NAT66: every host reaches the hub over IPv6 from its
    router's address; nothing of IPv4 outside the hub's own address."""
    topo = standard(lab, wireguard=True, families="v6", kinds6=Router6Kind.NAT66)
    for h, site in zip(topo.hosts, topo.sites):
        assert site.families == ("v6",) and site.nat is None
        state = topo.hub_wg.wait_handshake(h.wg.public_key)
        assert state.endpoint == f"[{site.public_ip6}]:51820", state
        assert not [a for a in h.node.addresses("eth0") if "." in a]
    assert ping(topo.host(1).node, "10.99.0.1")


def test_kind6_names():
    assert Router6Kind.parse("firewall") is Router6Kind.FIREWALL
    assert Router6Kind.parse("NAT66") is Router6Kind.NAT66
    assert Router6Kind.parse("nat66_symmetric") is Router6Kind.NAT66_SYMMETRIC
    assert not Router6Kind.FIREWALL.translates and Router6Kind.NAT66.translates
    with pytest.raises(ValueError):
        Router6Kind.parse("npt")
