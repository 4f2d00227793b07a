"""Traffic between nodes: ping, UDP markers, UDP and TCP flows with checksums.

Each flow runs as a small Python program inside a node (the same
interpreter as the caller), so no extra tools are needed and results are
exact.  Receivers report every arrival with CLOCK_MONOTONIC, which all
namespaces share with the test process, so a test can act *during* a flow
(restart a daemon, flush a NAT, move a peer) and then ask exactly when
packets stopped and started again:

- `UdpSeq`: numbered datagrams at a fixed rate; the receiver prints each
  arrival.  Precise "when did packets resume" for WireGuard itself (no TCP
  backoff in the way).
- `UdpEcho`: probes echoed back at a fixed rate: loss and RTT
  percentiles (p50/p99) of a pair, e.g. through a tunnel, in any window.
- `TcpFlow`: a TCP stream, paced or as fast as it goes, with SHA-256 at
  both ends; the receiver prints its byte count as it grows.  Proves a
  transfer survives and completes intact.  `tcp_transfer` is one run to
  completion (e.g. 10 MB through a tunnel, `Transfer.ok` when the byte
  counts and both checksums match).
- `UdpAgent`: one UDP socket (IPv4 or IPv6) that sends on command and
  records every datagram with the source it came from: what NAT and
  firewall tests ask ("who did A see?", "did C's datagram get in?").

Every tool takes IPv4 or IPv6 addresses alike (the family follows the
address).

Pacing inside a generator is the generator's business; callers wait on
arrivals with deadlines (`wait_for`), never with sleeps.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .lab import Node, scaled, stop_process, wait_for

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

# Prints "P <bytes> <time>" at most every 20 ms while bytes arrive, echoes
# the SHA-256 to the sender, and ends with "DONE <bytes> <sha256>".
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

# rate 0: as fast as TCP goes.  Ends with "SENT <bytes> <sha256> <echoed sha256> <seconds>".
_TCP_SOURCE = r"""
import hashlib, socket, sys, time
dst, port, size, rate, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
s = socket.create_connection((dst, port), timeout=timeout)
h, sent = hashlib.sha256(), 0
block = hashlib.sha256(sys.argv[6].encode()).digest() * (512 if rate else 2048)
t0 = time.monotonic()
while sent < size:
    allowed = min(size, int(rate * (time.monotonic() - t0)) + len(block)) if rate else size
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
print("SENT", sent, h.hexdigest(), reply.decode() or "-", round(time.monotonic() - t0, 3), flush=True)
"""


# Echoes every datagram back to its sender.
_UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(65536)
    try:
        s.sendto(data, peer)
    except OSError:
        pass
"""

# Sends probe <seq, send time> every `interval` (count 0: until stopped) and
# prints "S <seq> <sent>" for each and "E <seq> <sent> <rtt>" for each echo;
# after the last probe it waits `grace` seconds for late echoes, then "DONE".
_UDP_PROBE = r"""
import select, socket, struct, sys, time
dst, port, interval, count, size, grace = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                           int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
pad = b"p" * max(0, size - 12)
seq, nxt, last = 0, time.monotonic(), None
while True:
    now = time.monotonic()
    if (not count or seq < count) and now >= nxt:
        try:
            s.sendto(struct.pack("!Id", seq, now) + pad, (dst, port))
        except OSError:
            pass            # no key yet: the probe counts as lost
        print("S", seq, now, flush=True)
        seq, nxt, last = seq + 1, nxt + interval, now
        continue
    if count and seq >= count and now - last >= grace:
        break
    wait = (last + grace - now) if count and seq >= count else (nxt - now)
    if select.select([s], [], [], max(0.0, wait))[0]:
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                break
            if len(data) >= 12:
                n, sent = struct.unpack("!Id", data[:12])
                print("E", n, sent, time.monotonic() - sent, flush=True)
print("DONE", seq, flush=True)
"""


def largest_gap(times: List[float], start: float, end: float) -> Tuple[float, float]:
    """(gap, at): the longest interval in [start, end] without an arrival,
    counting from `start` and up to `end`."""
    points = [start] + [t for t in times if start < t < end] + [end]
    best = (0.0, start)
    for a, b in zip(points, points[1:]):
        if b - a > best[0]:
            best = (b - a, a)
    return best


