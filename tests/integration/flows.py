"""Long-running flows through a tunnel, observed while they run.

netlab.traffic's helpers run to completion; the tests of restarts, reloads,
roaming and rekeys need to act *during* a transfer and to know exactly when
packets stopped and started again.  Both flows here run as small Python
programs inside the nodes (like netlab.traffic) and report every arrival
with CLOCK_MONOTONIC, which all namespaces share with the test process:

- `UdpSeq`: numbered datagrams at a fixed rate; the receiver prints each
  arrival.  Precise "when did packets resume" for WireGuard itself (no TCP
  backoff in the way).
- `PacedTcp`: a TCP stream at a fixed rate with SHA-256 at both ends; the
  receiver prints its byte count as it grows.  Proves the transfer survives
  and completes intact.

Pacing inside the generator is the generator's business; the tests wait on
arrivals with deadlines (netlab.wait_for), never with sleeps.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from netlab import stop_process, wait_for
from netlab.lab import Node

_UDP_SINK = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data = s.recv(65536)
    if len(data) >= 4:
        print(struct.unpack("!I", data[:4])[0], time.monotonic(), flush=True)
"""

_UDP_SOURCE = r"""
import socket, struct, sys, time
dst, port, interval, size = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
seq, pad = 0, b"u" * max(0, size - 4)
nxt = time.monotonic()
while True:
    try:
        s.sendto(struct.pack("!I", seq) + pad, (dst, port))
    except OSError:
        pass            # no key yet (kernel WireGuard says ENOKEY): keep the pace
    seq += 1
    nxt += interval
    time.sleep(max(0.0, nxt - time.monotonic()))
"""

_TCP_SINK = r"""
import hashlib, socket, sys, time
srv = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
print("listening", flush=True)
srv.settimeout(float(sys.argv[3]))
conn, _ = srv.accept()
conn.settimeout(float(sys.argv[3]))
h, n, last = hashlib.sha256(), 0, 0.0
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    h.update(chunk); n += len(chunk)
    now = time.monotonic()
    if now - last >= 0.02:
        print("P", n, now, flush=True); last = now
conn.sendall(h.hexdigest().encode())
conn.close()
print("P", n, time.monotonic(), flush=True)
print("DONE", n, h.hexdigest(), flush=True)
"""

_TCP_SOURCE = r"""
import hashlib, socket, sys, time
dst, port, size, rate, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
s = socket.create_connection((dst, port), timeout=timeout)
h, sent = hashlib.sha256(), 0
block = hashlib.sha256(sys.argv[6].encode()).digest() * 512      # 16 KiB
t0 = time.monotonic()
while sent < size:
    allowed = min(size, int(rate * (time.monotonic() - t0)) + len(block))
    if sent >= allowed:
        time.sleep(0.005)
        continue
    chunk = block[: min(len(block), allowed - sent)]
    s.sendall(chunk); h.update(chunk); sent += len(chunk)
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    part = s.recv(100)
    if not part:
        break
    reply += part
print("SENT", sent, h.hexdigest(), reply.decode(), flush=True)
"""


def _reader(proc: subprocess.Popen, sink: list, lock: threading.Lock):
    for line in proc.stdout:
        with lock:
            sink.append(line.split())


def largest_gap(times: List[float], start: float, end: float) -> Tuple[float, float]:
    """(gap, at): the longest interval in [start, end] without an arrival,
    counting from `start` and up to `end`."""
    points = [start] + [t for t in times if start < t < end] + [end]
    best = (0.0, start)
    for a, b in zip(points, points[1:]):
        if b - a > best[0]:
            best = (b - a, a)
    return best


