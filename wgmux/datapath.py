"""The datapath's maps, driven from Python (bpf/wgmux.c).

`Datapath` loads the program (wgmux.program), fills its config map,
attaches it at TC ingress (wgmux.tc) and, in front of it, in the driver
(wgmux.xdp, docs/spec.md §4a), and gives Python views of its maps:
peer ports -> responder endpoint, sessions, counters, the initiators the
slow path learned; and it reads the slow-path ring buffer (wgmux.ringbuf:
poll_slow_path / drain_slow_path).  The values it hands out are
wgmux.model's.

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
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from wgmux import bulk, pinning, tc, wire, xdp
from wgmux.config import (HANDSHAKE_BURST, HANDSHAKE_RATE, INITIATION_BURST, INITIATION_RATE,
                          MAX_INTERFACES)
from wgmux.model import (SF_TRANSPORT, Endpoint, EndpointLike, IPAddress, LearnedInitiator, NextHop,
                         Responder, Session, SessionLink, SlowMessage, as_endpoint,
                         check_port, monotonic_ns, read_endpoint, write_endpoint)
from wgmux.program import SOURCE, Program
from wgmux.ringbuf import SlowRing

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

# ev_ counters the daemon counts (bpf/wgmux.c says which)
USERSPACE_EVENTS = ("ev_half_open_evicted",)
# Hub addresses per family the datapath holds (WGMUX_MAX_ADDRS)
MAX_HUB_ADDRS = 8
# bpf/wgmux.c's IFC_* in order (its WGMUX_MAX_IFACES is config.MAX_INTERFACES)
IFACE_COUNTERS = ("reflected_in", "reflected_out", "dropped")

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


def _map_items(table) -> list:
    """Every (key, leaf) of a bcc hash map: in batches of syscalls where the
    kernel has them (5.6+), else one lookup per key."""
    try:
        return list(table.items_lookup_batch())
    except Exception:      # no batch ops here (old kernel, bcc): the slow way
        return list(table.items())


def _raw_key(port: int, index: int) -> int:
    """A session key as SessionColumns holds it: port << 32 | index.  The
    index in the low bits: Python hashes an int by its low bits, and a dict
    of a million keys that differ above them would collide throughout."""
    return port << 32 | index


def _key_of_raw(raw: int) -> Tuple[int, int]:
    return raw >> 32, raw & 0xFFFFFFFF


def _key_bytes(raw: int) -> bytes:
    """The map's own 8 bytes of a raw key (struct session_key)."""
    return (raw >> 32).to_bytes(2, "big") + b"\0\0" + (raw & 0xFFFFFFFF).to_bytes(4, "little")


def _raw_keys(buf: bytes, offset: int, size: int) -> array:
    """The struct session_key at `offset` of every `size`-byte record of
    `buf` as raw keys, by moving bytes at C speed: the map's layout is
    {be16 port, u16 pad, u32 index} and a raw key's little-endian bytes are
    {index, port in host order, 0, 0}."""
    n = len(buf) // size
    src = memoryview(buf)
    out = bytearray(8 * n)
    for dst_byte, src_byte in ((0, 4), (1, 5), (2, 6), (3, 7), (4, 1), (5, 0)):
        out[dst_byte::8] = src[offset + src_byte::size]
    keys = array("Q")
    keys.frombytes(bytes(out) if socket.htons(1) != 1 else _swap64(out))
    return keys


def _swap64(buf: bytearray) -> bytes:
    a = array("Q")
    a.frombytes(bytes(buf))
    a.byteswap()            # a big-endian host reads the same bytes the other way
    return a.tobytes()


@dataclass
class SessionColumns:
    """The whole session table as columns (Datapath.session_columns()):
    what collection, the session log and show's summary need, without
    decoding an entry.  Keys and `reverse` are raw (_raw_key; `reverse`
    0 for a half-open entry), `src_port` in host order."""

    keys: array
    reverse: array
    last_seen: array
    packets: array
    flags: array
    created: array
    bytes: array
    src_port: array

    def __len__(self):
        return len(self.keys)


