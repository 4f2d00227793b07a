"""The UDP checksum through a reflection (docs/spec.md §4): zero (none)
stays zero, a sum that computes to zero goes out as 0xffff, and partial
checksums (CHECKSUM_PARTIAL skbs, GRO batches) stay partial.  Test-run
skbs are CHECKSUM_NONE, so a field that looks partial is settled by
summing the segment."""

from __future__ import annotations

from typing import List

from wgmux import packet as pk
from harness.golden.builders import (
    Table, expect_udp_checksum, force_udp_csum, hub, inbound, partial_csum, reflected, response,
    transport, with_established, with_established6, with_half_open)
from harness.golden.fixtures import E_I, E_I6, E_R, E_R6, HUB_PORT, I_IDX, P, R_IDX, Case

UDP_CSUM_WORD = 40      # a transport's payload word we may change to steer its sum
RESPONSE_CSUM_WORD = 60


def rows() -> List[Case]:
    table = Table(seed="checksums")

    # -- zero and 0xffff ------------------------------------------------------------
    msg = transport(R_IDX)
    table.reflects("transport_udp_csum_zero_stays_zero",
                   frame=inbound(E_I, hub(P), msg, udp_csum=False),
                   out=reflected(hub(HUB_PORT), E_R, msg, udp_csum=False),
                   counter="reflect_transport", given=with_established, events="ev_nh_resolved")
    table.reflects("transport_udp_csum_computes_zero_sent_ffff",
                   force_udp_csum(hub(HUB_PORT), E_R, transport(R_IDX), UDP_CSUM_WORD, 0),
                   src=E_I, at=P, to=E_R, counter="reflect_transport", given=with_established,
                   events="ev_nh_resolved", then=expect_udp_checksum(0xFFFF))
    table.reflects("transport_udp_csum_ffff_in",
                   force_udp_csum(E_I, hub(P), transport(R_IDX), UDP_CSUM_WORD, 0),
                   src=E_I, at=P, to=E_R, counter="reflect_transport", given=with_established,
                   events="ev_nh_resolved")

    # -- partial checksums ----------------------------------------------------------------
    table.reflects("transport_partial_csum_stays_partial", transport(R_IDX), src=E_I, at=P,
                   to=E_R, partial=True, counter="reflect_transport", given=with_established,
                   events="ev_nh_resolved ev_csum_verified ev_csum_partial")
    batch = transport(I_IDX)
    table.reflects("transport_partial_csum_gro_batch", batch, src=E_R, at=HUB_PORT, to=E_I,
                   partial=True, gso_size=len(batch), counter="reflect_transport",
                   given=with_established, events="ev_nh_resolved ev_gso ev_csum_partial")
    table.reflects("transport_partial_csum_1400_warm", transport(R_IDX, n=1400), src=E_I, at=P,
                   to=E_R, partial=True, counter="reflect_transport", given=with_established,
                   warm=True, events="ev_csum_verified ev_csum_partial", bench=True)
    table.reflects("v6_transport_partial_csum_stays_partial", transport(R_IDX), src=E_I6, at=P,
                   to=E_R6, partial=True, counter="reflect_transport", given=with_established6,
                   events="ev_nh_resolved ev_csum_verified ev_csum_partial")
    # Whole checksums whose field happens to equal the partial sum: the
    # datapath must verify them rather than trust the look.
    msg = transport(R_IDX)
    msg = force_udp_csum(E_I, hub(P), msg, UDP_CSUM_WORD, partial_csum(E_I, hub(P), msg))
    assert pk.parse(inbound(E_I, hub(P), msg)).udp_checksum == partial_csum(E_I, hub(P), msg)
    table.reflects("transport_full_csum_that_looks_partial", msg, src=E_I, at=P, to=E_R,
                   counter="reflect_transport", given=with_established,
                   events="ev_nh_resolved ev_csum_verified")
    msg = response()
    msg = force_udp_csum(E_R, hub(HUB_PORT), msg, RESPONSE_CSUM_WORD,
                         partial_csum(E_R, hub(HUB_PORT), msg))
    table.reflects("response_full_csum_that_looks_partial", msg, src=E_R, at=HUB_PORT, to=E_I,
                   counter="reflect_response", copied=True, given=with_half_open,
                   events="ev_nh_resolved ev_csum_verified ev_session_established "
                          "ev_slow_response")
    return table.rows
