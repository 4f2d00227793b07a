"""Would `wgmux serve` work here, with this config?  Each check, once.

Every check is one function returning a Result: a status (ok, warn, fail),
the one line users see, and a hint for when it is not ok.  Two callers use
the same functions:

- `wgmux serve` (wgmux.daemon) runs before_serve(): the checks it can make
  before touching the kernel, in order, stopping at the first failure, whose
  text is the one line `serve` exits with.  It logs the warnings of
  check_forwarding() and check_bpffs() (text and hint) and serves anyway.
- `wgmux check` (wgmux.check) runs all of them, and the ones `serve` only
  finds out the hard way (kernel headers, the verifier, responders the hub's
  device does not know), and prints each with its hint.

Nothing here attaches anything; check_datapath() loads the program into the
kernel and frees it again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Optional

from . import discovery, pinning
from .status import endpoint_text

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Result:
    status: str
    text: str
    hint: Optional[str] = None


class Failed(RuntimeError):
    """The first failing check of before_serve()/hub_device(); str() is its
    text."""

    def __init__(self, result: Result):
        super().__init__(result.text)
        self.result = result


def require(result: Result) -> Result:
    if result.status == FAIL:
        raise Failed(result)
    return result


# Includes the kernel headers every TC program does (bcc adds its own
# helpers, which include <linux/bpf.h> and friends from the same tree).
TRIVIAL_PROGRAM = b"""
#include <uapi/linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
int wgmux_check(struct __sk_buff *skb) { return TC_ACT_OK; }
"""


def _short(key: str) -> str:
    return key[:10] + "…"


def _first_lines(text: str, n: int = 3) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return " | ".join(lines[:n])


@contextlib.contextmanager
def _captured_stderr():
    """Collect what C code (bcc, clang, the verifier log) writes to fd 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    buf = tempfile.TemporaryFile(mode="w+b")
    os.dup2(buf.fileno(), 2)
    out = {"text": ""}
    try:
        yield out
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        buf.seek(0)
        out["text"] = buf.read().decode(errors="replace")
        buf.close()


# -- the environment ---------------------------------------------------------
# Capabilities `serve` needs (linux/capability.h numbers), and no others
# (tests/integration/test_capabilities.py proves both): CAP_BPF creates maps
# and loads the program, CAP_PERFMON makes the verifier accept its
# packet-pointer arithmetic, CAP_NET_ADMIN loads a TC program, attaches it
# and reads kernel WireGuard, CAP_NET_RAW opens the slow path's raw sockets.
# CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON (kernels before 5.8
# have neither).
CAP_NUMBERS = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21,
               "CAP_PERFMON": 38, "CAP_BPF": 39}
REQUIRED_CAPS = ("CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON")


