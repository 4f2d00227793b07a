"""Several interfaces (docs/spec.md §4c): one program on each, one session
table.  A packet leaves from the hub address its target's owner talks to
(the session's `via`), whichever address it came to, so that a peer on the
other uplink hears the hub from the address it sent to; and with more than
one interface served, what arrived on each and was reflected or dropped,
and what left by each, is counted per interface.

Here `pub0` and `in0` are the two interfaces (in0's packets leave through
pub0); HUB4 and NOFWD4 stand for the two uplinks' addresses."""

from __future__ import annotations

from typing import List

from harness.golden.builders import established, inbound, reflected, transport
from harness.golden.fixtures import (
    E_I, E_I_MOVED, E_R, HUB4, HUB_PORT, I_IDX, NOFWD4, P, R_IDX, Case, Env)

# I talks to the hub at HUB4, R (on the other uplink) at NOFWD4
across = established(E_I, E_R, HUB4, NOFWD4)


def two_interfaces(env: Env):
    env.dp.set_interfaces([env.net.ifindex["pub0"], env.net.ifindex["in0"]])


def one_interface(env: Env):
    env.dp.set_interfaces([env.net.ifindex["pub0"]])


def counted(**want):
    """The per-interface counters after the row: {dev: (reflected_in,
    reflected_out, dropped)}; interfaces not named count nothing."""
    def _check(env: Env, _res):
        got = env.dp.interface_counters()
        for dev, ifindex in env.net.ifindex.items():
            if ifindex in got:
                c = got[ifindex]
                have = (c["reflected_in"], c["reflected_out"], c["dropped"])
                assert have == want.get(dev, (0, 0, 0)), (dev, have, got)
    return _check


def rows() -> List[Case]:
    from harness.golden.builders import Table

    table = Table(seed="interfaces")
    t_r, t_i = transport(R_IDX), transport(I_IDX)
    table.reflects("transport_leaves_from_the_address_its_target_talks_to",
                   frame=inbound(E_I, (HUB4, P), t_r), out=reflected((NOFWD4, HUB_PORT), E_R, t_r),
                   counter="reflect_transport", given=across, events="ev_nh_resolved")
    table.reflects("transport_back_leaves_from_the_address_the_initiator_talks_to",
                   frame=inbound(E_R, (NOFWD4, HUB_PORT), t_i), out=reflected((HUB4, P), E_I, t_i),
                   counter="reflect_transport", given=across, events="ev_nh_resolved")
    table.reflects("transport_leaves_from_the_target_address_warm",
                   frame=inbound(E_I, (HUB4, P), t_r), out=reflected((NOFWD4, HUB_PORT), E_R, t_r),
                   counter="reflect_transport", given=across, warm=True, bench=True)
    # counted per interface: arrived on in0 and reflected, left by pub0
    table.reflects("two_interfaces_count_in_on_arrival_and_out_on_egress",
                   frame=inbound(E_I, (HUB4, P), t_r), out=reflected((NOFWD4, HUB_PORT), E_R, t_r),
                   counter="reflect_transport", given=(across, two_interfaces), dev="in0",
                   events="ev_nh_resolved", then=counted(in0=(1, 0, 0), pub0=(0, 1, 0)))
    table.reflects("two_interfaces_warm", frame=inbound(E_I, (HUB4, P), t_r),
                   out=reflected((NOFWD4, HUB_PORT), E_R, t_r), counter="reflect_transport",
                   given=(across, two_interfaces), warm=True, bench=True)
    table.drops("two_interfaces_count_a_forgery_as_dropped_where_it_arrived",
                frame=inbound(E_I_MOVED, (HUB4, P), transport(R_IDX, counter=0)),
                counter="drop_roam_rejected", given=(across, two_interfaces), dev="in0",
                then=counted(in0=(0, 0, 1)))
    table.reflects("one_interface_counts_nothing_per_interface",
                   frame=inbound(E_I, (HUB4, P), t_r), out=reflected((NOFWD4, HUB_PORT), E_R, t_r),
                   counter="reflect_transport", given=(across, one_interface),
                   events="ev_nh_resolved", then=counted())
    return table.rows
