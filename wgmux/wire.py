"""WireGuard / AmneziaWG message layout, in Python.

The only Python description of the wire format (bpf/wire.h is the only C
one; a unit test checks that every WG_* define there has the same value
here).  Used by the daemon (mac1 slow path), netlab and the tests.

Layout (WireGuard whitepaper §5.4; all integers little-endian):

    initiation  148  type sender ephemeral(32) static(48) timestamp(28) mac1 mac2
    response     92  type sender receiver ephemeral(32) empty(16) mac1 mac2
    cookie       64  type receiver nonce(24) cookie(32)
    transport  >=32  type receiver counter(8) data(n + 16)

"type" is a u32: the message type and three zero bytes.  AmneziaWG
(docs/spec.md §12) replaces it by a header H1..H4 (a value, or in 2.0 a range every packet
draws from) and puts S1..S4 random bytes before the message; mac1 covers the
message without that prefix but with the header in the type field.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

# ---- constants shared with bpf/wire.h (same names, same values) ----------
WG_MSG_INITIATION = 1
WG_MSG_RESPONSE = 2
WG_MSG_COOKIE = 3
WG_MSG_TRANSPORT = 4

WG_CLASS_INITIATION = 0
WG_CLASS_RESPONSE = 1
WG_CLASS_COOKIE = 2
WG_CLASS_TRANSPORT = 3
WG_NUM_CLASSES = 4

WG_INITIATION_SIZE = 148
WG_RESPONSE_SIZE = 92
WG_COOKIE_SIZE = 64
WG_TRANSPORT_MIN_SIZE = 32
WG_TRANSPORT_HEADER_SIZE = 16

WG_KEY_SIZE = 32
WG_MAC_SIZE = 16
WG_TAG_SIZE = 16

WG_OFF_TYPE = 0

WG_INITIATION_OFF_SENDER = 4
WG_INITIATION_OFF_EPHEMERAL = 8
WG_INITIATION_OFF_STATIC = 40
WG_INITIATION_OFF_TIMESTAMP = 88
WG_INITIATION_OFF_MAC1 = 116
WG_INITIATION_OFF_MAC2 = 132

WG_RESPONSE_OFF_SENDER = 4
WG_RESPONSE_OFF_RECEIVER = 8
WG_RESPONSE_OFF_EPHEMERAL = 12
WG_RESPONSE_OFF_EMPTY = 44
WG_RESPONSE_OFF_MAC1 = 60
WG_RESPONSE_OFF_MAC2 = 76

WG_COOKIE_OFF_RECEIVER = 4
WG_COOKIE_OFF_NONCE = 8
WG_COOKIE_OFF_COOKIE = 32

WG_TRANSPORT_OFF_RECEIVER = 4
WG_TRANSPORT_OFF_COUNTER = 8
WG_TRANSPORT_OFF_DATA = 16

WG_PEEK_SIZE = 12
WG_MAX_PREFIX = 1280

# field sizes that follow from the offsets above
WG_STATIC_ENC_SIZE = WG_INITIATION_OFF_TIMESTAMP - WG_INITIATION_OFF_STATIC        # 48
WG_TIMESTAMP_ENC_SIZE = WG_INITIATION_OFF_MAC1 - WG_INITIATION_OFF_TIMESTAMP       # 28
WG_EMPTY_ENC_SIZE = WG_RESPONSE_OFF_MAC1 - WG_RESPONSE_OFF_EMPTY                   # 16
WG_COOKIE_NONCE_SIZE = WG_COOKIE_OFF_COOKIE - WG_COOKIE_OFF_NONCE                  # 24
WG_COOKIE_ENC_SIZE = WG_COOKIE_SIZE - WG_COOKIE_OFF_COOKIE                         # 32

U32_MAX = 0xFFFFFFFF


class MessageType(enum.IntEnum):
    """Message kinds, valued as the classifier slots (not the type field)."""
    INITIATION = WG_CLASS_INITIATION
    RESPONSE = WG_CLASS_RESPONSE
    COOKIE = WG_CLASS_COOKIE
    TRANSPORT = WG_CLASS_TRANSPORT

    @property
    def wg_type(self) -> int:
        """The type field plain WireGuard uses."""
        return self.value + 1

    @property
    def size(self) -> int:
        """Exact size, or the minimum for transport."""
        return MESSAGE_SIZES[self]


MESSAGE_SIZES = {
    MessageType.INITIATION: WG_INITIATION_SIZE,
    MessageType.RESPONSE: WG_RESPONSE_SIZE,
    MessageType.COOKIE: WG_COOKIE_SIZE,
    MessageType.TRANSPORT: WG_TRANSPORT_MIN_SIZE,
}

# where the receiver index sits, for the kinds that carry one
RECEIVER_OFFSETS = {
    MessageType.RESPONSE: WG_RESPONSE_OFF_RECEIVER,
    MessageType.COOKIE: WG_COOKIE_OFF_RECEIVER,
    MessageType.TRANSPORT: WG_TRANSPORT_OFF_RECEIVER,
}
SENDER_OFFSETS = {
    MessageType.INITIATION: WG_INITIATION_OFF_SENDER,
    MessageType.RESPONSE: WG_RESPONSE_OFF_SENDER,
}
MAC1_OFFSETS = {
    MessageType.INITIATION: WG_INITIATION_OFF_MAC1,
    MessageType.RESPONSE: WG_RESPONSE_OFF_MAC1,
}
MAC2_OFFSETS = {
    MessageType.INITIATION: WG_INITIATION_OFF_MAC2,
    MessageType.RESPONSE: WG_RESPONSE_OFF_MAC2,
}

HeaderRange = Tuple[int, int]


def _as_range(value: Union[int, Sequence[int]], what: str) -> HeaderRange:
    if isinstance(value, int):
        lo = hi = value
    else:
        lo, hi = value
    if not (0 <= lo <= hi <= U32_MAX):
        raise ValueError(f"{what}: header range {lo}-{hi} is not within 0..{U32_MAX}")
    return (int(lo), int(hi))


@dataclass(frozen=True)
class ClassSpec:
    """One classifier slot: `prefix` bytes, then a header in [lo, hi]."""
    prefix: int
    lo: int
    hi: int


# ---- AmneziaWG parameters ----------------------------------------------------

# Plain WireGuard: the type field holds 1..4, and no prefixes.
WIREGUARD_HEADERS: Tuple[HeaderRange, ...] = tuple(
    (t, t) for t in (WG_MSG_INITIATION, WG_MSG_RESPONSE, WG_MSG_COOKIE, WG_MSG_TRANSPORT))


@dataclass(frozen=True)
class AmneziaParams:
    """AmneziaWG obfuscation parameters; the defaults are plain WireGuard."""

    jc: int = 0
    jmin: int = 0
    jmax: int = 0
    s1: int = 0
    s2: int = 0
    s3: int = 0
    s4: int = 0
    h1: HeaderRange = WIREGUARD_HEADERS[0]
    h2: HeaderRange = WIREGUARD_HEADERS[1]
    h3: HeaderRange = WIREGUARD_HEADERS[2]
    h4: HeaderRange = WIREGUARD_HEADERS[3]
    i1: Optional[str] = None
    i2: Optional[str] = None
    i3: Optional[str] = None
    i4: Optional[str] = None
    i5: Optional[str] = None

    @property
    def headers(self) -> Tuple[HeaderRange, HeaderRange, HeaderRange, HeaderRange]:
        """Inclusive type-field ranges of initiation, response, cookie, transport."""
        return (self.h1, self.h2, self.h3, self.h4)

    @property
    def prefixes(self) -> Tuple[int, int, int, int]:
        """Random prefix lengths of initiation, response, cookie, transport."""
        return (self.s1, self.s2, self.s3, self.s4)

    @property
    def specials(self) -> Tuple[Optional[str], ...]:
        return (self.i1, self.i2, self.i3, self.i4, self.i5)

    @property
    def enabled(self) -> bool:
        """True when any AmneziaWG key is set to something other than its
        plain-WireGuard default."""
        return self != type(self)()

    @property
    def version(self) -> Optional[str]:
        """The AmneziaWG wire format: "2.0" when header ranges, S3/S4 or
        I1-I5 are used, "1.0" for the original set (Jc/Jmin/Jmax, S1/S2,
        single H values), None for plain WireGuard."""
        if not self.enabled:
            return None
        if (any(lo != hi for lo, hi in self.headers) or self.s3 or self.s4
                or any(s is not None for s in self.specials)):
            return "2.0"
        return "1.0"


@dataclass(frozen=True)
class Classifier:
    """How to recognise each message kind in a UDP payload (docs/spec.md §12).

    An initiation is exactly S1 + 148 bytes with the little-endian u32 at
    offset S1 in H1's range; response S2 + 92 / H2; cookie S3 + 64 / H3;
    transport at least S4 + 32 / H4.  The exact sizes are tried first.
    """
    prefixes: Tuple[int, int, int, int] = (0, 0, 0, 0)
    headers: Tuple[HeaderRange, HeaderRange, HeaderRange, HeaderRange] = (
        (WG_MSG_INITIATION, WG_MSG_INITIATION), (WG_MSG_RESPONSE, WG_MSG_RESPONSE),
        (WG_MSG_COOKIE, WG_MSG_COOKIE), (WG_MSG_TRANSPORT, WG_MSG_TRANSPORT))

    def __post_init__(self):
        if len(self.prefixes) != WG_NUM_CLASSES or len(self.headers) != WG_NUM_CLASSES:
            raise ValueError("a classifier has four prefixes and four header ranges")
        names = ("S1", "S2", "S3", "S4")
        for name, s in zip(names, self.prefixes):
            if not (0 <= s <= WG_MAX_PREFIX):
                raise ValueError(f"{name}={s}: prefix must be within 0..{WG_MAX_PREFIX}")
        object.__setattr__(self, "prefixes", tuple(int(s) for s in self.prefixes))
        object.__setattr__(self, "headers", tuple(
            _as_range(h, f"H{i + 1}") for i, h in enumerate(self.headers)))

    @classmethod
    def wireguard(cls) -> "Classifier":
        return cls()

    @classmethod
    def from_params(cls, params) -> "Classifier":
        """From any object with s1..s4 and h1..h4 (an int or a (lo, hi)
        pair each), e.g. wgmux.config.AmneziaParams; None means WireGuard.
        Missing attributes default to WireGuard's values (AmneziaWG 1.0
        has no S3/S4)."""
        if params is None:
            return cls()
        default = cls()
        prefixes = tuple(getattr(params, f"s{i}", 0) or 0 for i in range(1, 5))
        headers = tuple(
            getattr(params, f"h{i}", None) if getattr(params, f"h{i}", None) is not None
            else default.headers[i - 1]
            for i in range(1, 5))
        return cls(prefixes=prefixes, headers=headers)

    def spec(self, kind: MessageType) -> ClassSpec:
        lo, hi = self.headers[kind]
        return ClassSpec(self.prefixes[kind], lo, hi)

    def specs(self) -> Tuple[ClassSpec, ...]:
        return tuple(self.spec(k) for k in MessageType)

    @property
    def is_wireguard(self) -> bool:
        return self == Classifier()

    def classify(self, payload: bytes) -> Tuple[Optional[MessageType], int]:
        """(kind, offset of the message in payload), or (None, 0) for junk.
        The same decision as the datapath's classify()."""
        n = len(payload)
        for kind in MessageType:
            s = self.prefixes[kind]
            if kind is MessageType.TRANSPORT:
                if n < s + WG_TRANSPORT_MIN_SIZE:
                    continue
            elif n != s + kind.size:
                continue
            lo, hi = self.headers[kind]
            (h,) = struct.unpack_from("<I", payload, s)
            if lo <= h <= hi:
                return kind, s
        return None, 0

    def message(self, payload: bytes) -> Tuple[Optional[MessageType], bytes]:
        """(kind, the message without its prefix)."""
        kind, off = self.classify(payload)
        return kind, (payload[off:] if kind is not None else b"")


