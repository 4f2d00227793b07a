"""wgmux on a netlab topology: run the real daemon on the lab's hub.

Used by `make demo` and the integration tests, so both exercise exactly
what a user runs: `wgmux serve -c <file>` as a process in the hub's
namespace, and `wgmux show` beside it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from netlab import CommandError, stop_process, wait_for
from netlab.topology import Host, Topology


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

    def __post_init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.topo.lab.prefix}-wgmux-"))
        self.config_path = self.dir / "config.toml"
        self.log_path = self.dir / "serve.log"
        self.topo.lab.on_close(self.close)

    # -- configuration ------------------------------------------------------
    def pair(self, initiator: Host, responder: Host, port: int) -> Pair:
        """Make `responder` reachable at hub:`port` and point `initiator` at it.

        The peers' configs change exactly as a user's would: the initiator
        gets the responder with Endpoint = hub:port, the responder gets the
        initiator with no endpoint.
        """
        initiator.wg.set_peer(responder.wg.public_key, endpoint=f"{self.topo.hub_ip}:{port}",
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
                 'Interface = "eth0"',
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

    def start(self, timeout: float = 60.0):
        """Start `wgmux serve` in the hub node; return once `show` answers."""
        self.write_config()
        log = open(self.log_path, "ab")
        self.process = self.topo.hub.popen(self.cli("serve", "-c", str(self.config_path)),
                                           stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up():
            if self.process.poll() is not None:
                raise RuntimeError(f"wgmux serve exited {self.process.returncode}:\n{self.log()}")
            return self.show(check=False) is not None

        wait_for(up, timeout=timeout, what="wgmux serve to attach")
        return self

    def stop(self, sig=None) -> int:
        import signal

        if self.process is None:
            return 0
        stop_process(self.process, sig or signal.SIGTERM, timeout=15)
        code = self.process.returncode
        self.process = None
        return code

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

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self):
        self.stop()
