"""AmneziaWG on netlab nodes: a wire adapter around real WireGuard, or the real thing.

No AmneziaWG implementation installs from the package registries this project
reaches (Debian has none, PyPI only config generators), so netlab emulates
AmneziaWG *on the wire* with an adapter process beside an unmodified
WireGuard (wireguard-go or the kernel module).  When a real implementation is
present -- `amneziawg-go` and `awg` on PATH, or the `amneziawg` kernel module
with `awg` -- `create()` uses it instead, and `implementation()` says which
one runs so tests can name it in their ids ("adapter", "amneziawg-go",
"amneziawg-kernel"; NETLAB_AMNEZIA=adapter forces the adapter).

Its modules, each importing only those listed before it:
- params: the AmneziaWG values (`AwgParams`) and the I-packet language;
- codec: WireGuard <-> AmneziaWG datagrams, junk and I-packets (no I/O);
- adapter: the process between WireGuard's TUN and the peers
  (`python -m netlab.amnezia`), and netlab's handle on it;
- device: an AmneziaWG interface on a node, real or adapted.

Message layout, mac1 and IP packets come from the product's one definition
of each (wgmux.wire, wgmux.mac1, wgmux.packet), never restated here.
"""

from .device import create, implementation
from .params import AwgParams

__all__ = ["AwgParams", "create", "implementation"]
