"""The attacker's side of a lab: spoofed packets, floods, and what reaches a victim.

    hostile = add_hostile(topo)              # nodes atk and victim on the internet
    spoof(hostile.atk, (hostile.victim_ip, 4444), (topo.hub_ip, 51821), payload)
    frames = build_frames(hostile.atk, (topo.hub_ip, 51821), hostile.sources(1000),
                          initiations(responder_public_key), count=16384)
    with Observer(hostile.victim, {"from_hub": f"ip saddr {topo.hub_ip}"}) as seen, \\
            Flooder(hostile.atk, frames, rate=150_000, duration=10) as flood:
        result = flood.wait()
    seen.read()["from_hub"].bytes

- `add_hostile`: an attacker node `atk` and a `victim` node on the internet
  segment.  The hub routes `SPOOF_NET` (198.19.0.0/16, the other half of
  RFC 2544's 198.18.0.0/15) to the victim, so whatever the hub sends to a
  spoofed source from that prefix arrives at the victim and can be counted
  there.  `add_behind_hub`: a node behind the hub (the hub routes
  `BEHIND_NET` to it, the attacker routes it through the hub), for packets
  that pass the hub without being addressed to it.
- `spoof` / `Spoofer`: single Ethernet frames with any IPv4/IPv6 source,
  sent from inside a node through an AF_PACKET socket (a raw IP socket
  would replace a 0.0.0.0 source by the interface's address).
- `Flooder`: prebuilt frames sent round robin at a target rate for a fixed
  time by a child process in the node (its own core; the caller stays
  free): AF_PACKET, PACKET_QDISC_BYPASS, sendmmsg through ctypes in batches.
  It stops by itself (duration, count) and the lab kills it at close.
  `build_frames` + `initiations` make the usual flood: valid-mac1
  initiations for a responder's public key, distinct sender indices, from
  many spoofed sources with random source ports.
- `Observer`: nftables counters in a node (prerouting, priority raw, before
  any NAT or routing decision): packets and IP bytes matching expressions,
  e.g. everything from the hub reaching a victim, or initiations from the
  hub reaching a responder's NAT (`match_initiation`), or packets carrying
  a marker at a given offset of their UDP payload (`match_marker`);
  `Sampler` reads one every second in the background (`peak_rate`).

The pair probe (loss and RTT percentiles through a tunnel) is
`netlab.traffic.UdpEcho`.

What `Flooder` reaches on the 2-core development VM (1,000 spoofed
sources, valid-mac1 initiations to hub:51821, batches of 32 to 256 alike;
tests/integration/test_attack_tools.py prints it):

    rate asked   reached       the hub's ingress
    150 kpps     150 kpps      any of the below (paced to within 0.1 %)
    as fast      ~400-440 k    no TC program (the hub's stack drops them)
    as fast      ~215-220 k    `wgmux serve`: each frame copied to the slow path's ring
    as fast      ~350 k        `wgmux serve`, most shed by its per-source limit

The sender's core also carries the bridge and the hub's ingress (veth runs
the receive path in the sender's softirq), so the rate depends on what the
hub does with each frame; the other core stays free for the peers, the
daemon and the test.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from wgmux import mac1 as wgmac1
from wgmux import packet, wire

from .lab import Node, stop_process, wait_for
from .topology import WAN_NET, Topology

SPOOF_NET = ipaddress.IPv4Network("198.19.0.0/16")
BEHIND_NET = ipaddress.IPv4Network("203.0.113.0/24")   # TEST-NET-3
ATTACKER_INDEX = 250        # 198.18.0.250
VICTIM_INDEX = 251          # 198.18.0.251


Endpoint = Tuple[str, int]


# ---- the nodes -------------------------------------------------------------

@dataclass
class Hostile:
    """The attacker and the victim added to a standard topology."""

    topo: Topology
    atk: Node
    victim: Node
    atk_ip: str
    victim_ip: str
    spoof_net: ipaddress.IPv4Network = SPOOF_NET

    def sources(self, n: int, offset: int = 0) -> List[str]:
        """`n` distinct spoofed addresses from `spoof_net` (routed to the victim)."""
        hosts = self.spoof_net.num_addresses - 2
        if offset + n > hosts:
            raise ValueError(f"{n} sources from {self.spoof_net} (offset {offset})")
        base = int(self.spoof_net.network_address) + 1 + offset
        return [str(ipaddress.IPv4Address(base + i)) for i in range(n)]


def add_attacker(topo: Topology, index: int = ATTACKER_INDEX) -> Node:
    """Node `atk` on the internet segment, sending from whatever source it
    likes: no reverse-path filter (nothing on its path checks sources, the
    internet bridge is L2)."""
    atk = topo.add_internet_host("atk", index)
    for key in ("all", "default", "eth0"):
        atk.sysctl(f"net.ipv4.conf.{key}.rp_filter", 0)
    return atk


def add_hostile(topo: Topology, atk_index: int = ATTACKER_INDEX,
                victim_index: int = VICTIM_INDEX,
                spoof_net: ipaddress.IPv4Network = SPOOF_NET) -> Hostile:
    """Nodes `atk` and `victim` on the internet segment; the hub routes
    `spoof_net` to the victim (add_attacker says what the attacker is)."""
    atk = add_attacker(topo, atk_index)
    victim = topo.add_internet_host("victim", victim_index)
    atk_ip, victim_ip = str(WAN_NET[atk_index]), str(WAN_NET[victim_index])
    topo.hub.add_route(str(spoof_net), gateway=victim_ip)
    return Hostile(topo, atk, victim, atk_ip, victim_ip, spoof_net)


def add_behind_hub(topo: Topology, hostile: Optional[Hostile] = None,
                   net: ipaddress.IPv4Network = BEHIND_NET) -> Tuple[Node, str]:
    """A node `behind` on a link from the hub (hub .1, node .7 of `net`);
    the hub forwards IPv4, and the attacker (if given) routes `net`
    through the hub.  Returns (node, its address)."""
    behind = topo.lab.add_node("behind")
    hub_ip, node_ip = str(net[1]), str(net[7])
    topo.lab.link(topo.hub, "lan0", behind, "eth0", a_addr=f"{hub_ip}/{net.prefixlen}",
                  b_addr=f"{node_ip}/{net.prefixlen}")
    behind.add_route("default", gateway=hub_ip)
    topo.hub.sysctl("net.ipv4.ip_forward", 1)
    if hostile is not None:
        hostile.atk.add_route(str(net), gateway=topo.hub_ip)
    return behind, node_ip


# ---- layer 2 -----------------------------------------------------------------

@dataclass(frozen=True)
class L2Path:
    """How a node reaches a destination: interface and both MACs."""

    ifname: str
    src_mac: str
    dst_mac: str


def l2_path(node: Node, dst: str) -> L2Path:
    """The interface and next-hop MAC `node` uses for `dst` (resolving the
    neighbour first if needed)."""
    (route,) = json.loads(node.run(["ip", "-j", "route", "get", dst]).stdout)
    ifname, hop = route["dev"], route.get("gateway", dst)
    src_mac = next(link.get_attr("IFLA_ADDRESS") for link in node.ipr.get_links(node.index(ifname)))

    def neighbour():
        out = json.loads(node.run(["ip", "-j", "neigh", "show", "to", hop, "dev", ifname]).stdout
                         or "[]")
        mac = next((n.get("lladdr") for n in out if n.get("lladdr")
                    and "FAILED" not in n.get("state", [])), None)
        if not mac:   # ARP/ND through a ping, answered or not
            node.run(["ping", "-n", "-c", "1", "-W", "0.2", hop], check=False, timeout=5)
        return mac

    return L2Path(ifname, src_mac, wait_for(neighbour, timeout=5, what=f"{node.name}: MAC of {hop}"))


def frame(path: L2Path, src: Endpoint, dst: Endpoint, payload: bytes, ttl: int = 64) -> bytes:
    """An Ethernet + IPv4/IPv6 + UDP frame along `path` with any source."""
    return packet.udp_frame((src[0], src[1]), (dst[0], dst[1]), payload,
                            src_mac=path.src_mac, dst_mac=path.dst_mac, ttl=ttl)


# ---- single packets ------------------------------------------------------------

class Spoofer:
    """Sends frames with forged sources from `node` (AF_PACKET sockets
    opened inside the node, one per interface; closed with the lab)."""

    def __init__(self, node: Node):
        self.node = node
        self._socks: Dict[str, socket.socket] = {}
        self._paths: Dict[str, L2Path] = {}
        node.lab.on_close(self.close)

    def path(self, dst: str) -> L2Path:
        if dst not in self._paths:
            self._paths[dst] = l2_path(self.node, dst)
        return self._paths[dst]

    def _sock(self, ifname: str) -> socket.socket:
        if ifname not in self._socks:
            with self.node.entered():
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                s.bind((ifname, 0))
            self._socks[ifname] = s
        return self._socks[ifname]

    def send(self, src: Endpoint, dst: Endpoint, payload: bytes, count: int = 1,
             ttl: int = 64) -> int:
        """Send `payload` from `src` to `dst` `count` times; the IP bytes sent."""
        path = self.path(dst[0])
        data = frame(path, src, dst, payload, ttl)
        sock = self._sock(path.ifname)
        for _ in range(count):
            sock.send(data)
        return count * (len(data) - packet.ETH_HLEN)

    def close(self):
        for s in self._socks.values():
            with contextlib.suppress(OSError):
                s.close()
        self._socks.clear()
        _spoofers.pop(self.node.netns, None)


_spoofers: Dict[str, Spoofer] = {}


def spoof(node: Node, src: Endpoint, dst: Endpoint, payload: bytes, count: int = 1,
          ttl: int = 64) -> int:
    """One UDP packet (or `count` copies) from `node` with the forged source
    `src` (ip, port) to `dst`; returns the IP bytes sent."""
    spoofer = _spoofers.get(node.netns)
    if spoofer is None:
        spoofer = _spoofers[node.netns] = Spoofer(node)
    return spoofer.send(src, dst, payload, count=count, ttl=ttl)


# ---- payloads ----------------------------------------------------------------

def initiations(responder_public_key, first_index: Optional[int] = None,
                marker: bytes = b"") -> Callable[[int], bytes]:
    """A payload factory: the i-th payload is a handshake initiation with
    sender index `first_index + i` (random start by default) and a mac1 that
    is valid for `responder_public_key`; the ephemeral key starts with
    `marker` (up to 32 bytes, for `match_marker` at offset 8), the rest is
    random, as it would be for a real initiation nobody can decrypt."""
    key = wgmac1.mac1_key(responder_public_key)
    start = secrets.randbits(31) if first_index is None else first_index
    if len(marker) > wire.WG_KEY_SIZE:
        raise ValueError("the marker goes in the 32-byte ephemeral key")

    def make(i: int) -> bytes:
        msg = wire.build_initiation((start + i) & wire.U32_MAX,
                                    ephemeral=marker + os.urandom(wire.WG_KEY_SIZE - len(marker)),
                                    static=os.urandom(wire.WG_STATIC_ENC_SIZE),
                                    timestamp=os.urandom(wire.WG_TIMESTAMP_ENC_SIZE))
        return wgmac1.with_mac1(msg, key)

    return make


def forged_transport(receiver: int, counter: int = 0, size: int = 128,
                     marker: bytes = b"") -> bytes:
    """A transport message for `receiver` with `counter`, `size` bytes in
    all; its data starts with `marker` (offset 16, see `match_marker`)."""
    data_len = max(wire.WG_TAG_SIZE, size - wire.WG_TRANSPORT_HEADER_SIZE, len(marker))
    data = marker + os.urandom(data_len - len(marker))
    return wire.build_transport(receiver, counter & 0xFFFFFFFFFFFFFFFF, data)


def build_frames(node: Node, dst: Endpoint, sources: Sequence[str],
                 payload: Callable[[int], bytes], count: int,
                 seed: Optional[int] = None) -> List[bytes]:
    """`count` frames from `node` to `dst`: source i is `sources[i % n]`
    with a random port, payload `payload(i)`."""
    path = l2_path(node, dst[0])
    rng = random.Random(seed)
    return [frame(path, (sources[i % len(sources)], rng.randrange(1024, 65536)), dst, payload(i))
            for i in range(count)]


# ---- floods ------------------------------------------------------------------

# The sending child: frames file of (u32 length, frame) records, sent round
# robin with sendmmsg(2) on an AF_PACKET socket bound to the interface,
# paced to the target rate per batch.  Prints "ready", then "P <sent> <t>"
# every 0.5 s, and finally "DONE <json>".
_FLOODER = r"""
import ctypes, errno, json, signal, socket, struct, sys, time
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
ifname, path = sys.argv[1], sys.argv[2]
rate, duration, limit, batch = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
data = open(path, "rb").read()
frames, off = [], 0
while off < len(data):
    (n,) = struct.unpack_from("<I", data, off)
    frames.append(data[off + 4:off + 4 + n])
    off += 4 + n
