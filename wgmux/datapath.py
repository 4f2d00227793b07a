"""Compile, load, attach and drive the eBPF datapath (bpf/wgmux.c).

`Datapath` compiles the program with bcc, fills its config map, attaches it
at TC ingress (clsact, direct-action) with pyroute2, and gives Python views
of its maps: peer ports -> responder endpoint, sessions, counters, the
initiators the slow path learned; and it reads the slow-path ring buffer
(handshakes queued for wgmux.slowpath: poll_slow_path / drain_slow_path).

Map layouts are declared in bpf/wgmux.c; bcc hands us ctypes types built
from those declarations, so nothing here repeats a struct layout.  Byte
order in the maps: addresses and ports as on the wire, indices as numbers.
"""

from __future__ import annotations

import ctypes as ct
import errno
import functools
import ipaddress
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from wgmux import pinning, wire
from wgmux.config import HANDSHAKE_BURST, HANDSHAKE_RATE, INITIATION_BURST, INITIATION_RATE

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
# Verdicts: one per packet, counted by the datapath.  Events: on top of a
# verdict.  Slow path: one per message the datapath queued for the daemon,
# counted by the daemon (wgmux.slowpath) through count().
VERDICT_COUNTERS = tuple(n for n in COUNTERS if not n.startswith(("ev_", "sp_")))
EVENT_COUNTERS = tuple(n for n in COUNTERS if n.startswith("ev_"))
SLOW_PATH_COUNTERS = tuple(n for n in COUNTERS if n.startswith("sp_"))
_COUNTER_SLOT = {n: i for i, n in enumerate(COUNTERS)}

# Slow-path rate limit per source address: the config's HandshakeRate and
# HandshakeBurst (wgmux.config says why these defaults).
DEFAULT_SLOW_RATE = HANDSHAKE_RATE
DEFAULT_SLOW_BURST = HANDSHAKE_BURST
# Each peer port's initiation budget (InitiationRate / InitiationBurst).
DEFAULT_PORT_RATE = INITIATION_RATE
DEFAULT_PORT_BURST = INITIATION_BURST
# Under load, the cookie replies one port may ask the slow path for: what
# the daemon's one thread answers with room to spare (~25 µs each), so
# that a flood of cookie requests cannot starve anything else it does.
COOKIE_RATE = 2000.0
# a second's worth: when a flood starts every spoofed source asks at once,
# and a real initiator's first try must still find room
COOKIE_BURST = 2000

# session.flags (bpf/wgmux.c WGMUX_SF_*)
SF_TRANSPORT = 0x1
# slow_msg.load (bpf/wgmux.c SLOW_LOAD_*): why an initiation reached the
# slow path while its port was under load
LOAD_NONE, LOAD_COOKIE, LOAD_MAC2 = 0, 1, 2
# ev_ counters the daemon counts (bpf/wgmux.c says which)
USERSPACE_EVENTS = ("ev_half_open_evicted",)
# Hub addresses per family the datapath holds (WGMUX_MAX_ADDRS)
MAX_HUB_ADDRS = 8


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


class SessionLink(NamedTuple):
    """What collecting and the session log need of an entry: no endpoints,
    no next hop, so a full map reads in a fraction of sessions()' time."""
    key: Tuple[int, int]                # (port, index)
    reverse: Optional[Tuple[int, int]]  # the other direction's key
    last_seen: int                      # monotonic ns
    packets: int
    flags: int = 0                      # SF_*


@dataclass(frozen=True)
class Responder:
    port: int                       # the peer port P
    endpoint: Optional[Endpoint]    # E_R, None if not known yet
    next_hop: NextHop


@dataclass(frozen=True)
class SlowMessage:
    """One handshake message the datapath queued for the slow path."""
    ktime: int                      # CLOCK_MONOTONIC ns when it arrived
    ifindex: int                    # ingress interface
    kind: int                       # wire.WG_CLASS_INITIATION or _RESPONSE
    src: Endpoint                   # where it came from
    dst: Endpoint                   # the hub address and port it came to
    ttl: int                        # TTL / hop limit as received
    tos: int                        # TOS / traffic class
    ip_id: int                      # IPv4 identification (0 for IPv6)
    df: bool                        # IPv4 don't-fragment bit
    payload: bytes                  # the whole UDP payload
    load: int = LOAD_NONE           # LOAD_*: the port was under load

    @property
    def family(self) -> int:
        return self.src.ip.version


