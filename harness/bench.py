"""Datapath micro-benchmark: `python -m harness.bench`.

Runs the golden table's rows marked `bench` (harness.golden) through
BPF_PROG_TEST_RUN with a large repeat count and prints the cost per packet.

Test-run repeats a program on the same packet, which after the first run
holds the program's own output.  The benchmark build therefore adds
`wgmux_bench`, which first restores the frame's first 64 bytes (every byte
the datapath writes) and then runs the datapath, and `wgmux_bench_base`,
which only restores; the datapath's cost (its walk) is the difference.
The same pair is built for XDP (`wgmux_bench_xdp`, `wgmux_bench_xdp_base`,
docs/spec.md §4a), and every row runs under both, side by side: TC's
verdict and cost, then what XDP does with the same packet on the same
state (XDP_TX: it finishes it; pass: TC decides it next, on top) and its
cost.  The state of each row is set up, primed and checked exactly as the
unit tests do (test_golden, test_golden_xdp), before each program's runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import List, Optional

from harness import golden as g
from harness.testrun import XDP_PASS, XDP_TX, set_bench_header

TC_VERDICTS = {0: "pass", 2: "drop", 7: "redirect"}
XDP_VERDICTS = {XDP_PASS: "pass", XDP_TX: "XDP_TX"}


def _check(case: g.Case, got_retval: int, got: bytes) -> Optional[str]:
    if got_retval != case.verdict:
        return f"verdict {got_retval}, want {case.verdict}"
    want = case.packet if case.output is g.SAME else case.output
    if want is not None and got != want:
        return "output frame differs from the golden one"
    return None


def _check_xdp(case: g.Case, got_retval: int, got: bytes) -> Optional[str]:
    """What XDP must do with the row (test_golden_xdp): finish it with TC's
    output (XDP_TX), or pass it untouched."""
    if g.xdp_finishes(case):
        if got_retval != XDP_TX:
            return f"XDP verdict {got_retval}, must finish it (XDP_TX)"
        return _check(case, case.verdict, got)
    if got_retval != XDP_PASS:
        return f"XDP verdict {got_retval}, must pass it"
    return None if got == case.packet else "XDP changed a frame it passes"


def _measure(net, fds, case, rounds, repeat, xdp, check):
    """Median ns/packet of (run, base) over `rounds`, and the first problem."""
    run_fd, base_fd = fds
    kw = {} if xdp else {"gso_size": case.gso_size}
    runs, bases, problem = [], [], None
    for _ in range(rounds):
        r = net.run(run_fd, case.packet, dev=case.dev, repeat=repeat, xdp=xdp, **kw)
        problem = problem or check(case, r.retval, r.data)
        runs.append(r.duration_ns)
        bases.append(net.run(base_fd, case.packet, dev=case.dev, repeat=repeat, xdp=xdp,
                             **kw).duration_ns)
    return statistics.median(runs), statistics.median(bases), problem


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=1_000_000, help="runs per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="measurements per row (median shown)")
    ap.add_argument("-k", dest="only", default="", help="only rows whose name contains this")
    ap.add_argument("--all", action="store_true",
                    help="every row of the table, not just those marked bench")
    ap.add_argument("--e2e", action="store_true",
                    help="instead: end to end on netlab, wgmux (forwarding on/off) against "
                         "a classic decrypting hub (harness.bench_e2e)")
    ap.add_argument("--size-mb", type=int, default=10, help="--e2e: TCP transfer size")
    ap.add_argument("--modes", action="store_true",
                    help="instead: TC, XDP (when this checkout has it) and plain IP forwarding "
                         "side by side on a single-interface hub: delivered pps open loop, "
                         "hub CPU per packet at a fixed rate (harness.bench_modes)")
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="--modes: open-loop seconds per packet size")
    ap.add_argument("--cpu-seconds", type=float, default=5.0,
                    help="--modes: fixed-rate seconds per packet size")
    ap.add_argument("--rate", type=float, default=100_000,
                    help="--modes: the fixed rate, packets/s")
    ap.add_argument("--coalesce-us", type=int, default=200,
                    help="--modes: NAPI's poll timer on the hub's link while packets flow "
                         "(0: woken per packet)")
    ap.add_argument("--sizes", default="128,1400",
                    help="--modes: IP packet sizes, comma separated")
    ap.add_argument("--scale", action="store_true",
                    help="instead: the session table at 1k..1M sessions (datapath ns/packet "
                         "hot and cold, collection, show --summary/--port/--json, metrics, "
                         "map memory, RSS) and 10..10k responders (harness.bench_scale)")
    ap.add_argument("--scale-sizes", default="1000,10000,100000,1000000",
                    help="--scale: table sizes (sessions), comma separated")
    ap.add_argument("--plot", metavar="PNG", help="--scale: draw the curves there (matplotlib)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("harness.bench: needs root (eBPF, network namespaces)", file=sys.stderr)
        return 2
    if args.e2e:
        from harness import bench_e2e
        return bench_e2e.main(size_mb=args.size_mb, rounds=args.rounds, only=args.only)
    if args.scale:
        from harness import bench_scale
        return bench_scale.main(sizes=[int(x) for x in args.scale_sizes.split(",") if x],
                                plot_path=args.plot)
    if args.modes:
        from harness import bench_modes
        return bench_modes.main(seconds=args.seconds, cpu_seconds=args.cpu_seconds,
                                rate=args.rate, only=args.only, coalesce_us=args.coalesce_us,
                                sizes=[int(x) for x in args.sizes.split(",") if x])

    from wgmux.datapath import Datapath

    rows = [c for c in g.cases() if (c.bench or args.all) and args.only in c.name]
    if not rows:
        print("no rows selected", file=sys.stderr)
        return 2
    print(f"BPF_PROG_TEST_RUN, repeat={args.repeat}, median of {args.rounds}; ns/packet: "
          f"run = restore+datapath, base = restore only, walk = run - base.\n"
          f"TC: wgmux_ingress alone (Datapath = \"tc\"). XDP: wgmux_xdp on the same packet and "
          f"state; XDP_TX finishes it there, pass hands it to TC, whose run it pays on top: "
          f"total = XDP's run (+ TC's, passed), /TC = total over TC's run.")
    print(f"{'':44} {'-' * 12} TC {'-' * 13}  {'-' * 22} XDP {'-' * 22}")
    print(f"{'row':44} {'verdict':>8} {'run':>5} {'base':>5} {'walk':>5}  "
          f"{'does':>8} {'run':>5} {'base':>5} {'walk':>5} {'total':>6} {'/TC':>5}")
    failed = 0
    with g.GoldenNet() as net, Datapath(g.HUB_PORT, bench=True) as dp:
        env = g.Env(dp, net)
        tc_fds = (dp.load_program("wgmux_bench"), dp.load_program("wgmux_bench_base"))
        xdp_fds = (dp.program.load_func("wgmux_bench_xdp", xdp=True),
                   dp.program.load_func("wgmux_bench_xdp_base", xdp=True))
        for case in rows:
            out = g.run_case(env, case)    # state + one checked packet
            problem = _check(case, out.result.retval, out.result.data)
            set_bench_header(dp, case.packet)
            run, base, p = _measure(net, tc_fds, case, args.rounds, args.repeat, False, _check)
            problem = problem or p
            # the same state again, XDP's one checked packet, then its runs
            x = g.run_case_xdp(env, case).xdp
            problem = problem or _check_xdp(case, x.result.retval, x.result.data)
            xrun, xbase, p = _measure(net, xdp_fds, case, args.rounds, args.repeat, True,
                                      _check_xdp)
            problem = problem or p
            verdict = TC_VERDICTS.get(case.verdict, str(case.verdict))
            finished = g.xdp_finishes(case)
            total = xrun if finished else xrun + run
            print(f"{case.name:44} {verdict:>8} {run:5.0f} {base:5.0f} {run - base:5.0f}  "
                  f"{'XDP_TX' if finished else 'pass':>8} {xrun:5.0f} {xbase:5.0f} "
                  f"{xrun - xbase:5.0f} {total:6.0f} {total / run:5.2f}"
                  + (f"   WRONG: {problem}" if problem else ""))
            failed += problem is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
