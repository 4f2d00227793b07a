"""netlab: namespaced network topologies for testing WireGuard relays.

Nodes are network namespaces, links are veth pairs, NAT routers are
nftables rulesets with named behaviours, WireGuard runs for real (kernel or
wireguard-go), AmneziaWG through a wire adapter when no implementation is
installed.  netlab is a library of its own: all it takes from wgmux are the
protocol definitions, the project's single copy of each -- `wgmux.wire` (the
WireGuard / AmneziaWG message layout), `wgmux.mac1` and `wgmux.packet`
(building and parsing IP/UDP packets) -- modules that import nothing else
from wgmux.
"""

from .lab import CommandError, Lab, Node, leftovers, reap, stop_process, wait_for

__all__ = ["CommandError", "Lab", "Node", "leftovers", "reap", "stop_process", "wait_for"]
