"""Compile, load, attach and drive the eBPF datapath (bpf/wgmux.c).

`Datapath` compiles the program with bcc, fills its config map, attaches it
at TC ingress (clsact, direct-action) with pyroute2, and gives Python views
of its maps: peer ports -> responder endpoint, sessions, counters.

Map layouts are declared in bpf/wgmux.c; bcc hands us ctypes types built
from those declarations, so nothing here repeats a struct layout.  Byte
order in the maps: addresses and ports as on the wire, indices as numbers.
"""

from __future__ import annotations

import ctypes as ct
import errno
import ipaddress
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from wgmux import wire

try:
    from wgmux.bpf import SOURCE_DIR
except ImportError:  # running from a checkout without the editable install
    SOURCE_DIR = Path(__file__).resolve().parent.parent / "bpf"

SOURCE = Path(SOURCE_DIR) / "wgmux.c"
PROGRAM = "wgmux_ingress"

# A distinctive TC filter priority and handle, so that detach() deletes
# exactly our filter and `tc filter show` tells whose it is.
TC_PRIO = 0x5747        # "WG"
TC_HANDLE = 0x1
TC_INGRESS_PARENT = 0xFFFFFFF2   # ffff:fff2, clsact ingress
TC_EGRESS_PARENT = 0xFFFFFFF3
ETH_P_ALL = 0x0003

AF_INET = 2
AF_INET6 = 10

CFG_ROAMING = 0x1

NH_STATES = {0: "none", 1: "direct", 2: "neigh"}

DEFAULT_MAX_SESSIONS = 65536
DEFAULT_MAX_PORTS = 4096


def counter_names(source: Path = SOURCE) -> Tuple[str, ...]:
    """Counter slot names, in enum order, from the X-macro in wgmux.c."""
    text = source.read_text()
    block = text[text.index("#define WGMUX_COUNTERS(X)"):]
    lines = []
    for line in block.splitlines():
        lines.append(line)
        if not line.rstrip().endswith("\\"):
            break
    names = re.findall(r"\bX\((\w+)\)", "\n".join(lines))
    if not names:
        raise RuntimeError(f"no WGMUX_COUNTERS in {source}")
    return tuple(n.lower() for n in names)


COUNTERS = counter_names()
VERDICT_COUNTERS = tuple(n for n in COUNTERS if not n.startswith("ev_"))
EVENT_COUNTERS = tuple(n for n in COUNTERS if n.startswith("ev_"))


_CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)  # Linux value


def monotonic_ns() -> int:
    """The clock of `created` / `last_seen` (bpf_ktime_get_coarse_ns)."""
    return time.clock_gettime_ns(_CLOCK_MONOTONIC_COARSE)


IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class Endpoint:
    ip: IPAddress
    port: int

    def __str__(self):
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class NextHop:
    state: str          # "none" | "direct" | "neigh"
    ifindex: int
    dmac: str
    smac: str
    current: bool       # resolved in the current generation (not invalidated)


@dataclass(frozen=True)
class Responder:
    port: int                       # the peer port P
    endpoint: Optional[Endpoint]    # E_R, None if not known yet
    next_hop: NextHop


@dataclass(frozen=True)
class Session:
    port: int                       # hub port packets for this key arrive on
    index: int                      # receiver index they carry
    dst: Optional[Endpoint]         # where they are sent
    src_port: int                   # hub port they are sent from
    expect: Optional[Endpoint]      # where they are expected from
    reverse: Optional[Tuple[int, int]]  # (port, index) of the other direction
    next_hop: NextHop
    created: int                    # monotonic ns
    last_seen: int
    packets: int
    bytes: int

    @property
    def key(self) -> Tuple[int, int]:
        return (self.port, self.index)

    @property
    def half_open(self) -> bool:
        return self.reverse is None

    def idle_ns(self, now: Optional[int] = None) -> int:
        return (monotonic_ns() if now is None else now) - self.last_seen


EndpointLike = Union[Endpoint, Tuple[Union[str, IPAddress], int]]


class DatapathError(RuntimeError):
    """The datapath cannot be compiled, loaded or attached; the message
    says why in terms an operator can act on."""


def _endpoint(value: Optional[EndpointLike]) -> Optional[Endpoint]:
    if value is None:
        return None
    if isinstance(value, Endpoint):
        return value
    addr, port = value
    return Endpoint(ipaddress.ip_address(addr), int(port))


def _check_port(port: int, what: str = "port") -> int:
    if not (0 < int(port) < 65536):
        raise ValueError(f"{what} {port} is not a UDP port")
    return int(port)


NETNS_RUN_DIR = Path("/var/run/netns")


