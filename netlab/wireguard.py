"""Real WireGuard interfaces on netlab nodes: kernel when available, else wireguard-go.

One API for both implementations, and for AmneziaWG: `create(..., amnezia=
params)` makes an AmneziaWG interface with the same API (see netlab.amnezia:
the real implementation when installed, else a wire adapter beside
WireGuard); `tool` is then the wireguard-tools flavour that configures it
("wg" or "awg").  Configuration and read-back go through wireguard-tools
(`wg set`, `wg show dump`), which speaks netlink to the kernel module and
the UAPI socket to userspace implementations, exactly as an operator would.
Userspace control sockets live in /var/run/wireguard/ (/var/run/amneziawg/),
shared by every namespace, so interface names come from `Lab.unique_ifname`
and are unique across the machine.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from typing import Iterable, Optional

from . import amnezia as awg
from .lab import Node, stop_process, wait_for
from .wgbase import (WIREGUARD_SOCKET_DIR, genkey, kernel_wireguard_available, keypair,
                     pubkey, spawn_userspace)

# The key and kernel helpers live in netlab.wgbase; tests import them from here too.
__all__ = ["PeerState", "WireGuard", "genkey", "kernel_wireguard_available", "pubkey"]


@dataclass
class PeerState:
    public_key: str
    endpoint: Optional[str]
    allowed_ips: list
    latest_handshake: int  # unix seconds, 0 = never
    rx_bytes: int
    tx_bytes: int
    keepalive: Optional[int]


@dataclass
class WireGuard:
    """A WireGuard interface in a node."""

    node: Node
    name: str
    private_key: str
    public_key: str
    listen_port: int
    implementation: str  # "kernel", "wireguard-go", or an AmneziaWG one (netlab.amnezia)
    process: Optional[subprocess.Popen] = field(default=None, repr=False)
    tool: str = "wg"                 # "awg" for real AmneziaWG implementations
    amnezia: Optional[object] = None     # netlab.amnezia.AwgParams when AmneziaWG
    adapter: Optional[object] = field(default=None, repr=False)  # netlab.amnezia.Adapter

    @classmethod
    def create(cls, node: Node, tag: str, listen_port: int, address: Optional[str] = None,
               private_key: Optional[str] = None, implementation: Optional[str] = None,
               mtu: Optional[int] = None, amnezia=None) -> "WireGuard":
        """Create, key, address and bring up an interface named lab prefix + `tag`.

        `amnezia`: AmneziaWG parameters (netlab.amnezia.AwgParams or anything
        AwgParams.of accepts) make it an AmneziaWG interface."""
        if amnezia is not None:
            return awg.create(cls, node, tag, listen_port, address, private_key,
                              implementation, mtu, amnezia)
        mtu = 1420 if mtu is None else mtu
        lab = node.lab
        name = lab.unique_ifname(tag)
        private_key, public_key = keypair(private_key)
        impl = implementation or ("kernel" if kernel_wireguard_available() else "wireguard-go")
        process = None
        if impl == "kernel":
            node.ipr.link("add", ifname=name, kind="wireguard")
        elif impl == "wireguard-go":
            process = spawn_userspace(node, "wireguard-go", name, WIREGUARD_SOCKET_DIR)
        else:
            raise ValueError(f"unknown WireGuard implementation {impl!r}")
        wg = cls(node, name, private_key, public_key, listen_port, impl, process)
        lab.on_close(wg.close)
        wg.configure(mtu, address)
        return wg

    def configure(self, mtu: int, address: Optional[str] = None, extra: Iterable[str] = ()):
        """Key, listen port (and `extra` `wg set` arguments), MTU, address, up."""
        node = self.node
        node.run([self.tool, "set", self.name, "listen-port", str(self.listen_port),
                  "private-key", "/dev/stdin", *extra], input=self.private_key)
        node.ipr.link("set", index=node.index(self.name), mtu=mtu)
        if address:
            node.add_address(self.name, address)
        node.up(self.name)

    def set_peer(self, public_key: str, endpoint: Optional[str] = None,
                 allowed_ips: Iterable[str] = (), keepalive: Optional[int] = None):
        args = [self.tool, "set", self.name, "peer", public_key]
        if endpoint:
            args += ["endpoint", endpoint]
        allowed = list(allowed_ips)
        if allowed:
            args += ["allowed-ips", ",".join(allowed)]
        if keepalive is not None:
            args += ["persistent-keepalive", str(keepalive)]
        self.node.run(args)
        # A route for each allowed prefix through this interface, as wg-quick would.
        for prefix in allowed:
            with contextlib.suppress(Exception):
                self.node.add_route(prefix, ifname=self.name)

    def remove_peer(self, public_key: str):
        self.node.run([self.tool, "set", self.name, "peer", public_key, "remove"])

    def peers(self) -> dict:
        """Current peer state by public key, from `wg show <if> dump`."""
        out = self.node.run([self.tool, "show", self.name, "dump"]).stdout.splitlines()
        peers = {}
        for line in out[1:]:  # the first line describes the interface itself
            pub, _psk, endpoint, allowed, handshake, rx, tx, keepalive = line.split("\t")[:8]
            peers[pub] = PeerState(
                public_key=pub,
                endpoint=None if endpoint == "(none)" else endpoint,
                allowed_ips=[] if allowed == "(none)" else allowed.split(","),
                latest_handshake=int(handshake),
                rx_bytes=int(rx),
                tx_bytes=int(tx),
                keepalive=None if keepalive == "off" else int(keepalive),
            )
        return peers

    def peer(self, public_key: str) -> PeerState:
        return self.peers()[public_key]

    def wait_handshake(self, public_key: str, timeout: float = 15.0, after: int = 0) -> PeerState:
        """Wait until the peer has a handshake newer than `after` (unix seconds)."""
        return wait_for(
            lambda: (lambda p: p if p and p.latest_handshake > after else None)(
                self.peers().get(public_key)),
            timeout=timeout, what=f"{self.name} handshake with {public_key[:8]}…")

    def restart(self, while_down=None, before_configure=None):
        """Restart the device as an operator would (`wg-quick down` then `up`,
        or its wireguard-go process restarted): the same name, key, listen
        port, MTU, addresses and peers (public keys, allowed IPs, keepalive),
        but no endpoints and no sessions: a fresh device learns where its
        peers are only from their next handshake with it.  Once the new
        device exists, its whole WireGuard configuration is one `wg set`, as
        wg-quick's `wg setconf`.  `while_down()` runs while no device
        exists, `before_configure()` once the new one exists, unconfigured.
        Plain WireGuard only (not AmneziaWG)."""
        if self.amnezia is not None:
            raise NotImplementedError("restart of an AmneziaWG interface")
        node = self.node
        index = node.index(self.name)
        mtu = node.ipr.link("get", index=index)[0].get_attr("IFLA_MTU")
        addresses = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                     for a in node.ipr.get_addr(index=index)]
        peers = list(self.peers().values())
        self.close()                       # down: the link (and its routes) go
        if while_down is not None:
            while_down()
        if self.implementation == "kernel":
            node.ipr.link("add", ifname=self.name, kind="wireguard")
        else:
            self.process = spawn_userspace(node, "wireguard-go", self.name,
                                           WIREGUARD_SOCKET_DIR)
        if before_configure is not None:
            before_configure()
        extra = []
        for p in peers:
            extra += ["peer", p.public_key]
            if p.allowed_ips:
                extra += ["allowed-ips", ",".join(p.allowed_ips)]
            if p.keepalive:
                extra += ["persistent-keepalive", str(p.keepalive)]
        self.configure(mtu, extra=extra)
        for address in addresses:
            node.add_address(self.name, address)
        for prefix in (a for p in peers for a in p.allowed_ips):
            with contextlib.suppress(Exception):
                node.add_route(prefix, ifname=self.name)

    def close(self):
        if self.adapter is not None:
            self.adapter.close()
        if self.process is not None:
            stop_process(self.process)
            self.process = None
        elif self.implementation.endswith("kernel"):
            with contextlib.suppress(Exception):
                self.node.ipr.link("del", index=self.node.index(self.name))