def effective_caps() -> int:
    """This process's effective capability set, as a bit mask."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _has(eff: int, name: str) -> bool:
    return bool(eff >> CAP_NUMBERS[name] & 1)


def missing_caps(eff: Optional[int] = None) -> list:
    """Names of the REQUIRED_CAPS the process lacks (CAP_SYS_ADMIN standing
    in for CAP_BPF and CAP_PERFMON), in REQUIRED_CAPS order."""
    eff = effective_caps() if eff is None else eff
    admin = _has(eff, "CAP_SYS_ADMIN")
    stands_in = {"CAP_BPF", "CAP_PERFMON"}
    return [name for name in REQUIRED_CAPS
            if not (_has(eff, name) or (admin and name in stands_in))]


def check_privileges() -> Result:
    eff = effective_caps()
    missing = missing_caps(eff)
    if missing:
        if os.geteuid() != 0:
            text = "wgmux serve must run as root (it loads eBPF and changes tc)"
        else:
            text = (f"wgmux serve runs as root but without {', '.join(missing)} (it loads eBPF "
                    f"and changes tc: it needs {', '.join(REQUIRED_CAPS)})")
        return Result(FAIL, text, "run it as root (sudo wgmux ...); under systemd the unit "
                      f"must keep {', '.join(REQUIRED_CAPS)} in CapabilityBoundingSet")
    have = [name for name in sorted(CAP_NUMBERS) if _has(eff, name)]
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return Result(OK, f"privileges: {who} with {', '.join(have)}")


def check_bpffs() -> Result:
    """`serve` pins its maps on bpffs so that a restart keeps the sessions
    (docs/spec.md §10); without it, it serves anyway (unpinned), hence a
    warning."""
    if pinning.bpffs_mounted(pinning.BPFFS):
        return Result(OK, f"bpffs mounted at {pinning.BPFFS}")
    return Result(WARN, f"{pinning.BPFFS} is not a bpf filesystem: the maps cannot be pinned, "
                  f"so a restart of wgmux drops every session",
                  f"mount -t bpf bpf {pinning.BPFFS} (systemd mounts it at boot; make setup "
                  f"mounts it)")


def check_bcc() -> Result:
    try:
        import bcc
    except ImportError:
        return Result(FAIL, "bcc is not importable: install the Debian package python3-bpfcc "
                      "and run wgmux with a Python that sees it (make setup does this)",
                      "bcc is a system package, not on PyPI: apt install python3-bpfcc, and "
                      "use a venv made with --system-site-packages from /usr/bin/python3 "
                      "(make install does)")
    version = getattr(bcc, "__version__", None)
    return Result(OK, "bcc importable" + (f" ({version})" if version else ""))


def check_headers() -> Result:
    """bcc compiles against the running kernel's headers: compile a trivial
    program (nothing is loaded)."""
    from bcc import BPF

    where = f"/lib/modules/{os.uname().release}/build"
    with _captured_stderr() as err:
        try:
            BPF(text=TRIVIAL_PROGRAM).cleanup()
            error = None
        except Exception as e:
            error = e
    if error is None:
        return Result(OK, "kernel headers usable by bcc (a test program compiles)")
    detail = _first_lines(err["text"]) or str(error)
    return Result(FAIL, f"bcc cannot compile against the kernel headers: {detail}",
                  f"install headers for kernel {os.uname().release} where bcc looks ({where} "
                  f"and .../source); make setup does, and falls back to Debian's 6.1 headers")


def check_datapath(config) -> Result:
    """Compile wgmux's datapath with this config and have the kernel verify
    and load it (its XDP program too unless Datapath is "tc"); it is not
    attached and is freed again."""
    from .datapath import Datapath

    xdp = config.datapath != "tc"
    with _captured_stderr() as err:
        try:
            dp = Datapath(hub_port=config.hub_port, amnezia=config.amnezia)
            try:
                if xdp:
                    dp.program.xdp_fd
            finally:
                dp.close()
            error = None
        except Exception as e:  # DatapathError, or whatever bcc raises
            error = e
    if error is None:
        return Result(OK, "datapath compiles and the kernel loads it" + (
            " (TC and XDP programs, not attached)" if xdp else " (not attached)"))
    log = err["text"].strip().splitlines()
    detail = str(error) + (f" [{log[-1].strip()}]" if log else "")
    return Result(FAIL, f"datapath does not load: {detail}",
                  "run wgmux serve -c <config> by hand to see the compiler's or verifier's "
                  "full log")


# -- the config and the hub's devices ------------------------------------------
def _names(ifaces) -> str:
    return ", ".join(repr(i) for i in ifaces)


def _combined(results: dict) -> Result:
    """One Result for a check made per Interface ({interface: Result}):
    said once for all when it says the same of each, else the worst status
    and every interface's text (one interface: its result as it is)."""
    if len(results) == 1:
        return next(iter(results.values()))
    shapes = {(r.status, r.text.replace(repr(i), "\0"), (r.hint or "").replace(i, "\1"))
              for i, r in results.items()}
    if len(shapes) == 1:
        status, text, hint = shapes.pop()
        return Result(status, text.replace("\0", _names(results)),
                      hint.replace("\1", " / ".join(results)) or None)
    worst = next(st for st in (FAIL, WARN, OK) if any(r.status == st for r in results.values()))
    hints = [r.hint for r in results.values() if r.hint and r.status == worst]
    return Result(worst, "; ".join(r.text for r in results.values()), hints[0] if hints else None)


