"""Handshakes over IPv4: initiations, responses and cookies.

Initiations are never reflected here: on a peer port the datapath queues
them for the slow path (mac1 against the responder's key, wgmux.slowpath)
and drops the original; on HubPort it queues a copy and passes them
(docs/spec.md §9).  A reflected response on HubPort is also copied to the
slow path: its mac1 names the initiator, which the hub learns.
"""

from __future__ import annotations

from typing import List

from harness.golden.builders import (
    Endpoint, Table, cookie, expect_no_sessions, expect_session, expect_sessions, hub, inbound,
    initiation, primed, response, transport, with_established, with_half_open, with_responder)
from harness.golden.fixtures import (
    E_I, E_I6, E_I_MOVED, E_R, HUB_PORT, I_IDX, OTHER_PORT, P, P_NOEP, R_IDX, STRANGER_IDX,
    Case, Env, Setup)


def with_sender_index_taken(env: Env):
    """Half-open, and the responder's would-be index on P already belongs
    to someone else."""
    with_half_open(env)
    env.dp.set_session(P, STRANGER_IDX, E_I_MOVED, HUB_PORT)


def with_half_open_from_responder(env: Env):
    """A responder-initiated handshake (docs/spec.md §9): R's initiation
    came in on HubPort, the slow path opened (P, R's sender) -> {E_R, from
    HubPort} and sent it to E_I from P; I's response comes back on P."""
    with_responder(env)
    env.dp.set_session(P, R_IDX, E_R, HUB_PORT, expect=E_I)


def initiations_to_slow_path(table: Table, prefix: str, initiator: Endpoint,
                             responder: Endpoint, state: Setup) -> None:
    """An initiation on a peer port goes to the slow path instead of on;
    one from the responder on HubPort passes, and a copy goes there.
    Neither opens a session: the slow path does, once mac1 is checked."""
    table.queues(f"{prefix}init_peer_port_to_slow_path", initiation(), src=initiator, at=P,
                 counter="slow_initiation", given=state, then=expect_no_sessions)
    table.passes(f"{prefix}init_hub_port_passes_and_copied", initiation(), src=responder,
                 at=HUB_PORT, counter="slow_hub_initiation", copied=True, given=state,
                 then=expect_no_sessions)


