"""Forged packets the hub must not act on (issue 10).

- A forged transport with the pair's live index and a wrong counter (0, a
  random 64-bit one, a replay of a captured one), from a spoofed victim
  source, on the peer port and on HubPort: the session stays where it is,
  nothing of it reaches the victim, the pair's flow goes on.  Positive
  control: real NAT rebinding and listen-port changes still roam
  (tests/integration/test_roaming.py, test_roaming_mid_transfer: the
  datapath follows a known index from a new source, ev_roam).
- Martian sources (0/8, 127/8, multicast, broadcast, 240/4) sending a
  valid-mac1 initiation and transports with live indices and plausible
  counters: nothing reflected, no session created, none moved.  Controls:
  the same initiation from an ordinary spoofed source, the same transports
  from the pair's own endpoints, are reflected.
- Packets to an address behind a hub that routes, on the peer port and
  HubPort, with live indices: not reflected.  Control: the same
  initiation to the hub's own address is.
"""

import pytest

from scenarios import (PORT, arena, datapath_problems, forged_transports, martian_volley,
                       mib, not_addressed_volley)
from netlab.traffic import ping

pytestmark = pytest.mark.netlab

GAP = 0.5           # the pair's flow (every 10 ms) may pause this long, seconds


@pytest.mark.parametrize("where", ["peer-port", "hubport"])
def test_forged_transport_does_not_move_the_session(lab, extra_config, where, datapath):
    a = arena(lab, extra_config, datapath=datapath)
    port = PORT if where == "peer-port" else a.hub_port
    results = forged_transports(a, port, window=2.0)
    report = "\n  ".join(f.describe() for f in results)
    print(report)
    achieved = any(f.achieved for f in results)
    assert not achieved, "the attacker achieved:\n  " + report
    stalled = max(f.outage for f in results)
    assert stalled < GAP, f"the pair's flow stopped for {stalled:.2f} s (at most {GAP} s):\n  " \
        + report
    assert ping(a.initiator.node, a.responder.overlay_ip)
    wrong = datapath_problems(a)
    assert not wrong, "the datapath did not run as its mode says:\n  " + "\n  ".join(wrong)


def test_martian_sources_are_never_reflected(lab, extra_config, datapath):
    a = arena(lab, extra_config, datapath=datapath)
    shots, result = martian_volley(a)
    leaks = result.leaks(shots)
    controls = {s.name: result.reflected[s.name].packets for s in shots if s.control}
    print(f"controls reflected: {controls}; counters: {result.counters}")
    assert not leaks, "martian sources got through:\n  " + "\n  ".join(leaks)
    assert ping(a.initiator.node, a.responder.overlay_ip)
    wrong = datapath_problems(a)
    assert not wrong, "the datapath did not run as its mode says:\n  " + "\n  ".join(wrong)


def test_packets_not_addressed_to_the_hub_are_not_reflected(lab, extra_config, datapath):
    a = arena(lab, extra_config, datapath=datapath)
    shots, result, behind = not_addressed_volley(a)
    leaks = result.leaks(shots)
    print(f"routed on to the node behind the hub: {behind.packets} packets "
          f"({mib(behind.bytes)}); counters: {result.counters}")
    assert not leaks, "packets for an address behind the hub were reflected:\n  " + \
        "\n  ".join(leaks)
    assert ping(a.initiator.node, a.responder.overlay_ip)
    wrong = datapath_problems(a)
    assert not wrong, "the datapath did not run as its mode says:\n  " + "\n  ".join(wrong)
