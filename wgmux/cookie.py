"""WireGuard cookie replies, sent by the hub on a responder's behalf.

Under load a WireGuard responder does not answer an initiation; it answers
with a *cookie reply* (whitepaper §5.4.7), and from then on only accepts
initiations whose mac2 proves that the sender received it at the source
address and port it claims.  The hub can do the same for a responder R
whose port an initiation came to, without any private key:

    cookie   = MAC(secret, source ip || source port)
    reply    = type 3 | receiver = initiation's sender index | nonce(24)
               | XChaCha20-Poly1305(key = HASH("cookie--" || R's public key),
                                    nonce, cookie, ad = initiation's mac1)
    mac2     = MAC(cookie, initiation[0:offset of mac2])

MAC = keyed BLAKE2s-128, HASH = BLAKE2s-256 (`wgmux.mac1`), the AEAD is
libsodium's through PyNaCl.  The initiator decrypts the reply with the key
it derives from R's public key (the peer it is talking to) and the mac1 it
sent, and puts mac2 into its next initiations for up to 120 s.

Only the hub makes and checks cookies, so their input is the hub's choice:
the packed source address (4 bytes for IPv4 -- an IPv4-mapped IPv6 address
counts as its IPv4 address -- 16 for IPv6) followed by the UDP source port
as 2 bytes in network byte order (big-endian), as Linux's WireGuard does.

The secret is 32 random bytes, replaced every 120 s (WireGuard's
COOKIE_SECRET_MAX_AGE) on fixed periods counted from the first one; the
previous period's secret is still accepted, so a cookie checks out for 120
to 240 s (an initiator uses one for at most 120 s).  A period that passed
without any use leaves no previous secret.

AmneziaWG: every message here is the WireGuard message with the AmneziaWG
prefix stripped and the type field as received (what `mac1.verify_mac1`
takes, `wire.Classifier.message` returns); mac1 and mac2 cover the header
in the type field.  A reply is framed by the classifier: S3 random bytes,
then the message with a header drawn from H3.

The initiator's side (consuming a reply, adding mac2) is not needed by the
hub; tests/unit/test_cookie.py has it.
"""

from __future__ import annotations

import hmac
import os
import struct
import threading
import time
from typing import Callable, Optional, Tuple

from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

from . import wire
from .mac1 import PublicKey, cookie_key, mac
from .packet import AddressLike, ip as ip_address
from .wire import (
    WG_COOKIE_NONCE_SIZE,
    WG_INITIATION_OFF_MAC1,
    WG_INITIATION_OFF_MAC2,
    WG_INITIATION_OFF_SENDER,
    WG_INITIATION_SIZE,
    WG_MAC_SIZE,
    MessageType,
)

COOKIE_SECRET_MAX_AGE = 120.0   # seconds, as WireGuard
COOKIE_SECRET_SIZE = 32
COOKIE_SIZE = WG_MAC_SIZE       # 16

_ZERO_MAC = bytes(WG_MAC_SIZE)


def _initiation(message: bytes) -> bytes:
    message = bytes(message)
    if len(message) != WG_INITIATION_SIZE:
        raise ValueError(
            f"a {len(message)}-byte message is not a WireGuard initiation "
            f"({WG_INITIATION_SIZE} bytes; strip an AmneziaWG prefix first)")
    return message


def source_bytes(ip: AddressLike, port: int) -> bytes:
    """What a cookie is computed over: the packed address (4 bytes for
    IPv4 and IPv4-mapped IPv6, 16 for IPv6) and the port, big-endian."""
    try:
        addr = ip_address(ip)
    except ValueError as e:
        raise ValueError(f"source address {ip!r}: {e}") from None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise ValueError(f"source port {port!r} is not within 0..65535")
    return addr.packed + struct.pack("!H", port)


