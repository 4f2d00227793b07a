"""Forged packets on each uplink of a two-uplink hub (issue 18, docs/spec.md
§4c): the same rules hold on every interface the program serves.

From an attacker on each uplink's segment, forged transports with the
pair's live index (counter 0, a random 64-bit one), on the index whose flow
they could steal: nothing moves, nothing reaches the attacker, and each is
counted as dropped on the interface it arrived on; the pair goes on.
Positive control: the pair's own traffic crosses the uplinks (the first
ping, and the last).
"""

import pytest

from scenarios import uplink_forgeries

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
