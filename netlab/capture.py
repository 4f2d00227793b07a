"""Packet captures with tcpdump inside a node, read back for assertions.

    with Capture(hub, "eth0", "udp port 51821") as cap:
        ...traffic...
    assert any(p.udp and b"marker" in p.payload for p in cap.packets)

The capture is written to a pcap file (kept in `Capture.path` for a human to
open in Wireshark when a test fails) and parsed here: Ethernet, raw IP and
Linux cooked framings; IPv4/IPv6; UDP/TCP/ICMP summaries.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .lab import Node, stop_process, wait_for

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_ALT = 12
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58


@dataclass
class Packet:
    time: float
    l3: bytes                   # from the IP header on
    version: int = 0
    src: Optional[str] = None
    dst: Optional[str] = None
    proto: Optional[int] = None
    sport: Optional[int] = None
    dport: Optional[int] = None
    payload: bytes = b""        # L4 payload (UDP/TCP data), or L3 payload otherwise

    @property
    def udp(self) -> bool:
        return self.proto == PROTO_UDP

    def __repr__(self):
        return (f"<Packet {self.src}:{self.sport} > {self.dst}:{self.dport} "
                f"proto={self.proto} len={len(self.payload)}>")


def parse_ip(ts: float, l3: bytes) -> Packet:
    pkt = Packet(ts, l3)
    if not l3:
        return pkt
    pkt.version = l3[0] >> 4
    if pkt.version == 4 and len(l3) >= 20:
        ihl = (l3[0] & 0x0F) * 4
        pkt.proto = l3[9]
        pkt.src = str(ipaddress.IPv4Address(l3[12:16]))
        pkt.dst = str(ipaddress.IPv4Address(l3[16:20]))
        total = struct.unpack("!H", l3[2:4])[0]
        frag = struct.unpack("!H", l3[6:8])[0] & 0x1FFF
        body = l3[ihl:total] if frag == 0 else b""
    elif pkt.version == 6 and len(l3) >= 40:
        pkt.proto = l3[6]
        pkt.src = str(ipaddress.IPv6Address(l3[8:24]))
        pkt.dst = str(ipaddress.IPv6Address(l3[24:40]))
        body = l3[40:40 + struct.unpack("!H", l3[4:6])[0]]
    else:
        return pkt
    if pkt.proto == PROTO_UDP and len(body) >= 8:
        pkt.sport, pkt.dport = struct.unpack("!HH", body[:4])
        pkt.payload = body[8:]
    elif pkt.proto == PROTO_TCP and len(body) >= 20:
        pkt.sport, pkt.dport = struct.unpack("!HH", body[:4])
        pkt.payload = body[(body[12] >> 4) * 4:]
    else:
        pkt.payload = body
    return pkt


def read_pcap(path) -> list:
    data = Path(path).read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    packets, off = [], 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        ts = sec + frac / (1e9 if nano else 1e6)
        if linktype == LINKTYPE_ETHERNET:
            ethertype, l3 = struct.unpack("!H", frame[12:14])[0], frame[14:]
            if ethertype == 0x8100:
                ethertype, l3 = struct.unpack("!H", frame[16:18])[0], frame[18:]
            if ethertype not in (0x0800, 0x86DD):
                continue
        elif linktype in (LINKTYPE_RAW, LINKTYPE_RAW_ALT):
            l3 = frame
        elif linktype == LINKTYPE_LINUX_SLL:
            l3 = frame[16:]
        elif linktype == LINKTYPE_LINUX_SLL2:
            l3 = frame[20:]
        else:
            raise ValueError(f"{path}: unsupported link type {linktype}")
        packets.append(parse_ip(ts, l3))
    return packets


class Capture:
    """tcpdump on `ifname` in `node` with a BPF filter expression."""

    def __init__(self, node: Node, ifname: str, bpf_filter: str = "", snaplen: int = 0):
        self.node, self.ifname, self.filter = node, ifname, bpf_filter
        self.snaplen = snaplen
        self.dir = Path(tempfile.mkdtemp(prefix=f"{node.netns}-cap-"))
        self.path = self.dir / f"{node.name}-{ifname}.pcap"
        self._proc = None
        self._stderr = []
        self._packets = None
        node.lab.on_close(self._discard)

    def start(self) -> "Capture":
        # --immediate-mode: each packet to tcpdump as it comes.  Without it
        # TPACKET_V3 holds packets in a ring block until the block is full
        # or its timeout passes, and a capture stopped meanwhile never
        # writes them (a capture under a second long lost everything).
        args = ["tcpdump", "-n", "-U", "--immediate-mode", "-Z", "root", "-i", self.ifname,
                "-w", str(self.path)]
        if self.snaplen:
            args += ["-s", str(self.snaplen)]
        if self.filter:
            args += self.filter.split()
        self._proc = self.node.popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        threading.Thread(target=self._drain, daemon=True).start()
        # tcpdump says "listening on" once its socket is open: only then is
        # anything sent afterwards guaranteed to be seen.
        wait_for(lambda: self._check_alive() and any("listening on" in l for l in self._stderr),
                 timeout=10, what=f"tcpdump on {self.node.name}:{self.ifname}")
        return self

    def _drain(self):
        for raw in self._proc.stderr:
            self._stderr.append(raw.decode(errors="replace"))

    def _check_alive(self) -> bool:
        if self._proc.poll() is not None:
            raise RuntimeError(f"tcpdump on {self.node.name}:{self.ifname} exited "
                               f"{self._proc.returncode}: {''.join(self._stderr)}")
        return True

    def stop(self) -> list:
        if self._proc is not None:
            import signal
            stop_process(self._proc, sig=signal.SIGINT)
            self._proc = None
            self._packets = read_pcap(self.path) if self.path.exists() else []
        return self._packets or []

    def read(self) -> list:
        """Packets written so far, without stopping (tcpdump -U flushes each one)."""
        if self._packets is not None:
            return self._packets
        return read_pcap(self.path) if self.path.exists() else []

    def wait_for(self, predicate, timeout: float = 5.0, what: str = "a packet") -> list:
        """Wait until some captured packet satisfies `predicate`; return those that do."""
        return wait_for(lambda: [p for p in self.read() if predicate(p)], timeout=timeout,
                        what=f"{what} on {self.node.name}:{self.ifname}")

    def _discard(self):
        self.stop()
        # Keep pcaps for a human only when asked: NETLAB_KEEP_PCAP=1.
        if not os.environ.get("NETLAB_KEEP_PCAP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def packets(self) -> list:
        """Packets captured so far (stops the capture on first access after exit)."""
        if self._packets is None:
            return self.stop()
        return self._packets

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
