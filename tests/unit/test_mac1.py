"""wgmux.mac1 against a real captured handshake (tests/unit/vectors/mac1.json,
see its "source" field) and against the whitepaper's definition, computed
here a second time from scratch."""

import base64
import hashlib
import json
import os
import struct
from pathlib import Path

import pytest

from wgmux import mac1
from wgmux.mac1 import (
    compute_mac1, find_receiver, mac1_key, mac1_keys, mac1_offset, message_mac1,
    public_key_bytes, strip_prefix, verify_mac1, with_mac1,
)
from wgmux.wire import Classifier, Initiation, MessageType, Response, parse_message

VECTORS = json.loads((Path(__file__).parent / "vectors" / "mac1.json").read_text())
INITIATOR = VECTORS["initiator_public_key"]
RESPONDER = VECTORS["responder_public_key"]
INITIATION = bytes.fromhex(VECTORS["initiation"]["hex"])
RESPONSE = bytes.fromhex(VECTORS["response"]["hex"])
# (message, public key of its receiver, public key of its sender, mac1 offset)
CASES = {
    "initiation": (INITIATION, RESPONDER, INITIATOR, 116),
    "response": (RESPONSE, INITIATOR, RESPONDER, 60),
}


def whitepaper_mac1(message: bytes, receiver_public_b64: str, mac1_at: int) -> bytes:
    """WireGuard whitepaper §5.4.4, spelled out with hashlib alone:
    mac1 = MAC(HASH(LABEL_MAC1 || S_pub_receiver), msg[:mac1]), HASH =
    BLAKE2s-256, MAC = keyed BLAKE2s with a 16-byte output."""
    label = bytes([0x6D, 0x61, 0x63, 0x31, 0x2D, 0x2D, 0x2D, 0x2D])  # "mac1----"
    spub = base64.b64decode(receiver_public_b64)
    assert len(spub) == 32
    key = hashlib.blake2s(label + spub).digest()  # default digest_size is 32
    return hashlib.blake2s(message[:mac1_at], key=key, digest_size=16).digest()


def flip(data: bytes, i: int, mask: int = 0x01) -> bytes:
    return data[:i] + bytes([data[i] ^ mask]) + data[i + 1:]


# ---- the vectors themselves ------------------------------------------------

def test_vectors_are_a_real_handshake_pair():
    init, resp = parse_message(INITIATION), parse_message(RESPONSE)
    assert isinstance(init, Initiation) and isinstance(resp, Response)
    assert resp.receiver == init.sender
    assert not any("private" in name for name in VECTORS)  # public keys only


@pytest.mark.parametrize("case", CASES)
def test_captured_mac1_is_the_whitepapers(case):
    msg, receiver, _sender, at = CASES[case]
    assert message_mac1(msg) == msg[at:at + 16] == whitepaper_mac1(msg, receiver, at)


@pytest.mark.parametrize("case", CASES)
def test_vector_verifies_with_receivers_key_only(case):
    msg, receiver, sender, at = CASES[case]
    assert mac1_offset(msg) == at
    assert compute_mac1(msg, mac1_key(receiver)) == msg[at:at + 16]
    assert verify_mac1(msg, mac1_key(receiver))
    assert not verify_mac1(msg, mac1_key(sender))
    assert not verify_mac1(msg, mac1_key(os.urandom(32)))


def test_mac1_key_is_the_whitepapers():
    raw = base64.b64decode(RESPONDER)
    expected = hashlib.blake2s(b"mac1" + b"-" * 4 + raw, digest_size=32).digest()
    assert mac1.LABEL_MAC1 == b"mac1----"
    assert mac1_key(RESPONDER) == mac1_key(raw) == mac1_key(RESPONDER.encode()) == expected
    assert len(expected) == 32


def test_mac1_key_is_cached():
    before = mac1._mac1_key_raw.cache_info().hits
    mac1_key(INITIATOR)
    mac1_key(INITIATOR)
    assert mac1._mac1_key_raw.cache_info().hits >= before + 1


# ---- tampering -------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_any_flipped_byte_before_mac1_breaks_it(case):
    msg, receiver, _sender, at = CASES[case]
    key = mac1_key(receiver)
    for i in range(at):
        for mask in (0x01, 0x80):
            assert not verify_mac1(flip(msg, i, mask), key), f"byte {i} ^ {mask:#x} not covered"


@pytest.mark.parametrize("case", CASES)
def test_any_flipped_mac1_byte_breaks_it(case):
    msg, receiver, _sender, at = CASES[case]
    for i in range(at, at + 16):
        assert not verify_mac1(flip(msg, i), mac1_key(receiver))


@pytest.mark.parametrize("case", CASES)
def test_mac2_is_not_covered(case):
    msg, receiver, _sender, at = CASES[case]
    for i in range(at + 16, len(msg)):
        assert verify_mac1(flip(msg, i, 0xFF), mac1_key(receiver))


