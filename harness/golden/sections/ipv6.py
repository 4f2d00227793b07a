"""The same walk over IPv6: handshakes, transport, the hop limit, and
what IPv6 adds (extension headers); the other family is families.py's."""

from __future__ import annotations

from typing import List

from wgmux import packet as pk
from harness.golden.builders import (
    Table, expect_session, hub, inbound, inbound_ip, rand, response, transport,
    with_established, with_established6, with_established_to, with_half_open6, with_responder6)
from harness.golden.sections.handshakes import initiations_to_slow_path
from harness.golden.fixtures import (
    E_BLACKHOLE6, E_I6, E_R6, HUB_PORT, I_IDX, P, R_IDX, STRANGER_IDX, Case)

# a fragment header (next header UDP): not UDP as far as the datapath reads
FRAGMENT_OF_UDP = b"\x11\0\0\0\0\0\0\0"


def rows() -> List[Case]:
    table = Table(seed="ipv6")
    initiations_to_slow_path(table, "v6_", E_I6, E_R6, with_responder6)
    table.reflects("v6_response_reflected", response(), src=E_R6, at=HUB_PORT, to=E_I6,
                   counter="reflect_response", copied=True, given=with_half_open6,
                   events="ev_session_established ev_nh_resolved ev_slow_response",
                   then=expect_session(P, R_IDX, E_R6, HUB_PORT, expect=E_I6,
                                       reverse=(HUB_PORT, I_IDX)))
    to_responder = transport(R_IDX)
    table.reflects("v6_transport_i_to_r", to_responder, src=E_I6, at=P, to=E_R6,
                   counter="reflect_transport", given=with_established6,
                   events="ev_nh_resolved")
    table.reflects("v6_transport_i_to_r_warm", to_responder, src=E_I6, at=P, to=E_R6,
                   counter="reflect_transport", given=with_established6, warm=True, bench=True)
    table.reflects("v6_transport_r_to_i", transport(I_IDX, n=1000), src=E_R6, at=HUB_PORT,
                   to=E_I6, counter="reflect_transport", given=with_established6,
                   events="ev_nh_resolved")
    table.drops("v6_hop_limit1_dropped",
                frame=inbound(E_I6, hub(P, v6=True), transport(R_IDX), ttl=1),
                counter="drop_ttl", given=with_established6)
    table.drops("v6_unknown_index_peer_port_dropped", transport(STRANGER_IDX), src=E_I6, at=P,
                counter="drop_unknown_index", given=with_established6)
    table.passes("v6_extension_header_passes",
                 frame=inbound_ip(E_I6[0], FRAGMENT_OF_UDP + rand(40),
                                  nexthdr=pk.IPPROTO_FRAGMENT),
                 counter="pass_not_udp", given=with_established6)
    table.drops("v6_to_blackhole_dropped", transport(R_IDX), src=E_I6, at=P,
                counter="drop_no_route", untouched=False,
                given=with_established_to(E_BLACKHOLE6))
    return table.rows
