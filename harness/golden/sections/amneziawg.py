"""AmneziaWG (docs/spec.md §12): 1.0 (prefixes S1/S2, one header per
message type), 2.0 (S1..S4, header ranges), and 2.0 with every header a
range, each message type at both ends of its range and just outside it.
Each classifier has its own table, so its own seed."""

from __future__ import annotations

from typing import List

from wgmux import wire
from wgmux.wire import MessageType
from harness.golden.builders import (
    Table, cookie, expect_no_sessions, expect_session, initiation, junk, rand, response,
    transport, with_established, with_half_open, with_responder)
from harness.golden.fixtures import AWG1, AWG2, AWG3, E_I, E_R, HUB_PORT, I_IDX, P, R_IDX, Case


def header_at(classifier: wire.Classifier, kind: MessageType, where: str = "lo") -> int:
    """`kind`'s header at the low or high end of its range ("lo", "hi"), or
    just outside it ("below", "above")."""
    low, high = classifier.headers[kind]
    return {"lo": low, "hi": high, "below": low - 1, "above": high + 1}[where]


def _dressed(classifier: wire.Classifier, kind: MessageType, where: str) -> dict:
    return dict(header=header_at(classifier, kind, where),
                prefix=rand(classifier.prefixes[kind]))


def awg_initiation(classifier: wire.Classifier, where: str = "lo") -> bytes:
    return initiation(**_dressed(classifier, MessageType.INITIATION, where))


def awg_response(classifier: wire.Classifier, where: str = "lo") -> bytes:
    return response(**_dressed(classifier, MessageType.RESPONSE, where))


def awg_cookie(classifier: wire.Classifier, receiver: int, where: str = "lo") -> bytes:
    return cookie(receiver, **_dressed(classifier, MessageType.COOKIE, where))


def awg_transport(classifier: wire.Classifier, receiver: int, where: str = "lo",
                  n: int = 64) -> bytes:
    return transport(receiver, n=n, **_dressed(classifier, MessageType.TRANSPORT, where))


ESTABLISHED_BY_RESPONSE = "ev_session_established ev_nh_resolved ev_slow_response"


def junk_dropped(table: Table, label: str, classifier: wire.Classifier, sizes) -> None:
    """Jc junk (random datagrams in [Jmin, Jmax)) on a peer port: never a
    message, never reflected."""
    for n in sizes:
        table.drops(f"{label}_junk_{n}_dropped", junk(classifier, n), src=E_I, at=P,
                    counter="drop_unclassified", given=with_responder)


def initiations_at_both_ends(table: Table, label: str, classifier: wire.Classifier) -> None:
    """An initiation with its header at either end of its range goes to
    the slow path like any other."""
    for where in ("lo", "hi"):
        table.queues(f"{label}_init_header_{where}_to_slow_path",
                     awg_initiation(classifier, where), src=E_I, at=P,
                     counter="slow_initiation", given=with_responder, then=expect_no_sessions)


def awg1_rows() -> List[Case]:
    table = Table(seed="amneziawg-1.0", classifier=AWG1)
    table.queues("awg1_init_to_slow_path_prefix_kept", awg_initiation(AWG1), src=E_I, at=P,
                 counter="slow_initiation", given=with_responder, then=expect_no_sessions)
    table.passes("awg1_init_hub_port_copied", awg_initiation(AWG1), src=E_R, at=HUB_PORT,
                 counter="slow_hub_initiation", copied=True, given=with_responder)
    table.reflects("awg1_response_reflected", awg_response(AWG1), src=E_R, at=HUB_PORT, to=E_I,
                   counter="reflect_response", copied=True, given=with_half_open,
                   events=ESTABLISHED_BY_RESPONSE,
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX)))
    table.reflects("awg1_cookie_reflected", awg_cookie(AWG1, I_IDX), src=E_R, at=HUB_PORT,
                   to=E_I, counter="reflect_cookie", given=with_half_open,
                   events="ev_nh_resolved")
    table.reflects("awg1_transport_reflected", awg_transport(AWG1, R_IDX), src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established, events="ev_nh_resolved")
    table.drops("awg1_plain_wireguard_init_dropped", initiation(), src=E_I, at=P,
                counter="drop_unclassified", given=with_responder, then=expect_no_sessions)
    table.drops("awg1_plain_wireguard_transport_dropped", transport(R_IDX), src=E_I, at=P,
                counter="drop_unclassified", given=with_established)
    table.drops("awg1_init_prefix_short_dropped", awg_initiation(AWG1)[1:], src=E_I, at=P,
                counter="drop_unclassified", given=with_responder)
    junk_dropped(table, "awg1", AWG1, (40, 64, 120, 146, 165, 600))
    return table.rows