class Datapath:
    """One compiled and loaded instance of the datapath.

    Use as a context manager, or call close(): that detaches it from every
    interface it was attached to and frees the program and its maps.
    """

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

        `pin_dir`: pin every map there (wgmux.program.Program says how),
        reusing the maps a previous instance pinned when they are
        compatible with this build; then `reused` is True.  Otherwise the
        directory starts fresh and `fresh_reasons` says why (empty when
        there was nothing to reuse).  close() leaves pinned maps in place;
        pinning.purge() removes them."""
        if classifier is None:
            classifier = amnezia
        self.max_sessions = int(max_sessions)
        self.program = Program(max_sessions=max_sessions, max_ports=max_ports,
                               sessions_lru=sessions_lru, cflags=cflags, bench=bench,
                               source=source, pin_dir=pin_dir)
        self.bpf = self.program.bpf
        self.pin_dir = self.program.pin_dir
        self.reused = self.program.reused
        self.fresh_reasons = self.program.fresh_reasons
        self.previous_hub_port: Optional[int] = None
        self._config = self.bpf[b"config"]
        self._ports = self.bpf[b"ports"]
        self._sessions = self.bpf[b"sessions"]
        self._counters = self.bpf[b"counters"]
        self._slow = SlowRing(self.bpf)
        self._attached: List[tc.Attachment] = []
        self._attached_xdp: List[xdp.XdpAttachment] = []
        self.replaced_filter: Optional[str] = None
        self.replaced_xdp: Optional[xdp.Attached] = None
        # hub address -> the interface it is on, as set_hub_addresses() was told
        self._address_interface: Dict[IPAddress, object] = {}
        self._closed = False
        if self.reused:
            self.previous_hub_port = socket.ntohs(self._config[self._config.Key(0)].hub_port)
        self.configure(hub_port, classifier, roaming)

    # ---- lifecycle -------------------------------------------------------
    @property
    def prog_fd(self) -> int:
        return self.program.fd

    def load_program(self, name: str) -> int:
        """fd of another program in the same object (the benchmark ones)."""
        return self.program.load_func(name)

    def close(self, keep_attached: bool = False):
        """Detach (unless `keep_attached`: the filters stay, running on the
        maps, for a successor to take over; see Daemon.keep_attached) and
        free what bcc holds."""
        if self._closed:
            return
        try:
            if keep_attached:
                self._attached.clear()
                self._attached_xdp.clear()
            else:
                self.detach()
        finally:
            self._closed = True
            self.program.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- config ------------------------------------------------------------
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
        cfg.hub_port = socket.htons(check_port(hub_port, "HubPort"))
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
        """The hub's own addresses on its Interfaces: the datapath reflects
        only packets addressed to one of them (and takes none of them as a
        peer's source).  `addresses` may map each to the interface it is on
        (interface_of() answers then).  Link-local and other addresses no
        peer can reach are left out.  At most MAX_HUB_ADDRS per family are
        held; returns the ones left out for lack of room (the caller says
        so)."""
        where = addresses if isinstance(addresses, dict) else {}
        self._address_interface = {ipaddress.ip_address(a): i for a, i in where.items()}
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
        self._hub_addresses = v4[:MAX_HUB_ADDRS] + v6[:MAX_HUB_ADDRS]
        return v4[MAX_HUB_ADDRS:] + v6[MAX_HUB_ADDRS:]

    def set_interfaces(self, ifindexes: Sequence[int]):
        """The interfaces this instance serves (spec §4c): with more than
        one, the datapath counts per interface what arrived on each and was
        reflected or dropped, and what left by each (interface_counters);
        the counts of an interface that keeps its slot carry on."""
        ifindexes = [int(i) for i in ifindexes]
        if len(ifindexes) > MAX_INTERFACES:
            raise ValueError(f"at most {MAX_INTERFACES} interfaces, not {len(ifindexes)}")
        slots_map = self.bpf[b"iface_slots"]
        slots = slots_map[slots_map.Key(0)]
        old = list(slots.ifindex)
        counters = self.bpf[b"iface_counters"]
        zero = counters.Leaf()
        for slot in range(len(old)):
            want = ifindexes[slot] if slot < len(ifindexes) else 0
            if old[slot] != want:
                for what in range(len(IFACE_COUNTERS)):
                    counters[counters.Key(slot * len(IFACE_COUNTERS) + what)] = zero
            slots.ifindex[slot] = want
        slots_map[slots_map.Key(0)] = slots
        key = self._config.Key(0)
        cfg = self._config[key]
        cfg.n_ifaces = len(ifindexes)
        self._config[key] = cfg

    def interface_counters(self) -> Dict[int, Dict[str, int]]:
        """ifindex -> {reflected_in, reflected_out, dropped}, totals over
        CPUs, for each interface set_interfaces() gave (counted only while
        there are several)."""
        slots_map = self.bpf[b"iface_slots"]
        counters = self.bpf[b"iface_counters"]
        out = {}
        for slot, ifindex in enumerate(slots_map[slots_map.Key(0)].ifindex):
            if ifindex:
                out[int(ifindex)] = {
                    name: int(sum(counters[counters.Key(slot * len(IFACE_COUNTERS) + what)]))
                    for what, name in enumerate(IFACE_COUNTERS)}
        return out

    def hub_addresses(self) -> List[IPAddress]:
        """As set_hub_addresses() wrote them (the slow path asks per
        message: no map read), else as the config map holds them."""
        cached = getattr(self, "_hub_addresses", None)
        if cached is not None:
            return list(cached)
        cfg = self._config[self._config.Key(0)]
        out: List[IPAddress] = []
        for i in range(cfg.n_addr4):
            out.append(ipaddress.IPv4Address(ct.string_at(ct.addressof(cfg.addr4) + 4 * i, 4)))
        for i in range(cfg.n_addr6):
            out.append(ipaddress.IPv6Address(ct.string_at(ct.addressof(cfg.addr6) + 16 * i,
                                                          16)))
        return out

    def interface_of(self, address):
        """The interface set_hub_addresses() was told `address` is on
        (None: not told, or no hub address)."""
        return self._address_interface.get(ipaddress.ip_address(address))

    @property
    def several_interfaces(self) -> bool:
        """Are the hub's addresses on more than one interface?"""
        return len(set(self._address_interface.values())) > 1

    def via_of(self, address) -> int:
        """A session's `via` for a peer that talks to the hub's `address`:
        1 + its index among the hub's addresses of its family, 0 if it is
        none of them (docs/spec.md §4b)."""
        a = ipaddress.ip_address(address)
        same = [h for h in self.hub_addresses() if h.version == a.version]
        return same.index(a) + 1 if a in same else 0

    def source_for(self, version: int, via: int = 0) -> Optional[IPAddress]:
        """The hub address of IP `version` a translated packet with `via`
        leaves from, as the datapath picks it; None: the hub has none."""
        same = [h for h in self.hub_addresses() if h.version == version]
        if not same:
            return None
        return same[via - 1] if 0 < via <= len(same) else same[0]

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
        attachment, current = tc.attach(self.prog_fd, self.filter_name, dev, netns, replace,
                                        self.pin_dir)
        self._attached.append(attachment)
        self.replaced_filter = current if replace else None
        if self.pin_dir is not None:
            tc.record_clsact(self.pin_dir, attachment)
        return attachment.ifindex

    def attach_xdp(self, dev: Union[str, int], netns: Optional[str] = None,
                   replace: bool = False) -> int:
        """Attach the XDP program in `dev`'s driver (native mode), in front
        of the TC one, which must be attached too (docs/spec.md §4a).
        replace=True swaps out another wgmux's atomically (`replaced_xdp`
        then says what it was); never a program that is not wgmux's.
        DatapathError where the driver has no native XDP.  Returns the
        ifindex."""
        attachment, current = xdp.attach(self.program.xdp_fd, dev, netns, replace)
        self._attached_xdp.append(attachment)
        self.replaced_xdp = current if replace else None
        return attachment.ifindex

    @property
    def xdp_attachments(self) -> List[Tuple[Optional[str], int]]:
        return [(a.netns, a.ifindex) for a in self._attached_xdp]

    def detach(self):
        """Remove our XDP programs and filters (not ones that replaced ours
        meanwhile), and the clsact qdiscs we added if nothing else is
        attached to them.  XDP first: TC takes what it passed until then."""
        while self._attached_xdp:
            xdp.detach(self._attached_xdp.pop())
        while self._attached:
            tc.detach(self._attached.pop(), self.filter_name)

    def detach_interface(self, ifindex: int):
        """detach(), on one interface only: a reload that takes it out of
        Interface (spec §4c).  XDP first, as detach()."""
        for attachment in [a for a in self._attached_xdp if a.ifindex == ifindex]:
            self._attached_xdp.remove(attachment)
            xdp.detach(attachment)
        for attachment in [a for a in self._attached if a.ifindex == ifindex]:
            self._attached.remove(attachment)
            tc.detach(attachment, self.filter_name)

    def purge(self):
        """Unpin this instance's maps (after close(), or to start over)."""
        if self.pin_dir is not None:
            pinning.purge(self.pin_dir)

    @property
    def attachments(self) -> List[Tuple[Optional[str], int]]:
        return [(ns, idx) for ns, idx, _ in self._attached]

    @property
    def filter_name(self) -> str:
        return tc.filter_name(self.prog_fd)

    # ---- conversions -----------------------------------------------------
    def _next_hop(self, nh, gen: int) -> NextHop:
        return NextHop(NH_STATES.get(nh.state, str(nh.state)), nh.ifindex,
                       bytes(nh.dmac).hex(":"), bytes(nh.smac).hex(":"),
                       nh.state != 0 and nh.gen == gen)

    def _session_key(self, port: int, index: int):
        key = self._sessions.Key()
        key.port = socket.htons(check_port(port))
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
        ep = as_endpoint((ip, udp_port)) if ip is not None else None
        key = ct.c_ushort(socket.htons(check_port(port)))
        counts = self._responder_eps_counts()
        current = self._ports.get(key)
        old = read_endpoint(current.ep) if current is not None else None
        if current is not None and old == ep:
            return
        leaf = self._ports.Leaf()
        write_endpoint(leaf.ep, ep)
        self._ports[key] = leaf
        self._count_responder_ep(counts, old, -1)
        self._count_responder_ep(counts, ep, +1)

    def _responder_eps_counts(self) -> Dict[Endpoint, int]:
        """How many ports have each responder endpoint: read from `ports`
        once, then kept as ports change, so that setting one of 10,000
        responders costs one map write, not a scan.  The first read also
        makes `responder_eps` (the endpoints the datapath copies HubPort
        initiations from) agree with `ports` (pinned maps of an older
        build may not)."""
        counts = getattr(self, "_eps_counts", None)
        if counts is None:
            counts = {}
            for v in self._ports.values():
                e = read_endpoint(v.ep)
                if e is not None:
                    counts[e] = counts.get(e, 0) + 1
            eps = self.bpf[b"responder_eps"]
            have = {read_endpoint(k): k for k in eps.keys()}
            for e, k in have.items():
                if e not in counts:
                    self._write_responder_ep(e, present=False)
            for e in counts.keys() - have.keys():
                self._write_responder_ep(e, present=True)
            self._eps_counts = counts
        return counts

    def _count_responder_ep(self, counts: Dict[Endpoint, int], ep: Optional[Endpoint],
                            delta: int):
        if ep is None:
            return
        n = counts.get(ep, 0) + delta
        if n > 0:
            counts[ep] = n
        else:
            counts.pop(ep, None)
        if (delta > 0 and n == 1) or n <= 0:
            self._write_responder_ep(ep, present=n > 0)

    def _write_responder_ep(self, ep: Endpoint, present: bool):
        eps = self.bpf[b"responder_eps"]
        k = eps.Key()
        write_endpoint(k, ep)
        if present:
            eps[k] = ct.c_ubyte(1)
        else:
            try:
                del eps[k]
            except KeyError:
                pass

    def remove_responder(self, port: int, flush_sessions: bool = True) -> bool:
        """Stop reflecting for `port`; by default also delete the sessions
        that arrive on it and their reverse entries."""
        key = ct.c_ushort(socket.htons(check_port(port)))
        counts = self._responder_eps_counts()
        current = self._ports.get(key)
        try:
            del self._ports[key]
            found = True
        except KeyError:
            found = False
        if current is not None:
            self._count_responder_ep(counts, read_endpoint(current.ep), -1)
        if flush_sessions:
            c = self.session_columns()
            for k, r in zip(c.keys, c.reverse):
                if k >> 32 == port:
                    bulk.delete(self._sessions.map_fd, _key_bytes(k))
                    if r >> 32:
                        bulk.delete(self._sessions.map_fd, _key_bytes(r))
        return found

    def responders(self) -> Dict[int, Responder]:
        gen = self._nh_gen
        out = {}
        for k, v in self._ports.items():
            port = socket.ntohs(k.value)
            out[port] = Responder(port, read_endpoint(v.ep), self._next_hop(v.nh, gen))
        return out

    # ---- sessions ------------------------------------------------------------
    def _to_session(self, k, v, gen: int) -> Session:
        reverse = None
        if v.reverse.port:
            reverse = (socket.ntohs(v.reverse.port), v.reverse.index)
        return Session(port=socket.ntohs(k.port), index=k.index, dst=read_endpoint(v.dst),
                       src_port=socket.ntohs(v.src_port), expect=read_endpoint(v.expect),
                       reverse=reverse, next_hop=self._next_hop(v.nh, gen), created=v.created,
                       last_seen=v.last_seen, packets=v.packets, bytes=v.bytes, flags=v.flags,
                       max_counter=v.max_counter, via=v.via)

    def sessions(self) -> List[Session]:
        gen = self._nh_gen
        return [self._to_session(k, v, gen) for k, v in _map_items(self._sessions)]

    def _session_batches(self) -> Iterator[bulk.Columns]:
        t = self._sessions
        return bulk.batches(t.map_fd, ct.sizeof(t.Key), ct.sizeof(t.Leaf))

    @functools.cached_property
    def _session_offsets(self) -> Dict[str, int]:
        leaf = self._sessions.Leaf
        return {name: getattr(leaf, name).offset
                for name in ("reverse", "last_seen", "packets", "flags", "src_port", "created",
                             "bytes")}

    def session_columns(self) -> SessionColumns:
        """Every entry's key, link, last_seen, packets and flags, read in
        batches into arrays (spec §8)."""
        off = self._session_offsets
        out = SessionColumns(array("Q"), array("Q"), array("Q"), array("Q"), array("B"),
                             array("Q"), array("Q"), array("H"))
        for b in self._session_batches():
            out.keys.extend(_raw_keys(b.keys, 0, b.key_size))
            out.reverse.extend(_raw_keys(b.values, off["reverse"], b.value_size))
            for name, fmt in (("last_seen", "Q"), ("packets", "Q"), ("flags", "B"),
                              ("created", "Q"), ("bytes", "Q"), ("src_port", "H")):
                getattr(out, name).extend(b.value(off[name], fmt))
        if socket.htons(1) != 1:
            out.src_port.byteswap()    # network order, read as this host's
        return out

    def session_links(self) -> List[SessionLink]:
        c = self.session_columns()
        return [SessionLink(_key_of_raw(k), _key_of_raw(r) if r >> 32 else None, t, n, f)
                for k, r, t, n, f in zip(c.keys, c.reverse, c.last_seen, c.packets, c.flags)]

    def sessions_of_port(self, port: int) -> List[Session]:
        """The entries of one peer port's pairs, decoded (show --port): keyed
        on it (initiator -> responder) or sent from it (responder ->
        initiator); the rest of the table is never decoded."""
        want = socket.htons(check_port(port))
        off = self._session_offsets["src_port"]
        key_t, leaf_t = self._sessions.Key, self._sessions.Leaf
        gen = self._nh_gen
        out = []
        for b in self._session_batches():
            ports, sources = b.key(0, "H"), b.value(off, "H")
            for i in range(b.n):
                if ports[i] == want or sources[i] == want:
                    out.append(self._to_session(key_t.from_buffer_copy(b.key_bytes(i)),
                                                leaf_t.from_buffer_copy(b.value_bytes(i)), gen))
        return out

    def established_pairs(self, columns: Optional[SessionColumns] = None
                          ) -> Dict[Tuple[int, int, int], Tuple[SessionLink, SessionLink]]:
        """(peer port, initiator index, responder index) -> (i2r, r2i) links
        of every established pair (wgmux.status.session_pairs() says which is which)."""
        c = self.session_columns() if columns is None else columns
        hub = self.hub_port
        pos = dict(zip(c.keys, range(len(c.keys))))
        out = {}
        for j, k in enumerate(c.keys):
            if k >> 32 != hub or not c.reverse[j] >> 32:
                continue
            i = pos.get(c.reverse[j])
            if i is None or c.reverse[i] != k:
                continue
            i2r = SessionLink(_key_of_raw(c.keys[i]), _key_of_raw(k), c.last_seen[i],
                              c.packets[i], c.flags[i])
            r2i = SessionLink(_key_of_raw(k), i2r.key, c.last_seen[j], c.packets[j], c.flags[j])
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
                    flags: int = 0, max_counter: int = 0, via: int = 0):
        """Create or replace a session entry from the control plane (the
        mac1 slow path, state rebuilt after a restart, tests).  Replacing
        resets its counters and next hop."""
        key = self._session_key(port, index)
        leaf = self._sessions.Leaf()
        write_endpoint(leaf.dst, as_endpoint(dst))
        write_endpoint(leaf.expect, as_endpoint(expect))
        if reverse is not None:
            leaf.reverse.port = socket.htons(check_port(reverse[0]))
            leaf.reverse.index = reverse[1]
        leaf.src_port = socket.htons(check_port(src_port, "source port"))
        now = monotonic_ns()
        leaf.created = now if created is None else created
        leaf.last_seen = leaf.created if last_seen is None else last_seen
        leaf.flags = flags
        leaf.max_counter = max_counter
        leaf.via = via
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

    def retarget(self, old: EndpointLike, new: EndpointLike, via_port: int,
                 peer_port: Optional[int] = None) -> int:
        """A peer that the hub reaches from its port `via_port` moved from
        `old` to `new` (the control plane learned it, e.g. from the hub's own
        WireGuard): sessions sent to `old` from `via_port` now go to `new`
        (next hop resolved again), and sessions arriving on `via_port` that
        expected `old` now expect `new`.

        `peer_port`: the responder of that peer port is the one that moved.
        Its sessions (the entries arriving on `peer_port` and sent from
        `via_port`, and their reverse ones arriving on `via_port` and sent
        from `peer_port`) also follow from any other port of `old`'s or
        `new`'s address: the datapath may have followed the responder there
        between two reads of the device (a roam, then a second rebinding
        before the device's next report), and sessions left at a mapping
        that is gone would wait for a new handshake.

        Only existing entries are written (a packet counted between the read
        and the write is lost from the counters).  Returns the entries
        changed."""
        from bcc.libbcc import lib

        old, new = as_endpoint(old), as_endpoint(new)
        port = socket.htons(check_port(via_port))
        peer = socket.htons(check_port(peer_port)) if peer_port is not None else None
        near = {old.ip, new.ip}

        def stale(ep: Optional[Endpoint], of_peer: bool) -> bool:
            return ep is not None and (ep == old or (of_peer and ep != new and ep.ip in near))

        changed = 0
        for k, v in self._sessions.items():
            touched = False
            if v.src_port == port and stale(read_endpoint(v.dst), k.port == peer):
                write_endpoint(v.dst, new)
                v.nh.state = 0
                touched = True
            if k.port == port and stale(read_endpoint(v.expect), v.src_port == peer):
                write_endpoint(v.expect, new)
                touched = True
            if touched and lib.bpf_update_elem(self._sessions.map_fd, ct.byref(k), ct.byref(v),
                                               2) == 0:   # BPF_EXIST
                changed += 1
        return changed

    def collect_idle(self, timeout_s: float, half_open_timeout_s: Optional[float] = None,
                     now_ns: Optional[int] = None,
                     columns: Optional[SessionColumns] = None) -> int:
        """Delete sessions idle for longer than `timeout_s`; half-open ones,
        and pairs that have not carried transport both ways, after
        `half_open_timeout_s` (default the same): a forged response must not
        buy a pair the full lifetime.  A linked pair goes as a whole, when
        neither direction has seen a packet for that long: WireGuard
        keepalives make a live pair busy both ways, and deleting one
        direction alone would cut it.  Returns the entries deleted.

        Reads the table as columns (`columns`, if the caller has them);
        only entries idle past the shorter timeout are looked at further."""
        now = monotonic_ns() if now_ns is None else now_ns
        full = int(timeout_s * 1e9)
        half = full if half_open_timeout_s is None else int(half_open_timeout_s * 1e9)
        c = self.session_columns() if columns is None else columns
        cutoff = now - min(half, full)
        idle = [i for i, t in enumerate(c.last_seen) if t < cutoff]
        if not idle:
            return 0
        pos = dict(zip(c.keys, range(len(c.keys))))
        removed = 0
        for i in idle:
            j = pos.get(c.reverse[i]) if c.reverse[i] >> 32 else None
            last = max(c.last_seen[i], c.last_seen[j] if j is not None else 0)
            confirmed = j is not None and c.flags[i] & c.flags[j] & SF_TRANSPORT
            limit = full if confirmed else half
            if now - last > limit and bulk.delete(self._sessions.map_fd, _key_bytes(c.keys[i])):
                removed += 1     # (else the datapath or another collector got there first)
        return removed

    def flush_sessions(self):
        self._sessions.clear()

    def flush_responders(self):
        self._ports.clear()
        self.bpf[b"responder_eps"].clear()
        self._eps_counts: Dict[Endpoint, int] = {}

    # ---- slow path -----------------------------------------------------------
    def poll_slow_path(self, handler, timeout_ms: int = 100):
        """Wait up to timeout_ms for slow-path messages and call
        handler(msg) for each, in this thread; msg is a SlowMessage, or
        the exception that kept one from parsing.  One consumer at a time."""
        self._slow.poll(handler, timeout_ms)

    def drain_slow_path(self) -> List[Union[SlowMessage, Exception]]:
        """Every slow-path message queued now (tests, or dropping a backlog)."""
        return self._slow.drain()

    def responder(self, port: int) -> Optional[Responder]:
        """The responder of one peer port (None: not a peer port)."""
        key = ct.c_ushort(socket.htons(check_port(port)))
        v = self._ports.get(key)
        if v is None:
            return None
        return Responder(int(port), read_endpoint(v.ep), self._next_hop(v.nh, self._nh_gen))

    def insert_session(self, port: int, index: int, dst: EndpointLike, src_port: int,
                       expect: Optional[EndpointLike] = None, via: int = 0) -> str:
        """Open a half-open session (port, index) -> dst, sent from
        src_port (and, translated, from the hub address `via` names),
        unless the key exists: "created", "exists" (the entry there is
        returned by session()) or "full"."""
        key = self._session_key(port, index)
        leaf = self._sessions.Leaf()
        write_endpoint(leaf.dst, as_endpoint(dst))
        write_endpoint(leaf.expect, as_endpoint(expect))
        leaf.src_port = socket.htons(check_port(src_port, "source port"))
        leaf.via = via
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
        key.port = socket.htons(check_port(port))
        if len(public_key) != wire.WG_KEY_SIZE:
            raise ValueError(f"public key of {len(public_key)} bytes")
        ct.memmove(ct.addressof(key.public_key), bytes(public_key), wire.WG_KEY_SIZE)
        return key

    def learn_initiator(self, port: int, public_key: bytes, endpoint: Optional[EndpointLike],
                        index: int, learned: Optional[int] = None):
        t = self.bpf[b"initiators"]
        leaf = t.Leaf()
        write_endpoint(leaf.ep, as_endpoint(endpoint))
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
                                        read_endpoint(v.ep), v.index, v.learned))
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