class UdpSeq:
    """Datagrams from `src` to `dst_ip` (on `dst`) every `interval` seconds."""

    def __init__(self, src: Node, dst: Node, dst_ip: str, port: int,
                 interval: float = 0.02, size: int = 64):
        self.src, self.dst, self.dst_ip, self.port = src, dst, dst_ip, port
        self.interval, self.size = interval, size
        self._lines: list = []
        self._lock = threading.Lock()
        self._sink = self._source = None

    def start(self) -> "UdpSeq":
        self._sink = self.dst.popen([sys.executable, "-u", "-c", _UDP_SINK, self.dst_ip,
                                     str(self.port)], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        first = self._sink.stdout.readline()
        if not first.startswith("listening"):
            raise RuntimeError(f"UDP sink on {self.dst.name} did not start: {first!r}")
        threading.Thread(target=_reader, args=(self._sink, self._lines, self._lock),
                         daemon=True).start()
        self._source = self.src.popen([sys.executable, "-c", _UDP_SOURCE, self.dst_ip,
                                       str(self.port), str(self.interval), str(self.size)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def arrivals(self) -> List[Tuple[int, float]]:
        """(sequence number, monotonic arrival time) of every datagram so far."""
        with self._lock:
            return [(int(a), float(b)) for a, b in self._lines]

    def times(self) -> List[float]:
        return [t for _, t in self.arrivals()]

    def count_after(self, t: float) -> int:
        return sum(1 for x in self.times() if x > t)

    def first_after(self, t: float) -> Optional[float]:
        return next((x for x in self.times() if x > t), None)

    def wait_flowing(self, n: int = 5, after: Optional[float] = None, timeout: float = 20.0,
                     what: str = "the UDP flow") -> float:
        """Wait until `n` datagrams arrived after `after` (default now);
        returns the arrival time of the first of them."""
        t = time.monotonic() if after is None else after
        wait_for(lambda: self.count_after(t) >= n, timeout=timeout, what=what)
        return self.first_after(t)

    def largest_gap(self, start: float, end: Optional[float] = None):
        return largest_gap(self.times(), start, time.monotonic() if end is None else end)

    def stop(self):
        for p in (self._source, self._sink):
            if p is not None:
                stop_process(p)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


@dataclass
class TcpResult:
    sent_bytes: int
    received_bytes: int
    sent_sha256: str
    received_sha256: str

    @property
    def ok(self) -> bool:
        return (self.sent_bytes == self.received_bytes > 0
                and self.sent_sha256 == self.received_sha256)


class PacedTcp:
    """`size` bytes over TCP from `src` to `dst_ip`:`port` at `rate` bytes/s."""

    def __init__(self, src: Node, dst: Node, dst_ip: str, size: int, rate: float,
                 port: int = 5301, timeout: float = 120.0, seed: str = "flows"):
        self.src, self.dst, self.dst_ip, self.port = src, dst, dst_ip, port
        self.size, self.rate, self.timeout, self.seed = size, rate, timeout, seed
        self._lines: list = []
        self._lock = threading.Lock()
        self._sink = self._source = None

    def start(self) -> "PacedTcp":
        self._sink = self.dst.popen([sys.executable, "-u", "-c", _TCP_SINK, self.dst_ip,
                                     str(self.port), str(self.timeout)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self._sink.stdout.readline()
        if not first.startswith("listening"):
            raise RuntimeError(f"TCP sink on {self.dst.name} did not start: {first!r} "
                               f"{self._sink.stderr.read() if self._sink.poll() is not None else ''}")
        threading.Thread(target=_reader, args=(self._sink, self._lines, self._lock),
                         daemon=True).start()
        self._source = self.src.popen([sys.executable, "-c", _TCP_SOURCE, self.dst_ip,
                                       str(self.port), str(self.size), str(self.rate),
                                       str(self.timeout), self.seed],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def progress(self) -> List[Tuple[int, float]]:
        """(bytes received, monotonic time) as the receiver reported them."""
        with self._lock:
            return [(int(x[1]), float(x[2])) for x in self._lines if x and x[0] == "P"]

    def received(self) -> int:
        p = self.progress()
        return p[-1][0] if p else 0

    def wait_bytes(self, n: int, timeout: float = 30.0) -> float:
        """Wait until the receiver has `n` bytes; returns when it had them."""
        wait_for(lambda: self.received() >= n, timeout=timeout,
                 what=f"{n} bytes through TCP (have {self.received()})")
        return next(t for b, t in self.progress() if b >= n)

    def largest_stall(self, start: float, end: Optional[float] = None):
        """(seconds, at): the longest time in [start, end] the byte count did
        not grow (the receiver reports at most every 20 ms)."""
        times, last = [], -1
        for b, t in self.progress():
            if b > last:
                times.append(t)
                last = b
        return largest_gap(times, start, time.monotonic() if end is None else end)

    def result(self, timeout: Optional[float] = None) -> TcpResult:
        """Wait for both ends to finish; sizes and checksums."""
        timeout = self.timeout + 10 if timeout is None else timeout
        try:
            out, err = self._source.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"TCP source did not finish in {timeout:.0f}s "
                               f"(received {self.received()} of {self.size})") from None
        if self._source.returncode != 0:
            raise RuntimeError(f"TCP source failed ({self._source.returncode}): {err.strip()}")
        wait_for(lambda: any(x and x[0] == "DONE" for x in list(self._lines)), timeout=10,
                 what="the TCP sink to finish")
        fields = out.split()
        with self._lock:
            done = next(x for x in self._lines if x and x[0] == "DONE")
        return TcpResult(int(fields[1]), int(done[1]), fields[2], done[2])

    def stop(self):
        for p in (self._source, self._sink):
            if p is not None:
                stop_process(p)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class FilterWatch:
    """Watches the wgmux TC filter on `ifname` in `node` from a thread and
    records each change of its name (None: no filter) with the time: when
    a daemon attached, detached or took over."""

    def __init__(self, node: Node, ifname: str = "eth0", interval: float = 0.01):
        self.node, self.ifname, self.interval = node, ifname, interval
        self.changes: List[Tuple[float, Optional[str]]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from pyroute2 import IPRoute

        from wgmux.datapath import _wgmux_filter

        try:
            with IPRoute(netns=self.node.netns) as ipr:
                index = ipr.link_lookup(ifname=self.ifname)[0]
                last = object()
                while not self._stop.is_set():
                    name = _wgmux_filter(ipr, index)
                    now = time.monotonic()
                    if name != last:
                        self.changes.append((now, name))
                        last = name
                    self._ready.set()
                    self._stop.wait(self.interval)
        except BaseException as e:  # surfaced by wait_change
            self._error = e
            self._ready.set()

    def start(self) -> "FilterWatch":
        self._thread.start()
        self._ready.wait(10)
        return self

    @property
    def current(self) -> Optional[str]:
        return self.changes[-1][1] if self.changes else None

    def wait_change(self, since: float, predicate=lambda name: name is not None,
                    timeout: float = 60.0) -> Tuple[float, Optional[str]]:
        """The first change after `since` whose name satisfies `predicate`."""
        def found():
            if self._error:
                raise self._error
            return next(((t, n) for t, n in list(self.changes) if t > since and predicate(n)),
                        None)
        return wait_for(found, timeout=timeout, what=f"the wgmux filter on {self.ifname}")

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
