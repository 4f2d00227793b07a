"""The hub's own AmneziaWG junk, sent toward a responder before a reflected
initiation (DESIGN §5, issue 5 "optional but valued").

An AmneziaWG initiator sends Jc junk datagrams (random bytes, sizes in
[Jmin, Jmax)) just before each initiation.  The hub never reflects junk (it
would be a free garbage reflector), so without help the second leg, hub ->
responder, carries a bare initiation: a profile a DPI box can tell from the
first leg.  `JunkSender.send_before_initiation` restores it: the hub emits
its own junk from HubPort toward E_R, then the initiation is reflected.

Nothing here touches the fast path.  It belongs to the slow path, which sees
initiations in userspace anyway (mac1 checks), just before it re-sends a
verified initiation toward the responder:

    junk.send_junk(lambda d: sender.send(src, dst, d, ttl=..., tos=...), config.amnezia)

with the slow path's own raw sender and the same (src, dst) as the
initiation, or standalone `JunkSender(hub_port).send_before_initiation(
hub_ip, E_R, params)`.  Either way the datagrams come from h:HubPort (the
hub's own WireGuard holds the UDP socket on that port; a raw socket does not
need it), exactly where the reflected initiation will come from, and pass
the responder's NAT for the same reason.

Junk is drawn so that the hub's own classifier (wgmux.wire.Classifier from
the same AmneziaWG values) never takes it for a message: a junk datagram
can then never be mistaken for a handshake or transport packet by a
responder's AmneziaWG either.
"""

from __future__ import annotations

import ctypes
import os
import random
import socket
import struct
from typing import Callable, List, Optional, Sequence, Tuple

from . import wire

IPV6_CHECKSUM = 7          # linux/in6.h: the kernel fills a raw socket's checksum
_SO_ATTACH_FILTER = 26
_BPF_RET_K = 0x06


def junk_datagrams(params, rng: Optional[random.Random] = None) -> List[bytes]:
    """Jc random datagrams of sizes in [Jmin, Jmax) (Jmin when equal), none
    of which the classifier of `params` (s1..s4/h1..h4) takes for a message
    (redrawn up to 64 times; only H ranges covering nearly all 2**32 values
    could exhaust that).
    `params`: anything with jc/jmin/jmax (wgmux.config.AmneziaParams)."""
    rng = rng or random.Random(os.urandom(16))
    jc, jmin, jmax = (int(getattr(params, k, 0) or 0) for k in ("jc", "jmin", "jmax"))
    classifier = wire.Classifier.from_params(params)
    out = []
    for _ in range(jc):
        size = jmin + (rng.randrange(jmax - jmin) if jmax > jmin else 0)
        for _ in range(64):   # bounded: a header range may cover (almost) every value
            junk = rng.randbytes(size)
            if classifier.classify(junk)[0] is None:
                break
        out.append(junk)
    return out


def send_junk(send: Callable[[bytes], object], params,
              rng: Optional[random.Random] = None) -> int:
    """Hook form for a slow path that already has a sender for the
    initiation's (h:HubPort -> E_R): call it with each junk datagram first.
    Returns how many were sent (0 for plain WireGuard, Jc = 0)."""
    junk = junk_datagrams(params, rng)
    for datagram in junk:
        send(datagram)
    return len(junk)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and any(data):
        s = 0xFFFF
    return ~s & 0xFFFF


def udp_segment(src_ip: str, sport: int, dst_ip: str, dport: int, payload: bytes,
                checksum: bool = True) -> bytes:
    """UDP header + payload; the IPv4 checksum computed here (for IPv6 the
    kernel fills it, see IPV6_CHECKSUM)."""
    length = 8 + len(payload)
    csum = 0
    if checksum:
        pseudo = (socket.inet_aton(src_ip) + socket.inet_aton(dst_ip)
                  + struct.pack("!xBH", socket.IPPROTO_UDP, length))
        csum = _csum(pseudo + struct.pack("!HHHH", sport, dport, length, 0) + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum) + payload


def _drop_all_input(sock: socket.socket):
    """A raw UDP socket gets a copy of every UDP packet; this one reads none."""
    insn = struct.pack("HBBI", _BPF_RET_K, 0, 0, 0)          # ret #0
    buf = ctypes.create_string_buffer(insn)
    prog = struct.pack("HL", 1, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, prog)   # the kernel copies it


class JunkSender:
    """Sends datagrams from (hub address, HubPort) without owning HubPort."""

    def __init__(self, hub_port: int):
        self.hub_port = hub_port
        self._socks = {}

    def _sock(self, family: int, src_ip: str) -> socket.socket:
        key = (family, src_ip)
        s = self._socks.get(key)
        if s is None:
            s = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_UDP)
            _drop_all_input(s)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_CHECKSUM, 6)
            s.bind((src_ip, 0))
            self._socks[key] = s
        return s

    def send(self, src_ip: str, dst: Tuple[str, int], datagrams: Sequence[bytes]) -> int:
        """Send each datagram from src_ip:HubPort to dst; returns how many went."""
        v6 = ":" in dst[0]
        s = self._sock(socket.AF_INET6 if v6 else socket.AF_INET, src_ip)
        sent = 0
        for d in datagrams:
            seg = udp_segment(src_ip, self.hub_port, dst[0], dst[1], d, checksum=not v6)
            s.sendto(seg, (dst[0], 0))
            sent += 1
        return sent

    def send_before_initiation(self, src_ip: str, dst: Tuple[str, int], params,
                               rng: Optional[random.Random] = None) -> int:
        """The hook for the slow path: Jc junk datagrams toward the responder
        (nothing when `params` has Jc = 0, i.e. plain WireGuard)."""
        return self.send(src_ip, dst, junk_datagrams(params, rng))

    def close(self):
        for s in self._socks.values():
            s.close()
        self._socks.clear()

    def __enter__(self) -> "JunkSender":
        return self

    def __exit__(self, *exc):
        self.close()