@dataclass(frozen=True)
class LearnedInitiator:
    """An initiator identity the slow path learned (map `initiators`)."""
    port: int                       # the peer port P it talks to
    public_key: bytes               # raw 32 bytes
    endpoint: Optional[Endpoint]    # E_I as seen on P
    index: int                      # its index in the handshake it was learned from
    learned: int                    # monotonic ns


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
    flags: int = 0                  # SF_*
    max_counter: int = 0            # highest transport counter from `expect`

    @property
    def key(self) -> Tuple[int, int]:
        return (self.port, self.index)

    @property
    def transport_seen(self) -> bool:
        return bool(self.flags & SF_TRANSPORT)

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


_BPF_NOEXIST = 1


def _gcra(rate: float, burst: int) -> Tuple[int, int]:
    """(interval ns, tolerance ns) for `rate` per second and `burst`."""
    if rate < 0 or burst < 0:
        raise ValueError(f"slow-path rate {rate}/s, burst {burst}: must not be negative")
    if not rate:
        return (0, 0)
    interval = max(1, int(round(1e9 / rate)))
    return (interval, interval * max(int(burst) - 1, 0))


@functools.lru_cache(maxsize=4096)
def _rate_of(interval: int, tolerance: int) -> Tuple[float, int]:
    """_gcra()'s inverse: (rate per second, burst); (0, 0): no limit."""
    if not interval:
        return (0.0, 0)
    return (1e9 / interval, round(tolerance / interval) + 1)


def _ip_of(raw: bytes) -> IPAddress:
    """Addresses repeat across sessions (a NAT's public address serves all
    its peers); parsing each once keeps a full map's scan cheap."""
    return ipaddress.ip_address(raw)


def _map_items(table) -> list:
    """Every (key, leaf) of a bcc hash map: in batches of syscalls where the
    kernel has them (5.6+), else one lookup per key."""
    try:
        return list(table.items_lookup_batch())
    except Exception:      # no batch ops here (old kernel, bcc): the slow way
        return list(table.items())


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


def _wgmux_filter(ipr, ifindex: int) -> Optional[str]:
    """Name of the bpf filter at wgmux's TC ingress priority, if any ("" if
    it has none).  The dump lists the priority's chain head first, without
    options, then the filter itself."""
    found = None
    for msg in ipr.get_filters(index=ifindex, parent=TC_INGRESS_PARENT):
        if msg.get_attr("TCA_KIND") == "bpf" and msg["info"] >> 16 == TC_PRIO:
            opts = msg.get_attr("TCA_OPTIONS")
            name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
            if name:
                return name
            found = ""
    return found


def attached_filter(dev: Union[str, int], netns: Optional[str] = None) -> Optional[str]:
    """The name of the wgmux filter at TC ingress of `dev` (None if none):
    `wgmux_ingress-<pid>-<fd>` of the process that attached it."""
    with _iproute(netns) as ipr:
        name = _wgmux_filter(ipr, Datapath._ifindex(ipr, dev))
    return name if name is not None and name.startswith(PROGRAM) else None


def remove_leftovers(dev: Union[str, int], pin_dir: Optional[Path] = None,
                     netns: Optional[str] = None, keep_pins: bool = False) -> List[str]:
    """Remove what a killed (or kept-attached) daemon left on `dev`: its TC
    filter, the clsact qdisc if the pin directory's record says wgmux added
    it and nothing else uses it, and the pinned maps unless `keep_pins`.
    Returns what was removed, for humans.  Only for when no daemon serves
    `dev` (the caller checks)."""
    from pyroute2.netlink.exceptions import NetlinkError

    removed = []
    with _iproute(netns) as ipr:
        try:
            ifindex = Datapath._ifindex(ipr, dev)
        except DatapathError:
            ifindex = None       # the interface is gone, and whatever was on it
        name = _wgmux_filter(ipr, ifindex) if ifindex is not None else None
        if name is not None and name.startswith(PROGRAM):
            try:
                ipr.tc("del-filter", "bpf", ifindex, TC_HANDLE, parent=TC_INGRESS_PARENT,
                       prio=TC_PRIO, protocol=ETH_P_ALL)
                removed.append(f"TC filter {name} on {dev}")
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL):
                    raise
        state = (pinning.read_state(pin_dir) or {}).get("clsact") or {} if pin_dir else {}
        if (ifindex is not None and state.get("made") and state.get("ifindex") == ifindex
                and not Datapath._other_filters(ipr, ifindex)):
            try:
                ipr.tc("del", "clsact", ifindex)
                removed.append(f"clsact qdisc on {dev}")
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.EINVAL):
                    raise
    if pin_dir is not None and not keep_pins and Path(pin_dir).exists():
        pinning.purge(pin_dir)
        removed.append(f"pinned state {pin_dir}")
    return removed


