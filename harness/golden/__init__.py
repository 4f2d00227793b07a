"""The datapath's golden table (harness/golden/fixtures.py for now).

Importers use `from harness import golden as g`; this re-export keeps
that spelling while the table moves into the package.
"""

from harness.golden.fixtures import (
    AWG1, AWG2, AWG3, AWG_JUNK_RANGES, E_BLACKHOLE, E_I, E_I6, E_I_MOVED, E_NO_NEIGH, E_R, E_R6,
    GW4, GW6, GW_MAC, HUB4, HUB6, HUB_ADDRESSES, HUB_MAC, HUB_PORT, I_IDX, MARTIANS4, MARTIANS6,
    MAX_COUNTER, NOFWD4, NOFWD_MAC, OTHER_PORT, P, P_NOEP, R_IDX, ROAM_WINDOW, SAME, STRANGER_IDX,
    Case, Env, GoldenNet, Outcome, _junk, _rng, cases, cookie, expect_max_counter,
    expect_no_sessions, expect_session, expect_sessions, expect_unmoved, hostile_cases, hub,
    inbound, initiation, loaded, partial_csum, primed, rand, reflected, response, run_case,
    slow_problem, transport, with_counted, with_established, with_established6, with_half_open,
    with_responder)

__all__ = [
    "AWG1", "AWG2", "AWG3", "AWG_JUNK_RANGES", "E_BLACKHOLE", "E_I", "E_I6", "E_I_MOVED",
    "E_NO_NEIGH", "E_R", "E_R6", "GW4", "GW6", "GW_MAC", "HUB4", "HUB6", "HUB_ADDRESSES",
    "HUB_MAC", "HUB_PORT", "I_IDX", "MARTIANS4", "MARTIANS6", "MAX_COUNTER", "NOFWD4",
    "NOFWD_MAC", "OTHER_PORT", "P", "P_NOEP", "R_IDX", "ROAM_WINDOW", "SAME", "STRANGER_IDX",
    "Case", "Env", "GoldenNet", "Outcome", "_junk", "_rng", "cases", "cookie",
    "expect_max_counter", "expect_no_sessions", "expect_session", "expect_sessions",
    "expect_unmoved", "hostile_cases", "hub", "inbound", "initiation", "loaded", "partial_csum",
    "primed", "rand", "reflected", "response", "run_case", "slow_problem", "transport",
    "with_counted", "with_established", "with_established6", "with_half_open", "with_responder",
]