while len(frames) % batch:
    frames += frames[:batch - len(frames) % batch]
n = len(frames)

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

blob = ctypes.create_string_buffer(b"".join(frames))
base = ctypes.addressof(blob)
iov, mm = (iovec * n)(), (mmsghdr * n)()
pos = 0
for i, f in enumerate(frames):
    iov[i].base, iov[i].len = base + pos, len(f)
    pos += len(f)
    mm[i].hdr.iov = ctypes.pointer(iov[i])
    mm[i].hdr.iovlen = 1
libc = ctypes.CDLL(None, use_errno=True)
sendmmsg = libc.sendmmsg
sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
sendmmsg.restype = ctypes.c_int
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.setsockopt(263, 20, 1)      # SOL_PACKET, PACKET_QDISC_BYPASS
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
s.bind((ifname, 0))
fd, size = s.fileno(), ctypes.sizeof(mmsghdr)
addr0 = ctypes.addressof(mm)
print("ready", flush=True)
sent = errors = i = 0
ip_bytes = 0
t0 = last = time.monotonic()
while True:
    now = time.monotonic()
    if now - t0 >= duration or sent >= limit or stopping:
        break
    if now - last >= 0.5:
        print("P", sent, now, flush=True)
        last = now
    allowed = min(limit, int(rate * (now - t0)) + batch) if rate > 0 else limit
    if sent >= allowed:
        time.sleep(min(0.002, (sent - allowed + 1) / rate))
        continue
    k = min(batch, allowed - sent, n - i)
    r = sendmmsg(fd, addr0 + i * size, k, 0)
    if r < 0:
        errors += 1
        if ctypes.get_errno() not in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
            raise OSError(ctypes.get_errno(), "sendmmsg")
        time.sleep(0.0002)
        continue
    for j in range(i, i + r):
        ip_bytes += iov[j].len - 14
    sent += r
    i = (i + r) % n
