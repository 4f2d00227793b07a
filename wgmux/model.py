"""What the datapath's maps hold, as the rest of wgmux sees them.

Plain values (endpoints, sessions, responders, learned initiators, slow-path
messages), the clock their times are stamped with, the error every part of
the loader raises, and the one conversion between an endpoint and its C
form (`struct endpoint` in bpf/wgmux.c).  Nothing here needs bcc, so the
slow path, the daemon and `show` import these without loading anything.

Byte order in the maps: addresses and ports as on the wire, indices as
numbers.
"""

from __future__ import annotations

import ctypes as ct
import functools
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple, Union

AF_INET = 2
AF_INET6 = 10

# session.flags (bpf/wgmux.c WGMUX_SF_*)
SF_TRANSPORT = 0x1
# slow_msg.load (bpf/wgmux.c SLOW_LOAD_*): why an initiation reached the
# slow path while its port was under load
LOAD_NONE, LOAD_COOKIE, LOAD_MAC2 = 0, 1, 2


_CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)  # Linux value


def monotonic_ns() -> int:
    """The clock of `created` / `last_seen` (bpf_ktime_get_coarse_ns)."""
    return time.clock_gettime_ns(_CLOCK_MONOTONIC_COARSE)


class DatapathError(RuntimeError):
    """The datapath cannot be compiled, loaded or attached; the message
    says why in terms an operator can act on."""


IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


@dataclass(frozen=True)
class Endpoint:
    ip: IPAddress
    port: int

    def __str__(self):
        # the one spelling of an endpoint: `show --json` promises it (docs/spec.md §11)
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


EndpointLike = Union[Endpoint, Tuple[Union[str, IPAddress], int]]


def as_endpoint(value: Optional[EndpointLike]) -> Optional[Endpoint]:
    """An Endpoint from an Endpoint or an (address, port) pair; None stays None."""
    if value is None:
        return None
    if isinstance(value, Endpoint):
        return value
    addr, port = value
    return Endpoint(ipaddress.ip_address(addr), int(port))


def check_port(port: int, what: str = "port") -> int:
    if not (0 < int(port) < 65536):
        raise ValueError(f"{what} {port} is not a UDP port")
    return int(port)


@functools.lru_cache(maxsize=4096)
def _ip_of(raw: bytes) -> IPAddress:
    """Addresses repeat across sessions (a NAT's public address serves all
    its peers); parsing each once keeps a full map's scan cheap."""
    return ipaddress.ip_address(raw)


def write_endpoint(dst, ep: Optional[Endpoint]):
    """Fill a C `struct endpoint` (all zero for None)."""
    ct.memset(ct.addressof(dst), 0, ct.sizeof(dst))
    if ep is None:
        return
    packed = ep.ip.packed
    ct.memmove(ct.addressof(dst.addr), packed, len(packed))
    dst.port = socket.htons(check_port(ep.port))
    dst.family = AF_INET if ep.ip.version == 4 else AF_INET6


def read_endpoint(src) -> Optional[Endpoint]:
    """A C `struct endpoint` as an Endpoint (None: no family, not set)."""
    if src.family == AF_INET:
        raw = ct.string_at(ct.addressof(src.addr), 4)
    elif src.family == AF_INET6:
        raw = ct.string_at(ct.addressof(src.addr), 16)
    else:
        return None
    return Endpoint(_ip_of(raw), socket.ntohs(src.port))


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
    via: int = 0                    # 1 + index among the hub's addresses of dst's
                                    # family that translated packets leave from
                                    # (docs/spec.md §4b); 0: the first

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