WIREGUARD = Classifier()


# ---- building ------------------------------------------------------------

def _field(value: Optional[bytes], size: int, what: str) -> bytes:
    if value is None:
        return bytes(size)
    if len(value) != size:
        raise ValueError(f"{what} must be {size} bytes, not {len(value)}")
    return bytes(value)


def _u32(value: int, what: str) -> bytes:
    if not (0 <= value <= U32_MAX):
        raise ValueError(f"{what} {value} is not a u32")
    return struct.pack("<I", value)


def build_initiation(sender: int, *, ephemeral: Optional[bytes] = None,
                     static: Optional[bytes] = None, timestamp: Optional[bytes] = None,
                     mac1: Optional[bytes] = None, mac2: Optional[bytes] = None,
                     header: int = WG_MSG_INITIATION, prefix: bytes = b"") -> bytes:
    """An initiation (with an AmneziaWG prefix/header if given).  Fields
    left out are zero; mac1 is not computed here (see wgmux.mac1)."""
    return bytes(prefix) + (
        _u32(header, "header") + _u32(sender, "sender index")
        + _field(ephemeral, WG_KEY_SIZE, "ephemeral")
        + _field(static, WG_STATIC_ENC_SIZE, "encrypted static")
        + _field(timestamp, WG_TIMESTAMP_ENC_SIZE, "encrypted timestamp")
        + _field(mac1, WG_MAC_SIZE, "mac1") + _field(mac2, WG_MAC_SIZE, "mac2"))


