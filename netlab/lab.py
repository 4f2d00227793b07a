"""Labs, nodes and links: network namespaces joined by veth pairs.

A `Lab` owns everything it creates and removes it on exit, whatever the exit
(return, exception, Ctrl-C, SIGTERM).  Every name it puts in a shared
namespace (netns names, userspace WireGuard sockets) starts with the lab's
prefix, and the prefix is registered with its owner's PID under
`STATE_DIR`, so `reap()` can remove what a crashed run left behind without
touching labs that are still alive (parallel xdist workers, other users).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import ipaddress
import math
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from .netns import NETNS_DIR, inside

PREFIX_ROOT = "nl"
STATE_DIR = Path("/run/netlab")
# Userspace implementations' control sockets (wireguard-go, amneziawg-go):
# one directory for every namespace, so a lab removes its prefix's there.
WIREGUARD_SOCKET_DIR = Path("/var/run/wireguard")
AMNEZIA_SOCKET_DIR = Path("/var/run/amneziawg")
WG_SOCKET_DIRS = (WIREGUARD_SOCKET_DIR, AMNEZIA_SOCKET_DIR)


class CommandError(RuntimeError):
    """A command run in a node failed; carries everything needed to see why."""

    def __init__(self, node: str, args: Sequence[str], returncode, stdout: str, stderr: str):
        self.node, self.args_run, self.returncode = node, list(args), returncode
        self.stdout, self.stderr = stdout, stderr
        super().__init__(
            f"[{node}] {' '.join(map(str, args))} exited {returncode}\n"
            f"--- stdout ---\n{stdout.rstrip()}\n--- stderr ---\n{stderr.rstrip()}"
        )


SLOWNESS_ENV = "NETLAB_SLOWNESS"


def slowness() -> float:
    """How many times slower than the machines its deadlines were written
    for this one runs: the environment's NETLAB_SLOWNESS, a number, default
    1.0, clamped to at least 1 (a deadline is never shortened).  Read at
    each call.  scripts/kernel-matrix.sh sets it in its emulated guests
    (measured there: docs/kernel-matrix.md); set by hand it stretches every
    deadline of a run on any slow machine.  Not a number, or not finite:
    ValueError (a typo must not silently leave the deadlines short)."""
    raw = os.environ.get(SLOWNESS_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{SLOWNESS_ENV}={raw!r} is not a number") from None
    if not math.isfinite(factor):
        raise ValueError(f"{SLOWNESS_ENV}={raw!r} is not finite")
    return max(1.0, factor)


def scaled(seconds: float) -> float:
    """`seconds`, a deadline written for the host, times `slowness()`: the
    one way a fixed timeout (a subprocess's, a socket's, a harness wait)
    follows NETLAB_SLOWNESS.  `wait_for`, `Node.run` and `stop_process`
    apply it themselves."""
    return seconds * slowness()


def wait_for(predicate: Callable[[], object], timeout: float = 10.0,
             interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; return that value.

    The one way tests and netlab wait: a deadline, never a bare sleep.
    `timeout` is the deadline on the host; the wait lasts `scaled(timeout)`,
    i.e. `timeout` times NETLAB_SLOWNESS (default 1.0, clamped >= 1), so a
    slow machine (an emulated kernel-matrix guest) gets proportionally longer.
    A negative check ("X does not happen within N s") just waits longer.
    """
    factor = slowness()
    limit = timeout * factor
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            scale = f" ({timeout:g}s x {SLOWNESS_ENV} {factor:g})" if factor != 1.0 else ""
            raise TimeoutError(f"timed out after {limit:.1f}s{scale} waiting for {what}")
        time.sleep(interval)


