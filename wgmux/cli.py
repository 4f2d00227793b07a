"""wgmux command line: `serve` and `show`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from . import control
from .config import DEFAULT_PATH, ConfigError

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
    from .config import load_bounded

    try:
        return load_bounded(args.config)
    except (ConfigError, OSError) as e:
        raise Fail(2, e) from None


def cmd_serve(args) -> int:
    from .daemon import Daemon, EarlySignals, ServeError

    early = EarlySignals()
    try:
        daemon = Daemon(load_config(args), idle_timeout=args.session_idle_timeout,
                        fresh=args.fresh, keep_attached=args.keep_attached)
    except ValueError as e:
        raise Fail(2, e) from None
    try:
        daemon.start(early)
    except (ServeError, control.AlreadyServing, control.ControlError) as e:
        raise Fail(1, e) from None
    daemon.run(early)
    return 0


def _refuse_while_serving(config, what: str):
    try:
        status = control.request(config.interface)
    except control.NotRunning:
        return
    except RuntimeError:
        status = {}
    raise Fail(1, f"wgmux serve is running on {config.interface!r} (pid "
                  f"{status.get('pid', '?')}): stop it before {what} (SIGTERM)")


def _remove_leftovers(config, keep_pins: bool, verb: str) -> int:
    from . import pinning, xdp
    from .model import DatapathError
    from .tc import remove_leftovers

    pin_dir = pinning.pin_dir_for(config.interface)
    # what the config lists, and what the last start recorded serving
    # (an interface since dropped from the list)
    recorded = (pinning.read_state(pin_dir) or {}).get("interfaces") or {} \
        if pin_dir.exists() else {}
    names = list(config.interfaces) + [i for i in recorded if i not in config.interfaces]
    removed = []
    for ifname in names:
        try:
            # XDP first: TC takes what it passed until then
            removed += xdp.remove_leftovers(ifname)
            removed += remove_leftovers(ifname, pin_dir, keep_pins=True)
        except (DatapathError, OSError) as e:
            raise Fail(1, f"cannot {verb} {ifname}: {e}") from None
    if not keep_pins and pin_dir.exists():
        pinning.purge(pin_dir)
        removed.append(f"pinned state {pin_dir}")
    for what in removed:
        print(f"removed {what}")
    if not removed:
        print(f"nothing to remove for {', '.join(names)} in this network namespace")
    return 0


def cmd_purge(args) -> int:
    config = load_config(args)
    _refuse_while_serving(config, "purging")
    return _remove_leftovers(config, keep_pins=False, verb="purge")


def cmd_detach(args) -> int:
    config = load_config(args)
    if args.unless_restarting:
        from .systemd import SystemdError, unit_job

        try:
            job = unit_job(args.unless_restarting)
        except SystemdError as e:
            job = None
            print(f"wgmux: cannot ask systemd about {args.unless_restarting} ({e}): "
                  f"detaching", file=sys.stderr)
        if job == "restart":
            print(f"{args.unless_restarting} is restarting: the datapath stays attached to "
                  f"{config.interface} for the next start to take over")
            return 0
    _refuse_while_serving(config, "detaching")
    return _remove_leftovers(config, keep_pins=True, verb="detach from")


def cmd_check(args) -> int:
    from .check import main as check_main

    return check_main(args.config)


def cmd_show(args) -> int:
    config = load_config(args)
    port = args.port
    if args.peer is not None:
        ports = [p.port for p in config.peers if p.public_key == args.peer]
        if not ports:
            raise Fail(2, f"--peer {args.peer}: not the PublicKey of any [[Peer]] in "
                          f"{config.path}")
        if port is not None and port not in ports:
            raise Fail(2, f"--peer {args.peer} is the responder of port {ports[0]}, "
                          f"not of --port {port}")
        port = ports[0]
    query = {}
    if args.summary or (args.metrics and port is None):
        query["summary"] = True
    elif port is not None:
        query["port"] = port
    try:
        status = control.request(config.interface, **query)
    except control.NotRunning as e:
        raise Fail(3, e) from None
    except RuntimeError as e:       # ControlError, or the daemon's own error
        raise Fail(1, e) from None
    if port is not None:
        status["peers"] = [p for p in status["peers"] if p["port"] == port]
        summary = status.get("sessions_summary")
        if summary is not None:
            summary["by_port"] = {k: v for k, v in summary["by_port"].items()
                                  if int(k) == port}
    if args.metrics:
        from .metrics import render

        sys.stdout.write(render(status))
    elif args.json:
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


_FAMILY = {"ipv4": "IPv4", "ipv6": "IPv6"}


def _format_summary(summary: dict, stale: int, max_sessions) -> list:
    room = f" of {max_sessions}" if max_sessions else ""
    out = [f"sessions: {summary['established']} established ({summary['confirmed']} "
           f"confirmed both ways), {summary['half_open']} half-open"
           + (f", {stale} awaiting collection" if stale else "")
           + f"; table {summary['entries']}{room} entries"]
    for port, acc in summary["by_port"].items():
        out.append(f"  port {port}: {acc['established']} established, {acc['half_open']} "
                   f"half-open; initiator->responder {acc['i2r_packets']} packets, "
                   f"{_bytes(acc['i2r_bytes'])}; responder->initiator {acc['r2i_packets']} "
                   f"packets, {_bytes(acc['r2i_bytes'])}")
    return out


def format_status(st: dict) -> str:
    now = st["now"]
    names = ", ".join(i["name"] for i in st.get("interfaces") or []) or st["interface"]
    out = [f"hub: {names} (device {st['device']}, hub port {st['hub_port']})",
           f"  daemon: pid {st['pid']}, up {_ago(now, st['started'])[:-4]}"]
    if st.get("datapath"):
        from .status import MODE_TEXT

        out.append(f"  datapath: {MODE_TEXT.get(st['datapath'], st['datapath'])} "
                   f"(Datapath = \"{st.get('datapath_setting')}\")")
    interfaces = st.get("interfaces") or []
    if len(interfaces) > 1:
        from .status import MODE_TEXT

        for i in interfaces:
            out.append(f"  interface {i['name']}: {MODE_TEXT.get(i['datapath'], i['datapath'])}"
                       + (f"; arrived and reflected {i['reflected_in']}, reflected out "
                          f"{i['reflected_out']}, dropped {i['dropped']}"
                          if "reflected_in" in i else ""))
    if st.get("pin_dir"):
        out.append(f"  state: pinned in {st['pin_dir']}"
                   + (" (carried over from the previous run)" if st.get("reused_pinned_state")
                      else ""))
    out.append("")
    for p in st["peers"]:
        out.append(f"responder port {p['port']}: {p['public_key']}")
        out.append(f"  endpoint: {p['endpoint'] or '(none: initiations dropped)'}"
                   + (f" (last known, {st['device']} has none)"
                      if p.get("endpoint_last_known") else ""))
        if not p["known_to_device"]:
            out.append(f"  warning: not a peer of {st['device']}")
        out.append(f"  latest hub handshake: {_ago(now, p['latest_handshake'])}")
        out.append("")
    stale = st.get("stale_sessions") or 0
    summary = st.get("sessions_summary")
    if summary is not None:
        out.extend(_format_summary(summary, stale, st.get("max_sessions")))
        if st.get("summary_as_of"):
            out.append(f"  (counted at the last collection, {_ago(now, st['summary_as_of'])})")
        if st.get("sessions_listed") is False:
            out.append("  (too many to list: `wgmux show --port PORT` lists one responder's)")
    sessions = st.get("sessions", [])
    if summary is None:
        out.append(f"sessions: {len(sessions)}"
                   + (f" ({stale} more expired or idle, awaiting collection)" if stale else ""))
    for s in sessions:
        families = ""
        if s.get("translated"):
            families = (f", {_FAMILY.get(s['initiator_family'], '?')} -> "
                        f"{_FAMILY.get(s['responder_family'], '?')}")
        where = ""
        if "initiator_interface" in s:
            where = (f", via {s['initiator_interface'] or '?'} <-> "
                     f"{s['responder_interface'] or '?'}")
        out.append(f"  port {s['port']}: {s['initiator']} <-> {s['responder']}  "
                   f"({s['state']}{families}{where})")
        idx = lambda v: f"{v:#010x}" if v is not None else "-"  # noqa: E731
        out.append(f"    indices: initiator {idx(s.get('initiator_index'))}, responder "
                   f"{idx(s.get('responder_index'))}")
        out.append(f"    age {_ago(now, s['created'])[:-4]}, last packet {_ago(now, s['last_seen'])}")
        out.append(f"    initiator->responder: {s['i2r_packets']} packets, {_bytes(s['i2r_bytes'])}; "
                   f"responder->initiator: {s['r2i_packets']} packets, {_bytes(s['r2i_bytes'])}")
    slow = st.get("slow_path")
    if slow:
        out.append("")
        rate = f"{slow['rate']:g}/s per source, burst {slow['burst']}" if slow["rate"] \
            else "no rate limit"
        out.append(f"handshake slow path (mac1): {rate}")
        by_port: dict = {}
        for li in slow["initiators"]:
            by_port.setdefault(li["port"], []).append(li)
        for port in sorted(by_port):
            out.append(f"  initiators learned on port {port} (the responder may start "
                       f"handshakes to them):")
            for li in by_port[port]:
                out.append(f"    {li['public_key']} at {li['endpoint']}, learned "
                           f"{_ago(now, li['learned'])}")
        for w in slow["warnings"]:
            out.append(f"  warning: {w}")
    out.append("")
    out.append("counters:")
    for name, value in sorted(st["counters"].items()):
        if value:
            out.append(f"  {name}: {value}")
    return "\n".join(out) + "\n"


def version_text() -> str:
    """`wgmux --version`: what `make build` wrote into bin/wgmux (version,
    commit), else the installed distribution's version."""
    try:
        from . import _build      # only inside bin/wgmux (scripts/build.py)
        return _build.VERSION_TEXT
    except ImportError:
        pass
    try:
        from importlib.metadata import version
        return f"wgmux {version('wgmux')} (not a `make build` file: no commit recorded)"
    except Exception:
        return "wgmux (version unknown: neither a `make build` file nor installed)"


