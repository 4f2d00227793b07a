"""netlab: namespaced network topologies for testing WireGuard relays.

Nodes are network namespaces, links are veth pairs, NAT routers are
nftables rulesets with named behaviours, WireGuard runs for real (kernel or
wireguard-go).  Nothing here imports wgmux: it is a library of its own.
"""

from .lab import CommandError, Lab, Node, leftovers, reap, stop_process, wait_for

__all__ = ["CommandError", "Lab", "Node", "leftovers", "reap", "stop_process", "wait_for"]
