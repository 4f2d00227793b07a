"""python -m netlab up|down|ls|reap — the standard topology by hand.

`up` builds the standard topology (hub + NATed sites with WireGuard) and
keeps it until Ctrl-C or `python -m netlab down`; `ls` lists live labs;
`reap` removes leftovers of crashed runs.
"""

import argparse
import os
import signal
import sys

from .lab import (Lab, _pid_alive, leftovers, owner_pid, reap, registrations,
                  wait_for_signal)


def cmd_ls(_args) -> int:
    if not registrations():
        print("no labs")
        return 0
    for f in registrations():
        pid = owner_pid(f)
        state = "running" if _pid_alive(pid) else "dead (reap it)"
        nss = [l.split(" ", 1)[1] for l in leftovers(f.name) if l.startswith("netns ")]
        print(f"{f.name}  pid {pid} {state}  {' '.join(nss)}")
    return 0


def cmd_up(args) -> int:
    from .topology import NatKind, standard, two_providers, two_uplinks

    kinds = [NatKind[k.upper()] for k in args.nat]
    if args.two_uplinks and args.two_providers:
        print("netlab: --two-uplinks or --two-providers, not both", file=sys.stderr)
        return 2
    two = "--two-uplinks" if args.two_uplinks else "--two-providers" if args.two_providers else ""
    if two and (len(kinds) != 2 or args.hosts != 1):
        print(f"netlab: {two} has two sites (one --nat each) of one host", file=sys.stderr)
        return 2
    if args.families and not args.two_uplinks:
        print("netlab: --families is --two-uplinks' (a family per uplink)", file=sys.stderr)
        return 2
    with Lab() as lab:
        if args.two_uplinks:
            topo = two_uplinks(lab, kinds, wireguard=True,
                               families=args.families or ("v4", "v4"))
        elif args.two_providers:
            topo = two_providers(lab, kinds, wireguard=True)
        else:
            topo = standard(lab, kinds, hosts_per_site=args.hosts, wireguard=True)
        print(topo.describe())
        print(f"\nlab {lab.prefix} is up. Enter a node:  nsenter --net=/var/run/netns/{lab.prefix}-hub bash")
        print("Ctrl-C here (or `python -m netlab down`) tears it down.")
        sys.stdout.flush()
        try:
            wait_for_signal()
        except KeyboardInterrupt:
            print("tearing down")
    return 0


def cmd_down(args) -> int:
    stopped = 0
    for f in registrations():
        pid = owner_pid(f)
        if pid != os.getpid() and _pid_alive(pid) and (args.prefix in (None, f.name)):
            os.kill(pid, signal.SIGTERM)  # its Lab unwinds and cleans up
            stopped += 1
    removed = reap(all_labs=False)
    print(f"signalled {stopped} lab(s); reaped {len(removed)} dead: {' '.join(removed) or '-'}")
    return 0


def cmd_reap(_args) -> int:
    removed = reap()
    print(f"reaped {len(removed)}: {' '.join(removed) or '-'}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netlab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build the standard topology and keep it until Ctrl-C")
    up.add_argument("--nat", nargs="+", default=["port_restricted", "port_restricted"],
                    help="NAT kind per site: full_cone address_restricted port_restricted symmetric")
    up.add_argument("--hosts", type=int, default=1, help="hosts behind each site's NAT")
    up.add_argument("--two-uplinks", action="store_true",
                    help="a hub with two uplinks, eth0 and eth1, each on an internet of its own "
                         "with one site behind it (serve it with Interface = [\"eth0\", "
                         "\"eth1\"])")
    up.add_argument("--two-providers", action="store_true",
                    help="a hub multi-homed to two providers (eth0 198.18.1.254 via pA, eth1 "
                         "198.18.2.254 via pB, source policy routing), both sites on one "
                         "internet (serve it with Interface = [\"eth0\", \"eth1\"])")
    up.add_argument("--families", nargs=2, choices=("v4", "v6"), metavar="FAMILY",
                    help="with --two-uplinks: v4 or v6 for each uplink and its site, e.g. "
                         "--families v4 v6 (IPv4 on eth0, IPv6 on eth1; default v4 v4)")
    up.set_defaults(fn=cmd_up)
    down = sub.add_parser("down", help="stop running labs (all, or --prefix P) and reap dead ones")
    down.add_argument("--prefix")
    down.set_defaults(fn=cmd_down)
    sub.add_parser("ls", help="list labs").set_defaults(fn=cmd_ls)
    sub.add_parser("reap", help="remove leftovers of crashed runs").set_defaults(fn=cmd_reap)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("netlab: needs root", file=sys.stderr)
        return 1
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
