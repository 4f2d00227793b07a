"""Forged packets on each uplink of a two-uplink hub (issue 18, docs/spec.md
§4c): the same rules hold on every interface the program serves.

From an attacker on each uplink's segment, forged transports with the
pair's live index (counter 0, a random 64-bit one), on the index whose flow
they could steal: nothing moves, nothing reaches the attacker, and each is
counted as dropped on the interface it arrived on; the pair goes on.
Positive control: the pair's own traffic crosses the uplinks (the first
ping, and the last).

A hub multi-homed to two providers sends each initiation it forwards from
each of its addresses (the slow path's fan-out, docs/security.md §3.5): a
flood of valid-mac1 initiations then reaches the responder at most twice
the port's budget, all to the responder, one copy of each through its NAT.
"""

import pytest

from scenarios import fan_out_flood, uplink_forgeries

pytestmark = pytest.mark.netlab


def test_forged_transport_on_each_uplink_moves_nothing(lab, extra_config, datapath):
    results = uplink_forgeries(lab, extra_config, datapath=datapath)
    report = "\n  ".join(r.describe() for r in results)
    print(report)
    assert [r.interface for r in results] == ["eth0", "eth1"]
    assert not any(r.achieved for r in results), "the attacker achieved:\n  " + report
    assert all(r.dropped == r.sent for r in results), report
    if datapath == "xdp":
        assert all(r.xdp_ran for r in results), "wgmux_xdp did not run on both uplinks"


@pytest.mark.parametrize("paired", [False, True], ids=["unknown", "after-a-handshake"])
def test_fan_out_of_a_flood_stays_within_the_budget_per_address(lab, extra_config, budget,
                                                                paired):
    """The fan-out is the slow path's (the same in TC and XDP): one mode.
    Before any handshake the hub cannot know which of its addresses the
    responder talks to: each forwarded initiation leaves from both.  After
    the pair's handshake it knows: from the responder's address alone."""
    r = fan_out_flood(lab, extra_config, paired=paired)
    print(r.describe())
    assert r.sent >= 1000, r.describe()
    assert r.forwarded >= 1, r.describe()
    a, b = r.at_responder.values()
    if paired:
        assert (a, b) == (0, r.forwarded), r.describe()
    else:
        # the fan-out happened (the test means something): copies from both
        assert r.addresses == 2 and a and b, r.describe()
    assert r.forwarded <= budget.allows(r.seconds), r.describe()
    assert r.copies <= r.addresses * r.forwarded, r.describe()
    # the responder's NAT takes the copy from the address it talks to, drops the other
    assert r.into_responder <= r.forwarded, r.describe()
    assert r.elsewhere == 0, r.describe()
    assert r.bcp38 == {"pA": 0, "pB": 0}, r.describe()