def build_response(sender: int, receiver: int, *, ephemeral: Optional[bytes] = None,
                   empty: Optional[bytes] = None, mac1: Optional[bytes] = None,
                   mac2: Optional[bytes] = None, header: int = WG_MSG_RESPONSE,
                   prefix: bytes = b"") -> bytes:
    return bytes(prefix) + (
        _u32(header, "header") + _u32(sender, "sender index")
        + _u32(receiver, "receiver index")
        + _field(ephemeral, WG_KEY_SIZE, "ephemeral")
        + _field(empty, WG_EMPTY_ENC_SIZE, "encrypted empty")
        + _field(mac1, WG_MAC_SIZE, "mac1") + _field(mac2, WG_MAC_SIZE, "mac2"))


def build_cookie(receiver: int, *, nonce: Optional[bytes] = None,
                 cookie: Optional[bytes] = None, header: int = WG_MSG_COOKIE,
                 prefix: bytes = b"") -> bytes:
    return bytes(prefix) + (
        _u32(header, "header") + _u32(receiver, "receiver index")
        + _field(nonce, WG_COOKIE_NONCE_SIZE, "nonce")
        + _field(cookie, WG_COOKIE_ENC_SIZE, "encrypted cookie"))


def build_transport(receiver: int, counter: int = 0, data: Optional[bytes] = None, *,
                    header: int = WG_MSG_TRANSPORT, prefix: bytes = b"") -> bytes:
    """`data` is the encrypted packet with its 16-byte tag; None is a
    keepalive (tag only, zero-filled here)."""
    data = bytes(WG_TAG_SIZE) if data is None else bytes(data)
    if len(data) < WG_TAG_SIZE:
        raise ValueError(f"transport data is at least the {WG_TAG_SIZE}-byte tag")
    return bytes(prefix) + (_u32(header, "header") + _u32(receiver, "receiver index")
                            + struct.pack("<Q", counter) + data)


