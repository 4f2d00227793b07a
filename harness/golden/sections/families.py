"""Mixed families (docs/spec.md §4b): an IPv4 initiator and an IPv6
responder, or the reverse, through one dual-stack hub.  The outer header is
replaced, the packet leaves from the hub's address of the target's family
that the target's owner talks to (the session's `via`), and a packet that
cannot make the change is dropped and counted, never sent broken."""

from __future__ import annotations

from typing import List

from harness.golden.builders import (
    Table, established, expect_no_sessions, expect_session, hub, inbound, initiation, response,
    transport)
from harness.golden.fixtures import (
    E_I, E_I6, E_I_MOVED, E_R, E_R6, HUB4, HUB6, HUB_PORT, I_IDX, NOFWD4, P, R_IDX, Case, Env)

E_R6_MOVED = ("2001:db8:200::21", 51999)

# The largest transport payload whose IPv4 packet still fits pub0 (MTU 1500)
# once it is IPv6: 1420-byte tunnel MTU, WireGuard's default for exactly this.
FITS = 1420


def _via(env: Env, address: str) -> int:
    return env.dp.via_of(address)


def with_responder6_only(env: Env):
    """P's responder at an IPv6 endpoint."""
    env.dp.set_responder(P, *E_R6)


def with_v4_hub_only(env: Env):
    """The hub has no IPv6 address on Interface."""
    env.dp.set_hub_addresses((HUB4,))


def with_half_open_4to6(env: Env):
    """I (IPv4) sent an initiation to HUB4:P; the slow path sent it on to
    R (IPv6) and opened (HubPort, I's sender) -> E_I, via HUB4."""
    with_responder6_only(env)
    env.dp.set_session(HUB_PORT, I_IDX, E_I, P, expect=E_R6, via=_via(env, HUB4))


with_4to6 = established(E_I, E_R6, HUB4, HUB6)      # v4 initiator, v6 responder
with_6to4 = established(E_I6, E_R, HUB6, HUB4)      # v6 initiator, v4 responder


def with_4to6_first_address(env: Env):
    """The v4 initiator's entry written without `via` (0): the hub's first
    IPv4 address (NOFWD4 sorts first) is used."""
    with_4to6(env)
    env.dp.set_session(HUB_PORT, I_IDX, E_I, P, expect=E_R6, reverse=(P, R_IDX))


