"""The datapath's golden table: (map state, input frame) -> (verdict,
output frame, verdict counter, events, slow-path message, map state),
run through BPF_PROG_TEST_RUN.

tests/unit/test_datapath.py asserts every row, against the TC program and
against the XDP one in front of it (run_case_xdp: what XDP does not finish
it passes untouched and uncounted, and the row then holds for TC);
`python -m harness.bench` times the rows marked `bench`; the fuzz, slow-path and GC tests build on
the same fixtures.  Importers say `from harness import golden as g`.

    fixtures.py  the world: addresses, ports, endpoints, indices,
                 GoldenNet's namespace, Env, Case, run_case, classifiers
    builders.py  frames, map states, checks, and Table with its verbs
                 (reflects, passes, queues, drops)
    sections/    the rows, one module per concern, each with its own seed

A new row goes into the section of what it tests, as one sentence:

    table.reflects("transport_i_to_r", transport(R_IDX), src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established,
                   events="ev_nh_resolved", then=expect_session(...))
"""

from __future__ import annotations

from typing import List

from harness.golden.builders import (
    cookie, expect_no_sessions, expect_session, expect_sessions, force_udp_csum, hub, inbound,
    initiation, junk, partial_csum, primed, rand, reflected, reseed, response, transport,
    with_established, with_established6, with_established_to, with_half_open, with_responder,
    with_responder6, Table)
from harness.golden.fixtures import (
    AWG1, AWG2, AWG3, AWG_JUNK_RANGES, DNS_PORT, E_BLACKHOLE, E_BLACKHOLE6, E_I, E_I6,
    E_I_MOVED, E_NO_NEIGH, E_R, E_R6, GW4, GW6, GW_MAC, HUB4, HUB6, HUB_ADDRESSES, HUB_MAC,
    HUB_PORT, I_IDX, MARTIANS4, MARTIANS6, NOFWD4, NOFWD_MAC, OTHER_PORT, P, P_NOEP, R_IDX,
    SAME, STRANGER_IDX, Case, Env, GoldenNet, Outcome, XdpOutcome, run_case, run_case_xdp,
    slow_problem, state, xdp_finishes)
from harness.golden.sections import (
    amneziawg, checksums, families, handshakes, hostile, interfaces, ipv6, malformed, next_hops,
    not_ours, rate_limit, transport as transport_rows)

__all__ = [
    "AWG1", "AWG2", "AWG3", "AWG_JUNK_RANGES", "DNS_PORT", "E_BLACKHOLE", "E_BLACKHOLE6", "E_I",
    "E_I6", "E_I_MOVED", "E_NO_NEIGH", "E_R", "E_R6", "GW4", "GW6", "GW_MAC", "HUB4", "HUB6",
    "HUB_ADDRESSES", "HUB_MAC", "HUB_PORT", "I_IDX", "MARTIANS4", "MARTIANS6", "NOFWD4",
    "NOFWD_MAC", "OTHER_PORT", "P", "P_NOEP", "R_IDX", "SAME", "STRANGER_IDX",
    "Case", "Env", "GoldenNet", "Outcome", "XdpOutcome", "run_case", "run_case_xdp",
    "slow_problem", "state", "xdp_finishes",
    "Table", "cookie", "expect_no_sessions", "expect_session", "expect_sessions",
    "force_udp_csum", "hub", "inbound", "initiation", "junk", "partial_csum", "primed", "rand",
    "reflected", "reseed", "response", "transport", "with_established", "with_established6",
    "with_established_to", "with_half_open", "with_responder", "with_responder6",
    "SECTIONS", "cases", "hostile_cases",
]

# cases()' order, so the test ids' and the benchmark's
SECTIONS = (handshakes, rate_limit, transport_rows, checksums, malformed, not_ours, next_hops,
            ipv6, families, interfaces, amneziawg, hostile)


def cases() -> List[Case]:
    """The whole table, built fresh on each call: every section reseeds
    its own generator, so every call returns the same bytes."""
    rows = [row for section in SECTIONS for row in section.rows()]
    names = [c.name for c in rows]
    assert len(names) == len(set(names)), "duplicate row names"
    return rows


def hostile_cases() -> List[Case]:
    """The rows for issue 10's rules (docs/security.md), a part of cases()."""
    return hostile.rows()