# ---- parsing -------------------------------------------------------------

@dataclass(frozen=True)
class Initiation:
    header: int
    sender: int
    ephemeral: bytes
    static: bytes
    timestamp: bytes
    mac1: bytes
    mac2: bytes
    raw: bytes  # the message without prefix: what mac1/mac2 cover

    kind = MessageType.INITIATION

    @property
    def mac1_input(self) -> bytes:
        return self.raw[:WG_INITIATION_OFF_MAC1]


@dataclass(frozen=True)
class Response:
    header: int
    sender: int
    receiver: int
    ephemeral: bytes
    empty: bytes
    mac1: bytes
    mac2: bytes
    raw: bytes

    kind = MessageType.RESPONSE

    @property
    def mac1_input(self) -> bytes:
        return self.raw[:WG_RESPONSE_OFF_MAC1]


@dataclass(frozen=True)
class Cookie:
    header: int
    receiver: int
    nonce: bytes
    cookie: bytes
    raw: bytes

    kind = MessageType.COOKIE


@dataclass(frozen=True)
class Transport:
    header: int
    receiver: int
    counter: int
    data: bytes
    raw: bytes

    kind = MessageType.TRANSPORT


Message = Union[Initiation, Response, Cookie, Transport]


def parse_message(payload: bytes, classifier: Classifier = WIREGUARD) -> Optional[Message]:
    """Classify a UDP payload and decode it; None if it is none of the four."""
    kind, msg = classifier.message(payload)
    if kind is None:
        return None
    header, first = struct.unpack_from("<II", msg)
    if kind is MessageType.INITIATION:
        o = WG_INITIATION_OFF_EPHEMERAL
        return Initiation(header, first, msg[o:o + WG_KEY_SIZE],
                          msg[WG_INITIATION_OFF_STATIC:WG_INITIATION_OFF_TIMESTAMP],
                          msg[WG_INITIATION_OFF_TIMESTAMP:WG_INITIATION_OFF_MAC1],
                          msg[WG_INITIATION_OFF_MAC1:WG_INITIATION_OFF_MAC2],
                          msg[WG_INITIATION_OFF_MAC2:WG_INITIATION_SIZE], msg)
    if kind is MessageType.RESPONSE:
        (receiver,) = struct.unpack_from("<I", msg, WG_RESPONSE_OFF_RECEIVER)
        return Response(header, first, receiver,
                        msg[WG_RESPONSE_OFF_EPHEMERAL:WG_RESPONSE_OFF_EMPTY],
                        msg[WG_RESPONSE_OFF_EMPTY:WG_RESPONSE_OFF_MAC1],
                        msg[WG_RESPONSE_OFF_MAC1:WG_RESPONSE_OFF_MAC2],
                        msg[WG_RESPONSE_OFF_MAC2:WG_RESPONSE_SIZE], msg)
    if kind is MessageType.COOKIE:
        return Cookie(header, first, msg[WG_COOKIE_OFF_NONCE:WG_COOKIE_OFF_COOKIE],
                      msg[WG_COOKIE_OFF_COOKIE:WG_COOKIE_SIZE], msg)
    (counter,) = struct.unpack_from("<Q", msg, WG_TRANSPORT_OFF_COUNTER)
    return Transport(header, first, counter, msg[WG_TRANSPORT_OFF_DATA:], msg)


def receiver_index(payload: bytes, classifier: Classifier = WIREGUARD) -> Optional[int]:
    """The receiver index of a response/cookie/transport payload, else None."""
    kind, off = classifier.classify(payload)
    if kind not in RECEIVER_OFFSETS:
        return None
    return struct.unpack_from("<I", payload, off + RECEIVER_OFFSETS[kind])[0]


def sender_index(payload: bytes, classifier: Classifier = WIREGUARD) -> Optional[int]:
    kind, off = classifier.classify(payload)
    if kind not in SENDER_OFFSETS:
        return None
    return struct.unpack_from("<I", payload, off + SENDER_OFFSETS[kind])[0]


def defines_of_header(text: str) -> Iterable[Tuple[str, int]]:
    """(name, value) of every `#define WG_NAME <integer>` in wire.h text,
    for the consistency test."""
    import re
    for m in re.finditer(r"^#define\s+(WG_\w+)\s+(\d+)\s*$", text, re.MULTILINE):
        yield m.group(1), int(m.group(2))
