"""Hostile input (issue 10, docs/security.md): roaming needs the counter
(docs/spec.md §5), martians and packets for others are never reflected,
half-open entries take only their answer, ports under load admit cookie
requests and mac2s (docs/spec.md §9)."""

from __future__ import annotations

from typing import List

from harness.golden.builders import (
    Table, cookie, expect_no_sessions, expect_session, inbound, hub, initiation, rand, response,
    transport, with_established, with_established6, with_half_open, with_responder,
    with_responder6)
from harness.golden.fixtures import (
    E_I, E_I6, E_I_MOVED, E_R, HUB4, HUB6, HUB_PORT, I_IDX, MARTIANS4, MARTIANS6, P, R_IDX,
    STRANGER_IDX, Case, Check, Env, Setup)

MAX_COUNTER = 1000                    # the established session's highest counter so far
ROAM_WINDOW = 8192                    # bpf/wgmux.c WGMUX_ROAM_WINDOW
ANY_PORT = 4242
NOT_THE_HUB4 = ("198.51.100.200", "192.0.2.255", "255.255.255.255", "127.0.0.1", "224.0.0.1")


def with_counted(env: Env):
    """An established pair whose I -> R direction has seen counter
    MAX_COUNTER (and the other direction the same)."""
    with_responder(env)
    env.dp.set_session(HUB_PORT, I_IDX, E_I, P, expect=E_R, reverse=(P, R_IDX),
                       max_counter=MAX_COUNTER)
    env.dp.set_session(P, R_IDX, E_R, HUB_PORT, expect=E_I, reverse=(HUB_PORT, I_IDX),
                       max_counter=MAX_COUNTER)


def expect_unmoved(env: Env, _res):
    """Both entries of the counted pair are where they were."""
    to_r, to_i = env.dp.session(P, R_IDX), env.dp.session(HUB_PORT, I_IDX)
    assert (str(to_r.expect), str(to_i.dst)) == (f"{E_I[0]}:{E_I[1]}",) * 2, (to_r, to_i)
    assert (str(to_i.expect), str(to_r.dst)) == (f"{E_R[0]}:{E_R[1]}",) * 2, (to_r, to_i)
    assert to_r.max_counter == MAX_COUNTER and to_r.packets == 0, to_r


def expect_max_counter(port, index, value) -> Check:
    def _check(env: Env, _res):
        s = env.dp.session(port, index)
        assert s.max_counter == value, s
    return _check


def loaded(rate: float, burst: int, *primes) -> Setup:
    """A responder whose port takes `rate` initiations per second (burst
    `burst`), then one initiation from each of `primes` ((src, mac2) pairs)."""
    def _setup(env: Env):
        with_responder(env)
        env.dp.set_port_budget(rate, burst)
        for src, mac2 in primes:
            env.run(inbound(src, hub(P), initiation(mac2=mac2)))
    return _setup


