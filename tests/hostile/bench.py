#!/usr/bin/env python3
"""`make hostile`: each attack of tests/hostile (issue 10) run for a fixed
time on a real `wgmux serve`, and a table of what it achieved.

The scenarios are the tests' own (scenarios.py), the hub's config the
tests' (conftest.py).  Each attack gets a fresh lab.  Rows:

- forged transport (live index, counter 0 / random / replayed, spoofed
  victim source), peer port and HubPort: how long the stolen direction of
  the pair stopped for one forged packet (watched for --window s; a
  receiving peer that lost its session answers after WireGuard's 10 s
  passive keepalive), and the bytes it delivered to the victim per byte
  sent;
- forged transports on each uplink of a two-uplink hub (Interface =
  ["eth0", "eth1"], docs/spec.md §4c), from an attacker on that uplink:
  what moved, what reached the attacker, what was counted as dropped on
  the interface they arrived on;
- a flood of valid-mac1 initiations to a peer port of a hub multi-homed
  to two providers: what the slow path forwarded against the budget, and
  the copies of each (one per hub address until a handshake tells the
  responder's, docs/security.md §3.5) at the responder's NAT, past it,
  and anywhere else, before and after the pair's handshake;
- martian sources and packets not addressed to the hub: forged packets
  the hub acted on (reflected, sessions created, sessions moved);
- a spoofed half-open entry: bytes the attacker got delivered to the
  victim per byte sent, and what became of the entry;
- the half-open space filled by a slower flood of fresh indices, then the
  flood proper: a fresh handshake's time and the established pair;
- a --flood-seconds flood from 1,000 spoofed sources: the established
  pair's loss and p99 RTT, a fresh wireguard-go handshake's time, the
  initiations the responder received per second against the budget, the
  bytes the hub sent to the spoofed sources per byte of flood, and the
  daemon's RSS: idle, its peak through the flood and the `wgmux show` of
  the table after it (at most 1.25x idle), and after.

Each attack runs once per datapath (--datapath, default both: "tc", TC
ingress alone, and "xdp", XDP in the hub's driver in front of it,
docs/spec.md §4a), each on a fresh lab; the table puts the two results of
each row together.  Every run ends with scenarios.datapath_problems (in
"xdp": wgmux_xdp attached, sending the pair's packets back itself) and
says what XDP_TX sent in a row of its own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from conftest import (BUDGET, FILL_SECONDS, FLOOD_RATE, FLOOD_SECONDS_BENCH,  # noqa: E402
                      FLOOD_SOURCES, HANDSHAKE_WAIT, HANDSHAKE_WITHIN, P99_TARGET, hub_config)
from netlab import Lab  # noqa: E402
import scenarios  # noqa: E402

ATTACKS = ("forged", "uplinks", "fan-out", "martians", "not-addressed", "half-open",
           "half-open-full", "flood")


def say(msg: str):
    print(f"==> {msg}", file=sys.stderr, flush=True)


def forged(rows, extra, args):
    with Lab() as lab:
        a = scenarios.arena(lab, extra, datapath=args.datapath)
        for port in (scenarios.PORT, a.hub_port):
            for f in scenarios.forged_transports(a, port, window=args.window):
                say(f.describe())
                rows.append((f"forged transport, {f.where}, {f.kind}",
                             f"outage {f.outage:.1f} s; victim got {f.victim.bytes} B "
                             f"for {f.sent_bytes} B sent ({f.victim.bytes / f.sent_bytes:.0f}x)"))
        datapath_row(rows, a, "forged transports")


def uplinks(rows, extra, args):
    with Lab() as lab:
        for r in scenarios.uplink_forgeries(lab, extra, datapath=args.datapath):
            say(r.describe())
            rows.append((f"forged transport on uplink {r.interface}, {r.where}",
                         f"{r.dropped} of {r.sent} counted as dropped on {r.interface}; "
                         + ("MOVED the session" if r.moved else "nothing moved")
                         + f", {r.roams} roams, {r.to_attacker} packets to the attacker"
                         + ("" if r.xdp_ran is not False else "; WRONG: XDP did not run")))


def fan_out(rows, extra, args):
    for paired in (False, True):
        with Lab() as lab:
            r = scenarios.fan_out_flood(lab, extra, datapath=args.datapath, paired=paired)
            say(r.describe())
            allowed = BUDGET.allows(r.seconds)
            per = " + ".join(str(n) for n in r.at_responder.values())
            rows.append(("hub on two providers, valid-mac1 initiation flood to a peer port, "
                         + ("after the pair's handshake" if paired else "no handshake yet")
                         + ": copies to the responder",
                         f"{r.sent} sent, {r.forwarded} forwarded (budget {allowed:.0f} in "
                         f"{r.seconds:.0f} s); at the responder's NAT {per} from the "
                         f"{r.addresses} addresses "
                         f"({r.copies / r.forwarded if r.forwarded else 0:.1f} per forwarded), "
                         f"{r.into_responder} let in; {r.elsewhere} elsewhere; BCP 38 drops "
                         f"{sum(r.bcp38.values())}"))


def martians(rows, extra, args):
    with Lab() as lab:
        a = scenarios.arena(lab, extra, datapath=args.datapath)
        shots, v = scenarios.martian_volley(a)
        rows.append(volley_row("martian sources (5 x initiation + 2 transports)", shots, v))
        datapath_row(rows, a, "martian sources")


def not_addressed(rows, extra, args):
    with Lab() as lab:
        a = scenarios.arena(lab, extra, datapath=args.datapath)
        shots, v, behind = scenarios.not_addressed_volley(a)
        label, text = volley_row("not addressed to the hub (initiation + 2 transports)", shots, v)
        rows.append((label, f"{text}; routed on to the node behind: {behind.packets}"))
        datapath_row(rows, a, "not addressed to the hub")


def volley_row(label, shots, v):
    forged = [s for s in shots if not s.control]
    hit = sum(1 for s in forged if v.reflected[s.name].packets)
    for line in v.leaks(shots):
        say(line)
    return (label, f"{hit} of {len(forged)} reflected, {len(v.sessions_created)} sessions "
                   f"created, {v.roams} roams, {len(v.moved)} endpoints moved")


def half_open(rows, extra, args):
    with Lab() as lab:
        a = scenarios.arena(lab, extra, datapath=args.datapath)
        r = scenarios.half_open_abuse(a)
        for line in r.leaks():
            say(line)
        for kind, sent in r.sent.items():
            got = r.victim[kind].bytes
            rows.append((f"spoofed half-open entry, attacker's {kind}",
                         f"victim got {got} B for {sent} B sent ({got / sent:.2f} B/B)"))
        after = r.after or {}
        rows.append(("spoofed half-open entry, afterwards",
                     f"{after.get('state', 'gone')}, last_seen {r.extended:.2f} s past creation"))
        datapath_row(rows, a, "spoofed half-open entry")


def half_open_full(rows, extra, args):
    with Lab() as lab:
        a = scenarios.arena(lab, extra, fresh=True, datapath=args.datapath)
        run = scenarios.flood(a, rate=FLOOD_RATE, seconds=HANDSHAKE_WAIT,
                              sources=FLOOD_SOURCES, handshake_timeout=HANDSHAKE_WAIT,
                              fill=FILL_SECONDS)
        say(run.describe())
        label = "half-open space filled, then flood"
        rows += [
            (f"{label}: fill", f"{run.fill}; the responder got {run.filled.packets} "
             f"initiations, {run.half_open_after} half-open entries"),
            (f"{label}: fresh handshake", f"{run.handshake_text()} (target "
             f"{HANDSHAKE_WITHIN:.0f} s); {run.timeline_text()}"),
            (f"{label}: established pair", probe_text(run.pair)),
            (f"{label}: daemon RSS", run.rss_text()),
        ]
        datapath_row(rows, a, "half-open space filled, then flood")


def flood(rows, extra, args):
    with Lab() as lab:
        a = scenarios.arena(lab, extra, fresh=True, datapath=args.datapath)
        run = scenarios.flood(a, rate=FLOOD_RATE, seconds=args.flood_seconds,
                              sources=FLOOD_SOURCES, handshake_timeout=args.flood_seconds)
        say(run.describe())
        label = f"{args.flood_seconds:.0f} s flood, {FLOOD_SOURCES} sources"
        rows += [
            (f"{label}: reached", str(run.flood)),
            (f"{label}: established pair", probe_text(run.pair)),
            (f"{label}: fresh handshake", f"{run.handshake_text()} (target "
             f"{HANDSHAKE_WITHIN:.0f} s); {run.timeline_text()}"),
            (f"{label}: initiations at the responder",
             f"{run.responder_rate:.0f}/s, peak {run.at_responder_peak:.0f}/s "
             f"(budget {BUDGET.rate:g}/s, burst {BUDGET.burst})"),
            (f"{label}: to the spoofed sources", f"{run.victim.bytes} B, "
             f"{run.amplification:.4f} B per B of flood"),
            (f"{label}: half-open entries", f"{run.half_open_before} -> {run.half_open_after}"),
            (f"{label}: daemon RSS", run.rss_text()),
        ]
        datapath_row(rows, a, label)


def datapath_row(rows, a, name):
    """The arena's datapath as it ran: XDP_TX's packets, and its problems."""
    problems = scenarios.datapath_problems(a)
    for line in problems:
        say(f"{name} [{a.datapath}]: {line}")
    text = (f"XDP_TX sent back {scenarios.xdp_sent_back(a)} packets in the driver"
            if a.datapath == "xdp" else "TC ingress alone, no XDP program ran")
    rows.append((f"{name}: datapath", text + ("; WRONG: " + "; ".join(problems) if problems
                                             else "")))


def probe_text(p):
    verdict = ("" if p.p99 is None
               else f" ({'within' if p.p99 < P99_TARGET else 'OVER'} the "
                    f"{P99_TARGET * 1000:.0f} ms target)")
    return (f"loss {p.loss:.2%} ({p.lost}/{p.sent}), p50 {ms(p.p50)}, p99 {ms(p.p99)}"
            f"{verdict}, max {ms(p.rtt(100))}")


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="tests/hostile/bench.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood-seconds", type=float, default=FLOOD_SECONDS_BENCH)
    ap.add_argument("--window", type=float, default=12.0,
                    help="how long each forged packet is watched (default 12 s)")
    ap.add_argument("--datapath", default=",".join(scenarios.DATAPATHS),
                    help="the hub's Datapath settings to run each attack in, comma separated "
                         f"(default {','.join(scenarios.DATAPATHS)})")
    ap.add_argument("attacks", nargs="*", choices=(*ATTACKS, []), metavar="ATTACK",
                    help=f"some of {', '.join(ATTACKS)} (default: all)")
    args = ap.parse_args(argv)
    modes = [m for m in args.datapath.split(",") if m]
    if not modes or set(modes) - set(scenarios.DATAPATHS):
        ap.error(f"--datapath: some of {', '.join(scenarios.DATAPATHS)}")
    if os.geteuid() != 0:
        print("hostile: needs root (network namespaces, eBPF)", file=sys.stderr)
        return 1
    extra = hub_config()
    say("hub config: " + (extra.replace("\n", ", ") if extra else
                          f"no initiation budget keys (target {BUDGET.rate:g}/s, burst "
                          f"{BUDGET.burst})"))
    runs = {"forged": forged, "uplinks": uplinks, "fan-out": fan_out, "martians": martians,
            "not-addressed": not_addressed,
            "half-open": half_open, "half-open-full": half_open_full, "flood": flood}
    results = {}                    # label: {mode: text}, in the order first seen
    t0 = time.monotonic()
    for name in args.attacks or ATTACKS:
        for mode in modes:
            say(f"{name} (Datapath = \"{mode}\")")
            rows = []
            runs[name](rows, extra, argparse.Namespace(**{**vars(args), "datapath": mode}))
            for label, text in rows:
                results.setdefault(label, {})[mode] = text
    width = max(len(label) for label in results)
    mw = max(len(m) for m in ("mode", *modes))
    print(f"\n{'attack':<{width}}  {'mode':<{mw}}  result")
    print(f"{'-' * width}  {'-' * mw}  {'-' * 40}")
    for label, texts in results.items():
        for i, mode in enumerate(modes):
            print(f"{label if i == 0 else '':<{width}}  {mode:<{mw}}  {texts.get(mode, '-')}")
    print(f"\n({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
