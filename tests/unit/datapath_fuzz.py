"""The datapath fuzzer's machinery: states, frame generation and mutation,
the per-frame oracle, and the runner with its reproducer minimizer.

tests/unit/test_datapath_fuzz.py drives it and says what it checks (the
invariants) and how to run it longer or with another seed.  Not a test
module itself (no test_ prefix): it is loaded from there by path.
"""

from __future__ import annotations

import array
import ctypes as ct
import errno
import ipaddress
import os
import random
import socket
import struct
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from harness import golden as g
from wgmux import packet as pk
from wgmux import wire
from harness.testrun import (TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, XDP_PASS, XDP_TX,
                             TestRunResult, test_run)

KINDS = tuple(wire.MessageType)
I, R, C, T = KINDS
U32 = wire.U32_MAX
U64 = (1 << 64) - 1
KNOWN_VERDICTS = (TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT)

# The hub's own addresses (harness.golden's namespace: pub0's, and nofwd0's).
HUB_ADDRESSES = frozenset(map(ipaddress.ip_address, (g.HUB4, g.HUB6, g.NOFWD4)))

# Martian and odd addresses to send from and to (see is_martian()).
ODD_ADDRS4 = ("0.0.0.0", "0.1.2.3", "127.0.0.1", "127.255.255.254", "224.0.0.1",
             "239.255.255.250", "240.0.0.1", "255.255.255.255", "169.254.1.1")
ODD_ADDRS6 = ("::", "::1", "::ffff:192.0.2.1", "::ffff:198.51.100.10", "ff02::1", "ff05::2",
             "fe80::1")

INDICES = (g.I_IDX, g.R_IDX, g.STRANGER_IDX, 0, 1, 0x7FFFFFFF, 0x80000000, U32)
PORTS = (g.HUB_PORT, g.P, g.P_NOEP, g.OTHER_PORT, 0, 1, 65535)
ROAM_WINDOW = 8192      # counters at and around it exercise a roaming window