t = time.monotonic() - t0
print("P", sent, time.monotonic(), flush=True)
print("DONE", json.dumps({"sent": sent, "seconds": t, "errors": errors, "ip_bytes": ip_bytes}),
      flush=True)
"""


@dataclass
class FloodResult:
    sent: int
    seconds: float
    errors: int          # sendmmsg calls refused (ENOBUFS), retried
    ip_bytes: int        # IP bytes of the frames sent

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def __str__(self):
        return f"{self.sent} frames in {self.seconds:.1f} s ({self.rate / 1000:.0f} kpps)"


class Flooder:
    """Sends `frames` (Ethernet frames, as from `build_frames`, all on one
    interface) round robin from `node` at `rate` frames/s (0: as fast as
    it goes) for `duration` seconds or `count` frames, in a child process."""

    def __init__(self, node: Node, frames: Sequence[bytes], rate: float, duration: float,
                 count: Optional[int] = None, batch: int = 64, ifname: Optional[str] = None):
        if not frames:
            raise ValueError("no frames to send")
        self.node, self.rate, self.duration = node, float(rate), float(duration)
        self.count = count if count is not None else 1 << 62
        self.batch, self.ifname = batch, ifname or _frames_ifname(node, frames[0])
        self.dir = tempfile.mkdtemp(prefix=f"{node.netns}-flood-")
        node.lab.on_close(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        self.path = os.path.join(self.dir, "frames")
        with open(self.path, "wb") as f:
            for fr in frames:
                f.write(struct.pack("<I", len(fr)) + fr)
        self._proc: Optional[subprocess.Popen] = None
        self._lines: List[str] = []
        self._lock = threading.Lock()
        self.started: Optional[float] = None
        self._result: Optional[FloodResult] = None

    def start(self) -> "Flooder":
        self._proc = self.node.popen([sys.executable, "-u", "-c", _FLOODER, self.ifname,
                                      self.path, str(self.rate), str(self.duration),
                                      str(self.count), str(self.batch)], text=True)
        first = self._proc.stdout.readline()
        if not first.startswith("ready"):
            self._proc.wait(5)
            raise RuntimeError(f"flooder on {self.node.name} did not start: {first!r} "
                               f"{self._proc.stderr.read().strip()}")
        self.started = time.monotonic()
        self._collector = threading.Thread(target=self._collect, daemon=True)
        self._collector.start()
        return self

    def _collect(self):
        for line in self._proc.stdout:
            with self._lock:
                self._lines.append(line)

    def progress(self) -> Tuple[int, float]:
        """(frames sent, when) as last reported (every 0.5 s)."""
        with self._lock:
            points = [ln.split() for ln in self._lines if ln.startswith("P ")]
        return (int(points[-1][1]), float(points[-1][2])) if points else (0, self.started or 0.0)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: Optional[float] = None) -> FloodResult:
        """Wait for the flood to end by itself; its result."""
        if self._result is not None:
            return self._result
        timeout = self.duration + 30 if timeout is None else timeout
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"flooder on {self.node.name} still running after "
                               f"{timeout:.0f}s") from None
        self._collector.join(5)           # to the end of its output
        with self._lock:
            line = next((ln for ln in self._lines if ln.startswith("DONE ")), None)
        if line is None:
            raise RuntimeError(f"flooder on {self.node.name} exited {self._proc.returncode} "
                               f"without a report")
        r = json.loads(line.split(" ", 1)[1])
        self._result = FloodResult(r["sent"], r["seconds"], r["errors"], r["ip_bytes"])
        return self._result

    def stop(self) -> Optional[FloodResult]:
        """Stop it now if still running (SIGTERM: it reports what it sent);
        its result, None if it had none to give."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            return self.wait(timeout=5)
        except (TimeoutError, RuntimeError):
            return None
        finally:
            stop_process(self._proc)      # SIGKILL if it did not go; streams closed

    def __enter__(self) -> "Flooder":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def _frames_ifname(node: Node, first: bytes) -> str:
    """The interface whose MAC is the source MAC of `first`."""
    src = packet.mac_str(first[6:12])
    for link in node.ipr.get_links():
        if (link.get_attr("IFLA_ADDRESS") or "").lower() == src:
            return link.get_attr("IFLA_IFNAME")
    raise LookupError(f"{node.name}: no interface with MAC {src}")