def check_interface(config) -> Result:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        missing = [i for i in config.interfaces if not ipr.link_lookup(ifname=i)]
    if not missing:
        return Result(OK, f"Interface {_names(config.interfaces)} "
                      f"{'exists' if len(config.interfaces) == 1 else 'exist'}")
    return Result(FAIL, f"Interface {_names(missing)} (from {config.path}) "
                  f"{'does' if len(missing) == 1 else 'do'} not exist in this network namespace",
                  "set Interface to the interface the hub's public UDP traffic arrives on "
                  "(ip -br link), or a list of them")


def _forwarding(family: str, interface: str) -> bool:
    try:
        with open(f"/proc/sys/net/{family}/conf/{interface}/forwarding") as f:
            return f.read().strip() != "0"
    except OSError:
        return True          # no such interface (check_interface says so), or no IPv6


def _global_ipv6(interface: str) -> bool:
    """Has `interface` an IPv6 address of global scope (IPv6 peers can
    reach the hub there)?"""
    try:
        with open("/proc/net/if_inet6") as f:
            return any(len(p) == 6 and p[5] == interface and p[3] == "00"
                       for p in (line.split() for line in f))
    except OSError:
        return False


def check_forwarding(config) -> Result:
    """bpf_fib_lookup() refuses to route a packet that arrived on an
    interface without forwarding; the datapath then hands every reflected
    packet to bpf_redirect_neigh() (ev_nh_fwd_disabled, docs/spec.md §4): it
    still works, through the kernel's neighbour code for each packet instead
    of cached MACs.  Each family asks its own sysctl (IPv6's only matters
    where Interface has a global IPv6 address).  wgmux does not flip them
    itself: they make the host a router for what arrives on that interface,
    which is the operator's decision.  With several Interfaces (spec §4c)
    it is more than speed: a packet reflected out of another interface
    than it came in on is forwarded, and bpf_fib_lookup() finds no way out
    for it from an interface without forwarding (it would leave by the one
    it came in on, and not arrive)."""
    if len(config.interfaces) == 1:
        return _check_forwarding(config.interfaces[0])
    off = [i for i in config.interfaces if not _forwarding("ipv4", i)]
    off6 = [i for i in config.interfaces if i not in off and not _forwarding("ipv6", i)
            and _global_ipv6(i)]
    if not off and not off6:
        return Result(OK, f"forwarding on {_names(config.interfaces)}: reflected packets take "
                      "the fast path, between interfaces too")
    what = (f"forwarding is off on {_names(off)}" if off else "") + \
        ("; " if off and off6 else "") + (f"IPv6 forwarding is off on {_names(off6)}"
                                          if off6 else "")
    return Result(WARN, f"{what}: packets arriving there are not reflected out of the other "
                  "Interfaces (peers behind those are not reached)",
                  " ".join(f"sysctl -w net.ipv4.conf.{i}.forwarding=1;" for i in off)
                  + (" sysctl -w net.ipv6.conf.all.forwarding=1;" if off6 else "")
                  + " persist it in /etc/sysctl.d/")


# Where a packet to "anywhere" goes: the probe destinations of
# check_source_routes() (a route lookup, nothing is sent).
ROUTE_PROBES = {4: "1.1.1.1", 6: "2606:4700:4700::1111"}