def awg2_rows() -> List[Case]:
    table = Table(seed="amneziawg-2.0", classifier=AWG2)
    initiations_at_both_ends(table, "awg2", AWG2)
    for where in ("below", "above"):
        table.drops(f"awg2_init_header_{where}_range_dropped", awg_initiation(AWG2, where),
                    src=E_I, at=P, counter="drop_unclassified", given=with_responder,
                    then=expect_no_sessions)
    junk_dropped(table, "awg2", AWG2, (9, 37, 73, 100, 133, 171, 1000))
    table.reflects("awg2_response_reflected", awg_response(AWG2, "hi"), src=E_R, at=HUB_PORT,
                   to=E_I, counter="reflect_response", copied=True, given=with_half_open,
                   events=ESTABLISHED_BY_RESPONSE,
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX)))
    table.reflects("awg2_cookie_reflected", awg_cookie(AWG2, I_IDX), src=E_R, at=HUB_PORT,
                   to=E_I, counter="reflect_cookie", given=with_half_open,
                   events="ev_nh_resolved")
    msg = awg_transport(AWG2, R_IDX, "hi")
    table.reflects("awg2_transport_reflected", msg, src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established, events="ev_nh_resolved",
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, packets=1))
    table.reflects("awg2_transport_warm", msg, src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established, warm=True, bench=True)
    table.reflects("awg2_keepalive_reflected", awg_transport(AWG2, R_IDX, "lo", n=0), src=E_I,
                   at=P, to=E_R, counter="reflect_transport", given=with_established,
                   events="ev_nh_resolved")
    table.drops("awg2_transport_header_above_dropped", awg_transport(AWG2, R_IDX, "above"),
                src=E_I, at=P, counter="drop_unclassified", given=with_established)
    table.passes("awg2_transport_header_below_hub_port_passes",
                 awg_transport(AWG2, I_IDX, "below"), src=E_R, at=HUB_PORT, counter="pass_hub",
                 given=with_established)
    table.drops("awg2_transport_without_prefix_dropped",     # the right header, S4 missing
                transport(R_IDX, header=header_at(AWG2, MessageType.TRANSPORT)), src=E_I, at=P,
                counter="drop_unclassified", given=with_established)
    return table.rows


def awg3_rows() -> List[Case]:
    table = Table(seed="amneziawg-2.0-ranges", classifier=AWG3)
    # just outside each range: not a message, whatever else it looks like
    for where in ("below", "above"):
        outside = (
            ("init", lambda: awg_initiation(AWG3, where), with_responder),
            ("response", lambda: awg_response(AWG3, where), with_half_open),
            ("cookie", lambda: awg_cookie(AWG3, I_IDX, where), with_half_open),
            ("transport", lambda: awg_transport(AWG3, R_IDX, where), with_established),
        )
        for kind, build, state in outside:
            table.drops(f"awg3_{kind}_header_{where}_range_peer_port_dropped", build(), src=E_I,
                        at=P, counter="drop_unclassified", given=state)
            table.passes(f"awg3_{kind}_header_{where}_range_hub_port_passes", build(), src=E_R,
                         at=HUB_PORT, counter="pass_hub", given=state)
    # at both ends of each range: every message type goes its usual way
    initiations_at_both_ends(table, "awg3", AWG3)
    for where in ("lo", "hi"):
        table.passes(f"awg3_init_header_{where}_hub_port_copied", awg_initiation(AWG3, where),
                     src=E_R, at=HUB_PORT, counter="slow_hub_initiation", copied=True,
                     given=with_responder)
        table.reflects(f"awg3_response_header_{where}_reflected", awg_response(AWG3, where),
                       src=E_R, at=HUB_PORT, to=E_I, counter="reflect_response", copied=True,
                       given=with_half_open, events=ESTABLISHED_BY_RESPONSE,
                       then=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX)))
        table.reflects(f"awg3_cookie_header_{where}_reflected", awg_cookie(AWG3, I_IDX, where),
                       src=E_R, at=HUB_PORT, to=E_I, counter="reflect_cookie",
                       given=with_half_open, events="ev_nh_resolved")
        table.reflects(f"awg3_cookie_i_to_r_header_{where}_reflected",
                       awg_cookie(AWG3, R_IDX, where), src=E_I, at=P, to=E_R,
                       counter="reflect_cookie", given=with_established, events="ev_nh_resolved")
        table.reflects(f"awg3_transport_i_to_r_header_{where}_reflected",
                       awg_transport(AWG3, R_IDX, where), src=E_I, at=P, to=E_R,
                       counter="reflect_transport", given=with_established,
                       events="ev_nh_resolved")
        table.reflects(f"awg3_transport_r_to_i_header_{where}_reflected",
                       awg_transport(AWG3, I_IDX, where, n=300), src=E_R, at=HUB_PORT, to=E_I,
                       counter="reflect_transport", given=with_established,
                       events="ev_nh_resolved")
    return table.rows


def rows() -> List[Case]:
    return awg1_rows() + awg2_rows() + awg3_rows()
