"""`make demo`: wgmux end to end on a throwaway netlab topology.

Builds a hub and two sites behind NAT (each peer running real WireGuard with
a session to the hub), starts `wgmux serve` on the hub, makes the first
site's peer an initiator for the second through hub:51821, pings through
it, prints `wgmux show`, and tears everything down.  `--family v6` puts
both sites on IPv6 only (behind `--router6`: a stateful firewall, NAT66),
so the peers reach the hub at [2001:db8::fe]; `dual` makes them dual-stack
(they still use IPv6).
"""

from __future__ import annotations

import argparse
import os
import sys

from netlab import Lab, wait_for
from netlab.nat import NatKind, Router6Kind
from netlab.topology import standard
from netlab.traffic import ping

from harness.hub import WgmuxHub

RESPONDER_PORT = 51821


def step(msg: str):
    print(f"\n==> {msg}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nat", default="port_restricted",
                    choices=[k.name.lower() for k in NatKind],
                    help="NAT behaviour of both sites (default: port_restricted)")
    ap.add_argument("--family", default="v4", choices=["v4", "v6", "dual"],
                    help="address family of both sites (default: v4)")
    ap.add_argument("--router6", default="firewall", choices=[k.value for k in Router6Kind],
                    help="IPv6 router of both sites with --family v6/dual (default: firewall)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: needs root (network namespaces, eBPF): sudo make demo", file=sys.stderr)
        return 1
    kind = NatKind[args.nat.upper()]

    with Lab() as lab:
        behind = {"v4": f"{kind.name} NAT", "v6": f"an IPv6 {args.router6}",
                  "dual": f"{kind.name} NAT and an IPv6 {args.router6}"}[args.family]
        step(f"building the topology: a hub and two sites behind {behind}")
        topo = standard(lab, [kind, kind], wireguard=True, families=args.family,
                        kinds6=args.router6)
        print(topo.describe())
        initiator, responder = topo.host(1), topo.host(2)
        for host in (initiator, responder):
            topo.hub_wg.wait_handshake(host.wg.public_key)
        print("both peers have a session with the hub's own WireGuard")

        hub = WgmuxHub(topo)
        hub.pair(initiator, responder, RESPONDER_PORT)
        step(f"without wgmux: {initiator.name} pings {responder.overlay_ip} via "
             f"{topo.hub_endpoint(initiator, RESPONDER_PORT)}")
        print("reply" if ping(initiator.node, responder.overlay_ip) else
              "no reply (nothing listens on the responder's hub port)")

        step("starting wgmux serve on the hub; its config:")
        print(hub.config_text().strip())
        hub.start()
        step(f"with wgmux: {initiator.name} pings {responder.overlay_ip} through the hub")
        try:
            wait_for(lambda: ping(initiator.node, responder.overlay_ip), timeout=20,
                     what="a reply through the hub")
        except TimeoutError:
            print("FAILED: no reply through the hub\n--- wgmux log ---\n" + hub.log())
            return 1
        out = initiator.node.run(["ping", "-n", "-c", "3", "-i", "0.2", responder.overlay_ip])
        print(out.stdout.strip())

        step("wgmux show")
        print(hub.show_text())
        step("the hub's own WireGuard never saw this traffic (wg show on the hub):")
        print(topo.hub.run(["wg", "show", topo.hub_wg.name]).stdout.strip())
        step("tearing down")
        code = hub.stop()
        print(f"wgmux serve exited {code}; lab {lab.prefix} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
