"""wgmux command line: `serve` and `show`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from . import control
from .config import DEFAULT_PATH, ConfigError, load

DESCRIPTION = """\
wgmux reflects WireGuard (and AmneziaWG) between two NATed peers through a
hub, with an eBPF program on the hub's interface; the hub never decrypts.
Each responder gets a dedicated UDP port on the hub; an initiator sets the
responder's Endpoint to hub:port.
"""


def _add_config_arg(p):
    p.add_argument("-c", "--config", default=DEFAULT_PATH, metavar="PATH",
                   help=f"config file (default {DEFAULT_PATH})")


class Fail(Exception):
    """Ends a command with one line on stderr and an exit code.

    Exit codes: 1 cannot serve, 2 bad config, 3 no daemon running.
    """

    def __init__(self, code: int, message):
        super().__init__(str(message))
        self.code = code


def load_config(args):
    try:
        return load(args.config)
    except (ConfigError, OSError) as e:
        raise Fail(2, e) from None


def cmd_serve(args) -> int:
    from .daemon import Daemon, ServeError

    daemon = Daemon(load_config(args))
    try:
        daemon.start()
    except (ServeError, control.AlreadyServing) as e:
        raise Fail(1, e) from None
    daemon.run()
    return 0


def cmd_show(args) -> int:
    config = load_config(args)
    try:
        status = control.request(config.interface)
    except control.NotRunning as e:
        raise Fail(3, e) from None
    if args.json:
        json.dump(status, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        sys.stdout.write(format_status(status))
    return 0


def _ago(now: float, then: float) -> str:
    if not then:
        return "never"
    s = int(now - then)
    parts = []
    for unit, n in (("hour", 3600), ("minute", 60), ("second", 1)):
        if s >= n or (unit == "second" and not parts):
            q, s = divmod(s, n)
            parts.append(f"{q} {unit}{'s' if q != 1 else ''}")
    return ", ".join(parts) + " ago"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def format_status(st: dict) -> str:
    now = st["now"]
    out = [f"hub: {st['interface']} (device {st['device']}, hub port {st['hub_port']})",
           f"  daemon: pid {st['pid']}, up {_ago(now, st['started'])[:-4]}",
           ""]
    for p in st["peers"]:
        out.append(f"responder port {p['port']}: {p['public_key']}")
        out.append(f"  endpoint: {p['endpoint'] or '(none: initiations dropped)'}")
        if not p["known_to_device"]:
            out.append(f"  warning: not a peer of {st['device']}")
        out.append(f"  latest hub handshake: {_ago(now, p['latest_handshake'])}")
        out.append("")
    sessions = st["sessions"]
    out.append(f"sessions: {len(sessions)}")
    for s in sessions:
        out.append(f"  port {s['port']}: {s['initiator']} <-> {s['responder']}  ({s['state']})")
        out.append(f"    indices: initiator {s['initiator_index']:#010x}, responder "
                   + (f"{s['responder_index']:#010x}" if s.get("responder_index") is not None else "-"))
        out.append(f"    age {_ago(now, s['created'])[:-4]}, last packet {_ago(now, s['last_seen'])}")
        out.append(f"    initiator->responder: {s['i2r_packets']} packets, {_bytes(s['i2r_bytes'])}; "
                   f"responder->initiator: {s['r2i_packets']} packets, {_bytes(s['r2i_bytes'])}")
    out.append("")
    out.append("counters:")
    for name, value in sorted(st["counters"].items()):
        if value:
            out.append(f"  {name}: {value}")
    return "\n".join(out) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wgmux", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    serve = sub.add_parser("serve", help="attach the reflector and run until SIGTERM/SIGINT",
                           description="Validate the config, compile and attach the eBPF "
                           "program to Interface, keep responder endpoints current from "
                           "Device, and detach cleanly on SIGTERM/SIGINT.")
    _add_config_arg(serve)
    serve.set_defaults(fn=cmd_serve)

    show = sub.add_parser("show", help="responders, live sessions and counters of the running daemon",
                          description="Ask the running `wgmux serve` (same network namespace, "
                          "same Interface) for its responders, sessions and counters.")
    _add_config_arg(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(fn=cmd_show)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="wgmux: %(levelname)s: %(message)s" if not sys.stderr.isatty()
        else "%(asctime)s wgmux %(levelname)s: %(message)s",
        stream=sys.stderr)
    try:
        return args.fn(args)
    except Fail as e:
        print(f"wgmux: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