class CookieSecret:
    """The hub's cookie secret: makes cookies and cookie replies, checks mac2.

    `clock` (seconds, monotonic) and `urandom` (n -> n random bytes) are
    injectable for tests; `urandom` supplies the secrets, nonces, AmneziaWG
    prefixes and header values.  Thread-safe.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 urandom: Callable[[int], bytes] = os.urandom,
                 max_age: float = COOKIE_SECRET_MAX_AGE):
        if not max_age > 0:
            raise ValueError(f"cookie secret max age {max_age!r} must be positive")
        self._clock = clock
        self._urandom = urandom
        self.max_age = float(max_age)
        self._lock = threading.Lock()
        self._current = self._random(COOKIE_SECRET_SIZE)
        self._previous: Optional[bytes] = None
        self._born = clock()

    def _random(self, n: int) -> bytes:
        data = bytes(self._urandom(n))
        if len(data) != n:
            raise ValueError(f"urandom({n}) returned {len(data)} bytes")
        return data

    def _secrets(self) -> Tuple[bytes, Optional[bytes]]:
        """(current, previous or None), rotated first if a period is over."""
        with self._lock:
            periods = int((self._clock() - self._born) // self.max_age)
            if periods >= 1:
                self._previous = self._current if periods == 1 else None
                self._current = self._random(COOKIE_SECRET_SIZE)
                self._born += periods * self.max_age
            return self._current, self._previous

    def cookie(self, ip: AddressLike, port: int) -> bytes:
        """The 16-byte cookie of source `ip`:`port` under the current secret."""
        return mac(self._secrets()[0], source_bytes(ip, port))

    def mac2_valid(self, message: bytes, ip: AddressLike, port: int) -> bool:
        """True if initiation `message` (prefix stripped, type field as
        received) carries a mac2 made with the cookie of `ip`:`port` under
        the current or the previous secret.  A zero mac2 (no cookie) is
        never valid.  ValueError if `message` is not 148 bytes."""
        message = _initiation(message)
        source = source_bytes(ip, port)
        carried = message[WG_INITIATION_OFF_MAC2:]
        if carried == _ZERO_MAC:
            return False
        covered = message[:WG_INITIATION_OFF_MAC2]
        valid = False
        for secret in self._secrets():
            if secret is not None:
                valid |= hmac.compare_digest(mac(mac(secret, source), covered), carried)
        return valid

    def reply(self, message: bytes, responder_public_key: PublicKey, ip: AddressLike,
              port: int, classifier: wire.Classifier = wire.WIREGUARD) -> bytes:
        """The UDP payload of a cookie reply to initiation `message` (prefix
        stripped, as received from `ip`:`port`) on behalf of the responder
        whose public key (base64, or 32 raw bytes) is `responder_public_key`.
        Framed by `classifier`: S3 random prefix bytes and a header in H3
        (plain WireGuard: none, and 3).  ValueError for a message that is
        not an initiation or a key that is not one."""
        message = _initiation(message)
        key = cookie_key(responder_public_key)
        nonce = self._random(WG_COOKIE_NONCE_SIZE)
        encrypted = crypto_aead_xchacha20poly1305_ietf_encrypt(
            self.cookie(ip, port), message[WG_INITIATION_OFF_MAC1:WG_INITIATION_OFF_MAC2],
            nonce, key)
        spec = classifier.spec(MessageType.COOKIE)
        (sender,) = struct.unpack_from("<I", message, WG_INITIATION_OFF_SENDER)
        return wire.build_cookie(sender, nonce=nonce, cookie=encrypted,
                                 header=self._header(spec.lo, spec.hi),
                                 prefix=self._random(spec.prefix))

    def _header(self, lo: int, hi: int) -> int:
        """A value in [lo, hi]: 8 random bytes modulo the range's size (the
        bias, under 2**-32, does not matter for an obfuscation header)."""
        if lo == hi:
            return lo
        return lo + int.from_bytes(self._random(8), "little") % (hi - lo + 1)
