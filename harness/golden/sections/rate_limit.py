"""The slow path's rate limit: per source address (per /64 for IPv6), a
GCRA shared by HubPort and the peer ports (docs/spec.md §9)."""

from __future__ import annotations

from typing import List

from harness.golden.builders import (
    Table, expect_session, hub, inbound, initiation, response, with_half_open, with_responder,
    with_responder6)
from harness.golden.fixtures import E_I, E_I6, E_I_MOVED, E_R, HUB_PORT, I_IDX, P, R_IDX, Case, Env


def limited(rate: float, burst: int, *primes, v6: bool = False):
    """A responder (IPv6 with v6), the limit, then one initiation from
    each of `primes` ((src, port) pairs) to use up its allowance."""
    def _setup(env: Env):
        (with_responder6 if v6 else with_responder)(env)
        env.dp.set_slow_rate(rate, burst)
        for src, port in primes:
            env.run(inbound(src, hub(port, ":" in src[0]), initiation()))
    return _setup


def rows() -> List[Case]:
    table = Table(seed="rate_limit")
    table.queues("rate_first_initiation_passes", initiation(), src=E_I, at=P,
                 counter="slow_initiation", given=limited(1, 1))
    table.drops("rate_second_initiation_shed", initiation(), src=E_I, at=P,
                counter="drop_rate_limited", given=limited(1, 1, (E_I, P)))
    table.drops("rate_is_per_address_not_port", initiation(), src=(E_I[0], 1), at=P,
                counter="drop_rate_limited", given=limited(1, 1, (E_I, P)))
    table.queues("rate_other_source_unaffected", initiation(), src=E_I_MOVED, at=P,
                 counter="slow_initiation", given=limited(1, 1, (E_I, P)))
    table.queues("rate_burst_allows_third", initiation(), src=E_I, at=P,
                 counter="slow_initiation", given=limited(1, 3, (E_I, P), (E_I, P)))
    table.drops("rate_burst_exhausted", initiation(), src=E_I, at=P,
                counter="drop_rate_limited", given=limited(1, 3, (E_I, P), (E_I, P), (E_I, P)))
    table.queues("rate_zero_is_unlimited", initiation(), src=E_I, at=P,
                 counter="slow_initiation", given=limited(0, 0, *[(E_I, P)] * 20))
    table.passes("rate_hub_port_shed_still_passes", initiation(), src=E_R, at=HUB_PORT,
                 counter="pass_hub_rate_limited", given=limited(1, 1, (E_R, HUB_PORT)))
    table.passes("rate_shared_by_hub_and_peer_ports", initiation(), src=E_R, at=HUB_PORT,
                 counter="pass_hub_rate_limited", given=limited(1, 1, (E_R, P)))
    table.drops("rate_v6_same_64_shed", initiation(), src=("2001:db8:100::99", 7), at=P,
                counter="drop_rate_limited", given=limited(1, 1, (E_I6, P), v6=True))
    table.queues("rate_v6_other_64_unaffected", initiation(), src=("2001:db8:100:1::10", 7),
                 at=P, counter="slow_initiation", given=limited(1, 1, (E_I6, P), v6=True))
    # the response is reflected all the same; only its copy is shed
    table.reflects("rate_response_copy_shed_still_reflected", response(), src=E_R,
                   at=HUB_PORT, to=E_I, counter="reflect_response",
                   given=(limited(1, 1, (E_R, HUB_PORT)), with_half_open),
                   events="ev_session_established ev_nh_resolved ev_slow_response_rate_limited",
                   then=expect_session(P, R_IDX, E_R, HUB_PORT, reverse=(HUB_PORT, I_IDX)))
    return table.rows
