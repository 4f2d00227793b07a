"""AmneziaWG on netlab nodes: a wire adapter around real WireGuard, or the real thing.

No AmneziaWG implementation installs from the package registries this project
reaches (Debian has none, PyPI only config generators), so netlab emulates
AmneziaWG *on the wire* with an adapter process beside an unmodified
WireGuard (wireguard-go or the kernel module).  When a real implementation is
present -- `amneziawg-go` and `awg` on PATH, or the `amneziawg` kernel module
with `awg` -- `create()` uses it instead, and `implementation()` says which
one runs so tests can name it in their ids ("adapter", "amneziawg-go",
"amneziawg-kernel"; NETLAB_AMNEZIA=adapter forces the adapter).

Message layout: this module imports `wgmux.wire`, the project's one Python
description of the WireGuard/AmneziaWG message layout (a leaf module with no
other wgmux imports), rather than restating sizes, offsets and types.  It is
the only wgmux module netlab uses.

Adapter design
--------------
Real AmneziaWG owns one UDP port and talks to every peer from it, and its
WireGuard state (`wg show`) holds the peers' real endpoints; the hub's wgmux
daemon reads those endpoints and checks the listen port.  The adapter keeps
all of that true:

    node namespace                           inner namespace (<node>-awg-<tag>)
    ┌───────────────────────────────┐        ┌─────────────────────────────────┐
    │ WireGuard netdev <if> (tunnel)│        │ WireGuard's UDP socket *:L      │
    │   addresses, routes, ping     │        │   (wireguard-go runs here; a    │
    │                               │        │   kernel device is created here │
    │ adapter: UDP socket *:L  ◄────┼─ AWG ─►│   and moved out: its socket     │
    │   (the public port)           │  TUN   │   stays)                        │
    │                               │◄──────►│ awg0 (TUN held by the adapter)  │
    └───────────────────────────────┘        │   default routes via awg0       │
                                             └─────────────────────────────────┘

- WireGuard's socket lives in a private namespace whose only way out is a
  TUN device held by the adapter.  WireGuard sends plain datagrams to the
  real remote endpoint E; they come out of the TUN as IP packets; the adapter
  converts each to AmneziaWG and sends it from its own socket on the node's
  public port L -- every packet leaves from L, as from real AWG, so NAT
  mappings and the hub's port semantics are those of a real peer.
- A datagram from E arriving on L is classified (size + header range,
  docs/spec.md §12), junk is dropped, the prefix stripped and the WireGuard type restored;
  the adapter writes it into the TUN as an IP packet *from E* to L.  So
  WireGuard sees the real remote endpoint, roams to it and answers it;
  `wg show` lists real endpoints and the listen port L.  There is no
  per-endpoint socket or table: the endpoint travels in the IP header.
- The interface (`<if>`) is moved to the node's namespace, so addresses,
  routes, captures and `wg`/UAPI work exactly as for plain netlab WireGuard.

Conversion, outgoing (WireGuard -> wire):
- type field -> an H value drawn uniformly from the kind's H range (1.0: the
  single value); S1/S2/S3/S4 random bytes before initiation/response/
  cookie/transport (keepalives included);
- before each initiation: I1..I5 (those set) as separate datagrams, then Jc
  junk datagrams of uniformly random size in [Jmin, Jmax) (Jmin when equal);
- mac1: AmneziaWG computes it over the message with the H value in the type
  field (so the hub can check it with public keys).  WireGuard computed it
  over type 1/2, so the adapter recomputes it with the receiver's public
  key, which it finds by checking WireGuard's mac1 against the interface's
  peers (`wg show <if> peers`).
Incoming (wire -> WireGuard): classify; junk/I-packets are dropped and
counted; handshake messages whose mac1 (over the H header) is not valid for
this interface's key are dropped (as AmneziaWG does); otherwise the type is
restored and mac1 recomputed over the plain message for WireGuard.

I-packet tags supported (the AmneziaWG 2.0 language, minimal):
`<b 0xHEX>` literal bytes, `<r N>` N random bytes, `<rc N>` N random ASCII
letters, `<rd N>` N random digits, `<t>` 4-byte big-endian unix time,
`<c>` 4-byte big-endian count of I-packets sent.  Text outside tags or other
tags (3.x's `<d>`, `<ds>`, `<dz>`) are refused with ValueError.

Limits: mac2 is passed through untouched, so a WireGuard under load (cookie
replies, mac2) interoperates adapter-to-adapter but not with a real AWG;
IPv4 fragments from the inner namespace cannot occur (the TUN MTU is 65535)
and other IP traffic there is ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from wgmux import wire  # the one message-layout module (see module doc)

from .netns import inside

AMNEZIA_SOCKET_DIR = Path("/var/run/amneziawg")
TUN_NAME = "awg0"
# The inner namespace's own addresses: WireGuard receives on them.  Chosen
# from ranges no remote endpoint in a lab uses (link-local / ULA).
INNER_V4 = "169.254.77.1"
INNER_V6 = "fd00:a3c:77::1"
TUN_MTU = 65535

HeaderRange = wire.HeaderRange
_WG_DEFAULT_HEADERS = wire.WIREGUARD_HEADERS


# ---- parameters -------------------------------------------------------------

def _range(value, default: HeaderRange) -> HeaderRange:
    if value is None:
        return default
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, str):
        lo, _, hi = value.partition("-")
        return (int(lo), int(hi or lo))
    lo, hi = value
    return (int(lo), int(hi))


@dataclass(frozen=True)
class AwgParams(wire.AmneziaParams):
    """AmneziaWG obfuscation values (the fields of wire.AmneziaParams), with
    what netlab needs on top: conversion and the adapter's settings.

    `AwgParams.of(x)` takes anything with jc/jmin/jmax/s1..s4/h1..h4/i1..i5
    attributes or keys (e.g. wgmux.config.AmneziaParams, whose validation a
    test should go through), with H values as ints, (lo, hi) pairs or "a-b".
    """

    _INTS = ("jc", "jmin", "jmax", "s1", "s2", "s3", "s4")
    _HEADERS = ("h1", "h2", "h3", "h4")
    _SPECIALS = ("i1", "i2", "i3", "i4", "i5")

    @classmethod
    def of(cls, obj) -> "AwgParams":
        if isinstance(obj, cls):
            return obj
        get = (lambda k: obj.get(k)) if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
        values = {}
        for k in cls._INTS:
            values[k] = int(get(k) or 0)
        for i, k in enumerate(cls._HEADERS):
            values[k] = _range(get(k), _WG_DEFAULT_HEADERS[i])
        for k in cls._SPECIALS:
            values[k] = get(k) or None
        params = cls(**values)
        for spec in params.specials:
            parse_special(spec)  # refuse what the adapter cannot send, early
        return params

    @property
    def specials(self) -> Tuple[str, ...]:
        return tuple(s for s in (self.i1, self.i2, self.i3, self.i4, self.i5) if s)

    @property
    def classifier(self) -> wire.Classifier:
        return wire.Classifier(prefixes=self.prefixes, headers=self.headers)

    _KEYS = {"jc": "Jc", "jmin": "Jmin", "jmax": "Jmax"}

    def settings(self) -> Dict[str, str]:
        """Non-default values by AmneziaWG config key (Jc, S1, H1, I1, ...),
        as strings the way `awg` and .conf files spell them."""
        out: Dict[str, str] = {}
        for k in self._INTS:
            if getattr(self, k):
                out[self._KEYS.get(k, k.upper())] = str(getattr(self, k))
        for i, k in enumerate(self._HEADERS):
            lo, hi = getattr(self, k)
            if (lo, hi) != _WG_DEFAULT_HEADERS[i]:
                out[k.upper()] = str(lo) if lo == hi else f"{lo}-{hi}"
        for k in self._SPECIALS:
            if getattr(self, k):
                out[k.upper()] = getattr(self, k)
        return out

    def awg_set_args(self) -> List[str]:
        """Arguments for `awg set <if> ...` (lower-case keywords)."""
        args: List[str] = []
        for key, value in self.settings().items():
            args += [key.lower(), value]
        return args

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "AwgParams":
        return cls.of(json.loads(text))


# ---- I-packets -----------------------------------------------------------------

_TAG_RE = re.compile(r"<([^<>]*)>")
_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = b"0123456789"


def parse_special(spec: str) -> List[Tuple[str, object]]:
    """Parse an I-packet spec into (tag, argument) items; ValueError if the
    adapter does not support it (see the module doc)."""
    items: List[Tuple[str, object]] = []
    pos = 0
    for m in _TAG_RE.finditer(spec):
        if spec[pos:m.start()].strip():
            raise ValueError(f"I-packet {spec!r}: text outside a tag: {spec[pos:m.start()]!r}")
        pos = m.end()
        parts = m.group(1).split()
        if not parts:
            raise ValueError(f"I-packet {spec!r}: empty tag")
        tag, args = parts[0], parts[1:]
        if tag == "b":
            if len(args) != 1 or not args[0].lower().startswith("0x"):
                raise ValueError(f"I-packet {spec!r}: <b> takes one 0x-prefixed hex string")
            try:
                items.append(("b", bytes.fromhex(args[0][2:])))
            except ValueError:
                raise ValueError(f"I-packet {spec!r}: bad hex in <b {args[0]}>") from None
        elif tag in ("r", "rc", "rd"):
            if len(args) != 1 or not args[0].isdigit():
                raise ValueError(f"I-packet {spec!r}: <{tag}> takes one length")
            items.append((tag, int(args[0])))
        elif tag in ("t", "c"):
            if args:
                raise ValueError(f"I-packet {spec!r}: <{tag}> takes no argument")
            items.append((tag, None))
        else:
            raise ValueError(f"I-packet {spec!r}: tag <{tag}> is not supported by the netlab "
                             "adapter (supported: b r rc rd t c)")
    if spec[pos:].strip():
        raise ValueError(f"I-packet {spec!r}: text outside a tag: {spec[pos:]!r}")
    if not items:
        raise ValueError(f"I-packet {spec!r}: no tags")
    return items


def render_special(items: Sequence[Tuple[str, object]], rng: random.Random,
                   counter: int = 0, now: Optional[float] = None) -> bytes:
    out = bytearray()
    for tag, arg in items:
        if tag == "b":
            out += arg  # type: ignore[operator]
        elif tag == "r":
            out += rng.randbytes(arg)  # type: ignore[arg-type]
        elif tag == "rc":
            out += bytes(rng.choice(_LETTERS) for _ in range(arg))  # type: ignore[arg-type]
        elif tag == "rd":
            out += bytes(rng.choice(_DIGITS) for _ in range(arg))  # type: ignore[arg-type]
        elif tag == "t":
            out += struct.pack(">I", int(time.time() if now is None else now) & 0xFFFFFFFF)
        elif tag == "c":
            out += struct.pack(">I", counter & 0xFFFFFFFF)
    return bytes(out)


# ---- mac1 (WireGuard whitepaper §5.4.4; public keys only) ------------------------

@functools.lru_cache(maxsize=1024)
def _mac1_key(public_key: bytes) -> bytes:
    return hashlib.blake2s(b"mac1----" + public_key).digest()


def _mac1(public_key: bytes, covered: bytes) -> bytes:
    return hashlib.blake2s(covered, key=_mac1_key(public_key),
                           digest_size=wire.WG_MAC_SIZE).digest()


# ---- the codec: pure conversion, no I/O ------------------------------------------

KINDS = tuple(wire.MessageType)


class Codec:
    """WireGuard <-> AmneziaWG datagrams for one interface.

    `local_key()` returns the interface's raw public key (or None);
    `peer_keys(refresh)` its peers' raw public keys.  Both are called lazily
    (peers are added after the adapter starts)."""

    def __init__(self, params: AwgParams, local_key: Callable[[], Optional[bytes]],
                 peer_keys: Callable[[bool], Sequence[bytes]],
                 rng: Optional[random.Random] = None):
        self.params = params
        self.classifier = params.classifier
        self.specials = [parse_special(s) for s in params.specials]
        self.local_key = local_key
        self.peer_keys = peer_keys
        self.rng = rng or random.Random(os.urandom(16))
        self.stats: Dict[str, int] = {}
        self._specials_sent = 0

    def count(self, name: str, n: int = 1):
        self.stats[name] = self.stats.get(name, 0) + n

    # -- outgoing
    def junk(self) -> List[bytes]:
        p = self.params
        out = []
        for _ in range(p.jc):
            size = p.jmin + (self.rng.randrange(p.jmax - p.jmin) if p.jmax > p.jmin else 0)
            out.append(self.rng.randbytes(size))
        return out

    def special_packets(self) -> List[bytes]:
        out = []
        for items in self.specials:
            self._specials_sent += 1
            out.append(render_special(items, self.rng, self._specials_sent))
        return out

    def _receiver_key(self, msg: bytes, kind: wire.MessageType) -> Optional[bytes]:
        off = wire.MAC1_OFFSETS[kind]
        mac = msg[off:off + wire.WG_MAC_SIZE]
        for refresh in (False, True):
            for key in self.peer_keys(refresh):
                if _mac1(key, msg[:off]) == mac:
                    return key
        return None

    def encode(self, payload: bytes) -> List[bytes]:
        """A plain WireGuard datagram -> the datagrams to send, in order."""
        kind, _ = wire.WIREGUARD.classify(payload)
        if kind is None:
            self.count("tx_not_wireguard")
            return []
        lo, hi = self.params.headers[kind]
        msg = bytearray(payload)
        struct.pack_into("<I", msg, wire.WG_OFF_TYPE, lo if lo == hi else self.rng.randint(lo, hi))
        if kind in wire.MAC1_OFFSETS:
            key = self._receiver_key(payload, kind)
            off = wire.MAC1_OFFSETS[kind]
            if key is None:
                self.count("tx_mac1_receiver_unknown")
            else:
                msg[off:off + wire.WG_MAC_SIZE] = _mac1(key, bytes(msg[:off]))
        out: List[bytes] = []
        if kind is wire.MessageType.INITIATION:
            specials, junk = self.special_packets(), self.junk()
            out += specials + junk
            self.count("tx_special", len(specials))
            self.count("tx_junk", len(junk))
        out.append(self.rng.randbytes(self.params.prefixes[kind]) + bytes(msg))
        self.count(f"tx_{kind.name.lower()}")
        return out

    # -- incoming
    def decode(self, data: bytes) -> Optional[bytes]:
        """An AmneziaWG datagram -> the plain WireGuard one, or None (junk,
        I-packet, or a handshake not for this interface)."""
        kind, off = self.classifier.classify(data)
        if kind is None:
            self.count("rx_junk_dropped")
            return None
        msg = bytearray(data[off:])
        if kind in wire.MAC1_OFFSETS:
            key = self.local_key()
            moff = wire.MAC1_OFFSETS[kind]
            if key is None or _mac1(key, bytes(msg[:moff])) != msg[moff:moff + wire.WG_MAC_SIZE]:
                self.count("rx_bad_mac1")
                return None
            struct.pack_into("<I", msg, wire.WG_OFF_TYPE, kind.wg_type)
            msg[moff:moff + wire.WG_MAC_SIZE] = _mac1(key, bytes(msg[:moff]))
        else:
            struct.pack_into("<I", msg, wire.WG_OFF_TYPE, kind.wg_type)
        self.count(f"rx_{kind.name.lower()}")
        return bytes(msg)


# ---- IP packets on the TUN ---------------------------------------------------------

def _csum(data: bytes) -> int:
    """Internet checksum (RFC 1071): the one's-complement sum of 16-bit words
    is the big integer modulo 0xffff (2**16 = 1 mod 0xffff)."""
    if len(data) % 2:
        data += b"\0"
    s = int.from_bytes(data, "big") % 0xFFFF
    if s == 0 and any(data):
        s = 0xFFFF
    return ~s & 0xFFFF


def build_udp_packet(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet with a UDP datagram, every checksum computed."""
    v6 = ":" in dst
    s, d = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, src), \
        socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, dst)
    ulen = 8 + len(payload)
    if v6:
        pseudo = s + d + struct.pack("!I3xB", ulen, socket.IPPROTO_UDP)
    else:
        pseudo = s + d + struct.pack("!xBH", socket.IPPROTO_UDP, ulen)
    csum = _csum(pseudo + struct.pack("!HHHH", sport, dport, ulen, 0) + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, ulen, csum) + payload
    if v6:
        return struct.pack("!IHBB", 6 << 28, ulen, socket.IPPROTO_UDP, 64) + s + d + udp
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 0, 0x4000, 64, socket.IPPROTO_UDP,
                      0, s, d)
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + udp


