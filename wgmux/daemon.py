"""`wgmux serve`: attach the datapath and keep its maps true.

The kernel program does all per-packet work.  This loop only:
- learns each responder's public endpoint from the hub's WireGuard device
  and writes it into the `ports` map (at most SYNC_INTERVAL behind);
- collects sessions idle longer than SESSION_IDLE_TIMEOUT;
- answers `wgmux show` on the control socket;
- detaches everything on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Optional

from . import control, discovery
from .config import Config

log = logging.getLogger("wgmux")

SYNC_INTERVAL = 0.5
# WireGuard drops a session 180 s after its last handshake (REJECT_AFTER_TIME
# is 180 s, keys are never used past 3 x that); 3 x 180 s of silence means
# both sides have given the indices up.
SESSION_IDLE_TIMEOUT = 3 * 180
GC_INTERVAL = 5.0


class ServeError(RuntimeError):
    """A reason `serve` cannot start; its message is the one line users see."""


def preflight(config: Config):
    """Everything that can be checked before touching the kernel."""
    if os.geteuid() != 0:
        raise ServeError("wgmux serve must run as root (it loads eBPF and changes tc)")
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=config.interface):
            raise ServeError(f"Interface {config.interface!r} (from {config.path}) does not exist "
                             f"in this network namespace")
    try:
        device = discovery.read_device(config.device, config.wg_util)
    except discovery.DiscoveryError as e:
        raise ServeError(f"Device {config.device!r} (from {config.path}): {e}") from None
    if device.listen_port != config.hub_port:
        raise ServeError(f"HubPort {config.hub_port} (from {config.path}) does not match "
                         f"{config.device}'s listen port {device.listen_port}")
    try:
        import bcc  # noqa: F401
    except ImportError:
        raise ServeError("bcc is not importable: install the Debian package python3-bpfcc and "
                         "run wgmux with a Python that sees it (make setup does this)") from None
    return device


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.datapath = None
        self.control: Optional[control.ControlServer] = None
        self.endpoints: dict = {}      # port -> (ip, port) currently in the map
        self.device = None
        self.started = time.time()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------
    def start(self):
        self.device = preflight(self.config)
        self.control = control.ControlServer(self.config.interface, self.handle_request)
        try:
            from .datapath import Datapath, DatapathError

            try:
                self.datapath = Datapath(hub_port=self.config.hub_port,
                                         amnezia=self.config.amnezia)
            except DatapathError as e:
                raise ServeError(str(e)) from None
            self.datapath.attach(self.config.interface)
            for peer in self.config.peers:
                self.datapath.set_responder(peer.port)
            log.info("attached to %s (TC ingress), hub port %d, %d responder port(s): %s",
                     self.config.interface, self.config.hub_port, len(self.config.peers),
                     " ".join(str(p.port) for p in self.config.peers) or "-")
            self.sync_endpoints(self.device)
        except BaseException:
            self.stop()
            raise
        self.control.start()

    def stop(self):
        if self.datapath is not None:
            try:
                self.datapath.detach()
                log.info("detached from %s", self.config.interface)
            finally:
                self.datapath = None
        if self.control is not None:
            self.control.close()
            self.control = None

    def request_stop(self, *_):
        self._stop.set()

    def run(self):
        """Serve until SIGTERM/SIGINT; returns after detaching."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        next_gc = time.monotonic() + GC_INTERVAL
        try:
            while not self._stop.wait(SYNC_INTERVAL):
                try:
                    self.sync_endpoints()
                except discovery.DiscoveryError as e:
                    log.warning("cannot read %s: %s", self.config.device, e)
                if time.monotonic() >= next_gc:
                    self.collect_idle()
                    next_gc = time.monotonic() + GC_INTERVAL
        finally:
            self.stop()

    # -- control plane ------------------------------------------------------
    def sync_endpoints(self, device=None):
        device = device or discovery.read_device(self.config.device, self.config.wg_util)
        with self._lock:
            self.device = device
            for peer in self.config.peers:
                info = device.peers.get(peer.public_key)
                endpoint = info.endpoint if info else None
                if peer.port in self.endpoints and endpoint == self.endpoints[peer.port]:
                    continue
                if endpoint is None:
                    # The port stays a peer port (initiations to it are
                    # dropped, not passed to the stack); only its target goes.
                    self.datapath.set_responder(peer.port)
                    self.endpoints[peer.port] = None
                    why = "not a peer of" if info is None else "has no endpoint on"
                    log.warning("responder on port %d (%s…) %s %s: initiations to it are dropped",
                                peer.port, peer.public_key[:8], why, self.config.device)
                else:
                    self.datapath.set_responder(peer.port, endpoint[0], endpoint[1])
                    log.info("responder on port %d (%s…) is at %s", peer.port,
                             peer.public_key[:8], _fmt_ep(endpoint))
                    self.endpoints[peer.port] = endpoint

    def collect_idle(self):
        with self._lock:
            removed = self.datapath.collect_idle(SESSION_IDLE_TIMEOUT)
        if removed:
            log.info("collected %d idle session entr%s", removed, "y" if removed == 1 else "ies")

    def status(self) -> dict:
        with self._lock:
            device = self.device
            peers = []
            for peer in self.config.peers:
                info = device.peers.get(peer.public_key) if device else None
                peers.append({
                    "port": peer.port,
                    "public_key": peer.public_key,
                    "endpoint": _fmt_ep(self.endpoints.get(peer.port)),
                    "latest_handshake": info.latest_handshake if info else 0,
                    "known_to_device": info is not None,
                })
            return {
                "interface": self.config.interface,
                "device": self.config.device,
                "hub_port": self.config.hub_port,
                "config": str(self.config.path),
                "pid": os.getpid(),
                "started": self.started,
                "now": time.time(),
                "peers": peers,
                "sessions": self.datapath.session_pairs(),
                "counters": self.datapath.counters(),
            }

    def handle_request(self, req: dict) -> dict:
        if req.get("cmd") == "status":
            return self.status()
        return {"error": f"unknown command {req.get('cmd')!r}"}


def _fmt_ep(ep) -> Optional[str]:
    if not ep:
        return None
    ip, port = ep
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