def check_source_routes(config) -> Result:
    """With several Interfaces (spec §4c), does each interface's address
    route out by that interface?  wgmux sends from the address a peer
    talks to, and the kernel routes by its table: on a hub multi-homed to
    two providers, without a source rule the second provider's address
    leaves by the first, whose source filter (BCP 38) drops it.  Only the
    default route is probed (where an address has none, nothing is said)."""
    if len(config.interfaces) == 1:
        return Result(OK, f"source routes: one Interface ({config.interfaces[0]!r})")
    import ipaddress

    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    wrong = []
    with IPRoute() as ipr:
        names = {}
        for iface in config.interfaces:
            for index in ipr.link_lookup(ifname=iface):
                names[index] = iface
        for index, iface in names.items():
            for a in ipr.get_addr(index=index):
                addr = ipaddress.ip_address(a.get_attr("IFA_ADDRESS"))
                if addr.is_link_local or addr.is_loopback or addr.is_multicast:
                    continue
                try:
                    route = ipr.route("get", dst=ROUTE_PROBES[addr.version], src=str(addr))
                except NetlinkError:
                    continue           # no route from it: nothing to say
                out = route[0].get_attr("RTA_OIF") if route else None
                if out is not None and out != index:
                    wrong.append((addr, iface, names.get(out) or f"ifindex {out}"))
    if not wrong:
        return Result(OK, f"source routes: the addresses of {_names(config.interfaces)} each "
                      "route out by their own interface")
    return Result(WARN, "source routes: " + "; ".join(
        f"packets from {a} ({i!r}) leave by {o!r}" for a, i, o in wrong)
        + ": an uplink that filters sources (BCP 38) drops them, and peers that talk to "
          "those addresses are not reached",
        " ".join(f"ip{' -6' if a.version == 6 else ''} rule add from {a} table <N> (a table "
                 f"whose default route leaves by {i});" for a, i, _o in wrong))


def _check_forwarding(iface: str) -> Result:
    v4 = _forwarding("ipv4", iface)
    v6 = _forwarding("ipv6", iface) or not _global_ipv6(iface)
    if v4 and v6:
        return Result(OK, f"forwarding on {iface!r}: reflected packets take the fast path")
    slow = "the kernel's neighbour path (ev_nh_fwd_disabled), slower than the fast path"
    if not v4:
        return Result(WARN, f"forwarding is off on {iface!r}: every reflected packet takes "
                      f"{slow}",
                      f"sysctl -w net.ipv4.conf.{iface}.forwarding=1 (and "
                      f"net.ipv6.conf.all.forwarding=1 for IPv6 peers); persist it in "
                      f"/etc/sysctl.d/")
    return Result(WARN, f"IPv6 forwarding is off on {iface!r}: every reflected IPv6 packet "
                  f"takes {slow}",
                  "sysctl -w net.ipv6.conf.all.forwarding=1; persist it in /etc/sysctl.d/")


def check_xdp(config) -> Result:
    """Where the datapath will run (Datapath, docs/spec.md §4a).  Whether a
    driver has native XDP shows only when a program is attached, and on
    some drivers attaching resets the interface: this check attaches
    nothing, it says what `serve` will try and what stands in its way (a
    program that is not wgmux's, a veth)."""
    return _combined({iface: _check_xdp(config.datapath, iface) for iface in config.interfaces})


def _check_xdp(want: str, iface: str) -> Result:
    from . import xdp
    from .model import DatapathError
    from .program import XDP_PROGRAM

    setting = f'Datapath "{want}"'
    if want == "tc":
        return Result(OK, f"{setting}: TC ingress only")
    try:
        current = xdp.attached(iface)
        refusal = xdp.auto_refusal(iface)
    except (DatapathError, OSError) as e:
        return Result(WARN, f"{setting}: cannot read {iface!r}'s XDP program: {e}")
    if current is not None and current.name != XDP_PROGRAM:
        what = (f"{iface!r} holds an XDP program that is not wgmux's ({current.mode}, id "
                f"{current.prog_id}, {current.name or 'name unknown'})")
        hint = f"remove it (ip link set dev {iface} xdp off) or set Datapath = \"tc\""
        if want == "xdp":
            return Result(FAIL, f"{setting}: {what}: serve cannot attach its own", hint)
        return Result(WARN, f"{setting}: {what}: serve keeps to TC ingress", hint)
    if current is not None:
        return Result(OK, f"{setting}: wgmux's XDP program is attached to {iface!r} now "
                      f"({current.mode}, id {current.prog_id}), in front of TC ingress")
    if refusal and want == "auto":
        return Result(OK, f"{setting}: TC ingress only on {iface!r} ({refusal}); "
                      f'Datapath = "xdp" insists')
    if refusal:
        return Result(WARN, f"{setting}: XDP on {iface!r}: {refusal}; what XDP sends back "
                      f"out is lost unless the peer takes it",
                      "an XDP program on the veth's peer (one that passes everything will "
                      "do); or Datapath = \"auto\" (TC ingress on veth)")
    if want == "auto":
        return Result(OK, f"{setting}: serve attaches XDP in {iface!r}'s driver, in front of "
                      f"TC ingress, or TC ingress alone where the driver has no native XDP")
    return Result(OK, f"{setting}: serve attaches XDP in {iface!r}'s driver, in front of TC "
                  f"ingress, and fails where the driver has no native XDP")


