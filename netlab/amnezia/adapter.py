"""The AmneziaWG wire adapter: a process beside an unmodified WireGuard that
makes it speak AmneziaWG on the wire (`python -m netlab.amnezia`), and
`Adapter`, netlab's handle on that process.

Real AmneziaWG owns one UDP port and talks to every peer from it, and its
WireGuard state (`wg show`) holds the peers' real endpoints; the hub's wgmux
daemon reads those endpoints and checks the listen port.  The adapter keeps
all of that true:

    node namespace                           inner namespace (<node>-awg-<tag>)
    ┌───────────────────────────────┐        ┌─────────────────────────────────┐
    │ WireGuard netdev <if> (tunnel)│        │ WireGuard's UDP socket *:L      │
    │   addresses, routes, ping     │        │   (wireguard-go runs here; a    │
    │                               │        │   kernel device is created here │
    │ adapter: UDP socket *:L  ◄────┼─ AWG ─►│   and moved out: its socket     │
    │   (the public port)           │  TUN   │   stays)                        │
    │                               │◄──────►│ awg0 (TUN held by the adapter)  │
    └───────────────────────────────┘        │   default routes via awg0       │
                                             └─────────────────────────────────┘

- WireGuard's socket lives in a private namespace whose only way out is a
  TUN device held by the adapter.  WireGuard sends plain datagrams to the
  real remote endpoint E; they come out of the TUN as IP packets; the adapter
  converts each to AmneziaWG (netlab.amnezia.codec) and sends it from its own
  socket on the node's public port L -- every packet leaves from L, as from
  real AWG, so NAT mappings and the hub's port semantics are those of a real
  peer.
- A datagram from E arriving on L is classified (size + header range,
  docs/spec.md §12), junk is dropped, the prefix stripped and the WireGuard
  type restored; the adapter writes it into the TUN as an IP packet *from E*
  to L.  So WireGuard sees the real remote endpoint, roams to it and answers
  it; `wg show` lists real endpoints and the listen port L.  There is no
  per-endpoint socket or table: the endpoint travels in the IP header.
- The interface (`<if>`) is moved to the node's namespace, so addresses,
  routes, captures and `wg`/UAPI work exactly as for plain netlab WireGuard.

IP packets on the TUN are built and parsed by wgmux.packet, the project's one
packet builder.  IPv4 fragments from the inner namespace cannot occur (the
TUN MTU is 65535) and other IP traffic there is ignored.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import select
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from wgmux import mac1, packet

from ..lab import Node, stop_process, wait_for
from ..netns import NETNS_DIR, inside
from .codec import Codec
from .params import AwgParams

TUN_NAME = "awg0"
# The inner namespace's own addresses: WireGuard receives on them.  Chosen
# from ranges no remote endpoint in a lab uses (link-local / ULA).
INNER_V4 = "169.254.77.1"
INNER_V6 = "fd00:a3c:77::1"
TUN_MTU = 65535

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun_in(netns_path: str, name: str) -> int:
    """Create TUN device `name` in the network namespace at `netns_path` and
    return its fd; this process stays in (returns to) its own namespace."""
    with inside(netns_path):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class _Keys:
    """The WireGuard interface's public keys, read with `<tool> show`."""

    def __init__(self, device: str, tool: str):
        self.device, self.tool = device, tool
        self._local: Optional[bytes] = None
        self._peers: List[bytes] = []
        self._read_at = 0.0

    def _show(self, what: str) -> List[str]:
        out = subprocess.run([self.tool, "show", self.device, what], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.split() if out.returncode == 0 else []

    @staticmethod
    def _raw(b64: str) -> Optional[bytes]:
        try:
            return mac1.public_key_bytes(b64)
        except ValueError:
            return None

    def local(self) -> Optional[bytes]:
        if self._local is None:
            keys = [k for k in map(self._raw, self._show("public-key")) if k]
            self._local = keys[0] if keys else None
        return self._local

    def peers(self, refresh: bool) -> List[bytes]:
        now = time.monotonic()
        if (refresh or not self._peers) and now - self._read_at > 0.05:
            self._read_at = now
            self._peers = [k for k in map(self._raw, self._show("peers")) if k]
        return self._peers


def _udp_from_tun(pkt: bytes) -> Optional[packet.Frame]:
    """The whole UDP datagram in an IP packet read from the TUN, else None."""
    try:
        frame = packet.parse_ip(pkt)
    except ValueError:
        return None
    # A first fragment would carry less than its UDP length says.
    if frame.sport is None or len(frame.udp_segment) != frame.udp_length:
        return None
    return frame


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netlab.amnezia",
                                 description="AmneziaWG wire adapter (see netlab/amnezia/adapter.py)")
    ap.add_argument("--params", required=True, help="AwgParams as JSON")
    ap.add_argument("--port", type=int, required=True, help="the public listen port")
    ap.add_argument("--inner", required=True, help="path of the inner network namespace")
    ap.add_argument("--device", required=True, help="the WireGuard interface (for its keys)")
    ap.add_argument("--tool", default="wg")
    ap.add_argument("--stats", required=True, help="file the counters are written to")
    args = ap.parse_args(argv)

    params = AwgParams.from_json(args.params)
    keys = _Keys(args.device, args.tool)
    codec = Codec(params, keys.local, keys.peers)
    inner_addr = {socket.AF_INET: INNER_V4, socket.AF_INET6: INNER_V6}

    public = {}
    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((any_addr, args.port))
        s.setblocking(False)
        public[family] = s
    tun = open_tun_in(args.inner, TUN_NAME)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sel = selectors.DefaultSelector()
    sel.register(tun, selectors.EVENT_READ, "tun")
    for family, s in public.items():
        sel.register(s, selectors.EVENT_READ, family)
    print("ready", flush=True)

    written: Dict[str, int] = {}
    next_stats = 0.0
    while not stop:
        for key, _ in sel.select(timeout=0.2):
            if key.data == "tun":
                for _ in range(256):
                    try:
                        pkt = os.read(tun, 65536)
                    except BlockingIOError:
                        break
                    frame = _udp_from_tun(pkt)
                    if frame is None:
                        continue
                    s = public[socket.AF_INET6 if frame.version == 6 else socket.AF_INET]
                    for datagram in codec.encode(frame.payload):
                        try:
                            s.sendto(datagram, (str(frame.dst), frame.dport))
                        except OSError:
                            codec.count("tx_error")
            else:
                s = key.fileobj
                for _ in range(256):
                    try:
                        data, addr = s.recvfrom(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # ICMP errors surface here
                        codec.count("rx_error")
                        continue
                    msg = codec.decode(data)
                    if msg is None:
                        continue
                    v4 = key.data == socket.AF_INET
                    pkt = packet.udp_packet((addr[0].split("%")[0], addr[1]),
                                            (inner_addr[key.data], args.port), msg,
                                            **({"flags": packet.IP_DF} if v4 else {}))
                    try:
                        os.write(tun, pkt)
                    except OSError:
                        codec.count("tun_write_error")
        now = time.monotonic()
        if now >= next_stats and codec.stats != written:
            next_stats = now + 0.1
            tmp = args.stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump(codec.stats, f)
            os.replace(tmp, args.stats)
            written = dict(codec.stats)
    return 0


@dataclass
class Adapter:
    """The adapter process of one interface and its inner namespace."""

    node: Node
    inner: Node
    port: int
    process: Optional[subprocess.Popen] = None
    stats_path: Optional[Path] = None
    dir: Optional[Path] = field(default=None, repr=False)

    def start(self, params: AwgParams, device: str, tool: str = "wg", timeout: float = 10.0):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.node.lab.prefix}-awg-"))
        self.stats_path = self.dir / "stats.json"
        self.process = self.node.popen(
            [sys.executable, "-m", "netlab.amnezia", "--params", params.to_json(),
             "--port", str(self.port), "--inner", str(NETNS_DIR / self.inner.netns),
             "--device", device, "--tool", tool, "--stats", str(self.stats_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = self.process

        def ready():
            if proc.poll() is not None:
                raise RuntimeError(f"AmneziaWG adapter on {self.node.name} exited "
                                   f"{proc.returncode}: {proc.stderr.read()}")
            r, _, _ = select.select([proc.stdout], [], [], 0.05)
            return bool(r) and proc.stdout.readline().strip() == "ready"

        wait_for(ready, timeout=timeout, what=f"the AmneziaWG adapter on {self.node.name}")
        inner = self.inner
        idx = inner.index(TUN_NAME)
        inner.ipr.link("set", index=idx, mtu=TUN_MTU, state="up")
        inner.add_address(TUN_NAME, f"{INNER_V4}/32")
        inner.add_address(TUN_NAME, f"{INNER_V6}/128")
        inner.ipr.route("add", dst="0.0.0.0/0", oif=idx, family=socket.AF_INET)
        inner.ipr.route("add", dst="::/0", oif=idx, family=socket.AF_INET6)
        return self

    def stats(self) -> Dict[str, int]:
        """The adapter's counters (at most ~0.1 s old): tx_/rx_ per message
        kind, tx_junk, tx_special, rx_junk_dropped, rx_bad_mac1, ..."""
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError, AttributeError):
            return {}

    def close(self):
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
