"""Half-open entries under attack (issue 10).

- A valid-mac1 initiation from a spoofed victim source opens a half-open
  entry towards the victim (the positive control: the hub cannot tell it
  from a real one).  The attacker's transports, a forged response and a
  forged cookie reply on that entry, sent from its own address (not the
  responder's endpoint): none reaches the victim, the entry stays
  half-open and is not kept alive (last_seen stays at its creation).
- The half-open space filled by a flood of valid-mac1 initiations from
  many sources: a new legitimate wireguard-go handshake still completes
  within HANDSHAKE_WITHIN seconds, and the established pair loses nothing.
"""

import pytest

from conftest import (FILL_SECONDS, FLOOD_RATE, FLOOD_SOURCES, HANDSHAKE_WAIT,
                      HANDSHAKE_WITHIN)
from scenarios import arena, datapath_problems, flood, half_open_abuse
from netlab.traffic import ping

pytestmark = pytest.mark.netlab


def test_attacker_cannot_use_a_spoofed_half_open_entry(lab, extra_config, datapath):
    a = arena(lab, extra_config, datapath=datapath)
    r = half_open_abuse(a)
    assert r.opened and r.opened["state"] == "half-open", \
        f"control: the spoofed initiation did not open a half-open entry: {r.opened}"
    assert r.opened["initiator"] == f"{r.victim_src[0]}:{r.victim_src[1]}", r.opened
    leaks = r.leaks()
    print("\n".join(leaks) or "nothing leaked")
    assert not leaks, (f"on the half-open entry {r.index:#x} a spoofed initiation from "
                       f"{r.victim_src[0]}:{r.victim_src[1]} opened:\n  " + "\n  ".join(leaks))
    assert ping(a.initiator.node, a.responder.overlay_ip)
    wrong = datapath_problems(a)
    assert not wrong, "the datapath did not run as its mode says:\n  " + "\n  ".join(wrong)


# The longest hostile test (~50 s, a 20 s fill then a 10 s flood, under the
# flood lock): `make test` runs it with TC; its XDP twin is `slow` (make
# netlab-test-slow), XDP under a flood being test_flood's [xdp] already.
@pytest.mark.parametrize("datapath", ["tc", pytest.param("xdp", marks=pytest.mark.slow)])
def test_full_half_open_space_keeps_new_handshakes_and_the_pair(lab, extra_config, flood_lock,
                                                                 datapath):
    a = arena(lab, extra_config, fresh=True, datapath=datapath)
    run = flood(a, rate=FLOOD_RATE, seconds=HANDSHAKE_WAIT, sources=FLOOD_SOURCES,
                fill=FILL_SECONDS, handshake_timeout=HANDSHAKE_WAIT)
    print(run.describe())
    problems = [p for p in (run.handshake_problem(HANDSHAKE_WITHIN), run.loss_problem(0.0)) if p]
    if run.handshake_problem(HANDSHAKE_WITHIN):
        problems.append(f"the flood had filled {run.half_open_after} half-open entries")
    problems += datapath_problems(a)
    assert not problems, run.describe() + "\n  " + "\n  ".join(problems)
