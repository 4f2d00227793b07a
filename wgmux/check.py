"""`wgmux check`: would `wgmux serve` work here, with this config?

Runs every check `serve` makes before it attaches (the same functions:
wgmux.daemon's preflight steps, with their messages) and the ones it only
finds out the hard way (bpffs, kernel headers, the verifier, responders the
hub's device does not know), without attaching anything. Each check prints
one line, and a hint when it is not ok:

    [ ok ] bpffs mounted at /sys/fs/bpf
    [fail] HubPort 51999 (from /etc/wgmux/config.toml) does not match wg0's listen port 51820
           hint: set HubPort to wg0's ListenPort (wg show wg0 listen-port)

Exit status: 0 when serving would work, 1 when it would not. Warnings do not
change it: a responder that is a peer of the device but has no endpoint yet
is a warning, because `serve` starts anyway and picks the endpoint up as
soon as the responder's keepalive reaches the hub (until then initiations to
its port are dropped); so is a missing bpffs (`serve` runs with unpinned
maps, and a restart then drops the sessions), and so is forwarding off on
Interface (reflection works, on the slower neighbour path). A responder key
that is not a peer of the device at all is a failure: the hub can never
learn where that responder is, so the port can never reflect (almost always
a wrong or stale key in the config).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, List, Optional

from . import daemon, pinning
from .config import ConfigError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
TAGS = {OK: "[ ok ]", WARN: "[warn]", FAIL: "[fail]", SKIP: "[skip]"}

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


@dataclass
class Result:
    status: str
    text: str
    hint: Optional[str] = None

    def line(self) -> str:
        out = f"{TAGS[self.status]} {self.text}"
        if self.hint:
            out += f"\n       hint: {self.hint}"
        return out


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
def check_privileges() -> Result:
    try:
        daemon.check_privileges()
    except daemon.ServeError as e:
        return Result(FAIL, str(e), "run it as root (sudo wgmux ...); under systemd the unit "
                      f"must keep {', '.join(daemon.REQUIRED_CAPS)} in CapabilityBoundingSet")
    eff = daemon.effective_caps()
    names = {daemon.CAP_BPF: "CAP_BPF", daemon.CAP_NET_ADMIN: "CAP_NET_ADMIN",
             daemon.CAP_NET_RAW: "CAP_NET_RAW", daemon.CAP_PERFMON: "CAP_PERFMON",
             daemon.CAP_SYS_ADMIN: "CAP_SYS_ADMIN"}
    have = [n for c, n in sorted(names.items(), key=lambda kv: kv[1]) if eff >> c & 1]
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return Result(OK, f"privileges: {who} with {', '.join(have)}")


def check_bpffs() -> Result:
    """`serve` pins its maps on bpffs so that a restart keeps the sessions;
    without it, it serves anyway (unpinned), hence a warning."""
    if pinning.bpffs_mounted(pinning.BPFFS):
        return Result(OK, f"bpffs mounted at {pinning.BPFFS}")
    return Result(WARN, f"{pinning.BPFFS} is not a bpf filesystem: the maps cannot be pinned, "
                  f"so a restart of wgmux drops every session",
                  f"mount -t bpf bpf {pinning.BPFFS} (systemd mounts it at boot; make setup "
                  f"mounts it)")


def check_bcc() -> Result:
    try:
        daemon.check_bcc()
    except daemon.ServeError as e:
        return Result(FAIL, str(e), "bcc is a system package, not on PyPI: apt install "
                      "python3-bpfcc, and use a venv made with --system-site-packages from "
                      "/usr/bin/python3 (make install does)")
    import bcc

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
    and load it; it is not attached and is freed again."""
    from .datapath import Datapath

    with _captured_stderr() as err:
        try:
            Datapath(hub_port=config.hub_port, amnezia=config.amnezia).close()
            error = None
        except Exception as e:  # DatapathError, or whatever bcc raises
            error = e
    if error is None:
        return Result(OK, "datapath compiles and the kernel loads it (not attached)")
    log = err["text"].strip().splitlines()
    detail = str(error) + (f" [{log[-1].strip()}]" if log else "")
    return Result(FAIL, f"datapath does not load: {detail}",
                  "run wgmux serve -c <config> by hand to see the compiler's or verifier's "
                  "full log")


# -- the config and the hub's devices ------------------------------------------
def check_interface(config) -> Result:
    try:
        daemon.check_interface(config)
    except daemon.ServeError as e:
        return Result(FAIL, str(e), "set Interface to the interface the hub's public UDP "
                      "traffic arrives on (ip -br link)")
    return Result(OK, f"Interface {config.interface!r} exists")