# ---- what arrives ----------------------------------------------------------------

@dataclass(frozen=True)
class Count:
    packets: int = 0
    bytes: int = 0       # IP bytes

    def __sub__(self, other: "Count") -> "Count":
        return Count(self.packets - other.packets, self.bytes - other.bytes)


class Observer:
    """nftables counters in `node`: for each name, the packets (and their IP
    bytes) matching an nft expression, counted at prerouting (priority raw:
    before conntrack, NAT and routing), whether the node accepts, forwards
    or drops them afterwards.  Removed with the lab (the node goes)."""

    _serial = 0

    def __init__(self, node: Node, rules: Dict[str, str]):
        Observer._serial += 1
        bad = [name for name in rules if not name.isidentifier()]
        if bad:
            raise ValueError(f"counter names must be identifiers: {bad}")
        self.node, self.rules = node, dict(rules)
        self.table = f"netlab_observe{Observer._serial}"
        self._installed = False

    def start(self) -> "Observer":
        lines = [f"table inet {self.table} {{"]
        lines += [f"    counter c_{name} {{ }}" for name in self.rules]
        lines += ["    chain pre {", "        type filter hook prerouting priority raw; "
                  "policy accept;"]
        lines += [f"        {expr} counter name c_{name}" for name, expr in self.rules.items()]
        lines += ["    }", "}"]
        self.node.run(["nft", "-f", "-"], input="\n".join(lines) + "\n")
        self._installed = True
        return self

    def read(self) -> Dict[str, Count]:
        """Every counter's total so far."""
        out = json.loads(self.node.run(["nft", "-j", "list", "table", "inet", self.table]).stdout)
        found = {}
        for item in out["nftables"]:
            c = item.get("counter")
            if c and c["name"].startswith("c_"):
                found[c["name"][2:]] = Count(int(c["packets"]), int(c["bytes"]))
        return found

    def __getitem__(self, name: str) -> Count:
        return self.read()[name]

    def since(self, mark: Dict[str, Count]) -> Dict[str, Count]:
        """What was counted since `mark` (an earlier `read()`)."""
        now = self.read()
        return {k: now[k] - mark.get(k, Count()) for k in now}

    def stop(self):
        if self._installed:
            self.node.run(["nft", "delete", "table", "inet", self.table], check=False)
            self._installed = False

    def __enter__(self) -> "Observer":
        return self.start()

    def __exit__(self, *exc):
        return False          # counters stay readable; the lab removes the node