class _Flow:
    """A receiver program on one node whose stdout lines are collected by a
    thread, and a sender program on another; both stopped by PID."""

    def __init__(self, src: Node, dst: Node, dst_ip: str, port: int):
        self.src, self.dst, self.dst_ip, self.port = src, dst, dst_ip, port
        self._lines: list = []
        self._lock = threading.Lock()
        self._sink: Optional[subprocess.Popen] = None
        self._source: Optional[subprocess.Popen] = None

    def _start_sink(self, program: str, *args: str):
        self._sink = self.dst.popen([sys.executable, "-u", "-c", program, self.dst_ip,
                                     str(self.port), *args],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self._sink.stdout.readline()
        if not first.startswith("listening"):
            err = self._sink.stderr.read() if self._sink.poll() is not None else ""
            raise RuntimeError(f"{type(self).__name__} receiver on {self.dst.name} did not "
                               f"start: {first!r} {err.strip()}")
        self._collect(self._sink.stdout, self._lines)

    def _collect(self, stream, into: list):
        """Split the lines of `stream` into `into`, from a thread."""
        def run():
            for line in stream:
                with self._lock:
                    into.append(line.split())
        threading.Thread(target=run, daemon=True).start()

    def _received_lines(self, lines: Optional[list] = None) -> list:
        with self._lock:
            return list(self._lines if lines is None else lines)

    def stop(self):
        for p in (self._source, self._sink):
            if p is not None:
                stop_process(p)

    def start(self):
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class UdpSeq(_Flow):
    """Datagrams from `src` to `dst_ip` (on `dst`) every `interval` seconds."""

    def __init__(self, src: Node, dst: Node, dst_ip: str, port: int,
                 interval: float = 0.02, size: int = 64):
        super().__init__(src, dst, dst_ip, port)
        self.interval, self.size = interval, size

    def start(self) -> "UdpSeq":
        self._start_sink(_UDP_SINK)
        self._source = self.src.popen([sys.executable, "-c", _UDP_SOURCE, self.dst_ip,
                                       str(self.port), str(self.interval), str(self.size)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def arrivals(self) -> List[Tuple[int, float]]:
        """(sequence number, monotonic arrival time) of every datagram so far."""
        return [(int(a), float(b)) for a, b in self._received_lines()]

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

    def missing(self) -> List[int]:
        """Sequence numbers never received between the first and the last
        received (the ones still in flight at the end are not lost)."""
        seen = {seq for seq, _ in self.arrivals()}
        if not seen:
            return []
        return sorted(set(range(min(seen), max(seen) + 1)) - seen)


def percentile(values: List[float], p: float) -> Optional[float]:
    """Nearest-rank percentile `p` (0-100) of `values`; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(min(rank, len(ordered))) - 1]


@dataclass
class ProbeStats:
    """Round trips of the probes sent in a window."""

    sent: int
    answered: int
    rtts: List[float]           # seconds, of the answered ones

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    @property
    def loss(self) -> float:
        """Fraction lost (0.0-1.0); 1.0 when nothing was sent."""
        return self.lost / self.sent if self.sent else 1.0

    def rtt(self, p: float) -> Optional[float]:
        """Percentile `p` of the round-trip times, seconds."""
        return percentile(self.rtts, p)

    @property
    def p50(self) -> Optional[float]:
        return self.rtt(50)

    @property
    def p99(self) -> Optional[float]:
        return self.rtt(99)

    def __str__(self):
        def ms(v):
            return "-" if v is None else f"{v * 1000:.1f} ms"
        return (f"{self.sent} probes, {self.lost} lost ({self.loss:.1%}), "
                f"RTT p50 {ms(self.p50)}, p99 {ms(self.p99)}, max {ms(self.rtt(100))}")


class UdpEcho(_Flow):
    """Round trips from `src` to an echo server on `dst_ip` (on `dst`): a
    probe every `interval` seconds, `count` of them (0: until stopped), each
    echoed back; `stats()` gives loss and RTT percentiles for any window.
    Across a tunnel (overlay addresses) it measures the pair end to end."""

    def __init__(self, src: Node, dst: Node, dst_ip: str, port: int = 7007,
                 interval: float = 0.01, count: int = 0, size: int = 64, grace: float = 1.0):
        super().__init__(src, dst, dst_ip, port)
        self.interval, self.count, self.size, self.grace = interval, count, size, grace
        self._probe_lines: list = []

    def start(self) -> "UdpEcho":
        self._start_sink(_UDP_ECHO)
        self._source = self.src.popen([sys.executable, "-u", "-c", _UDP_PROBE, self.dst_ip,
                                       str(self.port), str(self.interval), str(self.count),
                                       str(self.size), str(self.grace)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._collect(self._source.stdout, self._probe_lines)
        return self

    def _probe(self) -> list:
        return self._received_lines(self._probe_lines)

    def done(self) -> bool:
        return any(x and x[0] == "DONE" for x in self._probe())

    def wait_done(self, timeout: Optional[float] = None) -> "UdpEcho":
        """Wait for a counted run (`count` > 0) to finish, late echoes included."""
        if not self.count:
            raise ValueError("an endless probe (count 0) does not finish; use stats()")
        timeout = self.count * self.interval + self.grace + 10 if timeout is None else timeout
        wait_for(self.done, timeout=timeout, what="the UDP probe to finish")
        return self

    def wait_answered(self, n: int = 5, after: Optional[float] = None,
                      timeout: float = 20.0) -> float:
        """Wait until `n` probes sent after `after` (default now) came back;
        returns when the first of them did (monotonic)."""
        t = time.monotonic() if after is None else after

        def answered():
            return [float(x[2]) + float(x[3]) for x in self._probe()
                    if x[0] == "E" and float(x[2]) > t]
        return min(wait_for(lambda: (lambda a: a if len(a) >= n else None)(answered()),
                            timeout=timeout, what=f"{n} echoes from {self.dst_ip}"))

    def stats(self, start: float = 0.0, end: Optional[float] = None) -> ProbeStats:
        """Probes sent in [start, end] (monotonic; default: all so far).  A
        probe counts as lost when no echo came back, except the ones sent
        in the last `grace` seconds of a run still going (not yet due)."""
        lines = self._probe()
        finished = any(x[0] == "DONE" for x in lines)
        if end is None:
            end = float("inf") if finished else time.monotonic() - self.grace
        sent = {int(x[1]) for x in lines if x[0] == "S" and start <= float(x[2]) <= end}
        rtts = {int(x[1]): float(x[3]) for x in lines if x[0] == "E" and int(x[1]) in sent}
        return ProbeStats(len(sent), len(rtts), sorted(rtts.values()))


@dataclass
class Transfer:
    sent_bytes: int
    received_bytes: int
    sent_sha256: str
    received_sha256: str
    seconds: float              # sender's view: first byte to the receiver's checksum

    @property
    def ok(self) -> bool:
        return (self.sent_bytes == self.received_bytes > 0
                and self.sent_sha256 == self.received_sha256)


class TcpFlow(_Flow):
    """`size` bytes over TCP from `src` to `dst_ip`:`port`, at `rate`
    bytes/s (0: as fast as it goes)."""

    def __init__(self, src: Node, dst: Node, dst_ip: str, size: int, rate: float = 0,
                 port: int = 5301, timeout: float = 120.0, seed: str = "netlab"):
        super().__init__(src, dst, dst_ip, port)
        self.size, self.rate, self.timeout, self.seed = size, rate, scaled(timeout), seed

    def start(self) -> "TcpFlow":
        self._start_sink(_TCP_SINK, str(self.timeout))
        self._source = self.src.popen([sys.executable, "-c", _TCP_SOURCE, self.dst_ip,
                                       str(self.port), str(self.size), str(self.rate),
                                       str(self.timeout), self.seed],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self

    def progress(self) -> List[Tuple[int, float]]:
        """(bytes received, monotonic time) as the receiver reported them."""
        return [(int(x[1]), float(x[2])) for x in self._received_lines() if x and x[0] == "P"]

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

    def result(self, timeout: Optional[float] = None) -> Transfer:
        """Wait for both ends to finish; sizes and checksums."""
        timeout = self.timeout + 10 if timeout is None else timeout
        try:
            out, err = self._source.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"TCP source did not finish in {timeout:.0f}s "
                               f"(received {self.received()} of {self.size})") from None
        if self._source.returncode != 0:
            raise RuntimeError(f"TCP source failed ({self._source.returncode}): {err.strip()}")

        def done():
            return next((x for x in self._received_lines() if x and x[0] == "DONE"), None)
        received = wait_for(done, timeout=10, what="the TCP sink to finish")
        _, sent, sent_sha, _, seconds = out.split()
        return Transfer(int(sent), int(received[1]), sent_sha, received[2], float(seconds))


def tcp_transfer(src: Node, dst: Node, dst_ip: str, size: int, port: int = 5201,
                 timeout: float = 60.0, seed: str = "netlab") -> Transfer:
    """Send `size` bytes over TCP from `src` to `dst_ip` (on `dst`) as fast
    as it goes, with SHA-256 both ends."""
    with TcpFlow(src, dst, dst_ip, size, port=port, timeout=timeout, seed=seed) as flow:
        return flow.result()


_SEND_UDP = ("import socket,sys; s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] "
             "else socket.AF_INET, socket.SOCK_DGRAM); "
             "s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))")


def send_udp(src: Node, dst_ip: str, port: int, payload: str):
    src.run([sys.executable, "-c", _SEND_UDP, dst_ip, str(port), payload])


def ping(node: Node, ip: str, count: int = 1, timeout: float = 1, interval: float = 0.2) -> bool:
    return node.run(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", f"{scaled(timeout):g}", ip],
                    check=False, timeout=count * (timeout + interval) + 5).returncode == 0


# A UDP socket driven over stdin ("<ip> <port> <payload>" sends) that reports
# on stdout, one JSON object a line: its bound address, each send, and every
# datagram it receives with the source address it saw.
_UDP_AGENT = r"""
import json, os, select, socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
if ':' in sys.argv[1]:      # IPv6 only: "::" beside a "0.0.0.0" agent on the same port
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
print(json.dumps({"ready": s.getsockname()[:2]}), flush=True)
buf = b""
while True:
    ready, _, _ = select.select([s, 0], [], [])
    if s in ready:
        data, src = s.recvfrom(2048)
        print(json.dumps({"from": src[:2], "data": data.decode()}), flush=True)
    if 0 in ready:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            ip, port, payload = line.decode().split()
            try:
                s.sendto(payload.encode(), (ip, int(port)))
                print(json.dumps({"sent": payload}), flush=True)
            except OSError as e:
                print(json.dumps({"sent": payload, "error": str(e)}), flush=True)
"""


class UdpAgent:
    """A UDP socket in `node` bound to `ip`:`port` ("::" or "0.0.0.0" for
    any; the family follows `ip`) that sends on command and records every
    datagram it receives with its source (ip, port) as the socket saw it.
    Stopped with the lab (or `stop()`)."""

    ARRIVES = 5.0   # generous: a delivered datagram takes milliseconds on veth

    def __init__(self, node: Node, ip: str, port: int):
        self.address = (ip, port)
        self.where = f"{node.name} {ip}:{port}"
        self.proc = node.popen([sys.executable, "-c", _UDP_AGENT, ip, str(port)],
                               stdin=subprocess.PIPE, text=True, bufsize=1)
        self.events: queue.Queue = queue.Queue()
        self.received: list = []   # every datagram seen so far: (data, (ip, port))
        threading.Thread(target=self._read, daemon=True).start()
        self._next(lambda e: "ready" in e, self.ARRIVES, "to bind")

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)  # the agent exited

    def _next(self, match, timeout: float, what: str, required: bool = True):
        """The next event satisfying `match`, within `timeout`; datagrams are kept."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(remaining, 0))
            except queue.Empty:
                if required:
                    raise TimeoutError(f"{self.where}: nothing {what} in {timeout}s") from None
                return None
            if event is None:
                raise RuntimeError(f"{self.where}: agent exited: {self.proc.stderr.read()}")
            if "from" in event:
                self.received.append((event["data"], tuple(event["from"])))
            if match(event):
                return event

    def send(self, ip: str, port: int, payload: str) -> bool:
        """Send `payload` (no spaces) to ip:port; False if the socket refused
        (e.g. no route: another family than the node has)."""
        self.proc.stdin.write(f"{ip} {port} {payload}\n")
        self.proc.stdin.flush()
        event = self._next(lambda e: e.get("sent") == payload, self.ARRIVES, f"sent ({payload})")
        return "error" not in event

    def source_of(self, payload: str, timeout: Optional[float] = None):
        """The (ip, port) that `payload` came from, or None if it did not
        come within `timeout` (default ARRIVES)."""
        for data, src in self.received:
            if data == payload:
                return src
        event = self._next(lambda e: e.get("data") == payload,
                           self.ARRIVES if timeout is None else timeout,
                           f"received ({payload})", required=False)
        return tuple(event["from"]) if event else None

    def stop(self):
        stop_process(self.proc)
