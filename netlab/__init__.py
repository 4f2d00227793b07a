"""netlab: namespaced network topologies for testing WireGuard relays.

Nodes are network namespaces, links are veth pairs, NAT routers are
nftables rulesets with named behaviours, WireGuard runs for real (kernel or
wireguard-go), AmneziaWG through a wire adapter when no implementation is
installed.  netlab is a library of its own: the one thing it takes from
wgmux is `wgmux.wire`, the project's single definition of the WireGuard /
AmneziaWG message layout (a leaf module with no other wgmux imports).
"""

from .lab import CommandError, Lab, Node, leftovers, reap, stop_process, wait_for

__all__ = ["CommandError", "Lab", "Node", "leftovers", "reap", "stop_process", "wait_for"]