def match_udp(src: Optional[str] = None, sport: Optional[int] = None,
              dst: Optional[str] = None, dport: Optional[int] = None,
              iifname: Optional[str] = None) -> str:
    """An nft expression for UDP over IPv4 with the given fields."""
    parts = [f'iifname "{iifname}"'] if iifname else []
    parts += [f"ip saddr {src}"] if src else []
    parts += [f"ip daddr {dst}"] if dst else []
    parts.append("meta l4proto udp")
    parts += [f"udp sport {sport}"] if sport is not None else []
    parts += [f"udp dport {dport}"] if dport is not None else []
    return " ".join(parts)


def match_marker(marker: bytes, offset: int) -> str:
    """UDP payload bytes [offset, offset + len) equal `marker` (1-8 bytes):
    e.g. offset 8 for `initiations(marker=)`, 16 for `forged_transport(marker=)`."""
    if not 1 <= len(marker) <= 8:
        raise ValueError("an nft raw match takes 1 to 8 bytes here")
    return f"@th,{(packet.UDP_HLEN + offset) * 8},{len(marker) * 8} 0x{marker.hex()}"


def match_message(kind: wire.MessageType) -> str:
    """UDP payload is a plain-WireGuard message of `kind` (type and size)."""
    size = packet.UDP_HLEN + kind.size
    length = f"udp length {size}" if kind is not wire.MessageType.TRANSPORT \
        else f"udp length >= {size}"
    return f"{length} @th,{packet.UDP_HLEN * 8},32 0x{struct.pack('<I', kind.wg_type).hex()}"


def match_initiation() -> str:
    return match_message(wire.MessageType.INITIATION)


class Sampler:
    """Reads counter `name` of `observer` every `interval` seconds from a
    thread, from start() to stop(): `points` is [(time, total)]."""

    def __init__(self, observer: Observer, name: str, interval: float = 1.0):
        self.observer, self.name, self.interval = observer, name, interval
        self.points: List[Tuple[float, Count]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.points.append((time.monotonic(), self.observer[self.name]))
            if self._stop.wait(self.interval):
                return

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> List[Tuple[float, Count]]:
        self._stop.set()
        self._thread.join(5)
        return self.points


def peak_rate(points: Sequence[Tuple[float, Count]]) -> float:
    """The highest packets/s between consecutive readings of a `Sampler`."""
    rates = [(b.packets - a.packets) / (tb - ta)
             for (ta, a), (tb, b) in zip(points, points[1:]) if tb > ta]
    return max(rates, default=0.0)