@pytest.mark.parametrize("case", CASES)
def test_truncated_or_padded_messages_do_not_verify(case):
    msg, receiver, _sender, _at = CASES[case]
    key = mac1_key(receiver)
    for bad in (msg[:-1], msg + b"\0", b"", msg[:32]):
        assert not verify_mac1(bad, key)
        assert find_receiver(bad, {"r": key}) is None
        with pytest.raises(ValueError):
            compute_mac1(bad, key)


def test_a_public_key_is_not_a_mac1_key():
    # Passing the public key itself where the derived key belongs must fail,
    # not silently "work" with a different key.
    assert not verify_mac1(INITIATION, public_key_bytes(RESPONDER))
    with pytest.raises(ValueError):
        verify_mac1(INITIATION, b"short")


# ---- find_receiver ---------------------------------------------------------

def test_find_receiver_picks_the_right_peer_among_several():
    strangers = {f"peer{i}": base64.b64encode(os.urandom(32)).decode() for i in range(8)}
    known = mac1_keys({**strangers, "initiator": INITIATOR, "responder": RESPONDER})
    assert find_receiver(INITIATION, known) == "responder"
    assert find_receiver(RESPONSE, known) == "initiator"
    # order of the mapping does not matter
    assert find_receiver(INITIATION, dict(reversed(list(known.items())))) == "responder"
    # the receiver unknown -> None, even though the sender is known
    assert find_receiver(INITIATION, mac1_keys({**strangers, "initiator": INITIATOR})) is None
    assert find_receiver(flip(INITIATION, 10), known) is None
    assert find_receiver(INITIATION, {}) is None


# ---- AmneziaWG: H in the type field, S-byte random prefix -----------------

H1, H2 = 0x5A3C_91E7, 0x1B2D_4F60
S1, S2 = 37, 11


def amnezia(message: bytes, header: int, receiver: str) -> bytes:
    """What an AmneziaWG peer sends, minus the prefix: header in the type
    field, mac1 over that (computed here from scratch, not by wgmux)."""
    at = len(message) - 32
    body = struct.pack("<I", header) + message[4:at]
    return body + whitepaper_mac1(body, receiver, at) + message[at + 16:]


@pytest.mark.parametrize("case,header,prefix_len", [
    ("initiation", H1, S1), ("response", H2, S2)])
def test_amneziawg_message_verifies_after_stripping_its_prefix(case, header, prefix_len):
    msg, receiver, sender, _at = CASES[case]
    key = mac1_key(receiver)
    awg = amnezia(msg, header, receiver)
    assert with_mac1(struct.pack("<I", header) + msg[4:], key) == awg
    payload = os.urandom(prefix_len) + awg

    assert not verify_mac1(payload, key)            # the prefix is not part of it
    stripped = strip_prefix(payload, prefix_len)
    assert stripped == awg
    assert verify_mac1(stripped, key)
    assert not verify_mac1(stripped, mac1_key(sender))
    assert find_receiver(stripped, mac1_keys({"i": INITIATOR, "r": RESPONDER})) == (
        "r" if case == "initiation" else "i")

    # mac1 covers the header: the plain type value (or any rewrite) breaks it,
    # so the hub must not rewrite headers of handshakes it reflects.
    assert not verify_mac1(msg[:4] + stripped[4:], key)
    # and it is not computed over the prefix: a mac1 over prefix + message fails
    at = len(awg) - 32
    over_prefix = hashlib.blake2s(payload[:prefix_len + at], key=key, digest_size=16).digest()
    assert not verify_mac1(awg[:at] + over_prefix + awg[at + 16:], key)


def test_amneziawg_prefix_via_the_wire_classifier():
    cls = Classifier(prefixes=(S1, S2, 0, 0), headers=(H1, H2, 3, 4))
    init = os.urandom(S1) + amnezia(INITIATION, H1, RESPONDER)
    resp = os.urandom(S2) + amnezia(RESPONSE, H2, INITIATOR)
    kind, msg = cls.message(init)
    assert kind is MessageType.INITIATION and verify_mac1(msg, mac1_key(RESPONDER))
    kind, msg = cls.message(resp)
    assert kind is MessageType.RESPONSE and verify_mac1(msg, mac1_key(INITIATOR))


def test_strip_prefix_bounds():
    assert strip_prefix(b"abc", 0) == b"abc"
    assert strip_prefix(b"abc", 3) == b""
    with pytest.raises(ValueError):
        strip_prefix(b"abc", 4)
    with pytest.raises(ValueError):
        strip_prefix(b"abc", -1)


# ---- public keys -----------------------------------------------------------

def test_public_key_forms():
    raw = base64.b64decode(INITIATOR)
    assert public_key_bytes(INITIATOR) == public_key_bytes(raw) == raw
    assert public_key_bytes(INITIATOR.encode()) == raw
    assert public_key_bytes(f" {INITIATOR}\n") == raw        # as read from a file
    assert public_key_bytes(bytearray(raw)) == raw
    for bad in ("not base64!", base64.b64encode(b"x" * 31).decode(), b"\xff" * 31, ""):
        with pytest.raises(ValueError):
            public_key_bytes(bad)
    with pytest.raises(TypeError):
        public_key_bytes(42)
