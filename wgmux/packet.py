"""Ethernet / IPv4 / IPv6 / UDP frames: build them, parse them, check them.

The one place the project builds and takes apart raw frames (datapath
tests, benchmark, netlab captures).  Checksums are computed from scratch
here, never incrementally, so that they can judge the datapath's
incremental updates.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Optional, Tuple, Union

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_HLEN = 14

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_FRAGMENT = 44
IPPROTO_ICMPV6 = 58

IPV4_HLEN = 20
IPV6_HLEN = 40
UDP_HLEN = 8

IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET_MASK = 0x1FFF

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
AddressLike = Union[str, bytes, int, IPAddress]
Endpoint = Tuple[AddressLike, int]


def ip(addr: AddressLike) -> IPAddress:
    if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return addr
    if isinstance(addr, bytes) and len(addr) not in (4, 16):
        raise ValueError(f"an IP address is 4 or 16 bytes, not {len(addr)}")
    return ipaddress.ip_address(addr)


def mac(addr: Union[str, bytes]) -> bytes:
    """'02:00:00:00:00:01' or 6 bytes -> 6 bytes."""
    if isinstance(addr, bytes):
        if len(addr) != 6:
            raise ValueError("a MAC address is 6 bytes")
        return addr
    raw = bytes(int(part, 16) for part in addr.split(":"))
    if len(raw) != 6:
        raise ValueError(f"bad MAC address {addr!r}")
    return raw


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def csum_sum(data: bytes, start: int = 0) -> int:
    """Ones'-complement sum of 16-bit big-endian words (RFC 1071), folded."""
    if len(data) % 2:
        data += b"\0"
    total = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes, start: int = 0) -> int:
    return ~csum_sum(data, start) & 0xFFFF


def _pseudo_header(src: IPAddress, dst: IPAddress, proto: int, length: int) -> bytes:
    if src.version != dst.version:
        raise ValueError("source and destination of different families")
    if src.version == 4:
        return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)
    return src.packed + dst.packed + struct.pack("!IxxxB", length, proto)


def udp_checksum(src: AddressLike, dst: AddressLike, segment: bytes) -> int:
    """The UDP checksum of `segment` (header with checksum 0 + payload);
    a computed 0 is sent as 0xffff (RFC 768)."""
    value = checksum(_pseudo_header(ip(src), ip(dst), IPPROTO_UDP, len(segment)) + segment)
    return value or 0xFFFF


def udp_pseudo_sum(src: AddressLike, dst: AddressLike, udp_length: int) -> int:
    """What a CHECKSUM_PARTIAL skb holds in the UDP checksum field: the
    plain (not complemented) folded pseudo-header sum."""
    return csum_sum(_pseudo_header(ip(src), ip(dst), IPPROTO_UDP, udp_length))


def udp(src: AddressLike, dst: AddressLike, sport: int, dport: int, payload: bytes,
        csum: Union[bool, int] = True, length: Optional[int] = None) -> bytes:
    """A UDP header + payload.  csum: True computes it, False sends 0,
    an int is written as given (to build broken packets)."""
    ulen = UDP_HLEN + len(payload) if length is None else length
    seg = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    if csum is True:
        value = udp_checksum(src, dst, struct.pack("!HHHH", sport, dport, UDP_HLEN + len(payload), 0)
                             + payload)
    elif csum is False:
        value = 0
    else:
        value = int(csum)
    return seg[:6] + struct.pack("!H", value) + seg[8:]


def ipv4(src: AddressLike, dst: AddressLike, payload: bytes, proto: int = IPPROTO_UDP,
         ttl: int = 64, tos: int = 0, ident: int = 0, flags: int = 0, frag_offset: int = 0,
         options: bytes = b"", tot_len: Optional[int] = None,
         header_checksum: Optional[int] = None) -> bytes:
    """An IPv4 header (+ options) + payload.  flags: IP_DF / IP_MF bits."""
    if len(options) % 4:
        raise ValueError("IPv4 options must be padded to 4 bytes")
    ihl = (IPV4_HLEN + len(options)) // 4
    total = ihl * 4 + len(payload) if tot_len is None else tot_len
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, total, ident,
                      flags | (frag_offset & IP_OFFSET_MASK), ttl, proto, 0,
                      ip(src).packed, ip(dst).packed) + options
    value = checksum(hdr) if header_checksum is None else header_checksum
    return hdr[:10] + struct.pack("!H", value) + hdr[12:] + payload


def ipv6(src: AddressLike, dst: AddressLike, payload: bytes, nexthdr: int = IPPROTO_UDP,
         hop_limit: int = 64, traffic_class: int = 0, flow_label: int = 0,
         payload_len: Optional[int] = None) -> bytes:
    plen = len(payload) if payload_len is None else payload_len
    first = (6 << 28) | (traffic_class << 20) | flow_label
    return struct.pack("!IHBB16s16s", first, plen, nexthdr, hop_limit,
                       ip(src).packed, ip(dst).packed) + payload


def ethernet(dst_mac: Union[str, bytes], src_mac: Union[str, bytes], ethertype: int,
             payload: bytes) -> bytes:
    return mac(dst_mac) + mac(src_mac) + struct.pack("!H", ethertype) + payload


def udp_frame(src: Endpoint, dst: Endpoint, payload: bytes,
              src_mac: Union[str, bytes] = "02:00:00:00:00:01",
              dst_mac: Union[str, bytes] = "02:00:00:00:00:02",
              ttl: int = 64, udp_csum: Union[bool, int] = True,
              udp_length: Optional[int] = None, **ip_kw) -> bytes:
    """Ethernet + IPv4/IPv6 (by the addresses' family) + UDP + payload.

    Extra keywords go to ipv4() / ipv6() (options, flags, tot_len, ...).
    """
    pkt = udp_packet(src, dst, payload, ttl=ttl, udp_csum=udp_csum, udp_length=udp_length,
                     **ip_kw)
    return ethernet(dst_mac, src_mac, ETH_P_IP if pkt[0] >> 4 == 4 else ETH_P_IPV6, pkt)


