"""Traffic between nodes: ping, UDP markers, TCP transfers with checksums.

Each helper runs a small Python program inside a node (the same interpreter
as the caller) so no extra tools are needed and results are exact.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

from .lab import Node, stop_process, wait_for

_SINK = r"""
import hashlib, socket, sys
srv = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
print("listening", flush=True)
srv.settimeout(float(sys.argv[3]))
conn, _ = srv.accept()
conn.settimeout(float(sys.argv[3]))
h, n = hashlib.sha256(), 0
while True:
    chunk = conn.recv(1 << 16)
    if not chunk:
        break
    h.update(chunk); n += len(chunk)
conn.sendall(h.hexdigest().encode())
conn.close()
print(n, h.hexdigest(), flush=True)
"""

_SOURCE = r"""
import hashlib, os, socket, sys, time
size, seed = int(sys.argv[3]), sys.argv[4].encode()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[5]))
h, sent, block = hashlib.sha256(), 0, hashlib.sha256(seed).digest() * 2048
t0 = time.monotonic()
while sent < size:
    chunk = block[: min(len(block), size - sent)]
    s.sendall(chunk); h.update(chunk); sent += len(chunk)
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    part = s.recv(100)
    if not part:
        break
    reply += part
print(sent, h.hexdigest(), reply.decode(), round(time.monotonic() - t0, 3), flush=True)
"""


@dataclass
class Transfer:
    sent_bytes: int
    received_bytes: int
    sent_sha256: str
    received_sha256: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.sent_bytes == self.received_bytes and self.sent_sha256 == self.received_sha256


def tcp_transfer(src: Node, dst: Node, dst_ip: str, size: int, port: int = 5201,
                 timeout: float = 60.0, seed: str = "netlab") -> Transfer:
    """Send `size` bytes over TCP from `src` to `dst_ip` (on `dst`), with SHA-256 both ends."""
    sink = dst.popen([sys.executable, "-c", _SINK, dst_ip, str(port), str(timeout)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sink.stdout.readline().startswith("listening") or sink.poll() is not None,
                 timeout=10, what="the TCP sink to listen")
        out = src.run([sys.executable, "-c", _SOURCE, dst_ip, str(port), str(size), seed,
                       str(timeout)], timeout=timeout + 5).stdout.split()
        sent, sent_sha, echoed_sha, secs = int(out[0]), out[1], out[2], float(out[3])
        sink.wait(timeout)
        got = sink.stdout.read().split()
        received = int(got[0]) if got else -1
        return Transfer(sent, received, sent_sha, echoed_sha, secs)
    finally:
        stop_process(sink)


_SEND_UDP = ("import socket,sys; s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] "
             "else socket.AF_INET, socket.SOCK_DGRAM); "
             "s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))")


def send_udp(src: Node, dst_ip: str, port: int, payload: str):
    src.run([sys.executable, "-c", _SEND_UDP, dst_ip, str(port), payload])


def ping(node: Node, ip: str, count: int = 1, timeout: float = 1, interval: float = 0.2) -> bool:
    return node.run(["ping", "-n", "-c", str(count), "-i", str(interval), "-W", str(timeout), ip],
                    check=False, timeout=count * (timeout + interval) + 5).returncode == 0