class Datapath:
    """One compiled and loaded instance of the datapath.

    Use as a context manager, or call close(): that detaches it from every
    interface it was attached to and frees the program and its maps.
    """

    # slow-path ring buffer, opened on first use (poll/drain_slow_path)
    _slow_type = None
    _slow_payload_off = 0
    _slow_handler = None

    def __init__(self, hub_port: int, classifier=None, *, amnezia=None,
                 max_sessions: int = DEFAULT_MAX_SESSIONS,
                 max_ports: int = DEFAULT_MAX_PORTS, roaming: bool = True,
                 sessions_lru: bool = False, cflags: Sequence[str] = (),
                 bench: bool = False, source: Optional[Path] = None,
                 pin_dir: Optional[Union[str, Path]] = None):
        """Compile and load.  `classifier` (or its alias `amnezia`): a
        wire.Classifier, anything with s1..s4 / h1..h4
        (wgmux.config.AmneziaParams), or None for plain WireGuard.
        `bench` adds the benchmark programs (harness.bench); `source` compiles
        another copy of wgmux.c (it must sit next to a wire.h).

        `pin_dir`: pin every map there (wgmux.pinning), reusing the maps a
        previous instance pinned when they are compatible with this build;
        then `reused` is True.  Otherwise the directory starts fresh and
        `fresh_reasons` says why (empty when there was nothing to reuse).
        close() leaves pinned maps in place; pinning.purge() removes them."""
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
        self.pin_dir = Path(pin_dir) if pin_dir is not None else None
        self.reused = False
        self.fresh_reasons: List[str] = []
        self.previous_hub_port: Optional[int] = None
        if self.pin_dir is not None:
            self._prepare_pins(flags)
        try:
            self.bpf = BPF(src_file=str(source).encode(), cflags=flags)
            if self.pin_dir is not None and not self._adopt_pins():
                # incompatible pinned maps: unpin them and build again
                self.bpf.cleanup()
                pinning.purge(self.pin_dir)
                self._prepare_pins(flags, check=False)
                self.bpf = BPF(src_file=str(source).encode(), cflags=flags)
                self._adopt_pins()
            try:
                self._fn = self.bpf.load_func(PROGRAM.encode(), BPF.SCHED_CLS)
            except Exception as e:
                if not self.reused:
                    raise
                # the checks passed but the verifier disagrees: do not keep
                # failing on the same pinned maps
                self.fresh_reasons.append(f"the program does not load with them: {e}")
                self.reused = False
                self.bpf.cleanup()
                pinning.purge(self.pin_dir)
                self._prepare_pins(flags, check=False)
                self.bpf = BPF(src_file=str(source).encode(), cflags=flags)
                self._adopt_pins()
                self._fn = self.bpf.load_func(PROGRAM.encode(), BPF.SCHED_CLS)
        except DatapathError:
            raise
        except Exception as e:
            # bcc prints the compiler's / verifier's log to stderr itself
            raise DatapathError(f"cannot compile or load {source}: {e} (kernel headers for "
                                f"bcc under /lib/modules/{os.uname().release}/build?)") from e
        self._config = self.bpf[b"config"]
        self._ports = self.bpf[b"ports"]
        self._sessions = self.bpf[b"sessions"]
        self._counters = self.bpf[b"counters"]
        self._attached: List[Tuple[Optional[str], int, bool]] = []  # (netns, ifindex, made clsact)
        self.replaced_filter: Optional[str] = None
        self._closed = False
        if self.reused:
            self.previous_hub_port = socket.ntohs(self._config[self._config.Key(0)].hub_port)
        self.configure(hub_port, classifier, roaming)

    # ---- pinned maps (wgmux.pinning) ---------------------------------------
    def _prepare_pins(self, flags: List[str], check: bool = True):
        """Before compiling: drop pinned state that cannot be reused, make
        the directory, point the build at it."""
        if check:
            problem = pinning.precheck(self.pin_dir)
            if problem:
                self.fresh_reasons.append(problem)
                pinning.purge(self.pin_dir)
        try:
            pinning.ensure_dir(self.pin_dir)
        except (OSError, pinning.PinError) as e:
            raise DatapathError(f"cannot pin maps in {self.pin_dir}: {e}") from None
        self._pins_before = {p.name for p in self.pin_dir.iterdir()
                             if p.name != pinning.STATE_FILE}
        literal = str(self.pin_dir).replace("\\", "\\\\").replace('"', '\\"')
        define = f'-DWGMUX_PIN_DIR="{literal}"'
        flags[:] = [f for f in flags if not f.startswith("-DWGMUX_PIN_DIR=")] + [define]

    def _adopt_pins(self) -> bool:
        """After compiling (maps created or reused, no program loaded yet):
        False if a reused map does not fit this build."""
        specs = pinning.table_specs(self.bpf, self.pin_dir)
        record = pinning.read_state(self.pin_dir)
        reused = sorted(n for n in specs if n in self._pins_before)
        problems = pinning.spec_problems({n: specs[n] for n in reused}, record)
        if problems:
            self.fresh_reasons.extend(problems)
            return False
        # pins of maps this build no longer has
        for stale in sorted(self._pins_before - set(specs)):
            try:
                (self.pin_dir / stale).unlink()
            except OSError:
                pass
        self.reused = bool(reused)
        self.reused_maps = reused
        self.created_maps = sorted(n for n in specs if n not in self._pins_before)
        pinning.write_state(self.pin_dir, pinning.build_state(specs, record))
        return True

    # ---- lifecycle -------------------------------------------------------
    @property
    def prog_fd(self) -> int:
        return self._fn.fd

    def load_program(self, name: str) -> int:
        """fd of another program in the same object (the benchmark ones)."""
        return self.bpf.load_func(name.encode(), self._BPF.SCHED_CLS).fd

    def close(self, keep_attached: bool = False):
        """Detach (unless `keep_attached`: the filters stay, running on the
        maps, for a successor to take over; see Daemon.keep_attached) and
        free what bcc holds."""
        if self._closed:
            return
        try:
            if keep_attached:
                self._attached.clear()
            else:
                self.detach()
        finally:
            self._closed = True
            self.bpf.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- config ------------------------------------------------------------
    def configure(self, hub_port: int, classifier=None, roaming: bool = True,
                  slow_rate: float = DEFAULT_SLOW_RATE, slow_burst: int = DEFAULT_SLOW_BURST,
                  port_rate: float = DEFAULT_PORT_RATE, port_burst: int = DEFAULT_PORT_BURST):
        """slow_rate/slow_burst: see set_slow_rate(); port_rate/port_burst:
        see set_port_budget().  The hub addresses (set_hub_addresses) stay."""
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
        cfg.slow_interval_ns, cfg.slow_tolerance_ns = _gcra(slow_rate, slow_burst)
        cfg.port_interval_ns, cfg.port_tolerance_ns = _gcra(port_rate, port_burst)
        cfg.cookie_interval_ns, cfg.cookie_tolerance_ns = _gcra(COOKIE_RATE, COOKIE_BURST)
        self._config[key] = cfg
        self.hub_port = int(hub_port)
        self.classifier = classifier
        self.roaming = roaming

    def set_slow_rate(self, rate: float, burst: int = 1):
        """Limit what each source address (IPv4 address, IPv6 /64) may send
        to the slow path: `rate` handshake messages per second on average,
        `burst` at once.  rate 0: no limit.  Beyond it the datapath sheds
        them, counted (drop_rate_limited, pass_hub_rate_limited,
        ev_slow_response_rate_limited)."""
        self._set_limit("slow", rate, burst)

    def _set_limit(self, name: str, rate: float, burst: int):
        """config.<name>_interval_ns / _tolerance_ns for `rate`, `burst`."""
        key = self._config.Key(0)
        cfg = self._config[key]
        interval, tolerance = _gcra(rate, burst)
        setattr(cfg, f"{name}_interval_ns", interval)
        setattr(cfg, f"{name}_tolerance_ns", tolerance)
        self._config[key] = cfg

    def _limit(self, name: str) -> Tuple[float, int]:
        cfg = self._config[self._config.Key(0)]
        return _rate_of(getattr(cfg, f"{name}_interval_ns"), getattr(cfg, f"{name}_tolerance_ns"))

    def slow_rate(self) -> Tuple[float, int]:
        """(rate per second, burst) as configured; (0, 0): no limit."""
        return self._limit("slow")

    def set_port_budget(self, rate: float, burst: int = 1):
        """The initiations each peer port takes per second (`rate`, `burst`
        at once) before it is under load: then initiations without mac2
        get cookie replies from the slow path, and only those with a valid
        mac2 are forwarded (docs/spec.md §9).  rate 0: never under load."""
        self._set_limit("port", rate, burst)

    def port_budget(self) -> Tuple[float, int]:
        """(rate per second, burst); (0, 0): no budget."""
        return self._limit("port")

    def set_hub_addresses(self, addresses) -> List[IPAddress]:
        """The hub's own addresses on Interface: the datapath reflects only
        packets addressed to one of them (and takes none of them as a
        peer's source).  Link-local and other addresses no peer can reach
        are left out.  At most MAX_HUB_ADDRS per family are held; returns
        the ones left out for lack of room (the caller says so)."""
        v4: List[IPAddress] = []
        v6: List[IPAddress] = []
        for a in sorted({ipaddress.ip_address(a) for a in addresses},
                        key=lambda a: (a.version, a.packed)):
            if a.is_link_local or a.is_multicast or a.is_unspecified:
                continue
            (v4 if a.version == 4 else v6).append(a)
        key = self._config.Key(0)
        cfg = self._config[key]
        ct.memset(ct.addressof(cfg.addr4), 0, ct.sizeof(cfg.addr4))
        ct.memset(ct.addressof(cfg.addr6), 0, ct.sizeof(cfg.addr6))
        for i, a in enumerate(v4[:MAX_HUB_ADDRS]):
            ct.memmove(ct.addressof(cfg.addr4) + 4 * i, a.packed, 4)
        for i, a in enumerate(v6[:MAX_HUB_ADDRS]):
            ct.memmove(ct.addressof(cfg.addr6) + 16 * i, a.packed, 16)
        cfg.n_addr4 = min(len(v4), MAX_HUB_ADDRS)
        cfg.n_addr6 = min(len(v6), MAX_HUB_ADDRS)
        self._config[key] = cfg
        return v4[MAX_HUB_ADDRS:] + v6[MAX_HUB_ADDRS:]

    def hub_addresses(self) -> List[IPAddress]:
        cfg = self._config[self._config.Key(0)]
        out: List[IPAddress] = []
        for i in range(cfg.n_addr4):
            out.append(ipaddress.IPv4Address(ct.string_at(ct.addressof(cfg.addr4) + 4 * i, 4)))
        for i in range(cfg.n_addr6):
            out.append(ipaddress.IPv6Address(ct.string_at(ct.addressof(cfg.addr6) + 16 * i,
                                                          16)))
        return out

    def flush_rate_limits(self):
        """Forget every source's rate-limit and load-gate state."""
        self.bpf[b"slow_rate"].clear()
        self.bpf[b"load_gates"].clear()

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
        datapath is attached (a restarted daemon; no packet sees neither);
        `replaced_filter` then names the filter it replaced.  It refuses to
        replace a filter that is not wgmux's.

        With a pin directory, whether this instance created the clsact
        qdisc is recorded there, and an instance that takes over from one
        that was killed inherits it: the last one to stop removes the
        qdisc its predecessor added."""
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
            current = None if made else _wgmux_filter(ipr, ifindex)
            if replace and current is not None and not current.startswith(PROGRAM):
                raise DatapathError(f"cannot attach to {where}: TC ingress pref {TC_PRIO} "
                                    f"holds a filter that is not wgmux's ({current!r})")
            if self.pin_dir is not None:
                state = (pinning.read_state(self.pin_dir) or {}).get("clsact") or {}
                if (not made and replace and current is not None and state.get("made")
                        and state.get("ifindex") == ifindex):
                    made = True     # a killed predecessor added it
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
        self.replaced_filter = current if replace else None
        if self.pin_dir is not None:
            try:
                pinning.update_state(self.pin_dir, clsact={"ifindex": ifindex, "made": made})
            except OSError:
                pass
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

    def purge(self):
        """Unpin this instance's maps (after close(), or to start over)."""
        if self.pin_dir is not None:
            pinning.purge(self.pin_dir)

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
        return Endpoint(_ip_of(raw), socket.ntohs(src.port))

    def _next_hop(self, nh, gen: int) -> NextHop:
        return NextHop(NH_STATES.get(nh.state, str(nh.state)), nh.ifindex,
                       bytes(nh.dmac).hex(":"), bytes(nh.smac).hex(":"),
                       nh.state != 0 and nh.gen == gen)

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
            self._sync_responder_eps()     # (pinned maps of an older build)
            return
        leaf = self._ports.Leaf()
        self._set_endpoint(leaf.ep, ep)
        self._ports[key] = leaf
        self._sync_responder_eps()

    def _sync_responder_eps(self):
        """`responder_eps` = the endpoints in `ports` (the datapath copies
        HubPort initiations from these only)."""
        eps = self.bpf[b"responder_eps"]
        want = {self._get_endpoint(v.ep) for v in self._ports.values()} - {None}
        have = {self._get_endpoint(k): k for k in eps.keys()}
        for ep, k in have.items():
            if ep not in want:
                try:
                    del eps[k]
                except KeyError:
                    pass
        for ep in want - set(have):
            k = eps.Key()
            self._set_endpoint(k, ep)
            eps[k] = ct.c_ubyte(1)

    def remove_responder(self, port: int, flush_sessions: bool = True) -> bool:
        """Stop reflecting for `port`; by default also delete the sessions
        that arrive on it and their reverse entries."""
        key = ct.c_ushort(socket.htons(_check_port(port)))
        try:
            del self._ports[key]
            found = True
        except KeyError:
            found = False
        self._sync_responder_eps()
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
                       last_seen=v.last_seen, packets=v.packets, bytes=v.bytes, flags=v.flags,
                       max_counter=v.max_counter)

    def sessions(self) -> List[Session]:
        gen = self._nh_gen
        return [self._to_session(k, v, gen) for k, v in _map_items(self._sessions)]

    def session_links(self) -> List[SessionLink]:
        ntohs = socket.ntohs
        return [SessionLink((ntohs(k.port), k.index),
                            (ntohs(v.reverse.port), v.reverse.index) if v.reverse.port else None,
                            v.last_seen, v.packets, v.flags)
                for k, v in _map_items(self._sessions)]

    def established_pairs(self, links: Optional[List[SessionLink]] = None
                          ) -> Dict[Tuple[int, int, int], Tuple[SessionLink, SessionLink]]:
        """(peer port, initiator index, responder index) -> (i2r, r2i) links
        of every established pair (see session_pairs() for the roles)."""
        by_key = {x.key: x for x in (self.session_links() if links is None else links)}
        out = {}
        for r2i in by_key.values():
            if r2i.key[0] != self.hub_port or r2i.reverse is None:
                continue
            i2r = by_key.get(r2i.reverse)
            if i2r is not None and i2r.reverse == r2i.key:
                out[(i2r.key[0], r2i.key[1], i2r.key[1])] = (i2r, r2i)
        return out

    def session(self, port: int, index: int) -> Optional[Session]:
        key = self._session_key(port, index)
        v = self._sessions.get(key)
        return None if v is None else self._to_session(key, v, self._nh_gen)

    def set_session(self, port: int, index: int, dst: EndpointLike, src_port: int,
                    expect: Optional[EndpointLike] = None,
                    reverse: Optional[Tuple[int, int]] = None,
                    created: Optional[int] = None, last_seen: Optional[int] = None,
                    flags: int = 0, max_counter: int = 0):
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
        leaf.flags = flags
        leaf.max_counter = max_counter
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

    def retarget(self, old: EndpointLike, new: EndpointLike, via_port: int) -> int:
        """A peer that the hub reaches from its port `via_port` moved from
        `old` to `new` (the control plane learned it, e.g. from the hub's own
        WireGuard): sessions sent to `old` from `via_port` now go to `new`
        (next hop resolved again), and sessions arriving on `via_port` that
        expected `old` now expect `new`.  Only existing entries are written
        (a packet counted between the read and the write is lost from the
        counters).  Returns the entries changed."""
        from bcc.libbcc import lib

        old, new = _endpoint(old), _endpoint(new)
        port = socket.htons(_check_port(via_port))
        changed = 0
        for k, v in self._sessions.items():
            touched = False
            if v.src_port == port and self._get_endpoint(v.dst) == old:
                self._set_endpoint(v.dst, new)
                v.nh.state = 0
                touched = True
            if k.port == port and self._get_endpoint(v.expect) == old:
                self._set_endpoint(v.expect, new)
                touched = True
            if touched and lib.bpf_update_elem(self._sessions.map_fd, ct.byref(k), ct.byref(v),
                                               2) == 0:   # BPF_EXIST
                changed += 1
        return changed

    def collect_idle(self, timeout_s: float, half_open_timeout_s: Optional[float] = None,
                     now_ns: Optional[int] = None) -> int:
        """Delete sessions idle for longer than `timeout_s`; half-open ones,
        and pairs that have not carried transport both ways, after
        `half_open_timeout_s` (default the same): a forged response must not
        buy a pair the full lifetime.  A linked pair goes as a whole, when
        neither direction has seen a packet for that long: WireGuard
        keepalives make a live pair busy both ways, and deleting one
        direction alone would cut it.  Returns the entries deleted."""
        now = monotonic_ns() if now_ns is None else now_ns
        full = int(timeout_s * 1e9)
        half = full if half_open_timeout_s is None else int(half_open_timeout_s * 1e9)
        by_key = {x.key: x for x in self.session_links()}
        removed = 0
        for key, s in by_key.items():
            other = by_key.get(s.reverse) if s.reverse else None
            last = max(s.last_seen, other.last_seen if other else 0)
            confirmed = other is not None and s.flags & other.flags & SF_TRANSPORT
            limit = full if confirmed else half
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
        i2r_packets, i2r_bytes, r2i_packets, r2i_bytes, confirmed (both
        directions have carried transport: the full timeout applies).
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
                "confirmed": bool(i2r and r2i and i2r.transport_seen and r2i.transport_seen),
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
        self.bpf[b"responder_eps"].clear()

    # ---- slow path -----------------------------------------------------------
    def _slow_ring(self):
        if self._slow_type is None:
            self._slow_type = self.bpf[b"slow_buf"].sLeaf
            self._slow_payload_off = self._slow_type.payload.offset
            self.bpf[b"slow_ring"].open_ring_buffer(self._on_slow_message)

    def _on_slow_message(self, _ctx, data, size) -> int:
        try:
            msg = self._parse_slow_message(ct.string_at(data, size))
        except Exception as e:   # never let an exception into libbpf's loop
            msg = e
        handler = self._slow_handler
        if handler is not None:
            try:
                handler(msg)
            except Exception:
                import logging
                logging.getLogger("wgmux").exception("slow path handler failed")
        return 0

    def _parse_slow_message(self, raw: bytes) -> SlowMessage:
        t = self._slow_type
        off = self._slow_payload_off
        if len(raw) < off:
            raise ValueError(f"slow-path message of {len(raw)} bytes, header is {off}")
        h = t.from_buffer_copy(raw[:off].ljust(ct.sizeof(t), b"\0"))
        if off + h.len > len(raw):
            raise ValueError(f"slow-path message claims {h.len} payload bytes, has "
                             f"{len(raw) - off}")
        src, dst = self._get_endpoint(h.src), self._get_endpoint(h.dst)
        if src is None or dst is None:
            raise ValueError("slow-path message without addresses")
        return SlowMessage(ktime=h.ktime, ifindex=h.ifindex, kind=h.cls, src=src, dst=dst,
                           ttl=h.ttl, tos=h.tos, ip_id=socket.ntohs(h.ip_id),
                           df=bool(socket.ntohs(h.frag_off) & 0x4000),
                           payload=raw[off:off + h.len], load=h.load)

    def poll_slow_path(self, handler, timeout_ms: int = 100):
        """Wait up to timeout_ms for slow-path messages and call
        handler(msg) for each, in this thread; msg is a SlowMessage, or
        the exception that kept one from parsing.  One consumer at a time."""
        self._slow_ring()
        self._slow_handler = handler
        self.bpf.ring_buffer_poll(int(timeout_ms))

    def drain_slow_path(self) -> List[Union[SlowMessage, Exception]]:
        """Every slow-path message queued now (tests, or dropping a backlog)."""
        self._slow_ring()
        out: list = []
        self._slow_handler = out.append
        self.bpf.ring_buffer_consume()
        self._slow_handler = None
        return out

    def responder(self, port: int) -> Optional[Responder]:
        """The responder of one peer port (None: not a peer port)."""
        key = ct.c_ushort(socket.htons(_check_port(port)))
        v = self._ports.get(key)
        if v is None:
            return None
        return Responder(int(port), self._get_endpoint(v.ep), self._next_hop(v.nh, self._nh_gen))

    def insert_session(self, port: int, index: int, dst: EndpointLike, src_port: int,
                       expect: Optional[EndpointLike] = None) -> str:
        """Open a half-open session (port, index) -> dst, sent from
        src_port, unless the key exists: "created", "exists" (the entry
        there is returned by session()) or "full"."""
        key = self._session_key(port, index)
        leaf = self._sessions.Leaf()
        self._set_endpoint(leaf.dst, _endpoint(dst))
        self._set_endpoint(leaf.expect, _endpoint(expect))
        leaf.src_port = socket.htons(_check_port(src_port, "source port"))
        leaf.created = leaf.last_seen = monotonic_ns()
        from bcc.libbcc import lib
        rc = lib.bpf_update_elem(self._sessions.map_fd, ct.byref(key), ct.byref(leaf),
                                 _BPF_NOEXIST)
        if rc >= 0:
            return "created"
        err = -rc if rc < -1 else ct.get_errno()
        if err == errno.EEXIST:
            return "exists"
        if err == errno.E2BIG or err == errno.ENOMEM:
            return "full"
        raise OSError(err, f"cannot insert session: {os.strerror(err)}")

    # initiators learned by the slow path (map `initiators`)
    def _initiator_key(self, port: int, public_key: bytes):
        t = self.bpf[b"initiators"]
        key = t.Key()
        key.port = socket.htons(_check_port(port))
        if len(public_key) != wire.WG_KEY_SIZE:
            raise ValueError(f"public key of {len(public_key)} bytes")
        ct.memmove(ct.addressof(key.public_key), bytes(public_key), wire.WG_KEY_SIZE)
        return key

    def learn_initiator(self, port: int, public_key: bytes, endpoint: Optional[EndpointLike],
                        index: int, learned: Optional[int] = None):
        t = self.bpf[b"initiators"]
        leaf = t.Leaf()
        self._set_endpoint(leaf.ep, _endpoint(endpoint))
        leaf.index = index
        leaf.learned = monotonic_ns() if learned is None else learned
        t[self._initiator_key(port, public_key)] = leaf

    def forget_initiator(self, port: int, public_key: bytes) -> bool:
        try:
            del self.bpf[b"initiators"][self._initiator_key(port, public_key)]
            return True
        except KeyError:
            return False

    def initiators(self) -> List[LearnedInitiator]:
        out = []
        for k, v in self.bpf[b"initiators"].items():
            out.append(LearnedInitiator(socket.ntohs(k.port), bytes(k.public_key),
                                        self._get_endpoint(v.ep), v.index, v.learned))
        return out

    def flush_initiators(self):
        self.bpf[b"initiators"].clear()

    # ---- counters ------------------------------------------------------------
    def count(self, name: str, n: int = 1):
        """Add n to a counter the datapath never writes (the sp_ slots of
        the slow path, and USERSPACE_EVENTS): read, add on CPU 0's copy,
        write back."""
        if not name.startswith("sp_") and name not in USERSPACE_EVENTS:
            raise ValueError(f"{name}: only sp_ counters are counted from userspace")
        key = self._counters.Key(_COUNTER_SLOT[name])
        leaf = self._counters[key]
        leaf[0] += n
        self._counters[key] = leaf

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