def parse_udp_packet(pkt: bytes) -> Optional[Tuple[str, int, str, int, bytes]]:
    """(src, sport, dst, dport, payload) of an unfragmented UDP packet, else None."""
    if not pkt:
        return None
    version = pkt[0] >> 4
    if version == 4 and len(pkt) >= 28:
        ihl = (pkt[0] & 0x0F) * 4
        if pkt[9] != socket.IPPROTO_UDP or struct.unpack_from("!H", pkt, 6)[0] & 0x3FFF:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET, pkt[12:16]), \
            socket.inet_ntop(socket.AF_INET, pkt[16:20])
        udp = pkt[ihl:]
    elif version == 6 and len(pkt) >= 48:
        if pkt[6] != socket.IPPROTO_UDP:
            return None
        src, dst = socket.inet_ntop(socket.AF_INET6, pkt[8:24]), \
            socket.inet_ntop(socket.AF_INET6, pkt[24:40])
        udp = pkt[40:]
    else:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", udp)
    return src, sport, dst, dport, bytes(udp[8:ulen])


# ---- the adapter process ---------------------------------------------------------

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun_in(netns_path: str, name: str) -> int:
    """Create TUN device `name` in the network namespace at `netns_path` and
    return its fd; this process stays in (returns to) its own namespace."""
    with inside(netns_path):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


