"""The daemon's control socket: how `wgmux show` talks to `wgmux serve`.

A filesystem Unix socket only root can use: `/run/wgmux/<netns inode>-
<Interface>.sock` (docs/spec.md §11).  One per network namespace and attach
interface, which is exactly the scope of a wgmux instance; the inode tells
namespaces apart because /run is shared by all of them.

Hostile local users (docs/security.md):
- the directory is root's and not writable by anyone else, the socket mode
  0600: nobody else can connect, read the status (endpoints, indices) or
  create the name before `serve` does (a squatter could otherwise answer
  `show`).  `serve` refuses a directory it does not own; `show` refuses a
  socket or directory not owned by root.
- every connection has its own thread and deadlines: a client that
  trickles bytes holds only itself, never `show` or the daemon; a request
  is at most REQUEST_MAX bytes.
- replies of any size are sent whole; the client reads to the end and
  reports a broken reply as an error, never a traceback.

Protocol: the client sends one JSON line `{"cmd": "status"}`, the daemon
answers one JSON document and closes.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Callable, Optional

RUN_DIR = Path(os.environ.get("WGMUX_RUN_DIR", "/run/wgmux"))
REQUEST_MAX = 64 * 1024
REQUEST_DEADLINE = 2.0       # seconds for a client to send its request
REPLY_DEADLINE = 30.0        # seconds for a client to take the reply
MAX_CLIENTS = 16             # connections served at once; more wait in the backlog


def address(interface: str, netns_ino: Optional[int] = None) -> Path:
    if netns_ino is None:
        netns_ino = os.stat("/proc/self/ns/net").st_ino
    return RUN_DIR / f"{netns_ino}-{interface}.sock"


class AlreadyServing(RuntimeError):
    pass


class ControlError(RuntimeError):
    """The control socket cannot be made or trusted; the message says why."""


def _private_dir(path: Path) -> Path:
    """RUN_DIR, made if missing (root's, 0755); refused if anyone but root
    owns it or may write to it."""
    try:
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        raise ControlError(f"cannot make {path}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise ControlError(f"{path} is not a directory only root may write to (owner uid "
                           f"{st.st_uid}, mode {stat.filemode(st.st_mode)}): someone else made "
                           f"it; remove it (wgmux serve makes it, or systemd's "
                           f"RuntimeDirectory=wgmux)")
    return path


class ControlServer:
    def __init__(self, interface: str, handler: Callable[[dict], dict]):
        self.interface = interface
        self.handler = handler
        self.path = address(interface)
        _private_dir(self.path.parent)
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise AlreadyServing(f"another wgmux is already serving interface "
                                     f"{interface!r} in this network namespace ({self.path})")
            os.unlink(self.path)          # left by a killed daemon
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)             # the socket is born 0600
        try:
            self.sock.bind(str(self.path))
        except OSError as e:
            self.sock.close()
            raise AlreadyServing(f"cannot bind {self.path}: {e.strerror or e}") from None
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.sock.listen(64)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
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
            self._slots.acquire()
            threading.Thread(target=self._one, args=(conn,), name="wgmux-control-client",
                             daemon=True).start()

    def _one(self, conn):
        try:
            with conn:
                try:
                    line = _read_request(conn, time.monotonic() + REQUEST_DEADLINE)
                    request = json.loads(line or "{}")
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    reply = self.handler(request)
                except Exception as e:  # a bad client must not take the daemon down
                    reply = {"error": f"{type(e).__name__}: {e}"}
                try:
                    conn.settimeout(REPLY_DEADLINE)
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass
        finally:
            self._slots.release()

    def close(self):
        self._stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def serving(interface: str) -> bool:
    """Whether a live wgmux daemon in this network namespace is named after
    `interface` (its first Interface): a daemon serving it as another of
    its list must not take it over (spec §4c)."""
    path = address(interface)
    return (path.exists() or path.is_symlink()) and _answers(path)


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _read_request(conn, deadline: float) -> str:
    """One line, within the deadline and REQUEST_MAX bytes."""
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no whole request within {REQUEST_DEADLINE:g} s")
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except socket.timeout:
            raise TimeoutError(f"no whole request within {REQUEST_DEADLINE:g} s") from None
        if not chunk:
            break
        buf += chunk
        if len(buf) > REQUEST_MAX:
            raise ValueError(f"request over {REQUEST_MAX} bytes")
    return buf.decode()


class NotRunning(RuntimeError):
    pass


def _trusted(path: Path):
    """Refuse a socket (or its directory) that root does not own: someone
    else could be answering in the daemon's name."""
    for p in (path.parent, path):
        st = os.lstat(p)
        if st.st_uid != 0:
            raise ControlError(f"{p} is owned by uid {st.st_uid}, not root: not wgmux's; "
                               f"refusing to talk to it")


def request(interface: str, cmd: str = "status", timeout: float = 10.0, **args) -> dict:
    path = address(interface)
    try:
        _trusted(path)
    except FileNotFoundError:
        raise NotRunning(f"no wgmux daemon is serving interface {interface!r} in this "
                         f"network namespace ({path} does not exist; start one with: "
                         f"wgmux serve)") from None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            raise NotRunning(f"no wgmux daemon is serving interface {interface!r} in this "
                             f"network namespace ({path} is stale; start one with: "
                             f"wgmux serve)") from None
        except PermissionError:
            raise ControlError(f"{path}: permission denied (only root may talk to "
                               f"wgmux serve)") from None
        data = b""
        try:
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            raise ControlError(f"{path}: {e.strerror or e} before the whole reply "
                               f"({len(data)} bytes)") from None
    try:
        reply = json.loads(data or b"{}")
    except ValueError as e:
        raise ControlError(f"{path}: the daemon's reply ({len(data)} bytes) is not whole "
                           f"JSON: {e}") from None
    if not isinstance(reply, dict):
        raise ControlError(f"{path}: the daemon's reply is not a JSON object")
    if "error" in reply:
        raise RuntimeError(f"wgmux daemon: {reply['error']}")
    return reply
