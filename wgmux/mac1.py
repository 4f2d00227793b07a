"""WireGuard's mac1, computed and checked with public keys only.

Every handshake message carries mac1 (WireGuard whitepaper §5.4.4):

    mac1 = MAC(HASH(LABEL_MAC1 || S_pub_receiver), msg[0:offset_of_mac1])

with HASH = BLAKE2s-256, MAC = keyed BLAKE2s-128 and LABEL_MAC1 =
"mac1----".  S_pub_receiver is the static *public* key of the peer the
message is addressed to, so anyone who knows that key -- the hub knows all
of its peers' -- can tell which peer a handshake is for, and that it is not
garbage, without any private key (docs/spec.md §9).  The hub precomputes one mac1
key per known peer (`mac1_key`, `mac1_keys`) and checks each handshake
against them (`verify_mac1`, `find_receiver`).

AmneziaWG (docs/spec.md §12) computes mac1 over the message *without* its random
S1/S2 prefix but *with* the H value in the type field, as sent.  Every
function here takes the message with the prefix already removed; strip it
with `strip_prefix` (or `wgmux.wire.Classifier.message`, which also finds
out which kind of message it is).

Only the initiation (148 bytes, mac1 at 116) and the response (92 bytes,
mac1 at 60) carry mac1; the layout comes from `wgmux.wire`.

The same construction with the label "cookie--" gives the key cookie replies
are encrypted with (`cookie_key`, whitepaper §5.4.7); `mac` is the keyed
BLAKE2s-128 both mac1 and mac2 use.  wgmux.cookie builds on them.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from typing import Hashable, Mapping, Optional, TypeVar, Union

from .wire import (
    WG_INITIATION_OFF_MAC1,
    WG_INITIATION_SIZE,
    WG_KEY_SIZE,
    WG_MAC_SIZE,
    WG_RESPONSE_OFF_MAC1,
    WG_RESPONSE_SIZE,
)

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

# message size -> offset of mac1 in it (the two kinds that carry one)
_MAC1_OFFSET_BY_SIZE = {
    WG_INITIATION_SIZE: WG_INITIATION_OFF_MAC1,
    WG_RESPONSE_SIZE: WG_RESPONSE_OFF_MAC1,
}

PublicKey = Union[bytes, bytearray, memoryview, str]
Name = TypeVar("Name", bound=Hashable)


def public_key_bytes(public_key: PublicKey) -> bytes:
    """The 32 raw bytes of a public key given raw or in base64 (as `wg` prints it).

    A `str` is always read as base64; bytes of length 32 are raw; other
    bytes are read as base64 text.  Anything that is not a 32-byte key
    raises ValueError.
    """
    if isinstance(public_key, (bytes, bytearray, memoryview)):
        raw = bytes(public_key)
        if len(raw) == WG_KEY_SIZE:
            return raw
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"public key is {len(raw)} bytes, not {WG_KEY_SIZE}") from None
    elif isinstance(public_key, str):
        text = public_key
    else:
        raise TypeError(f"public key must be bytes or base64 str, not {type(public_key).__name__}")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"public key {text!r} is not valid base64") from None
    if len(raw) != WG_KEY_SIZE:
        raise ValueError(f"public key {text!r} decodes to {len(raw)} bytes, not {WG_KEY_SIZE}")
    return raw


def _labelled_key(label: bytes, public_key: bytes) -> bytes:
    """HASH(label || public_key), HASH = BLAKE2s-256."""
    return hashlib.blake2s(label + public_key, digest_size=32).digest()


@functools.lru_cache(maxsize=4096)
def _mac1_key_raw(public_key: bytes) -> bytes:
    return _labelled_key(LABEL_MAC1, public_key)


@functools.lru_cache(maxsize=4096)
def _cookie_key_raw(public_key: bytes) -> bytes:
    return _labelled_key(LABEL_COOKIE, public_key)


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, data) of the whitepaper: keyed BLAKE2s with a 16-byte
    output (what mac1, mac2 and the cookie itself are)."""
    return hashlib.blake2s(bytes(data), digest_size=WG_MAC_SIZE, key=bytes(key)).digest()