class Node:
    """A network namespace.  Commands run inside it through nsenter."""

    def __init__(self, lab: "Lab", name: str):
        self.lab = lab
        self.name = name
        self.netns = f"{lab.prefix}-{name}"
        self._ipr: Optional[IPRoute] = None

    def __repr__(self):
        return f"<Node {self.netns}>"

    # -- netlink ------------------------------------------------------------
    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = IPRoute(netns=self.netns)
        return self._ipr

    def close(self):
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None

    def index(self, ifname: str) -> int:
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise LookupError(f"[{self.name}] no interface {ifname!r}")
        return found[0]

    def links(self) -> list:
        return [link.get_attr("IFLA_IFNAME") for link in self.ipr.get_links()]

    def up(self, ifname: str):
        self.ipr.link("set", index=self.index(ifname), state="up")

    def add_address(self, ifname: str, cidr: str):
        iface = ipaddress.ip_interface(cidr)
        self.ipr.addr("add", index=self.index(ifname), address=str(iface.ip),
                      prefixlen=iface.network.prefixlen,
                      # IPv6 DAD would delay the address by seconds.
                      **({"flags": 0x80} if iface.version == 6 else {}))

    def add_route(self, dst: str, gateway: Optional[str] = None, ifname: Optional[str] = None):
        """A route to `dst` (a prefix or "default"); IPv6 when `dst` or
        `gateway` is an IPv6 address ("default" with an IPv6 gateway is ::/0)."""
        import socket

        v6 = ":" in dst or ":" in (gateway or "")
        if dst == "default" and v6:
            dst = "::/0"
        kwargs = {"dst": dst, "family": socket.AF_INET6 if v6 else socket.AF_INET}
        if gateway:
            kwargs["gateway"] = gateway
        if ifname:
            kwargs["oif"] = self.index(ifname)
        self.ipr.route("add", **kwargs)

    def addresses(self, ifname: Optional[str] = None, family: Optional[int] = None) -> list:
        kwargs = {}
        if ifname:
            kwargs["index"] = self.index(ifname)
        if family:
            kwargs["family"] = family
        return [a.get_attr("IFA_ADDRESS") for a in self.ipr.get_addr(**kwargs)]

    @contextlib.contextmanager
    def entered(self):
        """Run the body with this thread in the node's network namespace
        (netlab.netns.inside)."""
        with inside(self.netns):
            yield self

    def sysctl(self, key: str, value):
        # /proc/sys/net is per network namespace of the writer, so the write
        # has to come from a process inside the node.
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def sysctls(self, settings: dict):
        """Several sysctls in one command (`sysctl`'s rules as above)."""
        self.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])

    def set_tx_checksum(self, ifname: str, enabled: bool):
        """Turn transmit checksum offload on/off so receivers verify in software."""
        self.run(["ethtool", "-K", ifname, "tx", "on" if enabled else "off"])

    def take_xdp_frames(self, ifname: str):
        """Make veth `ifname` take what its peer's XDP program sends
        (netlab.xdp says why it needs a program of its own for that)."""
        from .xdp import take_xdp_frames

        take_xdp_frames(self.netns, ifname)

    def xdp_stats(self, ifname: str) -> dict:
        """A veth's XDP counters summed over its queues (ethtool -S names
        without the queue: xdp_packets, xdp_tx, xdp_tx_errors, ...)."""
        out: dict = {}
        for line in self.run(["ethtool", "-S", ifname]).stdout.splitlines():
            name, _, value = line.strip().partition(": ")
            if name.startswith("rx_queue_") and "_xdp_" in name:
                key = name.split("_", 3)[3]
                out[key] = out.get(key, 0) + int(value)
        return out

    # -- processes ----------------------------------------------------------
    def _argv(self, args: Sequence[str]) -> list:
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", "--", *map(str, args)]

    def run(self, args: Sequence[str], check: bool = True, timeout: float = 60,
            input: Optional[str] = None, env: Optional[dict] = None) -> subprocess.CompletedProcess:
        """Run `args` in the node; `timeout` is the host's, scaled (`scaled`)."""
        timeout = scaled(timeout) if timeout is not None else None
        try:
            proc = subprocess.run(self._argv(args), capture_output=True, text=True,
                                  timeout=timeout, input=input, env=env)
        except subprocess.TimeoutExpired as e:
            raise CommandError(self.name, args, f"timeout after {timeout:g}s",
                               _text(e.stdout), _text(e.stderr)) from None
        if check and proc.returncode != 0:
            raise CommandError(self.name, args, proc.returncode, proc.stdout, proc.stderr)
        return proc

    def popen(self, args: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a long-running process; the lab stops it (by PID) on exit."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.Popen(self._argv(args), start_new_session=True, **kwargs)
        proc.netlab_node = self.name
        self.lab._processes.append(proc)
        return proc


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 5.0):
    """Stop a process started by `Node.popen` (its whole session), by PID;
    each wait lasts `scaled(timeout)`."""
    timeout = scaled(timeout)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream:
            with contextlib.suppress(Exception):
                stream.close()


