"""End-to-end benchmark on netlab: `python -m harness.bench --e2e`.

Two wireguard-go peers behind port-restricted NATs exchange traffic through
the hub three ways:

- `wgmux`: reflected by the datapath, forwarding on the hub's interface
  (bpf_fib_lookup, cached next hop: the fast path);
- `wgmux-nofwd`: the same with forwarding off (every packet through
  bpf_redirect_neigh);
- `classic`: the hub-and-spoke VPN wgmux replaces (the hub's wireguard-go
  decrypts and re-encrypts every packet);
- `wgmux-v6`, `wgmux-v4-v6`, `wgmux-v6-v4`: as `wgmux`, both peers on
  IPv6-only sites (behind stateful firewalls), or the initiator's and the
  responder's sites of one family each: every packet changes family at
  the hub (docs/spec.md §4b).

For each: a TCP transfer with SHA-256 at both ends (throughput) and a ping
series through the tunnel (round-trip time), medians of `rounds`.  The
peers' wireguard-go bounds both on a small machine; the comparison is what
the hub's share costs.
"""

from __future__ import annotations

import re
import statistics
from typing import Dict, List

from netlab import Lab, wait_for
from netlab.nat import NatKind
from netlab.topology import standard
from netlab.traffic import ping, tcp_transfer

from harness.hub import WgmuxHub

PORT = 51821
MODES = ("wgmux", "wgmux-nofwd", "classic", "wgmux-v6", "wgmux-v4-v6", "wgmux-v6-v4")
# the sites' families (initiator's, responder's) per mode (netlab.topology.standard)
FAMILIES = {"wgmux-v6": "v6", "wgmux-v4-v6": ("v4", "v6"), "wgmux-v6-v4": ("v6", "v4")}


def _rtt_ms(node, ip: str, count: int) -> List[float]:
    out = node.run(["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "1", ip],
                   check=False, timeout=count + 10).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def measure(mode: str, size: int, rounds: int, pings: int) -> Dict[str, float]:
    kinds = [NatKind.PORT_RESTRICTED, NatKind.PORT_RESTRICTED]
    with Lab() as lab:
        topo = standard(lab, kinds, wireguard=True, classic=(mode == "classic"),
                        families=FAMILIES.get(mode, "v4"))
        initiator, responder = topo.host(1), topo.host(2)
        for host in (initiator, responder):
            topo.hub_wg.wait_handshake(host.wg.public_key)
        if mode != "classic":
            hub = WgmuxHub(topo, forwarding=(mode == "wgmux"))
            hub.pair(initiator, responder, PORT)
            hub.start()
        wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=30,
                 what=f"the first ping ({mode})")
        secs = []
        for n in range(rounds):
            t = tcp_transfer(initiator.node, responder.node, responder.overlay_ip, size,
                             port=5400 + n, seed=f"bench{n}")
            if not t.ok:
                raise RuntimeError(f"{mode}: transfer {n} corrupted: {t}")
            secs.append(t.seconds)
        rtts = _rtt_ms(initiator.node, responder.overlay_ip, pings)
        if not rtts:
            raise RuntimeError(f"{mode}: no ping answered")
    s = statistics.median(secs)
    p90 = statistics.quantiles(rtts, n=10)[-1] if len(rtts) > 1 else rtts[0]
    return {"seconds": s, "mbit": size * 8 / s / 1e6, "rtt_ms": statistics.median(rtts),
            "rtt_p90_ms": p90}


def main(size_mb: int = 10, rounds: int = 5, pings: int = 50, only: str = "") -> int:
    size = size_mb << 20
    print(f"end to end on netlab: {size_mb} MB TCP (median of {rounds}), "
          f"{pings} pings through the tunnel")
    print(f"{'mode':14} {'seconds':>8} {'Mbit/s':>8} {'rtt ms':>7} {'p90 ms':>7}")
    for mode in MODES:
        if only and only not in mode:
            continue
        r = measure(mode, size, rounds, pings)
        print(f"{mode:14} {r['seconds']:8.3f} {r['mbit']:8.0f} {r['rtt_ms']:7.3f} "
              f"{r['rtt_p90_ms']:7.3f}", flush=True)
    return 0