def _iproute(netns: Optional[str]):
    """IPRoute in `netns`; FileNotFoundError if that namespace does not
    exist (pyroute2 would silently create it)."""
    from pyroute2 import IPRoute

    if not netns:
        return IPRoute()
    if "/" in netns or not (NETNS_RUN_DIR / netns).exists():
        raise FileNotFoundError(f"no network namespace {netns!r}")
    return IPRoute(netns=netns, flags=0)


class Datapath:
    """One compiled and loaded instance of the datapath.

    Use as a context manager, or call close(): that detaches it from every
    interface it was attached to and frees the program and its maps.
    """

    def __init__(self, hub_port: int, classifier=None, *, amnezia=None,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 max_ports: int = DEFAULT_MAX_PORTS, roaming: bool = True,
                 sessions_lru: bool = False, cflags: Sequence[str] = (),
                 bench: bool = False, source: Optional[Path] = None):
        """Compile and load.  `classifier` (or its alias `amnezia`): a
        wire.Classifier, anything with s1..s4 / h1..h4
        (wgmux.config.AmneziaParams), or None for plain WireGuard.
        `bench` adds the benchmark programs (wgmux.bench); `source` compiles
        another copy of wgmux.c (it must sit next to a wire.h)."""
        try:
            from bcc import BPF  # late: the rest of wgmux works without bcc
        except ImportError:
            raise DatapathError("bcc is not importable: install python3-bpfcc and use a "
                                "Python that sees it (make setup)") from None

        if classifier is None:
            classifier = amnezia
        self._BPF = BPF
        source = Path(source) if source is not None else SOURCE
        flags = [f"-I{source.parent}",
                 f"-DWGMUX_MAX_SESSIONS={int(max_sessions)}",
                 f"-DWGMUX_MAX_PORTS={int(max_ports)}",
                 # kernel headers vs bcc's compat headers: harmless noise
                 "-Wno-macro-redefined"]
        if sessions_lru:
            flags.append('-DWGMUX_SESSIONS_MAP_TYPE="lru_hash"')
        if bench:
            flags.append("-DWGMUX_BENCH")
        flags.extend(cflags)
        self.max_sessions = int(max_sessions)
        try:
            self.bpf = BPF(src_file=str(source).encode(), cflags=flags)
            self._fn = self.bpf.load_func(PROGRAM.encode(), BPF.SCHED_CLS)
        except Exception as e:
            # bcc prints the compiler's / verifier's log to stderr itself
            raise DatapathError(f"cannot compile or load {source}: {e} (kernel headers for "
                                f"bcc under /lib/modules/{os.uname().release}/build?)") from e
        self._config = self.bpf[b"config"]
        self._ports = self.bpf[b"ports"]
        self._sessions = self.bpf[b"sessions"]
        self._counters = self.bpf[b"counters"]
        self._attached: List[Tuple[Optional[str], int, bool]] = []  # (netns, ifindex, made clsact)
        self._closed = False
        self.configure(hub_port, classifier, roaming)

    # ---- lifecycle -------------------------------------------------------
    @property
    def prog_fd(self) -> int:
        return self._fn.fd

    def load_program(self, name: str) -> int:
        """fd of another program in the same object (the benchmark ones)."""
        return self.bpf.load_func(name.encode(), self._BPF.SCHED_CLS).fd

    def close(self):
        if self._closed:
            return
        try:
            self.detach()
        finally:
            self._closed = True
            self.bpf.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- config ------------------------------------------------------------
    def configure(self, hub_port: int, classifier=None, roaming: bool = True):
        if not isinstance(classifier, wire.Classifier):
            classifier = wire.Classifier.from_params(classifier)
        key = self._config.Key(0)
        cfg = self._config[key]
        cfg.hub_port = socket.htons(_check_port(hub_port, "HubPort"))
        cfg.flags = CFG_ROAMING if roaming else 0
        for i, spec in enumerate(classifier.specs()):
            cfg.cls[i].prefix = spec.prefix
            cfg.cls[i].lo = spec.lo
            cfg.cls[i].hi = spec.hi
        self._config[key] = cfg
        self.hub_port = int(hub_port)
        self.classifier = classifier
        self.roaming = roaming

    def disable(self):
        """Pass every packet untouched (HubPort 0) until configure()."""
        key = self._config.Key(0)
        cfg = self._config[key]
        cfg.hub_port = 0
        self._config[key] = cfg

    def invalidate_next_hops(self):
        """Make every cached next hop stale (routes or neighbours changed):
        each entry resolves again on its next packet.  Touches only the
        config, never live entries, so it races with nothing."""
        key = self._config.Key(0)
        cfg = self._config[key]
        cfg.nh_gen = (cfg.nh_gen + 1) & 0xFFFFFFFF
        self._config[key] = cfg

    @property
    def _nh_gen(self) -> int:
        return self._config[self._config.Key(0)].nh_gen

    # ---- attach / detach -------------------------------------------------
    def attach(self, dev: Union[str, int], netns: Optional[str] = None,
               replace: bool = False) -> int:
        """Attach at TC ingress of `dev` (name or ifindex), in `netns` if
        given; adds the clsact qdisc if missing.  Returns the ifindex.

        replace=True swaps in this program atomically where another wgmux
        datapath is attached (a restarted daemon; no packet sees neither)."""
        from pyroute2.netlink.exceptions import NetlinkError

        where = f"{dev}" + (f" in netns {netns}" if netns else "")
        try:
            ipr_cm = _iproute(netns)
        except FileNotFoundError as e:
            raise DatapathError(f"cannot attach to {where}: {e}") from None
        with ipr_cm as ipr:
            ifindex = self._ifindex(ipr, dev)
            made = False
            try:
                ipr.tc("add", "clsact", ifindex)
                made = True
            except NetlinkError as e:
                if e.code != errno.EEXIST:
                    raise DatapathError(f"cannot add a clsact qdisc to {where}: "
                                        f"{os.strerror(e.code)}") from e
            try:
                ipr.tc("replace-filter" if replace else "add-filter", "bpf", ifindex,
                       TC_HANDLE, fd=self.prog_fd, name=self.filter_name,
                       parent=TC_INGRESS_PARENT, prio=TC_PRIO, protocol=ETH_P_ALL,
                       classid=1, direct_action=True)
            except BaseException as e:
                if made:
                    ipr.tc("del", "clsact", ifindex)
                if isinstance(e, NetlinkError):
                    hint = (" (already attached? `tc filter show dev "
                            f"{dev} ingress` shows pref {TC_PRIO})"
                            if e.code == errno.EEXIST else "")
                    raise DatapathError(f"cannot attach to {where}: "
                                        f"{os.strerror(e.code)}{hint}") from e
                raise
        self._attached.append((netns, ifindex, made))
        return ifindex

    def detach(self):
        """Remove our filters (not one that replaced ours meanwhile), and
        the clsact qdiscs we added if nothing else is attached to them."""
        from pyroute2.netlink.exceptions import NetlinkError

        while self._attached:
            netns, ifindex, made = self._attached.pop()
            try:
                with _iproute(netns) as ipr:
                    if self._ours(ipr, ifindex):
                        try:
                            ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE,
                                   parent=TC_INGRESS_PARENT, prio=TC_PRIO,
                                   protocol=ETH_P_ALL)
                        except NetlinkError as e:
                            if e.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                                raise
                    if made and not self._other_filters(ipr, ifindex):
                        try:
                            ipr.tc("del", "clsact", ifindex)
                        except NetlinkError as e:
                            if e.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                                raise
            except FileNotFoundError:
                continue   # the namespace is gone, and our filter with it

    @property
    def attachments(self) -> List[Tuple[Optional[str], int]]:
        return [(ns, idx) for ns, idx, _ in self._attached]

    @staticmethod
    def _ifindex(ipr, dev: Union[str, int]) -> int:
        if isinstance(dev, int):
            return dev
        found = ipr.link_lookup(ifname=dev)
        if not found:
            raise DatapathError(f"no interface named {dev!r}")
        return found[0]

    @property
    def filter_name(self) -> str:
        """The TC filter's name: the program's, plus who attached it, so
        detach() can tell its own filter from a successor's."""
        return f"{PROGRAM}-{os.getpid()}-{self.prog_fd}"

    def _ours(self, ipr, ifindex: int) -> bool:
        for msg in ipr.get_filters(index=ifindex, parent=TC_INGRESS_PARENT):
            opts = msg.get_attr("TCA_OPTIONS")
            if (msg.get_attr("TCA_KIND") == "bpf" and msg["info"] >> 16 == TC_PRIO
                    and opts is not None and opts.get_attr("TCA_BPF_NAME") == self.filter_name):
                return True
        return False

    @staticmethod
    def _other_filters(ipr, ifindex: int) -> bool:
        for parent in (TC_INGRESS_PARENT, TC_EGRESS_PARENT):
            for msg in ipr.get_filters(index=ifindex, parent=parent):
                if msg.get_attr("TCA_KIND"):
                    return True
        return False

    # ---- conversions -----------------------------------------------------
    @staticmethod
    def _set_endpoint(dst, ep: Optional[Endpoint]):
        ct.memset(ct.addressof(dst), 0, ct.sizeof(dst))
        if ep is None:
            return
        packed = ep.ip.packed
        ct.memmove(ct.addressof(dst.addr), packed, len(packed))
        dst.port = socket.htons(_check_port(ep.port))
        dst.family = AF_INET if ep.ip.version == 4 else AF_INET6

    @staticmethod
    def _get_endpoint(src) -> Optional[Endpoint]:
        if src.family == AF_INET:
            raw = ct.string_at(ct.addressof(src.addr), 4)
        elif src.family == AF_INET6:
            raw = ct.string_at(ct.addressof(src.addr), 16)
        else:
            return None
        return Endpoint(ipaddress.ip_address(raw), socket.ntohs(src.port))

    def _next_hop(self, nh, gen: int) -> NextHop:
        mac = lambda raw: ":".join(f"{b:02x}" for b in raw)  # noqa: E731
        return NextHop(NH_STATES.get(nh.state, str(nh.state)), nh.ifindex, mac(bytes(nh.dmac)),
                       mac(bytes(nh.smac)), nh.state != 0 and nh.gen == gen)

    def _session_key(self, port: int, index: int):
        key = self._sessions.Key()
        key.port = socket.htons(_check_port(port))
        if not (0 <= index <= wire.U32_MAX):
            raise ValueError(f"index {index} is not a u32")
        key.index = index
        return key

    # ---- responders (peer ports) -------------------------------------------
    def set_responder(self, port: int, ip=None, udp_port: int = 0):
        """Make `port` a peer port whose responder is at ip:udp_port (E_R).
        ip None: a peer port whose responder endpoint is not known yet
        (initiations to it are dropped and counted).  Re-setting the same
        endpoint keeps the cached next hop."""
        ep = _endpoint((ip, udp_port)) if ip is not None else None
        key = ct.c_ushort(socket.htons(_check_port(port)))
        current = self._ports.get(key)
        if current is not None and self._get_endpoint(current.ep) == ep:
            return
        leaf = self._ports.Leaf()
        self._set_endpoint(leaf.ep, ep)
        self._ports[key] = leaf

    def remove_responder(self, port: int, flush_sessions: bool = True) -> bool:
        """Stop reflecting for `port`; by default also delete the sessions
        that arrive on it and their reverse entries."""
        key = ct.c_ushort(socket.htons(_check_port(port)))
        try:
            del self._ports[key]
            found = True
        except KeyError:
            found = False
        if flush_sessions:
            for s in self.sessions():
                if s.port == port:
                    self.delete_session(s.port, s.index, reverse=True)
        return found

    def responders(self) -> Dict[int, Responder]:
        gen = self._nh_gen
        out = {}
        for k, v in self._ports.items():
            port = socket.ntohs(k.value)
            out[port] = Responder(port, self._get_endpoint(v.ep), self._next_hop(v.nh, gen))
        return out

    # ---- sessions ------------------------------------------------------------
    def _to_session(self, k, v, gen: int) -> Session:
        reverse = None
        if v.reverse.port:
            reverse = (socket.ntohs(v.reverse.port), v.reverse.index)
        return Session(port=socket.ntohs(k.port), index=k.index, dst=self._get_endpoint(v.dst),
                       src_port=socket.ntohs(v.src_port), expect=self._get_endpoint(v.expect),
                       reverse=reverse, next_hop=self._next_hop(v.nh, gen), created=v.created,
                       last_seen=v.last_seen, packets=v.packets, bytes=v.bytes)

    def sessions(self) -> List[Session]:
        gen = self._nh_gen
        return [self._to_session(k, v, gen) for k, v in self._sessions.items()]

    def session(self, port: int, index: int) -> Optional[Session]:
        key = self._session_key(port, index)
        v = self._sessions.get(key)
        return None if v is None else self._to_session(key, v, self._nh_gen)

    def set_session(self, port: int, index: int, dst: EndpointLike, src_port: int,
                    expect: Optional[EndpointLike] = None,
                    reverse: Optional[Tuple[int, int]] = None,
                    created: Optional[int] = None, last_seen: Optional[int] = None):
        """Create or replace a session entry from the control plane (the
        mac1 slow path, state rebuilt after a restart, tests).  Replacing
        resets its counters and next hop."""
        key = self._session_key(port, index)
        leaf = self._sessions.Leaf()
        self._set_endpoint(leaf.dst, _endpoint(dst))
        self._set_endpoint(leaf.expect, _endpoint(expect))
        if reverse is not None:
            leaf.reverse.port = socket.htons(_check_port(reverse[0]))
            leaf.reverse.index = reverse[1]
        leaf.src_port = socket.htons(_check_port(src_port, "source port"))
        now = monotonic_ns()
        leaf.created = now if created is None else created
        leaf.last_seen = leaf.created if last_seen is None else last_seen
        self._sessions[key] = leaf

    def delete_session(self, port: int, index: int, reverse: bool = False) -> bool:
        """Delete (port, index); with reverse=True also the entry it links to."""
        key = self._session_key(port, index)
        v = self._sessions.get(key)
        if v is None:
            return False
        other = (socket.ntohs(v.reverse.port), v.reverse.index) if v.reverse.port else None
        try:
            del self._sessions[key]
        except KeyError:
            return False
        if reverse and other is not None:
            self.delete_session(*other)
        return True

    def collect_idle(self, timeout_s: float, half_open_timeout_s: Optional[float] = None,
                     now_ns: Optional[int] = None) -> int:
        """Delete sessions idle for longer than `timeout_s` (half-open
        ones: `half_open_timeout_s`, default the same).  A linked pair goes
        as a whole, when neither direction has seen a packet for that long:
        WireGuard keepalives make a live pair busy both ways, and deleting
        one direction alone would cut it.  Returns the entries deleted."""
        now = monotonic_ns() if now_ns is None else now_ns
        full = int(timeout_s * 1e9)
        half = full if half_open_timeout_s is None else int(half_open_timeout_s * 1e9)
        by_key = {s.key: s for s in self.sessions()}
        removed = 0
        for key, s in by_key.items():
            other = by_key.get(s.reverse) if s.reverse else None
            last = max(s.last_seen, other.last_seen if other else 0)
            limit = half if other is None else full
            if now - last > limit:
                try:
                    del self._sessions[self._session_key(*key)]
                    removed += 1
                except KeyError:
                    pass   # the datapath or another collector got there first
        return removed

    def session_pairs(self, wall_clock: bool = True) -> List[dict]:
        """Sessions grouped into initiator/responder pairs, for `wgmux show`.

        The initiator is the peer that talks to a peer port P; its packets
        arrive on P under the responder's index, the responder's arrive on
        HubPort under the initiator's index.  Times are epoch seconds
        (wall_clock) or monotonic ns.  Keys: port, initiator, responder,
        state ("half-open" | "established"), initiator_index,
        responder_index (None while half-open), created, last_seen,
        i2r_packets, i2r_bytes, r2i_packets, r2i_bytes.
        """
        by_key = {s.key: s for s in self.sessions()}
        mono, wall = monotonic_ns(), time.time()
        conv = (lambda t: wall - (mono - t) / 1e9) if wall_clock else (lambda t: t)
        seen, out = set(), []
        for key, s in sorted(by_key.items()):
            if key in seen:
                continue
            other = by_key.get(s.reverse) if s.reverse else None
            seen.add(key)
            if other is not None:
                seen.add(other.key)
            if s.port == self.hub_port:
                r2i, i2r = s, other
            elif other is not None and other.port == self.hub_port:
                r2i, i2r = other, s
            else:
                r2i, i2r = None, s
            initiator = r2i.dst if r2i else (i2r.expect if i2r else None)
            responder = i2r.dst if i2r else (r2i.expect if r2i else None)
            port = i2r.port if i2r else r2i.src_port
            parts = [x for x in (r2i, i2r) if x is not None]
            out.append({
                "port": port,
                "initiator": str(initiator) if initiator else None,
                "responder": str(responder) if responder else None,
                "state": "established" if other is not None else "half-open",
                "initiator_index": r2i.index if r2i else None,
                "responder_index": i2r.index if i2r else None,
                "created": conv(min(x.created for x in parts)),
                "last_seen": conv(max(x.last_seen for x in parts)),
                "i2r_packets": i2r.packets if i2r else 0,
                "i2r_bytes": i2r.bytes if i2r else 0,
                "r2i_packets": r2i.packets if r2i else 0,
                "r2i_bytes": r2i.bytes if r2i else 0,
            })
        return out

    def flush_sessions(self):
        self._sessions.clear()

    def flush_responders(self):
        self._ports.clear()

    # ---- counters ------------------------------------------------------------
    def counters(self) -> Dict[str, int]:
        """reason name -> total over CPUs (names: datapath.COUNTERS)."""
        out = {}
        for i, name in enumerate(COUNTERS):
            out[name] = int(sum(self._counters[self._counters.Key(i)]))
        return out

    def reset_counters(self):
        zero = self._counters.Leaf()
        for i in range(len(COUNTERS)):
            self._counters[self._counters.Key(i)] = zero