class _Version(argparse.Action):
    """--version, looked up only when asked (importlib.metadata costs
    ~0.2 s, which every other command would pay)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, **kwargs):
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="print the version (and the commit bin/wgmux was built from)")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wgmux", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action=_Version)
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    serve = sub.add_parser(
        "serve", help="attach the reflector and run until SIGTERM/SIGINT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Validate the config, compile and attach the eBPF program to Interface (to
each, when it is a list), keep responder endpoints current from Device,
collect idle sessions.

State survives restarts: the program's maps (sessions, responders, counters)
are pinned in /sys/fs/bpf/wgmux/<netns inode>-<Interface>/. SIGTERM/SIGINT
detach the program (nothing stays attached) and exit 0, keeping the pinned
maps: the next start reuses them and established sessions carry on without a
new handshake, after a gap of the 1-3 s the start takes. With
--keep-attached the program stays attached instead and keeps forwarding
established sessions (not new handshakes) until the next start takes over
from it atomically: a restart loses nothing. The systemd unit runs that,
and its ExecStopPost runs `wgmux detach --unless-restarting` so that a
`systemctl stop` leaves nothing attached. After SIGKILL the program stays
attached too. Pinned maps that do not fit the new build are replaced (and
the log says why). `wgmux detach` removes an attached program, `wgmux
purge` that and the pinned maps; --fresh starts without them.

The compiled programs are kept in /var/cache/wgmux (root's alone;
WGMUX_BYTECODE_CACHE=DIR elsewhere, =off not at all): the next start of
the same build (sources, settings, bcc, kernel) compiles only the maps,
loads the kept programs, and the log's "datapath:" line says which it did.

SIGHUP reloads the config: peers added start working, peers removed stop
(their sessions end), the others are untouched; Device/WgUtil, AmneziaWG
parameters, HandshakeRate/HandshakeBurst and InitiationRate/InitiationBurst
may change, and Interfaces after the first may be added (attached after
the start checks) or removed (detached). An invalid file, one that changes
the first Interface, HubPort, Datapath or MaxSessions (those need a
restart), one that is not a regular file or takes over 5 s to
read, or any other failure is rejected with a log line and the running
config stays. A SIGHUP (or SIGTERM) while serve is still starting is
acted on as soon as it serves.

Idle sessions are collected after 540 s without a packet (3 x WireGuard's
180 s key lifetime), half-open ones after 30 s.""")
    _add_config_arg(serve)
    serve.add_argument("--fresh", action="store_true",
                       help="discard the pinned state of a previous run: start with no sessions")
    serve.add_argument("--keep-attached", action="store_true",
                       help="on SIGTERM/SIGINT leave the program attached, forwarding established "
                       "sessions until the next start takes over (a restart without loss); "
                       "`wgmux detach` removes it")
    # Tests shorten the idle timeout to see collection in seconds.
    serve.add_argument("--session-idle-timeout", type=float, default=None, metavar="SECONDS",
                       help=argparse.SUPPRESS)
    serve.set_defaults(fn=cmd_serve)

    purge = sub.add_parser(
        "purge", help="remove what a stopped or killed `wgmux serve` left behind",
        description="Remove the state `wgmux serve` keeps for a restart on this config's "
        "Interface in this network namespace: the pinned maps (sessions, responders, "
        "counters) and, after a SIGKILL, the program still attached with its clsact qdisc. "
        "Established sessions through the hub then end. Refuses while `wgmux serve` runs.")
    _add_config_arg(purge)
    purge.set_defaults(fn=cmd_purge)

    detach = sub.add_parser(
        "detach", help="remove the program a stopped `serve --keep-attached` (or a killed "
        "serve) left attached",
        description="Remove the wgmux program left attached to this config's Interface in "
        "this network namespace (after `serve --keep-attached` stopped, or a SIGKILL) and the "
        "clsact qdisc wgmux added for it; established sessions through the hub then stop. The "
        "pinned maps stay for the next start (`wgmux purge` removes them too). Refuses while "
        "`wgmux serve` runs; prints what it removed.")
    _add_config_arg(detach)
    detach.add_argument("--unless-restarting", metavar="UNIT",
                        help="do nothing if systemd is restarting UNIT (for the unit's "
                        "ExecStopPost=: a restart keeps the program attached for the next "
                        "start, a stop removes it)")
    detach.set_defaults(fn=cmd_detach)

    show = sub.add_parser("show", help="responders, live sessions and counters of the running daemon",
                          description="Ask the running `wgmux serve` (same network namespace, "
                          "same Interface) for its responders, sessions and counters.")
    _add_config_arg(show)
    fmt = show.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="machine-readable output")
    fmt.add_argument("--metrics", action="store_true",
                     help="the Prometheus text format (what MetricsListen serves)")
    show.add_argument("--summary", action="store_true",
                      help="count the sessions (per port too) instead of listing them: "
                           "what a big table wants (a million sessions in well under a "
                           "second; the listing decodes every one)")
    show.add_argument("--port", type=int, metavar="PORT",
                      help="only this peer port's responder and sessions (only its entries "
                           "are read)")
    show.add_argument("--peer", metavar="PUBLIC_KEY",
                      help="only the responder with this PublicKey (a [[Peer]] of the config) "
                           "and its sessions")
    show.set_defaults(fn=cmd_show)

    check = sub.add_parser("check", help="would `wgmux serve` work here? check config and host",
                           description="Check the config and this host the way `wgmux serve` "
                           "would, without attaching anything: privileges, bpffs, bcc, kernel "
                           "headers, the datapath loading, Interface, Device, HubPort and every "
                           "responder. One line per check; exit 0 if serving would work, 1 if "
                           "not (warnings, such as a responder without an endpoint yet, do not "
                           "count).")
    _add_config_arg(check)
    check.set_defaults(fn=cmd_check)
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