def check_forwarding(config) -> Result:
    sysctl = daemon.forwarding_off(config)
    if sysctl:
        return Result(WARN, f"forwarding is off on {config.interface!r}: every reflected packet "
                      f"takes the kernel's neighbour path (ev_nh_fwd_disabled), slower than "
                      f"the fast path",
                      f"sysctl -w {sysctl}=1 (and net.ipv6.conf.all.forwarding=1 for IPv6 "
                      f"peers); persist it in /etc/sysctl.d/")
    return Result(OK, f"forwarding on {config.interface!r}: reflected packets take the fast path")


def check_device(config):
    try:
        device = daemon.read_hub_device(config)
    except daemon.ServeError as e:
        return None, Result(FAIL, str(e), f"bring the hub's WireGuard up (wg-quick up "
                            f"{config.device}) or fix Device; {config.wg_util} show "
                            f"{config.device} must work as this user")
    n = len(device.peers)
    return device, Result(OK, f"Device {config.device!r} readable ({device.source}), "
                          f"{n} peer{'s' if n != 1 else ''}")


def check_hub_port(config, device) -> Result:
    try:
        daemon.check_hub_port(config, device)
    except daemon.ServeError as e:
        return Result(FAIL, str(e), f"set HubPort to {config.device}'s ListenPort "
                      f"({device.listen_port})")
    return Result(OK, f"HubPort {config.hub_port} is {config.device}'s listen port")


def check_responders(config, device) -> List[Result]:
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
            ip, port = info.endpoint
            at = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            out.append(Result(OK, f"{what} is at {at}"))
    if not config.peers:
        out.append(Result(WARN, "no [[Peer]] in the config: the hub reflects nothing",
                          "add one [[Peer]] (Port, PublicKey) per responder"))
    return out


# -- all of them -----------------------------------------------------------------
def _load_config(path, add):
    from .config import load_bounded   # a FIFO or a hung filesystem: an error, not a hang

    try:
        return load_bounded(path)
    except ConfigError as e:
        for problem in e.problems:
            add(Result(FAIL, f"config: {problem}"))
    except OSError as e:
        add(Result(FAIL, f"config: cannot read {path}: {e.strerror or e}"))
    return None


def run_checks(path, emit: Callable[[Result], None] = lambda r: None) -> List[Result]:
    """Every check, in order; `emit` sees each result as soon as it is known."""
    results: List[Result] = []

    def add(r: Result) -> Result:
        results.append(r)
        emit(r)
        return r

    config = None
    if not os.path.exists(path):
        add(Result(FAIL, f"config: {path} does not exist",
                   "make install puts an example at /etc/wgmux/config.toml; -c PATH "
                   "names another file"))
    else:
        config = _load_config(path, add)
    if config is not None:
        n = len(config.peers)
        add(Result(OK, f"config {config.path}: {n} responder{'s' if n != 1 else ''}"))

    privileged = add(check_privileges()).status == OK
    add(check_bpffs())
    bcc_ok = add(check_bcc()).status == OK
    headers_ok = False
    if bcc_ok:
        headers_ok = add(check_headers()).status == OK
    else:
        add(Result(SKIP, "kernel headers usable by bcc (needs bcc)"))

    if config is None:
        add(Result(SKIP, "datapath, Interface, Device, HubPort, responders (need a valid config)"))
        return results
    if not (headers_ok and privileged):
        add(Result(SKIP, "datapath loads (needs bcc, headers and privileges)"))
    else:
        add(check_datapath(config))
    if add(check_interface(config)).status == OK:
        add(check_forwarding(config))
    device, r = check_device(config)
    add(r)
    if device is None:
        add(Result(SKIP, f"HubPort and responders (need {config.device!r})"))
        return results
    add(check_hub_port(config, device))
    for r in check_responders(config, device):
        add(r)
    return results


def main(path) -> int:
    """`wgmux check`: print every check; 0 if serving would work, else 1."""

    def emit(r: Result):
        print(r.line(), flush=True)

    results = run_checks(path, emit)
    fails = sum(r.status == FAIL for r in results)
    warns = sum(r.status == WARN for r in results)
    notes = f" ({warns} warning{'s' if warns != 1 else ''})" if warns else ""
    if fails:
        print(f"wgmux check: {fails} problem{'s' if fails != 1 else ''}: "
              f"wgmux serve would not work{notes}")
        return 1
    print(f"wgmux check: wgmux serve would work{notes}")
    return 0
