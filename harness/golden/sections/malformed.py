"""What is not a well-formed WireGuard datagram (docs/spec.md §3): junk
and type/size mismatches, IPv4 options, first fragments, UDP lengths that
disagree with IP's.  On a peer port it is dropped; on HubPort it is the
hub's own WireGuard's to judge.  What has no whole UDP header to read
(later fragments, a header cut short) passes, and Ethernet padding after
the IP packet does not stop a reflection."""

from __future__ import annotations

from typing import List

from wgmux import packet as pk
from wgmux import wire
from harness.golden.builders import (
    Table, hub, inbound, inbound_ip, junk, rand, reflected, transport, with_established)
from harness.golden.fixtures import DNS_PORT, E_I, E_R, HUB_PORT, I_IDX, P, R_IDX, Case

NOP_NOP_NOP_EOL = b"\x01\x01\x01\x00"


def rows() -> List[Case]:
    table = Table(seed="malformed")

    # -- junk on a peer port ---------------------------------------------------------
    for n in (0, 1, 3, 4, 11, 31, 63, 91, 147, 500, 1400):
        table.drops(f"junk_{n}_peer_port_dropped", junk(wire.WIREGUARD, n), src=E_I, at=P,
                    counter="drop_unclassified", given=with_established)
    table.passes("junk_hub_port_passes", rand(200), src=E_I, at=HUB_PORT, counter="pass_hub",
                 given=with_established)
    for msg_type, size in ((1, 92), (2, 148), (3, 92), (2, 64), (5, 148)):
        # a type field that does not go with the size
        table.drops(f"type{msg_type}_size{size}_peer_port_dropped",
                    msg_type.to_bytes(4, "little") + rand(size - 4), src=E_I, at=P,
                    counter="drop_unclassified", given=with_established)

    # -- IPv4 options, fragments, lengths ------------------------------------------------
    table.drops("ip_options_peer_port_dropped",
                frame=inbound(E_I, hub(P), transport(R_IDX), options=NOP_NOP_NOP_EOL),
                counter="drop_ip_options", given=with_established)
    table.passes("ip_options_hub_port_passes",
                 frame=inbound(E_R, hub(HUB_PORT), transport(I_IDX), options=NOP_NOP_NOP_EOL),
                 counter="pass_hub", given=with_established)
    table.passes("ip_options_other_port_passes",
                 frame=inbound(E_R, hub(DNS_PORT), rand(20), options=NOP_NOP_NOP_EOL),
                 counter="pass_other_port", given=with_established)
    table.drops("first_fragment_peer_port_dropped",
                frame=inbound(E_I, hub(P), transport(R_IDX), flags=pk.IP_MF),
                counter="drop_fragment", given=with_established)
    table.passes("first_fragment_hub_port_passes",
                 frame=inbound(E_R, hub(HUB_PORT), transport(I_IDX), flags=pk.IP_MF),
                 counter="pass_hub", given=with_established)
    table.passes("later_fragment_passes",
                 frame=inbound_ip(E_I[0], rand(100), frag_offset=185),
                 counter="pass_fragment", given=with_established)
    msg = transport(R_IDX)
    table.drops("udp_len_beyond_ip_peer_port_dropped",
                frame=inbound(E_I, hub(P), msg, udp_length=len(msg) + 9),
                counter="drop_malformed", given=with_established)
    table.drops("udp_len_short_of_ip_peer_port_dropped",
                frame=inbound(E_I, hub(P), msg, udp_length=len(msg) + 7),
                counter="drop_malformed", given=with_established)
    table.passes("udp_len_bad_hub_port_passes",
                 frame=inbound(E_R, hub(HUB_PORT), msg, udp_length=len(msg) + 9),
                 counter="pass_hub", given=with_established)
    # (test-run refuses frames without a whole IP header, so truncation is
    # tested at the UDP header)
    table.passes("udp_truncated_passes",
                 frame=inbound_ip(E_I[0], b"\0" * 4),
                 counter="pass_truncated", given=with_established)
    padding = b"\0" * 6                    # Ethernet padding beyond the IP packet
    table.reflects("ethernet_padding_reflected", frame=inbound(E_I, hub(P), msg) + padding,
                   out=reflected(hub(HUB_PORT), E_R, msg) + padding,
                   counter="reflect_transport", given=with_established, events="ev_nh_resolved")
    return table.rows
