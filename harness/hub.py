"""wgmux on a netlab topology: run the real daemon on the lab's hub.

Used by `make demo` and the integration tests, so both exercise exactly
what a user runs: `wgmux serve -c <file>` as a process in the hub's
namespace, and `wgmux show` beside it.

The daemon pins its maps under /sys/fs/bpf (shared by every namespace) so
that a restart keeps the sessions; when the lab closes, the hub stops the
daemon and runs `wgmux purge`, so a test leaves nothing there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from netlab import CommandError, stop_process, wait_for
from netlab.capture import Capture
from netlab.lab import NETNS_DIR
from netlab.nat import NatKind, Router6Kind
from netlab.topology import Host, Topology, standard
from netlab.traffic import ping, tcp_transfer

from wgmux import pinning


@dataclass
class Pair:
    initiator: Host
    responder: Host
    port: int


@dataclass
class WgmuxHub:
    topo: Topology
    pairs: List[Pair] = field(default_factory=list)
    extra_config: str = ""
    process: Optional[subprocess.Popen] = None
    serve_args: List[str] = field(default_factory=list)   # e.g. --session-idle-timeout 3
    interface: str = "eth0"
    # as the README asks of a hub: forwarding on Interface, so the datapath
    # takes the fast path (False: the neighbour path, ev_nh_fwd_disabled)
    forwarding: bool = True
    # Interface = [...] (docs/spec.md §4c); empty: [interface]
    interfaces: List[str] = field(default_factory=list)

    def __post_init__(self):
        if self.interfaces:
            self.interface = self.interfaces[0]
        else:
            self.interfaces = [self.interface]
        settings = {f"net.ipv4.conf.{i}.forwarding": int(self.forwarding)
                    for i in self.interfaces}
        if self.topo.hub_ip6 is not None:
            # README: IPv6 peers want net.ipv6.conf.all.forwarding=1
            settings["net.ipv6.conf.all.forwarding"] = int(self.forwarding)
            settings.update({f"net.ipv6.conf.{i}.forwarding": int(self.forwarding)
                             for i in self.interfaces})
        self.topo.hub.sysctls(settings)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.topo.lab.prefix}-wgmux-"))
        self.config_path = self.dir / "config.toml"
        self.log_path = self.dir / "serve.log"
        self.topo.lab.on_close(self.close)

    @property
    def pin_dir(self) -> Path:
        """Where the daemon on the hub pins its maps."""
        ino = os.stat(NETNS_DIR / self.topo.hub.netns).st_ino
        return pinning.pin_dir_for(self.interface, ino)

    # -- configuration ------------------------------------------------------
    def pair(self, initiator: Host, responder: Host, port: int) -> Pair:
        """Make `responder` reachable at hub:`port` and point `initiator` at it.

        The peers' configs change exactly as a user's would: the initiator
        gets the responder with Endpoint = hub:port (the hub's address of
        the family the initiator reaches it over: [v6]:port), the responder
        gets the initiator with no endpoint.
        """
        initiator.wg.set_peer(responder.wg.public_key,
                              endpoint=self.topo.hub_endpoint(initiator, port),
                              allowed_ips=[f"{responder.overlay_ip}/32"])
        responder.wg.set_peer(initiator.wg.public_key, allowed_ips=[f"{initiator.overlay_ip}/32"])
        p = Pair(initiator, responder, port)
        self.pairs.append(p)
        self.write_config()
        return p

    def config_text(self) -> str:
        lines = ["[Interface]",
                 f'Device = "{self.topo.hub_wg.name}"',
                 f"HubPort = {self.topo.hub_port}",
                 f'Interface = "{self.interface}"' if len(self.interfaces) == 1 else
                 f"Interface = [{', '.join(f'{chr(34)}{i}{chr(34)}' for i in self.interfaces)}]",
                 self.extra_config, ""]
        seen = set()
        for p in self.pairs:
            if p.port in seen:
                continue
            seen.add(p.port)
            lines += ["[[Peer]]", f"Port = {p.port}",
                      f'PublicKey = "{p.responder.wg.public_key}"', ""]
        return "\n".join(lines)

    def write_config(self):
        self.config_path.write_text(self.config_text())

    # -- the daemon ---------------------------------------------------------
    def cli(self, *args) -> List[str]:
        return [sys.executable, "-m", "wgmux.cli", *args]

    def start(self, timeout: float = 60.0, args=(), write_config: bool = True):
        """Start `wgmux serve` in the hub node; return once `show` answers.
        `args`: more `serve` options for this start (after `serve_args`)."""
        if write_config:
            self.write_config()
        log = open(self.log_path, "ab")
        self.process = self.topo.hub.popen(
            self.cli("serve", "-c", str(self.config_path), *self.serve_args, *args),
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"wgmux serve exited {self.process.returncode}:\n{self.log()}")
            return self.show(check=False) is not None

        wait_for(up, timeout=timeout, what="wgmux serve to attach")
        return self

    def stop(self, sig=None) -> int:
        """Stop the daemon (SIGTERM unless `sig`); its exit code."""
        if self.process is None:
            return 0
        stop_process(self.process, sig or signal.SIGTERM, timeout=15)
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> int:
        """SIGKILL: the daemon gets no chance to detach."""
        return self.stop(signal.SIGKILL)

    def signal(self, sig):
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError("wgmux serve is not running")
        os.kill(self.process.pid, sig)

    def reload(self, timeout: float = 10.0) -> str:
        """SIGHUP; returns the log lines the reload wrote once it finished
        (applied or rejected)."""
        mark = self.log_size()
        self.signal(signal.SIGHUP)
        wait_for(lambda: ("reloaded " in self.log(mark) or "reload rejected" in self.log(mark)),
                 timeout=timeout, what="wgmux serve to reload")
        return self.log(mark)

    def purge(self, check: bool = True) -> str:
        """`wgmux purge` in the hub: pinned maps and a killed daemon's program."""
        out = self.topo.hub.run(self.cli("purge", "-c", str(self.config_path)), check=check)
        return out.stdout + out.stderr

    def show(self, check: bool = True) -> Optional[dict]:
        try:
            out = self.topo.hub.run(self.cli("show", "--json", "-c", str(self.config_path)))
        except CommandError:
            if check:
                raise
            return None
        return json.loads(out.stdout)

    def show_text(self) -> str:
        return self.topo.hub.run(self.cli("show", "-c", str(self.config_path))).stdout

    def log(self, offset: int = 0) -> str:
        """The daemon's log (every start appends), from byte `offset`."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def close(self):
        """At lab close: stop the daemon and remove its pinned state."""
        try:
            self.stop()
        finally:
            try:
                pin_dir = self.pin_dir
            except FileNotFoundError:
                pin_dir = None        # the hub's namespace is already gone
            if pin_dir is not None and pin_dir.exists() and self.config_path.exists():
                self.purge(check=False)
            if pin_dir is not None and pin_dir.exists():   # purge could not run
                pinning.purge(pin_dir)


def serving_pair(lab, kinds=(NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED), port: int = 51821,
                 serve_args=(), forwarding: bool = True, families="v4",
                 kinds6=Router6Kind.FIREWALL):
    """The usual start of an end-to-end test: the standard topology with two
    sites of NAT `kinds` (and `families`, `kinds6`: netlab.topology.standard's,
    e.g. families="v6" for a pair that reaches the hub over IPv6 only),
    both hosts in session with the hub's WireGuard, host 1 the initiator
    of host 2 through hub:`port`, the daemon serving and one ping through
    the hub done.
    Returns (topology, hub, initiator, responder)."""
    topo = standard(lab, list(kinds), wireguard=True, families=families, kinds6=kinds6)
    initiator, responder = topo.host(1), topo.host(2)
    for host in (initiator, responder):
        topo.hub_wg.wait_handshake(host.wg.public_key)
    hub = WgmuxHub(topo, serve_args=list(serve_args), forwarding=forwarding)
    hub.pair(initiator, responder, port)
    hub.start()
    wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
             what="the first ping through the hub")
    return topo, hub, initiator, responder


def handshake_fails(topo: Topology, initiator: Host, responder: Host, port: int):
    """The negative of every end-to-end claim: with nothing reflecting at
    hub:`port`, traffic makes the initiator send handshake initiations
    there, and none completes within two retries."""
    with Capture(topo.hub, "eth0", f"udp dst port {port}") as cap:
        try:
            wait_for(lambda: ping(initiator.node, responder.overlay_ip, timeout=1),
                     timeout=6, what="a ping that must not get through")
        except TimeoutError:
            pass
        else:
            raise AssertionError("a ping got through hub:port with nothing reflecting")
    assert cap.packets, "the initiator never even tried hub:port"
    assert initiator.wg.peer(responder.wg.public_key).latest_handshake == 0
    assert responder.wg.peer(initiator.wg.public_key).latest_handshake == 0


def translated_session(before: dict, status: dict, families, port: int,
                       packets: int) -> dict:
    """The pair on `port` in `status` (`show --json`, after a transfer
    across families, spec §4b; `before`: the counters before it): at
    least `packets` changed family each way, none was dropped for it, and
    the pair is established with each side's family and `translated`.
    `families`: ("v4", "v6") or ("v6", "v4"), initiator first.  Returns
    the session."""
    c = status["counters"]
    for event in ("ev_translated_4to6", "ev_translated_6to4"):
        assert c[event] - before[event] >= packets, (event, before[event], c[event])
    for reason in ("drop_too_big", "drop_translate", "drop_no_checksum", "drop_family"):
        assert c[reason] == 0, (reason, c)
    (s,) = [s for s in status["sessions"] if s["port"] == port]
    want = {"v4": "ipv4", "v6": "ipv6"}
    assert (s["state"], s["initiator_family"], s["responder_family"], s["translated"]) == \
        ("established", want[families[0]], want[families[1]], True), s
    return s


def transfers_past_the_hub(topo: Topology, initiator: Host, responder: Host, size: int):
    """`size` bytes over TCP from the initiator to the responder and back
    (netlab.traffic.tcp_transfer: checksums compared), asserting that the
    hub's own WireGuard did not carry them (under 1 MiB more from either
    peer): every end-to-end claim that the hub reflects and never decrypts.
    Returns the two transfers."""
    before = topo.hub_wg.peers()
    forward = tcp_transfer(initiator.node, responder.node, responder.overlay_ip, size, port=5001)
    assert forward.ok, forward
    back = tcp_transfer(responder.node, initiator.node, initiator.overlay_ip, size, port=5002)
    assert back.ok, back
    after = topo.hub_wg.peers()
    for host in (initiator, responder):
        key = host.wg.public_key
        grown = after[key].rx_bytes - before[key].rx_bytes
        assert grown < 1 << 20, f"the hub's own WireGuard decrypted {grown} bytes from {host.name}"
    return forward, back