class _Keys:
    """The WireGuard interface's public keys, read with `<tool> show`."""

    def __init__(self, device: str, tool: str):
        self.device, self.tool = device, tool
        self._local: Optional[bytes] = None
        self._peers: List[bytes] = []
        self._read_at = 0.0

    def _show(self, what: str) -> List[str]:
        out = subprocess.run([self.tool, "show", self.device, what], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.split() if out.returncode == 0 else []

    @staticmethod
    def _raw(b64: str) -> Optional[bytes]:
        import base64
        try:
            raw = base64.b64decode(b64, validate=True)
        except ValueError:
            return None
        return raw if len(raw) == wire.WG_KEY_SIZE else None

    def local(self) -> Optional[bytes]:
        if self._local is None:
            keys = [k for k in map(self._raw, self._show("public-key")) if k]
            self._local = keys[0] if keys else None
        return self._local

    def peers(self, refresh: bool) -> List[bytes]:
        now = time.monotonic()
        if (refresh or not self._peers) and now - self._read_at > 0.05:
            self._read_at = now
            self._peers = [k for k in map(self._raw, self._show("peers")) if k]
        return self._peers


def serve(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m netlab.amnezia",
                                 description="AmneziaWG wire adapter (see module doc)")
    ap.add_argument("--params", required=True, help="AwgParams as JSON")
    ap.add_argument("--port", type=int, required=True, help="the public listen port")
    ap.add_argument("--inner", required=True, help="path of the inner network namespace")
    ap.add_argument("--device", required=True, help="the WireGuard interface (for its keys)")
    ap.add_argument("--tool", default="wg")
    ap.add_argument("--stats", required=True, help="file the counters are written to")
    args = ap.parse_args(argv)

    params = AwgParams.from_json(args.params)
    keys = _Keys(args.device, args.tool)
    codec = Codec(params, keys.local, keys.peers)
    inner_addr = {socket.AF_INET: INNER_V4, socket.AF_INET6: INNER_V6}

    public = {}
    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.bind((any_addr, args.port))
        s.setblocking(False)
        public[family] = s
    tun = open_tun_in(args.inner, TUN_NAME)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    sel = selectors.DefaultSelector()
    sel.register(tun, selectors.EVENT_READ, "tun")
    for family, s in public.items():
        sel.register(s, selectors.EVENT_READ, family)
    print("ready", flush=True)

    written: Dict[str, int] = {}
    next_stats = 0.0
    while not stop:
        for key, _ in sel.select(timeout=0.2):
            if key.data == "tun":
                for _ in range(256):
                    try:
                        pkt = os.read(tun, 65536)
                    except BlockingIOError:
                        break
                    parsed = parse_udp_packet(pkt)
                    if parsed is None:
                        continue
                    _, _, dst, dport, payload = parsed
                    s = public[socket.AF_INET6 if ":" in dst else socket.AF_INET]
                    for datagram in codec.encode(payload):
                        try:
                            s.sendto(datagram, (dst, dport))
                        except OSError:
                            codec.count("tx_error")
            else:
                s = key.fileobj
                for _ in range(256):
                    try:
                        data, addr = s.recvfrom(65536)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # ICMP errors surface here
                        codec.count("rx_error")
                        continue
                    msg = codec.decode(data)
                    if msg is None:
                        continue
                    pkt = build_udp_packet(addr[0].split("%")[0], addr[1], inner_addr[key.data],
                                           args.port, msg)
                    try:
                        os.write(tun, pkt)
                    except OSError:
                        codec.count("tun_write_error")
        now = time.monotonic()
        if now >= next_stats and codec.stats != written:
            next_stats = now + 0.1
            tmp = args.stats + ".tmp"
            with open(tmp, "w") as f:
                json.dump(codec.stats, f)
            os.replace(tmp, args.stats)
            written = dict(codec.stats)
    return 0


# ---- netlab integration ------------------------------------------------------------

def _have_kernel_module() -> bool:
    if Path("/sys/module/amneziawg").exists():
        return True
    if shutil.which("modinfo") is None:
        return False
    return subprocess.run(["modinfo", "amneziawg"], capture_output=True).returncode == 0


@functools.lru_cache(maxsize=None)
def implementation() -> str:
    """Which AmneziaWG netlab runs: "amneziawg-kernel", "amneziawg-go" or
    "adapter" (NETLAB_AMNEZIA=adapter|amneziawg-go|amneziawg-kernel forces)."""
    forced = os.environ.get("NETLAB_AMNEZIA")
    if forced:
        if forced not in ("adapter", "amneziawg-go", "amneziawg-kernel"):
            raise ValueError(f"NETLAB_AMNEZIA={forced!r}: adapter, amneziawg-go or amneziawg-kernel")
        return forced
    if shutil.which("awg"):
        if _have_kernel_module():
            return "amneziawg-kernel"
        if shutil.which("amneziawg-go"):
            return "amneziawg-go"
    return "adapter"


@dataclass
class Adapter:
    """The adapter process of one interface and its inner namespace."""

    node: object
    inner: object
    port: int
    process: Optional[subprocess.Popen] = None
    stats_path: Optional[Path] = None
    dir: Optional[Path] = field(default=None, repr=False)

    def start(self, params: AwgParams, device: str, tool: str = "wg", timeout: float = 10.0):
        from .lab import NETNS_DIR, wait_for

        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.node.lab.prefix}-awg-"))
        self.stats_path = self.dir / "stats.json"
        self.process = self.node.popen(
            [sys.executable, "-m", "netlab.amnezia", "--params", params.to_json(),
             "--port", str(self.port), "--inner", str(NETNS_DIR / self.inner.netns),
             "--device", device, "--tool", tool, "--stats", str(self.stats_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        proc = self.process
        import select

        def ready():
            if proc.poll() is not None:
                raise RuntimeError(f"AmneziaWG adapter on {self.node.name} exited "
                                   f"{proc.returncode}: {proc.stderr.read()}")
            r, _, _ = select.select([proc.stdout], [], [], 0.05)
            return bool(r) and proc.stdout.readline().strip() == "ready"

        wait_for(ready, timeout=timeout, what=f"the AmneziaWG adapter on {self.node.name}")
        inner = self.inner
        idx = inner.index(TUN_NAME)
        inner.ipr.link("set", index=idx, mtu=TUN_MTU, state="up")
        inner.add_address(TUN_NAME, f"{INNER_V4}/32")
        inner.add_address(TUN_NAME, f"{INNER_V6}/128")
        inner.ipr.route("add", dst="0.0.0.0/0", oif=idx, family=socket.AF_INET)
        inner.ipr.route("add", dst="::/0", oif=idx, family=socket.AF_INET6)
        return self

    def stats(self) -> Dict[str, int]:
        """The adapter's counters (at most ~0.1 s old): tx_/rx_ per message
        kind, tx_junk, tx_special, rx_junk_dropped, rx_bad_mac1, ..."""
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError, AttributeError):
            return {}

    def close(self):
        from .lab import stop_process

        if self.process is not None:
            stop_process(self.process)
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def create(cls, node, tag: str, listen_port: int, address: Optional[str] = None,
           private_key: Optional[str] = None, implementation_name: Optional[str] = None,
           mtu: Optional[int] = None, params=None):
    """`WireGuard.create(..., amnezia=params)` lands here: an AmneziaWG
    interface with the same API (set_peer, peers, wait_handshake, close).

    The default MTU is WireGuard's 1420 less S4 (every transport packet
    grows by S4 bytes on the wire; AmneziaWG users lower the MTU the same
    way), so full-size packets still fit a 1500-byte path unfragmented."""
    from .wireguard import USERSPACE_SOCKET_DIR, keypair, spawn_userspace

    params = AwgParams.of(params)
    impl = implementation_name or implementation()
    lab = node.lab
    name = lab.unique_ifname(tag)
    private_key, public_key = keypair(private_key)
    if mtu is None:
        mtu = 1420 - params.s4
    if impl == "adapter":
        inner = lab.add_node(f"{node.name}-awg-{tag}")
        adapter = Adapter(node, inner, listen_port)
        lab.on_close(adapter.close)
        from .wireguard import kernel_wireguard_available
        if kernel_wireguard_available():
            inner.ipr.link("add", ifname=name, kind="wireguard")
            process, under = None, "kernel"
        else:
            process = spawn_userspace(inner, "wireguard-go", name, USERSPACE_SOCKET_DIR)
            under = "wireguard-go"
        # The device goes to the node; its UDP socket stays in `inner`.
        inner.ipr.link("set", index=inner.index(name), net_ns_fd=node.netns)
        wg = cls(node, name, private_key, public_key, listen_port, f"adapter+{under}", process,
                 tool="wg", amnezia=params, adapter=adapter)
        lab.on_close(wg.close)
        wg.configure(mtu, address)
        adapter.start(params, name, "wg")
        return wg
    if impl == "amneziawg-go":
        process = spawn_userspace(node, "amneziawg-go", name, AMNEZIA_SOCKET_DIR)
    elif impl == "amneziawg-kernel":
        node.ipr.link("add", ifname=name, kind="amneziawg")
        process = None
    else:
        raise ValueError(f"unknown AmneziaWG implementation {impl!r}")
    wg = cls(node, name, private_key, public_key, listen_port, impl, process, tool="awg",
             amnezia=params)
    lab.on_close(wg.close)
    wg.configure(mtu, address, extra=params.awg_set_args())
    return wg


def main(argv: Optional[Sequence[str]] = None) -> int:
    return serve(argv)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