def rows() -> List[Case]:
    table = Table(seed="handshakes")

    # -- initiations ------------------------------------------------------------
    initiations_to_slow_path(table, "", E_I, E_R, with_responder)
    table.drops("init_peer_port_no_responder_endpoint", initiation(), src=E_I, at=P_NOEP,
                counter="drop_no_responder", given=with_responder, then=expect_no_sessions)
    table.passes("init_hub_port_established_passes_and_copied", initiation(), src=E_R,
                 at=HUB_PORT, counter="slow_hub_initiation", copied=True,
                 given=with_established, then=expect_sessions(2))
    table.passes("init_hub_port_not_from_a_responder_not_copied", initiation(), src=E_I,
                 at=HUB_PORT, counter="pass_hub", given=with_responder, then=expect_no_sessions)
    table.passes("init_hub_port_from_responder_other_port_not_copied", initiation(),
                 src=(E_R[0], E_R[1] + 1), at=HUB_PORT, counter="pass_hub",
                 given=with_responder, then=expect_no_sessions)
    table.passes("init_other_port_passes", initiation(), src=E_I, at=OTHER_PORT,
                 counter="pass_other_port", given=with_responder, then=expect_no_sessions)
    table.drops("init_short_dropped", initiation()[:-1], src=E_I, at=P,
                counter="drop_unclassified", given=with_responder, then=expect_no_sessions)
    table.drops("init_oversized_dropped", initiation() + b"\0", src=E_I, at=P,
                counter="drop_unclassified", given=with_responder, then=expect_no_sessions)
    table.passes("init_short_hub_port_passes", initiation()[:-1], src=E_R, at=HUB_PORT,
                 counter="pass_hub", given=with_responder)
    table.drops("init_ttl1_dropped_no_state", frame=inbound(E_I, hub(P), initiation(), ttl=1),
                counter="drop_ttl", untouched=False, given=with_responder,
                then=expect_no_sessions)
    table.queues("init_ttl2_to_slow_path", frame=inbound(E_I, hub(P), initiation(), ttl=2),
                 counter="slow_initiation", given=with_responder)
    table.passes("init_ttl1_hub_port_copied",
                 frame=inbound(E_R, hub(HUB_PORT), initiation(), ttl=1),
                 counter="slow_hub_initiation", copied=True, given=with_responder)

    # -- responses ----------------------------------------------------------------
    table.reflects("response_hub_port_half_open_reflected", response(), src=E_R, at=HUB_PORT,
                   to=E_I, counter="reflect_response", copied=True, given=with_half_open,
                   events="ev_session_established ev_nh_resolved ev_slow_response",
                   then=(expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I,
                                        reverse=(HUB_PORT, I_IDX), packets=0),
                         expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_R,
                                        reverse=(P, R_IDX), packets=1, nh_state="direct")))
    table.reflects("response_duplicate_reflected_again", response(), src=E_R, at=HUB_PORT,
                   to=E_I, counter="reflect_response", copied=True, given=with_established,
                   events="ev_nh_resolved ev_slow_response", then=expect_sessions(2))
    table.drops("response_sender_index_clash_dropped", response(sender=STRANGER_IDX),
                src=E_R, at=HUB_PORT, counter="drop_index_clash",
                given=with_sender_index_taken,
                then=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None))
    table.reflects("response_responder_initiated_reflected",
                   response(sender=I_IDX, receiver=R_IDX), src=E_I, at=P, to=E_R,
                   counter="reflect_response", given=with_half_open_from_responder,
                   events="ev_session_established ev_nh_resolved",
                   then=(expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_R, reverse=(P, R_IDX),
                                        packets=0),
                         expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I,
                                        reverse=(HUB_PORT, I_IDX), packets=1)))
    answer = inbound(E_I, hub(P), response(sender=I_IDX, receiver=R_IDX))
    table.reflects("transport_after_responder_initiated", transport(I_IDX), src=E_R,
                   at=HUB_PORT, to=E_I, counter="reflect_transport",
                   given=primed(with_half_open_from_responder, answer), events="ev_nh_resolved",
                   then=expect_session(HUB_PORT, I_IDX, E_I, P, packets=1))
    table.passes("response_hub_port_unknown_passes", response(receiver=STRANGER_IDX), src=E_R,
                 at=HUB_PORT, counter="pass_hub", given=with_half_open, then=expect_sessions(1))
    table.drops("response_peer_port_unknown_dropped", response(receiver=STRANGER_IDX),
                src=E_R, at=P, counter="drop_unknown_index", given=with_half_open,
                then=expect_sessions(1))

    # -- cookies --------------------------------------------------------------------
    table.reflects("cookie_r_to_i_reflected", cookie(I_IDX), src=E_R, at=HUB_PORT, to=E_I,
                   counter="reflect_cookie", given=with_half_open, events="ev_nh_resolved",
                   # reflected, but a half-open entry is never refreshed
                   then=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None, packets=0))
    table.reflects("cookie_i_to_r_reflected", cookie(R_IDX), src=E_I, at=P, to=E_R,
                   counter="reflect_cookie", given=with_established, events="ev_nh_resolved")
    table.drops("cookie_peer_port_unknown_dropped", cookie(STRANGER_IDX), src=E_R, at=P,
                counter="drop_unknown_index", given=with_established)
    # a second one (the initiator retried) finds the next hop the first
    # cached: XDP finishes it (docs/spec.md §4a), and still refreshes nothing
    table.reflects("cookie_r_to_i_again_warm", cookie(I_IDX), src=E_R, at=HUB_PORT, to=E_I,
                   counter="reflect_cookie", given=with_half_open, warm=True,
                   then=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None, packets=0,
                                       nh_state="direct"))
    return table.rows