def udp_packet(src: Endpoint, dst: Endpoint, payload: bytes, ttl: int = 64,
               udp_csum: Union[bool, int] = True, udp_length: Optional[int] = None,
               **ip_kw) -> bytes:
    """IPv4/IPv6 (by the addresses' family) + UDP + payload, with no link
    layer: what a TUN device (IFF_NO_PI) carries.  Keywords as udp_frame()."""
    sip, dip = ip(src[0]), ip(dst[0])
    seg = udp(sip, dip, src[1], dst[1], payload, csum=udp_csum, length=udp_length)
    if sip.version == 4:
        return ipv4(sip, dip, seg, ttl=ttl, **ip_kw)
    return ipv6(sip, dip, seg, hop_limit=ttl, **ip_kw)


@dataclass(frozen=True)
class Frame:
    """A parsed Ethernet frame carrying IPv4/IPv6 (and UDP, if it does)."""
    dst_mac: str
    src_mac: str
    ethertype: int
    version: int = 0
    src: Optional[IPAddress] = None
    dst: Optional[IPAddress] = None
    ttl: int = 0                     # hop limit for IPv6
    proto: int = 0                   # next header for IPv6
    ip_header: bytes = b""           # with options
    ip_checksum: int = 0
    sport: Optional[int] = None
    dport: Optional[int] = None
    udp_length: int = 0
    udp_checksum: int = 0
    payload: bytes = b""             # UDP payload, or the L3 payload otherwise
    udp_segment: bytes = b""

    @property
    def source(self) -> Tuple[IPAddress, int]:
        return (self.src, self.sport)

    @property
    def destination(self) -> Tuple[IPAddress, int]:
        return (self.dst, self.dport)

    def ip_checksum_ok(self) -> bool:
        if self.version != 4:
            return True
        return csum_sum(self.ip_header) == 0xFFFF

    def udp_checksum_partial(self) -> bool:
        """The field holds what a CHECKSUM_PARTIAL skb would: the plain
        pseudo-header sum."""
        return self.sport is not None and self.udp_checksum == udp_pseudo_sum(
            self.src, self.dst, len(self.udp_segment))

    def udp_checksum_ok(self) -> bool:
        """A zero checksum means "none" over IPv4 (and is invalid over IPv6)."""
        if self.sport is None:
            return False
        if self.udp_checksum == 0:
            return self.version == 4
        pseudo = _pseudo_header(self.src, self.dst, IPPROTO_UDP, len(self.udp_segment))
        return csum_sum(pseudo + self.udp_segment) == 0xFFFF


def parse(frame: bytes) -> Frame:
    """Parse what the datapath tests need; raises ValueError on truncation."""
    if len(frame) < ETH_HLEN:
        raise ValueError("truncated Ethernet header")
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    return _parse_l3(frame[ETH_HLEN:], dict(dst_mac=mac_str(frame[0:6]),
                                            src_mac=mac_str(frame[6:12]), ethertype=ethertype))


def parse_ip(pkt: bytes) -> Frame:
    """A packet with no link layer, as a TUN device (IFF_NO_PI) carries it:
    the Frame parse() would give, its version told by the first nibble, no
    MAC addresses.  Raises ValueError on truncation."""
    version = pkt[0] >> 4 if pkt else 0
    ethertype = {4: ETH_P_IP, 6: ETH_P_IPV6}.get(version, 0)
    return _parse_l3(pkt, dict(dst_mac="", src_mac="", ethertype=ethertype))


def _parse_l3(l3: bytes, base: dict) -> Frame:
    ethertype = base["ethertype"]
    if ethertype == ETH_P_IP:
        if len(l3) < IPV4_HLEN:
            raise ValueError("truncated IPv4 header")
        ihl = (l3[0] & 0x0F) * 4
        tot_len, = struct.unpack_from("!H", l3, 2)
        frag, = struct.unpack_from("!H", l3, 6)
        hdr = l3[:ihl]
        fields = dict(version=4, src=ipaddress.IPv4Address(l3[12:16]),
                      dst=ipaddress.IPv4Address(l3[16:20]), ttl=l3[8], proto=l3[9],
                      ip_header=hdr, ip_checksum=struct.unpack_from("!H", l3, 10)[0])
        body = l3[ihl:tot_len]
        first_fragment = (frag & IP_OFFSET_MASK) == 0
    elif ethertype == ETH_P_IPV6:
        if len(l3) < IPV6_HLEN:
            raise ValueError("truncated IPv6 header")
        plen, = struct.unpack_from("!H", l3, 4)
        fields = dict(version=6, src=ipaddress.IPv6Address(l3[8:24]),
                      dst=ipaddress.IPv6Address(l3[24:40]), ttl=l3[7], proto=l3[6],
                      ip_header=l3[:IPV6_HLEN])
        body = l3[IPV6_HLEN:IPV6_HLEN + plen]
        first_fragment = True
    else:
        return Frame(**base, payload=l3)
    if fields["proto"] != IPPROTO_UDP or not first_fragment or len(body) < UDP_HLEN:
        return Frame(**base, **fields, payload=body)
    sport, dport, ulen, csum = struct.unpack_from("!HHHH", body)
    return Frame(**base, **fields, sport=sport, dport=dport, udp_length=ulen,
                 udp_checksum=csum, payload=body[UDP_HLEN:ulen], udp_segment=body[:ulen])
