"""What every WireGuard flavour in netlab stands on: keys, the in-kernel
check, userspace implementations and their control sockets.

Plain WireGuard (netlab.wireguard) and AmneziaWG (netlab.amnezia) both
build on this module, and neither on the other's internals: wireguard
hands `amnezia=` interfaces over to netlab.amnezia, which never imports
wireguard back.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Optional

from .lab import AMNEZIA_SOCKET_DIR, WIREGUARD_SOCKET_DIR, Lab, Node, wait_for

__all__ = ["AMNEZIA_SOCKET_DIR", "WIREGUARD_SOCKET_DIR", "genkey", "keypair",
           "kernel_wireguard_available", "pubkey", "spawn_userspace"]


def genkey() -> tuple:
    """A fresh (private, public) key pair, base64 as wireguard-tools prints them."""
    private = subprocess.run(["wg", "genkey"], capture_output=True, text=True, check=True).stdout.strip()
    return private, pubkey(private)


def pubkey(private: str) -> str:
    return subprocess.run(["wg", "pubkey"], input=private, capture_output=True,
                          text=True, check=True).stdout.strip()


def keypair(private: Optional[str] = None) -> tuple:
    """(private, public): `private`'s pair, or a fresh one."""
    return genkey() if private is None else (private, pubkey(private))


@functools.lru_cache(maxsize=None)
def kernel_wireguard_available() -> bool:
    """True when this kernel can create `wireguard` links (probed in a scratch netns)."""
    if os.environ.get("NETLAB_WIREGUARD") == "userspace":
        return False
    with Lab() as lab:
        node = lab.add_node("probe")
        try:
            node.ipr.link("add", ifname="wgprobe", kind="wireguard")
        except Exception:
            return False
        return True


def spawn_userspace(node: Node, binary: str, name: str, socket_dir: Path) -> subprocess.Popen:
    """Start a userspace implementation (wireguard-go, amneziawg-go) for `name`
    in `node` and wait for its control socket and link."""
    # -f keeps it in the foreground so the lab can stop it by PID.
    process = node.popen([binary, "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sock = socket_dir / f"{name}.sock"

    def ready():
        if process.poll() is not None:
            raise RuntimeError(f"{binary} {name} exited {process.returncode}: "
                               f"{process.stderr.read().decode(errors='replace')}")
        return sock.exists() and node.ipr.link_lookup(ifname=name)

    wait_for(ready, timeout=10, what=f"{binary} {name} to come up")
    return process
