"""The hostile tests (issue 10): attacks on a real `wgmux serve` from an
attacker node with spoofed sources (netlab.attack, scenarios.py).

Every test runs twice, once per datapath (issue 13): `Datapath = "tc"`
(TC ingress alone) and `"xdp"` (XDP in the hub's driver in front of it,
docs/spec.md §4a; the hub's veth peer takes what XDP sends back).  Each
test ends by checking that the mode it names really ran
(scenarios.datapath_problems): in "xdp", wgmux_xdp attached to the hub's
interface and sending the pair's packets back itself (the veth's xdp_tx
counter), so no test passes in XDP's name while TC did the work.

The hub's configuration under attack is set here and only here: the
per-port initiation budget the responder may receive (InitiationRate /
InitiationBurst in [Interface]).  Until wgmux's config knows those keys the
hub runs without them and the figures below are what the tests hold it to.
"""

import fcntl
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))      # scenarios.py, by plain name

from wgmux import config as wgconfig   # noqa: E402
from scenarios import DATAPATHS        # noqa: E402  (where the hub's datapath runs: each)


# ---- the hub under attack: the one place to adjust ----------------------------

@dataclass(frozen=True)
class Budget:
    """Initiations per second each peer port forwards to its responder, and
    how many at once."""

    rate: float
    burst: int

    def allows(self, seconds: float) -> float:
        """The most initiations a responder may receive in `seconds`."""
        return self.rate * seconds + self.burst

    def config_lines(self) -> str:
        return f"InitiationRate = {self.rate:g}\nInitiationBurst = {self.burst}"


BUDGET = Budget(rate=float(getattr(wgconfig, "INITIATION_RATE", 20.0)),
                burst=int(getattr(wgconfig, "INITIATION_BURST", 40)))

# Flood sizes: the test's and `make hostile`'s (bench.py).
FLOOD_RATE = 150_000            # frames/s; the tests require >= 100 kpps reached
FLOOD_SOURCES = 1000
FLOOD_SECONDS_TEST = 10.0
FLOOD_SECONDS_BENCH = 30.0
HANDSHAKE_WITHIN = 7.0          # a fresh wireguard-go handshake during a flood, seconds
HANDSHAKE_WAIT = 10.0           # how long the tests watch for it (the figure, if later)
# The established pair's p99 RTT through a flood.  The 50 ms target is a
# speed figure: `make hostile` reports it against the target.  The test holds
# the pair to a bound that only a starved pair misses: without the defences
# the pair's RTT reached seconds (up to 13 s, docs/security.md), while a
# busy machine (a TCG guest on both cores) pushed a defended hub's p99 to
# 77 ms, over the target and nowhere near the bound.
P99_TARGET = 0.050
P99_STARVED = 0.500
FILL_SECONDS = 20.0             # at most, to fill the half-open space before a handshake


def hub_config(budget: Budget = BUDGET) -> str:
    """[Interface] lines for the hub: the budget, when the config knows its keys."""
    lines = budget.config_lines()
    try:
        wgconfig.parse('[Interface]\nDevice = "wg0"\nHubPort = 51820\nInterface = "eth0"\n'
                       + lines + "\n")
    except wgconfig.ConfigError as e:
        if "unknown key" in str(e):
            return ""
        raise
    return lines


# ---- fixtures -------------------------------------------------------------------

@pytest.fixture(params=DATAPATHS)
def datapath(request) -> str:
    return request.param


@pytest.fixture
def budget() -> Budget:
    return BUDGET


@pytest.fixture
def extra_config() -> str:
    return hub_config()


@pytest.fixture
def flood_lock():
    """One flood at a time on this machine: a flood takes a core, and two
    at once on two cores would measure each other."""
    path = Path("/run/lock/netlab-hostile-flood")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
