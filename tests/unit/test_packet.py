"""wgmux.packet without a link layer: the IP/UDP packets a TUN device
carries (netlab's AmneziaWG adapter writes and reads them), built and parsed
by the same code as the datapath tests' Ethernet frames."""

import random

import pytest

from wgmux import packet

rng = random.Random(12)


@pytest.mark.parametrize("src,dst", [("198.18.0.254", "169.254.77.1"),
                                     ("2001:db8::1", "fd00:a3c:77::1")])
def test_udp_packet_round_trip_with_every_checksum(src, dst):
    payload = rng.randbytes(333)
    ip_kw = {} if ":" in src else {"flags": packet.IP_DF}   # ipv6() has no flags
    pkt = packet.udp_packet((src, 51820), (dst, 51821), payload, **ip_kw)
    frame = packet.parse_ip(pkt)
    assert (str(frame.src), frame.sport, str(frame.dst), frame.dport, frame.payload) == \
        (src, 51820, dst, 51821, payload)
    assert frame.version == (6 if ":" in src else 4) and frame.ttl == 64
    assert frame.ip_checksum_ok() and frame.udp_checksum_ok()
    assert frame.udp_length == len(frame.udp_segment) == 8 + len(payload)
    assert (frame.src_mac, frame.dst_mac) == ("", "")


@pytest.mark.parametrize("src,dst", [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")])
def test_a_frame_is_ethernet_around_the_packet(src, dst):
    payload = rng.randbytes(40)
    frame = packet.udp_frame((src, 1), (dst, 2), payload, ttl=9)
    pkt = packet.udp_packet((src, 1), (dst, 2), payload, ttl=9)
    assert frame[packet.ETH_HLEN:] == pkt
    assert packet.parse(frame).ethertype == packet.parse_ip(pkt).ethertype
    assert packet.parse(frame).payload == packet.parse_ip(pkt).payload == payload


def test_parse_ip_of_what_is_not_an_ip_packet():
    assert packet.parse_ip(b"").ethertype == 0
    assert packet.parse_ip(b"\x10abc").sport is None
    for truncated in (b"\x45" + bytes(18), b"\x60" + bytes(38)):
        with pytest.raises(ValueError):
            packet.parse_ip(truncated)
    tcp = packet.ipv4("10.0.0.1", "10.0.0.2", bytes(20), proto=packet.IPPROTO_TCP)
    assert packet.parse_ip(tcp).proto == packet.IPPROTO_TCP and packet.parse_ip(tcp).sport is None