def rows() -> List[Case]:
    table = Table(seed="hostile")
    mac2 = rand(16)                      # some non-zero mac2

    # -- roaming by counter -------------------------------------------------
    for counter, verdict in ((MAX_COUNTER + 1, "roams"), (MAX_COUNTER + ROAM_WINDOW, "roams"),
                             (MAX_COUNTER, "rejected"), (MAX_COUNTER - 1, "rejected"),
                             (0, "rejected"), (MAX_COUNTER + ROAM_WINDOW + 1, "rejected"),
                             (2**64 - 1, "rejected")):
        name = f"roam_counter_{counter - MAX_COUNTER:+d}_{verdict}"
        msg = transport(R_IDX, counter=counter)
        if verdict == "roams":
            table.reflects(name, msg, src=E_I_MOVED, at=P, to=E_R, counter="reflect_transport",
                           given=with_counted, events="ev_roam ev_nh_resolved",
                           then=(expect_session(P, R_IDX, E_R, HUB_PORT, expect=E_I_MOVED),
                                 expect_max_counter(P, R_IDX, counter),
                                 expect_session(HUB_PORT, I_IDX, E_I_MOVED, P)))
        else:
            table.drops(name, msg, src=E_I_MOVED, at=P, counter="drop_roam_rejected",
                        given=with_counted, then=expect_unmoved)
    table.drops("roam_hub_port_replayed_counter_rejected", transport(I_IDX, counter=MAX_COUNTER),
                src=E_I_MOVED, at=HUB_PORT, counter="drop_roam_rejected", given=with_counted,
                then=expect_unmoved)
    table.reflects("roam_responder_moved_follows", transport(I_IDX, counter=MAX_COUNTER + 5),
                   src=E_I_MOVED, at=HUB_PORT, to=E_I, counter="reflect_transport",
                   given=with_counted, events="ev_roam ev_nh_resolved",
                   then=(expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_I_MOVED),
                         expect_session(P, R_IDX, E_I_MOVED, HUB_PORT)))
    table.reflects("transport_late_from_expected_keeps_max",
                   transport(R_IDX, counter=MAX_COUNTER - 10), src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_counted, events="ev_nh_resolved",
                   then=expect_max_counter(P, R_IDX, MAX_COUNTER))
    table.reflects("transport_from_expected_raises_max",
                   transport(R_IDX, counter=MAX_COUNTER + 10**6), src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_counted, events="ev_nh_resolved",
                   then=expect_max_counter(P, R_IDX, MAX_COUNTER + 10**6))
    for src in ("127.0.0.1", "224.0.0.1", HUB4):
        table.drops(f"roam_to_{src}_dropped", transport(R_IDX, counter=MAX_COUNTER + 1),
                    src=(src, ANY_PORT), at=P, counter="drop_martian", given=with_counted,
                    then=expect_unmoved)
    table.drops("response_from_elsewhere_dropped", response(sender=STRANGER_IDX),
                src=E_I_MOVED, at=HUB_PORT, counter="drop_not_expected", given=with_half_open,
                then=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None))
    table.drops("cookie_from_elsewhere_dropped", cookie(I_IDX), src=E_I_MOVED, at=HUB_PORT,
                counter="drop_not_expected", given=with_counted, then=expect_unmoved)
    table.drops("cookie_from_elsewhere_peer_port_dropped", cookie(R_IDX), src=E_I_MOVED, at=P,
                counter="drop_not_expected", given=with_counted, then=expect_unmoved)

    # -- half-open entries take their answer and nothing else -----------------
    early = transport(I_IDX, counter=1)
    table.drops("half_open_transport_from_responder_dropped", early, src=E_R, at=HUB_PORT,
                counter="drop_half_open", given=with_half_open,
                then=expect_session(HUB_PORT, I_IDX, E_I, P, reverse=None, packets=0))
    table.drops("half_open_transport_from_elsewhere_dropped", early, src=E_I_MOVED,
                at=HUB_PORT, counter="drop_half_open", given=with_half_open,
                then=expect_session(HUB_PORT, I_IDX, E_I, P, expect=E_R, reverse=None))

    # -- martian sources, packets not for the hub, broken IP ------------------
    for src in MARTIANS4 + (HUB4,):
        table.drops(f"init_from_{src}_dropped", initiation(), src=(src, ANY_PORT), at=P,
                    counter="drop_martian", given=with_responder, then=expect_no_sessions)
        table.passes(f"init_from_{src}_hub_port_not_copied", initiation(), src=(src, ANY_PORT),
                     at=HUB_PORT, counter="pass_hub", given=with_responder,
                     then=expect_no_sessions)
    for src in MARTIANS6 + (HUB6,):
        table.drops(f"v6_init_from_{src}_dropped", initiation(), src=(src, ANY_PORT), at=P,
                    counter="drop_martian", given=with_responder6, then=expect_no_sessions)
    msg = transport(R_IDX)
    for dst in NOT_THE_HUB4:
        table.passes(f"transport_to_{dst}_not_for_hub_passes", msg, src=E_I, at=(dst, P),
                     counter="pass_not_local", given=with_established)
    table.passes("init_to_transit_address_passes", initiation(), src=E_I,
                 at=("198.51.100.200", P), counter="pass_not_local", given=with_responder)
    table.passes("v6_transport_not_for_hub_passes", msg, src=E_I6, at=("2001:db8:300::1", P),
                 counter="pass_not_local", given=with_established6)
    table.passes("transport_bad_ip_checksum_passes",
                 frame=inbound(E_I, hub(P), msg, header_checksum=0x1234), counter="pass_bad_ip",
                 given=with_established,
                 then=expect_session(P, R_IDX, E_R, HUB_PORT, packets=0))
    v4 = inbound(E_I, hub(P), msg)
    table.passes("transport_ipv4_ethertype_version6_passes",
                 frame=v4[:14] + bytes([0x65]) + v4[15:],     # version 6 behind IPv4's ethertype
                 counter="pass_bad_ip", given=with_established)
    table.drops("v6_transport_udp_csum_zero_dropped",
                frame=inbound(E_I6, hub(P, v6=True), msg, udp_csum=False),
                counter="drop_malformed", given=with_established6)
    v6 = inbound(E_I6, hub(P, v6=True), msg)
    table.passes("transport_ipv6_ethertype_version4_passes",
                 frame=v6[:14] + bytes([0x40 | (v6[14] & 0x0F)]) + v6[15:],
                 counter="pass_bad_ip", given=with_established6)

    # -- ports under load: cookie requests and mac2s --------------------------
    table.queues("load_over_budget_asks_cookie", initiation(), src=E_I, at=P,
                 counter="slow_under_load", load=1, given=loaded(1, 1, (E_I_MOVED, None)),
                 events="ev_port_over_budget")
    table.drops("load_cookie_request_once_per_source", initiation(), src=E_I, at=P,
                counter="drop_under_load", given=loaded(1, 1, (E_I_MOVED, None), (E_I, None)))
    table.queues("load_mac2_presented", initiation(mac2=mac2), src=E_I, at=P,
                 counter="slow_under_load", load=2,
                 given=loaded(1, 1, (E_I_MOVED, None), (E_I, None)))
    table.drops("load_mac2_once_per_source", initiation(mac2=mac2), src=E_I, at=P,
                counter="drop_under_load", given=loaded(1, 1, (E_I_MOVED, None), (E_I, mac2)))
    table.queues("load_within_budget_normal", initiation(), src=E_I, at=P,
                 counter="slow_initiation", given=loaded(1, 2, (E_I_MOVED, None)))
    table.queues("load_budget_off_never_loaded", initiation(), src=E_I, at=P,
                 counter="slow_initiation", given=loaded(0, 0, *[(E_I_MOVED, None)] * 5))
    return table.rows
