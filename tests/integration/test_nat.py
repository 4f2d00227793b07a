"""netlab NAT routers behave as their RFC 4787 names say.

Each test builds its own lab: an "internet" bridge (198.18.0.0/24), one NAT
site (router 198.18.0.2, host 10.2.0.2) and three outside hosts A, B, C.  The
inside host sends from UDP port 4000 to A and B; what A and B see is the
mapping.  Then A (same port, other port) and C (never contacted) send to that
mapping, and we check who gets through.
"""

from __future__ import annotations

import pytest

from netlab.lab import have_binary
from netlab.nat import Mapping, NatKind, add_site, attach, flush
from netlab.traffic import UdpAgent as Agent

def netlab(test):
    test = pytest.mark.skipif(not (have_binary("nft") and have_binary("conntrack")),
                              reason="needs nft and conntrack")(test)
    return pytest.mark.netlab(test)

A_IP, B_IP, C_IP = "198.18.0.101", "198.18.0.102", "198.18.0.103"
INSIDE_PORT, OUTSIDE_PORT, OTHER_PORT = 4000, 5000, 5001
ARRIVES = 5.0   # generous: a delivered datagram takes milliseconds on veth
ABSENT = 1.0    # how long to wait before believing a datagram was dropped

def outside_host(lab, inet, name: str, ip: str):
    node = lab.add_node(name)
    attach(lab, node, "eth0", inet, "br0", f"o{name}", f"{ip}/24")
    return node


def build(lab, kind):
    inet = lab.add_node("inet")
    lab.bridge(inet, "br0")
    site = add_site(lab, inet, "br0", 2, kind)
    hosts = {name: outside_host(lab, inet, name, ip)
             for name, ip in (("a", A_IP), ("b", B_IP), ("c", C_IP))}
    return site, hosts


@netlab
@pytest.mark.parametrize("kind", list(NatKind), ids=lambda k: k.value)
def test_mapping_and_filtering(lab, kind):
    site, out = build(lab, kind)
    inside = Agent(site.hosts[0], "0.0.0.0", INSIDE_PORT)
    a = Agent(out["a"], A_IP, OUTSIDE_PORT)
    b = Agent(out["b"], B_IP, OUTSIDE_PORT)

    inside.send(A_IP, OUTSIDE_PORT, "hello-a")
    inside.send(B_IP, OUTSIDE_PORT, "hello-b")
    seen_a, seen_b = a.source_of("hello-a"), b.source_of("hello-b")
    assert seen_a and seen_b, "the inside host could not reach the outside"
    assert seen_a[0] == seen_b[0] == site.public_ip, "not translated to the public address"

    # Mapping: one public port for every destination, or one each.
    if kind.endpoint_independent_mapping:
        assert seen_a == seen_b, f"{kind.value}: mapping depends on the destination"
        assert seen_a[1] == INSIDE_PORT, f"{kind.value}: source port not preserved"
    else:
        assert seen_a != seen_b, f"{kind.value}: same mapping towards A and B"

    mappings = site.nat.mappings()
    assert Mapping("udp", (site.host_ips[0], INSIDE_PORT), seen_a,
                   (A_IP, OUTSIDE_PORT)) in mappings, mappings

    # Filtering: send to A's mapping from ever more familiar endpoints.  The
    # exact contacted ip:port goes last and must always get through, so a
    # drop before it cannot be a dead path in disguise.
    probes = [  # sender, payload, let in?
        (Agent(out["c"], C_IP, 6000), "from-c", kind.filtering == "endpoint"),
        (Agent(out["a"], A_IP, OTHER_PORT), "from-a-other-port",
         kind.filtering in ("endpoint", "address")),
        (a, "from-a", True),
    ]
    for sender, payload, allowed in probes:
        sender.send(site.public_ip, seen_a[1], payload)
        src = inside.source_of(payload, ARRIVES if allowed else ABSENT)
        if not allowed:
            assert src is None, f"{kind.value}: {payload} got through"
            continue
        assert src == sender.address, f"{kind.value}: {payload} not let in (or rewritten)"
        # The answer must leave through the same mapping, or the sender
        # could not tell it from a stranger's packet.
        inside.send(*src, f"re-{payload}")
        assert sender.source_of(f"re-{payload}") == seen_a, \
            f"{kind.value}: reply to {payload} left from another mapping"

    assert {d for d, _ in inside.received} == {p for _, p, ok in probes if ok}, \
        f"{kind.value}: unexpected datagrams {inside.received}"

    if kind.filtering == "address+port":
        assert site.nat.learned() == {}
    else:
        assert site.nat.learned().get(seen_a[1]) == (site.host_ips[0], INSIDE_PORT), \
            site.nat.learned()


@netlab
@pytest.mark.parametrize("kind,mappings,let_in", [
    (NatKind.PORT_RESTRICTED, False, False),  # conntrack was the only state
    (NatKind.FULL_CONE, False, True),         # the learned map outlives conntrack
    (NatKind.FULL_CONE, True, False),         # ... unless flushed too
], ids=["port-restricted", "full-cone-keep-map", "full-cone-flush-map"])
def test_flush(lab, kind, mappings, let_in):
    site, out = build(lab, kind)
    inside = Agent(site.hosts[0], "0.0.0.0", INSIDE_PORT)
    a = Agent(out["a"], A_IP, OUTSIDE_PORT)

    inside.send(A_IP, OUTSIDE_PORT, "hello")
    seen = a.source_of("hello")
    assert seen and site.nat.mappings(), "no mapping to flush"

    flush(site, mappings=mappings)
    assert site.nat.mappings() == [], "conntrack table not flushed"
    kept = kind is NatKind.FULL_CONE and not mappings
    assert bool(site.nat.learned()) == kept, f"learned map kept={not kept}"

    a.send(site.public_ip, seen[1], "after-flush")
    got = inside.source_of("after-flush", ARRIVES if let_in else ABSENT)
    assert (got is not None) == let_in, f"after flush, {kind.value} let in: {got}"

    # Sending again from inside opens the NAT again, on the same port.
    inside.send(A_IP, OUTSIDE_PORT, "hello-again")
    assert a.source_of("hello-again") == seen, "mapping changed after flush"
    a.send(site.public_ip, seen[1], "after-reopen")
    assert inside.source_of("after-reopen") == a.address, "NAT did not reopen"


def test_kind_names():
    assert NatKind.parse("easy") is NatKind.PORT_RESTRICTED
    assert NatKind.parse("easyaf") is NatKind.ADDRESS_RESTRICTED
    assert NatKind.parse("hard") is NatKind.SYMMETRIC
    assert NatKind.parse("one2one") is NatKind.FULL_CONE
    assert NatKind.parse("FULL_CONE") is NatKind.FULL_CONE
    assert NatKind.parse("address-restricted") is NatKind.ADDRESS_RESTRICTED
    with pytest.raises(ValueError):
        NatKind.parse("cone")