def check_device(config):
    """(the hub's device as read, or None; the Result)."""
    try:
        device = discovery.read_device(config.device, config.wg_util)
    except discovery.DiscoveryError as e:
        return None, Result(FAIL, f"Device {config.device!r} (from {config.path}): {e}",
                            f"bring the hub's WireGuard up (wg-quick up {config.device}) or "
                            f"fix Device; {config.wg_util} show {config.device} must work as "
                            f"this user")
    n = len(device.peers)
    return device, Result(OK, f"Device {config.device!r} readable ({device.source}), "
                          f"{n} peer{'s' if n != 1 else ''}")


def check_hub_port(config, device) -> Result:
    if device.listen_port != config.hub_port:
        return Result(FAIL, f"HubPort {config.hub_port} (from {config.path}) does not match "
                      f"{config.device}'s listen port {device.listen_port}",
                      f"set HubPort to {config.device}'s ListenPort ({device.listen_port})")
    return Result(OK, f"HubPort {config.hub_port} is {config.device}'s listen port")


def check_responders(config, device) -> List[Result]:
    """A responder that is a peer of the device but has no endpoint yet is a
    warning: `serve` starts anyway and picks the endpoint up as soon as the
    responder's keepalive reaches the hub.  A key that is not a peer at all
    is a failure: the hub can never learn where that responder is (almost
    always a wrong or stale key in the config)."""
    out = []
    for peer in config.peers:
        what = f"responder on port {peer.port} ({_short(peer.public_key)})"
        info = device.peers.get(peer.public_key)
        if info is None:
            out.append(Result(FAIL, f"{what} is not a peer of {config.device}",
                              f"PublicKey must be the responder's key as {config.device} has "
                              f"it ({config.wg_util} show {config.device} peers); the hub "
                              f"learns the responder's endpoint from that peer"))
        elif info.endpoint is None:
            out.append(Result(WARN, f"{what} has no endpoint on {config.device} yet: "
                              f"initiations to port {peer.port} are dropped until it has one",
                              f"the responder must reach the hub first: its Endpoint = "
                              f"<hub>:{config.hub_port} with PersistentKeepalive"))
        else:
            out.append(Result(OK, f"{what} is at {endpoint_text(info.endpoint)}"))
    if not config.peers:
        out.append(Result(WARN, "no [[Peer]] in the config: the hub reflects nothing",
                          "add one [[Peer]] (Port, PublicKey) per responder"))
    return out


# -- what `serve` runs -----------------------------------------------------------
def hub_device(config):
    """The hub's device, read and matching HubPort (at start and when a
    reload changes Device or WgUtil); Failed otherwise."""
    device, result = check_device(config)
    require(result)
    require(check_hub_port(config, device))
    return device


def before_serve(config):
    """Everything `serve` can check before touching the kernel, in this
    order (which failure a user sees first); Failed at the first failure.
    Returns the hub's device as read."""
    require(check_privileges())
    require(check_interface(config))
    device = hub_device(config)
    require(check_bcc())
    return device