class Lab:
    """A set of nodes and everything in them, removed as one on exit."""

    def __init__(self, prefix: Optional[str] = None):
        self.prefix = prefix or _new_prefix()
        self.nodes: dict = {}
        self._processes: list = []
        self._cleanups: list = []
        self._closed = False
        self._old_sigterm = None
        # pyroute2 forks helpers (netns sockets); a fork that unwinds through
        # our `with` block must not tear down the parent's lab.
        self._owner_pid = os.getpid()

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> "Lab":
        self._register()
        if _in_main_thread():
            # SIGTERM unwinds like Ctrl-C, so the `with` block cleans up.
            _sigterm_owner[0] = os.getpid()
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        if self._closed or os.getpid() != self._owner_pid:
            return
        self._closed = True
        errors = []
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as e:  # keep going: the rest must still go
                errors.append(e)
        for proc in reversed(self._processes):
            stop_process(proc)
        for node in self.nodes.values():
            node.close()
        _remove_prefix(self.prefix)
        if self._old_sigterm is not None and _in_main_thread():
            signal.signal(signal.SIGTERM, self._old_sigterm)
        if errors:
            raise errors[0]

    def _register(self):
        path = STATE_DIR / self.prefix
        if not path.exists():
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            path.write_text(str(os.getpid()))
            # A test run sets NETLAB_RUN_LOG so its leak check can find every
            # lab its workers made.
            run_log = os.environ.get("NETLAB_RUN_LOG")
            if run_log:
                with open(run_log, "a") as f:
                    f.write(self.prefix + "\n")

    def on_close(self, fn: Callable[[], None]):
        """Run `fn` at close, before processes stop and namespaces go (LIFO)."""
        self._cleanups.append(fn)

    # -- building -----------------------------------------------------------
    def add_node(self, name: str, forwarding: bool = False) -> Node:
        if name in self.nodes:
            raise ValueError(f"node {name!r} already exists in lab {self.prefix}")
        self._register()
        node = Node(self, name)
        netns.create(node.netns)
        self.nodes[name] = node
        node.up("lo")
        # No IPv6 duplicate address detection on interfaces made from here
        # on (link-local ones included): an address is usable at once, not
        # after a second of "tentative".  (Lab addresses are unique.)
        settings = {"net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0}
        if forwarding:
            settings.update({"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
        node.sysctls(settings)
        return node

    def link(self, a: Node, a_if: str, b: Node, b_if: str,
             a_addr: Optional[str] = None, b_addr: Optional[str] = None, mtu: int = 1500):
        """A veth pair between two nodes, both ends up, optional addresses."""
        a.ipr.link("add", ifname=a_if, kind="veth", mtu=mtu,
                   peer={"ifname": b_if, "net_ns_fd": b.netns, "mtu": mtu})
        a.up(a_if)
        b.up(b_if)
        for node, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            for cidr in ([addr] if isinstance(addr, str) else (addr or ())):
                node.add_address(ifname, cidr)

    def vlan(self, node: Node, parent: str, ifname: str, vlan_id: int,
             addr: "Optional[str | list]" = None):
        """An 802.1Q interface `ifname` on `parent` (tag `vlan_id`), up,
        optional addresses."""
        try:
            node.ipr.link("add", ifname=ifname, kind="vlan", link=node.index(parent),
                          vlan_id=vlan_id)
        except NetlinkError as e:
            if e.code != errno.EOPNOTSUPP:
                raise
            raise RuntimeError(f"cannot create VLAN {ifname} on {node.name}: this kernel has "
                               "no 802.1Q support (8021q); see vlans_available()") from None
        node.up(ifname)
        for cidr in ([addr] if isinstance(addr, str) else (addr or ())):
            node.add_address(ifname, cidr)

    def bridge(self, node: Node, ifname: str = "br0", addr: Optional[str] = None):
        # Multicast snooping off: the bridge floods IPv6 neighbour discovery
        # (solicited-node multicast) to every port, as a plain switch would,
        # instead of waiting for MLD reports nobody queries for.
        node.ipr.link("add", ifname=ifname, kind="bridge", br_mcast_snooping=0)
        node.up(ifname)
        if addr:
            node.add_address(ifname, addr)

    def enslave(self, node: Node, ifname: str, bridge: str):
        node.ipr.link("set", index=node.index(ifname), master=node.index(bridge))

    def unique_ifname(self, tag: str) -> str:
        """An interface name unique across all namespaces (for userspace WireGuard)."""
        name = f"{self.prefix}{tag}"
        if len(name) > 15:
            raise ValueError(f"interface name {name!r} longer than 15 characters")
        return name


@functools.lru_cache(maxsize=None)
def vlans_available() -> bool:
    """True when this kernel can create 802.1Q interfaces (probed in a
    scratch netns): not every kernel has 8021q built in."""
    with Lab() as lab:
        node = lab.add_node("probe")
        lab.link(node, "a", node, "b")
        try:
            lab.vlan(node, "a", "a.5", 5)
        except RuntimeError:
            return False
        return True


def _in_main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


_sigterm_owner = [0]


def _raise_keyboard_interrupt(signum, frame):
    if os.getpid() != _sigterm_owner[0]:
        os._exit(128 + signum)  # a forked helper: just go
    raise KeyboardInterrupt(f"signal {signum}")


def wait_for_signal():
    """Block until SIGINT (KeyboardInterrupt) or, inside a Lab, SIGTERM
    raises.  Not signal.pause(): a signal that lands after Python's last
    check and before pause() has run its handler already, and pause() then
    waits for another one (a lab held that way once outlived a test's
    SIGINT).  Python checks for signals between the sleeps, at most a
    second late."""
    while True:
        time.sleep(1)


def _new_prefix() -> str:
    existing = set(netns.listnetns())
    while True:
        prefix = PREFIX_ROOT + secrets.token_hex(3)[:5]
        if not any(n.startswith(prefix + "-") for n in existing) and not (STATE_DIR / prefix).exists():
            return prefix


def _netns_pids(name: str) -> Iterable[int]:
    """PIDs of processes whose network namespace is `name`."""
    try:
        target = os.stat(NETNS_DIR / name)
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def _remove_prefix(prefix: str):
    """Remove every namespace, process and socket carrying `prefix`."""
    names = [n for n in netns.listnetns() if n.startswith(prefix + "-")]
    for name in names:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = [p for p in _netns_pids(name) if p != os.getpid()]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if pids:
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: not [p for p in _netns_pids(name) if p != os.getpid()],
                             timeout=3, what=f"processes in {name} to exit")
    for name in names:
        with contextlib.suppress(OSError):
            netns.remove(name)
    for d in WG_SOCKET_DIRS:
        if d.is_dir():
            for sock in d.glob(prefix + "*"):
                with contextlib.suppress(FileNotFoundError):
                    sock.unlink()
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / prefix).unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def registrations() -> list:
    """The registration files of labs (live or dead) on this machine."""
    if not STATE_DIR.is_dir():
        return []
    return sorted(f for f in STATE_DIR.iterdir() if f.is_file() and f.name.startswith(PREFIX_ROOT))


def owner_pid(registration: Path) -> int:
    try:
        return int(registration.read_text().strip() or 0)
    except (ValueError, OSError):
        return 0


def reap(all_labs: bool = False) -> list:
    """Remove leftovers of crashed labs (owner PID gone); return their prefixes.

    With `all_labs`, also remove the resources of labs whose owner is alive.
    """
    prefixes = set()
    for f in registrations():
        if all_labs or not _pid_alive(owner_pid(f)):
            prefixes.add(f.name)
    # Namespaces with our root prefix but no registration: orphans.
    registered = {f.name for f in registrations()}
    for name in netns.listnetns():
        p = name.split("-", 1)[0]
        if p.startswith(PREFIX_ROOT) and "-" in name and (all_labs or p not in registered):
            prefixes.add(p)
    for p in sorted(prefixes):
        _remove_prefix(p)
    return sorted(prefixes)


def processes_with(text: str) -> list:
    """(pid, cmdline) of processes whose command line mentions `text`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if text in cmd:
            found.append((int(entry), cmd))
    return found


def leftovers(prefix: str = PREFIX_ROOT) -> list:
    """Describe anything netlab-named that exists now (used by the leak check):
    namespaces, userspace WireGuard sockets, registrations, and processes
    whose command line carries the prefix (wireguard-go, tcpdump, daemons)."""
    found = [f"netns {n}" for n in netns.listnetns() if n.startswith(prefix)]
    found += [f"process {pid}: {cmd}" for pid, cmd in processes_with(prefix)
              if prefix != PREFIX_ROOT]
    for d in WG_SOCKET_DIRS:
        if d.is_dir():
            found += [f"socket {s}" for s in d.glob(prefix + "*")]
    if STATE_DIR.is_dir():
        found += [f"registration {f}" for f in STATE_DIR.glob(prefix + "*")]
    return found


def require_root():
    if os.geteuid() != 0:
        raise PermissionError("netlab needs root (network namespaces, nftables, eBPF)")


def have_binary(name: str) -> bool:
    return shutil.which(name) is not None
