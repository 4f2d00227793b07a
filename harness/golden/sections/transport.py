"""Transport over IPv4 between an established pair, and the initiator
roaming (docs/spec.md §3, §5)."""

from __future__ import annotations

from typing import List

from harness.golden.builders import (
    Table, expect_session, hub, inbound, primed, transport, with_established)
from harness.golden.fixtures import (
    E_I, E_I_MOVED, E_R, HUB_PORT, I_IDX, P, R_IDX, STRANGER_IDX, Case)


def rows() -> List[Case]:
    table = Table(seed="transport")
    to_responder = transport(R_IDX)
    table.reflects("transport_i_to_r", to_responder, src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established, events="ev_nh_resolved",
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, packets=1, nh_state="direct"))
    table.reflects("transport_i_to_r_warm", to_responder, src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established, warm=True,
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, packets=2), bench=True)
    to_initiator = transport(I_IDX, n=1280)
    table.reflects("transport_r_to_i", to_initiator, src=E_R, at=HUB_PORT, to=E_I,
                   counter="reflect_transport", given=with_established, events="ev_nh_resolved",
                   then=expect_session(HUB_PORT, I_IDX, E_I, P, packets=1))
    table.reflects("transport_r_to_i_warm", to_initiator, src=E_R, at=HUB_PORT, to=E_I,
                   counter="reflect_transport", given=with_established, warm=True, bench=True)
    table.reflects("keepalive_i_to_r", transport(R_IDX, n=0), src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established, events="ev_nh_resolved")
    table.drops("transport_peer_port_unknown_dropped", transport(STRANGER_IDX), src=E_I, at=P,
                counter="drop_unknown_index", given=with_established)
    # An index the datapath does not know, on HubPort, is the hub's own
    # WireGuard's: the commonest packet the hub passes.
    hubs_own = transport(STRANGER_IDX)
    table.passes("transport_hub_port_unknown_passes", hubs_own, src=E_R, at=HUB_PORT,
                 counter="pass_hub", given=with_established)
    table.passes("transport_hub_port_own_wireguard", hubs_own, src=E_R, at=HUB_PORT,
                 counter="pass_hub", given=with_established, bench=True)
    table.drops("transport_i_to_r_ttl1_dropped",
                frame=inbound(E_I, hub(P), transport(R_IDX), ttl=1), counter="drop_ttl",
                given=with_established,
                then=expect_session(P, R_IDX, E_R, HUB_PORT, packets=0))

    # -- roaming ------------------------------------------------------------------
    roamed = transport(R_IDX)
    table.reflects("transport_i_roamed_updates_reverse", roamed, src=E_I_MOVED, at=P, to=E_R,
                   counter="reflect_transport",
                   given=primed(with_established, inbound(E_R, hub(HUB_PORT), transport(I_IDX))),
                   events="ev_roam ev_nh_resolved",
                   then=(expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I_MOVED,
                                        reverse=(HUB_PORT, I_IDX)),
                         expect_session(HUB_PORT, I_IDX, E_I_MOVED, P, reverse=(P, R_IDX),
                                        nh_state="none")))
    table.drops("transport_i_roamed_roaming_off_dropped", roamed, src=E_I_MOVED, at=P,
                counter="drop_not_expected", given=with_established, roaming=False,
                then=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=(P, R_IDX)))
    # the initiator's NAT rebinds mid-stream: its direction's next hop is
    # cached, so XDP finishes the roam (docs/spec.md §4a, §5)
    table.reflects("transport_i_roamed_warm", transport(R_IDX, counter=8), src=E_I_MOVED, at=P,
                   to=E_R, counter="reflect_transport",
                   given=primed(with_established, inbound(E_I, hub(P), transport(R_IDX))),
                   events="ev_roam",
                   then=(expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I_MOVED),
                         expect_session(HUB_PORT, I_IDX, E_I_MOVED, P, nh_state="none")))
    return table.rows
