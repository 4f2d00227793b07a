"""Traffic that is not WireGuard to the hub's ports at all: other
protocols, other ethertypes, other UDP ports.  Passed, counted by why."""

from __future__ import annotations

from typing import List

from wgmux import packet as pk
from harness.golden.builders import Table, inbound_ip, rand, transport, with_established
from harness.golden.fixtures import DNS_PORT, E_I, GW_MAC, HUB_MAC, OTHER_PORT, R_IDX, Case

ETH_P_8021Q = 0x8100
ICMP_ECHO = b"\x08\0"


def rows() -> List[Case]:
    table = Table(seed="not_ours")
    table.passes("tcp_passes", frame=inbound_ip(E_I[0], rand(40), proto=pk.IPPROTO_TCP),
                 counter="pass_not_udp", given=with_established)
    table.passes("icmp_passes",
                 frame=inbound_ip(E_I[0], ICMP_ECHO + rand(30), proto=pk.IPPROTO_ICMP),
                 counter="pass_not_udp", given=with_established)
    table.passes("arp_passes",
                 frame=pk.ethernet("ff:ff:ff:ff:ff:ff", GW_MAC, pk.ETH_P_ARP, rand(28)),
                 counter="pass_not_ip", given=with_established)
    table.passes("vlan_passes", frame=pk.ethernet(HUB_MAC, GW_MAC, ETH_P_8021Q, rand(60)),
                 counter="pass_not_ip", given=with_established)
    table.passes("dns_other_port_passes", rand(40), src=E_I, at=DNS_PORT,
                 counter="pass_other_port", given=with_established, bench=True)
    table.passes("transport_other_port_passes", transport(R_IDX), src=E_I, at=OTHER_PORT,
                 counter="pass_other_port", given=with_established)
    return table.rows