MARTIAN_NETS = tuple(map(ipaddress.ip_network, (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/64", "fe80::/10", "ff00::/8")))


def is_martian(addr) -> bool:
    """No peer can be there (docs/spec.md §3): IPv4 0/8, 127/8,
    169.254/16, 224/4, 240/4 (the limited broadcast included); IPv6 ::/64
    (unspecified, loopback, IPv4-mapped and -compatible), fe80::/10,
    ff00::/8; and the hub's own addresses."""
    a = ipaddress.ip_address(addr)
    return a in HUB_ADDRESSES or any(a in net for net in MARTIAN_NETS if net.version == a.version)


# ---- states ---------------------------------------------------------------

@dataclass(frozen=True)
class State:
    name: str
    classifier: wire.Classifier
    setup: Callable[[g.Env], None]
    roaming: bool = True


def _steps(*setups) -> Callable[[g.Env], None]:
    def _setup(env: g.Env):
        for s in setups:
            s(env)
    return _setup


def _session(port, index, dst, src_port, expect=None):
    return lambda env: env.dp.set_session(port, index, dst, src_port, expect=expect)


def _responder(port, ep=()):
    return lambda env: env.dp.set_responder(port, *ep)


def _fill_sessions(env: g.Env):
    """Half-open entries on P until the table refuses more: a response
    must then find it full."""
    for i in range(env.dp.max_sessions + 1):
        if env.dp.insert_session(g.P, 0x50000000 + i, g.E_R, g.HUB_PORT, expect=g.E_I) == "full":
            return


STATES = (
    State("wg_established", wire.WIREGUARD, g.with_established),
    State("wg_established6", wire.WIREGUARD, g.with_established6),
    State("wg_half_open", wire.WIREGUARD, g.with_half_open),
    # responder-initiated: the slow path opened (P, R's sender) -> E_R
    State("wg_half_open_from_r", wire.WIREGUARD,
          _steps(g.with_responder, _session(g.P, g.R_IDX, g.E_R, g.HUB_PORT, expect=g.E_I))),
    State("wg_responders", wire.WIREGUARD, g.with_responder),
    State("wg_responder6", wire.WIREGUARD, _steps(_responder(g.P, g.E_R6), _responder(g.P_NOEP))),
    State("wg_established_no_roaming", wire.WIREGUARD, g.with_established, roaming=False),
    # v6 pair, a v4 half-open entry, entries towards odd next hops
    State("awg2_mixed", g.AWG2,
          _steps(g.with_established6,
                 _session(g.HUB_PORT, U32, g.E_I, g.P, expect=g.E_R),
                 _session(g.P, 0, g.E_NO_NEIGH, g.HUB_PORT, expect=g.E_I),
                 _session(g.P, 1, g.E_BLACKHOLE, g.HUB_PORT, expect=g.E_I))),
    State("awg2_established", g.AWG2, g.with_established),
    State("awg1_established", g.AWG1, g.with_established),
    State("awg3_half_open", g.AWG3, g.with_half_open),
    State("wg_table_full", wire.WIREGUARD, _steps(g.with_half_open, _fill_sessions)),
)
STATE_BY_NAME = {s.name: s for s in STATES}


# ---- raw map reads ----------------------------------------------------------

class RawTable:
    """A whole (small) map in one BPF_MAP_LOOKUP_BATCH into buffers made
    once: a few microseconds, where bcc's item views cost ~100 us."""

    def __init__(self, table):
        from bcc.libbcc import lib

        self._lib = lib
        self._fd = table.map_fd
        self.n = int(table.max_entries)
        self.Key, self.Leaf = table.Key, table.Leaf
        self.ksz, self.vsz = ct.sizeof(table.Key), ct.sizeof(table.Leaf)
        self._keys = ct.create_string_buffer(self.ksz * self.n)
        self._vals = ct.create_string_buffer(self.vsz * self.n)
        self._in, self._out, self._cnt = ct.c_uint32(0), ct.c_uint32(0), ct.c_uint32(0)

    def read(self) -> Tuple[bytes, bytes]:
        """(keys, values) as the kernel copied them out, entries back to back."""
        total = 0
        while total < self.n:
            self._cnt.value = self.n - total
            rc = self._lib.bpf_lookup_batch(
                self._fd, ct.byref(self._in) if total else None, ct.byref(self._out),
                ct.byref(self._keys, self.ksz * total), ct.byref(self._vals, self.vsz * total),
                ct.byref(self._cnt))
            err = ct.get_errno()
            total += self._cnt.value
            if rc != 0:
                if err != errno.ENOENT:
                    raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
                break
            if self._cnt.value == 0:
                break
            self._in.value = self._out.value
        return (ct.string_at(self._keys, self.ksz * total),
                ct.string_at(self._vals, self.vsz * total))


class Counters:
    """The per-CPU `counters` array as one array of u64, and the per-name
    difference of two reads."""

    def __init__(self, dp, names: Sequence[str]):
        self.raw = RawTable(dp.bpf[b"counters"])
        self.names = tuple(names)
        self.ncpu = self.raw.vsz // 8

    def read(self) -> array.array:
        keys, vals = self.raw.read()
        if len(keys) != 4 * len(self.names):
            raise RuntimeError(f"counters map has {len(keys) // 4} slots, the source names "
                               f"{len(self.names)}: compiled from another wgmux.c?")
        return array.array("Q", vals)

    def deltas(self, before: array.array, after: array.array) -> Dict[str, int]:
        out: Dict[str, int] = {}
        if before == after:
            return out
        for i, (a, b) in enumerate(zip(before, after)):
            if a != b:
                name = self.names[i // self.ncpu]
                out[name] = out.get(name, 0) + b - a
        return out


class Sessions:
    """The `sessions` map as raw bytes after each frame; keys decoded when
    they change, a full entry only for a frame that was reflected."""

    def __init__(self, dp):
        self.dp = dp
        self.raw = RawTable(dp.bpf[b"sessions"])
        self.data = (b"", b"")
        self._keys: Dict[Tuple[int, int], int] = {}

    def refresh(self):
        data = self.raw.read()
        if data[0] != self.data[0]:
            ks = self.raw.ksz
            karr = (self.raw.Key * (len(data[0]) // ks)).from_buffer_copy(data[0])
            self._keys = {(socket.ntohs(k.port), k.index): i for i, k in enumerate(karr)}
        self.data = data

    def keys(self) -> Dict[Tuple[int, int], int]:
        """(port, index) -> slot in the current raw read."""
        return self._keys

    def current(self, key):
        return self.entry(self.data, self._keys, key)

    def entry(self, data: Tuple[bytes, bytes], keys: Dict[Tuple[int, int], int], key):
        """The wgmux.model.Session of `key` in an earlier read, or None."""
        i = keys.get(key)
        if i is None:
            return None
        k = self.raw.Key.from_buffer_copy(data[0], i * self.raw.ksz)
        v = self.raw.Leaf.from_buffer_copy(data[1], i * self.raw.vsz)
        return self.dp._to_session(k, v, 0)


# ---- the oracle -------------------------------------------------------------

def udp_csum_state(f: pk.Frame) -> str:
    """zero | ok | partial (the field holds the pseudo-header sum) | bad"""
    if f.udp_checksum == 0:
        return "zero"
    if f.udp_checksum_ok():
        return "ok"
    if f.udp_checksum_partial():
        return "partial"
    return "bad"


def _l4_offset(frame: bytes) -> int:
    if frame[12:14] == b"\x08\x00":
        return pk.ETH_HLEN + (frame[14] & 0x0F) * 4
    return pk.ETH_HLEN + pk.IPV6_HLEN


def check_frame(frame: bytes, res: Optional[TestRunResult], error: Optional[str],
                delta: Dict[str, int], classifier: wire.Classifier,
                session_before: Callable[[Tuple[int, int]], object]) -> List[Tuple[str, str]]:
    """What is wrong with the program's handling of one frame, as
    (check, explanation) pairs (checks: see the test module's docstring).

    delta: counter name -> change over the frame; session_before(key): the
    session (wgmux.model.Session or alike: .dst, .src_port) the maps held
    under (port, index) before the frame, or None."""
    problems: List[Tuple[str, str]] = []
    if error is not None:
        return [("verdict", f"the run failed: {error}")]
    ret, out = res.retval, res.data
    if ret not in KNOWN_VERDICTS:
        problems.append(("verdict", f"returned {ret}, not a TC verdict this program may give"))
    # only an IPv4 frame translated to IPv6 grows, by the header difference
    # (and may be dropped after that, e.g. too big: nobody sees it)
    grows = pk.IPV6_HLEN - pk.IPV4_HLEN if frame[12:14] == b"\x08\x00" else 0
    if len(out) > len(frame) + (grows if ret in (TC_ACT_REDIRECT, TC_ACT_SHOT) else 0):
        problems.append(("length", f"output {len(out)} bytes, input {len(frame)}"))

    verdicts = {k: v for k, v in delta.items() if not k.startswith(("ev_", "sp_"))}
    name = next(iter(verdicts)) if len(verdicts) == 1 else None
    if name is None or verdicts[name] != 1:
        problems.append(("counters", f"verdict counter deltas {verdicts or 'none'}"))
    else:
        want = (TC_ACT_REDIRECT if name.startswith("reflect_") else
                TC_ACT_OK if name.startswith("pass_") else
                TC_ACT_SHOT if name.startswith("drop_") else None)
        if (ret == TC_ACT_REDIRECT) != name.startswith("reflect_") or want not in (None, ret):
            problems.append(("counters", f"counted {name} but returned {ret}"))
    odd = {k: v for k, v in delta.items() if v < 0 or k.startswith("sp_")}
    if odd:
        problems.append(("counters", f"counters went down or the datapath touched sp_ ones: {odd}"))

    if ret != TC_ACT_REDIRECT:
        if out != frame:
            # dropped: nobody sees the change, but it is one all the same
            problems.append(("unchanged" if ret != TC_ACT_SHOT else "unchanged_dropped",
                             f"verdict {ret} ({name}) but the frame was modified: "
                             f"{_first_diff(frame, out)}"))
        return problems
    return problems + check_reflection(frame, out, name, classifier, session_before)


def translated_source(version: int, via: int, arrival=None):
    """The hub address a packet reflected as IP `version` leaves from
    (docs/spec.md §4b, §4c): the one `via` counts to among the hub's
    addresses of that family in address order, else (via 0 or past them)
    the address it arrived at when it keeps its family (`arrival`), the
    first when it changes family."""
    same = sorted(a for a in map(ipaddress.ip_address, HUB_ADDRESSES) if a.version == version)
    if 0 < via <= len(same):
        return same[via - 1]
    return ipaddress.ip_address(arrival) if arrival is not None else same[0]


def kernel_refuses(frame: bytes) -> bool:
    """Test-run itself rejects (EINVAL) an IPv4/IPv6 frame too short for
    the IP header (recent kernels): such frames never reach the program."""
    return ((frame[12:14] == b"\x08\x00" and len(frame) < pk.ETH_HLEN + pk.IPV4_HLEN)
            or (frame[12:14] == b"\x86\xdd" and len(frame) < pk.ETH_HLEN + pk.IPV6_HLEN))


def _first_diff(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at byte {i}: {x:#04x} -> {y:#04x}"
    return f"lengths {len(a)} -> {len(b)}"


def check_reflection(frame: bytes, out: bytes, counted: Optional[str],
                     classifier: wire.Classifier,
                     session_before: Callable[[Tuple[int, int]], object]
                     ) -> List[Tuple[str, str]]:
    problems: List[Tuple[str, str]] = []

    def bad(what: str, check: str = "reflect"):
        problems.append((check, what))

    try:
        fi, fo = pk.parse(frame), pk.parse(out)
    except ValueError as e:
        return [("reflect", f"reflected a frame that does not parse: {e}")]
    if fi.sport is None or fo.sport is None:
        return [("reflect", f"reflected something that is not UDP in and out "
                            f"(in proto {fi.proto}, out proto {fo.proto})")]
    # a session of the other family: the outer header was replaced (§4b)
    translated = fi.version != fo.version

    # well-formed
    if frame[14] >> 4 != fi.version:
        bad(f"IP version {frame[14] >> 4} under the ethertype of IPv{fi.version}", "bad_ip")
    l4 = _l4_offset(out)
    if fo.version == 4:
        tot_len, = struct.unpack_from("!H", fo.ip_header, 2)
        if len(fo.ip_header) != pk.IPV4_HLEN:
            bad(f"IPv4 header of {len(fo.ip_header)} bytes (options) reflected")
        if tot_len != len(fo.ip_header) + fo.udp_length or pk.ETH_HLEN + tot_len > len(out):
            bad(f"IPv4 total length {tot_len}, UDP length {fo.udp_length}, frame {len(out)}")
        if not fo.ip_checksum_ok():
            bad("IPv4 header checksum wrong" + (" (it was wrong in the input too)"
                                                 if not fi.ip_checksum_ok() else ""),
                "bad_ip" if not fi.ip_checksum_ok() else "reflect")
        if translated:
            # from IPv6: version/IHL 0x45, TOS the traffic class, no DF
            # (the identification is the datapath's to choose)
            first, = struct.unpack_from("!I", fi.ip_header, 0)
            frag, = struct.unpack_from("!H", fo.ip_header, 6)
            if (fo.ip_header[0] != 0x45 or fo.ip_header[1] != (first >> 20) & 0xFF or frag
                    or fo.proto != pk.IPPROTO_UDP):
                bad(f"translated IPv4 header {fo.ip_header[:10].hex()} from IPv6 "
                    f"{fi.ip_header[:8].hex()}")
        else:
            frag, = struct.unpack_from("!H", fi.ip_header, 6)
            if frag & (pk.IP_MF | pk.IP_OFFSET_MASK):
                bad(f"a fragment reflected (flags/offset {frag:#06x})")
            if fo.ip_header[:8] != fi.ip_header[:8] or fo.proto != fi.proto:
                bad("IPv4 fields other than TTL, checksum and addresses changed")
    else:
        plen, = struct.unpack_from("!H", fo.ip_header, 4)
        if plen != fo.udp_length or l4 + fo.udp_length > len(out):
            bad(f"IPv6 payload length {plen}, UDP length {fo.udp_length}, frame {len(out)}")
        if translated:
            # from IPv4: traffic class the TOS, flow label 0, next header UDP
            if out[14:18] != struct.pack("!I", 0x60000000 | fi.ip_header[1] << 20) \
                    or out[20] != pk.IPPROTO_UDP:
                bad(f"translated IPv6 header {out[14:22].hex()} from IPv4 "
                    f"{fi.ip_header[:10].hex()}")
        elif out[14:21] != frame[14:21]:
            bad("IPv6 fields other than hop limit and addresses changed")
    if fo.udp_length < pk.UDP_HLEN or len(fo.udp_segment) != fo.udp_length:
        bad(f"UDP length {fo.udp_length}, segment {len(fo.udp_segment)} bytes")
    if fo.udp_length != fi.udp_length:
        bad(f"UDP length {fi.udp_length} -> {fo.udp_length}")
    cin, cout = udp_csum_state(fi), udp_csum_state(fo)
    if cin != cout:
        bad(f"UDP checksum was {cin} ({fi.udp_checksum:#06x}), is {cout} "
            f"({fo.udp_checksum:#06x})")
    elif cout == "zero" and fo.version == 6:
        bad("UDP checksum zero over IPv6 (as it came in)", "udp_zero_v6")
    elif cout == "bad":
        bad(f"UDP checksum wrong (as it came in: {fi.udp_checksum:#06x})", "udp_checksum")

    # the message: one kind, its size, untouched
    kind, off = classifier.classify(fo.payload)
    if kind is None or kind is I:
        bad(f"the payload classifies as {kind}: not a message the datapath reflects")
    elif counted != f"reflect_{kind.name.lower()}":
        bad(f"the payload is a {kind.name.lower()}, counted as {counted}")
    if out[l4 + pk.UDP_HLEN:] != frame[_l4_offset(frame) + pk.UDP_HLEN:]:
        bad(f"UDP payload changed: {_first_diff(frame[_l4_offset(frame) + 8:], out[l4 + 8:])}")

    # where it goes
    if fo.ttl != fi.ttl - 1:
        bad(f"TTL {fi.ttl} -> {fo.ttl}")
    if kind is not None and kind is not I:
        index, = struct.unpack_from("<I", fi.payload, off + wire.RECEIVER_OFFSETS[kind])
        s = session_before((fi.dport, index))
        if s is None:
            bad(f"({fi.dport}, {index:#x}) was no session before the frame")
        else:
            if s.dst is None or (fo.dst, fo.dport) != (s.dst.ip, s.dst.port):
                bad(f"sent to {fo.dst}:{fo.dport}, the session's dst is {s.dst}")
            if fo.sport != s.src_port:
                bad(f"sent from port {fo.sport}, the session's is {s.src_port}")
            if translated and fo.src != translated_source(fo.version, s.via):
                bad(f"translated from {fo.src}, not the hub address its via ({s.via}) names")
            elif not translated and ipaddress.ip_address(fo.src) != translated_source(
                    fo.version, s.via, fi.dst):
                bad(f"source {fo.src}: neither the hub address its via ({s.via}) names nor, "
                    f"without one, the address the input was sent to ({fi.dst})")
    if fi.dst not in HUB_ADDRESSES:
        bad(f"the input was addressed to {fi.dst}, not to a hub address", "hub_address")
    if is_martian(fo.dst):
        bad(f"reflected to the martian address {fo.dst}", "martian")
    return problems


# ---- frame generation -------------------------------------------------------

def _u(v: int, bits: int) -> int:
    return v % (1 << bits)


# Header fields by name: (offset, size); "udp.*" offsets are from the UDP header.
FIELDS4 = (("ethertype", 12, 2), ("version/ihl", 14, 1), ("tos", 15, 1),
           ("total length", 16, 2), ("id", 18, 2), ("flags/fragment", 20, 2), ("ttl", 22, 1),
           ("protocol", 23, 1), ("ip checksum", 24, 2), ("source", 26, 4),
           ("destination", 30, 4))
FIELDS6 = (("ethertype", 12, 2), ("version/class/flow", 14, 4), ("payload length", 18, 2),
           ("next header", 20, 1), ("hop limit", 21, 1), ("source", 22, 16),
           ("destination", 38, 16))
FIELDS_UDP = (("udp.source port", 0, 2), ("udp.destination port", 2, 2), ("udp.length", 4, 2),
              ("udp.checksum", 6, 2))
SPECIAL = {
    "ethertype": (pk.ETH_P_IP, pk.ETH_P_IPV6, pk.ETH_P_ARP, 0x8100, 0x88A8, 0, 0x05DC),
    "version/ihl": (0x45, 0x46, 0x4F, 0x44, 0x40, 0x41, 0x65, 0x55, 0x05, 0xF5),
    "flags/fragment": (pk.IP_MF, 1, pk.IP_DF, 0x8000, pk.IP_DF | pk.IP_MF, 0x3FFF,
                       pk.IP_OFFSET_MASK, pk.IP_MF | 1, pk.IP_DF | 1, 0),
    "ttl": (0, 1, 2, 255), "hop limit": (0, 1, 2, 255),
    "protocol": (pk.IPPROTO_UDP, pk.IPPROTO_TCP, pk.IPPROTO_ICMP, 0, 58, 136, 255),
    "next header": (pk.IPPROTO_UDP, 0, 43, pk.IPPROTO_FRAGMENT, 50, 59, 60, pk.IPPROTO_TCP,
                    pk.IPPROTO_ICMPV6, 136),
    "version/class/flow": (0x60000000, 0x6FFFFFFF, 0x40000000, 0x70000000, 0, 0x45000000),
    "udp.source port": PORTS, "udp.destination port": PORTS,
    "udp.checksum": (0, 0xFFFF),
}


class FrameGen:
    """Frames for one run: valid ones from golden's builders (initiations,
    responses, cookies, transport to live and dead indices, to HubPort,
    peer ports and other ports, IPv4 and IPv6), most of them mutated, and
    some fully random."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.last_counter: Dict[Tuple[int, int], int] = {}
        self.recent: deque = deque(maxlen=16)     # sources used lately: sessions roam there

    # -- addresses and ports
    def _rand_addr(self, v6: bool) -> str:
        return str(ipaddress.ip_address(self.rng.getrandbits(128 if v6 else 32)))

    def source(self, v6: bool) -> Tuple[str, int]:
        rng = self.rng
        r = rng.random()
        if r < 0.72:
            known = ([g.E_I6, g.E_R6, ("2001:db8:dead::1", 51820)] if v6 else
                     [g.E_I, g.E_R, g.E_I_MOVED, g.E_NO_NEIGH, g.E_BLACKHOLE])
            known += [e for e in self.recent if (":" in e[0]) == v6]
            ep = rng.choice(known)
            if rng.random() < 0.12:          # NAT rebinding: same address, new port
                ep = (ep[0], rng.choice((rng.randrange(65536), 0, 65535)))
        elif r < 0.84:
            ep = (rng.choice(ODD_ADDRS6 if v6 else ODD_ADDRS4), rng.randrange(65536))
        elif r < 0.89:                       # the hub's own address
            ep = (g.HUB6 if v6 else g.HUB4, rng.choice((g.HUB_PORT, g.P, rng.randrange(65536))))
        else:
            ep = (self._rand_addr(v6), rng.randrange(65536))
        self.recent.append(ep)
        return ep

    def address(self, v6: bool) -> str:
        """Where a frame is sent: mostly the hub."""
        rng = self.rng
        if rng.random() < 0.88:
            return g.HUB6 if v6 else g.HUB4
        if v6:
            return rng.choice(ODD_ADDRS6 + (g.GW6, g.E_R6[0], self._rand_addr(True)))
        return rng.choice(ODD_ADDRS4 + (g.GW4, g.E_R[0], g.NOFWD4, self._rand_addr(False)))

    def port(self) -> int:
        rng = self.rng
        port = rng.choices((g.HUB_PORT, g.P, g.P_NOEP, g.OTHER_PORT, -1, -2),
                           weights=(36, 36, 8, 6, 8, 6))[0]
        if port == -1:
            return rng.randrange(65536)
        if port == -2:
            return rng.choice((0, 1, 65535))
        return port

    # -- indices and counters
    def receiver(self, live: Sequence[Tuple[int, int]], dport: int) -> int:
        rng = self.rng
        r = rng.random()
        here = [k for k in live if k[0] == dport]
        if here and r < 0.6:
            return rng.choice(here)[1]
        if live and r < 0.72:
            return rng.choice(live)[1]
        if r < 0.9:
            return rng.choice(INDICES)
        return rng.getrandbits(32)

    def sender(self, live: Sequence[Tuple[int, int]]) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.45:
            return rng.getrandbits(32)
        if live and r < 0.7:
            return rng.choice(live)[1]
        return rng.choice(INDICES)

    def counter(self, key: Tuple[int, int], session=None) -> int:
        """A transport counter: at edges, random, or around the highest the
        session has seen (where a datapath that keeps it says so, else the
        highest sent to it here)."""
        rng = self.rng
        last = getattr(session, "max_counter", None)
        if last is None:
            last = self.last_counter.get(key)
        if last is not None and rng.random() < 0.6:
            v = rng.choice((last + 1, last + 1, last + 2, last + rng.randint(1, ROAM_WINDOW),
                            last + ROAM_WINDOW - 1, last + ROAM_WINDOW, last + ROAM_WINDOW + 1,
                            last, last - 1))
        else:
            v = rng.choice((0, 1, 2, U64, U64 - 1, 1 << 63, rng.getrandbits(64),
                            rng.getrandbits(16)))
        v = min(max(v, 0), U64)
        self.last_counter[key] = max(v, last or 0)
        return v

    # -- the message
    def header(self, cls: wire.Classifier, kind) -> int:
        rng = self.rng
        lo, hi = cls.headers[kind]
        if rng.random() < 0.75:
            v = rng.choice((lo, hi, rng.randint(lo, hi)))
        else:
            others = tuple(x for k in KINDS for x in cls.headers[k])
            v = rng.choice((lo - 1, hi + 1, lo + 1, hi - 1, 0, U32, rng.getrandbits(32)) + others)
        return min(max(v, 0), U32)

    def prefix(self, cls: wire.Classifier, kind) -> bytes:
        s = cls.prefixes[kind]
        if self.rng.random() < 0.92:
            return g.rand(s)
        return g.rand(max(0, self.rng.choice((s - 1, s + 1, 0, s + 4))))

    def data_len(self) -> int:
        rng = self.rng
        return rng.choice((0, rng.randint(1, 64), rng.randint(1, 64), rng.randint(64, 300),
                           rng.randint(300, 1400) if rng.random() < 0.3 else 16))

    def payload(self, cls: wire.Classifier, kind, live, dport: int, recv: Optional[int],
                session=None) -> Tuple[bytes, str]:
        rng = self.rng
        if kind is None:
            sizes = [cls.prefixes[k] + k.size + d for k in KINDS for d in (-1, 0, 1)]
            n = rng.choice(sizes + [rng.randint(0, 300)])
            return g.rand(max(n, 0)), "junk"
        kw = dict(header=self.header(cls, kind), prefix=self.prefix(cls, kind))
        if kind is I:
            m = g.initiation(self.sender(live), **kw)
        elif kind is R:
            m = g.response(self.sender(live), recv, **kw)
        elif kind is C:
            m = g.cookie(recv, **kw)
        else:
            m = g.transport(recv, n=self.data_len(), counter=self.counter((dport, recv), session),
                            **kw)
        how = kind.name.lower()
        if rng.random() < 0.12:              # the wrong size for its type
            other = rng.choice(KINDS)
            n = rng.choice((len(m) - 1, len(m) + 1, len(m) - 4,
                            cls.prefixes[other] + other.size, rng.randint(0, len(m))))
            m = m[:n] if n <= len(m) else m + g.rand(n - len(m))
            how += f" resized to {n}"
        return m, how

    # -- the frame
    def frame(self, cls: wire.Classifier, live: Sequence[Tuple[int, int]],
              session_of: Callable[[Tuple[int, int]], object] = lambda key: None
              ) -> Tuple[bytes, str, str]:
        """(frame, ingress device, how it was made).  live: the session
        keys now; session_of(key): that session (its expect endpoint is
        where its packets mostly come from)."""
        rng = self.rng
        if rng.random() < 0.04:
            return self.random_frame(), "pub0", "random bytes"
        dport = self.port()
        kind = rng.choices(KINDS + (None,), weights=(20, 20, 15, 40, 5))[0]
        recv = self.receiver(live, dport) if kind in (R, C, T) else None
        s = session_of((dport, recv)) if recv is not None else None
        if s is not None and s.expect is not None and rng.random() < 0.7:
            src, v6 = (str(s.expect.ip), s.expect.port), s.expect.ip.version == 6
        else:
            v6 = rng.random() < 0.3
            src = self.source(v6)
        dev, dst = "pub0", (self.address(v6), dport)
        if not v6 and rng.random() < 0.03:
            dev, dst = "nofwd0", (g.NOFWD4, dport)
        payload, how = self.payload(cls, kind, live, dport, recv, s)
        kw = self.ip_options(src, dst, payload, v6)
        f = bytearray(g.inbound(src, dst, payload, **kw))
        muts = self.mutate(f, v6)
        how = (f"{how} {src[0]}:{src[1]} -> {dst[0]}:{dst[1]} on {dev} {kw}"
               + (f" mutated: {', '.join(muts)}" if muts else ""))
        return bytes(f), dev, how

    def ip_options(self, src, dst, payload: bytes, v6: bool) -> dict:
        rng = self.rng
        kw: dict = {"ttl": rng.choices((64, 1, 2, 0, 255, rng.randrange(256)),
                                       weights=(80, 5, 5, 3, 3, 4))[0]}
        r = rng.random()
        if r < 0.06:
            kw["udp_csum"] = False
        elif r < 0.1:
            kw["udp_csum"] = g.partial_csum(src, dst, payload)
        elif r < 0.13:
            kw["udp_csum"] = rng.choice((0xFFFF, rng.randrange(65536)))
        if rng.random() < 0.03:
            kw["udp_length"] = pk.UDP_HLEN + len(payload) + rng.choice((-1, 1, -8, 100))
            kw["udp_length"] = _u(kw["udp_length"], 16)
        if v6:
            if rng.random() < 0.1:
                kw.update(traffic_class=rng.randrange(256), flow_label=rng.randrange(1 << 20))
            return kw
        r = rng.random()
        if r < 0.03:
            kw["options"] = rng.choice((b"\x01\x01\x01\x00", b"\x94\x04\x00\x00", g.rand(8)))
        elif r < 0.06:
            kw["flags"] = rng.choice((pk.IP_MF, 0, pk.IP_MF | pk.IP_DF))
        elif r < 0.08:
            kw["frag_offset"] = rng.choice((1, 185, pk.IP_OFFSET_MASK))
        if rng.random() < 0.1:
            kw["tos"] = rng.randrange(256)
        return kw

    def random_frame(self) -> bytes:
        rng = self.rng
        f = bytearray(rng.randbytes(rng.choice((rng.randint(14, 120), rng.randint(14, 1500)))))
        if rng.random() < 0.6:
            v6 = rng.random() < 0.4
            f[12:14] = struct.pack("!H", pk.ETH_P_IPV6 if v6 else pk.ETH_P_IP)
            if len(f) > 14 and rng.random() < 0.7:
                f[14] = 0x60 | (f[14] & 0x0F) if v6 else 0x45
            if rng.random() < 0.5:
                at = 20 if v6 else 23
                if len(f) > at:
                    f[at] = pk.IPPROTO_UDP
        return bytes(f)

    # -- mutations
    def mutate(self, f: bytearray, v6: bool) -> List[str]:
        rng = self.rng
        if rng.random() < 0.45:
            return []
        done = [rng.choices((self._field, self._flip, self._truncate, self._extend),
                            weights=(55, 20, 15, 10))[0](f, v6)
                for _ in range(rng.choice((1, 1, 1, 2, 2, 3)))]
        if not v6 and rng.random() < 0.5 and _fix_ip_checksum(f):
            done.append("IPv4 checksum recomputed")
        if rng.random() < 0.25 and _fix_udp_checksum(f):
            done.append("UDP checksum recomputed")
        return done

    def _field(self, f: bytearray, v6: bool) -> str:
        rng = self.rng
        l4 = _l4_offset(bytes(f[:15])) if len(f) > 14 else 34
        fields = (FIELDS6 if v6 else FIELDS4) + tuple((n, l4 + o, s) for n, o, s in FIELDS_UDP)
        name, off, size = rng.choice(fields)
        if off + size > len(f):
            return f"{name} (beyond the end)"
        bits = 8 * size
        cur = int.from_bytes(f[off:off + size], "big")
        values = [0, (1 << bits) - 1, cur + 1, cur - 1, cur ^ (1 << rng.randrange(bits)),
                  rng.getrandbits(bits)]
        values += SPECIAL.get(name, ())
        if name in ("source", "destination"):
            values += [int(ipaddress.ip_address(a)) for a in (ODD_ADDRS6 if v6 else ODD_ADDRS4)]
            values += [int(ipaddress.ip_address(g.HUB6 if v6 else g.HUB4))]
        elif name == "total length":
            values += [len(f) - 14, len(f) - 13, len(f) - 15, 20, 28]
        elif name == "payload length":
            values += [len(f) - 54, len(f) - 53, len(f) - 55, 8]
        elif name == "udp.length":
            values += [len(f) - l4, len(f) - l4 + 1, len(f) - l4 - 1, 7, 8]
        v = _u(rng.choice(values), bits)
        f[off:off + size] = v.to_bytes(size, "big")
        return f"{name}={v:#x}"

    def _flip(self, f: bytearray, v6: bool) -> str:
        rng = self.rng
        end = len(f) if rng.random() < 0.3 else min(len(f), (54 if v6 else 34) + 8 + 64)
        at = rng.randrange(end)
        bit = rng.randrange(8)
        f[at] ^= 1 << bit
        return f"bit {bit} of byte {at} flipped"

    def _truncate(self, f: bytearray, v6: bool) -> str:
        rng = self.rng
        l4 = 54 if v6 else 34
        cuts = [15, l4 - 1, l4, l4 + 1, l4 + 7, l4 + 8, l4 + 9, l4 + 12, l4 + 19, l4 + 20,
                len(f) - 1, rng.randrange(14, len(f) + 1)]
        n = max(14, min(len(f), rng.choice(cuts)))
        del f[n:]
        return f"truncated to {n}"

    def _extend(self, f: bytearray, v6: bool) -> str:
        n = self.rng.choice((1, 2, 6, 18, self.rng.randint(1, 64)))
        f.extend(b"\0" * n if self.rng.random() < 0.5 else self.rng.randbytes(n))
        return f"{n} bytes appended"


def _fix_ip_checksum(f: bytearray) -> bool:
    if f[12:14] != b"\x08\x00" or len(f) < 15:
        return False
    end = 14 + (f[14] & 0x0F) * 4
    if end < 34 or end > len(f):
        return False
    f[24:26] = b"\0\0"
    f[24:26] = struct.pack("!H", pk.checksum(bytes(f[14:end])))
    return True


def _fix_udp_checksum(f: bytearray) -> bool:
    try:
        p = pk.parse(bytes(f))
    except ValueError:
        return False
    if p.sport is None or len(p.udp_segment) != p.udp_length or p.udp_length < pk.UDP_HLEN:
        return False
    at = _l4_offset(bytes(f)) + 6
    seg = p.udp_segment[:6] + b"\0\0" + p.udp_segment[8:]
    f[at:at + 2] = struct.pack("!H", pk.udp_checksum(p.src, p.dst, seg))
    return True


# ---- the runner -------------------------------------------------------------

@dataclass
class Violation:
    check: str
    text: str
    number: int                        # frame number in the run
    state: str
    frame: bytes
    dev: str
    how: str
    history: List[Tuple[bytes, str]]   # frames since the state was set up
    also: List[str]                    # the other checks the frame violated
    reproducer: Optional[List[Tuple[bytes, str]]] = None   # minimized: history subset + frame

    def describe(self) -> str:
        lines = [f"[{self.check}] frame {self.number}, state {self.state}: {self.text}"
                 + (f" (also violates {', '.join(self.also)})" if self.also else ""),
                 f"  made as: {self.how}"]
        if self.reproducer is not None:
            lines.append(f"  reproducer: state {self.state}, then {len(self.reproducer)} "
                         f"frame(s), the last one fails:")
            for f, dev in self.reproducer:
                lines.append(f"    {dev} {describe_frame(f)}\n      {f.hex()}")
        return "\n".join(lines)


def describe_frame(frame: bytes) -> str:
    try:
        f = pk.parse(frame)
    except ValueError as e:
        return f"<{len(frame)} bytes, unparsable: {e}>"
    if f.version == 0:
        return f"<{len(frame)} bytes, ethertype {f.ethertype:#06x}>"
    return (f"IPv{f.version} {f.src}:{f.sport} -> {f.dst}:{f.dport} ttl={f.ttl} "
            f"proto={f.proto} len={len(frame)}")


@dataclass
class Result:
    seed: int
    frames: int = 0
    seconds: float = 0.0
    resets: int = 0
    refused: int = 0
    verdicts: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    xdp_tx: int = 0          # frames the XDP program finished itself (xdp=True)
    violations: Counter = field(default_factory=Counter)     # check -> frames
    # check -> the violation with the fewest other checks violated with it,
    # then the fewest earlier frames (in 64s), then the shortest; its
    # reproducer minimized
    first: Dict[str, Violation] = field(default_factory=dict)

    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds else 0.0
        lines = [f"datapath fuzz: seed {self.seed:#x}, {self.frames} frames in "
                 f"{self.seconds:.1f} s ({rate:.0f} frames/s), {self.resets} state resets, "
                 f"{self.refused} refused by test-run (IP header cut short)"
                 + (f", {self.xdp_tx} finished by XDP (XDP_TX)" if self.xdp_tx else ""),
                 "  verdicts: " + ", ".join(f"{k} {v}" for k, v in self.verdicts.most_common()),
                 "  events: " + ", ".join(f"{k} {v}" for k, v in self.events.most_common())]
        for check, n in sorted(self.violations.items()):
            lines.append(f"  violated {check}: {n} frames; the simplest:")
            lines.append("    " + self.first[check].describe().replace("\n", "\n    "))
        return "\n".join(lines)


class Fuzzer:
    """Runs generated frames through the loaded program, state by state.

    Every EPOCH frames it sets up one of STATES afresh (or, one time in
    four, keeps what the frames before made of the maps).  The sessions map
    is read raw after every frame, so each reflection is judged against the
    entries as they were just before it."""

    EPOCH = 256
    KEEP_STATE = 0.25
    MAX_HISTORY = 4 * EPOCH          # longer histories: the state is set up afresh
    MINIMIZE_RUNS = 150

    def __init__(self, env: g.Env, seed: int, counter_names: Sequence[str], xdp: bool = False):
        """`xdp`: every frame goes through the XDP program first, as on a
        hub with Datapath = "xdp" (docs/spec.md §4a): what it passes must
        leave it untouched, uncounted and with the sessions unwritten
        ([xdp_pass]), and then goes through TC; what it finishes (XDP_TX)
        is judged as TC's redirect would be; it returns nothing else
        ([xdp_verdict])."""
        self.env = env
        self.dp = env.dp
        self.xdp_fd = env.dp.program.xdp_fd if xdp else None
        self.xdp_tx = 0
        self.seed = seed
        self.rng = random.Random(seed)
        g.reseed(seed)             # golden's builders draw their random fields from it
        self.gen = FrameGen(self.rng)
        self.counters = Counters(env.dp, counter_names)
        self.sessions = Sessions(env.dp)
        self.ifindex = dict(env.net.ifindex)
        self.state: Optional[State] = None
        self.history: List[Tuple[bytes, str]] = []
        self._now: Optional[array.array] = None
        self.refused = 0             # frames test-run rejected before the program ran

    def reset(self, state: State):
        self.env.reset(state.classifier, state.roaming)
        state.setup(self.env)
        self.env.dp.drain_slow_path()
        self.state = state
        self.history = []
        self._now = self.counters.read()
        self.sessions.refresh()

    def step(self, frame: bytes, dev: str) -> Tuple[List[Tuple[str, str]], Dict[str, int]]:
        """Run one frame; (problems, counter deltas)."""
        before_data, before_keys = self.sessions.data, self.sessions.keys()
        res, error, problems = None, None, []
        try:
            if self.xdp_fd is not None:
                res = test_run(self.xdp_fd, frame, ifindex=self.ifindex[dev], xdp=True)
                if res.retval == XDP_TX:
                    self.xdp_tx += 1
                    res = res._replace(retval=TC_ACT_REDIRECT)
                elif res.retval != XDP_PASS:
                    problems.append(("xdp_verdict", f"XDP returned {res.retval}"))
                else:
                    problems += self._xdp_passed(frame, res, before_data)
                    res = None
            if res is None:
                res = test_run(self.dp.prog_fd, frame, ifindex=self.ifindex[dev])
        except OSError as e:
            if e.errno == errno.EINVAL and kernel_refuses(frame):
                self.refused += 1
                return [], {}
            error = str(e)
        after = self.counters.read()
        delta = self.counters.deltas(self._now, after)
        self._now = after
        problems += check_frame(
            frame, res, error, delta, self.state.classifier,
            lambda key: self.sessions.entry(before_data, before_keys, key))
        self.sessions.refresh()
        self.history.append((frame, dev))
        return problems, delta

    def _xdp_passed(self, frame: bytes, res: TestRunResult, before_data) -> list:
        problems = []
        if res.data != frame:
            problems.append(("xdp_pass", "XDP changed a frame it passed: "
                             + _first_diff(frame, res.data)))
        moved = self.counters.deltas(self._now, self.counters.read())
        if moved:
            problems.append(("xdp_pass", f"XDP counted a frame it passed: {moved}"))
        if self.sessions.raw.read() != before_data:
            problems.append(("xdp_pass", "XDP wrote sessions for a frame it passed"))
        return problems

    def run(self, frames: int) -> Result:
        result = Result(self.seed)
        start = time.monotonic()
        with self.env.net.inside():
            n = 0
            while n < frames:
                if (self.state is None or self.rng.random() >= self.KEEP_STATE
                        or len(self.history) >= self.MAX_HISTORY):
                    self.reset(self.rng.choice(STATES))
                    result.resets += 1
                for _ in range(min(self.EPOCH, frames - n)):
                    live = sorted(self.sessions.keys())
                    frame, dev, how = self.gen.frame(self.state.classifier, live,
                                                     self.sessions.current)
                    problems, delta = self.step(frame, dev)
                    n += 1
                    for k, v in delta.items():
                        (result.events if k.startswith("ev_") else result.verdicts)[k] += v
                    checks = dict(reversed(problems))      # the first text per check
                    for check, text in checks.items():
                        result.violations[check] += 1
                        best = result.first.get(check)
                        score = (len(checks), len(self.history) // 64, len(frame))
                        if best is None or score < (len(best.also) + 1,
                                                    (len(best.history) + 1) // 64,
                                                    len(best.frame)):
                            result.first[check] = Violation(
                                check, text, n, self.state.name, frame, dev, how,
                                self.history[:-1], sorted(set(checks) - {check}))
            result.frames, result.refused, result.xdp_tx = n, self.refused, self.xdp_tx
            result.seconds = time.monotonic() - start
            for v in result.first.values():
                v.reproducer = self.minimize(v)
        return result

    # -- reproducers
    def _fails(self, v: Violation, before: List[Tuple[bytes, str]]) -> bool:
        self.reset(STATE_BY_NAME[v.state])
        for f, dev in before:
            self.step(f, dev)
        problems, _ = self.step(v.frame, v.dev)
        return any(check == v.check for check, _ in problems)

    def minimize(self, v: Violation) -> Optional[List[Tuple[bytes, str]]]:
        """The fewest earlier frames (from the state's setup on) that still
        make v.frame fail the same check; None if even the whole history
        does not (the failure depended on time, e.g. a rate limit)."""
        budget = self.MINIMIZE_RUNS
        if self._fails(v, []):
            return [(v.frame, v.dev)]
        keep = list(v.history)
        if not self._fails(v, keep):
            return None
        chunk = max(1, len(keep) // 2)
        while budget > 0:
            i, removed = 0, False
            while i < len(keep) and budget > 0:
                trial = keep[:i] + keep[i + chunk:]
                budget -= 1
                if self._fails(v, trial):
                    keep, removed = trial, True
                else:
                    i += chunk
            if chunk == 1 and not removed:
                break
            chunk = max(1, chunk // 2)
        return keep + [(v.frame, v.dev)]