def mac1_key(public_key: PublicKey) -> bytes:
    """BLAKE2s-256("mac1----" || public_key): the 32-byte key mac1 is
    computed with for messages addressed to the owner of `public_key`
    (raw 32 bytes or base64).  Cached."""
    return _mac1_key_raw(public_key_bytes(public_key))


def cookie_key(public_key: PublicKey) -> bytes:
    """BLAKE2s-256("cookie--" || public_key): the 32-byte XChaCha20-Poly1305
    key of cookie replies sent on behalf of the owner of `public_key` (raw
    32 bytes or base64).  Cached."""
    return _cookie_key_raw(public_key_bytes(public_key))


def mac1_keys(public_keys: Mapping[Name, PublicKey]) -> dict:
    """{name: mac1_key(public key)} for every known peer: what
    `find_receiver` takes."""
    return {name: mac1_key(pub) for name, pub in public_keys.items()}


def mac1_offset(message: bytes) -> int:
    """Where mac1 sits in a handshake message (prefix already stripped),
    told by its size: 116 in a 148-byte initiation, 60 in a 92-byte
    response.  ValueError for any other size."""
    try:
        return _MAC1_OFFSET_BY_SIZE[len(message)]
    except KeyError:
        raise ValueError(
            f"a {len(message)}-byte message carries no mac1 (only a "
            f"{WG_INITIATION_SIZE}-byte initiation or a {WG_RESPONSE_SIZE}-byte response "
            f"does; strip an AmneziaWG prefix first)") from None


def _check_key(key: bytes) -> bytes:
    if len(key) != WG_KEY_SIZE:
        raise ValueError(f"mac1 key must be {WG_KEY_SIZE} bytes (from mac1_key()), not {len(key)}")
    return key


def compute_mac1(message: bytes, key: bytes) -> bytes:
    """The 16-byte mac1 `message` (initiation or response, prefix stripped)
    must carry for a receiver whose mac1 key is `key` (from `mac1_key`)."""
    off = mac1_offset(message)
    return mac(_check_key(bytes(key)), message[:off])


def message_mac1(message: bytes) -> bytes:
    """The mac1 field as carried in `message`."""
    off = mac1_offset(message)
    return bytes(message[off:off + WG_MAC_SIZE])


def verify_mac1(message: bytes, key: bytes) -> bool:
    """True if `message` (initiation or response, prefix stripped) carries a
    valid mac1 for the receiver whose mac1 key is `key`.  Messages of any
    other size are simply not valid (False).  Constant-time comparison."""
    off = _MAC1_OFFSET_BY_SIZE.get(len(message))
    if off is None:
        return False
    expected = mac(_check_key(bytes(key)), message[:off])
    return hmac.compare_digest(expected, bytes(message[off:off + WG_MAC_SIZE]))


def find_receiver(message: bytes, keys: Mapping[Name, bytes]) -> Optional[Name]:
    """Which known peer `message` is addressed to: the name of the first
    key (mapping of name -> *mac1 key*, see `mac1_keys`) its mac1 verifies
    with, or None.  Not a public-key mapping: pass `mac1_keys(...)`."""
    off = _MAC1_OFFSET_BY_SIZE.get(len(message))
    if off is None:
        return None
    data, carried = bytes(message[:off]), bytes(message[off:off + WG_MAC_SIZE])
    for name, key in keys.items():
        expected = mac(_check_key(key), data)
        if hmac.compare_digest(expected, carried):
            return name
    return None


def with_mac1(message: bytes, key: bytes) -> bytes:
    """`message` with its mac1 field recomputed for `key` (mac2 and
    everything else unchanged).  For building test messages, e.g. an
    AmneziaWG message whose type field now holds an H value."""
    off = mac1_offset(message)
    message = bytes(message)
    return message[:off] + compute_mac1(message, key) + message[off + WG_MAC_SIZE:]


def strip_prefix(payload: bytes, prefix_len: int) -> bytes:
    """The message inside an AmneziaWG UDP payload that starts with
    `prefix_len` random bytes (S1 for an initiation, S2 for a response;
    0 for plain WireGuard)."""
    if prefix_len < 0:
        raise ValueError(f"prefix length {prefix_len} is negative")
    if prefix_len > len(payload):
        raise ValueError(f"prefix length {prefix_len} exceeds the {len(payload)}-byte payload")
    return bytes(payload[prefix_len:])
