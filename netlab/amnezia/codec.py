"""WireGuard <-> AmneziaWG datagrams for one interface: pure conversion, no I/O.

Outgoing (WireGuard -> wire):
- type field -> an H value drawn uniformly from the kind's H range (1.0: the
  single value); S1/S2/S3/S4 random bytes before initiation/response/
  cookie/transport (keepalives included);
- before each initiation: I1..I5 (those set) as separate datagrams, then Jc
  junk datagrams of uniformly random size in [Jmin, Jmax) (Jmin when equal);
- mac1: AmneziaWG computes it over the message with the H value in the type
  field (docs/spec.md §12), so the hub can check it with public keys
  (docs/spec.md §9).  WireGuard computed it over type 1/2, so the codec
  recomputes it with the receiver's public key, which it finds by checking
  WireGuard's mac1 against the interface's peers.
Incoming (wire -> WireGuard): classify (size + header range, docs/spec.md
§12); junk/I-packets are dropped and counted; handshake messages whose mac1
(over the H header) is not valid for this interface's key are dropped (as
AmneziaWG does); otherwise the type is restored and mac1 recomputed over the
plain message for WireGuard.

mac1 is wgmux.mac1's, the hub's own: what the adapter puts on the wire is
what the hub's slow path verifies.  mac2 is passed through untouched, so a
WireGuard under load (cookie replies, mac2) interoperates adapter-to-adapter
but not with a real AWG.
"""

from __future__ import annotations

import os
import random
import struct
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from wgmux import mac1, wire

from .params import AwgParams, parse_special

_LETTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = b"0123456789"


def render_special(items: Sequence[Tuple[str, object]], rng: random.Random,
                   counter: int = 0, now: Optional[float] = None) -> bytes:
    """The bytes of one I-packet from parse_special()'s items."""
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

    def _receiver_key(self, msg: bytes) -> Optional[bytes]:
        for refresh in (False, True):
            for key in self.peer_keys(refresh):
                if mac1.verify_mac1(msg, mac1.mac1_key(key)):
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
            key = self._receiver_key(payload)
            if key is None:
                self.count("tx_mac1_receiver_unknown")
            else:
                msg = bytearray(mac1.with_mac1(msg, mac1.mac1_key(key)))
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
            if key is None or not mac1.verify_mac1(msg, mac1.mac1_key(key)):
                self.count("rx_bad_mac1")
                return None
            struct.pack_into("<I", msg, wire.WG_OFF_TYPE, kind.wg_type)
            msg = bytearray(mac1.with_mac1(msg, mac1.mac1_key(key)))
        else:
            struct.pack_into("<I", msg, wire.WG_OFF_TYPE, kind.wg_type)
        self.count(f"rx_{kind.name.lower()}")
        return bytes(msg)
