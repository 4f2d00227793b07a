"""The next hop of a reflected packet, from bpf_fib_lookup() in
GoldenNet's namespace (harness/golden/fixtures.py): a neighbour not
resolved yet, a blackhole route, a device that does not forward."""

from __future__ import annotations

from typing import List

from wgmux import packet as pk
from harness.golden.builders import (
    Table, expect_session, hub, inbound, primed, reflected, transport, with_established,
    with_established_to)
from harness.golden.fixtures import (
    E_BLACKHOLE, E_I, E_NO_NEIGH, E_R, GW_MAC, HUB_MAC, HUB_PORT, IN_MAC, NOFWD4, NOFWD_MAC, P,
    R_IDX, Case)

AS_SENT = dict(ident=0x4242, flags=pk.IP_DF)     # inbound()'s IPv4 identification and flags


def rows() -> List[Case]:
    table = Table(seed="next_hops")
    msg = transport(R_IDX)
    # MACs as they came: the redirect leaves the neighbour to the kernel
    table.reflects("next_hop_no_neigh_left_to_kernel", msg, src=E_I, at=P,
                   out=pk.udp_frame(hub(HUB_PORT), E_NO_NEIGH, msg, src_mac=GW_MAC,
                                    dst_mac=HUB_MAC, ttl=63, **AS_SENT),
                   counter="reflect_transport", given=with_established_to(E_NO_NEIGH),
                   events="ev_nh_no_neigh",
                   then=expect_session(P, R_IDX, E_NO_NEIGH, HUB_PORT, nh_state="none"))
    table.drops("next_hop_blackhole_dropped", msg, src=E_I, at=P, counter="drop_no_route",
                untouched=False, given=with_established_to(E_BLACKHOLE))
    msg = transport(R_IDX)
    table.reflects("next_hop_forwarding_disabled",
                   frame=pk.udp_frame(E_I, (NOFWD4, P), msg, src_mac=GW_MAC, dst_mac=NOFWD_MAC,
                                      **AS_SENT),
                   out=pk.udp_frame((NOFWD4, HUB_PORT), E_R, msg, src_mac=GW_MAC,
                                    dst_mac=NOFWD_MAC, ttl=63, **AS_SENT),
                   counter="reflect_transport", given=with_established, dev="nofwd0",
                   events="ev_nh_fwd_disabled",
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, nh_state="neigh"))
    # in on one interface, out of another (cached): TC redirects it; XDP
    # would need the other device's XDP transmit, and passes (§4a)
    msg = transport(R_IDX)
    table.reflects("next_hop_other_interface_warm",
                   frame=pk.udp_frame(E_I, hub(P), msg, src_mac=GW_MAC, dst_mac=IN_MAC,
                                      **AS_SENT),
                   out=pk.udp_frame(hub(HUB_PORT), E_R, msg, src_mac=HUB_MAC, dst_mac=GW_MAC,
                                    ttl=63, **AS_SENT),
                   counter="reflect_transport", given=with_established, dev="in0", warm=True,
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, nh_state="direct"))
    # routes changed: the daemon bumps the generation, and the next packet
    # resolves again (TC's, also with XDP in front: §4, §4a)
    frame = inbound(E_I, hub(P), transport(R_IDX))
    table.reflects("next_hop_invalidated_resolved_again", frame=frame,
                   out=reflected(hub(HUB_PORT), E_R, pk.parse(frame).payload),
                   counter="reflect_transport",
                   given=(primed(with_established, frame), _invalidate),
                   events="ev_nh_resolved",
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, nh_state="direct"))
    return table.rows


def _invalidate(env):
    env.dp.invalidate_next_hops()
