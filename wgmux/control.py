"""The daemon's control socket: how `wgmux show` talks to `wgmux serve`.

An abstract Unix socket named after the attach interface.  Abstract
sockets belong to the network namespace they are bound in, which is
exactly the scope of a wgmux instance (one TC program per interface per
namespace): `show` run beside the daemon finds it, two hubs in two
namespaces never collide, and nothing is left on disk after a crash.

Protocol: the client sends one JSON line `{"cmd": "status"}`, the daemon
answers one JSON line and closes.
"""

from __future__ import annotations

import json
import socket
import threading
from typing import Callable


def address(interface: str) -> str:
    return f"\0wgmux/{interface}"


class AlreadyServing(RuntimeError):
    pass


class ControlServer:
    def __init__(self, interface: str, handler: Callable[[dict], dict]):
        self.interface = interface
        self.handler = handler
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(address(interface))
        except OSError:
            self.sock.close()
            raise AlreadyServing(f"another wgmux is already serving interface {interface!r} "
                                 f"in this network namespace") from None
        self.sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="wgmux-control", daemon=True)
        self._stopping = False

    def start(self):
        self._thread.start()

    def _serve(self):
        while not self._stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.settimeout(2)
                    request = json.loads(_read_line(conn) or "{}")
                    reply = self.handler(request)
                except Exception as e:  # a bad client must not take the daemon down
                    reply = {"error": f"{type(e).__name__}: {e}"}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass

    def close(self):
        self._stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _read_line(conn) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


class NotRunning(RuntimeError):
    pass


def request(interface: str, cmd: str = "status", timeout: float = 5.0, **args) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(address(interface))
        except (ConnectionRefusedError, FileNotFoundError):
            raise NotRunning(f"no wgmux daemon is serving interface {interface!r} in this "
                             f"network namespace (start one with: wgmux serve)") from None
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        reply = json.loads(_read_line(s) or "{}")
    if "error" in reply:
        raise RuntimeError(f"wgmux daemon: {reply['error']}")
    return reply