def rows() -> List[Case]:
    table = Table(seed="families")
    t = "ev_translated_4to6"
    f = "ev_translated_6to4"

    # -- handshakes ----------------------------------------------------------------
    table.queues("v4_init_to_v6_responder_to_slow_path", initiation(), src=E_I, at=P,
                 counter="slow_initiation", given=with_responder6_only)
    table.queues("v6_init_to_v4_responder_to_slow_path", initiation(), src=E_I6, at=P,
                 counter="slow_initiation",
                 given=lambda env: env.dp.set_responder(P, *E_R))
    table.drops("v4_init_to_v6_responder_without_v6_hub_address_dropped", initiation(),
                src=E_I, at=P, counter="drop_family",
                given=(with_responder6_only, with_v4_hub_only), then=expect_no_sessions)
    table.reflects("v6_response_to_v4_initiator_translated", response(), src=E_R6,
                   at=HUB_PORT, to=E_I, via=HUB4, counter="reflect_response", copied=True,
                   given=with_half_open_4to6,
                   events=f"ev_session_established ev_nh_resolved ev_slow_response {f}",
                   then=expect_session(P, R_IDX, E_R6, HUB_PORT, expect=E_I,
                                       reverse=(HUB_PORT, I_IDX), via=HUB6))

    # -- transport, both ways, both pairings ------------------------------------------
    table.reflects("v4_transport_to_v6_responder", transport(R_IDX), src=E_I, at=P, to=E_R6,
                   via=HUB6, counter="reflect_transport", given=with_4to6,
                   events=f"ev_nh_resolved {t}")
    table.reflects("v4_transport_to_v6_responder_warm", transport(R_IDX), src=E_I, at=P,
                   to=E_R6, via=HUB6, counter="reflect_transport", given=with_4to6,
                   warm=True, bench=True, events=t)
    table.reflects("v6_transport_to_v4_initiator", transport(I_IDX, counter=0x12345),
                   src=E_R6, at=HUB_PORT, to=E_I, via=HUB4, ident=0x2345,
                   counter="reflect_transport", given=with_4to6, events=f"ev_nh_resolved {f}")
    table.reflects("v6_transport_to_v4_initiator_warm", transport(I_IDX), src=E_R6,
                   at=HUB_PORT, to=E_I, via=HUB4, ident=7, counter="reflect_transport",
                   given=with_4to6, warm=True, bench=True, events=f)
    table.reflects("v6_transport_to_v4_responder", transport(R_IDX), src=E_I6, at=P, to=E_R,
                   via=HUB4, ident=7, counter="reflect_transport", given=with_6to4,
                   events=f"ev_nh_resolved {f}")
    table.reflects("v4_transport_to_v6_initiator", transport(I_IDX), src=E_R, at=HUB_PORT,
                   to=E_I6, via=HUB6, counter="reflect_transport", given=with_6to4,
                   events=f"ev_nh_resolved {t}")
    table.reflects("v6_transport_to_v4_from_first_address_without_via", transport(I_IDX),
                   src=E_R6, at=HUB_PORT, to=E_I, via=NOFWD4, ident=7,
                   counter="reflect_transport", given=with_4to6_first_address,
                   events=f"ev_nh_resolved {f}")
    table.reflects("v4_transport_partial_checksum_to_v6", transport(R_IDX), src=E_I, at=P,
                   to=E_R6, via=HUB6, partial=True, counter="reflect_transport",
                   given=with_4to6,
                   events=f"ev_nh_resolved ev_csum_partial ev_csum_verified {t}")

    # -- what an off-path attacker gets: the same checks before the change of family -------
    table.drops("forged_transport_to_translated_session_dropped", transport(R_IDX, counter=0),
                src=E_I_MOVED, at=P, counter="drop_roam_rejected", given=with_4to6,
                then=expect_session(P, R_IDX, E_R6, HUB_PORT, expect=E_I))
    table.drops("martian_transport_to_translated_session_dropped", transport(R_IDX, counter=9),
                src=("127.0.0.1", 43210), at=P, counter="drop_martian", given=with_4to6,
                then=expect_session(P, R_IDX, E_R6, HUB_PORT, expect=E_I))
    # a real roam of the IPv6 responder: followed, and sent to from the
    # address it now talks to
    table.reflects("v6_responder_roams_across_families", transport(I_IDX, counter=5),
                   src=E_R6_MOVED, at=HUB_PORT, to=E_I, via=HUB4, ident=5,
                   counter="reflect_transport", given=with_4to6,
                   events=f"ev_roam ev_nh_resolved {f}",
                   then=(expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_R6_MOVED),
                         expect_session(P, R_IDX, E_R6_MOVED, HUB_PORT, via=HUB6)))

    # -- what no longer fits, or cannot be said in the other family ------------------------
    table.reflects("v4_transport_1420_mtu_fits_as_v6", transport(R_IDX, n=FITS), src=E_I,
                   at=P, to=E_R6, via=HUB6, counter="reflect_transport", given=with_4to6,
                   events=f"ev_nh_resolved {t}")
    table.drops("v4_transport_too_big_as_v6_dropped", transport(R_IDX, n=FITS + 20),
                src=E_I, at=P, counter="drop_too_big", untouched=False, given=with_4to6,
                events=f"ev_nh_resolved {t}")
    table.drops("v4_transport_without_udp_checksum_to_v6_dropped",
                frame=inbound(E_I, hub(P), transport(R_IDX), udp_csum=False),
                counter="drop_no_checksum", given=with_4to6)
    table.drops("v6_transport_to_v4_without_v4_hub_address_dropped", transport(I_IDX),
                src=E_R6, at=HUB_PORT, counter="drop_family",
                given=(with_4to6, lambda env: env.dp.set_hub_addresses((HUB6,))))
    table.drops("v6_hop_limit1_to_v4_dropped",
                frame=inbound(E_R6, hub(HUB_PORT, v6=True), transport(I_IDX), ttl=1),
                counter="drop_ttl", given=with_4to6)
    return table.rows
