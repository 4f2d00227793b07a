"""An AmneziaWG interface on a netlab node: the real implementation when one
is installed, else WireGuard with the wire adapter (netlab.amnezia.adapter).

`implementation()` says which one runs so tests can name it in their ids
("adapter", "amneziawg-go", "amneziawg-kernel"; NETLAB_AMNEZIA forces one).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from ..wgbase import (AMNEZIA_SOCKET_DIR, WIREGUARD_SOCKET_DIR, kernel_wireguard_available,
                      keypair, spawn_userspace)
from .adapter import Adapter
from .params import AwgParams


def _have_kernel_module() -> bool:
    if Path("/sys/module/amneziawg").exists():
        return True
    if shutil.which("modinfo") is None:
        return False
    return subprocess.run(["modinfo", "amneziawg"], capture_output=True).returncode == 0


@functools.lru_cache(maxsize=None)
def implementation() -> str:
    """Which AmneziaWG netlab runs: "amneziawg-kernel", "amneziawg-go" or
    "adapter" (NETLAB_AMNEZIA=adapter|amneziawg-go|amneziawg-kernel forces)."""
    forced = os.environ.get("NETLAB_AMNEZIA")
    if forced:
        if forced not in ("adapter", "amneziawg-go", "amneziawg-kernel"):
            raise ValueError(f"NETLAB_AMNEZIA={forced!r}: adapter, amneziawg-go or amneziawg-kernel")
        return forced
    if shutil.which("awg"):
        if _have_kernel_module():
            return "amneziawg-kernel"
        if shutil.which("amneziawg-go"):
            return "amneziawg-go"
    return "adapter"


def create(cls, node, tag: str, listen_port: int, address: Optional[str] = None,
           private_key: Optional[str] = None, implementation_name: Optional[str] = None,
           mtu: Optional[int] = None, params=None):
    """`WireGuard.create(..., amnezia=params)` lands here: an AmneziaWG
    interface with the same API (set_peer, peers, wait_handshake, close).
    `cls` is netlab.wireguard.WireGuard, passed in so that this package does
    not import it back.

    The default MTU is WireGuard's 1420 less S4 (every transport packet
    grows by S4 bytes on the wire; AmneziaWG users lower the MTU the same
    way), so full-size packets still fit a 1500-byte path unfragmented."""
    params = AwgParams.of(params)
    impl = implementation_name or implementation()
    lab = node.lab
    name = lab.unique_ifname(tag)
    private_key, public_key = keypair(private_key)
    if mtu is None:
        mtu = 1420 - params.s4
    if impl == "adapter":
        inner = lab.add_node(f"{node.name}-awg-{tag}")
        adapter = Adapter(node, inner, listen_port)
        lab.on_close(adapter.close)
        if kernel_wireguard_available():
            inner.ipr.link("add", ifname=name, kind="wireguard")
            process, under = None, "kernel"
        else:
            process = spawn_userspace(inner, "wireguard-go", name, WIREGUARD_SOCKET_DIR)
            under = "wireguard-go"
        # The device goes to the node; its UDP socket stays in `inner`.
        inner.ipr.link("set", index=inner.index(name), net_ns_fd=node.netns)
        wg = cls(node, name, private_key, public_key, listen_port, f"adapter+{under}", process,
                 tool="wg", amnezia=params, adapter=adapter)
        lab.on_close(wg.close)
        wg.configure(mtu, address)
        adapter.start(params, name, "wg")
        return wg
    if impl == "amneziawg-go":
        process = spawn_userspace(node, "amneziawg-go", name, AMNEZIA_SOCKET_DIR)
    elif impl == "amneziawg-kernel":
        node.ipr.link("add", ifname=name, kind="amneziawg")
        process = None
    else:
        raise ValueError(f"unknown AmneziaWG implementation {impl!r}")
    wg = cls(node, name, private_key, public_key, listen_port, impl, process, tool="awg",
             amnezia=params)
    lab.on_close(wg.close)
    wg.configure(mtu, address, extra=params.awg_set_args())
    return wg
